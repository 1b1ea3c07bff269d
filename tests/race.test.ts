import { afterAll, beforeAll, describe, expect, it } from 'bun:test'
import { createApp } from '../src/app'
import { apiSql, testSql } from './support/db'
import { raceBuyers, type Checkout } from './support/buyers'
import { addItem, cartFor, createProduct } from './support/fixtures'

const sql = testSql()
let server: ReturnType<ReturnType<typeof createApp>['listen']>
let baseUrl: string

beforeAll(() => {
  server = createApp(apiSql(), { checkout: { flashSaleCheckEveryMs: 0 } }).listen({ port: 0, hostname: '127.0.0.1' })
  baseUrl = `http://127.0.0.1:${server.server!.port}`
})
afterAll(async () => {
  await server.stop()
})

const randomInt = (min: number, max: number) => min + Math.floor(Math.random() * (max - min + 1))
const shuffled = <T>(items: T[]) => items.map((item) => [Math.random(), item] as const).sort((a, b) => a[0] - b[0]).map(([, item]) => item)

interface Buyer {
  cartId: number
  /** What the buyer wants: product id → quantity. */
  wants: Map<number, number>
}

async function buyerWith(lines: [productId: number, quantity: number][]): Promise<Buyer> {
  const cart = await cartFor(sql)
  for (const [productId, quantity] of lines) await addItem(sql, cart.id, productId, quantity)
  return { cartId: cart.id, wants: new Map(lines) }
}

async function deadlocksSoFar(): Promise<number> {
  const [row] = await sql`select deadlocks::int from pg_stat_database where datname = current_database()`
  return row.deadlocks
}

/**
 * The verdict on a race: what the clients were told must match the database,
 * stock must be conserved and never negative, and every refusal must be true.
 */
async function expectRaceInvariants(buyers: Buyer[], results: Checkout[], initialStock: Map<number, number>) {
  expect(results).toHaveLength(buyers.length)
  const byCart = new Map(results.map((result) => [result.cart_id, result]))
  const productIds = [...initialStock.keys()]

  // Nothing but success or a stock refusal reached a client: no 5xx, no deadlock, no lost request.
  const unexpected = results.filter((r) => !(r.status === 201 || (r.status === 422 && r.body.code === 'WA004')))
  expect(unexpected).toEqual([])

  const finalStock = new Map<number, number>(
    (await sql`select id, stock from public.products where id = any (${productIds}::bigint[])`).map((row) => [row.id, row.stock]),
  )
  const soldInDatabase = new Map<number, number>(
    (
      await sql`
        select oi.product_id, sum(oi.quantity)::int as sold
          from public.order_items oi
          join public.cart_items ci on ci.id = oi.cart_item_id
         where ci.cart_id = any (${buyers.map((b) => b.cartId)}::bigint[])
         group by oi.product_id`
    ).map((row) => [row.product_id, row.sold]),
  )
  const soldToClients = new Map<number, number>()

  for (const buyer of buyers) {
    const result = byCart.get(buyer.cartId)!
    if (result.status === 201) {
      // The client got exactly the lines it asked for, and they are in the database.
      const bought = new Map<number, number>()
      for (const order of result.body.data)
        for (const line of order.items) bought.set(line.product.id, (bought.get(line.product.id) ?? 0) + line.quantity)
      expect(bought).toEqual(buyer.wants)
      for (const [productId, quantity] of bought) soldToClients.set(productId, (soldToClients.get(productId) ?? 0) + quantity)
      const [{ orders }] = await sql`
        select count(*)::int as orders from public.orders where id = any (${result.body.data.map((o: { id: number }) => o.id)}::bigint[])`
      expect(orders).toBe(result.body.data.length)
    } else {
      // A refused buyer wanted more than what remained, even at the end; and nothing of theirs was sold.
      for (const shortage of result.body.details.shortages) {
        expect(shortage.requested).toBe(buyer.wants.get(shortage.product_id))
        expect(shortage.requested).toBeGreaterThan(finalStock.get(shortage.product_id)!)
      }
      const [{ purchased }] = await sql`
        select count(*)::int as purchased from public.cart_items where cart_id = ${buyer.cartId} and purchased`
      expect(purchased).toBe(0)
    }
  }

  for (const productId of productIds) {
    const sold = soldInDatabase.get(productId) ?? 0
    expect(finalStock.get(productId)!).toBeGreaterThanOrEqual(0)
    expect(sold).toBeLessThanOrEqual(initialStock.get(productId)!)
    expect(finalStock.get(productId)).toBe(initialStock.get(productId)! - sold)
    expect(soldToClients.get(productId) ?? 0).toBe(sold)
  }
  return { accepted: results.filter((r) => r.status === 201).length, finalStock }
}

