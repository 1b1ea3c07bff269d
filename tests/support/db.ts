import { createSql, type Sql } from '../../src/db/client.ts'

let shared: Sql | undefined
let api: Sql | undefined

export function testDatabaseUrl(): string {
  const url = process.env.WAITRESS_TEST_DATABASE_URL
  if (!url) throw new Error('tests/setup.ts did not run: start tests with `bun test` (bunfig.toml preloads it)')
  return url
}

/** The owner's pool every test file shares, for fixtures and checks; tests/setup.ts closes it. */
export function testSql(): Sql {
  shared ??= createSql(testDatabaseUrl(), { max: 20 })
  return shared
}

/** The service's own login (waitress_app on the embedded server), as tests/setup.ts made it. */
export function appDatabaseUrl(): string {
  const url = process.env.WAITRESS_TEST_APP_DATABASE_URL
  if (!url) throw new Error('tests/setup.ts did not run: start tests with `bun test` (bunfig.toml preloads it)')
  return url
}

export const appLogin = () => process.env.WAITRESS_TEST_APP_LOGIN!

/** A pool that connects as the service does: its own login, acting as the waitress_api role. */
export function apiSql(): Sql {
  api ??= createSql(appDatabaseUrl(), { max: 10, role: 'waitress_api' })
  return api
}

export async function closeTestSql() {
  await Promise.all([shared?.end({ timeout: 5 }), api?.end({ timeout: 5 })])
  shared = api = undefined
}
