import { Elysia, t } from 'elysia'
import type { Sql } from '../db/client'
import { ApiError } from '../http/errors'
import { actingAs, actorOf, bearerAuth, userScope } from '../http/identity'
import { envelope, errors, Id, IdParams, Int, MAX_ID, MAX_INT4, ok, OneOf, Page, PAGE_MAX, pageLimit, Text, Timestamp } from '../http/envelope'

export const Product = t.Object(
  {
    id: t.Integer(),
    name: t.String(),
    seller_id: t.Integer(),
    price: t.Integer({ description: 'Unit price in the smallest currency unit.' }),
    active: t.Boolean(),
    stock: t.Integer({ description: 'Units still for sale; never below zero.' }),
    weight: t.Integer({ description: 'Unit weight in grams.' }),
    flash_sale: t.Boolean({ description: 'Flash-sale mode: concurrent checkouts are coalesced into batches.' }),
    created_at: Timestamp,
    updated_at: Timestamp,
  },
  { title: 'Product' },
)

const NewProduct = t.Object({
  name: Text({ minLength: 1, maxLength: 200, error: 'name must be a string of 1 to 200 characters' }),
  seller_id: t.Optional(Id('seller_id')),
  price: Int({
    minimum: 0,
    maximum: MAX_ID,
    error: 'price must be a whole number of the smallest currency unit, 0 or more',
  }),
  active: t.Optional(t.Boolean({ error: 'active must be true or false' })),
  stock: Int({ minimum: 0, maximum: MAX_INT4, error: `stock must be a whole number from 0 to ${MAX_INT4}` }),
  weight: Int({ minimum: 1, maximum: MAX_INT4, error: `weight must be a whole number of grams from 1 to ${MAX_INT4}` }),
}, { additionalProperties: false })

export const StockMovement = t.Object(
  {
    id: t.Integer(),
    product_id: t.Integer(),
    quantity: t.Integer({ description: 'Signed change of stock.' }),
    reason: OneOf(['initial', 'restock', 'correction', 'sale', 'release']),
    order_id: t.Nullable(t.Integer()),
    note: t.Nullable(t.String()),
    created_at: Timestamp,
  },
  { title: 'StockMovement' },
)

const Restock = t.Object({
  quantity: Int({ minimum: 1, maximum: MAX_INT4, error: `quantity must be a whole number from 1 to ${MAX_INT4}` }),
  note: t.Optional(Text({ maxLength: 500, error: 'note must be a string of at most 500 characters' })),
}, { additionalProperties: false })

const Adjustment = t.Object({
  quantity: t.Union([Int({ minimum: -MAX_INT4, maximum: -1 }), Int({ minimum: 1, maximum: MAX_INT4 })], {
    error: 'quantity must be a non-zero whole number: the signed change of stock',
  }),
  reason: Text({ minLength: 1, maxLength: 500, error: 'reason must be a string of 1 to 500 characters' }),
}, { additionalProperties: false })

