-- migrate:up
-- Where each shard entry point runs: PL/Proxy functions of cluster "waitress".
-- Each takes where it runs first (p_route) and leaves it out of the remote
-- call:
--   an id            run on p_route: PL/Proxy takes p_route & 15, and every
--                    id carries its partition in its low 4 bits
--   a partition      the same: a partition is its own low 4 bits
--   a mask           run on waitress.partitions_in(p_mask): every database
--                    holding one of those partitions, in parallel, a row each
-- The remote functions are the shards' rpc wrappers (db/shard/...0300): they
-- answer {"ok": ...} or {"error": ...}.
set local role waitress_owner;

-- ---------------------------------------------------------------- one shard
create function rpc.create_product(p_route bigint, p_name text, p_seller_id bigint, p_price bigint, p_stock integer,
                                   p_weight integer, p_active boolean) returns jsonb
language plproxy as $$
  cluster 'waitress'; run on p_route;
  select rpc.create_product(p_name, p_seller_id, p_price, p_stock, p_weight, p_active);
$$;

create function rpc.product(p_route bigint, p_product_id bigint) returns jsonb
language plproxy as $$
  cluster 'waitress'; run on p_route;
  select rpc.product(p_product_id);
$$;

create function rpc.restock_product(p_route bigint, p_product_id bigint, p_quantity integer, p_note text, p_user_id bigint)
returns jsonb
language plproxy as $$
  cluster 'waitress'; run on p_route;
  select rpc.restock_product(p_product_id, p_quantity, p_note, p_user_id);
$$;

create function rpc.adjust_stock(p_route bigint, p_product_id bigint, p_quantity integer, p_reason text, p_user_id bigint)
returns jsonb
language plproxy as $$
  cluster 'waitress'; run on p_route;
  select rpc.adjust_stock(p_product_id, p_quantity, p_reason, p_user_id);
$$;

create function rpc.stock_movements(p_route bigint, p_product_id bigint, p_limit integer, p_offset integer, p_user_id bigint)
returns jsonb
language plproxy as $$
  cluster 'waitress'; run on p_route;
  select rpc.stock_movements(p_product_id, p_limit, p_offset, p_user_id);
$$;

create function rpc.order(p_route bigint, p_order_id bigint, p_user_id bigint) returns jsonb
language plproxy as $$
  cluster 'waitress'; run on p_route;
  select rpc.order(p_order_id, p_user_id);
$$;

create function rpc.act_on_order(p_route bigint, p_order_id bigint, p_action text, p_idempotency_key text, p_user_id bigint)
returns jsonb
language plproxy as $$
  cluster 'waitress'; run on p_route;
  select rpc.act_on_order(p_order_id, p_action, p_idempotency_key, p_user_id);
$$;

create function rpc.rate_limit_hit(p_route bigint, p_client text, p_limit integer, p_window_seconds integer, p_hits integer)
returns jsonb
language plproxy as $$
  cluster 'waitress'; run on p_route;
  select rpc.rate_limit_hit(p_client, p_limit, p_window_seconds, p_hits);
$$;

create function rpc.add_cart_item(p_route bigint, p_cart_id bigint, p_product_id bigint, p_quantity integer, p_user_id bigint)
returns jsonb
language plproxy as $$
  cluster 'waitress'; run on p_route;
  select rpc.add_cart_item(p_cart_id, p_product_id, p_quantity, p_user_id);
$$;

create function rpc.update_cart_item(p_route bigint, p_cart_item_id bigint, p_quantity integer, p_user_id bigint) returns jsonb
language plproxy as $$
  cluster 'waitress'; run on p_route;
  select rpc.update_cart_item(p_cart_item_id, p_quantity, p_user_id);
$$;

create function rpc.remove_cart_item(p_route bigint, p_cart_item_id bigint, p_user_id bigint) returns jsonb
language plproxy as $$
  cluster 'waitress'; run on p_route;
  select rpc.remove_cart_item(p_cart_item_id, p_user_id);
