import { status, t, type TSchema } from 'elysia'
import { Type } from '@sinclair/typebox'
import { withHeaders } from '@elysiajs/openapi'
import { accessErrors, type Access } from './access.ts'
import { ErrorEnvelope } from '../models.ts'

/** A success in the envelope: `{ data, meta: { http_status } }`. */
export const ok = <const Code extends 200 | 201, T>(code: Code, data: T) => status(code, { data, meta: { http_status: code } })

/** Seconds to wait before retrying: on a 429 (rate limit) and a 503 (database busy, or the service draining). */
const RetryAfter = Type.Integer({ minimum: 0, description: 'Seconds to wait before retrying.', examples: [1] })

/** The challenge of a 401: `Bearer realm="waitress"`, with `error="invalid_token"` for a bad token. */
const WwwAuthenticate = Type.String({ description: 'The bearer challenge (RFC 6750).', examples: ['Bearer realm="waitress"'] })

/** The error envelope of a status, with the headers that status carries (for the OpenAPI document). */
const errorOf = (code: number) =>
  code === 429 || code === 503
    ? withHeaders(ErrorEnvelope, { 'retry-after': RetryAfter })
    : code === 401
      ? withHeaders(ErrorEnvelope, { 'www-authenticate': WwwAuthenticate })
      : ErrorEnvelope

type AccessErrors<Level extends Access> = Level extends 'probe'
  ? never
  : Level extends 'public'
    ? 429 | 503
    : Level extends 'operator'
      ? 401 | 403 | 429 | 503
      : 401 | 429 | 503

/**
 * The error responses of a route, each in the error envelope: those its own
 * work can answer, those its access level adds (401, 403, 429), the 503 any
 * database call can meet, and the 500 the error handler gives to anything
 * unexpected. The keys stay literal, so Eden Treaty types each status's error.
 */
export const failures = <const Level extends Access, const Codes extends readonly number[]>(level: Level, ...codes: Codes) =>
  Object.fromEntries(
    [...new Set([...codes, ...accessErrors(level), ...(level === 'probe' ? [] : [503]), 500])]
      .sort((a, b) => a - b)
      .map((code) => [code, errorOf(code)]),
  ) as { [Code in Codes[number] | AccessErrors<Level> | 500]: typeof ErrorEnvelope }

/** Idempotent-Replayed: true on a response that replays the first one for an Idempotency-Key. */
const IdempotentReplayed = Type.Literal('true', {
  description: 'Present, as true, when this response replays the first response to the same Idempotency-Key.',
})

/** A success response that an Idempotency-Key retry can replay: documents the Idempotent-Replayed header. */
export const replayable = <T extends TSchema>(schema: T) => withHeaders(schema, { 'idempotent-replayed': IdempotentReplayed }) as T

/**
 * The Idempotency-Key request header of the routes that create or change
 * something. Other headers pass (a headers schema describes only what a route reads).
 */
export const IdempotencyHeaders = t.Object(
  {
    'idempotency-key': t.Optional(
      t.String({
        minLength: 1,
        maxLength: 255,
        pattern: '^[\\x20-\\x7E]+$',
        error: 'Idempotency-Key must be 1 to 255 printable ASCII characters',
        description:
          'Makes a retry safe: the same key with the same request returns the first response (status and body, ' +
          'with Idempotent-Replayed: true) and does nothing more, for 24 hours; the same key with another request ' +
          'is 422 (WA101). Scoped to the user who sends it. A refused request records nothing, so its key can be retried.',
        examples: ['6c1f7f1e-5d41-4c2e-9d7e-0f5a0c1d2e3f'],
      }),
    ),
  },
  { additionalProperties: true },
)

/** Marks a replayed idempotent response. */
export function markReplay(set: { headers: Record<string, unknown> }, replayed: boolean) {
  if (replayed) set.headers['idempotent-replayed'] = 'true'
}
