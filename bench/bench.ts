/**
 * `npm run bench`: the hot-product benchmark.
 *
 * Starts a throwaway PostgreSQL (or uses DATABASE_URL), migrates it, starts
 * the service as its own process, creates products and buyers, then runs
 * cells — one mode, one scenario, one concurrency — alternating, each in a
 * load-generator process of its own, reading CPU from /proc around each and
 * checking the stock invariants after each. Writes the report (markdown,
 * SVG chart, raw JSON). `--help` lists the flags.
 */
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { availableParallelism, loadavg, release, tmpdir } from 'node:os'
import { basename, dirname, join, resolve } from 'node:path'
import { parseArgs } from 'node:util'
import { createSql, type Sql } from '../src/db/client'
import { redact } from '../src/db/database'
import { freePort, startEmbeddedPostgres } from '../src/db/embedded'
import { migrate } from '../src/db/migrate'
import { loadConfig } from '../src/config'
import { renderChart } from './chart'
import { clockTicks, machineBusyMs, postmasterOf, readStat, treeCpuMs } from './cpu'
import { allOf, BENCH_SELLER_ID, BENCH_STOCK, BuyerPool, createBenchProducts, oneOf } from './fixtures'
import { aggregate, fmtMs, fmtRate, otherCores, renderMarkdown, targets, type CellResult, type Machine, type Options, type SideResult } from './report'
import { profileCheckouts, type Profiles } from './statements'
import { localService } from './npm-start'
import { isHttp, MODES, SCENARIOS, type Buyer, type LoadConfig, type LoadResult, type Mode, type Scenario } from './types'
import { ensureWrk, outcomesOf, startWrk } from './wrk'
import { DERIVED_LOGIN, derivePassword } from '../src/db/app-login'
import { pgbouncerBinary, startPgbouncer, type Pgbouncer } from '../scripts/pgbouncer.ts'

const REPO = resolve(import.meta.dir, '..')
const HELP = `npm run bench -- [flags]

  --seconds N        measured seconds per cell (default 5; --quick 1)
  --warmup N         warm-up seconds per cell, not measured (default 1; --quick 0)
  --repeats N        repeats of every cell; the report shows medians (default 3; --quick 1)
  --scenarios L      of ${SCENARIOS.join(',')} (default all)
  --quick            a smoke run of well under a minute, for CI: short cells, small concurrency, 1 repeat
  --out FILE         the report (default docs/benchmarks.md; --quick .data/bench/benchmarks.md, git-ignored);
                     the chart and the raw cells go beside it (.svg, .json)

The cells (scenario, mode, concurrent buyers) are fixed: see PLAN in bench/bench.ts.
HTTP is driven by wrk (installed with apt-get when missing).
DATABASE_URL: use that server instead of a throwaway embedded one (bench data is written to it).
The service's other settings come from the environment (e.g. DB_POOL_MAX).`

/** One cell of the plan: a scenario, a mode, concurrent buyers, and for shop and attack the side load's connections. */
export interface PlannedCell {
  scenario: Scenario
  mode: Mode
  concurrency: number
  side?: number
}

/** Every cell of a full run (each repeated --repeats times), and of a --quick smoke run. */
export const PLAN: Record<'full' | 'quick', PlannedCell[]> = {
  full: [
    { scenario: 'hot', mode: 'bare', concurrency: 10 },
    { scenario: 'hot', mode: 'bare', concurrency: 256 },
    { scenario: 'hot', mode: 'direct', concurrency: 10 },
    { scenario: 'hot', mode: 'direct', concurrency: 64 },
    { scenario: 'hot', mode: 'direct', concurrency: 256 },
    { scenario: 'hot', mode: 'baseline', concurrency: 10 },
    { scenario: 'hot', mode: 'baseline', concurrency: 256 },
    { scenario: 'hot', mode: 'http', concurrency: 10 },
    { scenario: 'hot', mode: 'http', concurrency: 64 },
    { scenario: 'hot', mode: 'http', concurrency: 256 },
    { scenario: 'hot', mode: 'http', concurrency: 1024 },
    { scenario: 'hot', mode: 'http-3proc', concurrency: 256 },
    { scenario: 'hot', mode: 'http-pgbouncer', concurrency: 256 },
    { scenario: 'multi', mode: 'bare', concurrency: 10 },
    { scenario: 'multi', mode: 'direct', concurrency: 10 },
    { scenario: 'multi', mode: 'baseline', concurrency: 10 },
    { scenario: 'multi', mode: 'http', concurrency: 10 },
    { scenario: 'multi', mode: 'http', concurrency: 256 },
    { scenario: 'shop', mode: 'http', concurrency: 256, side: 16 },
    { scenario: 'attack', mode: 'http', concurrency: 32 },
    { scenario: 'attack', mode: 'http-attacked', concurrency: 32, side: 4 },
  ],
  quick: [
    { scenario: 'hot', mode: 'bare', concurrency: 4 },
    { scenario: 'hot', mode: 'direct', concurrency: 4 },
    { scenario: 'hot', mode: 'http', concurrency: 16 },
    { scenario: 'hot', mode: 'http-3proc', concurrency: 16 },
    { scenario: 'hot', mode: 'http-pgbouncer', concurrency: 16 },
    { scenario: 'multi', mode: 'bare', concurrency: 4 },
    { scenario: 'multi', mode: 'http', concurrency: 16 },
    { scenario: 'shop', mode: 'http', concurrency: 16, side: 4 },
    { scenario: 'attack', mode: 'http', concurrency: 8 },
    { scenario: 'attack', mode: 'http-attacked', concurrency: 8, side: 2 },
  ],
}

