-- migrate:up
alter table public.orders add column paid_at timestamptz;

comment on column public.orders.paid_at is
  'When the buyer paid; a cancelled order can be refunded only if it was paid.';

-- expire_orders() looks for old pending orders only.
create index orders_pending_created_at_idx on public.orders (created_at) where state = 'pending';

-- migrate:down
drop index if exists public.orders_pending_created_at_idx;
alter table public.orders drop column if exists paid_at;
