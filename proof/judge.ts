
/**
 * The invariant checker's judge: the one place that decides whether a race
 * went right. Pure: it reads nothing; database-facts.ts and api-facts.ts
 * gather the facts, outcomes.ts turns what clients were told into outcomes. Tests, the adversarial suite and `npm run simulate` all hand it what
 * a run started with and what every client was told; it reads the database
 * (or, from outside, the API) and returns a verdict listing every violation.
 *
 *   const start = await startRun(sql, productIds)
 *   ... race, collecting { cartId, wants, outcome } per client ...
 *   const verdict = await checkInvariants(sql, { ...start, checkouts })
 *   if (!verdict.ok) console.log(verdict.violations)
 *
 * Each invariant is one entry of INVARIANTS; adding a check is adding an entry.
 */

// ---------------------------------------------------------------- what a run is

/** One line of an order, as a client was told it or as the database holds it. */
export interface OrderLine {
  cartItemId: number
  productId: number
  quantity: number
  /** Unit price as sold. */
  price: number
}

export interface OrderRecord {
  id: number
  buyerId: number
  sellerId: number
  state: string
  totalPrice: number
  /** Sorted by cart item id. */
  lines: OrderLine[]
}

/** What one client was told. `status` is the HTTP status, or its equivalent for a SQL caller (0: no answer). */
export type Outcome =
  | { kind: 'accepted'; status: number; orders: OrderRecord[] }
  /** A definite refusal (4xx): the request must have changed nothing. */
  | { kind: 'refused'; status: number; code?: string; message: string; details?: any }
  /** 5xx, a transient database error or no answer at all: never acceptable in a race. */
  | { kind: 'failed'; status: number; code?: string; message: string }

/**
 * Statements a service ran again after PostgreSQL refused them with a
 * deadlock (40P01) or a serialization failure (40001): its
 * waitress_db_retries_total. A retry that succeeds hides the failure from
 * the client, so the checker asks the service.
 */
export interface RetryCounts {
  deadlocks: number
  serializationFailures: number
}

export interface Attempt {
  /** The cart checked out. Several clients may check out one cart. */
  cartId: number
  /** The cart's owner, when known: the orders must be in their name. */
  buyerId?: number
  /**
   * What this client asked to buy: product id → quantity. Leave it out when
   * the cart was being edited during the race; the orders' lines are then
   * checked against the cart items they point at.
   */
  wants?: ReadonlyMap<number, number>
  outcome: Outcome
}

export interface Run {
  /** Stock of every product in play before any buyer was released. */
  initialStock: ReadonlyMap<number, number>
  checkouts: readonly Attempt[]
  /** Stock edits made during the run by something other than a checkout: product id → each delta applied. */
  stockAdjustments?: ReadonlyMap<number, readonly number[]>
  /** Refusal codes this run may produce; any other refusal is a violation. Default: only WA004 (insufficient stock). */
  expectedRefusals?: readonly string[]
  /** PostgreSQL's deadlock counter for the database before the run, read once every session's statistics were flushed (see startRun). */
  deadlocksBefore?: number
  /**
   * When the server that counted `deadlocksBefore` started: a restart in
   * between makes the counters incomparable (an immediate shutdown discards
   * them).
   */
  statsEpoch?: string
  /** The service's own count of statements it ran again, before the run (see ServiceCounters); absent without a service. */
  retriesBefore?: RetryCounts
  /**
   * The run injected faults (dropped connections, a restart, a slow network):
   * a failed outcome is indefinite, the checkout may or may not have taken
   * effect. Then a 503 or no answer is no violation, and an order no client
   * was told about is allowed when every client of its cart got such a
   * failure and the cart's orders sold exactly its items. A 500, a deadlock
   * or a serialization failure is still a violation.
   */
  indefinite?: boolean
}

// ---------------------------------------------------------------- what the database holds

export interface ProductFact {
  stock: number
  price: number
  active: boolean
  sellerId: number
}

export interface CartItemFact {
  id: number
  cartId: number
  productId: number
  quantity: number
  purchased: boolean
}

