import { createApp } from '../../src/app.ts'
import { Metrics } from '../../src/observability/metrics.ts'
import { retriesIn } from '../../proof/database-facts.ts'
import type { RetryCounts } from '../../proof/judge.ts'
import { appDatabaseUrl, recyclablePool, testDatabaseUrl } from './db.ts'
import { startService } from './service.ts'

/**
 * What a race runs against: the app in this test process, or the service as
 * `npm start` runs it, in its own process. Opened fresh for each race.
 */
export interface Target {
  baseUrl: string
  /** application_name of its database sessions: the start line counts them. */
  applicationName: string
  /** Checkout calls it runs at once (CHECKOUT_CALLS_IN_FLIGHT): each a session a start line can hold. */
  checkoutSessions: number
  /** Checkouts waiting in its own queue now (the order placer's, for a call slot). */
  queued(): Promise<number>
  /** The race over: what it retried (when it counts), then ends its sessions so PostgreSQL publishes their statistics. */
  finish(): Promise<{ retries?: RetryCounts; batches?: { count: number; checkouts: number } }>
}

export interface TargetKind {
  name: string
  open(): Promise<Target>
}

let opened = 0
const nameFor = (what: string) => `waitress-${what}-${process.pid}-${++opened}`

async function metricsOf(baseUrl: string): Promise<string> {
  const response = await fetch(`${baseUrl}/metrics`)
  if (!response.ok) throw new Error(`GET ${baseUrl}/metrics answered ${response.status}`)
  return response.text()
}

const metric = (text: string, name: string) => Number(new RegExp(`^${name} (\\S+)$`, 'm').exec(text)?.[1] ?? NaN)

const batchesIn = (text: string) => ({ count: metric(text, 'waitress_checkout_batch_size_count'), checkouts: metric(text, 'waitress_checkout_batch_size_sum') })

/** createApp over a plain pool of 10, no gate, no retries, no timeouts (as most tests run the app). */
export const inProcessApp: TargetKind = {
  name: 'the app in this process (a plain pool of 10)',
  async open() {
    const applicationName = nameFor('app')
    const pool = recyclablePool(appDatabaseUrl(), { max: 10, role: 'waitress_api', applicationName })
    // Metrics of its own (no process-wide defaults): the race reads its batches from /metrics.
    const metrics = new Metrics(undefined, { defaultMetrics: false })
    const server = createApp(pool, { metrics }).listen({ port: 0, hostname: '127.0.0.1' })
    const baseUrl = `http://127.0.0.1:${server.server!.port}`
    return {
      baseUrl,
      applicationName,
      checkoutSessions: 2, // CHECKOUT_CALLS_IN_FLIGHT's default
      queued: async () => metric(await metricsOf(baseUrl), 'waitress_checkout_waiting'),
      async finish() {
        const batches = batchesIn(await metricsOf(baseUrl))
        await server.stop()
        await pool.end()
        return { batches }
      },
    }
  },
}

/**
 * src/server.ts in its own process, as `npm start` runs it against an
 * external database: its own login (APP_DATABASE_URL, acting as
 * waitress_api), and every default: the gate, DB_POOL_MAX=4, the statement,
 * lock and queue timeouts, retries of deadlocks, checkouts coalesced when
 * they queue. (Only the expiry timer is off, as in every spawned test
 * service.) It is stopped, gracefully, when the race is over.
 */
export const productionService: TargetKind = {
  name: 'the service as npm start runs it (gate, DB_POOL_MAX=4, timeouts, retries)',
  async open() {
    const applicationName = nameFor('service')
    const service = await startService(testDatabaseUrl(), { APP_DATABASE_URL: appDatabaseUrl(), DB_APPLICATION_NAME: applicationName })
    return {
      baseUrl: service.baseUrl,
      applicationName,
      checkoutSessions: 2, // CHECKOUT_CALLS_IN_FLIGHT's default
      queued: async () => metric(await metricsOf(service.baseUrl), 'waitress_checkout_waiting'),
      async finish() {
        const text = await metricsOf(service.baseUrl)
        service.child.kill('SIGTERM')
        const exit = await service.exit()
        if (exit.code !== 0) throw new Error(`the service did not stop cleanly (exit ${exit.code ?? exit.signal}): ${exit.tail}`)
        return { retries: retriesIn(text), batches: batchesIn(text) }
      },
    }
  },
}
