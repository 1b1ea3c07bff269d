/**
 * Behind PgBouncer in transaction mode (Debian's 1.18: no prepared
 * statement across transactions, no startup parameter but user, database
 * and a few it tracks), as users scale the shell out: three service
 * processes on one port (REUSE_PORT) reaching PostgreSQL only through it.
 * Skipped, saying so, where pgbouncer is not installed (.ci/run installs it).
 */
import { afterAll, beforeAll, describe, expect, it } from 'bun:test'
import postgres from 'postgres'
import { runFlashSale } from '../../proof/flash-sale.ts'
import { DERIVED_LOGIN, derivePassword } from '../../src/db/app-login.ts'
import { createSql } from '../../src/db/client.ts'
import { appDatabaseUrl, appLogin, testDatabaseUrl, testSql } from '../support/db.ts'
import { pgbouncerBinary, startPgbouncer, type Pgbouncer } from '../../scripts/pgbouncer.ts'
import { lowFreePort, startRuntime, type RunningRuntime } from '../support/runtime.ts'

const POOL_SIZE = 4
// The auth_user (the administrator, who looks logins up) has a pool of its own: the cap over all users.
const MAX_DB_CONNECTIONS = 6
const installed = pgbouncerBinary() !== undefined
if (!installed) console.warn('pgbouncer is not installed: tests/runtimes/pgbouncer.test.ts skipped (apt-get install pgbouncer)')

const sql = testSql()
const admin = new URL(testDatabaseUrl())
const database = decodeURIComponent(admin.pathname.slice(1))
// The administrator's password as PgBouncer knows it; a server that trusts it (CI's) never asks.
const adminPassword = decodeURIComponent(admin.password) || 'pgbouncer-admin'
const through = (bouncer: Pgbouncer, url: string, password?: string) => {
  const direct = new URL(url)
  const pooled = new URL(bouncer.url(decodeURIComponent(direct.username), password ?? decodeURIComponent(direct.password), database))
  pooled.search = direct.search
  return pooled.toString()
}

/** Samples the server connections PgBouncer holds while `work` runs: the most of all users, and of `user`. */
async function sampling<T>(bouncer: Pgbouncer, user: string, work: () => Promise<T>): Promise<{ result: T; most: number; mostOfUser: number }> {
  let most = 0
  let mostOfUser = 0
  let running = true
  const sampler = (async () => {
    while (running) {
      const servers = (await bouncer.show<{ database: string; user: string }>('servers')).filter((row) => row.database === database)
      most = Math.max(most, servers.length)
      mostOfUser = Math.max(mostOfUser, servers.filter((row) => row.user === user).length)
      await Bun.sleep(50)
    }
  })()
  try {
    return { result: await work(), most, mostOfUser }
  } finally {
    running = false
    await sampler
  }
}

async function threeProcesses(env: Record<string, string>): Promise<RunningRuntime[]> {
  const port = await lowFreePort()
  const services: RunningRuntime[] = []
  // One after the other: each must log its own "listening" (the port answers as soon as the first one is up).
  for (let i = 0; i < 3; i++)
    services.push(await startRuntime('bun', { REUSE_PORT: 'true', DB_PREPARE: 'false', DB_POOL_MAX: '4', EXPIRE_ORDERS_EVERY: '0', PURGE_INTERVAL: '0', ...env }, { port }))
  return services
}

const pidsThatServed = (services: RunningRuntime[]) =>
  services.filter((service) => service.logs().filter((line) => line.msg === 'request' && line.route === '/carts/:id/checkout').length > 0).length

