import postgres from 'postgres'
import type { Sql } from './client.ts'

/**
 * Failover as the service sees it: a primary that went away, a connection
 * that reached a standby, every host down. Each failed call is one of two
 * kinds, and the difference decides what a client may be told:
 *
 * - `not-sent`: the statement never ran (no connection, a refused connect, a
 *   read-only server that refused it before executing it). Running it again
 *   is safe; the service does so while the call's deadline allows.
 * - `outcome-unknown`: the statement reached a server, which then went away
 *   (killed, a lost connection, the deadline passed). It may have committed
 *   or not; a checkout answers "may have been placed" and the client retries
 *   with its Idempotency-Key.
 */
export type Unreached = 'not-sent' | 'outcome-unknown'

/** The database could not be reached, or went away during the call: a 503 with Retry-After. */
export class DatabaseUnreachableError extends Error {
  constructor(
    readonly unreached: Unreached,
    readonly cause: unknown,
  ) {
    super(
      unreached === 'not-sent'
        ? `the database could not be reached: ${describe(cause)}`
        : `the database went away while the statement ran: ${describe(cause)}`,
    )
  }

  /** The statement may have taken effect. */
  get outcomeUnknown() {
    return this.unreached === 'outcome-unknown'
  }
}

/** Refused before executing anything: a standby or read-only server, a server starting up, no slot left, a refused connection. */
const NOT_EXECUTED_SQLSTATES = new Set(['25006', '57P03', '53300', '08001', '08004'])
/** The server ended the session: an administrator, a shutdown, a crash (57P01, 57P02), or class 08. */
const SESSION_LOST_SQLSTATES = new Set(['57P01', '57P02'])
/** postgres.js and socket errors that are never raised once the statement was sent. */
const NOT_SENT_CLIENT_CODES = new Set(['ECONNREFUSED', 'CONNECT_TIMEOUT', 'ENOTFOUND', 'EHOSTUNREACH', 'ENETUNREACH', 'EAI_AGAIN'])
/** postgres.js and socket errors of a connection that went away. */
const LOST_CLIENT_CODES = new Set(['CONNECTION_CLOSED', 'CONNECTION_ENDED', 'CONNECTION_DESTROYED', 'ECONNRESET', 'EPIPE', 'ETIMEDOUT'])

/**
 * Whether `error`, raised by `query`, means the database was unreachable,
 * and if so whether the statement may have run; undefined for any other
 * error (a refusal, a bug), which keeps its own meaning.
 *
 * postgres.js sets a query's `state` when it hands the query to a live
 * session, just before sending it; a query that failed with its state still
 * null was never sent (it waited for a connection, or for a host to answer).
 */
export function unreached(error: unknown, query?: unknown): Unreached | undefined {
  const sent = query === undefined || wasSent(query)
  if (error instanceof DatabaseUnreachableError) return error.unreached
  if (error instanceof postgres.PostgresError) {
    if (NOT_EXECUTED_SQLSTATES.has(error.code)) return 'not-sent'
    if (SESSION_LOST_SQLSTATES.has(error.code) || error.code.startsWith('08')) return sent ? 'outcome-unknown' : 'not-sent'
    return undefined
  }
  const code = (error as { code?: unknown } | null)?.code
  if (typeof code !== 'string') return undefined
  if (NOT_SENT_CLIENT_CODES.has(code)) return 'not-sent'
  if (LOST_CLIENT_CODES.has(code)) return sent ? 'outcome-unknown' : 'not-sent'
  return undefined
}

/** Whether postgres.js handed `query` to a session (its internal `state` is set just before sending). */
export const wasSent = (query: unknown) => (query as { state?: unknown }).state != null

/** Read-only server: the connection is on a standby (or on a node the failover engine has not opened for writes yet). */
export const isReadOnly = (error: unknown) => error instanceof postgres.PostgresError && error.code === '25006'

function describe(error: unknown): string {
  const { code, message } = (error ?? {}) as { code?: unknown; message?: unknown }
  return [code, message].filter((part) => typeof part === 'string' && part).join(' ') || String(error)
}

export interface ReplaceableOptions {
  /** At most one replacement per this many milliseconds (default 1000). */
  minIntervalMs?: number
  /** The old pool's sessions get this long to finish what they run (default 5). */
  drainSeconds?: number
  onReplace?: (reason: string) => void
}

export type ReplaceableSql = Sql & {
  /** A new pool takes every new query; the old one closes once its running queries finish. False if one was made less than minIntervalMs ago. */
  replace(reason: string): boolean
}

/**
 * A pool that can be swapped for a new one under the same handle. postgres.js
 * has no way to close one pooled session; when one is found on a read-only
 * server, replacing the pool is how that session (and any other like it) is
 * dropped: every new session of the new pool looks for the primary again.
 */
export function replaceablePool(make: () => Sql, options: ReplaceableOptions = {}): ReplaceableSql {
  const minIntervalMs = options.minIntervalMs ?? 1_000
  const drainSeconds = options.drainSeconds ?? 5
  let current = make()
  let replacedAt = -Infinity
  const retiring = new Set<Promise<void>>()

  const replace = (reason: string) => {
    if (performance.now() - replacedAt < minIntervalMs) return false
    replacedAt = performance.now()
    const old = current
    current = make()
    const closing = old.end({ timeout: drainSeconds }).catch(() => {})
    retiring.add(closing)
    void closing.finally(() => retiring.delete(closing))
    options.onReplace?.(reason)
    return true
  }
  const end: Sql['end'] = async (endOptions) => {
    await Promise.all([current.end(endOptions), ...retiring])
  }

  return new Proxy(current, {
    apply: (_, thisArg, args) => Reflect.apply(current, thisArg, args),
    get: (_, property) => (property === 'replace' ? replace : property === 'end' ? end : Reflect.get(current, property)),
  }) as ReplaceableSql
}

/**
 * The hosts of a connection URL, each as a URL of its own: libpq's
 * `postgres://user@h1:p1,h2:p2/db?…` lists several, a plain URL one.
 */
export function hostUrls(url: string): string[] {
  const match = /^(postgres(?:ql)?:\/\/)([^@/?#]*@)?([^/?#]*)(.*)$/.exec(url)
  if (!match || !match[3].includes(',')) return [url]
  const [, scheme, credentials = '', hosts, rest] = match
  const query = rest.replace(/([?&])target_session_attrs=[^&#]*&?/, '$1').replace(/[?&]$/, '')
  return hosts.split(',').map((host) => `${scheme}${credentials}${host}${query}`)
}

/**
 * The URL of the primary among the hosts of `url` (itself when it names one
 * host): dbmate, and any tool built on lib/pq, cannot read a URL with several
 * hosts. Throws when no host answers as a writable primary.
 */
export async function primaryUrl(url: string, connectTimeoutSeconds = 3): Promise<string> {
  const candidates = hostUrls(url)
  if (candidates.length === 1) return url
  const seen: string[] = []
  for (const candidate of candidates) {
    const sql = postgres(candidate, { max: 1, connect_timeout: connectTimeoutSeconds, onnotice: () => {} })
    try {
      const [row] = await sql<{ standby: boolean; read_only: string }[]>`
        select pg_catalog.pg_is_in_recovery() as standby, current_setting('transaction_read_only') as read_only`
      if (!row.standby && row.read_only === 'off') return candidate
      seen.push(row.standby ? 'a standby' : 'read-only')
    } catch (error) {
      seen.push(describe(error))
    } finally {
      await sql.end({ timeout: 1 })
    }
  }
  throw new Error(`no primary among the ${candidates.length} hosts of the database URL (${seen.join('; ')})`)
}
