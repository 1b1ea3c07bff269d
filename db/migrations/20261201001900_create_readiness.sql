-- migrate:up
set local role waitress_owner;

-- /readyz compares the migrations the code was built with to those applied.

create function api.applied_migrations() returns setof text
language sql
stable
security definer
set search_path = ''
as $$
  select version::text from public.schema_migrations order by version
$$;

comment on function api.applied_migrations() is 'The versions of the applied migrations (dbmate''s schema_migrations).';

-- migrate:down
set local role waitress_owner;
drop function if exists api.applied_migrations();
