import { describe, expect, it } from 'bun:test'
import type { Order } from '../../src/models.ts'
import { testSql } from '../support/db.ts'
import { addItem, cartFor, createProduct, newUserId, refusal, stockOf } from '../support/fixtures.ts'

const sql = testSql()

const placeOrder = async (cartId: number, itemIds: number[] | null = null, note: string | null = null) =>
  (await sql<{ order: Order }[]>`select o as order from jsonb_array_elements(api.place_order(${cartId}, ${itemIds}::bigint[], ${note})->'orders') o`).map(
    (row) => row.order,
  )

/** Everything place_order may write, for one cart and its products. */
async function snapshot(cartId: number, productIds: number[]) {
  const products = await sql`select id, stock, updated_at from waitress.products where id = any (${productIds}::bigint[]) order by id`
  const items = await sql`select id, quantity, purchased from waitress.cart_items where cart_id = ${cartId} order by id`
  const [{ orders }] = await sql`
    select count(*)::int as orders from waitress.orders
     where buyer_id = (select user_id from waitress.carts where id = ${cartId})`
  const [{ lines }] = await sql`
    select count(*)::int as lines from waitress.order_items oi join waitress.cart_items ci on ci.id = oi.cart_item_id
     where ci.cart_id = ${cartId}`
  return { products, items, orders, lines }
}

describe('place_order', () => {
  it('buys every open line of the cart, decrements stock and returns the order with its lines', async () => {
    const kopi = await createProduct(sql, { seller_id: 11, price: 1500, stock: 5, weight: 250 })
    const teh = await createProduct(sql, { seller_id: 11, price: 900, stock: 3, weight: 100 })
    const cart = await cartFor(sql)
    const kopiLine = await addItem(sql, cart.id, kopi.id, 2)
    const tehLine = await addItem(sql, cart.id, teh.id, 3)

    const [order] = await placeOrder(cart.id, null, 'leave at the door')

    expect(order.buyer_id).toBe(cart.user_id)
    expect(order.seller_id).toBe(11)
    expect(order.state).toBe('pending')
    expect(order.note).toBe('leave at the door')
    expect(order.total_price).toBe(2 * 1500 + 3 * 900)
    const year = String(new Date().getUTCFullYear() % 100).padStart(2, '0')
    expect(order.code).toBe(`OS${year}${String(order.id).padStart(10, '0')}`)
    expect(order.items.map((line) => [line.cart_item_id, line.product.id, line.quantity, line.price, line.weight])).toEqual([
      [kopiLine, kopi.id, 2, 1500, 250],
      [tehLine, teh.id, 3, 900, 100],
    ])
    expect(await stockOf(sql, kopi.id)).toBe(3)
    expect(await stockOf(sql, teh.id)).toBe(0)
    const items = await sql`select id, purchased from waitress.cart_items where cart_id = ${cart.id} order by id`
    expect(items.map((item) => item.purchased)).toEqual([true, true])

    const [stored] = await sql`select waitress.order_json(o) as order from waitress.orders o where id = ${order.id}`
    expect(stored.order).toEqual(order)
  })

  it('writes one order per seller, each with its own lines and total', async () => {
    const fromA = await createProduct(sql, { seller_id: 21, price: 100 })
    const fromB1 = await createProduct(sql, { seller_id: 22, price: 200 })
    const fromB2 = await createProduct(sql, { seller_id: 22, price: 300 })
    const cart = await cartFor(sql)
    await addItem(sql, cart.id, fromB2.id, 1)
    await addItem(sql, cart.id, fromA.id, 4)
    await addItem(sql, cart.id, fromB1.id, 2)

    const orders = await placeOrder(cart.id)

    expect(orders.map((o) => [o.seller_id, o.total_price, o.items.map((l) => l.product.id).sort()])).toEqual([
      [21, 400, [fromA.id]],
      [22, 2 * 200 + 300, [fromB1.id, fromB2.id].sort()],
    ])
  })

  it('buys exactly the items named in p_item_ids and leaves the rest in the cart', async () => {
    const a = await createProduct(sql, { stock: 5 })
    const b = await createProduct(sql, { stock: 5 })
    const cart = await cartFor(sql)
    const lineA = await addItem(sql, cart.id, a.id, 1)
    const lineB = await addItem(sql, cart.id, b.id, 2)

    const [order] = await placeOrder(cart.id, [lineB])

    expect(order.items.map((l) => l.cart_item_id)).toEqual([lineB])
    expect(await stockOf(sql, a.id)).toBe(5)
    expect(await stockOf(sql, b.id)).toBe(3)
    const open = await sql`select id from waitress.cart_items where cart_id = ${cart.id} and not purchased`
    expect(open.map((row) => row.id)).toEqual([lineA])
  })

  it('refuses a short line with WA004 naming the product, and changes nothing', async () => {
    const plenty = await createProduct(sql, { name: 'Plenty', stock: 10 })
    const scarce = await createProduct(sql, { name: 'Scarce', stock: 2 })
    const cart = await cartFor(sql)
    await addItem(sql, cart.id, plenty.id, 1)
    await addItem(sql, cart.id, scarce.id, 2)
    // Another buyer takes one Scarce after this cart was filled.
    const rival = await cartFor(sql)
    await addItem(sql, rival.id, scarce.id, 1)
    await placeOrder(rival.id)
    const before = await snapshot(cart.id, [plenty.id, scarce.id])

    const error = await refusal(placeOrder(cart.id))

    expect(error.code).toBe('WA004')
    expect(error.message).toBe(`insufficient stock for product "Scarce" (id ${scarce.id}): requested 2, available 1`)
    expect(JSON.parse(error.detail!)).toEqual({
      shortages: [{ product_id: scarce.id, name: 'Scarce', requested: 2, available: 1 }],
    })
    expect(error.hint).toBeString()
    expect(await snapshot(cart.id, [plenty.id, scarce.id])).toEqual(before)
  })

  it('lists every short line in the WA004 detail', async () => {
    const a = await createProduct(sql, { stock: 1 })
    const b = await createProduct(sql, { stock: 1 })
    const cart = await cartFor(sql)
    await addItem(sql, cart.id, a.id, 1)
    await addItem(sql, cart.id, b.id, 1)
    await sql`update waitress.products set stock = 0 where id in (${a.id}, ${b.id})`

    const error = await refusal(placeOrder(cart.id))

    expect(error.code).toBe('WA004')
    expect(error.message).toEndWith('(and 1 more products)')
    expect(JSON.parse(error.detail!).shortages.map((s: { product_id: number }) => s.product_id)).toEqual([a.id, b.id])
  })

  it('refuses an unknown cart with WA001', async () => {
    const error = await refusal(placeOrder(987_654_321))
    expect(error.code).toBe('WA001')
    expect(JSON.parse(error.detail!)).toEqual({ cart_id: 987_654_321 })
  })

  it('refuses item ids that are not open items of the cart with WA005, and changes nothing', async () => {
    const product = await createProduct(sql)
    const cart = await cartFor(sql)
    const mine = await addItem(sql, cart.id, product.id, 1)
    const other = await cartFor(sql)
    const theirs = await addItem(sql, other.id, product.id, 1)
    const bought = await addItem(sql, cart.id, (await createProduct(sql)).id, 1)
    await placeOrder(cart.id, [bought])
    const before = await snapshot(cart.id, [product.id])

    for (const foreign of [[mine, theirs], [mine, bought], [mine, 999_999_999]]) {
      const error = await refusal(placeOrder(cart.id, foreign))
      expect(error.code).toBe('WA005')
      expect(JSON.parse(error.detail!)).toEqual({ cart_id: cart.id, cart_item_ids: [foreign[1]] })
    }
    expect(await snapshot(cart.id, [product.id])).toEqual(before)
  })

  it('refuses an empty cart, or an empty list of items, with WA006', async () => {
    const cart = await cartFor(sql)
    expect((await refusal(placeOrder(cart.id))).code).toBe('WA006')
    await addItem(sql, cart.id, (await createProduct(sql)).id, 1)
    expect((await refusal(placeOrder(cart.id, []))).code).toBe('WA006')
  })

  it('refuses a product that was deactivated after it was added, with WA003, and changes nothing', async () => {
    const product = await createProduct(sql, { stock: 4 })
    const cart = await cartFor(sql)
    await addItem(sql, cart.id, product.id, 1)
    await sql`update waitress.products set active = false where id = ${product.id}`
    const before = await snapshot(cart.id, [product.id])

    const error = await refusal(placeOrder(cart.id))

    expect(error.code).toBe('WA003')
    expect(JSON.parse(error.detail!)).toEqual({ product_ids: [product.id] })
    expect(await snapshot(cart.id, [product.id])).toEqual(before)
  })

  it('lets the second of two checkouts of one cart find nothing left to order', async () => {
    const product = await createProduct(sql, { stock: 10 })
    const cart = await cartFor(sql)
    await addItem(sql, cart.id, product.id, 3)

    const results = await Promise.allSettled([placeOrder(cart.id), placeOrder(cart.id)])

    const codes = results.map((r) => (r.status === 'fulfilled' ? 'ok' : (r.reason as { code: string }).code)).sort()
    expect(codes).toEqual(['WA006', 'ok'])
    expect(await stockOf(sql, product.id)).toBe(7)
  })
})

