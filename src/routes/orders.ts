import { Elysia, t } from 'elysia'
import type { Sql } from '../db/client'
import type { Checkout } from '../checkout'
import { ApiError } from '../http/errors'
import { envelope, errors, Id, IdParam, IdParams, ok, OneOf, Page, pageLimit, Text, Timestamp } from '../http/envelope'
import { actingAs, actorOf, bearerAuth, userScope } from '../http/identity'
import { IdempotencyHeaders } from '../http/idempotency'
import { Product } from './products'

export const ORDER_STATES = ['pending', 'paid', 'accepted', 'delivered', 'remitted', 'refunded', 'rejected', 'cancelled', 'expired'] as const

export const OrderItem = t.Object(
  {
    id: t.Integer(),
    cart_item_id: t.Integer(),
    quantity: t.Integer(),
    price: t.Integer({ description: 'Unit price when sold.' }),
    weight: t.Integer({ description: 'Unit weight in grams when sold.' }),
    product: Product,
  },
  { title: 'OrderItem' },
)

export const Order = t.Object(
  {
    id: t.Integer(),
    code: t.String({ description: 'OS + 2-digit year + id padded to 10 digits, e.g. OS260000000042.' }),
    buyer_id: t.Integer(),
    seller_id: t.Integer(),
    state: OneOf(ORDER_STATES),
    total_price: t.Integer(),
    note: t.Nullable(t.String()),
    items: t.Array(OrderItem),
    paid_at: t.Nullable(Timestamp),
    created_at: Timestamp,
    updated_at: Timestamp,
  },
  { title: 'Order' },
)

export const Note = Text({ maxLength: 1000, error: 'note must be a string of at most 1000 characters' })

const NewOrder = t.Object({
  buyer_id: t.Optional(Id('buyer_id')),
  cart_item_ids: t.Array(Id('cart_item_ids[]'), {
    minItems: 1,
    maxItems: 1000,
    error: 'cart_item_ids must be a list of 1 to 1000 cart item ids',
  }),
  note: t.Optional(Note),
}, { additionalProperties: false })

/**
 * The lifecycle actions, for the API's documentation. Each runs through
 * order_action_as(), which checks who may act and calls the action's SQL
 * function (pay_order, accept_order, …).
 */
const TRANSITIONS = {
  pay: 'Pay: pending → paid',
  accept: 'Seller accepts: paid → accepted',
  reject: 'Seller rejects: paid → rejected (stock given back)',
  deliver: 'Delivered: accepted → delivered',
  remit: 'Seller paid out: delivered → remitted',
  refund: 'Refund a paid order: rejected or cancelled → refunded',
  cancel: 'Buyer cancels before delivery: pending, paid or accepted → cancelled (stock given back)',
} as const
const ACTIONS = Object.keys(TRANSITIONS) as [keyof typeof TRANSITIONS, ...(keyof typeof TRANSITIONS)[]]

const OrderFilter = t.Object({
  ...Page.properties,
  buyer_id: t.Optional(IdParam('buyer_id')),
  seller_id: t.Optional(IdParam('seller_id')),
  state: t.Optional(OneOf(ORDER_STATES, { error: `state must be one of ${ORDER_STATES.join(', ')}` })),
})

