import { Elysia } from 'elysia'
import type { AccessPlugin } from '../http/access.ts'
import { ApiError } from '../http/errors.ts'
import type { AppMetrics } from '../observability/app-metrics.ts'

const BEARER = /^Bearer +(\S+)$/i

/** SHA-256 of a string, with Web Crypto (every runtime has it). */
const digest = async (text: string) => new Uint8Array(await crypto.subtle.digest('SHA-256', new TextEncoder().encode(text)))

/**
 * Whether `presented` is `expected`, in a time that depends on neither: both
 * are hashed first (equal lengths, whatever was sent), then every byte is
 * compared.
 */
export async function sameSecret(presented: string, expected: string): Promise<boolean> {
  const [a, b] = await Promise.all([digest(presented), digest(expected)])
  let difference = 0
  for (let i = 0; i < a.length; i++) difference |= a[i] ^ b[i]
  return difference === 0
}

/**
 * Prometheus metrics of this process, in the text format (not in the
 * envelope). A probe: no user token, not rate-limited. With `token`
 * (METRICS_TOKEN) the scraper must send `Authorization: Bearer <token>`
 * (else 401); without it anyone who reaches the port may read them. 404
 * where the runtime keeps no process-wide registry (workerd).
 */
export const metricsRoutes = (access: AccessPlugin, metrics: AppMetrics, token?: string) =>
  new Elysia({ detail: { tags: ['health'] } }).use(access).get(
    '/metrics',
    async ({ request, set }) => {
      if (token) {
        const presented = BEARER.exec(request.headers.get('authorization') ?? '')?.[1]
        if (!presented || !(await sameSecret(presented, token)))
          throw new ApiError(401, '/metrics needs Authorization: Bearer <METRICS_TOKEN>', {
            'www-authenticate': 'Bearer realm="waitress-metrics"',
          })
      }
      if (!metrics.render) throw new ApiError(404, 'no metrics in this runtime: it keeps no process-wide registry')
      const { contentType, body } = await metrics.render()
      set.headers['content-type'] = contentType
      return body
    },
    { access: 'probe', detail: { summary: 'Prometheus metrics of this process', hide: true } },
  )
