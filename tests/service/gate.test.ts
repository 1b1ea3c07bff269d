import { describe, expect, it } from 'bun:test'
import { DatabaseBusyError, Gate } from '../../src/db/gate.ts'
import { DatabaseUnreachableError } from '../../src/db/failover.ts'
import { createSql, gated } from '../../src/db/client.ts'
import { createApp } from '../../src/app.ts'
import { FaultyProxy } from '../support/proxy.ts'
import { testDatabaseUrl, testSql } from '../support/db.ts'
import { addItem, cartFor, createProduct, stockOf } from '../support/fixtures.ts'

const sql = testSql()

describe('Gate', () => {
  it('runs at most `concurrency` at once and starts the rest in arrival order', async () => {
    const gate = new Gate(2, 100, 5_000)
    const started: number[] = []
    let running = 0
    let peak = 0
    await Promise.all(
      Array.from({ length: 8 }, (_, i) =>
        gate.run(async () => {
          started.push(i)
          peak = Math.max(peak, ++running)
          await new Promise((resolve) => setImmediate(resolve))
          running--
        }),
      ),
    )
    expect(peak).toBe(2)
    expect(started).toEqual([0, 1, 2, 3, 4, 5, 6, 7])
    expect(gate.stats).toEqual({ inUse: 0, waiting: 0 })
  })

  it('refuses at once when the queue is full, and after maxWait when it waited too long', async () => {
    const gate = new Gate(1, 1, 50)
    let finish!: () => void
    // Runs until the test says so: the waiter can only leave the queue by its timeout.
    const blocker = gate.run(() => new Promise<void>((resolve) => (finish = resolve)))
    const waiter = gate.run(async () => 'late')
    await expect(gate.run(async () => 'no room')).rejects.toEqual(new DatabaseBusyError('queue_full'))
    await expect(waiter).rejects.toEqual(new DatabaseBusyError('queue_timeout'))
    expect(gate.stats).toEqual({ inUse: 1, waiting: 0 })
    finish()
    await blocker
    expect(await gate.run(async () => 'free again')).toBe('free again')
  })
})

describe('the gated pool', () => {
  it('runs a statement again after a serialization failure or deadlock, at most 3 times, and tells of every retry', async () => {
    // A sequence is not rolled back with the failed statement, so it counts the attempts.
    await sql`create sequence public.test_flaky_attempts`
    await sql.unsafe(`
      create function public.test_flaky(p_failures integer, p_code text) returns bigint language plpgsql as $$
      declare v_attempt bigint := nextval('public.test_flaky_attempts');
      begin
        if v_attempt <= p_failures then
          raise exception using errcode = p_code, message = 'flaky';
        end if;
        return v_attempt;
      end $$`)
    const pool = createSql(testDatabaseUrl(), { max: 2 })
    const retried: string[] = []
    const db = gated(pool, new Gate(2, 10, 1_000), { onRetry: (code) => void retried.push(code) })
    const restart = () => sql`select setval('public.test_flaky_attempts', 1, false)`
    try {
      const [recovered] = await db`select public.test_flaky(2, '40001') as attempt`
      expect(recovered.attempt).toBe(3)
      // The caller saw a result; the two failures before it are told all the same.
      expect(retried).toEqual(['40001', '40001'])

      await restart()
      const [afterDeadlock] = await db`select public.test_flaky(1, '40P01') as attempt`
      expect(afterDeadlock.attempt).toBe(2)
      expect(retried).toEqual(['40001', '40001', '40P01'])

      await restart()
      retried.length = 0
      await expect(db`select public.test_flaky(100, '40001')`).rejects.toMatchObject({ code: '40001' })
      const [{ attempts }] = await sql`select last_value as attempts from public.test_flaky_attempts`
      expect(attempts).toBe(4)
      expect(retried).toEqual(['40001', '40001', '40001'])

      await restart()
      retried.length = 0
      await expect(db`select public.test_flaky(100, 'WA004')`).rejects.toMatchObject({ code: 'WA004' })
      const [{ once }] = await sql`select last_value as once from public.test_flaky_attempts`
      expect(once).toBe(1)
      expect(retried).toEqual([])
    } finally {
      await pool.end()
      await sql`drop function public.test_flaky(integer, text)`
      await sql`drop sequence public.test_flaky_attempts`
    }
  })
})

