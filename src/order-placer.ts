import postgres from 'postgres'
import type { Sql } from './db/client.ts'
import { DatabaseUnreachableError } from './db/failover.ts'
import { DatabaseBusyError } from './db/gate.ts'
import type { Order, Placed } from './models.ts'

/** One checkout, as api.place_orders takes it: a cart (or a buyer's cart), all its open items or some. */
export interface PlaceRequest {
  cart_id?: number
  buyer_id?: number
  item_ids: number[] | null
  note: string | null
  /** POST /orders: the items must belong to one seller (else WA007). */
  one_seller: boolean
  /** The authenticated user; the cart must be theirs (else WA001, as if it did not exist). */
  user_id?: number | null
}

type Outcome =
  | { orders: Order[]; replayed?: boolean }
  | { error: { code: string; message: string; detail?: unknown; hint?: string } }

/** Type oids of the checkout calls' parameters (pg_type): int8 and text. */
const INT8 = 20
const TEXT = 25

/** A checkout the database refused in a batch: mapped to HTTP like any PostgresError. */
export class Refused extends postgres.PostgresError {}

/** The code of a checkout whose outcome is unknown: the call was sent and the database went away before the answer. */
export const OUTCOME_UNKNOWN = 'WA103'

/** A checkout naming more items than this is bulky: it goes in a lane of its own. */
export const BULKY_ITEMS = 10

/** After each bulky call the bulky lane rests this many times as long as the call took: bulky checkouts get at most a quarter of one connection's time. */
export const BULKY_REST = 3

interface Lane {
  queue: Waiting[]
  inFlight: number
  max: number
  /** Rest after each call, in multiples of its duration (0: none). */
  rest: number
  /** No call before this time (on the placer's clock). */
  readyAt: number
  wake?: ReturnType<typeof setTimeout>
}

export interface OrderPlacerOptions {
  /**
   * Coalescing at all (default true): only where a process outlives its
   * requests. Under workerd it is off: a batch would settle other requests'
   * promises; every checkout is then its own call, sent at once.
   */
  coalesce?: boolean
  /** Most checkouts in one api.place_orders call. */
  maxBatch?: number
  /**
   * Checkout calls of this process running at once. A checkout that arrives
   * while this many are in the database waits, and every checkout that
   * waited goes in the next call, as one batch.
   */
  callsInFlight?: number
  /** Longest a checkout waits for a call slot; then it is refused with 503 (DatabaseBusyError queue_timeout), as the pool's gate does. */
  maxWaitMs?: number
  /** Milliseconds, monotonic (default performance.now): tests drive it. */
  clock?: () => number
}

/** What an OrderPlacer reports as it goes (metrics). */
export interface OrderPlacerEvents {
  placed(orders: number): void
  refused(code: string): void
  batched(size: number): void
}

const ignore: OrderPlacerEvents = { placed() {}, refused() {}, batched() {} }

interface Waiting {
  request: PlaceRequest
  key: string | null
  resolve: (placed: Placed) => void
  reject: (error: unknown) => void
  timer?: ReturnType<typeof setTimeout>
}

/**
 * Places orders through the checkout functions, coalescing by itself when
 * checkouts queue: no switch to flip before a sale.
 *
 * While fewer than `callsInFlight` checkout calls are in the database, a
 * checkout is sent at once, alone (api.place_order / api.place_buyer_order):
 * an idle or lightly loaded service adds no latency. When that many are in
 * flight, new checkouts wait, and the next free slot sends every one that
 * waited (up to maxBatch) as one api.place_orders call: a crowd on a hot
 * product costs one queue turn, one row lock and one commit per batch
 * instead of per buyer. Each buyer still gets their own orders or their own
 * refusal, decided in arrival order, and an Idempotency-Key rides along
 * (recorded in the batch's transaction).
 *
 * A checkout that names more than BULKY_ITEMS items has a lane of its own:
 * one call at a time, and after each call a rest BULKY_REST times as long.
 * However many large carts clients loop, they are never batched with
 * everyday checkouts and take at most a quarter of one connection's time.
 *
 * A batch never fails a buyer for another's request: when the call fails
 * for a reason that can be one request's (its data breaks a rule of the
 * schema, it runs into statement_timeout or lock_timeout), the batch is
 * split in two and each half sent again, the first half first, until only
 * the request at fault fails. When the connection breaks after a call was
 * sent, nobody can know whether it committed: its buyers get WA103 (503,
 * "may have been placed") and find out from their orders or by replaying
 * their Idempotency-Key.
 */
export class OrderPlacer {
  /**
   * Two lanes: everyday checkouts, and bulky ones (one call at a time, then a
   * rest), so a large cart is never in a batch of small ones, and however many
   * large carts clients loop, they take at most a quarter of one connection.
   */
  private readonly lanes: { small: Lane; bulky: Lane } = {
    small: { queue: [], inFlight: 0, max: 0, rest: 0, readyAt: 0 },
    bulky: { queue: [], inFlight: 0, max: 1, rest: BULKY_REST, readyAt: 0 },
  }
  private readonly maxBatch: number
  private readonly coalesce: boolean
  private readonly maxWaitMs: number
  private readonly now: () => number
  private calls = 0
  private batches = 0
  private checkouts = 0
  private splits = 0

