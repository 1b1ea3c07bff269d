import { Elysia, t } from 'elysia'
import type { Sql } from '../db/client.ts'
import type { OrderPlacer } from '../order-placer.ts'
import { actingAs, userScope, type AccessPlugin } from '../http/access.ts'
import { failures, IdempotencyHeaders, markReplay, ok, replayable } from '../http/envelope.ts'
import { LIMITS, ORDER_ACTION_RULES, ORDER_STATES } from '../generated/sql.ts'
import { Envelope, Id, IdParam, IdParams, Note, OneOf, Order, OrderAction, Page, pageLimit } from '../models.ts'

const NewOrder = t.Object(
  {
    buyer_id: t.Optional(Id('buyer_id')),
    cart_item_ids: t.Array(Id('cart_item_ids[]'), {
      minItems: 1,
      maxItems: 1000,
      error: 'cart_item_ids must be a list of 1 to 1000 cart item ids',
    }),
    note: t.Optional(Note),
  },
  { additionalProperties: false },
)

const OrderFilter = t.Object({
  ...Page.properties,
  after: t.Optional(IdParam('after')),
  buyer_id: t.Optional(IdParam('buyer_id')),
  seller_id: t.Optional(IdParam('seller_id')),
  state: t.Optional(OneOf(ORDER_STATES, { error: `state must be one of ${ORDER_STATES.join(', ')}` })),
})

const actionList = Object.entries(ORDER_ACTION_RULES)
  .map(([action, rule]) => `**${action}** (the ${rule.by}): ${rule.summary}`)
  .join(' ')

/** Orders: placing, reading and moving them through their lifecycle, each route one call of an api function. */
export const orderRoutes = (sql: Sql, access: AccessPlugin, placer: OrderPlacer) =>
  new Elysia({ prefix: '/orders', detail: { tags: ['orders'] } })
    .use(access)
    .post(
      '',
      async ({ body, headers, actor, set }) => {
        const buyerId = actingAs(actor, body.buyer_id, 'buyer_id')
        const placed = await placer.place(
          { buyer_id: buyerId, item_ids: body.cart_item_ids, note: body.note ?? null, one_seller: true },
          headers['idempotency-key'],
        )
        markReplay(set, placed.replayed)
        return ok(201, placed.orders[0])
      },
      {
        access: 'user',
        headers: IdempotencyHeaders,
        body: NewOrder,
        response: { 201: replayable(Envelope(Order)), ...failures('user', 400, 403, 409, 413, 415, 422) },
        detail: {
          summary: "Order some items of the buyer's cart, all from one seller",
          description:
            "422 when an id is not an open item of the buyer's cart (WA005), the items span sellers (WA007: order " +
            'per seller, or check out the cart), a product is not for sale (WA003) or stock is short (WA004). ' +
            "With authentication the buyer is the token's user (buyer_id may be left out; another is 403). " +
            'With Idempotency-Key a retry returns the first response; the same key with other items is 422 (WA101). ' +
            `Limits, each its own 422: more than ${LIMITS.max_item_ids} distinct cart item ids (WA110; duplicates ` +
            `collapse first), a note over ${LIMITS.max_note_length} characters (WA111), more than ${LIMITS.max_lines} ` +
            `lines (WA112), a total past an amount (WA113), a line above ${LIMITS.max_line_quantity} units (WA115). ` +
            '503 WA103: the ' +
            'database went away after the checkout was sent, so it may have been placed: retry with the same ' +
            'Idempotency-Key, or look in GET /orders?buyer_id=… (each line names its cart_item_id) before ordering again.',
        },
      },
    )
    .get(
      '',
      async ({ query, actor }) => {
        const [row] = await sql`
          select api.orders(p_buyer_id => ${query.buyer_id ?? null}, p_seller_id => ${query.seller_id ?? null},
                            p_state => ${query.state ?? null}, p_limit => ${pageLimit(query)},
                            p_offset => ${query.offset ?? 0}, p_after => ${query.after ?? null},
                            p_user_id => ${userScope(actor)}) as orders`
        return ok(200, row.orders as Order[])
      },
      {
        access: 'user',
        query: OrderFilter,
        response: { 200: Envelope(t.Array(Order)), ...failures('user', 400) },
        detail: {
          summary: 'List orders by id, optionally of one buyer, seller or state',
          description:
            "With authentication, only orders the token's user bought or sold. Page with after=<the last id seen> " +
            '(keyset), or with offset.',
        },
      },
    )
    .get(
      '/:id',
      async ({ params, actor }) => {
        const [row] = await sql`select api.order(${params.id}, ${userScope(actor)}) as order`
        return ok(200, row.order as Order)
      },
      {
        access: 'user',
        params: IdParams,
        response: { 200: Envelope(Order), ...failures('user', 400, 404) },
        detail: {
          summary: 'Get an order with its lines',
          description: 'With authentication, only its buyer and its seller see it; for anyone else it is 404 (WA008).',
        },
      },
    )
    .post(
      '/:id/:action',
      async ({ params, headers, actor, set }) => {
        const [row] = await sql<{ moved: { order: Order; replayed: boolean } }[]>`
          select api.act_on_order(${params.id}, ${params.action}, ${headers['idempotency-key'] ?? null}, ${userScope(actor)}) as moved`
        markReplay(set, row.moved.replayed)
        return ok(200, row.moved.order)
      },
      {
        access: 'user',
        params: t.Object({ id: IdParam('id'), action: OrderAction }),
        headers: IdempotencyHeaders,
        response: { 200: replayable(Envelope(Order)), ...failures('user', 400, 403, 404, 409) },
        detail: {
          summary: 'Move an order through its lifecycle',
          description:
            `${actionList} 404 unknown order (WA008); 409 when the order is not in a state the action applies to ` +
            '(WA009: details.state is the current state, details.allowed_from the states it needs). With ' +
            'authentication an order of someone else is 404, and the other party\'s action is 403 (WA011). ' +
            'With Idempotency-Key a retry returns the first response instead of a 409.',
        },
      },
    )
