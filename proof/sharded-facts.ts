import type { Sql } from '../src/db/client.ts'
import { deadlockCount, type ReadOptions, type ServiceCounters } from './database-facts.ts'
import { judge, type AuditRow, type Facts, type OrderLine, type OrderRecord, type Run, type Verdict, type Violation } from './judge.ts'
import { auditRow } from './outcomes.ts'

/**
 * The invariant checker on a sharded deployment: the facts of a run read
 * from every shard (database-facts.ts reads one database) and merged, then
 * judged by the same judge, plus what only shards can get wrong.
 *
 * A checkout across shards that one shard refused leaves, on the shards that
 * had placed their part, orders cancelled through the lifecycle and marked
 * compensated, whose lines went back into the cart as new open lines. To the
 * judge, which knows a single database where a refusal leaves no trace, such
 * a part is what it was: a stock edit that took the units and gave them back
 * (two adjustments, -q and +q), and cart lines that were replaced. So the
 * compensated orders and the cart lines they consumed are left out of the
 * facts and turned into stock adjustments, and checked here instead: each
 * is dead, each of its lines was sold once and released once in the ledger.
 *
 * Each shard is read in one consistent snapshot of its own; read a run that
 * has finished (nothing in flight), the shards' snapshots together are the
 * run's end state.
 *
 * Deadlocks are counted as database-facts.ts counts them, on every shard:
 * each shard's counter is read once the sessions open there during the run
 * (the router's PL/Proxy connections among them, which end with the router
 * sessions that opened them) have published their statistics, and the sum is
 * compared with the sum before the run, on the same server lives.
 */

export interface ShardedFacts {
  facts: Facts
  /** The run, plus each compensated line as a stock adjustment -q, +q. */
  run: Run
  compensated: CompensatedOrder[]
  /** The run's checkouts still in the journal at their buyer's home: stopped half-way. */
  journal: { shard: number; id: string; cartId: number; startedAt: Date }[]
  /** Rows of the run stored on a shard their id does not route to, or cart copies that disagree with their home. */
  misplaced: string[]
}

export interface CompensatedOrder extends OrderRecord {
  shard: number
  /** Sale and release movements per line (product id → counts). */
  ledger: Map<number, { sales: number; releases: number; sold: number; released: number }>
}

/**
 * Every shard's deadlock counter, summed, read one shard after the other as
 * deadlockCount reads one database (see ReadOptions: publish, flush). The
 * epoch names every shard's server life, so a shard restarted in between
 * makes the sums incomparable.
 */
async function shardDeadlocks(shards: Sql[], options: Omit<ReadOptions, 'service'>) {
  let deadlocks = 0
  const epochs: string[] = []
  const unflushed: string[] = []
  for (const [shard, sql] of shards.entries()) {
    const reading = await deadlockCount(sql, options)
    deadlocks += reading.deadlocks
    epochs.push(`shard ${shard}: ${reading.epoch}`)
    if (reading.unflushed) unflushed.push(`shard ${shard}: ${reading.unflushed}`)
  }
  return { deadlocks, epoch: epochs.join(', '), unflushed: unflushed.length ? unflushed.join('; ') : undefined }
}