export const productRoutes = (sql: Sql) =>
  new Elysia({ prefix: '/products', detail: { tags: ['products'] } })
    .post(
      '',
      async ({ body, request }) => {
        const sellerId = actingAs(actorOf(request), body.seller_id, 'seller_id')
        const [row] = await sql`
          select public.product_json(p) as product
            from public.create_product(${body.name}, ${sellerId}, ${body.price},
                                       ${body.stock}, ${body.weight}, ${body.active ?? true}) p`
        return ok(201, row.product)
      },
      {
        body: NewProduct,
        response: { 201: envelope(Product), ...errors(400, 401, 403, 413, 415, 422, 429) },
        detail: {
          summary: 'Create a product',
          description: "With authentication the seller is the token's user: seller_id may be left out, and another is 403.",
          security: bearerAuth,
        },
      },
    )
    .get(
      '',
      async ({ query }) => {
        const rows = await sql`
          select public.product_json(p) as product
            from public.products p
           order by p.id
           limit ${pageLimit(query)} offset ${query.offset ?? 0}`
        return ok(200, rows.map((row) => row.product))
      },
      {
        query: Page,
        response: { 200: envelope(t.Array(Product)), ...errors(400, 429) },
        detail: { summary: `List products by id (limit defaults to 10, at most ${PAGE_MAX})` },
      },
    )
    .get(
      '/:id',
      async ({ params }) => {
        const [row] = await sql`select public.product_json(p) as product from public.products p where p.id = ${params.id}`
        if (!row) throw new ApiError(404, `product ${params.id} not found`)
        return ok(200, row.product)
      },
      {
        params: IdParams,
        response: { 200: envelope(Product), ...errors(400, 404, 429) },
        detail: { summary: 'Get a product' },
      },
    )
    .post(
      '/:id/restock',
      async ({ params, body, request }) => {
        const [row] = await sql`
          select public.product_json(p) as product
            from public.restock_product_as(${userScope(actorOf(request))}, ${params.id}, ${body.quantity}, ${body.note ?? null}) p`
        return ok(200, row.product)
      },
      {
        params: IdParams,
        body: Restock,
        response: { 200: envelope(Product), ...errors(400, 401, 404, 413, 415, 422, 429) },
        detail: { security: bearerAuth, summary: 'Add units to the stock (a restock movement in the ledger)' },
      },
    )
    .post(
      '/:id/adjust',
      async ({ params, body, request }) => {
        const [row] = await sql`
          select public.product_json(p) as product
            from public.adjust_stock_as(${userScope(actorOf(request))}, ${params.id}, ${body.quantity}, ${body.reason}) p`
        return ok(200, row.product)
      },
      {
        params: IdParams,
        body: Adjustment,
        response: { 200: envelope(Product), ...errors(400, 401, 404, 413, 415, 422, 429) },
        detail: {
          security: bearerAuth,
          summary: 'Correct the stock by a signed quantity, with a reason (a correction movement)',
          description: '422 WA010 when the correction would take the stock below zero.',
        },
      },
    )
    .get(
      '/:id/movements',
      async ({ params, query }) => {
        // One round trip: the product's row (404 without it) and the page of its movements.
        const [row] = await sql<{ movements: (typeof StockMovement.static)[] | null }[]>`
          select (select coalesce(jsonb_agg(to_jsonb(m) order by m.id), '[]'::jsonb)
                    from (select * from public.stock_movements m
                           where m.product_id = p.id
                           order by m.id
                           limit ${pageLimit(query)} offset ${query.offset ?? 0}) m) as movements
            from public.products p
           where p.id = ${params.id}`
        if (!row) throw new ApiError(404, `product ${params.id} not found`)
        return ok(200, row.movements ?? [])
      },
      {
        params: IdParams,
        query: Page,
        response: { 200: envelope(t.Array(StockMovement)), ...errors(400, 404) },
        detail: { summary: "A product's stock history, oldest first: its stock is the sum of these quantities" },
      },
    )
    .put(
      '/:id/flash-sale',
      async ({ params, body, request }) => {
        const [row] = await sql`
          select public.product_json(p) as product
            from public.set_flash_sale_as(${userScope(actorOf(request))}, ${params.id}, ${body.enabled}) p`
        return ok(200, row.product)
      },
      {
        params: IdParams,
        body: t.Object({ enabled: t.Boolean({ error: 'enabled must be true or false' }) }, { additionalProperties: false }),
        response: { 200: envelope(Product), ...errors(400, 401, 404, 413, 415, 429) },
        detail: {
          security: bearerAuth,
          summary: 'Switch flash-sale mode on or off, at run time',
          description:
            'While any product is in flash-sale mode, every service process coalesces concurrent checkouts into ' +
            'batches (one place_orders() call, one lock and one commit per batch); it notices within FLASH_SALE_CHECK_EVERY.',
        },
      },
    )
