import { afterAll, describe, expect, it } from 'bun:test'
import { createHash, createHmac, pbkdf2Sync } from 'node:crypto'
import { createSql } from '../../src/db/client.ts'
import { dropLogin, ensureAppLogin, randomPassword } from '../../src/db/app-login.ts'
import { appDatabaseUrl, appLogin, testDatabaseUrl, testSql } from '../support/db.ts'
import { cartFor, createProduct, newUserId, refusal, stockOf } from '../support/fixtures.ts'

const sql = testSql()
// The service's login exactly as it connects, but out of its default role
// (role=none: as SET ROLE NONE): whatever this pool can do, a compromised
// service could do.
const app = createSql(appDatabaseUrl(), { max: 2, role: 'none' })
afterAll(() => app.end({ timeout: 5 }))

const [{ owner }] = await sql`select current_user as owner`

describe("the service's login (waitress_app)", () => {
  it('is a plain login whose only right is acting as waitress_api', async () => {
    const [role] = await sql`
      select rolsuper, rolcreaterole, rolcreatedb, rolreplication, rolbypassrls, rolcanlogin, rolinherit,
             array(select b.rolname::text from pg_catalog.pg_auth_members m join pg_catalog.pg_roles b on b.oid = m.roleid
                    where m.member = r.oid) as member_of
        from pg_catalog.pg_roles r where rolname = ${appLogin()}`
    expect(role).toEqual({
      rolsuper: false, rolcreaterole: false, rolcreatedb: false, rolreplication: false, rolbypassrls: false,
      rolcanlogin: true, rolinherit: true, member_of: ['waitress_api'],
    })
    const [me] = await app`select session_user as login, current_user as acting`
    expect(me).toEqual({ login: appLogin(), acting: appLogin() })
  })

  it('cannot write a table directly (42501), whatever the table', async () => {
    const product = await createProduct(sql, { stock: 3 })
    const cart = await cartFor(sql)
    for (const statement of [
      app`update waitress.products set stock = 1000 where id = ${product.id}`,
      app`update waitress.products set price = 1 where id = ${product.id}`,
      app`insert into waitress.orders (buyer_id, seller_id, total_price) values (1, 1, 1)`,
      app`insert into waitress.order_items (order_id, product_id, cart_item_id, quantity, price, weight) values (1, 1, 1, 1, 1, 1)`,
      app`update waitress.cart_items set purchased = true where cart_id = ${cart.id}`,
      app`delete from waitress.carts where id = ${cart.id}`,
      app`insert into waitress.idempotency_keys (user_id, key, action, request_hash) values (1, 'k', 'x', '\\x00')`,
      app`update waitress.rate_limit_windows set hits = 0`,
      app`truncate waitress.products`,
    ])
      expect((await refusal(statement)).code).toBe('42501')
    expect(await stockOf(sql, product.id)).toBe(3)
  })

  it('cannot read what it does not serve: the idempotency records and rate-limit counters', async () => {
    expect((await refusal(app`select * from waitress.idempotency_keys`)).code).toBe('42501')
    expect((await refusal(app`select * from waitress.rate_limit_windows`)).code).toBe('42501')
  })

  it('cannot run DDL (42501), not even a temporary table', async () => {
    for (const statement of [
      'create table public.sneaky (id int)',
      'create temporary table sneaky (id int)',
      'create schema sneaky',
      'alter table waitress.products add column sneaky int',
      'alter table waitress.products drop constraint products_stock_nonnegative',
      'drop table waitress.orders',
      'create function public.sneaky() returns int language sql as $$ select 1 $$',
      'create or replace function api.place_order(p_cart_id bigint, p_item_ids bigint[], p_note text, p_idempotency_key text, p_user_id bigint) returns jsonb language sql as $$ select null::jsonb $$',
      'create function api.sneaky() returns int language sql as $$ select 1 $$',
      'create index sneaky on waitress.products (name)',
      `alter table waitress.products owner to ${appLogin()}`,
      "comment on table waitress.products is 'sneaky'",
      'alter function api.place_order(bigint, bigint[], text, text, bigint) security invoker',
    ]) {
      const outcome = await app.unsafe(statement).then(
        () => 'succeeded',
        (error) => error.code,
      )
      expect({ statement, outcome }).toEqual({ statement, outcome: '42501' })
    }
    // It cannot even reach the tables to grant something on them.
    expect((await refusal(app.unsafe('grant update on waitress.products to public'))).code).toBe('42501')
    const [{ granted }] = await sql`select has_table_privilege('public', 'waitress.products', 'update') as granted`
    expect(granted).toBe(false)
  })

  it('cannot become the owner: SET ROLE, SET SESSION AUTHORIZATION and set_config are refused, RESET ROLE changes nothing', async () => {
    expect((await refusal(app.unsafe(`set role "${owner}"`))).code).toBe('42501')
    expect((await refusal(app.unsafe(`set session authorization "${owner}"`))).code).toBe('42501')
    expect((await refusal(app`select set_config('role', ${owner}, false)`)).code).toBe('42501')
    expect((await app`select current_user as acting`)[0].acting).toBe(appLogin())

    // With SET ROLE waitress_api at connect (as the service's pool does), RESET ROLE only goes back to the login.
    const service = createSql(appDatabaseUrl(), { max: 1, role: 'waitress_api' })
    const session = await service.reserve()
    try {
      const product = await createProduct(sql, { stock: 2 })
      expect((await session`select current_user as acting`)[0].acting).toBe('waitress_api')
      // RESET ROLE goes back to the role set at connect; SET ROLE NONE to the login itself. Neither can write.
      await session`reset role`
      expect((await session`select current_user as acting`)[0].acting).toBe('waitress_api')
      expect((await refusal(session`update waitress.products set stock = 99 where id = ${product.id}`)).code).toBe('42501')
      await session`set role none`
      expect((await session`select current_user as acting`)[0].acting).toBe(appLogin())
      expect((await refusal(session`update waitress.products set stock = 99 where id = ${product.id}`)).code).toBe('42501')
      expect((await refusal(session`insert into waitress.orders (buyer_id, seller_id, total_price) values (1, 1, 1)`)).code).toBe('42501')
      expect((await refusal(session.unsafe(`set role "${owner}"`))).code).toBe('42501')
      expect(await stockOf(sql, product.id)).toBe(2)
    } finally {
      session.release()
      await service.end({ timeout: 5 })
    }
  })

  it('cannot call the functions that write idempotency records directly', async () => {
    expect((await refusal(app`select waitress.idempotency_finish(1, 'k', 201, '{}')`)).code).toBe('42501')
    expect((await refusal(app`select * from waitress.idempotency_begin(1, 'k', 'place_order', '{}')`)).code).toBe('42501')
  })

  it('checks out through the API functions, its only way to change anything', async () => {
    const product = await createProduct(sql, { stock: 3 })
    const [cart] = await app`select (c->>'id')::bigint as id from api.cart_for_user(${newUserId()}) c`
    await app`select api.add_cart_item(${cart.id}, ${product.id}, 2)`
    const [result] = await app`select r->'orders' as data, (r->>'replayed')::boolean as replayed from api.place_order(${cart.id}, null, null, 'k1', null) r`
    expect(result.replayed).toBe(false)
    expect(await stockOf(sql, product.id)).toBe(1)
  })
})

