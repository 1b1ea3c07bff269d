import { afterEach, describe, expect, it } from 'bun:test'
import { testSql } from '../support/db.ts'
import { createProduct } from '../support/fixtures.ts'
import { req } from '../support/http.ts'

const sql = testSql()

afterEach(async () => {
  await sql`update waitress.products set flash_sale = false where flash_sale`
})

describe('flash-sale mode', () => {
  it('is switched per product at run time through PUT /products/:id/flash-sale', async () => {
    const product = await createProduct(sql)
    const on = await req(`/products/${product.id}/flash-sale`, { method: 'PUT', body: { enabled: true } })
    expect(on.status).toBe(200)
    expect(on.body.data.flash_sale).toBe(true)
    const off = await req(`/products/${product.id}/flash-sale`, { method: 'PUT', body: { enabled: false } })
    expect(off.body.data.flash_sale).toBe(false)
    expect((await req('/products/987654321/flash-sale', { method: 'PUT', body: { enabled: true } })).status).toBe(404)
    expect((await req(`/products/${product.id}/flash-sale`, { method: 'PUT', body: { enabled: 'yes' } })).status).toBe(400)
  })
})
