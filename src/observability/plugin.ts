import { Elysia } from 'elysia'
import type { AppMetrics } from './app-metrics.ts'
import type { Logger } from './log.ts'

export interface ObservabilityOptions {
  /** Monotonic milliseconds (default performance.now). */
  clock?: () => number
  /**
   * Called once the request's log line and metrics are written. Elysia writes
   * them after the response is returned; workerd drops that work unless the
   * entry keeps the request alive (ctx.waitUntil) until this is called.
   */
  onResponded?: (request: Request) => void
}

export interface RequestInfo {
  id: string
  start: number
  /** SQLSTATE of the database error this request ended with, if any. */
  sqlstate?: string
}

const requests = new WeakMap<Request, RequestInfo>()

/** What the observability plugin knows of a request in flight. */
export const requestInfo = (request: Request): RequestInfo | undefined => requests.get(request)

// An incoming X-Request-Id is kept (so a trace spans services) when it is a sane token.
const REQUEST_ID = /^[A-Za-z0-9._:-]{1,128}$/

/**
 * One log line and one metrics observation per request: request id (an
 * incoming X-Request-Id, else a new one, echoed back), route, status,
 * latency, and the SQLSTATE when the database refused.
 */
export const observability = (logger: Logger, metrics: AppMetrics, options: ObservabilityOptions = {}) => {
  const clock = options.clock ?? (() => performance.now())
  return new Elysia({ name: 'waitress/observability' })
    .onRequest(({ request, set }) => {
      const incoming = request.headers.get('x-request-id')
      const id = incoming && REQUEST_ID.test(incoming) ? incoming : crypto.randomUUID()
      requests.set(request, { id, start: clock() })
      set.headers['x-request-id'] = id
    })
    .onAfterResponse({ as: 'global' }, ({ request, route, set, path }) => {
      try {
        const info = requests.get(request)
        if (!info) return
        const seconds = (clock() - info.start) / 1000
        const status = typeof set.status === 'number' ? set.status : 200
        const labels = { method: request.method, route: route || 'unmatched', status: String(status) }
        metrics.request(labels, seconds)
        logger.info(
          { req_id: info.id, method: request.method, route: labels.route, path, status, ms: Math.round(seconds * 10_000) / 10, sqlstate: info.sqlstate },
          'request',
        )
      } finally {
        options.onResponded?.(request)
      }
    })
}
