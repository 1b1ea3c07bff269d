/**
 * `npm run bench:shards`: the many-sellers benchmark of a sharded Waitress
 * (docs/scale-out.md). No hot product: 64 sellers with plenty of stock, and
 * every buy is a new buyer's whole flow, as the service calls it:
 *   api.cart_for_user, api.add_cart_item twice (two products), api.place_order
 * over SQL as waitress_api (the router's work, not the HTTP shell's).
 *
 * Configurations, each on throwaway PostgreSQL 15 servers of this machine
 * (scripts/local-shards.ts; every database of a configuration on one server,
 * so they share its cores, as shards on one box would):
 *   one database   db/migrations only, no router: the baseline
 *   1, 2, 4 shards a router and N shards
 * Cells, each measured for --seconds after a warm-up, --repeats times, interleaved:
 *   buy, random sellers   the two products of two random sellers (of 64)
 *   buy, one shard        (2 shards) both sellers on the buyer's home shard: one shard, as one database
 *   buy, two shards       (2 shards) one seller on each shard: a checkout across shards
 *   buy, two shards, no dry run   the same, waitress.checkout_precheck = off
 *   read, direct / read, router   api.product on a shard itself / through the router
 * For each: operations per second, median latency, and server CPU per
 * operation (from /proc), split by database: the router's backends, the
 * shards' backends, and the rest (WAL writer, checkpointer, ...).
 *
 * Writes docs/benchmarks-shards.md (--out), with the raw cells beside it (.json).
 */
import { mkdirSync, writeFileSync } from 'node:fs'
import { availableParallelism, cpus, loadavg, release, totalmem } from 'node:os'
import { dirname, resolve } from 'node:path'
import { parseArgs } from 'node:util'
import { createSql, type Sql } from '../src/db/client.ts'
import { migrate } from '../src/db/migrate.ts'
import { ensureAppLogin, randomPassword } from '../src/db/app-login.ts'
import { shardingAvailable, startLocalCluster, startLocalServer, type LocalServer } from '../scripts/local-shards.ts'
import { machineBusyMs, readStat, clockTicks, treeCpuMs } from './cpu.ts'
import { median, quantile } from './stats.ts'

const REPO = resolve(import.meta.dir, '..')
const SELLERS = 64

const { values } = parseArgs({
  args: process.argv.slice(2),
  options: {
    seconds: { type: 'string' },
    warmup: { type: 'string' },
    repeats: { type: 'string' },
    concurrency: { type: 'string' },
    quick: { type: 'boolean', default: false },
    out: { type: 'string' },
    help: { type: 'boolean', short: 'h', default: false },
  },
})
if (values.help) {
  console.log(`npm run bench:shards -- [--seconds 8] [--warmup 2] [--repeats 3] [--concurrency 16] [--quick] [--out docs/benchmarks-shards.md]
  --quick   a smoke run (1 s cells, 1 repeat, concurrency 4), report in .data/bench/ (git-ignored)`)
  process.exit(0)
}
const quick = values.quick!
const SECONDS = Number(values.seconds ?? (quick ? 1 : 8))
const WARMUP = Number(values.warmup ?? (quick ? 0.5 : 2))
const REPEATS = Number(values.repeats ?? (quick ? 1 : 3))
const CONCURRENCY = Number(values.concurrency ?? (quick ? 4 : 16))
const OUT = resolve(REPO, values.out ?? (quick ? '.data/bench/benchmarks-shards.md' : 'docs/benchmarks-shards.md'))

const available = shardingAvailable()
if (!available.ok) {
  console.error(`bench:shards needs PostgreSQL 15 with PL/Proxy: ${available.reason}`)
  process.exit(1)
}

// ---------------------------------------------------------------- configurations