/** Reads the run's facts from every shard (their owner pools, in shard order) and merges them. */
export async function readShardedFacts(shards: Sql[], run: Run, options: ReadOptions = {}): Promise<ShardedFacts> {
  const productIds = [...run.initialStock.keys()]
  const cartIds = [...new Set(run.checkouts.map((c) => c.cartId))]
  const reportedIds = run.checkouts.flatMap((c) => (c.outcome.kind === 'accepted' ? c.outcome.orders.map((o) => o.id) : []))
  const retries = options.service ? await options.service.retries() : undefined
  const counted = await shardDeadlocks(shards, options)

  const perShard = await Promise.all(
    shards.map(async (sql, shard) => {
      return sql.begin('isolation level repeatable read read only', async (tx) => {
        const [identity] = await tx<{ partitions: number }[]>`select partitions from waitress.shard_identity`
        const products = await tx<{ id: number; stock: number; price: number; active: boolean; seller_id: number }[]>`
          select id, stock, price, active, seller_id from waitress.products where id = any (${productIds}::bigint[])`
        const orders = await tx<
          { id: number; buyer_id: number; seller_id: number; state: string; total_price: number; compensated: boolean; lines: OrderLine[] }[]
        >`
          with touched as (
            select oi.order_id from waitress.order_items oi
             where oi.product_id = any (${productIds}::bigint[])
                or oi.cart_item_id in (select ci.id from waitress.cart_items ci where ci.cart_id = any (${cartIds}::bigint[]))
            union
            select unnest(${reportedIds}::bigint[])
          )
          select o.id, o.buyer_id, o.seller_id, o.state::text as state, o.total_price, o.compensated_at is not null as compensated,
                 coalesce(jsonb_agg(jsonb_build_object('cartItemId', oi.cart_item_id, 'productId', oi.product_id,
                                                       'quantity', oi.quantity, 'price', oi.price)
                                    order by oi.cart_item_id) filter (where oi.id is not null), '[]') as lines
            from waitress.orders o
            left join waitress.order_items oi on oi.order_id = o.id
           where o.id in (select order_id from touched)
           group by o.id`
        const ledger = await tx<{ order_id: number; product_id: number; reason: string; count: number; quantity: number }[]>`
          select m.order_id, m.product_id, m.reason::text as reason, count(*)::int as count, sum(m.quantity)::int as quantity
            from waitress.stock_movements m
            join waitress.orders o on o.id = m.order_id
           where o.compensated_at is not null and o.id = any (${orders.map((o) => o.id)}::bigint[])
           group by 1, 2, 3`
        const audit = await tx<{ product_id: number; stock: number; ledger_stock: number; sold_in_ledger: number; sold_in_orders: number }[]>`
          select product_id, stock, ledger_stock::bigint, sold_in_ledger::bigint, sold_in_orders::bigint
            from api.inventory_audit() where product_id = any (${productIds}::bigint[])`
        const items = await tx<{ id: number; cart_id: number; product_id: number; quantity: number; purchased: boolean }[]>`
          select ci.id, ci.cart_id, ci.product_id, ci.quantity, ci.purchased
            from waitress.cart_items ci
           where ci.cart_id = any (${cartIds}::bigint[])
              or ci.id in (select oi.cart_item_id from waitress.order_items oi where oi.order_id = any (${orders.map((o) => o.id)}::bigint[]))`
        const carts = await tx<{ id: number; user_id: number }[]>`
          select id, user_id from waitress.carts where id = any (${cartIds}::bigint[])`
        const journal = await tx<{ id: string; cart_id: number; started_at: Date }[]>`
          select id::text, cart_id, started_at from waitress.checkouts where cart_id = any (${cartIds}::bigint[])`
        return { shard, identity, products, orders, ledger, audit, items, carts, journal }
      })
    }),
  )

  const owns = (shard: number, id: number) => ((perShard[shard].identity?.partitions ?? 0) & (1 << (id & 15))) !== 0
  const misplaced: string[] = []
  const products = new Map<number, Facts['products'] extends Map<number, infer P> ? P : never>()
  const orders = new Map<number, OrderRecord>()
  const compensated: CompensatedOrder[] = []
  const cartItems = new Map<number, Facts['cartItems'] extends Map<number, infer I> ? I : never>()
  const audit: AuditRow[] = []
  const homes = new Map<number, { shard: number; userId: number }>()
  const copies: { shard: number; id: number; userId: number }[] = []

  for (const part of perShard) {
    for (const p of part.products) {
      if (!owns(part.shard, p.id)) misplaced.push(`product ${p.id} is on shard ${part.shard}, which does not hold partition ${p.id & 15}`)
      products.set(p.id, { stock: p.stock, price: p.price, active: p.active, sellerId: p.seller_id })
    }
    for (const o of part.orders) {
      if (!owns(part.shard, o.id)) misplaced.push(`order ${o.id} is on shard ${part.shard}, which does not hold partition ${o.id & 15}`)
      const record: OrderRecord = { id: o.id, buyerId: o.buyer_id, sellerId: o.seller_id, state: o.state, totalPrice: o.total_price, lines: o.lines }
      if (!o.compensated) {
        orders.set(o.id, record)
        continue
      }
      const ledger = new Map<number, { sales: number; releases: number; sold: number; released: number }>()
      for (const m of part.ledger.filter((m) => m.order_id === o.id)) {
        const entry = ledger.get(m.product_id) ?? { sales: 0, releases: 0, sold: 0, released: 0 }
        if (m.reason === 'sale') Object.assign(entry, { sales: m.count, sold: -m.quantity })
        if (m.reason === 'release') Object.assign(entry, { releases: m.count, released: m.quantity })
        ledger.set(m.product_id, entry)
      }
      compensated.push({ ...record, shard: part.shard, ledger })
    }
    for (const i of part.items) {
      if (!owns(part.shard, i.id)) misplaced.push(`cart item ${i.id} is on shard ${part.shard}, which does not hold partition ${i.id & 15}`)
      cartItems.set(i.id, { id: i.id, cartId: i.cart_id, productId: i.product_id, quantity: i.quantity, purchased: i.purchased })
    }
    for (const c of part.carts) {
      if (owns(part.shard, c.id)) homes.set(c.id, { shard: part.shard, userId: c.user_id })
      else copies.push({ shard: part.shard, id: c.id, userId: c.user_id })
    }
    audit.push(...part.audit.map(auditRow))
  }
  for (const copy of copies) {
    const home = homes.get(copy.id)
    if (!home) misplaced.push(`cart ${copy.id} has a copy on shard ${copy.shard} but no home`)
    else if (home.userId !== copy.userId)
      misplaced.push(`cart ${copy.id}'s copy on shard ${copy.shard} is user ${copy.userId}'s, its home says user ${home.userId}`)
  }

  // The cart lines a compensated order consumed were replaced by new open
  // lines: to the judge they are gone, as the refused checkout never took them.
  const consumed = new Set(compensated.flatMap((order) => order.lines.map((line) => line.cartItemId)))
  const sold = new Set([...orders.values()].flatMap((order) => order.lines.map((line) => line.cartItemId)))
  for (const id of consumed) if (!sold.has(id)) cartItems.delete(id)

  const adjustments = new Map<number, number[]>([...(run.stockAdjustments ?? [])].map(([id, deltas]) => [id, [...deltas]]))
  for (const order of compensated)
    for (const line of order.lines) adjustments.set(line.productId, [...(adjustments.get(line.productId) ?? []), -line.quantity, line.quantity])

  return {
    facts: {
      source: 'database',
      products,
      orders,
      cartItems,
      carts: new Set(cartIds),
      openItemsOnly: false,
      deadlocks: counted.deadlocks,
      statsEpoch: counted.epoch,
      deadlocksUnflushed: counted.unflushed,
      retries,
      audit,
    },
    run: { ...run, stockAdjustments: adjustments },
    compensated,
    journal: perShard.flatMap((part) => part.journal.map((j) => ({ shard: part.shard, id: j.id, cartId: j.cart_id, startedAt: j.started_at }))),
    misplaced,
  }
}

