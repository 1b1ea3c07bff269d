/**
 * Starts a PgBouncer (transaction mode) in front of a PostgreSQL server, for
 * the tests and the bench. Debian's pgbouncer 1.18 binary; PgBouncer refuses
 * to run as root, so when this process is root the bouncer is told
 * `user = nobody` (it reads its config as root, then drops to nobody; its
 * directory belongs to nobody so it can write the pid file and re-read the
 * auth file on RELOAD).
 *
 *   const bouncer = await startPgbouncer({ server: { host: '127.0.0.1', port: 5432 },
 *     users: { waitress_admin: 'pw', waitress_app: 'pw2' }, admin: 'waitress_admin', poolSize: 4 })
 *   const url = bouncer.url('waitress_app', 'pw2', 'waitress')
 *   ...
 *   const pools = await bouncer.show('pools')   // rows of SHOW POOLS
 *   await bouncer.stop()
 *
 * Client authentication is SCRAM-SHA-256 against an auth_file holding
 * plain-text passwords (a test's own throwaway passwords): postgres.js does
 * SCRAM, and PgBouncer logs into a PostgreSQL whose password_encryption is
 * scram-sha-256 with the same plain-text password. Logins created at run time
 * (a random password) are found with `authUser` (auth_query through that
 * login) instead: no file to rewrite.
 */
import { mkdtempSync, writeFileSync, chownSync, rmSync, readFileSync, existsSync } from 'node:fs'
import { tmpdir, userInfo } from 'node:os'
import { spawnSync } from 'bun'
import { join } from 'node:path'
import { createServer } from 'node:net'
import postgres from 'postgres'

export interface PgbouncerOptions {
  /** The PostgreSQL server behind it. */
  server: { host: string; port: number }
  /** Logins PgBouncer knows (name -> plain-text password): clients authenticate against these, and PgBouncer logs into PostgreSQL with them. */
  users: Record<string, string>
  /** A login of `users` allowed on the admin console (database `pgbouncer`). */
  admin: string
  /** Optional: a login of `users` that looks up any other login's password (auth_query) in the target database. */
  authUser?: string
  /** Default: PgBouncer's own query on pg_authid (authUser must then be a superuser), or a SECURITY DEFINER lookup function. */
  authQuery?: string
  /** Server connections per (database, user) pair (default_pool_size). */
  poolSize?: number
  /** Server connections per database whatever the user (max_db_connections); 0: no cap. */
  maxDbConnections?: number
  maxClientConn?: number
  /** Listen port; 0 (default) picks a free one. */
  port?: number
  /** Any other [pgbouncer] settings, e.g. { query_timeout: '6' }. */
  settings?: Record<string, string | number>
  /** Unix user to drop to when run as root (default nobody). */
  runAs?: string
  /** Milliseconds to wait for the console to answer after start (default 10 s). */
  startTimeoutMs?: number
}

export interface Pgbouncer {
  host: string
  port: number
  dir: string
  pid: number
  url(user: string, password: string, database: string): string
  /** SHOW <what> on the admin console: 'pools', 'servers', 'clients', 'stats', 'config', … */
  show<T = Record<string, unknown>>(what: string): Promise<T[]>
  /** Any console command: RELOAD, RECONNECT [db], PAUSE, RESUME, … */
  command(text: string): Promise<void>
  /** Server connections to PostgreSQL right now (all pools), as SHOW SERVERS lists them. */
  serverCount(database?: string): Promise<number>
  log(): string
  stop(): Promise<void>
}

/** Where Debian's pgbouncer is, if this machine has it (.ci/run installs it). */
export function pgbouncerBinary(): string | undefined {
  for (const path of ['/usr/sbin/pgbouncer', '/usr/bin/pgbouncer']) if (existsSync(path)) return path
  const found = spawnSync(['sh', '-c', 'command -v pgbouncer']).stdout.toString().trim()
  return found || undefined
}

export async function freePort(host = '127.0.0.1'): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = createServer()
    srv.once('error', reject)
    srv.listen(0, host, () => {
      const { port } = srv.address() as { port: number }
      srv.close(() => resolve(port))
    })
  })
}

const quote = (s: string) => '"' + s.replaceAll('"', '""') + '"'

