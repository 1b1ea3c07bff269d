-- migrate:up
-- The role the API service acts as. It may execute the API functions and read
-- what it serves; it never writes a table directly. Roles are cluster-wide, so
-- creating it must tolerate a cluster that already has it (another database).
do $$
begin
  if not exists (select from pg_catalog.pg_roles where rolname = 'waitress_api') then
    create role waitress_api nologin;
  end if;
end
$$;

grant usage on schema public to waitress_api;

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
