-- migrate:up
create table public.carts (
  id bigint generated always as identity primary key,
  user_id bigint not null,
  created_at timestamptz not null default now(),
  updated_at timestamptz not null default now(),
  constraint carts_user_id_positive check (user_id > 0),
  constraint carts_user_id_key unique (user_id)
);

create trigger carts_set_updated_at
  before update on public.carts
  for each row execute function public.set_updated_at();

comment on table public.carts is
  'One cart per user. Its row lock serialises every change and checkout of that cart.';

grant select on public.carts to waitress_api;

-- migrate:down
drop table if exists public.carts;
