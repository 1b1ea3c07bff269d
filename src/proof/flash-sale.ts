import { createSql } from '../db/client'
import { fetchFacts } from './api-facts'
import { mapConcurrent } from './concurrency'
import { deadlockCount, judge, outcomeOfHttp, readFacts, type Checkout, type Run, type Verdict } from './invariants'

export interface FlashSaleOptions {
  /** The service, e.g. http://127.0.0.1:8080. */
  baseUrl: string
  buyers: number
  products: number
  /** Initial stock of every product. */
  stock: number
  /** Each cart line asks for 1 to maxQty units. */
  maxQty: number
  /** Carts of 2 to 4 products (in random order) instead of one. */
  multi: boolean
  /** Checkouts in flight at once. */
  concurrency: number
  /** Seeds the carts' contents, so a run can be replayed. */
  seed: number
  /** The service's database, for a complete verdict; without it the verdict reads the API. */
  databaseUrl?: string
}

export interface SaleProduct {
  id: number
  name: string
  sellerId: number
  price: number
}

/** Updated in place while the sale runs, for a live display. */
export interface Progress {
  phase: 'setup' | 'race' | 'verdict' | 'done'
  done: number
  total: number
  accepted: number
  refused: number
  failed: number
  /** performance.now() when the phase started. */
  since: number
}

export interface FlashSaleResult {
  options: FlashSaleOptions
  products: SaleProduct[]
  checkouts: Checkout[]
  /** Milliseconds per checkout request, in the order of `checkouts`. */
  latencies: number[]
  cartLines: number
  setupMs: number
  raceMs: number
  verdict: Verdict
}

const SELLERS = 3
const SETUP_CONCURRENCY = 32

/** A small seeded PRNG (mulberry32): the same seed gives the same carts. */
export function seededRandom(seed: number) {
  let state = seed >>> 0
  const next = () => {
    state = (state + 0x6d2b79f5) >>> 0
    let t = state
    t = Math.imul(t ^ (t >>> 15), t | 1)
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61)
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296
  }
  const int = (min: number, max: number) => min + Math.floor(next() * (max - min + 1))
  const shuffle = <T>(items: readonly T[]) => {
    const copy = [...items]
    for (let i = copy.length - 1; i > 0; i--) {
      const j = int(0, i)
      ;[copy[i], copy[j]] = [copy[j], copy[i]]
    }
    return copy
  }
  return { next, int, shuffle }
}

/** What each buyer puts in the cart: product index → quantity, in the order added. */
export function plannedCarts(options: Pick<FlashSaleOptions, 'buyers' | 'products' | 'stock' | 'maxQty' | 'multi' | 'seed'>): [number, number][][] {
  const random = seededRandom(options.seed)
  const indexes = Array.from({ length: options.products }, (_, i) => i)
  const most = Math.max(1, Math.min(options.maxQty, options.stock)) // a line above the stock is refused when added
  return Array.from({ length: options.buyers }, () => {
    const count = options.multi ? random.int(Math.min(2, options.products), Math.min(4, options.products)) : 1
    return random
      .shuffle(indexes)
      .slice(0, count)
      .map((index) => [index, random.int(1, most)] as [number, number])
  })
}

class SetupError extends Error {}

async function call(baseUrl: string, method: string, path: string, body?: unknown): Promise<any> {
  const response = await fetch(`${baseUrl}${path}`, {
    method,
    headers: body === undefined ? {} : { 'content-type': 'application/json' },
    body: body === undefined ? undefined : JSON.stringify(body),
  })
  const json: any = await response.json().catch(() => undefined)
  if (response.status >= 300) throw new SetupError(`${method} ${path} answered ${response.status}: ${json?.error ?? JSON.stringify(json)}`)
  return json.data
}

/**
 * A flash sale against a running service: creates the products and every
 * buyer's cart through the API, releases the checkouts at once (at most
 * `concurrency` in flight), then reads the outcome back and asks the
 * invariant checker for its verdict.
 */
