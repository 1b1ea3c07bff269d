import { expect } from 'bun:test'
import { mkdtempSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join, resolve } from 'node:path'
import { createSql, type Sql } from '../../src/db/client.ts'
import { ensureAppLogin, randomPassword } from '../../src/db/app-login.ts'
import { hostUrls } from '../../src/db/failover.ts'
import { migrate } from '../../src/db/migrate.ts'
import { checkInvariants, startRun } from '../../proof/database-facts.ts'
import type { Attempt } from '../../proof/judge.ts'
import { outcomeOfHttp } from '../../proof/outcomes.ts'
import { auditOf, createProduct } from '../support/fixtures.ts'
import { buyersWith, expectClean, randomInt, type Buyer } from '../support/proof.ts'
import { startService, type RunningService } from '../support/service.ts'
import { until as waitUntil } from '../support/wait.ts'

/**
 * The pieces of the failover tests: a cluster script run as a child process
 * (scripts/manual-standby.sh or scripts/ha.sh, each in a directory and on
 * ports of its own), the service in front of it, a 400-buyer race with a
 * fault in its middle, a probe that times how long until a checkout is
 * placed again, and the invariant checker on the new primary.
 */

/** The HA tests need PostgreSQL 15's server binaries (and pg_autoctl for the engine test); scripts/ci-ha.sh installs them and sets WAITRESS_HA=1. */
export const haEnabled = process.env.WAITRESS_HA === '1'

const SCRIPTS = resolve(import.meta.dir, '../../scripts')

export interface Cluster {
  /** Runs `script ...args` and returns its stdout, trimmed; throws with its stderr if it fails or outlasts timeoutMs. */
  run(args: string[], timeoutMs?: number): Promise<string>
  dir: string
}

export function cluster(script: 'ha.sh' | 'manual-standby.sh', env: Record<string, string>): Cluster {
  // Made only when the tests run: a skipped file leaves nothing behind.
  const dir = haEnabled ? mkdtempSync(join(tmpdir(), script === 'ha.sh' ? 'waitress-ha-' : 'waitress-ms-')) : ''
  const dirVar = script === 'ha.sh' ? 'HA_DIR' : 'MS_DIR'
  return {
    dir,
    async run(args, timeoutMs = 180_000) {
      const child = Bun.spawn(['bash', join(SCRIPTS, script), ...args], {
        env: { ...process.env, [dirVar]: dir, ...env },
        stdin: 'ignore',
        stdout: 'pipe',
        stderr: 'pipe',
      })
      const timer = setTimeout(() => child.kill('SIGKILL'), timeoutMs)
      const [code, out, err] = await Promise.all([child.exited, new Response(child.stdout).text(), new Response(child.stderr).text()])
      clearTimeout(timer)
      if (code !== 0) throw new Error(`${script} ${args.join(' ')} exited with ${code}: ${err.trim() || out.trim()}`)
      return out.trim()
    },
  }
}

/**
 * The suite's bounded wait (tests/support/wait.ts), with the longer
 * deadlines a failover needs: polls `check` until it returns a value, at most
 * `timeoutMs`; a check that throws (a node still down) has not happened yet.
 */
export async function until<T>(what: string, check: () => Promise<T | undefined>, timeoutMs: number, everyMs = 100): Promise<T> {
  return await waitUntil(what, () => check().catch(() => undefined), { deadlineMs: timeoutMs, everyMs })
}

/** The same URL as another login (libpq's several hosts are no WHATWG URL). */
export function asLogin(url: string, login: string, password: string): string {
  return url.replace(/^(postgres(?:ql)?:\/\/)[^@/]*@/, `$1${login}:${encodeURIComponent(password)}@`)
}

/** Migrates through the multi-host URL (the primary is found by itself), makes waitress_app, and starts the service on both hosts. */
export async function serviceOn(url: string, env: Record<string, string> = {}) {
  await migrate(url)
  const password = randomPassword()
  await ensureAppLogin(hostUrls(url)[0], password)
  const service: RunningService = await startService(url, {
    APP_DATABASE_URL: asLogin(url, 'waitress_app', password),
    DB_APPLICATION_NAME: `waitress-failover-${process.pid}`,
    DB_POOL_MAX: '8',
    DB_STATEMENT_TIMEOUT: '2s',
    LOG_LEVEL: 'warn',
    ...env,
  })
  // Everything it wrote to stdout, once it has exited (startService reads its output as it comes).
  const output = service.exit().then(() => service.output().stdout)
  return { ...service, output }
}

export interface Reply {
  cartId: number
  status: number
  body: any
  retryAfter: string | null
  /** When the reply came, ms after the race started. */
  at: number
}

export async function checkout(baseUrl: string, cartId: number, t0: number): Promise<Reply> {
  try {
    const response = await fetch(`${baseUrl}/carts/${cartId}/checkout`, { method: 'POST', signal: AbortSignal.timeout(60_000) })
    const body = await response.json().catch(() => null)
    return { cartId, status: response.status, body, retryAfter: response.headers.get('retry-after'), at: performance.now() - t0 }
  } catch (error) {
    return { cartId, status: 0, body: { error: String(error) }, retryAfter: null, at: performance.now() - t0 }
  }
}

/**
 * `count` buyers for a hot product whose stock is below demand; every other
 * one also wants a plain product of another seller (two orders in one
 * transaction: a half-written checkout would show). Plus `probes` one-line
 * carts of the plain product, for the probe that times the recovery.
 */
