import { afterAll, describe, expect, it } from 'bun:test'
import { mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join, resolve } from 'node:path'
import postgres from 'postgres'
import { ensureAppLogin, randomPassword } from '../../src/db/app-login.ts'
import { startEmbeddedPostgres, type EmbeddedServer } from '../../src/db/embedded.ts'
import { migrate } from '../../src/db/migrate.ts'
import { appLogin, testSql } from '../support/db.ts'

/**
 * The same privileges whichever way the database was set up: the embedded
 * server (the test database itself), docker compose (db/docker-init run by the
 * image's superuser, then migrations as that superuser), and DATABASE_URL on
 * a server where the migrating login is no superuser, only CREATEROLE and the
 * database's owner (a managed PostgreSQL). Each of the last two gets a
 * throwaway cluster of its own, because roles belong to the whole cluster.
 */
const ROOT = resolve(import.meta.dir, '../..')
const cleanups: (() => Promise<void>)[] = []
afterAll(async () => {
  for (const cleanup of cleanups.reverse()) await cleanup().catch(() => {})
})

async function throwawayCluster(): Promise<EmbeddedServer> {
  const dir = mkdtempSync(join(tmpdir(), 'waitress-setup-'))
  const server = await startEmbeddedPostgres({ dataDir: join(dir, 'data'), persistent: false })
  cleanups.push(async () => {
    await server.stop()
    rmSync(dir, { recursive: true, force: true })
  })
  return server
}

const withLogin = (url: string, user: string, password: string, database: string) => {
  const parsed = new URL(url)
  parsed.username = user
  parsed.password = password
  parsed.pathname = `/${database}`
  return parsed.toString()
}

async function using<T>(url: string, run: (sql: postgres.Sql) => Promise<T>): Promise<T> {
  const sql = postgres(url, { max: 1, onnotice: () => {} })
  try {
    return await run(sql)
  } finally {
    await sql.end({ timeout: 5 })
  }
}

interface Privileges {
  /** Owners of the SECURITY DEFINER functions, with what each owner may do. */
  definerOwners: { owner: string; login: boolean; superuser: boolean; createrole: boolean; bypassrls: boolean }[]
  /** Owners of everything in schemas api and waitress: the schemas, tables, sequences, types and functions. */
  objectOwners: string[]
  /** Functions waitress_api may execute, by schema. */
  executableByApi: { api: number; other: number; apiTotal: number }
  /** The roles the service's login is a member of. */
  appLoginMemberOf: string[]
}

async function privileges(sql: postgres.Sql, login: string): Promise<Privileges> {
  const definerOwners = await sql`
    select distinct r.rolname::text as owner, r.rolcanlogin as login, r.rolsuper as superuser,
           r.rolcreaterole as createrole, r.rolbypassrls as bypassrls
      from pg_catalog.pg_proc p join pg_catalog.pg_roles r on r.oid = p.proowner
     where p.prosecdef and p.pronamespace in ('api'::regnamespace, 'waitress'::regnamespace)`
  const objectOwners = await sql`
    select distinct pg_catalog.pg_get_userbyid(owner)::text as owner from (
      select nspowner as owner from pg_catalog.pg_namespace where nspname in ('api', 'waitress')
      union all select relowner from pg_catalog.pg_class where relnamespace in ('api'::regnamespace, 'waitress'::regnamespace)
      union all select typowner from pg_catalog.pg_type where typnamespace in ('api'::regnamespace, 'waitress'::regnamespace)
      union all select proowner from pg_catalog.pg_proc where pronamespace in ('api'::regnamespace, 'waitress'::regnamespace)
    ) o`
  const [executableByApi] = await sql`
    select count(*) filter (where pronamespace = 'api'::regnamespace and has_function_privilege('waitress_api', oid, 'execute'))::int as api,
           count(*) filter (where pronamespace <> 'api'::regnamespace and has_function_privilege('waitress_api', oid, 'execute'))::int as other,
           count(*) filter (where pronamespace = 'api'::regnamespace)::int as "apiTotal"
      from pg_catalog.pg_proc where pronamespace in ('api'::regnamespace, 'waitress'::regnamespace)`
  const [{ member_of }] = await sql`
    select coalesce(array_agg(b.rolname::text order by b.rolname), '{}') as member_of
      from pg_catalog.pg_auth_members m
      join pg_catalog.pg_roles b on b.oid = m.roleid
      join pg_catalog.pg_roles r on r.oid = m.member
     where r.rolname = ${login}`
  return {
    definerOwners: [...definerOwners] as Privileges['definerOwners'],
    objectOwners: objectOwners.map((r) => r.owner as string),
    executableByApi: executableByApi as Privileges['executableByApi'],
    appLoginMemberOf: member_of,
  }
}

