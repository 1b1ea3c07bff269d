import { describe, expect, it } from 'bun:test'
import { checkInvariants, startRun } from '../../proof/database-facts.ts'
import type { Attempt } from '../../proof/judge.ts'
import { outcomeOfHttp } from '../../proof/outcomes.ts'
import { testDatabaseUrl, testSql } from '../support/db.ts'
import { auditOf, createProduct, stockOf } from '../support/fixtures.ts'
import { buyersWith, expectClean } from '../support/proof.ts'
import { startService } from '../support/service.ts'
import { startLine } from '../support/start-line.ts'
import { until, within } from '../support/wait.ts'

const sql = testSql()

/** A checkout as a client sees it: the status, or 0 for no answer at all. */
const checkout = (baseUrl: string, cartId: number) =>
  fetch(`${baseUrl}/carts/${cartId}/checkout`, { method: 'POST' }).then(
    async (response) => ({ cartId, status: response.status, body: (await response.json()) as any }),
    (error) => ({ cartId, status: 0, body: { error: String(error) } as any }),
  )

/**
 * SIGTERM lands while checkouts are in flight, made certain rather than
 * likely: the test holds the product's row lock (a start line), so the
 * service's four connections wait on it and the other checkouts wait in its
 * gate, and it sends the signal only once it sees exactly that.
 */
describe('graceful shutdown', () => {
  it('on SIGTERM stops listening, answers every checkout already in flight with its order, loses none, and exits 0', async () => {
    const product = await createProduct(sql, { stock: 1000 })
    const buyers = await buyersWith(
      sql,
      Array.from({ length: 150 }, () => [[product.id, 1]]),
    )
    const applicationName = `waitress-shutdown-${process.pid}`
    // Time limits far beyond the test, which holds the lock while the service begins to shut down.
    const service = await startService(testDatabaseUrl(), {
      DB_APPLICATION_NAME: applicationName,
      DB_POOL_MAX: '4',
      DB_LOCK_TIMEOUT: '60s',
      DB_STATEMENT_TIMEOUT: '60s',
      DB_QUEUE_TIMEOUT: '60s',
      SHUTDOWN_TIMEOUT: '60s',
    })
    const line = await startLine(sql, { products: [product.id] })

    const replies = Promise.all(buyers.map((buyer) => checkout(service.baseUrl, buyer.cartId)))
    let drained: { code: number | null; signal: string | number | null; tail: string }
    try {
      // All 150 in flight: 2 checkout calls in the database behind the line (CHECKOUT_CALLS_IN_FLIGHT), 148 waiting in the order placer.
      await line.waitFor(2, { applicationName, queued: () => service.metric('waitress_checkout_waiting'), queuedAtLeast: 148 })
      service.child.kill('SIGTERM')
      await until('the service to say it is draining', () => service.log().some((line) => line.msg === 'shutting down: draining requests in flight'))
      expect(await fetch(`${service.baseUrl}/healthz`).then(() => 'answered', () => 'refused')).toBe('refused')
    } finally {
      await line.letGo()
    }
    const results = await within('every checkout to be answered', replies)
    drained = await within('the service to exit', service.exit())

    expect(drained.code).toBe(0)
    // Every checkout was in flight when the signal landed, and every one got its order.
    expect(results.filter((r) => r.status !== 201)).toEqual([])
    const [{ orders }] = await sql`
      select count(*)::int as orders from waitress.orders
       where buyer_id = any (${buyers.map((b) => b.userId)}::bigint[])`
    expect(orders).toBe(150)
    expect(await stockOf(sql, product.id)).toBe(850)
    expect(await auditOf(sql, [product.id])).toEqual([])

    const log = service.log()
    expect(log.at(-1).msg).toBe('stopped')
    expect(log.filter((line) => line.msg === 'request' && line.status === 201)).toHaveLength(150)
    expect(log.some((line) => line.msg === 'requests still in flight at the deadline: closing them')).toBe(false)
  })

  it('at SHUTDOWN_TIMEOUT closes the requests still in flight and exits 0 without waiting for them; what they did commits whole or not at all', async () => {
    const product = await createProduct(sql, { stock: 100 })
    const buyers = await buyersWith(
      sql,
      Array.from({ length: 10 }, () => [[product.id, 1]]),
    )
    const start = await startRun(sql, [product.id])
    const applicationName = `waitress-deadline-${process.pid}`
    const service = await startService(testDatabaseUrl(), {
      DB_APPLICATION_NAME: applicationName,
      DB_POOL_MAX: '4',
      DB_LOCK_TIMEOUT: '60s',
      DB_STATEMENT_TIMEOUT: '60s',
      DB_QUEUE_TIMEOUT: '60s',
      SHUTDOWN_TIMEOUT: '300ms',
    })
    const line = await startLine(sql, { products: [product.id] })

    const replies = Promise.all(buyers.map((buyer) => checkout(service.baseUrl, buyer.cartId)))
    let ended: Awaited<ReturnType<typeof service.exit>>
    try {
      await line.waitFor(2, { applicationName, queued: () => service.metric('waitress_checkout_waiting'), queuedAtLeast: 8 })
      service.child.kill('SIGTERM')
      // The line still holds: no checkout can finish, so only the deadline can end the wait.
      ended = await within('the service to give up on its requests and exit', service.exit())
    } finally {
      await line.letGo()
    }
    const results = await within('every client to hear the end', replies)

    expect(ended.code).toBe(0)
    const log = service.log()
    expect(log.find((line) => line.msg === 'requests still in flight at the deadline: closing them')).toMatchObject({ timeout_ms: 300 })
    expect(log.at(-1).msg).toBe('stopped')
    // Nobody got an answer: their connections were closed.
    expect(results.map((r) => r.status)).toEqual(Array(10).fill(0))

    // The statements that were in the database when the service let go of them
    // run on once the line lets go: each commits a whole order, or nothing.
    await until('the closed sessions to finish', async () => {
      const [{ left }] = await sql`select count(*)::int as left from pg_stat_activity where application_name = ${applicationName}`
      return left === 0
    })
    const checkouts: Attempt[] = results.map((r, i) => ({ cartId: r.cartId, buyerId: buyers[i].userId, wants: buyers[i].wants, outcome: outcomeOfHttp(r.status, r.body) }))
    const verdict = await checkInvariants(sql, { ...start, checkouts, indefinite: true })
    expectClean(verdict)
    expect(await auditOf(sql, [product.id])).toEqual([])
  })
})
