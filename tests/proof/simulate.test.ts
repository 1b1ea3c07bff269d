import { afterAll, beforeAll, describe, expect, it } from 'bun:test'
import { resolve } from 'node:path'
import { createApp } from '../../src/app.ts'
import { Metrics } from '../../src/observability/metrics.ts'
import { isBusy, pauseBefore, percentile, plannedCarts, runFlashSale } from '../../proof/flash-sale.ts'
import { INVARIANTS } from '../../proof/judge.ts'
import { report } from '../../proof/report.ts'
import { apiSql, publishStatistics, testDatabaseUrl, testSql } from '../support/db.ts'

const CLI = resolve(import.meta.dir, '../../proof/simulate.ts')

let server: ReturnType<ReturnType<typeof createApp>['listen']>
let baseUrl: string
beforeAll(() => {
  server = createApp(apiSql()).listen({ port: 0, hostname: '127.0.0.1' })
  baseUrl = `http://127.0.0.1:${server.server!.port}`
})
afterAll(async () => {
  await server.stop()
})

async function simulate(...args: (string | Record<string, string>)[]) {
  const env = { ...process.env, ...(args.find((a) => typeof a === 'object') as Record<string, string> | undefined) }
  const child = Bun.spawn([process.execPath, CLI, ...args.filter((a): a is string => typeof a === 'string')], { stdout: 'pipe', stderr: 'pipe', env })
  const [code, stdout, stderr] = await Promise.all([child.exited, new Response(child.stdout).text(), new Response(child.stderr).text()])
  return { code, stdout, stderr }
}

describe('flash sale', () => {
  it('plans the same carts for the same seed: 2-4 distinct products, quantities within stock', () => {
    const options = { buyers: 200, products: 5, stock: 2, maxQty: 3, multi: true, seed: 42 }
    const carts = plannedCarts(options)
    expect(plannedCarts(options)).toEqual(carts)
    expect(plannedCarts({ ...options, seed: 43 })).not.toEqual(carts)
    for (const cart of carts) {
      expect(cart.length).toBeGreaterThanOrEqual(2)
      expect(cart.length).toBeLessThanOrEqual(4)
      expect(new Set(cart.map(([index]) => index)).size).toBe(cart.length)
      expect(cart.every(([index, quantity]) => index >= 0 && index < 5 && quantity >= 1 && quantity <= 2)).toBe(true)
    }
    expect(plannedCarts({ ...options, multi: false }).every((cart) => cart.length === 1)).toBe(true)
  })

  it('sends again only what the API calls busy, after its Retry-After and within the budget', () => {
    expect(isBusy(503, { code: 'WA103' })).toBe(true)
    expect(isBusy(503, { error: 'Your worker restarted mid-request' })).toBe(true)
    expect(isBusy(409, { code: 'WA102' })).toBe(true)
    expect(isBusy(0, { error: 'connection reset' })).toBe(true)
    // A deadlock or serialization failure reaching a client is a violation: never hidden by a retry.
    expect(isBusy(503, { code: '40P01' })).toBe(false)
    expect(isBusy(503, { code: '40001' })).toBe(false)
    for (const status of [201, 409, 422, 429, 500]) expect(isBusy(status, { code: 'WA004' })).toBe(false)
    const pause = pauseBefore('1', 10_000)
    expect(pause).toBeGreaterThanOrEqual(750)
    expect(pause).toBeLessThanOrEqual(1_250)
    expect(pauseBefore('1', 200)).toBeLessThanOrEqual(200)
    expect(pauseBefore('0', 10_000)).toBeGreaterThanOrEqual(75)
    expect(pauseBefore(null, 10_000)).toBeLessThanOrEqual(125)
  })

  it('takes percentiles by nearest rank', () => {
    const values = Array.from({ length: 100 }, (_, i) => 100 - i)
    expect([percentile(values, 50), percentile(values, 95), percentile(values, 99), percentile(values, 100)]).toEqual([50, 95, 99, 100])
    expect(percentile([7], 99)).toBe(7)
  })

  it('sells through the API and reports a verdict read from the database', async () => {
    const phases: string[] = []
    const result = await runFlashSale(
      {
        baseUrl,
        buyers: 300,
        products: 4,
        stock: 40,
        maxQty: 3,
        multi: true,
        concurrency: 50,
        seed: 7,
        databaseUrl: testDatabaseUrl(),
        publishStatistics,
      },
      undefined,
      (ended) => phases.push(`${ended.phase} ${ended.done}/${ended.total}`),
    )

    expect(phases).toEqual(['setup 300/300', 'race 300/300', 'verdict 300/300'])
    expect(result.verdict.violations).toEqual([])
    expect(result.verdict.source).toBe('database')
    // Every session of the race published its statistics before the counter was read.
    expect(result.verdict).toMatchObject({ deadlocks: 0, notes: [] })
    expect(result.checkouts).toHaveLength(300)
    expect(result.latencies.every((ms) => ms > 0)).toBe(true)
    const sold = result.verdict.products.reduce((sum, p) => sum + p.sold, 0)
    expect(sold).toBeGreaterThan(0)
    expect(sold).toBeLessThanOrEqual(160)
    const text = report(result)
    expect(text).toContain('refused: out of stock')
    expect(text).toMatch(/latency +p50 [\d.]+ ms · p95 [\d.]+ ms · p99 [\d.]+ ms/)
    expect(text).toContain(`verdict     OK: all ${INVARIANTS.length} invariants hold (read from the database)`)
  })

  it('sells with checkouts coalesced into batches as they queue, every invariant holding', async () => {
    const batching = createApp(apiSql(), { metrics: new Metrics(undefined, { defaultMetrics: false }) }).listen({ port: 0, hostname: '127.0.0.1' })
    try {
      const result = await runFlashSale({
        baseUrl: `http://127.0.0.1:${batching.server!.port}`,
        buyers: 300,
        products: 3,
        stock: 30,
        maxQty: 2,
        multi: true,
        concurrency: 100,
        seed: 11,
        databaseUrl: testDatabaseUrl(),
        publishStatistics,
      })

      expect(result.verdict.violations).toEqual([])
      expect(result.batches!.checkouts).toBe(300)
      expect(result.batches!.count).toBeGreaterThan(0)
      expect(result.batches!.count).toBeLessThan(300)
      expect(report(result)).toMatch(/batches +300 checkouts in \d+ checkout calls/)
    } finally {
      await batching.stop()
    }
  })
})