interface Config {
  name: string
  shards: number
  /** waitress_api on the router (or the one database). */
  api: Sql
  /** Owner pools of the router (or the one database) and of each shard. */
  owner: Sql
  shardApi: Sql[]
  server: LocalServer
  /** A product of each of the 64 sellers, and, per shard, those held there. */
  products: number[]
  productsOnShard: number[][]
  /** Each seller's two products. */
  bySeller: number[][]
  /** Fresh buyers whose cart's home is on each shard. */
  buyersOn: (shard: number) => number
  close(): Promise<void>
}

let nextUser = 500_000_000

async function usersByShard(owner: Sql, shards: number, count: number): Promise<number[][]> {
  const byShard: number[][] = Array.from({ length: Math.max(shards, 1) }, () => [])
  const rows = await owner<{ id: number; shard: number }[]>`
    select s as id, ${shards > 0 ? owner`(waitress.partition_map())[waitress.partition_of(s) + 1]` : owner`0`} as shard
      from generate_series(${nextUser}::bigint, ${nextUser + count * Math.max(shards, 1) * 2}::bigint) s`
  nextUser += count * Math.max(shards, 1) * 2 + 1
  for (const row of rows) byShard[row.shard].push(row.id)
  return byShard
}

async function setUp(shards: number): Promise<Config> {
  let api: Sql
  let owner: Sql
  let server: LocalServer
  let shardApi: Sql[] = []
  let destroy: () => void
  if (shards === 0) {
    server = await startLocalServer({ name: 'single' })
    const url = server.url('waitress_single')
    await migrate(url)
    owner = createSql(url, { max: 2 })
    api = createSql(await ensureAppLogin(url, randomPassword()), { max: CONCURRENCY, role: 'waitress_api' })
    destroy = () => server.destroy()
  } else {
    const cluster = await startLocalCluster({ shards, prefix: `b${shards}_` })
    server = cluster.routerServer
    owner = createSql(cluster.routerUrl, { max: 2 })
    api = createSql(cluster.appUrl, { max: CONCURRENCY, role: 'waitress_api' })
    shardApi = cluster.shardUrls.map((url) => {
      const app = new URL(cluster.appUrl)
      app.pathname = new URL(url).pathname
      return createSql(app.toString(), { max: CONCURRENCY, role: 'waitress_api' })
    })
    destroy = () => cluster.destroy()
  }
  const sellers = (await usersByShard(owner, shards, SELLERS)).flatMap((ids, shard) => ids.slice(0, SELLERS / Math.max(shards, 1)).map((id) => ({ id, shard })))
  const products: number[] = []
  const productsOnShard: number[][] = Array.from({ length: Math.max(shards, 1) }, () => [])
  const bySeller: number[][] = []
  for (const seller of sellers) {
    const own: number[] = []
    for (const name of ['Item', 'Other item']) {
      const [{ id }] = await api<{ id: number }[]>`select (api.create_product(${name}, ${seller.id}, 1000, 100000000, 100)->>'id')::bigint as id`
      own.push(id)
    }
    bySeller.push(own)
    products.push(own[0])
    productsOnShard[seller.shard].push(own[0])
  }
  // Fresh buyers, each used once, enough for every cell.
  const pools = await usersByShard(owner, shards, quick ? 3000 : 30000)
  return {
    name: shards === 0 ? 'one database' : `${shards} shard${shards > 1 ? 's' : ''}`,
    shards,
    api,
    owner,
    shardApi,
    server,
    products,
    productsOnShard,
    bySeller,
    buyersOn: (shard) => {
      const id = pools[shard].pop()
      if (id === undefined) throw new Error('out of fresh buyers: raise their number in setUp')
      return id
    },
    async close() {
      await Promise.all([api, owner, ...shardApi].map((sql) => sql.end({ timeout: 5 })))
      destroy()
    },
  }
}

// ---------------------------------------------------------------- cells

type CellName = 'buy, one random seller' | 'buy, random sellers' | 'buy, one shard' | 'buy, two shards' | 'buy, two shards, no dry run' | 'read, direct' | 'read, router'

