import { createApp } from '../../src/app.ts'
import { swaggerUiAssets } from '../../src/http/swagger-ui-assets.ts'
import { apiSql } from './db.ts'

export const app = createApp(apiSql(), { docsAssets: swaggerUiAssets })

export interface Reply<T = any> {
  status: number
  body: T
  headers: Headers
}

export interface RequestInit_ {
  method?: string
  body?: unknown
  raw?: string | Uint8Array
  headers?: Record<string, string>
}

/** A `req` for another app, e.g. one with authentication on. */
export function requester(target: { handle(request: Request): Promise<Response> | Response }) {
  return async function <T = any>(path: string, init: RequestInit_ = {}): Promise<Reply<T>> {
    const headers: Record<string, string> = { ...init.headers }
    let body: string | Uint8Array | undefined = init.raw
    if (init.body !== undefined) {
      body = JSON.stringify(init.body)
      headers['content-type'] ??= 'application/json'
    }
    const response = await target.handle(
      new Request(`http://localhost${path}`, { method: init.method ?? (body === undefined ? 'GET' : 'POST'), headers, body }),
    )
    const text = await response.text()
    let parsed: unknown = text
    try {
      parsed = JSON.parse(text)
    } catch {}
    return { status: response.status, body: parsed as T, headers: response.headers }
  }
}

/** Calls the app in-process, as a client would over HTTP. A body object is sent as JSON. */
export const req = requester(app)

/** The error envelope: exactly { error, meta } plus, for database refusals, code and details. */
export function expectErrorEnvelope(reply: Reply, status: number) {
  if (reply.status !== status) throw new Error(`expected ${status}, got ${reply.status}: ${JSON.stringify(reply.body)}`)
  const { error, meta, code, details, ...rest } = reply.body
  if (typeof error !== 'string' || error.length === 0) throw new Error(`no error message in ${JSON.stringify(reply.body)}`)
  if (meta?.http_status !== status) throw new Error(`meta.http_status is not ${status} in ${JSON.stringify(reply.body)}`)
  if (Object.keys(rest).length > 0) throw new Error(`unexpected fields in the error envelope: ${Object.keys(rest)}`)
  return { error: error as string, code: code as string | undefined, details }
}
