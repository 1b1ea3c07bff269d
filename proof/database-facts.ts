import type { Sql } from '../src/db/client.ts'
import { judge, type Facts, type OrderLine, type Run, type Verdict } from './judge.ts'
import { auditRow } from './outcomes.ts'

/**
 * The facts of a run read straight from the database: complete, in one
 * consistent snapshot (see api-facts.ts for the same through the HTTP API).
 */

/** PostgreSQL's count of deadlocks detected in this database so far. */
export async function deadlockCount(sql: Sql): Promise<number> {
  await sql`select pg_stat_clear_snapshot()`
  const [row] = await sql<{ deadlocks: number }[]>`select deadlocks::int as deadlocks from pg_stat_database where datname = current_database()`
  return row.deadlocks
}

/**
 * What a run starts with: the products' stock (in the order given, which the
 * verdict's tallies follow) and the deadlock counter, read just before the release.
 */
export async function startRun(sql: Sql, productIds: readonly number[]): Promise<Pick<Run, 'initialStock' | 'deadlocksBefore'>> {
  const rows = await sql<{ id: number; stock: number }[]>`select id, stock from waitress.products where id = any (${productIds as number[]}::bigint[])`
  const stock = new Map(rows.map((row) => [row.id, row.stock]))
  const missing = productIds.filter((id) => !stock.has(id))
  if (missing.length > 0) throw new Error(`no product with id ${missing.join(', ')}`)
  return { initialStock: new Map(productIds.map((id) => [id, stock.get(id)!])), deadlocksBefore: await deadlockCount(sql) }
}

/**
 * Reads everything the run touched, in one consistent snapshot: its products,
 * every item of its carts, and every order with a line of its products or
 * carts (plus any order a client reported, so a missing one shows). Needs
 * only read access (waitress_api is enough).
 */
export async function readFacts(sql: Sql, run: Run): Promise<Facts> {
  const productIds = [...run.initialStock.keys()]
  const cartIds = [...new Set(run.checkouts.map((c) => c.cartId))]
  const reportedIds = run.checkouts.flatMap((c) => (c.outcome.kind === 'accepted' ? c.outcome.orders.map((o) => o.id) : []))
  const deadlocks = await deadlockCount(sql)

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
      deadlocks,
      audit: audit.map(auditRow),
    }
  })
}

/** Reads the database after a run and judges it. */
export async function checkInvariants(sql: Sql, run: Run): Promise<Verdict> {
  return judge(run, await readFacts(sql, run))
}
