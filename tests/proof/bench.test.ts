import { describe, expect, it } from 'bun:test'
import { baselineCheckout } from '../../bench/baseline.ts'
import { parseOptions, PLAN } from '../../bench/bench.ts'
import { niceStep, renderChart } from '../../bench/chart.ts'
import { machineBusyMs, parseStat, postmasterOf, processCpuMs, treeCpuMs } from '../../bench/cpu.ts'
import { BuyerPool, cartLines } from '../../bench/fixtures.ts'
import { aggregate, explainMisses, renderMarkdown, targets, type CellResult, type Machine } from '../../bench/report.ts'
import { profileCheckouts, renderProfiles, statementLabel, TOP, type Profiles } from '../../bench/statements.ts'
import { median, quantile } from '../../bench/stats.ts'
import type { Mode, Scenario } from '../../bench/types.ts'
import { testDatabaseUrl, testSql } from '../support/db.ts'
import { createSql } from '../../src/db/client.ts'
import { auditOf, createProduct, refusal, stockOf } from '../support/fixtures.ts'

// The harness's parts, fast. The harness itself runs in CI as `npm run bench -- --quick`;
// no timing is asserted anywhere.

describe('bench: CPU from /proc', () => {
  it('parses a stat line whose command name has spaces and parentheses', () => {
    const line = '4242 (post gres (x)) S 17 4242 4242 0 -1 4194560 100 0 0 0 250 75 3 4 20 0 1 0 100 1000 50'
    expect(parseStat(line)).toEqual({ pid: 4242, comm: 'post gres (x)', ppid: 17, utime: 250, stime: 75, cutime: 3, cstime: 4 })
  })

  it('reads this process and the test database server, and their counters only grow', async () => {
    const first = processCpuMs(process.pid)
    let spin = 0
    for (let i = 0; i < 2_000_000; i++) spin += i
    expect(spin).toBeGreaterThan(0)
    expect(processCpuMs(process.pid)).toBeGreaterThanOrEqual(first)
    expect(processCpuMs(2 ** 30)).toBeNaN()
    expect(machineBusyMs()).toBeGreaterThanOrEqual(processCpuMs(process.pid))

    const [{ pid }] = await testSql()`select pg_backend_pid() as pid`
    const postmaster = postmasterOf(pid)
    expect(postmaster).toBeNumber()
    const [before] = treeCpuMs([postmaster!])
    await testSql()`select count(*) from generate_series(1, 200000)`
    const [after, gone] = treeCpuMs([postmaster!, 2 ** 30])
    expect(after).toBeGreaterThanOrEqual(before)
    expect(gone).toBeNaN()
    // A tree counts at least its root.
    const own = processCpuMs(process.pid)
    expect(treeCpuMs([process.pid])[0]).toBeGreaterThanOrEqual(own)
  })
})

describe('bench: statistics', () => {
  it('takes nearest-rank quantiles and medians', () => {
    const sorted = Array.from({ length: 100 }, (_, i) => i + 1)
    expect([quantile(sorted, 0.5), quantile(sorted, 0.95), quantile(sorted, 0.99), quantile(sorted, 1)]).toEqual([50, 95, 99, 100])
    expect(quantile([], 0.5)).toBeNaN()
    expect(median([3, 1, 2])).toBe(2)
    expect(median([4, 1, 2, 3])).toBe(2.5)
    expect(median([Number.NaN, 5])).toBe(5)
  })
})

describe('bench: flags', () => {
  it('defaults to the full plan, and a run of well under a minute with --quick', () => {
    const full = parseOptions([])
    expect(full).toMatchObject({ seconds: 5, repeats: 3, quick: false })
    expect(full.cells).toEqual(PLAN.full)
    expect(full.concurrency).toEqual([10, 32, 64, 256, 1024])
    expect(full.modes).toEqual(['http', 'http-3proc', 'http-pgbouncer', 'http-attacked', 'direct', 'baseline', 'bare'])
    expect(full.out).toEndWith('docs/benchmarks.md')
    const quick = parseOptions(['--quick'])
    expect(quick).toMatchObject({ repeats: 1, quick: true, seconds: 1, warmup: 0 })
    expect(quick.cells).toEqual(PLAN.quick)
    expect(quick.out).toEndWith('.data/bench/benchmarks.md')
    expect(parseOptions(['--scenarios', 'multi,hot']).scenarios).toEqual(['hot', 'multi'])
    expect(parseOptions(['--scenarios', 'attack']).cells.every((c) => c.scenario === 'attack')).toBe(true)
  })

  it('refuses what it does not know', () => {
    expect(() => parseOptions(['--scenarios', 'hot,fast'])).toThrow('--scenarios')
    expect(() => parseOptions(['--seconds', '0'])).toThrow('--seconds')
    expect(() => parseOptions(['--bogus'])).toThrow()
  })
})

