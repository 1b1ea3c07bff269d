import { describe, expect, it } from 'bun:test'
import { apiSql, testSql } from '../support/db.ts'
import { addItem, cartFor, createProduct, refusal } from '../support/fixtures.ts'
import { until } from '../support/wait.ts'

const sql = testSql()
const api = apiSql()

async function cartWithLine(stock = 10, quantity = 2) {
  const product = await createProduct(sql, { stock })
  const cart = await cartFor(sql)
  const line = await addItem(sql, cart.id, product.id, quantity)
  return { ...cart, line, product }
}

describe('update_cart_item and remove_cart_item', () => {
  it('are what the API role calls, and refuse with a code, a JSON detail and a hint', async () => {
    const cart = await cartWithLine()
    const [{ item }] = await api`select api.update_cart_item(${cart.line}, 3, ${cart.user_id}) as item`
    expect(item).toMatchObject({ id: cart.line, quantity: 3 })

    const stranger = await refusal(api`select api.update_cart_item(${cart.line}, 1, ${cart.user_id + 1})`)
    expect({ code: stranger.code, detail: JSON.parse(stranger.detail!) }).toEqual({ code: 'WA012', detail: { cart_item_id: cart.line } })
    expect(stranger.hint).toContain('GET /carts')

    const zero = await refusal(api`select api.update_cart_item(${cart.line}, 0)`)
    expect(zero.code).toBe('22023')
    expect(zero.hint).toContain('remove_cart_item')

    await api`select api.place_order(${cart.id})`
    const bought = await refusal(api`select api.remove_cart_item(${cart.line}, ${cart.user_id})`)
    expect(bought.code).toBe('WA013')
    expect(bought.hint).toContain('cancel the order')
  })

  it('take the cart lock first, like every cart change and every checkout', async () => {
    const cart = await cartWithLine()
    // Another transaction holds the cart, as a checkout in progress does: both functions wait for it.
    const holder = await sql.reserve()
    try {
      await holder`begin`
      await holder`select from waitress.carts where id = ${cart.id} for no key update`
      for (const statement of [
        `select api.update_cart_item(${cart.line}, 1)`,
        `select api.remove_cart_item(${cart.line})`,
      ]) {
        const caller = await api.reserve()
        try {
          await caller`set lock_timeout = '200ms'`
          const waiting = await caller.unsafe(statement).then(
            () => 'went through',
            (error) => error.code,
          )
          expect({ statement, waiting }).toEqual({ statement, waiting: '55P03' })
        } finally {
          await caller`reset lock_timeout`
          caller.release()
        }
      }
      // The line itself was never locked: nothing else was waiting on it.
      const [{ quantity }] = await sql`select quantity from waitress.cart_items where id = ${cart.line}`
      expect(quantity).toBe(2)
    } finally {
      await holder`rollback`
      holder.release()
    }
  })

  it('answer a line removed while they waited for the cart as not found', async () => {
    const cart = await cartWithLine()
    const holder = await sql.reserve()
    try {
      await holder`begin`
      await holder`select from waitress.carts where id = ${cart.id} for no key update`
      const update = api`select api.update_cart_item(${cart.line}, 1) /* waits for the cart */`.then(
        () => 'went through',
        (error) => error.code,
      )
      // Seen waiting for the cart, not merely sent: only then is the line removed under it.
      await until('the update to wait for the cart', async () => {
        const [{ waiting }] = await sql`
          select count(*)::int as waiting from pg_stat_activity
           where wait_event_type = 'Lock' and query like '%waits for the cart%' and pid <> pg_backend_pid()`
        return waiting > 0
      })
      await holder`delete from waitress.cart_items where id = ${cart.line}`
      await holder`commit`
      expect(await update).toBe('WA012')
    } finally {
      holder.release()
    }
  })
})
