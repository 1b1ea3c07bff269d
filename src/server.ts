import { ConfigError, loadConfig } from './config'
import { openDatabase } from './db/database'
import { createSql } from './db/client'
import { startPurging } from './db/maintenance'
import { createApp } from './app'

const log = (msg: string, fields: Record<string, unknown> = {}, level = 'info') =>
  console.log(JSON.stringify({ level, time: new Date().toISOString(), msg, ...fields }))

let config: ReturnType<typeof loadConfig>
try {
  config = loadConfig()
} catch (error) {
  if (!(error instanceof ConfigError)) throw error
  log('refusing to start', { reason: error.message }, 'error')
  process.exit(1)
}
const database = await openDatabase(config)
log('database ready', { database: database.description, requests_as: database.appLogin })
if (!config.authJwtSecret)
  log('authentication off', { reason: 'AUTH_JWT_SECRET is not set: the open contract applies, any client may act as any user (development only)' }, 'warn')

const sql = createSql(database.appUrl, { max: config.dbPoolMax, role: config.dbRole })
const app = createApp(sql, {
  authJwtSecret: config.authJwtSecret,
  rateLimit: { limit: config.rateLimit, windowSeconds: config.rateLimitWindowSeconds },
  maxBodyBytes: config.maxBodyBytes,
}).listen({ port: config.port, hostname: config.host })
const stopPurging = startPurging(sql, config.purgeIntervalSeconds, (msg, fields) => log(msg, fields))
log('listening', { url: `http://${config.host}:${app.server!.port}`, swagger: `http://localhost:${app.server!.port}/swagger` })

let stopping = false
async function shutdown(signal: string) {
  if (stopping) return
  stopping = true
  log('shutting down', { signal })
  stopPurging()
  await app.stop()
  await sql.end({ timeout: 5 })
  await database.close()
  process.exit(0)
}
process.on('SIGINT', () => void shutdown('SIGINT'))
process.on('SIGTERM', () => void shutdown('SIGTERM'))
