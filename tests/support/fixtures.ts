import type { Sql } from '../../src/db/client.ts'

// User ids count down from just under 10^15 (the API takes at most 15
// digits): the benchmark's fixtures take the ids above the largest one in
// use, and npm run simulate takes ids below 10^14, so neither can hand out
// an id this has handed out (and so a cart that already has items).
let nextUser = 900_000_000_000_000 - Math.floor(Math.random() * 1_000_000) * 1000

/** A user id no other test uses, so every test gets a cart of its own. */
export const newUserId = () => nextUser--

export interface ProductRow {
  id: number
  name: string
  seller_id: number
  price: number
  active: boolean
  stock: number
  weight: number
}

export async function createProduct(
  sql: Sql,
  fields: Partial<Pick<ProductRow, 'name' | 'seller_id' | 'price' | 'stock' | 'weight' | 'active'>> = {},
): Promise<ProductRow> {
  const [product] = await sql<ProductRow[]>`
    select p.*
      from jsonb_to_record(api.create_product(${fields.name ?? 'Kopi Luwak'}, ${fields.seller_id ?? 1}, ${fields.price ?? 1000},
                                              ${fields.stock ?? 10}, ${fields.weight ?? 250}, ${fields.active ?? true}))
        as p(id bigint, name text, seller_id bigint, price bigint, active boolean, stock integer, weight integer)`
  return product
}

export async function cartFor(sql: Sql, userId = newUserId()): Promise<{ id: number; user_id: number }> {
  const [cart] = await sql<{ id: number; user_id: number }[]>`select (c->>'id')::bigint as id, (c->>'user_id')::bigint as user_id from api.cart_for_user(${userId}) c`
  return cart
}

export async function addItem(sql: Sql, cartId: number, productId: number, quantity: number): Promise<number> {
  const [item] = await sql<{ id: number }[]>`select (i->>'id')::bigint as id from api.add_cart_item(${cartId}, ${productId}, ${quantity}) i`
  return item.id
}

export async function stockOf(sql: Sql, productId: number): Promise<number> {
  const [row] = await sql<{ stock: number }[]>`select stock from waitress.products where id = ${productId}`
  return row.stock
}

/** Runs a statement and returns the PostgresError it raised (fails the test if it did not). */
export async function refusal(query: Promise<unknown>): Promise<{ code: string; message: string; detail?: string; hint?: string; constraint_name?: string }> {
  try {
    await query
  } catch (error) {
    return error as { code: string; message: string; detail?: string; hint?: string }
  }
  throw new Error('expected the database to refuse the statement, but it succeeded')
}

/** Products among these ids whose stock disagrees with the ledger or their orders (inventory_audit). */
export async function auditOf(sql: Sql, productIds: number[]): Promise<unknown[]> {
  return [...(await sql`select * from api.inventory_audit() where product_id = any (${productIds}::bigint[])`)]
}

/** Places an order of `quantity` units of a product for a new buyer; returns the order id. */
export async function placedOrder(sql: Sql, productId: number, quantity = 1): Promise<number> {
  const cart = await cartFor(sql)
  await addItem(sql, cart.id, productId, quantity)
  const [row] = await sql<{ id: number }[]>`select (o->>'id')::bigint as id from jsonb_array_elements(api.place_order(${cart.id})->'orders') o`
  return row.id
}

/** Makes a pending order look older than any payment deadline, so expire_orders() takes it. */
export async function agePastDeadline(sql: Sql, orderIds: number[]) {
  await sql`update waitress.orders set created_at = now() - interval '1 day' where id = any (${orderIds}::bigint[])`
}
