-- migrate:up
create function public.set_updated_at() returns trigger
language plpgsql
set search_path = ''
as $$
begin
  new.updated_at := now();
  return new;
end
$$;

comment on function public.set_updated_at() is
  'Trigger: stamps updated_at on every update, so no writer can forget or fake it.';

revoke execute on function public.set_updated_at() from public;

-- migrate:down
drop function if exists public.set_updated_at();
