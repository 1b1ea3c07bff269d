import { Elysia, t } from 'elysia'
import type { Sql } from '../db/client'
import { envelope, errors, ok } from '../http/envelope'

export const healthRoutes = (sql: Sql) =>
  new Elysia({ detail: { tags: ['health'] } }).get(
    '/healthz',
    async () => {
      await sql`select 1`
      return ok(200, { status: 'ok' as const })
    },
    {
      response: { 200: envelope(t.Object({ status: t.Literal('ok') })), ...errors(503) },
      detail: { summary: 'Alive and the database answers (503 otherwise)' },
    },
  )
