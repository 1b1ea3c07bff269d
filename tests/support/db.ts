import { createSql, type Sql } from '../../src/db/client'

let shared: Sql | undefined

export function testDatabaseUrl(): string {
  const url = process.env.WAITRESS_TEST_DATABASE_URL
  if (!url) throw new Error('tests/setup.ts did not run: start tests with `bun test` (bunfig.toml preloads it)')
  return url
}

/** The pool every test file shares; tests/setup.ts closes it. */
export function testSql(): Sql {
  shared ??= createSql(testDatabaseUrl(), { max: 20 })
  return shared
}

export async function closeTestSql() {
  await shared?.end({ timeout: 5 })
  shared = undefined
}
