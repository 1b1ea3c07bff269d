import { resolveBinary } from 'dbmate'
import { resolve } from 'node:path'
import { createSql } from './client.ts'
import { primaryUrl } from './failover.ts'

export const MIGRATIONS_DIR = resolve(import.meta.dir, '../../db/migrations')

/**
 * dbmate's own table, named with its schema: with the default search_path
 * ("$user", public) a login named waitress would otherwise find it in the
 * private schema of the same name.
 */
export const MIGRATIONS_TABLE = 'public.schema_migrations'

// Any constant shared by every Waitress process; it only has to be stable.
const MIGRATION_LOCK_KEY = 7_261_127

/**
 * Applies pending migrations with dbmate. Several service processes may
 * start at once against one database: an advisory lock makes them take
 * turns, so the second finds nothing left to apply. A URL with several
 * hosts is narrowed to the primary's: dbmate reads only one.
 */
export async function migrate(url: string): Promise<void> {
  const databaseUrl = await primaryUrl(url)
  await dbmate(databaseUrl, 'create', { ignoreFailure: true })
  const sql = createSql(databaseUrl, { max: 1 })
  try {
    await sql`select pg_advisory_lock(${MIGRATION_LOCK_KEY})`
    await dbmate(databaseUrl, 'up')
  } finally {
    await sql.end({ timeout: 5 })
  }
}

async function dbmate(databaseUrl: string, command: string, options: { ignoreFailure?: boolean } = {}) {
  const child = Bun.spawn(
    [resolveBinary(), '--url', databaseUrl, '--migrations-dir', MIGRATIONS_DIR, '--migrations-table', MIGRATIONS_TABLE, '--no-dump-schema', command],
    { stdout: 'pipe', stderr: 'pipe' },
  )
  const [exitCode, stdout, stderr] = await Promise.all([
    child.exited,
    new Response(child.stdout).text(),
    new Response(child.stderr).text(),
  ])
  if (exitCode !== 0 && !options.ignoreFailure)
    throw new Error(`dbmate ${command} failed (exit ${exitCode}): ${(stderr || stdout).trim()}`)
}
