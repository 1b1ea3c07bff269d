import { describe, expect, it } from 'bun:test'
import { createApp } from '../../src/app'
import { createSql, type Sql } from '../../src/db/client'
import { freePort } from '../../src/db/embedded'
import { expectErrorEnvelope, req } from '../support/http'

describe('the API envelope', () => {
  it('answers unknown routes with 404 in the error envelope', async () => {
    const { error } = expectErrorEnvelope(await req('/nowhere'), 404)
    expect(error).toContain('/nowhere')
  })

  it('answers GET /healthz with 200 when the database answers', async () => {
    expect(await req('/healthz').then((r) => r.body)).toEqual({ data: { status: 'ok' }, meta: { http_status: 200 } })
  })

  it('answers 503 with Retry-After when the database is unreachable', async () => {
    const unreachable = createSql(`postgres://nobody:x@127.0.0.1:${await freePort()}/none`, { max: 1 })
    const app = createApp(unreachable)
    const response = await app.handle(new Request('http://localhost/healthz'))
    expect(response.status).toBe(503)
    expect(response.headers.get('retry-after')).toBe('1')
    expect(await response.json()).toEqual({ error: expect.any(String), meta: { http_status: 503 } })
    await unreachable.end()
  })

  it('answers an unexpected failure with a bare 500 that reveals nothing internal', async () => {
    const broken = (() => {
      throw new Error('secret: connection string postgres://admin:hunter2@db')
    }) as unknown as Sql
    const app = createApp(broken)
    const originalError = console.error
    const logged: string[] = []
    console.error = (line: string) => logged.push(line)
    try {
      const response = await app.handle(new Request('http://localhost/products/1'))
      expect(response.status).toBe(500)
      expect(await response.json()).toEqual({ error: 'internal server error', meta: { http_status: 500 } })
    } finally {
      console.error = originalError
    }
    expect(logged.join('\n')).toContain('secret')
  })

  it('serves the OpenAPI spec describing every route and both envelopes', async () => {
    const spec = (await req('/swagger/json')).body
    expect(Object.keys(spec.paths).sort()).toEqual(
      ['/carts', '/carts/items', '/carts/{id}/checkout', '/healthz', '/orders', '/orders/{id}', '/products', '/products/{id}'].sort(),
    )
    const created = spec.paths['/carts/{id}/checkout'].post.responses
    expect(Object.keys(created).sort()).toEqual(['201', '400', '401', '404', '413', '415', '422', '429'])
    const errorSchema = JSON.stringify(created['422'])
    expect(errorSchema).toContain('http_status')
    expect(errorSchema).toContain('"error"')
    expect(JSON.stringify(created['201'])).toContain('"data"')
    expect((await req('/swagger')).status).toBe(200)
  })
})
