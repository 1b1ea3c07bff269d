-- docker compose only: the PostgreSQL image runs this once, as its superuser,
-- when it creates the database. The service's login (docs/operations.md, "Least
-- privilege"): it may only act as waitress_api, which the migrations fill
-- with rights (they accept the role existing already). The password matches
-- APP_DATABASE_URL in docker-compose.yml: a local development stack only.
create role waitress_api nologin;
create role waitress_app with login nosuperuser nocreatedb nocreaterole noreplication nobypassrls inherit
  password 'waitress_app';
grant waitress_api to waitress_app;
