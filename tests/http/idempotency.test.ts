import { describe, expect, it } from 'bun:test'
import { createApp } from '../../src/app.ts'
import { createSql } from '../../src/db/client.ts'
import { appDatabaseUrl, testSql } from '../support/db.ts'
import { addItem, cartFor, createProduct, stockOf } from '../support/fixtures.ts'
import { expectErrorEnvelope, req, requester } from '../support/http.ts'
import { bearer, TEST_SECRET } from '../support/auth.ts'
import { until } from '../support/wait.ts'
import { apiSql } from '../support/db.ts'

const sql = testSql()
const newKey = () => `retry-${crypto.randomUUID()}`

async function cartWithLine(stock = 5, quantity = 1) {
  const product = await createProduct(sql, { stock })
  const cart = await cartFor(sql)
  const line = await addItem(sql, cart.id, product.id, quantity)
  return { ...cart, line, product }
}

async function ordersOf(buyerId: number): Promise<number> {
  const [{ count }] = await sql`select count(*)::int from waitress.orders where buyer_id = ${buyerId}`
  return count
}

/** Another API process: its own pool and its own app, on the same database. */
function anotherProcess() {
  const pool = createSql(appDatabaseUrl(), { max: 5, role: 'waitress_api' })
  return { req: requester(createApp(pool)), close: () => pool.end({ timeout: 5 }) }
}

describe('Idempotency-Key on POST /carts/:id/checkout', () => {
  it('places exactly one order when 20 duplicates arrive at once on two API processes', async () => {
    const cart = await cartWithLine(5, 2)
    const key = newKey()
    const other = anotherProcess()
    try {
      const replies = await Promise.all(
        Array.from({ length: 20 }, (_, i) =>
          (i % 2 ? other.req : req)(`/carts/${cart.id}/checkout`, { body: { note: 'once' }, headers: { 'idempotency-key': key } }),
        ),
      )
      expect(replies.map((r) => r.status)).toEqual(Array(20).fill(201))
      expect(new Set(replies.map((r) => JSON.stringify(r.body))).size).toBe(1)
      expect(replies.filter((r) => r.headers.get('idempotent-replayed') === 'true')).toHaveLength(19)
      expect(await ordersOf(cart.user_id)).toBe(1)
      expect(await stockOf(sql, cart.product.id)).toBe(3)
    } finally {
      await other.close()
    }
  })

  it('answers a retry after a restart of the service with the first response, status and body', async () => {
    const cart = await cartWithLine()
    const key = newKey()
    const before = anotherProcess()
    const first = await before.req(`/carts/${cart.id}/checkout`, { body: { note: 'before restart' }, headers: { 'idempotency-key': key } })
    await before.close()

    const after = anotherProcess()
    try {
      const retry = await after.req(`/carts/${cart.id}/checkout`, { body: { note: 'before restart' }, headers: { 'idempotency-key': key } })
      expect(first.status).toBe(201)
      expect(first.headers.get('idempotent-replayed')).toBeNull()
      expect(retry.status).toBe(201)
      expect(retry.body).toEqual(first.body)
      expect(retry.headers.get('idempotent-replayed')).toBe('true')
      expect(await ordersOf(cart.user_id)).toBe(1)
    } finally {
      await after.close()
    }
  })

  it('answers 422 (WA101) to the same key with a different body, and changes nothing', async () => {
    const cart = await cartWithLine()
    const key = newKey()
    await req(`/carts/${cart.id}/checkout`, { body: { note: 'first' }, headers: { 'idempotency-key': key } })
    const reply = await req(`/carts/${cart.id}/checkout`, { body: { note: 'second' }, headers: { 'idempotency-key': key } })
    const refused = expectErrorEnvelope(reply, 422)
    expect(refused.code).toBe('WA101')
    expect(refused.details).toEqual({ idempotency_key: key, action: 'place_order' })
    expect(await ordersOf(cart.user_id)).toBe(1)
  })

  it('makes a duplicate that arrives while the first is still running wait for it, then answers its response', async () => {
    const cart = await cartWithLine()
    const key = newKey()
    let release!: () => void
    const gate = new Promise<void>((resolve) => (release = resolve))
    let firstData: unknown
    // The first request, held open in the database between its checkout and its commit.
    const first = sql.begin(async (tx) => {
      const [row] = await tx`select r->'orders' as data, (r->>'replayed')::boolean as replayed from api.place_order(${cart.id}, null, null, ${key}, null) r`
      firstData = row.data
      await gate
    })
    await until('the first request to check out', () => firstData !== undefined)
    const duplicate = req(`/carts/${cart.id}/checkout`, { method: 'POST', headers: { 'idempotency-key': key } })
    await until('the duplicate to wait for the first one\'s lock', async () => {
      const [{ waiting }] = await sql`
        select count(*)::int as waiting from pg_catalog.pg_stat_activity
         where wait_event_type = 'Lock' and query like '%api.place_order%' and pid <> pg_backend_pid()`
      return waiting > 0
    })
    release()
    await first
    const reply = await duplicate
    expect(reply.status).toBe(201)
    expect(reply.body.data).toEqual(firstData)
    expect(reply.headers.get('idempotent-replayed')).toBe('true')
    expect(await ordersOf(cart.user_id)).toBe(1)
  })

  it('answers 409 (WA102) to a duplicate whose wait for the first runs into lock_timeout, and orders nothing more', async () => {
    const cart = await cartWithLine()
    const key = newKey()
    // The service's pool, with a lock_timeout the first request outlasts.
    const pool = createSql(appDatabaseUrl(), { max: 2, role: 'waitress_api', lockTimeoutMs: 200 })
    const impatient = requester(createApp(pool))
    let release!: () => void
    const held = new Promise<void>((resolve) => (release = resolve))
    let claimed = false
    const first = sql.begin(async (tx) => {
      await tx`select api.place_order(${cart.id}, null, null, ${key}, null)`
      claimed = true
      await held
    })
    try {
      await until('the first request to claim the key', () => claimed)
      const duplicate = await impatient(`/carts/${cart.id}/checkout`, { method: 'POST', headers: { 'idempotency-key': key } })

      const refused = expectErrorEnvelope(duplicate, 409)
      expect(refused.code).toBe('WA102')
      expect(refused.details).toEqual({ idempotency_key: key, action: 'place_order' })
    } finally {
      release()
      await first
    }
    expect(await ordersOf(cart.user_id)).toBe(1)
    // Once the first has finished, the retry gets its response.
    const retry = await impatient(`/carts/${cart.id}/checkout`, { method: 'POST', headers: { 'idempotency-key': key } })
    expect(retry.status).toBe(201)
    expect(retry.headers.get('idempotent-replayed')).toBe('true')
    await pool.end({ timeout: 5 })
  })

  it('checks out again without a key: the second request finds nothing to order (422)', async () => {
    const cart = await cartWithLine()
    expect((await req(`/carts/${cart.id}/checkout`, { method: 'POST' })).status).toBe(201)
    expect(expectErrorEnvelope(await req(`/carts/${cart.id}/checkout`, { method: 'POST' }), 422).code).toBe('WA006')
  })

  it('answers 400 to a key that is empty, longer than 255 characters or not printable ASCII', async () => {
    const cart = await cartWithLine()
    for (const key of ['', 'k'.repeat(256), 'caf\u00e9', 'tab\there'])
      expectErrorEnvelope(await req(`/carts/${cart.id}/checkout`, { method: 'POST', headers: { 'idempotency-key': key } }), 400)
    expect(await ordersOf(cart.user_id)).toBe(0)
    expect((await req(`/carts/${cart.id}/checkout`, { method: 'POST', headers: { 'idempotency-key': 'k'.repeat(255) } })).status).toBe(201)
  })
})

