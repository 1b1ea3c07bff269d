/**
 * The HTTP load generator: wrk (a C program, so the load generator's CPU does
 * not decide the result), driven by bench/wrk.lua with a file of request
 * bodies, one buyer per request. Installed with apt-get when missing.
 */
import { writeFileSync } from 'node:fs'
import { join } from 'node:path'

export interface WrkResult {
  /** Requests wrk started (the last one per connection may still be running when it stops: its outcome is unknown). */
  sent: number
  /** Bodies taken: thread t takes lines t, t + threads, ...; so the first maxSentPerThread × threads lines cover every one used. */
  maxSentPerThread: number
  threads: number
  /** Responses by status, with the error code of the body when there is one: {"201": 900, "422 WA004": 3}. */
  counts: Record<string, number>
  durationUs: number
  p50: number
  p95: number
  p99: number
  max: number
  socketErrors: { connect: number; read: number; write: number; timeout: number }
  /** A thread ran out of bodies: the cell is void. */
  exhausted: boolean
}

const WRK = process.env.WRK ?? 'wrk'

/** wrk on the PATH, installing the Debian package when it is missing (root only). */
export function ensureWrk(log: (line: string) => void): void {
  if (Bun.spawnSync(['sh', '-c', `command -v ${WRK}`]).exitCode === 0) return
  log('wrk is missing: installing the Debian package (apt-get install wrk)')
  const install = Bun.spawnSync(['sh', '-c', 'apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk'], {
    stdout: 'inherit',
    stderr: 'inherit',
  })
  if (install.exitCode !== 0 || Bun.spawnSync(['sh', '-c', `command -v ${WRK}`]).exitCode !== 0)
    throw new Error('wrk is needed for the HTTP cells and could not be installed: apt-get install wrk')
}

export interface WrkRun {
  pid: number
  result: Promise<WrkResult>
  kill(): void
}

/** Starts wrk: `connections` keep-alive connections POSTing the bodies to url + path for `seconds`. */
export function startWrk(options: { dir: string; name: string; url: string; path: string; bodies: string[]; connections: number; seconds: number }): WrkRun {
  const threads = Math.min(2, options.connections)
  const bodiesFile = join(options.dir, `${options.name}.bodies`)
  writeFileSync(bodiesFile, options.bodies.join('\n') + '\n')
  const args = [
    WRK,
    '-t', String(threads),
    '-c', String(options.connections),
    '-d', `${Math.max(1, Math.round(options.seconds))}s`,
    '--timeout', '30s',
    '-s', join(import.meta.dir, 'wrk.lua'),
    options.url,
    '--', bodiesFile, String(threads), options.path,
  ]
  // wrk needs a file descriptor per connection.
  const child = Bun.spawn(['sh', '-c', 'ulimit -n 65536 2>/dev/null || true; exec "$@"', 'wrk', ...args], { stdout: 'pipe', stderr: 'pipe' })
  const result = (async () => {
    const [stdout, stderr, code] = await Promise.all([new Response(child.stdout).text(), new Response(child.stderr).text(), child.exited])
    const line = stdout.split('\n').find((l) => l.startsWith('{"event":"done"'))
    if (!line) throw new Error(`wrk exited ${code} without a result: ${(stderr || stdout).trim().slice(-500)}`)
    const { event: _event, ...parsed } = JSON.parse(line)
    return parsed as WrkResult
  })()
  return { pid: child.pid, result, kill: () => child.kill() }
}

/** Successful checkouts (201) and the other outcomes as error kinds ("HTTP 422 WA004", "socket timeout"). */
export function outcomesOf(result: WrkResult): { ok: number; answered: number; errors: Record<string, number> } {
  let ok = 0
  let answered = 0
  const errors: Record<string, number> = {}
  for (const [key, count] of Object.entries(result.counts)) {
    answered += count
    if (key === '201') ok += count
    else errors[`HTTP ${key}`] = (errors[`HTTP ${key}`] ?? 0) + count
  }
  for (const [kind, count] of Object.entries(result.socketErrors)) if (count > 0 && kind !== 'read') errors[`socket ${kind}`] = count
  return { ok, answered, errors }
}
