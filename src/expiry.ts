import type { Sql } from './db/client.ts'
import { every, type Schedule } from './schedule.ts'

const BATCH = 500

/**
 * Expires overdue pending orders in batches until none is left. Safe to run
 * in every API process at once: expire_orders() skips orders another
 * session holds. With `everySeconds`, the first batch goes through
 * api.expire_orders_due: skipped (0) when any process ran it less than about
 * that long ago, so across processes it runs once per period.
 */
export async function expireOverdueOrders(sql: Sql, ttlSeconds: number, everySeconds?: number): Promise<number> {
  let total = 0
  if (everySeconds !== undefined) {
    // 0.9: the processes' timers drift; a period is not skipped because a tick came a little early.
    const [{ expired }] = await sql<{ expired: number | null }[]>`
      select api.expire_orders_due(make_interval(secs => ${ttlSeconds}), make_interval(secs => ${everySeconds * 0.9}), ${BATCH}) as expired`
    if (expired === null || expired < BATCH) return expired ?? 0
    total = expired
  }
  for (;;) {
    const [{ expired }] = await sql<{ expired: number }[]>`
      select api.expire_orders(make_interval(secs => ${ttlSeconds}), ${BATCH}) as expired`
    total += expired
    if (expired < BATCH) return total
  }
}

/**
 * Runs expireOverdueOrders every `everySeconds` (a tick that finds the last
 * one still running does nothing); returns a function that stops it.
 * `schedule` is the timer: tests pass their own and tick it themselves.
 */
export function startExpiryTimer(
  sql: Sql,
  options: { ttlSeconds: number; everySeconds: number; log: (msg: string, fields?: Record<string, unknown>) => void; schedule?: Schedule },
): () => void {
  let running = false
  return (options.schedule ?? every())(async () => {
    if (running) return
    running = true
    try {
      const expired = await expireOverdueOrders(sql, options.ttlSeconds, options.everySeconds)
      if (expired > 0) options.log('expired overdue orders', { expired })
    } catch (error) {
      options.log('expire_orders failed', { error: String(error) })
    } finally {
      running = false
    }
  }, options.everySeconds * 1000)
}