/**
 * What a run starts with on shards: the products' stock (each read on its
 * shard), the deadlock counters (at once: a count that lags before the run
 * can only make it look worse) and, with a service, its retries so far.
 */
export async function startShardedRun(
  shards: Sql[],
  productIds: readonly number[],
  options: { service?: ServiceCounters } = {},
): Promise<Pick<Run, 'initialStock' | 'deadlocksBefore' | 'statsEpoch' | 'retriesBefore'>> {
  const stock = new Map<number, number>()
  for (const sql of shards) {
    for (const row of await sql<{ id: number; stock: number }[]>`
      select id, stock from waitress.products where id = any (${productIds as number[]}::bigint[])`)
      stock.set(row.id, row.stock)
  }
  const missing = productIds.filter((id) => !stock.has(id))
  if (missing.length > 0) throw new Error(`no product with id ${missing.join(', ')} on any shard`)
  const counted = await shardDeadlocks(shards, { flush: false })
  return {
    initialStock: new Map(productIds.map((id) => [id, stock.get(id)!])),
    deadlocksBefore: counted.deadlocks,
    statsEpoch: counted.epoch,
    retriesBefore: options.service ? await options.service.retries() : undefined,
  }
}

/** The invariants only a sharded deployment can break, each checked on the merged facts. */
export const SHARDED_INVARIANTS = ['compensated-cleanly', 'journal-settled', 'ids-route', 'router-agrees'] as const

