import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import postgres from 'postgres'
import { startEmbeddedPostgres } from '../../src/db/embedded'
import { migrate } from '../../src/db/migrate'

export interface TestDatabase {
  url: string
  stop(): Promise<void>
}

/**
 * A database that exists only for this test run, migrated to the latest
 * schema: a new database on TEST_DATABASE_URL's server when that is set,
 * else a throwaway embedded server in a temp directory. Never the dev data.
 */
export async function startTestDatabase(): Promise<TestDatabase> {
  const external = process.env.TEST_DATABASE_URL
  if (external) {
    const name = `waitress_test_${process.pid}_${Date.now()}`
    const url = new URL(external)
    url.pathname = `/${name}`
    await migrate(url.toString())
    return {
      url: url.toString(),
      stop: async () => {
        const admin = postgres(external, { max: 1, onnotice: () => {} })
        await admin.unsafe(`drop database if exists "${name}" with (force)`)
        await admin.end()
      },
    }
  }
  const dir = mkdtempSync(join(tmpdir(), 'waitress-test-'))
  const server = await startEmbeddedPostgres({ dataDir: join(dir, 'data'), persistent: false })
  const url = server.url('waitress_test')
  await migrate(url)
  return {
    url,
    stop: async () => {
      await server.stop()
      rmSync(dir, { recursive: true, force: true })
    },
  }
}
