// The little of Cloudflare's Workers types the workers entry uses (wrangler
// types would generate 500 KB that clash with bun-types).
declare module 'cloudflare:workers' {
  /** The worker's bindings ([vars], secrets, Hyperdrive), readable at global scope. */
  export const env: Record<string, unknown>
}

interface ExecutionContext {
  waitUntil(promise: Promise<unknown>): void
  passThroughOnException(): void
}

interface ScheduledController {
  readonly scheduledTime: number
  readonly cron: string
  noRetry(): void
}
