/**
 * Hostile input, generated: every route gets wrong types, missing and unknown
 * fields, out-of-range numbers, SQL and unicode in strings, bodies that are
 * empty, oversized, malformed or not JSON at all, and path ids that are not
 * numbers. The verdict for every generated request: a 4xx in the error
 * envelope, never a 5xx, and not one database row changed.
 */
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'bun:test'
import fc from 'fast-check'
import { createApp } from '../../src/app.ts'
import { apiSql, testSql } from '../support/db.ts'
import { addItem, cartFor, createProduct } from '../support/fixtures.ts'
import { expectErrorEnvelope, req, requester, type Reply } from '../support/http.ts'
import { TEST_SECRET, tokenFor } from '../support/auth.ts'

const sql = testSql()
const RUNS = 300
let refused = 0
let storedVerbatim = 0

/** Everything a refused request must leave as it was. */
async function snapshot() {
  const [row] = await sql`
    select (select count(*) from waitress.products)::int as products,
           (select coalesce(sum(stock), 0) from waitress.products)::bigint as stock,
           (select coalesce(sum(price), 0) from waitress.products)::bigint as prices,
           (select count(*) from waitress.products where not active)::int as inactive,
           (select count(*) from waitress.carts)::int as carts,
           (select count(*) from waitress.cart_items)::int as cart_items,
           (select coalesce(sum(quantity), 0) from waitress.cart_items)::bigint as quantities,
           (select count(*) from waitress.cart_items where purchased)::int as purchased,
           (select count(*) from waitress.orders)::int as orders,
           (select count(*) from waitress.orders where state <> 'pending')::int as not_pending,
           (select coalesce(sum(total_price), 0) from waitress.orders)::bigint as totals,
           (select count(*) from waitress.order_items)::int as order_items,
           (select count(*) from waitress.idempotency_keys)::int as idempotency_keys`
  return row
}

let before: Awaited<ReturnType<typeof snapshot>>

/** The verdict on one generated request. */
async function expectRefused(reply: Reply, context: unknown) {
  refused++
  if (reply.status < 400 || reply.status >= 500)
    throw new Error(`expected a 4xx, got ${reply.status} ${JSON.stringify(reply.body)} for ${JSON.stringify(context)}`)
  expectErrorEnvelope(reply, reply.status)
  expect(await snapshot()).toEqual(before)
}

// A world in which every valid request would change something.
let productId: number
let cartId: number
let buyerId: number
let lineId: number
let orderId: number

beforeAll(async () => {
  const product = await createProduct(sql, { name: 'Target', seller_id: 8001, stock: 50 })
  const cart = await cartFor(sql)
  productId = product.id
  cartId = cart.id
  buyerId = cart.user_id
  lineId = await addItem(sql, cart.id, product.id, 1)
  const other = await cartFor(sql)
  await addItem(sql, other.id, product.id, 1)
  const [order] = await sql`select (o->>'id')::bigint as id from jsonb_array_elements(api.place_order(${other.id})->'orders') o`
  orderId = order.id
})

// Each test starts from the database as it is; within a test, no refused request may change it.
beforeEach(async () => {
  before = await snapshot()
})

afterAll(() => {
  console.log(
    `hostile input suite: ${refused} hostile requests refused with a 4xx and no row changed; ` +
      `${storedVerbatim} names full of SQL and unicode sent (each stored exactly as sent, or 422 when blank)`,
  )
})

// ---- values no field accepts -------------------------------------------------

const notJsonScalar = fc.oneof(
  fc.string({ maxLength: 20 }),
  fc.boolean(),
  fc.constant(null),
  fc.array(fc.integer(), { maxLength: 3 }),
  fc.dictionary(fc.string({ maxLength: 5 }), fc.integer(), { maxKeys: 3 }),
)
const fractional = fc.double({ noNaN: true, noDefaultInfinity: true }).filter((x) => !Number.isInteger(x))
const beyond53 = fc.constantFrom(2 ** 53, 2 ** 53 + 2, 2 ** 60, 2 ** 64, 1e20, 1e300, Number.MAX_VALUE)
const beyond31 = fc.oneof(fc.integer({ min: 2 ** 31, max: Number.MAX_SAFE_INTEGER }), beyond53)
const numericString = fc.integer({ min: 1, max: 1000 }).map(String)

