import { afterEach, describe, expect, it } from 'bun:test'
import { startPurging } from '../../src/db/maintenance.ts'
import { startExpiryTimer } from '../../src/expiry.ts'
import { OrderPlacer, type OrderPlacerEvents } from '../../src/order-placer.ts'
import type { Schedule } from '../../src/schedule.ts'
import { apiSql, testSql } from '../support/db.ts'
import { addItem, agePastDeadline, cartFor, createProduct, placedOrder, stockOf } from '../support/fixtures.ts'
import { holdingStatements } from '../support/held.ts'
import { until } from '../support/wait.ts'

/**
 * The service's clocks, driven by hand: the expiry and purge timers take a
 * schedule and the order placer its call slots, so these tests tick them
 * instead of waiting for time to pass.
 */
const sql = testSql()

/** A schedule that never fires by itself: the test calls tick(). */
function manualSchedule() {
  const state: { tick?: () => Promise<void> | void; everyMs?: number; stopped: boolean } = { stopped: false }
  const schedule: Schedule = (tick, everyMs) => {
    state.tick = tick
    state.everyMs = everyMs
    return () => void (state.stopped = true)
  }
  return { schedule, state, tick: async () => await state.tick!() }
}

const logged: { msg: string; fields?: Record<string, unknown> }[] = []
const log = (msg: string, fields?: Record<string, unknown>) => void logged.push({ msg, fields })
afterEach(() => void (logged.length = 0))

async function stateOf(orderId: number): Promise<string> {
  const [{ state }] = await sql<{ state: string }[]>`select state::text from waitress.orders where id = ${orderId}`
  return state
}

/**
 * A tick runs a job only when its lease (waitress.job_leases) says a period
 * has passed since any process ran it: these make the period pass, as
 * agePastDeadline makes an order overdue, instead of waiting for it.
 */
async function leaseFree(job: string) {
  await sql`delete from waitress.job_leases where job = ${job}`
}
async function periodPassed(job: string) {
  await sql`update waitress.job_leases set ran_at = ran_at - interval '1 day' where job = ${job}`
}

describe('the expiry timer', () => {
  afterEach(() => leaseFree('expire_orders'))

  it('expires the overdue orders at each tick of its schedule once EXPIRE_ORDERS_EVERY has passed, and stops when told', async () => {
    await leaseFree('expire_orders')
    const product = await createProduct(sql, { stock: 5 })
    const orderId = await placedOrder(sql, product.id, 2)
    const timer = manualSchedule()
    const stop = startExpiryTimer(apiSql(), { ttlSeconds: 30 * 60, everySeconds: 60, log, schedule: timer.schedule })
    expect(timer.state.everyMs).toBe(60_000)

    await timer.tick()
    expect(await stateOf(orderId)).toBe('pending') // not overdue yet

    await agePastDeadline(sql, [orderId])
    await timer.tick()
    expect(await stateOf(orderId)).toBe('pending') // overdue, but the job ran less than a period ago

    await periodPassed('expire_orders')
    await timer.tick()
    expect(await stateOf(orderId)).toBe('expired')
    expect(await stockOf(sql, product.id)).toBe(5)
    expect(logged).toContainEqual({ msg: 'expired overdue orders', fields: { expired: expect.any(Number) } })

    stop()
    expect(timer.state.stopped).toBe(true)
  })

  it('does nothing at a tick while the previous run is still in the database', async () => {
    await leaseFree('expire_orders')
    const product = await createProduct(sql, { stock: 5 })
    const orderId = await placedOrder(sql, product.id)
    await agePastDeadline(sql, [orderId])
    const slow = holdingStatements(apiSql(), /api\.expire_orders/)
    const timer = manualSchedule()
    startExpiryTimer(slow.sql, { ttlSeconds: 30 * 60, everySeconds: 60, log, schedule: timer.schedule })

    const first = timer.tick()
    await until('the first run to reach the database', () => slow.held() === 1)
    await timer.tick() // returns at once: the first run still holds the turn
    expect(slow.held()).toBe(1)
    slow.release()
    await first

    expect(await stateOf(orderId)).toBe('expired')
  })
})

