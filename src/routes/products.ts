import { Elysia, t } from 'elysia'
import type { Sql } from '../db/client.ts'
import { actingAs, userScope } from '../http/access.ts'
import { failures, ok } from '../http/envelope.ts'
import { Envelope, Id, IdParams, Int, MAX_ID, MAX_INT4, Page, PAGE_MAX, pageLimit, Product, StockMovement, Text } from '../models.ts'
import type { AccessPlugin } from '../http/access.ts'

const NewProduct = t.Object(
  {
    name: Text({ minLength: 1, maxLength: 200, error: 'name must be a string of 1 to 200 characters' }),
    seller_id: t.Optional(Id('seller_id')),
    price: Int({ minimum: 0, maximum: MAX_ID, error: 'price must be a whole number of the smallest currency unit, 0 or more' }),
    active: t.Optional(t.Boolean({ error: 'active must be true or false' })),
    stock: Int({ minimum: 0, maximum: MAX_INT4, error: `stock must be a whole number from 0 to ${MAX_INT4}` }),
    weight: Int({ minimum: 1, maximum: MAX_INT4, error: `weight must be a whole number of grams from 1 to ${MAX_INT4}` }),
  },
  { additionalProperties: false },
)

const Restock = t.Object(
  {
    quantity: Int({ minimum: 1, maximum: MAX_INT4, error: `quantity must be a whole number from 1 to ${MAX_INT4}` }),
    note: t.Optional(Text({ maxLength: 500, error: 'note must be a string of at most 500 characters' })),
  },
  { additionalProperties: false },
)

const Adjustment = t.Object(
  {
    quantity: t.Union([Int({ minimum: -MAX_INT4, maximum: -1 }), Int({ minimum: 1, maximum: MAX_INT4 })], {
      error: 'quantity must be a non-zero whole number: the signed change of stock',
    }),
    reason: Text({ minLength: 1, maxLength: 500, error: 'reason must be a string of 1 to 500 characters' }),
  },
  { additionalProperties: false },
)


/** The catalogue and a product's stock: each route is one call of an api function. */
export const productRoutes = (sql: Sql, access: AccessPlugin) =>
  new Elysia({ prefix: '/products', detail: { tags: ['products'] } })
    .use(access)
    .post(
      '',
      async ({ body, actor }) => {
        const sellerId = actingAs(actor, body.seller_id, 'seller_id')
        const [row] = await sql`
          select api.create_product(${body.name}, ${sellerId}, ${body.price}, ${body.stock}, ${body.weight},
                                    ${body.active ?? true}) as product`
        return ok(201, row.product as Product)
      },
      {
        access: 'seller',
        body: NewProduct,
        response: { 201: Envelope(Product), ...failures('seller', 400, 403, 413, 415, 422) },
        detail: {
          summary: 'Create a product',
          description: "With authentication the seller is the token's user: seller_id may be left out, and another is 403.",
        },
      },
    )
    .get(
      '',
      async ({ query }) => {
        const [row] = await sql`select api.products(${pageLimit(query)}, ${query.offset ?? 0}) as products`
        return ok(200, row.products as Product[])
      },
      {
        access: 'public',
        query: Page,
        response: { 200: Envelope(t.Array(Product)), ...failures('public', 400) },
        detail: { summary: `List products by id (limit defaults to 10, at most ${PAGE_MAX})` },
      },
    )
    .get(
      '/:id',
      async ({ params }) => {
        const [row] = await sql`select api.product(${params.id}) as product`
        return ok(200, row.product as Product)
      },
      {
        access: 'public',
        params: IdParams,
        response: { 200: Envelope(Product), ...failures('public', 400, 404) },
        detail: { summary: 'Get a product', description: '404 WA002 when there is none.' },
      },
    )
    .post(
      '/:id/restock',
      async ({ params, body, actor }) => {
        const [row] = await sql`
          select api.restock_product(${params.id}, ${body.quantity}, ${body.note ?? null}, ${userScope(actor)}) as product`
        return ok(200, row.product as Product)
      },
      {
        access: 'seller',
        params: IdParams,
        body: Restock,
        response: { 200: Envelope(Product), ...failures('seller', 400, 404, 413, 415, 422) },
        detail: { summary: 'Add units to the stock (a restock movement in the ledger)' },
      },
    )
    .post(
      '/:id/adjust',
      async ({ params, body, actor }) => {
        const [row] = await sql`
          select api.adjust_stock(${params.id}, ${body.quantity}, ${body.reason}, ${userScope(actor)}) as product`
        return ok(200, row.product as Product)
      },
      {
        access: 'seller',
        params: IdParams,
        body: Adjustment,
        response: { 200: Envelope(Product), ...failures('seller', 400, 404, 413, 415, 422) },
        detail: {
          summary: 'Correct the stock by a signed quantity, with a reason (a correction movement)',
          description: '422 WA010 when the correction would take the stock below zero.',
        },
      },
    )
    .get(
      '/:id/movements',
      async ({ params, query, actor }) => {
        const [row] = await sql`
          select api.stock_movements(${params.id}, ${pageLimit(query)}, ${query.offset ?? 0}, ${userScope(actor)}) as movements`
        return ok(200, row.movements as StockMovement[])
      },
      {
        access: 'seller',
        params: IdParams,
        query: Page,
        response: { 200: Envelope(t.Array(StockMovement)), ...failures('seller', 400, 404) },
        detail: { summary: "A product's stock history, oldest first: its stock is the sum of these quantities" },
      },
    )
