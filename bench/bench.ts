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
import { machineBusyMs, postmasterOf, treeCpuMs } from './cpu'
import { BENCH_SELLER_ID, BENCH_STOCK, BuyerPool, createBenchProducts } from './fixtures'
import { aggregate, fmtMs, fmtRate, otherCores, renderMarkdown, targets, type CellResult, type Machine, type Options } from './report'
import { MODES, SCENARIOS, type Buyer, type LoadConfig, type LoadResult, type Mode, type Scenario } from './types'

const REPO = resolve(import.meta.dir, '..')
const HELP = `npm run bench -- [flags]

  --seconds N        measured seconds per cell (default 5; --quick 0.5)
  --warmup N         warm-up seconds per cell, not measured (default 1; --quick 0.2)
  --repeats N        repeats of every cell; the report shows medians (default 3; --quick 1)
  --concurrency L    concurrent buyers, comma-separated (default 10,64,256; --quick 2,8)
  --modes L          of ${MODES.join(',')} (default all)
  --scenarios L      of ${SCENARIOS.join(',')} (default both)
  --quick            a smoke run of a few seconds, for CI: short cells, small concurrency, 1 repeat
  --out FILE         the report (default docs/benchmarks.md; --quick .data/bench/benchmarks.md, git-ignored);
                     the chart and the raw cells go beside it (.svg, .json)

DATABASE_URL: use that server instead of a throwaway embedded one (bench data is written to it).
The service's other settings come from the environment (e.g. DB_POOL_MAX).`

