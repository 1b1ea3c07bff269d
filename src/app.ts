import { Elysia } from 'elysia'
import { swagger } from '@elysiajs/swagger'
import type { Sql } from './db/client'
import type { GateStats } from './db/gate'
import { errorHandler } from './http/errors'
import { jsonBodies } from './http/body'
import { bearerScheme, identity } from './http/identity'
import { rateLimit, type RateLimitOptions } from './http/rate-limit'
import { healthRoutes } from './routes/health'
import { productRoutes } from './routes/products'
import { cartRoutes } from './routes/carts'
import { orderRoutes } from './routes/orders'
import { inventoryRoutes } from './routes/inventory'
import { Checkout, type CheckoutOptions } from './checkout'
import { silentLogger, type Logger } from './observability/logger'
import { Metrics } from './observability/metrics'
import { observability } from './observability/plugin'
import pkg from '../package.json'

export interface AppOptions {
  /** HS256 secret of the bearer tokens; without it the open contract applies (development only). */
  authJwtSecret?: string
  /** Off unless given with a positive limit. */
  rateLimit?: RateLimitOptions
  /** Largest request body; larger is 413. */
  maxBodyBytes?: number
  checkout?: CheckoutOptions
  logger?: Logger
  /** The pool's gate, so /metrics can show connections in use and requests waiting. */
  gateStats?: () => GateStats
  /** False while the process drains before exiting: /readyz answers 503. */
  accepting?: () => boolean
}

export const DEFAULT_MAX_BODY_BYTES = 65_536

/** The whole HTTP API over one connection pool. Tests drive it with app.handle() or over real HTTP. */
export function createApp(sql: Sql, options: AppOptions = {}) {
  const logger = options.logger ?? silentLogger()
  const metrics = new Metrics(options.gateStats)
  const checkout = new Checkout(sql, options.checkout, {
    placed: (orders) => metrics.ordersPlaced.inc(orders),
    refused: (code) => metrics.checkoutRefusals.inc({ code }),
    batched: (size) => metrics.checkoutBatchSize.observe(size),
  })
  // normalize: false, so that a body field no route schema names (say stock
  // on a cart line) is refused with 400 instead of being dropped in silence.
  return new Elysia({ normalize: false })
    .use(observability(logger, metrics))
    .use(errorHandler(logger))
    .use(identity({ secret: options.authJwtSecret }))
    .use(rateLimit(sql, options.rateLimit ?? { limit: 0, windowSeconds: 60 }))
    .use(jsonBodies(options.maxBodyBytes ?? DEFAULT_MAX_BODY_BYTES))
    .use(
      swagger({
        path: '/swagger',
        exclude: ['/metrics'],
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
    .use(healthRoutes(sql, { accepting: options.accepting ?? (() => true) }))
    .get('/metrics', async ({ set }) => {
      set.headers['content-type'] = metrics.registry.contentType
      return metrics.registry.metrics()
    })
    .use(productRoutes(sql))
    .use(cartRoutes(sql, checkout))
    .use(orderRoutes(sql, checkout))
    .use(inventoryRoutes(sql))
}

export type App = ReturnType<typeof createApp>
