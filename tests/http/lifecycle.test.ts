import { describe, expect, it } from 'bun:test'
import { apiSql, testSql } from '../support/db.ts'
import { agePastDeadline, createProduct, placedOrder, stockOf } from '../support/fixtures.ts'
import { expectErrorEnvelope, req } from '../support/http.ts'
import { expireOverdueOrders } from '../../src/expiry.ts'

const sql = testSql()
const post = (path: string, body?: unknown) => req(path, body === undefined ? { method: 'POST' } : { body })

describe('POST /orders/:id/:action', () => {
  it('walks an order from pending to remitted, answering 200 with the order each time', async () => {
    const orderId = await placedOrder(sql, (await createProduct(sql)).id)
    for (const [action, state] of [['pay', 'paid'], ['accept', 'accepted'], ['deliver', 'delivered'], ['remit', 'remitted']]) {
      const reply = await post(`/orders/${orderId}/${action}`)
      expect(reply.status).toBe(200)
      expect(reply.body).toMatchObject({ data: { id: orderId, state }, meta: { http_status: 200 } })
    }
  })

  it('cancels with the stock given back, then refuses a second cancel with 409 naming the state', async () => {
    const product = await createProduct(sql, { stock: 5 })
    const orderId = await placedOrder(sql, product.id, 2)
    expect((await post(`/orders/${orderId}/cancel`)).body.data.state).toBe('cancelled')
    expect(await stockOf(sql, product.id)).toBe(5)

    const refused = expectErrorEnvelope(await post(`/orders/${orderId}/cancel`), 409)
    expect(refused.code).toBe('WA009')
    expect(refused.error).toContain('cancelled')
    expect(refused.details).toMatchObject({ state: 'cancelled', action: 'cancel', allowed_from: ['pending', 'paid', 'accepted'] })
    expect(await stockOf(sql, product.id)).toBe(5)
  })

  it('refunds a paid order that was rejected, but not an unpaid cancelled one', async () => {
    const product = await createProduct(sql, { stock: 5 })
    const rejected = await placedOrder(sql, product.id)
    await post(`/orders/${rejected}/pay`)
    await post(`/orders/${rejected}/reject`)
    expect((await post(`/orders/${rejected}/refund`)).body.data.state).toBe('refunded')

    const unpaid = await placedOrder(sql, product.id)
    await post(`/orders/${unpaid}/cancel`)
    const refused = expectErrorEnvelope(await post(`/orders/${unpaid}/refund`), 409)
    expect(refused.details).toMatchObject({ state: 'cancelled', paid: false })
  })

  it('answers 404 for an unknown order and 400 for an unknown action or bad id', async () => {
    expect(expectErrorEnvelope(await post('/orders/987654321/pay'), 404).code).toBe('WA008')
    expectErrorEnvelope(await post('/orders/1/ship'), 400)
    expectErrorEnvelope(await post('/orders/x/pay'), 400)
  })
})

describe('GET /orders', () => {
  it('filters by buyer, seller and state, with paging', async () => {
    const product = await createProduct(sql, { seller_id: 4242 })
    const first = await placedOrder(sql, product.id)
    const second = await placedOrder(sql, product.id)
    await post(`/orders/${second}/pay`)

    const bySeller = await req('/orders?seller_id=4242&limit=100')
    expect(bySeller.body.data.map((o: { id: number }) => o.id)).toEqual([first, second])
    const paid = await req('/orders?seller_id=4242&state=paid')
    expect(paid.body.data.map((o: { id: number }) => o.id)).toEqual([second])
    const [{ buyer_id }] = await sql`select buyer_id from waitress.orders where id = ${first}`
    expect((await req(`/orders?buyer_id=${buyer_id}`)).body.data.map((o: { id: number }) => o.id)).toEqual([first])
    expect((await req('/orders?seller_id=4242&limit=1&offset=1')).body.data.map((o: { id: number }) => o.id)).toEqual([second])
  })

  it('answers 400 for an unknown state or a bad filter', async () => {
    expectErrorEnvelope(await req('/orders?state=shipped'), 400)
    expectErrorEnvelope(await req('/orders?buyer_id=abc'), 400)
  })
})

describe('stock routes', () => {
  it('restocks, corrects and lists the movements, keeping the audit empty', async () => {
    const product = await createProduct(sql, { stock: 2 })
    expect((await post(`/products/${product.id}/restock`, { quantity: 5, note: 'truck' })).body.data.stock).toBe(7)
    expect((await post(`/products/${product.id}/adjust`, { quantity: -3, reason: 'damaged' })).body.data.stock).toBe(4)

    const movements = await req(`/products/${product.id}/movements`)
    expect(movements.status).toBe(200)
    expect(movements.body.data.map((m: { reason: string; quantity: number }) => [m.reason, m.quantity])).toEqual([
      ['initial', 2],
      ['restock', 5],
      ['correction', -3],
    ])
    const audit = await req('/inventory/audit')
    expect(audit.status).toBe(200)
    expect(audit.body.data.filter((row: { product_id: number }) => row.product_id === product.id)).toEqual([])
  })

  it('refuses a correction below zero (422), a zero or fractional quantity (400) and unknown products (404)', async () => {
    const product = await createProduct(sql, { stock: 2 })
    expect(expectErrorEnvelope(await post(`/products/${product.id}/adjust`, { quantity: -3, reason: 'count' }), 422).code).toBe('WA010')
    expectErrorEnvelope(await post(`/products/${product.id}/adjust`, { quantity: 0, reason: 'count' }), 400)
    expectErrorEnvelope(await post(`/products/${product.id}/adjust`, { quantity: 1 }), 400)
    expectErrorEnvelope(await post(`/products/${product.id}/restock`, { quantity: 0 }), 400)
    expectErrorEnvelope(await post(`/products/${product.id}/restock`, { quantity: 1.5 }), 400)
    expect(expectErrorEnvelope(await post('/products/987654321/restock', { quantity: 1 }), 404).code).toBe('WA002')
    expectErrorEnvelope(await req('/products/987654321/movements'), 404)
    expect(await stockOf(sql, product.id)).toBe(2)
  })
})

describe('payment deadline', () => {
  it('expires overdue pending orders in batches as the API role, giving their stock back', async () => {
    const product = await createProduct(sql, { stock: 1000 })
    const overdue = await Promise.all(Array.from({ length: 520 }, () => placedOrder(sql, product.id)))
    await agePastDeadline(sql, overdue)

    const expired = await expireOverdueOrders(apiSql(), 30 * 60)

    expect(expired).toBeGreaterThanOrEqual(520)
    expect(await stockOf(sql, product.id)).toBe(1000)
    const [{ pending }] = await sql`select count(*)::int as pending from waitress.orders where id = any (${overdue}::bigint[]) and state <> 'expired'`
    expect(pending).toBe(0)
  })
})