describe('concurrent checkout', () => {
  it('never sells more than the stock when 10 buyer processes race for one product', async () => {
    const product = await createProduct(sql, { name: '12.12 best seller', stock: 10 })
    const quantities = Array.from({ length: 10 }, () => randomInt(1, 3))
    while (quantities.reduce((a, b) => a + b) <= 10) quantities[randomInt(0, 9)] = 3
    const buyers = await Promise.all(quantities.map((quantity) => buyerWith([[product.id, quantity]])))

    const results = await raceBuyers(
      baseUrl,
      buyers.map((buyer) => [buyer.cartId]),
    )

    const { accepted, finalStock } = await expectRaceInvariants(buyers, results, new Map([[product.id, 10]]))
    expect(accepted).toBeGreaterThan(0)
    expect(accepted).toBeLessThan(10)
    // Demand exceeded stock, so only a remainder smaller than every refused request can be left.
    const refusedWants = buyers.filter((b) => results.find((r) => r.cart_id === b.cartId)!.status === 422).map((b) => b.wants.get(product.id)!)
    expect(finalStock.get(product.id)!).toBeLessThan(Math.min(...refusedWants))
  })

  it('never deadlocks when 200 buyers check out carts of 2 to 4 products added in random order', async () => {
    const products = await Promise.all(Array.from({ length: 6 }, (_, i) => createProduct(sql, { name: `Hot ${i}`, seller_id: 700 + (i % 3), stock: 60 })))
    const buyers = await Promise.all(
      Array.from({ length: 200 }, () =>
        buyerWith(shuffled(products).slice(0, randomInt(2, 4)).map((p) => [p.id, randomInt(1, 3)] as [number, number])),
      ),
    )
    const deadlocksBefore = await deadlocksSoFar()

    const groups = Array.from({ length: 10 }, (_, i) => buyers.filter((_, j) => j % 10 === i).map((b) => b.cartId))
    const results = await raceBuyers(baseUrl, groups)

    const { accepted, finalStock } = await expectRaceInvariants(buyers, results, new Map(products.map((p) => [p.id, 60])))
    expect(accepted).toBeGreaterThan(0)
    expect(accepted).toBeLessThan(200)
    expect([...finalStock.values()].every((stock) => stock >= 0)).toBe(true)
    await sql`select pg_stat_clear_snapshot()`
    expect(await deadlocksSoFar()).toBe(deadlocksBefore)
  })

  it('never sells more than the stock in flash-sale mode when 200 buyers in 10 processes race for one product', async () => {
    const product = await createProduct(sql, { name: 'Flash 12.12', stock: 150 })
    await sql`select public.set_flash_sale(${product.id}, true)`
    try {
      const buyers = await Promise.all(Array.from({ length: 200 }, () => buyerWith([[product.id, randomInt(1, 3)]])))
      const groups = Array.from({ length: 10 }, (_, i) => buyers.filter((_, j) => j % 10 === i).map((b) => b.cartId))

      const results = await raceBuyers(baseUrl, groups)

      const { accepted, finalStock } = await expectRaceInvariants(buyers, results, new Map([[product.id, 150]]))
      expect(accepted).toBeGreaterThan(0)
      expect(accepted).toBeLessThan(200)
      const refusedWants = buyers.filter((b) => results.find((r) => r.cart_id === b.cartId)!.status === 422).map((b) => b.wants.get(product.id)!)
      expect(finalStock.get(product.id)!).toBeLessThan(Math.min(...refusedWants))
    } finally {
      await sql`select public.set_flash_sale(${product.id}, false)`
    }
  })
})