const badId = fc.oneof(fc.integer({ max: 0 }), fractional, beyond53, numericString, notJsonScalar)
const badPositiveInt4 = fc.oneof(fc.integer({ max: 0 }), fractional, beyond31, numericString, notJsonScalar)
const badNonNegativeInt4 = fc.oneof(fc.integer({ max: -1 }), fractional, beyond31, numericString, notJsonScalar)
const badNonZeroInt4 = fc.oneof(fc.constant(0), fractional, beyond31, beyond31.map((n) => -n), numericString, notJsonScalar)
const badMoney = fc.oneof(fc.integer({ max: -1 }), fractional, beyond53, numericString, notJsonScalar)
const badBoolean = fc.oneof(fc.integer(), fc.string({ maxLength: 5 }), fc.constant(null), fc.constantFrom('true', 'false', 0, 1))
const badText = (max: number, min = 0) =>
  fc.oneof(
    fc.integer(),
    fc.boolean(),
    fc.constant(null),
    fc.array(fc.string({ maxLength: 3 }), { maxLength: 3 }),
    fc.string({ minLength: max + 1, maxLength: max + 50 }),
    fc.tuple(fc.string({ maxLength: 10 }), fc.string({ maxLength: 10 })).map(([a, b]) => `${a}\u0000${b}`),
    fc.tuple(fc.string({ maxLength: 10 }), fc.constantFrom('\ud800', '\udfff', '\udc00x')).map(([a, b]) => `${a}${b}`),
    ...(min > 0 ? [fc.constant('')] : []),
  )
const badIdList = fc.oneof(
  notJsonScalar.filter((v) => !Array.isArray(v)),
  fc.constant([]),
  fc.array(fc.integer({ min: 1, max: 1000 }), { minLength: 1001, maxLength: 1010 }),
  fc.tuple(fc.array(fc.integer({ min: 1, max: 99 }), { maxLength: 3 }), badId).map(([ok, bad]) => [...ok, bad]),
)

/** Text an attacker likes: SQL, quotes, unicode, control characters, right-to-left marks. */
const nastyText = fc.oneof(
  fc.constantFrom(
    "'; drop table products; --",
    "1' or '1'='1",
    '$$; delete from orders; $$',
    'Robert"); select pg_sleep(10); --',
    '\\x00\\\\',
    '%s%n%x',
    '${7*7}{{7*7}}',
    '\u202eevil\u202c',
    'ｆｕｌｌ　ｗｉｄｔｈ',
    '👩‍👩‍👧‍👦🇮🇩',
    'e\u0301',
    '\t\r\n',
    'null',
    '<script>alert(1)</script>',
  ),
  fc.string({ unit: 'grapheme', maxLength: 40 }),
  fc.string({ unit: 'binary', maxLength: 40 }),
)

// ---- the routes that take a body ---------------------------------------------

interface BodyRoute {
  name: string
  path: () => string
  /** A valid body: sent as is, it would change the database. */
  base: () => Record<string, unknown>
  /** Each field and the values it must refuse. */
  invalid: Record<string, fc.Arbitrary<unknown>>
  /** Fields whose absence alone makes the request invalid (here, without authentication). */
  required: string[]
}

const bodyRoutes: BodyRoute[] = [
  {
    name: 'POST /products',
    path: () => '/products',
    base: () => ({ name: 'Hostile', seller_id: 8001, price: 100, stock: 5, weight: 10, active: true }),
    invalid: {
      name: badText(200, 1),
      seller_id: badId,
      price: badMoney,
      stock: badNonNegativeInt4,
      weight: badPositiveInt4,
      active: badBoolean,
    },
    required: ['name', 'seller_id', 'price', 'stock', 'weight'],
  },
  {
    name: 'POST /carts/items',
    path: () => '/carts/items',
    base: () => ({ cart_id: cartId, product_id: productId, quantity: 1 }),
    invalid: { cart_id: badId, product_id: badId, quantity: badPositiveInt4 },
    required: ['cart_id', 'product_id', 'quantity'],
  },
  {
    name: 'POST /orders',
    path: () => '/orders',
    base: () => ({ buyer_id: buyerId, cart_item_ids: [lineId], note: 'hostile' }),
    invalid: { buyer_id: badId, cart_item_ids: badIdList, note: badText(1000) },
    required: ['buyer_id', 'cart_item_ids'],
  },
  {
    name: 'POST /products/:id/restock',
    path: () => `/products/${productId}/restock`,
    base: () => ({ quantity: 1, note: 'hostile' }),
    invalid: { quantity: badPositiveInt4, note: badText(500) },
    required: ['quantity'],
  },
  {
    name: 'POST /products/:id/adjust',
    path: () => `/products/${productId}/adjust`,
    base: () => ({ quantity: 1, reason: 'hostile' }),
    invalid: { quantity: badNonZeroInt4, reason: badText(500, 1) },
    required: ['quantity', 'reason'],
  },
  {
    name: 'POST /carts/:id/checkout',
    path: () => `/carts/${cartId}/checkout`,
    base: () => ({ note: 'hostile' }),
    invalid: { note: badText(1000) },
    required: [],
  },
]

