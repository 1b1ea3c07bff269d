import { afterAll, beforeAll, describe, expect, it } from 'bun:test'
import { checkShardedInvariants, startShardedRun } from '../../proof/sharded-facts.ts'
import type { Attempt } from '../../proof/judge.ts'
import { outcomeOfHttp } from '../../proof/outcomes.ts'
import { startService, type RunningService } from '../support/service.ts'
import { until } from '../support/wait.ts'
import { addItem, cartOf, createProduct, errorOf, sharding, startTestCluster, usersOn, type TestCluster } from './support/cluster.ts'

/**
 * Shard 1 (a server of its own) is stopped while buyers check out through
 * the service, then started again. Buyers whose checkout needs only shard 0
 * keep being served; those that need shard 1 get 503 with Retry-After. Every
 * 503 is then retried with its Idempotency-Key; nothing is left half-written.
 * Each phase lasts until what it must show has happened (every kind served
 * before the stop, enough replies of every kind while it is down, every kind
 * served again after), never for a fixed time.
 */

type Kind = 'shard 0 only' | 'seller on shard 1' | 'both shards' | 'home on shard 1'

interface Buyer {
  kind: Kind
  userId: number
  cartId: number
  wants: Map<number, number>
  key: string
}

interface Reply {
  buyer: Buyer
  status: number
  body: any
  retryAfter: string | null
  sentAt: number
  answeredAt: number
}

const CARTS_PER_KIND = 80
/** Each worker's pause between checkouts: the carts must last the whole run on a fast machine. */
const PACE_MS = 150

const median = (replies: Reply[]) => {
  const ms = replies.map((r) => r.answeredAt - r.sentAt).sort((a, b) => a - b)
  return ms.length ? Math.round(ms[Math.floor(ms.length / 2)]) : 0
}