interface Cell {
  config: string
  cell: CellName
  repeat: number
  concurrency: number
  operations: number
  errors: Record<string, number>
  seconds: number
  rate: number
  p50: number
  p95: number
  /** Median latency of place_order within a buy (ms). */
  checkoutP50: number | null
  /** Server CPU per operation (µs): the router's backends, the shards' backends, the rest of the server. */
  cpuUs: { router: number; shards: number; other: number; total: number }
  machineCores: number
}

const pick = <T>(items: T[]) => items[Math.floor(Math.random() * items.length)]

/** One operation of a cell, on a worker's connection. */
function operation(config: Config, cell: CellName, session: Sql): () => Promise<number | null> {
  const random = () => {
    const a = pick(config.products)
    let b = pick(config.products)
    while (b === a) b = pick(config.products)
    return [a, b]
  }
  const buy = async (home: number, products: () => number[]) => {
    const userId = config.buyersOn(home)
    const [{ id }] = await session<{ id: number }[]>`select (api.cart_for_user(${userId})->>'id')::bigint as id`
    for (const productId of products()) await session`select api.add_cart_item(${id}, ${productId}, 1)`
    const started = performance.now()
    await session`select api.place_order(${id})`
    return performance.now() - started
  }
  switch (cell) {
    case 'buy, one random seller':
      return () => buy(Math.floor(Math.random() * Math.max(config.shards, 1)), () => pick(config.bySeller))
    case 'buy, random sellers':
      return () => buy(Math.floor(Math.random() * Math.max(config.shards, 1)), random)
    case 'buy, one shard':
      return () =>
        buy(0, () => {
          const [a, b] = [...config.productsOnShard[0]].sort(() => Math.random() - 0.5)
          return [a, b]
        })
    case 'buy, two shards':
    case 'buy, two shards, no dry run':
      return () => buy(0, () => [pick(config.productsOnShard[0]), pick(config.productsOnShard[1])])
    case 'read, direct':
    case 'read, router':
      return async () => {
        await session`select api.product(${pick(config.productsOnShard[0])})`
        return null
      }
  }
}

/** CPU (ms) of every backend of the server, by database, and of the whole server. */
async function serverCpu(config: Config): Promise<{ byDatabase: Map<string, number>; total: number }> {
  const rows = await config.owner<{ pid: number; datname: string | null }[]>`
    select pid, datname from pg_stat_activity where backend_type = 'client backend'`
  const byDatabase = new Map<string, number>()
  for (const row of rows) {
    const stat = readStat(row.pid)
    if (!stat) continue
    const ms = ((stat.utime + stat.stime) * 1000) / clockTicks()
    byDatabase.set(row.datname ?? '?', (byDatabase.get(row.datname ?? '?') ?? 0) + ms)
  }
  const [total] = treeCpuMs([config.server.pid()!])
  return { byDatabase, total }
}

