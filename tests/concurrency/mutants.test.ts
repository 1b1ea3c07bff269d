import { afterAll, beforeAll, describe, expect, it } from 'bun:test'
import { createSql, gated, type RetryableCode, type Sql } from '../../src/db/client.ts'
import { Gate } from '../../src/db/gate.ts'
import type { Order } from '../../src/models.ts'
import { checkInvariants, startRun } from '../../proof/database-facts.ts'
import type { Attempt, Outcome, RetryCounts, Verdict } from '../../proof/judge.ts'
import { outcomeOfSql } from '../../proof/outcomes.ts'
import { appDatabaseUrl, recyclablePool, testDatabaseUrl, testSql } from '../support/db.ts'
import { createProduct } from '../support/fixtures.ts'
import { installMutant, MUTANTS, type Mutant, type MutantName } from '../support/mutants.ts'
import { buyersWith, expectClean, randomInt, shuffled } from '../support/proof.ts'
import { startLine, type Overlap } from '../support/start-line.ts'

/**
 * Mutation tests: the races and the invariant checker, shown to fail on
 * unsafe checkouts written in SQL and run under real contention (many
 * connections, a start line in the database), not simulated in one process.
 * Each mutant is the real waitress.place_orders with one change, in a schema
 * of its own (tests/support/mutants.ts).
 *
 * The races that must pass run api.place_order, or, to watch them fail,
 * the mutant named by WAITRESS_RACE_CHECKOUT:
 *
 *   WAITRESS_RACE_CHECKOUT=random-lock-order npm test -- tests/concurrency/mutants.test.ts
 *   WAITRESS_RACE_CHECKOUT=read-then-write npm test -- tests/concurrency/mutants.test.ts
 */
const sql = testSql()
const switchedIn = process.env.WAITRESS_RACE_CHECKOUT as MutantName | undefined
if (switchedIn !== undefined && !(switchedIn in MUTANTS))
  throw new Error(`WAITRESS_RACE_CHECKOUT must be one of ${Object.keys(MUTANTS).join(', ')}, got "${switchedIn}"`)

/** How a race reaches a checkout: many connections of a pool of its own, each call one statement. */
interface Checkouts {
  name: string
  applicationName: string
  connections: number
  checkout(cartId: number): Promise<Outcome>
  /** Statements the pool ran again after a deadlock or serialization failure, when it retries. */
  retries?(): RetryCounts
  close(): Promise<void>
}

let pools = 0

/** api.place_order, as waitress_api, as the service calls it. */
function realCheckout(connections: number): Checkouts {
  const applicationName = `waitress-real-${process.pid}-${++pools}`
  const pool = recyclablePool(appDatabaseUrl(), { max: connections, role: 'waitress_api', applicationName })
  return {
    name: 'api.place_order',
    applicationName,
    connections,
    checkout: (cartId) =>
      outcomeOfSql(async () => (await pool<{ o: Order }[]>`select o from jsonb_array_elements(api.place_order(${cartId})->'orders') o`).map((row) => row.o)),
    close: () => pool.end(),
  }
}

/**
 * A mutant's place_order, called as the owner (it lives outside schema api).
 * With `retries`, through the service's gated pool, which runs a statement
 * again after a deadlock (up to 3 times): the client may never hear of it.
 */
function mutantCheckout(mutant: Mutant, connections: number, options: { retries?: boolean } = {}): Checkouts {
  const applicationName = `waitress-${mutant.name}-${process.pid}-${++pools}`
  const pool = recyclablePool(testDatabaseUrl(), { max: connections, applicationName })
  const retried: RetryCounts = { deadlocks: 0, serializationFailures: 0 }
  const onRetry = (code: RetryableCode) => void (code === '40P01' ? retried.deadlocks++ : retried.serializationFailures++)
  const db: Sql = options.retries ? gated(pool, new Gate(connections, 100_000, 600_000), { onRetry }) : pool
  return {
    name: `${mutant.name}${options.retries ? ' behind a retrying pool' : ''}`,
    applicationName,
    connections,
    checkout: (cartId) => outcomeOfSql(async () => (await mutant.placeOrder(db, cartId)).orders as Order[]),
    retries: options.retries ? () => ({ ...retried }) : undefined,
    close: () => pool.end(),
  }
}