describe.skipIf(!sharding.ok)('a shard stopped in the middle of checkouts', () => {
  let cluster: TestCluster
  let service: RunningService

  beforeAll(async () => {
    cluster = await startTestCluster({ shards: 2, separate: [1], prefix: 'outage_' })
    service = await startService(cluster.routerUrl, { APP_DATABASE_URL: cluster.appUrl, DB_POOL_MAX: '8' })
  })
  afterAll(async () => {
    service?.child.kill('SIGTERM')
    await service?.exit()
    await cluster?.close()
  })

  it("answers its sellers' checkouts with 503 and Retry-After, serves the others, and settles every one after", async () => {
    const [seller0] = await usersOn(cluster.router, 0, 1)
    const [seller1] = await usersOn(cluster.router, 1, 1)
    const p0 = await createProduct(cluster.api, { name: 'Here', seller_id: seller0, stock: 10_000 })
    const p1 = await createProduct(cluster.api, { name: 'There', seller_id: seller1, stock: 10_000 })
    const lines: Record<Kind, number[]> = {
      'shard 0 only': [p0.id],
      'seller on shard 1': [p1.id],
      'both shards': [p0.id, p1.id],
      'home on shard 1': [p0.id],
    }
    const queues = new Map<Kind, Buyer[]>()
    for (const kind of Object.keys(lines) as Kind[]) {
      const users = await usersOn(cluster.router, kind === 'home on shard 1' ? 1 : 0, CARTS_PER_KIND)
      const buyers = await Promise.all(
        users.map(async (userId): Promise<Buyer> => {
          const cart = await cartOf(cluster.api, userId)
          for (const productId of lines[kind]) await addItem(cluster.api, cart.id, productId, 1)
          return { kind, userId, cartId: cart.id, wants: new Map(lines[kind].map((id) => [id, 1])), key: `outage-${crypto.randomUUID()}` }
        }),
      )
      queues.set(kind, buyers)
    }
    const start = await startShardedRun(cluster.shards, [p0.id, p1.id])

    const checkout = async (buyer: Buyer): Promise<Reply> => {
      const sentAt = performance.now()
      try {
        const response = await fetch(`${service.baseUrl}/carts/${buyer.cartId}/checkout`, { method: 'POST', headers: { 'idempotency-key': buyer.key } })
        const body = await response.json()
        return { buyer, status: response.status, body, retryAfter: response.headers.get('retry-after'), sentAt, answeredAt: performance.now() }
      } catch (error) {
        return { buyer, status: 0, body: { error: String(error) }, retryAfter: null, sentAt, answeredAt: performance.now() }
      }
    }

    // Two workers per kind, each checking out its carts one after another, for as long as there are carts.
    const replies: Reply[] = []
    let stopping = false
    const worker = async (kind: Kind) => {
      const queue = queues.get(kind)!
      while (!stopping && queue.length > 0) {
        replies.push(await checkout(queue.shift()!))
        await Bun.sleep(PACE_MS)
      }
    }
    const workers = (Object.keys(lines) as Kind[]).flatMap((kind) => [worker(kind), worker(kind)])

    const kinds = Object.keys(lines) as Kind[]
    const placedSince = (from: number) => kinds.filter((kind) => replies.some((r) => r.buyer.kind === kind && r.status === 201 && r.sentAt > from))
    const seen = () => JSON.stringify({ replies: replies.length, left: Object.fromEntries([...queues].map(([kind, queue]) => [kind, queue.length])) })
    await until('a checkout of every kind placed before the stop', () => placedSince(0).length === kinds.length, { seen })
    const shard1 = cluster.shardServer[1]
    await shard1.stop()
    const downFrom = performance.now()
    // A direct call meets the unreachable shard as 08006 (the service's 503), never as PL/Proxy's XX000 (500).
    // Each router session's cached connection to it may first report the shutdown itself (57P01, also a 503):
    // the pool has several, so ask until one answers past them.
    let direct = await errorOf(cluster.api`select api.product(${p1.id})`)
    await until(
      'a direct call to meet the stopped shard past the router connections that saw it shut down (57P01)',
      async () => direct.code !== '57P01' || ((direct = await errorOf(cluster.api`select api.product(${p1.id})`)), false),
      { seen: () => JSON.stringify(direct) },
    )
    expect(direct).toMatchObject({ code: '08006', message: 'a shard of the database is unavailable' })
    // Down until every kind has been answered while it was: shard 0's buyers a few times.
    const answeredSinceDown = (kind: Kind) => replies.filter((r) => r.buyer.kind === kind && r.sentAt > downFrom).length
    await until(
      'replies of every kind while shard 1 is down (4 of shard 0 only, 2 of each other kind)',
      () => kinds.every((kind) => answeredSinceDown(kind) >= (kind === 'shard 0 only' ? 4 : 2)),
      { seen },
    )
    const downUntil = performance.now()
    await shard1.start()
    const upFrom = performance.now()
    await until('a checkout of every kind placed once shard 1 is back', () => placedSince(upFrom).length === kinds.length, { seen })
    stopping = true
    await Promise.all(workers)

    const during = replies.filter((reply) => reply.sentAt > downFrom && reply.answeredAt < downUntil)
    const byKind = (kind: Kind) => during.filter((reply) => reply.buyer.kind === kind)
    const before = replies.filter((reply) => reply.answeredAt < downFrom && reply.buyer.kind === 'shard 0 only')
    console.log(`outage: before the stop, shard 0 only: ${before.length} placed, median ${median(before)} ms`)
    console.log(
      `outage: ${replies.length} checkouts, ${during.length} while shard 1 was down: ` +
        (Object.keys(lines) as Kind[])
          .map((kind) => `${kind} ${byKind(kind).filter((r) => r.status === 201).length}/${byKind(kind).length} placed (median ${median(byKind(kind))} ms)`)
          .join(', '),
    )
    // While it was down: shard 0's buyers were all served, the others all told to come back.
    expect(byKind('shard 0 only').length).toBeGreaterThan(3)
    for (const reply of byKind('shard 0 only')) expect(reply.status).toBe(201)
    for (const kind of ['seller on shard 1', 'both shards', 'home on shard 1'] as const) {
      expect(byKind(kind).length).toBeGreaterThan(0)
      for (const reply of byKind(kind)) expect({ status: reply.status, retryAfter: reply.retryAfter }).toEqual({ status: 503, retryAfter: '1' })
    }
    // Before and after: everyone served; at the edges, a 503 at most.
    for (const reply of replies) expect([201, 503]).toContain(reply.status)

    // Every 503, retried with its key as Retry-After says, is settled once the
    // shard is back. (A router session whose connection to the shard predates
    // the restart meets it closed at its first call there: one more 503.)
    const retried: Reply[] = []
    let attempts = 0
    let pending = replies.filter((reply) => reply.status !== 201).map((reply) => reply.buyer)
    await until(
      'every 503 to be settled by retries with its key',
      async () => {
        if (pending.length === 0) return true
        attempts++
        const round = await Promise.all(pending.map(checkout))
        retried.push(...round)
        pending = round.filter((reply) => reply.status === 503).map((reply) => reply.buyer)
        return pending.length === 0
      },
      { everyMs: 1000, seen: () => `${pending.length} still answered 503 after ${attempts} rounds` }, // Retry-After: 1
    )
    const unsettled = new Set(retried.filter((reply) => reply.status !== 201).map((reply) => reply.buyer.cartId))
    for (const reply of retried) if (reply.status === 201) unsettled.delete(reply.buyer.cartId)
    console.log(`outage: ${replies.filter((r) => r.status !== 201).length} retried, ${attempts} rounds`)
    expect([...unsettled]).toEqual([])

    // Checkouts that stopped half-way and were not retried would be undone by
    // the sweeper; age the journal so that it runs now.
    for (const shard of cluster.shards) await shard`update waitress.checkouts set started_at = now() - interval '2 minutes'`
    await cluster.api`select api.expire_orders()`

    const final = new Map<number, Reply>()
    for (const reply of [...replies, ...retried]) if (reply.status === 201 || !final.has(reply.buyer.cartId)) final.set(reply.buyer.cartId, reply)
    const checkouts: Attempt[] = [...final.values()].map((reply) => ({
      cartId: reply.buyer.cartId,
      buyerId: reply.buyer.userId,
      wants: reply.buyer.wants,
      outcome: outcomeOfHttp(reply.status, reply.body),
    }))
    // The service stopped first: its sessions, and the router's connections to the shards, publish their statistics.
    service.child.kill('SIGTERM')
    expect((await service.exit()).code).toBe(0)
    const verdict = await checkShardedInvariants(cluster.shards, { ...start, checkouts, indefinite: true }, cluster.router)
    expect(verdict.violations).toEqual([])
    for (const shard of cluster.shards) expect([...(await shard`select id from waitress.checkouts`)]).toEqual([])
  })
})
