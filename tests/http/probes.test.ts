import { describe, expect, it } from 'bun:test'
import { createApp } from '../../src/app.ts'
import { ConfigError, loadConfig } from '../../src/config.ts'
import { Metrics } from '../../src/observability/metrics.ts'
import { sameSecret } from '../../src/routes/metrics.ts'
import { apiSql, testSql } from '../support/db.ts'
import { bearer, TEST_SECRET } from '../support/auth.ts'
import { createProduct, newUserId } from '../support/fixtures.ts'
import { expectErrorEnvelope, requester } from '../support/http.ts'

const sql = testSql()
const METRICS_TOKEN = 'scrape-0123456789abcdef'
const secured = requester(createApp(apiSql(), { authJwtSecret: TEST_SECRET, rateLimit: { limit: 1, windowSeconds: 86_400 }, metrics: new Metrics() }))
const scraped = requester(createApp(apiSql(), { authJwtSecret: TEST_SECRET, metricsToken: METRICS_TOKEN, metrics: new Metrics() }))

describe('probes, with authentication on', () => {
  it('/healthz, /readyz and /metrics answer without a token, however often (no rate limit)', async () => {
    for (let i = 0; i < 3; i++) {
      expect((await secured('/healthz')).status).toBe(200)
      const ready = await secured('/readyz')
      expect(ready.status).toBe(200)
      expect(ready.body.data.status).toBe('ready')
      const metrics = await secured('/metrics')
      expect(metrics.status).toBe(200)
      expect(metrics.headers.get('content-type')).toContain('text/plain')
      expect(metrics.body).toContain('waitress_http_requests_total')
    }
  })

  it('ignore an Authorization header they do not need, even a broken one', async () => {
    for (const path of ['/healthz', '/readyz', '/metrics'])
      for (const authorization of ['Bearer not-a-jwt', 'Basic dXNlcjpwYXNz', (await bearer(1)).authorization])
        expect({ path, authorization, status: (await secured(path, { headers: { authorization } })).status }).toEqual({ path, authorization, status: 200 })
  })
})

describe('METRICS_TOKEN', () => {
  it('guards /metrics alone: without it or with a wrong one 401, with it 200; /healthz and /readyz stay open', async () => {
    for (const headers of [{} as Record<string, string>, { authorization: 'Bearer wrong-token-0123456789' }, { authorization: `Basic ${METRICS_TOKEN}` }, { authorization: `Bearer ${METRICS_TOKEN}x` }]) {
      const refused = await scraped('/metrics', { headers })
      expectErrorEnvelope(refused, 401)
      expect(refused.headers.get('www-authenticate')).toBe('Bearer realm="waitress-metrics"')
    }
    const ok = await scraped('/metrics', { headers: { authorization: `Bearer ${METRICS_TOKEN}` } })
    expect(ok.status).toBe(200)
    expect(ok.body).toContain('waitress_http_requests_total')
    expect((await scraped('/healthz')).status).toBe(200)
    expect((await scraped('/readyz')).status).toBe(200)
  })

  it('is a user token for nothing else: it opens no user route', async () => {
    expect((await scraped('/orders', { headers: { authorization: `Bearer ${METRICS_TOKEN}` } })).status).toBe(401)
  })

  it('is read from the environment, optional, and refused when too short to be a secret', () => {
    expect(loadConfig({}).metricsToken).toBeUndefined()
    expect(loadConfig({ METRICS_TOKEN }).metricsToken).toBe(METRICS_TOKEN)
    expect(() => loadConfig({ METRICS_TOKEN: 'short' })).toThrow(ConfigError)
    expect(() => loadConfig({ METRICS_TOKEN: 'has a space in it 0123456789' })).toThrow('METRICS_TOKEN')
  })

  it('is compared in constant time over hashes: any length, any content', async () => {
    expect(await sameSecret(METRICS_TOKEN, METRICS_TOKEN)).toBe(true)
    for (const other of ['', 'x', METRICS_TOKEN.slice(0, -1), `${METRICS_TOKEN}0`, METRICS_TOKEN.toUpperCase()])
      expect(await sameSecret(other, METRICS_TOKEN)).toBe(false)
  })
})

describe("a product's stock movements", () => {
  it('are for its seller only: 401 without a token, 404 WA002 to anyone else, exactly as for no product', async () => {
    const sellerId = newUserId()
    const product = await createProduct(sql, { seller_id: sellerId, stock: 3 })
    await sql`select api.restock_product(${product.id}, 2, 'from the back room')`
    const path = `/products/${product.id}/movements`

    const anonymous = await secured(path)
    expectErrorEnvelope(anonymous, 401)
    const stranger = await secured(path, { headers: await bearer(newUserId()) })
    const missing = await secured('/products/999999999999/movements', { headers: await bearer(newUserId()) })
    expect(expectErrorEnvelope(stranger, 404).code).toBe('WA002')
    expect(stranger.body.error).toBe(`product ${product.id} not found`)
    expect(missing.body.error).toBe('product 999999999999 not found')
    expect(JSON.stringify(stranger.body)).not.toContain('back room')

    const seller = await scraped(path, { headers: await bearer(sellerId) })
    expect(seller.status).toBe(200)
    expect(seller.body.data.map((m: { reason: string; note: string | null }) => [m.reason, m.note])).toEqual([
      ['initial', null],
      ['restock', 'from the back room'],
    ])
  })
})

describe('the inventory audit', () => {
  it('is for operators only: 401 without a token, 403 for a user, 200 for a token with "role": "operator"', async () => {
    expectErrorEnvelope(await scraped('/inventory/audit'), 401)
    const user = expectErrorEnvelope(await scraped('/inventory/audit', { headers: await bearer(newUserId()) }), 403)
    expect(user.error).toContain('"role": "operator"')
    for (const role of ['admin', 'Operator', true])
      expectErrorEnvelope(await scraped('/inventory/audit', { headers: await bearer(newUserId(), { claims: { role } }) }), 403)
    const operator = await scraped('/inventory/audit', { headers: await bearer(newUserId(), { claims: { role: 'operator' } }) })
    expect(operator.status).toBe(200)
    expect(Array.isArray(operator.body.data)).toBe(true)
  })
})