const mutants = new Map<MutantName, Mutant>()
beforeAll(async () => {
  for (const name of Object.keys(MUTANTS) as MutantName[]) mutants.set(name, await installMutant(sql, name))
})
afterAll(async () => {
  for (const mutant of mutants.values()) await mutant.drop()
})

/** What the races that must pass run: api.place_order, unless a mutant is switched in. */
const raceCheckout = (connections: number) => (switchedIn ? mutantCheckout(mutants.get(switchedIn)!, connections) : realCheckout(connections))

/**
 * Every buyer checks out at once through `checkouts`, from a start line on
 * the products that lets go once every connection is seen waiting there;
 * then the checker's verdict (strict: no fault injected).
 */
async function race(checkouts: Checkouts, productIds: number[], buyers: Awaited<ReturnType<typeof buyersWith>>) {
  const start = await startRun(sql, productIds)
  const line = await startLine(sql, { products: productIds })
  let overlap: Overlap
  let outcomes: Outcome[]
  try {
    const racing = Promise.all(buyers.map((buyer) => checkouts.checkout(buyer.cartId)))
    overlap = await line.letGoWhen(Math.min(checkouts.connections, buyers.length), { applicationName: checkouts.applicationName }).catch(async (error) => {
      await racing.catch(() => {})
      throw error
    })
    outcomes = await racing
  } finally {
    await checkouts.close()
  }
  const attempts: Attempt[] = buyers.map((buyer, i) => ({ cartId: buyer.cartId, buyerId: buyer.userId, wants: buyer.wants, outcome: outcomes[i] }))
  const retries = checkouts.retries?.()
  const verdict: Verdict = await checkInvariants(
    sql,
    { ...start, checkouts: attempts, retriesBefore: retries && { deadlocks: 0, serializationFailures: 0 } },
    { service: retries && { retries: async () => retries } },
  )
  console.log(
    `[mutants] ${checkouts.name}: ${buyers.length} buyers, ${overlap.lockWaiters} connections waited at the start line; ` +
      `${verdict.ok ? 'clean' : `VIOLATED: ${verdict.violations.length} violations of ${[...new Set(verdict.violations.map((v) => v.invariant))].join(', ')}`}; ` +
      `deadlocks ${verdict.deadlocks}, retries ${JSON.stringify(verdict.retries ?? 'not counted')}`,
  )
  return { verdict, outcomes, overlap }
}

/**
 * The multi-product race of race.test.ts: carts of 2 to 4 of 6 products
 * added in random order, stock below demand (200 buyers; the mutants that
 * must fail get 60, whose deadlocks take less time to find).
 */
async function multiProductCrowd(count = 200) {
  const products = await Promise.all(Array.from({ length: 6 }, (_, i) => createProduct(sql, { name: `Hot ${i}`, seller_id: 800 + (i % 3), stock: Math.ceil((count * 3) / 10) })))
  const buyers = await buyersWith(
    sql,
    Array.from({ length: count }, () =>
      shuffled(products)
        .slice(0, randomInt(2, 4))
        .map((p) => [p.id, randomInt(1, 3)] as [number, number]),
    ),
  )
  return { productIds: products.map((p) => p.id), buyers }
}

/** Ten buyers of one unit each for the last five units. */
async function lastUnitsCrowd() {
  const product = await createProduct(sql, { name: 'Last five', stock: 5 })
  const buyers = await buyersWith(
    sql,
    Array.from({ length: 10 }, () => [[product.id, 1]]),
  )
  return { product, productIds: [product.id], buyers }
}

