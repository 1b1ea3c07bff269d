import type { Config } from '../config.ts'
import { startEmbeddedPostgres } from './embedded.ts'
import { migrate } from './migrate.ts'
import { APP_LOGIN, ensureAppLogin, randomPassword } from './app-login.ts'

export interface Database {
  /** The owner's connection: migrations. */
  url: string
  /** The service's connection for requests: the waitress_app login when there is one. */
  appUrl: string
  /** Human-readable, with no password. */
  description: string
  /** How the service connects for requests, for the start-up log. */
  appLogin: string
  close(): Promise<void>
}

/**
 * The database the service uses: DATABASE_URL when given, else a private
 * embedded PostgreSQL whose data stays in EMBEDDED_PG_DIR between runs.
 */
export async function openDatabase(config: Config, log: (line: string) => void = () => {}): Promise<Database> {
  let database: Database
  if (config.databaseUrl) {
    const appUrl = config.appDatabaseUrl ?? config.databaseUrl
    database = {
      url: config.databaseUrl,
      appUrl,
      description: redact(config.databaseUrl),
      appLogin: config.appDatabaseUrl
        ? `APP_DATABASE_URL (${redact(appUrl)})`
        : 'DATABASE_URL with SET ROLE only: RESET ROLE would regain its rights; set APP_DATABASE_URL (docs/operations.md, "Least privilege")',
      close: async () => {},
    }
  } else {
    const server = await startEmbeddedPostgres({ dataDir: config.embeddedDataDir, port: config.embeddedPort, log })
    const url = server.url('waitress')
    database = {
      url,
      appUrl: config.appDatabaseUrl ?? url,
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

export function redact(url: string): string {
  try {
    const parsed = new URL(url)
    if (parsed.password) parsed.password = '***'
    return parsed.toString()
  } catch {
    // libpq's several hosts (h1:p1,h2:p2) are no WHATWG URL: hide the password by hand.
    const hidden = url.replace(/^(postgres(?:ql)?:\/\/[^:@/]*:)[^@/]*@/, '$1***@')
    return /^postgres(?:ql)?:\/\//.test(hidden) ? hidden : '(unparseable DATABASE_URL)'
  }
}