export function parseOptions(args: string[]): Options & { help: boolean } {
  const { values } = parseArgs({
    args,
    strict: true,
    options: {
      seconds: { type: 'string' },
      warmup: { type: 'string' },
      repeats: { type: 'string' },
      scenarios: { type: 'string' },
      quick: { type: 'boolean', default: false },
      out: { type: 'string' },
      help: { type: 'boolean', short: 'h', default: false },
    },
  })
  const quick = values.quick!
  const number = (name: string, raw: string | undefined, fallback: number, min: number) => {
    if (raw === undefined) return fallback
    const value = Number(raw)
    if (!Number.isFinite(value) || value < min) throw new Error(`--${name} must be a number of at least ${min}, got "${raw}"`)
    return value
  }
  let scenarios: Scenario[] = [...SCENARIOS]
  if (values.scenarios !== undefined) {
    const items = values.scenarios.split(',').map((s) => s.trim()).filter(Boolean)
    const unknown = items.filter((item) => !SCENARIOS.includes(item as Scenario))
    if (unknown.length || items.length === 0) throw new Error(`--scenarios takes a list of ${SCENARIOS.join(', ')}; got "${values.scenarios}"`)
    scenarios = SCENARIOS.filter((s) => items.includes(s))
  }
  const repeats = number('repeats', values.repeats, quick ? 1 : 3, 1)
  if (!Number.isInteger(repeats)) throw new Error('--repeats must be a whole number')
  const cells = PLAN[quick ? 'quick' : 'full'].filter((c) => scenarios.includes(c.scenario))
  return {
    seconds: number('seconds', values.seconds, quick ? 1 : 5, 1),
    warmup: number('warmup', values.warmup, quick ? 0 : 1, 0),
    repeats,
    cells,
    concurrency: [...new Set(cells.map((c) => c.concurrency))].sort((a, b) => a - b),
    modes: MODES.filter((m) => cells.some((c) => c.mode === m)),
    scenarios,
    quick,
    // Defaults live in the repository; a given path is taken from the current directory.
    out: values.out ? resolve(values.out) : join(REPO, quick ? '.data/bench/benchmarks.md' : 'docs/benchmarks.md'),
    help: values.help!,
  }
}

const log = (line: string) => console.error(line)

// ------------------------------------------------------------------ the run

/** A set of products and the buyers ready for them. */
interface Shelf {
  pool: BuyerPool
  products: number[]
}

interface Context {
  options: Options
  sql: Sql
  databaseUrl: string
  runDir: string
  /** The service as it starts by default (one process), and 3 processes sharing one port. */
  services: Record<'one' | 'three', Service> & { pooled?: Service }
  postmasterPid: number | undefined
  shelves: { hot: Shelf; multi: Shelf; others: Shelf; attack: Shelf }
  bareProducts: Record<'hot' | 'multi', number[]>
  benchProducts: number[]
  /** Highest attempts/s seen per load: sizes the next cell's buyers. */
  rates: Map<string, number>
  children: Set<{ pid: number; kill(signal?: number): void }>
  cellCount: number
}

/** A first guess of attempts/s, before a load has been measured; a cell that runs out of buyers is run again with twice as many. */
const FIRST_RATE_GUESS = 3000

