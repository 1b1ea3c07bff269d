import type { Sql } from '../src/db/client.ts'
import { judge, type Facts, type OrderLine, type RetryCounts, type Run, type Verdict } from './judge.ts'
import { auditRow } from './outcomes.ts'

/**
 * The facts of a run read straight from the database: complete, in one
 * consistent snapshot (see api-facts.ts for the same through the HTTP API).
 */

/** Where a run's service keeps its own counters: its GET /metrics (serviceMetrics), or an in-process count. */
export interface ServiceCounters {
  /** Statements the service has run again so far after a deadlock or a serialization failure. */
  retries(): Promise<RetryCounts>
}

/** A service's counters read from its Prometheus metrics (waitress_db_retries_total). */
export function serviceMetrics(baseUrl: string, headers: () => Promise<Record<string, string>> = async () => ({})): ServiceCounters {
  return {
    async retries() {
      const response = await fetch(`${baseUrl}/metrics`, { headers: await headers() })
      if (!response.ok) throw new Error(`GET ${baseUrl}/metrics answered ${response.status}`)
      return retriesIn(await response.text())
    },
  }
}

/** waitress_db_retries_total from a Prometheus text exposition; an error when the service does not expose it. */
export function retriesIn(metrics: string): RetryCounts {
  const count = (code: string) => {
    const match = new RegExp(`^waitress_db_retries_total\\{code="${code}"\\} (\\S+)$`, 'm').exec(metrics)
    if (!match) throw new Error(`the service does not count its retries after ${code} (no waitress_db_retries_total{code="${code}"} in its metrics)`)
    return Number(match[1])
  }
  return { deadlocks: count('40P01'), serializationFailures: count('40001') }
}

export interface ReadOptions {
  /** The service whose retries the verdict must count (see ServiceCounters). */
  service?: ServiceCounters
  /**
   * Ends the sessions that took part in the run (pools that reconnect by
   * themselves, or a service stopped gracefully), so that PostgreSQL
   * publishes their statistics; see deadlockCount. Default:
   * readDefaults.publish.
   */
  publish?: () => Promise<void>
  /**
   * Wait until every other session of the database has ended before reading
   * the deadlock counter (default true). Off: the count is read at once and
   * the verdict says it may lag (for runs whose service must stay up).
   */
  flush?: boolean
}

/** What a process (the test suite) sets once: how its own pools publish their statistics. */
export const readDefaults: Pick<ReadOptions, 'publish'> = {}

export interface DeadlockReading {
  deadlocks: number
  /** When the server started (pg_postmaster_start_time): counts of two server lives do not compare. */
  epoch: string
  /** Why the count may lag behind, when some session could not be made to publish its statistics. */
  unflushed?: string
}

/** How long the sessions that publish() ended may take to leave; only a session something keeps open runs into it. */
const FLUSH_DEADLINE_MS = 15_000

/**
 * PostgreSQL's count of deadlocks detected in this database so far, read
 * once every session's statistics are published. A backend counts a
 * deadlock it detects in its own memory and publishes it at most once a
 * second, up to 10 s later when it falls idle (PGSTAT_IDLE_INTERVAL), and
 * always when it exits; an immediate shutdown loses it. So: publish() ends
 * the sessions that took part, the count is read once every other session
 * that was open has left pg_stat_activity (a backend publishes before it
 * leaves), and the reading session publishes its own through
 * pg_stat_force_next_flush(). Sessions are never killed from here: a pool
 * whose connection is killed under it fails its next query.
 */
export async function deadlockCount(sql: Sql, options: Omit<ReadOptions, 'service'> = {}): Promise<DeadlockReading> {
  const flush = options.flush ?? true
  const publish = options.publish ?? readDefaults.publish
  const [{ others, self }] = await sql<{ others: { pid: number; name: string }[]; self: number }[]>`
    select coalesce(jsonb_agg(jsonb_build_object('pid', pid, 'name', application_name)) filter (where pid <> pg_backend_pid()), '[]') as others,
           pg_backend_pid() as self
      from pg_stat_activity
     where datname = current_database() and backend_type = 'client backend'`
  if (flush) await publish?.()
  const session = await sql.reserve()
  try {
    const [{ pid: reader }] = await session<{ pid: number }[]>`select pg_backend_pid() as pid`
    // The session that listed the others, unless it is the one reading now, is one of them.
    const open = [...others, { pid: self, name: '(the reader)' }].filter((s) => s.pid !== reader)
    let unflushed: string | undefined
    if (!flush) unflushed = 'it was read without waiting for the other sessions to publish their statistics (up to 10 s late)'
    else {
      const deadline = performance.now() + FLUSH_DEADLINE_MS
      for (;;) {
        const left = await session<{ pid: number }[]>`select pid from pg_stat_activity where pid = any (${open.map((s) => s.pid)}::int[])`
        if (left.length === 0) break
        if (performance.now() > deadline) {
          const names = [...new Set(open.filter((s) => left.some((l) => l.pid === s.pid)).map((s) => s.name || '(no application_name)'))]
          unflushed = `${left.length} sessions open during the run were never ended, so may not have published their statistics (${names.join(', ')})`
          break
        }
        await Bun.sleep(5)
      }
    }
    try {
      // Publishes this session's own statistics as the statement ends.
      await session`select pg_stat_force_next_flush()`
    } catch (error) {
      unflushed ??= `the reading session could not publish its own statistics: ${(error as Error).message}`
    }
    const [row] = await session<{ deadlocks: number; epoch: string }[]>`
      select deadlocks::int as deadlocks, pg_postmaster_start_time()::text as epoch
        from pg_stat_database where datname = current_database()`
    return { deadlocks: row.deadlocks, epoch: row.epoch, unflushed }
  } finally {
    session.release()
  }
}

