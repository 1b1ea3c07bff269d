import type { Sql } from './client.ts'

/**
 * Purges expired idempotency keys (older than 24 hours) and ended
 * rate-limit windows, once at start and then every `intervalSeconds`. Every
 * API process may run it: the deletes are idempotent. Returns a stop function.
 */
export function startPurging(sql: Sql, intervalSeconds: number, log: (msg: string, fields?: Record<string, unknown>) => void): () => void {
  if (intervalSeconds <= 0) return () => {}
  const purge = async () => {
    try {
      const [row] = await sql<{ keys: number; windows: number }[]>`
        select api.purge_idempotency_keys() as keys, api.purge_rate_limit_windows() as windows`
      if (row.keys > 0 || row.windows > 0) log('purged', { idempotency_keys: row.keys, rate_limit_windows: row.windows })
    } catch (error) {
      log('purge failed; will retry', { error: String(error) })
    }
  }
  void purge()
  const timer = setInterval(purge, intervalSeconds * 1000)
  timer.unref()
  return () => clearInterval(timer)
}
