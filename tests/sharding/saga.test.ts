import { beforeAll, describe, expect, it } from 'bun:test'
import { createApp } from '../../src/app.ts'
import { MIGRATIONS } from '../../src/generated/sql.ts'
import { checkShardedInvariants, startShardedRun } from '../../proof/sharded-facts.ts'
import { outcomeOfSql } from '../../proof/outcomes.ts'
import { addItem, cartOf, createProduct, errorOf, sharedCluster, sharding, usersOn, type TestCluster } from './support/cluster.ts'

/**
 * A checkout across shards commits one part per shard. When a later part is
 * refused, the parts placed are undone through the lifecycle's own cancel;
 * when the router stops half-way, the journal at the buyer's home lets a
 * retry with the same Idempotency-Key resume, or the sweeper undo it.
 */
describe.skipIf(!sharding.ok)('a checkout across shards', () => {
  let cluster: TestCluster
  beforeAll(async () => {
    cluster = await sharedCluster()
  })

  /** A buyer (home on shard 0) with a line of a shard-0 product and a line of a shard-1 product. */
  async function crossShardCart(quantities: [number, number] = [2, 3], stock = 5) {
    const [seller0, buyer] = await usersOn(cluster.router, 0, 2)
    const [seller1] = await usersOn(cluster.router, 1, 1)
    const a = await createProduct(cluster.api, { name: 'Lamp', seller_id: seller0, stock })
    const b = await createProduct(cluster.api, { name: 'Mug', seller_id: seller1, stock })
    const cart = await cartOf(cluster.api, buyer)
    const lineA = await addItem(cluster.api, cart.id, a.id, quantities[0])
    const lineB = await addItem(cluster.api, cart.id, b.id, quantities[1])
    return { buyer, cart, a, b, lineA, lineB, wants: new Map([[a.id, quantities[0]], [b.id, quantities[1]]]) }
  }

  const stock = async (productId: number) => ((await cluster.api`select api.product(${productId}) as p`)[0].p.stock as number)
  const openLines = async (buyer: number) =>
    ((await cartOf(cluster.api, buyer)).items as { product: { id: number }; quantity: number }[])
      .map((item) => [item.product.id, item.quantity])
      .sort((x, y) => x[0] - y[0])

  /** Checks out on a session without the dry run: the parts are placed in turn and the second one refuses. */
  async function checkoutWithoutPrecheck(cartId: number, key: string | null = null) {
    const session = await cluster.api.reserve()
    try {
      await session`set waitress.checkout_precheck = off`
      return await outcomeOfSql(async () => (await session`select api.place_order(${cartId}, null, null, ${key}) as p`)[0].p.orders)
    } finally {
      session.release()
    }
  }

  it('refused on its second shard, undoes the first through the lifecycle: stock back once, lines back in the cart', async () => {
    const { buyer, cart, a, b, wants } = await crossShardCart()
    await cluster.api`select api.adjust_stock(${b.id}, -4, 'count')`
    const start = await startShardedRun(cluster.shards, [a.id, b.id])

    const outcome = await checkoutWithoutPrecheck(cart.id)

    expect(outcome).toMatchObject({ kind: 'refused', code: 'WA004', details: { shortages: [{ product_id: b.id, requested: 3, available: 1 }] } })
    expect(await stock(a.id)).toBe(5)
    expect(await openLines(buyer)).toEqual([[a.id, 2], [b.id, 3]].sort((x, y) => x[0] - y[0]))
    // The part placed on shard 0: cancelled by the lifecycle, marked, out of the lists, sold once and released once.
    const [part] = await cluster.shards[0]`
      select o.id, o.state::text, o.compensated_at is not null as compensated,
             (select array_agg(m.reason::text || m.quantity order by m.id) from waitress.stock_movements m where m.order_id = o.id) as ledger
        from waitress.orders o where o.buyer_id = ${buyer}`
    expect(part).toMatchObject({ state: 'cancelled', compensated: true, ledger: ['sale-2', 'release2'] })
    expect((await cluster.api`select api.orders(p_buyer_id => ${buyer}) as o`)[0].o).toEqual([])
    const verdict = await checkShardedInvariants(cluster.shards, {
      ...start,
      stockAdjustments: new Map(),
      checkouts: [{ cartId: cart.id, buyerId: buyer, wants, outcome }],
    })
    expect(verdict.violations).toEqual([])
    expect(verdict.compensated).toBe(1)
  })

  it('refused with a key, frees the key: the same request placed later with it succeeds', async () => {
    const { cart, a, b } = await crossShardCart([1, 2])
    await cluster.api`select api.adjust_stock(${b.id}, -4, 'count')`
    expect(await checkoutWithoutPrecheck(cart.id, 'saga-key')).toMatchObject({ kind: 'refused', code: 'WA004' })
    await cluster.api`select api.restock_product(${b.id}, 4)`
    const placed = await checkoutWithoutPrecheck(cart.id, 'saga-key')
    expect(placed).toMatchObject({ kind: 'accepted' })
    expect(await stock(a.id)).toBe(4)
    expect(await stock(b.id)).toBe(3)
  })

  /** The router stops after placing the part on shard 0: the journal is open, the key claimed, shard 1 untouched. */
  async function strandedHalfway(key: string) {
    const setup = await crossShardCart([1, 1])
    const { cart, a } = setup
    const [{ home }] = await cluster.router`
      select waitress.ok(rpc.checkout_begin(${cart.id}, 'place_order', ${cart.id}, ${setup.buyer}, null, null, ${key},
                                             ${(1 << (a.id & 15)) | (1 << (setup.b.id & 15))})) as home`
    const request = { cart_id: cart.id, item_ids: null, note: null, user_id: null }
    const [{ part }] = await cluster.router`
      select waitress.ok(rpc.place_part(${a.id & 15}, ${home.checkout_id}::uuid, ${cluster.router.json(request)}, ${cart.id}, ${setup.buyer}, false)) as part`
    return { ...setup, checkoutId: home.checkout_id as string, stranded: part.orders[0].id as number }
  }

  it('stopped half-way, resumes on a retry with the same key: the placed part replays, the other is placed', async () => {
    const { cart, a, b, stranded } = await strandedHalfway('resume-key')
    expect(await stock(a.id)).toBe(4)
    expect(await stock(b.id)).toBe(5)
    const [{ p }] = await cluster.api`select api.place_order(${cart.id}, null, null, 'resume-key') as p`
    expect(p.orders.map((o: { id: number }) => o.id)).toContain(stranded)
    expect(p.orders).toHaveLength(2)
    expect(await stock(b.id)).toBe(4)
    const [{ again }] = await cluster.api`select api.place_order(${cart.id}, null, null, 'resume-key') as again`
    expect(again).toEqual({ ...p, replayed: true })
    for (const shard of cluster.shards) expect([...(await shard`select * from waitress.checkouts where cart_id = ${cart.id}`)]).toEqual([])
  })

  it('stopped half-way and never retried, is undone by the sweeper (api.expire_orders): nothing half-written stays', async () => {
    const { buyer, cart, a, b } = await strandedHalfway('swept-key')
    const start = await startShardedRun(cluster.shards, [a.id, b.id])
    // Younger than a minute: a checkout may still be running; it is left alone.
    await cluster.api`select api.expire_orders()`
    expect(await stock(a.id)).toBe(4)
    for (const shard of cluster.shards) await shard`update waitress.checkouts set started_at = now() - interval '2 minutes' where cart_id = ${cart.id}`
    await cluster.api`select api.expire_orders()`
    expect(await stock(a.id)).toBe(5)
    expect(await openLines(buyer)).toEqual([[a.id, 1], [b.id, 1]].sort((x, y) => x[0] - y[0]))
    for (const shard of cluster.shards) expect([...(await shard`select * from waitress.checkouts where cart_id = ${cart.id}`)]).toEqual([])
    const verdict = await checkShardedInvariants(cluster.shards, {
      ...start,
      initialStock: new Map([[a.id, 5], [b.id, 5]]),
      checkouts: [{ cartId: cart.id, buyerId: buyer, outcome: { kind: 'failed', status: 0, message: 'the router stopped' } }],
      indefinite: true,
    })
    expect(verdict.violations).toEqual([])
    // The key is free again: the same request now places both parts.
    const [{ p }] = await cluster.api`select api.place_order(${cart.id}, null, null, 'swept-key') as p`
    expect(p).toMatchObject({ replayed: false })
    expect(p.orders).toHaveLength(2)
  })

  it('places a cart over two shards once when 20 checkouts of it arrive at once: the others find nothing left', async () => {
    const { cart, a, b } = await crossShardCart([1, 1])
    const outcomes = await Promise.all(
      Array.from({ length: 20 }, () => outcomeOfSql(async () => (await cluster.api`select api.place_order(${cart.id}) as p`)[0].p.orders)),
    )
    const placed = outcomes.filter((o) => o.kind === 'accepted')
    expect(placed).toHaveLength(1)
    expect(placed[0].kind === 'accepted' && placed[0].orders).toHaveLength(2)
    for (const o of outcomes.filter((o) => o.kind !== 'accepted')) expect(o).toMatchObject({ kind: 'refused', code: 'WA006' })
    expect([await stock(a.id), await stock(b.id)]).toEqual([4, 4])
  })

  it('keeps an Idempotency-Key to one meaning whichever way its request comes: alone, then in a batch, then a retry in the same batch', async () => {
    // A buyer at home on shard 0 whose only line is of a shard-1 product: the key is claimed at home, the order placed on shard 1.
    const [buyer] = await usersOn(cluster.router, 0, 1)
    const [seller1] = await usersOn(cluster.router, 1, 1)
    const b = await createProduct(cluster.api, { name: 'Kettle', seller_id: seller1, stock: 5 })
    const cart = await cartOf(cluster.api, buyer)
    await addItem(cluster.api, cart.id, b.id, 2)
    const key = `router-batch-${crypto.randomUUID()}`

    const [{ p: alone }] = await cluster.api`select api.place_order(${cart.id}, null, 'once', ${key}) as p`
    const [{ outcomes }] = await cluster.api`select api.place_orders(${cluster.api.json([
      { cart_id: cart.id, note: 'once', idempotency_key: key },
      { cart_id: cart.id, note: 'once', idempotency_key: key },
    ] as never)}) as outcomes`

    expect(alone.orders).toHaveLength(1)
    for (const outcome of outcomes) expect(outcome).toEqual({ orders: alone.orders, replayed: true })
    expect(await stock(b.id)).toBe(3)
  })

  it('is not ready while a shard lacks a migration: /readyz names it', async () => {
    const latest = MIGRATIONS[MIGRATIONS.length - 1]
    const app = createApp(cluster.api)
    expect((await app.handle(new Request('http://localhost/readyz'))).status).toBe(200)
    await cluster.shards[1]`delete from public.schema_migrations where version = ${latest}`
    try {
      const reply = await app.handle(new Request('http://localhost/readyz'))
      expect(reply.status).toBe(503)
      expect(((await reply.json()) as { error: string }).error).toContain(latest)
    } finally {
      await cluster.shards[1]`insert into public.schema_migrations (version) values (${latest})`
    }
  })

  it('refuses to mint an id for a partition the shard does not hold', async () => {
    const [seller1] = await usersOn(cluster.router, 1, 1)
    const error = await errorOf(cluster.shards[0]`select api.create_product('misrouted', ${seller1}, 100, 1, 1)`)
    expect(error.message).toContain('is not held by this shard')
  })
})
