import { describe, expect, it } from 'bun:test'
import { createApp } from '../../src/app.ts'
import { ConfigError, loadConfig } from '../../src/config.ts'
import { apiSql, testSql } from '../support/db.ts'
import { addItem, cartFor, createProduct, newUserId, stockOf } from '../support/fixtures.ts'
import { expectErrorEnvelope, requester } from '../support/http.ts'
import { bearer, TEST_SECRET, tokenFor, unsignedToken } from '../support/auth.ts'

const sql = testSql()
const secured = createApp(apiSql(), { authJwtSecret: TEST_SECRET })
const req = requester(secured)

/** A buyer with a cart holding one line of a fresh product. */
async function buyerWithLine(stock = 5) {
  const product = await createProduct(sql, { stock, seller_id: 9001 })
  const cart = await cartFor(sql)
  const line = await addItem(sql, cart.id, product.id, 1)
  return { userId: cart.user_id, cartId: cart.id, line, product }
}

async function purchasedLines(cartId: number): Promise<number> {
  const [{ count }] = await sql`select count(*)::int from waitress.cart_items where cart_id = ${cartId} and purchased`
  return count
}

describe('authentication (AUTH_JWT_SECRET set)', () => {
  it('answers 401 with WWW-Authenticate on a buyer or seller route without a token, and changes nothing', async () => {
    const { cartId, product } = await buyerWithLine()
    for (const [path, init] of [
      ['/carts?user_id=1', {}],
      [`/carts/${cartId}/checkout`, { method: 'POST' }],
      ['/carts/items', { body: { cart_id: cartId, product_id: product.id, quantity: 1 } }],
      ['/orders', { body: { buyer_id: 1, cart_item_ids: [1] } }],
      ['/orders/1', {}],
      ['/products', { body: { name: 'x', seller_id: 1, price: 1, stock: 1, weight: 1 } }],
    ] as const) {
      const reply = await req(path, init)
      expectErrorEnvelope(reply, 401)
      expect(reply.headers.get('www-authenticate')).toBe('Bearer realm="waitress"')
    }
    expect(await purchasedLines(cartId)).toBe(0)
    expect(await stockOf(sql, product.id)).toBe(5)
  })

  it('keeps the catalogue, health and the API documentation public', async () => {
    expect((await req('/products')).status).toBe(200)
    const product = await createProduct(sql)
    expect((await req(`/products/${product.id}`)).status).toBe(200)
    expect((await req('/healthz')).status).toBe(200)
    expect((await req('/swagger/json')).status).toBe(200)
  })

  it('refuses every token it cannot trust with 401 invalid_token, and changes nothing', async () => {
    const { userId, cartId } = await buyerWithLine()
    const now = Math.floor(Date.now() / 1000)
    const tokens = {
      garbage: 'not-a-token',
      'wrong secret': await tokenFor(userId, { secret: 'another-secret-that-is-long-enough-000000' }),
      expired: await tokenFor(userId, { exp: now - 60 }),
      'alg none': unsignedToken(userId),
      'alg HS512': await tokenFor(userId, { alg: 'HS512' }),
      'no sub': await tokenFor(undefined),
      'sub not a user id': await tokenFor('alice'),
      'sub a JSON number': await tokenFor(undefined, { claims: { sub: userId } }),
      'sub zero': await tokenFor('0'),
      'not yet valid': await tokenFor(userId, { claims: { nbf: now + 3600 } }),
      'tampered payload': (await tokenFor(userId)).replace(/\.([^.]+)\./, (_, payload) => `.${payload.slice(0, -2)}AA.`),
    }
    for (const [name, token] of Object.entries(tokens)) {
      const reply = await req(`/carts/${cartId}/checkout`, { method: 'POST', headers: { authorization: `Bearer ${token}` } })
      expect({ name, status: reply.status }).toEqual({ name, status: 401 })
      expectErrorEnvelope(reply, 401)
      expect(reply.headers.get('www-authenticate')).toContain('error="invalid_token"')
    }
    const basic = await req(`/carts/${cartId}/checkout`, { method: 'POST', headers: { authorization: 'Basic dXNlcjpwYXNz' } })
    expectErrorEnvelope(basic, 401)
    expect(await purchasedLines(cartId)).toBe(0)
  })

  it("checks out the token's own cart", async () => {
    const { userId, cartId } = await buyerWithLine()
    const reply = await req(`/carts/${cartId}/checkout`, { method: 'POST', headers: await bearer(userId) })
    expect(reply.status).toBe(201)
    expect(reply.body.data[0].buyer_id).toBe(userId)
  })
})

