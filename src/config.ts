/**
 * Every setting the service reads, read once from the environment.
 * .env.example lists the same variables with their defaults.
 */
export interface Config {
  /** HTTP port; 0 picks a free one. */
  port: number
  host: string
  /** Let several service processes listen on the same port (SO_REUSEPORT; Linux spreads connections over them). */
  reusePort: boolean
  /** An external PostgreSQL server. Without it, an embedded one is started. */
  databaseUrl: string | undefined
  /** Where the embedded server keeps its data between runs. */
  embeddedDataDir: string
  /** Port of the embedded server; 0 picks a free one at each start. */
  embeddedPort: number
  /** Apply pending migrations before serving. */
  migrateOnStart: boolean
  /** Most database connections this process opens; keep it below the server's max_connections. */
  dbPoolMax: number
  /**
   * Named prepared statements (DB_PREPARE, default true). Set false behind a
   * transaction pooler (PgBouncer 1.18 keeps no prepared statement across
   * transactions). The checkout calls still take one round trip (their
   * parameters carry their types); other queries with parameters take two.
   */
  dbPrepare: boolean
  /**
   * The role requests run as: a role default of the service's login (ALTER
   * ROLE … SET role), never a startup parameter, so it holds through a
   * transaction pooler. It may only call the API functions and read. Empty:
   * the login's own privileges.
   */
  dbRole: string | undefined
  /** The service's sessions show under this name in pg_stat_activity (operators and fault tests find them by it). */
  dbApplicationName: string
  /** Session limits in milliseconds: a statement, a lock wait, an idle transaction (role defaults of the login, like dbRole). */
  dbStatementTimeoutMs: number
  dbLockTimeoutMs: number
  dbIdleInTransactionTimeoutMs: number
  /** Requests waiting for a database connection: at most this many, for at most this long (then 503). */
  dbQueueMax: number
  dbQueueTimeoutMs: number
  /** Checkout coalescing: the largest batch, and the checkout calls in flight before checkouts queue and coalesce. */
  checkoutMaxBatch: number
  checkoutCallsInFlight: number
  /** How long a SIGTERM/SIGINT waits for requests in flight before closing them. */
  shutdownTimeoutMs: number
  logLevel: 'fatal' | 'error' | 'warn' | 'info' | 'debug' | 'trace' | 'silent'
  /** json: one JSON line per event; pretty: for a terminal. Default: pretty on a TTY outside production. */
  logFormat: 'json' | 'pretty' | undefined
  /** A pending order older than this (seconds) expires and gives its stock back. */
  orderPaymentTtlSeconds: number
  /** How often this process runs expire_orders() (seconds); 0 leaves it to cron or pg_cron. */
  expireOrdersEverySeconds: number
  /**
   * The service's own login (waitress_app), which may only act as the API
   * role. Unset: with the embedded server the service creates that login
   * itself; with DATABASE_URL it falls back to DATABASE_URL (not in production).
   */
  appDatabaseUrl: string | undefined
  /** NODE_ENV=production: a JWT secret and APP_DATABASE_URL become mandatory. */
  production: boolean
  /** HS256 secret of the bearer tokens; unset: no authentication (the open contract, development only). */
  authJwtSecret: string | undefined
  /** Requests per client per window; 0 turns rate limiting off. */
  rateLimit: number
  rateLimitWindowSeconds: number
  /** How long a 429 is held before it is sent (at most its Retry-After), so a flooding client slows down; 0: at once. */
  rateLimitDelayMs: number
  /** Largest request body accepted; larger is 413. */
  maxBodyBytes: number
  /** How often expired idempotency keys and rate-limit counters are purged; 0: never. */
  purgeIntervalSeconds: number
  /** When set, GET /metrics needs `Authorization: Bearer <it>`; unset, /metrics is open like /healthz and /readyz. */
  metricsToken: string | undefined
}

export class ConfigError extends Error {}

/**
 * Every variable loadConfig reads: what an entry copies out of its
 * environment (the Deno entry may read only these: --allow-env lists them,
 * tests/runtimes/entries.test.ts keeps the two lists equal).
 */
