import { describe, expect, it } from 'bun:test'
import { testSql } from '../support/db.ts'
import { createProduct, newUserId, stockOf } from '../support/fixtures.ts'
import { expectErrorEnvelope, req } from '../support/http.ts'

const sql = testSql()

const getCart = async (userId = newUserId()) => (await req(`/carts?user_id=${userId}`)).body.data
const addItem = (cart_id: number, product_id: number, quantity: number) =>
  req('/carts/items', { body: { cart_id, product_id, quantity } })

describe('GET /carts', () => {
  it("creates the user's cart on first use and returns the same cart after", async () => {
    const userId = newUserId()
    const first = await req(`/carts?user_id=${userId}`)
    expect(first.status).toBe(200)
    expect(first.body).toMatchObject({ data: { user_id: userId, items: [] }, meta: { http_status: 200 } })
    const again = await req(`/carts?user_id=${userId}`)
    expect(again.body.data.id).toBe(first.body.data.id)
  })

  it('gives two concurrent first calls the same cart', async () => {
    const userId = newUserId()
    const replies = await Promise.all([req(`/carts?user_id=${userId}`), req(`/carts?user_id=${userId}`)])
    expect(replies.map((r) => r.status)).toEqual([200, 200])
    expect(replies[0].body.data.id).toBe(replies[1].body.data.id)
  })

  it('lists only open items, each with its product', async () => {
    const product = await createProduct(sql, { stock: 5 })
    const cart = await getCart()
    await addItem(cart.id, product.id, 2)
    const { items } = (await req(`/carts?user_id=${cart.user_id}`)).body.data
    expect(items).toHaveLength(1)
    expect(items[0]).toMatchObject({ quantity: 2, purchased: false, product: { id: product.id, stock: 5 } })
    await req(`/carts/${cart.id}/checkout`, { method: 'POST' })
    expect((await req(`/carts?user_id=${cart.user_id}`)).body.data.items).toEqual([])
  })

  it('answers 400 without a valid user_id', async () => {
    for (const query of ['', '?user_id=', '?user_id=abc', '?user_id=0', '?user_id=-1'])
      expectErrorEnvelope(await req(`/carts${query}`), 400)
  })
})

describe('POST /carts/items', () => {
  it('answers 201 with the line and its product', async () => {
    const product = await createProduct(sql, { stock: 5 })
    const cart = await getCart()
    const reply = await addItem(cart.id, product.id, 2)
    expect(reply.status).toBe(201)
    expect(reply.body.data).toMatchObject({ cart_id: cart.id, quantity: 2, purchased: false, product: { id: product.id } })
  })

  it('adds to the existing line when the product is already in the cart', async () => {
    const product = await createProduct(sql, { stock: 5 })
    const cart = await getCart()
    const first = await addItem(cart.id, product.id, 2)
    const second = await addItem(cart.id, product.id, 1)
    expect(second.body.data.id).toBe(first.body.data.id)
    expect(second.body.data.quantity).toBe(3)
  })

  it('answers 404 for an unknown cart or product', async () => {
    const product = await createProduct(sql)
    const cart = await getCart()
    expect(expectErrorEnvelope(await addItem(999_999_999, product.id, 1), 404).code).toBe('WA001')
    expect(expectErrorEnvelope(await addItem(cart.id, 999_999_999, 1), 404).code).toBe('WA002')
  })

  it('answers 422 for an inactive product or a quantity above the current stock', async () => {
    const inactive = await createProduct(sql, { active: false })
    const scarce = await createProduct(sql, { stock: 2 })
    const cart = await getCart()
    expect(expectErrorEnvelope(await addItem(cart.id, inactive.id, 1), 422).code).toBe('WA003')
    const short = expectErrorEnvelope(await addItem(cart.id, scarce.id, 3), 422)
    expect(short.code).toBe('WA004')
    expect(short.details).toEqual({ shortages: [{ product_id: scarce.id, name: scarce.name, requested: 3, available: 2 }] })
  })

  it('answers 400 for a bad quantity or ids', async () => {
    const product = await createProduct(sql)
    const cart = await getCart()
    for (const quantity of [0, -1, 1.5, '2', null, 2 ** 31]) expectErrorEnvelope(await addItem(cart.id, product.id, quantity as number), 400)
    expectErrorEnvelope(await req('/carts/items', { body: { cart_id: cart.id, quantity: 1 } }), 400)
    expectErrorEnvelope(await addItem(2 ** 53, product.id, 1), 400)
    const [{ count }] = await sql`select count(*)::int from waitress.cart_items where cart_id = ${cart.id}`
    expect(count).toBe(0)
  })
})