/**
 * Reads every shard after a run and judges it: the judge's invariants plus
 * SHARDED_INVARIANTS. With the router's pool, also asks the router what the
 * service would be told (api.inventory_audit through PL/Proxy): it must say
 * what the shards say. `options` as for checkInvariants: the service whose
 * retries count, and how the run's sessions publish their statistics.
 */
export async function checkShardedInvariants(
  shards: Sql[],
  run: Run,
  router?: Sql,
  options: ReadOptions = {},
): Promise<Verdict & { compensated: number }> {
  const read = await readShardedFacts(shards, run, options)
  const verdict = judge(read.run, read.facts)
  const extra: Violation[] = []
  if (router) {
    const productIds = [...run.initialStock.keys()]
    const rows = await router<{ product_id: number; stock: number; ledger_stock: number; sold_in_ledger: number; sold_in_orders: number }[]>`
      select product_id, stock, ledger_stock::bigint, sold_in_ledger::bigint, sold_in_orders::bigint
        from api.inventory_audit() where product_id = any (${productIds}::bigint[])`
    const key = (row: AuditRow) => JSON.stringify(row)
    const throughRouter = rows.map(auditRow).map(key).sort()
    const fromShards = (read.facts.audit ?? []).map(key).sort()
    if (JSON.stringify(throughRouter) !== JSON.stringify(fromShards))
      extra.push({ invariant: 'router-agrees', message: `the router's inventory_audit says ${throughRouter.join(', ') || 'nothing'}, the shards say ${fromShards.join(', ') || 'nothing'}` })
  }
  for (const order of read.compensated) {
    if (!['cancelled', 'expired', 'refunded'].includes(order.state))
      extra.push({ invariant: 'compensated-cleanly', message: `compensated order ${order.id} is ${order.state}`, orderId: order.id })
    for (const line of order.lines) {
      const moves = order.ledger.get(line.productId)
      if (!moves || moves.sales !== 1 || moves.releases !== 1 || moves.sold !== line.quantity || moves.released !== line.quantity)
        extra.push({
          invariant: 'compensated-cleanly',
          message: `compensated order ${order.id}, product ${line.productId} ×${line.quantity}: ledger ${JSON.stringify(moves ?? null)}, not one sale and one release of it`,
          orderId: order.id,
          productId: line.productId,
        })
    }
  }
  for (const entry of read.journal)
    extra.push({ invariant: 'journal-settled', message: `checkout ${entry.id} of cart ${entry.cartId} is still in the journal of shard ${entry.shard}`, cartId: entry.cartId })
  for (const message of read.misplaced) extra.push({ invariant: 'ids-route', message })
  return {
    ...verdict,
    ok: verdict.ok && extra.length === 0,
    violations: [...verdict.violations, ...extra],
    checked: [...verdict.checked, ...SHARDED_INVARIANTS],
    compensated: read.compensated.length,
  }
}