export async function main(args: string[]): Promise<void> {
  const options = parseOptions(args)
  if (options.help) {
    console.log(HELP)
    return
  }
  const started = Date.now()
  const loadStart = loadavg()
  if (options.cells.some((c) => isHttp(c.mode))) ensureWrk(log)
  const runDir = mkdtempSync(join(tmpdir(), 'waitress-bench-'))
  const cleanups: (() => Promise<unknown> | unknown)[] = [() => rmSync(runDir, { recursive: true, force: true })]
  const children: Context['children'] = new Set()
  let cleaning: Promise<void> | undefined
  const cleanup = () =>
    (cleaning ??= (async () => {
      for (const child of children) child.kill()
      for (const step of cleanups.reverse()) await Promise.resolve(step()).catch((error) => log(`cleanup: ${error}`))
    })())
  const onSignal = () => void cleanup().then(() => process.exit(130))
  process.on('SIGINT', onSignal)
  process.on('SIGTERM', onSignal)

  try {
    const servicePool = loadConfig(process.env).dbPoolMax
    const external = process.env.DATABASE_URL
    let databaseUrl: string
    let databaseLabel: string
    if (external) {
      databaseUrl = external
      databaseLabel = `DATABASE_URL ${redact(external)}`
    } else {
      const maxConnections = 400
      log(`starting a throwaway PostgreSQL (max_connections=${maxConnections}) in ${runDir}`)
      const server = await startEmbeddedPostgres({
        dataDir: join(runDir, 'pg'),
        persistent: false,
        // pg_stat_statements is loaded for the statement profile after the cells, and tracks nothing until it runs.
        postgresFlags: ['-c', `max_connections=${maxConnections}`, '-c', 'shared_preload_libraries=pg_stat_statements', '-c', 'pg_stat_statements.track=none'],
      })
      cleanups.push(() => server.stop())
      databaseUrl = server.url('waitress_bench')
      databaseLabel = 'embedded, throwaway (a temp directory)'
    }
    await migrate(databaseUrl)
    const sql = createSql(databaseUrl, { max: 4 })
    cleanups.push(() => sql.end({ timeout: 5 }))
    const [{ pid }] = await sql<{ pid: number }[]>`select pg_backend_pid() as pid`
    const postmasterPid = postmasterOf(pid)
    if (!postmasterPid) log('the database server is not a local process: its CPU time is not measured')

    const one = await startService(databaseUrl, runDir, children, 1)
    cleanups.push(() => one.stop())
    const three = options.cells.some((c) => c.mode === 'http-3proc') ? await startService(databaseUrl, runDir, children, 3) : one
    if (three !== one) cleanups.push(() => three.stop())
    const skipped: string[] = []
    let pooled: Service | undefined
    if (options.cells.some((c) => c.mode === 'http-pgbouncer')) {
      if (pgbouncerBinary()) {
        const bouncer = await startBouncerFor(databaseUrl, servicePool)
        cleanups.push(() => bouncer.stop())
        pooled = await startService(bouncer.serviceUrl, runDir, children, 1, { DB_PREPARE: 'false' })
        cleanups.push(() => pooled!.stop())
      } else {
        skipped.push('HTTP through PgBouncer: pgbouncer is not installed (`apt-get install pgbouncer`; .ci/run installs it).')
        options.cells = options.cells.filter((c) => c.mode !== 'http-pgbouncer')
      }
    }

    log('creating products and buyers')
    const names = (prefix: string, n: number) => Array.from({ length: n }, (_, i) => `bench ${prefix}${n > 1 ? ` ${i + 1}` : ''}`)
    const hot = await createBenchProducts(sql, names('hot', 1))
    const multi = await createBenchProducts(sql, names('multi', 5))
    const others = await createBenchProducts(sql, names('shop', 50))
    const fillers = await createBenchProducts(sql, names('attack filler', 99))
    const shelves: Context['shelves'] = {
      hot: { pool: new BuyerPool(sql, hot), products: hot },
      multi: { pool: new BuyerPool(sql, multi), products: multi },
      others: { pool: new BuyerPool(sql, others, oneOf), products: others },
      attack: { pool: new BuyerPool(sql, [...hot, ...fillers], allOf), products: [...hot, ...fillers] },
    }
    const bareProducts = { hot: await createBenchProducts(sql, names('bare UPDATE hot', 1)), multi: await createBenchProducts(sql, names('bare UPDATE multi', 5)) }

    const [settings] = await sql<{ version: string; sync: string; max: string; buffers: string }[]>`
      select version() as version, current_setting('synchronous_commit') as sync,
             current_setting('max_connections') as max, current_setting('shared_buffers') as buffers`
    const maxConnections = Number(settings.max)
    const ctx: Context = {
      options,
      sql,
      databaseUrl,
      runDir,
      services: { one, three, pooled },
      postmasterPid,
      shelves,
      bareProducts,
      benchProducts: [...hot, ...multi, ...others, ...fillers, ...bareProducts.hot, ...bareProducts.multi],
      rates: new Map(),
      children,
      cellCount: 0,
    }
    if (settings.sync !== 'on') log(`warning: synchronous_commit is ${settings.sync}; the targets are measured with it on`)

    // The plan: for each repeat, every cell in turn (the order rotates with the repeat).
    const plan: { repeat: number; cell: PlannedCell }[] = []
    for (let repeat = 1; repeat <= options.repeats; repeat++) {
      const cells = options.cells.filter((cell) => {
        const connections = (isHttp(cell.mode) ? 0 : cell.concurrency) + servicePool * 4 + 10
        if (connections <= maxConnections) return true
        if (repeat === 1) skipped.push(`${cell.mode} at ${cell.concurrency} buyers: needs ${connections} connections, the server allows ${maxConnections}.`)
        return false
      })
      const shift = (repeat - 1) % Math.max(1, cells.length)
      for (const cell of [...cells.slice(shift), ...cells.slice(0, shift)]) plan.push({ repeat, cell })
    }
    const estimate = plan.length * (options.warmup + options.seconds + 3)
    log(`${plan.length} cells, about ${Math.ceil(estimate / 60)} min`)

    // A service runs cold code for its first seconds of load (JavaScriptCore
    // compiles the hot paths as they run). The one-process service is warmed
    // by every cell before its 256-buyer cells; the 3 processes and the one
    // behind PgBouncer only by their own, so each serves one unmeasured cell
    // on the hot product first, and the comparisons are between warm services.
    if (!options.quick) {
      const warmed = new Set<Service>()
      for (const mode of ['http', 'http-3proc', 'http-pgbouncer'] as const) {
        const service = mode === 'http-3proc' ? three : mode === 'http-pgbouncer' ? pooled : one
        if (!service || warmed.has(service) || !plan.some((step) => step.cell.mode === mode)) continue
        warmed.add(service)
        const warm = await runCell(ctx, 0, { scenario: 'hot', mode, concurrency: 256 })
        if (warm.problems.length) throw new Error(`warm-up cell (hot ${mode} @256): invariants FAILED: ${warm.problems.join('; ')}`)
        log(`warm-up, not measured: hot ${mode} @256: ${fmtRate(warm.rate)} orders/s, invariants held`)
      }
    }

    const cells: CellResult[] = []
    for (const [index, step] of plan.entries()) {
      const cell = await runCell(ctx, step.repeat, step.cell)
      cells.push(cell)
      log(
        `[${index + 1}/${plan.length}] r${step.repeat} ${step.cell.scenario} ${step.cell.mode} @${step.cell.concurrency}: ` +
          `${fmtRate(cell.rate)} orders/s, p50 ${fmtMs(cell.p50)} ms, p99 ${fmtMs(cell.p99)} ms, ` +
          `${cell.ok ? Math.round((((cell.cpuMs.service ?? 0) + (cell.cpuMs.db ?? Number.NaN)) * 1000) / cell.ok) : '—'} µs CPU/order, ` +
          (cell.side ? `side: ${fmtRate(cell.side.rate)}/s p50 ${fmtMs(cell.side.p50)} p99 ${fmtMs(cell.side.p99)} ms, ` : '') +
          `${Object.values(cell.errors).reduce((a, b) => a + b, 0)} errors, other load ${otherCores(cell).toFixed(2)} cores, invariants ${cell.problems.length ? `FAILED: ${cell.problems.join('; ')}` : 'held'}`,
      )
    }

    const [finalAudit] = await sql<{ n: number }[]>`
      select count(*)::int as n from api.inventory_audit() where product_id = any (${ctx.benchProducts}::bigint[])`
    if (finalAudit.n > 0) log(`inventory_audit() lists ${finalAudit.n} bench products at the end`)

    log('profiling the checkout statement by statement (pg_stat_statements, one connection)')
    const statements: Profiles = external
      ? { skipped: 'DATABASE_URL is set, and the profile runs only on the throwaway server (it loads pg_stat_statements)' }
      : await profileCheckouts(databaseUrl, (url) => createSql(url, { max: 1 }), hot[0], options.quick ? 5 : 50)
    if ('profiles' in statements)
      for (const p of statements.profiles) log(`${p.label}: ${Math.round(p.callUs)} µs of database time per checkout`)
    else log(`statement profile skipped: ${statements.skipped}`)

    const aggregates = aggregate(cells)
    const machine: Machine = {
      date: new Date().toISOString().replace(/\.\d+Z$/, 'Z'),
      nproc: availableParallelism(),
      cpuModel: cpuModel(),
      memory: memory(),
      kernel: `Linux ${release()}`,
      postgres: settings.version.split(' on ')[0].split(',')[0],
      synchronousCommit: settings.sync,
      maxConnections: settings.max,
      sharedBuffers: settings.buffers,
      database: databaseLabel,
      bun: Bun.version,
      wrk: wrkVersion(),
      servicePool,
      serviceEnv: serviceEnvironment(servicePool),
      loadAverage: { start: loadStart, end: loadavg() },
      durationSeconds: (Date.now() - started) / 1000,
    }
    const out = options.out
    const svgFile = out.replace(/\.md$/, '') + '.svg'
    const jsonFile = out.replace(/\.md$/, '') + '.json'
    const found = targets(aggregates)
    mkdirSync(dirname(out), { recursive: true })
    writeFileSync(
      svgFile,
      renderChart({ aggregates, scenarios: ['hot', 'multi'].filter((s) => options.scenarios.includes(s as Scenario)) as Scenario[], modes: options.modes, concurrency: options.concurrency, title: 'Waitress: orders/s against concurrent buyers' }),
    )
    writeFileSync(jsonFile, JSON.stringify({ machine, options, targets: found, aggregates, cells, statements }, null, 1) + '\n')
    writeFileSync(
      out,
      renderMarkdown({ machine, options, aggregates, targets: found, skipped, statements, chartFile: basename(svgFile), jsonFile: basename(jsonFile) }),
    )
    log(`wrote ${out} (+ ${basename(svgFile)}, ${basename(jsonFile)}) in ${Math.round(machine.durationSeconds)} s`)
    for (const t of found)
      log(
        `target ${t.id}: ${t.what}: ${t.measured.replace(/\*/g, '')} → ${t.met === null ? 'not measured' : t.met ? 'met' : 'NOT met'}` +
          (t.repeats ? ` (each repeat: ${t.repeats.values.join(', ')}; met in ${t.repeats.met} of ${t.repeats.values.length})` : ''),
      )
    const failed = cells.filter((c) => c.problems.length)
    if (failed.length || finalAudit.n > 0) {
      process.exitCode = 1
      log(`invariants FAILED in ${failed.length} cells`)
    }
  } finally {
    process.off('SIGINT', onSignal)
    process.off('SIGTERM', onSignal)
    await cleanup()
  }
}