/** The state after a run, as far as the reader could see it. */
export interface Facts {
  /** database: read with SQL, complete; api: read through the public HTTP API, partial. */
  source: 'database' | 'api'
  products: Map<number, ProductFact>
  /** database: every order touching the run's products or carts; api: only the orders clients reported. */
  orders: Map<number, OrderRecord>
  /** Items of the carts in `carts` (and of orders' lines, from the database). */
  cartItems: Map<number, CartItemFact>
  /** Carts whose items were read. */
  carts: Set<number>
  /** true when only open (unpurchased) items could be read. */
  openItemsOnly: boolean
  /** PostgreSQL's deadlock counter for the database after the run. */
  deadlocks?: number
  /** When the server that counted `deadlocks` started (see Run.statsEpoch). */
  statsEpoch?: string
  /** Why `deadlocks` may lag behind (other sessions' statistics were not flushed before reading it), if so. */
  deadlocksUnflushed?: string
  /** The service's retries so far (see RetryCounts); absent without a service. */
  retries?: RetryCounts
  /** What inventory_audit() says about the run's products (it must say nothing); unknown when it could not be read. */
  audit?: AuditRow[]
}

/** A row of inventory_audit(): a product whose stock disagrees with its ledger or its live orders. */
export interface AuditRow {
  productId: number
  stock: number
  /** Sum of the product's stock movements. */
  ledgerStock: number
  /** Units out to orders per the ledger (sales less releases). */
  soldInLedger: number
  /** Units in the lines of its live orders. */
  soldInOrders: number
}

/**
 * Order states whose stock went back to the shelf: an order that dies before
 * delivery (cancelled, expired, rejected) gives its stock back exactly once
 * (release_order_stock), and a refunded order is one of those, later. Every
 * other state holds what it bought. "Sold" everywhere below follows this set,
 * as inventory_audit()'s live orders do.
 */
export const RELEASED_STATES: ReadonlySet<string> = new Set(['cancelled', 'expired', 'rejected', 'refunded'])

/** Whether an order's lines count as sold (taken off the shelf). */
export const holdsStock = (order: OrderRecord) => !RELEASED_STATES.has(order.state)

// ---------------------------------------------------------------- the verdict

export interface Violation {
  /** The invariant broken: an INVARIANTS name. */
  invariant: string
  message: string
  productId?: number
  cartId?: number
  orderId?: number
}

export interface ProductTally {
  productId: number
  initial: number
  /** Net stock edits during the run (not sales). */
  adjusted: number
  /** Quantity in orders that hold stock. */
  sold: number
  remaining: number
  /** Checkouts that bought this product. */
  accepted: number
  /**
   * Refused checkouts that wanted this product, by reason: the refusal's code
   * when it named this product, 'other line' when another line was refused.
   */
  refused: Record<string, number>
}

export interface Verdict {
  ok: boolean
  violations: Violation[]
  /** Names of the invariants checked. */
  checked: string[]
  products: ProductTally[]
  source: Facts['source']
  /**
   * Deadlocks PostgreSQL detected in the database during the run, read after
   * every session's statistics were flushed; undefined when they could not be
   * counted (see notes).
   */
  deadlocks?: number
  /** Statements the service ran again during the run; undefined when no service's counters were read. */
  retries?: RetryCounts
  /** What this verdict could not see. */
  notes: string[]
}

// ---------------------------------------------------------------- the invariants

/** Everything a check may look at, with the sums worked out once. */
export interface Evidence {
  run: Run
  facts: Facts
  expectedRefusals: ReadonlySet<string>
  /** Product id → quantity in orders that hold stock. */
  sold: Map<number, number>
  /** Product id → net stock edits, and the sum of the increases alone. */
  adjusted: Map<number, number>
  increased: Map<number, number>
  /** Product id → quantity given back by orders that died (cancelled, expired, rejected). */
  released: Map<number, number>
  /** Cart id → the checkouts of that cart. */
  byCart: Map<number, Attempt[]>
  /** Order id → the checkouts that were told about it. */
  reported: Map<number, Attempt[]>
  /** Deadlocks during the run per PostgreSQL, or why they could not be counted. */
  deadlocks: { count: number } | { unknown: string }
  /** Retries the service made during the run, when its counters were read before and after. */
  retries?: RetryCounts
}

