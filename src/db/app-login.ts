import { createSql, type Sql } from './client.ts'

/** The login the service connects as: it can only act as waitress_api. */
export const APP_LOGIN = 'waitress_app'

/**
 * The login the service makes for itself when it is given DATABASE_URL
 * alone (an administrator, as in development): never APP_LOGIN, which an
 * operator may have made with a password of their own.
 */
export const DERIVED_LOGIN = 'waitress_app_dev'

const base64url = (bytes: Uint8Array) => btoa(String.fromCharCode(...bytes)).replace(/\+/g, '-').replace(/\//g, '_').replace(/=+$/, '')
const base64 = (bytes: Uint8Array) => btoa(String.fromCharCode(...bytes))
const utf8 = (text: string): Uint8Array<ArrayBuffer> => new TextEncoder().encode(text) as Uint8Array<ArrayBuffer>

/** A password for a login that only this process needs to know. */
export const randomPassword = () => base64url(crypto.getRandomValues(new Uint8Array(24)))

async function hmac(key: Uint8Array<ArrayBuffer>, message: Uint8Array<ArrayBuffer>): Promise<Uint8Array<ArrayBuffer>> {
  const cryptoKey = await crypto.subtle.importKey('raw', key, { name: 'HMAC', hash: 'SHA-256' }, false, ['sign'])
  return new Uint8Array(await crypto.subtle.sign('HMAC', cryptoKey, message))
}

/**
 * The derived login's password: HMAC-SHA256 of the login's name under the
 * administrator's password. Every process given the same DATABASE_URL
 * computes the same one, with no coordination: several processes behind a
 * pooler never lock each other out, as a fresh random password at every
 * start would. Not a secret when DATABASE_URL has no password (trust
 * authentication, development only): the service says so at start.
 */
export async function derivePassword(adminPassword: string, login: string): Promise<string> {
  // WebCrypto refuses a zero-length HMAC key; HMAC pads every key with zero
  // bytes to its block size, so one zero byte is the empty key (RFC 2104).
  const key = adminPassword === '' ? new Uint8Array(1) : utf8(adminPassword)
  return base64url(await hmac(key, utf8(`waitress-login:${login}`)))
}

/**
 * The SCRAM-SHA-256 secret PostgreSQL stores for `password`, with a salt
 * derived from the password itself: setting it again changes nothing. (ALTER
 * ROLE … PASSWORD 'plain' draws a new salt each time; while PgBouncer logs in
 * with the secret it has just fetched, another process's ALTER would change
 * it under it.) RFC 5802 / 7677, as PostgreSQL's pg_fe_scram_build_secret.
 */
export async function scramSecret(password: string, iterations = 4096): Promise<string> {
  const salt = (await hmac(utf8(password), utf8('waitress-scram-salt'))).slice(0, 16)
  const key = await crypto.subtle.importKey('raw', utf8(password), 'PBKDF2', false, ['deriveBits'])
  const salted = new Uint8Array(await crypto.subtle.deriveBits({ name: 'PBKDF2', hash: 'SHA-256', salt, iterations }, key, 256))
  const clientKey = await hmac(salted, utf8('Client Key'))
  const storedKey = new Uint8Array(await crypto.subtle.digest('SHA-256', clientKey))
  const serverKey = await hmac(salted, utf8('Server Key'))
  return `SCRAM-SHA-256$${iterations}:${base64(salt)}$${base64(storedKey)}:${base64(serverKey)}`
}

/** What every session of the service's login starts with: role defaults, never startup parameters. */
export interface SessionDefaults {
  /** The role requests run as (waitress_api); undefined: the login's own privileges. */
  role: string | undefined
  statementTimeoutMs: number
  lockTimeoutMs: number
  idleInTransactionTimeoutMs: number
}

/** The role defaults as PostgreSQL stores them (pg_db_role_setting): name=value. */
function defaultsWanted(defaults: SessionDefaults): Map<string, string | undefined> {
  return new Map<string, string | undefined>([
    ['role', defaults.role],
    ['statement_timeout', `${defaults.statementTimeoutMs}ms`],
    ['lock_timeout', `${defaults.lockTimeoutMs}ms`],
    ['idle_in_transaction_session_timeout', `${defaults.idleInTransactionTimeoutMs}ms`],
  ])
}

// Any constant shared by every Waitress process; serialises start-ups that change a login's defaults.
const LOGIN_LOCK_KEY = 7_261_128

/**
 * Makes `login`'s sessions in this database start as `defaults` say:
 * `ALTER ROLE login IN DATABASE db SET role = …, statement_timeout = …`, so
 * they hold through a transaction pooler, which refuses those as startup
 * parameters and keeps no session state. Only what differs is changed, in
 * one transaction, under a lock (several processes start at once). `sql` is
 * the administrator's connection, or the login's own (`self`): a login may
 * set its own defaults once it has left its default role (SET LOCAL ROLE
 * NONE). New sessions see the change; a pooler's open server connections
 * keep the old values until they are renewed (PgBouncer: RECONNECT, or
 * server_lifetime).
 */
export async function applySessionDefaults(sql: Sql, login: string | 'self', defaults: SessionDefaults): Promise<string[]> {
  return sql.begin(async (tx) => {
    if (login === 'self') await tx`set local role none`
    await tx`select pg_catalog.pg_advisory_xact_lock(${LOGIN_LOCK_KEY})`
    const name = login === 'self' ? (await tx<{ name: string }[]>`select session_user::text as name`)[0].name : login
    const current = new Map(
      (
        await tx<{ setting: string }[]>`
          select unnest(s.setconfig) as setting
            from pg_catalog.pg_db_role_setting s
            join pg_catalog.pg_roles r on r.oid = s.setrole
            join pg_catalog.pg_database d on d.oid = s.setdatabase
           where r.rolname = ${name} and d.datname = current_database()`
      ).map(({ setting }) => [setting.slice(0, setting.indexOf('=')), setting.slice(setting.indexOf('=') + 1)]),
    )
    const changed: string[] = []
    for (const [setting, value] of defaultsWanted(defaults)) {
      if (current.get(setting) === value) continue
      if (value === undefined && !current.has(setting)) continue
      const [{ statement }] =
        value === undefined
          ? await tx<{ statement: string }[]>`
              select format('alter role %I in database %I reset %I', ${name}::text, current_database(), ${setting}::text) as statement`
          : await tx<{ statement: string }[]>`
              select format('alter role %I in database %I set %I = %L', ${name}::text, current_database(), ${setting}::text, ${value}::text) as statement`
      await tx.unsafe(statement)
      changed.push(value === undefined ? `${setting} reset` : `${setting}=${value}`)
    }
    // This very session goes back to the pool (a pooler's server connection
    // outlives the client): give it now what the defaults give new sessions.
    // A plain (session) set_config after SET LOCAL ROLE NONE outlives the commit.
    if (login === 'self' && changed.length)
      for (const [setting, value] of defaultsWanted(defaults)) await tx`select pg_catalog.set_config(${setting}, ${value ?? 'none'}, false)`
    return changed
  })
}

/**
 * Creates the service's login (or resets it) with `password`, as the owner
 * that ran the migrations: LOGIN and nothing else (no superuser, no
 * CREATEROLE, …), INHERIT, and a member of waitress_api only, so every right
 * it has comes from waitress_api: execute the API functions, read the tables.
 * It is not a member of the owner, so no SET ROLE or RESET ROLE leads there.
 * With `defaults`, its sessions in this database also start as the API role
 * with the service's limits (applySessionDefaults). `password` may be a
 * SCRAM secret (scramSecret). Returns ownerUrl with this login's name and
 * `urlPassword` (default: password). docs/operations.md ("Least privilege")
 * has the same statements for an operator.
 */
export async function ensureAppLogin(
  ownerUrl: string,
  password: string,
  login = APP_LOGIN,
  options: { defaults?: SessionDefaults; urlPassword?: string; prepare?: boolean; setPassword?: boolean } = {},
): Promise<string> {
  const sql = createSql(ownerUrl, { max: 1, prepare: options.prepare })
  try {
    await sql.begin(async (tx) => {
      await tx`select pg_catalog.pg_advisory_xact_lock(${LOGIN_LOCK_KEY})`
      const [{ exists }] = await tx<{ exists: boolean }[]>`
        select exists (select from pg_catalog.pg_roles where rolname = ${login}) as "exists"`
      if (!exists || options.setPassword !== false) {
        const [{ statement }] = await tx<{ statement: string }[]>`
          select format('%s role %I with login nosuperuser nocreatedb nocreaterole noreplication nobypassrls inherit password %L',
                        ${exists ? 'alter' : 'create'}::text, ${login}::text, ${password}::text) as statement`
        await tx.unsafe(statement)
      }
      const [{ grant }] = await tx<{ grant: string }[]>`select format('grant waitress_api to %I', ${login}::text) as "grant"`
      await tx.unsafe(grant)
    })
    if (options.defaults) await applySessionDefaults(sql, login, options.defaults)
  } finally {
    await sql.end({ timeout: 5 })
  }
  const url = new URL(ownerUrl)
  url.username = login
  url.password = options.urlPassword ?? password
  return url.toString()
}

/**
 * The shape "DATABASE_URL alone": the service makes DERIVED_LOGIN for itself
 * with the administrator's connection (its password derived from the
 * administrator's, its SCRAM secret stable, so setting it again changes
 * nothing), and serves as it, so requests act only as the API role even
 * through a transaction pooler, with no SET ROLE on any request. Nothing
 * logs in as it before its defaults are set: a pooler would keep that
 * session, without them, for the requests. Returns the login's URL (same
 * host, port and database).
 */
export async function ensureDerivedLogin(adminUrl: string, options: { defaults: SessionDefaults; prepare?: boolean }): Promise<string> {
  const password = await derivePassword(decodeURIComponent(new URL(adminUrl).password), DERIVED_LOGIN)
  return ensureAppLogin(adminUrl, await scramSecret(password), DERIVED_LOGIN, {
    defaults: options.defaults,
    urlPassword: password,
    prepare: options.prepare,
  })
}

/** Drops a login made for one test run (only ever a test's own). */
export async function dropLogin(ownerUrl: string, login: string): Promise<void> {
  const sql = createSql(ownerUrl, { max: 1 })
  try {
    const [{ statement }] = await sql<{ statement: string }[]>`select format('drop role if exists %I', ${login}::text) as statement`
    await sql.unsafe(statement)
  } finally {
    await sql.end({ timeout: 5 })
  }
}
