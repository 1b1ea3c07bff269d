import { describe, expect, it } from 'bun:test'
import postgres from 'postgres'
import type { Sql } from '../../src/db/client.ts'
import { DatabaseBusyError } from '../../src/db/gate.ts'
import { OrderPlacer, OUTCOME_UNKNOWN, Refused, type PlaceRequest } from '../../src/order-placer.ts'
import { apiSql, testSql } from '../support/db.ts'
import { addItem, auditOf, cartFor, createProduct, stockOf } from '../support/fixtures.ts'

const sql = testSql()
const whole = (cartId: number): PlaceRequest => ({ cart_id: cartId, item_ids: null, note: null, one_seller: false })

describe('checkout coalescing (no switch)', () => {
  it('coalesces concurrent checkouts by itself, each buyer getting their own order or refusal in arrival order', async () => {
    const hot = await createProduct(sql, { name: 'Hot', stock: 150 })
    const carts = await Promise.all(Array.from({ length: 200 }, async () => {
      const cart = await cartFor(sql)
      await addItem(sql, cart.id, hot.id, 1)
      return cart
    }))
    const placer = new OrderPlacer(apiSql(), { callsInFlight: 2 })

    const outcomes = await Promise.allSettled(carts.map((cart) => placer.place(whole(cart.id))))

    const accepted = outcomes.filter((o) => o.status === 'fulfilled')
    const refused = outcomes.filter((o) => o.status === 'rejected').map((o) => (o as PromiseRejectedResult).reason)
    expect(accepted).toHaveLength(150)
    expect(refused).toHaveLength(50)
    for (const error of refused) {
      expect(error).toBeInstanceOf(postgres.PostgresError)
      expect(error.code).toBe('WA004')
    }
    // Refusals in arrival order: the first 150 buyers bought, the last 50 were refused.
    expect(outcomes.slice(0, 150).every((o) => o.status === 'fulfilled')).toBe(true)
    expect(placer.batching.checkouts).toBe(200)
    expect(placer.batching.batches).toBeGreaterThan(0)
    expect(placer.batching.calls).toBeLessThan(200)
    expect(await stockOf(sql, hot.id)).toBe(0)
    expect(await auditOf(sql, [hot.id])).toEqual([])
  })

  it('sends a checkout that finds no call in flight at once, alone', async () => {
    const product = await createProduct(sql, { stock: 50 })
    const placer = new OrderPlacer(apiSql())
    for (let i = 0; i < 5; i++) {
      const cart = await cartFor(sql)
      await addItem(sql, cart.id, product.id, 1)
      await placer.place(whole(cart.id))
    }
    expect(placer.batching).toMatchObject({ calls: 5, batches: 0, checkouts: 5 })
    expect(await stockOf(sql, product.id)).toBe(45)
  })

  it('takes checkouts with an Idempotency-Key into a batch and records each key in the batch', async () => {
    const product = await createProduct(sql, { stock: 100 })
    const buyers = await Promise.all(Array.from({ length: 40 }, async () => {
      const cart = await cartFor(sql)
      const item = await addItem(sql, cart.id, product.id, 1)
      return { buyerId: cart.user_id, item }
    }))
    const placer = new OrderPlacer(apiSql(), { callsInFlight: 1 })
    const order = (b: (typeof buyers)[number]) =>
      placer.place({ buyer_id: b.buyerId, item_ids: [b.item], note: null, one_seller: true }, `key-${b.buyerId}`)

    const first = await Promise.all(buyers.map(order))
    expect(placer.batching.batches).toBeGreaterThan(0)
    expect(first.every((p) => !p.replayed && p.orders.length === 1)).toBe(true)

    // Replayed alone or in a batch, each key returns its first order and orders nothing more.
    const again = await Promise.all(buyers.map(order))
    expect(again.every((p) => p.replayed)).toBe(true)
    expect(again.map((p) => p.orders[0].id)).toEqual(first.map((p) => p.orders[0].id))
    expect(await stockOf(sql, product.id)).toBe(60)
    const [{ keys }] = await sql<{ keys: number }[]>`
      select count(*)::int as keys from waitress.idempotency_keys
       where user_id = any (${buyers.map((b) => b.buyerId)}::bigint[]) and response_status = 201`
    expect(keys).toBe(40)
  })

  it("never fails a buyer for another's request: limits, overflow and notes are refusals of their own", async () => {
    const product = await createProduct(sql, { stock: 100 })
    const dear = await createProduct(sql, { stock: 100, price: 4_000_000_000_000_000_000 })
    const honest = await Promise.all(Array.from({ length: 12 }, async () => {
      const cart = await cartFor(sql)
      await addItem(sql, cart.id, product.id, 1)
      return cart
    }))
    const overflow = await cartFor(sql)
    await addItem(sql, overflow.id, dear.id, 3)
    const named = await cartFor(sql)
    await addItem(sql, named.id, product.id, 1)
    const placer = new OrderPlacer(apiSql(), { callsInFlight: 1 })

    const requests: [PlaceRequest, string][] = [
      ...honest.slice(0, 4).map((c) => [whole(c.id), 'ok'] as [PlaceRequest, string]),
      [whole(overflow.id), 'WA113'],
      [{ ...whole(named.id), item_ids: Array.from({ length: 101 }, (_, i) => 1_000_000_000 + i) }, 'WA110'],
      [{ ...whole(named.id), note: 'x'.repeat(1001) }, 'WA111'],
      ...honest.slice(4).map((c) => [whole(c.id), 'ok'] as [PlaceRequest, string]),
    ]
    const outcomes = await Promise.allSettled(requests.map(([r]) => placer.place(r)))

    expect(outcomes.map((o) => (o.status === 'fulfilled' ? 'ok' : (o.reason as Refused).code))).toEqual(requests.map(([, code]) => code))
    expect(await stockOf(sql, product.id)).toBe(100 - honest.length)
    expect(await stockOf(sql, dear.id)).toBe(100)
  })

  it('collapses duplicate item ids before counting them against the limit', async () => {
    const product = await createProduct(sql, { stock: 10 })
    const cart = await cartFor(sql)
    const item = await addItem(sql, cart.id, product.id, 1)
    const placed = await new OrderPlacer(apiSql()).place({ ...whole(cart.id), item_ids: Array.from({ length: 500 }, () => item) })
    expect(placed.orders).toHaveLength(1)
  })
})

