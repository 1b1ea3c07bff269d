import { Elysia, t } from 'elysia'
import type { Sql } from '../db/client.ts'
import type { OrderPlacer } from '../order-placer.ts'
import { actingAs, userScope, type AccessPlugin } from '../http/access.ts'
import { failures, IdempotencyHeaders, markReplay, ok, replayable } from '../http/envelope.ts'
import { LIMITS } from '../generated/sql.ts'
import { Cart, CartItem, Envelope, Id, IdParam, IdParams, Int, MAX_INT4, Note, Order } from '../models.ts'

const NewCartItem = t.Object(
  {
    cart_id: Id('cart_id'),
    product_id: Id('product_id'),
    quantity: Int({
      minimum: 1,
      maximum: MAX_INT4,
      error: `quantity must be a whole number from 1 to ${MAX_INT4}`,
      description: `Units to add. The line may hold at most ${LIMITS.max_line_quantity}, counting what it holds already (422 WA115 above).`,
    }),
  },
  { additionalProperties: false },
)

const CartItemChange = t.Object(
  {
    quantity: Int({
      minimum: 1,
      maximum: MAX_INT4,
      error: `quantity must be a whole number from 1 to ${MAX_INT4}; to take the line out of the cart, DELETE it`,
      description: `The line's new quantity: 1 to ${LIMITS.max_line_quantity} (422 WA115 above).`,
    }),
  },
  { additionalProperties: false },
)

const CheckoutBody = t.Optional(t.Object({ note: t.Optional(Note) }, { additionalProperties: false }))

/** Carts and their checkout: each route is one call of an api function. */
export const cartRoutes = (sql: Sql, access: AccessPlugin, placer: OrderPlacer) =>
  new Elysia({ prefix: '/carts', detail: { tags: ['carts'] } })
    .use(access)
    .get(
      '',
      async ({ query, actor }) => {
        const userId = actingAs(actor, query.user_id, 'user_id')
        const [row] = await sql`select api.cart_for_user(${userId}) as cart`
        return ok(200, row.cart as Cart)
      },
      {
        access: 'user',
        query: t.Object({ user_id: t.Optional(IdParam('user_id')) }),
        response: { 200: Envelope(Cart), ...failures('user', 400, 403) },
        detail: {
          summary: "The user's cart with its open items; created on first use",
          description: "With authentication: the token's user's cart (user_id may be left out; another user's is 403).",
        },
      },
    )
    .post(
      '/items',
      async ({ body, actor }) => {
        const [row] = await sql`
          select api.add_cart_item(${body.cart_id}, ${body.product_id}, ${body.quantity}, ${userScope(actor)}) as item`
        return ok(201, row.item as CartItem)
      },
      {
        access: 'user',
        body: NewCartItem,
        response: { 201: Envelope(CartItem), ...failures('user', 400, 404, 413, 415, 422) },
        detail: {
          summary: 'Add a product to a cart',
          description:
            'A product already on an open line of the cart adds to that line. The stock check here is a ' +
            'courtesy; the guarantee is made at checkout. 404 for an unknown cart or product (WA001, WA002), and ' +
            "for another user's cart; 422 for a product not for sale (WA003) or a line above the current stock (WA004). " +
            `Limits, each its own 422: a new line in a cart that already has ${LIMITS.max_open_lines} open lines ` +
            '(WA114; adding to a product already in the cart still works, and removing a line frees one), a line above ' +
            `${LIMITS.max_line_quantity} units, counting what it already holds (WA115).`,
        },
      },
    )
    .patch(
      '/items/:id',
      async ({ params, body, actor }) => {
        const [row] = await sql`select api.update_cart_item(${params.id}, ${body.quantity}, ${userScope(actor)}) as item`
        return ok(200, row.item as CartItem)
      },
      {
        access: 'user',
        params: IdParams,
        body: CartItemChange,
        response: { 200: Envelope(CartItem), ...failures('user', 400, 404, 409, 413, 415, 422) },
        detail: {
          summary: "Change the quantity of a line of the user's cart",
          description:
            'Sets the quantity (1 or more: to take a line out, DELETE it). 404 for an unknown line and for a line in ' +
            "another user's cart (WA012); 409 for a line a checkout already bought (WA013); 422 for a quantity above " +
            `${LIMITS.max_line_quantity} units (WA115), a product no longer for sale (WA003) or a quantity above the ` +
            "current stock (WA004). Takes the cart's lock, as a " +
            'checkout does: a checkout buys the quantity from before or after the change, never a mix.',
        },
      },
    )
    .delete(
      '/items/:id',
      async ({ params, actor }) => {
        const [row] = await sql`select api.remove_cart_item(${params.id}, ${userScope(actor)}) as cart`
        return ok(200, row.cart as Cart)
      },
      {
        access: 'user',
        params: IdParams,
        response: { 200: Envelope(Cart), ...failures('user', 400, 404, 409) },
        detail: {
          summary: "Remove a line from the user's cart",
          description:
            "Answers with the cart without the line. 404 for an unknown line and for a line in another user's cart " +
            '(WA012); 409 for a line a checkout already bought (WA013).',
        },
      },
    )
    .post(
      '/:id/checkout',
      async ({ params, body, headers, actor, set }) => {
        const placed = await placer.place(
          { cart_id: params.id, item_ids: null, note: body?.note ?? null, one_seller: false, user_id: userScope(actor) },
          headers['idempotency-key'],
        )
        markReplay(set, placed.replayed)
        return ok(201, placed.orders)
      },
      {
        access: 'user',
        params: IdParams,
        headers: IdempotencyHeaders,
        body: CheckoutBody,
        response: { 201: replayable(Envelope(t.Array(Order))), ...failures('user', 400, 404, 409, 413, 415, 422) },
        detail: {
          summary: 'Check out the whole cart: one order per seller',
          description:
            'One database call (api.place_order): all or nothing. 404 unknown cart (WA001); 422 empty cart (WA006), ' +
            'a product not for sale (WA003), insufficient stock (WA004, details.shortages lists every short line), ' +
            `more than ${LIMITS.max_lines} open lines (WA112), a total past an amount (WA113), a line above ` +
            `${LIMITS.max_line_quantity} units (WA115). ` +
            "Another user's cart is 404. 503 WA103: the database went away after the checkout was sent, so it may " +
            'have been placed (retry with the same Idempotency-Key, or read GET /orders first). With Idempotency-Key a ' +
            'retry returns the first response; the same key ' +
            'with another note is 422 (WA101).',
        },
      },
    )
