/**
 * The shapes the API serves and takes, declared once: the routes validate and
 * document with them, the proof code and the tests read them. The documents
 * themselves are built in SQL (waitress.product_json, …); these schemas say
 * what they hold.
 */
import { t, type TSchema } from 'elysia'
import { Type, type IntegerOptions, type TLiteral } from '@sinclair/typebox'
import { ORDER_ACTIONS, ORDER_STATES } from './generated/sql.ts'

/**
 * How the OpenAPI document shows a value whose wire form differs from its
 * validator's (decimal digits in a path, decoded to a number). Symbol-keyed,
 * so no validator reads it and JSON.stringify never emits it; only
 * src/http/openapi.ts does.
 */
export const DOCUMENT_AS = Symbol.for('waitress.openapi.documentAs')

export const MAX_ID = Number.MAX_SAFE_INTEGER
/** The largest id a path or query carries: 15 decimal digits. */
export const MAX_ID_PARAM = 999_999_999_999_999
export const MAX_INT4 = 2_147_483_647
/** Paging of a list: limit defaults to 10 and is at most PAGE_MAX. */
export const PAGE_MAX = 100

// ---------------------------------------------------------------- primitives

/**
 * A JSON integer, strictly: Elysia's t.Integer also accepts numeric strings,
 * which is right for paths and queries but too lenient for a JSON body.
 */
export const Int = (options: IntegerOptions & { error?: string } = {}) => Type.Integer(options)

/** An id in a JSON body. */
export const Id = (name: string) => Int({ minimum: 1, maximum: MAX_ID, error: `${name} must be a positive integer id` })

/**
 * An id in a path or query string: decimal digits only (Number() would also
 * take "1e3" or "0x10"), at most 15 of them so it stays an exact JS number.
 */
export const IdParam = (name: string) =>
  t
    .Transform(
      t.String({
        pattern: '^[1-9][0-9]{0,14}$',
        error: `${name} must be a positive integer id`,
        [DOCUMENT_AS]: { type: 'integer', format: 'int64', minimum: 1, maximum: MAX_ID_PARAM, examples: [42] },
      }),
    )
    .Decode((value) => Number(value))
    .Encode((value) => String(value))

export const IdParams = t.Object({ id: IdParam('id') })

/** A count in a query string (limit, offset): decimal digits only, like IdParam, from `minimum` (0 or 1). */
export const CountParam = (minimum: 0 | 1, error: string, description?: string) =>
  t
    .Transform(
      t.String({
        pattern: minimum === 0 ? '^(?:0|[1-9][0-9]{0,14})$' : '^[1-9][0-9]{0,14}$',
        error,
        description,
        [DOCUMENT_AS]: { type: 'integer', minimum, maximum: MAX_ID_PARAM },
      }),
    )
    .Decode((value) => Number(value))
    .Encode((value) => String(value))

export const Timestamp = t.String({ format: 'date-time', examples: ['2026-11-27T09:00:00.000+00:00'] })

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

/** Paging by limit and offset, decimal digits only (t.Integer would also take "1e3", "0x10" or " " as 0). */
export const Page = t.Object({
  limit: t.Optional(CountParam(1, 'limit must be a positive integer', `Default 10, at most ${PAGE_MAX}.`)),
  offset: t.Optional(CountParam(0, 'offset must be an integer, 0 or more', 'Default 0.')),
})

export const pageLimit = (query: { limit?: number }) => Math.min(query.limit ?? 10, PAGE_MAX)

export const Note = Text({ maxLength: 1000, error: 'note must be a string of at most 1000 characters' })

// ---------------------------------------------------------------- documents

export const Product = t.Object(
  {
    id: Int(),
    name: t.String(),
    seller_id: Int(),
    price: Int({ description: 'Unit price in the smallest currency unit.' }),
    active: t.Boolean(),
    stock: Int({ description: 'Units still for sale; never below zero.' }),
    weight: Int({ description: 'Unit weight in grams.' }),
    created_at: Timestamp,
    updated_at: Timestamp,
  },
  { title: 'Product', additionalProperties: false },
)

