import postgres from 'postgres'
import type { Sql } from './db/client'

/** One checkout, as place_orders() takes it: a cart (or a buyer's cart), all its open items or some. */
export interface CheckoutRequest {
  cart_id?: number
  buyer_id?: number
  item_ids: number[] | null
  note: string | null
  /** POST /orders: the items must belong to one seller (else WA007). */
  one_seller: boolean
  /** The authenticated user; the cart must be theirs (else WA001, as if it did not exist). */
  user_id?: number | null
}

export interface Placed {
  orders: unknown[]
  /** The recorded answer to an earlier request with the same Idempotency-Key. */
  replayed: boolean
}

type Outcome = { orders: unknown[] } | { error: { code: string; message: string; detail?: string; hint?: string } }

/** A checkout the database refused (WA001 … WA007): mapped to HTTP like any PostgresError. */
export class CheckoutRefused extends postgres.PostgresError {}

export interface CheckoutOptions {
  /** How long the answer to "is any product in flash-sale mode?" is reused. */
  flashSaleCheckEveryMs?: number
  /** Most checkouts in one place_orders() call. */
  maxBatch?: number
  /** place_orders() calls of this process running at once. */
  batchesInFlight?: number
}

/**
 * Places checkouts through place_orders(). Normally each request is its own
 * call. While any product is in flash-sale mode, concurrent checkouts are
 * coalesced: while a batch is in the database, new ones queue, and the next
 * call takes them all (up to maxBatch), so a crowd on a hot product costs one
 * row lock and one commit per batch instead of per buyer. Each buyer still
 * gets their own orders or their own refusal, decided in arrival order. An
 * idle service sends a lone checkout at once: batching adds no waiting.
 */
/** What a Checkout reports as it goes (metrics). */
export interface CheckoutEvents {
  placed(orders: number): void
  refused(code: string): void
  batched(size: number): void
}

const ignore: CheckoutEvents = { placed() {}, refused() {}, batched() {} }

export class Checkout {
  private readonly flashSale: FlashSaleSwitch
  private readonly batcher: Batcher

  constructor(
    private readonly sql: Sql,
    options: CheckoutOptions = {},
    private readonly events: CheckoutEvents = ignore,
  ) {
    this.flashSale = new FlashSaleSwitch(sql, options.flashSaleCheckEveryMs ?? 1_000)
    this.batcher = new Batcher(sql, options.maxBatch ?? 500, options.batchesInFlight ?? 2, events)
  }

  /**
   * The orders placed (one per seller), or throws (CheckoutRefused, or the
   * PostgresError of an idempotent checkout). With an idempotency key the
   * checkout goes alone through place_order_idempotent or
   * place_buyer_order_idempotent, which record the key in the same
   * transaction; without one it may join a batch.
   */
  async place(request: CheckoutRequest, idempotencyKey?: string): Promise<Placed> {
    try {
      const placed = idempotencyKey ? await this.placeIdempotent(request, idempotencyKey) : await this.placeOrBatch(request)
      if (!placed.replayed) this.events.placed(placed.orders.length)
      return placed
    } catch (error) {
      if (error instanceof postgres.PostgresError) this.events.refused(error.code)
      throw error
    }
  }

  private async placeOrBatch(request: CheckoutRequest): Promise<Placed> {
    const outcome = (await this.flashSale.active()) ? await this.batcher.submit(request) : await placeAlone(this.sql, request)
    if ('error' in outcome) throw new CheckoutRefused({ severity: 'ERROR', ...outcome.error } as never)
    return { orders: outcome.orders, replayed: false }
  }

  private async placeIdempotent(request: CheckoutRequest, key: string): Promise<Placed> {
    type Result = { status: number; data: unknown; replayed: boolean }
    if (request.cart_id !== undefined) {
      const [result] = await this.sql<Result[]>`
        select * from public.place_order_idempotent(${request.user_id ?? null}, ${request.cart_id}, ${request.note}, ${key})`
      return { orders: result.data as unknown[], replayed: result.replayed }
    }
    const [result] = await this.sql<Result[]>`
      select * from public.place_buyer_order_idempotent(${request.buyer_id ?? null}, ${request.item_ids}::bigint[], ${request.note}, ${key})`
    return { orders: [result.data], replayed: result.replayed }
  }

  get batching() {
    return this.batcher.stats
  }
}

async function placeAlone(sql: Sql, request: CheckoutRequest): Promise<Outcome> {
  const [row] = await sql<{ outcome: Outcome }[]>`select public.place_orders(${sql.json([request] as never)})->0 as outcome`
  return row.outcome
}

class FlashSaleSwitch {
  private value = false
  private checkedAt = -Infinity
  private pending: Promise<boolean> | undefined

  constructor(
    private readonly sql: Sql,
    private readonly checkEveryMs: number,
  ) {}

  active(): Promise<boolean> | boolean {
    if (performance.now() - this.checkedAt < this.checkEveryMs) return this.value
    this.pending ??= this.sql<{ active: boolean }[]>`select exists (select from public.products where flash_sale) as active`
      .then(([row]) => {
        this.value = row.active
        this.checkedAt = performance.now()
        return this.value
      })
      .finally(() => (this.pending = undefined))
    return this.pending
  }
}

interface Waiting {
  request: CheckoutRequest
  resolve: (outcome: Outcome) => void
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
    private readonly events: CheckoutEvents,
  ) {}

  get stats() {
    return { batches: this.batches, checkouts: this.checkouts, waiting: this.queue.length }
  }

  submit(request: CheckoutRequest): Promise<Outcome> {
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
        select public.place_orders(${this.sql.json(batch.map((waiting) => waiting.request) as never)}) as outcomes`
      batch.forEach((waiting, i) => waiting.resolve(row.outcomes[i]))
    } catch (error) {
      // A refusal is per request and never fails the call. Anything else that
      // is about one request (a rule the data broke) must not sink the others:
      // each is tried alone. A busy or unreachable database fails them all.
      if (batch.length > 1 && error instanceof postgres.PostgresError && /^(22|23)/.test(error.code)) {
        await Promise.all(batch.map((waiting) => placeAlone(this.sql, waiting.request).then(waiting.resolve, waiting.reject)))
      } else {
        for (const waiting of batch) waiting.reject(error)
      }
    }
  }
}
