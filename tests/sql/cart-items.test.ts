import { describe, expect, it } from 'bun:test'
import { LIMITS } from '../../src/generated/sql.ts'
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

/** `count` products for sale, made in one statement. */
async function productsForSale(count: number, stock = 10): Promise<number[]> {
  const rows = await sql<{ id: number }[]>`
    select (api.create_product('Limit ' || g, 1, 100, ${stock}, 250, true)->>'id')::bigint as id
      from generate_series(1, ${count}::integer) g order by g`
  return rows.map((r) => r.id)
}

/** One unit of each product on its own line, through add_cart_item, in one statement. */
async function fill(cartId: number, productIds: number[]) {
  await sql`select api.add_cart_item(${cartId}, u.p, 1) from unnest(${productIds}::bigint[]) with ordinality u(p, n) order by u.n`
}

const openLines = async (cartId: number) =>
  (await sql<{ n: number }[]>`select count(*)::int as n from waitress.cart_items where cart_id = ${cartId} and not purchased`)[0].n

const lineOf = async (cartId: number, productId: number) =>
  (await sql<{ id: number; quantity: number }[]>`
    select id, quantity from waitress.cart_items where cart_id = ${cartId} and product_id = ${productId} and not purchased`)[0]

/** Waits until `count` sessions of this database wait for a lock in add_cart_item. */
async function lockWaiters(count: number) {
  for (let tries = 0; tries < 200; tries++) {
    const [{ waiting }] = await sql`
      select count(*)::int as waiting from pg_catalog.pg_stat_activity
       where datname = current_database() and wait_event_type = 'Lock' and query like '%add_cart_item%'`
    if (waiting >= count) return
    await Bun.sleep(25)
  }
  throw new Error(`${count} adds never all waited for the cart lock`)
}

describe('the open lines of a cart', () => {
  it(`are at most ${LIMITS.max_open_lines}: one more product is WA114 with a JSON detail and a hint, and changes nothing`, async () => {
    expect(LIMITS.max_open_lines).toBe(100)
    const cart = await cartFor(sql)
    const products = await productsForSale(LIMITS.max_open_lines + 1)
    await fill(cart.id, products.slice(0, LIMITS.max_open_lines))
    expect(await openLines(cart.id)).toBe(100)

    const refused = await refusal(api`select api.add_cart_item(${cart.id}, ${products[100]}, 1, ${cart.user_id})`)
    expect({ code: refused.code, message: refused.message, detail: JSON.parse(refused.detail!) }).toEqual({
      code: 'WA114',
      message: `cart ${cart.id} has 100 open lines; a cart holds at most 100`,
      detail: { cart_id: cart.id, lines: 100, limit: 100 },
    })
    expect(refused.hint).toContain('DELETE /carts/items/:id')
    expect(await openLines(cart.id)).toBe(100)
    expect(await lineOf(cart.id, products[100])).toBeUndefined()
  })

  it('still take more units of a product already in the cart, at the limit', async () => {
    const cart = await cartFor(sql)
    const products = await productsForSale(LIMITS.max_open_lines)
    await fill(cart.id, products)
    const [{ item }] = await api`select api.add_cart_item(${cart.id}, ${products[42]}, 2, ${cart.user_id}) as item`
    expect(item).toMatchObject({ cart_id: cart.id, quantity: 3, product: { id: products[42] } })
    expect(await lineOf(cart.id, products[42])).toMatchObject({ quantity: 3 })
    expect(await openLines(cart.id)).toBe(100)
  })

  it('free a slot when a line is removed or bought', async () => {
    const cart = await cartFor(sql)
    const products = await productsForSale(LIMITS.max_open_lines + 2)
    await fill(cart.id, products.slice(0, 100))
    expect((await refusal(api`select api.add_cart_item(${cart.id}, ${products[100]}, 1)`)).code).toBe('WA114')

    const removed = await lineOf(cart.id, products[0])
    await api`select api.remove_cart_item(${removed.id}, ${cart.user_id})`
    await api`select api.add_cart_item(${cart.id}, ${products[100]}, 1)`
    expect(await openLines(cart.id)).toBe(100)
    expect((await refusal(api`select api.add_cart_item(${cart.id}, ${products[101]}, 1)`)).code).toBe('WA114')

    // A bought line belongs to its order: the cart is empty again, and the products it bought can start new lines.
    await api`select api.place_order(${cart.id})`
    expect(await openLines(cart.id)).toBe(0)
    await api`select api.add_cart_item(${cart.id}, ${products[101]}, 1)`
    await api`select api.add_cart_item(${cart.id}, ${products[1]}, 1)`
    expect(await openLines(cart.id)).toBe(2)
  })

  it('cannot be pushed past the limit by adds racing for the last free line: the cart lock lets one through', async () => {
    const cart = await cartFor(sql)
    const products = await productsForSale(LIMITS.max_open_lines - 1 + 6)
    await fill(cart.id, products.slice(0, 99))
    // Hold the cart, as a checkout or another change does, until all six adds wait for it at line 99.
    const holder = await sql.reserve()
    let outcomes: string[]
    try {
      await holder`begin`
      await holder`select from waitress.carts where id = ${cart.id} for no key update`
      const racers = products.slice(99).map((p) =>
        api`select api.add_cart_item(${cart.id}, ${p}, 1)`.then(
          () => 'added',
          (error) => error.code as string,
        ),
      )
      await lockWaiters(6)
      await holder`commit`
      outcomes = await Promise.all(racers)
    } finally {
      holder.release()
    }
    expect(outcomes.sort()).toEqual(['WA114', 'WA114', 'WA114', 'WA114', 'WA114', 'added'])
    expect(await openLines(cart.id)).toBe(100)
  })
})

