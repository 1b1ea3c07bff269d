/**
 * Bench data, written with the owner's connection: products through
 * create_product (so the ledger has their initial stock), and buyers in bulk
 * (a cart each, with open lines), many thousands at a time.
 */
import type { Sql } from '../src/db/client'
import type { Buyer } from './types'

/** Every bench product belongs to this seller, so a multi-line cart is one order. */
export const BENCH_SELLER_ID = 7_070_707
/** Enough that no cell ever runs a product out of stock. */
export const BENCH_STOCK = 1_000_000_000

/** The first user id of a benchmark buyer. */
export const BENCH_USER_BASE = 8_000_000_000_000
const PRICE = 1_000
const WEIGHT = 100

export async function createBenchProducts(sql: Sql, names: string[]): Promise<number[]> {
  const ids: number[] = []
  for (const name of names) {
    const [product] = await sql<{ id: number }[]>`
      select (api.create_product(${name}, ${BENCH_SELLER_ID}, ${PRICE}, ${BENCH_STOCK}, ${WEIGHT})->>'id')::bigint as id`
    ids.push(product.id)
  }
  return ids
}

/** One line of one of the products, chosen at random. */
export const oneOf = (productIds: number[]) => [productIds[Math.floor(Math.random() * productIds.length)]]

/** A line of every product, in order: the largest cart. */
export const allOf = (productIds: number[]) => [...productIds]

/** 1 product: every cart has one line of it. Several: 2 to all of them, each once, in random order. */
export function cartLines(productIds: number[], random: () => number = Math.random): number[] {
  if (productIds.length === 1) return [...productIds]
  const count = 2 + Math.floor(random() * (productIds.length - 1))
  const shuffled = [...productIds]
  for (let i = shuffled.length - 1; i > 0; i--) {
    const j = Math.floor(random() * (i + 1))
    ;[shuffled[i], shuffled[j]] = [shuffled[j], shuffled[i]]
  }
  return shuffled.slice(0, count)
}

/**
 * Buyers with ready carts for one set of products. A cell takes the next
 * buyers in order; those it used (bought or refused) are never handed out
 * again; the rest wait for the next cell.
 */
export class BuyerPool {
  private buyers: Buyer[] = []
  private cursor = 0

  constructor(
    private readonly sql: Sql,
    readonly productIds: number[],
    /** The products of one buyer's cart lines, in the order they are added. */
    private readonly pick: (productIds: number[]) => number[] = cartLines,
  ) {}

  get available(): number {
    return this.buyers.length - this.cursor
  }

  /** Makes sure `count` unused buyers are ready; creates at least `batch` at a time. */
  async ensure(count: number, batch = 20_000): Promise<void> {
    const missing = count - this.available
    if (missing > 0) await this.add(Math.max(missing, batch))
  }

  /** The next `count` unused buyers (they stay unused until consume). */
  peek(count: number): Buyer[] {
    return this.buyers.slice(this.cursor, this.cursor + count)
  }

  consume(count: number): void {
    this.cursor = Math.min(this.buyers.length, this.cursor + count)
  }

  private async add(count: number): Promise<void> {
    const sql = this.sql
    this.buyers = this.buyers.slice(this.cursor)
    this.cursor = 0
    // Benchmark buyers have ids of their own, far above any a test or a person uses.
    const [{ last }] = await sql<{ last: number }[]>`
      select coalesce(max(user_id), ${BENCH_USER_BASE - 1})::bigint as last from waitress.carts where user_id >= ${BENCH_USER_BASE}`
    const carts = await sql<{ id: number; user_id: number }[]>`
      insert into waitress.carts (user_id)
      select g from generate_series(${last + 1}::bigint, ${last + count}::bigint) g
      order by g
      returning id, user_id`
    const lineCart: number[] = []
    const lineProduct: number[] = []
    for (const cart of carts) {
      for (const productId of this.pick(this.productIds)) {
        lineCart.push(cart.id)
        lineProduct.push(productId)
      }
    }
    const items = await sql<{ id: number; cart_id: number; product_id: number }[]>`
      insert into waitress.cart_items (cart_id, product_id, quantity)
      select l.cart_id, l.product_id, 1
        from unnest(${lineCart}::bigint[], ${lineProduct}::bigint[]) with ordinality as l(cart_id, product_id, n)
       order by l.n
      returning id, cart_id, product_id`
    const byCart = new Map<number, Buyer>()
    for (const cart of carts) byCart.set(cart.id, { buyerId: cart.user_id, cartId: cart.id, itemIds: [], productIds: [] })
    // Cart item ids follow the insert order, which is the order the lines were "added".
    for (const item of [...items].sort((a, b) => a.id - b.id)) {
      const buyer = byCart.get(item.cart_id)!
      buyer.itemIds.push(item.id)
      buyer.productIds.push(item.product_id)
    }
    for (const buyer of byCart.values()) this.buyers.push(buyer)
  }
}