describe('POST /carts/:id/checkout', () => {
  it('answers 201 with one order per seller and decrements stock', async () => {
    const a = await createProduct(sql, { seller_id: 501, price: 100, stock: 5 })
    const b = await createProduct(sql, { seller_id: 502, price: 300, stock: 5 })
    const cart = await getCart()
    await addItem(cart.id, a.id, 2)
    await addItem(cart.id, b.id, 1)

    const reply = await req(`/carts/${cart.id}/checkout`, { body: { note: 'ring twice' } })

    expect(reply.status).toBe(201)
    expect(reply.body.meta).toEqual({ http_status: 201 })
    expect(reply.body.data.map((o: any) => [o.seller_id, o.total_price, o.note, o.state, o.buyer_id])).toEqual([
      [501, 200, 'ring twice', 'pending', cart.user_id],
      [502, 300, 'ring twice', 'pending', cart.user_id],
    ])
    expect(await stockOf(sql, a.id)).toBe(3)
    expect(await stockOf(sql, b.id)).toBe(4)
  })

  it('works without a body', async () => {
    const product = await createProduct(sql)
    const cart = await getCart()
    await addItem(cart.id, product.id, 1)
    const reply = await req(`/carts/${cart.id}/checkout`, { method: 'POST' })
    expect(reply.status).toBe(201)
    expect(reply.body.data[0].note).toBeNull()
  })

  it('answers 422 with the shortages and changes nothing when stock ran out', async () => {
    const product = await createProduct(sql, { name: 'Last one', stock: 1 })
    const first = await getCart()
    const second = await getCart()
    await addItem(first.id, product.id, 1)
    await addItem(second.id, product.id, 1)
    expect((await req(`/carts/${first.id}/checkout`, { method: 'POST' })).status).toBe(201)

    const refused = expectErrorEnvelope(await req(`/carts/${second.id}/checkout`, { method: 'POST' }), 422)

    expect(refused.code).toBe('WA004')
    expect(refused.error).toContain('Last one')
    expect(refused.details).toEqual({ shortages: [{ product_id: product.id, name: 'Last one', requested: 1, available: 0 }] })
    expect(await stockOf(sql, product.id)).toBe(0)
    expect((await req(`/carts?user_id=${second.user_id}`)).body.data.items).toHaveLength(1)
  })

  it('answers 422 for an empty cart, 404 for an unknown cart and 400 for a bad id or note', async () => {
    const cart = await getCart()
    expect(expectErrorEnvelope(await req(`/carts/${cart.id}/checkout`, { method: 'POST' }), 422).code).toBe('WA006')
    expect(expectErrorEnvelope(await req('/carts/999999999/checkout', { method: 'POST' }), 404).code).toBe('WA001')
    expectErrorEnvelope(await req('/carts/abc/checkout', { method: 'POST' }), 400)
    expectErrorEnvelope(await req(`/carts/${cart.id}/checkout`, { body: { note: 'x'.repeat(1001) } }), 400)
    expectErrorEnvelope(await req(`/carts/${cart.id}/checkout`, { body: { note: 42 } }), 400)
  })

  it('answers 409 (23505) when the order it would write collides with one already there, and changes nothing', async () => {
    const product = await createProduct(sql, { stock: 5 })
    const cart = await getCart()
    await addItem(cart.id, product.id, 2)
    // An order restored from a backup holds the id the checkout draws next.
    const [{ next }] = await sql<{ next: number }[]>`select nextval('waitress.orders_id_seq') + 1 as next`
    await sql`insert into waitress.orders (id, buyer_id, seller_id, total_price) overriding system value values (${next}, 1, 1, 1)`
    try {
      const refused = expectErrorEnvelope(await req(`/carts/${cart.id}/checkout`, { method: 'POST' }), 409)

      expect(refused.code).toBe('23505')
      expect(refused.error).toBe('refused by the database rule orders_pkey')
      expect(await stockOf(sql, product.id)).toBe(5)
      expect((await req(`/carts?user_id=${cart.user_id}`)).body.data.items).toHaveLength(1)
      // Past the taken id, the same checkout goes through.
      expect((await req(`/carts/${cart.id}/checkout`, { method: 'POST' })).status).toBe(201)
      expect(await stockOf(sql, product.id)).toBe(3)
    } finally {
      await sql`delete from waitress.orders where id = ${next}`
    }
  })
})