describe('npm run simulate', () => {
  it('sells on a running service and exits 0 when every invariant holds', async () => {
    const { code, stdout } = await simulate('--url', baseUrl, '--database-url', testDatabaseUrl(), '--buyers', '150', '--products', '3', '--multi')
    expect(stdout).toContain('Waitress flash sale: 150 buyers, 3 products × 100 in stock')
    expect(stdout).toMatch(/race +150\/150 checkouts/)
    expect(stdout).toMatch(/^total +300 /m)
    expect(stdout).toContain('verdict     OK')
    expect(code).toBe(0)
  })

  it('judges through the API when it has only the URL, and says what that cannot see', async () => {
    const { code, stdout } = await simulate('--url', baseUrl, '--buyers', '80', '--products', '2', '--stock', '20')
    expect(stdout).toContain(`verdict     OK: all ${INVARIANTS.length} invariants hold (read through the API)`)
    expect(stdout).toContain('note: read through the API')
    expect(code).toBe(0)
  })

  it('starts its own service on a throwaway PostgreSQL when given no URL', async () => {
    const { code, stdout, stderr } = await simulate('--buyers', '60', '--products', '2', '--stock', '10', '--multi')
    expect(stderr).toBe('')
    expect(stdout).toContain('started for this run on postgres://postgres:***@127.0.0.1:')
    expect(stdout).toContain(`verdict     OK: all ${INVARIANTS.length} invariants hold (read from the database)`)
    expect(code).toBe(0)
  })

  it('acts for each buyer and seller with a bearer token when AUTH_JWT_SECRET is set', async () => {
    const secret = 'a-test-secret-of-at-least-32-characters'
    const guarded = createApp(apiSql(), { authJwtSecret: secret }).listen({ port: 0, hostname: '127.0.0.1' })
    const url = `http://127.0.0.1:${guarded.server!.port}`
    try {
      const signed = await simulate({ AUTH_JWT_SECRET: secret }, '--url', url, '--buyers', '60', '--products', '2', '--multi')
      expect(signed.stdout).toContain('identity    a bearer token per buyer and seller')
      expect(signed.stdout).toContain(`verdict     OK: all ${INVARIANTS.length} invariants hold (read through the API)`)
      expect(signed.code).toBe(0)

      const anonymous = await simulate({ AUTH_JWT_SECRET: '' }, '--url', url, '--buyers', '5')
      expect(anonymous.stderr).toContain('the sale could not run: POST /products answered 401')
      expect(anonymous.code).toBe(2)
    } finally {
      await guarded.stop()
    }
  })

  it('exits 1 and lists the violations when the service fails buyers', async () => {
    // A service that answers every other checkout with a 500 and passes the rest to the real one.
    let checkouts = 0
    const flaky = Bun.serve({
      port: 0,
      hostname: '127.0.0.1',
      async fetch(request) {
        const url = new URL(request.url)
        if (url.pathname.endsWith('/checkout') && checkouts++ % 2 === 0)
          return Response.json({ error: 'internal server error', meta: { http_status: 500 } }, { status: 500 })
        return fetch(`${baseUrl}${url.pathname}${url.search}`, { method: request.method, headers: request.headers, body: await request.text() || undefined })
      },
    })
    try {
      const { code, stdout } = await simulate('--url', `http://127.0.0.1:${flaky.port}`, '--buyers', '40', '--products', '2')
      expect(stdout).toContain('verdict     VIOLATED: 20 violations of 1 invariant (read through the API)')
      expect(stdout).toMatch(/no-failures: checkout of cart \d+ got a 500: internal server error/)
      expect(code).toBe(1)
    } finally {
      flaky.stop()
    }
  })

  it('explains a bad flag and exits 2', async () => {
    const { code, stderr } = await simulate('--buyers', '0')
    expect(stderr).toContain('--buyers must be a whole number from 1 up, got "0"')
    expect(stderr).toContain('usage: npm run simulate -- [flags]')
    expect(code).toBe(2)
    expect((await simulate('--frobnicate')).code).toBe(2)
  })
})

