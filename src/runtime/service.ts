/**
 * What every long-lived server process does, whichever runtime serves its
 * HTTP (Bun: src/server.ts; Deno and Node: src/entries/*.ts): the login it
 * serves as, one pool behind a gate, prom-client metrics, checkout
 * coalescing, the expiry and purge timers, and an orderly shutdown. The
 * entries bring the HTTP server, the client's address, the signals and the
 * database (embedded or DATABASE_URL). Not for workerd, where nothing outlives
 * a request (src/entries/workers.ts).
 *
 * Web-standard APIs, postgres, pino and prom-client only: every server
 * runtime has them.
 */
import type { Logger } from 'pino'
import { createApp, type App, type AppOptions } from '../app.ts'
import type { Config } from '../config.ts'
import { createSql, gated, type RetryableCode, type Sql } from '../db/client.ts'
import { applySessionDefaults, DERIVED_LOGIN, ensureDerivedLogin, type SessionDefaults } from '../db/app-login.ts'
import { primaryUrl, replaceablePool } from '../db/failover.ts'
import { Gate } from '../db/gate.ts'
import { redact } from '../db/url.ts'
import { startPurging } from '../db/maintenance.ts'
import { startExpiryTimer } from '../expiry.ts'
import { MIGRATIONS } from '../generated/sql.ts'
import { swaggerUiAssets } from '../http/swagger-ui-assets.ts'
import { Metrics } from '../observability/metrics.ts'

const QUERY_TIMEOUT_MARGIN_MS = 1_000

/** The database a process serves from, as its entry found it. */
export interface ServiceDatabase {
  /** The administrator's (owner's) connection: DATABASE_URL, or the embedded server's. */
  url: string
  /** The service's own login when there is one already (APP_DATABASE_URL, or the one the embedded server made). */
  appUrl?: string
  /** Human-readable, with no password. */
  description: string
  /** How requests connect, for the start-up log (default: the login's name). */
  appLogin?: string
  close(): Promise<void>
}

/** An HTTP server an entry started around app.fetch. */
export interface Listening {
  url: string
  /** Stops accepting; resolves when the requests in flight are answered (force: closes them). */
  stop(force: boolean): Promise<void>
}

export interface ServerRuntime {
  /** e.g. "bun 1.4.5", for the start-up log. */
  name: string
  listen(app: App): Promise<Listening>
  clientAddress: NonNullable<AppOptions['clientAddress']>
}

/** A start-up failure worth one log line: what went wrong and what to do, no stack. */
export class StartError extends Error {}

export const sessionDefaults = (config: Config): SessionDefaults => ({
  role: config.dbRole,
  statementTimeoutMs: config.dbStatementTimeoutMs,
  lockTimeoutMs: config.dbLockTimeoutMs,
  idleInTransactionTimeoutMs: config.dbIdleInTransactionTimeoutMs,
})

/**
 * The URL requests are served through, its login made to start every session
 * as the API role with the service's limits (role defaults, which hold
 * through a transaction pooler; no startup parameter, no SET ROLE per request).
 */
async function servingLogin(config: Config, database: ServiceDatabase, logger: Logger): Promise<{ url: string; login: string }> {
  const defaults = sessionDefaults(config)
  if (database.appUrl) {
    // The app's own login sets its own defaults (it may, once out of its default role),
    // on the primary when the URL lists several hosts (a standby is read-only).
    const own = createSql(await primaryUrl(database.appUrl), { max: 1, prepare: config.dbPrepare })
    try {
      const changed = await applySessionDefaults(own, 'self', defaults)
      if (changed.length) logger.info({ changed }, 'session defaults of the service login set')
    } catch (error) {
      if (!isPermissionError(error) && !isReadOnlyError(error)) throw error
      logger.warn({ reason: describeError(error) }, 'could not set the session defaults of APP_DATABASE_URL\'s login; checking what it has')
    } finally {
      await own.end({ timeout: 5 })
    }
    return { url: database.appUrl, login: loginOf(database.appUrl) }
  }
  if (!new URL(database.url).password)
    logger.warn(
      { reason: `DATABASE_URL has no password: the password of ${DERIVED_LOGIN} derived from it is no secret (trust authentication, development only); set APP_DATABASE_URL otherwise` },
      'derived login',
    )
  return { url: await ensureDerivedLogin(database.url, { defaults, prepare: config.dbPrepare }), login: DERIVED_LOGIN }
}

