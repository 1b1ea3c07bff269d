/**
 * Load generator for the SQL modes, one pool of `concurrency` connections:
 *   direct   — place_order(cart_id, item_ids) as waitress_api, as the service calls it;
 *   baseline — the original client-side transaction (baseline.ts), as the owner;
 *   bare     — the bare conditional UPDATE, as the owner (waitress_api may not write).
 * Started by bench/bench.ts with a LoadConfig file.
 */
import { createSql } from '../src/db/client'
import { baselineCheckout } from './baseline'
import { describeSqlError, readLoadConfig, runLoad } from './driver'
import type { Buyer, Outcome } from './types'

const config = readLoadConfig()
const sql = createSql(config.databaseUrl!, {
  max: config.concurrency,
  role: config.mode === 'direct' ? 'waitress_api' : undefined,
})

const attempts: Record<string, (buyer: Buyer | undefined) => Promise<Outcome>> = {
  async direct(buyer) {
    const rows = await sql`select o from jsonb_array_elements(api.place_order(${buyer!.cartId}, ${buyer!.itemIds}::bigint[])->'orders') o`
    if (rows.length !== 1) return { ok: false, units: 0, error: `${rows.length} orders for one seller` }
    return { ok: true, units: buyer!.itemIds.length }
  },
  baseline: (buyer) => baselineCheckout(sql, buyer!),
  bare: config.productIds.length === 1 ? bareOne(config.productIds[0]) : bareSeveral(config.productIds),
}

/** The single-row ceiling: one conditional decrement and nothing else. */
function bareOne(productId: number) {
  return async (): Promise<Outcome> => {
    const result = await sql`update waitress.products set stock = stock - 1 where id = ${productId} and stock >= 1`
    return result.count === 1 ? { ok: true, units: 1 } : { ok: false, units: 0, error: 'out of stock' }
  }
}

/**
 * The multi-line counterpart: 2 to 5 of the products (as the carts have),
 * decremented in one statement, locked in id order (an unordered multi-row
 * UPDATE deadlocks), and nothing else.
 */
function bareSeveral(productIds: number[]) {
  return async (): Promise<Outcome> => {
    const count = 2 + Math.floor(Math.random() * (productIds.length - 1))
    const chosen = [...productIds].sort(() => Math.random() - 0.5).slice(0, count).sort((a, b) => a - b)
    const result = await sql`
      with locked as (
        select id from waitress.products
         where id = any (${chosen}::bigint[]) and stock >= 1
         order by id
           for no key update)
      update waitress.products p set stock = p.stock - 1 from locked where p.id = locked.id`
    return result.count === count ? { ok: true, units: count } : { ok: false, units: result.count, error: 'out of stock' }
  }
}

const attempt = attempts[config.mode]
if (!attempt) throw new Error(`load-sql.ts does not run mode ${config.mode}`)
await runLoad(config, attempt, { needsBuyers: config.mode !== 'bare', describeError: describeSqlError })
await sql.end({ timeout: 5 })
process.exit(0)