/** Field names that belong to no request body, and that an attacker would try. */
const MASS_ASSIGNMENT = ['stock', 'price', 'state', 'purchased', 'total_price', 'id', 'created_at', 'updated_at', 'seller_id', 'buyer_id', 'user_id', 'active', 'code', '__proto__', 'constructor']

type Mutation =
  | { kind: 'invalid value'; field: string; value: unknown }
  | { kind: 'missing field'; field: string }
  | { kind: 'unknown field'; field: string; value: unknown }
  | { kind: 'not an object'; value: unknown }

function mutations(route: BodyRoute): fc.Arbitrary<Mutation> {
  const known = new Set(Object.keys(route.invalid))
  const unknownName = fc.oneof(fc.constantFrom(...MASS_ASSIGNMENT), fc.string({ minLength: 1, maxLength: 12 })).filter((name) => !known.has(name))
  const options: fc.Arbitrary<Mutation>[] = [
    fc.oneof(...Object.entries(route.invalid).map(([field, values]) => values.map((value) => ({ kind: 'invalid value' as const, field, value })))),
    fc.record({ kind: fc.constant('unknown field' as const), field: unknownName, value: fc.jsonValue({ maxDepth: 2 }) }),
    fc.record({
      kind: fc.constant('not an object' as const),
      value: fc.oneof(fc.array(fc.jsonValue({ maxDepth: 1 }), { maxLength: 3 }), fc.string(), fc.integer(), fc.double({ noNaN: true, noDefaultInfinity: true }), fc.boolean(), fc.constant(null)),
    }),
  ]
  if (route.required.length) options.push(fc.record({ kind: fc.constant('missing field' as const), field: fc.constantFrom(...route.required) }))
  return fc.oneof(...options)
}

function mutate(base: Record<string, unknown>, mutation: Mutation): unknown {
  switch (mutation.kind) {
    case 'invalid value':
      return { ...base, [mutation.field]: mutation.value }
    case 'missing field': {
      const { [mutation.field]: _, ...rest } = base
      return rest
    }
    case 'unknown field':
      // fromEntries makes "__proto__" an own property, as JSON.parse does.
      return Object.fromEntries([...Object.entries(base), [mutation.field, mutation.value]])
    case 'not an object':
      return mutation.value
  }
}

