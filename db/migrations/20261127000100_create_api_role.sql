-- migrate:up
-- The role the API service acts as. It may execute the API functions and read
-- what it serves; it never writes a table directly: the functions that write
-- are security definer, so they are the only way in. Roles are cluster-wide, so
-- creating it must tolerate a cluster that already has it (another database).
do $$
begin
  if not exists (select from pg_catalog.pg_roles where rolname = 'waitress_api') then
    create role waitress_api nologin;
  end if;
end
$$;

grant usage on schema public to waitress_api;

-- The migrating login may act as the API role (SET ROLE), so one login can
-- run migrations and still serve requests with only the API's privileges.
do $$
begin
  execute format('grant waitress_api to %I', current_user);
exception when insufficient_privilege or invalid_grant_operation then
  raise notice 'could not grant waitress_api to %: grant it to the service''s login by hand', current_user;
end
$$;

-- migrate:down
revoke usage on schema public from waitress_api;
-- The role may still hold privileges in another database of this cluster;
-- then it stays, and only this database forgets it.
do $$
begin
  drop role if exists waitress_api;
exception when dependent_objects_still_exist then
  null;
end
$$;
