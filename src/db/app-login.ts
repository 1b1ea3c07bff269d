import { randomBytes } from 'node:crypto'
import { createSql } from './client.ts'

/** The login the service connects as: it can only act as waitress_api. */
export const APP_LOGIN = 'waitress_app'

/** A password for a login that only this process needs to know. */
export const randomPassword = () => randomBytes(24).toString('base64url')

/**
 * Creates the service's login (or resets it) with `password`, as the owner
 * that ran the migrations: LOGIN and nothing else (no superuser, no
 * CREATEROLE, …), INHERIT, and a member of waitress_api only, so every right
 * it has comes from waitress_api: execute the API functions, read the tables.
 * It is not a member of the owner, so no SET ROLE or RESET ROLE leads there.
 * Returns ownerUrl with this login's name and password. docs/operations.md
 * ("Least privilege") has the same statements for an operator.
 */
export async function ensureAppLogin(ownerUrl: string, password: string, login = APP_LOGIN): Promise<string> {
  const sql = createSql(ownerUrl, { max: 1 })
  try {
    const [{ exists }] = await sql<{ exists: boolean }[]>`
      select exists (select from pg_catalog.pg_roles where rolname = ${login}) as "exists"`
    const [{ statement }] = await sql<{ statement: string }[]>`
      select format('%s role %I with login nosuperuser nocreatedb nocreaterole noreplication nobypassrls inherit password %L',
                    ${exists ? 'alter' : 'create'}::text, ${login}::text, ${password}::text) as statement`
    await sql.unsafe(statement)
    const [{ grant }] = await sql<{ grant: string }[]>`select format('grant waitress_api to %I', ${login}::text) as "grant"`
    await sql.unsafe(grant)
  } finally {
    await sql.end({ timeout: 5 })
  }
  const url = new URL(ownerUrl)
  url.username = login
  url.password = password
  return url.toString()
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