$$;

create function rpc.place_orders(p_route bigint, p_requests jsonb) returns jsonb
language plproxy as $$
  cluster 'waitress'; run on p_route;
  select rpc.place_orders(p_requests);
$$;

create function rpc.cart_home(p_route bigint, p_user_id bigint) returns jsonb
language plproxy as $$
  cluster 'waitress'; run on p_route;
  select rpc.cart_home(p_user_id);
$$;

create function rpc.cart_touch(p_route bigint, p_cart_id bigint, p_user_id bigint, p_partition integer) returns jsonb
language plproxy as $$
  cluster 'waitress'; run on p_route;
  select rpc.cart_touch(p_cart_id, p_user_id, p_partition);
$$;

create function rpc.cart_add_line(p_route bigint, p_cart_id bigint, p_buyer_id bigint, p_product_id bigint,
                                  p_quantity integer, p_user_id bigint) returns jsonb
language plproxy as $$
  cluster 'waitress'; run on p_route;
  select rpc.cart_add_line(p_cart_id, p_buyer_id, p_product_id, p_quantity, p_user_id);
$$;

create function rpc.checkout_home(p_route bigint, p_action text, p_cart_id bigint, p_buyer_id bigint, p_item_ids bigint[],
                                  p_note text, p_key text, p_user_id bigint, p_begin boolean, p_map integer[]) returns jsonb
language plproxy as $$
  cluster 'waitress'; run on p_route;
  select rpc.checkout_home(p_action, p_cart_id, p_buyer_id, p_item_ids, p_note, p_key, p_user_id, p_begin, p_map);
$$;

create function rpc.checkout_begin(p_route bigint, p_action text, p_cart_id bigint, p_buyer_id bigint, p_item_ids bigint[],
                                   p_note text, p_key text, p_partitions integer) returns jsonb
language plproxy as $$
  cluster 'waitress'; run on p_route;
  select rpc.checkout_begin(p_action, p_cart_id, p_buyer_id, p_item_ids, p_note, p_key, p_partitions);
$$;

create function rpc.checkout_finish(p_route bigint, p_checkout_id uuid, p_buyer_id bigint, p_key text, p_orders jsonb)
returns jsonb
language plproxy as $$
  cluster 'waitress'; run on p_route;
  select rpc.checkout_finish(p_checkout_id, p_buyer_id, p_key, p_orders);
$$;

create function rpc.checkout_abort(p_route bigint, p_checkout_id uuid, p_buyer_id bigint, p_key text) returns jsonb
language plproxy as $$
  cluster 'waitress'; run on p_route;
  select rpc.checkout_abort(p_checkout_id, p_buyer_id, p_key);
$$;

create function rpc.place_part(p_route bigint, p_checkout_id uuid, p_request jsonb, p_cart_id bigint, p_buyer_id bigint,
                               p_dry_run boolean) returns jsonb
language plproxy as $$
  cluster 'waitress'; run on p_route;
  select rpc.place_part(p_checkout_id, p_request, p_cart_id, p_buyer_id, p_dry_run);
$$;

create function rpc.compensate_part(p_route bigint, p_checkout_id uuid) returns jsonb
language plproxy as $$
  cluster 'waitress'; run on p_route;
  select rpc.compensate_part(p_checkout_id);
$$;

create function rpc.batch_homes(p_route bigint, p_requests jsonb) returns jsonb
language plproxy as $$
  cluster 'waitress'; run on p_route;
  select rpc.batch_homes(p_requests);
$$;

create function rpc.batch_part(p_route bigint, p_requests jsonb) returns jsonb
language plproxy as $$
  cluster 'waitress'; run on p_route;
  select rpc.batch_part(p_requests);
$$;

create function rpc.orders_page(p_route bigint, p_buyer_id bigint, p_seller_id bigint, p_state text, p_limit integer,
                                p_offset integer, p_after bigint, p_user_id bigint) returns jsonb
