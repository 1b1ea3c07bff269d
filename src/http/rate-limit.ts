/**
 * Rate limiting per client (the token's user, else the client's address),
 * decided in the process, with the shared PostgreSQL window kept only as the
 * cluster-wide limit. Web-standard JavaScript only (no Bun or Node API, no
 * timer: the clock is injected and every piece of housekeeping runs lazily
 * on a request), so the same code can run on Deno or workerd.
 *
 * Admission, per process, per client: a token bucket of `limit` tokens that
 * refills at `limit` per `windowSeconds`. A request takes a token or is
 * refused (429) at once: no database round trip, so a flood from one client
 * costs the database nothing and cannot crowd other clients out of the pool.
 *
 * Cluster-wide, per client: the requests a process admitted are reported to
 * PostgreSQL (api.rate_limit_hit, p_hits at once) at most once per window per
 * client per process: in the background, on the client's first request in a
 * new window, never delaying that request. PostgreSQL counts what all
 * processes report in its current window; once that exceeds `limit`, the
 * process that reported it refuses the client until the window ends, and so
 * does every process that reports after it in that window.
 *
 * Error bounds, for one client, with N processes (see docs/operations.md ("Rate limiting")):
 * - one process admits at most `limit` at once (a full bucket) and `limit`
 *   per window after that: at most 2 x limit in any one window;
 * - the cluster admits at most N x 2 x limit in any window, and a client that
 *   keeps exceeding `limit` across processes is refused by a process from its
 *   next report on (within one window), for the rest of that window;
 * - reports lag by up to a window (a window's requests are counted in the
 *   window in which they are reported), and a report that fails (database
 *   down) is kept and sent with the next one: the limiter then degrades to the
 *   per-process buckets, it never refuses because the database is away;
 * - refused requests are not reported: they cost nothing.
 *
 * Memory: one small entry per recently seen client, at most `maxClients`
 * (least recently seen evicted first); an entry whose bucket is full again and
 * that has nothing to report or enforce is dropped when its turn comes.
 */
import type { Sql } from '../db/client.ts'
import type { RateLimiter } from './access.ts'

export interface RateLimitOptions {
  /** Requests per client per window; 0 turns the limiter off. */
  limit: number
  windowSeconds: number
  /** How long a 429 is held before it is sent, in ms (at most its Retry-After); 0 or unset: at once. */
  delayMs?: number
}

/** Adds `hits` requests of `client` to the shared window; resolves to 0, or the seconds until that window ends once it is over `limit`. */
export type ReportHits = (client: string, hits: number, limit: number, windowSeconds: number) => Promise<number>

export interface InProcessLimiterOptions extends RateLimitOptions {
  /** The cluster-wide counter (api.rate_limit_hit); without it the limit is per process only. */
  report?: ReportHits
  /** Milliseconds since the epoch (default Date.now): the tests move it. */
  now?: () => number
  /** Most clients kept in memory (default 100,000). */
  maxClients?: number
  /** Told of a report that failed (it is kept and sent again with the next one). */
  onReportError?: (error: unknown) => void
  /** Told of every refusal, and where it was decided (for the metrics). */
  onRefused?: (scope: 'process' | 'cluster') => void
  /** Told of every report sent to the shared window (for the metrics). */
  onReport?: () => void
}

interface ClientState {
  tokens: number
  /** When tokens was last refilled (ms). */
  refilledAt: number
  /** Admitted and not yet reported. */
  pending: number
  /** The window (index) in which this process last reported the client; -1: never. */
  reportedWindow: number
  reporting: boolean
  /** Refused until then (ms), because the cluster-wide window is over the limit. */
  blockedUntil: number
}

export interface LimiterStats {
  clients: number
  /** Admitted requests not reported yet. */
  pending: number
  reports: number
  refusedLocally: number
  refusedClusterWide: number
}

/** The rate limiter; its `check` is what the access plugin calls, and answers synchronously. */
export class InProcessRateLimiter {
  readonly #limit: number
  readonly #windowMs: number
  /** Tokens per millisecond. */
  readonly #rate: number
  readonly #report?: ReportHits
  readonly #now: () => number
  readonly #maxClients: number
  readonly #onReportError: (error: unknown) => void
  readonly #onRefused: (scope: 'process' | 'cluster') => void
  readonly #onReport: () => void
  /** Least recently seen first (a Map keeps insertion order; a hit moves its client to the end). */
  readonly #clients = new Map<string, ClientState>()
  readonly #inFlight = new Set<Promise<void>>()
  readonly #stats = { reports: 0, refusedLocally: 0, refusedClusterWide: 0 }

  constructor(options: InProcessLimiterOptions) {
    if (!(options.limit > 0) || !(options.windowSeconds > 0)) throw new Error('a rate limit needs a positive limit and window')
    this.#limit = options.limit
    this.#windowMs = options.windowSeconds * 1000
    this.#rate = options.limit / this.#windowMs
    this.#report = options.report
    this.#now = options.now ?? Date.now
    this.#maxClients = options.maxClients ?? 100_000
    this.#onReportError = options.onReportError ?? (() => {})
    this.#onRefused = options.onRefused ?? (() => {})
    this.#onReport = options.onReport ?? (() => {})
  }

