-- migrate:up
set local role waitress_owner;

create type waitress.order_state as enum (
  'pending', 'paid', 'accepted', 'delivered', 'remitted',
  'refunded', 'rejected', 'cancelled', 'expired'
);

comment on type waitress.order_state is
  'Lifecycle of an order. A checkout creates orders as pending; waitress.order_actions moves them.';

-- One-column rules are domains, as for cart_items (20261201000700): planned
-- once per session, not on every insert of a checkout.
create domain waitress.order_total as bigint
  constraint orders_total_price_positive check (value > 0);
create domain waitress.order_note as text
  constraint orders_note_length check (length(value) <= 1000);

create table waitress.orders (
  id bigint generated always as identity primary key,
  buyer_id bigint not null,
  seller_id bigint not null,
  state waitress.order_state not null default 'pending',
  total_price waitress.order_total not null,
  note waitress.order_note,
  paid_at timestamptz,
  created_at timestamptz not null default now(),
  updated_at timestamptz not null default now(),
  -- lpad would silently truncate an id of 11 digits or more.
  constraint orders_id_fits_code check (id < 10000000000)
);

-- A buyer's and a seller's orders, newest page after a given id (keyset paging).
create index orders_buyer_id_id_idx on waitress.orders (buyer_id, id);
create index orders_seller_id_id_idx on waitress.orders (seller_id, id);
-- expire_orders() looks for old pending orders only.
create index orders_pending_created_at_idx on waitress.orders (created_at) where state = 'pending';

-- An order's code, as buyers and sellers see it: OS + 2-digit UTC year of
-- creation + id zero-padded to 10 digits, e.g. OS260000000042. Derived where
-- it is shown, never stored, so it cannot disagree with the id and is unique
-- as the id is. (A stored generated column costs every checkout a parse and
-- plan of its expression and a unique index entry.) A SQL function with no SET
-- clause, so it is inlined: its body names every function by schema.
create function waitress.order_code(p_id bigint, p_created_at timestamptz) returns text
language sql
immutable
as $$
  select 'OS' || pg_catalog.lpad((extract(year from pg_catalog.timezone('UTC', p_created_at))::integer % 100)::text, 2, '0')
              || pg_catalog.lpad(p_id::text, 10, '0')
$$;

comment on function waitress.order_code(bigint, timestamptz) is
  'An order''s code: OS + 2-digit UTC year of creation + id zero-padded to 10 digits, e.g. OS260000000042.';

create trigger orders_set_updated_at
  before update on waitress.orders
  for each row execute function waitress.set_updated_at();

comment on table waitress.orders is
  'One order per seller per checkout. total_price is the sum of its lines, in the smallest currency unit.';
comment on column waitress.orders.paid_at is
  'When the buyer paid; a cancelled order can be refunded only if it was paid.';

-- migrate:down
set local role waitress_owner;
drop function if exists waitress.order_code(bigint, timestamptz);
drop table if exists waitress.orders;
drop domain if exists waitress.order_note;
drop domain if exists waitress.order_total;
drop type if exists waitress.order_state;
