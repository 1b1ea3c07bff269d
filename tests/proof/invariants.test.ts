import { afterAll, describe, expect, it } from 'bun:test'
import { fetchFacts } from '../../proof/api-facts.ts'
import { checkInvariants, deadlockCount, readFacts, startRun } from '../../proof/database-facts.ts'
import { INVARIANTS, judge, type Attempt, type Facts, type Run } from '../../proof/judge.ts'
import { recyclablePool, testDatabaseUrl, testSql } from '../support/db.ts'
import { createProduct } from '../support/fixtures.ts'
import { barrier, buyersWith, expectClean, httpChannel, scarceRace, sqlChannel } from '../support/proof.ts'
import { unsafeCheckout } from '../support/unsafe-checkout.ts'

const sql = testSql()
const viaSql = sqlChannel(12)
afterAll(() => viaSql.close())

/** An honest race to tamper with: 8 contenders, two sellers. */
const cleanRace = () => scarceRace(viaSql, { contenders: 8, sellers: [31, 32] })

const violated = (run: Run, facts: Facts) => new Set(judge(run, facts).violations.map((v) => v.invariant))

describe('the invariant checker', () => {
  it('passes a race run through place_order, and tallies it per product', async () => {
    const { run, facts, scarce, plenty } = await cleanRace()
    const verdict = judge(run, facts)
    expectClean(verdict)
    expect(verdict.checked).toEqual(INVARIANTS.map((i) => i.name))
    const scarceTally = verdict.products.find((p) => p.productId === scarce.id)
    const plentyTally = verdict.products.find((p) => p.productId === plenty.id)
    expect(scarceTally).toMatchObject({ productId: scarce.id, initial: 5, sold: 4, remaining: 1, accepted: 2, refused: { WA004: 6 } })
    expect(plentyTally).toMatchObject({ productId: plenty.id, initial: 100, sold: 2, remaining: 98, accepted: 2, refused: { 'other line': 6 } })
  })

  it('catches an unsafe read-then-write checkout that oversells', async () => {
    const product = await createProduct(sql, { name: 'Last five', stock: 5 })
    const buyers = await buyersWith(
      sql,
      Array.from({ length: 10 }, () => [[product.id, 1]]),
    )
    const start = await startRun(sql, [product.id])
    // Every buyer reads "5 left" before any of them writes.
    const allHaveRead = barrier(buyers.length)

    const checkouts = await Promise.all(
      buyers.map(async (b) => ({ cartId: b.cartId, buyerId: b.userId, wants: b.wants, outcome: await unsafeCheckout(sql, b.cartId, allHaveRead) })),
    )

    expect(checkouts.every((c) => c.outcome.kind === 'accepted')).toBe(true)
    const verdict = await checkInvariants(sql, { ...start, checkouts })
    expect(verdict.ok).toBe(false)
    expect(verdict.violations).toContainEqual({
      invariant: 'stock-conserved',
      productId: product.id,
      message: `product ${product.id}: started with 5, has 4 and sold 10: 9 more than it had`,
    })
    expect(verdict.products[0]).toMatchObject({ initial: 5, sold: 10, remaining: 4, accepted: 10 })
  })

  it('passes the same ten buyers through place_order', async () => {
    const product = await createProduct(sql, { name: 'Last five', stock: 5 })
    const buyers = await buyersWith(
      sql,
      Array.from({ length: 10 }, () => [[product.id, 1]]),
    )
    const start = await startRun(sql, [product.id])
    const checkouts = await Promise.all(buyers.map(async (b) => ({ cartId: b.cartId, wants: b.wants, outcome: await viaSql.checkout(b.cartId) })))
    const verdict = await checkInvariants(sql, { ...start, checkouts })
    expectClean(verdict)
    expect(verdict.products[0]).toMatchObject({ initial: 5, sold: 5, remaining: 0, accepted: 5, refused: { WA004: 5 } })
  })

  it('finds what is written behind its back: a restock, an order for a refused cart, a line marked sold', async () => {
    const { run, scarce } = await cleanRace()
    const refused = run.checkouts.find((c) => c.outcome.kind === 'refused')!
    const [item] = await sql<{ id: number; product_id: number; quantity: number }[]>`
      select id, product_id, quantity from waitress.cart_items where cart_id = ${refused.cartId} and product_id = ${scarce.id}`

    await sql`update waitress.products set stock = stock + 1 where id = ${scarce.id}`
    await sql`update waitress.cart_items set purchased = true where id = ${item.id}`
    const [order] = await sql<{ id: number }[]>`
      insert into waitress.orders (buyer_id, seller_id, total_price) values (${refused.buyerId!}, ${scarce.seller_id}, ${scarce.price * item.quantity})
      returning id`
    await sql`
      insert into waitress.order_items (order_id, product_id, cart_item_id, quantity, price, weight)
      values (${order.id}, ${scarce.id}, ${item.id}, ${item.quantity}, ${scarce.price}, ${scarce.weight})`

    const verdict = await checkInvariants(sql, run)
    const found = (invariant: string) => verdict.violations.filter((v) => v.invariant === invariant)
    expect(found('stock-conserved').map((v) => v.productId)).toEqual([scarce.id])
    expect(found('no-unreported-orders').map((v) => v.orderId)).toEqual([order.id])
    expect(found('refusal-left-nothing').map((v) => v.cartId)).toEqual([refused.cartId, refused.cartId, refused.cartId])
    // Neither write went through the functions, so neither is in the ledger.
    expect(found('ledger-balanced').map((v) => v.productId)).toEqual([scarce.id])
  })

  it('counts the stock of a cancelled order as given back, and an unrecorded restock as a ledger gap', async () => {
    const { run, facts, plenty } = await cleanRace()
    const soldBefore = new Map(judge(run, facts).products.map((p) => [p.productId, p.sold]))
    const accepted = run.checkouts.find((c) => c.outcome.kind === 'accepted')!
    const [order] = accepted.outcome.kind === 'accepted' ? accepted.outcome.orders : []
    await sql`select api.act_on_order(${order.id}, 'cancel')`

    const verdict = await checkInvariants(sql, run)
    expectClean(verdict)
    const given = new Map(order.lines.map((line) => [line.productId, line.quantity]))
    expect(verdict.products.map((p) => [p.productId, p.sold])).toEqual(
      [...soldBefore].map(([productId, sold]) => [productId, sold - (given.get(productId) ?? 0)]),
    )

    await sql`update waitress.products set stock = stock + 1 where id = ${plenty.id}`
    const behindItsBack = await checkInvariants(sql, run)
    expect(behindItsBack.violations.map((v) => [v.invariant, v.productId])).toEqual([
      ['stock-conserved', plenty.id],
      ['ledger-balanced', plenty.id],
    ])
  })

  it('can fail on every invariant', async () => {
    const { run, facts, plenty, idle } = await cleanRace()
    expectClean(judge(run, facts))
    const accepted = run.checkouts.findIndex((c) => c.outcome.kind === 'accepted')
    const refused = run.checkouts.findIndex((c) => c.outcome.kind === 'refused')
    const tampered = (change: (run: Run, facts: Facts) => void) => {
      const copy = { run: structuredClone(run), facts: structuredClone(facts) }
      change(copy.run, copy.facts)
      return violated(copy.run, copy.facts)
    }
    const acceptedOrder = (r: Run) => (r.checkouts[accepted].outcome as Extract<Attempt['outcome'], { kind: 'accepted' }>).orders[0]

    const cases: [invariant: string, change: (run: Run, facts: Facts) => void][] = [
      ['no-failures', (r) => void ((r.checkouts as Attempt[])[refused].outcome = { kind: 'failed', status: 503, code: '40P01', message: 'deadlock detected' })],
      ['no-failures', (r) => void ((r.checkouts as Attempt[])[refused].outcome = { kind: 'failed', status: 0, message: 'connection reset' })],
      ['refusal-expected', (r) => void ((r.checkouts[refused].outcome as { code?: string }).code = 'WA005')],
      ['stock-nonnegative', (_, f) => void (f.products.get(plenty.id)!.stock = -1)],
      ['stock-conserved', (_, f) => void (f.products.get(plenty.id)!.stock += 1)],
      ['accepted-persisted', (_, f) => void f.orders.delete(acceptedOrder(run).id)],
      ['accepted-persisted', (r) => void (acceptedOrder(r).totalPrice += 1)],
      ['accepted-persisted', (r) => void (acceptedOrder(r).lines[0].quantity += 1)],
      ['accepted-persisted', (r) => void ((r.checkouts as Attempt[])[accepted].wants = new Map([[plenty.id, 1]]))],
      ['accepted-persisted', (r) => void (r.checkouts as Attempt[]).push(structuredClone(r.checkouts[accepted]))],
      ['refusal-left-nothing', (r, f) => void ([...f.cartItems.values()].find((i) => i.cartId === r.checkouts[refused].cartId)!.purchased = true)],
      ['refusal-left-nothing', (r, f) => void f.cartItems.delete([...f.cartItems.values()].find((i) => i.cartId === r.checkouts[refused].cartId)!.id)],
      ['no-unreported-orders', (r) => void (r.checkouts as Attempt[]).splice(accepted, 1)],
      [
        'cart-item-sold-once',
        (_, f) => {
          const copy = structuredClone(f.orders.get(acceptedOrder(run).id)!)
          f.orders.set(copy.id + 1_000_000, { ...copy, id: copy.id + 1_000_000 })
        },
      ],
      ['refusal-true', (r) => void (r.checkouts[refused].outcome as { details: any }).details.shortages[0].available++],
      [
        'refusal-true',
        (r) =>
          void (r.checkouts as Attempt[]).push({
            cartId: idle.cartId,
            wants: idle.wants,
            outcome: {
              kind: 'refused',
              status: 422,
              code: 'WA004',
              message: 'insufficient stock',
              details: { shortages: [{ product_id: plenty.id, requested: 1, available: 0 }] },
            },
          }),
      ],
      ['ledger-balanced', (_, f) => void f.audit!.push({ productId: plenty.id, stock: 98, ledgerStock: 97, soldInLedger: 2, soldInOrders: 2 })],
      ['no-deadlocks', (r, f) => void (f.deadlocks = r.deadlocksBefore! + 1)],
      // A deadlock the service retried: its client got an answer, the service's counter moved.
      [
        'no-deadlocks',
        (r, f) => {
          r.retriesBefore = { deadlocks: 4, serializationFailures: 0 }
          f.retries = { deadlocks: 5, serializationFailures: 0 }
        },
      ],
      // No fault injected, yet the counter cannot be compared (a restart in between): no proof of none.
      ['no-deadlocks', (_, f) => void (f.statsEpoch = 'another life of the server')],
      [
        'no-serialization-failures',
        (r, f) => {
          r.retriesBefore = { deadlocks: 0, serializationFailures: 0 }
          f.retries = { deadlocks: 0, serializationFailures: 1 }
        },
      ],
    ]

    const caught = new Set<string>()
    for (const [invariant, change] of cases) {
      const found = tampered(change)
      expect({ invariant, found: found.has(invariant) }).toEqual({ invariant, found: true })
      caught.add(invariant)
    }
    expect([...caught].sort()).toEqual(INVARIANTS.map((i) => i.name).sort())
  })

  it('counts a deadlock the moment it happened: every session has published its statistics before the counter is read', async () => {
    // Two sessions of a pool of their own deadlock on two rows; PostgreSQL keeps
    // the count in the session that detected it, unpublished, for up to 10 s.
    await sql`create table public.test_deadlock_rows (id int primary key, v int)`
    await sql`insert into public.test_deadlock_rows values (1, 0), (2, 0)`
    const pool = recyclablePool(testDatabaseUrl(), { max: 2, applicationName: `waitress-deadlock-${process.pid}` })
    try {
      const { deadlocks: before } = await deadlockCount(sql, { flush: false })
      const [one, two] = [await pool.reserve(), await pool.reserve()]
      await one`begin`
      await two`begin`
      await one`update public.test_deadlock_rows set v = 1 where id = 1`
      await two`update public.test_deadlock_rows set v = 1 where id = 2`
      const codes = await Promise.all([
        one`update public.test_deadlock_rows set v = 2 where id = 2`.then(() => 'ok', (e) => e.code),
        two`update public.test_deadlock_rows set v = 2 where id = 1`.then(() => 'ok', (e) => e.code),
      ])
      await Promise.all([one`rollback`, two`rollback`])
      one.release()
      two.release()
      expect(codes.sort()).toEqual(['40P01', 'ok'])

      const after = await deadlockCount(sql)
      expect(after.deadlocks - before).toBe(1)
      expect(after.unflushed).toBeUndefined()
      // The sessions that held it were ended (their pool carries on with new ones), so that they published it.
      const [{ left }] = await sql`select count(*)::int as left from pg_stat_activity where application_name = ${`waitress-deadlock-${process.pid}`}`
      expect(left).toBe(0)
    } finally {
      await pool.end({ timeout: 1 })
      await sql`drop table public.test_deadlock_rows`
    }
  })

  it('names the retries the service made during a run and judges a retried deadlock a violation, though every client was answered', async () => {
    const { run, facts } = await cleanRace()
    const retried = judge(
      { ...run, retriesBefore: { deadlocks: 2, serializationFailures: 0 } },
      { ...facts, retries: { deadlocks: 3, serializationFailures: 0 } },
    )
    expect(retried.retries).toEqual({ deadlocks: 1, serializationFailures: 0 })
    expect(retried.violations).toEqual([
      { invariant: 'no-deadlocks', message: 'the service ran 1 statements again after a deadlock (40P01): its clients never heard of them' },
    ])
    expect(judge(run, facts)).toMatchObject({ ok: true, deadlocks: 0, retries: undefined })
  })

  it('reaches the same verdict through the API, and sees a restock behind its back there too', async () => {
    const { run, plenty } = await cleanRace()
    const http = httpChannel()
    try {
      const verdict = judge(run, await fetchFacts(http.baseUrl!, run))
      expectClean(verdict)
      expect(verdict.source).toBe('api')
      expect(verdict.notes).toHaveLength(1)
      expect(verdict.products).toEqual(judge(run, await readFacts(sql, run)).products)

      await sql`update waitress.products set stock = stock + 1 where id = ${plenty.id}`
      const tampered = judge(run, await fetchFacts(http.baseUrl!, run))
      expect(tampered.violations.map((v) => [v.invariant, v.productId])).toEqual([
        ['stock-conserved', plenty.id],
        ['ledger-balanced', plenty.id],
      ])
    } finally {
      await http.close()
    }
  })
})
