import { expect } from 'bun:test'
import { createApp } from '../../src/app.ts'
import { createSql, type Sql } from '../../src/db/client.ts'
import { Metrics } from '../../src/observability/metrics.ts'
import { readFacts, startRun } from '../../proof/database-facts.ts'
import { type Attempt, type Outcome, type Run, type Verdict } from '../../proof/judge.ts'
import { outcomeOfHttp, outcomeOfSql } from '../../proof/outcomes.ts'
import type { Order } from '../../src/models.ts'
import type { OrderPlacerOptions } from '../../src/order-placer.ts'
import { apiSql, appDatabaseUrl, recyclablePool, testSql } from './db.ts'
import { createProduct, newUserId } from './fixtures.ts'

/**
 * The verdict holds: on failure bun prints every violation. Read from the
 * database, it also counted deadlocks from a complete counter (every session
 * of the run published its statistics), unless faults were injected, where
 * the service must stay up and the count may lag.
 */
export function expectClean(verdict: Verdict, options: { indefinite?: boolean } = {}) {
  expect(verdict.violations).toEqual([])
  expect(verdict.ok).toBe(true)
  if (verdict.source === 'database' && !options.indefinite) {
    expect(verdict.deadlocks).toBe(0)
    expect(verdict.notes).toEqual([])
  }
}

/** An add_cart_item as a client saw it: the line it landed on and that line's quantity after the add. */
export type Added = { ok: true; itemId: number; quantity: number } | { ok: false; outcome: Outcome }

/**
 * How a scenario reaches the service: over real HTTP to a listening app
 * (checkouts coalesced into place_orders batches when they queue), or straight to the SQL functions from many connections;
 * always through the service's own login, acting as waitress_api.
 */
export interface Channel {
  name: string
  /** application_name of its database sessions (a start line counts them). */
  applicationName: string
  /** Checkout calls it can have in the database at once: its pool (SQL), or the order placer's call slots (HTTP). */
  checkoutSessions: number
  /** Statements of any kind it can have in the database at once: its pool. */
  sessions: number
  /** Where the HTTP channel's server listens. */
  baseUrl?: string
  checkout(cartId: number): Promise<Outcome>
  addItem(cartId: number, productId: number, quantity: number): Promise<Added>
  /** Checkouts placed through the order placer so far (the coalescing channel only). */
  batched?(): Promise<number>
  close(): Promise<void>
}

/**
 * The app with checkouts coalesced as hard as it goes: one checkout call at a
 * time, so every checkout that arrives while one is in the database waits
 * and joins the next batch.
 */
export async function coalescingChannel(): Promise<Channel> {
  const channel = httpChannel({ callsInFlight: 1 })
  return {
    ...channel,
    name: 'HTTP, coalesced',
    checkoutSessions: 1, // callsInFlight: the one checkout call in the database at a time
    async batched() {
      const metrics = await (await fetch(`${channel.baseUrl}/metrics`)).text()
      return Number(/^waitress_checkout_batch_size_sum (\S+)$/m.exec(metrics)?.[1] ?? 0)
    },
  }
}

let channels = 0

export function httpChannel(checkout?: OrderPlacerOptions): Channel {
  const applicationName = `waitress-http-${process.pid}-${++channels}`
  const pool = recyclablePool(appDatabaseUrl(), { max: 10, role: 'waitress_api', applicationName })
  const server = createApp(pool, { orderPlacer: checkout, metrics: new Metrics(undefined, { defaultMetrics: false }) }).listen({ port: 0, hostname: '127.0.0.1' })
  const baseUrl = `http://127.0.0.1:${server.server!.port}`
  const post = async (path: string, body?: unknown) => {
    try {
      const response = await fetch(`${baseUrl}${path}`, {
        method: 'POST',
        headers: body === undefined ? {} : { 'content-type': 'application/json' },
        body: body === undefined ? undefined : JSON.stringify(body),
      })
      return { status: response.status, body: (await response.json()) as any }
    } catch (error) {
      return { status: 0, body: { error: String(error) } }
    }
  }
  return {
    name: 'HTTP',
    applicationName,
    // Checkout calls in the database at once: the rest wait in the order placer for the next batch.
    checkoutSessions: checkout?.callsInFlight ?? 2,
    sessions: 10,
    baseUrl,
    async checkout(cartId) {
      const { status, body } = await post(`/carts/${cartId}/checkout`)
      return outcomeOfHttp(status, body)
    },
    async addItem(cartId, productId, quantity) {
      const { status, body } = await post('/carts/items', { cart_id: cartId, product_id: productId, quantity })
      return status === 201 ? { ok: true, itemId: body.data.id, quantity: body.data.quantity } : { ok: false, outcome: outcomeOfHttp(status, body) }
    },
    close: async () => {
      await server.stop()
      await pool.end()
    },
  }
}