export async function startPgbouncer(options: PgbouncerOptions): Promise<Pgbouncer> {
  const host = '127.0.0.1'
  const port = options.port || (await freePort(host))
  const dir = mkdtempSync(join(tmpdir(), 'pgbouncer-'))
  const asRoot = userInfo().uid === 0
  const runAs = options.runAs ?? 'nobody'
  const settings: Record<string, string | number> = {
    listen_addr: host,
    listen_port: port,
    unix_socket_dir: '', // TCP only: no socket file to clash with another instance
    pidfile: join(dir, 'pgbouncer.pid'),
    logfile: join(dir, 'pgbouncer.log'),
    auth_type: 'scram-sha-256',
    auth_file: join(dir, 'userlist.txt'),
    admin_users: options.admin,
    stats_users: options.admin,
    pool_mode: 'transaction',
    default_pool_size: options.poolSize ?? 4,
    max_db_connections: options.maxDbConnections ?? 0,
    max_client_conn: options.maxClientConn ?? 1000,
    // postgres.js sends only user, database, client_encoding,
    // application_name and whatever `connection` holds. PgBouncer keeps
    // client_encoding, DateStyle, TimeZone, standard_conforming_strings and
    // application_name per client; anything else (role, statement_timeout,
    // options, …) is refused, which is what we want: ignoring a parameter
    // here drops it silently.
    ignore_startup_parameters: '',
    // Transaction mode never runs server_reset_query; stated for the reader.
    server_reset_query: 'DISCARD ALL',
    server_reset_query_always: 0,
    // Wait at most this long for a server connection, then the client gets an error instead of hanging.
    query_wait_timeout: 30,
    log_connections: 0,
    log_disconnections: 0,
    ...(options.authUser ? { auth_user: options.authUser } : {}),
    ...(options.authQuery ? { auth_query: options.authQuery } : {}),
    ...(asRoot ? { user: runAs } : {}),
    ...options.settings,
  }
  const ini =
    `[databases]\n* = host=${options.server.host} port=${options.server.port}\n\n[pgbouncer]\n` +
    Object.entries(settings)
      .map(([k, v]) => `${k} = ${v}`)
      .join('\n') +
    '\n'
  writeFileSync(join(dir, 'pgbouncer.ini'), ini)
  writeFileSync(
    join(dir, 'userlist.txt'),
    Object.entries(options.users)
      .map(([u, p]) => `${quote(u)} ${quote(p)}\n`)
      .join(''),
    { mode: 0o600 },
  )
  if (asRoot) {
    const { uid, gid } = unixIds(runAs)
    for (const f of ['', 'pgbouncer.ini', 'userlist.txt']) chownSync(join(dir, f), uid, gid)
  }

  // Foreground child: the test owns the process; pid file written too.
  const binary = pgbouncerBinary()
  if (!binary) throw new Error('pgbouncer is not installed (apt-get install pgbouncer)')
  const child = Bun.spawn([binary, join(dir, 'pgbouncer.ini')], { stdout: 'ignore', stderr: 'pipe' })
  // A test that crashes must not leave the bouncer behind (the 'exit' event also follows an uncaught error).
  const killOnExit = () => {
    child.kill('SIGKILL')
    rmSync(dir, { recursive: true, force: true })
  }
  process.once('exit', killOnExit)
  const consoleUrl = `postgres://${encodeURIComponent(options.admin)}:${encodeURIComponent(options.users[options.admin])}@${host}:${port}/pgbouncer`

  // The console speaks only the simple query protocol and has no pg_type: no type fetch, no prepare.
  const show = async <T,>(what: string): Promise<T[]> => {
    const sql = postgres(consoleUrl, { max: 1, fetch_types: false, prepare: false, onnotice: () => {}, connect_timeout: 5, idle_timeout: 1 })
    try {
      return (await sql.unsafe(`show ${what.replace(/[^a-z_ ]/gi, '')}`).simple()) as unknown as T[]
    } finally {
      await sql.end({ timeout: 2 })
    }
  }
  const command = async (text: string) => {
    const sql = postgres(consoleUrl, { max: 1, fetch_types: false, prepare: false, onnotice: () => {}, connect_timeout: 5 })
    try {
      await sql.unsafe(text).simple()
    } finally {
      await sql.end({ timeout: 2 })
    }
  }

  const deadline = Date.now() + (options.startTimeoutMs ?? 10_000)
  for (;;) {
    try {
      await show('version')
      break
    } catch (error) {
      if (child.exitCode !== null || Date.now() > deadline) {
        child.kill('SIGKILL')
        const log = existsSync(settings.logfile as string) ? readFileSync(settings.logfile as string, 'utf8') : ''
        throw new Error(`pgbouncer did not start (${String(error)}):\n${log}${await new Response(child.stderr).text()}`)
      }
      await Bun.sleep(50)
    }
  }

  return {
    host,
    port,
    dir,
    pid: child.pid,
    url: (user, password, database) =>
      `postgres://${encodeURIComponent(user)}:${encodeURIComponent(password)}@${host}:${port}/${encodeURIComponent(database)}`,
    show,
    command,
    async serverCount(database?: string) {
      const rows = await show<{ database: string }>('servers')
      return rows.filter((r) => !database || r.database === database).length
    },
    log: () => (existsSync(settings.logfile as string) ? readFileSync(settings.logfile as string, 'utf8') : ''),
    async stop() {
      process.off('exit', killOnExit)
      if (child.exitCode === null) {
        child.kill('SIGTERM') // "fast exit": drops clients and server connections, removes the pid file
        const exited = await Promise.race([child.exited.then(() => true), Bun.sleep(5000).then(() => false)])
        if (!exited) child.kill('SIGKILL'), await child.exited
      }
      rmSync(dir, { recursive: true, force: true })
    },
  }
}

function unixIds(name: string): { uid: number; gid: number } {
  const line = readFileSync('/etc/passwd', 'utf8')
    .split('\n')
    .find((l) => l.startsWith(name + ':'))
  if (!line) throw new Error(`no Unix user ${name}`)
  const [, , uid, gid] = line.split(':')
  return { uid: Number(uid), gid: Number(gid) }
}
