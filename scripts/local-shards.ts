/**
 * Throwaway sharded Waitress clusters on this machine, for tests, the
 * benchmark and development: PostgreSQL 15 servers with PL/Proxy (Debian's
 * postgresql-15 and postgresql-15-plproxy; scripts/ci-sharding.sh installs
 * them), a router database and N shard databases, migrated and configured
 * exactly as `npm run db:migrate` does with SHARD_URLS.
 *
 *   bun scripts/local-shards.ts [--shards 2] [--separate 1]
 *     starts a cluster, prints DATABASE_URL, APP_DATABASE_URL and SHARD_URLS,
 *     and keeps it until Ctrl-C (then removes it)
 *
 * Servers run as the `postgres` system user when this runs as root. Each
 * shard listed in `separate` gets a server of its own (so that it can be
 * stopped or frozen alone); the router and the other shards share one.
 */
import { spawn, spawnSync } from 'node:child_process'
import { chmodSync, chownSync, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir, userInfo } from 'node:os'
import { join } from 'node:path'
import { parseArgs } from 'node:util'
import { ensureAppLogin, randomPassword } from '../src/db/app-login.ts'
import { freePort } from '../src/db/embedded.ts'
import { migrateSharded } from './shards.ts'

export const PG_BIN = process.env.PG15_BIN ?? '/usr/lib/postgresql/15/bin'
const PLPROXY_CONTROL = process.env.PLPROXY_CONTROL ?? '/usr/share/postgresql/15/extension/plproxy.control'
const SUPERUSER = 'postgres'
const SUPERUSER_PASSWORD = 'waitress-local'

/** Whether this machine can run local sharded clusters; why not otherwise. */
export function shardingAvailable(): { ok: true } | { ok: false; reason: string } {
  if (!existsSync(join(PG_BIN, 'postgres'))) return { ok: false, reason: `no PostgreSQL 15 server in ${PG_BIN} (apt-get install postgresql-15)` }
  if (!existsSync(PLPROXY_CONTROL)) return { ok: false, reason: `no PL/Proxy (${PLPROXY_CONTROL}; apt-get install postgresql-15-plproxy)` }
  if (userInfo().uid === 0 && spawnSync('id', ['postgres']).status !== 0) return { ok: false, reason: 'running as root, but there is no postgres user' }
  return { ok: true }
}

const asRoot = () => userInfo().uid === 0

/** Runs a command as the server's user (postgres when we are root). */
function runAsServerUser(command: string[]): { status: number | null; stdout: string; stderr: string } {
  const quoted = command.map((part) => `'${part.replaceAll("'", "'\\''")}'`).join(' ')
  const result = asRoot()
    ? spawnSync('su', [SUPERUSER, '-s', '/bin/sh', '-c', quoted], { encoding: 'utf8' })
    : spawnSync('/bin/sh', ['-c', quoted], { encoding: 'utf8' })
  return { status: result.status, stdout: result.stdout ?? '', stderr: result.stderr ?? '' }
}

function mustRun(command: string[], what: string) {
  const result = runAsServerUser(command)
  if (result.status !== 0) throw new Error(`${what} failed: ${(result.stderr || result.stdout).trim()}`)
}

export interface LocalServer {
  name: string
  port: number
  dataDir: string
  /** A connection URL as the superuser. */
  url(database: string): string
  /** The postmaster's pid (while it runs). */
  pid(): number | undefined
  start(): Promise<void>
  /** pg_ctl stop -m fast: sessions are ended, the server is gone until start(). */
  stop(): Promise<void>
  /** SIGSTOP / SIGCONT of the postmaster and its children: a server that accepts connections and never answers. */
  freeze(): void
  thaw(): void
  /** Stops it and deletes its data. */
  destroy(): void
}

const servers = new Set<LocalServer>()
let cleanupRegistered = false

