import { describe, expect, it } from 'bun:test'
import { apiSql, testSql } from '../support/db.ts'
import { addItem, cartFor, createProduct, newUserId, refusal, stockOf } from '../support/fixtures.ts'

const sql = testSql()

describe('schema invariants', () => {
  it('refuses a direct write of negative stock (products_stock_nonnegative)', async () => {
    const product = await createProduct(sql, { stock: 1 })
    const error = await refusal(sql`update waitress.products set stock = -1 where id = ${product.id}`)
    expect(error.code).toBe('23514')
    expect(error.constraint_name).toBe('products_stock_nonnegative')
  })

  it.each([
    ['products_price_nonnegative', { price: -1 }],
    ['products_weight_positive', { weight: 0 }],
    ['products_stock_nonnegative', { stock: -5 }],
    ['products_name_present', { name: '   ' }],
    ['products_seller_id_positive', { seller_id: 0 }],
  ])('refuses a product that breaks %s', async (constraint, fields) => {
    const error = await refusal(createProduct(sql, fields))
    expect(error.code).toBe('23514')
    expect(error.constraint_name).toBe(constraint)
  })

  it('refuses bad order rows written directly (quantity, prices, one order per cart item)', async () => {
    const product = await createProduct(sql)
    const cart = await cartFor(sql)
    const line = await addItem(sql, cart.id, product.id, 1)
    const [order] = await sql`select (o->>'id')::bigint as id from jsonb_array_elements(api.place_order(${cart.id})->'orders') o`

    const zeroTotal = await refusal(sql`insert into waitress.orders (buyer_id, seller_id, total_price) values (1, 1, 0)`)
    expect(zeroTotal.constraint_name).toBe('orders_total_price_positive')
    const zeroPrice = await refusal(sql`
      insert into waitress.order_items (order_id, product_id, cart_item_id, quantity, price, weight)
      values (${order.id}, ${product.id}, ${line}, 1, 0, 1)`)
    expect(zeroPrice.constraint_name).toBe('order_items_price_positive')
    const zeroQuantity = await refusal(sql`update waitress.cart_items set quantity = 0 where id = ${line}`)
    expect(zeroQuantity.constraint_name).toBe('cart_items_quantity_positive')
    const soldTwice = await refusal(sql`
      insert into waitress.order_items (order_id, product_id, cart_item_id, quantity, price, weight)
      select ${order.id}, ${product.id}, ${line}, 1, 1, 1`)
    expect(soldTwice.code).toBe('23505')
    expect(soldTwice.constraint_name).toBeOneOf(['order_items_cart_item_id_key', 'order_items_one_line_per_product'])
    const badState = await refusal(sql`update waitress.orders set state = 'shipped' where id = ${order.id}`)
    expect(badState.code).toBe('22P02')
  })

  it('keeps one open line per product per cart (cart_items_one_open_line_per_product)', async () => {
    const product = await createProduct(sql)
    const cart = await cartFor(sql)
    await addItem(sql, cart.id, product.id, 1)
    const error = await refusal(sql`insert into waitress.cart_items (cart_id, product_id, quantity) values (${cart.id}, ${product.id}, 1)`)
    expect(error.code).toBe('23505')
    expect(error.constraint_name).toBe('cart_items_one_open_line_per_product')
  })

  it('stamps updated_at in the database on every update', async () => {
    const product = await createProduct(sql)
    const [after] = await sql`
      update waitress.products set updated_at = '2000-01-01', stock = stock + 1 where id = ${product.id}
      returning updated_at, created_at`
    expect(after.updated_at.getTime()).toBeGreaterThan(new Date('2001-01-01').getTime())
  })

  it('lets the API role execute exactly the functions of schema api, and PUBLIC none', async () => {
    const rows = await sql`
      select p.pronamespace::regnamespace::text as schema, p.oid::regprocedure::text as fn,
             has_function_privilege('waitress_api', p.oid, 'execute') as api,
             exists (select from aclexplode(coalesce(p.proacl, acldefault('f', p.proowner))) a
                      where a.grantee = 0 and a.privilege_type = 'EXECUTE') as public
        from pg_proc p
       where p.pronamespace in ('api'::regnamespace, 'waitress'::regnamespace)
       order by 1, 2`
    expect(rows.filter((row) => row.schema === 'api').length).toBeGreaterThan(15)
    for (const row of rows)
      expect({ fn: row.fn, api: row.api, public: row.public }).toEqual({ fn: row.fn, api: row.schema === 'api', public: false })
  })
})

describe('the waitress_api role', () => {
  const api = apiSql()

  it('cannot write any table directly', async () => {
    const product = await createProduct(sql, { stock: 3 })
    for (const statement of [
      api`update waitress.products set stock = 1000 where id = ${product.id}`,
      api`insert into waitress.orders (buyer_id, seller_id, total_price) values (1, 1, 1)`,
      api`delete from waitress.cart_items`,
      api`insert into waitress.carts (user_id) values (${newUserId()})`,
    ])
      expect((await refusal(statement)).code).toBe('42501')
    expect(await stockOf(sql, product.id)).toBe(3)
  })

  it('cannot run DDL', async () => {
    expect((await refusal(api`create table public.sneaky (id int)`)).code).toBe('42501')
  })

  it('checks out through the functions, which are its only way to write', async () => {
    const product = await createProduct(sql, { stock: 3 })
    const [cart] = await api`select (c->>'id')::bigint as id from api.cart_for_user(${newUserId()}) c`
    await api`select api.add_cart_item(${cart.id}, ${product.id}, 2)`
    const orders = await api`select o from jsonb_array_elements(api.place_order(${cart.id})->'orders') o`
    expect(orders).toHaveLength(1)
    expect(await stockOf(sql, product.id)).toBe(1)
  })
})
