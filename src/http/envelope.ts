import { status, t } from 'elysia'
import { accessErrors, type Access } from './access.ts'
import { ErrorEnvelope } from '../models.ts'

/** A success in the envelope: `{ data, meta: { http_status } }`. */
export const ok = <const Code extends 200 | 201, T>(code: Code, data: T) => status(code, { data, meta: { http_status: code } })

/**
 * The error responses of a route: those its own work can answer, those its
 * access level adds (401, 403, 429), and the 503 any database call can meet.
 */
export const failures = (level: Access, ...codes: number[]) =>
  Object.fromEntries(
    [...new Set([...codes, ...accessErrors(level), ...(level === 'probe' ? [] : [503])])].sort((a, b) => a - b).map((code) => [code, ErrorEnvelope]),
  ) as Record<number, typeof ErrorEnvelope>

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
      }),
    ),
  },
  { additionalProperties: true },
)

/** Marks a replayed idempotent response. */
export function markReplay(set: { headers: Record<string, unknown> }, replayed: boolean) {
  if (replayed) set.headers['idempotent-replayed'] = 'true'
}
