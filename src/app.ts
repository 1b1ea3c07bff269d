import { Elysia } from 'elysia'
import { swagger } from '@elysiajs/swagger'
import type { Sql } from './db/client'
import { errorHandler } from './http/errors'
import { healthRoutes } from './routes/health'
import { productRoutes } from './routes/products'
import { cartRoutes } from './routes/carts'
import { orderRoutes } from './routes/orders'
import { inventoryRoutes } from './routes/inventory'
import { Checkout, type CheckoutOptions } from './checkout'
import pkg from '../package.json'

/** The whole HTTP API over one connection pool. Tests drive it with app.handle() or over real HTTP. */
export function createApp(sql: Sql, options: { checkout?: CheckoutOptions } = {}) {
  const checkout = new Checkout(sql, options.checkout)
  return new Elysia()
    .use(errorHandler)
    .use(
      swagger({
        path: '/swagger',
        documentation: {
          info: {
            title: 'Waitress',
            version: pkg.version,
            description:
              'Order placement that never oversells. Successes come as { data, meta: { http_status } }, ' +
              'errors as { error, code?, details?, meta: { http_status } }. The checkout is one PostgreSQL ' +
              'function, place_order; see the README for its SQL contract and error codes.',
          },
        },
      }),
    )
    .use(healthRoutes(sql))
    .use(productRoutes(sql))
    .use(cartRoutes(sql, checkout))
    .use(orderRoutes(sql, checkout))
    .use(inventoryRoutes(sql))
}

export type App = ReturnType<typeof createApp>
