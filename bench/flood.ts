/**
 * `npm run bench:flood`: one client flooding as fast as it can while honest
 * clients order: a client over its limit must cost the others nothing.
 *
 * Starts a throwaway PostgreSQL (or uses DATABASE_URL), the service as its own
 * process with authentication and RATE_LIMIT on, and `--honest` buyers, each
 * a user of their own who, every `--interval-ms`, adds a product to their cart
 * (POST /carts/items) and orders that line (POST /orders): a paced load,
 * within the rate limit. Then phases of `--seconds`, alternating: quiet (the
 * honest buyers alone) and flood (the same, while one more user, in a process
 * of its own, sends POST /orders on `--flood-concurrency` connections as fast
 * as the service answers). It prints, for the honest requests of each phase,
 * p50, p99, max and the 503s, the flood's rate and statuses, the calls of
 * api.rate_limit_hit, then the ratios of the flood phases to the quiet ones.
 * No timing is asserted: the numbers are for reading.
 *
 *   npm run bench:flood
 *   npm run bench:flood -- --seconds 20 --repeats 2 --flood-concurrency 64
 *   npm run bench:flood -- --service-root ../other-checkout   # the same bench against another version
 */
import { mkdtempSync, readFileSync, rmSync } from 'node:fs'
import { availableParallelism, loadavg, tmpdir } from 'node:os'
import { join, resolve } from 'node:path'
import { parseArgs } from 'node:util'
import { randomBytes } from 'node:crypto'
import { jwt } from '@elysiajs/jwt'
import { createSql } from '../src/db/client'
import { freePort, startEmbeddedPostgres } from '../src/db/embedded'
import { migrate } from '../src/db/migrate'
import { BENCH_STOCK } from './fixtures'
import { localService } from './npm-start'
import { median, quantile } from './stats'

const REPO = resolve(import.meta.dir, '..')
const HELP = `npm run bench:flood -- [flags]

  --seconds N            measured seconds per phase (default 10)
  --warmup N             seconds of honest load before the first phase, not measured (default 3)
  --repeats N            quiet/flood pairs, then one more quiet phase (default 1)
  --honest N             honest buyers, each a user of their own (default 50)
  --interval-ms N        each honest buyer orders once per N ms: 2 requests (default 500)
  --flood-concurrency N  the flooding client's connections (default 32)
  --rate-limit N         RATE_LIMIT of the service, per RATE_LIMIT_WINDOW=60 s (default 1200)
  --rate-limit-delay D   RATE_LIMIT_DELAY of the service, e.g. 0 or 1s (default: the service's, 1s)
  --service-root DIR     run src/server.ts of another checkout (default this one)

DATABASE_URL: use that server instead of a throwaway embedded one (bench data is written to it).`

const FLOOD_WORKER = '--flood-worker'

interface FloodConfig {
  url: string
  token: string
  concurrency: number
}

interface FloodResult {
  requests: number
  seconds: number
  statuses: Record<string, number>
}

interface PhaseResult {
  name: string
  flood: boolean
  requests: number
  p50: number
  p99: number
  max: number
  statuses: Record<string, number>
  floodResult?: FloodResult
  rateLimitCalls: number | undefined
}

const log = (line: string) => console.error(line)
const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms))


// ------------------------------------------------------------ the flooder

/**
 * The flooding client, in a process of its own: `concurrency` connections,
 * each sending its next POST /orders as soon as the last is answered. Floods
 * from the start; prints {"event":"ready"} after a second, and on "stop"
 * (stdin) prints what it got from then on, and exits.
 */
async function floodWorker(config: FloodConfig) {
  const statuses: Record<string, number> = {}
  let requests = 0
  let counting = false
  let running = true
  let countedFrom = 0
  const body = JSON.stringify({ cart_item_ids: [1] })
  const headers = { authorization: `Bearer ${config.token}`, 'content-type': 'application/json' }
  const worker = async () => {
    while (running) {
      let status: string
      try {
        const response = await fetch(`${config.url}/orders`, { method: 'POST', headers, body })
        await response.arrayBuffer()
        status = String(response.status)
      } catch (error) {
        status = `fetch ${(error as { code?: string }).code ?? 'error'}`
      }
      if (counting) {
        requests++
        statuses[status] = (statuses[status] ?? 0) + 1
      }
    }
  }
  const workers = Array.from({ length: config.concurrency }, worker)
  await sleep(1_000)
  counting = true
  countedFrom = performance.now()
  console.log(JSON.stringify({ event: 'ready' }))
  for await (const line of console) if (String(line).trim() === 'stop') break
  counting = false
  const seconds = (performance.now() - countedFrom) / 1000
  running = false
  console.log(JSON.stringify({ event: 'done', requests, seconds, statuses } satisfies FloodResult & { event: string }))
  await Promise.race([Promise.all(workers), sleep(2_000)])
}

