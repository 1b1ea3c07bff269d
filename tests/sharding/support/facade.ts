/**
 * A test-only window onto the shards' tables from the router, so that the
 * unchanged HTTP suite (tests/http), whose fixtures and checks read and
 * sometimes touch tables directly (`select stock from waitress.products`),
 * can run against a sharded deployment (tests/sharding/router-setup.ts).
 *
 * On the router it makes a view waitress.<table> for each table of the
 * shards: every shard's rows, gathered by a PL/Proxy RUN ON ALL function
 * (a cluster of its own, connecting as the shards' superuser);
 * enums read as text. An UPDATE or DELETE through a view is sent to every
 * shard (only the one holding the row changes). Nothing of this is part of a
 * deployment: the service only ever calls the router's api functions.
 */
import { createSql } from '../../../src/db/client.ts'

const TABLES = ['products', 'carts', 'cart_items', 'orders', 'order_items', 'stock_movements', 'idempotency_keys', 'rate_limit_windows']

const KEYS: Record<string, string[]> = {
  idempotency_keys: ['user_id', 'key'],
  rate_limit_windows: ['client'],
}

export async function installFacade(routerUrl: string, shardUrls: string[]): Promise<void> {
  for (const url of shardUrls) {
    const shard = createSql(url, { max: 1 })
    try {
      await shard.unsafe(`
        create schema if not exists test_facade;
        grant usage on schema test_facade to waitress_rpc;
        create or replace function test_facade.exec(p_sql text) returns integer
        language plpgsql security definer as $$
        declare n integer;
        begin
          execute p_sql;
          get diagnostics n = row_count;
          return n;
        end $$;
        grant execute on function test_facade.exec(text) to waitress_rpc;`)
    } finally {
      await shard.end({ timeout: 5 })
    }
  }
  const shard = createSql(shardUrls[0], { max: 1 })
  const columns = await shard<{ table_name: string; column_name: string; type: string; is_enum: boolean }[]>`
    select c.table_name, c.column_name,
           -- A domain (a one-column rule) reads as its base type: the router has no such type.
           case when c.data_type = 'USER-DEFINED' then 'text'
                else format_type(case when t.typtype = 'd' then t.typbasetype else a.atttypid end, a.atttypmod) end as type,
           c.data_type = 'USER-DEFINED' as is_enum
      from information_schema.columns c
      join pg_attribute a on a.attrelid = ('waitress.' || c.table_name)::regclass and a.attname = c.column_name
      join pg_type t on t.oid = a.atttypid
     where c.table_schema = 'waitress' and c.table_name = any (${TABLES})
     order by c.table_name, c.ordinal_position`
  await shard.end({ timeout: 5 })

  const router = createSql(routerUrl, { max: 1 })
  try {
    // Its own PL/Proxy cluster, the router's connection strings with the
    // shards' superuser: the router's own login may read no table there.
    const superuser = new URL(shardUrls[0])
    const [{ options }] = await router<{ options: string }[]>`
      select string_agg(format('%s %L', split_part(o, '=', 1), substr(o, strpos(o, '=') + 1)), ', ') as options
        from pg_foreign_server s, unnest(s.srvoptions) o
       where s.srvname = 'waitress'`
    await router.unsafe(`
      drop server if exists test_facade cascade;
      create server test_facade foreign data wrapper plproxy options (${options});
      create user mapping for public server test_facade
        options (user '${decodeURIComponent(superuser.username)}', password '${decodeURIComponent(superuser.password)}');
      create schema if not exists test_facade;
      create or replace function test_facade.exec_all(p_sql text) returns setof integer
      language plproxy as $$ cluster 'test_facade'; run on all; select test_facade.exec(p_sql); $$;
      create or replace function test_facade.forward() returns trigger language plpgsql as $$
      declare
        v_keys text[] := tg_argv;
        v_old jsonb := to_jsonb(old);
        v_new jsonb := case when tg_op = 'UPDATE' then to_jsonb(new) end;
        v_where text;
        v_set text;
      begin
        select string_agg(format('%I = %L', k, v_old->>k), ' and ') into v_where from unnest(v_keys) k;
        if tg_op = 'DELETE' then
          perform test_facade.exec_all(format('delete from waitress.%I where %s', tg_table_name, v_where));
          return old;
        end if;
        select string_agg(format('%I = %L', e.key, e.value #>> '{}'), ', ') into v_set
          from jsonb_each(v_new) e where e.value is distinct from v_old->e.key;
        if v_set is not null then
          perform test_facade.exec_all(format('update waitress.%I set %s where %s', tg_table_name, v_set, v_where));
        end if;
        return new;
      end $$;`)
    for (const table of TABLES) {
      const cols = columns.filter((c) => c.table_name === table)
      if (cols.length === 0) throw new Error(`no table waitress.${table} on the shard`)
      const typeList = cols.map((c) => `${quote(c.column_name)} ${c.type}`).join(', ')
      const selectList = cols.map((c) => (c.is_enum ? `${quote(c.column_name)}::text` : quote(c.column_name))).join(', ')
      const keys = KEYS[table] ?? ['id']
      await router.unsafe(`
        drop view if exists waitress.${table};
        drop function if exists test_facade.${table}();
        drop type if exists test_facade.${table}_row;
        create type test_facade.${table}_row as (${typeList});
        create function test_facade.${table}() returns setof test_facade.${table}_row
        language plproxy as $$ cluster 'test_facade'; run on all; select ${selectList} from waitress.${table}; $$;
        create view waitress.${table} as select * from test_facade.${table}();
        create trigger forward instead of update or delete on waitress.${table}
          for each row execute function test_facade.forward(${keys.map((k) => `'${k}'`).join(', ')});`)
    }
  } finally {
    await router.end({ timeout: 5 })
  }
}

const quote = (name: string) => `"${name.replaceAll('"', '""')}"`
