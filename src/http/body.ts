import { Elysia } from 'elysia'
import { ApiError } from './errors.ts'

/** application/json or any application/…+json, in any case, in UTF-8 (the only charset JSON has). */
const JSON_MEDIA_TYPE = /^application\/(?:[\w.-]+\+)?json$/i

/**
 * Whether a body may be read as JSON. No Content-Type at all counts as JSON:
 * clients written for the original service send their JSON bodies without one
 * (Go's net/http adds none), and the original service read them. A type that
 * is present must be JSON's, in UTF-8.
 */
function isJson(contentType: string | null): boolean {
  if (contentType === null || contentType.trim() === '') return true
  const [mediaType, ...parameters] = contentType.split(';').map((part) => part.trim())
  if (!JSON_MEDIA_TYPE.test(mediaType)) return false
  return parameters.every((parameter) => {
    const [name, value = ''] = parameter.split('=').map((part) => part.trim().toLowerCase())
    return name !== 'charset' || ['utf-8', 'utf8', '"utf-8"'].includes(value)
  })
}

const tooLarge = (maxBytes: number) => new ApiError(413, `the request body is larger than ${maxBytes} bytes`)

/** Reads at most maxBytes of a body that declares no length (chunked), never more whatever the client sends. */
async function readCapped(body: ReadableStream<Uint8Array>, maxBytes: number): Promise<Uint8Array> {
  const reader = body.getReader()
  const chunks: Uint8Array[] = []
  let size = 0
  for (;;) {
    const { done, value } = await reader.read()
    if (done) break
    size += value.byteLength
    if (size > maxBytes) {
      await reader.cancel().catch(() => {})
      throw tooLarge(maxBytes)
    }
    chunks.push(value)
  }
  const bytes = new Uint8Array(size)
  let offset = 0
  for (const chunk of chunks) {
    bytes.set(chunk, offset)
    offset += chunk.byteLength
  }
  return bytes
}

/**
 * The one body parser of the API, replacing Elysia's: every body is a JSON
 * object or nothing. Elysia's own parsers would read a form or plain text
 * into an object, skip validation of an optional body that is not an object,
 * and silently drop malformed JSON sent to a route whose body is optional.
 *
 * - larger than maxBytes (declared or actually sent): 413;
 * - a non-empty body declared as something else than JSON (text/plain,
 *   multipart/form-data, …): 415; no Content-Type at all is read as JSON;
 * - not UTF-8, not JSON, or JSON but not an object: 400;
 * - no body, or an empty one: `{}`, which the route's schema then judges.
 */
export const jsonBodies = (maxBytes: number) =>
  new Elysia({ name: 'waitress/json-bodies', seed: maxBytes }).onParse({ as: 'global' }, async ({ request }) => {
    const declaredLength = request.headers.get('content-length')
    if (declaredLength !== null && Number(declaredLength) > maxBytes) throw tooLarge(maxBytes)
    const contentType = request.headers.get('content-type')
    if (declaredLength !== null && Number(declaredLength) > 0 && !isJson(contentType)) throw unsupported()

    // A declared length bounds what the runtime reads (HTTP framing), so the
    // runtime's own read is safe and far cheaper than a stream reader; a
    // chunked body, which declares none, is read chunk by chunk up to the cap.
    const bytes = !request.body
      ? new Uint8Array()
      : declaredLength !== null
        ? new Uint8Array(await request.arrayBuffer())
        : await readCapped(request.body, maxBytes)
    if (bytes.byteLength > maxBytes) throw tooLarge(maxBytes)
    if (bytes.byteLength === 0) return {}
    if (!isJson(contentType)) throw unsupported()

    let value: unknown
    try {
      value = JSON.parse(new TextDecoder('utf-8', { fatal: true }).decode(bytes))
    } catch {
      throw new ApiError(400, 'the request body is not valid JSON')
    }
    if (value === null || typeof value !== 'object' || Array.isArray(value))
      throw new ApiError(400, 'the request body must be a JSON object')
    return value
  })

const unsupported = () =>
  new ApiError(415, 'send the request body as JSON: with content-type: application/json, or with no content-type at all')
