/**
 * From cells to docs/benchmarks.md: medians over repeats, the tables, the
 * target ratios with met / not met, and how it was measured.
 */
import { median } from './stats'
import { MODE_INFO, SCENARIO_INFO, type LoadResult, type Mode, type Scenario } from './types'

/** One measured cell: one mode, one scenario, one concurrency, one repeat. */
export interface CellResult extends Omit<LoadResult, 'used' | 'exhausted'> {
  repeat: number
  scenario: Scenario
  mode: Mode
  concurrency: number
  /** Successful orders per second of the measured phase. */
  rate: number
  /**
   * CPU time in ms over the measured phase; service is null for the modes that
   * bypass it, db null when not measurable; machine is the whole machine's busy
   * time over all cores (/proc/stat).
   */
  cpuMs: { service: number | null; db: number | null; client: number; machine: number }
  /** Stock, orders and ledger read back after the cell: empty when all held. */
  problems: string[]
}

export interface Machine {
  date: string
  nproc: number
  cpuModel: string
  memory: string
  kernel: string
  postgres: string
  synchronousCommit: string
  maxConnections: string
  sharedBuffers: string
  database: string
  bun: string
  servicePool: number
  serviceEnv: string
  loadAverage: { start: number[]; end: number[] }
  flashSale: string
  durationSeconds: number
}

export interface Options {
  seconds: number
  warmup: number
  repeats: number
  concurrency: number[]
  modes: Mode[]
  scenarios: Scenario[]
  quick: boolean
  out: string
}

export interface Aggregate {
  scenario: Scenario
  mode: Mode
  concurrency: number
  rates: number[]
  rate: number
  p50: number
  p95: number
  p99: number
  errors: Record<string, number>
  attempts: number
  /** Medians of CPU µs per order; service null when the mode bypasses it; db null when not measured. */
  cpuUs: { total: number | null; service: number | null; db: number | null; client: number }
  /** Median cores used by everything else on the machine during the cells (other processes, steal). */
  otherCores: number
  problems: string[]
}

/** Cores the rest of the machine used during a cell: busy time less the service, the database and the load generator. */
export function otherCores(cell: CellResult): number {
  const ours = (cell.cpuMs.service ?? 0) + (cell.cpuMs.db ?? 0) + cell.cpuMs.client
  return Math.max(0, cell.cpuMs.machine - ours) / cell.elapsedMs
}

const perOrderUs = (ms: number | null, orders: number) => (ms === null || !Number.isFinite(ms) || orders === 0 ? Number.NaN : (ms * 1000) / orders)
const orNull = (value: number) => (Number.isFinite(value) ? value : null)

export function aggregate(cells: CellResult[]): Aggregate[] {
  const groups = new Map<string, CellResult[]>()
  for (const cell of cells) {
    const key = `${cell.scenario}|${cell.mode}|${cell.concurrency}`
    groups.set(key, [...(groups.get(key) ?? []), cell])
  }
  return [...groups.values()].map((group) => {
    const { scenario, mode, concurrency } = group[0]
    const errors: Record<string, number> = {}
    for (const cell of group) for (const [kind, count] of Object.entries(cell.errors)) errors[kind] = (errors[kind] ?? 0) + count
    const service = group.map((c) => perOrderUs(c.cpuMs.service, c.ok))
    const db = group.map((c) => perOrderUs(c.cpuMs.db, c.ok))
    const total = group.map((c) =>
      c.cpuMs.db === null ? Number.NaN : perOrderUs((c.cpuMs.service ?? 0) + c.cpuMs.db, c.ok),
    )
    return {
      scenario,
      mode,
      concurrency,
      rates: group.map((c) => c.rate),
      rate: median(group.map((c) => c.rate)),
      p50: median(group.map((c) => c.p50)),
      p95: median(group.map((c) => c.p95)),
      p99: median(group.map((c) => c.p99)),
      errors,
      attempts: group.reduce((sum, c) => sum + c.attempts, 0),
      cpuUs: {
        total: orNull(median(total)),
        service: group[0].cpuMs.service === null ? null : orNull(median(service)),
        db: orNull(median(db)),
        client: median(group.map((c) => perOrderUs(c.cpuMs.client, c.ok))),
      },
      otherCores: median(group.map(otherCores)),
      problems: group.flatMap((c) => c.problems.map((p) => `repeat ${c.repeat}: ${p}`)),
    }
  })
}

