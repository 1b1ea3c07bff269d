import { describe, expect, it } from 'bun:test'
import { testSql } from '../support/db.ts'
import { addItem, auditOf, cartFor, createProduct, stockOf } from '../support/fixtures.ts'

const sql = testSql()

type Answer = { orders: unknown[] } | { error: { code: string } } | { busy: number[] | null }

const placeNow = async (requests: object[], held: number[] | null = []): Promise<Answer[]> =>
  (await sql`select api.place_orders_now(${sql.json(requests as never)}, ${held}::bigint[]) as answers`)[0].answers

const kind = (answer: Answer) => ('orders' in answer ? 'ok' : 'error' in answer ? answer.error.code : { busy: answer.busy })

/** A cart of the given products (one unit each), for a new buyer. */
async function cartOf(...productIds: number[]): Promise<number> {
  const cart = await cartFor(sql)
  for (const id of productIds) await addItem(sql, cart.id, id, 1)
  return cart.id
}

/** Another transaction holding a product's queue, as a checkout deciding on it does. */
async function holdingQueue(productId: number) {
  const session = await sql.reserve()
  await session`begin`
  await session`select pg_advisory_xact_lock(1463899218, ${productId % 2147483647})`
  return async () => {
    await session`rollback`
    session.release()
  }
}

async function openLines(cartId: number): Promise<number> {
  const [{ open }] = await sql`select count(*)::int as open from waitress.cart_items where cart_id = ${cartId} and not purchased`
  return open
}

describe('place_orders_now (the scout)', () => {
  it('places at once a checkout whose cart and products nobody holds, through the same rules as place_orders', async () => {
    const free = await createProduct(sql, { stock: 1 })
    const first = await cartOf(free.id)
    const second = await cartOf(free.id)

    const answers = await placeNow([{ cart_id: first }, { cart_id: second }])

    expect(answers.map(kind)).toEqual(['ok', 'WA004'])
    expect(await stockOf(sql, free.id)).toBe(0)
    expect(await auditOf(sql, [free.id])).toEqual([])
  })

  it('hands back, untouched and with the products it needs, a checkout whose product another checkout is deciding on', async () => {
    const hot = await createProduct(sql, { stock: 5 })
    const other = await createProduct(sql, { stock: 5 })
    const crowd = await cartOf(hot.id, other.id)
    const shopper = await cartOf(other.id)
    const release = await holdingQueue(hot.id)
    try {
      const answers = await placeNow([{ cart_id: crowd }, { cart_id: shopper }])
      // The crowd's checkout needs both; the shopper's "other" is held for it now: first come, first served.
      expect(answers.map(kind)).toEqual([{ busy: [hot.id, other.id].sort((a, b) => a - b) }, { busy: [other.id] }])
      expect(await openLines(crowd)).toBe(2)
      expect(await openLines(shopper)).toBe(1)
      expect(await Promise.all([stockOf(sql, hot.id), stockOf(sql, other.id)])).toEqual([5, 5])
    } finally {
      await release()
    }
  })

  it('hands back a checkout that needs a product the service still holds for an earlier one', async () => {
    const product = await createProduct(sql, { stock: 5 })
    const cart = await cartOf(product.id)
    expect((await placeNow([{ cart_id: cart }], [product.id])).map(kind)).toEqual([{ busy: [product.id] }])
    expect(await stockOf(sql, product.id)).toBe(5)
  })

  it('hands back every checkout with an idempotency key, and every one when the service knows not what is in flight (p_held null)', async () => {
    const product = await createProduct(sql, { stock: 5 })
    const keyed = await cartOf(product.id)
    const plain = await cartOf(product.id)
    expect((await placeNow([{ cart_id: keyed, idempotency_key: `scout-${keyed}` }])).map(kind)).toEqual([{ busy: [product.id] }])
    expect((await placeNow([{ cart_id: plain }], null)).map(kind)).toEqual([{ busy: [product.id] }])
    expect(await stockOf(sql, product.id)).toBe(5)
    const [{ keys }] = await sql`select count(*)::int as keys from waitress.idempotency_keys where key = ${`scout-${keyed}`}`
    expect(keys).toBe(0)
  })

  it('hands back a checkout whose cart another checkout holds, without waiting for it', async () => {
    const product = await createProduct(sql, { stock: 5 })
    const cart = await cartOf(product.id)
    const session = await sql.reserve()
    try {
      await session`begin`
      await session`select 1 from waitress.carts where id = ${cart} for no key update`
      expect((await placeNow([{ cart_id: cart }])).map(kind)).toEqual([{ busy: [product.id] }])
    } finally {
      await session`rollback`
      session.release()
    }
  })

  it('leaves refusals to the core: no such cart, nothing to order', async () => {
    const empty = await cartFor(sql)
    expect((await placeNow([{ cart_id: 2_000_000_000 }, { cart_id: empty.id }])).map(kind)).toEqual(['WA001', 'WA006'])
  })

  it('refuses what is not a batch, as place_orders does', async () => {
    const error = await sql`select api.place_orders_now('{}'::jsonb, '{}')`.catch((e) => e)
    expect(error.code).toBe('22023')
  })
})