function registerCleanup() {
  if (cleanupRegistered) return
  cleanupRegistered = true
  // Synchronous, so it also runs when the process exits without awaiting anything
  // (and the watchdog below catches the ways out that skip it).
  process.on('exit', () => {
    for (const server of servers) server.destroy()
  })
  for (const signal of ['SIGINT', 'SIGTERM'] as const)
    process.on(signal, () => {
      for (const server of servers) server.destroy()
      process.exit(130)
    })
}

export interface ServerOptions {
  name?: string
  /** More postgresql.conf lines. */
  settings?: Record<string, string | number>
}

/** initdb + start of a PostgreSQL 15 server on a free port, in a temp directory. */
export async function startLocalServer(options: ServerOptions = {}): Promise<LocalServer> {
  registerCleanup()
  const name = options.name ?? 'pg'
  const root = mkdtempSync(join(tmpdir(), `waitress-${name}-`))
  chmodSync(root, 0o755)
  const dataDir = join(root, 'data')
  const socketDir = join(root, 'sock')
  const pwfile = join(root, 'pw')
  mkdirSync(socketDir)
  writeFileSync(pwfile, SUPERUSER_PASSWORD)
  if (asRoot()) {
    const uid = Number(spawnSync('id', ['-u', SUPERUSER], { encoding: 'utf8' }).stdout.trim())
    const gid = Number(spawnSync('id', ['-g', SUPERUSER], { encoding: 'utf8' }).stdout.trim())
    for (const path of [root, socketDir, pwfile]) chownSync(path, uid, gid)
  }
  mustRun(
    [join(PG_BIN, 'initdb'), '-D', dataDir, '-U', SUPERUSER, `--pwfile=${pwfile}`, '--auth-local=trust', '--auth-host=scram-sha-256', '-E', 'UTF8', '--locale=C.UTF-8'],
    'initdb',
  )
  const port = await freePort()
  const settings: Record<string, string | number> = {
    listen_addresses: "'127.0.0.1'",
    port,
    unix_socket_directories: `'${socketDir}'`,
    max_connections: 300,
    shared_buffers: "'64MB'",
    logging_collector: 'off',
    log_min_messages: 'warning',
    ...options.settings,
  }
  const conf = Object.entries(settings).map(([key, value]) => `${key} = ${value}`).join('\n')
  writeFileSync(join(dataDir, 'postgresql.conf'), `${readFileSync(join(dataDir, 'postgresql.conf'), 'utf8')}\n${conf}\n`)
  const logFile = join(root, 'log')

  let destroyed = false
  const server: LocalServer = {
    name,
    port,
    dataDir,
    url: (database) => `postgres://${SUPERUSER}:${SUPERUSER_PASSWORD}@127.0.0.1:${port}/${database}?sslmode=disable`,
    pid() {
      try {
        return Number(readFileSync(join(dataDir, 'postmaster.pid'), 'utf8').split('\n')[0])
      } catch {
        return undefined
      }
    },
    async start() {
      mustRun([join(PG_BIN, 'pg_ctl'), '-D', dataDir, '-l', logFile, '-w', '-t', '60', 'start'], `starting ${name}`)
    },
    async stop() {
      mustRun([join(PG_BIN, 'pg_ctl'), '-D', dataDir, '-m', 'fast', '-w', '-t', '60', 'stop'], `stopping ${name}`)
    },
    freeze() {
      signalTree(server.pid(), 'SIGSTOP')
    },
    thaw() {
      signalTree(server.pid(), 'SIGCONT')
    },
    destroy() {
      if (destroyed) return
      destroyed = true
      servers.delete(server)
      server.thaw()
      if (existsSync(join(dataDir, 'postmaster.pid'))) runAsServerUser([join(PG_BIN, 'pg_ctl'), '-D', dataDir, '-m', 'immediate', '-w', 'stop'])
      rmSync(root, { recursive: true, force: true })
    },
  }
  servers.add(server)
  await server.start()
  watchdog(dataDir, root)
  return server
}

/**
 * Stops the server and deletes its directory once this process is gone,
 * however it ends (bun test exits without running 'exit' handlers; a
 * timeout may kill it): a detached shell polling for our pid.
 */