export interface Target {
  id: string
  scenario: Scenario
  what: string
  measured: string
  /** true met, false not met, null not measured. */
  met: boolean | null
  note?: string
}

function find(aggregates: Aggregate[], scenario: Scenario, mode: Mode, concurrency: number) {
  return aggregates.find((a) => a.scenario === scenario && a.mode === mode && a.concurrency === concurrency)
}

/** The targets, from the medians. They name 10 and 256 buyers; a run without them uses its lowest and highest. */
export function targets(aggregates: Aggregate[], options: Pick<Options, 'concurrency' | 'scenarios'>, flashSale: boolean): Target[] {
  const low = options.concurrency.includes(10) ? 10 : Math.min(...options.concurrency)
  const high = options.concurrency.includes(256) ? 256 : Math.max(...options.concurrency)
  const off = low !== 10 || high !== 256 ? ` (this run: ${high} and ${low} instead of 256 and 10)` : ''
  const out: Target[] = []
  const ratio = (id: string, scenario: Scenario, what: string, a: Aggregate | undefined, b: Aggregate | undefined, goal: number, missing?: string) => {
    if (!a || !b || !Number.isFinite(a.rate) || !Number.isFinite(b.rate) || b.rate === 0) {
      out.push({ id, scenario, what, measured: 'not measured', met: null, note: missing })
      return
    }
    const value = a.rate / b.rate
    out.push({ id, scenario, what, measured: `${fmtRate(a.rate)} / ${fmtRate(b.rate)} = **${value.toFixed(2)}**`, met: value >= goal })
  }
  for (const scenario of options.scenarios) {
    ratio('1', scenario, `HTTP@${high} ≥ 1.0 × direct place_order@${low}${off}`, find(aggregates, scenario, 'http', high), find(aggregates, scenario, 'direct', low), 1.0)
    const http = find(aggregates, scenario, 'http', high)
    if (scenario === 'hot' || http) {
      if (http && Number.isFinite(http.p99))
        out.push({ id: '2', scenario, what: `HTTP p99@${high} ≤ 250 ms${off}`, measured: `**${fmtMs(http.p99)} ms**`, met: http.p99 <= 250 })
      else out.push({ id: '2', scenario, what: `HTTP p99@${high} ≤ 250 ms${off}`, measured: 'not measured', met: null })
    }
    ratio('2', scenario, `HTTP@${high} ≥ 5 × baseline (c)@${high}${off}`, http, find(aggregates, scenario, 'baseline', high), 5)
    const flash = find(aggregates, scenario, 'http-flash', high)
    if (flash && Number.isFinite(flash.p99))
      out.push({ id: '2', scenario, what: `HTTP flash-sale p99@${high} ≤ 250 ms${off}`, measured: `**${fmtMs(flash.p99)} ms**`, met: flash.p99 <= 250 })
    ratio(
      '3',
      scenario,
      `HTTP flash-sale@${high} ≥ 1.0 × bare UPDATE (d)@${low}${off}`,
      find(aggregates, scenario, 'http-flash', high),
      find(aggregates, scenario, 'bare', low),
      1.0,
      flashSale ? undefined : 'set_flash_sale(bigint, boolean) is not in this database yet: the flash-sale cells were skipped',
    )
  }
  return out
}

// ---------------------------------------------------------------- formatting

export function fmtRate(value: number): string {
  return Number.isFinite(value) ? Math.round(value).toLocaleString('en-US') : '—'
}

export function fmtMs(value: number): string {
  if (!Number.isFinite(value)) return '—'
  return value >= 100 ? Math.round(value).toLocaleString('en-US') : value >= 10 ? value.toFixed(1) : value.toFixed(2)
}

const fmtUs = (value: number | null) => (value === null || !Number.isFinite(value) ? '—' : Math.round(value).toLocaleString('en-US'))

function fmtErrors(errors: Record<string, number>, attempts: number): string {
  const entries = Object.entries(errors).sort((a, b) => b[1] - a[1])
  if (entries.length === 0) return '0'
  const total = entries.reduce((sum, [, n]) => sum + n, 0)
  const share = attempts ? ` (${((100 * total) / attempts).toFixed(total * 1000 < attempts ? 2 : 1)}%)` : ''
  return `${total}${share}: ${entries.map(([kind, n]) => `${n}× ${kind}`).join(', ')}`
}

