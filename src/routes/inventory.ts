import { Elysia, t } from 'elysia'
import type { Sql } from '../db/client.ts'
import type { AccessPlugin } from '../http/access.ts'
import { failures, ok } from '../http/envelope.ts'
import { AuditRow, Envelope } from '../models.ts'

/** The inventory audit, for operators. */
export const inventoryRoutes = (sql: Sql, access: AccessPlugin) =>
  new Elysia({ prefix: '/inventory', detail: { tags: ['inventory'] } }).use(access).get(
    '/audit',
    async () => ok(200, [...(await sql<AuditRow[]>`select * from api.inventory_audit()`)]),
    {
      access: 'operator',
      response: { 200: Envelope(t.Array(AuditRow)), ...failures('operator') },
      detail: {
        summary: 'Products whose stock disagrees with the ledger or with their orders: always empty',
        description: 'api.inventory_audit() in SQL. A non-empty answer means something changed stock outside the functions.',
      },
    },
  )
