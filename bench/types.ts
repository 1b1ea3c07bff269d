/**
 * What the orchestrator (bench.ts) and the load-generator processes
 * (load-http.ts, load-sql.ts) say to each other, and what each mode is.
 */

export const MODES = ['http', 'http-3proc', 'http-pgbouncer', 'http-attacked', 'direct', 'baseline', 'bare'] as const
export type Mode = (typeof MODES)[number]

export const SCENARIOS = ['hot', 'multi', 'shop', 'attack'] as const
export type Scenario = (typeof SCENARIOS)[number]

/** Modes whose load is HTTP, driven by wrk. */
export const isHttp = (mode: Mode) => mode.startsWith('http')

export const MODE_INFO: Record<Mode, { label: string; what: string; color: string; dash?: string }> = {
  http: {
    label: '(a) HTTP',
    what:
      '`POST /orders {buyer_id, cart_item_ids}` through one service process as it starts by default (no product flagged: ' +
      'checkouts coalesce by themselves when they queue), driven by wrk',
    color: '#1f77b4',
  },
  'http-3proc': {
    label: '(a3) HTTP, 3 processes',
    what: 'the same requests to 3 service processes sharing one port (`REUSE_PORT=true`), each with its own pool and, as `REUSE_PORT` sets by default, one checkout call in flight',
    color: '#9467bd',
  },
  'http-pgbouncer': {
    label: '(ap) HTTP through PgBouncer',
    what:
      'the same requests to one service process that reaches PostgreSQL only through PgBouncer in transaction mode ' +
      '(Debian\'s pgbouncer, started by the bench; `DB_PREPARE=false`, a server pool as large as the service\'s own)',
    color: '#8c564b',
  },
  'http-attacked': {
    label: '(a!) HTTP under attack',
    what:
      'the same honest requests while 4 more connections loop the worst checkout the limits allow ' +
      '(a 100-line cart, the hot product among its lines, all 100 item ids named)',
    color: '#ff7f0e',
  },
  direct: {
    label: '(b) direct place_order',
    what: '`select o from place_order(cart_id, item_ids) o` over SQL, as `waitress_api`, one connection per buyer',
    color: '#2ca02c',
  },
  baseline: {
    label: '(c) baseline client-side tx',
    what: "the original service's transaction, several round trips (bench/baseline.ts), one connection per buyer",
    color: '#d62728',
  },
  bare: {
    label: '(d) bare UPDATE',
    what:
      '`update products set stock = stock - 1 where id = $1 and stock >= 1` and nothing else, one connection per buyer, ' +
      'on a product of its own; in the multi-line scenario, 2 to 5 of its own 5 products decremented in one statement, ' +
      'locked in id order (`with locked as (select … order by id for no key update) update …`)',
    color: '#7f7f7f',
    dash: '6 4',
  },
}

export const SCENARIO_INFO: Record<Scenario, { title: string; what: string }> = {
  hot: {
    title: 'One hot product',
    what: 'every buyer has one cart line, 1 unit of the same product',
  },
  multi: {
    title: '5-product multi-line carts',
    what:
      'every buyer has 2 to 5 lines (uniformly), 1 unit each, of 5 products of one seller, added to the cart in random order; ' +
      'the order takes all of them',
  },
  shop: {
    title: 'The rest of the shop during a sale',
    what:
      'the hot product hammered over HTTP as in the first scenario, and at the same time 16 more connections buying ' +
      'one unit each of 50 other products (a random one per buyer); the side columns are those other buyers',
  },
  attack: {
    title: 'Honest buyers beside hostile carts',
    what:
      '32 connections buying the hot product, alone and then beside 4 connections that loop the worst checkout the ' +
      'limits allow; the side columns are the attackers',
  },
}

/** A buyer prepared before a cell: one cart, open lines, each of quantity 1. */
export interface Buyer {
  buyerId: number
  cartId: number
  /** Cart item ids in the order they were added to the cart. */
  itemIds: number[]
  /** The product of each line, same order as itemIds. */
  productIds: number[]
}

/** Written to a file by the orchestrator; the load process reads it at start. */
export interface LoadConfig {
  mode: Mode
  scenario: Scenario
  concurrency: number
  warmupSeconds: number
  seconds: number
  /** The service, for the HTTP modes. */
  serviceUrl?: string
  /** The database, for the SQL modes. */
  databaseUrl?: string
  /** Buyers to take in order, one per attempt (modes other than bare). */
  buyers: Buyer[]
  /** The products a bare UPDATE decrements (bare mode). */
  productIds: number[]
}

/** What one attempt came to. */
export interface Outcome {
  ok: boolean
  /** Units sold (stock taken) when ok. */
  units: number
  /** A short, stable kind when not ok: "HTTP 422 WA004", "40P01 deadlock_detected", … */
  error?: string
}

/** The load process's report of the measured phase. */
export interface LoadResult {
  /** Successful orders (or successful bare updates). */
  ok: number
  units: number
  attempts: number
  errors: Record<string, number>
  /** From the start signal to the last completion (requests still running at the deadline are waited for). */
  elapsedMs: number
  /** Latency of every attempt of the measured phase, ok or not, in ms. */
  p50: number
  p95: number
  p99: number
  max: number
  /** Buyers taken, warm-up included: the orchestrator never hands them out again. */
  used: number
  /** Ran out of buyers: the cell is void and is run again with more. */
  exhausted: boolean
}
