-- migrate:up
set local role waitress_owner;

-- Two things a sharded deployment (docs/scale-out.md) needs from the one
-- schema that every database runs, single or shard:
--
-- 1. Where an order's id comes from. The checkout mints its orders' ids
--    before inserting them (its lines and ledger rows refer to them in the same
--    statement), so the minting is a function: here, the orders' identity
--    sequence; on a shard (db/shard), an id whose low bits name the seller's
--    partition, so that a bare order id routes to its shard. Here it has no
--    SET clause, so the planner inlines it into the checkout's cached plans
--    (a pinned search_path would parse and plan the body on every call); the
--    body names its function and sequence by schema, so no search_path can
--    redirect them.
create function waitress.new_order_id(p_seller_id bigint) returns bigint
language sql
volatile
as $$
  select pg_catalog.nextval('waitress.orders_id_seq')
$$;

comment on function waitress.new_order_id(bigint) is
  'The id of a new order of this seller: the next value of the orders'' sequence (a shard mints a routable id).';

-- 2. The code a router raises when a shard cannot be reached (PostgreSQL's
--    connection_failure): transient, so 503 with Retry-After.
insert into waitress.refusals (code, http_status, source, title, meaning, detail, hint) values
  ('08006', 503, 'postgresql', 'shard unavailable',
   'Sharded deployments: a shard database could not be reached or broke the connection; nothing was left half-done.',
   null, null);

-- migrate:down
set local role waitress_owner;
delete from waitress.refusals where code = '08006';
drop function if exists waitress.new_order_id(bigint);