// --------------------------------------------------------------- one cell

/** The products a cell sells, and the buyers of its main and side loads. */
function shelvesOf(ctx: Context, cell: PlannedCell): { main: Shelf; side?: Shelf; products: number[] } {
  const { hot, multi, others, attack } = ctx.shelves
  switch (cell.scenario) {
    case 'hot':
      return { main: hot, products: cell.mode === 'bare' ? ctx.bareProducts.hot : hot.products }
    case 'multi':
      return { main: multi, products: cell.mode === 'bare' ? ctx.bareProducts.multi : multi.products }
    case 'shop':
      return { main: hot, side: others, products: [...hot.products, ...others.products] }
    case 'attack':
      return cell.mode === 'http-attacked'
        ? { main: hot, side: attack, products: attack.products }
        : { main: hot, products: hot.products }
  }
}

async function runCell(ctx: Context, repeat: number, cell: PlannedCell): Promise<CellResult> {
  const { options, sql } = ctx
  const { scenario, mode, concurrency } = cell
  const { main, side, products } = shelvesOf(ctx, cell)
  for (let attempt = 1; ; attempt++) {
    await sql`vacuum waitress.products`.catch(() => {})
    await sql`checkpoint`.catch(() => {})
    let before: State | undefined
    const atReady = async () => {
      before = await readState(sql, products)
    }
    let run: { result: LoadResult; side?: SideResult; cpuMs: CellResult['cpuMs']; exhausted: boolean; unknown: number }
    if (isHttp(mode)) run = await driveHttp(ctx, cell, main, side, atReady)
    else {
      const key = `sql|${scenario}|${mode}`
      let buyers: Buyer[] = []
      if (mode !== 'bare') {
        const rate = Math.max(300, ctx.rates.get(key) ?? 1000)
        const needed = Math.ceil(rate * 2 * (options.warmup + options.seconds) + 2 * concurrency + 100)
        await main.pool.ensure(needed, options.quick ? needed : 20_000)
        buyers = main.pool.peek(needed)
      }
      const sqlRun = await driveSql(ctx, {
        mode,
        scenario,
        concurrency,
        warmupSeconds: options.warmup,
        seconds: options.seconds,
        databaseUrl: ctx.databaseUrl,
        buyers,
        productIds: products,
      }, atReady)
      if (mode !== 'bare') main.pool.consume(sqlRun.result.used)
      const seen = sqlRun.result.attempts / (sqlRun.result.elapsedMs / 1000)
      if (Number.isFinite(seen)) ctx.rates.set(key, Math.max(ctx.rates.get(key) ?? 0, seen))
      run = { ...sqlRun, exhausted: sqlRun.result.exhausted, unknown: 0 }
    }
    const { result, cpuMs } = run
    const problems = await checkInvariants(ctx, mode, products, before!, {
      ok: result.ok + (run.side?.ok ?? 0),
      unknown: run.unknown,
      unitsTold: isHttp(mode) ? undefined : result.units,
    })
    if (run.exhausted && attempt < 3) {
      log(`  ${scenario} ${mode} @${concurrency} ran out of buyers: running it again with more`)
      continue
    }
    if (run.exhausted) problems.push('ran out of buyers three times')
    const { used: _used, exhausted: _exhausted, ...measured } = result
    return {
      ...measured,
      repeat,
      scenario,
      mode,
      concurrency,
      rate: result.ok / (result.elapsedMs / 1000),
      cpuMs,
      side: run.side,
      problems,
    }
  }
}