export async function crowd(db: Sql, count: number, probes: number) {
  const hot = await createProduct(db, { name: 'Hot', seller_id: 911, price: 500, stock: Math.max(2, Math.floor(count * 0.6)) })
  const plain = await createProduct(db, { name: 'Plain', seller_id: 912, price: 200, stock: 10_000 })
  const buyers = await buyersWith(
    db,
    Array.from({ length: count }, (_, i) => {
      const lines: [number, number][] = [[hot.id, randomInt(1, 2)]]
      if (i % 2 === 0) lines.push([plain.id, 1])
      return lines
    }),
  )
  const probeCarts = await buyersWith(db, Array.from({ length: probes }, (): [number, number][] => [[plain.id, 1]]))
  const productIds = [hot.id, plain.id]
  return { buyers, probeCarts, productIds, start: await startRun(db, productIds) }
}

/**
 * Every buyer's checkout at once; `fault` starts once `faultAfter` replies
 * have come back. From the fault on, a probe checks out one probe cart after
 * another until one is placed: `servingAgainMs` is from the start of the
 * fault to that reply.
 */
export async function raceWithFault(baseUrl: string, buyers: Buyer[], probeCarts: Buyer[], faultAfter: number, fault: () => Promise<void>) {
  const t0 = performance.now()
  let faultAt: number | undefined
  let faulted: Promise<void> | undefined
  const probes: Reply[] = []
  let answered = 0
  const replies = await Promise.all(
    buyers.map((buyer) =>
      checkout(baseUrl, buyer.cartId, t0).then((reply) => {
        if (++answered === faultAfter) {
          faultAt = performance.now() - t0
          faulted = fault()
        }
        return reply
      }),
    ),
  )
  if (!faulted) throw new Error(`the race ended with fewer than ${faultAfter} replies`)
  await faulted
  // The probe: one checkout at a time until one is placed.
  let servingAgainMs: number | undefined
  for (const probe of probeCarts) {
    const reply = await checkout(baseUrl, probe.cartId, t0)
    probes.push(reply)
    if (reply.status === 201) {
      servingAgainMs = reply.at - faultAt!
      break
    }
    await Bun.sleep(100)
  }
  return { replies, probes, faultAt: faultAt!, servingAgainMs }
}

export interface Figures {
  statuses: Record<string, number>
  acknowledgedOrders: number
  foundOrders: number
}

/**
 * On the database `db` (the new primary): the invariant checker with
 * `indefinite` (a 503 may or may not have an order, only a whole one), the
 * ledger audit, every acknowledged order found, and no reply a 500.
 */
export async function judgeRace(db: Sql, label: string, buyers: Buyer[], replies: Reply[], run: Awaited<ReturnType<typeof crowd>>): Promise<Figures> {
  const wants = new Map([...buyers, ...run.probeCarts].map((b) => [b.cartId, b]))
  const checkouts: Attempt[] = replies.map((reply) => {
    const buyer = wants.get(reply.cartId)!
    return { cartId: buyer.cartId, buyerId: buyer.userId, wants: buyer.wants, outcome: outcomeOfHttp(reply.status, reply.body) }
  })
  // The service stays up, and after a failover the deadlock counter is another server's: the
  // count is read at once and may not compare, which the verdict notes (faults were injected).
  const verdict = await checkInvariants(db, { ...run.start, checkouts, indefinite: true }, { flush: false })
  const statuses: Record<string, number> = {}
  for (const { status, body } of replies) {
    const key = body?.code && status >= 500 ? `${status} ${body.code}` : String(status)
    statuses[key] = (statuses[key] ?? 0) + 1
  }
  const acknowledged = replies.filter((r) => r.status === 201).flatMap((r) => (Array.isArray(r.body.data) ? r.body.data : [r.body.data]).map((o: { id: number }) => o.id))
  const [{ found }] = await db<{ found: number }[]>`select count(*)::int as found from waitress.orders where id = any (${acknowledged}::bigint[])`
  console.log(
    `[failover] ${label}: replies ${JSON.stringify(statuses)}; acknowledged orders ${acknowledged.length}, found on the new primary ${found}; ` +
      `verdict ${verdict.ok ? 'ok' : 'VIOLATED'} (${verdict.violations.length} violations of ${verdict.checked.length} invariants); ` +
      verdict.products.map((p) => `product ${p.productId}: ${p.initial} → ${p.remaining}, sold ${p.sold}`).join('; '),
  )
  expectClean(verdict, { indefinite: true })
  expect(await auditOf(db, run.productIds)).toEqual([])
  expect(found).toBe(acknowledged.length)
  // A failure is a 503 with Retry-After, never a 500; no request went unanswered.
  for (const reply of replies.filter((r) => r.status >= 500 || r.status === 0))
    expect({ status: reply.status, retryAfter: reply.retryAfter }).toEqual({ status: 503, retryAfter: '1' })
  return { statuses, acknowledgedOrders: acknowledged.length, foundOrders: found }
}

/** An owner's pool on the cluster's URL (it follows the primary too). */
export const ownerSql = (url: string) => createSql(url, { max: 5 })

/** The log lines the service printed at a level of warn or above, for the record. */
export async function serviceWarnings(output: Promise<string>, limit = 5): Promise<string[]> {
  const lines = (await output).split('\n').filter((line) => line.includes('"level":"warn"') || line.includes('"level":"error"'))
  return lines.slice(0, limit).map((line) => line.slice(0, 300))
}