describe('hostile bodies', () => {
  for (const route of bodyRoutes) {
    it(`${route.name}: wrong types, out-of-range numbers, missing and unknown fields are 4xx and change nothing`, async () => {
      await fc.assert(
        fc.asyncProperty(mutations(route), async (mutation) => {
          const body = mutate(route.base(), mutation)
          await expectRefused(await req(route.path(), { method: 'POST', raw: JSON.stringify(body), headers: { 'content-type': 'application/json' } }), { route: route.name, mutation })
        }),
        { numRuns: RUNS },
      )
    })

    it(`${route.name}: malformed JSON, wrong content types, bad UTF-8 and oversized bodies are 400, 415, 413`, async () => {
      const malformed = fc
        .string({ unit: 'binary', minLength: 1, maxLength: 60 })
        .filter((text) => {
          try {
            JSON.parse(text)
            return false
          } catch {
            return true
          }
        })
        .map((text) => ({ raw: text as string | Uint8Array, type: 'application/json', expected: 400 }))
      const wrongType = fc
        .constantFrom('text/plain', 'application/x-www-form-urlencoded', 'multipart/form-data; boundary=x', 'application/xml', 'text/json', 'application/json; charset=latin1', 'application/jsonx')
        .map((type) => ({ raw: JSON.stringify(route.base()) as string | Uint8Array, type, expected: 415 }))
      const badUtf8 = fc
        .uint8Array({ minLength: 1, maxLength: 8 })
        .map((bytes) => new Uint8Array([0x7b, 0x22, 0xc3, 0x28, ...bytes.map((b) => b | 0x80), 0x22, 0x7d]))
        .map((raw) => ({ raw: raw as string | Uint8Array, type: 'application/json', expected: 400 }))
      const oversized = fc
        .integer({ min: 65_537, max: 200_000 })
        .map((size) => ({ raw: JSON.stringify({ ...route.base(), note: 'x'.repeat(size) }) as string | Uint8Array, type: 'application/json', expected: 413 }))
      const deep = fc
        .integer({ min: 1_000, max: 30_000 })
        .map((depth) => ({ raw: '['.repeat(depth) + ']'.repeat(depth) as string | Uint8Array, type: 'application/json', expected: 400 }))
      await fc.assert(
        fc.asyncProperty(fc.oneof(malformed, wrongType, badUtf8, oversized, deep), async ({ raw, type, expected }) => {
          const reply = await req(route.path(), { method: 'POST', raw, headers: { 'content-type': type } })
          await expectRefused(reply, { route: route.name, type, length: raw.length })
          expect(reply.status).toBe(expected)
        }),
        { numRuns: RUNS },
      )
    })
  }

  it('refuses an oversized body sent without Content-Length (chunked) with 413', async () => {
    const chunk = new TextEncoder().encode('x'.repeat(16_384))
    let sent = 0
    const stream = new ReadableStream<Uint8Array>({
      pull(controller) {
        if (sent === 0) controller.enqueue(new TextEncoder().encode('{"note":"'))
        if (sent++ < 100) controller.enqueue(chunk)
        else controller.close()
      },
    })
    const response = await createApp(apiSql()).handle(
      new Request(`http://localhost/carts/${cartId}/checkout`, { method: 'POST', body: stream, headers: { 'content-type': 'application/json' } }),
    )
    const reply = { status: response.status, body: await response.json(), headers: response.headers }
    await expectRefused(reply, 'chunked')
    expect(reply.status).toBe(413)
    expect(sent).toBeLessThan(100)
  })

  it('refuses a body larger than its Content-Length says with 413 (a server frames a body by it; app.handle does not)', async () => {
    const response = await createApp(apiSql()).handle(
      new Request(`http://localhost/carts/${cartId}/checkout`, {
        method: 'POST',
        body: JSON.stringify({ note: 'x'.repeat(70_000) }),
        headers: { 'content-type': 'application/json', 'content-length': '100' },
      }),
    )
    const reply = { status: response.status, body: await response.json(), headers: response.headers }
    await expectRefused(reply, 'a lying content-length')
    expect(reply.status).toBe(413)
  })
})