// ------------------------------------------------------------ the orchestrator

export async function main(args: string[]) {
  const { values } = parseArgs({
    args,
    strict: true,
    options: {
      seconds: { type: 'string', default: '10' },
      warmup: { type: 'string', default: '3' },
      repeats: { type: 'string', default: '1' },
      honest: { type: 'string', default: '50' },
      'interval-ms': { type: 'string', default: '500' },
      'flood-concurrency': { type: 'string', default: '32' },
      'rate-limit': { type: 'string', default: '1200' },
      'rate-limit-delay': { type: 'string' },
      'service-root': { type: 'string' },
      help: { type: 'boolean', short: 'h', default: false },
    },
  })
  if (values.help) {
    console.log(HELP)
    return
  }
  const number = (name: keyof typeof values, min: number) => {
    const value = Number(values[name])
    if (!Number.isFinite(value) || value < min) throw new Error(`--${name} must be a number of at least ${min}, got "${values[name]}"`)
    return value
  }
  const options = {
    seconds: number('seconds', 1),
    warmup: number('warmup', 0),
    repeats: Math.floor(number('repeats', 1)),
    honest: Math.floor(number('honest', 1)),
    intervalMs: number('interval-ms', 10),
    floodConcurrency: Math.floor(number('flood-concurrency', 1)),
    rateLimit: Math.floor(number('rate-limit', 1)),
    serviceRoot: resolve(values['service-root'] ?? REPO),
    rateLimitDelay: values['rate-limit-delay'] ?? process.env.RATE_LIMIT_DELAY,
  }
  const honestRate = (2 * 1000) / options.intervalMs
  if (honestRate * 60 > options.rateLimit)
    log(`warning: an honest buyer sends ${honestRate.toFixed(1)} requests/s, above --rate-limit ${options.rateLimit} per 60 s`)

  const runDir = mkdtempSync(join(tmpdir(), 'waitress-flood-'))
  const cleanups: (() => Promise<unknown> | unknown)[] = [() => rmSync(runDir, { recursive: true, force: true })]
  const children = new Set<{ kill(signal?: number | NodeJS.Signals): void }>()
  const cleanup = async () => {
    for (const child of children) child.kill()
    for (const step of cleanups.reverse()) await Promise.resolve(step()).catch((error) => log(`cleanup: ${error}`))
  }
  const onSignal = () => void cleanup().then(() => process.exit(130))
  process.on('SIGINT', onSignal)
  process.on('SIGTERM', onSignal)
  try {
    let databaseUrl = process.env.DATABASE_URL
    if (!databaseUrl) {
      log(`starting a throwaway PostgreSQL in ${runDir}`)
      const server = await startEmbeddedPostgres({ dataDir: join(runDir, 'pg'), persistent: false })
      cleanups.push(() => server.stop())
      databaseUrl = server.url('waitress_flood')
    }
    await migrate(databaseUrl)
    const sql = createSql(databaseUrl, { max: 4 })
    cleanups.push(() => sql.end({ timeout: 5 }))

    const secret = randomBytes(32).toString('hex')
    const service = await startService(options.serviceRoot, databaseUrl, runDir, secret, options.rateLimit, options.rateLimitDelay, children)
    cleanups.push(() => service.stop())

    log(`creating a product and ${options.honest} honest buyers`)
    const signer = jwt({ name: 'jwt', secret, alg: 'HS256' }).decorator.jwt
    const sign = (claims: { sub: string; exp: string }) => signer.sign(claims)
    const base = 9_000_000_000_000 + Math.floor(Math.random() * 1_000_000) * 1000
    const [product] = await sql<{ id: number }[]>`
      select (api.create_product('flood bench', ${base}, 1000, ${BENCH_STOCK}, 100)->>'id')::bigint as id`
    const buyers = await Promise.all(
      Array.from({ length: options.honest }, async (_, i) => {
        const userId = base + 1 + i
        const [cart] = await sql<{ id: number }[]>`select (api.cart_for_user(${userId})->>'id')::bigint as id`
        return { userId, cartId: cart.id, token: await sign({ sub: String(userId), exp: '2h' }) }
      }),
    )
    const flooderToken = await sign({ sub: String(base + options.honest + 1), exp: '2h' })

    const honest = new HonestLoad(service.url, product.id, buyers, options.intervalMs)
    honest.start()
    log(`warming up for ${options.warmup} s`)
    await sleep(options.warmup * 1000)

    const phases: PhaseResult[] = []
    const plan: boolean[] = []
    for (let i = 0; i < options.repeats; i++) plan.push(false, true)
    plan.push(false)
    for (const [index, flood] of plan.entries()) {
      const name = `${flood ? 'flood' : 'quiet'} ${Math.floor(index / 2) + 1}`
      let flooder: Flooder | undefined
      if (flood) flooder = await Flooder.start({ url: service.url, token: flooderToken, concurrency: options.floodConcurrency }, children)
      const callsBefore = await rateLimitReports(service.url)
      honest.record()
      await sleep(options.seconds * 1000)
      const measured = honest.take()
      const callsAfter = await rateLimitReports(service.url)
      const floodResult = flooder ? await flooder.stop() : undefined
      const phase: PhaseResult = {
        name,
        flood,
        ...measured,
        floodResult,
        rateLimitCalls: callsBefore === undefined || callsAfter === undefined ? undefined : callsAfter - callsBefore,
      }
      phases.push(phase)
      log(describePhase(phase))
      // Let the service drain what the flood left before the next phase.
      if (flood) await sleep(1_000)
    }
    await honest.stop()

    const [orders] = await sql<{ n: number }[]>`select count(*)::int as n from waitress.orders where seller_id = ${base}`
    const [audit] = await sql<{ n: number }[]>`select count(*)::int as n from api.inventory_audit() where product_id = ${product.id}`
    report(phases, options, { orders: orders.n, auditProblems: audit.n, serviceRoot: options.serviceRoot })
    if (audit.n > 0) process.exitCode = 1
  } finally {
    process.off('SIGINT', onSignal)
    process.off('SIGTERM', onSignal)
    await cleanup()
  }
}

