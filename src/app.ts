import { Elysia } from 'elysia'
import { swagger } from '@elysiajs/swagger'
import type { Sql } from './db/client'
import { errorHandler } from './http/errors'
import { jsonBodies } from './http/body'
import { bearerScheme, identity } from './http/identity'
import { rateLimit, type RateLimitOptions } from './http/rate-limit'
import { healthRoutes } from './routes/health'
import { productRoutes } from './routes/products'
import { cartRoutes } from './routes/carts'
import { orderRoutes } from './routes/orders'
import pkg from '../package.json'

export interface AppOptions {
  /** HS256 secret of the bearer tokens; without it the open contract applies (development only). */
  authJwtSecret?: string
  /** Off unless given with a positive limit. */
  rateLimit?: RateLimitOptions
  /** Largest request body; larger is 413. */
  maxBodyBytes?: number
}

export const DEFAULT_MAX_BODY_BYTES = 65_536

/** The whole HTTP API over one connection pool. Tests drive it with app.handle() or over real HTTP. */
export function createApp(sql: Sql, options: AppOptions = {}) {
  // normalize: false, so that a body field no route schema names (say stock
  // on a cart line) is refused with 400 instead of being dropped in silence.
  return new Elysia({ normalize: false })
    .use(errorHandler)
    .use(identity({ secret: options.authJwtSecret }))
    .use(rateLimit(sql, options.rateLimit ?? { limit: 0, windowSeconds: 60 }))
    .use(jsonBodies(options.maxBodyBytes ?? DEFAULT_MAX_BODY_BYTES))
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
          components: { securitySchemes: { bearerAuth: bearerScheme } },
        },
      }),
    )
    .use(healthRoutes(sql))
    .use(productRoutes(sql))
    .use(cartRoutes(sql))
    .use(orderRoutes(sql))
}

export type App = ReturnType<typeof createApp>
