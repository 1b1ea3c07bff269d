import postgres from 'postgres'
import { DatabaseBusyError, Gate } from './gate.ts'
import { DatabaseUnreachableError, isReadOnly, unreached, wasSent } from './failover.ts'

export type Sql = postgres.Sql<{ bigint: number }>

export interface SqlOptions {
  /** Most connections of the pool. */
  max?: number
  /**
   * Named prepared statements (default true). False behind a transaction
   * pooler (PgBouncer 1.18 keeps no prepared statement across transactions):
   * DB_PREPARE=false. A query then costs a round trip more (postgres.js asks
   * for its parameters' types first) unless every parameter is null or
   * carries its type (sql.typed, sql.json; patches/postgres+3.4.9.patch), as
   * the checkout calls' do. Not sql.array: its type is known only once the
   * connection has fetched the array types, after its first query is built.
   */
  prepare?: boolean
  /** application_name of every session (default waitress): how pg_stat_activity tells this pool's sessions apart. PgBouncer keeps it per client. */
  applicationName?: string
  /**
   * Direct connections only (tests, tools): a role and session limits sent
   * as startup parameters. The service never sends them: PgBouncer refuses
   * them (08P01 unsupported startup parameter), so they are role defaults of
   * its login instead (src/db/app-login.ts, applySessionDefaults).
   */
  role?: string
  /** Direct connections only, like role: session limits in milliseconds (0 = none). */
  statementTimeoutMs?: number
  lockTimeoutMs?: number
  idleInTransactionTimeoutMs?: number
}

/**
 * A connection pool (the service has one per process; workerd one per
 * request). bigint (int8) columns arrive as JS numbers: every id and amount
 * here stays far below 2^53, and JSON clients expect numbers. Nothing but
 * user, database and application_name goes in the startup packet unless a
 * direct-only option asks for it, so a transaction pooler accepts it.
 */
export function createSql(url: string, options: SqlOptions = {}): Sql {
  const startup: Record<string, string> = {}
  if (options.statementTimeoutMs) startup.statement_timeout = String(options.statementTimeoutMs)
  if (options.lockTimeoutMs) startup.lock_timeout = String(options.lockTimeoutMs)
  if (options.idleInTransactionTimeoutMs) startup.idle_in_transaction_session_timeout = String(options.idleInTransactionTimeoutMs)
  if (options.role) startup.role = options.role
  return postgres(url, {
    max: options.max ?? 10,
    prepare: options.prepare ?? true,
    // A host that accepts TCP and never answers holds a new session this
    // long (postgres.js waits 30 s by default); a URL may set its own.
    ...(/[?&]connect_timeout=/.test(url) ? {} : { connect_timeout: 3 }),
    // Seconds before a connection tries again after failing to connect.
    // postgres.js's default grows to 20 s, so a restarted server would wait
    // that long for the pool to notice; this stays under a second.
    backoff: (retries: number) => (0.5 + Math.random() / 2) * Math.min(3 ** retries / 100, 1),
    onnotice: () => {},
    connection: { application_name: options.applicationName ?? 'waitress', ...startup },
    types: {
      bigint: {
        to: 20,
        from: [20],
        serialize: (value: number) => String(value),
        parse: (value: string) => Number(value),
      },
    },
  })
}

/** Serialization failures and deadlocks: the statement was rolled back and may simply run again. */
const RETRYABLE = new Set(['40001', '40P01'])

export type RetryableCode = '40001' | '40P01'

export interface GatedOptions {
  /** Runs of a statement after a serialization failure or deadlock (default 3). */
  retries?: number
  /** The pause before a retry (default: a setTimeout promise); each entry may pass its own. */
  sleep?: (ms: number) => Promise<void>
  /**
   * Give up on a statement that has not answered within this many
   * milliseconds (0: never), counting every run of it: it is cancelled and
   * fails with a DatabaseUnreachableError (503). statement_timeout only
   * counts the server's own time, and bounds neither a wait for a
   * connection (with several hosts and none up, postgres.js waits for ever)
   * nor a commit waiting for a synchronous standby. Set it a little above
   * the statement timeout.
   */
  queryTimeoutMs?: number
  /** A session answered 25006 (read-only): it is on a standby; drop it (replace the pool). */
  onReadOnly?: () => void
  /**
   * A call got no session within its whole deadline: no host was writable
   * all that time, or the pool's sessions are stuck; a new pool starts
   * clean. (The gate never lets more calls run than the pool has sessions,
   * so a healthy pool hands one out at once.)
   */
  onStalled?: () => void
  /**
   * Told of every run again, with the SQLSTATE that caused it: none is
   * expected, so a retry must be counted (a metric) even when it succeeds
   * and the client never hears of it.
   */
  onRetry?: (code: RetryableCode) => void
}

