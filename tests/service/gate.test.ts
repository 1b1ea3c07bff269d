import { describe, expect, it } from 'bun:test'
import { DatabaseBusyError, Gate } from '../../src/db/gate.ts'
import { DatabaseUnreachableError } from '../../src/db/failover.ts'
import { createSql, gated } from '../../src/db/client.ts'
import { createApp } from '../../src/app.ts'
import { FaultyProxy } from '../support/proxy.ts'
import { testDatabaseUrl, testSql } from '../support/db.ts'
import { addItem, cartFor, createProduct, stockOf } from '../support/fixtures.ts'
import { buyersWith } from '../support/proof.ts'
import { startService } from '../support/service.ts'
import { startLine } from '../support/start-line.ts'
import { settledYet, until, within } from '../support/wait.ts'

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
      // Given up on: the statement itself could not have ended before 10 s.
      expect(performance.now() - started).toBeLessThan(10_000)
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
      // Every packet held 3 s: a new session's handshake alone takes several of them.
      proxy.latencyMs = 3_000
      const started = performance.now()
      const response = await app.handle(new Request(`http://localhost/carts/${cart.id}/checkout`, { method: 'POST' }))
      expect(response.status).toBe(503)
      expect(response.headers.get('retry-after')).toBe('1')
      // Answered before a single packet could have come back: the deadline (400 ms) ended it, not the network.
      expect(performance.now() - started).toBeLessThan(3_000)

      // The network fast again: a client that retries as Retry-After says is served. On a busy machine a
      // new session may itself outlast the 400 ms deadline (another 503), so it retries until answered.
      proxy.latencyMs = 0
      const retried = await until(
        'a checkout answered other than 503 once the network is fast again',
        async () => {
          const reply = await app.handle(new Request(`http://localhost/carts/${cart.id}/checkout`, { method: 'POST' }))
          return reply.status === 503 ? undefined : { status: reply.status, body: await reply.json() }
        },
        { everyMs: 100 },
      )
      // A retry given up on at the deadline may have committed all the same; then this one finds the cart
      // ordered (WA006). Either way the cart has exactly one order and the stock went down once.
      if (retried.status !== 201) expect(retried).toMatchObject({ status: 422, body: { code: 'WA006' } })
      const [{ orders }] = await sql<{ orders: number }[]>`
        select count(distinct oi.order_id)::int as orders from waitress.order_items oi
          join waitress.cart_items ci on ci.id = oi.cart_item_id where ci.cart_id = ${cart.id}`
      expect(orders).toBe(1)
      expect(await stockOf(sql, product.id)).toBe(4)
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

  it('ends a transaction left idle longer than the idle-in-transaction timeout, and with it its locks', async () => {
    const product = await createProduct(sql, { stock: 5 })
    const cart = await cartFor(sql)
    await addItem(sql, cart.id, product.id, 1)
    const applicationName = `waitress-idle-${process.pid}`
    const pool = createSql(testDatabaseUrl(), { max: 1, idleInTransactionTimeoutMs: 200, applicationName })
    const session = await pool.reserve()
    try {
      const [{ setting }] = await session`select current_setting('idle_in_transaction_session_timeout') as setting`
      expect(setting).toBe('200ms')
      const [{ pid }] = await session<{ pid: number }[]>`select pg_backend_pid() as pid`
      await session`begin`
      await session`select 1 from waitress.products where id = ${product.id} for update`
      // Left idle: the server ends the session, and the lock goes with it.
      await until(`session ${pid}, idle in its transaction, to be ended by the server`, async () => {
        const [{ left }] = await sql`select count(*)::int as left from pg_stat_activity where pid = ${pid}`
        return left === 0
      })
      // Nobody waits for that lock now: a checkout of the product goes through at once.
      const placed = await sql.begin(async (tx) => {
        await tx`set local lock_timeout = '1s'`
        return tx`select api.place_order(${cart.id})`
      })
      expect(placed).toHaveLength(1)
      expect(await stockOf(sql, product.id)).toBe(4)
    } finally {
      session.release()
      await pool.end({ timeout: 1 })
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

describe('the gate, end to end', () => {
  /** A checkout as a client sees it. */
  const checkout = async (baseUrl: string, cartId: number) => {
    const response = await fetch(`${baseUrl}/carts/${cartId}/checkout`, { method: 'POST' })
    return { status: response.status, retryAfter: response.headers.get('retry-after'), body: (await response.json()) as any }
  }

  /**
   * The service with one connection and room for one request in its queue;
   * the test holds the product's row lock, so the first checkout waits in
   * the database for as long as the test says.
   */
  async function crowdedService(queueTimeout: string) {
    const product = await createProduct(sql, { stock: 10 })
    const buyers = await buyersWith(
      sql,
      Array.from({ length: 3 }, () => [[product.id, 1]]),
    )
    const applicationName = `waitress-gate-${process.pid}-${queueTimeout}`
    const service = await startService(testDatabaseUrl(), {
      DB_APPLICATION_NAME: applicationName,
      DB_POOL_MAX: '1',
      DB_QUEUE_MAX: '1',
      DB_QUEUE_TIMEOUT: queueTimeout,
      // More checkout calls than the pool has connections: the checkouts reach the gate instead of waiting in the order placer.
      CHECKOUT_CALLS_IN_FLIGHT: '3',
      DB_LOCK_TIMEOUT: '60s',
      DB_STATEMENT_TIMEOUT: '60s',
    })
    const line = await startLine(sql, { products: [product.id] })
    const first = checkout(service.baseUrl, buyers[0].cartId)
    await line.waitFor(1, { applicationName })
    return { product, buyers, service, line, first }
  }

  it('answers 503 with Retry-After at once when DB_QUEUE_MAX requests already wait, and serves the ones queued', async () => {
    const { product, buyers, service, line, first } = await crowdedService('60s')
    try {
      const second = checkout(service.baseUrl, buyers[1].cartId)
      await until('the second checkout to wait in the queue', async () => (await service.metric('waitress_db_pool_waiting')) === 1)

      // The queue is full, and nothing can leave it while the line holds: only that refuses the third.
      const third = await within('the third checkout to be refused', checkout(service.baseUrl, buyers[2].cartId))
      expect(third).toEqual({ status: 503, retryAfter: '1', body: { error: expect.any(String), meta: { http_status: 503 } } })
      expect(settledYet(second)()).toBe(false)

      await line.letGo()
      expect([(await first).status, (await second).status]).toEqual([201, 201])
      expect(await stockOf(sql, product.id)).toBe(8)
    } finally {
      await line.letGo()
      service.child.kill('SIGTERM')
      expect((await service.exit()).code).toBe(0)
    }
  })

  it('answers 503 with Retry-After to a request that waited DB_QUEUE_TIMEOUT for a connection, having done nothing', async () => {
    const { product, buyers, service, line, first } = await crowdedService('300ms')
    try {
      const started = performance.now()
      // The only connection is held behind the line until the test lets go: the wait can only end by the timeout.
      const second = await within('the queued checkout to give up', checkout(service.baseUrl, buyers[1].cartId))
      expect(second).toEqual({ status: 503, retryAfter: '1', body: { error: expect.any(String), meta: { http_status: 503 } } })
      expect(performance.now() - started).toBeGreaterThanOrEqual(300)
      expect(settledYet(first)()).toBe(false)

      await line.letGo()
      expect((await first).status).toBe(201)
      expect(await stockOf(sql, product.id)).toBe(9)
      const [{ open }] = await sql`select count(*)::int as open from waitress.cart_items where cart_id = ${buyers[1].cartId} and not purchased`
      expect(open).toBe(1)
    } finally {
      await line.letGo()
      service.child.kill('SIGTERM')
      expect((await service.exit()).code).toBe(0)
    }
  })
})
