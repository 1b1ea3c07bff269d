-- migrate:up
-- The router: the database the service connects to (DATABASE_URL) when the
-- data lives on shards (SHARD_URLS). It holds no table, only functions: in
-- schema api the same signatures as a single database's (db/router/...0300),
-- in schema rpc the PL/Proxy functions that run each call on its shard
-- (...0200), in schema waitress the cluster's configuration and helpers.
-- docs/scale-out.md has the design.
--
-- PL/Proxy needs a superuser once per router database: the extension, and
-- the right for the owner role to create PL/Proxy functions and the cluster's
-- foreign server. A superuser running these migrations does it here; else an
-- operator runs the same statements first (docs/scale-out.md, "Deploy").
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

do $$
begin
  execute format('grant waitress_owner to %I', current_user);
  execute format('grant waitress_api to %I', current_user);
exception when insufficient_privilege or invalid_grant_operation then
  raise notice 'could not grant waitress_owner and waitress_api to %: a role with CREATEROLE must', current_user;
end
$$;

do $$
begin
  if (select rolsuper from pg_catalog.pg_roles where rolname = current_user) then
    create extension if not exists plproxy;
    -- Trusted, so that its USAGE can be granted; only the owner role gets it.
    update pg_catalog.pg_language set lanpltrusted = true where lanname = 'plproxy';
    revoke usage on language plproxy from public;
    grant usage on language plproxy to waitress_owner;
    grant usage on foreign data wrapper plproxy to waitress_owner;
  elsif not exists (select from pg_catalog.pg_extension where extname = 'plproxy') then
    raise exception 'the router needs the plproxy extension: a superuser must run the statements of docs/scale-out.md ("Deploy") first';
  end if;
end
$$;

create schema waitress authorization waitress_owner;
create schema rpc authorization waitress_owner;
create schema api authorization waitress_owner;

grant select, insert, delete on public.schema_migrations to waitress_owner;

set local role waitress_owner;

comment on schema waitress is 'Router, private: the cluster''s configuration and the helpers.';
comment on schema rpc is 'Router, private: PL/Proxy functions, each running one shard entry point where it belongs.';
comment on schema api is 'Router: the SQL contract of a single database, each function routed to the shards.';

alter default privileges for role waitress_owner revoke execute on functions from public;
alter default privileges for role waitress_owner in schema api grant execute on functions to waitress_api;
grant usage on schema api to waitress_api;

-- As on the shards (db/shard/...0100): 16 logical partitions.
create function waitress.partition_of(p_key bigint) returns integer
language sql
immutable
strict
parallel safe
set search_path = ''
as $$
  select pg_catalog.hashint8(p_key) & 15
$$;

comment on function waitress.partition_of(bigint) is 'The partition (0-15) of a seller or a user: hashint8 & 15, as the shards compute it.';

-- The database (shard index) of each partition, 16 entries; rewritten by
-- configure_cluster. Until then no call routes anywhere.
create function waitress.partition_map() returns integer[]
language sql
immutable
set search_path = ''
as $$
  select null::integer[]
$$;

comment on function waitress.partition_map() is 'The shard of each partition 0-15 (written by waitress.configure_cluster).';

-- The partitions whose bits are set (RUN ON a set: once per database among them, in parallel).
create function waitress.partitions_in(p_mask integer) returns setof integer
language sql
immutable
strict
set search_path = ''
as $$
  select p from pg_catalog.generate_series(0, 15) p where p_mask & (1 << p) <> 0
$$;

comment on function waitress.partitions_in(integer) is 'The partitions of a 16-bit mask.';

-- One partition per database among a mask's partitions (the lowest), in
-- database order: a call per database.
create function waitress.targets(p_mask integer) returns integer[]
language sql
stable
set search_path = ''
as $$
  select coalesce(array_agg(t.p order by t.shard), '{}')
    from (select min(p) as p, (waitress.partition_map())[p + 1] as shard
            from waitress.partitions_in(p_mask) p
           group by 2) t
$$;

comment on function waitress.targets(integer) is 'One partition per database among the mask''s, in database order.';