/** Request bodies for buyers: POST /orders of all their lines. */
const bodyOf = (buyer: Buyer) => JSON.stringify({ buyer_id: buyer.buyerId, cart_item_ids: buyer.itemIds })

/**
 * An HTTP cell: wrk warms up (its own buyers), the service settles, the CPU
 * counters are read, wrk runs the measured phase (and the side load's wrk
 * beside it), the service settles again (requests wrk left running finish),
 * the counters are read again.
 */
async function driveHttp(
  ctx: Context,
  cell: PlannedCell,
  main: Shelf,
  side: Shelf | undefined,
  atReady: () => Promise<void>,
): Promise<{ result: LoadResult; side?: SideResult; cpuMs: CellResult['cpuMs']; exhausted: boolean; unknown: number }> {
  const { options } = ctx
  const service = cell.mode === 'http-3proc' ? ctx.services.three : cell.mode === 'http-pgbouncer' ? ctx.services.pooled! : ctx.services.one
  const loads = [
    { name: 'main', shelf: main, connections: cell.concurrency },
    ...(side ? [{ name: 'side', shelf: side, connections: cell.side ?? 4 }] : []),
  ]
  // Buyers for both phases are made before anything is measured (an attacker's cart has 100 lines: slow to make).
  const take = async (load: (typeof loads)[number], seconds: number) => {
    const key = `http|${cell.scenario}|${cell.mode}|${cell.concurrency}|${load.name}`
    const guess = load.shelf === ctx.shelves.attack ? 100 : FIRST_RATE_GUESS
    const rate = Math.max(50, ctx.rates.get(key) ?? guess)
    const needed = Math.ceil(rate * 2 * seconds + 3 * load.connections + 50)
    await load.shelf.pool.ensure(needed, options.quick || load.shelf === ctx.shelves.attack ? needed : 20_000)
    return { key, buyers: load.shelf.pool.peek(needed) }
  }
  const prepare = async (seconds: number) => {
    const prepared: { load: (typeof loads)[number]; key: string; buyers: Buyer[] }[] = []
    for (const load of loads) {
      const { key, buyers } = await take(load, seconds)
      // Set aside so the next phase's buyers are others.
      load.shelf.pool.consume(buyers.length)
      prepared.push({ load, key, buyers })
    }
    return prepared
  }
  const runPhase = async (prepared: Awaited<ReturnType<typeof prepare>>, seconds: number) => {
    const runs = prepared.map(({ load, buyers }) =>
      startWrk({ dir: ctx.runDir, name: `cell-${++ctx.cellCount}-${load.name}`, url: service.url, path: '/orders', bodies: buyers.map(bodyOf), connections: load.connections, seconds }),
    )
    for (const run of runs) ctx.children.add({ pid: run.pid, kill: run.kill })
    const results = await Promise.all(runs.map((r) => r.result))
    return prepared.map(({ key }, i) => {
      const result = results[i]
      const seen = result.sent / (result.durationUs / 1e6)
      if (Number.isFinite(seen)) ctx.rates.set(key, Math.max(ctx.rates.get(key) ?? 0, seen))
      return result
    })
  }
  const warmup = options.warmup > 0 ? await prepare(options.warmup) : undefined
  const measured = await prepare(options.seconds)
  if (warmup) {
    await runPhase(warmup, options.warmup)
    await settle(ctx)
  }
  await atReady()
  const snapshot = () => {
    const [service1, service2, service3, db] = treeCpuMs([...service.pids, ...Array(3 - service.pids.length).fill(-1), ctx.postmasterPid ?? -1])
    return { service: [service1, service2, service3].filter(Number.isFinite).reduce((a, b) => a + b, 0), db, machine: machineBusyMs(), at: performance.now() }
  }
  const start = snapshot()
  // wrk's own CPU: a child's times reach this process once it has exited and been reaped.
  const clientStart = childrenCpuMs()
  const results = await runPhase(measured, options.seconds)
  const clientMs = childrenCpuMs() - clientStart
  await settle(ctx)
  const end = snapshot()
  const [mainResult, sideResult] = results
  const mainOutcomes = outcomesOf(mainResult)
  const unknown = results.reduce((sum, r) => sum + Math.max(0, r.sent - Object.values(r.counts).reduce((a, b) => a + b, 0)), 0)
  const result: LoadResult = {
    ok: mainOutcomes.ok,
    units: Number.NaN,
    attempts: mainOutcomes.answered,
    errors: mainOutcomes.errors,
    elapsedMs: mainResult.durationUs / 1000,
    p50: mainResult.p50,
    p95: mainResult.p95,
    p99: mainResult.p99,
    max: mainResult.max,
    used: 0,
    exhausted: mainResult.exhausted,
  }
  let sideSummary: SideResult | undefined
  if (sideResult) {
    const outcomes = outcomesOf(sideResult)
    sideSummary = {
      ok: outcomes.ok,
      rate: outcomes.ok / (sideResult.durationUs / 1e6),
      attempts: outcomes.answered,
      errors: outcomes.errors,
      p50: sideResult.p50,
      p95: sideResult.p95,
      p99: sideResult.p99,
    }
  }
  return {
    result,
    side: sideSummary,
    exhausted: results.some((r) => r.exhausted),
    unknown,
    cpuMs: {
      service: end.service - start.service,
      db: Number.isFinite(end.db) && Number.isFinite(start.db) ? end.db - start.db : null,
      client: Number.isFinite(clientMs) ? clientMs : Number.NaN,
      machine: end.machine - start.machine,
      // The counters span the measured phase and the settling after it.
      windowMs: end.at - start.at,
    },
  }
}