  constructor(
    private readonly sql: Sql,
    options: OrderPlacerOptions = {},
    private readonly events: OrderPlacerEvents = ignore,
  ) {
    this.maxBatch = options.maxBatch ?? 500
    this.maxWaitMs = options.maxWaitMs ?? 5_000
    this.now = options.clock ?? (() => performance.now())
    this.lanes.small.max = options.callsInFlight ?? 2
    this.coalesce = options.coalesce ?? true
  }

  /** The orders placed (one per seller), or throws the refusal (a PostgresError). */
  async place(request: PlaceRequest, idempotencyKey?: string): Promise<Placed> {
    try {
      const placed = this.coalesce ? await this.queued(request, idempotencyKey ?? null) : await this.alone(request, idempotencyKey ?? null)
      if (!placed.replayed) this.events.placed(placed.orders.length)
      return placed
    } catch (error) {
      if (error instanceof postgres.PostgresError) this.events.refused(error.code)
      throw error
    }
  }

  /** Through a lane: sent at once when a call slot is free, else with everyone who waited, in the next call. */
  private queued(request: PlaceRequest, key: string | null): Promise<Placed> {
    const lane = (request.item_ids?.length ?? 0) > BULKY_ITEMS ? this.lanes.bulky : this.lanes.small
    return new Promise<Placed>((resolve, reject) => {
      const waiting: Waiting = { request, key, resolve, reject }
      lane.queue.push(waiting)
      this.pump(lane)
      // Still waiting for a slot (the calls in flight are slow, or stuck on a database that went away): bounded.
      if (lane.queue[lane.queue.length - 1] === waiting)
        waiting.timer = setTimeout(() => {
          const at = lane.queue.indexOf(waiting)
          if (at < 0) return
          lane.queue.splice(at, 1)
          reject(new DatabaseBusyError('queue_timeout'))
        }, this.maxWaitMs)
    })
  }

  /** Its own call, no queue (workerd: no promise may outlive or cross requests). */
  private async alone(request: PlaceRequest, key: string | null): Promise<Placed> {
    this.calls++
    this.checkouts++
    this.events.batched(1)
    try {
      return placedOrRefused(await this.placeAlone({ request, key, resolve() {}, reject() {} }))
    } catch (error) {
      throw outcomeUnknown(error) ? unknownOutcome(false, error) : error
    }
  }

  /** Calls made, batches among them (two checkouts or more), checkouts placed through them, batches split, checkouts waiting. */
  get batching() {
    const waiting = this.lanes.small.queue.length + this.lanes.bulky.queue.length
    return { calls: this.calls, batches: this.batches, checkouts: this.checkouts, splits: this.splits, waiting }
  }

  private pump(lane: Lane) {
    const now = this.now()
    if (lane.readyAt > now) {
      lane.wake ??= setTimeout(() => {
        lane.wake = undefined
        this.pump(lane)
      }, lane.readyAt - now)
      return
    }
    while (lane.inFlight < lane.max && lane.queue.length > 0) {
      const batch = lane.queue.splice(0, this.maxBatch)
      for (const waiting of batch) clearTimeout(waiting.timer)
      lane.inFlight++
      const started = this.now()
      void this.send(batch, { timeouts: 0, until: started + this.maxWaitMs }).finally(() => {
        lane.inFlight--
        if (lane.rest > 0) lane.readyAt = this.now() + lane.rest * (this.now() - started)
        this.pump(lane)
      })
    }
  }

  /** Sends a batch (or one checkout) and settles each of its buyers; never throws. */
  private async send(batch: Waiting[], budget: SplitBudget): Promise<void> {
    if (budget.gaveUp) {
      // An earlier part of this batch timed out past the budget: the database is slow for everyone, not for a request.
      for (const waiting of batch) waiting.reject(budget.gaveUp)
      return
    }
    this.calls++
    if (batch.length > 1) this.batches++
    this.events.batched(batch.length)
    this.checkouts += batch.length
    let outcomes: Outcome[]
    try {
      outcomes = batch.length === 1 ? [await this.placeAlone(batch[0])] : await this.placeBatch(batch)
    } catch (error) {
      const divisible = batch.length > 1 && splittable(error)
      const split = divisible && (!isTimeout(error) || withinBudget(budget, batch.length, this.now()))
      if (divisible && !split) budget.gaveUp = error
      if (split) {
        // One request's data or time may have sunk the call: halve it, in
        // arrival order (the first half is decided before the second), until
        // only the request at fault fails.
        this.splits++
        const half = Math.ceil(batch.length / 2)
        await this.send(batch.slice(0, half), budget)
        await this.send(batch.slice(half), budget)
        return
      }
      const reported = outcomeUnknown(error) ? unknownOutcome(batch.length > 1, error) : error
      for (const waiting of batch) waiting.reject(reported)
      return
    }
    batch.forEach((waiting, i) => {
      try {
        waiting.resolve(placedOrRefused(outcomes[i]))
      } catch (refusal) {
        waiting.reject(refusal)
      }
    })
  }