describe(`the multi-product race through ${switchedIn ?? 'api.place_order'}`, () => {
  it('sells within stock with no deadlock: the products are locked in id order', async () => {
    const { productIds, buyers } = await multiProductCrowd()
    const { verdict } = await race(raceCheckout(40), productIds, buyers)
    expectClean(verdict)
    expect(verdict.products.reduce((sold, p) => sold + p.sold, 0)).toBeGreaterThan(0)
  })
})

describe('the multi-product race fails a checkout that locks products in random order', () => {
  it('with real deadlocks: PostgreSQL counts them and clients get 40P01', async () => {
    const { productIds, buyers } = await multiProductCrowd(60)
    const { verdict, outcomes } = await race(mutantCheckout(mutants.get('random-lock-order')!, 20), productIds, buyers)

    expect(verdict.ok).toBe(false)
    expect(verdict.deadlocks).toBeGreaterThan(0)
    expect(verdict.violations).toContainEqual({ invariant: 'no-deadlocks', message: `PostgreSQL detected ${verdict.deadlocks} deadlocks during the run` })
    const deadlocked = outcomes.filter((o) => o.kind === 'failed' && o.code === '40P01')
    expect(deadlocked.length).toBeGreaterThan(0)
    expect(verdict.violations.filter((v) => v.invariant === 'no-failures' && v.message.includes('got a deadlock (40P01)'))).toHaveLength(deadlocked.length)
  })

  it('even when a retrying pool hid the deadlocks from its clients: the retries are counted, and a violation', async () => {
    const { productIds, buyers } = await multiProductCrowd(60)
    const { verdict } = await race(mutantCheckout(mutants.get('random-lock-order')!, 20, { retries: true }), productIds, buyers)

    expect(verdict.ok).toBe(false)
    expect(verdict.retries!.deadlocks).toBeGreaterThan(0)
    expect(verdict.violations).toContainEqual({
      invariant: 'no-deadlocks',
      message: `the service ran ${verdict.retries!.deadlocks} statements again after a deadlock (40P01): its clients never heard of them`,
    })
    // PostgreSQL counted at least the deadlocks that were retried.
    expect(verdict.deadlocks!).toBeGreaterThanOrEqual(verdict.retries!.deadlocks)
  })
})

describe(`the last units race through ${switchedIn ?? 'api.place_order'}`, () => {
  it('sells exactly the five units and refuses the other five buyers', async () => {
    const { buyers, productIds } = await lastUnitsCrowd()
    const { verdict } = await race(raceCheckout(10), productIds, buyers)
    expectClean(verdict)
    expect(verdict.products[0]).toMatchObject({ initial: 5, sold: 5, remaining: 0, accepted: 5, refused: { WA004: 5 } })
  })
})

describe('the checker catches a read-then-write checkout in SQL as an oversell', () => {
  it('ten buyers each read "5 left", each write "4 left", each get an order', async () => {
    const { product, buyers, productIds } = await lastUnitsCrowd()
    const { verdict, outcomes } = await race(mutantCheckout(mutants.get('read-then-write')!, 10), productIds, buyers)

    expect(outcomes.every((o) => o.kind === 'accepted')).toBe(true)
    expect(verdict.ok).toBe(false)
    expect(verdict.violations).toContainEqual({
      invariant: 'stock-conserved',
      productId: product.id,
      message: `product ${product.id}: started with 5, has 4 and sold 10: 9 more than it had`,
    })
    // The ledger wrote ten sales of one unit: it disagrees with the stock too.
    expect(verdict.violations).toContainEqual({
      invariant: 'ledger-balanced',
      productId: product.id,
      message: `inventory_audit() lists product ${product.id}: stock 4, ledger says -5; sold 10 per the ledger, 10 in live orders`,
    })
    expect(verdict.products[0]).toMatchObject({ initial: 5, sold: 10, remaining: 4, accepted: 10 })
  })
})