function watchdog(dataDir: string, root: string) {
  const stop = `${join(PG_BIN, 'pg_ctl')} -D '${dataDir}' -m immediate -w stop`
  const script =
    `while kill -0 ${process.pid} 2>/dev/null; do sleep 1; done; ` +
    `if [ -f '${dataDir}/postmaster.pid' ]; then ${asRoot() ? `su ${SUPERUSER} -s /bin/sh -c "${stop}"` : stop} >/dev/null 2>&1; fi; ` +
    `rm -rf '${root}'`
  spawn('/bin/sh', ['-c', script], { detached: true, stdio: 'ignore' }).unref()
}

/** A signal to a postmaster and every child it has (its backends). */
function signalTree(pid: number | undefined, signal: 'SIGSTOP' | 'SIGCONT') {
  if (!pid) return
  const children = spawnSync('pgrep', ['-P', String(pid)], { encoding: 'utf8' }).stdout.split('\n').filter(Boolean).map(Number)
  for (const target of [pid, ...children]) {
    try {
      process.kill(target, signal)
    } catch {}
  }
}

export interface LocalCluster {
  /** The router, as the superuser that migrated everything (DATABASE_URL of a deploy). */
  routerUrl: string
  /** The shards, as the superuser (SHARD_URLS of a deploy). */
  shardUrls: string[]
  /** The service's own login on the router (APP_DATABASE_URL): it may only act as waitress_api. */
  appUrl: string
  servers: LocalServer[]
  /** The server of each shard. */
  shardServer: LocalServer[]
  routerServer: LocalServer
  /** Stops every server and deletes its data. */
  destroy(): void
}

export interface ClusterOptions {
  shards?: number
  /** Shards that get a server of their own. */
  separate?: number[]
  /** Database name prefix. */
  prefix?: string
  settings?: Record<string, string | number>
  log?: (line: string) => void
}

/** Servers, databases, migrations and the cluster configuration: a router and N shards, ready to serve. */
export async function startLocalCluster(options: ClusterOptions = {}): Promise<LocalCluster> {
  const shards = options.shards ?? 2
  const separate = new Set(options.separate ?? [])
  const prefix = options.prefix ?? 'waitress_'
  const main = await startLocalServer({ name: 'router', settings: options.settings })
  const shardServer: LocalServer[] = []
  for (let k = 0; k < shards; k++)
    shardServer.push(separate.has(k) ? await startLocalServer({ name: `shard${k}`, settings: options.settings }) : main)
  const routerUrl = main.url(`${prefix}router`)
  const shardUrls = shardServer.map((server, k) => server.url(`${prefix}shard_${k}`))
  await migrateSharded({ routerUrl, shardUrls }, options.log)
  const appUrl = await ensureAppLogin(routerUrl, randomPassword())
  const all = [main, ...shardServer.filter((server) => server !== main)]
  return {
    routerUrl,
    shardUrls,
    appUrl,
    servers: all,
    shardServer,
    routerServer: main,
    destroy: () => {
      for (const server of all) server.destroy()
    },
  }
}

if (import.meta.main) {
  const { values } = parseArgs({
    args: process.argv.slice(2),
    options: { shards: { type: 'string', default: '2' }, separate: { type: 'string', default: '' } },
  })
  const available = shardingAvailable()
  if (!available.ok) {
    console.error(available.reason)
    process.exit(1)
  }
  const cluster = await startLocalCluster({
    shards: Number(values.shards),
    separate: values.separate ? values.separate.split(',').map(Number) : [],
    log: (line) => console.error(line),
  })
  console.log(`DATABASE_URL=${cluster.routerUrl}`)
  console.log(`APP_DATABASE_URL=${cluster.appUrl}`)
  console.log(`SHARD_URLS=${cluster.shardUrls.join(',')}`)
  console.error('ready; Ctrl-C stops the servers and deletes their data')
  await new Promise(() => {})
}