/** The service's count of reports to the shared window (calls of api.rate_limit_hit), from its /metrics. */
async function rateLimitReports(serviceUrl: string): Promise<number | undefined> {
  const text = await fetch(`${serviceUrl}/metrics`).then((r) => (r.ok ? r.text() : ''), () => '')
  const match = /^waitress_rate_limit_reports_total (\d+(?:\.\d+)?)$/m.exec(text)
  return match ? Number(match[1]) : undefined
}

// ------------------------------------------------------------ honest buyers

interface Buyer {
  userId: number
  cartId: number
  token: string
}

/** The honest buyers: each adds the product to their cart and orders that line, once per interval, paced (an open loop). */
class HonestLoad {
  #running = false
  #recording = false
  #latencies: number[] = []
  #statuses: Record<string, number> = {}
  #loops: Promise<void>[] = []

  constructor(
    private readonly url: string,
    private readonly productId: number,
    private readonly buyers: Buyer[],
    private readonly intervalMs: number,
  ) {}

  start() {
    this.#running = true
    this.#loops = this.buyers.map((buyer, i) => this.#loop(buyer, (i * this.intervalMs) / this.buyers.length))
  }

  record() {
    this.#latencies = []
    this.#statuses = {}
    this.#recording = true
  }

  take() {
    this.#recording = false
    const latencies = this.#latencies.sort((a, b) => a - b)
    return {
      requests: latencies.length,
      p50: quantile(latencies, 0.5),
      p99: quantile(latencies, 0.99),
      max: latencies.at(-1) ?? Number.NaN,
      statuses: this.#statuses,
    }
  }

  async stop() {
    this.#running = false
    await Promise.all(this.#loops)
  }

  async #loop(buyer: Buyer, offsetMs: number) {
    const headers = { authorization: `Bearer ${buyer.token}`, 'content-type': 'application/json' }
    let next = performance.now() + offsetMs
    while (this.#running) {
      const wait = next - performance.now()
      if (wait > 0) await sleep(wait)
      // Behind schedule (a slow answer): start again from now rather than burst to catch up.
      next = Math.max(next + this.intervalMs, performance.now())
      const added = await this.#send(`/carts/items`, headers, { cart_id: buyer.cartId, product_id: this.productId, quantity: 1 })
      if (added.status === 201) await this.#send('/orders', headers, { cart_item_ids: [added.body.data.id] })
    }
  }

  async #send(path: string, headers: Record<string, string>, body: unknown): Promise<{ status: number; body: any }> {
    const sent = performance.now()
    let status: string
    let parsed: any
    try {
      const response = await fetch(`${this.url}${path}`, { method: 'POST', headers, body: JSON.stringify(body) })
      parsed = await response.json().catch(() => undefined)
      status = String(response.status)
    } catch (error) {
      status = `fetch ${(error as { code?: string }).code ?? 'error'}`
    }
    if (this.#recording) {
      this.#latencies.push(performance.now() - sent)
      this.#statuses[status] = (this.#statuses[status] ?? 0) + 1
    }
    return { status: Number(status) || 0, body: parsed }
  }
}