export function sqlChannel(connections = 40): Channel {
  const applicationName = `waitress-sql-${process.pid}-${++channels}`
  // Up to 40 checkouts queue for one product at once here, where the service sends 2 calls: on a busy
  // machine a turn can outlast the role's 2 s lock_timeout. These races judge what is sold, not how long
  // the queue was (the service's own bounds are tested in tests/service and tests/faults).
  const sql = recyclablePool(appDatabaseUrl(), { max: connections, role: 'waitress_api', applicationName, lockTimeoutMs: 60_000, statementTimeoutMs: 120_000 })
  return {
    name: 'SQL',
    applicationName,
    checkoutSessions: connections,
    sessions: connections,
    checkout: (cartId) => outcomeOfSql(async () => (await sql<{ o: Order }[]>`select o from jsonb_array_elements(api.place_order(${cartId})->'orders') o`).map((row) => row.o)),
    async addItem(cartId, productId, quantity) {
      try {
        const [item] = await sql<{ id: number; quantity: number }[]>`select (i->>'id')::bigint as id, (i->>'quantity')::int as quantity from api.add_cart_item(${cartId}, ${productId}, ${quantity}) i`
        return { ok: true, itemId: item.id, quantity: item.quantity }
      } catch (error) {
        return { ok: false, outcome: await outcomeOfSql(() => Promise.reject(error)) }
      }
    },
    close: () => sql.end({ timeout: 5 }),
  }
}

export const randomInt = (min: number, max: number) => min + Math.floor(Math.random() * (max - min + 1))
export const shuffled = <T>(items: readonly T[]) =>
  items
    .map((item) => [Math.random(), item] as const)
    .sort((a, b) => a[0] - b[0])
    .map(([, item]) => item)

export interface Buyer {
  cartId: number
  userId: number
  /** Product id → quantity, in the order the lines were added. */
  wants: Map<number, number>
}

/**
 * Many buyers' carts in two statements: a cart per new user, then every
 * line through add_cart_item, in the order given (so a cart's item ids
 * follow the order its products were listed in, not their ids).
 */
export async function buyersWith(sql: Sql, carts: [productId: number, quantity: number][][]): Promise<Buyer[]> {
  const userIds = carts.map(() => newUserId())
  const rows = await sql<{ id: number }[]>`
    select (c->>'id')::bigint as id from unnest(${userIds}::bigint[]) with ordinality as u(user_id, n)
    cross join lateral api.cart_for_user(u.user_id) c
     order by u.n`
  const lines = carts.flatMap((lines, i) => lines.map(([productId, quantity]) => [rows[i].id, productId, quantity]))
  await sql`
    select api.add_cart_item(l.cart_id, l.product_id, l.quantity)
      from unnest(${lines.map((l) => l[0])}::bigint[], ${lines.map((l) => l[1])}::bigint[], ${lines.map((l) => l[2])}::int[])
           with ordinality as l(cart_id, product_id, quantity, n)
     order by l.n`
  return carts.map((lines, i) => ({ cartId: rows[i].id, userId: userIds[i], wants: new Map(lines) }))
}

/** Resolves for everyone once `parties` callers are waiting: a start line inside a race. */
export function barrier(parties: number): () => Promise<void> {
  let arrived = 0
  let open!: () => void
  const opened = new Promise<void>((resolve) => (open = resolve))
  return () => {
    if (++arrived >= parties) open()
    return opened
  }
}

/** A promise with its resolve function, for stepping sessions by hand. */
export function signal<T = void>() {
  let resolve!: (value: T) => void
  const promise = new Promise<T>((r) => (resolve = r))
  return { promise, resolve }
}

/**
 * A real race through `channel`: `contenders` buyers each want 2 of a scarce
 * product (stock 5) and 1 of a plentiful one; one more buyer wants only the
 * plentiful one and never checks out (`idle`). Checkers are then shown this
 * run, honest or tampered with.
 */
export async function scarceRace(channel: Channel, options: { contenders: number; sellers: [number, number] }) {
  const sql = testSql()
  const scarce = await createProduct(sql, { seller_id: options.sellers[0], price: 700, stock: 5 })
  const plenty = await createProduct(sql, { seller_id: options.sellers[1], price: 300, stock: 100 })
  const buyers = await buyersWith(sql, [
    ...Array.from({ length: options.contenders }, (): [number, number][] => [
      [scarce.id, 2],
      [plenty.id, 1],
    ]),
    [[plenty.id, 1]],
  ])
  const idle = buyers.pop()!
  const start = await startRun(sql, [scarce.id, plenty.id])
  const checkouts: Attempt[] = await Promise.all(
    buyers.map(async (b) => ({ cartId: b.cartId, buyerId: b.userId, wants: b.wants, outcome: await channel.checkout(b.cartId) })),
  )
  const run: Run = { ...start, checkouts }
  return { run, facts: await readFacts(sql, run), scarce, plenty, idle }
}
