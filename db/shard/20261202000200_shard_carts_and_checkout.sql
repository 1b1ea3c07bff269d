-- migrate:up
-- What a shard does for the router beyond the one schema's api functions:
-- carts whose lines live on several shards, and its part of a checkout that
-- spans shards. Every rule (ownership, stock, one open line per product, the
-- checkout's checks and writes, the lifecycle's cancel) is the one schema's
-- own function, called here; these only decide which shard does what.
-- docs/scale-out.md tells the whole story.
set local role waitress_owner;

-- ---------------------------------------------------------------- carts
-- A cart lives at home: the shard of its user's partition (its id carries
-- that partition). Its lines live with their products. A shard that holds
-- lines of a cart also holds a copy of the cart's row (same id, same user):
-- the lines' foreign key, and the row lock that serialises that cart's
-- changes and checkouts there, as in a single database.
--
-- At home, cart_partitions says where its lines may be: a bit per partition,
-- set before a line is written there and never cleared (a superset), so a
-- checkout or a read asks only those shards.
create table waitress.cart_partitions (
  cart_id bigint primary key,
  partitions integer not null,
  constraint cart_partitions_cart_id_fkey foreign key (cart_id) references waitress.carts (id)
);

comment on table waitress.cart_partitions is
  'At a cart''s home: the partitions (a 16-bit mask) that may hold its lines; a superset, never cleared.';

create function waitress.cart_mask(p_cart_id bigint) returns integer
language sql
stable
set search_path = ''
as $$
  select coalesce((select cp.partitions from waitress.cart_partitions cp where cp.cart_id = p_cart_id), 0)
$$;

-- At home: the user's cart, made on first use, with the lines held here and
-- where the others may be.
create function waitress.cart_home(p_user_id bigint) returns jsonb
language plpgsql
set search_path = ''
as $$
declare
  v_cart jsonb := api.cart_for_user(p_user_id);
begin
  return jsonb_build_object('cart', v_cart, 'partitions', waitress.cart_mask((v_cart->>'id')::bigint));
end
$$;

-- At home, before a line is added on a product's shard: the cart must be the
-- user's (WA001 as in a single database) and learns that it may have lines in
-- that partition. Returns the cart's user.
create function waitress.cart_touch(p_cart_id bigint, p_user_id bigint, p_partition integer) returns jsonb
language plpgsql
set search_path = ''
as $$
declare
  v_user_id bigint;
begin
  select c.user_id into v_user_id from waitress.carts c where c.id = p_cart_id and (p_user_id is null or c.user_id = p_user_id);
  if not found then
    perform waitress.refuse('WA001', format('cart %s not found', p_cart_id), jsonb_build_object('cart_id', p_cart_id));
  end if;
  insert into waitress.cart_partitions as cp (cart_id, partitions) values (p_cart_id, 1 << p_partition)
  on conflict (cart_id) do update set partitions = cp.partitions | excluded.partitions
   where cp.partitions & excluded.partitions = 0;
  return jsonb_build_object('user_id', v_user_id);
end
$$;

-- The copy of a cart's row on a shard other than its home.
create function waitress.ensure_cart_copy(p_cart_id bigint, p_user_id bigint) returns void
language plpgsql
set search_path = ''
as $$
begin
  if p_cart_id is not null and p_user_id is not null and not exists (select from waitress.carts where id = p_cart_id) then
    insert into waitress.carts (id, user_id) overriding system value values (p_cart_id, p_user_id) on conflict do nothing;
  end if;
end
$$;

-- On the product's shard: the one schema's add_cart_item, on the cart's copy.
create function waitress.cart_add_line(p_cart_id bigint, p_buyer_id bigint, p_product_id bigint, p_quantity integer,
                                       p_user_id bigint)
returns jsonb
language plpgsql
set search_path = ''
as $$
begin
  perform waitress.ensure_cart_copy(p_cart_id, p_buyer_id);
  return api.add_cart_item(p_cart_id, p_product_id, p_quantity, p_user_id);
end
$$;

-- The cart's open lines held here (CartItem documents, by id).
create function waitress.cart_lines(p_cart_id bigint) returns jsonb
language sql
stable
set search_path = ''
as $$
  select coalesce(jsonb_agg(waitress.cart_item_json(ci) order by ci.id), '[]'::jsonb)
    from waitress.cart_items ci
   where ci.cart_id = p_cart_id and not ci.purchased