describe("another user's things (object-level authorisation)", () => {
  it("answers 404 for another user's cart at checkout, exactly as for no cart, and changes nothing", async () => {
    const victim = await buyerWithLine(5)
    const attacker = newUserId()
    const reply = await req(`/carts/${victim.cartId}/checkout`, { method: 'POST', headers: await bearer(attacker) })
    const missing = await req('/carts/999999999/checkout', { method: 'POST', headers: await bearer(attacker) })
    expect(expectErrorEnvelope(reply, 404).code).toBe('WA001')
    expect(reply.body.error).toBe(`cart ${victim.cartId} not found`)
    expect(expectErrorEnvelope(missing, 404).code).toBe('WA001')
    expect(await purchasedLines(victim.cartId)).toBe(0)
    expect(await stockOf(sql, victim.product.id)).toBe(5)
  })

  it("answers 404 when adding to another user's cart, and adds nothing", async () => {
    const victim = await buyerWithLine()
    const reply = await req('/carts/items', {
      body: { cart_id: victim.cartId, product_id: victim.product.id, quantity: 3 },
      headers: await bearer(newUserId()),
    })
    expect(expectErrorEnvelope(reply, 404).code).toBe('WA001')
    const [line] = await sql`select quantity from waitress.cart_items where id = ${victim.line}`
    expect(line.quantity).toBe(1)
  })

  it('answers 403 when a request names another user, and changes nothing', async () => {
    const victim = await buyerWithLine()
    const attacker = newUserId()
    const headers = await bearer(attacker)
    const order = await req('/orders', { body: { buyer_id: victim.userId, cart_item_ids: [victim.line] }, headers })
    expect(expectErrorEnvelope(order, 403).error).toContain('buyer_id')
    expectErrorEnvelope(await req(`/carts?user_id=${victim.userId}`, { headers }), 403)
    const product = await req('/products', { body: { name: 'Fake', seller_id: 9001, price: 1, stock: 1, weight: 1 }, headers })
    expectErrorEnvelope(product, 403)
    expect(await purchasedLines(victim.cartId)).toBe(0)
    const [{ count }] = await sql`select count(*)::int from waitress.products where name = 'Fake'`
    expect(count).toBe(0)
  })

  it("orders only from the token's own cart: another user's item ids are not in it (422), nothing changes", async () => {
    const victim = await buyerWithLine()
    const attacker = await cartFor(sql)
    const reply = await req('/orders', { body: { cart_item_ids: [victim.line] }, headers: await bearer(attacker.user_id) })
    expect(expectErrorEnvelope(reply, 422).code).toBe('WA005')
    expect(await purchasedLines(victim.cartId)).toBe(0)
  })

  it("takes the user from the token when the request names none, or names the token's user", async () => {
    const buyer = await buyerWithLine()
    const headers = await bearer(buyer.userId)
    const cart = await req('/carts', { headers })
    expect(cart.body.data).toMatchObject({ id: buyer.cartId, user_id: buyer.userId })
    expect((await req(`/carts?user_id=${buyer.userId}`, { headers })).body.data.id).toBe(buyer.cartId)
    const order = await req('/orders', { body: { cart_item_ids: [buyer.line] }, headers })
    expect(order.status).toBe(201)
    expect(order.body.data.buyer_id).toBe(buyer.userId)

    const seller = newUserId()
    const product = await req('/products', { body: { name: 'Mine', price: 10, stock: 1, weight: 1 }, headers: await bearer(seller) })
    expect(product.status).toBe(201)
    expect(product.body.data.seller_id).toBe(seller)
  })

  it('shows an order to its buyer and its seller only; anyone else gets 404', async () => {
    const buyer = await buyerWithLine()
    const placed = await req(`/carts/${buyer.cartId}/checkout`, { method: 'POST', headers: await bearer(buyer.userId) })
    const orderId = placed.body.data[0].id
    expect((await req(`/orders/${orderId}`, { headers: await bearer(buyer.userId) })).status).toBe(200)
    expect((await req(`/orders/${orderId}`, { headers: await bearer(9001) })).status).toBe(200)
    const stranger = await req(`/orders/${orderId}`, { headers: await bearer(newUserId()) })
    expect(expectErrorEnvelope(stranger, 404).error).toBe(`order ${orderId} not found`)
  })

  it('documents the bearer scheme in the OpenAPI spec, on every route that needs it', async () => {
    const spec = (await req('/swagger/json')).body
    expect(spec.components.securitySchemes.bearerAuth).toMatchObject({ type: 'http', scheme: 'bearer', bearerFormat: 'JWT' })
    const secured = (path: string, method: string) => JSON.stringify(spec.paths[path][method].security ?? null)
    for (const [path, method] of [['/carts', 'get'], ['/carts/items', 'post'], ['/carts/{id}/checkout', 'post'], ['/orders', 'post'], ['/orders/{id}', 'get'], ['/products', 'post']])
      expect({ path, method, security: secured(path, method) }).toEqual({ path, method, security: '[{"bearerAuth":[]}]' })
    expect(secured('/products', 'get')).toBe('[]')
    expect(Object.keys(spec.paths['/orders'].post.responses)).toContain('401')
  })
})

describe('start-up without a secret', () => {
  it('refuses NODE_ENV=production without AUTH_JWT_SECRET, and secrets too short to be safe', () => {
    expect(() => loadConfig({ NODE_ENV: 'production' })).toThrow(ConfigError)
    expect(() => loadConfig({ NODE_ENV: 'production' })).toThrow('AUTH_JWT_SECRET')
    expect(() => loadConfig({ AUTH_JWT_SECRET: 'short' })).toThrow('at least 32')
    expect(() => loadConfig({ NODE_ENV: 'production', AUTH_JWT_SECRET: TEST_SECRET, DATABASE_URL: 'postgres://x/y' })).toThrow('APP_DATABASE_URL')
    expect(loadConfig({ NODE_ENV: 'production', AUTH_JWT_SECRET: TEST_SECRET })).toMatchObject({ production: true, rateLimit: 600 })
    expect(loadConfig({}).authJwtSecret).toBeUndefined()
  })

  it('exits with a clear log line instead of serving, when NODE_ENV=production has no secret', async () => {
    const env: Record<string, string> = { ...(process.env as Record<string, string>), NODE_ENV: 'production', PORT: '0' }
    delete env.AUTH_JWT_SECRET
    const child = Bun.spawn([process.execPath, 'src/server.ts'], { cwd: `${import.meta.dir}/../..`, env, stdout: 'pipe', stderr: 'pipe' })
    const [code, out] = await Promise.all([child.exited, new Response(child.stdout).text()])
    expect(code).toBe(1)
    expect(JSON.parse(out.trim().split('\n').at(-1)!)).toMatchObject({ level: 'error', msg: 'refusing to start', reason: expect.stringContaining('AUTH_JWT_SECRET') })
  })
})