describe('bench: fixtures', () => {
  it('gives multi-line carts 2 to 5 distinct products in random order', () => {
    const products = [11, 12, 13, 14, 15]
    const sizes = new Set<number>()
    const firsts = new Set<number>()
    for (let i = 0; i < 400; i++) {
      const lines = cartLines(products)
      expect(new Set(lines).size).toBe(lines.length)
      expect(lines.every((p) => products.includes(p))).toBe(true)
      sizes.add(lines.length)
      firsts.add(lines[0])
    }
    expect([...sizes].sort()).toEqual([2, 3, 4, 5])
    expect(firsts.size).toBe(5)
    expect(cartLines([7])).toEqual([7])
  })

  it('creates buyers with open carts and never hands one out twice', async () => {
    const sql = testSql()
    const product = await createProduct(sql, { stock: 100, seller_id: 7_070_707 })
    const pool = new BuyerPool(sql, [product.id])
    await pool.ensure(3, 5)
    expect(pool.available).toBe(5)
    const [first, second] = pool.peek(2)
    pool.consume(1)
    expect(pool.peek(1)[0]).toEqual(second)
    expect(first.productIds).toEqual([product.id])
    const open = await sql`select count(*)::int as n from waitress.cart_items where id = any (${first.itemIds}::bigint[]) and not purchased and cart_id = ${first.cartId}`
    expect(open[0].n).toBe(1)
  })
})

describe('bench: the baseline client-side transaction', () => {
  it('sells like place_order: stock, order, lines, cart and ledger, with an empty audit', async () => {
    const sql = testSql()
    const products = await Promise.all([1, 2, 3].map(() => createProduct(sql, { stock: 5, seller_id: 7_070_707, price: 300 })))
    const pool = new BuyerPool(sql, products.map((p) => p.id))
    await pool.ensure(1, 1)
    const [buyer] = pool.peek(1)
    expect(await baselineCheckout(sql, buyer)).toEqual({ ok: true, units: buyer.itemIds.length })

    const [order] = await sql`select id, buyer_id, total_price from waitress.orders where buyer_id = ${buyer.buyerId}`
    expect(order.total_price).toBe(300 * buyer.itemIds.length)
    const lines = await sql`select cart_item_id from waitress.order_items where order_id = ${order.id} order by cart_item_id`
    expect(lines.map((l) => l.cart_item_id)).toEqual([...buyer.itemIds].sort((a, b) => a - b))
    for (const productId of buyer.productIds) expect(await stockOf(sql, productId)).toBe(4)
    expect(await auditOf(sql, products.map((p) => p.id))).toEqual([])
    // The same cart again: its lines are sold, so a constraint refuses it and nothing changes.
    expect((await refusal(baselineCheckout(sql, buyer))).code).toBe('23505')
    for (const productId of buyer.productIds) expect(await stockOf(sql, productId)).toBe(4)
  })

  it('refuses a short stock in the app and changes nothing', async () => {
    const sql = testSql()
    const product = await createProduct(sql, { stock: 0, seller_id: 7_070_707 })
    const pool = new BuyerPool(sql, [product.id])
    await pool.ensure(1, 1)
    expect((await refusal(baselineCheckout(sql, pool.peek(1)[0]))).code).toBe('WA004')
    expect(await stockOf(sql, product.id)).toBe(0)
    expect(await auditOf(sql, [product.id])).toEqual([])
  })
})