-- Every database, one partition each (the shard's index is its first partition).
create function waitress.all_targets() returns integer[]
language sql
stable
set search_path = ''
as $$
  select waitress.targets(65535)
$$;

-- Every partition held by the database of this one.
create function waitress.database_mask(p_partition integer) returns integer
language sql
stable
set search_path = ''
as $$
  select coalesce(sum(1 << p)::integer, 0)
    from pg_catalog.generate_series(0, 15) p
   where (waitress.partition_map())[p + 1] = (waitress.partition_map())[p_partition + 1]
$$;

comment on function waitress.all_targets() is 'One partition per database: a call to every shard.';
comment on function waitress.database_mask(integer) is 'The partitions held by the database of p_partition.';

-- A value in a libpq connection string.
create function waitress.conninfo_value(p_value text) returns text
language sql
immutable
set search_path = ''
as $$
  select '''' || replace(replace(p_value, '\', '\\'), '''', '\''') || ''''
$$;

-- Defines the PL/Proxy cluster "waitress" from the shards, in order:
-- [{"host", "port", "dbname", "user", "password"}, ...] (scripts/shards.ts
-- configure reads SHARD_URLS). Partition p lives on shard p mod N. SQL/MED:
-- the connection strings are the server's options, the credentials a user
-- mapping, which only the owner can read (one login for every shard: a user
-- mapping belongs to the server, not to a partition). Open router sessions
-- pick the new definition up at their next call.
create function waitress.configure_cluster(
  p_shards jsonb,
  p_conninfo text default
    'keepalives_idle=10 keepalives_interval=5 keepalives_count=3 tcp_user_timeout=15000 '
    'options=-cclient_connection_check_interval=1000 application_name=waitress_router'
) returns text
language plpgsql
security definer
set search_path = ''
as $$
declare
  n integer := jsonb_array_length(p_shards);
  v_options text := 'connection_lifetime ''1800''';
  v_map integer[] := '{}';
  v_shard jsonb;
  i integer;
begin
  if n is null or n < 1 or n > 16 then
    raise exception 'configure_cluster: 1 to 16 shards, got %', coalesce(n::text, 'none');
  end if;
  if (select count(distinct (s->>'user', s->>'password')) from jsonb_array_elements(p_shards) s) <> 1 then
    raise exception 'configure_cluster: every shard must take the same login and password (one user mapping)';
  end if;
  for i in 0 .. 15 loop
    v_shard := p_shards->(i % n);
    v_options := v_options || format(', p%s %L', i, format('host=%s port=%s dbname=%s %s',
      waitress.conninfo_value(v_shard->>'host'), waitress.conninfo_value(coalesce(v_shard->>'port', '5432')),
      waitress.conninfo_value(v_shard->>'dbname'), coalesce(p_conninfo, '')));
    v_map := v_map || (i % n);
  end loop;
  execute 'drop server if exists waitress cascade';
  execute format('create server waitress foreign data wrapper plproxy options (%s)', v_options);
  execute format('create user mapping for public server waitress options (user %L, password %L)',
                 p_shards->0->>'user', p_shards->0->>'password');
  execute format('create or replace function waitress.partition_map() returns integer[] language sql immutable '
                 'set search_path = '''' as %L', format('select %L::integer[]', v_map));
  return format('cluster waitress: %s shards, partition p on shard p %% %s', n, n);
end
$$;

comment on function waitress.configure_cluster(jsonb, text) is
  'The deploy step (scripts/shards.ts configure): the PL/Proxy cluster from the list of shards; idempotent.';

-- The password of the cluster's user mapping, for the deploy step (the owner only).
create function waitress.cluster_password() returns text
language sql
stable
security definer
set search_path = ''
as $$
  select (select substr(o, 10) from unnest(m.umoptions) o where o like 'password=%')
    from pg_catalog.pg_user_mappings m
   where m.srvname = 'waitress'
$$;

comment on function waitress.cluster_password() is 'The deploy step: the password the router''s shard login has now (null before the first).';

-- migrate:down
drop server if exists waitress cascade;
drop schema if exists api cascade;
drop schema if exists rpc cascade;
drop schema if exists waitress cascade;
revoke select, insert, delete on public.schema_migrations from waitress_owner;
