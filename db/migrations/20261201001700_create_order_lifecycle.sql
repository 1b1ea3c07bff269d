-- migrate:up
set local role waitress_owner;

-- The order lifecycle, as data: each action, the states it applies to, the
-- state it leads to, and the party who may take it.
--
--   pending -> paid (pay) -> accepted (accept) -> delivered (deliver) -> remitted (remit)
--   pending -> cancelled (cancel)        pending -> expired (api.expire_orders)
--   paid -> rejected (reject)            paid, accepted -> cancelled (cancel)
--   rejected, cancelled (if it was paid) -> refunded (refund)
--
-- Every move locks the order row first, then (to give stock back) queues
-- for its products and locks them, in ascending id order: the checkout's
-- discipline, so moves and checkouts cannot deadlock each other. An order
-- that dies before delivery (cancelled, expired, rejected) gives its stock
-- back exactly once: the move into those states happens once under the
-- order's lock, and stock_movements_once_per_order_line refuses a second
-- release.
create table waitress.order_actions (
  action text primary key,
  from_states waitress.order_state[] not null,
  to_state waitress.order_state not null,
  by_party text not null,
  needs_payment boolean not null default false,
  summary text not null,
  constraint order_actions_by_party_known check (by_party in ('buyer', 'seller'))
);

comment on table waitress.order_actions is
  'The lifecycle''s actions: from which states, to which state, by which party (the buyer pays and cancels, the '
  'seller does the rest). api.act_on_order reads it; so do the docs.';

insert into waitress.order_actions (action, from_states, to_state, by_party, needs_payment, summary) values
  ('pay', '{pending}', 'paid', 'buyer', false, 'The buyer pays: pending to paid.'),
  ('accept', '{paid}', 'accepted', 'seller', false, 'The seller accepts: paid to accepted.'),
  ('reject', '{paid}', 'rejected', 'seller', false, 'The seller rejects: paid to rejected; the stock comes back.'),
  ('deliver', '{accepted}', 'delivered', 'seller', false, 'Delivered: accepted to delivered.'),
  ('remit', '{delivered}', 'remitted', 'seller', false, 'The seller is paid out: delivered to remitted.'),
  ('refund', '{rejected,cancelled}', 'refunded', 'seller', true, 'A paid order that died is refunded: rejected or cancelled to refunded.'),
  ('cancel', '{pending,paid,accepted}', 'cancelled', 'buyer', false,
   'The buyer cancels before delivery: pending, paid or accepted to cancelled; the stock comes back.');

-- The checkout's discipline for anything that gives stock back: each
-- product's queue, then its row, both in ascending id. A checkout may hold a
-- product's row while it waits for a lower one (its one-request path hands
-- over to the batch path with the rows it locked); it always holds the queue
-- of every product it waits for, so queueing first keeps a release from
-- holding that lower row.
create function waitress.lock_products(p_product_ids bigint[]) returns void
language plpgsql
set search_path = ''
as $$
declare
  v_ids bigint[] := array(select distinct x from unnest(p_product_ids) x order by 1);
begin
  perform pg_advisory_xact_lock(1463899218, (x % 2147483647)::integer) from unnest(v_ids) x;
  perform from waitress.products p where p.id = any (v_ids) order by p.id for no key update;
end
$$;

comment on function waitress.lock_products(bigint[]) is
  'Queues for these products and locks their rows (FOR NO KEY UPDATE), in ascending id: the checkout''s lock order, '
  'for the functions that give stock back.';

create function waitress.release_order_stock(p_order_ids bigint[]) returns void
language plpgsql
set search_path = ''
as $$
begin
  perform waitress.lock_products(array(select oi.product_id from waitress.order_items oi where oi.order_id = any (p_order_ids)));

  with lines as (
    select oi.order_id, oi.product_id, oi.quantity
      from waitress.order_items oi
     where oi.order_id = any (p_order_ids)
  ), restocked as (
    update waitress.products p
       set stock = p.stock + returned.quantity
      from (select product_id, sum(quantity)::integer as quantity from lines group by product_id) returned
     where p.id = returned.product_id
  )
  insert into waitress.stock_movements (product_id, quantity, reason, order_id)
  select product_id, quantity, 'release', order_id from lines;
end
$$;

comment on function waitress.release_order_stock(bigint[]) is
  'Gives the stock of these orders'' lines back, with one release movement per line. The caller holds the '
  'orders'' locks and has moved them to a state that releases.';

create function api.act_on_order(
  p_order_id bigint,
  p_action text,
  p_idempotency_key text default null,
  p_user_id bigint default null
) returns jsonb
language plpgsql
security definer
set search_path = ''
as $$
declare
  v_action waitress.order_actions;
  v_order waitress.orders;
  v_party_id bigint;
  v_replay record;
  v_document jsonb;
