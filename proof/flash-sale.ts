import { createSql } from '../src/db/client.ts'
import { fetchFacts } from './api-facts.ts'
import { openContract, type Authorize } from './auth.ts'
import { mapConcurrent } from './concurrency.ts'
import { deadlockCount, readFacts, serviceMetrics } from './database-facts.ts'
import { judge, type Attempt, type Run, type Verdict } from './judge.ts'
import { outcomeOfHttp } from './outcomes.ts'

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
  /** Share (0 to 1) of accepted buyers who cancel at once, half of them after paying: their stock must come back. */
  cancelRate?: number
  /**
   * Buyers who neither cancel nor pay leave their orders pending, and after
   * the race the run waits, at most this long (ms), until the service's
   * expiry timer has expired every one of them (0: everyone else pays at
   * once). With databaseUrl, the orders left pending are first made overdue
   * in the database (created a day ago): the service's next run takes them,
   * whatever its ORDER_PAYMENT_TTL, while the orders buyers pay are never at
   * risk of expiring first. Without it, the service's own deadline applies.
   */
  expireWithinMs?: number
  /** Restocks of random products, by their sellers, during the race. */
  restocks?: number
  /** The service's database, for a complete verdict; without it the verdict reads the API. */
  databaseUrl?: string
  /**
   * Ends the sessions that served the race once it is over (stops the
   * service, ends pools), so that PostgreSQL publishes their statistics
   * before the verdict reads its deadlock counter. Without it the verdict
   * reads the counter at once and notes that it may lag (see deadlockCount).
   */
  publishStatistics?: () => Promise<void>
  /** Headers for a request on behalf of a user: bearer tokens when the service has AUTH_JWT_SECRET. */
  authorize?: Authorize
  /**
   * Answer "busy, retry shortly" as the API asks its clients to: a 503, a 409
   * WA102 (the same key still in progress) or no answer is sent again after
   * its Retry-After, for at most this long (ms) per call. Every checkout,
   * payment and cancellation then carries an Idempotency-Key, so one sent
   * again takes effect at most once; a cart line sent again is first read
   * back; a restock (no key) is never sent again. A 503 that tells of a
   * deadlock (40P01) or a serialization failure (40001) is never sent again:
   * the verdict must see it. 0 (the default): each call is sent once, and a
   * call besides the checkouts that fails ends the run.
   */
  retryBusyWithinMs?: number
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
  checkouts: Attempt[]
  /** Milliseconds per checkout request, in the order of `checkouts`. */
  latencies: number[]
  cartLines: number
  setupMs: number
  raceMs: number
  verdict: Verdict
  /** Checkout calls during the race and the checkouts they carried, from the service's /metrics. */
  batches?: { count: number; checkouts: number }
  /** What accepted buyers did next: cancelled, paid then cancelled, paid, left pending to expire (and how many of those the service expired in time). */
  lifecycle: { cancelled: number; paidThenCancelled: number; paid: number; leftPending: number; expired: number }
  /**
   * Calls sent again after a busy answer (see retryBusyWithinMs): checkouts,
   * and the other calls (the setup, payments, cancellations); `replayed`
   * checkouts had been placed before their answer was lost, and were
   * answered from their Idempotency-Key.
   */
  resent: { checkouts: number; calls: number; replayed: number }
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

/** Never sent again: a deadlock or serialization failure must reach the verdict. */
const NEVER_RESENT = new Set(['40P01', '40001'])

/** A busy answer a client should send again after Retry-After (status 0: no answer at all). */
export function isBusy(status: number, body: any): boolean {
  if (status === 0) return true
  if (status === 503) return !NEVER_RESENT.has(body?.code)
  return status === 409 && body?.code === 'WA102'
}

/** How long to wait before sending again: Retry-After (seconds), at least 50 ms, within what is left of the budget. */
export function pauseBefore(retryAfter: string | null, leftMs: number): number {
  const seconds = Number(retryAfter)
  const asked = Number.isFinite(seconds) && seconds > 0 ? seconds * 1000 : 100
  return Math.max(0, Math.min(Math.max(asked, 50) * (0.75 + Math.random() / 2), leftMs))
}

interface Reply {
  status: number
  body: any
  retryAfter: string | null
  replayed?: boolean
}