// ------------------------------------------------------------ processes

class Flooder {
  private constructor(
    private readonly child: ReturnType<typeof Bun.spawn>,
    private readonly lines: AsyncIterator<string>,
  ) {}

  static async start(config: FloodConfig, children: Set<{ kill(signal?: number | NodeJS.Signals): void }>): Promise<Flooder> {
    const child = Bun.spawn([process.execPath, import.meta.path, FLOOD_WORKER, JSON.stringify(config)], {
      stdin: 'pipe',
      stdout: 'pipe',
      stderr: 'inherit',
    })
    children.add(child)
    const flooder = new Flooder(child, lines(child.stdout as ReadableStream<Uint8Array>))
    await flooder.expect('ready')
    return flooder
  }

  async stop(): Promise<FloodResult> {
    const stdin = this.child.stdin as import('bun').FileSink
    stdin.write('stop\n')
    await stdin.flush()
    const done = (await this.expect('done')) as unknown as FloodResult
    await stdin.end()
    await Promise.race([this.child.exited, sleep(5_000)])
    this.child.kill()
    return done
  }

  private async expect(event: string): Promise<Record<string, unknown>> {
    for (;;) {
      const { value, done } = await this.lines.next()
      if (done) throw new Error(`the flooding process ended before "${event}"`)
      try {
        const message = JSON.parse(value)
        if (message.event === event) return message
      } catch {}
    }
  }
}

async function* lines(stream: ReadableStream<Uint8Array>): AsyncGenerator<string> {
  const decoder = new TextDecoder()
  let buffered = ''
  for await (const chunk of stream) {
    buffered += decoder.decode(chunk, { stream: true })
    let newline: number
    while ((newline = buffered.indexOf('\n')) >= 0) {
      yield buffered.slice(0, newline)
      buffered = buffered.slice(newline + 1)
    }
  }
}

