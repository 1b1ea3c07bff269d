-- migrate:up
set local role waitress_owner;

create function waitress.set_updated_at() returns trigger
language plpgsql
set search_path = ''
as $$
begin
  new.updated_at := now();
  return new;
end
$$;

comment on function waitress.set_updated_at() is
  'Trigger: stamps updated_at on every update, so no writer can forget or fake it.';

-- migrate:down
set local role waitress_owner;
drop function if exists waitress.set_updated_at();
