import { describe, expect, it } from 'bun:test'
import fc from 'fast-check'
import { Elysia } from 'elysia'
import { createAccess } from '../../src/http/access.ts'
import { errorHandler } from '../../src/http/errors.ts'
import { InProcessRateLimiter, type ReportHits } from '../../src/http/rate-limit.ts'
import { silentLogger } from '../../src/observability/logger.ts'
import { within } from '../support/wait.ts'

/** A clock the test moves. */
function clock(start = 1_000_000_000_000) {
  let now = start
  return { now: () => now, advance: (ms: number) => void (now += ms) }
}

/** PostgreSQL's api.rate_limit_hit, on the test's clock: fixed windows aligned to the epoch, counts per client. */
function sharedWindow(now: () => number) {
  const windows = new Map<string, { endsAt: number; hits: number }>()
  const calls: { client: string; hits: number }[] = []
  const report: ReportHits = async (client, hits, limit, windowSeconds) => {
    calls.push({ client, hits })
    const size = windowSeconds * 1000
    const endsAt = (Math.floor(now() / size) + 1) * size
    const window = windows.get(client)
    const counted = window && window.endsAt === endsAt ? window.hits + hits : hits
    windows.set(client, { endsAt, hits: counted })
    return counted > limit ? Math.max(1, Math.ceil((endsAt - now()) / 1000)) : 0
  }
  return { report, calls, hitsOf: (client: string) => windows.get(client)?.hits ?? 0 }
}

