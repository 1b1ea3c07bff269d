import { afterAll, beforeAll, describe, expect, it } from 'bun:test'
import { serviceMetrics } from '../../proof/database-facts.ts'
import { checkShardedInvariants, startShardedRun } from '../../proof/sharded-facts.ts'
import type { Attempt } from '../../proof/judge.ts'
import { outcomeOfHttp } from '../../proof/outcomes.ts'
import { expectClean } from '../support/proof.ts'
import { startLine } from '../support/start-line.ts'
import { startService, type RunningService } from '../support/service.ts'
import { addItem, cartOf, createProduct, sharedCluster, sharding, usersOn, type TestCluster } from './support/cluster.ts'

/**
 * Many buyers, each with a cart over both shards, check out at once through
 * the real service on the router, every one with an Idempotency-Key, some
 * twice at the same moment; then every request is sent again with its key.
 * The stock is scarce, so checkouts are refused on one shard after the other
 * shard's part was placed, and undone. The checker reads both shards, once
 * the service is stopped (so every session, the router's connections to the
 * shards among them, has published its statistics), and counts the
 * service's own retries: a deadlock is a violation even when a retry hid it.
 */

const BUYERS = 48
const DUPLICATES = 8
/** The service's DB_POOL_MAX and CHECKOUT_CALLS_IN_FLIGHT: checkout sessions of it that can wait at the start line at once. */
const POOL = 12

interface Buyer {
  userId: number
  cartId: number
  wants: Map<number, number>
  key: string
}

interface Reply {
  status: number
  body: any
  retryAfter: string | null
}

