import { describe, expect, it } from 'bun:test'
import { createApp } from '../../src/app.ts'
import { apiSql, testSql } from '../support/db.ts'
import { addItem, cartFor, createProduct, newUserId, placedOrder, stockOf } from '../support/fixtures.ts'
import { expectErrorEnvelope, requester, type Reply } from '../support/http.ts'
import { bearer, TEST_SECRET } from '../support/auth.ts'

/**
 * Every idempotent route, with a second user who replays the first user's
 * Idempotency-Key: keys are scoped to the user who sent them, and ownership
 * is checked before any key is looked up, so the second user gets exactly
 * what they would get without the key (404 for an object that is not theirs)
 * and nothing of the first user's response.
 */
const sql = testSql()
const req = requester(createApp(apiSql(), { authJwtSecret: TEST_SECRET }))
const newKey = () => `scope-${crypto.randomUUID()}`

async function as(userId: number, path: string, init: { method?: string; body?: unknown; key?: string } = {}) {
  const headers: Record<string, string> = { ...(await bearer(userId)), ...(init.key ? { 'idempotency-key': init.key } : {}) }
  return req(path, { method: init.method ?? 'POST', body: init.body, headers })
}

async function buyerWithLine(stock = 5) {
  const product = await createProduct(sql, { stock })
  const cart = await cartFor(sql)
  const line = await addItem(sql, cart.id, product.id, 1)
  return { ...cart, line, product }
}

const ordersOf = async (buyerId: number) =>
  (await sql<{ count: number }[]>`select count(*)::int from waitress.orders where buyer_id = ${buyerId}`)[0].count

/** What a reply would look like for anyone: status and body, without the request id. */
const visible = (reply: Reply) => ({ status: reply.status, body: reply.body, replayed: reply.headers.get('idempotent-replayed') })