async function runCell(config: Config, cell: CellName, repeat: number): Promise<Cell> {
  const target = cell === 'read, direct' ? config.shardApi[0] : config.api
  const sessions = await Promise.all(Array.from({ length: CONCURRENCY }, () => target.reserve()))
  try {
    if (cell === 'buy, two shards, no dry run') for (const session of sessions) await session`set waitress.checkout_precheck = off`
    const latencies: number[] = []
    const checkouts: number[] = []
    const errors: Record<string, number> = {}
    let measuring = false
    let stop = false
    const workers = sessions.map(async (session) => {
      const op = operation(config, cell, session as unknown as Sql)
      while (!stop) {
        const started = performance.now()
        try {
          const checkout = await op()
          if (measuring) {
            latencies.push(performance.now() - started)
            if (checkout !== null) checkouts.push(checkout)
          }
        } catch (error: any) {
          if (measuring) errors[error.code ?? String(error).slice(0, 60)] = (errors[error.code ?? String(error).slice(0, 60)] ?? 0) + 1
        }
      }
    })
    await Bun.sleep(WARMUP * 1000)
    const cpuBefore = await serverCpu(config)
    const machineBefore = machineBusyMs()
    const startedAt = performance.now()
    measuring = true
    await Bun.sleep(SECONDS * 1000)
    measuring = false
    const elapsed = (performance.now() - startedAt) / 1000
    const cpuAfter = await serverCpu(config)
    const machineAfter = machineBusyMs()
    stop = true
    await Promise.all(workers)

    const delta = (name: (db: string) => boolean) =>
      [...cpuAfter.byDatabase].filter(([db]) => name(db)).reduce((sum, [db, ms]) => sum + ms - (cpuBefore.byDatabase.get(db) ?? ms), 0)
    const routerMs = config.shards === 0 ? 0 : delta((db) => db.endsWith('router'))
    const shardMs = config.shards === 0 ? delta((db) => db === 'waitress_single') : delta((db) => /shard_\d+$/.test(db))
    const totalMs = cpuAfter.total - cpuBefore.total
    const n = latencies.length
    const per = (ms: number) => (n === 0 ? Number.NaN : Math.round((ms * 1000) / n))
    latencies.sort((a, b) => a - b)
    checkouts.sort((a, b) => a - b)
    return {
      config: config.name,
      cell,
      repeat,
      concurrency: CONCURRENCY,
      operations: n,
      errors,
      seconds: elapsed,
      rate: n / elapsed,
      p50: quantile(latencies, 0.5),
      p95: quantile(latencies, 0.95),
      checkoutP50: checkouts.length ? quantile(checkouts, 0.5) : null,
      cpuUs: { router: per(routerMs), shards: per(shardMs), other: per(Math.max(0, totalMs - routerMs - shardMs)), total: per(Math.max(totalMs, routerMs + shardMs)) },
      machineCores: (machineAfter - machineBefore) / 1000 / elapsed,
    }
  } finally {
    for (const session of sessions) session.release()
  }
}

// ---------------------------------------------------------------- the run

const started = new Date()
const load = { start: loadavg(), end: [] as number[] }
const plan: { shards: number; cells: CellName[] }[] = [
  { shards: 0, cells: ['buy, one random seller', 'buy, random sellers', 'read, direct'] },
  { shards: 1, cells: ['buy, one random seller', 'buy, random sellers', 'read, router', 'read, direct'] },
  {
    shards: 2,
    cells: ['buy, one random seller', 'buy, random sellers', 'buy, one shard', 'buy, two shards', 'buy, two shards, no dry run', 'read, router', 'read, direct'],
  },
  { shards: 4, cells: ['buy, one random seller', 'buy, random sellers'] },
]
const cells: Cell[] = []
const configs: Config[] = []
try {
  for (const step of plan) {
    console.error(`setting up ${step.shards === 0 ? 'one database' : `${step.shards} shards`} ...`)
    configs.push(await setUp(step.shards))
  }
  // The single database's "read, direct" is its api.product on itself.
  configs[0].shardApi = [configs[0].api]
  for (let repeat = 1; repeat <= REPEATS; repeat++)
    for (const [i, step] of plan.entries())
      for (const cell of step.cells) {
        const result = await runCell(configs[i], cell, repeat)
        cells.push(result)
        console.error(
          `${result.config.padEnd(13)} ${cell.padEnd(28)} #${repeat}: ${result.rate.toFixed(1)}/s, p50 ${result.p50.toFixed(1)} ms, ` +
            `CPU/op ${result.cpuUs.total} µs (router ${result.cpuUs.router}, shards ${result.cpuUs.shards}), errors ${JSON.stringify(result.errors)}`,
        )
      }
} finally {
  for (const config of configs) await config.close()
}
load.end = loadavg()

// ---------------------------------------------------------------- the report

interface Row {
  config: string
  cell: CellName
  rate: number
  rates: number[]
  p50: number
  checkoutP50: number | null
  cpu: Cell['cpuUs']
  errors: number
  machineCores: number
}

