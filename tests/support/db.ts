import { createSql, type Sql, type SqlOptions } from '../../src/db/client.ts'

let shared: Sql | undefined
let api: Sql | undefined

export function testDatabaseUrl(): string {
  const url = process.env.WAITRESS_TEST_DATABASE_URL
  if (!url) throw new Error('tests/setup.ts did not run: start tests with `bun test` (bunfig.toml preloads it)')
  return url
}

/**
 * Pools of this test process that the invariant checker may end: PostgreSQL
 * publishes a session's statistics (its deadlock count among them) up to
 * 10 s late, but always when the session ends, so before reading the
 * deadlock counter the checker ends every session that took part (see
 * publishStatistics). Each is a stable handle over a pool that is replaced
 * by a fresh one, lazily connected, when ended that way.
 */
const recyclable = new Set<{ recycle(): Promise<void>; end(): Promise<void> }>()

/** A pool (createSql) whose sessions publishStatistics() may end; it reconnects by itself afterwards. */
export function recyclablePool(url: string, options: SqlOptions = {}): Sql {
  let current = createSql(url, options)
  const entry = {
    async recycle() {
      const old = current
      current = createSql(url, options)
      await old.end({ timeout: 5 })
    },
    async end() {
      recyclable.delete(entry)
      await current.end({ timeout: 5 })
    },
  }
  recyclable.add(entry)
  return new Proxy(function () {} as unknown as Sql, {
    apply: (_, thisArg, args) => Reflect.apply(current as unknown as (...a: unknown[]) => unknown, thisArg, args),
    get: (_, property) => {
      if (property === 'end') return async (_options?: unknown) => entry.end()
      const value = (current as unknown as Record<PropertyKey, unknown>)[property]
      return typeof value === 'function' ? value.bind(current) : value
    },
  })
}

/**
 * Ends every session of this process's recyclable pools (each pool carries
 * on with new ones), so that PostgreSQL publishes what they counted. The
 * checker calls it around every run (tests/setup.ts makes it its default).
 */
export async function publishStatistics(): Promise<void> {
  await Promise.all([...recyclable].map((pool) => pool.recycle()))
}

/** The owner's pool every test file shares, for fixtures and checks; tests/setup.ts closes it. */
export function testSql(): Sql {
  shared ??= recyclablePool(testDatabaseUrl(), { max: 20 })
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
  api ??= recyclablePool(appDatabaseUrl(), { max: 10, role: 'waitress_api' })
  return api
}

export async function closeTestSql() {
  await Promise.all([...recyclable].map((pool) => pool.end()))
  shared = api = undefined
}