describe('flash sale with the order lifecycle mixed in', () => {
  it('keeps every invariant and an empty audit with cancellations, payments, expiries and restocks', async () => {
    const { startService } = await import('../support/service.ts')
    // The default payment deadline (30 minutes): the orders left unpaid are made
    // overdue after the race, so none that a buyer pays can expire first.
    const service = await startService(testDatabaseUrl(), { EXPIRE_ORDERS_EVERY: '1s' })
    try {
      const result = await runFlashSale({
        baseUrl: service.baseUrl,
        databaseUrl: testDatabaseUrl(),
        buyers: 300,
        products: 3,
        stock: 150,
        maxQty: 3,
        multi: true,
        concurrency: 50,
        seed: 12,
        cancelRate: 0.3,
        // The service's 1 s timer expires them within a tick or two; this is only the bound.
        expireWithinMs: 60_000,
        restocks: 20,
        // The race over, the service stops (gracefully) so that its sessions publish their deadlock counts.
        publishStatistics: async () => {
          service.child.kill('SIGTERM')
          expect((await service.exit()).code).toBe(0)
          await publishStatistics()
        },
      })

      expect(result.verdict.violations).toEqual([])
      expect(result.verdict.ok).toBe(true)
      // Nothing went unread: the audit, the flushed deadlock counter, the service's retries.
      expect(result.verdict.notes).toEqual([])
      expect(result.verdict.deadlocks).toBe(0)
      expect(result.verdict.retries).toEqual({ deadlocks: 0, serializationFailures: 0 })
      const { cancelled, paidThenCancelled, paid, leftPending, expired } = result.lifecycle
      expect(Math.min(cancelled, paidThenCancelled, paid, leftPending)).toBeGreaterThan(0)
      expect(expired).toBe(leftPending)
      const orderIds = result.checkouts.flatMap((c) => (c.outcome.kind === 'accepted' ? c.outcome.orders.map((o) => o.id) : []))
      const states = await testSql()`select state::text, count(*)::int from waitress.orders where id = any (${orderIds}::bigint[]) group by 1`
      const byState = Object.fromEntries(states.map((row) => [row.state, row.count]))
      expect(byState.expired).toBe(leftPending)
      expect(byState.cancelled).toBe(cancelled + paidThenCancelled)
      expect(byState.pending ?? 0).toBe(0)
    } finally {
      service.child.kill('SIGTERM')
      await service.child.exited
    }
  })
})