/** Runs of a statement that never reached a server, when no deadline bounds them. */
const UNSENT_RUNS_WITHOUT_DEADLINE = 5

const defaultSleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms))

/**
 * The pool behind a Gate: every query (a tagged-template call) waits its turn
 * in the gate, and one that fails with a serialization failure or deadlock is
 * run again, at most `retries` times, after a random pause. Every API query
 * is a single statement, so running it again is safe.
 *
 * Without a gate (workerd: a gate's queue would settle other requests'
 * promises) only the retries and the deadline apply.
 *
 * Failover: a statement that never reached a server (no connection, a
 * standby's 25006, a server starting up) is run again after a short pause
 * while the deadline allows; one that reached a server that then went away
 * is not (it may have committed). Either fails as a DatabaseUnreachableError
 * that says which, never as a raw connection error.
 */
export function gated(sql: Sql, gate: Gate | undefined, options: GatedOptions = {}): Sql {
  const retries = options.retries ?? 3
  const sleep = options.sleep ?? defaultSleep
  const run = <T>(work: () => Promise<T>) => (gate ? gate.run(work) : work())
  const queryTimeoutMs = options.queryTimeoutMs ?? 0
  const isQuery = (args: unknown[]) => Array.isArray(args[0]) && 'raw' in (args[0] as object)
  return new Proxy(sql, {
    apply(target, thisArg, args) {
      if (!isQuery(args)) return Reflect.apply(target, thisArg, args)
      return run(async () => {
        const deadline = queryTimeoutMs > 0 ? performance.now() + queryTimeoutMs : Infinity
        let unsent = 0
        for (let attempt = 0; ; ) {
          const query = Reflect.apply(target, thisArg, args) as postgres.PendingQuery<postgres.Row[]>
          try {
            return await withDeadline(query, deadline - performance.now())
          } catch (error) {
            const failure = unreached(error, query)
            if (failure) {
              if (isReadOnly(error)) options.onReadOnly?.()
              else if (error instanceof DatabaseUnreachableError && failure === 'not-sent') options.onStalled?.()
              const pause = 100 + Math.random() * 200
              const again = deadline === Infinity ? ++unsent < UNSENT_RUNS_WITHOUT_DEADLINE : performance.now() + pause + 200 < deadline
              if (failure === 'not-sent' && again) {
                await sleep(pause)
                continue
              }
              throw error instanceof DatabaseUnreachableError ? error : new DatabaseUnreachableError(failure, error)
            }
            if (attempt++ >= retries || !(error instanceof postgres.PostgresError) || !RETRYABLE.has(error.code)) throw error
            options.onRetry?.(error.code as RetryableCode)
            await sleep(5 + Math.random() * 20 * attempt)
          }
        }
      })
    },
  })
}

/** The query's answer, or a DatabaseUnreachableError (and a cancel request) once `timeoutMs` have passed without one. */
function withDeadline<T>(query: postgres.PendingQuery<postgres.Row[]> & Promise<T>, timeoutMs: number): Promise<T> {
  if (timeoutMs === Infinity) return query
  let timer: ReturnType<typeof setTimeout> | undefined
  const deadline = new Promise<never>((_, reject) => {
    timer = setTimeout(() => {
      cancelQuietly(query)
      // Cancelled before it was sent, it never runs: postgres.js drops it from its queue.
      reject(new DatabaseUnreachableError(wasSent(query) ? 'outcome-unknown' : 'not-sent', new DatabaseBusyError('query_timeout')))
    }, Math.max(0, timeoutMs))
  })
  return Promise.race([query, deadline]).finally(() => clearTimeout(timer))
}

/**
 * query.cancel(), minus the crash: postgres.js 3.4 drops the promise of the
 * cancel request it sends on a new connection, so a cancel request that
 * fails (a reset, the very network that is slow) is an unhandled rejection,
 * which ends the process. Calling its canceller directly keeps that promise.
 * Best effort: PostgreSQL may never get the request; statement_timeout still
 * bounds the statement there.
 */
function cancelQuietly(query: postgres.PendingQuery<postgres.Row[]>) {
  const internal = query as unknown as { canceller?: ((query: unknown) => Promise<void>) | null }
  const canceller = internal.canceller
  if (typeof canceller !== 'function') return void query.cancel()
  internal.canceller = null
  canceller(query).catch(() => {})
}