const rows: Row[] = []
for (const step of plan)
  for (const cell of step.cells) {
    const name = step.shards === 0 ? 'one database' : `${step.shards} shard${step.shards > 1 ? 's' : ''}`
    const mine = cells.filter((c) => c.config === name && c.cell === cell)
    rows.push({
      config: name,
      cell,
      rate: median(mine.map((c) => c.rate)),
      rates: mine.map((c) => c.rate),
      p50: median(mine.map((c) => c.p50)),
      checkoutP50: mine.some((c) => c.checkoutP50 !== null) ? median(mine.map((c) => c.checkoutP50 ?? Number.NaN)) : null,
      cpu: {
        router: median(mine.map((c) => c.cpuUs.router)),
        shards: median(mine.map((c) => c.cpuUs.shards)),
        other: median(mine.map((c) => c.cpuUs.other)),
        total: median(mine.map((c) => c.cpuUs.total)),
      },
      errors: mine.reduce((sum, c) => sum + Object.values(c.errors).reduce((a, b) => a + b, 0), 0),
      machineCores: median(mine.map((c) => c.machineCores)),
    })
  }

const find = (config: string, cell: CellName) => rows.find((r) => r.config === config && r.cell === cell)!
const fmt = (n: number, digits = 0) => (Number.isFinite(n) ? n.toLocaleString('en-US', { maximumFractionDigits: digits, minimumFractionDigits: digits }) : '—')
const ratio = (a: number, b: number) => (Number.isFinite(a / b) ? `${(a / b).toFixed(2)}×` : '—')
const CONFIGS = ['one database', '1 shard', '2 shards', '4 shards']
const MIXES: CellName[] = ['buy, one random seller', 'buy, random sellers']

const single = find('one database', 'buy, random sellers')
const singleOne = find('one database', 'buy, one random seller')
const hopDirect = find('2 shards', 'read, direct')
const hopRouter = find('2 shards', 'read, router')
const one = find('2 shards', 'buy, one shard')
const two = find('2 shards', 'buy, two shards')
const twoNoDry = find('2 shards', 'buy, two shards, no dry run')
const nproc = availableParallelism()

/** Bounds with one machine (nproc cores) per shard and one router machine, from the CPU per buy measured with n shards here. */
const bound = (row: Row, n: number) => ({
  shardUs: row.cpu.shards + row.cpu.other,
  shards: (n * nproc * 1e6) / (row.cpu.shards + row.cpu.other),
  routerUs: row.cpu.router,
  router: (nproc * 1e6) / row.cpu.router,
})

const buyRow = (r: Row) =>
  `| ${r.config} | ${r.cell.replace('buy, ', '')} | **${fmt(r.rate, 1)}** | ${r.rates.map((x) => fmt(x, 1)).join(', ')} | ${fmt(r.p50, 1)} | ${r.checkoutP50 === null ? '—' : fmt(r.checkoutP50, 1)} | **${fmt(r.cpu.total)}** | ${r.config === 'one database' ? '—' : fmt(r.cpu.router)} | ${fmt(r.cpu.shards)} | ${fmt(r.cpu.other)} | ${r.errors} |`

