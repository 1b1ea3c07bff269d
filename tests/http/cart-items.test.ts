import { describe, expect, it } from 'bun:test'
import { createApp } from '../../src/app.ts'
import { LIMITS } from '../../src/generated/sql.ts'
import { apiSql, testSql } from '../support/db.ts'
import { addItem, cartFor, createProduct, newUserId, stockOf } from '../support/fixtures.ts'
import { expectErrorEnvelope, req, requester } from '../support/http.ts'
import { bearer, TEST_SECRET } from '../support/auth.ts'

const sql = testSql()
const secured = requester(createApp(apiSql(), { authJwtSecret: TEST_SECRET }))

async function cartWithLine(stock = 10, quantity = 2) {
  const product = await createProduct(sql, { stock })
  const cart = await cartFor(sql)
  const line = await addItem(sql, cart.id, product.id, quantity)
  return { ...cart, line, product }
}

const quantityOf = async (lineId: number) =>
  (await sql<{ quantity: number }[]>`select quantity from waitress.cart_items where id = ${lineId}`)[0]?.quantity

const patch = (lineId: number, quantity: unknown, headers: Record<string, string> = {}) =>
  req(`/carts/items/${lineId}`, { method: 'PATCH', body: { quantity }, headers })

describe('PATCH /carts/items/:id', () => {
  it('sets the quantity of the line and answers 200 with the line; a checkout then buys that quantity', async () => {
    const cart = await cartWithLine(10, 2)
    const reply = await patch(cart.line, 5)
    expect(reply.status).toBe(200)
    expect(reply.body).toMatchObject({ data: { id: cart.line, cart_id: cart.id, quantity: 5, purchased: false, product: { id: cart.product.id } }, meta: { http_status: 200 } })
    expect((await patch(cart.line, 1)).body.data.quantity).toBe(1)

    const checkout = await req(`/carts/${cart.id}/checkout`, { method: 'POST' })
    expect(checkout.status).toBe(201)
    expect(checkout.body.data[0].items[0].quantity).toBe(1)
    expect(await stockOf(sql, cart.product.id)).toBe(9)
  })

  it('refuses quantity 0 (remove the line instead), negatives, fractions and strings with 400, and changes nothing', async () => {
    const cart = await cartWithLine(10, 2)
    const zero = expectErrorEnvelope(await patch(cart.line, 0), 400)
    expect(zero.error).toContain('DELETE')
    for (const quantity of [-1, 1.5, '3', null, 2_147_483_648]) expectErrorEnvelope(await patch(cart.line, quantity), 400)
    expectErrorEnvelope(await req(`/carts/items/${cart.line}`, { method: 'PATCH', body: {} }), 400)
    expectErrorEnvelope(await req(`/carts/items/${cart.line}`, { method: 'PATCH', body: { quantity: 3, purchased: true } }), 400)
    expect(await quantityOf(cart.line)).toBe(2)
  })

  it('refuses a quantity above the current stock with 422 WA004, naming what is available', async () => {
    const cart = await cartWithLine(3, 1)
    const refused = expectErrorEnvelope(await patch(cart.line, 4), 422)
    expect(refused.code).toBe('WA004')
    expect(refused.details).toEqual({ shortages: [{ product_id: cart.product.id, name: cart.product.name, requested: 4, available: 3 }] })
    expect(await quantityOf(cart.line)).toBe(1)
  })

  it('refuses a product no longer for sale with 422 WA003', async () => {
    const cart = await cartWithLine(5, 1)
    await sql`update waitress.products set active = false where id = ${cart.product.id}`
    expect(expectErrorEnvelope(await patch(cart.line, 2), 422).code).toBe('WA003')
    expect(await quantityOf(cart.line)).toBe(1)
  })

  it('answers 404 WA012 for a line that does not exist, and 409 WA013 for a purchased line', async () => {
    expect(expectErrorEnvelope(await patch(999_999_999_999, 1), 404).code).toBe('WA012')
    const cart = await cartWithLine(5, 2)
    const [order] = (await req(`/carts/${cart.id}/checkout`, { method: 'POST' })).body.data
    const refused = expectErrorEnvelope(await patch(cart.line, 1), 409)
    expect(refused.code).toBe('WA013')
    expect(refused.details).toEqual({ cart_item_id: cart.line, order_id: order.id })
    expect(await quantityOf(cart.line)).toBe(2)
  })
})