describe('place_buyer_order', () => {
  it('orders items of one seller from the buyer\'s cart', async () => {
    const product = await createProduct(sql, { seller_id: 31, price: 250 })
    const cart = await cartFor(sql)
    const line = await addItem(sql, cart.id, product.id, 2)

    const [{ order }] = await sql`select api.place_buyer_order(${cart.user_id}, ${[line]}::bigint[], null)->'orders'->0 as order`

    expect(order.seller_id).toBe(31)
    expect(order.total_price).toBe(500)
  })

  it('refuses items of several sellers with WA007 and undoes the whole checkout', async () => {
    const a = await createProduct(sql, { seller_id: 41 })
    const b = await createProduct(sql, { seller_id: 42 })
    const cart = await cartFor(sql)
    const lines = [await addItem(sql, cart.id, a.id, 1), await addItem(sql, cart.id, b.id, 1)]
    const before = await snapshot(cart.id, [a.id, b.id])

    const error = await refusal(sql`select api.place_buyer_order(${cart.user_id}, ${lines}::bigint[], null)`)

    expect(error.code).toBe('WA007')
    expect(JSON.parse(error.detail!)).toEqual({ seller_ids: [41, 42] })
    expect(await snapshot(cart.id, [a.id, b.id])).toEqual(before)
  })

  it('refuses a buyer without a cart with WA005', async () => {
    const error = await refusal(sql`select api.place_buyer_order(${newUserId()}, ${[1]}::bigint[], null)`)
    expect(error.code).toBe('WA005')
  })
})
