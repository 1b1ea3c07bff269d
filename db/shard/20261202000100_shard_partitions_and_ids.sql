-- migrate:up
-- A shard runs every migration of db/migrations (the one schema: the same
-- tables, rules and api functions as a single database), then these
-- (`npm run db:migrate` with SHARD_URLS passes both directories to dbmate).
-- This file makes the shard's ids routable; docs/scale-out.md has the design.
--
-- 16 logical partitions, forever. A seller (and a buyer's cart) belongs to
-- partition hashint8(id) & 15; partition p lives on shard p mod N. Every id a
-- shard mints carries the partition of what it belongs to in its low 4 bits,
-- id = n * 16 + partition, so the router routes a bare id with
-- `run on <id>` (PL/Proxy takes id & 15) and no lookup table:
--   products, orders          the seller's partition
--   carts                     the user's partition (the cart's home)
--   cart_items, order_items,  the product's partition (= its seller's)
--   stock_movements
-- Adding shards moves whole partitions (docs/scale-out.md); the ids never change.
set local role waitress_owner;

create function waitress.partition_of(p_key bigint) returns integer
language sql
immutable
strict
parallel safe
set search_path = ''
as $$
  select pg_catalog.hashint8(p_key) & 15
$$;

comment on function waitress.partition_of(bigint) is
  'The logical partition (0-15) of a seller or a user: hashint8 & 15, computed the same way by the router.';

-- Which partitions this database holds. Written by the deploy step
-- (scripts/shards.ts configure, from SHARD_URLS): until then the shard mints
-- nothing, so a misrouted write can never create a row under a foreign
-- partition.
create table waitress.shard_identity (
  singleton boolean primary key default true,
  shard integer not null,
  shards integer not null,
  partitions integer not null,
  configured_at timestamptz not null default now(),
  constraint shard_identity_one_row check (singleton),
  constraint shard_identity_shard_in_range check (shard >= 0 and shard < shards and shards between 1 and 16),
  constraint shard_identity_partitions_16_bits check (partitions > 0 and partitions < 65536)
);

comment on table waitress.shard_identity is
  'This shard: its index among the shards, how many there are, and the partitions (a 16-bit mask) it holds.';

create function waitress.set_shard_identity(p_shard integer, p_shards integer, p_partitions integer) returns void
language sql
set search_path = ''
as $$
  insert into waitress.shard_identity (shard, shards, partitions) values (p_shard, p_shards, p_partitions)
  on conflict (singleton) do update
     set shard = excluded.shard, shards = excluded.shards, partitions = excluded.partitions, configured_at = now()
$$;

comment on function waitress.set_shard_identity(integer, integer, integer) is
  'The deploy step: which shard this is and which partitions it holds (scripts/shards.ts configure).';

-- By its key: the checkout runs with enable_seqscan off, and a sequential
-- scan, even of one row, would then cost enough to be compiled by JIT at
-- every call (~70 ms).
create function waitress.owns(p_partition integer) returns boolean
language sql
stable
set search_path = ''
as $$
  select coalesce((select s.partitions & (1 << p_partition) <> 0 from waitress.shard_identity s where s.singleton), false)
$$;

comment on function waitress.owns(integer) is 'Whether this shard holds the partition.';

-- An id for a row of partition p from a raw sequence value. The identity
-- sequences of a shard count downwards from -1 (below): a negative id is a
-- raw value still to be minted, a positive one was minted already (a cart's
-- copy, a row moved from another shard) and is kept.
create function waitress.mint(p_raw bigint, p_partition integer) returns bigint
language plpgsql
stable
set search_path = ''
as $$
begin
  if not waitress.owns(p_partition) then
    raise exception 'partition % is not held by this shard (database %): the router''s cluster and the shard identity disagree',
      p_partition, current_database();
  end if;
  return -p_raw * 16 + p_partition;
end
$$;

comment on function waitress.mint(bigint, integer) is
  'A routable id: -p_raw * 16 + p_partition, from a (negative) identity value; refuses a partition this shard does not hold.';

-- The checkout's orders (waitress.place_orders mints them with new_order_id).
create or replace function waitress.new_order_id(p_seller_id bigint) returns bigint
language sql
volatile
set search_path = ''
as $$
  select waitress.mint(pg_catalog.nextval('waitress.orders_id_seq'), waitress.partition_of(p_seller_id))
$$;

comment on function waitress.new_order_id(bigint) is
  'On a shard: an order id carrying the seller''s partition in its low 4 bits.';

-- Every identity sequence counts down from -1, and a trigger mints the id.
do $$
declare
  t text;
begin
  foreach t in array array['products', 'carts', 'cart_items', 'orders', 'order_items', 'stock_movements'] loop
    execute format('alter table waitress.%I alter column id set increment by -1 set minvalue -9223372036854775807 '
                   'set maxvalue -1 set start with -1 restart', t);
  end loop;
end
$$;

create function waitress.mint_product_id() returns trigger
language plpgsql
set search_path = ''
as $$
begin
  if new.id < 0 then new.id := waitress.mint(new.id, waitress.partition_of(new.seller_id)); end if;
  return new;
end
$$;

create function waitress.mint_cart_id() returns trigger
language plpgsql
set search_path = ''
as $$
begin
  if new.id < 0 then new.id := waitress.mint(new.id, waitress.partition_of(new.user_id)); end if;
  return new;
end
$$;