describe('DELETE /carts/items/:id', () => {
  it('removes the line and answers 200 with the cart without it; a second DELETE is 404 WA012', async () => {
    const cart = await cartWithLine(10, 2)
    const other = await createProduct(sql, { stock: 4 })
    const kept = await addItem(sql, cart.id, other.id, 1)
    const reply = await req(`/carts/items/${cart.line}`, { method: 'DELETE' })
    expect(reply.status).toBe(200)
    expect(reply.body.data).toMatchObject({ id: cart.id, user_id: cart.user_id })
    expect(reply.body.data.items.map((item: { id: number }) => item.id)).toEqual([kept])
    expect(await quantityOf(cart.line)).toBeUndefined()
    expect(expectErrorEnvelope(await req(`/carts/items/${cart.line}`, { method: 'DELETE' }), 404).code).toBe('WA012')
    // The product can be added again, on a new line.
    expect((await req('/carts/items', { body: { cart_id: cart.id, product_id: cart.product.id, quantity: 1 } })).status).toBe(201)
  })

  it('answers 409 WA013 for a purchased line, which stays with its order', async () => {
    const cart = await cartWithLine(5, 2)
    await req(`/carts/${cart.id}/checkout`, { method: 'POST' })
    expect(expectErrorEnvelope(await req(`/carts/items/${cart.line}`, { method: 'DELETE' }), 409).code).toBe('WA013')
    const [{ count }] = await sql`select count(*)::int from waitress.order_items where cart_item_id = ${cart.line}`
    expect(count).toBe(1)
  })

  it('answers 400 for an id that is not one', async () => {
    for (const id of ['abc', '0', '-1', '1e3']) expectErrorEnvelope(await req(`/carts/items/${id}`, { method: 'DELETE' }), 400)
  })
})

describe('with authentication, a cart line is its owner\'s', () => {
  it("answers another user's line 404 WA012 for PATCH and DELETE, open or purchased, and changes nothing", async () => {
    const open = await cartWithLine(10, 2)
    const bought = await cartWithLine(10, 3)
    await sql`select api.place_order(${bought.id})`
    const stranger = await bearer(newUserId())
    for (const line of [open.line, bought.line]) {
      const changed = await secured(`/carts/items/${line}`, { method: 'PATCH', body: { quantity: 1 }, headers: stranger })
      const removed = await secured(`/carts/items/${line}`, { method: 'DELETE', headers: stranger })
      // Exactly what a line that does not exist gets: nothing tells the stranger it is there, or that it was bought.
      const missing = await secured('/carts/items/999999999999', { method: 'DELETE', headers: stranger })
      for (const reply of [changed, removed]) {
        const refused = expectErrorEnvelope(reply, 404)
        expect(refused.code).toBe('WA012')
        expect(refused.details).toEqual({ cart_item_id: line })
        expect(refused.error).toBe(`cart item ${line} not found`)
      }
      expect(missing.body.error).toBe('cart item 999999999999 not found')
    }
    expect(await quantityOf(open.line)).toBe(2)
  })

  it('lets the owner change and remove their lines, and needs a token', async () => {
    const cart = await cartWithLine(10, 2)
    const owner = await bearer(cart.user_id)
    expect((await secured(`/carts/items/${cart.line}`, { method: 'PATCH', body: { quantity: 4 } })).status).toBe(401)
    expect((await secured(`/carts/items/${cart.line}`, { method: 'DELETE' })).status).toBe(401)
    expect((await secured(`/carts/items/${cart.line}`, { method: 'PATCH', body: { quantity: 4 }, headers: owner })).body.data.quantity).toBe(4)
    expect((await secured(`/carts/items/${cart.line}`, { method: 'DELETE', headers: owner })).body.data.items).toEqual([])
  })
})

