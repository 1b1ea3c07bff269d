import { describe, expect, it } from 'bun:test'
import { apiSql, testSql } from '../support/db.ts'
import { addItem, cartFor, createProduct, newUserId, refusal, stockOf } from '../support/fixtures.ts'
import { until } from '../support/wait.ts'

const sql = testSql()
const api = apiSql()

const newKey = () => `key-${crypto.randomUUID()}`

async function cartWithLine(stock = 5, quantity = 1) {
  const product = await createProduct(sql, { stock })
  const cart = await cartFor(sql)
  const line = await addItem(sql, cart.id, product.id, quantity)
  return { ...cart, line, product }
}

async function ordersOf(buyerId: number): Promise<number> {
  const [{ count }] = await sql`select count(*)::int from waitress.orders where buyer_id = ${buyerId}`
  return count
}

async function keyRows(key: string): Promise<number> {
  const [{ count }] = await sql`select count(*)::int from waitress.idempotency_keys where key = ${key}`
  return count
}

/** Resolves once a backend other than ours waits for a lock while running `fragment` (fails, saying so, if none ever does). */
async function someoneWaitsOnLock(fragment: string) {
  await until(`a session running "${fragment}" to wait for a lock`, async () => {
    const [{ waiting }] = await sql`
      select count(*)::int as waiting from pg_catalog.pg_stat_activity
       where wait_event_type = 'Lock' and query like ${'%' + fragment + '%'} and pid <> pg_backend_pid()`
    return waiting > 0
  })
}