describe('the client-side deadline', () => {
  it('gives up on a statement not answered in time, cancels it, and the pool goes on', async () => {
    const applicationName = `waitress-deadline-${process.pid}`
    const pool = createSql(testDatabaseUrl(), { max: 1, applicationName })
    const db = gated(pool, new Gate(1, 10, 1_000), { queryTimeoutMs: 300 })
    try {
      const started = performance.now()
      const error = await db`select pg_sleep(10)`.catch((e) => e)
      expect(error).toBeInstanceOf(DatabaseUnreachableError)
      expect(error.unreached).toBe('outcome-unknown')
      expect(performance.now() - started).toBeLessThan(2_000)
      // Cancelled, not left running: the pool's only connection answers again at once.
      const [{ one }] = await db`select 1 as one`
      expect(one).toBe(1)
      const sleeping = await sql`select pid from pg_stat_activity where application_name = ${applicationName} and query like '%pg_sleep%' and state = 'active'`
      expect(sleeping).toHaveLength(0)
    } finally {
      await pool.end({ timeout: 1 })
    }
  })

  it('answers 503 with Retry-After, not a hang, when the network to the database is slow', async () => {
    const product = await createProduct(sql, { stock: 5 })
    const cart = await cartFor(sql)
    await addItem(sql, cart.id, product.id, 1)
    const url = new URL(testDatabaseUrl())
    const proxy = await FaultyProxy.start(Number(url.port))
    url.port = String(proxy.port)
    const pool = createSql(url.toString(), { max: 2, role: 'waitress_api', statementTimeoutMs: 200 })
    const app = createApp(gated(pool, new Gate(2, 10, 1_000), { queryTimeoutMs: 400 }))
    try {
      proxy.latencyMs = 600
      const started = performance.now()
      const response = await app.handle(new Request(`http://localhost/carts/${cart.id}/checkout`, { method: 'POST' }))
      expect(response.status).toBe(503)
      expect(response.headers.get('retry-after')).toBe('1')
      expect(performance.now() - started).toBeLessThan(2_000)

      proxy.latencyMs = 0
      const retried = await app.handle(new Request(`http://localhost/carts/${cart.id}/checkout`, { method: 'POST' }))
      expect(retried.status).toBe(201)
    } finally {
      await pool.end({ timeout: 1 })
      await proxy.stop()
    }
  })
})

describe('session limits', () => {
  it('answers 503 with Retry-After, and changes nothing, when a checkout waits too long for a lock', async () => {
    const product = await createProduct(sql, { stock: 5 })
    const cart = await cartFor(sql)
    await addItem(sql, cart.id, product.id, 1)
    const pool = createSql(testDatabaseUrl(), { max: 2, role: 'waitress_api', lockTimeoutMs: 200 })
    const app = createApp(gated(pool, new Gate(2, 10, 1_000)))
    try {
      await sql.begin(async (tx) => {
        await tx`select 1 from waitress.products where id = ${product.id} for update`
        const response = await app.handle(new Request(`http://localhost/carts/${cart.id}/checkout`, { method: 'POST' }))
        expect(response.status).toBe(503)
        expect(response.headers.get('retry-after')).toBe('1')
        expect(await response.json()).toEqual({ error: expect.any(String), meta: { http_status: 503 } })
      })
      expect(await stockOf(sql, product.id)).toBe(5)
      const [{ purchased }] = await sql`select count(*)::int as purchased from waitress.cart_items where cart_id = ${cart.id} and purchased`
      expect(purchased).toBe(0)
    } finally {
      await pool.end()
    }
  })

  it('answers 503 when a statement runs past the statement timeout', async () => {
    const pool = createSql(testDatabaseUrl(), { max: 1, statementTimeoutMs: 100 })
    try {
      const error = await pool`select pg_sleep(2)`.catch((e) => e)
      expect(error.code).toBe('57014')
    } finally {
      await pool.end()
    }
  })
})
