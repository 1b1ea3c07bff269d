import { t } from 'elysia'
import { ok } from './envelope'

/**
 * The Idempotency-Key request header of the routes that create something.
 * Other headers pass (a headers schema describes only what a route reads).
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
          'with Idempotent-Replayed: true) and orders nothing more, for 24 hours; the same key with another request ' +
          'is 422 (WA101). Scoped per buyer. A refused request records nothing, so its key can be retried.',
      }),
    ),
  },
  { additionalProperties: true },
)

/** What an idempotent SQL function returns: place_order_idempotent, place_buyer_order_idempotent, … */
export interface IdempotentResult<T> {
  status: number
  data: T
  replayed: boolean
}

/**
 * The response of an idempotent call: the recorded status (the route's
 * success code, `code`) and data, marked with Idempotent-Replayed when it is
 * a replay.
 */
export function idempotentReply<const Code extends 200 | 201, T>(
  set: { headers: Record<string, unknown> },
  code: Code,
  result: IdempotentResult<T>,
) {
  if (result.replayed) set.headers['idempotent-replayed'] = 'true'
  return ok(result.status as Code, result.data)
}
