import { afterAll, beforeAll, describe, expect, it } from 'bun:test'
import type { Sql } from '../../src/db/client.ts'
import {
  addItem,
  cartOf,
  createProduct,
  errorOf,
  sharedCluster,
  sharding,
  shardsHolding,
  singleReference,
  usersOn,
  type SingleDatabase,
  type TestCluster,
} from './support/cluster.ts'

/**
 * The router is a single database to its callers: the same scenario, run
 * through the api functions on a single database and on the router over two
 * shards, gives the same answers and the same refusals (SQLSTATE, message,
 * DETAIL, HINT), once ids are named by what they are. Lines and sellers are
 * spread over both shards wherever a scenario has two.
 */

interface Side {
  name: string
  api: Sql
  /** Sellers S1 < S2 (on two shards for the router). */
  sellers: [number, number]
  /** Users, each with a cart of its own. */
  users: number[]
  /** Writes a product row directly, where it lives (a test's way to make a product unavailable). */
  setActive(productId: number, active: boolean): Promise<void>
}

type Step = { step: string; ok?: unknown; error?: { code: string; message: string; detail: unknown; hint?: string } }

async function scenario(side: Side): Promise<{ steps: Step[]; labels: Map<number, string> }> {
  const { api } = side
  const labels = new Map<number, string>()
  const label = (id: number, name: string) => {
    labels.set(id, name)
    return id
  }
  const steps: Step[] = []
  const run = async (step: string, query: Promise<readonly Record<string, unknown>[]>) => {
    try {
      const rows = await query
      steps.push({ step, ok: rows[0] ? Object.values(rows[0])[0] : null })
    } catch (error: any) {
      let detail: unknown = error.detail
      try {
        detail = error.detail ? JSON.parse(error.detail) : undefined
      } catch {}
      steps.push({ step, error: { code: error.code, message: error.message, detail, hint: error.hint } })
    }
  }
  const [s1, s2] = side.sellers
  label(s1, 'S1')
  label(s2, 'S2')
  side.users.forEach((user, i) => label(user, `U${i + 1}`))
  const [u1, u2, u3, u4, u5] = side.users

  // Two products of two sellers, P1 below P2 (their ids, as their sellers').
  let p1 = await createProduct(api, { name: 'Lamp', seller_id: s1, price: 2500, stock: 5 })
  let p2 = await createProduct(api, { name: 'Mug', seller_id: s2, price: 700, stock: 5 })
  while (p2.id < p1.id) p2 = await createProduct(api, { name: 'Mug', seller_id: s2, price: 700, stock: 5 })
  label(p1.id, 'P1')
  label(p2.id, 'P2')
  const c1 = label((await cartOf(api, u1)).id, 'C1')
  const c2 = label((await cartOf(api, u2)).id, 'C2')
  const c3 = label((await cartOf(api, u3)).id, 'C3')
  const c4 = label((await cartOf(api, u4)).id, 'C4')
  const unknown = 999_999_937

  await run('product: unknown', api`select api.product(${unknown})`)
  await run('add: P1 x2', api`select api.add_cart_item(${c1}, ${p1.id}, 2)`)
  await run('add: P2 x3', api`select api.add_cart_item(${c1}, ${p2.id}, 3)`)
  for (const row of await api`select (i->>'id')::bigint as id, (i->'product'->>'id')::bigint as product from jsonb_array_elements(api.cart_for_user(${u1})->'items') i`)
    label(row.id, row.product === p1.id ? 'I1' : 'I2')
  await run('add: unknown product', api`select api.add_cart_item(${c1}, ${unknown}, 1)`)
  await run('add: unknown cart', api`select api.add_cart_item(${unknown}, ${p1.id}, 1)`)
  await run('add: quantity 0', api`select api.add_cart_item(${c1}, ${p1.id}, 0)`)
  await run('add: above stock', api`select api.add_cart_item(${c2}, ${p1.id}, 99)`)
  await run("add: another user's cart", api`select api.add_cart_item(${c1}, ${p1.id}, 1, ${u2})`)
  await run("checkout: another user's cart", api`select api.place_order(${c1}, null, null, null, ${u2})`)

  // Short on both shards: every short line, in product order, as one database lists them.
  await run('adjust: P1 to 1', api`select api.adjust_stock(${p1.id}, -4, 'count')`)
  await run('adjust: P2 to 2', api`select api.adjust_stock(${p2.id}, -3, 'count')`)
  await run('checkout: short on both', api`select api.place_order(${c1})`)
  await run('restock: P1', api`select api.restock_product(${p1.id}, 4)`)
  await run('checkout: short on P2 only', api`select api.place_order(${c1})`)
  await run('restock: P2', api`select api.restock_product(${p2.id}, 3, 'back')`)
  await side.setActive(p1.id, false)
  await side.setActive(p2.id, false)
  await run('checkout: none for sale', api`select api.place_order(${c1})`)
  await side.setActive(p1.id, true)
  await side.setActive(p2.id, true)

  await run('checkout: with a key', api`select api.place_order(${c1}, null, 'gift', 'key-1')`)
  const [placed] = await api`select api.place_order(${c1}, null, 'gift', 'key-1') as p`
  for (const order of placed.p.orders) label(order.id, order.seller_id === s1 ? 'O1' : 'O2')
  await run('checkout: replayed', api`select api.place_order(${c1}, null, 'gift', 'key-1')`)
  await run('checkout: the key, another note', api`select api.place_order(${c1}, null, 'other', 'key-1')`)
  await run('checkout: nothing left', api`select api.place_order(${c1})`)

  // One seller's order from lines of two sellers (two shards).
  const i3 = label(await addItem(api, c2, p1.id, 1), 'I3')
  const i4 = label(await addItem(api, c2, p2.id, 1), 'I4')
  await run('buyer order: two sellers', api`select api.place_buyer_order(${u2}, ${[i3, i4]}::bigint[])`)
  await run('buyer order: two sellers, with a key', api`select api.place_buyer_order(${u2}, ${[i3, i4]}::bigint[], null, 'key-2')`)
  await run('buyer order: a missing item', api`select api.place_buyer_order(${u2}, ${[i3, unknown]}::bigint[])`)
  await run('buyer order: no cart', api`select api.place_buyer_order(${u5}, ${[unknown]}::bigint[])`)
  await run('checkout: named, one missing', api`select api.place_order(${c2}, ${[i4, unknown, unknown + 1]}::bigint[])`)
  await run('checkout: named', api`select api.place_order(${c2}, ${[i4]}::bigint[], null, 'key-2')`)
  for (const row of await api`select (o->>'id')::bigint as id from jsonb_array_elements(api.place_order(${c2}, ${[i4]}::bigint[], null, 'key-2')->'orders') o`)
    label(row.id, 'O3')
  await run('buyer order: one seller', api`select api.place_buyer_order(${u2}, ${[i3]}::bigint[], 'one', 'key-3')`)
  for (const row of await api`select (o->>'id')::bigint as id from jsonb_array_elements(api.place_buyer_order(${u2}, ${[i3]}::bigint[], 'one', 'key-3')->'orders') o`)
    label(row.id, 'O4')
  await run('buyer order: replayed', api`select api.place_buyer_order(${u2}, ${[i3]}::bigint[], 'one', 'key-3')`)

  const [o1, o2] = [...labels].filter(([, name]) => name === 'O1' || name === 'O2').sort((a, b) => a[1].localeCompare(b[1])).map(([id]) => id)
  await run('order: O2 by its seller', api`select api.order(${o2}, ${s2})`)
  await run('order: O2 by a stranger', api`select api.order(${o2}, ${u2})`)
  await run('order: unknown', api`select api.order(${unknown})`)
  await run('act: pay O1', api`select api.act_on_order(${o1}, 'pay', 'pay-1', ${u1})`)
  await run('act: pay O1 replayed', api`select api.act_on_order(${o1}, 'pay', 'pay-1', ${u1})`)
  await run('act: pay O1 again', api`select api.act_on_order(${o1}, 'pay')`)
  await run('act: the buyer accepts', api`select api.act_on_order(${o1}, 'accept', null, ${u1})`)
  await run('act: unknown action', api`select api.act_on_order(${o2}, 'ship')`)
  await run('act: cancel O2', api`select api.act_on_order(${o2}, 'cancel')`)
  await run('restock: by another seller', api`select api.restock_product(${p1.id}, 1, null, ${s2})`)
  await run('adjust: below zero', api`select api.adjust_stock(${p2.id}, -1000, 'oops')`)
  await run('movements: P2', api`select api.stock_movements(${p2.id}, 20)`)
  await run('movements: P2 by another seller', api`select api.stock_movements(${p2.id}, 20, 0, ${s1})`)
  await run('orders: U1', api`select api.orders(p_buyer_id => ${u1})`)
  await run('orders: S2, pending', api`select api.orders(p_seller_id => ${s2}, p_state => 'cancelled')`)
  await run('orders: limit 0', api`select api.orders(p_limit => 0)`)
  await run('orders: bad state', api`select api.orders(p_state => 'shipped')`)
  await run('expire: negative ttl', api`select api.expire_orders('-1 minute')`)
  await run('batch: not an array', api`select api.place_orders('{}'::jsonb)`)
  await run('batch: empty', api`select api.place_orders('[]'::jsonb)`)

  // A batch: a cart over two shards, an unknown cart, a buyer's item, a one-shard cart, another's cart.
  label(await addItem(api, c3, p1.id, 1), 'I5')
  label(await addItem(api, c3, p2.id, 2), 'I6')
  label(await addItem(api, c4, p2.id, 1), 'I7')
  const i8 = label(await addItem(api, c2, p1.id, 1), 'I8')
  const [i1] = [...labels].filter(([, name]) => name === 'I1').map(([id]) => id)
  const i5 = [...labels].find(([, name]) => name === 'I5')![0]
  await run('update: I5 to 1', api`select api.update_cart_item(${i5}, 1)`)
  await run('update: unknown line', api`select api.update_cart_item(${unknown}, 1)`)
  await run('update: a purchased line', api`select api.update_cart_item(${i1}, 1)`)
  await run('update: quantity 0', api`select api.update_cart_item(${i5}, 0)`)
  await run('update: above stock', api`select api.update_cart_item(${i5}, 99)`)
  await run("update: another user's line", api`select api.update_cart_item(${i5}, 1, ${u4})`)
  const i9 = label(await addItem(api, c4, p1.id, 1), 'I9')
  await run('remove: a line on the other shard', api`select api.remove_cart_item(${i9}, ${u4})`)
  await run('remove: a purchased line', api`select api.remove_cart_item(${i1})`)
  await run("remove: another user's line", api`select api.remove_cart_item(${i5}, ${u4})`)
  await run(
    'batch: mixed',
    api`select api.place_orders(${api.json([
      { cart_id: c3, item_ids: null, note: 'b', one_seller: false },
      { cart_id: unknown, item_ids: null, note: null, one_seller: false },
      { buyer_id: u2, item_ids: [i8], note: null, one_seller: true },
      { cart_id: c4, item_ids: null, note: null, one_seller: false, user_id: u4 },
      { cart_id: c4, item_ids: null, note: null, one_seller: false, user_id: u3 },
    ] as never)})`,
  )
  const [{ outcomes }] = await api`select api.orders(p_buyer_id => ${u3}) as outcomes`
  for (const order of outcomes) label(order.id, order.seller_id === s1 ? 'O5' : 'O6')
  for (const [buyer, name] of [[u2, 'O7'], [u4, 'O8']] as const) {
    const [{ list }] = await api`select api.orders(p_buyer_id => ${buyer}) as list`
    for (const order of list) if (!labels.has(order.id)) label(order.id, name)
  }
  await run('audit', api`select coalesce(jsonb_agg(a), '[]') from api.inventory_audit() a where a.product_id = any (${[p1.id, p2.id]}::bigint[])`)
  await run('products: P1', api`select api.product(${p1.id})`)
  await run('cart: U3', api`select api.cart_for_user(${u3})`)
  return { steps, labels }
}

