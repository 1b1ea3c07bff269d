import { afterAll, describe, expect, it } from 'bun:test'
import { createApp } from '../../src/app.ts'
import { createSql } from '../../src/db/client.ts'
import { apiSql, appDatabaseUrl, testSql } from '../support/db.ts'
import { expectErrorEnvelope, requester } from '../support/http.ts'
import { bearer, TEST_SECRET } from '../support/auth.ts'
import { newUserId } from '../support/fixtures.ts'

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

  it('shares the counters between API processes, because they live in PostgreSQL', async () => {
    const pool = createSql(appDatabaseUrl(), { max: 2, role: 'waitress_api' })
    try {
      const other = requester(createApp(pool, { authJwtSecret: TEST_SECRET, rateLimit: limited }))
      const user = await bearer(newUserId())
      expect((await req('/products', { headers: user })).status).toBe(200)
      expect((await other('/products', { headers: user })).status).toBe(200)
      expect((await req('/products', { headers: user })).status).toBe(200)
      expectErrorEnvelope(await other('/products', { headers: user }), 429)
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
      const [row] = await sql`select hits from waitress.rate_limit_windows where client = 'ip:127.0.0.1'`
      expect(row.hits).toBe(3)
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
