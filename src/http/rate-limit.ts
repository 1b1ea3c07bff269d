import { Elysia } from 'elysia'
import type { Sql } from '../db/client'
import { ApiError } from './errors'
import { peekActor } from './identity'

export interface RateLimitOptions {
  /** Requests per client per window; 0 turns the limiter off. */
  limit: number
  windowSeconds: number
}

const exempt = (path: string) => path === '/healthz' || path === '/swagger' || path.startsWith('/swagger/')

/**
 * Rate limiting per client: the token's user when there is one, else the
 * client's IP address. The counters live in PostgreSQL (rate_limit_hit, one
 * statement per request), so every API process shares them and none keeps
 * state. Over the limit: 429 with Retry-After, in the error envelope.
 * Register after the identity plugin, so that a token decides the client.
 */
export function rateLimit(sql: Sql, options: RateLimitOptions) {
  const plugin = new Elysia({ name: 'waitress/rate-limit', seed: options })
  if (options.limit <= 0) return plugin
  return plugin.onRequest(async ({ request, server }) => {
    if (exempt(new URL(request.url).pathname)) return
    const actor = peekActor(request)
    const client = actor?.kind === 'user' ? `user:${actor.id}` : `ip:${server?.requestIP(request)?.address ?? 'unknown'}`
    const [{ retry_after }] = await sql<{ retry_after: number }[]>`
      select public.rate_limit_hit(${client}, ${options.limit}, ${options.windowSeconds}) as retry_after`
    if (retry_after > 0)
      throw new ApiError(
        429,
        `too many requests: at most ${options.limit} per ${options.windowSeconds} s per client; retry in ${retry_after} s`,
        { 'retry-after': String(retry_after) },
      )
  })
}