describe('bench: report', () => {
  const cell = (mode: Mode, concurrency: number, rate: number, repeat = 1, scenario: Scenario = 'hot'): CellResult => ({
    repeat,
    scenario,
    mode,
    concurrency,
    rate,
    ok: rate,
    units: rate,
    attempts: rate,
    errors: mode === 'http' ? { 'HTTP 503': 1 } : {},
    elapsedMs: 1000,
    p50: 10,
    p95: 50,
    p99: mode === 'http' ? 120 : 900,
    max: 1000,
    cpuMs: { service: mode.startsWith('http') ? rate * 0.5 : null, db: rate * 1.5, client: rate * 0.1, machine: rate * 2.1 + 500 },
    problems: [],
  })
  const cells = [
    ...[1, 2, 3].map((r) => cell('http', 256, [900, 1000, 5000][r - 1], r)),
    cell('direct', 10, 800),
    cell('baseline', 10, 150),
    cell('bare', 10, 3000),
  ]

  it('takes medians over repeats and CPU per order', () => {
    const http = aggregate(cells).find((a) => a.mode === 'http')!
    expect(http.rate).toBe(1000)
    expect(http.rates).toEqual([900, 1000, 5000])
    expect(http.errors).toEqual({ 'HTTP 503': 3 })
    expect(http.cpuUs).toMatchObject({ total: 2000, service: 500, db: 1500 })
    expect(http.otherCores).toBeCloseTo(0.5)
    expect(aggregate(cells).find((a) => a.mode === 'direct')!.cpuUs.service).toBeNull()
  })

  it('reports each target met or not, and what a run did not measure as not measured', () => {
    const found = targets(aggregate(cells))
    const first = found[0]
    expect(first.what).toContain('HTTP@256')
    expect(first.measured).toContain('0.33')
    expect(first.met).toBe(false)
    expect(found.find((t) => t.what.includes('HTTP@1024'))!.met).toBeNull()
    expect(found.find((t) => t.what.includes('direct place_order'))!.met).toBe(false)
    expect(found.find((t) => t.id === '6')!.met).toBe(true)
  })

  it('judges each target in every repeat alone, pairing the cells of one repeat', () => {
    const noisy = [
      ...[1, 2, 3].map((r) => cell('http', 256, [5000, 7000, 6400][r - 1], r)),
      ...[1, 2, 3].map((r) => cell('bare', 10, [3000, 3000, 3000][r - 1], r)),
    ]
    const [throughput, p99] = targets(aggregate(noisy))
    // Medians: 6,400 / 3,000 = 2.13, met; repeat 1 alone (5,000 / 3,000) misses.
    expect(throughput.met).toBe(true)
    expect(throughput.repeats).toEqual({ values: ['1.67', '2.33', '2.13'], met: 2 })
    expect(p99.repeats).toEqual({ values: ['120', '120', '120'], met: 0 })
    const markdown = renderMarkdown({
      machine: { nproc: 2, cpuModel: 'cpu', loadAverage: { start: [1, 1, 1], end: [1, 1, 1] }, synchronousCommit: 'on' } as Machine,
      options: { seconds: 5, warmup: 1, repeats: 3, cells: [], concurrency: [10, 256], modes: ['http', 'bare'], scenarios: ['hot'], quick: false, out: 'x.md' },
      aggregates: aggregate(noisy),
      targets: targets(aggregate(noisy)),
      skipped: [],
      chartFile: 'benchmarks.svg',
      jsonFile: 'benchmarks.json',
    })
    expect(markdown).toContain('| 1.67, 2.33, 2.13 (met in 2 of 3) | **met** |')
    expect(markdown).toContain('| 120, 120, 120 (met in 0 of 3) | **not met** |')
  })

  it('explains each missed target with the run\'s own numbers', () => {
    const aggregates = aggregate(cells)
    const lines = explainMisses(targets(aggregates), aggregates, { nproc: 2 })
    expect(lines.some((l) => l.startsWith('**The single checkout'))).toBe(true)
    expect(explainMisses([], aggregates, { nproc: 2 })).toEqual([])
  })

  it('writes the markdown and an SVG line per mode', () => {
    const aggregates = aggregate(cells)
    const svg = renderChart({ aggregates, scenarios: ['hot'], modes: ['http', 'direct', 'baseline', 'bare'], concurrency: [10, 256], title: 't' })
    expect(svg.startsWith('<svg')).toBe(true)
    expect(svg.trim().endsWith('</svg>')).toBe(true)
    expect(svg.match(/<polyline/g)).toHaveLength(4)
    expect(niceStep(4321)).toBe(1000)
    expect(niceStep(1200)).toBe(500)

    const machine = { nproc: 2, cpuModel: 'cpu', loadAverage: { start: [1, 1, 1], end: [1, 1, 1] }, synchronousCommit: 'on' } as Machine
    const markdown = renderMarkdown({
      machine,
      options: { seconds: 5, warmup: 1, repeats: 3, cells: [], concurrency: [10, 256], modes: ['http', 'direct', 'baseline', 'bare'], scenarios: ['hot'], quick: false, out: 'x.md' },
      aggregates,
      targets: targets(aggregates),
      skipped: [],
      chartFile: 'benchmarks.svg',
      jsonFile: 'benchmarks.json',
    })
    expect(markdown).toContain('| (a) HTTP | 256 | **1,000** | 900, 1,000, 5,000 |')
    expect(markdown).toContain('3 (0.04%): 3× HTTP 503')
    expect(markdown).toContain('![orders/s against concurrent buyers')
  })
})

