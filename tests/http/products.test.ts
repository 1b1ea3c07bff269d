import { describe, expect, it } from 'bun:test'
import { expectErrorEnvelope, req } from '../support/http.ts'

const newProduct = { name: 'Kopi Gayo', seller_id: 7, price: 45_000, active: true, stock: 12, weight: 250 }

describe('POST /products', () => {
  it('creates a product and answers 201 in the envelope', async () => {
    const reply = await req('/products', { body: newProduct })
    expect(reply.status).toBe(201)
    expect(reply.body.meta).toEqual({ http_status: 201 })
    expect(reply.body.data).toMatchObject(newProduct)
    expect(reply.body.data.id).toBeInteger()
    expect(Date.parse(reply.body.data.created_at)).not.toBeNaN()
    expect(reply.body.data.updated_at).toBe(reply.body.data.created_at)
  })

  it('defaults active to true', async () => {
    const { active, ...withoutActive } = newProduct
    const reply = await req('/products', { body: { ...withoutActive, active: undefined } })
    expect(reply.body.data.active).toBe(true)
  })

  it.each([
    ['a missing name', { ...newProduct, name: undefined }],
    ['a negative stock', { ...newProduct, stock: -1 }],
    ['a fractional price', { ...newProduct, price: 1.5 }],
    ['a price given as a string', { ...newProduct, price: '100' }],
    ['a zero weight', { ...newProduct, weight: 0 }],
    ['a stock beyond 2^31', { ...newProduct, stock: 2 ** 31 }],
    ['a seller id beyond 2^53', { ...newProduct, seller_id: 2 ** 60 }],
    ['an empty name', { ...newProduct, name: '' }],
  ])('answers 400 for %s', async (_, body) => {
    const { error } = expectErrorEnvelope(await req('/products', { body }), 400)
    expect(error).not.toContain('Expected union')
  })

  it('answers 422 naming the rule when the database refuses the value (a blank name)', async () => {
    const { error, code } = expectErrorEnvelope(await req('/products', { body: { ...newProduct, name: '   ' } }), 422)
    expect(code).toBe('23514')
    expect(error).toContain('products_name_present')
  })

  it('answers 400 for malformed JSON', async () => {
    const { error } = expectErrorEnvelope(
      await req('/products', { method: 'POST', raw: '{"name":', headers: { 'content-type': 'application/json' } }),
      400,
    )
    expect(error).toContain('JSON')
  })
})

describe('GET /products', () => {
  it('lists products by id with limit and offset', async () => {
    for (let i = 0; i < 3; i++) await req('/products', { body: { ...newProduct, name: `Listed ${i}` } })
    const all = await req('/products?limit=100')
    const ids: number[] = all.body.data.map((p: { id: number }) => p.id)
    expect(ids).toEqual([...ids].sort((a, b) => a - b))

    const page = await req('/products?limit=2&offset=1')
    expect(page.status).toBe(200)
    expect(page.body.data.map((p: { id: number }) => p.id)).toEqual(ids.slice(1, 3))
  })

  it('defaults to 10 products and caps the limit at 100', async () => {
    for (let i = 0; i < 11; i++) await req('/products', { body: newProduct })
    expect((await req('/products')).body.data).toHaveLength(10)
    for (let i = 0; i < 90; i++) await req('/products', { body: newProduct })
    expect((await req('/products?limit=1000')).body.data).toHaveLength(100)
  })

  it.each(['limit=0', 'limit=abc', 'offset=-1', 'limit=1.5'])('answers 400 for %s', async (query) => {
    expectErrorEnvelope(await req(`/products?${query}`), 400)
  })
})

describe('GET /products/:id', () => {
  it('answers 200 with the product', async () => {
    const created = await req('/products', { body: newProduct })
    const reply = await req(`/products/${created.body.data.id}`)
    expect(reply.status).toBe(200)
    expect(reply.body.data).toEqual(created.body.data)
  })

  it('answers 404 for an unknown id and 400 for an id that is not a positive integer', async () => {
    expectErrorEnvelope(await req('/products/999999999'), 404)
    for (const id of ['abc', '0', '-3', '1.5', '99999999999999999999'])
      expectErrorEnvelope(await req(`/products/${id}`), 400)
  })
})
