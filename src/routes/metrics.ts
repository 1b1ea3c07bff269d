import { Elysia } from 'elysia'
import type { AccessPlugin } from '../http/access.ts'
import type { Metrics } from '../observability/metrics.ts'

/** Prometheus metrics of this process, in the text format (not in the envelope). */
export const metricsRoutes = (access: AccessPlugin, metrics: Metrics) =>
  new Elysia({ detail: { tags: ['health'] } }).use(access).get(
    '/metrics',
    async ({ set }) => {
      set.headers['content-type'] = metrics.registry.contentType
      return metrics.registry.metrics()
    },
    { access: 'probe', detail: { summary: 'Prometheus metrics of this process', hide: true } },
  )
