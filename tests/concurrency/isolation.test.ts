import { afterAll, describe, expect, it } from 'bun:test'
import type { Sql } from '../../src/db/client.ts'
import { checkInvariants, startRun } from '../../proof/database-facts.ts'
import { type Attempt } from '../../proof/judge.ts'
import { outcomeOfSql } from '../../proof/outcomes.ts'
import type { Order } from '../../src/models.ts'
import { appDatabaseUrl, recyclablePool, testSql } from '../support/db.ts'
import { addItem, auditOf, cartFor, createProduct, stockOf } from '../support/fixtures.ts'
import { buyersWith, expectClean, signal } from '../support/proof.ts'
import { until } from '../support/wait.ts'

/**
 * Two SQL sessions stepped by hand, both as waitress_api: the first calls
 * place_order inside a transaction it keeps open, the second's call must
 * then wait on the first's lock (seen in pg_stat_activity, not guessed from
 * a sleep), and after the first commits or rolls back it must see exactly
 * what the first left. This pins the isolation behaviour down.
 */
const owner = testSql()
const api = recyclablePool(appDatabaseUrl(), { max: 6, role: 'waitress_api' })
afterAll(() => api.end({ timeout: 5 }))

/** place_order as a SQL caller sees it: the orders, or the refusal. */
const placeOrder = (sql: Sql, cartId: number) =>
  outcomeOfSql(async () => (await sql<{ o: Order }[]>`select o from jsonb_array_elements(api.place_order(${cartId})->'orders') o`).map((row) => row.o))

class RolledBack extends Error {}

/** Session one: runs `work` in a transaction and holds it open (with its locks) until told to commit or roll back. */
async function holdOpen<T>(work: (tx: Sql) => Promise<T>) {
  const holding = signal<{ pid: number; result: T }>()
  const finish = signal<'commit' | 'rollback'>()
  const done = api
    .begin(async (tx) => {
      const [{ pid }] = await tx<{ pid: number }[]>`select pg_backend_pid() as pid`
      holding.resolve({ pid, result: await work(tx as unknown as Sql) })
      if ((await finish.promise) === 'rollback') throw new RolledBack()
    })
    .catch((error) => {
      if (!(error instanceof RolledBack)) throw error
    })
  const { pid, result } = await Promise.race([holding.promise, done.then(() => Promise.reject(new Error('session one ended early')))])
  return {
    pid,
    result,
    commit: () => (finish.resolve('commit'), done),
    rollback: () => (finish.resolve('rollback'), done),
  }
}

/** Session two: starts a call on its own connection and reports whether it has returned yet. */
async function startSecond<T>(call: (sql: Sql) => Promise<T>) {
  const session = await api.reserve()
  const [{ pid }] = await session<{ pid: number }[]>`select pg_backend_pid() as pid`
  let returned = false
  const result = call(session as unknown as Sql).finally(() => {
    returned = true
    session.release()
  })
  return { pid, result, returned: () => returned }
}

/**
 * Waits until PostgreSQL reports `pid` waiting on a lock (pg_stat_activity's
 * wait event) that `blocker` holds (pg_blocking_pids); returns the wait event.
 * The two are read at slightly different moments, so both must agree.
 */
async function waitUntilBlocked(pid: number, blocker: number): Promise<string> {
  let last: unknown
  return until(
    `session ${pid} to wait for a lock of session ${blocker}`,
    async () => {
      const [row] = await owner<{ blockers: number[]; wait_event_type: string | null; wait_event: string | null }[]>`
        select pg_blocking_pids(pid) as blockers, wait_event_type, wait_event from pg_stat_activity where pid = ${pid}`
      last = row
      return row?.blockers.includes(blocker) && row.wait_event_type === 'Lock' ? row.wait_event! : undefined
    },
    { everyMs: 2, seen: () => JSON.stringify(last) },
  )
}

async function oneProductRace(stock: number, firstWants: number, secondWants: number) {
  const product = await createProduct(owner, { stock })
  const [first, second] = await buyersWith(owner, [[[product.id, firstWants]], [[product.id, secondWants]]])
  const start = await startRun(owner, [product.id])
  return { product, first, second, start }
}