describe('the functions', () => {
  it('all pin search_path, but for the SQL functions kept inlinable, which run as their caller and name every object by schema', async () => {
    const unpinned = await sql`
      select p.oid::regprocedure::text as fn, l.lanname::text as language, p.prosecdef as definer, p.proconfig as config
        from pg_catalog.pg_proc p
        join pg_catalog.pg_language l on l.oid = p.prolang
       where p.pronamespace in ('api'::regnamespace, 'waitress'::regnamespace)
         and not exists (select from unnest(coalesce(p.proconfig, '{}')) c where c like 'search_path=%')
       order by 1`
    // A SET clause stops the planner from inlining a function: these are
    // called on every checkout, and inlined they cost nothing at run time.
    const inlinable = { language: 'sql', definer: false, config: null }
    expect([...unpinned]).toEqual([
      { fn: 'waitress.for_sale(waitress.products)', ...inlinable },
      { fn: 'waitress.limits()', ...inlinable },
      { fn: 'waitress.new_order_id(bigint)', ...inlinable },
      { fn: 'waitress.order_code(bigint,timestamp with time zone)', ...inlinable },
      { fn: 'waitress.still_as_read(waitress.products,integer,bigint,integer,bigint)', ...inlinable },
    ])
  })

  it('that run as their owner (security definer) are owned by waitress_owner, which cannot log in and is no superuser', async () => {
    const owners = await sql`
      select distinct r.rolname::text as owner, r.rolcanlogin as login, r.rolsuper as superuser, r.rolcreaterole as createrole,
             r.rolbypassrls as bypassrls
        from pg_catalog.pg_proc p
        join pg_catalog.pg_roles r on r.oid = p.proowner
       where p.prosecdef`
    expect([...owners]).toEqual([{ owner: 'waitress_owner', login: false, superuser: false, createrole: false, bypassrls: false }])
  })

  it('that the API role may execute are exactly those of schema api; it cannot even see schema waitress', async () => {
    const [{ api, waitress, executable, internal }] = await sql`
      select has_schema_privilege('waitress_api', 'api', 'usage') as api,
             has_schema_privilege('waitress_api', 'waitress', 'usage') as waitress,
             count(*) filter (where p.pronamespace = 'api'::regnamespace and has_function_privilege('waitress_api', p.oid, 'execute'))::int as executable,
             count(*) filter (where p.pronamespace <> 'api'::regnamespace and has_function_privilege('waitress_api', p.oid, 'execute'))::int as internal
        from pg_catalog.pg_proc p
       where p.pronamespace in ('api'::regnamespace, 'waitress'::regnamespace)`
    const [{ total }] = await sql`select count(*)::int as total from pg_catalog.pg_proc where pronamespace = 'api'::regnamespace`
    expect({ api, waitress, executable, internal }).toEqual({ api: true, waitress: false, executable: total, internal: 0 })
    expect((await refusal(app`select waitress.product_json(null)`)).code).toBe('42501')
  })
})