describe('changing a line while its cart is checked out', () => {
  it('is serialised by the cart lock: the checkout buys the quantity from before or after the change, never a mix', async () => {
    for (let round = 0; round < 10; round++) {
      const cart = await cartWithLine(20, 2)
      const [changed, checkout] = await Promise.all([patch(cart.line, 5), req(`/carts/${cart.id}/checkout`, { method: 'POST' })])
      expect(checkout.status).toBe(201)
      const bought = checkout.body.data[0].items[0].quantity
      if (changed.status === 200) expect(bought).toBe(5)
      else {
        expect(changed.status).toBe(409)
        expect(changed.body.code).toBe('WA013')
        expect(bought).toBe(2)
      }
      expect(await stockOf(sql, cart.product.id)).toBe(20 - bought)
    }
  })

  it('a removal either happens first (the checkout finds nothing to order) or finds the line bought', async () => {
    for (let round = 0; round < 10; round++) {
      const cart = await cartWithLine(20, 2)
      const [removed, checkout] = await Promise.all([
        req(`/carts/items/${cart.line}`, { method: 'DELETE' }),
        req(`/carts/${cart.id}/checkout`, { method: 'POST' }),
      ])
      if (removed.status === 200) {
        expect(checkout.status).toBe(422)
        expect(checkout.body.code).toBe('WA006')
        expect(await stockOf(sql, cart.product.id)).toBe(20)
      } else {
        expect(removed.body.code).toBe('WA013')
        expect(checkout.status).toBe(201)
        expect(await stockOf(sql, cart.product.id)).toBe(18)
      }
    }
  })
})

describe('the OpenAPI document', () => {
  it('describes PATCH and DELETE /carts/items/{id} with their refusals', async () => {
    const spec = (await req('/swagger/json')).body
    const path = spec.paths['/carts/items/{id}']
    expect(Object.keys(path).sort()).toEqual(['delete', 'patch'])
    expect(Object.keys(path.patch.responses).sort()).toEqual(['200', '400', '401', '404', '409', '413', '415', '422', '429', '500', '503'])
    expect(Object.keys(path.delete.responses).sort()).toEqual(['200', '400', '401', '404', '409', '429', '500', '503'])
    expect(path.patch['x-access']).toBe('user')
    expect(path.delete['x-access']).toBe('user')
    expect(JSON.stringify(path.patch.requestBody)).toContain('quantity')
  })

  it('names the limits of a cart line where a client meets them', async () => {
    const spec = (await req('/swagger/json')).body
    const addItem = spec.paths['/carts/items'].post
    const changeItem = spec.paths['/carts/items/{id}'].patch
    expect(Object.keys(addItem.responses)).toContain('422')
    expect(addItem.description).toContain('100 open lines (WA114')
    expect(addItem.description).toContain('10000 units, counting what it already holds (WA115)')
    expect(changeItem.description).toContain('10000 units (WA115)')
    for (const route of [spec.paths['/carts/{id}/checkout'].post, spec.paths['/orders'].post]) expect(route.description).toContain('(WA115)')
    expect(spec.info.description).toContain('| `WA114` | 422 |')
    expect(spec.info.description).toContain('| `WA115` | 422 |')
  })
})

/** `count` products for sale, made in one statement. */
async function productsForSale(count: number, stock = 10): Promise<number[]> {
  const rows = await sql<{ id: number }[]>`
    select (api.create_product('Limit ' || g, 1, 100, ${stock}, 250, true)->>'id')::bigint as id
      from generate_series(1, ${count}::integer) g order by g`
  return rows.map((r) => r.id)
}

const openLines = async (cartId: number) =>
  (await sql<{ id: number; product_id: number; quantity: number }[]>`
    select id, product_id, quantity from waitress.cart_items where cart_id = ${cartId} and not purchased order by id`).map((l) => ({ ...l }))

const add = (cartId: number, productId: number, quantity: number) => req('/carts/items', { body: { cart_id: cartId, product_id: productId, quantity } })

