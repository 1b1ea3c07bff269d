-- migrate:up
-- Three roles and two schemas (PostgREST's schema isolation):
--   waitress_owner  NOLOGIN, not a superuser: owns every table and function.
--                   The SECURITY DEFINER functions run as it, so a bug in one
--                   can never reach beyond this database's own objects.
--   waitress_api    NOLOGIN: what the service (and SQL callers) act as. It
--                   may use schema api and execute its functions; it cannot
--                   see schema waitress at all.
--   schema waitress the tables and the helpers: private.
--   schema api      exactly the functions callers may call.
-- Every later migration runs `set local role waitress_owner`, so what it
-- creates belongs to the owner role whichever login runs dbmate. Roles are
-- cluster-wide, so creating them tolerates a cluster that already has them.
do $$
begin
  if not exists (select from pg_catalog.pg_roles where rolname = 'waitress_owner') then
    create role waitress_owner nologin nosuperuser nocreatedb nocreaterole noreplication nobypassrls;
  end if;
  if not exists (select from pg_catalog.pg_roles where rolname = 'waitress_api') then
    create role waitress_api nologin nosuperuser nocreatedb nocreaterole noreplication nobypassrls;
  end if;
end
$$;

-- The login running the migrations becomes the owner role to create objects
-- (SET ROLE), and may act as the API role (one login serving in development).
do $$
begin
  execute format('grant waitress_owner to %I', current_user);
  execute format('grant waitress_api to %I', current_user);
exception when insufficient_privilege or invalid_grant_operation then
  raise notice 'could not grant waitress_owner and waitress_api to %: a role with CREATEROLE must', current_user;
end
$$;

create schema waitress authorization waitress_owner;
create schema api authorization waitress_owner;

comment on schema waitress is 'Private: the tables and the helpers. Only the owner role uses it.';
comment on schema api is
  'The SQL contract: exactly the functions the service and SQL callers may call. See docs/sql-contract.md.';

-- Privileges once, by default, instead of a grant or revoke per function:
-- no function is executable by PUBLIC; those in api are by waitress_api.
alter default privileges for role waitress_owner revoke execute on functions from public;
alter default privileges for role waitress_owner in schema api grant execute on functions to waitress_api;
grant usage on schema api to waitress_api;

-- dbmate records each migration in the same transaction as the migration,
-- that is, as the owner role.
grant select, insert, delete on public.schema_migrations to waitress_owner;

-- migrate:down
revoke select, insert, delete on public.schema_migrations from waitress_owner;
alter default privileges for role waitress_owner in schema api revoke execute on functions from waitress_api;
alter default privileges for role waitress_owner grant execute on functions to public;
drop schema if exists api cascade;
drop schema if exists waitress cascade;
-- The roles may still own objects in another database of this cluster; then
-- they stay, and only this database forgets them.
do $$
begin
  drop role if exists waitress_api;
exception when dependent_objects_still_exist then
  null;
end
$$;
do $$
begin
  drop role if exists waitress_owner;
exception when dependent_objects_still_exist then
  null;
end
$$;
