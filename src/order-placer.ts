import postgres from 'postgres'
import type { Sql } from './db/client.ts'
import { DatabaseUnreachableError } from './db/failover.ts'
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

type Outcome = { orders: Order[] } | { error: { code: string; message: string; detail?: unknown; hint?: string } }

/** A checkout the database refused in a batch: mapped to HTTP like any PostgresError. */
export class Refused extends postgres.PostgresError {}

export interface OrderPlacerOptions {
  /** How long the answer to "is any product in flash-sale mode?" is reused. */
  flashSaleCheckEveryMs?: number
  /** Most checkouts in one api.place_orders call. */
  maxBatch?: number
  /** api.place_orders calls of this process running at once. */
  batchesInFlight?: number
  /**
   * Coalescing at all (default true): only where a process outlives its
   * requests. Under workerd it is off: a batch would settle other requests'
   * promises, and the flash-sale answer would be a promise shared across
   * requests; every checkout is then its own call.
   */
  coalesce?: boolean
  /** The clock of the flash-sale check, in milliseconds (default performance.now); tests move it by hand. */
  now?: () => number
}

/** What an OrderPlacer reports as it goes (metrics). */
export interface OrderPlacerEvents {
  placed(orders: number): void
  refused(code: string): void
  batched(size: number): void
}

const ignore: OrderPlacerEvents = { placed() {}, refused() {}, batched() {} }

/**
 * Places orders through the checkout functions. Normally each request is its
 * own call (api.place_order, api.place_buyer_order). While any product is in
 * flash-sale mode, concurrent checkouts without an Idempotency-Key are
 * coalesced: while a batch is in the database, new ones queue, and the next
 * api.place_orders call takes them all (up to maxBatch), so a crowd on a hot
 * product costs one row lock and one commit per batch instead of per buyer.
 * Each buyer still gets their own orders or their own refusal, decided in
 * arrival order. An idle service sends a lone checkout at once.
 */
export class OrderPlacer {
  private readonly flashSale: FlashSaleSwitch
  private readonly batcher: Batcher
  private readonly coalesce: boolean

  constructor(
    private readonly sql: Sql,
    options: OrderPlacerOptions = {},
    private readonly events: OrderPlacerEvents = ignore,
  ) {
    this.coalesce = options.coalesce ?? true
    this.flashSale = new FlashSaleSwitch(sql, options.flashSaleCheckEveryMs ?? 1_000, options.now ?? (() => performance.now()))
    this.batcher = new Batcher(sql, options.maxBatch ?? 500, options.batchesInFlight ?? 2, events)
  }

  /** The orders placed (one per seller), or throws the refusal (a PostgresError). */
  async place(request: PlaceRequest, idempotencyKey?: string): Promise<Placed> {
    try {
      const placed =
        idempotencyKey === undefined && this.coalesce && (await this.flashSale.active())
          ? await this.batcher.submit(request)
          : await placeAlone(this.sql, request, idempotencyKey ?? null)
      if (!placed.replayed) this.events.placed(placed.orders.length)
      return placed
    } catch (error) {
      if (error instanceof DatabaseUnreachableError && error.outcomeUnknown) throw mayHaveBeenPlaced(error)
      if (error instanceof postgres.PostgresError) this.events.refused(error.code)
      throw error
    }
  }

  get batching() {
    return this.batcher.stats
  }
}

async function placeAlone(sql: Sql, request: PlaceRequest, key: string | null): Promise<Placed> {
  const [row] =
    request.cart_id !== undefined
      ? await sql<{ placed: Placed }[]>`
          select api.place_order(${request.cart_id}, ${request.item_ids}::bigint[], ${request.note}, ${key},
                                 ${request.user_id ?? null}) as placed`
      : await sql<{ placed: Placed }[]>`
          select api.place_buyer_order(${request.buyer_id ?? null}, ${request.item_ids}::bigint[], ${request.note}, ${key}) as placed`
  return row.placed
}

/** WA103: the checkout reached the database, which went away before answering; it may have committed. */
function mayHaveBeenPlaced(error: DatabaseUnreachableError): Refused {
  return new Refused({
    severity: 'ERROR',
    code: 'WA103',
    message: `the database went away during the checkout: it may have been placed; retry with the same Idempotency-Key (${error.message})`,
  } as never)
}

function placedOrRefused(outcome: Outcome): Placed {
  if ('orders' in outcome) return { orders: outcome.orders, replayed: false }
  const { code, message, detail, hint } = outcome.error
  throw new Refused({ severity: 'ERROR', code, message, detail: detail === null || detail === undefined ? undefined : JSON.stringify(detail), hint } as never)
}

class FlashSaleSwitch {
  private value = false
  private checkedAt = -Infinity
  private pending: Promise<boolean> | undefined

  constructor(
    private readonly sql: Sql,
    private readonly checkEveryMs: number,
    private readonly now: () => number,
  ) {}

  active(): Promise<boolean> | boolean {
    if (this.now() - this.checkedAt < this.checkEveryMs) return this.value
    this.pending ??= this.sql<{ active: boolean }[]>`select api.flash_sale_active() as active`
      .then(([row]) => {
        this.value = row.active
        this.checkedAt = this.now()
        return this.value
      })
      .finally(() => (this.pending = undefined))
    return this.pending
  }
}

interface Waiting {
  request: PlaceRequest
  resolve: (placed: Placed) => void
  reject: (error: unknown) => void
}

class Batcher {
  private readonly queue: Waiting[] = []
  private inFlight = 0
  private batches = 0
  private checkouts = 0

  constructor(
    private readonly sql: Sql,
    private readonly maxBatch: number,
    private readonly maxInFlight: number,
    private readonly events: OrderPlacerEvents,
  ) {}

  get stats() {
    return { batches: this.batches, checkouts: this.checkouts, waiting: this.queue.length }
  }

  submit(request: PlaceRequest): Promise<Placed> {
    return new Promise((resolve, reject) => {
      this.queue.push({ request, resolve, reject })
      this.pump()
    })
  }

  private pump() {
    while (this.inFlight < this.maxInFlight && this.queue.length > 0) {
      const batch = this.queue.splice(0, this.maxBatch)
      this.inFlight++
      void this.send(batch).finally(() => {
        this.inFlight--
        this.pump()
      })
    }
  }

  private async send(batch: Waiting[]) {
    this.batches++
    this.checkouts += batch.length
    this.events.batched(batch.length)
    try {
      const [row] = await this.sql<{ outcomes: Outcome[] }[]>`
        select api.place_orders(${this.sql.json(batch.map((waiting) => waiting.request) as never)}) as outcomes`
      batch.forEach((waiting, i) => {
        try {
          waiting.resolve(placedOrRefused(row.outcomes[i]))
        } catch (refusal) {
          waiting.reject(refusal)
        }
      })
    } catch (error) {
      // A refusal is per request and never fails the call. Anything else that
      // is about one request (a rule the data broke) must not sink the others:
      // each is tried alone. A busy or unreachable database fails them all.
      if (batch.length > 1 && error instanceof postgres.PostgresError && /^(22|23)/.test(error.code)) {
        await Promise.all(batch.map((waiting) => placeAlone(this.sql, waiting.request, null).then(waiting.resolve, waiting.reject)))
      } else {
        for (const waiting of batch) waiting.reject(error)
      }
    }
  }
}
