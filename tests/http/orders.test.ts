import { describe, expect, it } from 'bun:test'
import { testSql } from '../support/db.ts'
import { addItem, cartFor, createProduct, newUserId, stockOf } from '../support/fixtures.ts'
import { expectErrorEnvelope, req } from '../support/http.ts'

const sql = testSql()

describe('POST /orders', () => {
  it("answers 201 with one order for the named items of the buyer's cart", async () => {
    const product = await createProduct(sql, { seller_id: 601, price: 2500, stock: 4, weight: 300 })
    const other = await createProduct(sql, { seller_id: 601 })
    const cart = await cartFor(sql)
    const line = await addItem(sql, cart.id, product.id, 3)
    const untouched = await addItem(sql, cart.id, other.id, 1)

    const reply = await req('/orders', { body: { buyer_id: cart.user_id, cart_item_ids: [line], note: 'gift' } })

    expect(reply.status).toBe(201)
    const order = reply.body.data
    expect(order).toMatchObject({ buyer_id: cart.user_id, seller_id: 601, state: 'pending', total_price: 7500, note: 'gift' })
    expect(order.code).toMatch(/^OS\d{2}\d{10}$/)
    expect(order.items).toEqual([
      expect.objectContaining({ cart_item_id: line, quantity: 3, price: 2500, weight: 300, product: expect.objectContaining({ id: product.id, stock: 1 }) }),
    ])
    expect(await stockOf(sql, product.id)).toBe(1)
    const [{ purchased }] = await sql`select purchased from waitress.cart_items where id = ${untouched}`
    expect(purchased).toBe(false)
  })

  it('answers 422 telling to order per seller when the items span sellers, and changes nothing', async () => {
    const a = await createProduct(sql, { seller_id: 611, stock: 3 })
    const b = await createProduct(sql, { seller_id: 612, stock: 3 })
    const cart = await cartFor(sql)
    const lines = [await addItem(sql, cart.id, a.id, 1), await addItem(sql, cart.id, b.id, 1)]

    const refused = expectErrorEnvelope(await req('/orders', { body: { buyer_id: cart.user_id, cart_item_ids: lines } }), 422)

    expect(refused.code).toBe('WA007')
    expect(refused.error).toContain('one seller')
    expect([await stockOf(sql, a.id), await stockOf(sql, b.id)]).toEqual([3, 3])
  })

  it("answers 422 for items that are not open items of the buyer's cart", async () => {
    const product = await createProduct(sql)
    const someoneElse = await cartFor(sql)
    const theirs = await addItem(sql, someoneElse.id, product.id, 1)
    const buyer = await cartFor(sql)
    await addItem(sql, buyer.id, product.id, 1)

    expect(expectErrorEnvelope(await req('/orders', { body: { buyer_id: buyer.user_id, cart_item_ids: [theirs] } }), 422).code).toBe('WA005')
    expect(expectErrorEnvelope(await req('/orders', { body: { buyer_id: newUserId(), cart_item_ids: [theirs] } }), 422).code).toBe('WA005')
    const [{ purchased }] = await sql`select purchased from waitress.cart_items where id = ${theirs}`
    expect(purchased).toBe(false)
  })

  it('answers 400 for a malformed order', async () => {
    for (const body of [{}, { buyer_id: 1 }, { buyer_id: 1, cart_item_ids: [] }, { buyer_id: 'x', cart_item_ids: [1] }, { buyer_id: 1, cart_item_ids: [0] }, { buyer_id: 1, cart_item_ids: 'all' }])
      expectErrorEnvelope(await req('/orders', { body }), 400)
  })
})

describe('GET /orders/:id', () => {
  it('answers 200 with the order and its lines, as placed', async () => {
    const product = await createProduct(sql)
    const cart = await cartFor(sql)
    const line = await addItem(sql, cart.id, product.id, 2)
    const placed = (await req('/orders', { body: { buyer_id: cart.user_id, cart_item_ids: [line] } })).body.data

    const reply = await req(`/orders/${placed.id}`)

    expect(reply.status).toBe(200)
    expect(reply.body).toEqual({ data: placed, meta: { http_status: 200 } })
  })

  it('answers 404 for an unknown order and 400 for a bad id', async () => {
    expectErrorEnvelope(await req('/orders/999999999'), 404)
    expectErrorEnvelope(await req('/orders/1e3'), 400)
  })
})