-- Orders also take the checkout they belong to from the transaction (a
-- checkout across shards sets it, db/shard/...0300): its parts are found,
-- replayed and compensated by it.
create function waitress.mint_order_id() returns trigger
language plpgsql
set search_path = ''
as $$
begin
  if new.id < 0 then new.id := waitress.mint(new.id, waitress.partition_of(new.seller_id)); end if;
  if new.checkout_id is null then
    new.checkout_id := nullif(current_setting('waitress.checkout_id', true), '')::uuid;
  end if;
  return new;
end
$$;

-- cart_items, order_items and stock_movements: the product's partition.
create function waitress.mint_line_id() returns trigger
language plpgsql
set search_path = ''
as $$
begin
  if new.id < 0 then new.id := waitress.mint(new.id, (new.product_id & 15)::integer); end if;
  return new;
end
$$;

comment on function waitress.mint_product_id() is 'Trigger: a product''s id carries its seller''s partition.';
comment on function waitress.mint_cart_id() is 'Trigger: a cart''s id carries its user''s partition (the cart''s home).';
comment on function waitress.mint_order_id() is 'Trigger: an order''s id carries its seller''s partition; it records its checkout.';
comment on function waitress.mint_line_id() is 'Trigger: a cart line''s, order line''s or movement''s id carries its product''s partition.';

-- What a shard adds to the one schema's tables: the checkout an order
-- belongs to, and when a refused checkout across shards cancelled it again.
alter table waitress.orders
  add column checkout_id uuid,
  add column compensated_at timestamptz,
  add constraint orders_compensated_is_dead check (compensated_at is null or state in ('cancelled', 'refunded', 'expired'));

create index orders_checkout_id_idx on waitress.orders (checkout_id) where checkout_id is not null;

comment on column waitress.orders.checkout_id is
  'Shards: the checkout across shards that placed this order (null for one placed on one shard alone).';
comment on column waitress.orders.compensated_at is
  'Shards: when another shard refused this order''s checkout and the order was cancelled through the lifecycle (stock '
  'released once, its lines put back in the cart). Such orders are left out of order lists.';

create trigger products_mint_id before insert on waitress.products
  for each row execute function waitress.mint_product_id();
create trigger carts_mint_id before insert on waitress.carts
  for each row execute function waitress.mint_cart_id();
create trigger orders_mint_id before insert on waitress.orders
  for each row execute function waitress.mint_order_id();
create trigger cart_items_mint_id before insert on waitress.cart_items
  for each row execute function waitress.mint_line_id();
create trigger order_items_mint_id before insert on waitress.order_items
  for each row execute function waitress.mint_line_id();
create trigger stock_movements_mint_id before insert on waitress.stock_movements
  for each row execute function waitress.mint_line_id();

-- The routing invariant, as rules of the schema: an id that would route
-- elsewhere cannot be stored.
alter table waitress.products
  add constraint products_id_routes check (id > 0 and (id & 15) = waitress.partition_of(seller_id));
alter table waitress.carts
  add constraint carts_id_routes check (id > 0 and (id & 15) = waitress.partition_of(user_id));
alter table waitress.cart_items
  add constraint cart_items_id_routes check (id > 0 and (id & 15) = (product_id & 15));
alter table waitress.orders
  add constraint orders_id_routes check (id > 0 and (id & 15) = waitress.partition_of(seller_id));
alter table waitress.order_items
  add constraint order_items_id_routes check (id > 0 and (id & 15) = (product_id & 15) and (order_id & 15) = (product_id & 15));
alter table waitress.stock_movements
  add constraint stock_movements_id_routes check (id > 0 and (id & 15) = (product_id & 15));

-- migrate:down
set local role waitress_owner;
alter table waitress.stock_movements drop constraint if exists stock_movements_id_routes;
alter table waitress.order_items drop constraint if exists order_items_id_routes;
alter table waitress.orders drop constraint if exists orders_id_routes;
alter table waitress.cart_items drop constraint if exists cart_items_id_routes;
alter table waitress.carts drop constraint if exists carts_id_routes;
alter table waitress.products drop constraint if exists products_id_routes;
drop trigger if exists stock_movements_mint_id on waitress.stock_movements;
drop trigger if exists order_items_mint_id on waitress.order_items;
drop trigger if exists cart_items_mint_id on waitress.cart_items;
drop trigger if exists orders_mint_id on waitress.orders;
drop trigger if exists carts_mint_id on waitress.carts;
drop trigger if exists products_mint_id on waitress.products;
drop index if exists waitress.orders_checkout_id_idx;
alter table waitress.orders drop constraint if exists orders_compensated_is_dead,
  drop column if exists compensated_at, drop column if exists checkout_id;
drop function if exists waitress.mint_line_id();
drop function if exists waitress.mint_order_id();
drop function if exists waitress.mint_cart_id();
drop function if exists waitress.mint_product_id();
do $$
declare
  t text;
begin
  foreach t in array array['products', 'carts', 'cart_items', 'orders', 'order_items', 'stock_movements'] loop
    execute format('alter table waitress.%I alter column id set increment by 1 set minvalue 1 '
                   'set maxvalue 9223372036854775807 set start with 1 restart', t);
  end loop;
end
$$;
create or replace function waitress.new_order_id(p_seller_id bigint) returns bigint
language sql volatile
as $$ select pg_catalog.nextval('waitress.orders_id_seq') $$;
drop function if exists waitress.mint(bigint, integer);
drop function if exists waitress.owns(integer);
drop function if exists waitress.set_shard_identity(integer, integer, integer);
drop table if exists waitress.shard_identity;
drop function if exists waitress.partition_of(bigint);
