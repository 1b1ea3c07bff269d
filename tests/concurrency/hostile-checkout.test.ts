import { afterAll, describe, expect, it } from 'bun:test'
import { createApp } from '../../src/app.ts'
import { createSql } from '../../src/db/client.ts'
import { apiSql, appDatabaseUrl, testSql } from '../support/db.ts'
import { addItem, auditOf, cartFor, createProduct, stockOf } from '../support/fixtures.ts'

// A hostile cart cannot slow or fail anyone else: the checkout locks only the
// products of the lines it buys, and a batch never fails a buyer for
// another's request. (How much it slows honest buyers is measured by
// `npm run bench`, scenario attack: timing is never asserted here.)
const sql = testSql()
const server = createApp(apiSql()).listen({ port: 0, hostname: '127.0.0.1' })
const baseUrl = `http://127.0.0.1:${server.server!.port}`
afterAll(() => server.stop(true))

const order = (buyerId: number, itemIds: number[]) =>
  fetch(`${baseUrl}/orders`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ buyer_id: buyerId, cart_item_ids: itemIds }),
  }).then(async (r) => ({ status: r.status, body: (await r.json()) as { code?: string } }))

describe('a hostile checkout', () => {
  it('locks only the products of the lines it buys: a lock held on another line of the cart does not stop it', async () => {
    const wanted = await createProduct(sql, { stock: 5 })
    const other = await createProduct(sql, { stock: 5 })
    const cart = await cartFor(sql)
    const line = await addItem(sql, cart.id, wanted.id, 1)
    await addItem(sql, cart.id, other.id, 1)
    const holder = createSql(appDatabaseUrl(), { max: 1, role: 'waitress_api' })
    const owner = createSql(process.env.WAITRESS_TEST_DATABASE_URL!, { max: 1 })
    let release: () => void = () => {}
    const released = new Promise<void>((resolve) => (release = resolve))
    let locked: () => void = () => {}
    const isLocked = new Promise<void>((resolve) => (locked = resolve))
    const holding = owner.begin(async (tx) => {
      await tx`select 1 from waitress.products where id = ${other.id} for update`
      locked()
      await released
    })
    try {
      await isLocked
      const [{ placed }] = await holder`select api.place_order(${cart.id}, ${[line]}::bigint[]) as placed`
      expect(placed.orders[0].items.map((i: { product: { id: number } }) => i.product.id)).toEqual([wanted.id])
    } finally {
      release()
      await holding
      await holder.end({ timeout: 5 })
      await owner.end({ timeout: 5 })
    }
    expect(await stockOf(sql, other.id)).toBe(5)
  })

  it('never gets an honest buyer refused or a 5xx: 4 clients loop the largest checkout the limits allow beside 60 buyers', async () => {
    const hot = await createProduct(sql, { name: 'Hot', stock: 10_000, seller_id: 5150 })
    const fillers = await Promise.all(Array.from({ length: 99 }, (_, i) => createProduct(sql, { name: `filler ${i}`, stock: 10_000, seller_id: 5150 })))
    const honest = await Promise.all(Array.from({ length: 60 }, async () => {
      const cart = await cartFor(sql)
      return { buyerId: cart.user_id, items: [await addItem(sql, cart.id, hot.id, 1)] }
    }))
    // The worst the limits allow: 100 lines, the hot product among them, every id named; and beyond them (refused).
    const attack = async () => {
      const cart = await cartFor(sql)
      const items = [await addItem(sql, cart.id, hot.id, 1)]
      for (const p of fillers) items.push(await addItem(sql, cart.id, p.id, 1))
      return { buyerId: cart.user_id, items }
    }
    const attackers = await Promise.all(Array.from({ length: 12 }, attack))
    const attacks: { status: number; code?: string }[] = []
    let honestDone = false
    const loops = [0, 1, 2, 3].map(async (k) => {
      for (let i = k; !honestDone && i < attackers.length; i += 4) {
        const reply = await order(attackers[i].buyerId, attackers[i].items)
        attacks.push({ status: reply.status, code: reply.body.code })
        // Over the limit: 101 ids.
        const over = await order(attackers[i].buyerId, [...attackers[i].items, 999_999_999])
        attacks.push({ status: over.status, code: over.body.code })
      }
    })
    const replies = await Promise.all(honest.map((b) => order(b.buyerId, b.items)))
    honestDone = true
    await Promise.all(loops)

    expect(replies.map((r) => r.status)).toEqual(honest.map(() => 201))
    expect(attacks.length).toBeGreaterThan(0)
    for (const a of attacks) expect([201, 422]).toContain(a.status)
    expect(attacks.filter((a) => a.status === 422).every((a) => a.code === 'WA110' || a.code === 'WA005')).toBe(true)
    expect(await auditOf(sql, [hot.id, ...fillers.map((p) => p.id)])).toEqual([])
  }, 60_000)
})
