import { afterAll, describe, expect, it } from 'bun:test'
import { judge, type Attempt, type Facts, type OrderRecord, type Outcome } from '../../proof/judge.ts'
import { expectClean, scarceRace, sqlChannel } from '../support/proof.ts'

const viaSql = sqlChannel(8)
afterAll(() => viaSql.close())

/**
 * A real race whose accepted checkouts are then told, after the fact, that
 * they failed: what a fault does to a client whose checkout committed.
 */
async function raceThenFault() {
  const { run, facts, idle } = await scarceRace(viaSql, { contenders: 6, sellers: [41, 41] })
  const checkouts = run.checkouts
  expectClean(judge(run, facts))
  const accepted = checkouts.flatMap((c, i) => (c.outcome.kind === 'accepted' ? [i] : []))
  expect(accepted).toHaveLength(2)
  return { run, facts, idle, accepted }
}

const unavailable: Outcome = { kind: 'failed', status: 503, message: 'the database is busy or unavailable; retry shortly' }
const ordersOf = (checkout: Attempt) => (checkout.outcome as Extract<Outcome, { kind: 'accepted' }>).orders

describe('the invariant checker after faults (indefinite outcomes)', () => {
  it('accepts a 503 or no answer whose checkout committed, but only with `indefinite`', async () => {
    const { run, facts, accepted } = await raceThenFault()
    const checkouts = structuredClone(run.checkouts) as Attempt[]
    checkouts[accepted[0]].outcome = unavailable
    checkouts[accepted[1]].outcome = { kind: 'failed', status: 0, message: 'TypeError: fetch failed' }

    const strict = judge({ ...run, checkouts }, facts)
    expect(new Set(strict.violations.map((v) => v.invariant))).toEqual(new Set(['no-failures', 'no-unreported-orders']))
    expectClean(judge({ ...run, checkouts, indefinite: true }, facts))
  })

  it('accepts a 503 whose checkout did not commit', async () => {
    const { run, facts } = await raceThenFault()
    const checkouts = structuredClone(run.checkouts) as Attempt[]
    const refused = checkouts.findIndex((c) => c.outcome.kind === 'refused')
    checkouts[refused].outcome = unavailable
    expectClean(judge({ ...run, checkouts, indefinite: true }, facts))
  })

  it('still catches what no fault explains', async () => {
    const { run, facts, idle, accepted } = await raceThenFault()
    const [first, second] = accepted
    const violated = (change: (checkouts: Attempt[], facts: Facts) => void) => {
      const copy = { checkouts: structuredClone(run.checkouts) as Attempt[], facts: structuredClone(facts) }
      change(copy.checkouts, copy.facts)
      return new Set(judge({ ...run, checkouts: copy.checkouts, indefinite: true }, copy.facts).violations.map((v) => v.invariant))
    }
    const extraOrder = (f: Facts, order: OrderRecord, changes: Partial<OrderRecord> = {}) => {
      const id = Math.max(...f.orders.keys()) + 1
      f.orders.set(id, { ...structuredClone(order), id, ...changes })
    }

    const cases: [invariant: string, change: (checkouts: Attempt[], facts: Facts) => void][] = [
      // A 500 is a bug, not a fault; neither is a deadlock or a serialization failure.
      ['no-failures', (c) => void (c[first].outcome = { kind: 'failed', status: 500, message: 'internal server error' })],
      ['no-failures', (c) => void (c[first].outcome = { kind: 'failed', status: 503, code: '40P01', message: 'deadlock detected' })],
      ['no-failures', (c) => void (c[first].outcome = { kind: 'failed', status: 503, code: '40001', message: 'could not serialize' })],
      // An order for a cart whose other client got a 201 (with another order).
      [
        'no-unreported-orders',
        (c, f) => {
          c.push({ cartId: c[first].cartId, buyerId: c[first].buyerId, wants: c[first].wants, outcome: unavailable })
          extraOrder(f, ordersOf(c[first])[0])
        },
      ],
      // A partial order: the client got a 503, and only one of its two lines was sold.
      [
        'no-unreported-orders',
        (c, f) => {
          const [order] = ordersOf(c[first])
          c[first].outcome = unavailable
          const stored = f.orders.get(order.id)!
          const [dropped] = stored.lines.splice(1, 1)
          f.cartItems.get(dropped.cartItemId)!.purchased = false
        },
      ],
      // A whole order, but another cart's line rides along in it.
      [
        'no-unreported-orders',
        (c, f) => {
          const [order] = ordersOf(c[first])
          c[first].outcome = unavailable
          f.orders.get(order.id)!.lines.push(structuredClone(ordersOf(c[second])[0].lines[0]))
        },
      ],
      // The whole cart, in another buyer's name.
      [
        'no-unreported-orders',
        (c, f) => {
          const [order] = ordersOf(c[first])
          c[first].outcome = unavailable
          f.orders.get(order.id)!.buyerId += 1
        },
      ],
      // An order for a cart no client checked out.
      [
        'no-unreported-orders',
        (_, f) => {
          const item = [...f.cartItems.values()].find((i) => i.cartId === idle.cartId)
          const line = { cartItemId: item?.id ?? -1, productId: idle.wants.keys().next().value!, quantity: 1, price: 300 }
          extraOrder(f, { id: 0, buyerId: idle.userId, sellerId: 41, state: 'pending', totalPrice: 300, lines: [line] })
        },
      ],
      // Faults excuse no lost stock.
      ['stock-conserved', (_, f) => void (f.products.get(run.checkouts[first].wants!.keys().next().value!)!.stock -= 1)],
      // Nor a 201 that is not in the database.
      ['accepted-persisted', (c, f) => void f.orders.delete(ordersOf(c[first])[0].id)],
    ]
    for (const [invariant, change] of cases) {
      const found = violated(change)
      expect({ invariant, found: found.has(invariant) }).toEqual({ invariant, found: true })
    }
  })
})