export async function runFlashSale(
  options: FlashSaleOptions,
  progress: Progress = newProgress(),
  onPhaseDone: (phase: Readonly<Progress>) => void = () => {},
): Promise<FlashSaleResult> {
  const { baseUrl } = options
  const setupStarted = performance.now()
  Object.assign(progress, { phase: 'setup', done: 0, total: options.buyers, since: setupStarted })

  const random = seededRandom(options.seed ^ 0x5eed)
  const products: SaleProduct[] = []
  const initialStock = new Map<number, number>()
  for (let i = 0; i < options.products; i++) {
    const product = await call(baseUrl, 'POST', '/products', {
      name: `Flash sale item ${i + 1}`,
      seller_id: 1 + (i % SELLERS),
      price: random.int(2, 200) * 500,
      stock: options.stock,
      weight: 250,
    })
    products.push({ id: product.id, name: product.name, sellerId: product.seller_id, price: product.price })
    initialStock.set(product.id, product.stock)
  }

  // Fresh user ids (15 digits at most, as the API takes them), so every cart starts empty.
  const firstUser = (Date.now() % 1_000_000_000) * 100_000 + 1
  const plans = plannedCarts(options)
  let cartLines = 0
  const buyers = await mapConcurrent(plans, SETUP_CONCURRENCY, async (plan, i) => {
    const userId = firstUser + i
    const cart = await call(baseUrl, 'GET', `/carts?user_id=${userId}`)
    if (cart.items.length > 0) throw new SetupError(`user ${userId} already has a cart with items; run again`)
    for (const [index, quantity] of plan) await call(baseUrl, 'POST', '/carts/items', { cart_id: cart.id, product_id: products[index].id, quantity })
    cartLines += plan.length
    progress.done++
    return { cartId: cart.id as number, userId, wants: new Map(plan.map(([index, quantity]) => [products[index].id, quantity])) }
  })
  const setupMs = performance.now() - setupStarted
  onPhaseDone({ ...progress })

  const sql = options.databaseUrl ? createSql(options.databaseUrl, { max: 2 }) : undefined
  try {
    const deadlocksBefore = sql ? await deadlockCount(sql) : undefined

    const latencies = new Array<number>(buyers.length)
    const raceStarted = performance.now()
    Object.assign(progress, { phase: 'race', done: 0, total: buyers.length, since: raceStarted })
    const checkouts = await mapConcurrent(buyers, options.concurrency, async (buyer, i): Promise<Checkout> => {
      const started = performance.now()
      let status = 0
      let body: unknown
      try {
        const response = await fetch(`${baseUrl}/carts/${buyer.cartId}/checkout`, { method: 'POST' })
        status = response.status
        body = await response.json().catch(() => ({ error: 'the body is not JSON' }))
      } catch (error) {
        body = { error: String(error) }
      }
      latencies[i] = performance.now() - started
      const outcome = outcomeOfHttp(status, body)
      progress.done++
      progress[outcome.kind]++
      return { cartId: buyer.cartId, buyerId: buyer.userId, wants: buyer.wants, outcome }
    })
    const raceMs = performance.now() - raceStarted
    onPhaseDone({ ...progress })

    Object.assign(progress, { phase: 'verdict', since: performance.now() })
    const run: Run = { initialStock, checkouts, deadlocksBefore }
    const facts = sql ? await readFacts(sql, run) : await fetchFacts(baseUrl, run)
    const verdict = judge(run, facts)
    onPhaseDone({ ...progress })
    progress.phase = 'done'
    return { options, products, checkouts, latencies, cartLines, setupMs, raceMs, verdict }
  } finally {
    await sql?.end({ timeout: 5 })
  }
}

export const newProgress = (): Progress => ({ phase: 'setup', done: 0, total: 0, accepted: 0, refused: 0, failed: 0, since: performance.now() })

/** The p-th percentile (nearest rank) of some numbers. */
export function percentile(values: readonly number[], p: number): number {
  if (values.length === 0) return NaN
  const sorted = [...values].sort((a, b) => a - b)
  return sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1))]
}

export { SetupError }