const verdict = (met: boolean | null) => (met === null ? 'not measured' : met ? '**met**' : '**not met**')

export function renderMarkdown(input: {
  machine: Machine
  options: Options
  aggregates: Aggregate[]
  targets: Target[]
  skipped: string[]
  chartFile: string
  jsonFile: string
}): string {
  const { machine, options, aggregates } = input
  const lines: string[] = []
  const push = (...more: string[]) => lines.push(...more)
  const modes = options.modes.filter((mode) => aggregates.some((a) => a.mode === mode))

  push(
    '# Benchmarks',
    '',
    `Generated by \`npm run bench${options.quick ? ' -- --quick' : ''}\` on ${machine.date} in ${Math.round(machine.durationSeconds)} s ` +
      `(${options.repeats} repeat${options.repeats > 1 ? 's' : ''} of ${options.seconds} s cells after ${options.warmup} s of warm-up, ` +
      `at ${options.concurrency.join(' / ')} concurrent buyers; every number is the median over the repeats). ` +
      `Raw cells: [${input.jsonFile}](${input.jsonFile}). Compare ratios within one run: ` +
      'the machine is shared and its absolute numbers move from run to run.',
    '',
  )
  if (options.quick)
    push('> **A `--quick` smoke run**: cells of a second or less at small concurrency. It checks that the harness works; its numbers mean little.', '')

  push('## Machine', '', '| | |', '| --- | --- |')
  push(
    `| CPUs (nproc) | ${machine.nproc} × ${machine.cpuModel} |`,
    `| memory | ${machine.memory} |`,
    `| kernel | ${machine.kernel} |`,
    `| load average (1/5/15 min) at start → end | ${machine.loadAverage.start.map((l) => l.toFixed(2)).join(' / ')} → ${machine.loadAverage.end.map((l) => l.toFixed(2)).join(' / ')} |`,
    `| PostgreSQL | ${machine.postgres} |`,
    `| database | ${machine.database} |`,
    `| synchronous_commit | **${machine.synchronousCommit}** (every acknowledged order is flushed to the WAL) |`,
    `| max_connections / shared_buffers | ${machine.maxConnections} / ${machine.sharedBuffers} |`,
    `| Bun | ${machine.bun} |`,
    `| service | one \`bun src/server.ts\` process, ${machine.serviceEnv} |`,
    `| flash-sale mode | ${machine.flashSale} |`,
    '',
  )

  push('## Modes', '')
  for (const mode of options.modes) push(`- **${MODE_INFO[mode].label}**: ${MODE_INFO[mode].what}.`)
  push('')
  for (const scenario of options.scenarios) push(`- **${SCENARIO_INFO[scenario].title}**: ${SCENARIO_INFO[scenario].what}.`)
  push('')
  if (input.skipped.length) push(...input.skipped.map((s) => `- Skipped: ${s}`), '')

  for (const scenario of options.scenarios) {
    push(`## Results: ${SCENARIO_INFO[scenario].title.toLowerCase()}`, '')
    push(
      '| mode | buyers | orders/s | orders/s of each repeat | p50 ms | p95 ms | p99 ms | errors | CPU µs/order (service + db) | service | db | load generator (not counted) | other load, cores | invariants |',
      '| --- | ---: | ---: | --- | ---: | ---: | ---: | --- | ---: | ---: | ---: | ---: | ---: | --- |',
    )
    for (const mode of modes)
      for (const concurrency of options.concurrency) {
        const a = find(aggregates, scenario, mode, concurrency)
        if (!a) continue
        push(
          `| ${MODE_INFO[mode].label} | ${concurrency} | **${fmtRate(a.rate)}** | ${a.rates.map(fmtRate).join(', ')} | ${fmtMs(a.p50)} | ${fmtMs(a.p95)} | ${fmtMs(a.p99)} | ` +
            `${fmtErrors(a.errors, a.attempts)} | **${fmtUs(a.cpuUs.total)}** | ${fmtUs(a.cpuUs.service)} | ${fmtUs(a.cpuUs.db)} | ${fmtUs(a.cpuUs.client)} | ` +
            `${Number.isFinite(a.otherCores) ? a.otherCores.toFixed(2) : '—'} | ` +
            `${a.problems.length ? `**FAILED** (${a.problems.length})` : 'held'} |`,
        )
      }
    push('')
    const problems = aggregates.filter((a) => a.scenario === scenario).flatMap((a) => a.problems.map((p) => `${MODE_INFO[a.mode].label} @${a.concurrency}, ${p}`))
    if (problems.length) push('Invariant failures:', '', ...problems.map((p) => `- ${p}`), '')
  }

  push(`![orders/s against concurrent buyers, one line per mode](${input.chartFile})`, '')

  push('## Targets', '', '| # | scenario | target | measured | verdict |', '| --- | --- | --- | --- | --- |')
  for (const t of input.targets)
    push(`| ${t.id} | ${SCENARIO_INFO[t.scenario].title.toLowerCase()} | ${t.what} | ${t.measured}${t.note ? ` (${t.note})` : ''} | ${verdict(t.met)} |`)
  push('')

  push('### 4. CPU time per order (service + database), µs', '')
  for (const scenario of options.scenarios) {
    push(`${SCENARIO_INFO[scenario].title}:`, '', `| mode | ${options.concurrency.map((c) => `${c} buyers`).join(' | ')} |`, `| --- | ${options.concurrency.map(() => '---:').join(' | ')} |`)
    for (const mode of modes)
      push(`| ${MODE_INFO[mode].label} | ${options.concurrency.map((c) => fmtUs(find(aggregates, scenario, mode, c)?.cpuUs.total ?? null)).join(' | ')} |`)
    push('')
  }

  push(
    '## How it measures',
    '',
    '- One throwaway PostgreSQL (the embedded server in a temp directory, `max_connections` raised for 256 direct connections; ' +
      'or `DATABASE_URL` when set), migrated once. The service runs as its own process (`bun src/server.ts`, ' +
      '`MIGRATE_ON_START=false`, `EXPIRE_ORDERS_EVERY=0`, other settings from the environment, e.g. `DB_POOL_MAX`). ' +
      'Each cell starts a load-generator process (`bench/load-http.ts` or `bench/load-sql.ts`) with `N` workers; ' +
      'each worker is one buyer at a time in a closed loop (it sends the next checkout when the previous one is answered).',
    '- A cell: warm-up, wait until nothing is in flight, read the CPU counters, run for the cell\'s seconds, wait for the ' +
      'requests still running, read the counters again while every connection is still open. orders/s = successful orders / ' +
      '(start → last answer). Latency is per request, failures included (nearest-rank percentiles). ' +
      'Before each cell: `vacuum products` and `checkpoint`, so no cell inherits another\'s checkpoint.',
    '- Cells alternate: for each repeat, for each concurrency, for each scenario, every mode in turn (the order of the modes ' +
      'rotates with the repeat), so slow drifts of the machine spread over all modes.',
    '- CPU from `/proc/<pid>/stat` (utime + stime, all threads): the service process; and the database = the postmaster, ' +
      'every live child (backends, WAL writer, checkpointer, autovacuum) and the children that exited (the postmaster\'s ' +
      'cutime + cstime). Per order = CPU of the cell / successful orders. The load generator\'s CPU is shown but not counted; ' +
      `on ${machine.nproc} cores it competes with the service and the database, as the service's clients would. ` +
      '"Other load" is the machine\'s busy time (/proc/stat, all cores, steal included) less the service, the database and ' +
      'the load generator, in cores: what else ran during the cell. Where it is high, the cell had less of the machine, ' +
      'and CPU per order rises too (lock holders preempted, spinning waiters, fewer commits per WAL flush).',
    '- Buyers are created before the cells in bulk (a cart each with open lines), enough that a cell never runs out; ' +
      'a buyer is used once. The products have stock 1,000,000,000 and are created with `create_product`, so the ledger ' +
      'holds their initial stock; modes (a)–(c) of a scenario sell the same products; (d) decrements products of its own.',
    '- Invariants read back after every cell: no stock below zero; the stock taken in the cell equals the units the ' +
      'clients were told were sold; the orders created in the cell equal the successes; for every product, initial stock = ' +
      'stock + units in its orders; `inventory_audit()` returns nothing for the bench products. The bare UPDATE (d) writes ' +
      'no ledger row by design: after each (d) cell the bench books its units as one `correction` movement, so the audit ' +
      'stays empty for those products too.',
    '- No timing is a pass/fail check anywhere; the targets above are reported, not asserted.',
    '',
  )
  return lines.join('\n')
}