describe.skipIf(!installed)('behind PgBouncer in transaction mode', () => {
  let bouncer: Pgbouncer

  beforeAll(async () => {
    // PgBouncer finds the logins the service makes (and the app login) with
    // auth_query, as the administrator: their SCRAM secrets, no file to
    // rewrite. That needs a server that asks for SCRAM or trusts (CI's); the
    // embedded test server asks for a cleartext password, which PgBouncer can
    // only send if it has it: there the logins go in its auth_file.
    const [{ cleartext }] = await sql<{ cleartext: boolean }[]>`
      select exists (select from pg_catalog.pg_hba_file_rules where auth_method = 'password') as cleartext`
    const known: Record<string, string> = cleartext
      ? {
          [appLogin()]: decodeURIComponent(new URL(appDatabaseUrl()).password),
          [DERIVED_LOGIN]: await derivePassword(adminPassword, DERIVED_LOGIN),
        }
      : {}
    if (cleartext) console.warn('the test server asks for cleartext passwords: the logins are in auth_file, auth_query is not exercised here')
    bouncer = await startPgbouncer({
      server: { host: admin.hostname, port: Number(admin.port) },
      users: { [decodeURIComponent(admin.username)]: adminPassword, ...known },
      admin: decodeURIComponent(admin.username),
      authUser: decodeURIComponent(admin.username),
      poolSize: POOL_SIZE,
      maxDbConnections: MAX_DB_CONNECTIONS,
      settings: { server_login_retry: 1 },
    })
  })

  afterAll(async () => {
    await bouncer?.stop()
  })

  it('refuses role as a startup parameter, which is why the service no longer sends one', async () => {
    const refused = createSql(through(bouncer, testDatabaseUrl(), adminPassword), { max: 1, role: 'waitress_api', prepare: false })
    try {
      const error = await refused`select 1`.then(() => undefined, (e: { code?: string; message: string }) => e)
      expect(error?.message).toContain('unsupported startup parameter')
    } finally {
      await refused.end({ timeout: 1 })
    }
  })

  it('serves with APP_DATABASE_URL (the production shape): 3 processes on one port, 600 buyers, every invariant, the pool bound kept', async () => {
    const services = await threeProcesses({
      DATABASE_URL: through(bouncer, testDatabaseUrl(), adminPassword),
      APP_DATABASE_URL: through(bouncer, appDatabaseUrl()),
    })
    try {
      const ready = services.map((service) => service.logs().find((line) => line.msg === 'database ready'))
      for (const line of ready) expect(line).toMatchObject({ acting_as: 'waitress_api', statement_timeout: '5s', lock_timeout: '2s', prepare: false })
      const { result, most, mostOfUser } = await sampling(bouncer, appLogin(), () =>
        runFlashSale({
          baseUrl: services[0].baseUrl,
          databaseUrl: testDatabaseUrl(),
          buyers: 600,
          products: 3,
          stock: 250,
          maxQty: 3,
          multi: true,
          concurrency: 60,
          seed: 1200,
        }),
      )
      expect(result.verdict.violations).toEqual([])
      expect(result.verdict.ok).toBe(true)
      expect(result.checkouts).toHaveLength(600)
      expect(result.checkouts.filter((c) => c.outcome.kind === 'failed')).toEqual([])
      expect(mostOfUser).toBeGreaterThan(0)
      expect(mostOfUser).toBeLessThanOrEqual(POOL_SIZE)
      expect(most).toBeLessThanOrEqual(MAX_DB_CONNECTIONS)
      // The kernel spreads connections, not requests; with 60 buyers at once each process gets some.
      expect(pidsThatServed(services)).toBeGreaterThanOrEqual(2)
    } finally {
      for (const service of services) await service.stop()
    }
  }, 240_000)

  it('serves with DATABASE_URL alone: the service acts only as waitress_api, through a login it derives, its checkouts coalesced too', async () => {
    const services = await threeProcesses({ DATABASE_URL: through(bouncer, testDatabaseUrl(), adminPassword), CHECKOUT_CALLS_IN_FLIGHT: '1' })
    try {
      for (const service of services)
        expect(service.logs().find((line) => line.msg === 'database ready')).toMatchObject({ acting_as: 'waitress_api', prepare: false })
      const { result, mostOfUser } = await sampling(bouncer, DERIVED_LOGIN, () =>
        runFlashSale({
          baseUrl: services[0].baseUrl,
          databaseUrl: testDatabaseUrl(),
          buyers: 200,
          products: 2,
          stock: 60,
          maxQty: 2,
          multi: true,
          concurrency: 40,
          seed: 1201,
        }),
      )
      expect(result.verdict.violations).toEqual([])
      expect(result.verdict.ok).toBe(true)
      expect(mostOfUser).toBeLessThanOrEqual(POOL_SIZE)
      const [{ sessions }] = await sql<{ sessions: number }[]>`
        select count(*)::int as sessions from pg_stat_activity where usename = ${DERIVED_LOGIN} and datname = current_database()`
      expect(sessions).toBeLessThanOrEqual(POOL_SIZE)
    } finally {
      for (const service of services) await service.stop()
    }
  }, 180_000)

  it('runs a periodic job once across clients: the lease is taken under a transaction lock, never a session one', async () => {
    await sql`delete from waitress.job_leases where job = 'expire_orders'`
    const clients = Array.from({ length: 8 }, () => postgres(through(bouncer, appDatabaseUrl()), { max: 1, prepare: false, onnotice: () => {} }))
    try {
      const round = () =>
        Promise.all(clients.map((client) => client<{ ran: number | null }[]>`select api.expire_orders_due(interval '1 hour', interval '1 hour', 10) as ran`))
      const first = (await round()).map(([row]) => row.ran)
      expect(first.filter((ran) => ran !== null)).toHaveLength(1)
      const second = (await round()).map(([row]) => row.ran)
      expect(second.filter((ran) => ran !== null)).toHaveLength(0)
    } finally {
      await Promise.all(clients.map((client) => client.end({ timeout: 2 })))
      await sql`delete from waitress.job_leases where job = 'expire_orders'`
    }
  })
})
