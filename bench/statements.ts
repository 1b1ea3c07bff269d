/**
 * Where a checkout's database time goes, statement by statement, from
 * pg_stat_statements: checkouts of the hot product on one connection, with
 * nobody else running, as one call each (the direct cells' api.place_order)
 * and in batches (api.place_orders, as the service coalesces them). Only this
 * connection tracks its statements (pg_stat_statements.track = 'all' for its
 * session; the server runs with 'none'), so the cells are not slowed by it.
 */
import type { Sql } from '../src/db/client.ts'
import { BuyerPool } from './fixtures'

/** One way of calling the checkout, profiled. */
export interface StatementProfile {
  label: string
  /** Checkouts per call. */
  batch: number
  calls: number
  /** The call as the client sends it, µs per checkout (pg_stat_statements' execution time). */
  callUs: number
  /** The statements that took the most time, nested ones included, the call itself first. */
  statements: { text: string; perCheckout: number; us: number }[]
}

export type Profiles = { profiles: StatementProfile[] } | { skipped: string }

/** How many statements each profile lists. */
export const TOP = 8

/**
 * Profiles the checkout on the given product. `calls` calls per way (the
 * first few of each are run before the counters are reset: plans and caches
 * warm up as in a long-running service). Needs pg_stat_statements in
 * shared_preload_libraries and a superuser (it sets the tracking of its own
 * session and resets the counters); otherwise says why it skipped.
 */
export async function profileCheckouts(url: string, connect: (url: string) => Sql, productId: number, calls: number): Promise<Profiles> {
  const sql = connect(url)
  try {
    const [{ preloaded }] = await sql<{ preloaded: boolean }[]>`
      select current_setting('shared_preload_libraries') ~ 'pg_stat_statements' as preloaded`
    if (!preloaded) return { skipped: 'the server does not load pg_stat_statements (shared_preload_libraries)' }
    try {
      await sql`create extension if not exists pg_stat_statements`
      await sql`set pg_stat_statements.track = 'all'`
      await sql`select pg_stat_statements_reset()`
    } catch (error) {
      return { skipped: `pg_stat_statements cannot be used by this login (${error instanceof Error ? error.message : String(error)})` }
    }
    // As before every cell: the hot product's row starts without the dead versions the cells left.
    await sql`vacuum waitress.products`
    const pool = new BuyerPool(sql, [productId])
    const ways: { label: string; batch: number }[] = [
      { label: 'one checkout per call: api.place_order', batch: 1 },
      { label: 'batches of 16: api.place_orders', batch: 16 },
      { label: 'batches of 128: api.place_orders', batch: 128 },
    ]
    const warmup = 3
    const buyers = ways.reduce((sum, way) => sum + way.batch * (calls + warmup), 0)
    await pool.ensure(buyers, buyers)
    const profiles: StatementProfile[] = []
    for (const way of ways) {
      const place = async () => {
        const batch = pool.peek(way.batch)
        pool.consume(way.batch)
        if (way.batch === 1) await sql`select api.place_order(${batch[0].cartId}, ${batch[0].itemIds}::bigint[])`
        else
          await sql`select api.place_orders(${sql.json(batch.map((b) => ({ buyer_id: b.buyerId, item_ids: b.itemIds, one_seller: true })) as never)})`
      }
      for (let i = 0; i < warmup; i++) await place()
      await sql`select pg_stat_statements_reset()`
      for (let i = 0; i < calls; i++) await place()
      const rows = await sql<{ query: string; calls: number; ms: number; toplevel: boolean }[]>`
        select query, calls::int as calls, total_exec_time as ms, toplevel
          from pg_stat_statements
         where dbid = (select oid from pg_database where datname = current_database())
           and query !~* 'pg_stat_statements'
         order by total_exec_time desc`
      const checkouts = calls * way.batch
      const call = rows.find((r) => r.toplevel && /api\.place_orders?\(/.test(r.query))
      if (!call) throw new Error(`pg_stat_statements recorded no call of the checkout for "${way.label}"`)
      profiles.push({
        label: way.label,
        batch: way.batch,
        calls,
        callUs: (call.ms * 1000) / checkouts,
        statements: rows.slice(0, TOP).map((r) => ({ text: r.query, perCheckout: r.calls / checkouts, us: (r.ms * 1000) / checkouts })),
      })
    }
    return { profiles }
  } finally {
    await sql.end({ timeout: 5 })
  }
}

/** A statement's text on one line, short enough for a table cell. */
export function statementLabel(text: string, max = 110): string {
  const line = text.replace(/\s+/g, ' ').trim()
  return line.length > max ? `${line.slice(0, max - 1)}…` : line
}

/** The markdown section: one table per way of calling, or why there is none. */
export function renderProfiles(found: Profiles | undefined): string[] {
  if (!found) return []
  const out = ['### Where a checkout\'s database time goes (pg_stat_statements)', '']
  if ('skipped' in found) return [...out, `Not measured: ${found.skipped}.`, '']
  out.push(
    'Checkouts of the hot product on one connection with nothing else running, after the cells: first one per call (as ' +
      'the direct cells and a lone HTTP request call it), then in batches (as the service coalesces a crowd). Execution ' +
      'time per checkout, as pg_stat_statements counts it (`track = all` for this session only): a statement includes the ' +
      'statements it runs, so the rows do not add up; what the call takes beyond its statements is PL/pgSQL itself and ' +
      'the JSON in and out. Foreign-key checks are the `SELECT 1 FROM ONLY … FOR KEY SHARE OF x` rows (PostgreSQL 18 counts ' +
      'the checks of every table as one statement, shown with the first); they run inside the statement that writes the ' +
      'rows they check. The CPU per order of the cells above is higher: it adds the commit, the protocol and ' +
      'the other checkouts running at the same time.',
    '',
  )
  for (const profile of found.profiles) {
    out.push(
      `**${profile.label}** (${profile.calls} calls): **${fmtUs(profile.callUs)} µs** per checkout.`,
      '',
      '| statement | runs per checkout | µs per checkout | share of the call |',
      '| --- | ---: | ---: | ---: |',
    )
    for (const s of profile.statements)
      out.push(
        `| \`${statementLabel(s.text).replaceAll('|', '\\|').replaceAll('`', "'")}\` | ${fmtRuns(s.perCheckout)} | ${fmtUs(s.us)} | ` +
          `${profile.callUs > 0 ? `${Math.round((100 * s.us) / profile.callUs)}%` : '—'} |`,
      )
    out.push('')
  }
  return out
}

const fmtUs = (value: number) => (!Number.isFinite(value) ? '—' : value >= 10 ? Math.round(value).toLocaleString('en-US') : value.toFixed(1))
const fmtRuns = (value: number) => (value >= 10 || Number.isInteger(value) ? String(Math.round(value)) : value.toFixed(value >= 0.1 ? 2 : 3))