describe('isolation of place_order, stepped', () => {
  it('makes a second buyer of the product wait for the first, then sell from the stock it left', async () => {
    const { product, first, second, start } = await oneProductRace(5, 3, 2)

    const one = await holdOpen((tx) => placeOrder(tx, first.cartId))
    const two = await startSecond((sql) => placeOrder(sql, second.cartId))
    // It waits in the product's queue (a transaction advisory lock, taken before the row lock) for the first's
    // transaction to end.
    expect(await waitUntilBlocked(two.pid, one.pid)).toBe('advisory')
    expect(two.returned()).toBe(false)
    expect(await stockOf(owner, product.id)).toBe(5) // the first's sale is not visible until it commits

    await one.commit()
    const outcome = await two.result

    expect(outcome.kind).toBe('accepted')
    expect(await stockOf(owner, product.id)).toBe(0)
    const checkouts: Attempt[] = [
      { cartId: first.cartId, wants: first.wants, outcome: one.result },
      { cartId: second.cartId, wants: second.wants, outcome },
    ]
    expectClean(await checkInvariants(owner, { ...start, checkouts }))
  })

  it('makes a second buyer wait, then refuses it with WA004 naming what the first left', async () => {
    const { product, first, second, start } = await oneProductRace(5, 3, 3)

    const one = await holdOpen((tx) => placeOrder(tx, first.cartId))
    const two = await startSecond((sql) => placeOrder(sql, second.cartId))
    expect(await waitUntilBlocked(two.pid, one.pid)).toBe('advisory')
    expect(two.returned()).toBe(false)

    await one.commit()
    const outcome = await two.result

    expect(outcome).toMatchObject({
      kind: 'refused',
      status: 422,
      code: 'WA004',
      details: { shortages: [{ product_id: product.id, name: product.name, requested: 3, available: 2 }] },
    })
    expect(await stockOf(owner, product.id)).toBe(2)
    const checkouts: Attempt[] = [
      { cartId: first.cartId, wants: first.wants, outcome: one.result },
      { cartId: second.cartId, wants: second.wants, outcome },
    ]
    expectClean(await checkInvariants(owner, { ...start, checkouts }))
  })

  it('lets the second buyer have the whole stock when the first rolls back', async () => {
    const { product, first, second, start } = await oneProductRace(5, 3, 5)

    const one = await holdOpen((tx) => placeOrder(tx, first.cartId))
    const two = await startSecond((sql) => placeOrder(sql, second.cartId))
    expect(await waitUntilBlocked(two.pid, one.pid)).toBe('advisory')
    expect(two.returned()).toBe(false)

    await one.rollback()
    const outcome = await two.result

    expect(outcome.kind).toBe('accepted')
    expect(await stockOf(owner, product.id)).toBe(0)
    // The first buyer's checkout never happened; its cart is as it was.
    const [{ open }] = await owner`select count(*)::int as open from waitress.cart_items where cart_id = ${first.cartId} and not purchased`
    expect(open).toBe(1)
    expectClean(await checkInvariants(owner, { ...start, checkouts: [{ cartId: second.cartId, wants: second.wants, outcome }] }))
  })

  it('makes two multi-product checkouts queue in product id order instead of deadlocking', async () => {
    const low = await createProduct(owner, { stock: 10 })
    const high = await createProduct(owner, { stock: 10 })
    // Lines added in opposite orders: only the lock order inside place_order keeps them apart.
    const [first, second] = await buyersWith(owner, [
      [
        [high.id, 2],
        [low.id, 2],
      ],
      [
        [low.id, 3],
        [high.id, 3],
      ],
    ])
    const start = await startRun(owner, [low.id, high.id])

    const one = await holdOpen((tx) => placeOrder(tx, first.cartId))
    const two = await startSecond((sql) => placeOrder(sql, second.cartId))
    expect(await waitUntilBlocked(two.pid, one.pid)).toBe('advisory')
    // It queues for the lower id first (its queue is an advisory lock keyed by the product id), though its cart
    // lists that product last.
    const [queuedAt] = await owner<{ objid: number }[]>`
      select objid::bigint as objid from pg_locks where pid = ${two.pid} and locktype = 'advisory' and not granted`
    expect(queuedAt?.objid).toBe(low.id)

    await one.commit()
    const outcome = await two.result

    expect(outcome.kind).toBe('accepted')
    expect([await stockOf(owner, low.id), await stockOf(owner, high.id)]).toEqual([5, 5])
    const checkouts: Attempt[] = [
      { cartId: first.cartId, wants: first.wants, outcome: one.result },
      { cartId: second.cartId, wants: second.wants, outcome },
    ]
    expectClean(await checkInvariants(owner, { ...start, checkouts }))
  })

  it("makes an order's stock release queue behind a checkout that already holds one of its products, instead of deadlocking", async () => {
    // The one-request checkout can hand over to the batch path while holding a
    // product row (the row passed its check, another did not): the batch path
    // then locks from the lowest id again. A release that took the lower row
    // without queueing would wait for the higher one the checkout holds, and
    // the checkout for the lower one it holds: a deadlock (seen in CI).
    const low = await createProduct(owner, { stock: 4 })
    const high = await createProduct(owner, { stock: 10 })
    const [released, drainer, buyer] = await buyersWith(owner, [
      [
        [low.id, 1],
        [high.id, 1],
      ],
      [[low.id, 2]],
      [
        [low.id, 2],
        [high.id, 1],
      ],
    ])
    const placed = await placeOrder(owner, released.cartId)
    if (placed.kind !== 'accepted') throw new Error(`the order to release was not placed: ${JSON.stringify(placed)}`)
    const orderId = placed.orders[0].id
    await owner`select api.act_on_order(${orderId}, 'pay')`

    // Low's stock drops to 1 while the buyer waits in its queue, after it read its lines (2 of low is fine then).
    const drain = await holdOpen((tx) => placeOrder(tx, drainer.cartId))
    const checkout = await startSecond((sql) => placeOrder(sql, buyer.cartId))
    expect(await waitUntilBlocked(checkout.pid, drain.pid)).toBe('advisory')
    // High's row is held by a restock, so the buyer will stop there with high locked and low refused by its check.
    const restock = await holdOpen((tx) => tx`select api.restock_product(${high.id}, 1)`)
    await drain.commit()
    expect(await waitUntilBlocked(checkout.pid, restock.pid)).toBe('transactionid')
    // Low is back in stock, so the batch path will accept the buyer, and lock low after high.
    await owner`select api.restock_product(${low.id}, 5)`
    const reject = await startSecond((sql) => sql`select api.act_on_order(${orderId}, 'reject')`)
    // It queues for low behind the buyer (who holds low's queue), rather than taking low's row and waiting for high.
    expect(await waitUntilBlocked(reject.pid, checkout.pid)).toBe('advisory')

    await restock.commit()
    const outcome = await checkout.result
    await reject.result

    expect(outcome.kind).toBe('accepted')
    const [{ state }] = await owner<{ state: string }[]>`select state::text from waitress.orders where id = ${orderId}`
    expect(state).toBe('rejected')
    // low: 4 - 1 (the rejected order) - 2 (drained) + 5 (restock) - 2 (the buyer) + 1 (released); high: 10 - 1 + 1 - 1 + 1.
    expect([await stockOf(owner, low.id), await stockOf(owner, high.id)]).toEqual([5, 10])
    expect(await auditOf(owner, [low.id, high.id])).toEqual([])
  })

  it("has every function that locks product rows queue for them first (the product's advisory lock)", async () => {
    // The stepped test above is one interleaving; this holds the rule for all
    // of them: a statement that locks product rows (FOR NO KEY UPDATE) comes
    // after the function has queued. A stock correction or restock, which
    // takes one product's row by its id and waits for nothing else while it
    // holds it, needs no queue.
    const functions = await owner<{ name: string; source: string }[]>`
      select p.oid::regprocedure::text as name, p.prosrc as source
        from pg_proc p join pg_namespace n on n.oid = p.pronamespace
       where n.nspname in ('api', 'waitress') and p.prolang = (select oid from pg_language where lanname = 'plpgsql')`
    const offenders: string[] = []
    let locking = 0
    for (const { name, source } of functions) {
      const statements = source.replace(/--[^\n]*/g, '').split(';')
      statements.forEach((statement, i) => {
        if (!/from\s+waitress\.products\b[\s\S]*for\s+no\s+key\s+update/i.test(statement)) return
        if (/where\s+(\w+\.)?id\s*=\s*p_\w+\b/i.test(statement)) return // one row, by the id a caller passed
        locking++
        if (!statements.slice(0, i).join(';').includes('pg_advisory_xact_lock(1463899218')) offenders.push(`${name}: ${statement.trim().slice(0, 80)}`)
      })
    }
    expect(locking).toBeGreaterThanOrEqual(4) // the checkout's two attempts, its one-request path, waitress.lock_products
    expect(offenders).toEqual([])
  })

  it('makes an add to the cart wait for its checkout, then start a new line rather than grow the sold one', async () => {
    const product = await createProduct(owner, { stock: 10 })
    const cart = await cartFor(owner)
    const line = await addItem(owner, cart.id, product.id, 1)
    const start = await startRun(owner, [product.id])

    const one = await holdOpen((tx) => placeOrder(tx, cart.id))
    const two = await startSecond((sql) => sql<{ id: number; quantity: number }[]>`select (i->>'id')::bigint as id, (i->>'quantity')::int as quantity from api.add_cart_item(${cart.id}, ${product.id}, 2) i`)
    expect(await waitUntilBlocked(two.pid, one.pid)).toBe('transactionid')
    expect(two.returned()).toBe(false)

    await one.commit()
    const [added] = await two.result

    expect(added.id).not.toBe(line)
    expect(added.quantity).toBe(2)
    expect(one.result.kind === 'accepted' && one.result.orders[0].lines.map((l) => [l.cartItemId, l.quantity])).toEqual([[line, 1]])
    const checkouts: Attempt[] = [{ cartId: cart.id, wants: new Map([[product.id, 1]]), outcome: one.result }]
    expectClean(await checkInvariants(owner, { ...start, checkouts }))
  })

  it("lets a buyer add the product to another cart while a checkout holds that product's lock, without waiting", async () => {
    const product = await createProduct(owner, { stock: 10 })
    const [buyer] = await buyersWith(owner, [[[product.id, 3]]])
    const other = await cartFor(owner)
    const start = await startRun(owner, [product.id])

    const one = await holdOpen((tx) => placeOrder(tx, buyer.cartId))
    // The checkout holds the product FOR NO KEY UPDATE; the new line's foreign key
    // takes only a key-share lock on it, which does not conflict. Were it to wait,
    // lock_timeout would fail it with 55P03.
    const [added] = await api.begin(async (tx) => {
      await tx`set local lock_timeout = '1s'`
      return tx<{ id: number; quantity: number }[]>`select (i->>'id')::bigint as id, (i->>'quantity')::int as quantity from api.add_cart_item(${other.id}, ${product.id}, 2) i`
    })
    expect(added.quantity).toBe(2)
    expect(await stockOf(owner, product.id)).toBe(10) // the checkout has not committed yet

    await one.commit()
    expect(one.result.kind).toBe('accepted')
    expect(await stockOf(owner, product.id)).toBe(7)
    expectClean(await checkInvariants(owner, { ...start, checkouts: [{ cartId: buyer.cartId, wants: buyer.wants, outcome: one.result }] }))
  })

  it('makes a second checkout of the same cart wait, then find nothing left to order (WA006)', async () => {
    const product = await createProduct(owner, { stock: 10 })
    const [buyer] = await buyersWith(owner, [[[product.id, 4]]])
    const start = await startRun(owner, [product.id])

    const one = await holdOpen((tx) => placeOrder(tx, buyer.cartId))
    const two = await startSecond((sql) => placeOrder(sql, buyer.cartId))
    expect(await waitUntilBlocked(two.pid, one.pid)).toBe('transactionid')

    await one.commit()
    const outcome = await two.result

    expect(outcome).toMatchObject({ kind: 'refused', code: 'WA006' })
    expect(await stockOf(owner, product.id)).toBe(6)
    const checkouts: Attempt[] = [
      { cartId: buyer.cartId, wants: buyer.wants, outcome: one.result },
      { cartId: buyer.cartId, wants: buyer.wants, outcome },
    ]
    expectClean(await checkInvariants(owner, { ...start, checkouts, expectedRefusals: ['WA006'] }))
  })
})
