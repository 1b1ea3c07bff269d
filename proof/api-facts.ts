import { openContract, type Authorize } from './auth.ts'
import { mapConcurrent } from './concurrency.ts'
import type { CartItemFact, Facts, OrderRecord, ProductFact, Run } from './judge.ts'
import { auditRow, orderRecord } from './outcomes.ts'

/**
 * Reads the facts of a run through the public HTTP API, for when only the
 * service's URL is known: the run's products, every order a client was told
 * about, the open items of each cart whose buyer is known, and the inventory
 * audit. Weaker than readFacts: an order nobody was told about is invisible
 * here, and shows only as stock unaccounted for. With authentication on, each
 * read is made as the user it belongs to (`authorize`).
 */
export async function fetchFacts(baseUrl: string, run: Run, options: { concurrency?: number; authorize?: Authorize } = {}): Promise<Facts> {
  const concurrency = options.concurrency ?? 16
  const authorize = options.authorize ?? openContract
  const get = async (path: string, asUser?: number) => {
    const response = await fetch(`${baseUrl}${path}`, { headers: asUser === undefined ? {} : await authorize(asUser) })
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
  const reported = new Map<number, number | undefined>()
  for (const c of run.checkouts) if (c.outcome.kind === 'accepted') for (const o of c.outcome.orders) reported.set(o.id, c.buyerId)
  await mapConcurrent([...reported], concurrency, async ([id, buyerId]) => {
    const order = await get(`/orders/${id}`, buyerId)
    if (order) orders.set(id, orderRecord(order))
  })

  const cartItems = new Map<number, CartItemFact>()
  const carts = new Set<number>()
  const buyers = new Map(run.checkouts.filter((c) => c.buyerId !== undefined).map((c) => [c.cartId, c.buyerId!]))
  await mapConcurrent([...buyers], concurrency, async ([cartId, buyerId]) => {
    const cart = await get(`/carts?user_id=${buyerId}`, buyerId)
    if (cart?.id !== cartId) return
    carts.add(cartId)
    for (const item of cart.items)
      cartItems.set(item.id, { id: item.id, cartId, productId: item.product.id, quantity: item.quantity, purchased: item.purchased })
  })

  // A service without the ledger (or that hides the audit) has no audit to read.
  const someone = [...buyers.values()][0]
  const audit = await get('/inventory/audit', someone).catch(() => undefined)

  return {
    source: 'api',
    products,
    orders,
    cartItems,
    carts,
    openItemsOnly: true,
    audit: Array.isArray(audit) ? audit.map(auditRow) : undefined,
  }
}
