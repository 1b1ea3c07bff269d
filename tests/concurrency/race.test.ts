import { afterAll, beforeAll, describe, expect, it } from 'bun:test'
import { createApp } from '../../src/app.ts'
import { checkInvariants, startRun } from '../../proof/database-facts.ts'
import { type Attempt, type Verdict } from '../../proof/judge.ts'
import { outcomeOfHttp } from '../../proof/outcomes.ts'
import { apiSql, testSql } from '../support/db.ts'
import { raceBuyers, type BuyerReply as Reply } from '../support/buyers.ts'
import { createProduct } from '../support/fixtures.ts'
import { buyersWith, expectClean, randomInt, shuffled, type Buyer } from '../support/proof.ts'

const sql = testSql()
let server: ReturnType<ReturnType<typeof createApp>['listen']>
let baseUrl: string

beforeAll(() => {
  server = createApp(apiSql(), { orderPlacer: { flashSaleCheckEveryMs: 0 } }).listen({ port: 0, hostname: '127.0.0.1' })
  baseUrl = `http://127.0.0.1:${server.server!.port}`
})
afterAll(async () => {
  await server.stop()
})

/**
 * The verdict on a race, from the invariant checker: what the clients were
 * told matches the database, stock is conserved and never negative, every
 * refusal is true, nothing but a 201 or a WA004 reached a client, and
 * PostgreSQL's deadlock counter did not move.
 */
async function verdictOn(buyers: Buyer[], replies: Reply[], start: Awaited<ReturnType<typeof startRun>>): Promise<Verdict> {
  expect(replies).toHaveLength(buyers.length)
  const byCart = new Map(replies.map((reply) => [reply.cart_id, reply]))
  const checkouts: Attempt[] = buyers.map((buyer) => {
    const reply = byCart.get(buyer.cartId)
    return {
      cartId: buyer.cartId,
      buyerId: buyer.userId,
      wants: buyer.wants,
      outcome: reply ? outcomeOfHttp(reply.status, reply.body) : { kind: 'failed', status: 0, message: 'no reply from the buyer process' },
    }
  })
  const verdict = await checkInvariants(sql, { ...start, checkouts })
  expectClean(verdict)
  return verdict
}


describe('concurrent checkout', () => {
  it('never sells more than the stock when 10 buyer processes race for one product', async () => {
    const product = await createProduct(sql, { name: '12.12 best seller', stock: 10 })
    const quantities = Array.from({ length: 10 }, () => randomInt(1, 3))
    while (quantities.reduce((a, b) => a + b) <= 10) quantities[randomInt(0, 9)] = 3
    const buyers = await buyersWith(
      sql,
      quantities.map((quantity) => [[product.id, quantity]]),
    )
    const start = await startRun(sql, [product.id])

    const replies = await raceBuyers(
      baseUrl,
      buyers.map((buyer) => [buyer.cartId]),
    )

    const verdict = await verdictOn(buyers, replies, start)
    const [tally] = verdict.products
    expect(tally.accepted).toBeGreaterThan(0)
    expect(tally.accepted).toBeLessThan(10)
    expect(tally.accepted + (tally.refused.WA004 ?? 0)).toBe(10)
    // Demand exceeded stock, so only a remainder smaller than every refused request can be left.
    const refusedWants = buyers.filter((b) => replies.find((r) => r.cart_id === b.cartId)!.status === 422).map((b) => b.wants.get(product.id)!)
    expect(tally.remaining).toBeLessThan(Math.min(...refusedWants))
  })

  it('never deadlocks when 200 buyers check out carts of 2 to 4 products added in random order', async () => {
    const products = await Promise.all(Array.from({ length: 6 }, (_, i) => createProduct(sql, { name: `Hot ${i}`, seller_id: 700 + (i % 3), stock: 60 })))
    const buyers = await buyersWith(
      sql,
      Array.from({ length: 200 }, () =>
        shuffled(products)
          .slice(0, randomInt(2, 4))
          .map((p) => [p.id, randomInt(1, 3)] as [number, number]),
      ),
    )
    const start = await startRun(
      sql,
      products.map((p) => p.id),
    )

    const groups = Array.from({ length: 10 }, (_, i) => buyers.filter((_, j) => j % 10 === i).map((b) => b.cartId))
    const replies = await raceBuyers(baseUrl, groups)

    const verdict = await verdictOn(buyers, replies, start)
    const acceptedCarts = replies.filter((r) => r.status === 201).length
    expect(acceptedCarts).toBeGreaterThan(0)
    expect(acceptedCarts).toBeLessThan(200)
    expect(verdict.products.every((p) => p.remaining >= 0)).toBe(true)
    expect(verdict.deadlocks).toBe(0) // read, flushed, and no deadlock
  })

  it('never sells more than the stock in flash-sale mode when 200 buyers in 10 processes race for one product', async () => {
    const product = await createProduct(sql, { name: 'Flash 12.12', stock: 150 })
    await sql`select api.set_flash_sale(${product.id}, true)`
    try {
      const buyers = await buyersWith(
        sql,
        Array.from({ length: 200 }, () => [[product.id, randomInt(1, 3)]] as [number, number][]),
      )
      const start = await startRun(sql, [product.id])
      const groups = Array.from({ length: 10 }, (_, i) => buyers.filter((_, j) => j % 10 === i).map((b) => b.cartId))

      const replies = await raceBuyers(baseUrl, groups)

      const verdict = await verdictOn(buyers, replies, start)
      const [tally] = verdict.products
      expect(tally.accepted).toBeGreaterThan(0)
      expect(tally.accepted).toBeLessThan(200)
      const refusedWants = buyers.filter((b) => replies.find((r) => r.cart_id === b.cartId)!.status === 422).map((b) => b.wants.get(product.id)!)
      expect(tally.remaining).toBeLessThan(Math.min(...refusedWants))
    } finally {
      await sql`select api.set_flash_sale(${product.id}, false)`
    }
  })
})
