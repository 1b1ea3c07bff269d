import type { Sql } from '../../src/db/client.ts'
import { type Outcome } from '../../proof/judge.ts'
import { orderRecord } from '../../proof/outcomes.ts'
import type { Order } from '../../src/models.ts'

/**
 * The original service's checkout, kept in test code only to prove that the
 * invariant checker catches it. It reads the stock without a lock, decides
 * in TypeScript, then writes back the stock it computed in a separate
 * statement: two buyers who both read "5 left" both write "4 left", and both
 * get an order. `between` runs after the read and before the write, so a
 * test can line every buyer up at that point and make the race certain.
 * It needs the owner's pool: waitress_api cannot write a table.
 */
export async function unsafeCheckout(owner: Sql, cartId: number, between: () => Promise<void> = async () => {}): Promise<Outcome> {
  const lines = await owner<
    { cart_item_id: number; product_id: number; name: string; quantity: number; stock: number; price: number; weight: number; seller_id: number; user_id: number }[]
  >`
    select ci.id as cart_item_id, p.id as product_id, p.name, ci.quantity, p.stock, p.price, p.weight, p.seller_id, c.user_id
      from waitress.cart_items ci
      join waitress.products p on p.id = ci.product_id
      join waitress.carts c on c.id = ci.cart_id
     where ci.cart_id = ${cartId} and not ci.purchased
     order by ci.id`
  if (lines.length === 0) return { kind: 'refused', status: 422, code: 'WA006', message: `cart ${cartId} has nothing to order` }
  const short = lines.filter((line) => line.quantity > line.stock)
  if (short.length > 0)
    return {
      kind: 'refused',
      status: 422,
      code: 'WA004',
      message: 'insufficient stock',
      details: { shortages: short.map((l) => ({ product_id: l.product_id, name: l.name, requested: l.quantity, available: l.stock })) },
    }

  await between()

  const documents = await owner.begin(async (tx) => {
    for (const line of lines) await tx`update waitress.products set stock = ${line.stock - line.quantity} where id = ${line.product_id}`
    await tx`update waitress.cart_items set purchased = true where id = any (${lines.map((l) => l.cart_item_id)}::bigint[])`
    const orders: Order[] = []
    for (const sellerId of [...new Set(lines.map((l) => l.seller_id))].sort((a, b) => a - b)) {
      const mine = lines.filter((l) => l.seller_id === sellerId)
      const [{ id }] = await tx<{ id: number }[]>`
        insert into waitress.orders (buyer_id, seller_id, total_price)
        values (${mine[0].user_id}, ${sellerId}, ${mine.reduce((sum, l) => sum + l.price * l.quantity, 0)})
        returning id`
      for (const l of mine)
        await tx`
          insert into waitress.order_items (order_id, product_id, cart_item_id, quantity, price, weight)
          values (${id}, ${l.product_id}, ${l.cart_item_id}, ${l.quantity}, ${l.price}, ${l.weight})`
      const [{ order }] = await tx<{ order: Order }[]>`select waitress.order_json(o) as order from waitress.orders o where o.id = ${id}`
      orders.push(order)
    }
    return orders
  })
  return { kind: 'accepted', status: 201, orders: documents.map(orderRecord) }
}