export const orderRoutes = (sql: Sql, checkout: Checkout) =>
  new Elysia({ prefix: '/orders', detail: { tags: ['orders'] } })
    .post(
      '',
      async ({ body, headers, request, set }) => {
        const buyerId = actingAs(actorOf(request), body.buyer_id, 'buyer_id')
        const placed = await checkout.place(
          { buyer_id: buyerId, item_ids: body.cart_item_ids, note: body.note ?? null, one_seller: true },
          headers['idempotency-key'],
        )
        if (placed.replayed) set.headers['idempotent-replayed'] = 'true'
        return ok(201, placed.orders[0] as typeof Order.static)
      },
      {
        headers: IdempotencyHeaders,
        body: NewOrder,
        response: { 201: envelope(Order), ...errors(400, 401, 403, 413, 415, 422, 429) },
        detail: {
          summary: "Order some items of the buyer's cart, all from one seller",
          description:
            '422 when an id is not an open item of the buyer\'s cart (WA005), the items span sellers (WA007: order ' +
            'per seller, or check out the cart), a product is not for sale (WA003) or stock is short (WA004). ' +
            "With authentication the buyer is the token's user (buyer_id may be left out; another is 403). " +
            'With Idempotency-Key a retry returns the first response; the same key with other items is 422 (WA101).',
          security: bearerAuth,
        },
      },
    )
    .get(
      '',
      async ({ query, request }) => {
        const scope = userScope(actorOf(request))
        const rows = await sql`
          select public.order_json(o) as order
            from public.orders o
           where (${scope}::bigint is null or o.buyer_id = ${scope} or o.seller_id = ${scope})
             and (${query.buyer_id ?? null}::bigint is null or o.buyer_id = ${query.buyer_id ?? null})
             and (${query.seller_id ?? null}::bigint is null or o.seller_id = ${query.seller_id ?? null})
             and (${query.state ?? null}::public.order_state is null or o.state = ${query.state ?? null})
           order by o.id
           limit ${pageLimit(query)} offset ${query.offset ?? 0}`
        return ok(200, rows.map((row) => row.order))
      },
      {
        query: OrderFilter,
        response: { 200: envelope(t.Array(Order)), ...errors(400, 401, 429) },
        detail: {
          summary: 'List orders by id, optionally of one buyer, seller or state',
          description: 'With authentication, only orders the token\'s user bought or sold.',
          security: bearerAuth,
        },
      },
    )
    .get(
      '/:id',
      async ({ params, request }) => {
        const [row] = await sql`select public.order_as(${userScope(actorOf(request))}, ${params.id}) as order`
        if (!row.order) throw new ApiError(404, `order ${params.id} not found`)
        return ok(200, row.order)
      },
      {
        params: IdParams,
        response: { 200: envelope(Order), ...errors(400, 401, 404, 429) },
        detail: {
          summary: 'Get an order with its lines',
          description: 'With authentication, only its buyer and its seller see it; for anyone else it is 404.',
          security: bearerAuth,
        },
      },
    )
    .post(
      '/:id/:action',
      async ({ params, headers, request, set }) => {
        const user = userScope(actorOf(request))
        const key = headers['idempotency-key']
        if (key !== undefined && params.action !== 'pay') throw new ApiError(400, 'Idempotency-Key is taken by pay only')
        if (key !== undefined) {
          const [paid] = await sql<{ status: number; data: typeof Order.static; replayed: boolean }[]>`
            select * from public.pay_order_idempotent(${user}, ${params.id}, ${key})`
          if (paid.replayed) set.headers['idempotent-replayed'] = 'true'
          return ok(200, paid.data)
        }
        const [row] = await sql`select public.order_action_as(${user}, ${params.id}, ${params.action}) as order`
        return ok(200, row.order)
      },
      {
        params: t.Object({
          id: IdParam('id'),
          action: OneOf(ACTIONS, { error: `action must be one of ${ACTIONS.join(', ')}` }),
        }),
        headers: IdempotencyHeaders,
        response: { 200: envelope(Order), ...errors(400, 401, 403, 404, 409, 429) },
        detail: {
          security: bearerAuth,
          summary: 'Move an order through its lifecycle',
          description:
            Object.entries(TRANSITIONS)
              .map(([action, summary]) => `**${action}**: ${summary}`)
              .join('. ') +
            '. 404 unknown order (WA008); 409 when the order is not in a state the action applies to ' +
            '(WA009: details.state is the current state, details.allowed_from the states it needs). With ' +
            'authentication, the buyer pays and cancels, the seller does the rest (403 WA011 otherwise), and an order ' +
            'of someone else is 404. pay takes an Idempotency-Key: a retry returns the first response instead of a 409.',
        },
      },
    )