/** CPU time of this process's reaped children (wrk runs exit before the reading): cutime + cstime. */
function childrenCpuMs(): number {
  const stat = readStat(process.pid)
  return stat ? ((stat.cutime + stat.cstime) * 1000) / clockTicks() : Number.NaN
}

/**
 * Waits until the service is idle: no checkout running in the database for
 * half a second in a row (wrk leaves a request per connection behind, and
 * the order placer may still hold hundreds queued between two calls), at
 * most 30 s.
 */
async function settle(ctx: Context): Promise<void> {
  const deadline = Date.now() + 30_000
  let quiet = 0
  while (Date.now() < deadline && quiet < 5) {
    await Bun.sleep(100)
    const [{ n }] = await ctx.sql<{ n: number }[]>`
      select count(*)::int as n from pg_stat_activity
       where state = 'active' and pid <> pg_backend_pid() and query ilike '%place_%order%'`
    quiet = n === 0 ? quiet + 1 : 0
  }
}

/**
 * Runs one load-generator process (SQL modes) through warm-up, the measured
 * phase and exit, reading CPU around the measured phase; atReady runs
 * between the warm-up and the first CPU reading.
 */
async function driveSql(
  ctx: Context,
  config: LoadConfig,
  atReady: () => Promise<void>,
): Promise<{ result: LoadResult; cpuMs: CellResult['cpuMs'] }> {
  const configFile = join(ctx.runDir, `cell-${++ctx.cellCount}.json`)
  writeFileSync(configFile, JSON.stringify(config))
  const child = Bun.spawn([process.execPath, join(import.meta.dir, 'load-sql.ts'), configFile], {
    cwd: REPO,
    stdin: 'pipe',
    stdout: 'pipe',
    stderr: 'inherit',
  })
  ctx.children.add(child)
  try {
    const events = jsonLines(child.stdout)
    const say = (word: string) => {
      child.stdin.write(`${word}\n`)
      child.stdin.flush()
    }
    await nextEvent(events, 'ready', (config.warmupSeconds + 60) * 1000)
    await atReady()
    const snapshot = () => {
      const [db, client] = treeCpuMs([ctx.postmasterPid ?? -1, child.pid])
      return { db, client, machine: machineBusyMs() }
    }
    const start = snapshot()
    say('go')
    const done = await nextEvent(events, 'done', (config.seconds + 120) * 1000)
    const end = snapshot()
    say('exit')
    await within(child.exited, 15_000)
    const { event: _event, ...result } = done as unknown as LoadResult & { event: string }
    const diff = (a: number, b: number) => (Number.isFinite(a) && Number.isFinite(b) ? b - a : null)
    return {
      result,
      cpuMs: {
        service: null,
        db: diff(start.db, end.db),
        client: diff(start.client, end.client) ?? Number.NaN,
        machine: diff(start.machine, end.machine) ?? Number.NaN,
      },
    }
  } finally {
    child.kill()
    ctx.children.delete(child)
  }
}