begin
  select * into v_action from waitress.order_actions where action = p_action;
  if not found then
    raise exception using errcode = '22023', message = format('unknown order action %s', coalesce(p_action, 'null'));
  end if;

  -- Whose order it is comes first: to anyone else it does not exist, and
  -- their idempotency key is never looked up.
  select * into v_order
    from waitress.orders o
   where o.id = p_order_id and (p_user_id is null or p_user_id in (o.buyer_id, o.seller_id))
     for no key update;
  if not found then
    perform waitress.refuse('WA008', format('order %s not found', p_order_id), jsonb_build_object('order_id', p_order_id));
  end if;
  v_party_id := case v_action.by_party when 'buyer' then v_order.buyer_id else v_order.seller_id end;
  if p_user_id is not null and p_user_id <> v_party_id then
    perform waitress.refuse('WA011', format('only the %s of order %s may %s it', v_action.by_party, waitress.order_code(v_order.id, v_order.created_at), p_action),
                            jsonb_build_object('order_id', v_order.id, 'action', p_action, 'allowed', v_action.by_party));
  end if;

  if p_idempotency_key is not null then
    select * into v_replay
      from waitress.idempotency_begin(v_party_id, p_idempotency_key, 'order_action',
                                      jsonb_build_object('order_id', p_order_id, 'action', p_action));
    if v_replay.status is not null then
      return jsonb_build_object('order', v_replay.data, 'replayed', true);
    end if;
  end if;

  if not v_order.state = any (v_action.from_states) or (v_action.needs_payment and v_order.paid_at is null) then
    perform waitress.refuse('WA009',
      format('order %s is %s%s: it cannot be %s', waitress.order_code(v_order.id, v_order.created_at), v_order.state,
             case when v_action.needs_payment and v_order.paid_at is null then ' and was never paid' else '' end,
             v_action.to_state),
      jsonb_build_object('order_id', v_order.id, 'code', waitress.order_code(v_order.id, v_order.created_at), 'state', v_order.state, 'action', p_action,
                         'allowed_from', to_jsonb(v_action.from_states), 'paid', v_order.paid_at is not null),
      format('%s applies to orders that are %s%s.', p_action, array_to_string(v_action.from_states, ' or '),
             case when v_action.needs_payment then ' and were paid' else '' end));
  end if;

  update waitress.orders
     set state = v_action.to_state,
         paid_at = case when v_action.to_state = 'paid' then now() else paid_at end
   where id = p_order_id
  returning * into v_order;
  if v_action.to_state in ('cancelled', 'rejected') then
    perform waitress.release_order_stock(array[p_order_id]);
  end if;

  v_document := waitress.order_json(v_order);
  if p_idempotency_key is not null then
    perform waitress.idempotency_finish(v_party_id, p_idempotency_key, 200, v_document);
  end if;
  return jsonb_build_object('order', v_document, 'replayed', false);
end
$$;

comment on function api.act_on_order(bigint, text, text, bigint) is
  'Moves an order through its lifecycle (pay, accept, reject, deliver, remit, refund, cancel: waitress.order_actions) '
  'and returns {"order": Order, "replayed": ...}. p_user_id: the user acting; the order must be theirs (else WA008) '
  'and the action their party''s (else WA011); null acts for anyone. WA009 when the order is not in a state the '
  'action applies to. With p_idempotency_key (scoped to the acting party), exactly once.';

create function api.order(p_order_id bigint, p_user_id bigint default null) returns jsonb
language plpgsql
stable
security definer
set search_path = ''
as $$
declare
  v_order waitress.orders;
begin
  select * into v_order
    from waitress.orders o
   where o.id = p_order_id and (p_user_id is null or p_user_id in (o.buyer_id, o.seller_id));
  if not found then
    perform waitress.refuse('WA008', format('order %s not found', p_order_id), jsonb_build_object('order_id', p_order_id));
  end if;
  return waitress.order_json(v_order);
end
$$;

comment on function api.order(bigint, bigint) is
  'The Order, if p_user_id is its buyer or its seller (or p_user_id is null); else WA008.';

create function api.orders(
  p_buyer_id bigint default null,
  p_seller_id bigint default null,
  p_state text default null,
  p_limit integer default 10,
  p_offset integer default 0,
  p_after bigint default null,
  p_user_id bigint default null
) returns jsonb
language plpgsql
stable
security definer
set search_path = ''
as $$
declare
  -- Ids are positive: "after 0" is the first page.
  v_after bigint := coalesce(p_after, 0);
  v_state waitress.order_state := p_state::waitress.order_state;
  v_buyer_id bigint := p_buyer_id;
  v_seller_id bigint := p_seller_id;
  v_page jsonb;