describe('api.place_order with an idempotency key', () => {
  it('checks out once; the same key and parameters return the recorded response and order nothing more', async () => {
    const cart = await cartWithLine()
    const key = newKey()
    const [first] = await api`select r->'orders' as data, (r->>'replayed')::boolean as replayed from api.place_order(${cart.id}, null, 'gift', ${key}, null) r`
    const [again] = await api`select r->'orders' as data, (r->>'replayed')::boolean as replayed from api.place_order(${cart.id}, null, 'gift', ${key}, null) r`

    expect(first).toMatchObject({ replayed: false })
    expect(first.data).toHaveLength(1)
    expect(again).toEqual({ ...first, replayed: true })
    expect(await ordersOf(cart.user_id)).toBe(1)
    expect(await stockOf(sql, cart.product.id)).toBe(4)
    const [record] = await sql`select user_id, action, response_status from waitress.idempotency_keys where key = ${key}`
    expect(record).toEqual({ user_id: cart.user_id, action: 'place_order', response_status: 201 })
  })

  it('refuses the same key with other parameters (WA101) and changes nothing', async () => {
    const cart = await cartWithLine()
    const key = newKey()
    await api`select r->'orders' as data, (r->>'replayed')::boolean as replayed from api.place_order(${cart.id}, null, 'gift', ${key}, null) r`
    const error = await refusal(api`select r->'orders' as data, (r->>'replayed')::boolean as replayed from api.place_order(${cart.id}, null, 'no gift', ${key}, null) r`)
    expect(error.code).toBe('WA101')
    expect(JSON.parse(error.detail!)).toEqual({ idempotency_key: key, action: 'place_order' })
    const other = await refusal(api`select r->'orders'->0 as data, (r->>'replayed')::boolean as replayed from api.place_buyer_order(${cart.user_id}, ${[cart.line]}::bigint[], 'gift', ${key}) r`)
    expect(other.code).toBe('WA101')
    expect(await ordersOf(cart.user_id)).toBe(1)
  })

  it('records nothing when the checkout is refused, so the same key works once the cause is fixed', async () => {
    const cart = await cartWithLine(5, 3)
    await sql`update waitress.products set stock = 1 where id = ${cart.product.id}`
    const key = newKey()
    expect((await refusal(api`select r->'orders' as data, (r->>'replayed')::boolean as replayed from api.place_order(${cart.id}, null, null, ${key}, null) r`)).code).toBe('WA004')
    expect(await keyRows(key)).toBe(0)
    await sql`update waitress.products set stock = 3 where id = ${cart.product.id}`
    const [retry] = await api`select r->'orders' as data, (r->>'replayed')::boolean as replayed from api.place_order(${cart.id}, null, null, ${key}, null) r`
    expect(retry).toMatchObject({ replayed: false })
  })

  it("scopes keys per buyer, and keeps another user's cart out of reach (WA001)", async () => {
    const a = await cartWithLine()
    const b = await cartWithLine()
    const [forA] = await api`select r->'orders' as data, (r->>'replayed')::boolean as replayed from api.place_order(${a.id}, null, null, 'same', ${a.user_id}) r`
    const [forB] = await api`select r->'orders' as data, (r->>'replayed')::boolean as replayed from api.place_order(${b.id}, null, null, 'same', ${b.user_id}) r`
    expect([forA.replayed, forB.replayed]).toEqual([false, false])
    expect(forA.data[0].buyer_id).toBe(a.user_id)
    expect(forB.data[0].buyer_id).toBe(b.user_id)

    const c = await cartWithLine()
    expect((await refusal(api`select r->'orders' as data, (r->>'replayed')::boolean as replayed from api.place_order(${c.id}, null, null, ${newKey()}, ${a.user_id}) r`)).code).toBe('WA001')
    expect(await ordersOf(c.user_id)).toBe(0)
  })

  it('makes a duplicate wait for the first transaction and then return its response', async () => {
    const cart = await cartWithLine()
    const key = newKey()
    let release!: () => void
    const gate = new Promise<void>((resolve) => (release = resolve))
    let firstData: unknown
    const first = sql.begin(async (tx) => {
      const [row] = await tx`select r->'orders' as data, (r->>'replayed')::boolean as replayed from api.place_order(${cart.id}, null, null, ${key}, null) r`
      firstData = row.data
      await gate
    })
    // The duplicate starts while the first has checked out but not committed.
    await until('the first request to check out', () => firstData !== undefined)
    const duplicate = api`select r->'orders' as data, (r->>'replayed')::boolean as replayed from api.place_order(${cart.id}, null, null, ${key}, null) r /* duplicate */`.execute()
    await someoneWaitsOnLock('duplicate')
    release()
    await first
    const [replay] = await duplicate
    expect(replay).toEqual({ data: firstData, replayed: true })
    expect(await ordersOf(cart.user_id)).toBe(1)
  })

  it('answers a duplicate whose wait runs into its lock_timeout with WA102 (409), and orders nothing more', async () => {
    const cart = await cartWithLine()
    const key = newKey()
    let release!: () => void
    const gate = new Promise<void>((resolve) => (release = resolve))
    let claimed = false
    const first = sql.begin(async (tx) => {
      await tx`select r->'orders' as data, (r->>'replayed')::boolean as replayed from api.place_order(${cart.id}, null, null, ${key}, null) r`
      claimed = true
      await gate
    })
    await until('the first request to claim the key', () => claimed)
    // The first holds the key until released, so the duplicate's short lock_timeout always runs out.
    const error = await refusal(
      api.begin(async (tx) => {
        await tx`set local lock_timeout = '50ms'`
        await tx`select r->'orders' as data, (r->>'replayed')::boolean as replayed from api.place_order(${cart.id}, null, null, ${key}, null) r`
      }),
    )
    release()
    await first
    expect(error.code).toBe('WA102')
    expect(JSON.parse(error.detail!)).toEqual({ idempotency_key: key, action: 'place_order' })
    expect(await ordersOf(cart.user_id)).toBe(1)
    const [retry] = await api`select r->'orders' as data, (r->>'replayed')::boolean as replayed from api.place_order(${cart.id}, null, null, ${key}, null) r`
    expect(retry.replayed).toBe(true)
  })

  it('lets the duplicate check out itself when the first transaction rolls back', async () => {
    const cart = await cartWithLine()
    const key = newKey()
    let release!: () => void
    const gate = new Promise<void>((resolve) => (release = resolve))
    let claimed = false
    const first = sql
      .begin(async (tx) => {
        await tx`select r->'orders' as data, (r->>'replayed')::boolean as replayed from api.place_order(${cart.id}, null, null, ${key}, null) r`
        claimed = true
        await gate
        throw new Error('the first request fails after checking out')
      })
      .catch(() => 'rolled back')
    await until('the first request to claim the key', () => claimed)
    const duplicate = api`select r->'orders' as data, (r->>'replayed')::boolean as replayed from api.place_order(${cart.id}, null, null, ${key}, null) r /* after rollback */`.execute()
    await someoneWaitsOnLock('after rollback')
    release()
    expect(await first).toBe('rolled back')
    const [own] = await duplicate
    expect(own).toMatchObject({ replayed: false })
    expect(await ordersOf(cart.user_id)).toBe(1)
  })
})