export const CartItem = t.Object(
  {
    id: Int(),
    cart_id: Int(),
    quantity: Int(),
    purchased: t.Boolean(),
    product: Product,
    created_at: Timestamp,
    updated_at: Timestamp,
  },
  { title: 'CartItem', additionalProperties: false },
)

export const Cart = t.Object(
  {
    id: Int(),
    user_id: Int(),
    items: t.Array(CartItem, { description: 'Open (unpurchased) lines only.' }),
    created_at: Timestamp,
    updated_at: Timestamp,
  },
  { title: 'Cart', additionalProperties: false },
)

export const OrderItem = t.Object(
  {
    id: Int(),
    cart_item_id: Int(),
    quantity: Int(),
    price: Int({ description: 'Unit price when sold.' }),
    weight: Int({ description: 'Unit weight in grams when sold.' }),
    product: Product,
  },
  { title: 'OrderItem', additionalProperties: false },
)

export const Order = t.Object(
  {
    id: Int(),
    code: t.String({ description: 'OS + 2-digit year + id padded to 10 digits, e.g. OS260000000042.' }),
    buyer_id: Int(),
    seller_id: Int(),
    state: OneOf(ORDER_STATES),
    total_price: Int(),
    note: t.Nullable(t.String()),
    items: t.Array(OrderItem),
    paid_at: t.Nullable(Timestamp),
    created_at: Timestamp,
    updated_at: Timestamp,
  },
  { title: 'Order', additionalProperties: false },
)

export const StockMovement = t.Object(
  {
    id: Int(),
    product_id: Int(),
    quantity: Int({ description: 'Signed change of stock.' }),
    reason: OneOf(['initial', 'restock', 'correction', 'sale', 'release']),
    order_id: t.Nullable(Int()),
    note: t.Nullable(t.String()),
    created_at: Timestamp,
  },
  { title: 'StockMovement', additionalProperties: false },
)

export const AuditRow = t.Object(
  {
    product_id: Int(),
    name: t.String(),
    stock: Int(),
    ledger_stock: Int({ description: "Sum of the product's stock movements." }),
    sold_in_ledger: Int({ description: 'Units out to orders per the ledger: sales less releases.' }),
    sold_in_orders: Int({ description: 'Units in the lines of live orders.' }),
  },
  { title: 'AuditDiscrepancy', additionalProperties: false },
)

export const OrderAction = OneOf(ORDER_ACTIONS, { error: `action must be one of ${ORDER_ACTIONS.join(', ')}` })

export type Product = typeof Product.static
export type CartItem = typeof CartItem.static
export type Cart = typeof Cart.static
export type OrderItem = typeof OrderItem.static
export type Order = typeof Order.static
export type StockMovement = typeof StockMovement.static
export type AuditRow = typeof AuditRow.static

/** What the checkout functions return: the orders placed, and whether they are a replay of an Idempotency-Key. */
export interface Placed {
  orders: Order[]
  replayed: boolean
}

// ---------------------------------------------------------------- envelopes

export const Meta = t.Object(
  { http_status: Int({ description: 'The HTTP status, repeated for clients that only see the body.', examples: [200] }) },
  { title: 'Meta', additionalProperties: false },
)

/**
 * Every success: `{ data, meta: { http_status } }`. additionalProperties is
 * explicit on every top-level schema: Elysia sets it, in place, on those that
 * lack it when it first compiles their validator, which would change the
 * OpenAPI document after the first request to a route.
 */
export const Envelope = <T extends TSchema>(data: T) => t.Object({ data, meta: Meta }, { additionalProperties: false })

/** Every error: `{ error, meta: { http_status } }`, plus the code and its details for a refusal. */
export const ErrorEnvelope = t.Object(
  {
    error: t.String({ description: 'What went wrong, for a human.' }),
    code: t.Optional(t.String({ description: 'The refusal code (a SQLSTATE such as WA004): see docs/sql-contract.md.' })),
    details: t.Optional(t.Unknown({ description: 'Machine-readable details of a refusal, e.g. { shortages: [...] }.' })),
    meta: Meta,
  },
  {
    title: 'ErrorEnvelope',
    additionalProperties: false,
    description: 'Every error: { error, meta: { http_status } }, plus code and details for a refusal.',
  },
)

export type ErrorEnvelope = typeof ErrorEnvelope.static