describe('bench: the statement profile', () => {
  const found: Profiles = {
    profiles: [
      {
        label: 'batches of 128: api.place_orders',
        batch: 128,
        calls: 50,
        callUs: 200,
        statements: [
          { text: 'select api.place_orders($1)', perCheckout: 1 / 128, us: 200 },
          { text: "with lines as (\n  select a || b, `x`\n    from t)", perCheckout: 1 / 128, us: 50 },
          { text: 'SELECT 1 FROM ONLY "waitress"."orders" x WHERE "id" OPERATOR(pg_catalog.=) $1 FOR KEY SHARE OF x', perCheckout: 5, us: 7.25 },
        ],
      },
    ],
  }

  it('renders a table per way of calling, with each statement on one line and what breaks a table escaped', () => {
    const markdown = renderProfiles(found).join('\n')
    expect(markdown).toContain('**batches of 128: api.place_orders** (50 calls): **200 µs** per checkout.')
    expect(markdown).toContain("| `with lines as ( select a \\|\\| b, 'x' from t)` | 0.008 | 50 | 25% |")
    expect(markdown).toContain('FOR KEY SHARE OF x` | 5 | 7.3 | 4% |')
    expect(statementLabel('x'.repeat(200), 20)).toBe(`${'x'.repeat(19)}…`)
    expect(renderProfiles({ skipped: 'no extension' }).join('\n')).toContain('Not measured: no extension.')
    expect(renderProfiles(undefined)).toEqual([])
  })

  it('profiles the three ways of calling where pg_stat_statements is loaded, and says why not where it is not', async () => {
    const [{ preloaded }] = await testSql()<{ preloaded: boolean }[]>`
      select current_setting('shared_preload_libraries') ~ 'pg_stat_statements' as preloaded`
    const product = await createProduct(testSql(), { stock: 1_000 })
    const result = await profileCheckouts(testDatabaseUrl(), (url) => createSql(url, { max: 1 }), product.id, 1)
    if (!preloaded) {
      expect(result).toEqual({ skipped: 'the server does not load pg_stat_statements (shared_preload_libraries)' })
      expect(await stockOf(testSql(), product.id)).toBe(1_000)
      const [{ n }] = await testSql()<{ n: number }[]>`select count(*)::int as n from pg_extension where extname = 'pg_stat_statements'`
      expect(n).toBe(0)
      return
    }
    if (!('profiles' in result)) throw new Error(`the profile skipped on a server that loads pg_stat_statements: ${result.skipped}`)
    expect(result.profiles.map((p) => p.batch)).toEqual([1, 16, 128])
    for (const profile of result.profiles) {
      expect(profile.statements[0].text).toMatch(/api\.place_orders?\(/)
      expect(profile.statements.length).toBeLessThanOrEqual(TOP)
      expect(profile.callUs).toBeGreaterThan(0)
    }
    // 3 unmeasured and 1 measured call of each way, one unit each.
    expect(await stockOf(testSql(), product.id)).toBe(1_000 - 4 * (1 + 16 + 128))
  })
})
