import type { Sql } from '../db/client.ts'
import type { RateLimiter } from './access.ts'

export interface RateLimitOptions {
  /** Requests per client per window; 0 turns the limiter off. */
  limit: number
  windowSeconds: number
}

/**
 * Rate limiting per client (the token's user, else the client's address),
 * counted in PostgreSQL (api.rate_limit_hit, one statement per request), so
 * every API process shares the counters and none keeps state. The access
 * plugin asks it before anything reads the request; over the limit is 429
 * with Retry-After.
 */
export function sqlRateLimiter(sql: Sql, options: RateLimitOptions): RateLimiter | undefined {
  if (options.limit <= 0) return undefined
  return async (client) => {
    const [{ retry_after }] = await sql<{ retry_after: number }[]>`
      select api.rate_limit_hit(${client}, ${options.limit}, ${options.windowSeconds}) as retry_after`
    return retry_after > 0
      ? { retryAfter: retry_after, reason: `at most ${options.limit} per ${options.windowSeconds} s per client` }
      : undefined
  }
}
