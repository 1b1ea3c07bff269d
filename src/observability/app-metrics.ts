/**
 * What the core reports as it serves: per request, per checkout. The server
 * entries pass prom-client behind it (src/observability/metrics.ts, served at
 * GET /metrics); the workers entry passes none: a registry per isolate means
 * nothing, and prom-client's default metrics need process.cpuUsage.
 */
export interface AppMetrics {
  request(labels: { method: string; route: string; status: string }, seconds: number): void
  ordersPlaced(orders: number): void
  checkoutRefused(code: string): void
  checkoutBatched(size: number): void
  /** A 429, and where it was decided: this process's token bucket, or the window shared in PostgreSQL. */
  rateLimited(scope: 'process' | 'cluster'): void
  /** A report of admitted requests to the shared window (api.rate_limit_hit). */
  rateLimitReported(): void
  /** Where to read how many checkouts wait for a call slot now (the order placer's queue). */
  watchCheckoutQueue?(waiting: () => number): void
  /** The text of GET /metrics; absent where the runtime has no process-wide registry (then /metrics is 404). */
  render?(): Promise<{ contentType: string; body: string }>
}

export const noMetrics = (): AppMetrics => ({
  request() {},
  ordersPlaced() {},
  checkoutRefused() {},
  checkoutBatched() {},
  rateLimited() {},
  rateLimitReported() {},
})
