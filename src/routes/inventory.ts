import { Elysia, t } from 'elysia'
import type { Sql } from '../db/client'
import { envelope, ok } from '../http/envelope'

const AuditRow = t.Object(
  {
    product_id: t.Integer(),
    name: t.String(),
    stock: t.Integer(),
    ledger_stock: t.Integer({ description: 'Sum of the product\'s stock movements.' }),
    sold_in_ledger: t.Integer({ description: 'Units out to orders per the ledger: sales less releases.' }),
    sold_in_orders: t.Integer({ description: 'Units in the lines of live orders.' }),
  },
  { title: 'AuditDiscrepancy' },
)

export const inventoryRoutes = (sql: Sql) =>
  new Elysia({ prefix: '/inventory', detail: { tags: ['inventory'] } }).get(
    '/audit',
    async () => ok(200, [...(await sql<(typeof AuditRow.static)[]>`select * from public.inventory_audit()`)]),
    {
      response: { 200: envelope(t.Array(AuditRow)) },
      detail: {
        summary: 'Products whose stock disagrees with the ledger or with their orders: always empty',
        description: 'inventory_audit() in SQL. A non-empty answer means something changed stock outside the functions.',
      },
    },
  )
