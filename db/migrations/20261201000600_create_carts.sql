-- migrate:up
set local role waitress_owner;

create table waitress.carts (
  id bigint generated always as identity primary key,
  user_id bigint not null,
  created_at timestamptz not null default now(),
  updated_at timestamptz not null default now(),
  constraint carts_user_id_positive check (user_id > 0),
  constraint carts_user_id_key unique (user_id)
);

create trigger carts_set_updated_at
  before update on waitress.carts
  for each row execute function waitress.set_updated_at();

comment on table waitress.carts is
  'One cart per user. Its row lock serialises every change and checkout of that cart.';

-- migrate:down
set local role waitress_owner;
drop table if exists waitress.carts;
