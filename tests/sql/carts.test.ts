import { describe, expect, it } from 'bun:test'
import { testSql } from '../support/db.ts'
import { addItem, cartFor, createProduct, newUserId, refusal } from '../support/fixtures.ts'

const sql = testSql()

describe('cart_for_user', () => {
  it('creates one cart per user even when 10 first calls race', async () => {
    const userId = newUserId()
    const carts = await Promise.all(Array.from({ length: 10 }, () => cartFor(sql, userId)))
    expect(new Set(carts.map((cart) => cart.id)).size).toBe(1)
    const [{ count }] = await sql`select count(*)::int from waitress.carts where user_id = ${userId}`
    expect(count).toBe(1)
  })
})

describe('add_cart_item', () => {
  it('adds to the open line when the product is already in the cart', async () => {
    const product = await createProduct(sql, { stock: 10 })
    const cart = await cartFor(sql)
    const first = await addItem(sql, cart.id, product.id, 2)
    const second = await addItem(sql, cart.id, product.id, 3)
    expect(second).toBe(first)
    const [line] = await sql`select quantity from waitress.cart_items where id = ${first}`
    expect(line.quantity).toBe(5)
  })

  it('starts a new line once the earlier one was purchased', async () => {
    const product = await createProduct(sql, { stock: 10 })
    const cart = await cartFor(sql)
    const first = await addItem(sql, cart.id, product.id, 1)
    await sql`select api.place_order(${cart.id})`
    const second = await addItem(sql, cart.id, product.id, 1)
    expect(second).not.toBe(first)
  })

  it('refuses a line above the current stock with WA004 and keeps the earlier quantity', async () => {
    const product = await createProduct(sql, { stock: 3 })
    const cart = await cartFor(sql)
    const line = await addItem(sql, cart.id, product.id, 2)
    const error = await refusal(addItem(sql, cart.id, product.id, 2))
    expect(error.code).toBe('WA004')
    expect(JSON.parse(error.detail!).shortages[0]).toMatchObject({ product_id: product.id, requested: 4, available: 3 })
    const [row] = await sql`select quantity from waitress.cart_items where id = ${line}`
    expect(row.quantity).toBe(2)
  })

  it('refuses an unknown cart (WA001), an unknown product (WA002), a product not for sale (WA003) and a quantity below 1 (22023)', async () => {
    const product = await createProduct(sql)
    const cart = await cartFor(sql)
    expect((await refusal(addItem(sql, 987_654_321, product.id, 1))).code).toBe('WA001')
    expect((await refusal(addItem(sql, cart.id, 987_654_321, 1))).code).toBe('WA002')
    const inactive = await createProduct(sql, { active: false })
    expect((await refusal(addItem(sql, cart.id, inactive.id, 1))).code).toBe('WA003')
    const free = await createProduct(sql, { price: 0 })
    expect((await refusal(addItem(sql, cart.id, free.id, 1))).code).toBe('WA003')
    expect((await refusal(addItem(sql, cart.id, product.id, 0))).code).toBe('22023')
    const [{ count }] = await sql`select count(*)::int from waitress.cart_items where cart_id = ${cart.id}`
    expect(count).toBe(0)
  })
})
