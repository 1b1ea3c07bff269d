import type { Config } from '../config.ts'
import type { ServiceDatabase } from '../runtime/service.ts'
import { redact } from './url.ts'
import { startEmbeddedPostgres } from './embedded.ts'
import { migrate } from './migrate.ts'
import { APP_LOGIN, DERIVED_LOGIN, ensureAppLogin, randomPassword } from './app-login.ts'

export type Database = ServiceDatabase

/**
 * The database the Bun entry serves from: DATABASE_URL when given, else a
 * private embedded PostgreSQL whose data stays in EMBEDDED_PG_DIR between
 * runs. Applies pending migrations first (MIGRATE_ON_START, dbmate).
 */
export async function openDatabase(config: Config, log: (line: string) => void = () => {}, notice: (fields: Record<string, unknown>, msg: string) => void = () => {}): Promise<Database> {
  let database: Database
  if (config.databaseUrl) {
    database = {
      url: config.databaseUrl,
      appUrl: config.appDatabaseUrl,
      description: redact(config.databaseUrl),
      appLogin: config.appDatabaseUrl
        ? `APP_DATABASE_URL (${redact(config.appDatabaseUrl)})`
        : `${DERIVED_LOGIN}, made by the service with a password derived from DATABASE_URL's (set APP_DATABASE_URL in production: docs/operations.md, "Least privilege")`,
      close: async () => {},
    }
  } else {
    const server = await startEmbeddedPostgres({ dataDir: config.embeddedDataDir, port: config.embeddedPort, log, notice })
    const url = server.url('waitress')
    database = {
      url,
      appUrl: config.appDatabaseUrl,
      description: `embedded PostgreSQL (${redact(url)}, data in ${config.embeddedDataDir})`,
      appLogin: config.appDatabaseUrl ? `APP_DATABASE_URL (${redact(config.appDatabaseUrl)})` : `${APP_LOGIN}, a fresh password at every start`,
      close: () => server.stop(),
    }
  }
  try {
    if (config.migrateOnStart) await migrate(database.url)
    // The embedded server is this process's own: it makes its login itself,
    // with a password that exists only in this process's memory.
    if (!config.databaseUrl && !config.appDatabaseUrl) database.appUrl = await ensureAppLogin(database.url, randomPassword())
  } catch (error) {
    await database.close()
    throw error
  }
  return database
}

export { redact }
