import { loadConfig } from './config'
import { openDatabase } from './db/database'
import { createSql, gated } from './db/client'
import { Gate } from './db/gate'
import { createApp } from './app'
import { startExpiryTimer } from './expiry'

const log = (msg: string, fields: Record<string, unknown> = {}) =>
  console.log(JSON.stringify({ level: 'info', time: new Date().toISOString(), msg, ...fields }))

const config = loadConfig()
const database = await openDatabase(config)
log('database ready', { database: database.description })

const pool = createSql(database.url, {
  max: config.dbPoolMax,
  role: config.dbRole,
  statementTimeoutMs: config.dbStatementTimeoutMs,
  lockTimeoutMs: config.dbLockTimeoutMs,
  idleInTransactionTimeoutMs: config.dbIdleInTransactionTimeoutMs,
})
const sql = gated(pool, new Gate(config.dbPoolMax, config.dbQueueMax, config.dbQueueTimeoutMs))
const app = createApp(sql, {
  checkout: {
    flashSaleCheckEveryMs: config.flashSaleCheckEveryMs,
    maxBatch: config.flashSaleMaxBatch,
    batchesInFlight: config.flashSaleBatchesInFlight,
  },
}).listen({ port: config.port, hostname: config.host })
log('listening', { url: `http://${config.host}:${app.server!.port}`, swagger: `http://localhost:${app.server!.port}/swagger` })

const stopExpiry =
  config.expireOrdersEverySeconds > 0
    ? startExpiryTimer(sql, { ttlSeconds: config.orderPaymentTtlSeconds, everySeconds: config.expireOrdersEverySeconds, log })
    : () => {}

let stopping = false
async function shutdown(signal: string) {
  if (stopping) return
  stopping = true
  log('shutting down', { signal })
  stopExpiry()
  await app.stop()
  await sql.end({ timeout: 5 })
  await database.close()
  process.exit(0)
}
process.on('SIGINT', () => void shutdown('SIGINT'))
process.on('SIGTERM', () => void shutdown('SIGTERM'))
