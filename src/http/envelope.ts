import { t, status, type TSchema } from 'elysia'
import { Type, type IntegerOptions, type TLiteral } from '@sinclair/typebox'

export const Meta = t.Object({ http_status: t.Integer({ description: 'The HTTP status, repeated for clients that only see the body.' }) })

/** Every success: `{ data, meta: { http_status } }`. */
export const envelope = <T extends TSchema>(data: T) => t.Object({ data, meta: Meta })

/** Every error: `{ error, meta: { http_status } }`, plus the SQLSTATE and its details for database refusals. */
export const ErrorEnvelope = t.Object(
  {
    error: t.String({ description: 'What went wrong, for a human.' }),
    code: t.Optional(t.String({ description: 'SQLSTATE of a database refusal, e.g. WA004 (see the SQL contract).' })),
    details: t.Optional(t.Unknown({ description: 'Machine-readable details of a refusal, e.g. { shortages: [...] }.' })),
    meta: Meta,
  },
  { description: 'Error envelope' },
)

export const errors = (...codes: number[]) => Object.fromEntries(codes.map((code) => [code, ErrorEnvelope]))

export const ok = <const Code extends 200 | 201, T>(code: Code, data: T) =>
  status(code, { data, meta: { http_status: code } })

export const MAX_ID = Number.MAX_SAFE_INTEGER
export const MAX_INT4 = 2_147_483_647

/**
 * A JSON integer, strictly: Elysia's t.Integer also accepts numeric strings,
 * which is right for paths and queries but too lenient for a JSON body.
 */
export const Int = (options: IntegerOptions & { error?: string }) => Type.Integer(options)

/** An id in a JSON body. */
export const Id = (name: string) => Int({ minimum: 1, maximum: MAX_ID, error: `${name} must be a positive integer id` })

/**
 * An id in a path or query string: decimal digits only (Number() would also
 * take "1e3" or "0x10"), at most 15 of them so it stays an exact JS number.
 */
export const IdParam = (name: string) =>
  t
    .Transform(t.String({ pattern: '^[1-9][0-9]{0,14}$', error: `${name} must be a positive integer id` }))
    .Decode((value) => Number(value))
    .Encode((value) => String(value))

export const IdParams = t.Object({ id: IdParam('id') })

/** A count in a query string (limit, offset): decimal digits only, like IdParam, from `minimum` (0 or 1). */
export const CountParam = (minimum: 0 | 1, error: string, description?: string) =>
  t
    .Transform(t.String({ pattern: minimum === 0 ? '^(?:0|[1-9][0-9]{0,14})$' : '^[1-9][0-9]{0,14}$', error, description }))
    .Decode((value) => Number(value))
    .Encode((value) => String(value))

export const Timestamp = t.String({ format: 'date-time' })

/** Paging of a list: limit defaults to 10 and is capped at PAGE_MAX. */
export const PAGE_MAX = 100

// Decimal digits only: t.Integer would also take "1e3", "0x10" or " " (as 0).
export const Page = t.Object({
  limit: t.Optional(CountParam(1, 'limit must be a positive integer', `Default 10, at most ${PAGE_MAX}.`)),
  offset: t.Optional(CountParam(0, 'offset must be an integer, 0 or more', 'Default 0.')),
})

export const pageLimit = (query: { limit?: number }) => Math.min(query.limit ?? 10, PAGE_MAX)

/**
 * One of a fixed set of strings. (Elysia's t.UnionEnum fills an absent
 * optional query value with the first member, which would turn "no filter"
 * into a filter.)
 */
export const OneOf = <const T extends readonly [string, ...string[]]>(values: T, options: { error?: string; description?: string } = {}) =>
  t.Union(values.map((value) => t.Literal(value)) as [TLiteral<T[number]>], options)
/**
 * Text a client sends: no NUL (PostgreSQL text cannot hold it) and no lone
 * UTF-16 surrogate (it has no UTF-8 form, so it could not be stored as sent).
 */
export const Text = (options: { minLength?: number; maxLength: number; error: string; description?: string }) =>
  t.String({ ...options, pattern: '^(?:[^\\u0000\\uD800-\\uDFFF]|[\\uD800-\\uDBFF][\\uDC00-\\uDFFF])*$' })
