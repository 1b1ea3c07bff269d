import { describe, expect, it } from 'bun:test'
import postgres from 'postgres'
import { testDatabaseUrl } from '../support/db.ts'
import { newUserId } from '../support/fixtures.ts'

/**
 * The plans api.orders really runs, read with auto_explain (nested statements,
 * sent to this session as notices), on a seller with 10,000 orders among
 * 10,000 of 1,000 other sellers. Everything happens in one transaction that
 * is rolled back, so no other test sees these orders.
 */
async function withManyOrders<T>(run: (session: postgres.Sql, plans: string[], ids: { seller: number; buyer: number; user: number }) => Promise<T>) {
  const plans: string[] = []
  const session = postgres(testDatabaseUrl(), { max: 1, onnotice: (notice) => plans.push(notice.message) })
  const seller = newUserId()
  const buyer = newUserId()
  const user = newUserId()
  try {
    return await session.begin(async (tx) => {
      await tx`
        insert into waitress.orders (buyer_id, seller_id, total_price)
        select case when g % 10 = 0 then ${buyer}::bigint else 5000000000 + g % 2000 end, ${seller}::bigint, 100
          from generate_series(1, 10000) g`
      await tx`
        insert into waitress.orders (buyer_id, seller_id, total_price)
        select 5100000000 + g % 1000, 5200000000 + g % 1000, 100 from generate_series(1, 10000) g`
      // A user who buys and sells, and once sells to themselves.
      await tx`
        insert into waitress.orders (buyer_id, seller_id, total_price)
        select case when g % 3 = 0 then 5300000000 else ${user}::bigint end,
               case when g % 3 = 0 or g = 7 then ${user}::bigint else 5400000000 end, 100
          from generate_series(1, 60) g`
      await tx`analyze waitress.orders`
      await tx`load 'auto_explain'`
      await tx.unsafe(`
        set local auto_explain.log_min_duration = 0;
        set local auto_explain.log_nested_statements = on;
        set local auto_explain.log_analyze = on;
        set local auto_explain.log_timing = off;
        set local auto_explain.log_level = notice;
        set local client_min_messages = notice`)
      // Thrown, so that begin() rolls the transaction back.
      throw new Rollback(await run(tx as unknown as postgres.Sql, plans, { seller, buyer, user }))
    })
  } catch (error) {
    if (error instanceof Rollback) return error.result as T
    throw error
  } finally {
    await session.end({ timeout: 5 })
  }
}

class Rollback {
  constructor(readonly result: unknown) {}
}

/** The plan of the page query itself (not of order_json's nested ones). */
const pagePlan = (plans: string[]) => {
  const plan = plans.findLast((text) => text.includes('jsonb_agg(waitress.order_json(o)'))
  if (!plan) throw new Error(`no plan of the page query among ${plans.length} notices`)
  return plan
}

/** actual rows of each scan of orders using `index`. */
const rowsRead = (plan: string, index: string) =>
  [...plan.matchAll(new RegExp(`Index Scan using ${index} on orders \\S+ +\\(cost[^)]*\\) \\(actual[^)]*rows=([\\d.]+)`, 'g'))].map((m) => Number(m[1]))

