import { describe, expect, it } from 'bun:test'
import { readFileSync } from 'node:fs'
import { resolve } from 'node:path'
import { ConfigError, loadConfig } from '../../src/config.ts'

const root = resolve(import.meta.dir, '../..')
const read = (path: string) => readFileSync(resolve(root, path), 'utf8')

/** Environment variables a source file reads, as env.NAME or env, 'NAME' / process.env.NAME. */
const variablesReadBy = (source: string) =>
  new Set([...source.matchAll(/env\.([A-Z][A-Z0-9_]+)|env, '([A-Z][A-Z0-9_]+)'/g)].map((m) => m[1] ?? m[2]))

describe('configuration', () => {
  it('defaults to port 8080 on the embedded database with migrations at start', () => {
    expect(loadConfig({})).toEqual({
      port: 8080,
      host: '0.0.0.0',
      reusePort: false,
      databaseUrl: undefined,
      embeddedDataDir: '.data/postgres',
      embeddedPort: 0,
      migrateOnStart: true,
      dbPoolMax: 4,
      dbPrepare: true,
      dbRole: 'waitress_api',
      dbApplicationName: 'waitress',
      dbStatementTimeoutMs: 5000,
      dbLockTimeoutMs: 2000,
      dbIdleInTransactionTimeoutMs: 10000,
      dbQueueMax: 10000,
      dbQueueTimeoutMs: 5000,
      checkoutMaxBatch: 500,
      checkoutCallsInFlight: 2,
      shutdownTimeoutMs: 10000,
      logLevel: 'info',
      logFormat: undefined,
      orderPaymentTtlSeconds: 1800,
      expireOrdersEverySeconds: 60,
      appDatabaseUrl: undefined,
      production: false,
      authJwtSecret: undefined,
      rateLimit: 0,
      rateLimitWindowSeconds: 60,
      rateLimitDelayMs: 1000,
      maxBodyBytes: 65_536,
      purgeIntervalSeconds: 3600,
      metricsToken: undefined,
    })
    expect(loadConfig({ DB_ROLE: '' }).dbRole).toBeUndefined()
    expect(loadConfig({ DB_APPLICATION_NAME: 'waitress-api-2' }).dbApplicationName).toBe('waitress-api-2')
  })

  it('keeps one checkout call in flight per process when processes share a port, unless told otherwise', () => {
    expect(loadConfig({ REUSE_PORT: 'true' })).toMatchObject({ reusePort: true, checkoutCallsInFlight: 1 })
    expect(loadConfig({ REUSE_PORT: 'true', CHECKOUT_CALLS_IN_FLIGHT: '3' }).checkoutCallsInFlight).toBe(3)
    expect(loadConfig({ REUSE_PORT: 'false' }).checkoutCallsInFlight).toBe(2)
  })

  it('refuses values it cannot use, naming the variable', () => {
    expect(() => loadConfig({ PORT: 'eighty' })).toThrow(ConfigError)
    expect(() => loadConfig({ PORT: '70000' })).toThrow('PORT')
    expect(() => loadConfig({ DB_POOL_MAX: '0' })).toThrow('DB_POOL_MAX')
    expect(() => loadConfig({ MIGRATE_ON_START: 'maybe' })).toThrow('MIGRATE_ON_START')
    expect(() => loadConfig({ ORDER_PAYMENT_TTL: 'half an hour' })).toThrow('ORDER_PAYMENT_TTL')
    expect(() => loadConfig({ LOG_LEVEL: 'loud' })).toThrow('LOG_LEVEL')
    expect(loadConfig({ LOG_FORMAT: 'json' }).logFormat).toBe('json')
    expect(loadConfig({ DB_LOCK_TIMEOUT: '250ms', DB_STATEMENT_TIMEOUT: '3' })).toMatchObject({ dbLockTimeoutMs: 250, dbStatementTimeoutMs: 3000 })
    expect(loadConfig({ ORDER_PAYMENT_TTL: '2h', EXPIRE_ORDERS_EVERY: '0' })).toMatchObject({
      orderPaymentTtlSeconds: 7200,
      expireOrdersEverySeconds: 0,
    })
    expect(loadConfig({ MIGRATE_ON_START: 'off', DATABASE_URL: 'postgres://x/y' })).toMatchObject({ migrateOnStart: false, databaseUrl: 'postgres://x/y' })
  })

  it('documents in .env.example every variable the service and the tests read', () => {
    const documented = new Set([...read('.env.example').matchAll(/^#?\s*([A-Z][A-Z0-9_]+)=/gm)].map((m) => m[1]))
    const read_ = new Set([...variablesReadBy(read('src/config.ts')), ...variablesReadBy(read('tests/support/database.ts'))])
    expect(read_.size).toBeGreaterThan(5)
    for (const name of read_) expect({ name, documented: documented.has(name) }).toEqual({ name, documented: true })
  })

  it('passes docker-compose only variables the service reads', () => {
    const compose = read('docker-compose.yml')
    const apiSection = compose.slice(compose.indexOf('  api:'))
    const passed = [...apiSection.matchAll(/^\s{6}([A-Z][A-Z0-9_]+):/gm)].map((m) => m[1])
    const known = variablesReadBy(read('src/config.ts'))
    expect(passed.length).toBeGreaterThan(0)
    for (const name of passed) expect({ name, known: known.has(name) }).toEqual({ name, known: true })
  })
})