export function parseOptions(args: string[]): Options & { help: boolean } {
  const { values } = parseArgs({
    args,
    strict: true,
    options: {
      seconds: { type: 'string' },
      warmup: { type: 'string' },
      repeats: { type: 'string' },
      concurrency: { type: 'string' },
      modes: { type: 'string' },
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
  const list = <T extends string>(name: string, raw: string | undefined, allowed: readonly T[], fallback: readonly T[]): T[] => {
    if (raw === undefined) return [...fallback]
    const items = raw.split(',').map((s) => s.trim()).filter(Boolean)
    const unknown = items.filter((item) => !allowed.includes(item as T))
    if (unknown.length || items.length === 0) throw new Error(`--${name} takes a list of ${allowed.join(', ')}; got "${raw}"`)
    return allowed.filter((item) => items.includes(item))
  }
  const concurrency = (values.concurrency ?? (quick ? '2,8' : '10,64,256')).split(',').map((s) => Number(s.trim()))
  if (concurrency.some((c) => !Number.isInteger(c) || c < 1 || c > 2000))
    throw new Error(`--concurrency takes whole numbers from 1 to 2000, got "${values.concurrency}"`)
  const repeats = number('repeats', values.repeats, quick ? 1 : 3, 1)
  if (!Number.isInteger(repeats)) throw new Error('--repeats must be a whole number')
  return {
    seconds: number('seconds', values.seconds, quick ? 0.5 : 5, 0.1),
    warmup: number('warmup', values.warmup, quick ? 0.2 : 1, 0),
    repeats,
    concurrency: [...new Set(concurrency)].sort((a, b) => a - b),
    modes: list('modes', values.modes, MODES, MODES),
    scenarios: list('scenarios', values.scenarios, SCENARIOS, SCENARIOS),
    quick,
    // Defaults live in the repository; a given path is taken from the current directory.
    out: values.out ? resolve(values.out) : join(REPO, quick ? '.data/bench/benchmarks.md' : 'docs/benchmarks.md'),
    help: values.help!,
  }
}

const log = (line: string) => console.error(line)

// ------------------------------------------------------------------ the run

interface Context {
  options: Options
  sql: Sql
  databaseUrl: string
  runDir: string
  serviceUrl: string
  servicePid: number
  postmasterPid: number | undefined
  pools: Record<Scenario, BuyerPool>
  bareProducts: Record<Scenario, number[]>
  benchProducts: number[]
  flashSale: 'http' | 'sql' | undefined
  /** Highest attempts/s seen per scenario and mode: sizes the next cell's buyers. */
  rates: Map<string, number>
  children: Set<{ pid: number; kill(signal?: number): void }>
  cellCount: number
}

/** A first guess of attempts/s, before a mode has been measured; a cell that runs out of buyers is run again with twice as many. */
const FIRST_RATE_GUESS = 3000

export async function main(args: string[]): Promise<void> {
  const options = parseOptions(args)
  if (options.help) {
    console.log(HELP)
    return
  }
  const started = Date.now()
  const loadStart = loadavg()
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
      const maxConnections = Math.max(400, Math.max(...options.concurrency) + servicePool + 50)
      log(`starting a throwaway PostgreSQL (max_connections=${maxConnections}) in ${runDir}`)
      const server = await startEmbeddedPostgres({
        dataDir: join(runDir, 'pg'),
        persistent: false,
        postgresFlags: ['-c', `max_connections=${maxConnections}`],
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

    const service = await startService(databaseUrl, runDir, children)
    cleanups.push(() => service.stop())

    const [flash] = await sql<{ present: boolean }[]>`
      select to_regprocedure('api.set_flash_sale(bigint,boolean,bigint)') is not null as present`
    const skipped: string[] = []
    let modes = options.modes
    if (!flash.present && modes.includes('http-flash')) {
      modes = modes.filter((m) => m !== 'http-flash')
      skipped.push('(a) HTTP flash-sale: `set_flash_sale(bigint, boolean)` is not in this database yet.')
    }

    log('creating products and buyers')
    const pools = {} as Record<Scenario, BuyerPool>
    const bareProducts = {} as Record<Scenario, number[]>
    const size = { hot: 1, multi: 5 }
    for (const scenario of options.scenarios) {
      const names = (prefix: string) => Array.from({ length: size[scenario] }, (_, i) => `bench ${prefix} ${scenario}${size[scenario] > 1 ? ` ${i + 1}` : ''}`)
      pools[scenario] = new BuyerPool(sql, await createBenchProducts(sql, names('checkout')))
      if (modes.includes('bare')) bareProducts[scenario] = await createBenchProducts(sql, names('bare UPDATE'))
    }

    const [settings] = await sql<{ version: string; sync: string; max: string; buffers: string }[]>`
      select version() as version, current_setting('synchronous_commit') as sync,
             current_setting('max_connections') as max, current_setting('shared_buffers') as buffers`
    const maxConnections = Number(settings.max)
    const ctx: Context = {
      options: { ...options, modes },
      sql,
      databaseUrl,
      runDir,
      serviceUrl: service.url,
      servicePid: service.pid,
      postmasterPid,
      pools,
      bareProducts,
      benchProducts: [...Object.values(pools).flatMap((p) => p.productIds), ...Object.values(bareProducts).flat()],
      flashSale: flash.present ? await flashSaleSwitch(service.url, pools[options.scenarios[0]].productIds[0]) : undefined,
      rates: new Map(),
      children,
      cellCount: 0,
    }
    if (settings.sync !== 'on') log(`warning: synchronous_commit is ${settings.sync}; the targets are measured with it on`)

    // The plan: for each repeat, each concurrency, each scenario, every mode in turn (rotated per repeat).
    const plan: { repeat: number; concurrency: number; scenario: Scenario; mode: Mode }[] = []
    for (let repeat = 1; repeat <= options.repeats; repeat++)
      for (const concurrency of options.concurrency)
        for (const scenario of options.scenarios)
          for (let i = 0; i < modes.length; i++) {
            const mode = modes[(i + repeat - 1) % modes.length]
            // The service's pool is open all along; the bench keeps a few of its own.
            const connections = (mode.startsWith('http') ? 0 : concurrency) + servicePool + 10
            if (connections > maxConnections) {
              if (repeat === 1 && scenario === options.scenarios[0])
                skipped.push(`${mode} at ${concurrency} buyers: needs ${connections} connections, the server allows ${maxConnections}.`)
              continue
            }
            plan.push({ repeat, concurrency, scenario, mode })
          }
    const estimate = plan.length * (options.warmup + options.seconds + 2)
    log(`${plan.length} cells, about ${Math.ceil(estimate / 60)} min`)

    const cells: CellResult[] = []
    for (const [index, step] of plan.entries()) {
      const cell = await runCell(ctx, step.repeat, step.scenario, step.mode, step.concurrency)
      cells.push(cell)
      log(
        `[${index + 1}/${plan.length}] r${step.repeat} ${step.scenario} ${step.mode} @${step.concurrency}: ` +
          `${fmtRate(cell.rate)} orders/s, p99 ${fmtMs(cell.p99)} ms, ` +
          `${cell.ok ? Math.round((((cell.cpuMs.service ?? 0) + (cell.cpuMs.db ?? Number.NaN)) * 1000) / cell.ok) : '—'} µs CPU/order, ` +
          `${Object.values(cell.errors).reduce((a, b) => a + b, 0)} errors, other load ${otherCores(cell).toFixed(2)} cores, invariants ${cell.problems.length ? `FAILED: ${cell.problems.join('; ')}` : 'held'}`,
      )
    }

    const [finalAudit] = await sql<{ n: number }[]>`
      select count(*)::int as n from api.inventory_audit() where product_id = any (${ctx.benchProducts}::bigint[])`
    if (finalAudit.n > 0) log(`inventory_audit() lists ${finalAudit.n} bench products at the end`)

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
      servicePool,
      serviceEnv: serviceEnvironment(servicePool),
      loadAverage: { start: loadStart, end: loadavg() },
      flashSale: ctx.flashSale
        ? `available; switched per cell with ${ctx.flashSale === 'http' ? '`PUT /products/:id/flash-sale {enabled}`' : '`select set_flash_sale(id, enabled)`'}`
        : 'not in this database yet: its cells were skipped',
      durationSeconds: (Date.now() - started) / 1000,
    }
    const out = options.out
    const svgFile = out.replace(/\.md$/, '') + '.svg'
    const jsonFile = out.replace(/\.md$/, '') + '.json'
    const found = targets(aggregates, options, !!ctx.flashSale)
    mkdirSync(dirname(out), { recursive: true })
    writeFileSync(
      svgFile,
      renderChart({ aggregates, scenarios: options.scenarios, modes, concurrency: options.concurrency, title: 'Waitress: orders/s against concurrent buyers' }),
    )
    writeFileSync(jsonFile, JSON.stringify({ machine, options: ctx.options, targets: found, aggregates, cells }, null, 1) + '\n')
    writeFileSync(
      out,
      renderMarkdown({ machine, options: ctx.options, aggregates, targets: found, skipped, chartFile: basename(svgFile), jsonFile: basename(jsonFile) }),
    )
    log(`wrote ${out} (+ ${basename(svgFile)}, ${basename(jsonFile)}) in ${Math.round(machine.durationSeconds)} s`)
    for (const t of found) log(`target ${t.id} ${t.scenario}: ${t.what}: ${t.measured.replace(/\*/g, '')} → ${t.met === null ? 'not measured' : t.met ? 'met' : 'NOT met'}`)
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

async function runCell(ctx: Context, repeat: number, scenario: Scenario, mode: Mode, concurrency: number): Promise<CellResult> {
  const { options, sql } = ctx
  const key = `${scenario}|${mode}`
  const pool = ctx.pools[scenario]
  const products = mode === 'bare' ? ctx.bareProducts[scenario] : pool.productIds
  for (let attempt = 1; ; attempt++) {
    let buyers: Buyer[] = []
    if (mode !== 'bare') {
      // Buyers are cheap and the machine is noisy: three times the best rate seen, at least 1,000/s.
      const rate = Math.max(1000, ctx.rates.get(key) ?? FIRST_RATE_GUESS)
      const needed = Math.ceil(rate * 3 * (options.warmup + options.seconds) + 2 * concurrency + 100)
      await pool.ensure(needed)
      buyers = pool.peek(needed)
    }
    if (mode === 'http-flash') await setFlashSale(ctx, products, true)
    let run: { result: LoadResult; cpuMs: CellResult['cpuMs'] }
    // Read when the warm-up is over, before the measured phase.
    let before: State | undefined
    try {
      await sql`vacuum waitress.products`.catch(() => {})
      await sql`checkpoint`.catch(() => {})
      run = await drive(ctx, {
        mode,
        scenario,
        concurrency,
        warmupSeconds: options.warmup,
        seconds: options.seconds,
        serviceUrl: ctx.serviceUrl,
        databaseUrl: ctx.databaseUrl,
        buyers,
        productIds: products,
      }, async () => {
        before = await readState(sql, products)
      })
    } finally {
      if (mode === 'http-flash') await setFlashSale(ctx, products, false)
    }
    const { result, cpuMs } = run
    if (mode !== 'bare') pool.consume(result.used)
    const seen = result.attempts / (result.elapsedMs / 1000)
    if (Number.isFinite(seen)) ctx.rates.set(key, Math.max(ctx.rates.get(key) ?? 0, seen))
    const problems = await checkInvariants(ctx, mode, products, before!, result)
    if (result.exhausted && attempt < 3) {
      ctx.rates.set(key, 2 * Math.max(ctx.rates.get(key) ?? FIRST_RATE_GUESS, FIRST_RATE_GUESS))
      log(`  ${scenario} ${mode} @${concurrency} ran out of buyers: running it again with more`)
      continue
    }
    if (result.exhausted) problems.push('ran out of buyers three times')
    const { used: _used, exhausted: _exhausted, ...measured } = result
    return {
      ...measured,
      repeat,
      scenario,
      mode,
      concurrency,
      rate: result.ok / (result.elapsedMs / 1000),
      cpuMs,
      problems,
    }
  }
}

/**
 * Runs one load-generator process through warm-up, the measured phase and
 * exit, reading CPU around the measured phase; atReady runs between the
 * warm-up and the first CPU reading.
 */
async function drive(
  ctx: Context,
  config: LoadConfig,
  atReady: () => Promise<void>,
): Promise<{ result: LoadResult; cpuMs: CellResult['cpuMs'] }> {
  const configFile = join(ctx.runDir, `cell-${++ctx.cellCount}.json`)
  writeFileSync(configFile, JSON.stringify(config))
  const script = config.mode.startsWith('http') ? 'load-http.ts' : 'load-sql.ts'
  const child = Bun.spawn([process.execPath, join(import.meta.dir, script), configFile], {
    cwd: REPO,
    stdin: 'pipe',
    stdout: 'pipe',
    stderr: 'inherit',
    // Bun's fetch opens at most 256 connections at once by default.
    env: { ...process.env, BUN_CONFIG_MAX_HTTP_REQUESTS: '4096' },
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
      const [service, db, client] = treeCpuMs([ctx.servicePid, ctx.postmasterPid ?? -1, child.pid])
      return { service, db, client, machine: machineBusyMs() }
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
        service: config.mode.startsWith('http') ? diff(start.service, end.service) : null,
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
 * After a cell: stock never below zero; the stock taken equals what the
 * clients were told; orders created equal successes; initial stock = stock +
 * units in orders; the audit is empty. After a bare-UPDATE cell, its units
 * are booked as one correction movement first (the bare statement writes no
 * ledger row by design).
 */
async function checkInvariants(ctx: Context, mode: Mode, products: number[], before: State, result: LoadResult): Promise<string[]> {
  const { sql } = ctx
  const problems: string[] = []
  const after = await readState(sql, products)
  for (const [id, stock] of after.stock) if (stock < 0) problems.push(`product ${id} has stock ${stock}`)
  const sum = (m: Map<number, number>) => [...m.values()].reduce((a, b) => a + b, 0)
  const taken = sum(before.stock) - sum(after.stock)
  if (taken !== result.units) problems.push(`stock taken ${taken} ≠ units the clients were told were sold ${result.units}`)

  if (mode === 'bare') {
    await sql`
      insert into waitress.stock_movements (product_id, quantity, reason, note)
      select p.id, p.stock - l.stock, 'correction', 'bench: units taken by bare UPDATE cells, which write no ledger row'
        from waitress.products p
        join (select product_id, sum(quantity) as stock from waitress.stock_movements group by product_id) l on l.product_id = p.id
       where p.id = any (${products}::bigint[]) and p.stock <> l.stock`
  } else {
    const [{ n }] = await sql<{ n: number }[]>`
      select count(*)::int as n from waitress.orders where id > ${before.maxOrderId} and seller_id = ${BENCH_SELLER_ID}`
    if (n !== result.ok) problems.push(`${n} orders created ≠ ${result.ok} successes`)
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

async function startService(databaseUrl: string, runDir: string, children: Context['children']) {
  // Hook for a pooler in front of the database (a --pgbouncer mode): the
  // service connects through BENCH_SERVICE_DATABASE_URL (e.g. a PgBouncer from
  // tests/support/pgbouncer.ts, with DB_PREPARE=false in the environment)
  // while the bench's own checks keep reading DATABASE_URL directly.
  databaseUrl = process.env.BENCH_SERVICE_DATABASE_URL || databaseUrl
  const port = await freePort()
  const logFile = join(runDir, 'service.log')
  const child = Bun.spawn([process.execPath, 'src/server.ts'], {
    cwd: REPO,
    stdout: Bun.file(logFile),
    stderr: Bun.file(join(runDir, 'service.err')),
    env: {
      ...process.env,
      DATABASE_URL: databaseUrl,
      PORT: String(port),
      HOST: '127.0.0.1',
      MIGRATE_ON_START: 'false',
      EXPIRE_ORDERS_EVERY: '0',
    },
  })
  children.add(child)
  const url = `http://127.0.0.1:${port}`
  const deadline = Date.now() + 30_000
  for (;;) {
    if (child.exitCode !== null) throw new Error(`the service exited with ${child.exitCode}: ${tail(join(runDir, 'service.err'))}`)
    const healthy = await fetch(`${url}/healthz`).then((r) => r.ok, () => false)
    if (healthy) break
    if (Date.now() > deadline) throw new Error(`the service did not answer /healthz in 30 s: ${tail(join(runDir, 'service.err'))}`)
    await Bun.sleep(100)
  }
  return {
    url,
    pid: child.pid,
    stop: async () => {
      child.kill('SIGTERM')
      if (!(await within(child.exited, 10_000))) child.kill('SIGKILL')
      children.delete(child)
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
  const ours = new Set(['DATABASE_URL', 'PORT', 'HOST', 'MIGRATE_ON_START', 'EXPIRE_ORDERS_EVERY', 'DB_POOL_MAX', 'TEST_DATABASE_URL'])
  let keys: string[] = []
  try {
    keys = [...readFileSync(join(REPO, '.env.example'), 'utf8').matchAll(/^#?\s*([A-Z][A-Z0-9_]+)=/gm)].map((m) => m[1])
  } catch {}
  const set = [...new Set(keys)].filter((k) => !ours.has(k) && process.env[k] !== undefined && process.env[k] !== '').map((k) => `\`${k}=${process.env[k]}\``)
  return [`\`DB_POOL_MAX=${pool}\``, ...set].join(', ')
}

/** How this service switches flash-sale mode: its PUT route when it has one, else the SQL function. */
async function flashSaleSwitch(serviceUrl: string, productId: number): Promise<'http' | 'sql'> {
  const response = await fetch(`${serviceUrl}/products/${productId}/flash-sale`, {
    method: 'PUT',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ enabled: false }),
  }).catch(() => undefined)
  await response?.text()
  return response?.ok ? 'http' : 'sql'
}

async function setFlashSale(ctx: Context, productIds: number[], enabled: boolean): Promise<void> {
  for (const id of productIds) {
    if (ctx.flashSale === 'http') {
      const response = await fetch(`${ctx.serviceUrl}/products/${id}/flash-sale`, {
        method: 'PUT',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify({ enabled }),
      })
      const body = await response.text()
      if (!response.ok) throw new Error(`PUT /products/${id}/flash-sale answered ${response.status}: ${body}`)
    } else {
      await ctx.sql`select api.set_flash_sale(${id}::bigint, ${enabled})`
    }
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
