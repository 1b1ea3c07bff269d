import { describe, expect, it } from 'bun:test'
import { testSql } from '../support/db.ts'
import { addItem, agePastDeadline, auditOf, cartFor, createProduct, placedOrder, refusal, stockOf } from '../support/fixtures.ts'
import { buyersWith } from '../support/proof.ts'

const sql = testSql()

const movementsOf = async (productId: number) =>
  (await sql`
    select quantity, reason::text, order_id, note from waitress.stock_movements
     where product_id = ${productId} order by id`).map((m) => ({ ...m }))

describe('stock ledger', () => {
  it('records the initial stock of a new product, and nothing for an empty one', async () => {
    const stocked = await createProduct(sql, { stock: 12 })
    const empty = await createProduct(sql, { stock: 0 })
    expect(await movementsOf(stocked.id)).toEqual([{ quantity: 12, reason: 'initial', order_id: null, note: null }])
    expect(await movementsOf(empty.id)).toEqual([])
  })

  it('records one sale per order line, in the checkout transaction', async () => {
    const product = await createProduct(sql, { stock: 9 })
    const orderId = await placedOrder(sql, product.id, 4)
    expect(await movementsOf(product.id)).toEqual([
      { quantity: 9, reason: 'initial', order_id: null, note: null },
      { quantity: -4, reason: 'sale', order_id: orderId, note: null },
    ])
  })

  it('restocks with a restock movement', async () => {
    const product = await createProduct(sql, { stock: 1 })
    const [after] = await sql`select (p->>'stock')::int as stock from api.restock_product(${product.id}, 5, 'container 42') p`
    expect(after.stock).toBe(6)
    expect((await movementsOf(product.id)).at(-1)).toEqual({ quantity: 5, reason: 'restock', order_id: null, note: 'container 42' })
    expect((await refusal(sql`select api.restock_product(${product.id}, 0)`)).code).toBe('22023')
    expect((await refusal(sql`select api.restock_product(987654321, 1)`)).code).toBe('WA002')
  })

  it('corrects stock by a signed quantity with a reason, never below zero', async () => {
    const product = await createProduct(sql, { stock: 5 })
    await sql`select api.adjust_stock(${product.id}, -2, 'two damaged in the count')`
    await sql`select api.adjust_stock(${product.id}, 1, 'one found')`
    expect(await stockOf(sql, product.id)).toBe(4)

    const below = await refusal(sql`select api.adjust_stock(${product.id}, -5, 'oops')`)
    expect(below.code).toBe('WA010')
    expect(JSON.parse(below.detail!)).toEqual({ product_id: product.id, stock: 4, quantity: -5 })
    expect((await refusal(sql`select api.adjust_stock(${product.id}, 0, 'nothing')`)).code).toBe('22023')
    expect((await refusal(sql`select api.adjust_stock(${product.id}, 1, '  ')`)).code).toBe('22023')
    expect(await stockOf(sql, product.id)).toBe(4)
    expect((await movementsOf(product.id)).map((m) => [m.reason, m.quantity])).toEqual([
      ['initial', 5],
      ['correction', -2],
      ['correction', 1],
    ])
  })

  it('refuses a second release of the same order line (stock_movements_once_per_order_line)', async () => {
    const product = await createProduct(sql, { stock: 5 })
    const orderId = await placedOrder(sql, product.id, 2)
    await sql`select api.act_on_order(${orderId}, 'cancel')`
    const error = await refusal(sql`select waitress.release_order_stock(array[${orderId}]::bigint[])`)
    expect(error.code).toBe('23505')
    expect(await stockOf(sql, product.id)).toBe(5)
  })
})