export const CONFIG_VARIABLES = [
  'NODE_ENV', 'PORT', 'HOST', 'REUSE_PORT', 'DATABASE_URL', 'APP_DATABASE_URL', 'EMBEDDED_PG_DIR', 'EMBEDDED_PG_PORT',
  'MIGRATE_ON_START', 'DB_POOL_MAX', 'DB_PREPARE', 'DB_ROLE', 'DB_APPLICATION_NAME', 'DB_STATEMENT_TIMEOUT', 'DB_LOCK_TIMEOUT',
  'DB_IDLE_IN_TRANSACTION_TIMEOUT', 'DB_QUEUE_MAX', 'DB_QUEUE_TIMEOUT', 'CHECKOUT_MAX_BATCH',
  'CHECKOUT_CALLS_IN_FLIGHT', 'SHUTDOWN_TIMEOUT', 'LOG_LEVEL', 'LOG_FORMAT', 'ORDER_PAYMENT_TTL', 'EXPIRE_ORDERS_EVERY',
  'AUTH_JWT_SECRET', 'RATE_LIMIT', 'RATE_LIMIT_WINDOW', 'RATE_LIMIT_DELAY', 'MAX_BODY_BYTES', 'PURGE_INTERVAL', 'METRICS_TOKEN',
] as const

/** The configuration variables out of an environment that can only be asked name by name (Deno.env.get, workerd's env). */
export const configEnv = (get: (name: string) => string | undefined): Record<string, string | undefined> =>
  Object.fromEntries(CONFIG_VARIABLES.map((name) => [name, get(name)]))

export const MIN_JWT_SECRET_LENGTH = 32
export const MIN_METRICS_TOKEN_LENGTH = 16