/**
 * Refuses to serve unless the pool's sessions act as the API role: the guard
 * against a pooler that dropped a setting, or old server connections that
 * predate the role defaults.
 */
async function checkSessions(sql: Sql, config: Config, logger: Logger) {
  const [session] = await sql<{ current_user: string; session_user: string; statement_timeout: string; lock_timeout: string }[]>`
    select current_user::text as current_user, session_user::text as session_user,
           current_setting('statement_timeout') as statement_timeout, current_setting('lock_timeout') as lock_timeout`
  if (config.dbRole && session.current_user !== config.dbRole)
    throw new StartError(
      `sessions of ${session.session_user} run as ${session.current_user}, not ${config.dbRole}: its role default is missing ` +
        '(behind PgBouncer, server connections opened before it was set keep the old session: RECONNECT on the PgBouncer console)',
    )
  const applied = new Set((await sql<{ version: string }[]>`select api.applied_migrations() as version`).map((row) => row.version))
  const pending = MIGRATIONS.filter((version) => !applied.has(version))
  if (pending.length) logger.warn({ pending, reason: 'run npm run db:migrate; /readyz answers 503 until then' }, 'migrations not applied')
  return session
}

export interface Service {
  app: App
  sql: Sql
  listening: Listening
  shutdown(signal: string): Promise<void>
}

