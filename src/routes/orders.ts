import { Elysia, t } from 'elysia'
import type { Sql } from '../db/client'
import { ApiError } from '../http/errors'
import { envelope, errors, Id, IdParams, ok, Text, Timestamp } from '../http/envelope'
import { actingAs, actorOf, bearerAuth, userScope } from '../http/identity'
import { IdempotencyHeaders, idempotentReply, type IdempotentResult } from '../http/idempotency'
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
    state: t.UnionEnum(ORDER_STATES),
    total_price: t.Integer(),
    note: t.Nullable(t.String()),
    items: t.Array(OrderItem),
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

export const orderRoutes = (sql: Sql) =>
  new Elysia({ prefix: '/orders', detail: { tags: ['orders'] } })
    .post(
      '',
      async ({ body, headers, request, set }) => {
        const buyerId = actingAs(actorOf(request), body.buyer_id, 'buyer_id')
        const [result] = await sql<IdempotentResult<typeof Order.static>[]>`
          select * from public.place_buyer_order_idempotent(${buyerId}, ${body.cart_item_ids}::bigint[],
                                                            ${body.note ?? null}, ${headers['idempotency-key'] ?? null})`
        return idempotentReply(set, 201, result)
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
