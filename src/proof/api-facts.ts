import { mapConcurrent } from './concurrency'
import { orderRecord, type CartItemFact, type Facts, type OrderRecord, type ProductFact, type Run } from './invariants'

/**
 * Reads the facts of a run through the public HTTP API, for when only the
 * service's URL is known: the run's products, every order a client was told
 * about, and the open items of each cart whose buyer is known. Weaker than
 * readFacts: an order nobody was told about is invisible here, and shows only
 * as stock unaccounted for.
 */
export async function fetchFacts(baseUrl: string, run: Run, options: { concurrency?: number } = {}): Promise<Facts> {
  const concurrency = options.concurrency ?? 16
  const get = async (path: string) => {
    const response = await fetch(`${baseUrl}${path}`)
    const body: any = await response.json().catch(() => undefined)
    if (response.status === 404) return undefined
    if (response.status !== 200) throw new Error(`GET ${path} answered ${response.status}: ${JSON.stringify(body)}`)
    return body.data
  }

  const products = new Map<number, ProductFact>()
  await mapConcurrent([...run.initialStock.keys()], concurrency, async (id) => {
    const product = await get(`/products/${id}`)
    if (product) products.set(id, { stock: product.stock, price: product.price, active: product.active, sellerId: product.seller_id })
  })

  const orders = new Map<number, OrderRecord>()
  const reportedIds = [...new Set(run.checkouts.flatMap((c) => (c.outcome.kind === 'accepted' ? c.outcome.orders.map((o) => o.id) : [])))]
  await mapConcurrent(reportedIds, concurrency, async (id) => {
    const order = await get(`/orders/${id}`)
    if (order) orders.set(id, orderRecord(order))
  })

  const cartItems = new Map<number, CartItemFact>()
  const carts = new Set<number>()
  const buyers = new Map(run.checkouts.filter((c) => c.buyerId !== undefined).map((c) => [c.cartId, c.buyerId!]))
  await mapConcurrent([...buyers], concurrency, async ([cartId, buyerId]) => {
    const cart = await get(`/carts?user_id=${buyerId}`)
    if (cart?.id !== cartId) return
    carts.add(cartId)
    for (const item of cart.items)
      cartItems.set(item.id, { id: item.id, cartId, productId: item.product.id, quantity: item.quantity, purchased: item.purchased })
  })

  return { source: 'api', products, orders, cartItems, carts, openItemsOnly: true }
}