const hasSort = (plan: string) => /(^|->)\s*Sort\s+\(/m.test(plan)

describe('GET /orders paging (api.orders)', () => {
  it("reads a seller's page by one ordered scan of (seller_id, id), no sort, only the page's rows, however deep", async () => {
    await withManyOrders(async (tx, plans, { seller }) => {
      const ids = (await tx<{ id: bigint }[]>`select id from waitress.orders where seller_id = ${seller} order by id`).map((r) => Number(r.id))
      expect(ids).toHaveLength(10_000)
      // Several calls: PL/pgSQL switches to a generic plan after the fifth.
      for (const [after, round] of [null, ids[8999], ids[4999], ids[9989], null, ids[100], ids[9000]].map((a, i) => [a, i] as const)) {
        plans.length = 0
        const [{ page }] = await tx`select api.orders(p_seller_id => ${seller}, p_after => ${after}, p_limit => 10) as page`
        const expected = ids.filter((id) => after === null || id > after).slice(0, 10)
        expect(page.map((o: { id: number }) => o.id)).toEqual(expected)
        const plan = pagePlan(plans)
        expect({ round, index: rowsRead(plan, 'orders_seller_id_id_idx') }).toEqual({ round, index: [expected.length] })
        expect({ round, sorted: hasSort(plan), pkey: plan.includes('orders_pkey') }).toEqual({ round, sorted: false, pkey: false })
      }
    })
  })

  it("reads a buyer's page by one ordered scan of (buyer_id, id), also with the seller named, and for the seller's token", async () => {
    await withManyOrders(async (tx, plans, { seller, buyer }) => {
      const ids = (await tx<{ id: bigint }[]>`select id from waitress.orders where buyer_id = ${buyer} order by id`).map((r) => Number(r.id))
      expect(ids).toHaveLength(1_000)
      for (const call of [
        () => tx`select api.orders(p_buyer_id => ${buyer}, p_after => ${ids[500]}, p_limit => 20) as page`,
        () => tx`select api.orders(p_buyer_id => ${buyer}, p_seller_id => ${seller}, p_after => ${ids[500]}, p_limit => 20) as page`,
        // The buyer, signed in, lists what they bought from this seller.
        () => tx`select api.orders(p_seller_id => ${seller}, p_after => ${ids[500]}, p_limit => 20, p_user_id => ${buyer}) as page`,
      ]) {
        plans.length = 0
        const [{ page }] = await call()
        expect(page.map((o: { id: number }) => o.id)).toEqual(ids.slice(501, 521))
        const plan = pagePlan(plans)
        expect(rowsRead(plan, 'orders_buyer_id_id_idx')).toEqual([20])
        expect(hasSort(plan)).toBe(false)
      }
    })
  })

  it("merges a signed-in user's bought and sold orders from both indexes, reading at most a page from each", async () => {
    await withManyOrders(async (tx, plans, { user }) => {
      const ids = (await tx<{ id: bigint }[]>`select id from waitress.orders where ${user} in (buyer_id, seller_id) order by id`).map((r) => Number(r.id))
      expect(ids).toHaveLength(60)
      const seen: number[] = []
      let after: number | null = null
      for (;;) {
        plans.length = 0
        const [{ page }] = await tx`select api.orders(p_after => ${after}, p_limit => 7, p_user_id => ${user}) as page`
        if (page.length === 0) break
        const plan = pagePlan(plans)
        for (const index of ['orders_buyer_id_id_idx', 'orders_seller_id_id_idx']) {
          const scans = rowsRead(plan, index)
          expect({ index, scans: scans.length, page: scans.every((rows) => rows <= 7) }).toEqual({ index, scans: 1, page: true })
        }
        expect(plan.includes('orders_pkey')).toBe(false)
        seen.push(...page.map((o: { id: number }) => o.id))
        after = seen.at(-1)!
      }
      // Every order once, in order: the one the user sold to themselves too.
      expect(seen).toEqual(ids)
    })
  })

  it("shows a signed-in user only the orders they bought or sold, whatever the filters name", async () => {
    await withManyOrders(async (tx, _plans, { seller, buyer }) => {
      const stranger = newUserId()
      const list = async (filters: { buyer?: number; seller?: number; user: number }) =>
        ((await tx`select api.orders(p_buyer_id => ${filters.buyer ?? null}, p_seller_id => ${filters.seller ?? null},
                                     p_limit => 100, p_user_id => ${filters.user}) as page`)[0].page as { buyer_id: number; seller_id: number }[])
      // The seller names a buyer: what that buyer bought from them.
      const sold = await list({ buyer, user: seller })
      expect(sold).toHaveLength(100)
      expect(sold.every((o) => o.buyer_id === buyer && o.seller_id === seller)).toBe(true)
      // The buyer names another buyer: only what the buyer sold to them, which is nothing.
      expect(await list({ buyer: 5000000001, user: buyer })).toEqual([])
      // A stranger names both parties, or one: nothing.
      expect(await list({ buyer, seller, user: stranger })).toEqual([])
      expect(await list({ seller, user: stranger })).toEqual([])
      expect(await list({ buyer, user: stranger })).toEqual([])
      expect(await list({ user: stranger })).toEqual([])
    })
  })
})
