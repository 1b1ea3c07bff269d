import { Elysia, t } from 'elysia'
import type { Sql } from '../db/client'
import { ApiError } from '../http/errors'
import { actingAs, actorOf, bearerAuth } from '../http/identity'
import { CountParam, envelope, errors, Id, IdParams, Int, MAX_ID, MAX_INT4, ok, Text, Timestamp } from '../http/envelope'

export const Product = t.Object(
  {
    id: t.Integer(),
    name: t.String(),
    seller_id: t.Integer(),
    price: t.Integer({ description: 'Unit price in the smallest currency unit.' }),
    active: t.Boolean(),
    stock: t.Integer({ description: 'Units still for sale; never below zero.' }),
    weight: t.Integer({ description: 'Unit weight in grams.' }),
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

export const PRODUCTS_PAGE_MAX = 100

// Decimal digits only: t.Integer would also take "1e3", "0x10" or " " (as 0).
const Page = t.Object({
  limit: t.Optional(CountParam(1, 'limit must be a positive integer', 'Default 10, at most 100.')),
  offset: t.Optional(CountParam(0, 'offset must be an integer, 0 or more', 'Default 0.')),
})

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
          description: 'With authentication the seller is the token\'s user: seller_id may be left out, and another is 403.',
          security: bearerAuth,
        },
      },
    )
    .get(
      '',
      async ({ query }) => {
        const limit = Math.min(query.limit ?? 10, PRODUCTS_PAGE_MAX)
        const rows = await sql`
          select public.product_json(p) as product
            from public.products p
           order by p.id
           limit ${limit} offset ${query.offset ?? 0}`
        return ok(200, rows.map((row) => row.product))
      },
      {
        query: Page,
        response: { 200: envelope(t.Array(Product)), ...errors(400, 429) },
        detail: { summary: `List products by id (limit defaults to 10, at most ${PRODUCTS_PAGE_MAX})` },
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
