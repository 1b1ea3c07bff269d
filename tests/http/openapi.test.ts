import { describe, expect, it } from 'bun:test'
import { createApp } from '../../src/app.ts'
import { createSql } from '../../src/db/client.ts'
import { app, req } from '../support/http.ts'

type Json = Record<string, any>
const METHODS = ['get', 'put', 'post', 'delete', 'patch']

function operations(spec: Json): [string, string, Json][] {
  return Object.entries<Json>(spec.paths).flatMap(([path, item]) =>
    METHODS.filter((method) => item[method]).map((method): [string, string, Json] => [path, method, item[method]]),
  )
}

/** Every schema object in the document, with where it is. */
function schemas(node: unknown, at = '#', out: [string, Json][] = []): [string, Json][] {
  if (!node || typeof node !== 'object') return out
  if (Array.isArray(node)) {
    node.forEach((child, i) => schemas(child, `${at}/${i}`, out))
    return out
  }
  const object = node as Json
  if ('type' in object || '$ref' in object || 'anyOf' in object || 'properties' in object) out.push([at, object])
  for (const [key, child] of Object.entries(object)) {
    if (key === 'example' || key === 'examples') continue
    schemas(child, `${at}/${key}`, out)
  }
  return out
}

describe('the OpenAPI document', async () => {
  const spec: Json = (await req('/swagger/json')).body

  it('is OpenAPI 3.1 with named components referenced by $ref', () => {
    expect(spec.openapi).toBe('3.1.0')
    for (const name of ['Product', 'Cart', 'CartItem', 'Order', 'OrderItem', 'StockMovement', 'ErrorEnvelope', 'Meta'])
      expect(spec.components.schemas[name]).toBeDefined()
    expect(spec.paths['/products/{id}'].get.responses['200'].content['application/json'].schema.properties.data).toEqual({
      $ref: '#/components/schemas/Product',
    })
    expect(JSON.stringify(spec).length).toBeLessThan(200_000)
  })

  it('leaks no validator keyword: no error message, no nullable, no string-or-integer', () => {
    for (const [at, schema] of schemas(spec)) {
      if (at.endsWith('/properties/error')) continue // the envelope's error field, not a keyword
      expect({ at, error: schema.error }).toEqual({ at, error: undefined })
      expect({ at, nullable: schema.nullable }).toEqual({ at, nullable: undefined })
      expect({ at, format: schema.format }).not.toEqual({ at, format: 'integer' })
    }
  })

  it('types ids and counts in paths and queries as integers', () => {
    for (const [path, method, operation] of operations(spec))
      for (const parameter of operation.parameters ?? [])
        if (['id', 'limit', 'offset', 'after', 'user_id', 'buyer_id', 'seller_id'].includes(parameter.name))
          expect({ path, method, name: parameter.name, type: parameter.schema.type }).toEqual({ path, method, name: parameter.name, type: 'integer' })
  })

  it('takes JSON bodies only, describes every response, and gives every body an example', () => {
    for (const [path, method, operation] of operations(spec)) {
      if (operation.requestBody) expect({ path, method, types: Object.keys(operation.requestBody.content) }).toEqual({ path, method, types: ['application/json'] })
      for (const [status, response] of Object.entries<Json>(operation.responses)) {
        expect(response.description.length).toBeGreaterThan(1)
        for (const media of Object.values<Json>(response.content ?? {})) expect({ path, method, status, example: media.example === undefined }).toEqual({ path, method, status, example: false })
        if (status === '429' || status === '503') expect(response.headers?.['retry-after']?.schema?.type).toBe('integer')
        if (Number(status) >= 400) expect(response.content['application/json'].schema).toEqual({ $ref: '#/components/schemas/ErrorEnvelope' })
      }
    }
    expect(spec.paths['/orders'].post.responses['201'].headers['idempotent-replayed']).toBeDefined()
  })

  it('is the same before and after the routes have served requests (Elysia edits schemas when it compiles them)', async () => {
    const fresh = createApp(createSql('postgres://nobody@127.0.0.1:1/none'))
    const freshSpec = await (await fresh.handle(new Request('http://localhost/swagger/json'))).json()
    for (const [path, method] of operations(spec)) {
      const url = `http://localhost${path.replace(/\{id\}/g, '987654321').replace('{action}', 'pay')}`
      await app.handle(new Request(url, { method: method.toUpperCase(), headers: { 'content-type': 'application/json' }, body: method === 'get' ? undefined : '{}' }))
    }
    const again = await createApp(createSql('postgres://nobody@127.0.0.1:1/none')).handle(new Request('http://localhost/swagger/json'))
    expect(await again.json()).toEqual(freshSpec)
    expect(freshSpec).toEqual(spec)
  })

  it('serves its page at /swagger and /swagger/, with its script from this service', async () => {
    for (const path of ['/swagger', '/swagger/']) {
      const page = await app.handle(new Request(`http://localhost${path}`))
      expect(page.status).toBe(200)
      const html = await page.text()
      expect(html).not.toContain('https://')
      const script = /<script src="([^"]+)"/.exec(html)![1]
      const asset = await app.handle(new Request(`http://localhost${script}`))
      expect(asset.status).toBe(200)
      expect(asset.headers.get('content-type')).toContain('javascript')
      expect((await asset.text()).length).toBeGreaterThan(1_000_000)
      const stylesheet = /<link rel="stylesheet" href="([^"]+)"/.exec(html)![1]
      expect((await app.handle(new Request(`http://localhost${stylesheet}`))).headers.get('content-type')).toContain('text/css')
    }
  })
})