describe.skipIf(!sharding.ok)('a race of carts spanning two shards, through the service', () => {
  let cluster: TestCluster

  beforeAll(async () => {
    cluster = await sharedCluster()
  })

  async function race(precheck: boolean) {
    await cluster.router.unsafe(`alter database shared_router ${precheck ? 'reset waitress.checkout_precheck' : 'set waitress.checkout_precheck = off'}`)
    const service: RunningService = await startService(cluster.routerUrl, {
      APP_DATABASE_URL: cluster.appUrl,
      DB_POOL_MAX: String(POOL),
      // As many checkout calls as connections: every session can be a checkout waiting at the line.
      CHECKOUT_CALLS_IN_FLIGHT: String(POOL),
      DB_STATEMENT_TIMEOUT: '20s',
      DB_LOCK_TIMEOUT: '15s',
      DB_QUEUE_TIMEOUT: '30s',
    })
    try {
      const sellers = [...(await usersOn(cluster.router, 0, 3)), ...(await usersOn(cluster.router, 1, 3))]
      // Plenty on shard 0, scarce on shard 1: parts on shard 0 are placed, then shard 1 often refuses.
      const products = await Promise.all(
        sellers.map((seller, i) => createProduct(cluster.api, { name: `Item ${i}`, seller_id: seller, stock: i < 3 ? 14 : 5 })),
      )
      const onShard = [products.slice(0, 3), products.slice(3)]
      const homes = [...(await usersOn(cluster.router, 0, BUYERS / 2)), ...(await usersOn(cluster.router, 1, BUYERS / 2))]
      const buyers: Buyer[] = []
      for (const [n, userId] of homes.entries()) {
        const cart = await cartOf(cluster.api, userId)
        const wants = new Map<number, number>()
        for (const shard of onShard) {
          const chosen = [...shard].sort(() => Math.random() - 0.5).slice(0, 1 + (n % 2))
          for (const product of chosen) {
            const quantity = 1 + Math.floor(Math.random() * 2)
            await addItem(cluster.api, cart.id, product.id, quantity)
            wants.set(product.id, quantity)
          }
        }
        buyers.push({ userId, cartId: cart.id, wants, key: `race-${crypto.randomUUID()}` })
      }
      const counters = serviceMetrics(service.baseUrl)
      const start = await startShardedRun(
        cluster.shards,
        products.map((p) => p.id),
        { service: counters },
      )

      const checkout = async (buyer: Buyer): Promise<Reply> => {
        try {
          const response = await fetch(`${service.baseUrl}/carts/${buyer.cartId}/checkout`, {
            method: 'POST',
            headers: { 'idempotency-key': buyer.key },
          })
          return { status: response.status, body: await response.json(), retryAfter: response.headers.get('retry-after') }
        } catch (error) {
          return { status: 0, body: { error: String(error) }, retryAfter: null }
        }
      }
      const duplicated = buyers.slice(0, DUPLICATES)
      // Every cart wants shard 1's products: a start line there (their row
      // locks, held by the test) lets go once every session the service can
      // run at once waits behind it and more checkouts queue in the service.
      const line = await startLine(cluster.shards[1], { products: onShard[1].map((p) => p.id) })
      const racing = Promise.all([Promise.all(buyers.map(checkout)), Promise.all(duplicated.map(checkout))])
      // Without the dry run a checkout reaches shard 1 only after its part on
      // shard 0 was placed; once shard 0's stock is gone the rest are refused
      // there and finish, so how many ever reach the line depends on the draw:
      // then it lets go once one waits there.
      const overlap = precheck
        ? await line.letGoWhen(POOL, { queued: () => service.metric('waitress_checkout_waiting') })
        : await line.letGoWhen(1)
      const [first, twins] = await racing
      const retries = await Promise.all(buyers.map(checkout))

      // Nothing but a placement or a refusal for stock reached a client.
      if ([...first, ...twins, ...retries].some((reply) => ![201, 422].includes(reply.status))) {
        console.log(service.output().stdout.split('\n').filter((line) => /"status":5|sqlstate|error/.test(line)).slice(0, 20).join('\n'))
      }
      for (const reply of [...first, ...twins, ...retries]) expect([201, 422]).toContain(reply.status)
      // Each buyer's requests, all with one key: at most one placement, and
      // every 201 for that key carries the same orders. A refusal takes
      // nothing and frees the key, so a later request may still be placed.
      const attempts: Attempt[] = []
      let phantom = 0
      for (const [i, buyer] of buyers.entries()) {
        const replies = [first[i], ...(i < DUPLICATES ? [twins[i]] : []), retries[i]]
        const placements = replies.filter((reply) => reply.status === 201)
        for (const placement of placements) expect(placement.body.data).toEqual(placements[0].body.data)
        // A refusal after the placement would mean the key forgot it: only the concurrent twin may come first.
        if (placements.length > 0) expect(retries[i].status).toBe(201)
        for (const reply of replies.filter((reply) => reply.status !== 201))
          attempts.push({ cartId: buyer.cartId, buyerId: buyer.userId, wants: buyer.wants, outcome: outcomeOfHttp(reply.status, reply.body) })
        if (placements.length > 0)
          attempts.push({ cartId: buyer.cartId, buyerId: buyer.userId, wants: buyer.wants, outcome: outcomeOfHttp(201, placements[0].body) })
        // Refused while other checkouts' parts held the stock, placed once they were undone: the window.
        if (placements.length > 0 && replies.some((reply) => reply.status !== 201)) phantom++
      }
      // The service's retries, then the service stopped gracefully: its sessions end and publish their statistics.
      const retried = await counters.retries()
      await stopped(service)
      const verdict = await checkShardedInvariants(cluster.shards, { ...start, checkouts: attempts }, cluster.router, {
        service: { retries: async () => retried },
      })
      expectClean(verdict)
      const placed = attempts.filter((a) => a.outcome.kind === 'accepted').length
      console.log(
        `race (dry run ${precheck ? 'on' : 'off'}): ${BUYERS} buyers, ${placed} placed, ${BUYERS - placed} refused, ` +
          `${verdict.compensated} orders undone on a shard, ${phantom} refused first and placed on a later request; ` +
          `${overlap.lockWaiters} sessions waited at the start line on shard 1, ${overlap.queued} requests queued in the service (held ${overlap.heldMs} ms); ` +
          `deadlocks ${verdict.deadlocks}, retries ${JSON.stringify(verdict.retries)}`,
      )
      // It overlapped: with the dry run, the whole pool waited at once, with
      // requests queued behind it; without, a checkout held at shard 1 while
      // the others ran their parts around it.
      expect(overlap.lockWaiters).toBeGreaterThanOrEqual(precheck ? POOL : 1)
      if (precheck) expect(overlap.queued).toBeGreaterThan(0)
      // Some checkouts are placed, some refused: the race was real.
      expect(placed).toBeGreaterThan(0)
      expect(placed).toBeLessThan(BUYERS)
      return verdict
    } finally {
      service.child.kill('SIGTERM')
      await service.exit()
      await cluster.router.unsafe('alter database shared_router reset waitress.checkout_precheck')
    }
  }

  async function stopped(service: RunningService) {
    service.child.kill('SIGTERM')
    const exit = await service.exit()
    if (exit.code !== 0) throw new Error(`the service did not stop cleanly (exit ${exit.code ?? exit.signal}): ${exit.tail}`)
  }

  it('keeps all or nothing per buyer and conserves stock on each shard, with the dry run first', async () => {
    await race(true)
  })

  it('keeps them when every part is placed in turn and refusals are undone (no dry run)', async () => {
    const verdict = await race(false)
    expect(verdict.compensated).toBeGreaterThan(0)
  })

  afterAll(() => {})
})