/**
 * Whether `password` is the one PostgreSQL stores for a role: its SCRAM-SHA-256
 * verifier (StoredKey = H(HMAC(PBKDF2(password, salt, iterations), "Client Key")))
 * or its md5 hash, recomputed from the password.
 */
function verifies(stored: string, password: string, login: string): boolean {
  const scram = /^SCRAM-SHA-256\$(\d+):([^$]+)\$([^:]+):/.exec(stored)
  if (scram) {
    const salted = pbkdf2Sync(password, Buffer.from(scram[2], 'base64'), Number(scram[1]), 32, 'sha256')
    const clientKey = createHmac('sha256', salted).update('Client Key').digest()
    return createHash('sha256').update(clientKey).digest('base64') === scram[3]
  }
  if (stored.startsWith('md5')) return stored === `md5${createHash('md5').update(password + login).digest('hex')}`
  throw new Error(`unknown password verifier ${stored.slice(0, 12)}…`)
}

describe('ensureAppLogin', () => {
  it('creates the login, and at the next start replaces its password so the old one stops working', async () => {
    const login = `waitress_app_probe_${process.pid}`
    try {
      const first = await ensureAppLogin(testDatabaseUrl(), randomPassword(), login)
      const second = await ensureAppLogin(testDatabaseUrl(), randomPassword(), login)
      // What the server keeps is the second password's verifier, not the first's.
      const [{ stored }] = await sql<{ stored: string }[]>`select rolpassword as stored from pg_catalog.pg_authid where rolname = ${login}`
      const passwordOf = (url: string) => decodeURIComponent(new URL(url).password)
      expect({ first: verifies(stored, passwordOf(first), login), second: verifies(stored, passwordOf(second), login) }).toEqual({ first: false, second: true })

      // And it checks it: a server that trusts TCP connections could not show that, so the suite refuses one.
      const trusted = await sql<{ line_number: number }[]>`
        select line_number from pg_catalog.pg_hba_file_rules where auth_method = 'trust' and type like 'host%'`
      if (trusted.length > 0)
        throw new Error(
          `TEST_DATABASE_URL's server trusts TCP connections without a password (pg_hba.conf lines ${trusted.map((r) => r.line_number).join(', ')}), ` +
            'so it cannot show a replaced password being refused: use one with password authentication (.ci/run sets up scram-sha-256)',
        )
      const stale = createSql(first, { max: 1 })
      const fresh = createSql(second, { max: 1 })
      try {
        expect((await refusal(stale`select 1`)).code).toBe('28P01')
        expect((await fresh`select current_user as me`)[0].me).toBe(login)
        expect((await refusal(fresh`update waitress.products set stock = 0`)).code).toBe('42501')
      } finally {
        await Promise.all([stale.end({ timeout: 5 }), fresh.end({ timeout: 5 })])
      }
    } finally {
      await dropLogin(testDatabaseUrl(), login)
    }
  })
})