function expectLeastPrivilege(facts: Privileges) {
  expect(facts.definerOwners).toEqual([{ owner: 'waitress_owner', login: false, superuser: false, createrole: false, bypassrls: false }])
  expect(facts.objectOwners).toEqual(['waitress_owner'])
  expect(facts.executableByApi.api).toBe(facts.executableByApi.apiTotal)
  expect(facts.executableByApi.other).toBe(0)
  expect(facts.appLoginMemberOf).toEqual(['waitress_api'])
}

describe('least privilege, in every setup', () => {
  it('embedded (the test database): definer functions and every object owned by waitress_owner', async () => {
    expectLeastPrivilege(await privileges(testSql() as unknown as postgres.Sql, appLogin()))
  })

  it('docker compose: db/docker-init as the superuser POSTGRES_USER, then the migrations as that superuser', async () => {
    const compose = readFileSync(join(ROOT, 'docker-compose.yml'), 'utf8')
    const setting = (name: string) => new RegExp(`^\\s+${name}: "?([^"\\s]+)"?$`, 'm').exec(compose)?.[1] ?? ''
    const [user, password, database] = ['POSTGRES_USER', 'POSTGRES_PASSWORD', 'POSTGRES_DB'].map(setting)
    const appUrl = new URL(setting('APP_DATABASE_URL'))
    expect({ user, password, database, app: appUrl.username }).toEqual({ user: expect.any(String), password: expect.any(String), database: expect.any(String), app: 'waitress_app' })
    const server = await throwawayCluster()
    // What the postgres image does with POSTGRES_USER, POSTGRES_PASSWORD and POSTGRES_DB.
    await using(server.url('postgres'), async (sql) => {
      await sql.unsafe(`create role "${user}" with login superuser password '${password}'`)
      await sql.unsafe(`create database "${database}" owner "${user}"`)
    })
    const url = withLogin(server.url('postgres'), user, password, database)
    const initScripts = readdirSync(join(ROOT, 'db/docker-init')).filter((file) => file.endsWith('.sql')).sort()
    expect(initScripts.length).toBeGreaterThan(0)
    await using(url, async (sql) => {
      for (const file of initScripts) await sql.unsafe(readFileSync(join(ROOT, 'db/docker-init', file), 'utf8'))
    })
    await migrate(url)
    // The service's login of compose's APP_DATABASE_URL.
    await using(withLogin(url, appUrl.username, decodeURIComponent(appUrl.password), database), async (app) => {
      expect((await app`select current_user as me`)[0].me).toBe('waitress_app')
      const refused = await app`update waitress.products set stock = 0`.then(() => 'went through', (error) => error.code)
      expect(refused).toBe('42501')
    })
    expectLeastPrivilege(await using(url, (sql) => privileges(sql, 'waitress_app')))
  }, 120_000)

  it('DATABASE_URL whose login is no superuser, only CREATEROLE and the owner of the database', async () => {
    const server = await throwawayCluster()
    await using(server.url('postgres'), async (sql) => {
      await sql`create role deployer with login createrole nosuperuser password 'deployer'`
      await sql`create database shop owner deployer`
    })
    const url = withLogin(server.url('postgres'), 'deployer', 'deployer', 'shop')
    await migrate(url)
    await ensureAppLogin(url, randomPassword())
    expectLeastPrivilege(await using(url, (sql) => privileges(sql, 'waitress_app')))
  }, 120_000)
})

describe('what waitress_api may execute', () => {
  it('is exactly the api functions the service calls: every one is called somewhere in src/, and nothing else', async () => {
    const sources = (dir: string): string[] =>
      readdirSync(dir, { withFileTypes: true }).flatMap((entry) =>
        entry.isDirectory() ? sources(join(dir, entry.name)) : entry.name.endsWith('.ts') ? [readFileSync(join(dir, entry.name), 'utf8')] : [],
      )
    const called = new Set(sources(join(ROOT, 'src')).flatMap((text) => [...text.matchAll(/\bapi\.([a-z_]+)\(/g)].map((m) => m[1])))
    const executable = await testSql()`
      select distinct p.proname::text as name from pg_catalog.pg_proc p
       where has_function_privilege('waitress_api', p.oid, 'execute')
         and p.pronamespace in ('api'::regnamespace, 'waitress'::regnamespace)`
    expect(executable.map((r) => r.name).sort()).toEqual([...called].sort())
  })
})