describe('the purge timer', () => {
  async function expiredKey(): Promise<string> {
    const product = await createProduct(sql, { stock: 5 })
    const cart = await cartFor(sql)
    await addItem(sql, cart.id, product.id, 1)
    const key = `purge-${crypto.randomUUID()}`
    await apiSql()`select api.place_order(${cart.id}, null, null, ${key}, null)`
    await sql`update waitress.idempotency_keys set created_at = now() - interval '25 hours' where key = ${key}`
    return key
  }
  async function endedWindow(): Promise<string> {
    const client = `ip:purge-${crypto.randomUUID()}`
    await apiSql()`select api.rate_limit_hit(${client}, 100, 60)`
    await sql`update waitress.rate_limit_windows set window_ends_at = now() - interval '1 minute' where client = ${client}`
    return client
  }
  const keyLeft = async (key: string) => (await sql`select 1 from waitress.idempotency_keys where key = ${key}`).length > 0
  const windowLeft = async (client: string) => (await sql`select 1 from waitress.rate_limit_windows where client = ${client}`).length > 0

  afterEach(() => leaseFree('purge'))

  it('purges expired idempotency keys and ended rate-limit windows at start, then at each tick once PURGE_INTERVAL has passed', async () => {
    await leaseFree('purge')
    const [key, window] = [await expiredKey(), await endedWindow()]
    const timer = manualSchedule()
    const stop = startPurging(apiSql(), 3600, log, timer.schedule)
    expect(timer.state.everyMs).toBe(3_600_000)
    await until('the purge at start to remove the expired key and the ended window', async () => !(await keyLeft(key)) && !(await windowLeft(window)))

    const [later, laterWindow] = [await expiredKey(), await endedWindow()]
    const fresh = await endedWindow().then(async (client) => {
      await sql`update waitress.rate_limit_windows set window_ends_at = now() + interval '1 minute' where client = ${client}`
      return client
    })
    await timer.tick()
    // The purge ran less than a period ago: this tick leaves them.
    expect([await keyLeft(later), await windowLeft(laterWindow), await windowLeft(fresh)]).toEqual([true, true, true])

    await periodPassed('purge')
    await timer.tick()
    expect([await keyLeft(later), await windowLeft(laterWindow), await windowLeft(fresh)]).toEqual([false, false, true])
    expect(logged.filter((line) => line.msg === 'purged').at(-1)?.fields).toEqual({
      idempotency_keys: expect.any(Number),
      rate_limit_windows: expect.any(Number),
    })
    stop()
    expect(timer.state.stopped).toBe(true)
  })

  it('with PURGE_INTERVAL=0 schedules nothing and purges nothing', async () => {
    const key = await expiredKey()
    const timer = manualSchedule()
    startPurging(apiSql(), 0, log, timer.schedule)
    expect(timer.state.tick).toBeUndefined()
    expect(await keyLeft(key)).toBe(true)
    await apiSql()`select api.purge_idempotency_keys()`
  })
})

describe('coalescing, driven by hand', () => {
  it('gathers the checkouts that arrive while a call is in the database, and sends them in batches of at most maxBatch', async () => {
    const product = await createProduct(sql, { stock: 100 })
    const carts = await Promise.all(
      Array.from({ length: 8 }, async () => {
        const cart = await cartFor(sql)
        await addItem(sql, cart.id, product.id, 1)
        return cart
      }),
    )
    const sizes: number[] = []
    const events: OrderPlacerEvents = { placed() {}, refused() {}, batched: (size) => void sizes.push(size) }
    // The first checkout (alone: the slot was free) is kept in the database until the other seven wait behind it.
    const database = holdingStatements(apiSql(), /api\.place_order\(/)
    const placer = new OrderPlacer(database.sql, { maxBatch: 3, callsInFlight: 1 }, events)

    const placing = carts.map((cart) => placer.place({ cart_id: cart.id, item_ids: null, note: null, one_seller: false }))
    await until('seven checkouts to wait behind the first call', () => database.held() === 1 && placer.batching.waiting === 7, {
      seen: () => JSON.stringify({ held: database.held(), ...placer.batching }),
    })
    database.release()
    const placed = await Promise.all(placing)

    expect(sizes).toEqual([1, 3, 3, 1])
    expect(placed.every((p) => p.orders.length === 1)).toBe(true)
    expect(placer.batching).toEqual({ calls: 4, batches: 2, checkouts: 8, splits: 0, waiting: 0 })
    expect(await stockOf(sql, product.id)).toBe(92)
  })
})
