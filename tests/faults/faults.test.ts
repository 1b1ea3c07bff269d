import { afterAll, describe, expect, it } from 'bun:test'
import { mkdtempSync, readFileSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { createSql, type Sql } from '../../src/db/client.ts'
import { startEmbeddedPostgres, type EmbeddedServer } from '../../src/db/embedded.ts'
import { migrate } from '../../src/db/migrate.ts'
import { checkInvariants, startRun } from '../../proof/database-facts.ts'
import { newProgress, runFlashSale } from '../../proof/flash-sale.ts'
import { type Attempt, type Verdict } from '../../proof/judge.ts'
import { outcomeOfHttp } from '../../proof/outcomes.ts'
import { testDatabaseUrl, testSql } from '../support/db.ts'
import { auditOf, createProduct } from '../support/fixtures.ts'
import { buyersWith, expectClean, randomInt, type Buyer } from '../support/proof.ts'
import { FaultyProxy } from '../support/proxy.ts'
import { startService, type RunningService } from '../support/service.ts'
import { until } from '../support/wait.ts'

/**
 * Faults in the middle of a race, each followed by the invariant checker.
 * A client that got a 503 or no answer cannot know whether its checkout
 * committed, so the checker runs with `indefinite`: such a checkout may have
 * an order, but only a whole one; everything else holds as in a clean race
 * (every 201 is in the database exactly, stock is conserved and never
 * negative, no cart item is sold twice, no 500).
 */

const sql = testSql()
const services: RunningService[] = []
afterAll(async () => {
  for (const { child } of services) child.kill('SIGKILL')
})

interface Reply {
  cartId: number
  status: number
  body: any
  retryAfter: string | null
  ms: number
}

async function checkout(baseUrl: string, cartId: number): Promise<Reply> {
  const started = performance.now()
  try {
    const response = await fetch(`${baseUrl}/carts/${cartId}/checkout`, { method: 'POST', signal: AbortSignal.timeout(20_000) })
    const body = await response.json().catch(() => null)
    return { cartId, status: response.status, body, retryAfter: response.headers.get('retry-after'), ms: performance.now() - started }
  } catch (error) {
    return { cartId, status: 0, body: { error: String(error) }, retryAfter: null, ms: performance.now() - started }
  }
}

/** Starts the service under a name of its own, so its sessions (and only they) can be found in pg_stat_activity. */
async function service(databaseUrl: string, env: Record<string, string> = {}, port?: number) {
  const applicationName = `waitress-faults-${process.pid}-${services.length}`
  // A fault must land in the middle of a race, so the race must last: one checkout per call, as many calls as
  // connections (coalesced, 200 checkouts are answered by a handful of calls before any fault can strike).
  const running = await startService(
    databaseUrl,
    { DB_APPLICATION_NAME: applicationName, DB_POOL_MAX: '8', CHECKOUT_MAX_BATCH: '1', CHECKOUT_CALLS_IN_FLIGHT: '8', LOG_LEVEL: 'warn', ...env },
    port,
  )
  services.push(running)
  return { ...running, applicationName }
}

/** A TCP proxy in front of the test database, and the database's URL through it. */
async function proxiedDatabase() {
  const upstream = new URL(testDatabaseUrl())
  const proxy = await FaultyProxy.start(Number(upstream.port))
  const viaProxy = new URL(upstream)
  viaProxy.port = String(proxy.port)
  return { proxy, viaProxy: viaProxy.toString() }
}

/**
 * 200 buyers (or as many as given) for a hot product whose stock is below
 * demand; half also want a plain product of another seller, so their
 * checkout is two orders in one transaction: a half-written one would show.
 */
async function flashCrowd(db: Sql, count = 200) {
  const hot = await createProduct(db, { name: 'Hot', seller_id: 901, price: 500, stock: 120 })
  const plain = await createProduct(db, { name: 'Plain', seller_id: 902, price: 200, stock: 1000 })
  const buyers = await buyersWith(
    db,
    Array.from({ length: count }, (_, i) => {
      const lines: [number, number][] = [[hot.id, randomInt(1, 2)]]
      if (i % 2 === 0) lines.push([plain.id, 1])
      return lines
    }),
  )
  return { buyers, productIds: [hot.id, plain.id], start: await startRun(db, [hot.id, plain.id]) }
}

/**
 * Every buyer's checkout fired at once from this process; each fault starts
 * once that many replies have come back, i.e. in the middle of the race.
 */
async function race(baseUrl: string, buyers: Buyer[], faults: [afterReplies: number, act: () => Promise<unknown>][] = []) {
  const pending = [...faults].sort((a, b) => a[0] - b[0])
  const acts: Promise<unknown>[] = []
  let answered = 0
  const replies = await Promise.all(
    buyers.map((buyer) =>
      checkout(baseUrl, buyer.cartId).then((reply) => {
        answered++
        while (pending.length > 0 && answered >= pending[0][0]) acts.push(pending.shift()![1]())
        return reply
      }),
    ),
  )
  await Promise.all(acts)
  return replies
}

/** Waits until none of the service's sessions is running a statement: what the database holds is final. */
async function settled(db: Sql, applicationName: string) {
  await until(`the sessions of ${applicationName} to be idle`, async () => {
    const [{ busy }] = await db<{ busy: number }[]>`
      select count(*)::int as busy from pg_stat_activity where application_name = ${applicationName} and state <> 'idle'`
    return busy === 0
  })
}

/** The checker's verdict on a faulty race, with the audit of the ledger; prints the tally for the record. */
async function judged(db: Sql, fault: string, buyers: Buyer[], replies: Reply[], run: { start: Awaited<ReturnType<typeof startRun>>; productIds: number[] }) {
  expect(replies).toHaveLength(buyers.length)
  const byCart = new Map(replies.map((reply) => [reply.cartId, reply]))
  const checkouts: Attempt[] = buyers.map((buyer) => {
    const reply = byCart.get(buyer.cartId)!
    return { cartId: buyer.cartId, buyerId: buyer.userId, wants: buyer.wants, outcome: outcomeOfHttp(reply.status, reply.body) }
  })
  // The service stays up after the fault (it must recover by itself), so its
  // sessions are not ended: the deadlock count may lag, and the verdict says so.
  const verdict: Verdict = await checkInvariants(db, { ...run.start, checkouts, indefinite: true }, { flush: false })
  const statuses: Record<string, number> = {}
  for (const { status } of replies) statuses[status] = (statuses[status] ?? 0) + 1
  const failedCarts = replies.filter((r) => r.status !== 201 && r.status !== 422).map((r) => r.cartId)
  const [{ committed }] = await db<{ committed: number }[]>`
    select count(distinct cart_id)::int as committed from waitress.cart_items where cart_id = any (${failedCarts}::bigint[]) and purchased`
  console.log(
    `[faults] ${fault}: replies ${JSON.stringify(statuses)} (slowest ${Math.round(Math.max(...replies.map((r) => r.ms)))} ms); ` +
      `${committed} of ${failedCarts.length} failed checkouts committed whole; ` +
      `verdict ${verdict.ok ? 'ok' : 'VIOLATED'} (${verdict.violations.length} violations of ${verdict.checked.length} invariants); ` +
      verdict.products.map((p) => `product ${p.productId}: ${p.initial} → ${p.remaining}, sold ${p.sold}`).join('; '),
  )
  expectClean(verdict, { indefinite: true })
  expect(await auditOf(db, run.productIds)).toEqual([])
  // A failure is a 503 with Retry-After or no answer at all, never a 500.
  for (const reply of replies.filter((r) => r.status >= 500)) expect({ status: reply.status, retryAfter: reply.retryAfter }).toEqual({ status: 503, retryAfter: '1' })
  return { verdict, statuses }
}

/** The service heals by itself: /readyz turns 200 and a fresh checkout is placed. */
async function expectRecovers(db: Sql, baseUrl: string, cartId?: number) {
  // If it never does, say whether the process is still there and what it last wrote.
  const running = services.find((s) => s.baseUrl === baseUrl)
  const seen = async () => {
    if (!running) return 'no service of this test answers there'
    const { exitCode, signalCode } = running.child
    const { stdout, stderr } = running.output()
    return `${exitCode !== null || signalCode !== null ? `the service exited (${exitCode ?? signalCode})` : 'the service is running'}; ` +
      `its last output: ${stdout.slice(-2000)}${stderr ? ` stderr: ${stderr.slice(-2000)}` : ''}`
  }
  await until(`${baseUrl}/readyz to answer 200 again`, async () => (await fetch(`${baseUrl}/readyz`).then((r) => r.status, () => 0)) === 200, { everyMs: 100, seen })
  if (cartId === undefined) {
    const product = await createProduct(db, { name: 'After the fault', stock: 5 })
    ;[{ cartId }] = await buyersWith(db, [[[product.id, 1]]])
  }
  const reply = await checkout(baseUrl, cartId!)
  expect({ status: reply.status, body: reply.body }).toMatchObject({ status: 201 })
}

describe('faults in the middle of a race', () => {
  it('pg_terminate_backend on the service’s sessions, three times: 503s, whole orders, recovery without a restart', async () => {
    const { baseUrl, applicationName } = await service(testDatabaseUrl())
    const { buyers, productIds, start } = await flashCrowd(sql)
    const terminated: number[] = []
    const terminate = async () => {
      const rows = await sql`select pg_terminate_backend(pid) from pg_stat_activity where application_name = ${applicationName}`
      terminated.push(rows.length)
    }

    const replies = await race(baseUrl, buyers, [
      [20, terminate],
      [70, terminate],
      [120, terminate],
    ])

    expect(terminated).toHaveLength(3)
    expect(terminated.reduce((a, b) => a + b)).toBeGreaterThan(0)
    await settled(sql, applicationName)
    const { statuses } = await judged(sql, `pg_terminate_backend ×3 (${terminated.join(', ')} sessions)`, buyers, replies, { start, productIds })
    expect(statuses['201']).toBeGreaterThan(0)
    await expectRecovers(sql, baseUrl)
  }, 40_000)

  it('kill -9 of the service, then a restart: every 201 is in the database, no partial order', async () => {
    const first = await service(testDatabaseUrl())
    const { buyers, productIds, start } = await flashCrowd(sql)

    const replies = await race(first.baseUrl, buyers, [[40, async () => first.child.kill('SIGKILL')]])
    expect(await first.child.exited).not.toBe(0)
    expect(replies.filter((r) => r.status === 0).length).toBeGreaterThan(0)

    await settled(sql, first.applicationName)
    const second = await service(testDatabaseUrl(), {}, first.port)
    await judged(sql, 'kill -9 of the service', buyers, replies, { start, productIds })
    await expectRecovers(sql, second.baseUrl)
    second.child.kill('SIGTERM')
    expect(await second.child.exited).toBe(0)
  }, 40_000)

  it('an immediate restart of PostgreSQL: 503 with Retry-After while it is down, recovery without a restart of the service', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'waitress-restart-'))
    const dataDir = join(dir, 'data')
    let server: EmbeddedServer | undefined = await startEmbeddedPostgres({ dataDir, persistent: true })
    let db: Sql | undefined
    try {
      const url = server.url('waitress_restart')
      const port = Number(new URL(url).port)
      await migrate(url)
      db = createSql(url, { max: 5 })
      const { baseUrl } = await service(url)
      const { buyers, productIds, start } = await flashCrowd(db)
      const [whileDown] = await buyersWith(db, [[[productIds[1], 1]]])

      // Immediate shutdown (SIGQUIT to the postmaster): no checkpoint, crash recovery at the next start.
      const stop = async () => {
        const pid = Number(readFileSync(join(dataDir, 'postmaster.pid'), 'utf8').split('\n')[0])
        const stopped = server!.stop()
        process.kill(pid, 'SIGQUIT')
        await stopped
        server = undefined
      }
      const replies = await race(baseUrl, buyers, [[40, stop]])
      expect(replies.filter((r) => r.status === 503).length).toBeGreaterThan(0)

      // While it is down: not ready, and a checkout is a clean 503 with Retry-After.
      const readyz = await fetch(`${baseUrl}/readyz`)
      expect(readyz.status).toBe(503)
      const refused = await checkout(baseUrl, whileDown.cartId)
      expect({ status: refused.status, retryAfter: refused.retryAfter, code: refused.body?.code }).toEqual({ status: 503, retryAfter: '1', code: undefined })

      server = await startEmbeddedPostgres({ dataDir, port, persistent: true })
      await db.end({ timeout: 1 })
      db = createSql(url, { max: 5 })
      await judged(db, 'immediate restart of PostgreSQL', buyers, replies, { start, productIds })
      // The very cart refused while the database was down is placed now.
      await expectRecovers(db, baseUrl, whileDown.cartId)
    } finally {
      await db?.end({ timeout: 1 })
      await server?.stop()
      rmSync(dir, { recursive: true, force: true })
    }
  }, 60_000)

  it('a slow network, then cut connections: a race completes, requests fail with 503 within the timeout plus a margin, and recover', async () => {
    const { proxy, viaProxy } = await proxiedDatabase()
    try {
      const statementTimeoutMs = 1_000
      const { baseUrl, applicationName, child } = await service(viaProxy, { DB_STATEMENT_TIMEOUT: `${statementTimeoutMs}ms` })

      // Latency alone: slower, still correct, and no request fails.
      proxy.latencyMs = 20
      const crowd = await flashCrowd(sql)
      const raced = await race(baseUrl, crowd.buyers)
      const { statuses } = await judged(sql, 'proxy latency 20 ms', crowd.buyers, raced, crowd)
      expect(Object.keys(statuses).sort()).toEqual(['201', '422'])

      // Latency far above the statement timeout: a clean 503 from the service's own
      // deadline, before any answer could have crossed the proxy twice (there and back).
      const late = await flashCrowd(sql, 6)
      proxy.latencyMs = 3_000
      const noAnswerBefore = 2 * proxy.latencyMs
      const slow = await race(baseUrl, late.buyers.slice(0, 3))
      for (const reply of slow) {
        expect({ status: reply.status, retryAfter: reply.retryAfter }).toEqual({ status: 503, retryAfter: '1' })
        expect(reply.ms).toBeLessThan(noAnswerBefore)
      }

      // Every connection cut (still slow): 503 again, never a hang or a 500.
      proxy.resetAll()
      const cut = await race(baseUrl, late.buyers.slice(3))
      for (const reply of cut) {
        expect({ status: reply.status, retryAfter: reply.retryAfter }).toEqual({ status: 503, retryAfter: '1' })
        expect(reply.ms).toBeLessThan(noAnswerBefore)
      }
      console.log(`[faults] proxy latency 3 s, then reset: replies in ${[...slow, ...cut].map((r) => Math.round(r.ms)).join(', ')} ms`)

      // Still the same process: a failed cancel request on a cut connection once crashed it (an unhandled rejection).
      expect(child.exitCode).toBeNull()

      // The network heals: the service does too, by itself.
      proxy.resetAll()
      proxy.latencyMs = 0
      await settled(sql, applicationName)
      await judged(sql, 'proxy latency 3 s, then reset', late.buyers, [...slow, ...cut], late)
      await expectRecovers(sql, baseUrl)
    } finally {
      await proxy.stop()
    }
  }, 60_000)

  it('connections cut all through a race: a client that sends each busy answer again, with its Idempotency-Key, ends with every checkout placed once or refused', async () => {
    const { proxy, viaProxy } = await proxiedDatabase()
    try {
      const { baseUrl } = await service(viaProxy)
      const progress = newProgress()
      const sale = runFlashSale(
        { baseUrl, databaseUrl: testDatabaseUrl(), buyers: 120, products: 2, stock: 60, maxQty: 2, multi: true, concurrency: 30, seed: 77, retryBusyWithinMs: 30_000 },
        progress,
      )
      // The moment a row has committed, every connection between the service and PostgreSQL is cut: with
      // 300 ms each way, the answer of the call that wrote it is still on its way back, and is lost. Once
      // in the setup (a cart line), twice in the race (an order).
      let racing = true
      const cuts = { setup: 0, race: 0 }
      const cutOnceWritten = async (table: 'cart_items' | 'orders', since: Date, before: number) => {
        const seen = await until(
          `a row of ${table} written after the last cut`,
          async () => {
            const [{ rows }] = await sql<{ rows: number }[]>`select count(*)::int as rows from ${sql('waitress')}.${sql(table)} where created_at > ${since}`
            return (rows > before || !racing) && { rows }
          },
          { everyMs: 5 },
        )
        if (racing) proxy.resetAll()
        return seen.rows
      }
      const now = async () => (await sql<{ now: Date }[]>`select clock_timestamp() as now`)[0].now
      const cutting = (async () => {
        proxy.latencyMs = 300
        await cutOnceWritten('cart_items', await now(), 0)
        cuts.setup++
        proxy.latencyMs = 0
        await until('the race to start', () => progress.phase !== 'setup' || !racing)
        proxy.latencyMs = 300
        const since = await now()
        for (let placed = 0; cuts.race < 2 && racing; cuts.race++) placed = await cutOnceWritten('orders', since, placed)
        proxy.latencyMs = 0
      })()
      const result = await sale.finally(() => (racing = false))
      await cutting
      console.log('[faults] connections cut', cuts, 'sent again', result.resent)
      // Not indefinite: a 503 or no answer left at the end would be a violation, and so would an order placed twice.
      expect(result.verdict.violations).toEqual([])
      expect(cuts).toEqual({ setup: 1, race: 2 })
      expect(result.resent.calls).toBeGreaterThan(0)
      expect(result.resent.checkouts).toBeGreaterThan(0)
      // Some of them had been placed: their first answer was lost, and the key gave it back instead of a second order.
      expect(result.resent.replayed).toBeGreaterThan(0)
      expect(result.checkouts.filter((c) => c.outcome.kind === 'accepted').length).toBeGreaterThan(0)
    } finally {
      await proxy.stop()
    }
  }, 120_000)
})