describe('the in-process rate limiter', () => {
  it('admits a full bucket, refuses the next request with how long to wait, and refills at limit per window', async () => {
    const time = clock()
    const limiter = new InProcessRateLimiter({ limit: 3, windowSeconds: 60, now: time.now })
    expect([limiter.check('a'), limiter.check('a'), limiter.check('a')]).toEqual([undefined, undefined, undefined])
    expect(limiter.check('a')).toEqual({ retryAfter: 20, reason: 'at most 3 per 60 s per client' })
    expect(limiter.check('b')).toBeUndefined()
    time.advance(19_000)
    expect(limiter.check('a')?.retryAfter).toBe(1)
    time.advance(1_000)
    expect(limiter.check('a')).toBeUndefined()
    expect(limiter.check('a')).toBeDefined()
  })

  it('reports to the shared window at most once per window per client, with every admitted request, and never for a refused one', async () => {
    const time = clock(0)
    const shared = sharedWindow(time.now)
    const limiter = new InProcessRateLimiter({ limit: 5, windowSeconds: 10, now: time.now, report: shared.report })
    for (let i = 0; i < 1_000; i++) limiter.check('flood')
    await limiter.settled()
    expect(shared.calls).toEqual([{ client: 'flood', hits: 1 }])
    expect(limiter.stats).toMatchObject({ reports: 1, refusedLocally: 995 })

    time.advance(10_000)
    limiter.check('flood')
    await limiter.settled()
    // The other 4 of the first window, and this one; the 995 refused were never reported.
    expect(shared.calls).toEqual([{ client: 'flood', hits: 1 }, { client: 'flood', hits: 5 }])
  })

  it('refuses a client everywhere once the shared window is over the limit, until it ends, without asking again', async () => {
    const time = clock(0)
    const shared = sharedWindow(time.now)
    const processes = [1, 2, 3].map(() => new InProcessRateLimiter({ limit: 4, windowSeconds: 60, now: time.now, report: shared.report }))
    // Each process admits its own bucket: 12 in all, 3 times the limit.
    for (const limiter of processes) for (let i = 0; i < 4; i++) expect(limiter.check('c')).toBeUndefined()
    await Promise.all(processes.map((l) => l.settled()))
    expect(shared.hitsOf('c')).toBe(3)

    // Next window: each reports its 3 others at its first request there.
    time.advance(60_000)
    const first = processes.map((limiter) => limiter.check('c'))
    expect(first).toEqual([undefined, undefined, undefined])
    await Promise.all(processes.map((l) => l.settled()))
    expect(shared.hitsOf('c')).toBe(12)
    // The first to report found 4 (not over); those after it found 8 and 12, and refuse the client.
    const after = processes.map((limiter) => limiter.check('c'))
    expect(after[0]).toBeUndefined()
    for (const refused of after.slice(1)) {
      expect(refused?.reason).toBe('at most 4 per 60 s per client, across all API processes')
      expect(refused?.retryAfter).toBe(60)
    }
    time.advance(59_000)
    expect(processes[1].check('c')?.retryAfter).toBe(1)
    expect(shared.calls).toHaveLength(6)
  })

  it('keeps a report that failed and sends it with the next one; meanwhile the bucket alone decides', async () => {
    const time = clock(0)
    const shared = sharedWindow(time.now)
    let down = true
    const errors: unknown[] = []
    const limiter = new InProcessRateLimiter({
      limit: 2,
      windowSeconds: 1,
      now: time.now,
      onReportError: (error) => errors.push(error),
      report: (...args) => (down ? Promise.reject(new Error('database away')) : shared.report(...args)),
    })
    expect([limiter.check('d'), limiter.check('d')]).toEqual([undefined, undefined])
    await limiter.settled()
    expect(errors).toHaveLength(1)
    down = false
    time.advance(1_000)
    expect(limiter.check('d')).toBeUndefined()
    await limiter.settled()
    expect(shared.calls).toEqual([{ client: 'd', hits: 3 }])
  })

  it('keeps at most maxClients in memory, and drops idle clients as it goes', async () => {
    const time = clock(0)
    const shared = sharedWindow(time.now)
    const limiter = new InProcessRateLimiter({ limit: 10, windowSeconds: 1, now: time.now, maxClients: 100, report: shared.report })
    for (let i = 0; i < 1_000; i++) limiter.check(`ip:${i}`)
    expect(limiter.stats.clients).toBe(100)
    await limiter.settled()
    // Everyone idle for a window: their buckets are full, their hits reported; new traffic sweeps them out.
    time.advance(2_000)
    for (let i = 0; i < 200; i++) {
      limiter.check('busy')
      await limiter.settled()
    }
    expect(limiter.stats.clients).toBeLessThan(10)
    // Every admitted request was reported once, evicted or not.
    expect(shared.calls.reduce((sum, call) => sum + call.hits, 0)).toBe(1_000 + 200 - limiter.stats.refusedLocally - limiter.stats.pending)
  })

  it('bounds what the cluster admits from one client: at most processes x 2 x limit in any window', async () => {
    await fc.assert(
      fc.asyncProperty(
        fc.integer({ min: 1, max: 4 }),
        fc.integer({ min: 1, max: 8 }),
        fc.array(fc.tuple(fc.nat(200), fc.nat(3)), { minLength: 1, maxLength: 400 }),
        async (processCount, limit, arrivals) => {
          const time = clock(0)
          const shared = sharedWindow(time.now)
          const processes = Array.from({ length: processCount }, () => new InProcessRateLimiter({ limit, windowSeconds: 1, now: time.now, report: shared.report }))
          const admitted = new Map<number, number>()
          const reportsPerWindow = new Map<string, number>()
          for (const [gap, target] of arrivals) {
            time.advance(gap * 10)
            const limiter = processes[target % processCount]
            const reportsBefore = limiter.stats.reports
            if (limiter.check('x') === undefined) {
              const window = Math.floor(time.now() / 1000)
              admitted.set(window, (admitted.get(window) ?? 0) + 1)
            }
            if (limiter.stats.reports > reportsBefore) {
              const key = `${target % processCount}/${Math.floor(time.now() / 1000)}`
              reportsPerWindow.set(key, (reportsPerWindow.get(key) ?? 0) + 1)
            }
            await limiter.settled()
          }
          for (const count of admitted.values()) expect(count).toBeLessThanOrEqual(processCount * 2 * limit)
          for (const count of reportsPerWindow.values()) expect(count).toBe(1)
        },
      ),
      { numRuns: 200 },
    )
  })

  it('uses no timer and no runtime API: the module imports types only', async () => {
    const source = await Bun.file(new URL('../../src/http/rate-limit.ts', import.meta.url)).text()
    const imports = [...source.matchAll(/^import .*$/gm)].map((m) => m[0])
    expect(imports.every((line) => line.startsWith('import type '))).toBe(true)
    expect(source).not.toMatch(/\b(setTimeout|setInterval|Bun\.|process\.|require\()/)
  })
})

describe('a 429 held before it is sent (RATE_LIMIT_DELAY)', () => {
  /** An app with one public route, whose limiter refuses everything with Retry-After 5 s. */
  function appWith(options: { rateLimitDelayMs?: number; maxHeldRefusals?: number }) {
    const held: { ms: number; release: () => void }[] = []
    const access = createAccess({
      rateLimiter: () => ({ retryAfter: 5, reason: 'at most 1 per 5 s per client' }),
      clientAddress: () => '192.0.2.1',
      sleep: (ms) => new Promise<void>((resolve) => held.push({ ms, release: resolve })),
      ...options,
    })
    const app = new Elysia().use(errorHandler(silentLogger())).use(access.plugin).get('/x', () => 'ok', { access: 'public' })
    access.learn(app)
    return { app, held }
  }
  const flush = () => new Promise((resolve) => setTimeout(resolve, 0))

  it('holds the refusal for half the delay to all of it, then sends 429 with what is left of Retry-After', async () => {
    const { app, held } = appWith({ rateLimitDelayMs: 1_000 })
    const reply = app.handle(new Request('http://localhost/x'))
    await flush()
    expect(held).toHaveLength(1)
    expect(held[0].ms).toBeGreaterThanOrEqual(500)
    expect(held[0].ms).toBeLessThanOrEqual(1_000)
    held[0].release()
    const response = await reply
    expect(response.status).toBe(429)
    expect(response.headers.get('retry-after')).toBe('5')
  })

  it('never holds longer than Retry-After, and holds at most maxHeldRefusals at once: the rest are answered at once', async () => {
    const { app, held } = appWith({ rateLimitDelayMs: 600_000, maxHeldRefusals: 3 })
    const replies = Array.from({ length: 5 }, () => app.handle(new Request('http://localhost/x')))
    await flush()
    expect(held.map((h) => h.ms)).toEqual([5_000, 5_000, 5_000])
    // The two beyond the cap were not held: they are answered while the three still are
    // (were they held, nothing would answer them until the release below, and this would fail).
    const early = await within('the two beyond the cap to be answered while three are held', Promise.all(replies.slice(3)))
    expect(early.map((r) => r.status)).toEqual([429, 429])
    expect(held).toHaveLength(3)
    for (const h of held) h.release()
    expect((await Promise.all(replies)).map((r) => r.status)).toEqual([429, 429, 429, 429, 429])
  })

  it('is off unless configured: the refusal is sent at once', async () => {
    const { app, held } = appWith({})
    expect((await app.handle(new Request('http://localhost/x'))).status).toBe(429)
    expect(held).toEqual([])
  })
})