async function startService(
  root: string,
  databaseUrl: string,
  runDir: string,
  secret: string,
  rateLimit: number,
  rateLimitDelay: string | undefined,
  children: Set<{ kill(signal?: number | NodeJS.Signals): void }>,
) {
  const port = await freePort()
  const service = localService(root, databaseUrl, port, {
    AUTH_JWT_SECRET: secret,
    RATE_LIMIT: String(rateLimit),
    RATE_LIMIT_WINDOW: '60',
    ...(rateLimitDelay === undefined ? {} : { RATE_LIMIT_DELAY: rateLimitDelay }),
    LOG_LEVEL: process.env.LOG_LEVEL ?? 'warn',
  })
  const child = Bun.spawn(service.cmd, {
    cwd: root,
    stdout: Bun.file(join(runDir, 'service.log')),
    stderr: Bun.file(join(runDir, 'service.err')),
    env: service.env,
  })
  children.add(child)
  const url = `http://127.0.0.1:${port}`
  const deadline = Date.now() + 30_000
  for (;;) {
    if (child.exitCode !== null) throw new Error(`the service exited with ${child.exitCode}: ${tail(join(runDir, 'service.err'))}`)
    if (await fetch(`${url}/healthz`).then((r) => r.ok, () => false)) break
    if (Date.now() > deadline) throw new Error(`the service did not answer /healthz in 30 s: ${tail(join(runDir, 'service.err'))}`)
    await sleep(100)
  }
  return {
    url,
    stop: async () => {
      child.kill('SIGTERM')
      await Promise.race([child.exited, sleep(10_000)])
      child.kill('SIGKILL')
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

// ------------------------------------------------------------ the report

const ms = (value: number) => (Number.isFinite(value) ? (value >= 100 ? value.toFixed(0) : value.toFixed(1)) : '—')
const count503 = (statuses: Record<string, number>) => statuses['503'] ?? 0
const errorsOf = (statuses: Record<string, number>) =>
  Object.entries(statuses)
    .filter(([status]) => status !== '201')
    .map(([status, n]) => `${status}×${n}`)
    .join(' ') || 'none'

function describePhase(phase: PhaseResult): string {
  const flood = phase.floodResult
  return (
    `${phase.name}: honest ${phase.requests} requests, p50 ${ms(phase.p50)} ms, p99 ${ms(phase.p99)} ms, max ${ms(phase.max)} ms, ` +
    `503s ${count503(phase.statuses)}, other than 201: ${errorsOf(phase.statuses)}` +
    (flood ? `; flood ${Math.round(flood.requests / flood.seconds)}/s (${Object.entries(flood.statuses).map(([s, n]) => `${s}×${n}`).join(' ')})` : '') +
    (phase.rateLimitCalls === undefined ? '' : `; reports to PostgreSQL (api.rate_limit_hit) ${phase.rateLimitCalls}`)
  )
}

function report(phases: PhaseResult[], options: { seconds: number; honest: number; intervalMs: number; floodConcurrency: number; rateLimit: number; rateLimitDelay: string | undefined }, extra: { orders: number; auditProblems: number; serviceRoot: string }) {
  const quiet = phases.filter((p) => !p.flood)
  const flooded = phases.filter((p) => p.flood)
  // Medians over the phases: on a shared machine one phase can be slowed by someone else's work.
  const quietP50 = median(quiet.map((p) => p.p50))
  const quietP99 = median(quiet.map((p) => p.p99))
  const floodP50 = median(flooded.map((p) => p.p50))
  const floodP99 = median(flooded.map((p) => p.p99))
  const honest503 = phases.reduce((sum, p) => sum + count503(p.statuses), 0)
  const floodRequests = flooded.reduce((sum, p) => sum + (p.floodResult?.requests ?? 0), 0)
  const flood429 = flooded.reduce((sum, p) => sum + (p.floodResult?.statuses['429'] ?? 0), 0)
  const floodCalls = flooded.every((p) => p.rateLimitCalls !== undefined) ? flooded.reduce((sum, p) => sum + p.rateLimitCalls!, 0) : undefined
  const lines = [
    '',
    `# Flood benchmark (${new Date().toISOString().replace(/\.\d+Z$/, 'Z')})`,
    '',
    `service: ${extra.serviceRoot}; ${availableParallelism()} cores, load average ${loadavg().map((l) => l.toFixed(2)).join(' ')}; ` +
      `RATE_LIMIT=${options.rateLimit} per 60 s, RATE_LIMIT_DELAY=${options.rateLimitDelay ?? '(default)'}; ${options.honest} honest buyers, 2 requests per ${options.intervalMs} ms each ` +
      `(${Math.round((options.honest * 2000) / options.intervalMs)} requests/s in all); the flooder on ${options.floodConcurrency} connections; ${options.seconds} s per phase`,
    '',
    '| phase | honest requests | p50 ms | p99 ms | max ms | honest 503 | honest, other than 201 | flood requests/s | flood statuses | reports to PostgreSQL |',
    '| --- | ---: | ---: | ---: | ---: | ---: | --- | ---: | --- | ---: |',
    ...phases.map(
      (p) =>
        `| ${p.name} | ${p.requests} | ${ms(p.p50)} | ${ms(p.p99)} | ${ms(p.max)} | ${count503(p.statuses)} | ${errorsOf(p.statuses)} | ` +
        `${p.floodResult ? Math.round(p.floodResult.requests / p.floodResult.seconds) : '—'} | ` +
        `${p.floodResult ? Object.entries(p.floodResult.statuses).map(([s, n]) => `${s}×${n}`).join(' ') : '—'} | ${p.rateLimitCalls ?? '—'} |`,
    ),
    '',
    `honest p50 (median of the phases): ${ms(quietP50)} ms quiet, ${ms(floodP50)} ms under the flood: ×${(floodP50 / quietP50).toFixed(2)}`,
    `honest p99 (median of the phases): ${ms(quietP99)} ms quiet, ${ms(floodP99)} ms under the flood: ×${(floodP99 / quietP99).toFixed(2)} (target: at most ×2) → ${floodP99 / quietP99 <= 2 ? 'met' : 'NOT met'}`,
    `honest 503s: ${honest503} (target: none) → ${honest503 === 0 ? 'met' : 'NOT met'}`,
    `flood: ${floodRequests} requests, ${flood429} answered 429` +
      (floodCalls === undefined ? '' : `; api.rate_limit_hit ran ${floodCalls} times during the flood phases, for all clients together`),
    `orders placed by the honest buyers: ${extra.orders}; inventory_audit: ${extra.auditProblems === 0 ? 'empty' : `${extra.auditProblems} problems`}`,
    '',
  ]
  console.log(lines.join('\n'))
}

// ------------------------------------------------------------ entry point (last: everything above is defined by now)

if (process.argv[2] === FLOOD_WORKER) {
  await floodWorker(JSON.parse(process.argv[3]) as FloodConfig)
  process.exit(0)
} else if (import.meta.main) {
  await main(process.argv.slice(2)).catch((error) => {
    log(error instanceof Error ? (error.stack ?? error.message) : String(error))
    process.exit(1)
  })
  process.exit(process.exitCode ?? 0)
}
