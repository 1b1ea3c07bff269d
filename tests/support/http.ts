import { createApp } from '../../src/app'
import { apiSql } from './db'

export const app = createApp(apiSql())

export interface Reply<T = any> {
  status: number
  body: T
  headers: Headers
}

/** Calls the app in-process, as a client would over HTTP. A body object is sent as JSON. */
export async function req<T = any>(path: string, init: { method?: string; body?: unknown; raw?: string; headers?: Record<string, string> } = {}): Promise<Reply<T>> {
  const headers: Record<string, string> = { ...init.headers }
  let body: string | undefined = init.raw
  if (init.body !== undefined) {
    body = JSON.stringify(init.body)
    headers['content-type'] ??= 'application/json'
  }
  const response = await app.handle(
    new Request(`http://localhost${path}`, { method: init.method ?? (body === undefined ? 'GET' : 'POST'), headers, body }),
  )
  const text = await response.text()
  let parsed: unknown = text
  try {
    parsed = JSON.parse(text)
  } catch {}
  return { status: response.status, body: parsed as T, headers: response.headers }
}

/** The error envelope: exactly { error, meta } plus, for database refusals, code and details. */
export function expectErrorEnvelope(reply: Reply, status: number) {
  if (reply.status !== status) throw new Error(`expected ${status}, got ${reply.status}: ${JSON.stringify(reply.body)}`)
  const { error, meta, code, details, ...rest } = reply.body
  if (typeof error !== 'string' || error.length === 0) throw new Error(`no error message in ${JSON.stringify(reply.body)}`)
  if (meta?.http_status !== status) throw new Error(`meta.http_status is not ${status} in ${JSON.stringify(reply.body)}`)
  if (Object.keys(rest).length > 0) throw new Error(`unexpected fields in the error envelope: ${Object.keys(rest)}`)
  return { error: error as string, code: code as string | undefined, details }
}