/** One request; status 0 and the error as the body when no answer came. */
async function send(url: string, init: RequestInit): Promise<Reply> {
  try {
    const response = await fetch(url, init)
    const body = await response.json().catch(() => ({ error: 'the body is not JSON' }))
    return {
      status: response.status,
      body,
      retryAfter: response.headers.get('retry-after'),
      replayed: response.headers.get('idempotent-replayed') === 'true',
    }
  } catch (error) {
    return { status: 0, body: { error: String(error) }, retryAfter: null }
  }
}

/**
 * send(), and again after each busy answer until withinMs have passed (0: once).
 * `landed` is asked before each resend whether the call took effect after all;
 * what it returns, if anything, is then the answer's data.
 */
async function sendUntilNotBusy(
  url: string,
  init: RequestInit,
  withinMs: number,
  onResend: () => void,
  landed?: () => Promise<unknown>,
): Promise<Reply> {
  const deadline = performance.now() + withinMs
  for (;;) {
    const reply = await send(url, init)
    const left = deadline - performance.now()
    if (!isBusy(reply.status, reply.body) || left <= 0) return reply
    await Bun.sleep(pauseBefore(reply.retryAfter, left))
    const data = await landed?.()
    if (data !== undefined) return { status: 200, body: { data }, retryAfter: null }
    onResend()
  }
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
  const authorize = options.authorize ?? openContract
  // Fresh user ids (15 digits at most, as the API takes them), so every cart starts empty; they also make the run's Idempotency-Keys its own.
  const firstUser = (Date.now() % 1_000_000_000) * 100_000 + 1
  const retryWithinMs = options.retryBusyWithinMs ?? 0
  const resent = { checkouts: 0, calls: 0, replayed: 0 }
  /**
   * A call besides the checkouts; a busy answer is sent again (retryBusyWithinMs)
   * only when that is safe: a read, a call with an Idempotency-Key (`key`),
   * or one whose effect can be read back first (`landed`); a new product too
   * (a lost first answer leaves at most an unsold product behind). `once`:
   * never sent again.
   */
  const call = async (
    asUser: number,
    method: string,
    path: string,
    body?: unknown,
    how: { key?: string; landed?: () => Promise<unknown>; once?: boolean } = {},
  ): Promise<any> => {
    const { key, landed, once } = how
    const headers: Record<string, string> = { ...(await authorize(asUser)) }
    if (body !== undefined) headers['content-type'] = 'application/json'
    if (key && retryWithinMs > 0) headers['idempotency-key'] = `flash-sale-${firstUser}-${key}`
    const init = { method, headers, body: body === undefined ? undefined : JSON.stringify(body) }
    const reply = await sendUntilNotBusy(`${baseUrl}${path}`, init, once ? 0 : retryWithinMs, () => resent.calls++, landed)
    if (reply.status < 200 || reply.status >= 300)
      throw new SetupError(`${method} ${path} answered ${reply.status}: ${reply.body?.error ?? JSON.stringify(reply.body)}`)
    return reply.body.data
  }

  const setupStarted = performance.now()
  Object.assign(progress, { phase: 'setup', done: 0, total: options.buyers, since: setupStarted })

  const random = seededRandom(options.seed ^ 0x5eed)
  const products: SaleProduct[] = []
  const initialStock = new Map<number, number>()
  for (let i = 0; i < options.products; i++) {
    const sellerId = 1 + (i % SELLERS)
    const product = await call(sellerId, 'POST', '/products', {
      name: `Flash sale item ${i + 1}`,
      seller_id: sellerId,
      price: random.int(2, 200) * 500,
      stock: options.stock,
      weight: 250,
    })
    products.push({ id: product.id, name: product.name, sellerId: product.seller_id, price: product.price })
    initialStock.set(product.id, product.stock)
  }

  const plans = plannedCarts(options)
  let cartLines = 0
  const buyers = await mapConcurrent(plans, SETUP_CONCURRENCY, async (plan, i) => {
    const userId = firstUser + i
    const cart = await call(userId, 'GET', `/carts?user_id=${userId}`)
    if (cart.items.length > 0) throw new SetupError(`user ${userId} already has a cart with items; run again`)
    // The cart starts empty and holds one line per product: a line with this product is this add.
    const lineOf = (productId: number) => async () =>
      (await call(userId, 'GET', `/carts?user_id=${userId}`)).items.find((item: { product: { id: number } }) => item.product.id === productId)
    for (const [index, quantity] of plan)
      await call(userId, 'POST', '/carts/items', { cart_id: cart.id, product_id: products[index].id, quantity }, { landed: lineOf(products[index].id) })
    cartLines += plan.length
    progress.done++
    return { cartId: cart.id as number, userId, wants: new Map(plan.map(([index, quantity]) => [products[index].id, quantity])) }
  })

  // The service coalesces checkouts by itself when they queue: its /metrics say how.
  const batchesSoFar = () => batchMetrics(baseUrl, authorize, products[0].sellerId)
  const setupMs = performance.now() - setupStarted
  onPhaseDone({ ...progress })

  // One connection: the session that lists the others is the one that reads the counter.
  const sql = options.databaseUrl ? createSql(options.databaseUrl, { max: 1 }) : undefined
  try {
    // Read before the race, a count that lags can only make the race look worse.
    const before = sql ? await deadlockCount(sql, { flush: false }) : undefined
    // The service's own count of statements it ran again (a deadlock it retried never reaches a client).
    const counters = serviceMetrics(baseUrl, () => authorize(products[0].sellerId))
    const retriesBefore = await counters.retries().catch(() => undefined)
    const batchesBefore = await batchesSoFar()

    const latencies = new Array<number>(buyers.length)
    const cancelRate = options.cancelRate ?? 0
    const lifecycle = { cancelled: 0, paidThenCancelled: 0, paid: 0, leftPending: 0, expired: 0 }
    const pendingOrders: { orderId: number; buyerId: number }[] = []
    // After a checkout: cancel (some after paying), pay, or leave pending for the payment deadline.
    const afterCheckout = async (userId: number, orders: { id: number }[]) => {
      const roll = random.next()
      for (const order of orders) {
        if (roll < cancelRate / 2) {
          await call(userId, 'POST', `/orders/${order.id}/cancel`, undefined, { key: `cancel-${order.id}` })
          lifecycle.cancelled++
        } else if (roll < cancelRate) {
          await call(userId, 'POST', `/orders/${order.id}/pay`, undefined, { key: `pay-${order.id}` })
          await call(userId, 'POST', `/orders/${order.id}/cancel`, undefined, { key: `cancel-${order.id}` })
          lifecycle.paidThenCancelled++
        } else if (options.expireWithinMs && roll < cancelRate + (1 - cancelRate) / 2) {
          lifecycle.leftPending++
          pendingOrders.push({ orderId: order.id, buyerId: userId })
        } else if (cancelRate > 0 || options.expireWithinMs) {
          await call(userId, 'POST', `/orders/${order.id}/pay`, undefined, { key: `pay-${order.id}` })
          lifecycle.paid++
        }
      }
    }
    const stockAdjustments = new Map<number, number[]>()
    let racing = true
    const restocking = (async () => {
      for (let i = 0; i < (options.restocks ?? 0) && racing; i++) {
        const product = products[random.int(0, products.length - 1)]
        const quantity = random.int(1, 5)
        // Sent once: a restock takes no Idempotency-Key, so one sent again might be counted twice.
        await call(product.sellerId, 'POST', `/products/${product.id}/restock`, { quantity, note: 'simulated restock' }, { once: true })
        stockAdjustments.set(product.id, [...(stockAdjustments.get(product.id) ?? []), quantity])
        await Bun.sleep(10) // spread over the race, not a wait for anything
      }
    })()
    const raceStarted = performance.now()
    Object.assign(progress, { phase: 'race', done: 0, total: buyers.length, since: raceStarted })
    // If the race fails, the restocks stop and end before the failure is told (not after, masking it).
    const race = mapConcurrent(buyers, options.concurrency, async (buyer, i): Promise<Attempt> => {
      const headers: Record<string, string> = { ...(await authorize(buyer.userId)) }
      // Unique per buyer and run: a checkout sent again is answered with its first outcome.
      if (retryWithinMs > 0) headers['idempotency-key'] = `flash-sale-${firstUser}-${buyer.cartId}`
      const started = performance.now()
      const { status, body, replayed } = await sendUntilNotBusy(`${baseUrl}/carts/${buyer.cartId}/checkout`, { method: 'POST', headers }, retryWithinMs, () => resent.checkouts++)
      latencies[i] = performance.now() - started
      if (replayed) resent.replayed++
      const outcome = outcomeOfHttp(status, body)
      progress.done++
      progress[outcome.kind]++
      if (outcome.kind === 'accepted') await afterCheckout(buyer.userId, outcome.orders)
      return { cartId: buyer.cartId, buyerId: buyer.userId, wants: buyer.wants, outcome }
    })
    const checkouts = await race.finally(async () => {
      racing = false
      await restocking.catch(() => {})
    })
    await restocking
    const raceMs = performance.now() - raceStarted
    onPhaseDone({ ...progress })

    const batchesAfter = await batchesSoFar()
    const batches =
      batchesBefore && batchesAfter
        ? { count: batchesAfter.count - batchesBefore.count, checkouts: batchesAfter.checkouts - batchesBefore.checkouts }
        : undefined

    Object.assign(progress, { phase: 'verdict', since: performance.now() })
    // Orders left pending expire once overdue and the service's timer has
    // run: wait for that, order by order, at most expireWithinMs.
    if (options.expireWithinMs && sql)
      await sql`update waitress.orders set created_at = now() - interval '1 day' where id = any (${pendingOrders.map((o) => o.orderId)}::bigint[]) and state = 'pending'`
    if (options.expireWithinMs) lifecycle.expired = await expiredWithin(pendingOrders, options.expireWithinMs, call)
    const run: Run = { initialStock, checkouts, deadlocksBefore: before?.deadlocks, statsEpoch: before?.epoch, retriesBefore, stockAdjustments }
    const service = retriesBefore ? counters : undefined
    const publish = options.publishStatistics
    const facts = sql ? await readFacts(sql, run, { service, publish, flush: publish !== undefined }) : { ...(await fetchFacts(baseUrl, run, { authorize })), retries: await service?.retries() }
    const verdict = judge(run, facts)
    onPhaseDone({ ...progress })
    progress.phase = 'done'
    return { options, products, checkouts, latencies, cartLines, setupMs, raceMs, verdict, batches, lifecycle, resent }
  } finally {
    await sql?.end({ timeout: 5 })
  }
}

