/**
 * The same HTTP contract against each runtime, each a real server process
 * started by its own npm script (npm start, start:deno, start:node,
 * start:workers) on this run's database: products, carts, checkout, orders,
 * errors, the docs, the client's own rate-limit bucket, concurrent checkouts
 * of one product, a 50-buyer race judged by the invariant checker, JSON log
 * lines, and SIGTERM sent to npm stopping everything.
 *
 * RUNTIMES=bun,node limits the runtimes (all four by default).
 */
import { afterAll, beforeAll, describe, expect, it } from 'bun:test'
import { runFlashSale } from '../../proof/flash-sale.ts'
import { loadConfig } from '../../src/config.ts'
import { applySessionDefaults } from '../../src/db/app-login.ts'
import { sessionDefaults } from '../../src/runtime/service.ts'
import { appDatabaseUrl, appLogin, testDatabaseUrl, testSql } from '../support/db.ts'
import { RUNTIMES, startRuntime, type Runtime, type RunningRuntime } from '../support/runtime.ts'

const sql = testSql()
const selected = (process.env.RUNTIMES?.split(',') ?? Object.keys(RUNTIMES)) as Runtime[]

// The app login's sessions start as waitress_api with the service's limits
// (what npm run db:migrate or any server process sets): the workers entry
// cannot set them itself.
beforeAll(async () => {
  await applySessionDefaults(sql, appLogin(), sessionDefaults(loadConfig({})))
})

interface Reply {
  status: number
  body: any
  headers: Headers
}

const call = async (base: string, method: string, path: string, body?: unknown, headers: Record<string, string> = {}): Promise<Reply> => {
  const response = await fetch(`${base}${path}`, {
    method,
    headers: body === undefined ? headers : { 'content-type': 'application/json', ...headers },
    body: body === undefined ? undefined : typeof body === 'string' ? body : JSON.stringify(body),
  })
  const text = await response.text()
  let parsed: unknown = text
  try {
    parsed = JSON.parse(text)
  } catch {}
  return { status: response.status, body: parsed, headers: response.headers }
}

let nextUser = 7_000_000 + (process.pid % 100_000) * 10

