/**
 * The deploy steps of a sharded Waitress (docs/scale-out.md): migrate every
 * shard and the router, then configure the router's PL/Proxy cluster from
 * SHARD_URLS. `npm run db:migrate` (scripts/db-migrate.ts) calls these when
 * SHARD_URLS is set; tests and the benchmark call them on throwaway clusters.
 *
 *   DATABASE_URL   the router database, as the login that migrates (it owns the objects)
 *   SHARD_URLS     the shard databases, comma-separated, in shard order, as the login that migrates them
 *   SHARD_ROUTER_PASSWORD  optional: the password of waitress_router, the login the router's
 *                  PL/Proxy connections use on the shards (else: the one configured before,
 *                  or a new random one); the migrating login must be allowed to create it
 *
 *   bun scripts/shards.ts migrate     migrate the shards and the router, then configure
 *   bun scripts/shards.ts configure   only the cluster (after adding a shard, changing a password)
 *   bun scripts/shards.ts status      which shard holds which partitions, as the router sees it
 */
import { resolveBinary } from 'dbmate'
import { randomBytes } from 'node:crypto'
import { resolve } from 'node:path'
import { createSql } from '../src/db/client.ts'
import { MIGRATIONS_DIR, MIGRATIONS_TABLE } from '../src/db/migrate.ts'

export const SHARD_MIGRATIONS_DIR = resolve(import.meta.dir, '../db/shard')
export const ROUTER_MIGRATIONS_DIR = resolve(import.meta.dir, '../db/router')
/** The login of the router's PL/Proxy connections on every shard (a member of waitress_rpc only). */
export const ROUTER_LOGIN = 'waitress_router'
export const PARTITIONS = 16

// The same lock as src/db/migrate.ts: processes migrating one database take turns.
const MIGRATION_LOCK_KEY = 7_261_127

export interface ShardedUrls {
  /** The router database, as the login that migrates it. */
  routerUrl: string
  /** The shard databases, in shard order, as the login that migrates them. */
  shardUrls: string[]
}

export function parseShardUrls(value: string | undefined): string[] {
  return (value ?? '')
    .split(',')
    .map((url) => url.trim())
    .filter(Boolean)
}

/** The partitions (a 16-bit mask) shard k of n holds: partition p lives on shard p mod n. */
export function partitionsOf(shard: number, shards: number): number {
  let mask = 0
  for (let p = 0; p < PARTITIONS; p++) if (p % shards === shard) mask |= 1 << p
  return mask
}

async function dbmate(url: string, dirs: string[], command: string, options: { ignoreFailure?: boolean } = {}) {
  const args = [resolveBinary(), '--url', url, ...dirs.flatMap((dir) => ['--migrations-dir', dir])]
  args.push('--migrations-table', MIGRATIONS_TABLE, '--no-dump-schema', command)
  const child = Bun.spawn(args, { stdout: 'pipe', stderr: 'pipe' })
  const [exitCode, stdout, stderr] = await Promise.all([child.exited, new Response(child.stdout).text(), new Response(child.stderr).text()])
  if (exitCode !== 0 && !options.ignoreFailure)
    throw new Error(`dbmate ${command} on ${redact(url)} failed (exit ${exitCode}): ${(stderr || stdout).trim()}`)
}

/** Waits (dbmate wait: up to a minute) until the server answers. */
export const waitForServer = (url: string) => dbmate(url, [MIGRATIONS_DIR], 'wait')

async function migrateOne(url: string, dirs: string[]) {
  await waitForServer(url)
  await dbmate(url, dirs, 'create', { ignoreFailure: true })
  const sql = createSql(url, { max: 1 })
  try {
    await sql`select pg_advisory_lock(${MIGRATION_LOCK_KEY})`
    await dbmate(url, dirs, 'up')
  } finally {
    await sql.end({ timeout: 5 })
  }
}

/**
 * Migrates every shard (the one schema, db/migrations, then db/shard) and
 * the router (db/router), then configures the cluster. Idempotent.
 */
