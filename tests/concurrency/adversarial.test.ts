import { afterAll, beforeAll, describe, expect, it } from 'bun:test'
import { checkInvariants, startRun } from '../../proof/database-facts.ts'
import { type Attempt, type Outcome } from '../../proof/judge.ts'
import { testSql } from '../support/db.ts'
import { addItem, cartFor, createProduct } from '../support/fixtures.ts'
import { buyersWith, expectClean, coalescingChannel, httpChannel, randomInt, shuffled, sqlChannel, type Added, type Channel } from '../support/proof.ts'
import { startLine, type Overlap } from '../support/start-line.ts'

/**
 * Races meant to break the checkout, each judged by the invariant checker,
 * each run three times: over HTTP against the app, over HTTP with the app in
 * with checkouts coalesced into place_orders batches, and
 * straight to place_order from many SQL connections (as waitress_api).
 * Each starts from a start line in the database (tests/support/start-line.ts)
 * and asserts that it overlapped: as many of the channel's sessions as it
 * can run at once were seen waiting on the contended rows together.
 */
const sql = testSql()

const accepted = (outcome: Outcome) => (outcome.kind === 'accepted' ? outcome.orders : [])

/**
 * Starts the racers behind a start line on `rows` and lets them go once at
 * least `sessions` of the channel's sessions are seen waiting there: the
 * race overlapped, by observation. Returns their results and what the line saw.
 */
async function fromStartLine<T>(channel: Channel, rows: Parameters<typeof startLine>[1], sessions: number, racers: () => Promise<T>) {
  const line = await startLine(sql, rows)
  const running = racers()
  let overlap: Overlap
  try {
    overlap = await line.letGoWhen(sessions, { applicationName: channel.applicationName })
  } catch (error) {
    await running.catch(() => {})
    throw error
  }
  const results = await running
  expect(overlap.lockWaiters).toBeGreaterThanOrEqual(sessions)
  return { results, overlap }
}

