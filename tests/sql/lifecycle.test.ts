import { describe, expect, it } from 'bun:test'
import { testSql } from '../support/db.ts'
import { agePastDeadline, auditOf, createProduct, placedOrder, refusal, stockOf } from '../support/fixtures.ts'
import { until } from '../support/wait.ts'

const sql = testSql()

type Action = 'pay' | 'accept' | 'reject' | 'deliver' | 'remit' | 'refund' | 'cancel' | 'expire'

async function act(orderId: number, action: Action): Promise<string> {
  if (action === 'expire') {
    await agePastDeadline(sql, [orderId])
    await sql`select api.expire_orders('30 minutes', 1000)`
    return stateOf(orderId)
  }
  const [row] = await sql`select api.act_on_order(${orderId}, ${action})->'order' as order`
  return row.order.state
}

async function stateOf(orderId: number): Promise<string> {
  const [row] = await sql`select state::text from waitress.orders where id = ${orderId}`
  return row.state
}

/** How to bring a new order into each starting state through legal moves. */
const PATHS: Record<string, Action[]> = {
  pending: [],
  paid: ['pay'],
  accepted: ['pay', 'accept'],
  delivered: ['pay', 'accept', 'deliver'],
  remitted: ['pay', 'accept', 'deliver', 'remit'],
  rejected: ['pay', 'reject'],
  refunded: ['pay', 'reject', 'refund'],
  'cancelled (unpaid)': ['cancel'],
  'cancelled (paid)': ['pay', 'cancel'],
  expired: ['expire'],
}

/** The lifecycle: action → starting state → resulting state. Anything else is refused. */
const LEGAL: Record<Action, Record<string, string>> = {
  pay: { pending: 'paid' },
  accept: { paid: 'accepted' },
  reject: { paid: 'rejected' },
  deliver: { accepted: 'delivered' },
  remit: { delivered: 'remitted' },
  refund: { rejected: 'refunded', 'cancelled (paid)': 'refunded' },
  cancel: { pending: 'cancelled', paid: 'cancelled', accepted: 'cancelled' },
  expire: { pending: 'expired' },
}

/** States whose order gave its stock back (refunded orders were rejected or cancelled first). */
const RELEASED = new Set(['cancelled', 'expired', 'rejected', 'refunded'])

describe('order lifecycle', () => {
  const cases = Object.keys(PATHS).flatMap((from) =>
    (Object.keys(LEGAL) as Action[]).map((action) => [action, from, LEGAL[action][from] ?? 'refused'] as const),
  )

  it.each(cases)('%s on an order that is %s → %s', async (action, from, expected) => {
    const product = await createProduct(sql, { stock: 10 })
    const orderId = await placedOrder(sql, product.id, 3)
    for (const step of PATHS[from]) await act(orderId, step)
    const stateBefore = await stateOf(orderId)
    const stockBefore = await stockOf(sql, product.id)
    expect(stockBefore).toBe(RELEASED.has(stateBefore) ? 10 : 7)

    if (expected === 'refused') {
      if (action === 'expire') {
        expect(await act(orderId, action)).toBe(stateBefore)
      } else {
        const error = await refusal(act(orderId, action))
        expect(error.code).toBe('WA009')
        expect(JSON.parse(error.detail!)).toMatchObject({ order_id: orderId, state: stateBefore, action })
        expect(error.message).toContain(stateBefore)
      }
      expect(await stateOf(orderId)).toBe(stateBefore)
      expect(await stockOf(sql, product.id)).toBe(stockBefore)
    } else {
      expect(await act(orderId, action)).toBe(expected)
      expect(await stockOf(sql, product.id)).toBe(RELEASED.has(expected) ? 10 : stockBefore)
    }
    expect(await auditOf(sql, [product.id])).toEqual([])
  })

  it('refuses an unknown order with WA008', async () => {
    const error = await refusal(sql`select api.act_on_order(987654321, 'pay')`)
    expect(error.code).toBe('WA008')
  })

  it('records when an order was paid', async () => {
    const orderId = await placedOrder(sql, (await createProduct(sql)).id)
    const [{ order }] = await sql`select api.act_on_order(${orderId}, 'pay')->'order' as order`
    expect(Date.parse(order.paid_at)).not.toBeNaN()
  })
})

