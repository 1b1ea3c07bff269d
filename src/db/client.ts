import postgres from 'postgres'
import { Gate } from './gate'

export type Sql = postgres.Sql<{ bigint: number }>

export interface SqlOptions {
  /** Most connections of the pool. */
  max?: number
  /** Every session runs as this role (sent at connect). */
  role?: string
  /** Session limits, in milliseconds (0 = none): no statement, lock wait or idle transaction runs unbounded. */
  statementTimeoutMs?: number
  lockTimeoutMs?: number
  idleInTransactionTimeoutMs?: number
}

/**
 * The one connection pool of a process. bigint (int8) columns arrive as JS
 * numbers: every id and amount here stays far below 2^53, and JSON clients
 * expect numbers.
 */
export function createSql(url: string, options: SqlOptions = {}): Sql {
  const limits: Record<string, string> = {}
  if (options.statementTimeoutMs) limits.statement_timeout = String(options.statementTimeoutMs)
  if (options.lockTimeoutMs) limits.lock_timeout = String(options.lockTimeoutMs)
  if (options.idleInTransactionTimeoutMs) limits.idle_in_transaction_session_timeout = String(options.idleInTransactionTimeoutMs)
  return postgres(url, {
    max: options.max ?? 10,
    onnotice: () => {},
    connection: {
      application_name: 'waitress',
      TimeZone: 'UTC',
      ...limits,
      ...(options.role ? { role: options.role } : {}),
    },
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

/**
 * The pool behind a Gate: every query (a tagged-template call) waits its turn
 * in the gate, and one that fails with a serialization failure or deadlock is
 * run again, at most `retries` times, after a random pause. Every API query
 * is a single statement, so running it again is safe.
 */
export function gated(sql: Sql, gate: Gate, retries = 3): Sql {
  const isQuery = (args: unknown[]) => Array.isArray(args[0]) && 'raw' in (args[0] as object)
  return new Proxy(sql, {
    apply(target, thisArg, args) {
      if (!isQuery(args)) return Reflect.apply(target, thisArg, args)
      return gate.run(async () => {
        for (let attempt = 0; ; attempt++) {
          try {
            return await Reflect.apply(target, thisArg, args)
          } catch (error) {
            if (attempt >= retries || !(error instanceof postgres.PostgresError) || !RETRYABLE.has(error.code)) throw error
            await Bun.sleep(5 + Math.random() * 20 * (attempt + 1))
          }
        }
      })
    },
  })
}