describe("another user's Idempotency-Key", () => {
  it("on POST /carts/:id/checkout of the first user's cart: 404 WA001, exactly as without the key, and nothing of the first order", async () => {
    const first = await buyerWithLine()
    const key = newKey()
    const placed = await as(first.user_id, `/carts/${first.id}/checkout`, { key, body: { note: 'mine' } })
    expect(placed.status).toBe(201)

    const stranger = newUserId()
    const withKey = await as(stranger, `/carts/${first.id}/checkout`, { key, body: { note: 'mine' } })
    const withoutKey = await as(stranger, `/carts/${first.id}/checkout`, { body: { note: 'mine' } })
    expect(expectErrorEnvelope(withKey, 404).code).toBe('WA001')
    expect(visible(withKey)).toEqual(visible(withoutKey))
    expect(withKey.body.data).toBeUndefined()
    expect(JSON.stringify(withKey.body)).not.toContain(placed.body.data[0].code)
    expect(await ordersOf(first.user_id)).toBe(1)
    expect(await ordersOf(stranger)).toBe(0)
  })

  it('on POST /carts/:id/checkout of their own cart: their own checkout, not a replay of the first', async () => {
    const first = await buyerWithLine()
    const second = await buyerWithLine()
    const key = newKey()
    const mine = await as(first.user_id, `/carts/${first.id}/checkout`, { key })
    const theirs = await as(second.user_id, `/carts/${second.id}/checkout`, { key })
    expect([mine.status, theirs.status]).toEqual([201, 201])
    expect(theirs.headers.get('idempotent-replayed')).toBeNull()
    expect(theirs.body.data[0].buyer_id).toBe(second.user_id)
    expect(theirs.body.data[0].id).not.toBe(mine.body.data[0].id)
    expect([await ordersOf(first.user_id), await ordersOf(second.user_id)]).toEqual([1, 1])
  })

  it("on POST /orders with the first user's items: the second user's own request (422 WA005: not in their cart), no replay", async () => {
    const first = await buyerWithLine()
    const key = newKey()
    const body = { cart_item_ids: [first.line] }
    const placed = await as(first.user_id, '/orders', { key, body })
    expect(placed.status).toBe(201)

    const stranger = newUserId()
    await cartFor(sql, stranger)
    const withKey = await as(stranger, '/orders', { key, body })
    const withoutKey = await as(stranger, '/orders', { body })
    expect(expectErrorEnvelope(withKey, 422).code).toBe('WA005')
    expect(visible(withKey)).toEqual(visible(withoutKey))
    expect(withKey.body.data).toBeUndefined()
    expect(JSON.stringify(withKey.body)).not.toContain(placed.body.data.code)
    expect(await ordersOf(stranger)).toBe(0)
    expect(await stockOf(sql, first.product.id)).toBe(4)
  })

  it('on POST /orders with their own items: their own order', async () => {
    const first = await buyerWithLine()
    const second = await buyerWithLine()
    const key = newKey()
    const mine = await as(first.user_id, '/orders', { key, body: { cart_item_ids: [first.line] } })
    const theirs = await as(second.user_id, '/orders', { key, body: { cart_item_ids: [second.line] } })
    expect([mine.status, theirs.status]).toEqual([201, 201])
    expect(theirs.headers.get('idempotent-replayed')).toBeNull()
    expect(theirs.body.data.buyer_id).toBe(second.user_id)
  })

  it('on POST /orders/:id/:action of the first user\'s order: 404 WA008 for a stranger, exactly as without the key, for every action', async () => {
    const sellerId = newUserId()
    const orderId = await placedOrder(sql, (await createProduct(sql, { seller_id: sellerId, stock: 5 })).id)
    const [{ buyer_id: buyerId }] = await sql`select buyer_id from waitress.orders where id = ${orderId}`
    const key = newKey()
    const paid = await as(buyerId, `/orders/${orderId}/pay`, { key })
    expect(paid.status).toBe(200)
    const accepted = await as(sellerId, `/orders/${orderId}/accept`, { key })
    expect(accepted.status).toBe(200)

    const stranger = newUserId()
    for (const action of ['pay', 'accept', 'reject', 'deliver', 'remit', 'refund', 'cancel']) {
      const withKey = await as(stranger, `/orders/${orderId}/${action}`, { key })
      const withoutKey = await as(stranger, `/orders/${orderId}/${action}`)
      expect({ action, code: expectErrorEnvelope(withKey, 404).code }).toEqual({ action, code: 'WA008' })
      expect({ action, reply: visible(withKey) }).toEqual({ action, reply: visible(withoutKey) })
      expect(withKey.body.data).toBeUndefined()
    }
    // The stranger's own order, with the same key: theirs, and not a replay of anyone's.
    const ownOrder = await placedOrder(sql, (await createProduct(sql)).id)
    const [{ buyer_id: ownBuyer }] = await sql`select buyer_id from waitress.orders where id = ${ownOrder}`
    const own = await as(ownBuyer, `/orders/${ownOrder}/pay`, { key })
    expect(own.status).toBe(200)
    expect(own.headers.get('idempotent-replayed')).toBeNull()
    expect(own.body.data.id).toBe(ownOrder)

    const [{ state }] = await sql`select state::text from waitress.orders where id = ${orderId}`
    expect(state).toBe('accepted')
  })

  it("on POST /orders/:id/pay by the order's seller: 403 WA011 (the buyer's action), never the buyer's recorded answer", async () => {
    const sellerId = newUserId()
    const orderId = await placedOrder(sql, (await createProduct(sql, { seller_id: sellerId })).id)
    const [{ buyer_id: buyerId }] = await sql`select buyer_id from waitress.orders where id = ${orderId}`
    const key = newKey()
    expect((await as(buyerId, `/orders/${orderId}/pay`, { key })).status).toBe(200)
    const seller = await as(sellerId, `/orders/${orderId}/pay`, { key })
    expect(expectErrorEnvelope(seller, 403).code).toBe('WA011')
    expect(seller.body.data).toBeUndefined()
  })
})