export interface Invariant {
  name: string
  /** One sentence: what must hold. */
  says: string
  check(evidence: Evidence, violate: (message: string, refs?: Omit<Violation, 'invariant' | 'message'>) => void): void
}

const sumBy = <T>(items: Iterable<T>, key: (item: T) => number, value: (item: T) => number) => {
  const sums = new Map<number, number>()
  for (const item of items) sums.set(key(item), (sums.get(key(item)) ?? 0) + value(item))
  return sums
}

const sameQuantities = (a: ReadonlyMap<number, number>, b: ReadonlyMap<number, number>) =>
  a.size === b.size && [...a].every(([id, quantity]) => b.get(id) === quantity)

const show = (quantities: ReadonlyMap<number, number>) =>
  `{${[...quantities].sort(([a], [b]) => a - b).map(([id, q]) => `#${id}×${q}`).join(', ')}}`

const describeOutcome = (outcome: Outcome) =>
  `${outcome.status || 'no answer'}${'code' in outcome && outcome.code ? ` ${outcome.code}` : ''}`

/** A failure after which the client cannot know whether its checkout committed: a 503 or no answer. */
const isIndefinite = (outcome: Outcome) =>
  outcome.kind === 'failed' && (outcome.status === 503 || outcome.status === 0) && outcome.code !== '40P01' && outcome.code !== '40001'

const linesEqual = (a: OrderLine[], b: OrderLine[]) =>
  a.length === b.length &&
  a.every((line, i) => {
    const other = b[i]
    return line.cartItemId === other.cartItemId && line.productId === other.productId && line.quantity === other.quantity && line.price === other.price
  })

/** The product ids a refusal names (WA004 shortages, WA003 product_ids). */
function namedProducts(outcome: Extract<Outcome, { kind: 'refused' }>): number[] {
  const details = outcome.details
  if (Array.isArray(details?.shortages)) return details.shortages.map((s: { product_id: number }) => s.product_id)
  if (Array.isArray(details?.product_ids)) return details.product_ids
  return []
}