describe('inventory_audit', () => {
  it('is empty when every change went through the functions', async () => {
    const product = await createProduct(sql, { stock: 5 })
    const orderId = await placedOrder(sql, product.id, 2)
    await sql`select api.restock_product(${product.id}, 3)`
    await sql`select api.act_on_order(${orderId}, 'cancel')`
    await sql`select api.adjust_stock(${product.id}, -1, 'count')`
    expect(await auditOf(sql, [product.id])).toEqual([])
  })

  it('catches a direct write of stock that bypassed the functions', async () => {
    const product = await createProduct(sql, { stock: 5 })
    await sql`update waitress.products set stock = stock + 3 where id = ${product.id}`
    try {
      expect(await auditOf(sql, [product.id])).toEqual([
        { product_id: product.id, name: product.name, stock: 8, ledger_stock: 5, sold_in_ledger: 0, sold_in_orders: 0 },
      ])
    } finally {
      await sql`update waitress.products set stock = stock - 3 where id = ${product.id}`
    }
  })

  it('catches an order cancelled behind the functions\' back (stock never given back)', async () => {
    const product = await createProduct(sql, { stock: 5 })
    const orderId = await placedOrder(sql, product.id, 2)
    await sql`update waitress.orders set state = 'cancelled' where id = ${orderId}`
    try {
      expect(await auditOf(sql, [product.id])).toEqual([
        { product_id: product.id, name: product.name, stock: 3, ledger_stock: 3, sold_in_ledger: 2, sold_in_orders: 0 },
      ])
    } finally {
      await sql`update waitress.orders set state = 'pending' where id = ${orderId}`
    }
  })

  it('checks 200 products at once: empty after sales, cancels, expiries, restocks and corrections; exactly the three written behind its back', async () => {
    const [{ ids }] = await sql<{ ids: number[] }[]>`
      select array_agg((p->>'id')::bigint order by n) as ids
        from generate_series(1, 200) n, api.create_product('Audited ' || n, 950 + n % 3, 1000, 10, 100, true) p`
    const buyers = await buyersWith(
      sql,
      ids.map((id) => [[id, 2]]),
    )
    const [{ orders }] = await sql<{ orders: number[] }[]>`
      select array_agg((o->>'id')::bigint order by b.n) as orders
        from unnest(${buyers.map((b) => b.cartId)}::bigint[]) with ordinality as b(cart_id, n),
             jsonb_array_elements(api.place_order(b.cart_id)->'orders') o`
    const every = (k: number) => ids.flatMap((_, i) => (i % k === 0 ? [i] : []))
    for (const i of every(3)) await sql`select api.act_on_order(${orders[i]}, 'cancel')`
    await agePastDeadline(sql, every(4).filter((i) => i % 3 !== 0).map((i) => orders[i]))
    await sql`select api.expire_orders('30 minutes', 100000)`
    for (const i of every(5)) await sql`select api.restock_product(${ids[i]}, 4)`
    for (const i of every(7)) await sql`select api.adjust_stock(${ids[i]}, -1, 'count')`
    expect(await auditOf(sql, ids)).toEqual([])

    // Three products with nothing but their sale (indexes 1, 2 and 11): 10 in, 2 sold, 8 left.
    const [written, recounted, forgotten] = [ids[1], ids[2], ids[11]]
    await sql`update waitress.products set stock = stock + 1 where id = ${written}`
    await sql`update waitress.order_items set quantity = 3 where product_id = ${recounted}`
    const [initial] = await sql`delete from waitress.stock_movements where product_id = ${forgotten} and reason = 'initial' returning *`
    try {
      const rows = (await auditOf(sql, ids)) as { product_id: number }[]
      expect(rows.sort((a, b) => a.product_id - b.product_id) as unknown[]).toEqual([
        { product_id: written, name: 'Audited 2', stock: 9, ledger_stock: 8, sold_in_ledger: 2, sold_in_orders: 2 },
        { product_id: recounted, name: 'Audited 3', stock: 8, ledger_stock: 8, sold_in_ledger: 2, sold_in_orders: 3 },
        { product_id: forgotten, name: 'Audited 12', stock: 8, ledger_stock: -2, sold_in_ledger: 2, sold_in_orders: 2 },
      ])
    } finally {
      await sql`update waitress.products set stock = stock - 1 where id = ${written}`
      await sql`update waitress.order_items set quantity = 2 where product_id = ${recounted}`
      await sql`
        insert into waitress.stock_movements (product_id, quantity, reason, created_at)
        values (${initial.product_id}, ${initial.quantity}, ${initial.reason}, ${initial.created_at})`
    }
    expect(await auditOf(sql, ids)).toEqual([])
  })

  it('stays empty after 1,000 buyers mixed with cancellations, payments, expiries and restocks', async () => {
    const products = await Promise.all(Array.from({ length: 8 }, (_, i) => createProduct(sql, { name: `Mixed ${i}`, stock: 150, seller_id: 900 + (i % 2) })))
    const pick = () => products[Math.floor(Math.random() * products.length)]
    const placed: number[] = []
    let refused = 0

    const buyer = async () => {
      const cart = await cartFor(sql)
      const chosen = [...new Set([pick(), pick(), pick()])]
      try {
        for (const product of chosen) await addItem(sql, cart.id, product.id, 1 + Math.floor(Math.random() * 3))
        const orders = await sql`select (o->>'id')::bigint as id from jsonb_array_elements(api.place_order(${cart.id})->'orders') o`
        for (const { id } of orders) {
          placed.push(id)
          const roll = Math.random()
          if (roll < 0.2) await sql`select api.act_on_order(${id}, 'cancel')`
          else if (roll < 0.35) await sql`select api.act_on_order(${id}, 'pay')`.then(() => sql`select api.act_on_order(${id}, 'cancel')`)
          else if (roll < 0.5) await sql`select api.act_on_order(${id}, 'pay')`.then(() => sql`select api.act_on_order(${id}, 'reject')`)
          else if (roll < 0.65) await agePastDeadline(sql, [id])
          else if (roll < 0.8) await sql`select api.act_on_order(${id}, 'pay')`
        }
      } catch (error) {
        if ((error as { code?: string }).code !== 'WA004') throw error
        refused++
      }
    }
    const restocker = async () => {
      for (let i = 0; i < 40; i++) await sql`select api.restock_product(${pick().id}, ${1 + Math.floor(Math.random() * 5)})`
    }
    const expirer = async () => {
      for (let i = 0; i < 40; i++) await sql`select api.expire_orders('30 minutes', 50)`
    }

    const queue = Array.from({ length: 1000 }, () => buyer)
    const worker = async () => {
      for (let job = queue.pop(); job; job = queue.pop()) await job()
    }
    await Promise.all([...Array.from({ length: 14 }, worker), restocker(), expirer(), expirer()])
    await sql`select api.expire_orders('30 minutes', 100000)`

    const ids = products.map((p) => p.id)
    expect(placed.length).toBeGreaterThan(100)
    expect(refused).toBeGreaterThan(0)
    expect(await auditOf(sql, ids)).toEqual([])
    const states = await sql`select state::text, count(*)::int from waitress.orders where id = any (${placed}::bigint[]) group by 1`
    const byState = Object.fromEntries(states.map((row) => [row.state, row.count]))
    for (const state of ['cancelled', 'rejected', 'expired', 'paid', 'pending']) expect(byState[state]).toBeGreaterThan(0)
    const [{ negative }] = await sql`select count(*)::int as negative from waitress.products where id = any (${ids}::bigint[]) and stock < 0`
    expect(negative).toBe(0)
  })
})
