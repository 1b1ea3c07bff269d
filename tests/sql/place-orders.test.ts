import { describe, expect, it } from 'bun:test'
import type { Order } from '../../src/models.ts'
import { testSql } from '../support/db.ts'
import { addItem, auditOf, cartFor, createProduct, newUserId, refusal, stockOf } from '../support/fixtures.ts'

const sql = testSql()

type Outcome = { orders: Order[] } | { error: { code: string; message: string; detail: Record<string, any> | null; hint: string } }

const placeOrders = async (requests: object[]): Promise<Outcome[]> =>
  (await sql`select api.place_orders(${sql.json(requests as never)}) as outcomes`)[0].outcomes

const codeOf = (outcome: Outcome) => ('error' in outcome ? outcome.error.code : 'ok')

describe('place_orders', () => {
  it('serves a batch in arrival order: a refused request takes no stock, a later smaller one can still buy', async () => {
    const product = await createProduct(sql, { stock: 5 })
    const carts = await Promise.all([3, 3, 2].map(async (quantity) => {
      const cart = await cartFor(sql)
      await addItem(sql, cart.id, product.id, quantity)
      return cart
    }))

    const outcomes = await placeOrders(carts.map((cart) => ({ cart_id: cart.id })))

    expect(outcomes.map(codeOf)).toEqual(['ok', 'WA004', 'ok'])
    const refused = outcomes[1] as Extract<Outcome, { error: unknown }>
    expect(refused.error.detail!.shortages[0]).toMatchObject({ product_id: product.id, requested: 3, available: 2 })
    expect(await stockOf(sql, product.id)).toBe(0)
    expect(await auditOf(sql, [product.id])).toEqual([])
  })

  it('answers each request on its own: errors of some never touch the others', async () => {
    const product = await createProduct(sql, { stock: 10, seller_id: 71 })
    const other = await createProduct(sql, { stock: 10, seller_id: 72 })
    const inactive = await createProduct(sql, { stock: 10 })
    const good = await cartFor(sql)
    await addItem(sql, good.id, product.id, 1)
    const empty = await cartFor(sql)
    const withInactive = await cartFor(sql)
    await addItem(sql, withInactive.id, inactive.id, 1)
    await sql`update waitress.products set active = false where id = ${inactive.id}`
    const twoSellers = await cartFor(sql)
    const twoSellerItems = [await addItem(sql, twoSellers.id, product.id, 1), await addItem(sql, twoSellers.id, other.id, 1)]
    const byBuyer = await cartFor(sql)
    const byBuyerItem = await addItem(sql, byBuyer.id, other.id, 2)

    const outcomes = await placeOrders([
      { cart_id: 987654321 },
      { cart_id: good.id },
      { cart_id: empty.id },
      { cart_id: withInactive.id },
      { buyer_id: twoSellers.user_id, item_ids: twoSellerItems, one_seller: true },
      { cart_id: good.id, item_ids: [byBuyerItem] },
      { buyer_id: newUserId(), item_ids: [1] },
      { buyer_id: byBuyer.user_id, item_ids: [byBuyerItem], note: 'gift', one_seller: true },
    ])

    expect(outcomes.map(codeOf)).toEqual(['WA001', 'ok', 'WA006', 'WA003', 'WA007', 'WA005', 'WA005', 'ok'])
    expect(await stockOf(sql, product.id)).toBe(9)
    expect(await stockOf(sql, other.id)).toBe(8)
    const [{ open }] = await sql`select count(*)::int as open from waitress.cart_items where cart_id = ${twoSellers.id} and not purchased`
    expect(open).toBe(2)
    expect(await auditOf(sql, [product.id, other.id, inactive.id])).toEqual([])
  })

  it('sells a cart once when it appears twice in one batch', async () => {
    const product = await createProduct(sql, { stock: 10 })
    const cart = await cartFor(sql)
    const line = await addItem(sql, cart.id, product.id, 2)

    const outcomes = await placeOrders([{ cart_id: cart.id }, { cart_id: cart.id }, { cart_id: cart.id, item_ids: [line] }])

    expect(outcomes.map(codeOf)).toEqual(['ok', 'WA006', 'WA005'])
    expect(await stockOf(sql, product.id)).toBe(8)
  })

  it('answers a retry that rides in the same batch as its first with the first one\'s orders, placed once', async () => {
    const product = await createProduct(sql, { stock: 10 })
    const cart = await cartFor(sql)
    await addItem(sql, cart.id, product.id, 2)
    const key = `batch-${crypto.randomUUID()}`
    const other = await cartFor(sql)
    await addItem(sql, other.id, product.id, 1)

    const outcomes = await placeOrders([
      { cart_id: cart.id, note: 'once', idempotency_key: key },
      { cart_id: other.id },
      { cart_id: cart.id, note: 'once', idempotency_key: key },
      { cart_id: cart.id, note: 'twice', idempotency_key: key },
    ])

    expect(outcomes.map(codeOf)).toEqual(['ok', 'ok', 'ok', 'WA101'])
    const [first, , retry] = outcomes as { orders: Order[]; replayed?: boolean }[]
    expect(retry.orders).toEqual(first.orders)
    expect(retry.replayed).toBe(true)
    expect(first.replayed).toBeUndefined()
    expect(await stockOf(sql, product.id)).toBe(7)
    const [{ orders }] = await sql`select count(*)::int as orders from waitress.orders where buyer_id = ${cart.user_id}`
    expect(orders).toBe(1)
    const [record] = await sql`select response_status from waitress.idempotency_keys where user_id = ${cart.user_id} and key = ${key}`
    expect(record.response_status).toBe(201)
  })

  it('gives a retry in the same batch its first one\'s refusal, and keeps no record of the key', async () => {
    const product = await createProduct(sql, { stock: 2 })
    const cart = await cartFor(sql)
    await addItem(sql, cart.id, product.id, 2)
    await sql`update waitress.products set stock = 1 where id = ${product.id}`
    const key = `batch-${crypto.randomUUID()}`

    const outcomes = await placeOrders([{ cart_id: cart.id, idempotency_key: key }, { cart_id: cart.id, idempotency_key: key }])

    expect(outcomes.map(codeOf)).toEqual(['WA004', 'WA004'])
    const [{ records }] = await sql`select count(*)::int as records from waitress.idempotency_keys where user_id = ${cart.user_id} and key = ${key}`
    expect(records).toBe(0)
    expect(await stockOf(sql, product.id)).toBe(1)
  })

  it('never oversells when many batches of many buyers race for a few products', async () => {
    const products = await Promise.all(Array.from({ length: 3 }, () => createProduct(sql, { stock: 40 })))
    const carts = await Promise.all(Array.from({ length: 300 }, async () => {
      const cart = await cartFor(sql)
      for (const product of products.filter(() => Math.random() < 0.6)) await addItem(sql, cart.id, product.id, 1 + Math.floor(Math.random() * 2))
      return cart
    }))
    const batches = Array.from({ length: 10 }, (_, i) => carts.filter((_, j) => j % 10 === i))

    const outcomes = (await Promise.all(batches.map((batch) => placeOrders(batch.map((cart) => ({ cart_id: cart.id })))))).flat()

    expect(outcomes.filter((o) => codeOf(o) === 'ok').length).toBeGreaterThan(0)
    expect(outcomes.every((o) => ['ok', 'WA004', 'WA006'].includes(codeOf(o)))).toBe(true)
    const ids = products.map((p) => p.id)
    const [{ negative }] = await sql`select count(*)::int as negative from waitress.products where id = any (${ids}::bigint[]) and stock < 0`
    expect(negative).toBe(0)
    expect(await auditOf(sql, ids)).toEqual([])
  })

  it('refuses something that is not an array of at most 1000 requests', async () => {
    expect((await refusal(sql`select api.place_orders(${sql.json({ cart_id: 1 } as never)})`)).code).toBe('22023')
    expect((await refusal(sql`select api.place_orders(${sql.json(Array.from({ length: 1001 }, () => ({ cart_id: 1 })) as never)})`)).code).toBe('22023')
    expect(await placeOrders([])).toEqual([])
  })
})