language plproxy as $$
  cluster 'waitress'; run on p_route;
  select rpc.orders_page(p_buyer_id, p_seller_id, p_state, p_limit, p_offset, p_after, p_user_id);
$$;

create function rpc.refusal(p_route bigint, p_code text, p_message text, p_detail jsonb, p_hint text) returns jsonb
language plproxy as $$
  cluster 'waitress'; run on p_route;
  select rpc.refusal(p_code, p_message, p_detail, p_hint);
$$;

-- Maintenance and readiness, one database at a time (a stopped shard must not
-- stop the others' work): the router loops over waitress.all_targets().
create function rpc.expire_orders(p_route bigint, p_ttl interval, p_limit integer) returns jsonb
language plproxy as $$
  cluster 'waitress'; run on p_route;
  select rpc.expire_orders(p_ttl, p_limit);
$$;

create function rpc.purge_idempotency_keys(p_route bigint) returns jsonb
language plproxy as $$
  cluster 'waitress'; run on p_route;
  select rpc.purge_idempotency_keys();
$$;

create function rpc.purge_rate_limit_windows(p_route bigint) returns jsonb
language plproxy as $$
  cluster 'waitress'; run on p_route;
  select rpc.purge_rate_limit_windows();
$$;

create function rpc.take_job_lease(p_route bigint, p_job text, p_every interval) returns jsonb
language plproxy as $$
  cluster 'waitress'; run on p_route;
  select rpc.take_job_lease(p_job, p_every);
$$;

create function rpc.stale_checkouts(p_route bigint, p_age interval) returns jsonb
language plproxy as $$
  cluster 'waitress'; run on p_route;
  select rpc.stale_checkouts(p_age);
$$;

create function rpc.shard_info(p_route bigint) returns jsonb
language plproxy as $$
  cluster 'waitress'; run on p_route;
  select rpc.shard_info();
$$;

-- ---------------------------------------------------------------- several shards at once
create function rpc.cart_lines_in(p_mask integer, p_cart_id bigint) returns setof jsonb
language plproxy as $$
  cluster 'waitress'; run on waitress.partitions_in(p_mask);
  select rpc.cart_lines(p_cart_id);
$$;

create function rpc.place_part_in(p_mask integer, p_checkout_id uuid, p_request jsonb, p_cart_id bigint, p_buyer_id bigint,
                                  p_dry_run boolean) returns setof jsonb
language plproxy as $$
  cluster 'waitress'; run on waitress.partitions_in(p_mask);
  select rpc.place_part(p_checkout_id, p_request, p_cart_id, p_buyer_id, p_dry_run);
$$;

create function rpc.products_page_all(p_limit integer, p_offset integer) returns setof jsonb
language plproxy as $$
  cluster 'waitress'; run on all;
  select rpc.products_page(p_limit, p_offset);
$$;

create function rpc.orders_page_all(p_buyer_id bigint, p_seller_id bigint, p_state text, p_limit integer, p_offset integer,
                                    p_after bigint, p_user_id bigint) returns setof jsonb
language plproxy as $$
  cluster 'waitress'; run on all;
  select rpc.orders_page(p_buyer_id, p_seller_id, p_state, p_limit, p_offset, p_after, p_user_id);
$$;

create function rpc.inventory_audit_all() returns setof jsonb
language plproxy as $$
  cluster 'waitress'; run on all;
  select rpc.inventory_audit();
$$;

create function rpc.applied_migrations_all() returns setof jsonb
language plproxy as $$
  cluster 'waitress'; run on all;
  select rpc.applied_migrations();
$$;

-- migrate:down
set local role waitress_owner;
do $$
declare
  f regprocedure;
begin
  for f in select p.oid::regprocedure from pg_catalog.pg_proc p where p.pronamespace = 'rpc'::regnamespace loop
    execute format('drop function %s', f);
  end loop;
end
$$;