export async function migrateSharded(urls: ShardedUrls, log: (line: string) => void = () => {}): Promise<void> {
  for (const [k, url] of urls.shardUrls.entries()) {
    await migrateOne(url, [MIGRATIONS_DIR, SHARD_MIGRATIONS_DIR])
    // A function added to the one schema later gets its rpc wrapper here.
    const sql = createSql(url, { max: 1 })
    try {
      const [{ wrappers }] = await sql<{ wrappers: number }[]>`select rpc.define_wrappers() as wrappers`
      log(`shard ${k} (${redact(url)}): migrated, ${wrappers} rpc wrappers`)
    } finally {
      await sql.end({ timeout: 5 })
    }
  }
  await migrateOne(urls.routerUrl, [ROUTER_MIGRATIONS_DIR])
  log(`router (${redact(urls.routerUrl)}): migrated`)
  await configureCluster(urls, { log })
}

/**
 * Tells every shard which partitions it holds, makes the router's login on
 * the shards, and defines the router's PL/Proxy cluster. Idempotent.
 */
export async function configureCluster(
  urls: ShardedUrls,
  options: { routerPassword?: string; log?: (line: string) => void } = {},
): Promise<void> {
  const log = options.log ?? (() => {})
  const n = urls.shardUrls.length
  if (n < 1 || n > PARTITIONS) throw new Error(`SHARD_URLS lists ${n} shards; 1 to ${PARTITIONS} are possible`)
  const router = createSql(urls.routerUrl, { max: 1 })
  try {
    const [{ password: existing }] = await router<{ password: string | null }[]>`select waitress.cluster_password() as password`
    const password = options.routerPassword ?? process.env.SHARD_ROUTER_PASSWORD ?? existing ?? randomBytes(24).toString('base64url')
    const shards = []
    for (const [k, url] of urls.shardUrls.entries()) {
      const sql = createSql(url, { max: 1 })
      try {
        await ensureRouterLogin(sql, password)
        await sql`select waitress.set_shard_identity(${k}, ${n}, ${partitionsOf(k, n)})`
      } finally {
        await sql.end({ timeout: 5 })
      }
      const parsed = new URL(url)
      shards.push({
        host: parsed.hostname,
        port: parsed.port || '5432',
        dbname: decodeURIComponent(parsed.pathname.replace(/^\//, '')),
        user: ROUTER_LOGIN,
        password,
      })
    }
    const [{ result }] = await router<{ result: string }[]>`select waitress.configure_cluster(${router.json(shards)}) as result`
    log(result)
  } finally {
    await router.end({ timeout: 5 })
  }
}

/** waitress_router: LOGIN, a member of waitress_rpc and nothing else. Roles belong to the server: once per server is enough. */
async function ensureRouterLogin(sql: ReturnType<typeof createSql>, password: string) {
  const [{ exists }] = await sql<{ exists: boolean }[]>`select exists (select from pg_roles where rolname = ${ROUTER_LOGIN}) as "exists"`
  const [{ statement }] = await sql<{ statement: string }[]>`
    select format('%s role %I with login nosuperuser nocreatedb nocreaterole noreplication nobypassrls inherit password %L',
                  ${exists ? 'alter' : 'create'}::text, ${ROUTER_LOGIN}::text, ${password}::text) as statement`
  await sql.unsafe(statement)
  await sql.unsafe(`grant waitress_rpc to ${ROUTER_LOGIN}`)
}

/** What the router knows of its shards: each one's identity, reached through PL/Proxy. */
export async function clusterStatus(routerUrl: string): Promise<unknown[]> {
  const sql = createSql(routerUrl, { max: 1 })
  try {
    return [
      ...(await sql`
        select t as partition, rpc.shard_info(t) as shard
          from unnest(waitress.all_targets()) t`),
    ]
  } finally {
    await sql.end({ timeout: 5 })
  }
}

export function redact(url: string): string {
  try {
    const parsed = new URL(url)
    if (parsed.password) parsed.password = '***'
    return parsed.toString()
  } catch {
    return '(unparseable URL)'
  }
}

if (import.meta.main) {
  const [command] = process.argv.slice(2)
  const routerUrl = process.env.DATABASE_URL
  const shardUrls = parseShardUrls(process.env.SHARD_URLS)
  if (!routerUrl || shardUrls.length === 0 || !['migrate', 'configure', 'status'].includes(command ?? '')) {
    console.error('usage: DATABASE_URL=<router> SHARD_URLS=<shard>,<shard>,... bun scripts/shards.ts migrate|configure|status')
    process.exit(2)
  }
  const log = (line: string) => console.log(line)
  if (command === 'migrate') await migrateSharded({ routerUrl, shardUrls }, log)
  else if (command === 'configure') await configureCluster({ routerUrl, shardUrls }, { log })
  else console.log(JSON.stringify(await clusterStatus(routerUrl), null, 2))
}