export const INVARIANTS: readonly Invariant[] = [
  {
    name: 'no-failures',
    says: 'no 5xx, deadlock (40P01), serialization failure (40001) or lost request reached a client',
    check({ run }, violate) {
      for (const { cartId, outcome } of run.checkouts) {
        if (outcome.kind !== 'failed' || (run.indefinite && isIndefinite(outcome))) continue
        const what =
          outcome.code === '40P01'
            ? 'a deadlock (40P01)'
            : outcome.code === '40001'
              ? 'a serialization failure (40001)'
              : outcome.status === 0
                ? 'no answer'
                : `a ${outcome.status}${outcome.code ? ` (${outcome.code})` : ''}`
        violate(`checkout of cart ${cartId} got ${what}: ${outcome.message}`, { cartId })
      }
    },
  },
  {
    name: 'refusal-expected',
    says: 'every refusal is one this run can legitimately produce',
    check({ run, expectedRefusals }, violate) {
      for (const { cartId, outcome } of run.checkouts)
        if (outcome.kind === 'refused' && !expectedRefusals.has(outcome.code ?? ''))
          violate(`checkout of cart ${cartId} was refused with ${describeOutcome(outcome)} (${outcome.message}), which this run does not expect`, {
            cartId,
          })
    },
  },
  {
    name: 'stock-nonnegative',
    says: "no product's stock is negative",
    check({ run, facts }, violate) {
      for (const productId of run.initialStock.keys()) {
        const product = facts.products.get(productId)
        if (!product) violate(`product ${productId} is gone`, { productId })
        else if (product.stock < 0) violate(`product ${productId} has stock ${product.stock}`, { productId })
      }
    },
  },
  {
    name: 'stock-conserved',
    says: 'per product: initial stock + edits = current stock + quantity sold in orders',
    check({ run, facts, sold, adjusted }, violate) {
      for (const [productId, initial] of run.initialStock) {
        const product = facts.products.get(productId)
        if (!product) continue
        const edits = adjusted.get(productId) ?? 0
        const soldQuantity = sold.get(productId) ?? 0
        const gap = initial + edits - product.stock - soldQuantity
        if (gap !== 0)
          violate(
            `product ${productId}: started with ${initial}${edits ? ` (${edits > 0 ? '+' : ''}${edits} edited)` : ''}, ` +
              `has ${product.stock} and sold ${soldQuantity}: ${gap < 0 ? `${-gap} more than it had` : `${gap} missing`}`,
            { productId },
          )
      }
    },
  },
  {
    name: 'accepted-persisted',
    says: 'every acceptance is exactly the persisted orders, with exactly the lines asked for',
    check({ run, facts, reported }, violate) {
      for (const [orderId, clients] of reported)
        if (clients.length > 1)
          violate(`order ${orderId} was reported to ${clients.length} clients (carts ${clients.map((c) => c.cartId).join(', ')})`, { orderId })

      for (const { cartId, buyerId, wants, outcome } of run.checkouts) {
        if (outcome.kind !== 'accepted') continue
        if (outcome.orders.length === 0) violate(`checkout of cart ${cartId} was accepted with no order`, { cartId })
        const bought = new Map<number, number>()
        for (const told of outcome.orders) {
          const stored = facts.orders.get(told.id)
          if (!stored) {
            violate(`order ${told.id}, accepted for cart ${cartId}, is not in the database`, { cartId, orderId: told.id })
            continue
          }
          if (stored.buyerId !== told.buyerId || stored.sellerId !== told.sellerId || stored.totalPrice !== told.totalPrice || !linesEqual(stored.lines, told.lines))
            violate(`order ${told.id} as stored differs from what cart ${cartId}'s client was told: ${JSON.stringify({ told, stored })}`, {
              cartId,
              orderId: told.id,
            })
          if (buyerId !== undefined && stored.buyerId !== buyerId)
            violate(`order ${told.id} is in the name of buyer ${stored.buyerId}, not cart ${cartId}'s owner ${buyerId}`, { cartId, orderId: told.id })
          const total = stored.lines.reduce((sum, line) => sum + line.price * line.quantity, 0)
          if (stored.lines.length === 0 || total !== stored.totalPrice)
            violate(`order ${told.id} has total ${stored.totalPrice} but its ${stored.lines.length} lines add up to ${total}`, { orderId: told.id })
          for (const line of stored.lines) {
            bought.set(line.productId, (bought.get(line.productId) ?? 0) + line.quantity)
            const item = facts.cartItems.get(line.cartItemId)
            if (!item) {
              // Read through the API, only open items show: a sold one is rightly missing.
              if (!facts.openItemsOnly) violate(`order ${told.id} sold cart item ${line.cartItemId}, which does not exist`, { orderId: told.id })
            } else if (item.cartId !== cartId || item.productId !== line.productId || item.quantity !== line.quantity || !item.purchased)
              violate(
                `order ${told.id} sold cart item ${line.cartItemId} as product ${line.productId} ×${line.quantity} for cart ${cartId}, ` +
                  `but that item is product ${item.productId} ×${item.quantity} of cart ${item.cartId}${item.purchased ? '' : ', still open'}`,
                { cartId, orderId: told.id },
              )
          }
        }
        if (wants && !sameQuantities(bought, wants))
          violate(`cart ${cartId} asked for ${show(wants)} and was sold ${show(bought)}`, { cartId })
      }
    },
  },
  {
    name: 'refusal-left-nothing',
    says: 'a refused checkout changed nothing: nothing of its cart was sold, nothing of it was lost',
    check({ facts, byCart }, violate) {
      const ordersOfCart = new Map<number, Set<number>>()
      for (const order of facts.orders.values())
        for (const line of order.lines) {
          const cartId = facts.cartItems.get(line.cartItemId)?.cartId
          if (cartId !== undefined) ordersOfCart.set(cartId, (ordersOfCart.get(cartId) ?? new Set()).add(order.id))
        }
      for (const [cartId, clients] of byCart) {
        if (clients.some((c) => c.outcome.kind !== 'refused')) continue
        for (const orderId of ordersOfCart.get(cartId) ?? [])
          violate(`every checkout of cart ${cartId} was refused, yet order ${orderId} sold its items`, { cartId, orderId })
        if (!facts.carts.has(cartId)) continue
        const items = [...facts.cartItems.values()].filter((item) => item.cartId === cartId)
        for (const item of items.filter((item) => item.purchased))
          violate(`every checkout of cart ${cartId} was refused, yet its item ${item.id} is marked purchased`, { cartId })
        const wants = clients.length === 1 ? clients[0].wants : undefined
        if (wants) {
          const open = sumBy(
            items.filter((item) => !item.purchased),
            (item) => item.productId,
            (item) => item.quantity,
          )
          if (!sameQuantities(open, wants))
            violate(`cart ${cartId} was refused; it held ${show(wants)} and now holds ${show(open)}`, { cartId })
        }
      }
    },
  },
  {
    name: 'no-unreported-orders',
    says: 'no order exists that no client was told about (with faults: unless its cart got only indefinite failures and the order is whole)',
    check({ run, facts, reported, byCart }, violate) {
      const unreported = [...facts.orders.values()].filter((order) => !reported.has(order.id))
      // With faults, a checkout whose client got no definite answer may have
      // committed: its orders are allowed if together they sold exactly its cart.
      const excused = new Set<number>()
      if (run.indefinite) {
        const ordersOfCart = new Map<number, OrderRecord[]>()
        for (const order of unreported) {
          const carts = new Set(order.lines.map((line) => facts.cartItems.get(line.cartItemId)?.cartId))
          const [cartId] = carts
          if (carts.size !== 1 || cartId === undefined) continue
          ordersOfCart.set(cartId, [...(ordersOfCart.get(cartId) ?? []), order])
        }
        for (const [cartId, orders] of ordersOfCart) {
          const clients = byCart.get(cartId) ?? []
          if (clients.length === 0 || !clients.every((c) => isIndefinite(c.outcome))) continue
          const lines = orders.flatMap((order) => order.lines)
          // The cart's items, less any sold before the run in an order of their own.
          const soldElsewhere = new Set(
            [...facts.orders.values()].filter((o) => !orders.includes(o)).flatMap((o) => o.lines.map((l) => l.cartItemId)),
          )
          const items = [...facts.cartItems.values()].filter((item) => item.cartId === cartId && !soldElsewhere.has(item.id))
          const whole =
            lines.length === items.length &&
            items.every(
              (item) =>
                item.purchased && lines.some((l) => l.cartItemId === item.id && l.productId === item.productId && l.quantity === item.quantity),
            ) &&
            clients.every(({ wants, buyerId }) => {
              const bought = sumBy(lines, (l) => l.productId, (l) => l.quantity)
              return (!wants || sameQuantities(bought, wants)) && (buyerId === undefined || orders.every((o) => o.buyerId === buyerId))
            })
          if (whole) for (const order of orders) excused.add(order.id)
          else
            violate(`orders ${orders.map((o) => o.id).join(', ')} sold part of cart ${cartId}, whose checkout got no definite answer: a partial order`, {
              cartId,
              orderId: orders[0].id,
            })
        }
      }
      for (const order of unreported)
        if (!excused.has(order.id))
          violate(`order ${order.id} (buyer ${order.buyerId}, products ${order.lines.map((l) => l.productId).join(', ')}) exists but no client was told about it`, {
            orderId: order.id,
          })
    },
  },
  {
    name: 'cart-item-sold-once',
    says: 'each cart item is in at most one order',
    check({ facts, run }, violate) {
      const soldIn = new Map<number, Set<number>>()
      const note = (cartItemId: number, orderId: number) => soldIn.set(cartItemId, (soldIn.get(cartItemId) ?? new Set()).add(orderId))
      for (const order of facts.orders.values()) for (const line of order.lines) note(line.cartItemId, order.id)
      for (const { outcome } of run.checkouts)
        if (outcome.kind === 'accepted') for (const order of outcome.orders) for (const line of order.lines) note(line.cartItemId, order.id)
      for (const [cartItemId, orders] of soldIn)
        if (orders.size > 1) violate(`cart item ${cartItemId} was sold in ${orders.size} orders: ${[...orders].join(', ')}`)
    },
  },
  {
    name: 'refusal-true',
    says: 'a buyer refused for stock wanted more than what remained (less what came back since)',
    check({ run, facts, increased, released }, violate) {
      for (const { cartId, wants, outcome } of run.checkouts) {
        if (outcome.kind !== 'refused' || outcome.code !== 'WA004') continue
        const shortages = outcome.details?.shortages
        if (!Array.isArray(shortages) || shortages.length === 0) {
          violate(`cart ${cartId} was refused for stock without saying which product was short`, { cartId })
          continue
        }
        for (const { product_id: productId, requested, available } of shortages as { product_id: number; requested: number; available: number }[]) {
          if (!(requested > available))
            violate(`cart ${cartId} was refused for product ${productId}: requested ${requested}, yet ${available} were available`, { cartId, productId })
          if (wants && wants.get(productId) !== requested)
            violate(`cart ${cartId} was refused for ${requested} of product ${productId} but asked for ${wants.get(productId) ?? 0}`, { cartId, productId })
          // Stock only falls during a run, except by edits and by orders that
          // gave theirs back: what is left now, less those, is at most what
          // was left at the refusal.
          const remaining = facts.products.get(productId)?.stock
          const cameBack = (increased.get(productId) ?? 0) + (released.get(productId) ?? 0)
          if (remaining !== undefined && run.initialStock.has(productId) && !(requested > remaining - cameBack))
            violate(`cart ${cartId} was refused ${requested} of product ${productId}, but ${remaining} are still left: a false refusal`, {
              cartId,
              productId,
            })
        }
      }
    },
  },
  {
    name: 'ledger-balanced',
    says: "the stock ledger accounts for every unit: inventory_audit() lists none of the run's products",
    check({ run, facts }, violate) {
      for (const row of facts.audit ?? [])
        if (run.initialStock.has(row.productId))
          violate(
            `inventory_audit() lists product ${row.productId}: stock ${row.stock}, ledger says ${row.ledgerStock}; ` +
              `sold ${row.soldInLedger} per the ledger, ${row.soldInOrders} in live orders`,
            { productId: row.productId },
          )
    },
  },
  {
    name: 'no-deadlocks',
    says: 'PostgreSQL detected no deadlock during the run, not even one the service retried and so hid from its client',
    check({ run, facts, deadlocks, retries }, violate) {
      if ('count' in deadlocks && deadlocks.count > 0) violate(`PostgreSQL detected ${deadlocks.count} deadlocks during the run`)
      // Strict (no fault injected): a count that cannot be compared is no proof of none.
      if ('unknown' in deadlocks && facts.source === 'database' && !run.indefinite)
        violate(`PostgreSQL's deadlock counter could not be compared across the run: ${deadlocks.unknown}`)
      if (retries && retries.deadlocks > 0)
        violate(`the service ran ${retries.deadlocks} statements again after a deadlock (40P01): its clients never heard of them`)
    },
  },
  {
    name: 'no-serialization-failures',
    says: 'no statement failed with a serialization failure (40001) during the run, not even one the service retried',
    check({ retries }, violate) {
      if (retries && retries.serializationFailures > 0)
        violate(`the service ran ${retries.serializationFailures} statements again after a serialization failure (40001): its clients never heard of them`)
    },
  },
]