  /** Undefined when the request may go on; else how long the client must wait, and why. */
  check(client: string): { retryAfter: number; reason: string } | undefined {
    const now = this.#now()
    const state = this.#touch(client, now)
    const refusal = this.#decide(client, state, now)
    this.#sweep(now)
    return refusal
  }

  #decide(client: string, state: ClientState, now: number): { retryAfter: number; reason: string } | undefined {
    if (state.blockedUntil > now) {
      this.#stats.refusedClusterWide++
      this.#onRefused('cluster')
      return {
        retryAfter: Math.max(1, Math.ceil((state.blockedUntil - now) / 1000)),
        reason: `at most ${this.#limit} per ${this.#windowMs / 1000} s per client, across all API processes`,
      }
    }

    state.tokens = Math.min(this.#limit, state.tokens + (now - state.refilledAt) * this.#rate)
    state.refilledAt = now
    if (state.tokens < 1) {
      this.#stats.refusedLocally++
      this.#onRefused('process')
      return {
        retryAfter: Math.max(1, Math.ceil((1 - state.tokens) / this.#rate / 1000)),
        reason: `at most ${this.#limit} per ${this.#windowMs / 1000} s per client`,
      }
    }
    state.tokens -= 1
    if (this.#report) state.pending += 1

    const window = Math.floor(now / this.#windowMs)
    if (this.#report && state.reportedWindow !== window && !state.reporting) this.#sendReport(client, state, window)
    return undefined
  }

  /** The function the access plugin takes. */
  get limiter(): RateLimiter {
    return (client) => this.check(client)
  }

  /** Resolves once every report sent so far has been answered (for tests and shutdown). */
  async settled(): Promise<void> {
    while (this.#inFlight.size > 0) await Promise.allSettled([...this.#inFlight])
  }

  get stats(): LimiterStats {
    let pending = 0
    for (const state of this.#clients.values()) pending += state.pending
    return { ...this.#stats, clients: this.#clients.size, pending }
  }

  #touch(client: string, now: number): ClientState {
    let state = this.#clients.get(client)
    if (state) {
      // Most recently seen goes last.
      this.#clients.delete(client)
    } else {
      state = { tokens: this.#limit, refilledAt: now, pending: 0, reportedWindow: -1, reporting: false, blockedUntil: 0 }
      while (this.#clients.size >= this.#maxClients) this.#evictOldest()
    }
    this.#clients.set(client, state)
    return state
  }

  #sendReport(client: string, state: ClientState, window: number) {
    const hits = state.pending
    state.pending = 0
    state.reportedWindow = window
    state.reporting = true
    this.#stats.reports++
    this.#onReport()
    const sent = this.#report!(client, hits, this.#limit, this.#windowMs / 1000)
      .then(
        (retryAfter) => {
          if (retryAfter > 0) state.blockedUntil = Math.max(state.blockedUntil, this.#now() + retryAfter * 1000)
        },
        (error) => {
          // Kept for the next report; meanwhile the buckets alone decide.
          state.pending += hits
          this.#onReportError(error)
        },
      )
      .finally(() => {
        state.reporting = false
        this.#inFlight.delete(sent)
      })
    this.#inFlight.add(sent)
  }

  /** Drops the least recently seen clients that no longer need an entry: at most a few per request. */
  #sweep(now: number) {
    let looked = 0
    for (const [client, state] of this.#clients) {
      if (looked++ >= 4) return
      const full = state.tokens + (now - state.refilledAt) * this.#rate >= this.#limit
      if (!full || state.blockedUntil > now || state.reporting) return
      if (state.pending > 0) {
        // Its last requests still go to the cluster-wide count, once.
        if (this.#report && Math.floor(now / this.#windowMs) === state.reportedWindow) return
        if (this.#report) this.#sendReport(client, state, Math.floor(now / this.#windowMs))
        return
      }
      this.#clients.delete(client)
    }
  }

  /** Over maxClients: the least recently seen goes, whatever its state (its pending hits are reported first). */
  #evictOldest() {
    const oldest = this.#clients.entries().next()
    if (oldest.done) return
    const [client, state] = oldest.value
    this.#clients.delete(client)
    if (this.#report && state.pending > 0 && !state.reporting) this.#sendReport(client, state, state.reportedWindow)
  }
}

/** The limiter for an app, or none when the limit is 0. */
export function createRateLimiter(options: InProcessLimiterOptions): InProcessRateLimiter | undefined {
  return options.limit > 0 ? new InProcessRateLimiter(options) : undefined
}

/** The cluster-wide counter in PostgreSQL: one api.rate_limit_hit call per report. */
export const postgresReport =
  (sql: Sql): ReportHits =>
  async (client, hits, limit, windowSeconds) => {
    const [row] = await sql<{ retry_after: number }[]>`
      select api.rate_limit_hit(${client}, ${limit}, ${windowSeconds}, ${hits}) as retry_after`
    return row.retry_after
  }
