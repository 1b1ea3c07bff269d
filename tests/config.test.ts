import { describe, expect, it } from 'bun:test'
import { readFileSync } from 'node:fs'
import { resolve } from 'node:path'
import { ConfigError, loadConfig } from '../src/config'

const root = resolve(import.meta.dir, '..')
const read = (path: string) => readFileSync(resolve(root, path), 'utf8')

/** Environment variables a source file reads, as env.NAME or env, 'NAME' / process.env.NAME. */
const variablesReadBy = (source: string) =>
  new Set([...source.matchAll(/env\.([A-Z][A-Z0-9_]+)|env, '([A-Z][A-Z0-9_]+)'/g)].map((m) => m[1] ?? m[2]))

describe('configuration', () => {
  it('defaults to port 8080 on the embedded database with migrations at start', () => {
    expect(loadConfig({})).toEqual({
      port: 8080,
      host: '0.0.0.0',
      databaseUrl: undefined,
      embeddedDataDir: '.data/postgres',
      embeddedPort: 0,
      migrateOnStart: true,
      dbPoolMax: 10,
      dbRole: 'waitress_api',
      appDatabaseUrl: undefined,
      production: false,
      authJwtSecret: undefined,
      rateLimit: 0,
      rateLimitWindowSeconds: 60,
      maxBodyBytes: 65_536,
      purgeIntervalSeconds: 3600,
    })
    expect(loadConfig({ DB_ROLE: '' }).dbRole).toBeUndefined()
  })

  it('refuses values it cannot use, naming the variable', () => {
    expect(() => loadConfig({ PORT: 'eighty' })).toThrow(ConfigError)
    expect(() => loadConfig({ PORT: '70000' })).toThrow('PORT')
    expect(() => loadConfig({ DB_POOL_MAX: '0' })).toThrow('DB_POOL_MAX')
    expect(() => loadConfig({ MIGRATE_ON_START: 'maybe' })).toThrow('MIGRATE_ON_START')
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