$$;

-- ---------------------------------------------------------------- a checkout across shards
-- The journal of checkouts that span shards (or whose Idempotency-Key lives
-- at home while its one part is placed elsewhere), at the buyer's home: a row
-- from the start of the checkout until every part is placed (done) or undone
-- (refused). A row that stays (the router died, a shard could not be reached
-- to undo its part) is resumed by a retry with the same key, or undone by the
-- sweeper (the router's api.expire_orders).
create table waitress.checkouts (
  id uuid primary key,
  cart_id bigint not null,
  buyer_id bigint not null,
  action text not null,
  idempotency_key text,
  partitions integer not null,
  started_at timestamptz not null default now(),
  constraint checkouts_action_known check (action in ('place_order', 'place_buyer_order', 'place_orders')),
  constraint checkouts_key unique (buyer_id, idempotency_key)
);

create index checkouts_started_at_idx on waitress.checkouts (started_at);

comment on table waitress.checkouts is
  'At the buyer''s home: checkouts across shards still in flight (partitions: where their parts are). Deleted when '
  'done or undone; one that stays is resumed (same Idempotency-Key) or undone by the sweeper.';

-- The request a single database hashes for the key (api.place_order and
-- api.place_buyer_order): the same key means the same thing on shards.
create function waitress.checkout_request(p_action text, p_cart_id bigint, p_buyer_id bigint, p_item_ids bigint[], p_note text)
returns jsonb
language sql
immutable
set search_path = ''
as $$
  select case p_action
    when 'place_order' then jsonb_build_object('cart_id', p_cart_id, 'item_ids', to_jsonb(p_item_ids), 'note', p_note)
    else jsonb_build_object('buyer_id', p_buyer_id, 'item_ids', to_jsonb(p_item_ids), 'note', p_note, 'one_seller', true)
  end
$$;

-- At home, after the router has locked the cart: claims the key (or says
-- what an earlier attempt with it got) and opens the journal.
--   {"state": "new", "checkout_id", "partitions"}
--   {"state": "resume", "checkout_id", "partitions"}  an attempt that never finished
--   {"state": "done", "orders"}                       the recorded response
-- WA101 for the key with another request, as in a single database.
create function waitress.checkout_begin(p_action text, p_cart_id bigint, p_buyer_id bigint, p_item_ids bigint[],
                                        p_note text, p_key text, p_partitions integer)
returns jsonb
language plpgsql
set search_path = ''
as $$
declare
  v_replay record;
  v_journal waitress.checkouts;
begin
  if p_key is not null then
    begin
      select * into v_replay
        from waitress.idempotency_begin(p_buyer_id, p_key, p_action,
                                        waitress.checkout_request(p_action, p_cart_id, p_buyer_id, p_item_ids, p_note));
    exception when sqlstate 'WA102' then
      -- The key was claimed and never answered: the attempt's journal says where it got to.
      select * into v_journal from waitress.checkouts c where c.buyer_id = p_buyer_id and c.idempotency_key = p_key;
      if not found then
        raise;
      end if;
      return jsonb_build_object('state', 'resume', 'checkout_id', v_journal.id, 'partitions', v_journal.partitions);
    end;
    if v_replay.status is not null then
      return jsonb_build_object('state', 'done', 'orders', v_replay.data);
    end if;
  end if;
  insert into waitress.checkouts (id, cart_id, buyer_id, action, idempotency_key, partitions)
  values (gen_random_uuid(), p_cart_id, p_buyer_id, p_action, p_key, p_partitions)
  returning * into v_journal;
  return jsonb_build_object('state', 'new', 'checkout_id', v_journal.id, 'partitions', v_journal.partitions);
end
$$;

-- At home: where a checkout of this cart (place_order) or of this buyer's
-- items (place_buyer_order) must run. When every line it concerns is held
-- here, it runs here, as the one schema's own function with its key, in one
-- transaction: {"done": {"orders", "replayed"}} (or its refusal, raised).
-- Otherwise {"remote": {"cart_id", "buyer_id", "partitions"}} and, with
-- p_begin (the router holds the cart's lock), the journal opened as by
-- checkout_begin ("state", "checkout_id" and, when done, "orders") when the
-- checkout needs one: it has a key, or its lines are on several databases
-- (p_map: the database of each partition, the router's map).
create function waitress.checkout_home(p_action text, p_cart_id bigint, p_buyer_id bigint, p_item_ids bigint[],
                                       p_note text, p_key text, p_user_id bigint, p_begin boolean, p_map integer[])
returns jsonb
language plpgsql
set search_path = ''
as $$
declare
  v_cart waitress.carts;
  v_mask integer;
  v_local integer := (select s.partitions from waitress.shard_identity s);
  v_remote jsonb;
begin
  if p_action = 'place_order' then
    select * into v_cart from waitress.carts c where c.id = p_cart_id and (p_user_id is null or c.user_id = p_user_id);
  else
    select * into v_cart from waitress.carts c where c.user_id = p_buyer_id;
  end if;
  if v_cart.id is not null then
    if p_item_ids is not null then
      select coalesce(bit_or(1 << (i & 15)::integer), 0) into v_mask from unnest(p_item_ids) i where i is not null;
    else
      v_mask := waitress.cart_mask(v_cart.id);
    end if;
  end if;

  -- No such cart, or everything it concerns is here: the one schema decides
  -- (WA001, WA005 and WA006 as a single database words them).
  if v_cart.id is null or v_mask & ~v_local = 0 then
    return jsonb_build_object('done', case p_action
      when 'place_order' then api.place_order(p_cart_id, p_item_ids, p_note, p_key, p_user_id)
      else api.place_buyer_order(p_buyer_id, p_item_ids, p_note, p_key) end);
  end if;

  v_remote := jsonb_build_object('cart_id', v_cart.id, 'buyer_id', v_cart.user_id, 'partitions', v_mask);
  if p_begin and (p_key is not null
                  or (select count(distinct p_map[p + 1]) from generate_series(0, 15) p where v_mask & (1 << p) <> 0) > 1) then
    v_remote := v_remote || waitress.checkout_begin(p_action, v_cart.id, v_cart.user_id, p_item_ids, p_note, p_key, v_mask);
  end if;
  return jsonb_build_object('remote', v_remote);
end
$$;

-- At home: the checkout is placed everywhere. Records the response under the
-- key (as a single database does in the checkout's transaction) and closes the journal.
create function waitress.checkout_finish(p_checkout_id uuid, p_buyer_id bigint, p_key text, p_orders jsonb) returns jsonb
language plpgsql
set search_path = ''
as $$
begin
  if p_key is not null then
    perform waitress.idempotency_finish(p_buyer_id, p_key, 201, p_orders);
  end if;
  delete from waitress.checkouts where id = p_checkout_id;
  return jsonb_build_object('finished', p_checkout_id);
end
$$;

-- At home: the checkout was refused and every part it had placed is undone.
-- The key is free again, as in a single database where the refusal rolls its
-- claim back.
create function waitress.checkout_abort(p_checkout_id uuid, p_buyer_id bigint, p_key text) returns jsonb
language plpgsql
set search_path = ''
as $$
begin
  if p_key is not null then
    delete from waitress.idempotency_keys k where k.user_id = p_buyer_id and k.key = p_key and k.response_status is null;
  end if;
  delete from waitress.checkouts where id = p_checkout_id;
  return jsonb_build_object('aborted', p_checkout_id);
end
$$;

-- At home: journals older than p_age (checkouts that stopped half-way), for the sweeper.
create function waitress.stale_checkouts(p_age interval) returns jsonb
language sql
stable
set search_path = ''
as $$
  select coalesce(jsonb_agg(to_jsonb(c) order by c.started_at), '[]'::jsonb)
    from waitress.checkouts c
   where c.started_at < now() - p_age
$$;

-- This shard's items of a request (item_ids naming items of other shards too).
create function waitress.own_request(p_request jsonb) returns jsonb
language sql
stable
set search_path = ''
as $$
  select case when jsonb_typeof(p_request->'item_ids') = 'array'
    then jsonb_set(p_request, '{item_ids}', coalesce(
           (select jsonb_agg(i order by n)
              from jsonb_array_elements(p_request->'item_ids') with ordinality x(i, n)
             where jsonb_typeof(i) <> 'number' or waitress.owns(((i #>> '{}')::bigint & 15)::integer)), '[]'::jsonb))
    else p_request end
$$;

-- This shard's part of a checkout: the one schema's place_orders for the
-- request's lines held here, in one transaction of this shard. Returns its
-- outcome, {"orders": [...]} or {"error": {...}} (WA006: no line of it here),
-- and whether the orders were placed by an earlier attempt of the same
-- checkout ("replayed": a resumed checkout finds its parts by checkout id).
-- p_dry_run: decide without writing (the router checks every part first).
create function waitress.place_part(p_checkout_id uuid, p_request jsonb, p_cart_id bigint, p_buyer_id bigint,
                                    p_dry_run boolean)
returns jsonb
language plpgsql
set search_path = ''
as $$
declare
  v_outcome jsonb;
  v_orders jsonb;
begin
  if not p_dry_run and p_checkout_id is not null then
    select jsonb_agg(waitress.order_json(o) order by o.id) into v_orders
      from waitress.orders o
     where o.checkout_id = p_checkout_id and o.compensated_at is null;
    if v_orders is not null then
      return jsonb_build_object('orders', v_orders, 'replayed', true);
    end if;
    perform set_config('waitress.checkout_id', p_checkout_id::text, true);
  end if;
  begin
    perform waitress.ensure_cart_copy(p_cart_id, p_buyer_id);
    v_outcome := waitress.place_orders(jsonb_build_array(waitress.own_request(p_request)))->0;
    if p_dry_run or v_outcome ? 'error' then
      raise exception using errcode = 'WZ000', message = 'roll the part back';
    end if;
  exception when sqlstate 'WZ000' then
    null;
  end;
  perform set_config('waitress.checkout_id', '', true);
  return v_outcome || jsonb_build_object('replayed', false);
end
$$;

-- Undoes this shard's part of a refused checkout, in one transaction: each
-- of its orders is cancelled by the lifecycle's own cancel (api.act_on_order:
-- the stock comes back exactly once, under the order's lock) and marked
-- compensated, and its lines go back in the cart as open lines (new lines;
-- added to an open line of the same product if the buyer made one since).
-- Running it again changes nothing.
create function waitress.compensate_part(p_checkout_id uuid) returns jsonb
language plpgsql
set search_path = ''
as $$
declare
  v_cart_id bigint;
  v_order record;
  v_cancelled bigint[] := '{}';
begin
  select ci.cart_id into v_cart_id
    from waitress.orders o
    join waitress.order_items oi on oi.order_id = o.id
    join waitress.cart_items ci on ci.id = oi.cart_item_id
   where o.checkout_id = p_checkout_id and o.compensated_at is null
   limit 1;
  if v_cart_id is null then
    return jsonb_build_object('cancelled', '[]'::jsonb);
  end if;
  -- The cart, then the orders, then all their products in id order (each
  -- one's queue, then its row), before any is cancelled: the lock order of
  -- the checkout (cart, products) and of the lifecycle (order, products).
  -- Cancelling order after order would lock the products of each in turn,
  -- out of id order, and deadlock with a checkout.
  perform from waitress.carts where id = v_cart_id for no key update;
  perform from waitress.orders o
   where o.checkout_id = p_checkout_id and o.compensated_at is null
   order by o.id
     for no key update;
  perform waitress.lock_products(array(select oi.product_id
                                         from waitress.order_items oi
                                         join waitress.orders o on o.id = oi.order_id
                                        where o.checkout_id = p_checkout_id and o.compensated_at is null));
  for v_order in
    select o.id, o.state from waitress.orders o
     where o.checkout_id = p_checkout_id and o.compensated_at is null
     order by o.id
  loop
    if v_order.state in ('pending', 'paid', 'accepted') then
      perform api.act_on_order(v_order.id, 'cancel');
    end if;
    update waitress.orders set compensated_at = now() where id = v_order.id;
    v_cancelled := v_cancelled || v_order.id;
  end loop;

  insert into waitress.cart_items as ci (cart_id, product_id, quantity)
  select c.cart_id, oi.product_id, oi.quantity
    from waitress.order_items oi
    join waitress.cart_items c on c.id = oi.cart_item_id
   where oi.order_id = any (v_cancelled)
   order by oi.product_id
  on conflict (cart_id, product_id) where not purchased
  do update set quantity = ci.quantity + excluded.quantity;

  return jsonb_build_object('cancelled', to_jsonb(v_cancelled));
end
$$;

-- ---------------------------------------------------------------- batches (api.place_orders)
-- At home: the carts of the batch's requests whose home is here
-- (each request carries "i", its position, and "home", its home partition).
create function waitress.batch_homes(p_requests jsonb) returns jsonb
language sql
stable
set search_path = ''
as $$
  select coalesce(jsonb_agg(jsonb_build_object('i', x.r->'i', 'cart_id', c.id, 'buyer_id', c.user_id,
                                               'partitions', waitress.cart_mask(c.id))), '[]'::jsonb)
    from jsonb_array_elements(p_requests) x(r)
    cross join lateral (
      select c.id, c.user_id from waitress.carts c
       where case when x.r->>'cart_id' is not null then c.id = (x.r->>'cart_id')::bigint
                  else c.user_id = (x.r->>'buyer_id')::bigint end
    ) c
   where waitress.owns((x.r->>'home')::integer)
$$;

-- The requests of a batch placed here (each carries "i", "target", and the
-- cart it resolved to, "cart", "buyer"), in their order, as one place_orders call.
create function waitress.batch_part(p_requests jsonb) returns jsonb
language plpgsql
set search_path = ''
as $$
declare
  v_mine jsonb;
  v_outcomes jsonb;
  r jsonb;
begin
  select coalesce(jsonb_agg(x.r order by (x.r->>'i')::integer), '[]'::jsonb) into v_mine
    from jsonb_array_elements(p_requests) x(r)
   where waitress.owns((x.r->>'target')::integer);
  for r in select * from jsonb_array_elements(v_mine) loop
    perform waitress.ensure_cart_copy((r->>'cart')::bigint, (r->>'buyer')::bigint);
  end loop;
  v_outcomes := waitress.place_orders(
    (select coalesce(jsonb_agg(waitress.own_request(x.r - 'i' - 'target' - 'cart' - 'buyer' - 'home') order by n), '[]'::jsonb)
       from jsonb_array_elements(v_mine) with ordinality x(r, n)));
  return (select coalesce(jsonb_agg(jsonb_build_object('i', x.r->'i', 'outcome', v_outcomes->(n::integer - 1)) order by n), '[]'::jsonb)
            from jsonb_array_elements(v_mine) with ordinality x(r, n));
end
$$;

-- ---------------------------------------------------------------- reads gathered from every shard
-- This shard's first p_offset + p_limit products by id (the router merges the pages).
create function waitress.products_page(p_limit integer, p_offset integer) returns jsonb
language plpgsql
stable
set search_path = ''
as $$
begin
  perform waitress.check_page(p_limit, p_offset);
  return coalesce((select jsonb_agg(waitress.product_json(p) order by p.id)
                     from (select * from waitress.products order by id limit p_limit + p_offset) p), '[]');
end
$$;

-- This shard's first p_offset + p_limit orders by id, filtered as api.orders
-- filters them, less the orders of refused checkouts undone here (compensated).
create function waitress.orders_page(p_buyer_id bigint, p_seller_id bigint, p_state text, p_limit integer,
                                     p_offset integer, p_after bigint, p_user_id bigint)
returns jsonb
language plpgsql
stable
set search_path = ''
as $$
begin
  perform waitress.check_page(p_limit, p_offset);
  return coalesce((
    select jsonb_agg(waitress.order_json(o) order by o.id)
      from (select *
              from waitress.orders o
             where (p_user_id is null or o.buyer_id = p_user_id or o.seller_id = p_user_id)
               and (p_buyer_id is null or o.buyer_id = p_buyer_id)
               and (p_seller_id is null or o.seller_id = p_seller_id)
               and (p_state is null or o.state = p_state::waitress.order_state)
               and (p_after is null or o.id > p_after)
               and o.compensated_at is null
             order by o.id
             limit p_limit + p_offset) o), '[]');
end
$$;

-- This shard: its identity and the versions of its migrations.
create function waitress.shard_info() returns jsonb
language sql
stable
set search_path = ''
as $$
  select jsonb_build_object('database', current_database(), 'shard', s.shard, 'shards', s.shards, 'partitions', s.partitions)
    from waitress.shard_identity s
$$;

comment on function waitress.cart_mask(bigint) is 'At home: the partitions that may hold the cart''s lines.';
comment on function waitress.cart_home(bigint) is 'At home: {cart: Cart with the lines held here, partitions}.';
comment on function waitress.cart_touch(bigint, bigint, integer) is 'At home: WA001 unless the cart is the user''s; notes a partition of its lines.';
comment on function waitress.ensure_cart_copy(bigint, bigint) is 'The cart''s row on a shard other than its home.';
comment on function waitress.cart_add_line(bigint, bigint, bigint, integer, bigint) is 'On the product''s shard: api.add_cart_item on the cart''s copy.';
comment on function waitress.cart_lines(bigint) is 'The cart''s open lines held here.';
comment on function waitress.checkout_request(text, bigint, bigint, bigint[], text) is 'The request a single database hashes under an Idempotency-Key.';
comment on function waitress.checkout_begin(text, bigint, bigint, bigint[], text, text, integer) is 'At home: claims the key and opens the journal.';
comment on function waitress.checkout_home(text, bigint, bigint, bigint[], text, text, bigint, boolean, integer[]) is 'At home: runs the checkout here, or says where its lines are.';
comment on function waitress.checkout_finish(uuid, bigint, text, jsonb) is 'At home: records the response under the key; closes the journal.';
comment on function waitress.checkout_abort(uuid, bigint, text) is 'At home: frees the key of a refused checkout; closes the journal.';
comment on function waitress.stale_checkouts(interval) is 'At home: journals older than p_age.';
comment on function waitress.own_request(jsonb) is 'The request with only the item ids held here.';
comment on function waitress.place_part(uuid, jsonb, bigint, bigint, boolean) is 'This shard''s part of a checkout: place_orders for its lines here.';
comment on function waitress.compensate_part(uuid) is 'Undoes this shard''s part of a refused checkout through the lifecycle''s cancel.';
comment on function waitress.batch_homes(jsonb) is 'At home: the carts of a batch''s requests.';
comment on function waitress.batch_part(jsonb) is 'The requests of a batch placed here, as one place_orders call.';
comment on function waitress.products_page(integer, integer) is 'This shard''s first offset + limit products.';
comment on function waitress.orders_page(bigint, bigint, text, integer, integer, bigint, bigint) is 'This shard''s first offset + limit orders, as api.orders filters them.';
comment on function waitress.shard_info() is 'This shard''s identity.';

-- migrate:down
set local role waitress_owner;
drop function if exists waitress.shard_info();
drop function if exists waitress.orders_page(bigint, bigint, text, integer, integer, bigint, bigint);
drop function if exists waitress.products_page(integer, integer);
drop function if exists waitress.batch_part(jsonb);
drop function if exists waitress.batch_homes(jsonb);
drop function if exists waitress.compensate_part(uuid);
drop function if exists waitress.place_part(uuid, jsonb, bigint, bigint, boolean);
drop function if exists waitress.own_request(jsonb);
drop function if exists waitress.stale_checkouts(interval);
drop function if exists waitress.checkout_abort(uuid, bigint, text);
drop function if exists waitress.checkout_finish(uuid, bigint, text, jsonb);
drop function if exists waitress.checkout_home(text, bigint, bigint, bigint[], text, text, bigint, boolean, integer[]);
drop function if exists waitress.checkout_begin(text, bigint, bigint, bigint[], text, text, integer);
drop function if exists waitress.checkout_request(text, bigint, bigint, bigint[], text);
drop table if exists waitress.checkouts;
drop function if exists waitress.cart_lines(bigint);
drop function if exists waitress.cart_add_line(bigint, bigint, bigint, integer, bigint);
drop function if exists waitress.ensure_cart_copy(bigint, bigint);
drop function if exists waitress.cart_touch(bigint, bigint, integer);
drop function if exists waitress.cart_home(bigint);
drop function if exists waitress.cart_mask(bigint);
drop table if exists waitress.cart_partitions;
