import type { Config } from '../config'
import { startEmbeddedPostgres } from './embedded'
import { migrate } from './migrate'

export interface Database {
  url: string
  /** Human-readable, with no password. */
  description: string
  close(): Promise<void>
}

/**
 * The database the service uses: DATABASE_URL when given, else a private
 * embedded PostgreSQL whose data stays in EMBEDDED_PG_DIR between runs.
 */
export async function openDatabase(config: Config, log: (line: string) => void = () => {}): Promise<Database> {
  let database: Database
  if (config.databaseUrl) {
    database = { url: config.databaseUrl, description: redact(config.databaseUrl), close: async () => {} }
  } else {
    const server = await startEmbeddedPostgres({ dataDir: config.embeddedDataDir, port: config.embeddedPort, log })
    const url = server.url('waitress')
    database = { url, description: `embedded PostgreSQL (${redact(url)}, data in ${config.embeddedDataDir})`, close: () => server.stop() }
  }
  if (config.migrateOnStart) {
    try {
      await migrate(database.url)
    } catch (error) {
      await database.close()
      throw error
    }
  }
  return database
}

export function redact(url: string): string {
  try {
    const parsed = new URL(url)
    if (parsed.password) parsed.password = '***'
    return parsed.toString()
  } catch {
    return '(unparseable DATABASE_URL)'
  }
}
