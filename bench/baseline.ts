/**
 * The baseline (c): the original service's checkout, a transaction driven
 * from the application in several round trips, kept here for the benchmark
 * only. Stock is read under `FOR UPDATE` and checked in the app, then each
 * write is its own statement:
 *
 *   BEGIN
 *   SELECT … FROM products WHERE id = ANY(…) ORDER BY id FOR UPDATE   -- lock, read stock and prices
 *   (the app checks: for sale, enough stock)
 *   UPDATE products SET stock = stock - q WHERE id = …                -- one per line
 *   INSERT INTO orders … RETURNING id
 *   INSERT INTO order_items …                                         -- all lines, one statement
 *   UPDATE cart_items SET purchased = true WHERE id = ANY(…)
 *   INSERT INTO stock_movements …                                     -- the sales, so the audit stays empty
 *   COMMIT
 *
 * That is 7 + (number of lines) round trips where place_order needs one. It
 * locks the products in id order (the original did not always, and could
 * deadlock on multi-product carts; this baseline is the fair version). It runs
 * as the owner: waitress_api cannot write tables.
 */
import type { Sql } from '../src/db/client'
import type { Buyer, Outcome } from './types'

/** A refusal decided in the application, with the SQLSTATE place_order would raise. */
export class AppRefusal extends Error {
  constructor(
    readonly code: string,
    message: string,
  ) {
    super(message)
  }
}

interface LockedProduct {
  id: number
  stock: number
  price: number
  weight: number
  seller_id: number
  active: boolean
}

export async function baselineCheckout(sql: Sql, buyer: Buyer): Promise<Outcome> {
  // Every bench line is 1 unit; a real cart would carry its quantities.
  const quantity = 1
  await sql.begin(async (tx) => {
    const products = await tx<LockedProduct[]>`
      select id, stock, price, weight, seller_id, active
        from waitress.products
       where id = any (${buyer.productIds}::bigint[])
       order by id
         for update`
    if (products.length !== new Set(buyer.productIds).size) throw new AppRefusal('WA002', 'product not found')
    for (const product of products) {
      if (!product.active || product.price === 0) throw new AppRefusal('WA003', `product ${product.id} is not for sale`)
      if (product.stock < quantity) throw new AppRefusal('WA004', `insufficient stock for product ${product.id}`)
    }
    const sellers = new Set(products.map((product) => product.seller_id))
    if (sellers.size !== 1) throw new AppRefusal('WA007', 'the items belong to several sellers')

    for (const product of products)
      await tx`update waitress.products set stock = stock - ${quantity} where id = ${product.id}`

    const total = products.reduce((sum, product) => sum + product.price * quantity, 0)
    const [order] = await tx<{ id: number }[]>`
      insert into waitress.orders (buyer_id, seller_id, total_price)
      values (${buyer.buyerId}, ${products[0].seller_id}, ${total})
      returning id`

    const byId = new Map(products.map((product) => [product.id, product]))
    const lines = buyer.itemIds.map((itemId, index) => ({ itemId, product: byId.get(buyer.productIds[index])! }))
    await tx`
      insert into waitress.order_items (order_id, product_id, cart_item_id, quantity, price, weight)
      select ${order.id}, l.product_id, l.cart_item_id, ${quantity}, l.price, l.weight
        from unnest(${lines.map((l) => l.product.id)}::bigint[], ${lines.map((l) => l.itemId)}::bigint[],
                    ${lines.map((l) => l.product.price)}::bigint[], ${lines.map((l) => l.product.weight)}::int[])
             as l(product_id, cart_item_id, price, weight)`

    const bought = await tx`
      update waitress.cart_items set purchased = true
       where id = any (${buyer.itemIds}::bigint[]) and cart_id = ${buyer.cartId} and not purchased`
    if (bought.count !== buyer.itemIds.length) throw new AppRefusal('WA005', 'a cart item is not open')

    await tx`
      insert into waitress.stock_movements (product_id, quantity, reason, order_id)
      select product_id, ${-quantity}, 'sale', ${order.id}
        from unnest(${lines.map((l) => l.product.id)}::bigint[]) as l(product_id)`
  })
  return { ok: true, units: buyer.itemIds.length * quantity }
}