describe.each([
  ['HTTP', async () => httpChannel()],
  ['HTTP, coalesced', coalescingChannel],
  ['SQL', async () => sqlChannel(40)],
] as const)('adversarial races over %s', (_, open) => {
  let channel: Channel
  beforeAll(async () => {
    channel = await open()
  })
  afterAll(() => channel.close())

  it('20 concurrent checkouts of one cart make exactly one set of orders', async () => {
    const kopi = await createProduct(sql, { seller_id: 41, stock: 10 })
    const teh = await createProduct(sql, { seller_id: 42, stock: 10 })
    const [buyer] = await buyersWith(sql, [
      [
        [teh.id, 3],
        [kopi.id, 2],
      ],
    ])
    const start = await startRun(sql, [kopi.id, teh.id])

    // All twenty queue on the cart's lock behind the start line, as many at once as the channel can send.
    const { results: outcomes } = await fromStartLine(channel, { carts: [buyer.cartId] }, Math.min(channel.checkoutSessions, 20), () =>
      Promise.all(Array.from({ length: 20 }, () => channel.checkout(buyer.cartId))),
    )

    const checkouts: Attempt[] = outcomes.map((outcome) => ({ cartId: buyer.cartId, buyerId: buyer.userId, wants: buyer.wants, outcome }))
    expectClean(await checkInvariants(sql, { ...start, checkouts, expectedRefusals: ['WA006'] }))
    const winners = outcomes.filter((o) => o.kind === 'accepted')
    expect(winners).toHaveLength(1)
    expect(accepted(winners[0]).map((order) => order.sellerId)).toEqual([41, 42])
    expect(outcomes.filter((o) => o.kind === 'refused' && o.code === 'WA006')).toHaveLength(19)
  })

  it('checkout racing add-to-cart buys exactly the lines the cart held when it locked it', async () => {
    const products = await Promise.all([51, 51, 52, 52].map((seller_id) => createProduct(sql, { seller_id, stock: 1000 })))
    const cart = await cartFor(sql)
    const initial = new Map<number, number>()
    for (const product of products.slice(0, 2)) initial.set(await addItem(sql, cart.id, product.id, 1), 1)
    const adds = Array.from({ length: 16 }, () => ({ productId: products[randomInt(0, 3)].id, quantity: randomInt(1, 3) }))
    const start = await startRun(
      sql,
      products.map((p) => p.id),
    )

    const ops = shuffled([
      ...adds.map((add) => () => channel.addItem(cart.id, add.productId, add.quantity)),
      ...Array.from({ length: 4 }, () => () => channel.checkout(cart.id)),
    ])
    const { results } = await fromStartLine(channel, { carts: [cart.id] }, Math.min(channel.sessions, ops.length), () => Promise.all(ops.map((op) => op())))

    const outcomes = results.filter((r): r is Outcome => 'kind' in r)
    const added = results.filter((r): r is Added => !('kind' in r))
    expect(added.filter((a) => !a.ok)).toEqual([])
    // Lines are checked against the cart items they point at: the cart changed during the race.
    const checkouts: Attempt[] = outcomes.map((outcome) => ({ cartId: cart.id, buyerId: cart.user_id, outcome }))
    expectClean(await checkInvariants(sql, { ...start, checkouts, expectedRefusals: ['WA006'] }))

    const items = await sql<{ id: number; product_id: number; quantity: number; purchased: boolean }[]>`
      select id, product_id, quantity, purchased from waitress.cart_items where cart_id = ${cart.id} order by id`
    // Nothing lost: every unit added is on some line, bought or open.
    const onLines = new Map<number, number>()
    for (const item of items) onLines.set(item.product_id, (onLines.get(item.product_id) ?? 0) + item.quantity)
    const asked = new Map<number, number>(products.slice(0, 2).map((p) => [p.id, 1]))
    for (const add of adds) asked.set(add.productId, (asked.get(add.productId) ?? 0) + add.quantity)
    expect(onLines).toEqual(asked)
    // No add landed on a line after it was sold: each line holds what its last add reported.
    for (const item of items) {
      const reports = added.flatMap((a) => (a.ok && a.itemId === item.id ? [a.quantity] : []))
      expect(item.quantity).toBe(Math.max(initial.get(item.id) ?? 0, ...reports))
    }
    // Checkouts took turns on the cart lock (order ids follow that turn): each bought
    // exactly the lines created since the previous one, and every later line is still open.
    const turns = outcomes
      .filter((o) => o.kind === 'accepted')
      .map((o) => ({ orderId: Math.min(...accepted(o).map((order) => order.id)), items: accepted(o).flatMap((order) => order.lines.map((l) => l.cartItemId)) }))
      .sort((a, b) => a.orderId - b.orderId)
    expect(turns.length).toBeGreaterThan(0)
    const bought = turns.flatMap((turn) => turn.items.sort((a, b) => a - b))
    expect(bought).toEqual(items.filter((i) => i.purchased).map((i) => i.id))
    const open = items.filter((i) => !i.purchased).map((i) => i.id)
    expect(open.every((id) => id > Math.max(...bought))).toBe(true)
    for (let i = 1; i < turns.length; i++) expect(Math.min(...turns[i].items)).toBeGreaterThan(Math.max(...turns[i - 1].items))
  })

  it('checkout racing price, active and stock edits sells each line at the price the product had, and conserves stock', async () => {
    const products = await Promise.all([61, 62, 63].map((seller_id) => createProduct(sql, { seller_id, price: 1000, stock: 30 })))
    const [repriced, toggled, restocked] = products
    const buyers = await buyersWith(
      sql,
      Array.from({ length: 60 }, () =>
        shuffled(products)
          .slice(0, randomInt(1, 2))
          .map((p) => [p.id, randomInt(1, 2)] as [number, number]),
      ),
    )
    const start = await startRun(
      sql,
      products.map((p) => p.id),
    )
    // Each price change notes the last order id handed out while it held the
    // product's row lock: orders up to it were placed before, later ones after.
    const priceChanges: { productId: number; price: number; after: number }[] = []
    const stockAdjustments = new Map<number, number[]>()
    const adjust = (productId: number, delta: number) => stockAdjustments.set(productId, [...(stockAdjustments.get(productId) ?? []), delta])
    const reprice = (productId: number) => async () => {
      const [row] = await sql<{ price: number; after: number }[]>`
        update waitress.products set price = price + 100 where id = ${productId}
        returning price, (select case when is_called then last_value else 0 end from waitress.orders_id_seq) as after`
      priceChanges.push({ productId, ...row })
    }
    const setActive = (active: boolean) => async () => {
      await sql`update waitress.products set active = ${active} where id = ${toggled.id}`
    }
    // Price and active have no function yet: plain owner updates. Stock goes through
    // the ledger's functions, as every stock change must (a correction that would go
    // below zero is refused with WA010 and changes nothing).
    const restock = (delta: number) => async () => {
      try {
        if (delta > 0) await sql`select api.restock_product(${restocked.id}, ${delta}, 'during a race')`
        else await sql`select api.adjust_stock(${restocked.id}, ${delta}, 'during a race')`
        adjust(restocked.id, delta)
      } catch (error) {
        if ((error as { code?: string }).code !== 'WA010') throw error
      }
    }
    const edits = [...products.flatMap((p) => [reprice(p.id), reprice(p.id)]), reprice(repriced.id), setActive(false), setActive(true), setActive(false), restock(5), restock(-3), restock(4)]

    const ops = shuffled([...buyers.map((b) => async () => ({ buyer: b, outcome: await channel.checkout(b.cartId) })), ...edits])
    const { results } = await fromStartLine(
      channel,
      { products: products.map((p) => p.id) },
      Math.min(channel.checkoutSessions, buyers.length),
      () => Promise.all(ops.map((op) => op())),
    )
    await setActive(true)()

    const checkouts: Attempt[] = results.flatMap((r) => (r ? [{ cartId: r.buyer.cartId, buyerId: r.buyer.userId, wants: r.buyer.wants, outcome: r.outcome }] : []))
    expect(checkouts).toHaveLength(buyers.length)
    expectClean(await checkInvariants(sql, { ...start, checkouts, stockAdjustments, expectedRefusals: ['WA004', 'WA003'] }))
    // Prices only go up, so the price a line must carry is the highest set before its order.
    for (const order of checkouts.flatMap((c) => accepted(c.outcome)))
      for (const line of order.lines) {
        const before = priceChanges.filter((c) => c.productId === line.productId && c.after < order.id).map((c) => c.price)
        expect({ order: order.id, product: line.productId, price: line.price }).toEqual({
          order: order.id,
          product: line.productId,
          price: Math.max(1000, ...before),
        })
      }
    expect(priceChanges).toHaveLength(7)
  })

  it('1,000 buyers of multi-product carts in random order, stock far below demand: no deadlock, no 5xx, invariants hold', async () => {
    const products = await Promise.all(Array.from({ length: 8 }, (_, i) => createProduct(sql, { name: `Flash ${i}`, seller_id: 70 + (i % 4), stock: 25 })))
    const buyers = await buyersWith(
      sql,
      Array.from({ length: 1000 }, () =>
        shuffled(products)
          .slice(0, randomInt(2, 4))
          .map((p) => [p.id, randomInt(1, 3)] as [number, number]),
      ),
    )
    const start = await startRun(
      sql,
      products.map((p) => p.id),
    )

    const batchedBefore = await channel.batched?.()
    const { results: outcomes } = await fromStartLine(channel, { products: products.map((p) => p.id) }, channel.checkoutSessions, () =>
      Promise.all(buyers.map((b) => channel.checkout(b.cartId))),
    )

    if (channel.batched) expect((await channel.batched()) - batchedBefore!).toBe(1000)
    const checkouts = buyers.map((b, i) => ({ cartId: b.cartId, buyerId: b.userId, wants: b.wants, outcome: outcomes[i] }))
    const verdict = await checkInvariants(sql, { ...start, checkouts })
    expectClean(verdict)
    expect(verdict.deadlocks).toBe(0) // read, flushed, and no deadlock
    const acceptedCount = outcomes.filter((o) => o.kind === 'accepted').length
    expect(acceptedCount).toBeGreaterThan(0)
    expect(acceptedCount).toBeLessThan(200)
    expect(verdict.products.reduce((sum, p) => sum + p.sold, 0)).toBeGreaterThan(100)
  })
})
