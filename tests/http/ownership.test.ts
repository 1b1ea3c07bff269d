import { describe, expect, it } from 'bun:test'
import { createApp } from '../../src/app.ts'
import { apiSql, testSql } from '../support/db.ts'
import { addItem, cartFor, createProduct, newUserId, placedOrder, stockOf } from '../support/fixtures.ts'
import { bearer, TEST_SECRET } from '../support/auth.ts'

const sql = testSql()
const secured = createApp(apiSql(), { authJwtSecret: TEST_SECRET })

async function call(userId: number, path: string, init: { method?: string; body?: unknown } = {}) {
  const headers: Record<string, string> = { ...(await bearer(userId)) }
  if (init.body !== undefined) headers['content-type'] = 'application/json'
  const response = await secured.handle(
    new Request(`http://localhost${path}`, {
      method: init.method ?? (init.body === undefined ? 'GET' : 'POST'),
      headers,
      body: init.body === undefined ? undefined : JSON.stringify(init.body),
    }),
  )
  return { status: response.status, body: (await response.json()) as any }
}

describe('with authentication, an order is acted on by its own parties', () => {
  it('lets the buyer pay and cancel, the seller accept and deliver, and answers the other party 403 WA011', async () => {
    const sellerId = newUserId()
    const product = await createProduct(sql, { seller_id: sellerId, stock: 5 })
    const orderId = await placedOrder(sql, product.id)
    const [{ buyer_id: buyerId }] = await sql`select buyer_id from waitress.orders where id = ${orderId}`

    const sellerPays = await call(sellerId, `/orders/${orderId}/pay`, { method: 'POST' })
    expect(sellerPays).toMatchObject({
      status: 403,
      body: { code: 'WA011', details: { order_id: orderId, action: 'pay', allowed: 'buyer' }, meta: { http_status: 403 } },
    })
    expect((await call(buyerId, `/orders/${orderId}/pay`, { method: 'POST' })).body.data.state).toBe('paid')
    const buyerAccepts = await call(buyerId, `/orders/${orderId}/accept`, { method: 'POST' })
    expect(buyerAccepts).toMatchObject({
      status: 403,
      body: { code: 'WA011', details: { order_id: orderId, action: 'accept', allowed: 'seller' }, meta: { http_status: 403 } },
    })
    // Refused, it stayed as it was.
    const [{ state: afterRefusal }] = await sql`select state::text from waitress.orders where id = ${orderId}`
    expect(afterRefusal).toBe('paid')
    expect((await call(sellerId, `/orders/${orderId}/accept`, { method: 'POST' })).body.data.state).toBe('accepted')
    expect((await call(buyerId, `/orders/${orderId}/cancel`, { method: 'POST' })).body.data.state).toBe('cancelled')
    expect(await stockOf(sql, product.id)).toBe(5)
  })

  it("answers anyone else's action on an order 404, and changes nothing", async () => {
    const orderId = await placedOrder(sql, (await createProduct(sql)).id)
    const stranger = await call(newUserId(), `/orders/${orderId}/cancel`, { method: 'POST' })
    expect(stranger).toMatchObject({ status: 404, body: { code: 'WA008', details: { order_id: orderId }, meta: { http_status: 404 } } })
    // Exactly as an order that does not exist: nothing says it is someone else's.
    expect(stranger.body.error).toBe(`order ${orderId} not found`)
    const [{ state }] = await sql`select state::text from waitress.orders where id = ${orderId}`
    expect(state).toBe('pending')
  })

  it("lists only the orders the user bought or sold", async () => {
    const sellerId = newUserId()
    const mine = await placedOrder(sql, (await createProduct(sql, { seller_id: sellerId })).id)
    await placedOrder(sql, (await createProduct(sql)).id)
    const listed = await call(sellerId, '/orders?limit=100')
    expect(listed.body.data.map((o: { id: number }) => o.id)).toEqual([mine])
  })
})

describe("with authentication, a product's stock is its seller's", () => {
  it('lets the seller restock and correct, and answers anyone else 404', async () => {
    const sellerId = newUserId()
    const product = await createProduct(sql, { seller_id: sellerId, stock: 2 })
    const notFound = { status: 404, body: { code: 'WA002', error: `product ${product.id} not found`, details: { product_id: product.id } } }
    for (const [path, body, stockAfter] of [
      [`/products/${product.id}/restock`, { quantity: 3 }, 5],
      [`/products/${product.id}/adjust`, { quantity: -1, reason: 'count' }, 4],
    ] as const) {
      const before = await stockOf(sql, product.id)
      expect(await call(newUserId(), path, { body })).toMatchObject(notFound)
      expect(await stockOf(sql, product.id)).toBe(before)
      expect(await call(sellerId, path, { body })).toMatchObject({ status: 200, body: { data: { id: product.id, stock: stockAfter } } })
    }
    expect(await stockOf(sql, product.id)).toBe(4)
  })
})

describe('place_orders on behalf of a user', () => {
  it("answers another user's cart as not found, even inside a batch", async () => {
    const product = await createProduct(sql, { stock: 5 })
    const cart = await cartFor(sql)
    await addItem(sql, cart.id, product.id, 1)
    const [{ outcomes }] = await sql`
      select api.place_orders(${sql.json([
        { cart_id: cart.id, user_id: cart.user_id + 1 },
        { cart_id: cart.id, user_id: cart.user_id },
      ] as never)}) as outcomes`
    expect(outcomes[0].error.code).toBe('WA001')
    expect(outcomes[1].orders).toHaveLength(1)
    expect(await stockOf(sql, product.id)).toBe(4)
  })
})

describe('POST /orders/:id/pay with an Idempotency-Key', () => {
  it('pays once; a retry gets the first answer, marked as a replay, instead of a 409', async () => {
    const orderId = await placedOrder(sql, (await createProduct(sql)).id)
    const [{ buyer_id: buyerId }] = await sql`select buyer_id from waitress.orders where id = ${orderId}`
    const pay = async () =>
      secured.handle(
        new Request(`http://localhost/orders/${orderId}/pay`, {
          method: 'POST',
          headers: { ...(await bearer(buyerId)), 'idempotency-key': `pay-${orderId}` },
        }),
      )
    const [first, second] = await Promise.all([pay(), pay()])
    const bodies = [(await first.json()) as any, (await second.json()) as any]
    expect([first.status, second.status]).toEqual([200, 200])
    expect(bodies[0]).toEqual(bodies[1])
    expect([first.headers.get('idempotent-replayed'), second.headers.get('idempotent-replayed')].sort()).toEqual(['true', null].sort())
    const [{ state }] = await sql`select state::text from waitress.orders where id = ${orderId}`
    expect(state).toBe('paid')
    expect(bodies[0].data.state).toBe('paid')
    // Every action takes a key: a cancel sent twice with one key cancels once and answers the same both times.
    const cancel = async () =>
      secured.handle(
        new Request(`http://localhost/orders/${orderId}/cancel`, { method: 'POST', headers: { ...(await bearer(buyerId)), 'idempotency-key': 'x' } }),
      )
    const cancelled = await cancel()
    const again = await cancel()
    expect([cancelled.status, again.status]).toEqual([200, 200])
    expect(again.headers.get('idempotent-replayed')).toBe('true')
    expect(((await again.json()) as any).data.state).toBe('cancelled')
  })
})
