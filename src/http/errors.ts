import { Elysia } from 'elysia'
import postgres from 'postgres'
import { DatabaseUnreachableError } from '../db/failover.ts'
import { DatabaseBusyError } from '../db/gate.ts'
import { REFUSALS } from '../generated/sql.ts'
import type { ErrorEnvelope } from '../models.ts'
import type { Logger } from '../observability/log.ts'
import { requestInfo } from '../observability/plugin.ts'

/** An error the API raises itself, with the HTTP status it means. */
export class ApiError extends Error {
  constructor(
    readonly status: number,
    message: string,
    /** Sent with the error, e.g. WWW-Authenticate on a 401, Retry-After on a 429. */
    readonly headers: Record<string, string> = {},
  ) {
    super(message)
  }
}

export type ErrorBody = ErrorEnvelope

/** Transient failures of the connection itself: the client should retry. */
const RETRYABLE_CLIENT_CODES = new Set(['CONNECTION_CLOSED', 'CONNECTION_ENDED', 'CONNECTION_DESTROYED', 'CONNECT_TIMEOUT', 'ECONNREFUSED', 'ECONNRESET'])

export function errorBody(status: number, message: string, extra: Partial<ErrorBody> = {}): ErrorBody {
  return { error: message, ...extra, meta: { http_status: status } }
}

function respond(body: ErrorBody, headers: Record<string, string> = {}): Response {
  return new Response(JSON.stringify(body), {
    status: body.meta.http_status,
    headers: { 'content-type': 'application/json; charset=utf-8', ...headers },
  })
}

function parseDetail(detail: string | undefined): unknown {
  if (!detail) return undefined
  try {
    return JSON.parse(detail)
  } catch {
    return detail
  }
}

/**
 * The HTTP status a SQLSTATE reaches a client with, from waitress.refusals
 * (generated into src/generated/sql.ts): 4xx for a refusal, 503 for a
 * transient failure, 500 for anything else. The proof code uses it to read a
 * PostgresError the way an HTTP client reads the response.
 */
export function statusForSqlstate(sqlstate: string): number {
  // Class 08: the connection failed; whatever the code, the database was unreachable.
  if (sqlstate.startsWith('08')) return 503
  return (REFUSALS as Record<string, { status: number }>)[sqlstate]?.status ?? 500
}

function fromPostgres(error: postgres.PostgresError): Response | undefined {
  const status = statusForSqlstate(error.code)
  // The service's own 503 (WA103, a checkout that may have been placed) keeps its code.
  if (status === 503) return error.code.startsWith('WA') ? respond(errorBody(status, error.message, { code: error.code }), RETRY_AFTER) : unavailable()
  if (status === 500) return undefined
  // A refusal of ours carries a JSON DETAIL meant for the caller. PostgreSQL's
  // own DETAIL can quote the whole row ("Failing row contains …"): only the
  // name of the rule it broke goes out.
  if (error.code.startsWith('WA')) return respond(errorBody(status, error.message, { code: error.code, details: parseDetail(error.detail) }))
  const rule = error.constraint_name
  return respond(
    errorBody(status, rule ? `refused by the database rule ${rule}` : error.message, {
      code: error.code,
      ...(rule ? { details: { constraint: rule } } : {}),
    }),
  )
}

const RETRY_AFTER = { 'retry-after': '1' }

function unavailable(): Response {
  return respond(errorBody(503, 'the database is busy or unavailable; retry shortly'), RETRY_AFTER)
}

function validationMessage(error: { customError?: unknown; valueError?: { path: string; message: string }; message: string }): string {
  if (typeof error.customError === 'string') return error.customError
  const first = error.valueError
  if (first) return first.path ? `${first.path.slice(1).replaceAll('/', '.')}: ${first.message}` : first.message
  return 'invalid request'
}

/**
 * The single place where anything thrown becomes an HTTP response in the
 * error envelope. Unknown errors are logged and answered with a bare 500.
 */
export const errorHandler = (logger: Logger) =>
  new Elysia({ name: 'waitress/errors' }).onError({ as: 'global' }, ({ code, error, request, set }) => {
    const info = requestInfo(request)
    if (error instanceof postgres.PostgresError && info) info.sqlstate = error.code
    const response = toResponse(code, error, request) ?? internalError(logger, error, request, info?.id)
    set.status = response.status
    if (info) response.headers.set('x-request-id', info.id)
    return response
  })

function toResponse(code: unknown, error: unknown, request: Request): Response | undefined {
  if (error instanceof ApiError) return respond(errorBody(error.status, error.message), error.headers)
  // Our body parser's refusals (413, 415, 400) reach here wrapped in Elysia's ParseError.
  const cause = (error as { cause?: unknown }).cause
  if (code === 'PARSE' && cause instanceof ApiError) return respond(errorBody(cause.status, cause.message), cause.headers)
  if (error instanceof DatabaseBusyError || error instanceof DatabaseUnreachableError) return unavailable()
  if (error instanceof postgres.PostgresError) {
    const response = fromPostgres(error)
    if (response) return response
  }
  const clientCode = (error as { code?: unknown }).code
  if (typeof clientCode === 'string' && RETRYABLE_CLIENT_CODES.has(clientCode)) return unavailable()

  switch (code) {
    case 'VALIDATION':
      // A response that breaks its own schema is our bug, not the client's: a 500.
      if ((error as { type?: string }).type === 'response') return undefined
      return respond(errorBody(400, validationMessage(error as Parameters<typeof validationMessage>[0])))
    case 'PARSE':
      return respond(errorBody(400, 'the request body is not valid JSON'))
    case 'NOT_FOUND':
      return respond(errorBody(404, `no route for ${request.method} ${new URL(request.url).pathname}`))
  }
  if (typeof code === 'number' && code >= 400 && code < 500)
    return respond(errorBody(code, error instanceof Error ? error.message : String(error)))
  return undefined
}

function internalError(logger: Logger, error: unknown, request: Request, requestId: string | undefined): Response {
  logger.error(
    {
      req_id: requestId,
      method: request.method,
      path: new URL(request.url).pathname,
      sqlstate: error instanceof postgres.PostgresError ? error.code : undefined,
      err: error instanceof Error ? { message: error.message, stack: error.stack } : String(error),
    },
    'unhandled error',
  )
  return respond(errorBody(500, 'internal server error'))
}