/**
 * A stand-in for the pool: answers api.place_order / api.place_orders as the
 * script says, and records each call's cart ids in the order they were sent.
 */
function scriptedSql(fail: (cartIds: number[]) => unknown | undefined) {
  const calls: number[][] = []
  let release: () => void = () => {}
  const gate = new Promise<void>((resolve) => (release = resolve))
  const fake = (async (strings: TemplateStringsArray, ...values: unknown[]) => {
    const batched = strings.join('?').includes('place_orders')
    const cartIds = batched ? (values[0] as PlaceRequest[]).map((r) => r.cart_id!) : [values[0] as number]
    calls.push(cartIds)
    if (cartIds[0] === 0) await gate // the blocker: holds the one slot until released
    const error = fail(cartIds)
    if (error) throw error
    const order = (id: number) => ({ orders: [{ id }], replayed: false })
    return batched ? [{ outcomes: cartIds.map(order) }] : [{ placed: order(cartIds[0]) }]
  }) as unknown as Sql
  // The parameters as they are: typed ones (sql.typed) unwrapped.
  Object.assign(fake, { json: (x: unknown) => x, typed: (x: unknown) => x })
  return { sql: fake, calls, release }
}

/** Sends a blocker, then `ids` while it holds the only slot, so they go as one batch; returns each one's outcome. */
async function batchOf(fake: ReturnType<typeof scriptedSql>, ids: number[]) {
  const placer = new OrderPlacer(fake.sql, { callsInFlight: 1 })
  const blocker = placer.place(whole(0))
  const outcomes = Promise.allSettled(ids.map((id) => placer.place(whole(id))))
  fake.release()
  await blocker
  return (await outcomes).map((o) => (o.status === 'fulfilled' ? 'ok' : ((o.reason as { code?: string }).code ?? String(o.reason))))
}

const pgError = (code: string) => new postgres.PostgresError({ code, message: `error ${code}`, severity: 'ERROR' } as never)

describe('a bulky checkout', () => {
  it('goes in a lane of its own, never in a batch of everyday checkouts', async () => {
    const fake = scriptedSql(() => undefined)
    const placer = new OrderPlacer(fake.sql, { callsInFlight: 1 })
    const blocker = placer.place(whole(0))
    const bulky = { ...whole(99), item_ids: Array.from({ length: 11 }, (_, i) => i + 1) }
    const outcomes = Promise.all([placer.place(whole(1)), placer.place(bulky), placer.place(whole(2))])
    fake.release()
    await blocker
    await outcomes
    expect(fake.calls).toContainEqual([99])
    expect(fake.calls).toContainEqual([1, 2])
  })
})