describe('POST /carts/items: the open lines of a cart', () => {
  it(`refuses the ${LIMITS.max_open_lines + 1}st product with 422 WA114, still adds to a line at the limit, and a DELETE frees a slot`, async () => {
    const cart = await cartFor(sql)
    const products = await productsForSale(LIMITS.max_open_lines + 1)
    for (const p of products.slice(0, 100)) await addItem(sql, cart.id, p, 1)

    const refused = await add(cart.id, products[100], 1)
    expect(expectErrorEnvelope(refused, 422)).toEqual({
      error: `cart ${cart.id} has 100 open lines; a cart holds at most 100`,
      code: 'WA114',
      details: { cart_id: cart.id, lines: 100, limit: 100 },
    })
    const lines = await openLines(cart.id)
    expect(lines.length).toBe(100)
    expect(lines.some((l) => l.product_id === products[100])).toBe(false)

    const more = await add(cart.id, products[7], 4)
    expect(more.status).toBe(201)
    expect(more.body.data).toMatchObject({ id: lines[7].id, quantity: 5, product: { id: products[7] } })
    expect((await openLines(cart.id)).length).toBe(100)

    expect((await req(`/carts/items/${lines[0].id}`, { method: 'DELETE' })).status).toBe(200)
    const added = await add(cart.id, products[100], 1)
    expect(added.status).toBe(201)
    const after = await openLines(cart.id)
    expect(after.length).toBe(100)
    expect(after.map((l) => l.product_id)).toEqual([...products.slice(1, 100), products[100]])
    expect(expectErrorEnvelope(await add(cart.id, products[0], 1), 422).code).toBe('WA114')
  })

  it('lets concurrent adds take the last free lines and no more', async () => {
    const cart = await cartFor(sql)
    const products = await productsForSale(97 + 12)
    for (const p of products.slice(0, 97)) await addItem(sql, cart.id, p, 1)
    const replies = await Promise.all(products.slice(97).map((p) => add(cart.id, p, 1)))
    const statuses = replies.map((r) => r.status).sort()
    expect(statuses).toEqual([...Array(3).fill(201), ...Array(9).fill(422)])
    for (const r of replies.filter((r) => r.status === 422)) expect(r.body.code).toBe('WA114')
    const lines = await openLines(cart.id)
    expect(lines.length).toBe(100)
    const winners = replies.filter((r) => r.status === 201).map((r) => r.body.data.product.id).sort((a, b) => a - b)
    expect(lines.slice(97).map((l) => l.product_id).sort((a, b) => a - b)).toEqual(winners)
  })
})

describe('the quantity of a cart line', () => {
  it(`is at most ${LIMITS.max_line_quantity}: more is 422 WA115 on POST (counting what the line holds) and on PATCH, and changes nothing`, async () => {
    const product = await createProduct(sql, { stock: 50_000 })
    const cart = await cartFor(sql)

    for (const quantity of [10_001, 2_147_483_647]) {
      expect(expectErrorEnvelope(await add(cart.id, product.id, quantity), 422)).toEqual({
        error: `a cart line holds at most 10000 units, not ${quantity}`,
        code: 'WA115',
        details: { product_id: product.id, quantity, limit: 10_000 },
      })
    }
    expect(await openLines(cart.id)).toEqual([])

    const first = await add(cart.id, product.id, 9_000)
    expect(first.status).toBe(201)
    const line = first.body.data.id
    expect(expectErrorEnvelope(await add(cart.id, product.id, 1_001), 422)).toMatchObject({
      code: 'WA115',
      details: { product_id: product.id, quantity: 10_001, limit: 10_000 },
    })
    expect(await quantityOf(line)).toBe(9_000)

    expect(expectErrorEnvelope(await patch(line, 10_001), 422)).toEqual({
      error: 'a cart line holds at most 10000 units, not 10001',
      code: 'WA115',
      details: { product_id: product.id, quantity: 10_001, limit: 10_000 },
    })
    expect(await quantityOf(line)).toBe(9_000)
    // Below 1 stays a 400 (the body's type), as before.
    expectErrorEnvelope(await patch(line, 0), 400)

    expect((await patch(line, 10_000)).body.data).toMatchObject({ id: line, quantity: 10_000 })
    expect(await quantityOf(line)).toBe(10_000)
    expect(expectErrorEnvelope(await add(cart.id, product.id, 1), 422).code).toBe('WA115')
    expect(await openLines(cart.id)).toEqual([{ id: line, product_id: product.id, quantity: 10_000 }])
  })
})