for (const runtime of selected)
  describe(`npm run ${RUNTIMES[runtime]} (${runtime})`, () => {
    let service: RunningRuntime
    let base: string
    const get = (path: string) => call(base, 'GET', path)
    const post = (path: string, body?: unknown, headers?: Record<string, string>) => call(base, 'POST', path, body, headers)

    beforeAll(async () => {
      service = await startRuntime(runtime, {
        DATABASE_URL: testDatabaseUrl(),
        APP_DATABASE_URL: appDatabaseUrl(),
        // Counted per client in the database: the bucket must be the client's own address.
        RATE_LIMIT: '100000',
        // The server processes' timers stay off; workerd has none (its Cron Trigger is run by hand below).
        EXPIRE_ORDERS_EVERY: runtime === 'workers' ? '60s' : '0',
        PURGE_INTERVAL: '0',
      })
      base = service.baseUrl
    }, 120_000)

    afterAll(async () => {
      if (service && service.child.exitCode === null) await service.stop().catch(() => {})
    })

    it('answers the probes and serves its docs page and OpenAPI document', async () => {
      expect(await get('/healthz')).toMatchObject({ status: 200, body: { data: { status: 'ok' }, meta: { http_status: 200 } } })
      expect(await get('/readyz')).toMatchObject({ status: 200, body: { data: { status: 'ready' } } })
      const page = await get('/swagger')
      expect(page.status).toBe(200)
      expect(page.headers.get('content-type')).toContain('text/html')
      const script = /<script src="([^"]+)"/.exec(page.body as string)![1]
      const asset = await fetch(`${base}${script}`)
      expect(asset.status).toBe(200)
      expect((await asset.text()).length).toBeGreaterThan(1_000_000)
      const spec = await get('/swagger/json')
      expect(spec.status).toBe(200)
      expect(spec.body.openapi).toMatch(/^3\.1/)
      expect(Object.keys(spec.body.paths)).toContain('/carts/{id}/checkout')
    })

    it('sells: a product, a cart, a checkout, the order; and refuses with the right statuses', async () => {
      const seller = nextUser++
      const buyer = nextUser++
      const product = await post('/products', { name: `${runtime} tea`, seller_id: seller, price: 1500, stock: 3, weight: 250 })
      expect(product.status).toBe(201)
      expect(product.body.data.created_at).toEndWith('+00:00')
      expect((await get(`/products/${product.body.data.id}`)).body.data).toMatchObject({ id: product.body.data.id, stock: 3 })

      const cart = await get(`/carts?user_id=${buyer}`)
      expect(cart.status).toBe(200)
      const line = await post('/carts/items', { cart_id: cart.body.data.id, product_id: product.body.data.id, quantity: 2 })
      expect(line.status).toBe(201)
      const checkout = await post(`/carts/${cart.body.data.id}/checkout`)
      expect(checkout.status).toBe(201)
      const [order] = checkout.body.data
      expect(order).toMatchObject({ buyer_id: buyer, seller_id: seller, state: 'pending', total_price: 3000 })
      expect((await get(`/orders/${order.id}`)).body.data).toMatchObject({ id: order.id, state: 'pending' })
      expect((await get(`/orders?buyer_id=${buyer}`)).body.data.map((o: { id: number }) => o.id)).toEqual([order.id])
      expect((await post(`/orders/${order.id}/pay`)).body.data.state).toBe('paid')
      expect((await get(`/products/${product.body.data.id}`)).body.data.stock).toBe(1)

      // One unit left and two carts holding it: the first checkout gets it, the second is refused.
      const [first, second] = [nextUser++, nextUser++]
      const cartIds: number[] = []
      for (const user of [first, second]) {
        const cart = (await get(`/carts?user_id=${user}`)).body.data
        expect((await post('/carts/items', { cart_id: cart.id, product_id: product.body.data.id, quantity: 1 })).status).toBe(201)
        cartIds.push(cart.id)
      }
      expect((await post(`/carts/${cartIds[0]}/checkout`)).status).toBe(201)
      const [{ id: itemId }] = (await get(`/carts?user_id=${second}`)).body.data.items
      const short = await post('/orders', { buyer_id: second, cart_item_ids: [itemId] })
      expect(short).toMatchObject({ status: 422, body: { code: 'WA004' } })

      expect((await get('/products/987654321')).body).toMatchObject({ code: 'WA002', meta: { http_status: 404 } })
      expect((await get('/products/abc')).status).toBe(400)
      expect((await post('/products', '{"name":', {})).status).toBe(400)
      expect((await post('/products', 'name=x', { 'content-type': 'application/x-www-form-urlencoded' })).status).toBe(415)
      expect(await get('/no/such/route')).toMatchObject({ status: 404, body: { error: 'no route for GET /no/such/route' } })
    })

    it("counts an anonymous client's requests under its own address, never ip:unknown", async () => {
      await get('/products?limit=1')
      const buckets = await sql<{ client: string }[]>`select client from waitress.rate_limit_windows where client like 'ip:%'`
      const clients = buckets.map((row) => row.client)
      expect(clients).toContain('ip:127.0.0.1')
      expect(clients).not.toContain('ip:unknown')
    })

    it('places five concurrent checkouts of one product (coalesced where the runtime allows): each buyer told the truth, nothing oversold', async () => {
      const seller = nextUser++
      const product = await post('/products', { name: `${runtime} flash`, seller_id: seller, price: 100, stock: 3, weight: 1 })
      const id = product.body.data.id
      {
        const carts = await Promise.all(
          Array.from({ length: 5 }, async () => {
            const cart = (await get(`/carts?user_id=${nextUser++}`)).body.data
            await post('/carts/items', { cart_id: cart.id, product_id: id, quantity: 1 })
            return cart.id as number
          }),
        )
        const replies = await Promise.all(carts.map((cartId) => post(`/carts/${cartId}/checkout`)))
        const statuses = replies.map((reply) => reply.status).sort()
        expect(statuses).toEqual([201, 201, 201, 422, 422])
        const [{ orders }] = await sql<{ orders: number }[]>`
          select count(*)::int as orders from waitress.order_items where product_id = ${id}`
        expect(orders).toBe(3)
        expect((await get(`/products/${id}`)).body.data.stock).toBe(0)
      }
    })

    // workerd opens a database session per request (production pools them in
    // Hyperdrive), so on a busy machine a call may run out of its deadline: a
    // busy answer is sent again, as the API asks its clients to, with the
    // checkout's Idempotency-Key. What was sent again is printed.
    it('sells to a race of 50 buyers with every invariant holding, a busy answer sent again as clients are told to', async () => {
      const result = await runFlashSale({
        baseUrl: base,
        databaseUrl: testDatabaseUrl(),
        buyers: 50,
        products: 2,
        stock: 20,
        maxQty: 3,
        multi: true,
        concurrency: 25,
        seed: 120 + Object.keys(RUNTIMES).indexOf(runtime),
        retryBusyWithinMs: 30_000,
      })
      if (result.resent.calls + result.resent.checkouts > 0) console.log(`${runtime} race: sent again after a busy answer`, result.resent)
      expect(result.verdict.violations).toEqual([])
      expect(result.verdict.ok).toBe(true)
      expect(result.checkouts.filter((c) => c.outcome.kind === 'accepted').length).toBeGreaterThan(0)
    }, 120_000)

    if (runtime === 'workers')
      it('runs expiry from its Cron Trigger, under the same lease as the server processes', async () => {
        await sql`delete from waitress.job_leases where job = 'expire_orders'`
        const ran = await fetch(`${base}/__scheduled?cron=*+*+*+*+*`)
        expect(ran.status).toBe(200)
        const [lease] = await sql<{ recent: boolean }[]>`
          select ran_at > now() - interval '1 minute' as recent from waitress.job_leases where job = 'expire_orders'`
        expect(lease).toEqual({ recent: true })
      })

    it('logs JSON lines, and stops cleanly on a SIGTERM sent to npm', async () => {
      const logs = service.logs()
      expect(logs.find((line) => line.msg === 'request' && line.route === '/carts/:id/checkout')).toMatchObject({ level: 'info', service: 'waitress' })
      if (runtime !== 'workers') {
        expect(logs.find((line) => line.msg === 'listening')?.runtime).toStartWith(runtime === 'bun' ? 'bun ' : runtime === 'deno' ? 'deno ' : 'node ')
        // Servers print nothing but JSON lines (the Node build prints one line of its own, on stderr).
        const other = service.lines.filter((line) => line.trim() !== '' && !line.startsWith('{') && !line.startsWith('built dist/node'))
        expect(other).toEqual([])
      }
      const code = await service.stop()
      expect(code).toBe(runtime === 'workers' ? code : 0)
      expect(await fetch(`${base}/healthz`).then(() => 'answered', () => 'closed')).toBe('closed')
      if (runtime !== 'workers') expect(service.logs().at(-1)).toMatchObject({ msg: 'stopped' })
    }, 60_000)
  })
