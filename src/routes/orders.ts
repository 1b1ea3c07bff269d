import { Elysia, t } from 'elysia'
import type { Sql } from '../db/client'
import { ApiError } from '../http/errors'
import { envelope, errors, Id, IdParams, ok, Timestamp } from '../http/envelope'
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

export const Note = t.String({ maxLength: 1000, error: 'note must be a string of at most 1000 characters' })

const NewOrder = t.Object({
  buyer_id: Id('buyer_id'),
  cart_item_ids: t.Array(Id('cart_item_ids[]'), {
    minItems: 1,
    maxItems: 1000,
    error: 'cart_item_ids must be a list of 1 to 1000 cart item ids',
  }),
  note: t.Optional(Note),
})

export const orderRoutes = (sql: Sql) =>
  new Elysia({ prefix: '/orders', detail: { tags: ['orders'] } })
    .post(
      '',
      async ({ body }) => {
        const [row] = await sql`
          select public.place_buyer_order(${body.buyer_id}, ${body.cart_item_ids}::bigint[], ${body.note ?? null}) as order`
        return ok(201, row.order)
      },
      {
        body: NewOrder,
        response: { 201: envelope(Order), ...errors(400, 422) },
        detail: {
          summary: "Order some items of the buyer's cart, all from one seller",
          description:
            '422 when an id is not an open item of the buyer\'s cart (WA005), the items span sellers (WA007: order ' +
            'per seller, or check out the cart), a product is not for sale (WA003) or stock is short (WA004).',
        },
      },
    )
    .get(
      '/:id',
      async ({ params }) => {
        const [row] = await sql`select public.order_json(o) as order from public.orders o where o.id = ${params.id}`
        if (!row) throw new ApiError(404, `order ${params.id} not found`)
        return ok(200, row.order)
      },
      {
        params: IdParams,
        response: { 200: envelope(Order), ...errors(400, 404) },
        detail: { summary: 'Get an order with its lines' },
      },
    )
