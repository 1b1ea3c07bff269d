import { afterAll, describe, expect, it } from 'bun:test'
import { createApp } from '../../src/app.ts'
import { Metrics } from '../../src/observability/metrics.ts'
import { createSql } from '../../src/db/client.ts'
import { InProcessRateLimiter, postgresReport } from '../../src/http/rate-limit.ts'
import { apiSql, appDatabaseUrl, testSql } from '../support/db.ts'
import { expectErrorEnvelope, requester } from '../support/http.ts'
import { bearer, TEST_SECRET } from '../support/auth.ts'
import { newUserId } from '../support/fixtures.ts'
import { until } from '../support/wait.ts'

const sql = testSql()
// A day-long window, so that no test straddles two windows.
const limited = { limit: 3, windowSeconds: 86_400 }
const app = createApp(apiSql(), { authJwtSecret: TEST_SECRET, rateLimit: limited })
const req = requester(app)

describe('rate limiting', () => {
  it("answers 429 with Retry-After in the envelope once a user is over the limit, and counts users apart", async () => {
    const user = await bearer(newUserId())
    const statuses = []
    for (let i = 0; i < 3; i++) statuses.push((await req('/products', { headers: user })).status)
    expect(statuses).toEqual([200, 200, 200])

    const over = await req('/products', { headers: user })
    const { error } = expectErrorEnvelope(over, 429)
    expect(error).toContain('at most 3 per 86400 s')
    const retryAfter = Number(over.headers.get('retry-after'))
    expect(Number.isInteger(retryAfter)).toBe(true)
    expect(retryAfter).toBeGreaterThanOrEqual(1)
    expect(retryAfter).toBeLessThanOrEqual(86_400)

    expect((await req('/products', { headers: await bearer(newUserId()) })).status).toBe(200)
  })

  it('answers 429 without a database round trip: a flood costs PostgreSQL one report per window', async () => {
    let rateLimitCalls = 0
    let otherCalls = 0
    // The pool as the app sees it, counting the statements it is asked to run.
    const counted = new Proxy(apiSql(), {
      apply(target, thisArg, args) {
        const text = Array.isArray(args[0]) ? (args[0] as string[]).join('?') : ''
        if (text.includes('api.rate_limit_hit')) rateLimitCalls++
        else otherCalls++
        return Reflect.apply(target, thisArg, args)
      },
    })
    const flooded = requester(createApp(counted, { authJwtSecret: TEST_SECRET, rateLimit: limited, metrics: new Metrics() }))
    const flooder = await bearer(newUserId())
    const statuses = new Map<number, number>()
    for (let i = 0; i < 500; i++) {
      const { status } = await flooded('/products', { headers: flooder })
      statuses.set(status, (statuses.get(status) ?? 0) + 1)
    }
    expect(Object.fromEntries(statuses)).toEqual({ 200: 3, 429: 497 })
    expect({ rateLimitCalls, otherCalls }).toEqual({ rateLimitCalls: 1, otherCalls: 3 })
    // What the operators see.
    const metrics = (await flooded('/metrics')).body as string
    expect(metrics).toContain('waitress_rate_limited_total{scope="process"} 497')
    expect(metrics).toContain('waitress_rate_limit_reports_total 1')
  })

  it('shares a window in PostgreSQL: a client over the limit across two API processes is refused by those that report after', async () => {
    const pool = createSql(appDatabaseUrl(), { max: 2, role: 'waitress_api' })
    try {
      // The processes' clock: moved a window on, so that each reports (PostgreSQL's window is a real day).
      let now = Date.now()
      const limiterOf = (sqlOf: Parameters<typeof postgresReport>[0]) =>
        new InProcessRateLimiter({ ...limited, now: () => now, report: postgresReport(sqlOf) })
      const [first, second] = [limiterOf(apiSql()), limiterOf(pool)]
      const one = requester(createApp(apiSql(), { authJwtSecret: TEST_SECRET, rateLimiter: first }))
      const two = requester(createApp(pool, { authJwtSecret: TEST_SECRET, rateLimiter: second }))
      const userId = newUserId()
      const user = await bearer(userId)
      // Each process admits its own bucket: 6 requests, twice the limit.
      for (const process of [one, two]) for (let i = 0; i < 3; i++) expect((await process('/products', { headers: user })).status).toBe(200)
      await Promise.all([first.settled(), second.settled()])
      const hits = async () => (await sql`select hits from waitress.rate_limit_windows where client = ${`user:${userId}`}`)[0].hits
      expect(await hits()).toBe(2)

      now += limited.windowSeconds * 1000
      expect((await one('/products', { headers: user })).status).toBe(200)
      await first.settled()
      expect((await two('/products', { headers: user })).status).toBe(200)
      await second.settled()
      expect(await hits()).toBe(8)
      // Both reports found the shared window over the limit: refused everywhere, for the rest of PostgreSQL's window.
      for (const process of [one, two]) {
        const refused = await process('/products', { headers: user })
        const { error } = expectErrorEnvelope(refused, 429)
        expect(error).toContain('across all API processes')
        expect(Number(refused.headers.get('retry-after'))).toBeGreaterThan(1)
      }
    } finally {
      await pool.end({ timeout: 5 })
    }
  })

  it('limits clients without a token by IP address, and never limits /healthz', async () => {
    const server = createApp(apiSql(), { rateLimit: { limit: 2, windowSeconds: 86_400 } }).listen({ port: 0, hostname: '127.0.0.1' })
    try {
      const base = `http://127.0.0.1:${server.server!.port}`
      const statuses = []
      for (let i = 0; i < 3; i++) statuses.push((await fetch(`${base}/products`)).status)
      expect(statuses).toEqual([200, 200, 429])
      for (let i = 0; i < 3; i++) expect((await fetch(`${base}/healthz`)).status).toBe(200)
      // Reported once, at the address's first request, without holding it up (the report
      // lands when it lands); the rest goes with the next window's report.
      const row = await until('the first request to be reported to the shared window', async () => {
        const [row] = await sql<{ hits: number }[]>`select hits from waitress.rate_limit_windows where client = 'ip:127.0.0.1'`
        return row
      })
      expect(row.hits).toBeGreaterThanOrEqual(1)
    } finally {
      await server.stop()
    }
  })

  it('is off unless configured', async () => {
    const open = requester(createApp(apiSql()))
    for (let i = 0; i < 10; i++) expect((await open('/products')).status).toBe(200)
  })
})

