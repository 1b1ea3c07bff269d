import { describe, expect, it } from 'bun:test'
import { createApp } from '../../src/app.ts'
import { Metrics } from '../../src/observability/metrics.ts'
import { createSql, type Sql } from '../../src/db/client.ts'
import { freePort } from '../../src/db/embedded.ts'
import pino from 'pino'
import { apiSql, testSql } from '../support/db.ts'
import { expectErrorEnvelope, req } from '../support/http.ts'
import { until } from '../support/wait.ts'

describe('the API envelope', () => {
  it('answers unknown routes with 404 in the error envelope', async () => {
    const { error } = expectErrorEnvelope(await req('/nowhere'), 404)
    expect(error).toContain('/nowhere')
  })

  it('answers GET /healthz while the process lives, and GET /readyz when the database answers with every migration applied', async () => {
    expect(await req('/healthz').then((r) => r.body)).toEqual({ data: { status: 'ok' }, meta: { http_status: 200 } })
    const ready = await req('/readyz')
    expect(ready.status).toBe(200)
    expect(ready.body.data).toEqual({ status: 'ready', migrations: expect.any(Number) })
  })

  it('answers GET /readyz with 503 while a migration is missing or the process is draining', async () => {
    const sql = testSql()
    const [latest] = await sql`select version from public.schema_migrations order by version desc limit 1`
    await sql`delete from public.schema_migrations where version = ${latest.version}`
    try {
      const { error } = expectErrorEnvelope(await req('/readyz'), 503)
      expect(error).toContain(latest.version)
    } finally {
      await sql`insert into public.schema_migrations (version) values (${latest.version})`
    }
    const draining = createApp(apiSql(), { accepting: () => false })
    expect((await draining.handle(new Request('http://localhost/readyz'))).status).toBe(503)
  })

  it('answers 503 with Retry-After when the database is unreachable', async () => {
    const unreachable = createSql(`postgres://nobody:x@127.0.0.1:${await freePort()}/none`, { max: 1 })
    const app = createApp(unreachable)
    for (const path of ['/readyz', '/products/1']) {
      const response = await app.handle(new Request(`http://localhost${path}`))
      expect(response.status).toBe(503)
      expect(response.headers.get('retry-after')).toBe('1')
      expect(await response.json()).toEqual({ error: expect.any(String), meta: { http_status: 503 } })
    }
    expect((await app.handle(new Request('http://localhost/healthz'))).status).toBe(200)
    await unreachable.end()
  })

  it('answers an unexpected failure with a bare 500 that reveals nothing internal, and logs it', async () => {
    const broken = (() => {
      throw new Error('secret: connection string postgres://admin:hunter2@db')
    }) as unknown as Sql
    const logged: string[] = []
    const app = createApp(broken, { logger: pino({ level: 'info' }, { write: (line: string) => void logged.push(line) }) })
    const response = await app.handle(new Request('http://localhost/products/1', { headers: { 'x-request-id': 'trace-42' } }))
    expect(response.status).toBe(500)
    expect(response.headers.get('x-request-id')).toBe('trace-42')
    expect(await response.json()).toEqual({ error: 'internal server error', meta: { http_status: 500 } })
    // The request's own line is written after its response has gone.
    const lines = await until('the request to be logged', () => {
      const parsed = logged.map((line) => JSON.parse(line))
      return parsed.some((line) => line.msg === 'request') && parsed
    })
    expect(lines.find((line) => line.msg === 'unhandled error')).toMatchObject({ level: 50, req_id: 'trace-42', path: '/products/1' })
    expect(lines.find((line) => line.msg === 'request')).toMatchObject({ req_id: 'trace-42', route: '/products/:id', status: 500 })
  })

  it('logs one line per request with its id, route, status, latency and SQLSTATE, and never a header', async () => {
    const logged: string[] = []
    const app = createApp(apiSql(), { logger: pino({ level: 'info' }, { write: (line: string) => void logged.push(line) }) })
    const response = await app.handle(
      new Request('http://localhost/carts/987654321/checkout', { method: 'POST', headers: { authorization: 'Bearer s3cret' } }),
    )
    expect(response.status).toBe(404)
    const generated = response.headers.get('x-request-id')
    expect(generated).toMatch(/^[0-9a-f-]{36}$/)
    const [line] = await until('the request to be logged', () => {
      const requests = logged.map((l) => JSON.parse(l)).filter((l) => l.msg === 'request')
      return requests.length > 0 && requests
    })
    expect(line).toMatchObject({ req_id: generated, method: 'POST', route: '/carts/:id/checkout', status: 404, sqlstate: 'WA001' })
    expect(line.ms).toBeNumber()
    expect(logged.join('')).not.toContain('s3cret')
  })

  it('serves Prometheus metrics: requests by route and status, orders, refusals, the pool, retries', async () => {
    const app = createApp(apiSql(), { metrics: new Metrics(() => ({ inUse: 3, waiting: 7 }), { dbRetries: () => ({ '40001': 2, '40P01': 5 }) }) })
    await app.handle(new Request('http://localhost/carts/987654321/checkout', { method: 'POST' }))
    await app.handle(new Request('http://localhost/healthz'))
    // A request's own metrics are taken after its response has gone: read until both are in.
    const { response, text } = await until('both requests to be counted', async () => {
      const response = await app.handle(new Request('http://localhost/metrics'))
      const text = await response.text()
      return text.includes('route="/healthz",status="200"} 1') && text.includes('status="404"} 1') && { response, text }
    })
    expect(response.status).toBe(200)
    expect(response.headers.get('content-type')).toContain('text/plain')
    expect(text).toContain('waitress_http_requests_total{method="POST",route="/carts/:id/checkout",status="404"} 1')
    expect(text).toContain('waitress_http_requests_total{method="GET",route="/healthz",status="200"} 1')
    expect(text).toContain('waitress_http_request_duration_seconds_bucket')
    expect(text).toContain('waitress_checkout_refusals_total{code="WA001"} 1')
    expect(text).toContain('waitress_orders_placed_total 0')
    expect(text).toContain('waitress_db_pool_in_use 3')
    expect(text).toContain('waitress_db_pool_waiting 7')
    expect(text).toContain('waitress_db_retries_total{code="40001"} 2')
    expect(text).toContain('waitress_db_retries_total{code="40P01"} 5')
  })

  it('serves the OpenAPI spec describing every route and both envelopes', async () => {
    const spec = (await req('/swagger/json')).body
    expect(Object.keys(spec.paths).sort()).toEqual(
      [
        '/carts',
        '/carts/items',
        '/carts/items/{id}',
        '/carts/{id}/checkout',
        '/healthz',
        '/inventory/audit',
        '/orders',
        '/orders/{id}',
        '/orders/{id}/{action}',
        '/products',
        '/products/{id}',
        '/products/{id}/adjust',
        '/products/{id}/movements',
        '/products/{id}/restock',
        '/readyz',
      ].sort(),
    )
    const created = spec.paths['/carts/{id}/checkout'].post.responses
    expect(Object.keys(created).sort()).toEqual(['201', '400', '401', '404', '409', '413', '415', '422', '429', '500', '503'])
    const errorSchema = JSON.stringify(created['422'])
    expect(errorSchema).toContain('http_status')
    expect(errorSchema).toContain('"error"')
    expect(JSON.stringify(created['201'])).toContain('"data"')
    expect((await req('/swagger')).status).toBe(200)
  })
})