/** Names ids by what they are (P1, O2, ...), timestamps as T, other large numbers as N. */
function normalize(value: unknown, labels: Map<number, string>, key = ''): unknown {
  const name = (id: number) => labels.get(id) ?? (id >= 1_000_000 ? 'N' : id)
  if (typeof value === 'number') return name(value)
  if (typeof value === 'string') {
    if (/_at$/.test(key)) return 'T'
    return value.replace(/OS\d\d(\d{10})/g, (_, id) => `OS..${name(Number(id))}`).replace(/\d{7,}/g, (digits) => String(name(Number(digits))))
  }
  if (Array.isArray(value)) {
    const items = value.map((item) => normalize(item, labels, key))
    if (key === 'seller_ids') return items.sort()
    // Lists by id (orders, cart lines): on shards ids are not minted in one
    // sequence, so two documents of two shards may come in the other order.
    if (items.every((item: any) => item && typeof item === 'object' && 'id' in item) && !key.endsWith('shortages'))
      return items.sort((x: any, y: any) => String(x.id).localeCompare(String(y.id)))
    return items
  }
  if (value && typeof value === 'object')
    return Object.fromEntries(Object.entries(value).map(([k, v]) => [k, normalize(v, labels, k)]))
  return value
}

describe.skipIf(!sharding.ok)('a router over two shards answers as a single database', () => {
  let cluster: TestCluster
  let single: SingleDatabase
  beforeAll(async () => {
    cluster = await sharedCluster()
    single = await singleReference(cluster)
  })
  afterAll(async () => {
    await single?.close()
  })

  it('gives every answer and every refusal of a scenario over both shards exactly as one database does', async () => {
    const [on0, on1] = [await usersOn(cluster.router, 0, 3), await usersOn(cluster.router, 1, 3)]
    const sellers = [on0[0], on1[0]].sort((a, b) => a - b) as [number, number]
    const users = [on0[1], on1[1], on0[2], on1[2], on0[0] + 7]
    const onShards = await scenario({
      name: 'router',
      api: cluster.api,
      sellers,
      users,
      async setActive(productId, active) {
        for (const shard of cluster.shards) await shard`update waitress.products set active = ${active} where id = ${productId}`
      },
    })
    const onOne = await scenario({
      name: 'single',
      api: single.api,
      sellers,
      users,
      setActive: async (productId, active) => void (await single.owner`update waitress.products set active = ${active} where id = ${productId}`),
    })
    // One difference, documented (docs/scale-out.md): in a batch's answer, a
    // product inside an order shows its stock as of the part of the batch on
    // its shard; one database builds every answer after the whole batch.
    const batchStock = /"stock":\d+/g
    const comparable = (step: Step, labels: Map<number, string>) =>
      step.step === 'batch: mixed' ? normalize(JSON.parse(JSON.stringify(step).replace(batchStock, '"stock":0')), labels) : normalize(step, labels)
    const a = onShards.steps.map((step) => comparable(step, onShards.labels))
    const b = onOne.steps.map((step) => comparable(step, onOne.labels))
    for (let i = 0; i < Math.max(a.length, b.length); i++) expect(a[i]).toEqual(b[i])
    // The refusals the scenario meant to provoke, all there.
    const codes = onShards.steps.flatMap((step) => (step.error ? [step.error.code] : []))
    for (const code of ['WA001', 'WA002', 'WA003', 'WA004', 'WA005', 'WA006', 'WA007', 'WA008', 'WA009', 'WA010', 'WA011', 'WA012', 'WA013', 'WA101', '22023', '22P02'])
      expect(codes).toContain(code)
  })

  it('keeps each row on the shard its id names, and routes bare ids without a lookup', async () => {
    const [seller0, buyer0] = await usersOn(cluster.router, 0, 2)
    const [seller1] = await usersOn(cluster.router, 1, 1)
    const p0 = await createProduct(cluster.api, { seller_id: seller0 })
    const p1 = await createProduct(cluster.api, { seller_id: seller1 })
    const [{ partition: partition0 }] = await cluster.router`select waitress.partition_of(${seller0}) as partition`
    expect(p0.id % 16).toBe(partition0)
    expect(await shardsHolding(cluster, 'products', p0.id)).toEqual([0])
    expect(await shardsHolding(cluster, 'products', p1.id)).toEqual([1])

    const cart = await cartOf(cluster.api, buyer0)
    const line0 = await addItem(cluster.api, cart.id, p0.id, 1)
    const line1 = await addItem(cluster.api, cart.id, p1.id, 2)
    expect(await shardsHolding(cluster, 'cart_items', line0)).toEqual([0])
    expect(await shardsHolding(cluster, 'cart_items', line1)).toEqual([1])
    // The cart's home, and its copy where it has lines.
    expect(await shardsHolding(cluster, 'carts', cart.id)).toEqual([0, 1])
    expect((await cartOf(cluster.api, buyer0)).items.map((item: { id: number }) => item.id)).toEqual([line0, line1].sort((a, b) => a - b))

    const [{ placed }] = await cluster.api`select api.place_order(${cart.id}) as placed`
    const orders: { id: number; seller_id: number }[] = placed.orders
    expect(orders.map((o) => o.seller_id).sort()).toEqual([seller0, seller1].sort())
    for (const order of orders) {
      expect(await shardsHolding(cluster, 'orders', order.id)).toEqual([order.seller_id === seller0 ? 0 : 1])
      const [{ moved }] = await cluster.api`select api.act_on_order(${order.id}, 'pay') as moved`
      expect(moved.order.state).toBe('paid')
    }
    // The one schema's routing rule, as a constraint: no row may sit under another partition.
    const misplaced = await errorOf(cluster.shards[0]`insert into waitress.products (id, name, seller_id, price, stock, weight)
                                                      overriding system value values (${p0.id + 16 * 1000 + 1}, 'x', ${seller0}, 1, 1, 1)`)
    expect(misplaced.code).toBe('23514')
  })
})