/** Serves the API from `database` until shutdown(). Throws StartError (or a database error) when it cannot. */
export async function startService(options: { config: Config; logger: Logger; database: ServiceDatabase; runtime: ServerRuntime }): Promise<Service> {
  const { config, logger, database, runtime } = options
  const log = (msg: string, fields: Record<string, unknown> = {}) => logger.info(fields, msg)
  let serving: { url: string; login: string }
  try {
    serving = await servingLogin(config, database, logger)
  } catch (error) {
    throw startError(error, database.appUrl ?? database.url)
  }
  // A session found on a read-only server (25006), or a pool that gives no session in time, is
  // replaced by a new pool (at most once a second): every new session looks for the primary again.
  const pool = replaceablePool(
    () => createSql(serving.url, { max: config.dbPoolMax, applicationName: config.dbApplicationName, prepare: config.dbPrepare }),
    { onReplace: (reason) => logger.warn({ reason }, 'database pool replaced') },
  )
  let session: Awaited<ReturnType<typeof checkSessions>>
  try {
    session = await checkSessions(pool, config, logger)
  } catch (error) {
    await pool.end({ timeout: 1 })
    throw startError(error, serving.url)
  }
  logger.info(
    {
      database: database.description,
      requests_as: database.appLogin ?? serving.login,
      acting_as: session.current_user,
      statement_timeout: session.statement_timeout,
      lock_timeout: session.lock_timeout,
      prepare: config.dbPrepare,
    },
    'database ready',
  )
  if (!config.authJwtSecret)
    logger.warn(
      { reason: 'AUTH_JWT_SECRET is not set: the open contract applies, any client may act as any user (development only)' },
      'authentication off',
    )

  const gate = new Gate(config.dbPoolMax, config.dbQueueMax, config.dbQueueTimeoutMs)
  // Every statement run again after a deadlock or a serialization failure is
  // counted (waitress_db_retries_total) and logged: none is expected, and the
  // client of a retry that succeeds never hears of it.
  const retried: Record<RetryableCode, number> = { '40001': 0, '40P01': 0 }
  // statement_timeout counts only the server's time; on a slow network give up
  // (and cancel) a second after it: the client gets 503, not a hang.
  const sql = gated(pool, gate, {
    queryTimeoutMs: config.dbStatementTimeoutMs > 0 ? config.dbStatementTimeoutMs + QUERY_TIMEOUT_MARGIN_MS : 0,
    onReadOnly: () => pool.replace('a session is on a read-only server (25006): a standby, or a node not yet open for writes'),
    onStalled: () => pool.replace('no session within the deadline: no writable host, or stuck sessions'),
    onRetry: (code) => {
      retried[code]++
      logger.warn({ sqlstate: code }, 'statement failed with a deadlock or serialization failure: running it again')
    },
  })

  let accepting = true
  const app = createApp(sql, {
    logger,
    metrics: new Metrics(() => gate.stats, { dbRetries: () => retried }),
    accepting: () => accepting,
    clientAddress: runtime.clientAddress,
    authJwtSecret: config.authJwtSecret,
    rateLimit: { limit: config.rateLimit, windowSeconds: config.rateLimitWindowSeconds, delayMs: config.rateLimitDelayMs },
    maxBodyBytes: config.maxBodyBytes,
    metricsToken: config.metricsToken,
    docsAssets: swaggerUiAssets,
    orderPlacer: {
      coalesce: true,
      maxBatch: config.checkoutMaxBatch,
      callsInFlight: config.checkoutCallsInFlight,
      maxWaitMs: config.dbQueueTimeoutMs,
    },
  })
  const listening = await runtime.listen(app)
  const port = new URL(listening.url).port
  logger.info({ url: listening.url, swagger: `http://localhost:${port}/swagger`, runtime: runtime.name, pid: process.pid }, 'listening')

  // Every process runs the timers; the database makes each job run once per period across them.
  const stopPurging = startPurging(sql, config.purgeIntervalSeconds, log)
  const stopExpiry =
    config.expireOrdersEverySeconds > 0
      ? startExpiryTimer(sql, { ttlSeconds: config.orderPaymentTtlSeconds, everySeconds: config.expireOrdersEverySeconds, log })
      : () => {}

  let stopping: Promise<void> | undefined
  const shutdown = (signal: string) =>
    (stopping ??= (async () => {
      accepting = false
      logger.info({ signal }, 'shutting down: draining requests in flight')
      stopExpiry()
      stopPurging()
      let timer: ReturnType<typeof setTimeout> | undefined
      const drained = listening.stop(false).then(() => true)
      const timedOut = new Promise<boolean>((resolve) => (timer = setTimeout(() => resolve(false), config.shutdownTimeoutMs)))
      if (!(await Promise.race([drained, timedOut]))) {
        logger.warn({ timeout_ms: config.shutdownTimeoutMs }, 'requests still in flight at the deadline: closing them')
        await listening.stop(true)
      }
      clearTimeout(timer)
      await pool.end({ timeout: 5 })
      await database.close()
      logger.info({}, 'stopped')
    })())
  return { app, sql, listening, shutdown }
}

/** The user of a connection URL (several hosts, h1:p1,h2:p2, make no WHATWG URL). */
function loginOf(url: string): string {
  const user = /^postgres(?:ql)?:\/\/([^:@/]*)(?::[^@/]*)?@/.exec(url)?.[1]
  return user ? decodeURIComponent(user) : '(default user)'
}

const isPermissionError = (error: unknown) => (error as { code?: string }).code === '42501'
const isReadOnlyError = (error: unknown) => (error as { code?: string }).code === '25006'

/** One line: what the database or the network said, with nothing secret. */
export function describeError(error: unknown): string {
  if (error instanceof StartError) return error.message
  const e = error as { code?: string; message?: string; errno?: string }
  const message = (e.message ?? String(error)).split('\n')[0]
  return e.code && !message.includes(e.code) ? `${message} (${e.code})` : message
}

/** A database error at start, as one line that names the database (without its password). */
export function startError(error: unknown, url: string): StartError {
  if (error instanceof StartError) return error
  if (!url) return new StartError(describeError(error))
  const code = (error as { code?: string }).code
  if (code === '42883' || code === '3F000' || code === '42704')
    return new StartError(`the database at ${redact(url)} has no Waitress schema (${describeError(error)}): run npm run db:migrate first`)
  return new StartError(`cannot use the database at ${redact(url)}: ${describeError(error)}`)
}
