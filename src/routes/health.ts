import { Elysia, t } from 'elysia'
import type { Sql } from '../db/client.ts'
import type { AccessPlugin } from '../http/access.ts'
import { failures, ok } from '../http/envelope.ts'
import { ApiError } from '../http/errors.ts'
import { MIGRATIONS } from '../generated/sql.ts'
import { Envelope, Int } from '../models.ts'

/** Liveness and readiness, for probes: no token, not rate-limited. */
export const healthRoutes = (sql: Sql, access: AccessPlugin, lifecycle: { accepting: () => boolean }) =>
  new Elysia({ detail: { tags: ['health'] } })
    .use(access)
    .get('/healthz', () => ok(200, { status: 'ok' as const }), {
      access: 'probe',
      response: { 200: Envelope(t.Object({ status: t.Literal('ok') })) },
      detail: { summary: 'Liveness: the process answers' },
    })
    .get(
      '/readyz',
      async () => {
        if (!lifecycle.accepting()) throw new ApiError(503, 'shutting down', { 'retry-after': '1' })
        const applied = new Set((await sql<{ version: string }[]>`select api.applied_migrations() as version`).map((row) => row.version))
        const pending = MIGRATIONS.filter((version) => !applied.has(version))
        if (pending.length > 0) throw new ApiError(503, `migrations not applied: ${pending.join(', ')}`, { 'retry-after': '5' })
        return ok(200, { status: 'ready' as const, migrations: MIGRATIONS.length })
      },
      {
        access: 'probe',
        response: { 200: Envelope(t.Object({ status: t.Literal('ready'), migrations: Int() })), ...failures('probe', 503) },
        detail: { summary: 'Readiness: the database answers and every migration is applied (503 otherwise)' },
      },
    )
