/**
 * npm run start:node: the Node.js entry (20.16 or newer), bundled first by
 * scripts/build-node.mjs into dist/node/server.mjs (Node runs no TypeScript).
 * srvx puts node:http in front of app.fetch: the same fetch-to-node bridge
 * @elysiajs/node uses, with streaming, aborts and back-pressure handled. The
 * rest is the server process every runtime shares (src/runtime/service.ts).
 * Needs DATABASE_URL with the migrations applied (npm run db:migrate).
 */
import { serve } from 'srvx'
import { ConfigError, loadConfig, type Config } from '../config.ts'
import { redact } from '../db/url.ts'
import { createLogger } from '../observability/logger.ts'
import { describeError, startError, startService, type Service } from '../runtime/service.ts'

let config: Config
try {
  config = loadConfig(process.env)
  if (!config.databaseUrl) throw new ConfigError('DATABASE_URL is not set: the Node entry has no embedded PostgreSQL (npm start has); apply the migrations with npm run db:migrate')
} catch (error) {
  if (!(error instanceof ConfigError)) throw error
  createLogger({ format: 'json' }).error({ reason: error.message }, 'refusing to start')
  process.exit(1)
}
const logger = createLogger({ level: config.logLevel, format: config.logFormat })

let service: Service
try {
  service = await startService({
    config,
    logger,
    database: {
      url: config.databaseUrl!,
      appUrl: config.appDatabaseUrl,
      description: redact(config.databaseUrl!),
      close: async () => {},
    },
    runtime: {
      name: `node ${process.version}`,
      // srvx gives each request the peer's address (request.ip).
      clientAddress: (request) => (request as Request & { ip?: string }).ip,
      async listen(app) {
        const compiled = app.compile()
        const server = serve({
          fetch: (request) => compiled.fetch(request),
          port: config.port,
          hostname: config.host,
          reusePort: config.reusePort,
          silent: true,
          // SIGTERM is this process's to handle: drain, then close the pool.
          gracefulShutdown: false,
        })
        await server.ready()
        const port = new URL(server.url!).port
        return {
          url: `http://${config.host}:${port}`,
          stop: (force) => server.close(force),
        }
      },
    },
  })
} catch (error) {
  logger.error({ reason: describeError(startError(error, config.appDatabaseUrl ?? config.databaseUrl!)) }, 'refusing to start')
  process.exit(1)
}
for (const signal of ['SIGINT', 'SIGTERM', 'SIGHUP'] as const) process.on(signal, () => void service.shutdown(signal).then(() => process.exit(0)))
