import { Elysia, type AnyElysia, type ElysiaConfig } from 'elysia'
import type { Sql } from './db/client.ts'
import { createAccess } from './http/access.ts'
import { jsonBodies } from './http/body.ts'
import { docsRoutes, type DocsAssets } from './http/docs.ts'
import { errorHandler } from './http/errors.ts'
import { openApiDocument } from './http/openapi.ts'
import { createRateLimiter, postgresReport, type InProcessRateLimiter, type RateLimitOptions } from './http/rate-limit.ts'
import { OrderPlacer, type OrderPlacerOptions } from './order-placer.ts'
import { noMetrics, type AppMetrics } from './observability/app-metrics.ts'
import { silentLogger, type Logger } from './observability/log.ts'
import { observability } from './observability/plugin.ts'
import { cartRoutes } from './routes/carts.ts'
import { healthRoutes } from './routes/health.ts'
import { inventoryRoutes } from './routes/inventory.ts'
import { metricsRoutes } from './routes/metrics.ts'
import { orderRoutes } from './routes/orders.ts'
import { productRoutes } from './routes/products.ts'

export const VERSION = '0.2.0'

/**
 * Everything the app takes from the runtime it runs in, passed in by each
 * entry (src/server.ts for Bun, src/entries/*.ts for Deno, Node and workerd).
 * createApp and everything it imports use only Web-standard APIs, elysia and
 * the postgres driver: no Bun.*, node:*, process.*, filesystem or
 * import.meta.dir (tests/runtimes/neutral.test.ts bundles it for a neutral
 * platform to keep it so). Long-lived helpers (the connection gate, checkout
 * coalescing, timers) are the entries' to give or withhold: correctness never
 * depends on them.
 */
export interface AppOptions {
  /** HS256 secret of the bearer tokens; without it the open contract applies (development only). */
  authJwtSecret?: string
  /** Off unless given with a positive limit: a token bucket per client in this process, over a window shared in PostgreSQL. */
  rateLimit?: RateLimitOptions
  /** A rate limiter made by the caller (the tests: with a clock of their own); it replaces rateLimit. */
  rateLimiter?: InProcessRateLimiter
  /** Largest request body; larger is 413. */
  maxBodyBytes?: number
  /** Checkout coalescing (by itself when checkouts queue); `coalesce: false` where nothing may outlive a request (workerd). */
  orderPlacer?: OrderPlacerOptions
  logger?: Logger
  /** Per request and per checkout; GET /metrics serves metrics.render() (404 without it). Default: none. */
  metrics?: AppMetrics
  /** False while the process drains before exiting: /readyz answers 503. */
  accepting?: () => boolean
  /**
   * The client's address, for the rate limit of requests without a token:
   * each runtime knows it its own way (Bun's server.requestIP, Deno's
   * remoteAddr, srvx's request.ip, workerd's cf-connecting-ip).
   */
  clientAddress?: (request: Request, server: unknown) => string | undefined
  /** METRICS_TOKEN: when set, GET /metrics needs `Authorization: Bearer <it>`; else /metrics is open like the other probes. */
  metricsToken?: string
  /** Monotonic milliseconds, for request latency (default performance.now). */
  clock?: () => number
  /** Called once a request's log line and metrics are written (see observability()); the workers entry waits for it. */
  onResponded?: (request: Request) => void
  /**
   * Swagger UI's script and stylesheet for the docs page (src/http/swagger-ui-assets.ts);
   * without them those two paths are 404, for a runtime that serves them itself (workerd's static assets).
   */
  docsAssets?: DocsAssets
  /** Elysia's adapter for the runtime: CloudflareAdapter under workerd; the default (Bun, or Web Standard) elsewhere. */
  adapter?: ElysiaConfig<''>['adapter']
}

export const DEFAULT_MAX_BODY_BYTES = 65_536

const INFO = {
  title: 'Waitress',
  version: VERSION,
  description:
    'Order placement that never oversells. Successes come as { data, meta: { http_status } }, errors as ' +
    '{ error, code?, details?, meta: { http_status } }. The checkout is one PostgreSQL function, api.place_order; ' +
    'docs/sql-contract.md has the SQL contract and every refusal code.',
}

/** The whole HTTP API over one connection pool. Tests drive it with app.handle() or over real HTTP. */
export function createApp(sql: Sql, options: AppOptions = {}) {
  const logger = options.logger ?? silentLogger()
  const metrics = options.metrics ?? noMetrics()
  const placer = new OrderPlacer(sql, options.orderPlacer, {
    placed: (orders) => metrics.ordersPlaced(orders),
    refused: (code) => metrics.checkoutRefused(code),
    batched: (size) => metrics.checkoutBatched(size),
  })
  metrics.watchCheckoutQueue?.(() => placer.batching.waiting)
  const access = createAccess({
    secret: options.authJwtSecret,
    rateLimiter: (
      options.rateLimiter ??
      createRateLimiter({
        ...(options.rateLimit ?? { limit: 0, windowSeconds: 60 }),
        report: postgresReport(sql),
        onRefused: (scope) => metrics.rateLimited(scope),
        onReport: () => metrics.rateLimitReported(),
        onReportError: (error) =>
          logger.warn({ err: error instanceof Error ? error.message : String(error) }, 'rate limit: report to PostgreSQL failed; kept for the next one'),
      })
    )?.limiter,
    rateLimitDelayMs: options.rateLimit?.delayMs,
    clientAddress: options.clientAddress,
  })
  // The document is built from the whole app, on its first request.
  let routes: () => AnyElysia = () => {
    throw new Error('the app is not composed yet')
  }
  // normalize: false, so that a body field no route schema names (say stock
  // on a cart line) is refused with 400 instead of being dropped in silence.
  const app = new Elysia({ normalize: false, ...(options.adapter ? { adapter: options.adapter } : {}) })
    .use(observability(logger, metrics, { clock: options.clock, onResponded: options.onResponded }))
    .use(errorHandler(logger))
    .use(access.plugin)
    .use(jsonBodies(options.maxBodyBytes ?? DEFAULT_MAX_BODY_BYTES))
    .use(docsRoutes(access.plugin, { title: 'Waitress API', document: (): unknown => openApiDocument(routes(), { info: INFO, exclude: ['/metrics'] }), assets: options.docsAssets }))
    .use(healthRoutes(sql, access.plugin, { accepting: options.accepting ?? (() => true) }))
    .use(metricsRoutes(access.plugin, metrics, options.metricsToken))
    .use(productRoutes(sql, access.plugin))
    .use(cartRoutes(sql, access.plugin, placer))
    .use(orderRoutes(sql, access.plugin, placer))
    .use(inventoryRoutes(sql, access.plugin))
  access.learn(app)
  routes = () => app
  return app
}

export type App = ReturnType<typeof createApp>
