/**
 * npm run start:deno: the Deno entry. Deno.serve in front of app.fetch, the
 * client's address from the connection, Deno's signals; the rest is the
 * server process every runtime shares (src/runtime/service.ts). Needs
 * DATABASE_URL with the migrations applied (npm run db:migrate): no embedded
 * server and no dbmate here. Permissions (package.json): network, the
 * configuration variables and nothing else (--ignore-env makes any other
 * variable read as unset), and the host name (pino).
 */
import { ConfigError, configEnv, loadConfig, type Config } from '../config.ts'
import { redact } from '../db/url.ts'
import { createLogger } from '../observability/logger.ts'
import { describeError, startError, startService, type Service } from '../runtime/service.ts'

let config: Config
try {
  config = loadConfig(configEnv((name) => Deno.env.get(name)))
  if (!config.databaseUrl) throw new ConfigError('DATABASE_URL is not set: the Deno entry has no embedded PostgreSQL (npm start has); apply the migrations with npm run db:migrate')
} catch (error) {
  if (!(error instanceof ConfigError)) throw error
  createLogger({ format: 'json' }).error({ reason: error.message }, 'refusing to start')
  Deno.exit(1)
}
const logger = createLogger({ level: config.logLevel, format: config.logFormat })

const peers = new WeakMap<Request, string>()
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
      name: `deno ${Deno.version.deno}`,
      clientAddress: (request) => peers.get(request),
      async listen(app) {
        const compiled = app.compile()
        const { promise: listening, resolve } = Promise.withResolvers<Deno.NetAddr>()
        const server = Deno.serve(
          { port: config.port, hostname: config.host, reusePort: config.reusePort, onListen: (address) => resolve(address as Deno.NetAddr) },
          (request, info) => {
            peers.set(request, (info.remoteAddr as Deno.NetAddr).hostname)
            return compiled.fetch(request)
          },
        )
        const address = await listening
        return {
          url: `http://${config.host}:${address.port}`,
          // shutdown() stops accepting and waits for the requests in flight; there is nothing to force after it.
          stop: async () => server.shutdown(),
        }
      },
    },
  })
} catch (error) {
  logger.error({ reason: describeError(startError(error, config.appDatabaseUrl ?? config.databaseUrl!)) }, 'refusing to start')
  Deno.exit(1)
}
for (const signal of ['SIGINT', 'SIGTERM', 'SIGHUP'] as const)
  Deno.addSignalListener(signal, () => void service.shutdown(signal).then(() => Deno.exit(0)))