describe('Idempotency-Key on POST /orders', () => {
  it('places exactly one order when 20 duplicates arrive at once', async () => {
    const cart = await cartWithLine(5, 2)
    const key = newKey()
    const body = { buyer_id: cart.user_id, cart_item_ids: [cart.line] }
    const replies = await Promise.all(Array.from({ length: 20 }, () => req('/orders', { body, headers: { 'idempotency-key': key } })))
    expect(replies.map((r) => r.status)).toEqual(Array(20).fill(201))
    expect(new Set(replies.map((r) => r.body.data.id)).size).toBe(1)
    expect(await ordersOf(cart.user_id)).toBe(1)
    expect(await stockOf(sql, cart.product.id)).toBe(3)
  })

  it('answers 422 (WA101) to the same key with other items, or the same key first used for a checkout', async () => {
    const cart = await cartWithLine()
    const second = await addItem(sql, cart.id, (await createProduct(sql)).id, 1)
    const key = newKey()
    expect((await req('/orders', { body: { buyer_id: cart.user_id, cart_item_ids: [cart.line] }, headers: { 'idempotency-key': key } })).status).toBe(201)
    const other = await req('/orders', { body: { buyer_id: cart.user_id, cart_item_ids: [second] }, headers: { 'idempotency-key': key } })
    expect(expectErrorEnvelope(other, 422).code).toBe('WA101')
    const checkout = await req(`/carts/${cart.id}/checkout`, { method: 'POST', headers: { 'idempotency-key': key } })
    expect(expectErrorEnvelope(checkout, 422).code).toBe('WA101')
    expect(await ordersOf(cart.user_id)).toBe(1)
  })

  it('scopes keys per buyer: two buyers with one key each get their own order', async () => {
    const secured = requester(createApp(apiSql(), { authJwtSecret: TEST_SECRET }))
    const a = await cartWithLine()
    const b = await cartWithLine()
    const key = newKey()
    const forA = await secured('/orders', { body: { cart_item_ids: [a.line] }, headers: { ...(await bearer(a.user_id)), 'idempotency-key': key } })
    const forB = await secured('/orders', { body: { cart_item_ids: [b.line] }, headers: { ...(await bearer(b.user_id)), 'idempotency-key': key } })
    expect([forA.status, forB.status]).toEqual([201, 201])
    expect(forA.body.data.buyer_id).toBe(a.user_id)
    expect(forB.body.data.buyer_id).toBe(b.user_id)
    expect(forB.headers.get('idempotent-replayed')).toBeNull()
  })
})