interface State {
  stock: Map<number, number>
  maxOrderId: number
}

async function readState(sql: Sql, products: number[]): Promise<State> {
  const rows = await sql<{ id: number; stock: number }[]>`select id, stock from waitress.products where id = any (${products}::bigint[])`
  const [{ max }] = await sql<{ max: number }[]>`select coalesce(max(id), 0)::bigint as max from waitress.orders`
  return { stock: new Map(rows.map((r) => [r.id, r.stock])), maxOrderId: max }
}

/**
 * After a cell: stock never below zero; the stock taken equals the units the
 * clients were told were sold (SQL modes) or the units in the orders the
 * cell created (HTTP: wrk stops with a request per connection unanswered,
 * whose outcome it never learns); orders created equal the successes (HTTP:
 * at least the successes, at most the successes plus those unanswered);
 * initial stock = stock + units in orders; the audit is empty. After a
 * bare-UPDATE cell, its units are booked as one correction movement first
 * (the bare statement writes no ledger row by design).
 */
async function checkInvariants(
  ctx: Context,
  mode: Mode,
  products: number[],
  before: State,
  told: { ok: number; unknown: number; unitsTold: number | undefined },
): Promise<string[]> {
  const { sql } = ctx
  const problems: string[] = []
  const after = await readState(sql, products)
  for (const [id, stock] of after.stock) if (stock < 0) problems.push(`product ${id} has stock ${stock}`)
  const sum = (m: Map<number, number>) => [...m.values()].reduce((a, b) => a + b, 0)
  const taken = sum(before.stock) - sum(after.stock)

  if (mode === 'bare') {
    if (taken !== told.unitsTold) problems.push(`stock taken ${taken} ≠ units the clients were told were sold ${told.unitsTold}`)
    await sql`
      insert into waitress.stock_movements (product_id, quantity, reason, note)
      select p.id, p.stock - l.stock, 'correction', 'bench: units taken by bare UPDATE cells, which write no ledger row'
        from waitress.products p
        join (select product_id, sum(quantity) as stock from waitress.stock_movements group by product_id) l on l.product_id = p.id
       where p.id = any (${products}::bigint[]) and p.stock <> l.stock`
  } else {
    const [{ n, units }] = await sql<{ n: number; units: number }[]>`
      select count(distinct o.id)::int as n, coalesce(sum(oi.quantity), 0)::bigint as units
        from waitress.orders o join waitress.order_items oi on oi.order_id = o.id
       where o.id > ${before.maxOrderId} and o.seller_id = ${BENCH_SELLER_ID}`
    const expected = told.unitsTold ?? units
    if (taken !== expected) problems.push(`stock taken ${taken} ≠ units ${told.unitsTold === undefined ? 'in the orders created' : 'the clients were told were sold'} ${expected}`)
    if (n < told.ok || n > told.ok + told.unknown)
      problems.push(`${n} orders created, but ${told.ok} successes${told.unknown ? ` and ${told.unknown} requests left unanswered` : ''}`)
    const sold = await sql<{ id: number; stock: number; sold: number }[]>`
      select p.id, p.stock, coalesce((select sum(oi.quantity) from waitress.order_items oi where oi.product_id = p.id), 0)::bigint as sold
        from waitress.products p where p.id = any (${products}::bigint[])`
    for (const row of sold)
      if (row.stock + row.sold !== BENCH_STOCK) problems.push(`product ${row.id}: initial ${BENCH_STOCK} ≠ stock ${row.stock} + sold in orders ${row.sold}`)
  }
  const audit = await sql<{ product_id: number }[]>`
    select product_id from api.inventory_audit() where product_id = any (${ctx.benchProducts}::bigint[])`
  if (audit.length) problems.push(`inventory_audit() lists products ${audit.map((r) => r.product_id).join(', ')}`)
  return problems
}

// ---------------------------------------------------------- the service

interface Service {
  url: string
  pids: number[]
  stop(): Promise<void>
}

/** `count` service processes on one port (REUSE_PORT when more than one), as `npm start` runs them. */
/**
 * A PgBouncer in transaction mode in front of the bench's database, as users
 * put one in front of several service processes: the service reaches
 * PostgreSQL only through it, with as many server connections as its own
 * pool (so the cell compares the pooler's hop, not a bigger pool). The
 * logins it knows: the administrator, and the login the service derives from
 * DATABASE_URL alone.
 */
async function startBouncerFor(databaseUrl: string, poolSize: number): Promise<Pgbouncer & { serviceUrl: string }> {
  const admin = new URL(databaseUrl)
  const user = decodeURIComponent(admin.username)
  const password = decodeURIComponent(admin.password)
  const bouncer = await startPgbouncer({
    server: { host: admin.hostname, port: Number(admin.port) },
    users: { [user]: password, [DERIVED_LOGIN]: await derivePassword(password, DERIVED_LOGIN) },
    admin: user,
    poolSize,
  })
  const serviceUrl = new URL(bouncer.url(user, password, decodeURIComponent(admin.pathname.slice(1))))
  serviceUrl.search = admin.search
  return Object.assign(bouncer, { serviceUrl: serviceUrl.toString() })
}

