import { describe, expect, it } from 'bun:test'
import type { Sql } from '../../src/db/client.ts'
import { testSql } from '../support/db.ts'
import { addItem, auditOf, cartFor, createProduct, newUserId, stockOf } from '../support/fixtures.ts'

// The checkout's rules are written once, in waitress.place_orders; a lone
// checkout without an idempotency key first tries waitress.place_one, which
// only accepts what place_orders would accept and hands everything else to
// it. Each case below runs through both paths, on fresh but identical data:
// api.place_order (one-request path, with the core behind it) and
// api.place_orders (the core alone), and both must answer alike.
const sql = testSql()

interface Case {
  name: string
  /** Builds the data; returns the request and the products to compare. */
  setup(sql: Sql): Promise<{ cartId: number; itemIds: number[] | null; note?: string | null; userId?: number | null; products: number[] }>
  expect: string
}

const cases: Case[] = [
  {
    name: 'a whole cart of two sellers',
    expect: 'ok',
    async setup(sql) {
      const a = await createProduct(sql, { stock: 5, seller_id: 11 })
      const b = await createProduct(sql, { stock: 5, seller_id: 12 })
      const cart = await cartFor(sql)
      await addItem(sql, cart.id, a.id, 2)
      await addItem(sql, cart.id, b.id, 1)
      return { cartId: cart.id, itemIds: null, products: [a.id, b.id] }
    },
  },
  {
    name: 'named items, duplicates collapsing',
    expect: 'ok',
    async setup(sql) {
      const a = await createProduct(sql, { stock: 5 })
      const b = await createProduct(sql, { stock: 5 })
      const cart = await cartFor(sql)
      const line = await addItem(sql, cart.id, a.id, 2)
      await addItem(sql, cart.id, b.id, 1)
      return { cartId: cart.id, itemIds: [line, line], products: [a.id, b.id] }
    },
  },
  {
    name: 'a short line',
    expect: 'WA004',
    async setup(sql) {
      const a = await createProduct(sql, { stock: 2 })
      const cart = await cartFor(sql)
      await addItem(sql, cart.id, a.id, 2)
      const other = await cartFor(sql)
      await addItem(sql, other.id, a.id, 1)
      await sql`select api.place_order(${other.id})`
      return { cartId: cart.id, itemIds: null, products: [a.id] }
    },
  },
  {
    name: 'a product no longer for sale',
    expect: 'WA003',
    async setup(sql) {
      const a = await createProduct(sql, { stock: 5 })
      const cart = await cartFor(sql)
      await addItem(sql, cart.id, a.id, 1)
      await sql`update waitress.products set active = false where id = ${a.id}`
      return { cartId: cart.id, itemIds: null, products: [a.id] }
    },
  },
  {
    name: 'an item that is not an open line of the cart',
    expect: 'WA005',
    async setup(sql) {
      const a = await createProduct(sql, { stock: 5 })
      const cart = await cartFor(sql)
      const line = await addItem(sql, cart.id, a.id, 1)
      return { cartId: cart.id, itemIds: [line, 987654321], products: [a.id] }
    },
  },
  {
    name: 'a null item id',
    expect: 'WA005',
    async setup(sql) {
      const a = await createProduct(sql, { stock: 5 })
      const cart = await cartFor(sql)
      const line = await addItem(sql, cart.id, a.id, 1)
      return { cartId: cart.id, itemIds: [line, null as unknown as number], products: [a.id] }
    },
  },
  {
    name: 'an empty cart',
    expect: 'WA006',
    async setup(sql) {
      const cart = await cartFor(sql)
      return { cartId: cart.id, itemIds: null, products: [] }
    },
  },
  {
    name: "another user's cart",
    expect: 'WA001',
    async setup(sql) {
      const a = await createProduct(sql, { stock: 5 })
      const cart = await cartFor(sql)
      await addItem(sql, cart.id, a.id, 1)
      return { cartId: cart.id, itemIds: null, userId: newUserId(), products: [a.id] }
    },
  },
  {
    name: 'too many item ids',
    expect: 'WA110',
    async setup(sql) {
      const a = await createProduct(sql, { stock: 5 })
      const cart = await cartFor(sql)
      await addItem(sql, cart.id, a.id, 1)
      return { cartId: cart.id, itemIds: Array.from({ length: 101 }, (_, i) => 2_000_000_000 + i), products: [a.id] }
    },
  },
  {
    name: 'a note too long',
    expect: 'WA111',
    async setup(sql) {
      const a = await createProduct(sql, { stock: 5 })
      const cart = await cartFor(sql)
      await addItem(sql, cart.id, a.id, 1)
      return { cartId: cart.id, itemIds: null, note: 'n'.repeat(1001), products: [a.id] }
    },
  },
  {
    // add_cart_item and update_cart_item refuse such a line; an undone sharded
    // checkout can still make one, merging the units it gives back into the
    // product's open line.
    name: 'a line above the quantity limit',
    expect: 'WA115',
    async setup(sql) {
      const a = await createProduct(sql, { stock: 20_000 })
      const b = await createProduct(sql, { stock: 5 })
      const cart = await cartFor(sql)
      const line = await addItem(sql, cart.id, a.id, 10_000)
      await addItem(sql, cart.id, b.id, 1)
      await sql`update waitress.cart_items set quantity = quantity + 1 where id = ${line}`
      return { cartId: cart.id, itemIds: null, products: [a.id, b.id] }
    },
  },
  {
    name: 'a total past an amount',
    expect: 'WA113',
    async setup(sql) {
      const a = await createProduct(sql, { stock: 5, price: 4_000_000_000_000_000_000 })
      const cart = await cartFor(sql)
      await addItem(sql, cart.id, a.id, 3)
      return { cartId: cart.id, itemIds: null, products: [a.id] }
    },
  },
]

