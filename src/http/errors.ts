import { Elysia } from 'elysia'
import postgres from 'postgres'

/** An error the API raises itself, with the HTTP status it means. */
export class ApiError extends Error {
  constructor(
    readonly status: number,
    message: string,
  ) {
    super(message)
  }
}

export interface ErrorBody {
  error: string
  /** SQLSTATE of a database refusal, e.g. WA004. */
  code?: string
  /** The refusal's DETAIL, parsed when it is JSON (which product, how many left). */
  details?: unknown
  meta: { http_status: number }
}

/**
 * How each SQLSTATE reaches a client. WAnnn are the business refusals raised
 * by the SQL functions (see README, "SQL contract"); the others are
 * PostgreSQL's own codes that bad input or load can cause.
 */
const STATUS_BY_SQLSTATE: Record<string, number> = {
  WA001: 404, // cart not found
  WA002: 404, // product not found
  WA003: 422, // product not for sale
  WA004: 422, // insufficient stock
  WA005: 422, // cart items not open items of the cart
  WA006: 422, // nothing to order
  WA007: 422, // items of several sellers in one order
  '22001': 422, // string too long
  '22003': 422, // number out of range
  '22023': 422, // invalid parameter value
  '22P02': 400, // invalid text representation
  '23502': 422, // not-null violation
  '23503': 422, // foreign key violation
  '23505': 409, // unique violation
  '23514': 422, // check violation
}

/** Transient: the database is overloaded, restarting or unreachable. The client should retry. */
const RETRYABLE_SQLSTATES = new Set(['40001', '40P01', '53300', '55P03', '57014', '57P01', '57P02', '57P03'])
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
 * The HTTP status a SQLSTATE reaches a client with: 4xx for a refusal, 503
 * for a transient failure, 500 for anything else. SQL callers use it to read
 * a PostgresError the way an HTTP client reads the response.
 */
export function statusForSqlstate(sqlstate: string): number {
  if (RETRYABLE_SQLSTATES.has(sqlstate) || sqlstate.startsWith('08')) return 503
  return STATUS_BY_SQLSTATE[sqlstate] ?? 500
}

function fromPostgres(error: postgres.PostgresError): Response | undefined {
  const status = statusForSqlstate(error.code)
  if (status === 503) return unavailable()
  if (status === 500) return undefined
  const message = error.code.startsWith('WA')
    ? error.message
    : error.constraint_name
      ? `refused by the database rule ${error.constraint_name}`
      : error.message
  return respond(errorBody(status, message, { code: error.code, details: parseDetail(error.detail) }))
}

function unavailable(): Response {
  return respond(errorBody(503, 'the database is busy or unavailable; retry shortly'), { 'retry-after': '1' })
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
export const errorHandler = new Elysia({ name: 'waitress/errors' }).onError(
  { as: 'global' },
  ({ code, error, request }) => {
    if (error instanceof ApiError) return respond(errorBody(error.status, error.message))
    if (error instanceof postgres.PostgresError) {
      const response = fromPostgres(error)
      if (response) return response
    }
    const clientCode = (error as { code?: unknown }).code
    if (typeof clientCode === 'string' && RETRYABLE_CLIENT_CODES.has(clientCode)) return unavailable()

    switch (code) {
      case 'VALIDATION':
        return respond(errorBody(400, validationMessage(error)))
      case 'PARSE':
        return respond(errorBody(400, 'the request body is not valid JSON'))
      case 'NOT_FOUND':
        return respond(errorBody(404, `no route for ${request.method} ${new URL(request.url).pathname}`))
    }
    if (typeof code === 'number' && code >= 400 && code < 500)
      return respond(errorBody(code, error instanceof Error ? error.message : String(error)))

    console.error(
      JSON.stringify({
        level: 'error',
        msg: 'unhandled error',
        method: request.method,
        path: new URL(request.url).pathname,
        sqlstate: error instanceof postgres.PostgresError ? error.code : undefined,
        error: error instanceof Error ? error.stack : String(error),
      }),
    )
    return respond(errorBody(500, 'internal server error'))
  },
)