describe('the quantity of a line', () => {
  it(`is at most ${LIMITS.max_line_quantity}: adding more is WA115, counting what the line holds, and changes nothing`, async () => {
    expect(LIMITS.max_line_quantity).toBe(10_000)
    const product = await createProduct(sql, { stock: 50_000 })
    const cart = await cartFor(sql)

    const tooMany = await refusal(api`select api.add_cart_item(${cart.id}, ${product.id}, 10001)`)
    expect({ code: tooMany.code, message: tooMany.message, detail: JSON.parse(tooMany.detail!) }).toEqual({
      code: 'WA115',
      message: 'a cart line holds at most 10000 units, not 10001',
      detail: { product_id: product.id, quantity: 10001, limit: 10000 },
    })
    expect(tooMany.hint).toContain('PATCH /carts/items/:id')
    // The largest integer is the same refusal, not an overflow.
    expect((await refusal(api`select api.add_cart_item(${cart.id}, ${product.id}, 2147483647)`)).code).toBe('WA115')
    expect(await lineOf(cart.id, product.id)).toBeUndefined()

    const [{ item }] = await api`select api.add_cart_item(${cart.id}, ${product.id}, 9999) as item`
    const onTop = await refusal(api`select api.add_cart_item(${cart.id}, ${product.id}, 2)`)
    expect({ code: onTop.code, message: onTop.message, detail: JSON.parse(onTop.detail!) }).toEqual({
      code: 'WA115',
      message: `a cart line holds at most 10000 units; the line of product ${product.id} would hold 10001`,
      detail: { product_id: product.id, quantity: 10001, limit: 10000 },
    })
    expect(await lineOf(cart.id, product.id)).toEqual({ id: item.id, quantity: 9999 })
    await api`select api.add_cart_item(${cart.id}, ${product.id}, 1)`
    expect(await lineOf(cart.id, product.id)).toEqual({ id: item.id, quantity: 10_000 })
  })

  it('is at most the limit when set, too: WA115 after ownership, and 22023 below 1 as before', async () => {
    const product = await createProduct(sql, { stock: 50_000 })
    const cart = await cartFor(sql)
    const line = await addItem(sql, cart.id, product.id, 2)

    const refused = await refusal(api`select api.update_cart_item(${line}, 10001, ${cart.user_id})`)
    expect({ code: refused.code, detail: JSON.parse(refused.detail!) }).toEqual({
      code: 'WA115',
      detail: { product_id: product.id, quantity: 10001, limit: 10000 },
    })
    // Another user's line is not found, whatever the quantity asked.
    expect((await refusal(api`select api.update_cart_item(${line}, 10001, ${cart.user_id + 1})`)).code).toBe('WA012')
    expect((await refusal(api`select api.update_cart_item(${line}, 0)`)).code).toBe('22023')
    expect((await refusal(api`select api.add_cart_item(${cart.id}, ${product.id}, 0)`)).code).toBe('22023')
    expect(await lineOf(cart.id, product.id)).toEqual({ id: line, quantity: 2 })

    const [{ item }] = await api`select api.update_cart_item(${line}, 10000, ${cart.user_id}) as item`
    expect(item).toMatchObject({ id: line, quantity: 10_000 })
    expect(await lineOf(cart.id, product.id)).toEqual({ id: line, quantity: 10_000 })
  })
})