describe('hostile paths, queries and methods', () => {
  const notAnId = fc
    .oneof(
      fc.string({ unit: 'grapheme', minLength: 1, maxLength: 20 }),
      fc.constantFrom('0', '-1', '1.5', '1e3', '0x10', ' 1', '1 ', '+1', '01', '9'.repeat(16), '99999999999999999999', 'NaN', 'Infinity', 'null', "1' or '1'='1", '1;drop table orders'),
    )
    .filter((segment) => !/^[1-9][0-9]{0,14}$/.test(segment))

  it('refuses path ids that are not positive integers with 400 or 404, on every route with an id', async () => {
    const routes = [
      (id: string) => ({ path: `/products/${id}`, method: 'GET' }),
      (id: string) => ({ path: `/orders/${id}`, method: 'GET' }),
      (id: string) => ({ path: `/carts/${id}/checkout`, method: 'POST' }),
      (id: string) => ({ path: `/orders/${id}/pay`, method: 'POST' }),
      (id: string) => ({ path: `/products/${id}/movements`, method: 'GET' }),
      (id: string) => ({ path: `/products/${id}/restock`, method: 'POST' }),
    ]
    await fc.assert(
      fc.asyncProperty(fc.constantFrom(...routes), notAnId, fc.boolean(), async (route, segment, encode) => {
        // Encoded, or raw where a URL allows it: a raw "/" or ".." leads to another route, or to none.
        const { path, method } = route(encode ? encodeURIComponent(segment) : encodeURI(segment).replaceAll('?', '%3F').replaceAll('#', '%23'))
        // "a/../1" is /products/1 once the URL is normalised, and "." the list: valid requests, not hostile ones.
        const normalised = new URL(path, 'http://localhost').pathname
        if (/^\/(products|orders)\/?$|^\/(products|orders)\/[1-9][0-9]{0,14}$|^\/carts\/[1-9][0-9]{0,14}\/checkout$|^\/orders\/[1-9][0-9]{0,14}\/pay$|^\/products\/[1-9][0-9]{0,14}\/(movements|restock)$/.test(normalised)) return
        await expectRefused(await req(path, { method }), { path, method })
      }),
      { numRuns: RUNS },
    )
  })

  it('refuses bad and unknown query parameters with 400', async () => {
    const numberish = fc.oneof(fc.string({ maxLength: 12 }), fc.constantFrom('1e3', '0x10', ' 5', '5 ', '+5', '05', '1.0', '-0', 'Infinity'))
    const queries = fc.oneof(
      numberish.filter((v) => !/^[1-9][0-9]{0,14}$/.test(v)).map((v) => `/carts?user_id=${encodeURIComponent(v)}`),
      notAnId.map((v) => `/carts?user_id=${encodeURIComponent(v)}`),
      numberish.filter((v) => !/^[1-9][0-9]{0,14}$/.test(v)).map((v) => `/products?limit=${encodeURIComponent(v)}`),
      numberish.filter((v) => !/^(0|[1-9][0-9]{0,14})$/.test(v)).map((v) => `/products?offset=${encodeURIComponent(v)}`),
      fc.constantFrom(...MASS_ASSIGNMENT.filter((k) => !k.startsWith('_'))).map((k) => `/products?${k}=1`),
      fc.constantFrom('stock', 'buyer_id', 'admin').map((k) => `/carts?user_id=${buyerId}&${k}=1`),
    )
    await fc.assert(
      fc.asyncProperty(queries, async (path) => {
        await expectRefused(await req(path), { path })
      }),
      { numRuns: RUNS },
    )
  })

  it('answers unknown routes and methods with 404', async () => {
    const known = ['products', 'carts', 'orders', 'healthz', 'swagger']
    const unknownPath = fc.webPath().filter((path) => path.length > 1 && !known.includes(path.split('/')[1]?.split('?')[0] ?? ''))
    const wrongMethod = fc.tuple(fc.constantFrom('PUT', 'PATCH', 'DELETE'), fc.constantFrom('/products', `/products/1`, '/carts', '/carts/items', '/orders', '/orders/1', `/carts/1/checkout`))
    await fc.assert(
      fc.asyncProperty(fc.oneof(unknownPath.map((path) => ['GET', path] as const), unknownPath.map((path) => ['POST', path] as const), wrongMethod), async ([method, path]) => {
        const reply = await req(path, { method, ...(method === 'GET' ? {} : { raw: '{}', headers: { 'content-type': 'application/json' } }) })
        await expectRefused(reply, { method, path })
        expect(reply.status).toBe(404)
      }),
      { numRuns: RUNS },
    )
  })

  it('refuses bad Idempotency-Key headers with 400', async () => {
    const badKey = fc.oneof(
      fc.string({ minLength: 256, maxLength: 300, unit: fc.constantFrom('a', 'b', '-', '0') }),
      fc.string({ minLength: 1, maxLength: 20, unit: fc.integer({ min: 0x80, max: 0xff }).map((c) => String.fromCharCode(c)) }),
      fc.constant(''),
    )
    await fc.assert(
      fc.asyncProperty(badKey, fc.constantFrom('checkout', 'orders'), async (key, route) => {
        const reply =
          route === 'checkout'
            ? await req(`/carts/${cartId}/checkout`, { method: 'POST', headers: { 'idempotency-key': key } })
            : await req('/orders', { body: { buyer_id: buyerId, cart_item_ids: [lineId] }, headers: { 'idempotency-key': key } })
        await expectRefused(reply, { route, keyLength: key.length })
        expect(reply.status).toBe(400)
      }),
      { numRuns: RUNS },
    )
  })
})

