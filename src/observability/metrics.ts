import { collectDefaultMetrics, Counter, Gauge, Histogram, Registry } from 'prom-client'
import type { GateStats } from '../db/gate.ts'
import type { AppMetrics } from './app-metrics.ts'

/**
 * Prometheus metrics of one process, served at GET /metrics: what the server
 * entries (Bun, Deno, Node) pass to createApp. Not for workerd: prom-client's
 * default metrics need process.cpuUsage, and a registry per isolate means nothing.
 */
export class Metrics implements AppMetrics {
  readonly registry = new Registry()

  readonly httpRequests = new Counter({
    name: 'waitress_http_requests_total',
    help: 'HTTP requests answered, by method, route and status.',
    labelNames: ['method', 'route', 'status'] as const,
    registers: [this.registry],
  })

  readonly httpDuration = new Histogram({
    name: 'waitress_http_request_duration_seconds',
    help: 'Time to answer an HTTP request, by method, route and status.',
    labelNames: ['method', 'route', 'status'] as const,
    buckets: [0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10],
    registers: [this.registry],
  })

  readonly ordersPlacedTotal = new Counter({
    name: 'waitress_orders_placed_total',
    help: 'Orders created by checkouts.',
    registers: [this.registry],
  })

  readonly checkoutRefusals = new Counter({
    name: 'waitress_checkout_refusals_total',
    help: 'Checkouts the database refused, by SQLSTATE (WA004 = insufficient stock, ...).',
    labelNames: ['code'] as const,
    registers: [this.registry],
  })

  readonly checkoutBatchSize = new Histogram({
    name: 'waitress_checkout_batch_size',
    help: 'Checkouts per checkout call: 1 when sent alone, more when checkouts queued and were coalesced.',
    buckets: [1, 2, 5, 10, 20, 50, 100, 200, 500, 1000],
    registers: [this.registry],
  })

  readonly rateLimitedTotal = new Counter({
    name: 'waitress_rate_limited_total',
    help: 'Requests refused with 429, by where the decision was made: process (this process\'s token bucket) or cluster (the window shared in PostgreSQL).',
    labelNames: ['scope'] as const,
    registers: [this.registry],
  })

  readonly rateLimitReportsTotal = new Counter({
    name: 'waitress_rate_limit_reports_total',
    help: 'Reports of admitted requests to the shared window (calls of api.rate_limit_hit): at most one per client per window.',
    registers: [this.registry],
  })

  request(labels: { method: string; route: string; status: string }, seconds: number) {
    this.httpRequests.inc(labels)
    this.httpDuration.observe(labels, seconds)
  }

  ordersPlaced(orders: number) {
    this.ordersPlacedTotal.inc(orders)
  }

  checkoutRefused(code: string) {
    this.checkoutRefusals.inc({ code })
  }

  checkoutBatched(size: number) {
    this.checkoutBatchSize.observe(size)
  }

  rateLimited(scope: 'process' | 'cluster') {
    this.rateLimitedTotal.inc({ scope })
  }

  rateLimitReported() {
    this.rateLimitReportsTotal.inc()
  }

  private checkoutQueue?: () => number

  watchCheckoutQueue(waiting: () => number) {
    const first = this.checkoutQueue === undefined
    this.checkoutQueue = waiting
    if (!first) return
    const read = () => this.checkoutQueue?.() ?? 0
    new Gauge({
      name: 'waitress_checkout_waiting',
      help: 'Checkouts waiting for a call slot (CHECKOUT_CALLS_IN_FLIGHT): they go in the next batch.',
      registers: [this.registry],
      collect() {
        this.set(read())
      },
    })
  }

  async render() {
    return { contentType: this.registry.contentType, body: await this.registry.metrics() }
  }

  /**
   * gateStats: the pool's gate (connections in use, requests waiting);
   * options.dbRetries: statements the gated pool ran again so far, by SQLSTATE.
   */
  constructor(gateStats?: () => GateStats, options: { defaultMetrics?: boolean; dbRetries?: () => Readonly<Record<string, number>> } = {}) {
    if (options.defaultMetrics ?? true) collectDefaultMetrics({ register: this.registry, prefix: 'waitress_' })
    const dbRetries = options.dbRetries
    if (dbRetries) {
      new Counter({
        name: 'waitress_db_retries_total',
        help: 'Statements run again after a serialization failure (40001) or a deadlock (40P01), by SQLSTATE. None is expected.',
        labelNames: ['code'] as const,
        registers: [this.registry],
        collect() {
          this.reset()
          for (const [code, count] of Object.entries(dbRetries())) this.inc({ code }, count)
        },
      })
    }
    if (gateStats) {
      new Gauge({
        name: 'waitress_db_pool_in_use',
        help: 'Database statements running now (at most DB_POOL_MAX).',
        registers: [this.registry],
        collect() {
          this.set(gateStats().inUse)
        },
      })
      new Gauge({
        name: 'waitress_db_pool_waiting',
        help: 'Requests waiting for a database connection.',
        registers: [this.registry],
        collect() {
          this.set(gateStats().waiting)
        },
      })
    }
  }
}