begin
  perform waitress.check_page(p_limit, p_offset);

  -- A user sees only the orders they bought or sold. Unless they list both
  -- sides (below), that becomes a filter on their own side, so that each
  -- query filters on one party at most and reads one index.
  if p_user_id is not null and (v_buyer_id is not null or v_seller_id is not null)
     and p_user_id is distinct from v_buyer_id and p_user_id is distinct from v_seller_id then
    if v_buyer_id is null then
      v_buyer_id := p_user_id;
    elsif v_seller_id is null then
      v_seller_id := p_user_id;
    else
      return '[]'; -- a buyer and a seller who are both someone else
    end if;
  end if;

  -- One query per shape of the filter, each an ordered scan of one party's
  -- index from (party, after) to the page's last row: no sort, and nothing
  -- read before the page however many orders the party has. The keyset is a
  -- row comparison in the index's own order, (party, id) > (p, after) up to
  -- party <= p: only that index yields rows in that order, so the planner
  -- cannot walk the primary key and filter instead (which it prefers for a
  -- party with a large share of the orders, and which reads every other
  -- party's orders in between).
  if v_buyer_id is not null then
    -- orders_buyer_id_id_idx
    select jsonb_agg(waitress.order_json(o) order by o.buyer_id, o.id) into v_page
      from (select *
              from waitress.orders o
             where (o.buyer_id, o.id) > (v_buyer_id, v_after) and o.buyer_id <= v_buyer_id
               and (v_seller_id is null or o.seller_id = v_seller_id)
               and (v_state is null or o.state = v_state)
             order by o.buyer_id, o.id
             limit p_limit offset p_offset) o;
  elsif v_seller_id is not null then
    -- orders_seller_id_id_idx
    select jsonb_agg(waitress.order_json(o) order by o.seller_id, o.id) into v_page
      from (select *
              from waitress.orders o
             where (o.seller_id, o.id) > (v_seller_id, v_after) and o.seller_id <= v_seller_id
               and (v_state is null or o.state = v_state)
             order by o.seller_id, o.id
             limit p_limit offset p_offset) o;
  elsif p_user_id is not null then
    -- The user's orders on both sides: a page from each index, as above,
    -- merged by id (a sort of at most twice limit + offset rows). An order
    -- the user sold to themselves comes from the first.
    select jsonb_agg(waitress.order_json(o) order by o.id) into v_page
      from (select *
              from ((select *
                       from waitress.orders o
                      where (o.buyer_id, o.id) > (p_user_id, v_after) and o.buyer_id <= p_user_id
                        and (v_state is null or o.state = v_state)
                      order by o.buyer_id, o.id
                      limit p_limit::bigint + p_offset)
                    union all
                    (select *
                       from waitress.orders o
                      where (o.seller_id, o.id) > (p_user_id, v_after) and o.seller_id <= p_user_id
                        and o.buyer_id <> p_user_id
                        and (v_state is null or o.state = v_state)
                      order by o.seller_id, o.id
                      limit p_limit::bigint + p_offset)) mine
             order by mine.id
             limit p_limit offset p_offset) o;
  else
    -- Anyone's (no authentication): the primary key.
    select jsonb_agg(waitress.order_json(o) order by o.id) into v_page
      from (select *
              from waitress.orders o
             where o.id > v_after
               and (v_state is null or o.state = v_state)
             order by o.id
             limit p_limit offset p_offset) o;
  end if;
  return coalesce(v_page, '[]');
end
$$;

comment on function api.orders(bigint, bigint, text, integer, integer, bigint, bigint) is
  'A page of orders by id as a JSON array, filtered by buyer, seller and state; p_after pages by key (ids above '
  'it). With p_user_id, only the orders where that user is the buyer or the seller. A buyer''s or a seller''s '
  'page is one ordered scan of orders_buyer_id_id_idx or orders_seller_id_id_idx from p_after: no sort, and its '
  'cost does not grow with the number of orders before it.';

create function api.expire_orders(p_ttl interval default '30 minutes', p_limit integer default 500) returns integer
language plpgsql
security definer
set search_path = ''
as $$
declare
  v_ids bigint[];
begin
  if p_ttl is null or p_ttl < interval '0' or p_limit is null or p_limit < 1 then
    raise exception using errcode = '22023',
      message = format('expire_orders needs a non-negative ttl and a positive limit, got %s and %s', p_ttl, p_limit);
  end if;

  -- SKIP LOCKED: an order being paid or cancelled right now is left to that
  -- transaction, and several expire_orders() calls share the work.
  select array_agg(id order by id) into v_ids
    from (select o.id
            from waitress.orders o
           where o.state = 'pending' and o.created_at < now() - p_ttl
           order by o.id
           limit p_limit
             for no key update skip locked) due;
  if v_ids is null then
    return 0;
  end if;

  update waitress.orders set state = 'expired' where id = any (v_ids);
  perform waitress.release_order_stock(v_ids);
  return cardinality(v_ids);
end
$$;

comment on function api.expire_orders(interval, integer) is
  'Expires up to p_limit pending orders older than p_ttl and gives their stock back; returns how many. '
  'Safe to run from several places at once. Call it again while it returns p_limit.';

-- migrate:down
set local role waitress_owner;
drop function if exists api.expire_orders(interval, integer);
drop function if exists api.orders(bigint, bigint, text, integer, integer, bigint, bigint);
drop function if exists api.order(bigint, bigint);
drop function if exists api.act_on_order(bigint, text, text, bigint);
drop function if exists waitress.release_order_stock(bigint[]);
drop function if exists waitress.lock_products(bigint[]);
drop table if exists waitress.order_actions;