async function viaSingle(request: Awaited<ReturnType<Case['setup']>>): Promise<string> {
  try {
    await sql`select api.place_order(${request.cartId}, ${request.itemIds}::bigint[], ${request.note ?? null}, null, ${request.userId ?? null})`
    return 'ok'
  } catch (error) {
    return (error as { code: string }).code
  }
}

async function viaCore(request: Awaited<ReturnType<Case['setup']>>): Promise<string> {
  const [{ outcomes }] = await sql`select api.place_orders(${sql.json([
    { cart_id: request.cartId, item_ids: request.itemIds, note: request.note ?? null, user_id: request.userId ?? null },
  ] as never)}) as outcomes`
  return 'orders' in outcomes[0] ? 'ok' : outcomes[0].error.code
}

describe('the one-request path and the core', () => {
  for (const c of cases) {
    it(`answer alike: ${c.name} (${c.expect})`, async () => {
      const single = await c.setup(sql)
      const core = await c.setup(sql)
      expect(await viaSingle(single)).toBe(c.expect)
      expect(await viaCore(core)).toBe(c.expect)
      expect(await Promise.all(single.products.map((id) => stockOf(sql, id)))).toEqual(await Promise.all(core.products.map((id) => stockOf(sql, id))))
      expect(await auditOf(sql, [...single.products, ...core.products])).toEqual([])
    })
  }

  const strip = (order: Record<string, any>) => ({
    ...order,
    id: 0,
    code: '',
    buyer_id: 0,
    created_at: '',
    updated_at: '',
    items: order.items.map((i: Record<string, any>) => ({ ...i, id: 0, cart_item_id: 0, product: { ...i.product, stock: 0, updated_at: '' } })),
  })
  const stockless = (order: Record<string, any>) => ({ ...order, items: order.items.map((i: Record<string, any>) => ({ ...i, product: { ...i.product, stock: 0, updated_at: '' } })) })

  it('return the same documents for the same order', async () => {
    const product = await createProduct(sql, { stock: 9, price: 250 })
    const single = await cartFor(sql)
    const core = await cartFor(sql)
    await addItem(sql, single.id, product.id, 2)
    await addItem(sql, core.id, product.id, 2)
    const [{ placed }] = await sql`select api.place_order(${single.id}) as placed`
    const [{ outcomes }] = await sql`select api.place_orders(${sql.json([{ cart_id: core.id }] as never)}) as outcomes`
    expect(placed.orders.map(strip)).toEqual(outcomes[0].orders.map(strip))
    // And the documents are those order_json reads back (but for the product's stock, which the second order moved).
    const [{ doc }] = await sql`select waitress.order_json(o) as doc from waitress.orders o where o.id = ${placed.orders[0].id}`
    expect(stockless(placed.orders[0])).toEqual(stockless(doc))
  })

  it('return the same documents for a cart of three lines from two sellers, which the one-request path places itself', async () => {
    const low = 100 + Math.floor(Math.random() * 1e6)
    const high = low + 1
    const products = [
      await createProduct(sql, { stock: 9, price: 250, seller_id: high }),
      await createProduct(sql, { stock: 9, price: 40, seller_id: low }),
      await createProduct(sql, { stock: 9, price: 7, seller_id: high }),
    ]
    const single = await cartFor(sql)
    const core = await cartFor(sql)
    for (const [n, product] of products.entries()) {
      await addItem(sql, single.id, product.id, n + 1)
      await addItem(sql, core.id, product.id, n + 1)
    }
    // waitress.place_one answers null whenever it leaves a request to the core.
    const [{ placed }] = await sql`select waitress.place_one(${single.id}, null, null, 'two sellers', false, null) as placed`
    const [{ outcomes }] = await sql`select api.place_orders(${sql.json([{ cart_id: core.id, note: 'two sellers' }] as never)}) as outcomes`
    expect(placed).not.toBeNull()
    expect(placed.orders.map((o: { seller_id: number }) => o.seller_id)).toEqual([low, high])
    expect(placed.orders.map(strip)).toEqual(outcomes[0].orders.map(strip))
    for (const order of placed.orders) {
      const [{ doc }] = await sql`select waitress.order_json(o) as doc from waitress.orders o where o.id = ${order.id}`
      expect(stockless(order)).toEqual(stockless(doc))
    }
    expect(await Promise.all(products.map((p) => stockOf(sql, p.id)))).toEqual([9 - 2, 9 - 4, 9 - 6])
    expect(await auditOf(sql, products.map((p) => p.id))).toEqual([])
  })
})
