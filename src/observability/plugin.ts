import { Elysia } from 'elysia'
import type { Logger } from './logger.ts'
import type { Metrics } from './metrics.ts'

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
export const observability = (logger: Logger, metrics: Metrics) =>
  new Elysia({ name: 'waitress/observability' })
    .onRequest(({ request, set }) => {
      const incoming = request.headers.get('x-request-id')
      const id = incoming && REQUEST_ID.test(incoming) ? incoming : crypto.randomUUID()
      requests.set(request, { id, start: performance.now() })
      set.headers['x-request-id'] = id
    })
    .onAfterResponse({ as: 'global' }, ({ request, route, set, path }) => {
      const info = requests.get(request)
      if (!info) return
      const seconds = (performance.now() - info.start) / 1000
      const status = typeof set.status === 'number' ? set.status : 200
      const labels = { method: request.method, route: route || 'unmatched', status: String(status) }
      metrics.httpRequests.inc(labels)
      metrics.httpDuration.observe(labels, seconds)
      logger.info(
        { req_id: info.id, method: request.method, route: labels.route, path, status, ms: Math.round(seconds * 10_000) / 10, sqlstate: info.sqlstate },
        'request',
      )
    })
