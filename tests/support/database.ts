import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import postgres from 'postgres'
import { startEmbeddedPostgres } from '../../src/db/embedded.ts'
import { migrate } from '../../src/db/migrate.ts'
import { APP_LOGIN, dropLogin, ensureAppLogin, randomPassword } from '../../src/db/app-login.ts'

export interface TestDatabase {
  url: string
  /** The same database as the service's own login: APP_LOGIN on the embedded server. */
  appUrl: string
  appLogin: string
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
    // Roles belong to the whole server, which other runs may share: this run's login is its own.
    const appLogin = `${APP_LOGIN}_test_${process.pid}`
    const appUrl = await ensureAppLogin(url.toString(), randomPassword(), appLogin)
    return {
      url: url.toString(),
      appUrl,
      appLogin,
      stop: async () => {
        const admin = postgres(external, { max: 1, onnotice: () => {} })
        await admin.unsafe(`drop database if exists "${name}" with (force)`)
        await admin.end()
        await dropLogin(external, appLogin)
      },
    }
  }
  const dir = mkdtempSync(join(tmpdir(), 'waitress-test-'))
  const server = await startEmbeddedPostgres({ dataDir: join(dir, 'data'), persistent: false })
  const url = server.url('waitress_test')
  await migrate(url)
  return {
    url,
    appUrl: await ensureAppLogin(url, randomPassword()),
    appLogin: APP_LOGIN,
    stop: async () => {
      await server.stop()
      rmSync(dir, { recursive: true, force: true })
    },
  }
}