describe('hostile credentials (authentication on)', () => {
  const secured = requester(createApp(apiSql(), { authJwtSecret: TEST_SECRET }))

  it('answers 401 to any Authorization header that is not a valid token of this service', async () => {
    const forged = fc.oneof(
      fc.string({ maxLength: 200, unit: fc.integer({ min: 0x20, max: 0x7e }).map((c) => String.fromCharCode(c)) }),
      fc.tuple(fc.base64String({ maxLength: 40 }), fc.base64String({ maxLength: 80 }), fc.base64String({ maxLength: 43 })).map((parts) => `Bearer ${parts.join('.')}`),
      fc.tuple(fc.integer({ min: 1, max: 2 ** 40 }), fc.string({ minLength: 32, maxLength: 40 })).map(([sub, secret]) => ({ sub, secret })),
    )
    await fc.assert(
      fc.asyncProperty(forged, async (value) => {
        const authorization = typeof value === 'string' ? value : `Bearer ${await tokenFor(value.sub, { secret: value.secret })}`
        const reply = await secured(`/carts/${cartId}/checkout`, { method: 'POST', headers: { authorization } })
        await expectRefused(reply, { authorization })
        expect(reply.status).toBe(401)
      }),
      { numRuns: RUNS },
    )
  })
})

describe('hostile but valid text', () => {
  it('stores SQL and unicode in names exactly as sent, never as code, and never answers 5xx', async () => {
    const name = nastyText.filter((text) => text.length >= 1 && text.length <= 200 && text.isWellFormed() && !text.includes('\u0000'))
    await fc.assert(
      fc.asyncProperty(name, async (text) => {
        storedVerbatim++
        const reply = await req('/products', { body: { name: text, seller_id: 8002, price: 1, stock: 1, weight: 1 } })
        if (reply.status === 201) {
          const [row] = await sql`select name from waitress.products where id = ${reply.body.data.id}`
          expect(row.name).toBe(text)
          expect(reply.body.data.name).toBe(text)
        } else {
          // Only a name that is blank once trimmed may be refused (products_name_present).
          expect({ text, code: expectErrorEnvelope(reply, 422).code }).toEqual({ text, code: '23514' })
          expect(text.trim()).toBe('')
        }
      }),
      { numRuns: RUNS },
    )
    const [{ count }] = await sql`select count(*)::int from pg_catalog.pg_tables where schemaname = 'waitress' and tablename = 'products'`
    expect(count).toBe(1)
  })
})

describe('empty bodies', () => {
  it('are 400 where a body is required, and nothing changes', async () => {
    for (const path of ['/products', '/carts/items', '/orders'])
      for (const headers of [{ 'content-type': 'application/json' }, {} as Record<string, string>]) {
        const reply = await req(path, { method: 'POST', raw: '', headers })
        await expectRefused(reply, { path, headers })
        expect(reply.status).toBe(400)
      }
  })
})

describe('mass assignment', () => {
  it('refuses fields that do not belong to a request, naming them, and changes nothing', async () => {
    const cases: [string, string, Record<string, unknown>][] = [
      ['POST', '/carts/items', { cart_id: cartId, product_id: productId, quantity: 1, price: 1 }],
      ['POST', '/carts/items', { cart_id: cartId, product_id: productId, quantity: 1, purchased: true }],
      ['POST', '/carts/items', { cart_id: cartId, product_id: productId, quantity: 1, stock: 1_000_000 }],
      ['POST', '/orders', { buyer_id: buyerId, cart_item_ids: [lineId], state: 'paid' }],
      ['POST', '/orders', { buyer_id: buyerId, cart_item_ids: [lineId], total_price: 1 }],
      ['POST', `/carts/${cartId}/checkout`, { state: 'delivered' }],
      ['POST', `/carts/${cartId}/checkout`, { total_price: 1 }],
      ['POST', '/products', { name: 'x', seller_id: 1, price: 1, stock: 1, weight: 1, id: productId }],
      ['POST', '/products', { name: 'x', seller_id: 1, price: 1, stock: 1, weight: 1, created_at: '2000-01-01T00:00:00Z' }],
    ]
    for (const [method, path, body] of cases) {
      const reply = await req(path, { method, body })
      const extra = Object.keys(body).at(-1)!
      await expectRefused(reply, { path, body })
      expect(reply.status).toBe(400)
      expect(reply.body.error).toContain(extra)
    }
  })
})
