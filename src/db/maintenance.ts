import type { Sql } from './client.ts'

/**
 * Purges expired idempotency keys (older than 24 hours) and ended
 * rate-limit windows, once at start and then every `intervalSeconds`. Every
 * API process runs the timer; api.purge_due makes the purge itself run once
 * per period across them (the deletes are idempotent anyway). Returns a stop
 * function.
 */
export function startPurging(sql: Sql, intervalSeconds: number, log: (msg: string, fields?: Record<string, unknown>) => void): () => void {
  if (intervalSeconds <= 0) return () => {}
  const purge = async () => {
    try {
      const [row] = await sql<{ keys: number | null; windows: number | null }[]>`
        select idempotency_keys as keys, rate_limit_windows as windows from api.purge_due(make_interval(secs => ${intervalSeconds * 0.9}))`
      if ((row.keys ?? 0) > 0 || (row.windows ?? 0) > 0) log('purged', { idempotency_keys: row.keys, rate_limit_windows: row.windows })
    } catch (error) {
      log('purge failed; will retry', { error: String(error) })
    }
  }
  void purge()
  const timer = setInterval(purge, intervalSeconds * 1000)
  timer.unref()
  return () => clearInterval(timer)
}
