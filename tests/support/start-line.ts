import type { Sql } from '../../src/db/client.ts'
import { until } from './wait.ts'

export interface Overlap {
  /** Sessions seen waiting for a row lock at once when the start line let go. */
  lockWaiters: number
  /** Requests the service held in its own queue at that moment, when it says (its gate: waitress_db_pool_waiting). */
  queued?: number
  /** How long the line held, for the record. */
  heldMs: number
}

/**
 * A start line inside the database, so that a race really is one: a
 * transaction of the test's own takes the row locks of the rows the race
 * fights over (products, or carts), every racer that reaches them queues
 * behind it, and the line lets go only once as many sessions as asked are
 * seen waiting for a lock (pg_stat_activity, read again and again: a
 * condition, not a clock). What it saw is returned: the proof that the
 * race overlapped.
 */
export async function startLine(sql: Sql, rows: { products?: number[]; carts?: number[] }) {
  let release!: () => void
  const released = new Promise<void>((resolve) => (release = resolve))
  let holding!: (pid: number) => void
  const held = new Promise<number>((resolve) => (holding = resolve))
  const transaction = sql.begin(async (tx) => {
    const [{ pid }] = await tx<{ pid: number }[]>`select pg_backend_pid() as pid`
    if (rows.carts?.length) await tx`select id from waitress.carts where id = any (${rows.carts}::bigint[]) order by id for update`
    if (rows.products?.length) await tx`select id from waitress.products where id = any (${rows.products}::bigint[]) order by id for update`
    holding(pid)
    await released
  })
  const holder = await Promise.race([held, transaction.then(() => Promise.reject(new Error('the start line ended before it held')))])
  const since = performance.now()

  /** Sessions of this database (of one application, if named) waiting for a lock now. */
  const waiting = async (applicationName?: string) => {
    const [{ count }] = await sql<{ count: number }[]>`
      select count(*)::int as count from pg_stat_activity
       where datname = current_database() and pid <> ${holder} and wait_event_type = 'Lock'
         and (${applicationName ?? null}::text is null or application_name = ${applicationName ?? null})`
    return count
  }

  return {
    holder,
    /**
     * Waits until at least `sessions` sessions wait for a lock (and `queued`,
     * when given, reports at least `queuedAtLeast` requests queued in the
     * service), then lets go and says what it saw.
     */
    async letGoWhen(sessions: number, options: WaitOptions = {}): Promise<Overlap> {
      try {
        return await waitFor(sessions, options)
      } finally {
        await letGo()
      }
    },
    /** Waits as letGoWhen does, but keeps holding: the test lets go itself (letGo). */
    waitFor,
    letGo,
  }

  async function waitFor(sessions: number, options: WaitOptions = {}): Promise<Overlap> {
    let seen = { lockWaiters: 0, queued: undefined as number | undefined }
    await until(
      `${sessions} sessions${options.applicationName ? ` of ${options.applicationName}` : ''} to wait behind the start line` +
        (options.queued ? ` with ${options.queuedAtLeast ?? 1} requests queued in the service` : ''),
      async () => {
        seen = { lockWaiters: await waiting(options.applicationName), queued: options.queued ? await options.queued() : undefined }
        return seen.lockWaiters >= sessions && (!options.queued || (seen.queued ?? 0) >= (options.queuedAtLeast ?? 1))
      },
      { everyMs: 5, seen: () => JSON.stringify(seen) },
    )
    return { lockWaiters: seen.lockWaiters, queued: seen.queued, heldMs: Math.round(performance.now() - since) }
  }

  async function letGo() {
    release()
    await transaction
  }
}

interface WaitOptions {
  /** Count only this application's sessions. */
  applicationName?: string
  /** The service's own queue (its gate): also wait until it holds at least queuedAtLeast (1) requests. */
  queued?: () => Promise<number>
  queuedAtLeast?: number
}