describe('rate_limit_hit', () => {
  const api = apiSql()
  it('adds a batch of hits at once (p_hits), as the in-process limiter reports them', async () => {
    const client = `test:${crypto.randomUUID()}`
    expect((await api`select api.rate_limit_hit(${client}, 10, 60, 7) as wait`)[0].wait).toBe(0)
    expect((await api`select api.rate_limit_hit(${client}, 10, 60, 3) as wait`)[0].wait).toBe(0)
    expect((await api`select api.rate_limit_hit(${client}, 10, 60, 1) as wait`)[0].wait).toBeGreaterThanOrEqual(1)
    const [{ hits }] = await sql`select hits from waitress.rate_limit_windows where client = ${client}`
    expect(hits).toBe(11)
  })

  it('counts per client in fixed windows, says how long to wait, and starts afresh in the next window', async () => {
    const client = `test:${crypto.randomUUID()}`
    const hit = async () => (await api`select api.rate_limit_hit(${client}, 2, 60) as wait`)[0].wait
    expect([await hit(), await hit()]).toEqual([0, 0])
    const wait = await hit()
    expect(wait).toBeGreaterThanOrEqual(1)
    expect(wait).toBeLessThanOrEqual(60)

    await sql`update waitress.rate_limit_windows set window_ends_at = now() - interval '1 second' where client = ${client}`
    expect(await hit()).toBe(0)
    await sql`update waitress.rate_limit_windows set window_ends_at = now() - interval '1 second' where client = ${client}`
    expect((await api`select api.purge_rate_limit_windows() as purged`)[0].purged).toBeGreaterThanOrEqual(1)
    const [{ count }] = await sql`select count(*)::int from waitress.rate_limit_windows where client = ${client}`
    expect(count).toBe(0)
  })
})