/** Judges a run against the facts read after it. Pure: no I/O. */
export function judge(run: Run, facts: Facts, invariants: readonly Invariant[] = INVARIANTS): Verdict {
  const byCart = new Map<number, Attempt[]>()
  const reported = new Map<number, Attempt[]>()
  for (const checkout of run.checkouts) {
    byCart.set(checkout.cartId, [...(byCart.get(checkout.cartId) ?? []), checkout])
    if (checkout.outcome.kind === 'accepted')
      for (const order of checkout.outcome.orders) reported.set(order.id, [...(reported.get(order.id) ?? []), checkout])
  }
  const edits = [...(run.stockAdjustments ?? [])].flatMap(([productId, deltas]) => deltas.map((delta) => ({ productId, delta })))
  const deadlocks = deadlocksDuring(run, facts)
  const retries =
    run.retriesBefore && facts.retries
      ? {
          deadlocks: facts.retries.deadlocks - run.retriesBefore.deadlocks,
          serializationFailures: facts.retries.serializationFailures - run.retriesBefore.serializationFailures,
        }
      : undefined
  const evidence: Evidence = {
    run,
    facts,
    expectedRefusals: new Set(run.expectedRefusals ?? ['WA004']),
    sold: sumBy(
      [...facts.orders.values()].filter(holdsStock).flatMap((order) => order.lines),
      (line) => line.productId,
      (line) => line.quantity,
    ),
    adjusted: sumBy(edits, (e) => e.productId, (e) => e.delta),
    increased: sumBy(edits, (e) => e.productId, (e) => Math.max(e.delta, 0)),
    released: sumBy(
      [...facts.orders.values()].filter((order) => !holdsStock(order)).flatMap((order) => order.lines),
      (line) => line.productId,
      (line) => line.quantity,
    ),
    byCart,
    reported,
    deadlocks,
    retries,
  }

  const violations: Violation[] = []
  for (const invariant of invariants)
    invariant.check(evidence, (message, refs = {}) => violations.push({ invariant: invariant.name, message, ...refs }))

  const notes: string[] = []
  if (facts.source === 'api')
    notes.push(
      'read through the API: an order no client was told about shows only as stock unaccounted for, ' +
        'and the deadlock counter was not read',
    )
  else if ('unknown' in deadlocks && run.indefinite) notes.push(`deadlocks not counted: ${deadlocks.unknown}`)
  if (facts.deadlocksUnflushed && 'count' in deadlocks) notes.push(`the deadlock count may lag: ${facts.deadlocksUnflushed}`)
  if (facts.source === 'database' && facts.audit === undefined) notes.push('inventory_audit() was not read')
  return {
    ok: violations.length === 0,
    violations,
    checked: invariants.map((invariant) => invariant.name),
    products: tally(evidence),
    source: facts.source,
    deadlocks: 'count' in deadlocks ? deadlocks.count : undefined,
    retries,
    notes,
  }
}