async function serviceRetries(service: ServiceCounters | undefined): Promise<RetryCounts | undefined> {
  return service ? await service.retries() : undefined
}

/**
 * What a run starts with: the products' stock (in the order given, which the
 * verdict's tallies follow), the deadlock counter and the service's retries,
 * read just before the release. The counter is read at once: a count that
 * lags before the run can only make the run look worse, never better (the
 * reading after it, in readFacts, is the one that must be complete).
 */
export async function startRun(
  sql: Sql,
  productIds: readonly number[],
  options: Pick<ReadOptions, 'service'> = {},
): Promise<Pick<Run, 'initialStock' | 'deadlocksBefore' | 'statsEpoch' | 'retriesBefore'>> {
  const rows = await sql<{ id: number; stock: number }[]>`select id, stock from waitress.products where id = any (${productIds as number[]}::bigint[])`
  const stock = new Map(rows.map((row) => [row.id, row.stock]))
  const missing = productIds.filter((id) => !stock.has(id))
  if (missing.length > 0) throw new Error(`no product with id ${missing.join(', ')}`)
  const reading = await deadlockCount(sql, { flush: false })
  return {
    initialStock: new Map(productIds.map((id) => [id, stock.get(id)!])),
    deadlocksBefore: reading.deadlocks,
    statsEpoch: reading.epoch,
    retriesBefore: await serviceRetries(options.service),
  }
}

/**
 * Reads everything the run touched, in one consistent snapshot: its products,
 * every item of its carts, and every order with a line of its products or
 * carts (plus any order a client reported, so a missing one shows). Needs
 * only read access (waitress_api is enough).
 */
export async function readFacts(sql: Sql, run: Run, options: ReadOptions = {}): Promise<Facts> {
  const productIds = [...run.initialStock.keys()]
  const cartIds = [...new Set(run.checkouts.map((c) => c.cartId))]
  const reportedIds = run.checkouts.flatMap((c) => (c.outcome.kind === 'accepted' ? c.outcome.orders.map((o) => o.id) : []))
  const retries = await serviceRetries(options.service)
  const reading = await deadlockCount(sql, options)

  return sql.begin('isolation level repeatable read read only', async (tx) => {
    const products = await tx<{ id: number; stock: number; price: number; active: boolean; seller_id: number }[]>`
      select id, stock, price, active, seller_id from waitress.products where id = any (${productIds}::bigint[])`
    const orders = await tx<{ id: number; buyer_id: number; seller_id: number; state: string; total_price: number; lines: OrderLine[] }[]>`
      with touched as (
        select oi.order_id from waitress.order_items oi
         where oi.product_id = any (${productIds}::bigint[])
            or oi.cart_item_id in (select ci.id from waitress.cart_items ci where ci.cart_id = any (${cartIds}::bigint[]))
        union
        select unnest(${reportedIds}::bigint[])
      )
      select o.id, o.buyer_id, o.seller_id, o.state::text as state, o.total_price,
             coalesce(jsonb_agg(jsonb_build_object('cartItemId', oi.cart_item_id, 'productId', oi.product_id,
                                                   'quantity', oi.quantity, 'price', oi.price)
                                order by oi.cart_item_id) filter (where oi.id is not null), '[]') as lines
        from waitress.orders o
        left join waitress.order_items oi on oi.order_id = o.id
       where o.id in (select order_id from touched)
       group by o.id`
    const audit = await tx<{ product_id: number; stock: number; ledger_stock: number; sold_in_ledger: number; sold_in_orders: number }[]>`
      select product_id, stock, ledger_stock::bigint, sold_in_ledger::bigint, sold_in_orders::bigint
        from api.inventory_audit() where product_id = any (${productIds}::bigint[])`
    const items = await tx<{ id: number; cart_id: number; product_id: number; quantity: number; purchased: boolean }[]>`
      select ci.id, ci.cart_id, ci.product_id, ci.quantity, ci.purchased
        from waitress.cart_items ci
       where ci.cart_id = any (${cartIds}::bigint[])
          or ci.id in (select oi.cart_item_id from waitress.order_items oi where oi.order_id = any (${orders.map((o) => o.id)}::bigint[]))`
    return {
      source: 'database' as const,
      products: new Map(products.map((p) => [p.id, { stock: p.stock, price: p.price, active: p.active, sellerId: p.seller_id }])),
      orders: new Map(
        orders.map((o) => [o.id, { id: o.id, buyerId: o.buyer_id, sellerId: o.seller_id, state: o.state, totalPrice: o.total_price, lines: o.lines }]),
      ),
      cartItems: new Map(
        items.map((i) => [i.id, { id: i.id, cartId: i.cart_id, productId: i.product_id, quantity: i.quantity, purchased: i.purchased }]),
      ),
      carts: new Set(cartIds),
      openItemsOnly: false,
      deadlocks: reading.deadlocks,
      statsEpoch: reading.epoch,
      deadlocksUnflushed: reading.unflushed,
      retries,
      audit: audit.map(auditRow),
    }
  })
}

/** Reads the database (and the service's counters) after a run and judges it. */
export async function checkInvariants(sql: Sql, run: Run, options: ReadOptions = {}): Promise<Verdict> {
  return judge(run, await readFacts(sql, run, options))
}
