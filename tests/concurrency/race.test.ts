import { describe, expect, it } from 'bun:test'
import { checkInvariants, startRun } from '../../proof/database-facts.ts'
import { type Attempt, type Verdict } from '../../proof/judge.ts'
import { outcomeOfHttp } from '../../proof/outcomes.ts'
import { testSql } from '../support/db.ts'
import { raceBuyers, type BuyerReply as Reply } from '../support/buyers.ts'
import { createProduct } from '../support/fixtures.ts'
import { buyersWith, expectClean, randomInt, shuffled, type Buyer } from '../support/proof.ts'
import { startLine, type Overlap } from '../support/start-line.ts'
import { inProcessApp, productionService, type Target, type TargetKind } from '../support/targets.ts'

const sql = testSql()

/**
 * A race of buyer processes through `target`, from a start line held in the
 * database: the line lets go once every session the target can run at once
 * is seen waiting for the race's products (and, with more buyers than
 * checkout calls, checkouts are queued in the service behind them), so the race overlapped, as a fact read
 * back, not hoped for. Then the verdict of the invariant checker, in strict
 * mode (no fault injected): what the clients were told matches the
 * database, stock is conserved and never negative, every refusal is true,
 * nothing but a 201 or a WA004 reached a client, and neither PostgreSQL
 * (its counter read once every session had published it) nor the service
 * (its retries) saw a deadlock.
 */
async function race(
  kind: TargetKind,
  options: { buyers: Buyer[]; productIds: number[]; groups: number[][] },
): Promise<{ verdict: Verdict; replies: Reply[]; overlap: Overlap; batches?: { count: number; checkouts: number } }> {
  const start = await startRun(sql, options.productIds)
  const target: Target = await kind.open()
  const line = await startLine(sql, { products: options.productIds })
  const racers = options.buyers.length
  let finished: Awaited<ReturnType<Target['finish']>>
  let replies: Reply[]
  let overlap: Overlap
  try {
    ;({ replies, during: overlap } = await raceBuyers(target.baseUrl, options.groups, () =>
      line.letGoWhen(Math.min(target.checkoutSessions, racers), {
        applicationName: target.applicationName,
        // More buyers than checkout calls: the others wait in the service, to go in the next batch.
        ...(racers > target.checkoutSessions ? { queued: target.queued } : {}),
      }),
    ))
  } finally {
    finished = await target.finish()
  }
  expect(replies).toHaveLength(racers)
  const byCart = new Map(replies.map((reply) => [reply.cart_id, reply]))
  const checkouts: Attempt[] = options.buyers.map((buyer) => {
    const reply = byCart.get(buyer.cartId)
    return {
      cartId: buyer.cartId,
      buyerId: buyer.userId,
      wants: buyer.wants,
      outcome: reply ? outcomeOfHttp(reply.status, reply.body) : { kind: 'failed', status: 0, message: 'no reply from the buyer process' },
    }
  })
  // A service counts from zero at its start, which was after startRun.
  const retries = finished.retries
  const verdict = await checkInvariants(
    sql,
    { ...start, checkouts, retriesBefore: retries && { deadlocks: 0, serializationFailures: 0 } },
    { service: retries && { retries: async () => retries } },
  )
  console.log(
    `[race] ${kind.name}: ${racers} buyers; ${overlap.lockWaiters} sessions waited at the start line` +
      `${overlap.queued === undefined ? '' : `, ${overlap.queued} requests queued in the service`} (held ${overlap.heldMs} ms); ` +
      `deadlocks ${verdict.deadlocks}, retries ${JSON.stringify(verdict.retries ?? 'not counted')}`,
  )
  expectClean(verdict)
  // The service counts its retries (none); the app in this process has no retrying pool to count.
  expect(verdict.retries).toEqual(kind === productionService ? { deadlocks: 0, serializationFailures: 0 } : undefined)
  return { verdict, replies, overlap, batches: finished.batches }
}

describe.each([
  [inProcessApp.name, inProcessApp],
  [productionService.name, productionService],
] as const)('concurrent checkout through %s', (_, kind) => {
  it('never sells more than the stock when 10 buyer processes race for one product', async () => {
    const product = await createProduct(sql, { name: '12.12 best seller', stock: 10 })
    const quantities = Array.from({ length: 10 }, () => randomInt(1, 3))
    while (quantities.reduce((a, b) => a + b) <= 10) quantities[randomInt(0, 9)] = 3
    const buyers = await buyersWith(
      sql,
      quantities.map((quantity) => [[product.id, quantity]]),
    )

    const { verdict, replies } = await race(kind, { buyers, productIds: [product.id], groups: buyers.map((b) => [b.cartId]) })

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
    const groups = Array.from({ length: 10 }, (_, i) => buyers.filter((_, j) => j % 10 === i).map((b) => b.cartId))

    const { verdict, replies } = await race(kind, { buyers, productIds: products.map((p) => p.id), groups })

    const acceptedCarts = replies.filter((r) => r.status === 201).length
    expect(acceptedCarts).toBeGreaterThan(0)
    expect(acceptedCarts).toBeLessThan(200)
    expect(verdict.products.every((p) => p.remaining >= 0)).toBe(true)
    expect(verdict.deadlocks).toBe(0) // read, complete, and none
  })

  it('never sells more than the stock when 200 buyers in 10 processes race for one product, their checkouts coalesced', async () => {
    const product = await createProduct(sql, { name: 'Flash 12.12', stock: 150 })
    {
      const buyers = await buyersWith(
        sql,
        Array.from({ length: 200 }, () => [[product.id, randomInt(1, 3)]] as [number, number][]),
      )
      const groups = Array.from({ length: 10 }, (_, i) => buyers.filter((_, j) => j % 10 === i).map((b) => b.cartId))

      const { verdict, replies, batches } = await race(kind, { buyers, productIds: [product.id], groups })

      const [tally] = verdict.products
      expect(tally.accepted).toBeGreaterThan(0)
      expect(tally.accepted).toBeLessThan(200)
      const refusedWants = buyers.filter((b) => replies.find((r) => r.cart_id === b.cartId)!.status === 422).map((b) => b.wants.get(product.id)!)
      expect(tally.remaining).toBeLessThan(Math.min(...refusedWants))
      // Coalesced: every checkout went through a place_orders() batch, fewer batches than buyers.
      expect(batches!.checkouts).toBe(200)
      expect(batches!.count).toBeLessThan(200)
    }
  })
})
