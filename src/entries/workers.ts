/**
 * npm run start:workers (wrangler dev --local) and npm run build:workers
 * (wrangler deploy --dry-run): the Cloudflare Workers entry.
 *
 * workerd allows code generation only at start-up (global scope) and forbids
 * timers, randomness and I/O there; it also forbids any I/O object or promise
 * to cross from one request to another. So:
 * - the app is built and compiled here, at global scope, with the Cloudflare
 *   adapter; building it does no I/O;
 * - each request gets its own database client, ended after the response
 *   (ctx.waitUntil), found by the core through an AsyncLocalStorage scope;
 * - nothing is shared across requests: no pool, no gate, no checkout
 *   coalescing, no cached promise. Every invariant lives in PostgreSQL, so
 *   isolates side by side need nothing from each other;
 * - the request's log line is written after the response (Elysia's
 *   after-response hook): the request is kept alive until it is (onResponded).
 *
 * Database: a Hyperdrive binding (HYPERDRIVE, production: pooled, close to the
 * database), else APP_DATABASE_URL, else the login the service derives from
 * DATABASE_URL (made by npm run db:migrate or any server process). Expiry
 * and purges run from the Cron Trigger (scheduled) through the same leases
 * as the server processes' timers.
 */
import { env as bindings } from 'cloudflare:workers'
import { AsyncLocalStorage } from 'node:async_hooks'
import { CloudflareAdapter } from 'elysia/adapter/cloudflare-worker'
import { createApp } from '../app.ts'
import { configEnv, loadConfig } from '../config.ts'
import { DERIVED_LOGIN, derivePassword } from '../db/app-login.ts'
import { createSql, gated, type Sql } from '../db/client.ts'
import { DatabaseUnreachableError } from '../db/failover.ts'
import { purgeIfDue } from '../db/maintenance.ts'
import { expireOverdueOrders } from '../expiry.ts'
import { consoleLogger } from '../observability/log.ts'

interface Env {
  HYPERDRIVE?: { connectionString: string }
  [name: string]: unknown
}

const QUERY_TIMEOUT_MARGIN_MS = 1_000
const env = bindings as Env
const text = (name: string) => (typeof env[name] === 'string' ? (env[name] as string) : undefined)
const config = loadConfig(configEnv(text))
const logger = consoleLogger({ service: 'waitress', runtime: 'workerd' }, config.logLevel)

/** What one request owns: its database client (opened on first use) and the signal that its log line is written. */
interface RequestScope {
  sql?: Sql
  open(): Sql
}
const scope = new AsyncLocalStorage<RequestScope>()
const responded = new WeakMap<Request, () => void>()

/** The core's Sql: every call goes to the client of the request it runs for. */
const requestSql = new Proxy(function () {} as unknown as Sql, {
  apply: (_target, _this, args) => Reflect.apply(current() as never, undefined, args),
  get: (_target, property) => {
    const sql = current()
    const value = Reflect.get(sql, property, sql)
    return typeof value === 'function' ? value.bind(sql) : value
  },
})
function current(): Sql {
  const request = scope.getStore()
  if (!request) throw new Error('a database call outside of a request')
  return (request.sql ??= request.open())
}

// Compiled here, at global scope: workerd refuses code generation inside a request.
const app = createApp(requestSql, {
  logger,
  authJwtSecret: config.authJwtSecret,
  // Per isolate: a token bucket per client, over the window shared in PostgreSQL (reported on the request's own client).
  rateLimit: { limit: config.rateLimit, windowSeconds: config.rateLimitWindowSeconds, delayMs: config.rateLimitDelayMs },
  maxBodyBytes: config.maxBodyBytes,
  // Cloudflare's edge sets it; so does wrangler dev.
  clientAddress: (request) => request.headers.get('cf-connecting-ip') ?? undefined,
  orderPlacer: { coalesce: false },
  onResponded: (request) => responded.get(request)?.(),
  adapter: CloudflareAdapter,
}).compile()

