/**
 * Without prepared statements (DB_PREPARE=false, as behind PgBouncer 1.18 in
 * transaction mode), postgres.js waits for a statement's description before
 * binding its parameters: a round trip of its own, unless every parameter
 * is null or carries its type (patches/postgres+3.4.9.patch). The checkout
 * calls type theirs, so they cost one round trip on either connection.
 */
import { afterAll, beforeAll, describe, expect, it } from 'bun:test'
import { createSql, type Sql } from '../../src/db/client.ts'
import { OrderPlacer, type PlaceRequest } from '../../src/order-placer.ts'
import { appDatabaseUrl, testSql } from '../support/db.ts'
import { addItem, auditOf, cartFor, createProduct, stockOf } from '../support/fixtures.ts'
import { watchWire, type WireWatch } from '../support/wire.ts'

const sql = testSql()
const whole = (cartId: number, note: string | null = null): PlaceRequest => ({ cart_id: cartId, item_ids: null, note, one_seller: false })
/** Flush: postgres.js stopped to wait for a description before binding. */
const FLUSH = 'H'

/** A product with 5 in stock and a cart holding `quantity` of it on one line. */
async function oneLine(quantity: number) {
  const product = await createProduct(sql, { stock: 5 })
  const cart = await cartFor(sql)
  const item = await addItem(sql, cart.id, product.id, quantity)
  return { product, cart, item }
}

describe('without prepared statements (DB_PREPARE=false)', () => {
  let wire: WireWatch
  let unprepared: Sql

  beforeAll(async () => {
    wire = await watchWire(appDatabaseUrl())
    unprepared = createSql(wire.url, { max: 2, prepare: false, role: 'waitress_api' })
    await unprepared`select 1` // the sessions' own start (array types) is not what is measured
  })
  afterAll(async () => {
    await unprepared.end({ timeout: 5 })
    await wire.close()
  })

  it('sends a lone checkout in one round trip: parse, describe, bind, execute and sync together', async () => {
    const { product, cart, item } = await oneLine(2)
    const placer = new OrderPlacer(unprepared)
    wire.reset()

    const placed = await placer.place({ ...whole(cart.id, 'ring twice'), item_ids: [item], user_id: cart.user_id }, 'unprepared-key-1')

    expect(wire.sent()).toEqual(['P', 'D', 'B', 'E', 'S'])
    expect(placed.orders).toHaveLength(1)
    expect(placed.orders[0].note).toBe('ring twice')
    expect(await stockOf(sql, product.id)).toBe(3)
    // The key was recorded: the same call again replays the order.
    const again = await placer.place({ ...whole(cart.id, 'ring twice'), item_ids: [item], user_id: cart.user_id }, 'unprepared-key-1')
    expect(again.replayed).toBe(true)
    expect(again.orders[0].id).toBe(placed.orders[0].id)
    expect(await auditOf(sql, [product.id])).toEqual([])
  })

  it('sends a buyer checkout with nulls among its parameters in one round trip too', async () => {
    const { product, cart, item } = await oneLine(1)
    const placer = new OrderPlacer(unprepared)
    wire.reset()

    const placed = await placer.place({ buyer_id: cart.user_id, item_ids: [item], note: null, one_seller: true })

    expect(wire.sent()).not.toContain(FLUSH)
    expect(placed.orders).toHaveLength(1)
    expect(await stockOf(sql, product.id)).toBe(4)
  })

  it('sends a batch of checkouts in one round trip per call', async () => {
    const product = await createProduct(sql, { stock: 30 })
    const carts = await Promise.all(Array.from({ length: 40 }, async () => {
      const cart = await cartFor(sql)
      await addItem(sql, cart.id, product.id, 1)
      return cart
    }))
    const placer = new OrderPlacer(unprepared, { callsInFlight: 1 })
    wire.reset()

    const outcomes = await Promise.allSettled(carts.map((cart) => placer.place(whole(cart.id))))

    expect(placer.batching.batches).toBeGreaterThan(0)
    expect(wire.sent()).not.toContain(FLUSH)
    expect(wire.sent().filter((type) => type === 'P')).toHaveLength(placer.batching.calls)
    expect(outcomes.filter((o) => o.status === 'fulfilled')).toHaveLength(30)
    expect(await stockOf(sql, product.id)).toBe(0)
    expect(await auditOf(sql, [product.id])).toEqual([])
  })

  it("places a checkout naming items as a new connection's very first query", async () => {
    // postgres.js fetches the array types as a connection starts, after that first query is built.
    const { product, cart, item } = await oneLine(1)
    const fresh = createSql(wire.url, { max: 1, prepare: false, role: 'waitress_api' })
    try {
      const placed = await new OrderPlacer(fresh).place({ buyer_id: cart.user_id, item_ids: [item], note: null, one_seller: true })
      expect(placed.orders[0].items.map((line: { cart_item_id: number }) => line.cart_item_id)).toEqual([item])
    } finally {
      await fresh.end({ timeout: 5 })
    }
    expect(await stockOf(sql, product.id)).toBe(4)
  })

  it('still asks for the description first when a parameter has no type, so it is sent as the server type wants', async () => {
    wire.reset()
    // A string for a jsonb parameter: postgres.js sends it as a JSON string once it knows the type.
    const [row] = await unprepared<{ value: unknown }[]>`select ${'{"a":1}'}::jsonb as value`
    expect(row.value).toBe('{"a":1}')
    expect(wire.sent()).toEqual(['P', 'D', FLUSH, 'B', 'E', 'S'])
  })
})