async function startService(databaseUrl: string, runDir: string, children: Context['children'], count: number, env: Record<string, string> = {}): Promise<Service> {
  const port = await freePort()
  const started = Array.from({ length: count }, (_, i) => {
    const name = `service-${port}-${i}`
    const service = localService(REPO, databaseUrl, port, { ...(count > 1 ? { REUSE_PORT: 'true' } : {}), ...env })
    const child = Bun.spawn(service.cmd, {
      cwd: REPO,
      stdout: Bun.file(join(runDir, `${name}.log`)),
      stderr: Bun.file(join(runDir, `${name}.err`)),
      env: service.env,
    })
    children.add(child)
    return { child, err: join(runDir, `${name}.err`) }
  })
  const url = `http://127.0.0.1:${port}`
  const deadline = Date.now() + 30_000
  for (;;) {
    const dead = started.find(({ child }) => child.exitCode !== null)
    if (dead) throw new Error(`the service exited with ${dead.child.exitCode}: ${tail(dead.err)}`)
    // Every process logs "listening" once its server is up.
    const listening = started.filter((_, i) => {
      try {
        return readFileSync(join(runDir, `service-${port}-${i}.log`), 'utf8').includes('listening')
      } catch {
        return false
      }
    }).length
    const healthy = listening === count && (await fetch(`${url}/healthz`).then((r) => r.ok, () => false))
    if (healthy) break
    if (Date.now() > deadline) throw new Error(`the service did not answer /healthz in 30 s: ${tail(started[0].err)}`)
    await Bun.sleep(100)
  }
  return {
    url,
    pids: started.map(({ child }) => child.pid),
    stop: async () => {
      for (const { child } of started) child.kill('SIGTERM')
      for (const { child } of started) {
        if (!(await within(child.exited, 10_000))) child.kill('SIGKILL')
        children.delete(child)
      }
    },
  }
}

const tail = (file: string) => {
  try {
    return readFileSync(file, 'utf8').trim().split('\n').slice(-5).join('\n')
  } catch {
    return '(no output)'
  }
}

/** The service's settings from .env.example that this run sets, for the report. */
function serviceEnvironment(pool: number): string {
  const ours = new Set(['DATABASE_URL', 'PORT', 'HOST', 'MIGRATE_ON_START', 'EXPIRE_ORDERS_EVERY', 'DB_POOL_MAX', 'TEST_DATABASE_URL', 'REUSE_PORT'])
  let keys: string[] = []
  try {
    keys = [...readFileSync(join(REPO, '.env.example'), 'utf8').matchAll(/^#?\s*([A-Z][A-Z0-9_]+)=/gm)].map((m) => m[1])
  } catch {}
  const set = [...new Set(keys)].filter((k) => !ours.has(k) && process.env[k] !== undefined && process.env[k] !== '').map((k) => `\`${k}=${process.env[k]}\``)
  return [`\`DB_POOL_MAX=${pool}\``, ...set].join(', ')
}

function wrkVersion(): string {
  try {
    const out = Bun.spawnSync(['sh', '-c', `${process.env.WRK ?? 'wrk'} --version 2>&1`]).stdout.toString()
    return /^wrk\s+(\S+)/m.exec(out)?.[1] ?? 'unknown'
  } catch {
    return 'unknown'
  }
}

// ---------------------------------------------------------------- helpers

/** Waits for a promise at most `ms`: true when it settled in time. The timer does not keep the process alive after. */
async function within(promise: Promise<unknown>, ms: number): Promise<boolean> {
  let timer: Timer | undefined
  const late = new Promise<boolean>((resolve) => (timer = setTimeout(() => resolve(false), ms)))
  try {
    return await Promise.race([promise.then(() => true), late])
  } finally {
    clearTimeout(timer)
  }
}

async function* jsonLines(stream: ReadableStream<Uint8Array>): AsyncGenerator<Record<string, unknown>> {
  const decoder = new TextDecoder()
  let buffered = ''
  for await (const chunk of stream) {
    buffered += decoder.decode(chunk, { stream: true })
    let newline: number
    while ((newline = buffered.indexOf('\n')) >= 0) {
      const line = buffered.slice(0, newline).trim()
      buffered = buffered.slice(newline + 1)
      if (!line.startsWith('{')) continue
      try {
        yield JSON.parse(line)
      } catch {}
    }
  }
}

async function nextEvent(events: AsyncGenerator<Record<string, unknown>>, event: string, timeoutMs: number): Promise<Record<string, unknown>> {
  let timer: Timer | undefined
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`the load generator sent no "${event}" in ${timeoutMs / 1000} s`)), timeoutMs)
  })
  try {
    for (;;) {
      const next = await Promise.race([events.next(), timeout])
      if (next.done) throw new Error(`the load generator exited before "${event}"`)
      if (next.value.event === event) return next.value
    }
  } finally {
    clearTimeout(timer)
  }
}

function cpuModel(): string {
  try {
    return /^model name\s*:\s*(.+)$/m.exec(readFileSync('/proc/cpuinfo', 'utf8'))?.[1] ?? 'unknown'
  } catch {
    return 'unknown'
  }
}

function memory(): string {
  try {
    const kb = Number(/^MemTotal:\s*(\d+)/m.exec(readFileSync('/proc/meminfo', 'utf8'))?.[1])
    return `${(kb / 1024 / 1024).toFixed(1)} GiB`
  } catch {
    return 'unknown'
  }
}

if (import.meta.main) {
  main(Bun.argv.slice(2)).catch((error) => {
    console.error(error instanceof Error ? (error.stack ?? error.message) : error)
    process.exit(1)
  })
}