describe('stock given back by dying orders', () => {
  it('comes back exactly once when two cancels race', async () => {
    const product = await createProduct(sql, { stock: 50 })
    const orders = await Promise.all(Array.from({ length: 10 }, () => placedOrder(sql, product.id, 2)))
    expect(await stockOf(sql, product.id)).toBe(30)

    const results = await Promise.allSettled(orders.flatMap((id) => [act(id, 'cancel'), act(id, 'cancel')]))

    const outcomes = results.map((r) => (r.status === 'fulfilled' ? r.value : (r.reason as { code: string }).code))
    expect(outcomes.filter((o) => o === 'cancelled')).toHaveLength(10)
    expect(outcomes.filter((o) => o === 'WA009')).toHaveLength(10)
    expect(await stockOf(sql, product.id)).toBe(50)
    const [{ releases }] = await sql`
      select count(*)::int as releases from waitress.stock_movements where product_id = ${product.id} and reason = 'release'`
    expect(releases).toBe(10)
    expect(await auditOf(sql, [product.id])).toEqual([])
  })

  it('comes back exactly once when a cancel races a payment', async () => {
    const product = await createProduct(sql, { stock: 40 })
    const orders = await Promise.all(Array.from({ length: 10 }, () => placedOrder(sql, product.id, 4)))

    const results = await Promise.all(
      orders.map(async (id) => {
        const [pay, cancel] = await Promise.allSettled([act(id, 'pay'), act(id, 'cancel')])
        return { id, pay: pay.status, cancel: cancel.status }
      }),
    )

    for (const { id, cancel } of results) {
      // Whoever came second: a cancel after payment is legal, a payment after cancel is refused.
      expect(cancel).toBe('fulfilled')
      expect(await stateOf(id)).toBe('cancelled')
    }
    expect(await stockOf(sql, product.id)).toBe(40)
    expect(await auditOf(sql, [product.id])).toEqual([])
  })
})

describe('expire_orders', () => {
  it('expires old pending orders only, and gives their stock back', async () => {
    const product = await createProduct(sql, { stock: 10 })
    const old = await placedOrder(sql, product.id, 2)
    const fresh = await placedOrder(sql, product.id, 2)
    const paid = await placedOrder(sql, product.id, 2)
    await act(paid, 'pay')
    await agePastDeadline(sql, [old, paid])

    await sql`select api.expire_orders('30 minutes', 1000)`

    expect([await stateOf(old), await stateOf(fresh), await stateOf(paid)]).toEqual(['expired', 'pending', 'paid'])
    expect(await stockOf(sql, product.id)).toBe(6)
    expect(await auditOf(sql, [product.id])).toEqual([])
  })

  it('expires each order once when two runs race, in batches', async () => {
    const product = await createProduct(sql, { stock: 200 })
    const orders = await Promise.all(Array.from({ length: 60 }, () => placedOrder(sql, product.id, 3)))
    await agePastDeadline(sql, orders)

    const drain = async () => {
      let total = 0
      for (;;) {
        const [{ n }] = await sql`select api.expire_orders('30 minutes', 7) as n`
        total += n
        if (n < 7) return total
      }
    }
    const [first, second] = await Promise.all([drain(), drain()])

    expect(first + second).toBeGreaterThanOrEqual(60)
    const [{ expired }] = await sql`select count(*)::int as expired from waitress.orders where id = any (${orders}::bigint[]) and state = 'expired'`
    expect(expired).toBe(60)
    expect(await stockOf(sql, product.id)).toBe(200)
    expect(await auditOf(sql, [product.id])).toEqual([])
  })

  it('leaves alone an order being paid at that very moment (SKIP LOCKED), without waiting for it, and expires the rest', async () => {
    const product = await createProduct(sql, { stock: 10 })
    const [beingPaid, unpaid] = [await placedOrder(sql, product.id), await placedOrder(sql, product.id)]
    await agePastDeadline(sql, [beingPaid, unpaid])
    let pay!: (value: 'commit') => void
    const committed = new Promise<'commit'>((resolve) => (pay = resolve))
    let paying = false
    const payment = sql.begin(async (tx) => {
      await tx`select api.act_on_order(${beingPaid}, 'pay')`
      paying = true
      await committed
    })
    try {
      await until('the payment to hold the order', () => paying)
      // Were it to wait for the payment's lock, lock_timeout would fail it with 55P03.
      const [{ expired }] = await sql.begin(async (tx) => {
        await tx`set local lock_timeout = '1s'`
        return tx`select api.expire_orders('30 minutes', 1000) as expired`
      })
      expect(expired).toBeGreaterThanOrEqual(1)
      expect([await stateOf(beingPaid), await stateOf(unpaid)]).toEqual(['pending', 'expired'])
    } finally {
      pay('commit')
      await payment
    }
    expect(await stateOf(beingPaid)).toBe('paid')
    await sql`select api.expire_orders('30 minutes', 1000)`
    expect(await stateOf(beingPaid)).toBe('paid')
    expect(await stockOf(sql, product.id)).toBe(9)
    expect(await auditOf(sql, [product.id])).toEqual([])
  })

  it('refuses a negative ttl or a limit below 1', async () => {
    expect((await refusal(sql`select api.expire_orders('-1 minute', 10)`)).code).toBe('22023')
    expect((await refusal(sql`select api.expire_orders('1 minute', 0)`)).code).toBe('22023')
  })
})
