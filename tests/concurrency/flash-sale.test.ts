import { afterEach, describe, expect, it } from 'bun:test'
import { OrderPlacer, Refused } from '../../src/order-placer.ts'
import { apiSql, testSql } from '../support/db.ts'
import { addItem, auditOf, cartFor, createProduct, stockOf } from '../support/fixtures.ts'
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

  it('coalesces concurrent checkouts into batches, each buyer getting their own order or refusal', async () => {
    const hot = await createProduct(sql, { name: 'Hot', stock: 150 })
    await sql`select api.set_flash_sale(${hot.id}, true)`
    const carts = await Promise.all(Array.from({ length: 200 }, async () => {
      const cart = await cartFor(sql)
      await addItem(sql, cart.id, hot.id, 1)
      return cart
    }))
    const placer = new OrderPlacer(apiSql(), { flashSaleCheckEveryMs: 0 })

    const outcomes = await Promise.allSettled(carts.map((cart) => placer.place({ cart_id: cart.id, item_ids: null, note: null, one_seller: false })))

    const accepted = outcomes.filter((o) => o.status === 'fulfilled')
    const refused = outcomes.filter((o) => o.status === 'rejected').map((o) => (o as PromiseRejectedResult).reason)
    expect(accepted).toHaveLength(150)
    expect(refused).toHaveLength(50)
    for (const error of refused) {
      expect(error).toBeInstanceOf(Refused)
      expect(error.code).toBe('WA004')
    }
    expect(placer.batching.checkouts).toBe(200)
    expect(placer.batching.batches).toBeLessThan(200)
    expect(await stockOf(sql, hot.id)).toBe(0)
    expect(await auditOf(sql, [hot.id])).toEqual([])
  })

  it('sends each checkout alone while no product is in flash-sale mode', async () => {
    const product = await createProduct(sql, { stock: 50 })
    const carts = await Promise.all(Array.from({ length: 20 }, async () => {
      const cart = await cartFor(sql)
      await addItem(sql, cart.id, product.id, 1)
      return cart
    }))
    const placer = new OrderPlacer(apiSql(), { flashSaleCheckEveryMs: 0 })

    await Promise.all(carts.map((cart) => placer.place({ cart_id: cart.id, item_ids: null, note: null, one_seller: false })))

    expect(placer.batching.batches).toBe(0)
    expect(await stockOf(sql, product.id)).toBe(30)
  })
})
