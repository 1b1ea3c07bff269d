import type { Sql } from './client.ts'
import { every, type Schedule } from '../schedule.ts'

/**
 * Purges expired idempotency keys (older than 24 hours) and ended rate-limit
 * windows, unless some process (or isolate, or pg_cron job) did within
 * `everySeconds`: the lease (api.take_job_lease) is taken in the same
 * statement as the purges, so its transaction-scoped lock holds until they
 * are done, also behind a transaction pooler. Undefined when skipped.
 */
export async function purgeIfDue(sql: Sql, everySeconds: number): Promise<{ idempotency_keys: number; rate_limit_windows: number } | undefined> {
  const [row] = await sql<{ keys: number | null; windows: number | null }[]>`
    with lease as (select api.take_job_lease('purge', make_interval(secs => ${everySeconds})) as taken)
    select case when taken then api.purge_idempotency_keys() end as keys,
           case when taken then api.purge_rate_limit_windows() end as windows
      from lease`
  return row.keys === null ? undefined : { idempotency_keys: row.keys, rate_limit_windows: row.windows ?? 0 }
}

/**
 * Runs purgeIfDue once at start and then every `intervalSeconds`, in every
 * API process: the lease makes the purge itself run once per period across
 * them (the deletes are idempotent anyway). Returns a stop function.
 * `schedule` is the timer: tests pass their own and tick it themselves.
 */
export function startPurging(
  sql: Sql,
  intervalSeconds: number,
  log: (msg: string, fields?: Record<string, unknown>) => void,
  schedule: Schedule = every({ unref: true }),
): () => void {
  if (intervalSeconds <= 0) return () => {}
  const purge = async () => {
    try {
      // 0.9: the processes' timers drift; a period is not skipped because a tick came a little early.
      const purged = await purgeIfDue(sql, intervalSeconds * 0.9)
      if (purged && (purged.idempotency_keys > 0 || purged.rate_limit_windows > 0)) log('purged', purged)
    } catch (error) {
      log('purge failed; will retry', { error: String(error) })
    }
  }
  void purge()
  return schedule(purge, intervalSeconds * 1000)
}
