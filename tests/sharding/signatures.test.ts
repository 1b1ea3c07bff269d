import { afterAll, beforeAll, describe, expect, it } from 'bun:test'
import { readdirSync, readFileSync, statSync } from 'node:fs'
import { join, resolve } from 'node:path'
import { sharedCluster, sharding, type TestCluster } from './support/cluster.ts'

/**
 * The router stands in for a single database: it must offer exactly the api
 * functions the service calls, with the signatures the shards (the one
 * schema) give them. A function added to the service or to db/migrations
 * without its router counterpart fails here.
 */

const SRC = resolve(import.meta.dir, '../../src')

/** Every api.<name>( the service's source mentions. */
function serviceCalls(): string[] {
  const names = new Set<string>()
  const walk = (dir: string) => {
    for (const entry of readdirSync(dir)) {
      const path = join(dir, entry)
      if (statSync(path).isDirectory()) walk(path)
      else if (path.endsWith('.ts')) for (const match of readFileSync(path, 'utf8').matchAll(/\bapi\.([a-z_][a-z0-9_]*)\s*\(/g)) names.add(match[1])
    }
  }
  walk(SRC)
  return [...names].sort()
}

interface Signature {
  name: string
  arguments: string
  result: string
}

describe.skipIf(!sharding.ok)('the router (db/router) against the shards (db/migrations + db/shard)', () => {
  let cluster: TestCluster
  beforeAll(async () => {
    cluster = await sharedCluster()
  })
  afterAll(() => {})

  const signatures = (sql: TestCluster['router']) => sql<Signature[]>`
    select p.proname as name, pg_get_function_arguments(p.oid) as arguments, pg_get_function_result(p.oid) as result
      from pg_proc p
     where p.pronamespace = 'api'::regnamespace
     order by 1, 2`

  it('offers exactly the api functions the service calls, with the shard schema\'s signatures', async () => {
    const called = serviceCalls()
    expect(called.length).toBeGreaterThan(15)
    const shard = await signatures(cluster.shards[0])
    const missingOnShards = called.filter((name) => !shard.some((s) => s.name === name))
    expect(missingOnShards).toEqual([])
    const expected = shard.filter((s) => called.includes(s.name))
    const router = await signatures(cluster.router)
    expect([...router]).toEqual([...expected])
  })

  it('lets waitress_api execute exactly the router\'s api functions, and PUBLIC nothing of it', async () => {
    const rows = await cluster.router`
      select p.pronamespace::regnamespace::text as schema, p.oid::regprocedure::text as fn,
             has_function_privilege('waitress_api', p.oid, 'execute') as api,
             exists (select from aclexplode(coalesce(p.proacl, acldefault('f', p.proowner))) a
                      where a.grantee = 0 and a.privilege_type = 'EXECUTE') as public
        from pg_proc p
       where p.pronamespace in ('api'::regnamespace, 'waitress'::regnamespace, 'rpc'::regnamespace)`
    for (const row of rows)
      expect({ fn: row.fn, api: row.api, public: row.public }).toEqual({ fn: row.fn, api: row.schema === 'api', public: false })
  })

  it('routes every PL/Proxy function to a shard function that exists, with the same argument types, answering jsonb', async () => {
    const proxies = await cluster.router<{ fn: string; src: string; types: string[] }[]>`
      select p.oid::regprocedure::text as fn, p.prosrc as src, array(select format_type(t, null) from unnest(p.proargtypes) t) as types
        from pg_proc p join pg_language l on l.oid = p.prolang
       where l.lanname = 'plproxy' and p.pronamespace = 'rpc'::regnamespace`
    expect(proxies.length).toBeGreaterThan(30)
    const remote = await cluster.shards[0]<{ name: string; types: string[]; result: string }[]>`
      select p.proname as name, array(select format_type(t, null) from unnest(p.proargtypes) t) as types, format_type(p.prorettype, null) as result
        from pg_proc p where p.pronamespace = 'rpc'::regnamespace`
    for (const proxy of proxies) {
      const call = /select\s+rpc\.("?[a-z_]+"?)\(([^)]*)\)/i.exec(proxy.src)
      expect({ fn: proxy.fn, call: call !== null }).toEqual({ fn: proxy.fn, call: true })
      const name = call![1].replaceAll('"', '')
      const args = call![2].split(',').map((arg) => arg.trim()).filter(Boolean)
      // The routing argument comes first and is not sent.
      const sent = proxy.types.slice(proxy.types.length - args.length)
      const target = remote.find((r) => r.name === name && r.types.join() === sent.join())
      expect({ fn: proxy.fn, target: target ? `rpc.${name}(${target.types}) -> ${target.result}` : null }).toEqual({
        fn: proxy.fn,
        target: `rpc.${name}(${sent}) -> jsonb`,
      })
    }
  })

  it('raises only codes of waitress.refusals, in the router and in the shards\' own functions', async () => {
    const known = new Set((await cluster.shards[0]<{ code: string }[]>`select code from waitress.refusals`).map((r) => r.code))
    const raisedIn = (sql: TestCluster['router']) => sql<{ code: string; fn: string }[]>`
      select distinct m[1] as code, p.oid::regprocedure::text as fn
        from pg_proc p
       cross join lateral regexp_matches(p.prosrc, '(?:errcode\\s*=\\s*|refuse\\(|refusal\\(|rpc\\.refusal\\([^,]+,\\s*|''code'',\\s*)''([0-9A-Z]{5})''', 'g') as m
       where p.pronamespace in ('api'::regnamespace, 'waitress'::regnamespace, 'rpc'::regnamespace)`
    const raised = [...(await raisedIn(cluster.router)), ...(await raisedIn(cluster.shards[0]))]
    expect(raised.some((r) => r.code === '08006')).toBe(true)
    // WZ000 never leaves the shard: place_part raises it to roll a dry run back and catches it.
    // XX000: raise_error's fallback for an error document without a code (an internal error, 500).
    for (const { code, fn } of raised.filter((r) => !['WZ000', 'XX000'].includes(r.code)))
      expect({ code, fn, known: known.has(code) }).toEqual({ code, fn, known: true })
  })
})
