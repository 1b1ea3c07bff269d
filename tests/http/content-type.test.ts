import { afterAll, describe, expect, it } from 'bun:test'
import { createApp } from '../../src/app.ts'
import { apiSql, testSql } from '../support/db.ts'
import { bearer, TEST_SECRET } from '../support/auth.ts'
import { createProduct, newUserId, stockOf } from '../support/fixtures.ts'
import { expectErrorEnvelope } from '../support/http.ts'
import { rawRequest } from '../support/raw-http.ts'

const sql = testSql()
const open = createApp(apiSql()).listen({ port: 0, hostname: '127.0.0.1' })
const secured = createApp(apiSql(), { authJwtSecret: TEST_SECRET }).listen({
  port: 0,
  hostname: '127.0.0.1',
})
const openPort = open.server!.port!
const securedPort = secured.server!.port!
afterAll(async () => {
  await open.stop(true)
  await secured.stop(true)
})

/** A client written for the original service: JSON bodies, and no Content-Type header at all. */
const goClient = (port: number, auth: Record<string, string> = {}) => ({
  get: (path: string) => rawRequest(port, 'GET', path, undefined, auth),
  post: (path: string, body?: unknown, method = 'POST') =>
    rawRequest(port, method, path, body === undefined ? undefined : JSON.stringify(body), auth),
})

describe('a client that sends JSON bodies with no Content-Type (as Go net/http does)', () => {
  it('creates a product, fills a cart, orders, checks out and pays, as with the original service', async () => {
    const client = goClient(openPort)
    const sellerId = newUserId()
    const buyerId = newUserId()

    const product = await client.post('/products', { name: 'Gayo', seller_id: sellerId, price: 900, stock: 10, weight: 250 })
    expect(product.status).toBe(201)
    expect(product.body.data).toMatchObject({ name: 'Gayo', seller_id: sellerId, stock: 10 })
    const productId = product.body.data.id

    expect((await client.post(`/products/${productId}/restock`, { quantity: 2, note: 'more' })).status).toBe(200)
    expect((await client.post(`/products/${productId}/adjust`, { quantity: -1, reason: 'count' })).status).toBe(200)

    const cart = await client.get(`/carts?user_id=${buyerId}`)
    expect(cart.status).toBe(200)
    const line = await client.post('/carts/items', { cart_id: cart.body.data.id, product_id: productId, quantity: 2 })
    expect(line.status).toBe(201)
    const order = await client.post('/orders', { buyer_id: buyerId, cart_item_ids: [line.body.data.id], note: 'via Go' })
    expect(order.status).toBe(201)
    expect(order.body.data).toMatchObject({ buyer_id: buyerId, seller_id: sellerId, note: 'via Go' })

    await client.post('/carts/items', { cart_id: cart.body.data.id, product_id: productId, quantity: 3 })
    const checkout = await client.post(`/carts/${cart.body.data.id}/checkout`, { note: 'the rest' })
    expect(checkout.status).toBe(201)
    expect(checkout.body.data).toHaveLength(1)

    // A POST with no body at all, as an action is sent.
    const paid = await client.post(`/orders/${order.body.data.id}/pay`)
    expect(paid.status).toBe(200)
    expect(paid.body.data.state).toBe('paid')
    expect(await stockOf(sql, productId)).toBe(10 + 2 - 1 - 2 - 3)
  })

  it('works with authentication on too', async () => {
    const sellerId = newUserId()
    const client = goClient(securedPort, await bearer(sellerId))
    const product = await client.post('/products', { name: 'Toraja', price: 700, stock: 3, weight: 100 })
    expect(product.status).toBe(201)
    expect(product.body.data.seller_id).toBe(sellerId)
  })

  it('refuses malformed JSON with 400 in the envelope, and changes nothing', async () => {
    const client = goClient(openPort)
    const product = await createProduct(sql, { stock: 4 })
    for (const raw of ['{"quantity":', 'quantity=1', '[1]', '"text"']) {
      const reply = await rawRequest(openPort, 'POST', `/products/${product.id}/restock`, raw)
      expect({ raw, status: reply.status }).toEqual({ raw, status: 400 })
      expect(reply.headers['content-type']).toStartWith('application/json')
      expect(reply.body.meta.http_status).toBe(400)
      expect(typeof reply.body.error).toBe('string')
    }
    // The same route with a well-formed body works: only the malformed ones were refused.
    expect((await client.post(`/products/${product.id}/restock`, { quantity: 1 })).status).toBe(200)
    expect(await stockOf(sql, product.id)).toBe(5)
  })

  it('is the same through app.handle with a body of bytes (fetch would add text/plain to a string)', async () => {
    const app = createApp(apiSql())
    const request = new Request('http://localhost/products', {
      method: 'POST',
      body: new TextEncoder().encode(JSON.stringify({ name: 'Bytes', seller_id: newUserId(), price: 1, stock: 1, weight: 1 })),
    })
    expect(request.headers.get('content-type')).toBeNull()
    const response = await app.handle(request)
    expect(response.status).toBe(201)
  })
})

describe('a client that declares a Content-Type', () => {
  const body = () => JSON.stringify({ name: 'Typed', seller_id: newUserId(), price: 1, stock: 1, weight: 1 })

  it('is read as JSON for application/json with or without charset=utf-8, and for application/*+json', async () => {
    for (const type of ['application/json', 'application/json; charset=utf-8', 'Application/JSON;charset="UTF-8"', 'application/vnd.api+json', 'application/merge-patch+json']) {
      const reply = await rawRequest(openPort, 'POST', '/products', body(), { 'Content-Type': type })
      expect({ type, status: reply.status }).toEqual({ type, status: 201 })
    }
  })

  it('is refused with 415 in the envelope for any other type, and nothing is created', async () => {
    const name = `refused-${crypto.randomUUID()}`
    const json = JSON.stringify({ name, seller_id: newUserId(), price: 1, stock: 1, weight: 1 })
    for (const type of ['text/plain', 'text/plain; charset=utf-8', 'multipart/form-data; boundary=x', 'application/x-www-form-urlencoded', 'application/xml', 'application/json; charset=latin1', 'application/jsonx']) {
      const reply = await rawRequest(openPort, 'POST', '/products', json, { 'Content-Type': type })
      expect({ type, status: reply.status }).toEqual({ type, status: 415 })
      expectErrorEnvelope({ status: reply.status, body: reply.body, headers: new Headers() }, 415)
    }
    const [{ count }] = await sql`select count(*)::int from waitress.products where name = ${name}`
    expect(count).toBe(0)
  })

  it('with an explicit type still gets 400 for malformed JSON', async () => {
    const reply = await rawRequest(openPort, 'POST', '/products', '{"name":', { 'Content-Type': 'application/json' })
    expectErrorEnvelope({ status: reply.status, body: reply.body, headers: new Headers() }, 400)
  })
})