/** How many of these pending orders the service has expired, waiting until all have or `withinMs` has passed. */
async function expiredWithin(
  orders: { orderId: number; buyerId: number }[],
  withinMs: number,
  call: (asUser: number, method: string, path: string) => Promise<any>,
): Promise<number> {
  const deadline = performance.now() + withinMs
  const expired = new Set<number>()
  for (;;) {
    for (const { orderId, buyerId } of orders)
      if (!expired.has(orderId) && (await call(buyerId, 'GET', `/orders/${orderId}`)).state === 'expired') expired.add(orderId)
    if (expired.size === orders.length || performance.now() > deadline) return expired.size
    await Bun.sleep(100)
  }
}

/** The service's place_orders() batches so far (its Prometheus histogram), or undefined when it serves none. */
async function batchMetrics(baseUrl: string, authorize: Authorize, asUser: number): Promise<{ count: number; checkouts: number } | undefined> {
  const response = await fetch(`${baseUrl}/metrics`, { headers: await authorize(asUser) }).catch(() => undefined)
  if (!response?.ok) return undefined
  const text = await response.text()
  const value = (name: string) => Number(new RegExp(`^${name}(?:\\{[^}]*\\})? (\\S+)$`, 'm').exec(text)?.[1] ?? NaN)
  const count = value('waitress_checkout_batch_size_count')
  const checkouts = value('waitress_checkout_batch_size_sum')
  return Number.isFinite(count) && Number.isFinite(checkouts) ? { count, checkouts } : undefined
}

export const newProgress = (): Progress => ({ phase: 'setup', done: 0, total: 0, accepted: 0, refused: 0, failed: 0, since: performance.now() })

/** The p-th percentile (nearest rank) of some numbers. */
export function percentile(values: readonly number[], p: number): number {
  if (values.length === 0) return NaN
  const sorted = [...values].sort((a, b) => a - b)
  return sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1))]
}

export { SetupError }
