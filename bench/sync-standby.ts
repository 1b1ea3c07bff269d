/**
 * npm run bench:ha — what the synchronous standby costs a checkout.
 *
 * Starts a primary and a streaming standby (scripts/manual-standby.sh, in a
 * temp directory), the service in front of both hosts, and runs the same
 * HTTP checkout load with synchronous_standby_names set (every commit waits
 * for the standby's flush: RPO 0) and cleared (the standby still streams,
 * asynchronously), in alternating rounds so that the machine's noise hits
 * both alike. Two loads: "spread" (each buyer one line of one of 1,000
 * products) and "hot" (every buyer on one product: its row lock is held
 * through the replication wait). Prints checkouts per second, the median
 * latency, and the ratio sync / async.
 *
 *   npm run bench:ha [-- --rounds 3 --checkouts 3000 --concurrency 32 --out FILE.json]
 *
 * Needs PostgreSQL 15's server binaries, as the HA tests do (scripts/ci-ha.sh installs them).
 */
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join, resolve } from 'node:path'
import { parseArgs } from 'node:util'
import { ensureAppLogin, randomPassword } from '../src/db/app-login.ts'
import { createSql, type Sql } from '../src/db/client.ts'
import { freePort } from '../src/db/embedded.ts'
import { hostUrls } from '../src/db/failover.ts'
import { migrate } from '../src/db/migrate.ts'
import { localService } from './npm-start.ts'

const { values: args } = parseArgs({
  options: {
    rounds: { type: 'string', default: '3' },
    checkouts: { type: 'string', default: '3000' },
    concurrency: { type: 'string', default: '32' },
    pool: { type: 'string', default: '8' },
    out: { type: 'string' },
  },
})
const rounds = Number(args.rounds)
const checkouts = Number(args.checkouts)
const concurrency = Number(args.concurrency)

const script = resolve(import.meta.dir, '../scripts/manual-standby.sh')
const dir = mkdtempSync(join(tmpdir(), 'waitress-bench-ha-'))
const env = { ...process.env, MS_DIR: dir, MS_PORT_FROM: process.env.MS_PORT_FROM ?? '26600' }

async function ms(...command: string[]): Promise<string> {
  const child = Bun.spawn(['bash', script, ...command], { env, stdin: 'ignore', stdout: 'pipe', stderr: 'pipe' })
  const [code, out, err] = await Promise.all([child.exited, new Response(child.stdout).text(), new Response(child.stderr).text()])
  if (code !== 0) throw new Error(`manual-standby.sh ${command.join(' ')}: ${err.trim()}`)
  return out.trim()
}

type Load = 'spread' | 'hot'
interface Cell {
  round: number
  mode: 'sync' | 'async'
  load: Load
  checkoutsPerSecond: number
  medianMs: number
  failed: number
}

/** Carts with one line each, of one of `products` products with stock enough for all. */
async function carts(sql: Sql, products: number[], count: number): Promise<number[]> {
  const base = 9_000_000_000_000 + Math.floor(Math.random() * 1e9) * 1000
  const rows = await sql<{ id: number }[]>`
    select (api.cart_for_user(${base}::bigint + g)->>'id')::bigint as id from generate_series(1, ${count}::int) g order by g`
  const ids = rows.map((r) => r.id)
  await sql`
    select api.add_cart_item(l.cart_id, l.product_id, 1)
      from unnest(${ids}::bigint[], ${ids.map((_, i) => products[i % products.length])}::bigint[]) as l(cart_id, product_id)`
  return ids
}

async function fire(baseUrl: string, cartIds: number[]) {
  const latencies: number[] = []
  let failed = 0
  let next = 0
  const started = performance.now()
  await Promise.all(
    Array.from({ length: concurrency }, async () => {
      while (next < cartIds.length) {
        const cartId = cartIds[next++]
        const t = performance.now()
        const response = await fetch(`${baseUrl}/carts/${cartId}/checkout`, { method: 'POST' })
        await response.arrayBuffer()
        latencies.push(performance.now() - t)
        if (response.status !== 201) failed++
      }
    }),
  )
  const seconds = (performance.now() - started) / 1000
  latencies.sort((a, b) => a - b)
  return { checkoutsPerSecond: cartIds.length / seconds, medianMs: latencies[Math.floor(latencies.length / 2)], failed }
}