const md = `# Benchmarks: sharding by seller (PL/Proxy)

Generated by \`npm run bench:shards\` on ${started.toISOString().replace(/\.\d+Z$/, 'Z')} in ${Math.round((Date.now() - started.getTime()) / 1000)} s: ${REPEATS} repeats of ${SECONDS} s cells after ${WARMUP} s of warm-up, interleaved, ${CONCURRENCY} concurrent sessions; every number is the median over the repeats. Raw cells: [benchmarks-shards.json](benchmarks-shards.json). The design is in [scale-out.md](scale-out.md).

## Machine

| | |
| --- | --- |
| CPUs | ${nproc} × ${cpus()[0]?.model ?? '?'} |
| memory | ${(totalmem() / 2 ** 30).toFixed(1)} GiB |
| kernel | Linux ${release()} |
| load average (1/5/15 min) at start → end | ${load.start.map((x) => x.toFixed(2)).join(' / ')} → ${load.end.map((x) => x.toFixed(2)).join(' / ')} |
| PostgreSQL | 15 (Debian), PL/Proxy 2.10, synchronous_commit on, fsync on; one server per configuration, all its databases on it |
| load generator | this process (Bun, postgres.js), ${CONCURRENCY} sessions as waitress_api; its CPU is not counted |

Every configuration runs on the same ${nproc} cores: the router and the shards are databases of one PostgreSQL server, so more shards cannot add cores here. **CPU µs** is server CPU per operation from /proc, split by the database of each backend: **router** (the router database's backends: PL/pgSQL and PL/Proxy), **shards** (the shard databases' backends, doing the one schema's work; for one database, its own backends) and **other** (WAL writer, checkpointer, autovacuum; 0 when below the 10 ms clock tick).

## The workload

Many sellers, no hot product: ${SELLERS} sellers with two products each, stock never short. A **buy** is a new buyer's whole flow, as the service makes it: \`api.cart_for_user\`, two \`api.add_cart_item\`, \`api.place_order\` (one order per seller).

- **one random seller**: both products of one random seller. With N shards the buyer's cart lives on another shard than the seller (N-1)/N of the time: the checkout asks the cart's home, then places the one part on the seller's shard.
- **random sellers**: one product of each of two random sellers: with N shards a checkout spans two shards about (N-1)/N of the time (a dry run on each, then a part on each, a journal at the buyer's home).
- **one shard** / **two shards** (2 shards): both sellers and the cart's home on shard 0 / one seller on each shard, the home on shard 0. **no dry run**: the same with \`waitress.checkout_precheck = off\`.
- **read**: \`api.product(id)\` on a shard itself (direct) or through the router.

## Throughput with 1, 2 and 4 shards on this machine

| configuration | buy | buys/s | each repeat | p50 buy ms | p50 place_order ms | CPU µs/buy | router | shards | other | errors |
| --- | --- | ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |
${MIXES.flatMap((mix) => CONFIGS.map((config) => buyRow(find(config, mix)))).join('\n')}

## The router hop

| read of one product | reads/s | p50 ms | CPU µs/read | router | shard | other |
| --- | ---: | ---: | ---: | ---: | ---: | ---: |
| one database | ${fmt(find('one database', 'read, direct').rate)} | ${fmt(find('one database', 'read, direct').p50, 2)} | ${fmt(find('one database', 'read, direct').cpu.total)} | — | ${fmt(find('one database', 'read, direct').cpu.shards)} | ${fmt(find('one database', 'read, direct').cpu.other)} |
| 2 shards: on shard 0 itself | ${fmt(hopDirect.rate)} | ${fmt(hopDirect.p50, 2)} | ${fmt(hopDirect.cpu.total)} | — | ${fmt(hopDirect.cpu.shards)} | ${fmt(hopDirect.cpu.other)} |
| 2 shards: through the router | ${fmt(hopRouter.rate)} | ${fmt(hopRouter.p50, 2)} | ${fmt(hopRouter.cpu.total)} | ${fmt(hopRouter.cpu.router)} | ${fmt(hopRouter.cpu.shards)} | ${fmt(hopRouter.cpu.other)} |

The hop costs **${fmt(hopRouter.cpu.total - hopDirect.cpu.total)} µs of server CPU per call** (${ratio(hopRouter.cpu.total, hopDirect.cpu.total)} the direct read: the router's PL/pgSQL and PL/Proxy, plus the shard's envelope and a query PL/Proxy sends unprepared) and ${fmt(hopRouter.p50 - hopDirect.p50, 2)} ms of median latency at ${CONCURRENCY} sessions.

## A two-shard checkout against a one-shard one (2 shards)

| buy | buys/s | p50 buy ms | p50 place_order ms | CPU µs/buy | router | shards | other |
| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |
${[one, two, twoNoDry]
  .map(
    (r) =>
      `| ${r.cell.replace('buy, ', '')} | ${fmt(r.rate, 1)} | ${fmt(r.p50, 1)} | ${r.checkoutP50 === null ? '—' : fmt(r.checkoutP50, 1)} | **${fmt(r.cpu.total)}** | ${fmt(r.cpu.router)} | ${fmt(r.cpu.shards)} | ${fmt(r.cpu.other)} |`,
  )
  .join('\n')}
| one database, random sellers | ${fmt(single.rate, 1)} | ${fmt(single.p50, 1)} | ${single.checkoutP50 === null ? '—' : fmt(single.checkoutP50, 1)} | ${fmt(single.cpu.total)} | — | ${fmt(single.cpu.shards)} | ${fmt(single.cpu.other)} |

A buy whose checkout spans two shards costs **${ratio(two.cpu.total, one.cpu.total)}** the CPU of one whose lines are all on the buyer's home shard (+${fmt(two.cpu.total - one.cpu.total)} µs per buy), and its place_order takes ${two.checkoutP50 && one.checkoutP50 ? ratio(two.checkoutP50, one.checkoutP50) : '—'} as long at the median. Without the dry run it costs ${ratio(twoNoDry.cpu.total, one.cpu.total)} (the dry run runs the checkout's rules once more on each shard, without writing; it buys refusals worded exactly as one database words them, and far fewer compensations). A one-shard buy through the router costs ${ratio(one.cpu.total, single.cpu.total)} the one database's buy: the adds are two hops each (the cart's home, then the product's shard) and every call pays the hop.

## With one machine per shard

On this box all shards share the same ${nproc} cores, so adding shards only adds work (hops, gathers, checkouts across shards): the throughput above cannot rise with N, and does not. What would scale with a machine per shard is the **shards' share** of each buy: each shard does the work of its own sellers' and buyers' rows. The **router's share** does not divide: every call crosses it. Taking the CPU per buy measured here with N shards as the cost on machines of the same kind (${nproc} cores each, all usable by PostgreSQL, no I/O or network limit):

| buy | shards | CPU µs/buy on all shards | shards' bound, buys/s | router CPU µs/buy | one router's bound, buys/s |
| --- | ---: | ---: | ---: | ---: | ---: |
${MIXES.flatMap((mix) =>
  [1, 2, 4, 8].map((n) => {
    const row = find(n === 1 ? '1 shard' : n === 2 ? '2 shards' : '4 shards', mix)
    const b = bound(row, n)
    return `| ${mix.replace('buy, ', '')} | ${n}${n === 8 ? ' (4-shard costs)' : ''} | ${fmt(b.shardUs)} | ${fmt(b.shards)} | ${fmt(b.routerUs)} | ${fmt(b.router)} |`
  }),
).join('\n')}

For comparison, one database alone: ${fmt(singleOne.cpu.total)} µs per one-seller buy, ${fmt((nproc * 1e6) / singleOne.cpu.total)} buys/s on ${nproc} cores (${fmt(single.cpu.total)} µs and ${fmt((nproc * 1e6) / single.cpu.total)} buys/s for two sellers).

Reading it: the shards' bound grows with N, by about N/N₁ times what one shard does (the work per buy on the shards grows a little with N, as more checkouts span shards; carts of one seller, which the checkout's unit of one order per seller favours, grow best). One router's bound does not grow; it is of the order of one database's own throughput. So sharding pays only if the router scales out too. It holds no data: several router databases, each with the same cluster definition, each behind its own service instances, share nothing but the per-cart advisory lock of a checkout across shards, which would have to move to the cart's home shard (docs/scale-out.md, "Limits"). These are CPU bounds: the commit of each shard part (one WAL flush per part), the network between machines (a round trip per hop instead of a local socket) and lock waits come on top, and set latency rather than throughput.
`

mkdirSync(dirname(OUT), { recursive: true })
writeFileSync(OUT, md)
writeFileSync(OUT.replace(/\.md$/, '.json'), JSON.stringify({ started, options: { SECONDS, WARMUP, REPEATS, CONCURRENCY }, cells }, null, 2))
console.error(`wrote ${OUT}`)
process.exit(0)
