import { describe, expect, it } from 'bun:test'
import { testDatabaseUrl, testSql } from '../support/db.ts'
import { addItem, auditOf, cartFor, createProduct, stockOf } from '../support/fixtures.ts'
import { startService } from '../support/service.ts'

const sql = testSql()

describe('graceful shutdown', () => {
  it('on SIGTERM finishes the checkouts in flight, loses none, and exits 0', async () => {
    const product = await createProduct(sql, { stock: 1000 })
    const carts = await Promise.all(Array.from({ length: 150 }, async () => {
      const cart = await cartFor(sql)
      await addItem(sql, cart.id, product.id, 1)
      return cart
    }))
    // A small pool keeps most checkouts queued in the service when SIGTERM lands.
    const service = await startService(testDatabaseUrl(), { DB_POOL_MAX: '4' })
    const { child, baseUrl } = service

    const replies = carts.map((cart) =>
      fetch(`${baseUrl}/carts/${cart.id}/checkout`, { method: 'POST' }).then(
        async (response) => ({ cart: cart.id, status: response.status, body: await response.json(), at: performance.now() }),
        (error) => ({ cart: cart.id, status: 0, body: String(error), at: performance.now() }),
      ),
    )
    await Bun.sleep(30)
    const signalledAt = performance.now()
    child.kill('SIGTERM')
    const results = await Promise.all(replies)
    const exitCode = await child.exited

    // Requests in flight when the signal landed were answered, not cut off.
    expect(results.filter((r) => r.status === 201 && r.at > signalledAt).length).toBeGreaterThan(0)
    expect(await fetch(`${baseUrl}/healthz`).then(() => 'answered', () => 'refused')).toBe('refused')

    expect(exitCode).toBe(0)
    const accepted = results.filter((r) => r.status === 201)
    expect(accepted.length).toBeGreaterThan(0)
    // Nothing half done: every reply is a whole order or a refusal to connect, never a 5xx.
    expect(results.filter((r) => r.status !== 201 && r.status !== 0)).toEqual([])
    const [{ orders }] = await sql`
      select count(*)::int as orders from waitress.orders o
       where o.buyer_id in (select user_id from waitress.carts where id = any (${carts.map((c) => c.id)}::bigint[]))`
    expect(orders).toBe(accepted.length)
    expect(await stockOf(sql, product.id)).toBe(1000 - accepted.length)
    expect(await auditOf(sql, [product.id])).toEqual([])

    await service.exit()
    const log = service.log()
    expect(log.map((line) => line.msg)).toContain('shutting down: draining requests in flight')
    expect(log.at(-1).msg).toBe('stopped')
    expect(log.filter((line) => line.msg === 'request' && line.status === 201)).toHaveLength(accepted.length)
  })
})