  private async placeAlone({ request, key }: Waiting): Promise<Outcome> {
    // A refusal arrives as a PostgresError and is passed to the buyer as is.
    // Every parameter carries its type, so without prepared statements (behind
    // PgBouncer) the call still takes one round trip, not a describe first.
    const sql = this.sql
    const id = (value: number | null | undefined) => (value === null || value === undefined ? null : sql.typed(value, INT8))
    const text = (value: string | null) => (value === null ? null : sql.typed(value, TEXT))
    // As an array literal in text: postgres.js learns the array types only
    // after a new connection's first query has been built.
    const items = request.item_ids === null ? null : text(`{${request.item_ids.join(',')}}`)
    const [row] =
      request.cart_id !== undefined
        ? await sql<{ placed: Placed }[]>`
            select api.place_order(${id(request.cart_id)}, ${items}::bigint[], ${text(request.note)}, ${text(key)},
                                   ${id(request.user_id)}) as placed`
        : await sql<{ placed: Placed }[]>`
            select api.place_buyer_order(${id(request.buyer_id)}, ${items}::bigint[], ${text(request.note)}, ${text(key)}) as placed`
    return row.placed
  }

  private async placeBatch(batch: Waiting[]): Promise<Outcome[]> {
    const requests = batch.map(({ request, key }) => (key === null ? request : { ...request, idempotency_key: key }))
    const [row] = await this.sql<{ outcomes: Outcome[] }[]>`
      select api.place_orders(${this.sql.json(requests as never)}) as outcomes`
    return row.outcomes
  }
}

function placedOrRefused(outcome: Outcome): Placed {
  if ('orders' in outcome) return { orders: outcome.orders, replayed: outcome.replayed ?? false }
  const { code, message, detail, hint } = outcome.error
  throw new Refused({ severity: 'ERROR', code, message, detail: detail === null || detail === undefined ? undefined : JSON.stringify(detail), hint } as never)
}

/** SQLSTATE classes that say the server or the connection failed, whoever was in the batch. */
const WHOLE_CALL = /^(08|53|57P|25006|XX)/

/** Could one request of the batch have caused this? Its data (classes 22, 23, ...), its time (57014, 55P03). */
function splittable(error: unknown): boolean {
  return error instanceof postgres.PostgresError && !WHOLE_CALL.test(error.code)
}

function isTimeout(error: unknown): boolean {
  return error instanceof postgres.PostgresError && (error.code === '57014' || error.code === '55P03')
}

/** What finding the request at fault of a timed-out batch may still spend. */
interface SplitBudget {
  /** Timed-out calls spent so far. */
  timeouts: number
  /** The placer's clock after which a timed-out part is not split again. */
  until: number
  /** The timeout that ended the search: the parts not yet sent get it too, unsent. */
  gaveUp?: unknown
}

/**
 * May a timed-out batch be split again? At most enough timed-out calls for
 * two culprits, and never past the time a checkout may wait for a call
 * slot: when every part times out, the cause is the database (a commit
 * stuck on a lost synchronous standby holds the hot row's lock, say), not
 * a request, and halving it again would only make every buyer wait longer
 * for the same 503: the parts not yet sent get that 503 at once.
 */
function withinBudget(budget: SplitBudget, size: number, now: number): boolean {
  return budget.timeouts++ < 2 * Math.ceil(Math.log2(size)) + 2 && now < budget.until
}

/** Errors after which the checkout may or may not have committed: the call was sent, the answer never came. */
const BROKEN_AFTER_SEND = new Set(['CONNECTION_CLOSED', 'CONNECTION_DESTROYED', 'ECONNRESET', 'EPIPE'])

function outcomeUnknown(error: unknown): boolean {
  if (error instanceof DatabaseUnreachableError) return error.outcomeUnknown
  if (error instanceof DatabaseBusyError) return error.reason === 'query_timeout'
  const code = (error as { code?: unknown } | null)?.code
  return typeof code === 'string' && BROKEN_AFTER_SEND.has(code)
}

/** WA103: the checkout reached the database, which went away before answering; it may have committed. */
function unknownOutcome(batched: boolean, error: unknown): Refused {
  return new Refused({
    severity: 'ERROR',
    code: OUTCOME_UNKNOWN,
    message:
      `the database went away during the checkout${batched ? ' (sent in a batch)' : ''}: it may have been placed; ` +
      `retry with the same Idempotency-Key (${error instanceof Error ? error.message : String(error)})`,
    hint:
      "Find out before retrying: GET /orders?buyer_id=… lists the buyer's orders, each line with its cart_item_id; " +
      'or retry with the same Idempotency-Key, which returns the first order if it was placed.',
  } as never)
}
