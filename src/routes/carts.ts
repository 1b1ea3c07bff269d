import { Elysia, t } from 'elysia'
import type { Sql } from '../db/client'
import type { Checkout } from '../checkout'
import { envelope, errors, Id, IdParam, IdParams, Int, MAX_INT4, ok, Timestamp } from '../http/envelope'
import { actingAs, actorOf, bearerAuth, userScope } from '../http/identity'
import { IdempotencyHeaders } from '../http/idempotency'
import { Product } from './products'
import { Note, Order } from './orders'

export const CartItem = t.Object(
  {
    id: t.Integer(),
    cart_id: t.Integer(),
    quantity: t.Integer(),
    purchased: t.Boolean(),
    product: Product,
    created_at: Timestamp,
    updated_at: Timestamp,
  },
  { title: 'CartItem' },
)

export const Cart = t.Object(
  {
    id: t.Integer(),
    user_id: t.Integer(),
    items: t.Array(CartItem, { description: 'Open (unpurchased) lines only.' }),
    created_at: Timestamp,
    updated_at: Timestamp,
  },
  { title: 'Cart' },
)

const NewCartItem = t.Object({
  cart_id: Id('cart_id'),
  product_id: Id('product_id'),
  quantity: Int({ minimum: 1, maximum: MAX_INT4, error: `quantity must be a whole number from 1 to ${MAX_INT4}` }),
}, { additionalProperties: false })

export const cartRoutes = (sql: Sql, checkout: Checkout) =>
  new Elysia({ prefix: '/carts', detail: { tags: ['carts'] } })
    .get(
      '',
      async ({ query, request }) => {
        const userId = actingAs(actorOf(request), query.user_id, 'user_id')
        const [row] = await sql`select public.cart_json(c) as cart from public.cart_for_user(${userId}) c`
        return ok(200, row.cart)
      },
      {
        query: t.Object({ user_id: t.Optional(IdParam('user_id')) }),
        response: { 200: envelope(Cart), ...errors(400, 401, 403, 429) },
        detail: {
          summary: "The user's cart with its open items; created on first use",
          description: "With authentication: the token's user's cart (user_id may be left out; another user's is 403).",
          security: bearerAuth,
        },
      },
    )
    .post(
      '/items',
      async ({ body, request }) => {
        const [row] = await sql`
          select public.cart_item_json(ci) as item
            from public.add_cart_item_as(${userScope(actorOf(request))}, ${body.cart_id}, ${body.product_id}, ${body.quantity}) ci`
        return ok(201, row.item)
      },
      {
        body: NewCartItem,
        response: { 201: envelope(CartItem), ...errors(400, 401, 404, 413, 415, 422, 429) },
        detail: {
          security: bearerAuth,
          summary: 'Add a product to a cart',
          description:
            'A product already on an open line of the cart adds to that line. The stock check here is a ' +
            'courtesy; the guarantee is made at checkout. 404 for an unknown cart or product (WA001, WA002), and ' +
            "for another user's cart; 422 for a product not for sale (WA003) or a line above the current stock (WA004).",
        },
      },
    )
    .post(
      '/:id/checkout',
      async ({ params, body, headers, request, set }) => {
        const placed = await checkout.place(
          { cart_id: params.id, item_ids: null, note: body?.note ?? null, one_seller: false, user_id: userScope(actorOf(request)) },
          headers['idempotency-key'],
        )
        if (placed.replayed) set.headers['idempotent-replayed'] = 'true'
        return ok(201, placed.orders as (typeof Order.static)[])
      },
      {
        params: IdParams,
        headers: IdempotencyHeaders,
        body: t.Optional(t.Object({ note: t.Optional(Note) }, { additionalProperties: false })),
        response: { 201: envelope(t.Array(Order)), ...errors(400, 401, 404, 413, 415, 422, 429) },
        detail: {
          security: bearerAuth,
          summary: 'Check out the whole cart: one order per seller',
          description:
            'One database call (place_order): all or nothing. 404 unknown cart (WA001); 422 empty cart (WA006), ' +
            'a product not for sale (WA003), insufficient stock (WA004, details.shortages lists every short line). ' +
            "Another user's cart is 404. With Idempotency-Key a retry returns the first response; the same key " +
            'with another note is 422 (WA101).',
        },
      },
    )
