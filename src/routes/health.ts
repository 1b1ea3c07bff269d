import { Elysia, t } from 'elysia'
import { readdirSync } from 'node:fs'
import type { Sql } from '../db/client'
import { MIGRATIONS_DIR } from '../db/migrate'
import { envelope, errors, ok } from '../http/envelope'
import { ApiError } from '../http/errors'

/** The migrations this code needs, read once: db/migrations/<version>_<name>.sql. */
const REQUIRED_MIGRATIONS = readdirSync(MIGRATIONS_DIR)
  .map((file) => /^(\d+)_.*\.sql$/.exec(file)?.[1])
  .filter((version): version is string => version !== undefined)

export const healthRoutes = (sql: Sql, lifecycle: { accepting: () => boolean }) =>
  new Elysia({ detail: { tags: ['health'] } })
    .get('/healthz', () => ok(200, { status: 'ok' as const }), {
      response: { 200: envelope(t.Object({ status: t.Literal('ok') })) },
      detail: { summary: 'Liveness: the process answers' },
    })
    .get(
      '/readyz',
      async () => {
        if (!lifecycle.accepting()) throw new ApiError(503, 'shutting down')
        const applied = new Set((await sql<{ version: string }[]>`select version from public.schema_migrations`).map((row) => row.version))
        const pending = REQUIRED_MIGRATIONS.filter((version) => !applied.has(version))
        if (pending.length > 0) throw new ApiError(503, `migrations not applied: ${pending.join(', ')}`)
        return ok(200, { status: 'ready' as const, migrations: REQUIRED_MIGRATIONS.length })
      },
      {
        response: { 200: envelope(t.Object({ status: t.Literal('ready'), migrations: t.Integer() })), ...errors(503) },
        detail: { summary: 'Readiness: the database answers and every migration is applied (503 otherwise)' },
      },
    )