// Computed once per isolate from DATABASE_URL: a string, never a promise shared across requests.
let derivedUrl: string | undefined
async function databaseUrl(): Promise<string | undefined> {
  if (env.HYPERDRIVE?.connectionString) return env.HYPERDRIVE.connectionString
  if (config.appDatabaseUrl) return config.appDatabaseUrl
  if (!config.databaseUrl) return undefined
  if (derivedUrl === undefined) {
    const url = new URL(config.databaseUrl)
    const password = await derivePassword(decodeURIComponent(url.password), DERIVED_LOGIN)
    url.username = DERIVED_LOGIN
    url.password = password
    derivedUrl = url.toString()
  }
  return derivedUrl
}

/** A client for one request (or one scheduled run): one connection, retries and a deadline, no gate. */
const openClient = (url: string) =>
  gated(createSql(url, { max: 1, prepare: config.dbPrepare, applicationName: config.dbApplicationName }), undefined, {
    queryTimeoutMs: config.dbStatementTimeoutMs > 0 ? config.dbStatementTimeoutMs + QUERY_TIMEOUT_MARGIN_MS : 0,
    // No registry per isolate to count them in: each retry is a warn line, which Workers Logs keep.
    onRetry: (code) => logger.warn({ sqlstate: code }, 'statement failed with a deadlock or serialization failure: running it again'),
  })

// Said once per isolate (a boolean, nothing that belongs to a request).
let toldNoDatabase = false
const noDatabase = (): Sql => {
  if (!toldNoDatabase) logger.error({ reason: 'no HYPERDRIVE binding, APP_DATABASE_URL or DATABASE_URL' }, 'no database')
  toldNoDatabase = true
  throw new DatabaseUnreachableError('not-sent', new Error('the service has no database configured'))
}

export default {
  async fetch(request: Request, _env: Env, ctx: ExecutionContext): Promise<Response> {
    const url = await databaseUrl()
    // Without a database /healthz and the docs still answer; anything that needs it is 503.
    const own: RequestScope = { open: () => (url ? openClient(url) : noDatabase()) }
    const logged = new Promise<void>((resolve) => responded.set(request, resolve))
    try {
      return await scope.run(own, () => app.fetch(request))
    } finally {
      // The response body is complete here (the routes answer JSON); the client
      // goes once the log line is written, or after 5 s whatever happens.
      let timer: ReturnType<typeof setTimeout> | undefined
      const fallback = new Promise<void>((resolve) => (timer = setTimeout(resolve, 5_000)))
      ctx.waitUntil(
        Promise.race([logged, fallback]).then(async () => {
          clearTimeout(timer)
          await own.sql?.end({ timeout: 1 })
        }),
      )
    }
  },

  /** The Cron Trigger (wrangler.toml): expiry and purges, once per period across every isolate and process. */
  async scheduled(_controller: ScheduledController, _env: Env, ctx: ExecutionContext): Promise<void> {
    const url = await databaseUrl()
    if (!url) return
    const sql = openClient(url)
    const job = (async () => {
      try {
        if (config.expireOrdersEverySeconds > 0) {
          const expired = await expireOverdueOrders(sql, config.orderPaymentTtlSeconds, config.expireOrdersEverySeconds)
          if (expired > 0) logger.info({ expired }, 'expired overdue orders')
        }
        if (config.purgeIntervalSeconds > 0) {
          const purged = await purgeIfDue(sql, config.purgeIntervalSeconds * 0.9)
          if (purged && (purged.idempotency_keys > 0 || purged.rate_limit_windows > 0)) logger.info(purged, 'purged')
        }
      } catch (error) {
        logger.error({ error: String(error) }, 'scheduled maintenance failed')
      } finally {
        await sql.end({ timeout: 1 })
      }
    })()
    ctx.waitUntil(job)
    await job
  },
}