/** PostgreSQL's deadlocks during the run, when the counter was read before and after on the same server life. */
function deadlocksDuring(run: Run, facts: Facts): Evidence['deadlocks'] {
  if (facts.source === 'api') return { unknown: 'read through the API' }
  if (run.deadlocksBefore === undefined) return { unknown: 'it was not read before the run (startRun does)' }
  if (facts.deadlocks === undefined) return { unknown: 'it was not read after the run' }
  if (run.statsEpoch !== facts.statsEpoch)
    return { unknown: `PostgreSQL restarted during the run (started ${run.statsEpoch ?? '?'}, then ${facts.statsEpoch ?? '?'}), which may discard its statistics` }
  if (facts.deadlocks < run.deadlocksBefore) return { unknown: `it went down from ${run.deadlocksBefore} to ${facts.deadlocks} (statistics reset)` }
  return { count: facts.deadlocks - run.deadlocksBefore }
}

function tally({ run, facts, sold, adjusted }: Evidence): ProductTally[] {
  return [...run.initialStock].map(([productId, initial]) => {
    let accepted = 0
    const refused: Record<string, number> = {}
    for (const { wants, outcome } of run.checkouts) {
      if (outcome.kind === 'accepted') {
        if (outcome.orders.some((order) => order.lines.some((line) => line.productId === productId))) accepted++
      } else if (outcome.kind === 'refused') {
        const reason = namedProducts(outcome).includes(productId) ? (outcome.code ?? `HTTP ${outcome.status}`) : wants?.has(productId) ? 'other line' : undefined
        if (reason) refused[reason] = (refused[reason] ?? 0) + 1
      }
    }
    return {
      productId,
      initial,
      adjusted: adjusted.get(productId) ?? 0,
      sold: sold.get(productId) ?? 0,
      remaining: facts.products.get(productId)?.stock ?? NaN,
      accepted,
      refused,
    }
  })
}