describe('the bulky lane', () => {
  it('rests three times as long as each call took before the next one', async () => {
    const sent: number[] = []
    const done: number[] = []
    const slow = (async (strings: TemplateStringsArray) => {
      sent.push(performance.now())
      await Bun.sleep(30)
      done.push(performance.now())
      const batched = strings.join('?').includes('place_orders')
      const order = { orders: [{ id: 1 }], replayed: false }
      return batched ? [{ outcomes: [order, order] }] : [{ placed: order }]
    }) as unknown as Sql
    Object.assign(slow, { json: (x: unknown) => x, typed: (x: unknown) => x })
    const placer = new OrderPlacer(slow)
    const bulky = () => placer.place({ ...whole(1), item_ids: Array.from({ length: 11 }, (_, i) => i + 1) })
    await bulky()
    await bulky()
    expect(sent).toHaveLength(2)
    expect(sent[1] - done[0]).toBeGreaterThanOrEqual(3 * (done[0] - sent[0]) - 5)
  })
})

describe('a checkout waiting for a call slot', () => {
  it('is refused with 503 (queue_timeout) once it has waited maxWaitMs, as the pool gate does', async () => {
    const fake = scriptedSql(() => undefined)
    const placer = new OrderPlacer(fake.sql, { callsInFlight: 1, maxWaitMs: 50 })
    const blocker = placer.place(whole(0))
    const waited = await placer.place(whole(1)).catch((error) => error)
    expect(waited).toBeInstanceOf(DatabaseBusyError)
    expect(waited.reason).toBe('queue_timeout')
    fake.release()
    await blocker
    expect(fake.calls).toEqual([[0]])
  })
})

describe('a failing batch', () => {
  for (const code of ['57014', '55P03', '22003', '23514']) {
    it(`is bisected in arrival order when it fails with ${code}, so only the request at fault fails`, async () => {
      const fake = scriptedSql((ids) => (ids.includes(5) ? pgError(code) : undefined))
      const outcomes = await batchOf(fake, [1, 2, 3, 4, 5, 6, 7, 8])
      expect(outcomes).toEqual(['ok', 'ok', 'ok', 'ok', code, 'ok', 'ok', 'ok'])
      // Each half is decided before the next one is sent: never in parallel, never out of order.
      expect(fake.calls.slice(1)).toEqual([[1, 2, 3, 4, 5, 6, 7, 8], [1, 2, 3, 4], [5, 6, 7, 8], [5, 6], [5], [6], [7, 8]])
    })
  }

  it('stops halving when every part times out past the wait budget: the database is slow, not a request; the rest get 503 unsent', async () => {
    // Each call "takes" 2 s on the placer's clock; a checkout may wait 5 s for a call slot.
    let now = 0
    const fake = scriptedSql((ids) => {
      if (ids[0] === 0) return undefined
      now += 2_000
      return pgError('57014')
    })
    const placer = new OrderPlacer(fake.sql, { callsInFlight: 1, maxWaitMs: 5_000, clock: () => now })
    const blocker = placer.place(whole(0))
    const outcomes = Promise.allSettled([1, 2, 3, 4, 5, 6, 7, 8].map((id) => placer.place(whole(id))))
    fake.release()
    await blocker
    const codes = (await outcomes).map((o) => (o.status === 'rejected' ? (o.reason as { code?: string }).code : 'ok'))

    expect(codes).toEqual(Array(8).fill('57014'))
    // The whole batch at 2 s, its first half at 4 s, the first quarter at 6 s: past 5 s, nothing more is sent.
    expect(fake.calls.slice(1)).toEqual([[1, 2, 3, 4, 5, 6, 7, 8], [1, 2, 3, 4], [1, 2]])
  })

  it('fails everyone in it when the server is unavailable, without splitting', async () => {
    const fake = scriptedSql((ids) => (ids[0] === 0 ? undefined : pgError('57P01')))
    expect(await batchOf(fake, [1, 2, 3])).toEqual(['57P01', '57P01', '57P01'])
    expect(fake.calls).toHaveLength(2)
  })

  it(`answers ${OUTCOME_UNKNOWN} ("may have been placed") when the connection broke after the call was sent`, async () => {
    const broken = Object.assign(new Error('write CONNECTION_CLOSED'), { code: 'CONNECTION_CLOSED' })
    const fake = scriptedSql((ids) => (ids[0] === 0 ? undefined : broken))
    expect(await batchOf(fake, [1, 2])).toEqual([OUTCOME_UNKNOWN, OUTCOME_UNKNOWN])
  })
})
