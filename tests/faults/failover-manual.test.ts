import { afterAll, beforeAll, describe, expect, it } from 'bun:test'
import { rmSync } from 'node:fs'
import type { Sql } from '../../src/db/client.ts'
import { buyersWith } from '../support/proof.ts'
import { createProduct } from '../support/fixtures.ts'
import { checkout, cluster, crowd, haEnabled, judgeRace, ownerSql, raceWithFault, serviceOn, serviceWarnings, until } from './failover-support.ts'

/**
 * A primary and a synchronous standby (scripts/manual-standby.sh), no
 * failover engine: the test is the operator. The service is given both hosts
 * (target_session_attrs=read-write); mid-race the primary's postmaster gets
 * kill -9, the standby is promoted by hand, and the same service process
 * must find it. Then the standby is killed instead: a commit cannot be
 * confirmed, so checkouts get 503 within the deadline, and go through again
 * once the standby is back.
 *
 * Needs PostgreSQL 15's server binaries and root or the postgres user:
 * scripts/ci-ha.sh installs them and runs this with WAITRESS_HA=1.
 */

const ms = cluster('manual-standby.sh', { MS_PORT_FROM: process.env.WAITRESS_HA_MS_PORT_FROM ?? '26500' })
let url: string
let service: Awaited<ReturnType<typeof serviceOn>>
let db: Sql

describe.skipIf(!haEnabled)('a synchronous standby promoted by hand', () => {
  beforeAll(async () => {
    url = await ms.run(['up'])
    service = await serviceOn(url)
    db = ownerSql(url)
  }, 240_000)

  afterAll(async () => {
    service?.child.kill('SIGKILL')
    await db?.end({ timeout: 1 })
    await ms.run(['down', '--purge'], 120_000).catch((error) => console.error(String(error)))
    rmSync(ms.dir, { recursive: true, force: true })
  }, 150_000)

  it('kill -9 of the primary mid-race, promotion: every acknowledged order on the new primary, no 500, serving again without a restart, the old primary rejoins', async () => {
    const run = await crowd(db, 400, 200)
    const [oldPrimary] = (await ms.run(['primary'])).split(' ')
    const standby = oldPrimary === 'a' ? 'b' : 'a'
    let promotedAfterMs = 0

    const { replies, probes, servingAgainMs } = await raceWithFault(service.baseUrl, run.buyers, run.probeCarts, 100, async () => {
      const killedAt = performance.now()
      await ms.run(['kill', oldPrimary])
      // The operator promotes once the old primary is seen gone (its port refuses).
      const down = new RegExp(`^${oldPrimary} port \\d+: down`, 'm')
      await until('the old primary to refuse connections', async () => (down.test(await ms.run(['status'])) ? true : undefined), 30_000, 200)
      await ms.run(['promote', standby])
      promotedAfterMs = performance.now() - killedAt
    })

    expect((await ms.run(['primary'])).split(' ')[0]).toBe(standby)
    expect(servingAgainMs).toBeDefined()
    // Judged on the new primary: the owner's pool found it by itself, as the service did.
    const figures = await judgeRace(db, 'manual promotion', run.buyers, [...replies, ...probes], run)
    expect(figures.statuses['201']).toBeGreaterThan(0)
    console.log(`[failover] manual promotion: promoted ${(promotedAfterMs / 1000).toFixed(2)} s after the kill; serving again ${(servingAgainMs! / 1000).toFixed(2)} s after the kill`)

    // The old primary comes back as the new synchronous standby; the same service goes on.
    await ms.run(['rejoin', oldPrimary])
    expect(await ms.run(['status'])).toContain(`standby_${oldPrimary}:streaming/sync`)
    const product = await createProduct(db, { name: 'After the rejoin', stock: 3 })
    const [buyer] = await buyersWith(db, [[[product.id, 1]]])
    expect((await checkout(service.baseUrl, buyer.cartId, performance.now())).status).toBe(201)
    expect(service.child.exitCode).toBeNull()
  }, 300_000)

  it('the standby killed: checkouts get 503 within the deadline (the commit cannot be confirmed), and go through once it is back', async () => {
    const [primary] = (await ms.run(['primary'])).split(' ')
    const standby = primary === 'a' ? 'b' : 'a'
    const run = await crowd(db, 20, 0)
    await ms.run(['kill', standby])
    const t0 = performance.now()
    const replies = await Promise.all(run.buyers.map((buyer) => checkout(service.baseUrl, buyer.cartId, t0)))
    const slowest = Math.max(...replies.map((r) => r.at))
    const statuses = replies.map((r) => (r.body?.code ? `${r.status} ${r.body.code}` : String(r.status)))
    console.log(`[failover] standby killed: replies ${JSON.stringify(Object.fromEntries([...new Set(statuses)].map((s) => [s, statuses.filter((x) => x === s).length])))}; slowest ${Math.round(slowest)} ms`)
    // DB_STATEMENT_TIMEOUT 2 s + 1 s margin is the deadline; a checkout queued behind the others' locks waits at most the queue timeout (5 s) more.
    for (const reply of replies) expect({ status: reply.status, retryAfter: reply.retryAfter }).toEqual({ status: 503, retryAfter: '1' })
    expect(slowest).toBeLessThan(3_000 + 5_000 + 2_000)
    expect(replies.some((r) => r.body?.code === 'WA103')).toBe(true)

    // The standby back (a fresh copy of the primary): checkouts go through again, same service.
    await ms.run(['rejoin', standby])
    const after = await crowd(db, 5, 0)
    const t1 = performance.now()
    const placed = await until(
      'a checkout to be placed with the standby back',
      async () => ((await checkout(service.baseUrl, after.buyers[0].cartId, t1)).status === 201 ? true : undefined),
      30_000,
      200,
    )
    expect(placed).toBe(true)
    const rest = await Promise.all(after.buyers.slice(1).map((buyer) => checkout(service.baseUrl, buyer.cartId, t1)))
    // Placed, or refused for want of stock (the hot product has 3 for 5 buyers): answered, not failed.
    for (const reply of rest) expect([201, 422]).toContain(reply.status)
    await judgeRace(db, 'standby killed', run.buyers, replies, run)

    service.child.kill('SIGTERM')
    await service.child.exited
    const warnings = await serviceWarnings(service.output, 1000)
    expect(warnings.filter((line) => line.includes('unhandled error'))).toEqual([])
  }, 300_000)
})
