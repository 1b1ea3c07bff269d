-- migrate:up
-- GET /readyz compares the applied migrations with those the code needs.
grant select on public.schema_migrations to waitress_api;

-- migrate:down
revoke select on public.schema_migrations from waitress_api;