describe('api.place_buyer_order with an idempotency key', () => {
  it('orders once per key and items, and refuses the key for other items (WA101)', async () => {
    const cart = await cartWithLine()
    const other = await addItem(sql, cart.id, (await createProduct(sql)).id, 1)
    const key = newKey()
    const [first] = await api`select r->'orders'->0 as data, (r->>'replayed')::boolean as replayed from api.place_buyer_order(${cart.user_id}, ${[cart.line]}::bigint[], null, ${key}) r`
    const [again] = await api`select r->'orders'->0 as data, (r->>'replayed')::boolean as replayed from api.place_buyer_order(${cart.user_id}, ${[cart.line]}::bigint[], null, ${key}) r`
    expect(first).toMatchObject({ replayed: false })
    expect(again).toEqual({ ...first, replayed: true })
    const error = await refusal(api`select r->'orders'->0 as data, (r->>'replayed')::boolean as replayed from api.place_buyer_order(${cart.user_id}, ${[other]}::bigint[], null, ${key}) r`)
    expect(error.code).toBe('WA101')
    expect(await ordersOf(cart.user_id)).toBe(1)
  })

  it('works without a key exactly as without idempotency', async () => {
    const cart = await cartWithLine()
    const [result] = await api`select r->'orders'->0 as data, (r->>'replayed')::boolean as replayed from api.place_buyer_order(${cart.user_id}, ${[cart.line]}::bigint[]) r`
    expect(result).toMatchObject({ replayed: false, data: { buyer_id: cart.user_id } })
    const [{ count }] = await sql`select count(*)::int from waitress.idempotency_keys where user_id = ${cart.user_id}`
    expect(count).toBe(0)
  })
})

describe('idempotency records', () => {
  it('are kept 24 hours: an older record is purged, and its key starts afresh even before the purge', async () => {
    const cart = await cartWithLine(5, 1)
    const key = newKey()
    await api`select r->'orders' as data, (r->>'replayed')::boolean as replayed from api.place_order(${cart.id}, null, null, ${key}, null) r`
    await sql`update waitress.idempotency_keys set created_at = now() - interval '23 hours' where key = ${key}`
    expect((await refusal(api`select r->'orders' as data, (r->>'replayed')::boolean as replayed from api.place_order(${cart.id}, null, 'changed', ${key}, null) r`)).code).toBe('WA101')

    await sql`update waitress.idempotency_keys set created_at = now() - interval '25 hours' where key = ${key}`
    // Expired: the key is free again (the cart is empty now, so this checkout is refused, and records nothing).
    expect((await refusal(api`select r->'orders' as data, (r->>'replayed')::boolean as replayed from api.place_order(${cart.id}, null, 'changed', ${key}, null) r`)).code).toBe('WA006')
    const [{ purged }] = await api`select api.purge_idempotency_keys() as purged`
    expect(purged).toBeGreaterThanOrEqual(1)
    expect(await keyRows(key)).toBe(0)
  })

  it('refuse a second claim of an unfinished key in one transaction (WA102)', async () => {
    const buyer = newUserId()
    const error = await refusal(
      sql.begin(async (tx) => {
        await tx`select * from waitress.idempotency_begin(${buyer}, 'k', 'place_order', '{}')`
        await tx`select * from waitress.idempotency_begin(${buyer}, 'k', 'place_order', '{}')`
      }),
    )
    expect(error.code).toBe('WA102')
  })

  it('refuse keys longer than 255 characters (idempotency_keys_key_length)', async () => {
    const cart = await cartWithLine()
    const error = await refusal(api`select r->'orders' as data, (r->>'replayed')::boolean as replayed from api.place_order(${cart.id}, null, null, ${'k'.repeat(256)}, null) r`)
    expect(error.code).toBe('23514')
    expect(await ordersOf(cart.user_id)).toBe(0)
  })
})
