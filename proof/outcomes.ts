import postgres from 'postgres'
import { statusForSqlstate } from '../src/http/errors.ts'
import type { Order } from '../src/models.ts'
import type { AuditRow, OrderRecord, Outcome } from './judge.ts'

/** Adapters: what a client was told (an HTTP reply, a SQL call's result or error) as an Outcome the judge reads. */

export const auditRow = (row: { product_id: number; stock: number; ledger_stock: number; sold_in_ledger: number; sold_in_orders: number }): AuditRow => ({
  productId: row.product_id,
  stock: row.stock,
  ledgerStock: row.ledger_stock,
  soldInLedger: row.sold_in_ledger,
  soldInOrders: row.sold_in_orders,
})

export function orderRecord(document: Order): OrderRecord {
  return {
    id: document.id,
    buyerId: document.buyer_id,
    sellerId: document.seller_id,
    state: document.state,
    totalPrice: document.total_price,
    lines: document.items
      .map((item) => ({ cartItemId: item.cart_item_id, productId: item.product.id, quantity: item.quantity, price: item.price }))
      .sort((a, b) => a.cartItemId - b.cartItemId),
  }
}

/**
 * What an HTTP client was told: 201 with one Order or a list of them is
 * accepted, any 4xx a refusal, anything else (5xx, 0 for no answer) a failure.
 */
export function outcomeOfHttp(status: number, body: any): Outcome {
  if (status === 201) {
    const data = body?.data
    const documents: Order[] = Array.isArray(data) ? data : data ? [data] : []
    try {
      return { kind: 'accepted', status, orders: documents.map(orderRecord) }
    } catch {
      return { kind: 'failed', status, message: `201 with a body that is not an order: ${JSON.stringify(body).slice(0, 200)}` }
    }
  }
  const message = typeof body?.error === 'string' ? body.error : JSON.stringify(body ?? null).slice(0, 200)
  if (status >= 400 && status < 500) return { kind: 'refused', status, code: body?.code, message, details: body?.details }
  return { kind: 'failed', status, code: body?.code, message }
}

/**
 * What a SQL caller was told: the order documents the call returned, or its
 * error read as the API would answer it (a WA004 is a 422 refusal, a 40P01 a
 * 503 failure).
 */
export async function outcomeOfSql(call: () => Promise<readonly Order[]>): Promise<Outcome> {
  try {
    return { kind: 'accepted', status: 201, orders: (await call()).map(orderRecord) }
  } catch (error) {
    if (!(error instanceof postgres.PostgresError)) return { kind: 'failed', status: 0, message: String(error) }
    const status = statusForSqlstate(error.code)
    if (status >= 500) return { kind: 'failed', status, code: error.code, message: error.message }
    let details: unknown = error.detail
    try {
      details = error.detail ? JSON.parse(error.detail) : undefined
    } catch {}
    return { kind: 'refused', status, code: error.code, message: error.message, details }
  }
}
