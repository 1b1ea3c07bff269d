-- migrate:up
create type public.order_state as enum (
  'pending', 'paid', 'accepted', 'delivered', 'remitted',
  'refunded', 'rejected', 'cancelled', 'expired'
);

comment on type public.order_state is
  'Lifecycle of an order. place_order creates orders as pending.';

-- code is derived from id and creation year, so it cannot disagree with them:
-- OS + 2-digit UTC year + id zero-padded to 10 digits, e.g. OS260000000042.
create table public.orders (
  id bigint generated always as identity primary key,
  code text generated always as (
    'OS'
    || lpad((extract(year from (created_at at time zone 'UTC'))::integer % 100)::text, 2, '0')
    || lpad(id::text, 10, '0')
  ) stored,
  buyer_id bigint not null,
  seller_id bigint not null,
  state public.order_state not null default 'pending',
  total_price bigint not null,
  note text,
  paid_at timestamptz,
  created_at timestamptz not null default now(),
  updated_at timestamptz not null default now(),
  constraint orders_code_key unique (code),
  -- lpad would silently truncate an id of 11 digits or more.
  constraint orders_id_fits_code check (id < 10000000000),
  constraint orders_total_price_positive check (total_price > 0),
  constraint orders_note_length check (note is null or length(note) <= 1000)
);

create index orders_buyer_id_idx on public.orders (buyer_id);
create index orders_seller_id_idx on public.orders (seller_id);
-- expire_orders() looks for old pending orders only.
create index orders_pending_created_at_idx on public.orders (created_at) where state = 'pending';

create trigger orders_set_updated_at
  before update on public.orders
  for each row execute function public.set_updated_at();

comment on table public.orders is
  'One order per seller per checkout. total_price is the sum of its lines, in the smallest currency unit.';

comment on column public.orders.paid_at is
  'When the buyer paid; a cancelled order can be refunded only if it was paid.';

grant select on public.orders to waitress_api;

-- migrate:down
drop table if exists public.orders;
drop type if exists public.order_state;