/** Reads the settings from `env`: each entry passes its runtime's environment (process.env, Deno.env, workerd's bindings). */
export function loadConfig(env: Record<string, string | undefined>): Config {
  const production = env.NODE_ENV === 'production'
  for (const name of ['DATABASE_URL', 'APP_DATABASE_URL']) databaseUrl(env, name)
  const authJwtSecret = env.AUTH_JWT_SECRET || undefined
  if (authJwtSecret !== undefined && authJwtSecret.length < MIN_JWT_SECRET_LENGTH)
    throw new ConfigError(`AUTH_JWT_SECRET must be at least ${MIN_JWT_SECRET_LENGTH} characters (e.g. openssl rand -hex 32)`)
  if (production && authJwtSecret === undefined)
    throw new ConfigError('NODE_ENV=production requires AUTH_JWT_SECRET: without it anyone may act as any buyer')
  const metricsToken = env.METRICS_TOKEN || undefined
  if (metricsToken !== undefined && (metricsToken.length < MIN_METRICS_TOKEN_LENGTH || /\s/.test(metricsToken)))
    throw new ConfigError(`METRICS_TOKEN must be at least ${MIN_METRICS_TOKEN_LENGTH} characters without spaces (e.g. openssl rand -hex 16)`)
  if (production && env.DATABASE_URL && !env.APP_DATABASE_URL)
    throw new ConfigError('NODE_ENV=production with DATABASE_URL requires APP_DATABASE_URL, the waitress_app login (docs/operations.md, "Least privilege")')
  const reusePort = boolean(env, 'REUSE_PORT', false)
  return {
    port: integer(env, 'PORT', 8080, 0, 65535),
    host: env.HOST || '0.0.0.0',
    reusePort,
    databaseUrl: env.DATABASE_URL || undefined,
    embeddedDataDir: env.EMBEDDED_PG_DIR || '.data/postgres',
    embeddedPort: integer(env, 'EMBEDDED_PG_PORT', 0, 0, 65535),
    migrateOnStart: boolean(env, 'MIGRATE_ON_START', true),
    dbPoolMax: integer(env, 'DB_POOL_MAX', 4, 1, 1000),
    dbPrepare: boolean(env, 'DB_PREPARE', true),
    dbRole: env.DB_ROLE === undefined ? 'waitress_api' : env.DB_ROLE || undefined,
    dbApplicationName: env.DB_APPLICATION_NAME || 'waitress',
    dbStatementTimeoutMs: durationMs(env, 'DB_STATEMENT_TIMEOUT', 5_000),
    dbLockTimeoutMs: durationMs(env, 'DB_LOCK_TIMEOUT', 2_000),
    dbIdleInTransactionTimeoutMs: durationMs(env, 'DB_IDLE_IN_TRANSACTION_TIMEOUT', 10_000),
    dbQueueMax: integer(env, 'DB_QUEUE_MAX', 10_000, 0, 1_000_000),
    dbQueueTimeoutMs: durationMs(env, 'DB_QUEUE_TIMEOUT', 5_000),
    checkoutMaxBatch: integer(env, 'CHECKOUT_MAX_BATCH', 500, 1, 1000),
    // Processes sharing a port (REUSE_PORT) each keep one checkout call in
    // flight, so together they keep about as many as one process keeps two:
    // the batches stay large instead of splitting into many small calls.
    checkoutCallsInFlight: integer(env, 'CHECKOUT_CALLS_IN_FLIGHT', reusePort ? 1 : 2, 1, 100),
    shutdownTimeoutMs: durationMs(env, 'SHUTDOWN_TIMEOUT', 10_000),
    logLevel: oneOf(env, 'LOG_LEVEL', ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'] as const, 'info'),
    logFormat: env.LOG_FORMAT ? oneOf(env, 'LOG_FORMAT', ['json', 'pretty'] as const, 'json') : undefined,
    orderPaymentTtlSeconds: durationMs(env, 'ORDER_PAYMENT_TTL', 30 * 60 * 1000) / 1000,
    expireOrdersEverySeconds: durationMs(env, 'EXPIRE_ORDERS_EVERY', 60 * 1000) / 1000,
    appDatabaseUrl: env.APP_DATABASE_URL || undefined,
    production,
    authJwtSecret,
    rateLimit: integer(env, 'RATE_LIMIT', production ? 600 : 0, 0, 1_000_000),
    rateLimitWindowSeconds: integer(env, 'RATE_LIMIT_WINDOW', 60, 1, 86_400),
    rateLimitDelayMs: durationMs(env, 'RATE_LIMIT_DELAY', 1_000),
    maxBodyBytes: integer(env, 'MAX_BODY_BYTES', 65_536, 1024, 16_777_216),
    purgeIntervalSeconds: integer(env, 'PURGE_INTERVAL', 3600, 0, 86_400),
    metricsToken,
  }
}

/**
 * A postgres:// URL, or nothing; a malformed one is refused at start with
 * its name and never its password. As lenient as postgres.js itself: several
 * hosts (h1:5432,h2:5433) and an empty host (a Unix socket in ?host=) pass.
 */
function databaseUrl(env: Record<string, string | undefined>, name: string): string | undefined {
  const raw = env[name]
  if (!raw) return undefined
  const match = /^(postgres(?:ql)?):\/\/(?:[^@/?#]*@)?([^/?#]*)(?:\/[^?#]*)?(?:\?[^#]*)?$/.exec(raw)
  if (!match) throw new ConfigError(`${name} is not a postgres:// URL: expected postgres://user:password@host:port/database`)
  for (const host of match[2].split(',')) {
    const port = /^(?:\[[^\]]*\]|[^:]*)(?::(.*))?$/.exec(host)?.[1]
    if (port !== undefined && port !== '' && !(/^\d{1,5}$/.test(port) && Number(port) <= 65535))
      throw new ConfigError(`${name} has a malformed port "${port}": expected postgres://user:password@host:port/database`)
  }
  return raw
}

function integer(env: Record<string, string | undefined>, name: string, fallback: number, min: number, max: number): number {
  const raw = env[name]
  if (raw === undefined || raw === '') return fallback
  const value = Number(raw)
  if (!Number.isInteger(value) || value < min || value > max)
    throw new ConfigError(`${name} must be an integer from ${min} to ${max}, got "${raw}"`)
  return value
}

const UNIT_MS: Record<string, number> = { ms: 1, s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000 }

/** A duration, written as a number of seconds or with a unit (500ms, 90s, 30m, 2h, 1d); in milliseconds. */
function durationMs(env: Record<string, string | undefined>, name: string, fallback: number): number {
  const raw = env[name]?.trim()
  if (raw === undefined || raw === '') return fallback
  const match = /^(\d+)\s*(ms|s|m|h|d)?$/.exec(raw)
  if (!match) throw new ConfigError(`${name} must be a duration like 500ms, 90s, 30m, 2h or 1d, got "${raw}"`)
  return Number(match[1]) * UNIT_MS[match[2] ?? 's']
}

function oneOf<const T extends readonly string[]>(env: Record<string, string | undefined>, name: string, values: T, fallback: T[number]): T[number] {
  const raw = env[name]
  if (raw === undefined || raw === '') return fallback
  if (!values.includes(raw)) throw new ConfigError(`${name} must be one of ${values.join(', ')}, got "${raw}"`)
  return raw as T[number]
}

function boolean(env: Record<string, string | undefined>, name: string, fallback: boolean): boolean {
  const raw = env[name]?.toLowerCase()
  if (raw === undefined || raw === '') return fallback
  if (['1', 'true', 'yes', 'on'].includes(raw)) return true
  if (['0', 'false', 'no', 'off'].includes(raw)) return false
  throw new ConfigError(`${name} must be true or false, got "${env[name]}"`)
}