let service: ReturnType<typeof Bun.spawn> | undefined
let owner: Sql | undefined
try {
  const url = await ms('up')
  await migrate(url)
  const password = randomPassword()
  await ensureAppLogin(hostUrls(url)[0], password)
  owner = createSql(url, { max: 4 })
  const port = await freePort()
  const started = localService(resolve(import.meta.dir, '..'), url, port, {
    APP_DATABASE_URL: url.replace(/^postgres:\/\/[^@]*@/, `postgres://waitress_app:${password}@`),
    LOG_LEVEL: 'warn',
    LOG_FORMAT: 'json',
    DB_POOL_MAX: args.pool,
  })
  service = Bun.spawn(started.cmd, {
    cwd: resolve(import.meta.dir, '..'),
    env: started.env,
    stdin: 'ignore',
    stdout: 'ignore',
    stderr: 'inherit',
  })
  const baseUrl = `http://127.0.0.1:${port}`
  for (let i = 0; !(await fetch(`${baseUrl}/healthz`).then((r) => r.ok, () => false)); i++) {
    if (i > 300) throw new Error('the service did not start')
    await Bun.sleep(100)
  }

  const products = await owner<{ id: number }[]>`
    select (api.create_product('bench ' || g, 4242, 100, 1000000000, 100)->>'id')::bigint as id from generate_series(1, 1000) g`
  const spread = products.map((p) => p.id)
  const hot = [spread[0]]
  const cells: Cell[] = []
  for (let round = 1; round <= rounds; round++) {
    // Alternate which mode goes first, so that neither always runs on a warmer (or busier) machine.
    const modes = round % 2 === 1 ? (['sync', 'async'] as const) : (['async', 'sync'] as const)
    for (const mode of modes) {
      await ms(mode)
      for (const load of ['spread', 'hot'] as const) {
        const cartIds = await carts(owner, load === 'hot' ? hot : spread, checkouts)
        await owner`checkpoint`
        const result = await fire(baseUrl, cartIds)
        const cell = { round, mode, load, ...result }
        cells.push(cell)
        console.log(
          `round ${round} ${mode.padEnd(5)} ${load.padEnd(6)} ${result.checkoutsPerSecond.toFixed(0).padStart(6)} checkouts/s, ` +
            `median ${result.medianMs.toFixed(1)} ms, ${result.failed} not placed (load average ${(await Bun.file('/proc/loadavg').text()).split(' ')[0]})`,
        )
      }
    }
  }
  await ms('sync')

  console.log('\nload    sync/async checkouts per second, per round          (mean)')
  const ratios: Record<string, number> = {}
  for (const load of ['spread', 'hot'] as const) {
    const perRound = Array.from({ length: rounds }, (_, i) => {
      const of = (mode: string) => cells.find((c) => c.round === i + 1 && c.mode === mode && c.load === load)!.checkoutsPerSecond
      return of('sync') / of('async')
    })
    ratios[load] = perRound.reduce((a, b) => a + b, 0) / perRound.length
    console.log(`${load.padEnd(7)} ${perRound.map((r) => r.toFixed(2)).join('  ')}    (${ratios[load].toFixed(2)}×)`)
  }
  if (args.out) writeFileSync(args.out, JSON.stringify({ when: new Date().toISOString(), rounds, checkouts, concurrency, pool: Number(args.pool), cells, ratios }, null, 2) + '\n')
} finally {
  service?.kill('SIGTERM')
  await service?.exited
  await owner?.end({ timeout: 1 })
  await ms('down', '--purge').catch((error) => console.error(String(error)))
  rmSync(dir, { recursive: true, force: true })
}
