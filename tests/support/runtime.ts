import { spawnSync, type Subprocess } from 'bun'
import { createServer } from 'node:net'
import { resolve } from 'node:path'
import { until } from './wait.ts'

export const ROOT = resolve(import.meta.dir, '../..')

/** The four runtimes and the npm script that starts each. */
export const RUNTIMES = {
  bun: 'start',
  deno: 'start:deno',
  node: 'start:node',
  workers: 'start:workers',
} as const
export type Runtime = keyof typeof RUNTIMES

/**
 * A free port below 32768: workerd fails to bind a port in the ephemeral range
 * that a TIME_WAIT socket still holds, which a busy test machine has plenty of.
 */
export async function lowFreePort(): Promise<number> {
  for (let attempt = 0; attempt < 50; attempt++) {
    const port = 20_000 + Math.floor(Math.random() * 12_000)
    const free = await new Promise<boolean>((done) => {
      const probe = createServer()
      probe.once('error', () => done(false))
      probe.listen(port, '127.0.0.1', () => probe.close(() => done(true)))
    })
    if (free) return port
  }
  throw new Error('no free port below 32768')
}

export interface RunningRuntime {
  runtime: Runtime
  child: Subprocess<'ignore', 'pipe', 'pipe'>
  baseUrl: string
  port: number
  /** Every line the process printed so far (stdout and stderr). */
  lines: string[]
  /** The JSON log lines among them (wrangler adds lines of its own around the worker's). */
  logs(): Record<string, any>[]
  /** SIGTERM to npm (not to the server: npm must pass it on), then the exit code. */
  stop(timeoutMs?: number): Promise<number | null>
}

/** Every process below `pid`, by parent id (never by name: other tests run servers here too). */
export function descendants(pid: number): number[] {
  const table = spawnSync(['ps', '-e', '-o', 'pid=,ppid=']).stdout.toString()
  const children = new Map<number, number[]>()
  for (const line of table.trim().split('\n')) {
    const [child, parent] = line.trim().split(/\s+/).map(Number)
    children.set(parent, [...(children.get(parent) ?? []), child])
  }
  const found: number[] = []
  const walk = (id: number) => {
    for (const child of children.get(id) ?? []) {
      found.push(child)
      walk(child)
    }
  }
  walk(pid)
  return found
}

/**
 * Starts `npm run <script>` for a runtime as a real process on a free port,
 * as a user would, and waits until it answers /healthz.
 */
export async function startRuntime(runtime: Runtime, env: Record<string, string>, options: { timeoutMs?: number; port?: number } = {}): Promise<RunningRuntime> {
  const port = options.port ?? (await lowFreePort())
  const child = Bun.spawn(['npm', 'run', '--silent', RUNTIMES[runtime]], {
    cwd: ROOT,
    env: {
      ...(process.env as Record<string, string>),
      PORT: String(port),
      HOST: '127.0.0.1',
      LOG_FORMAT: 'json',
      MIGRATE_ON_START: 'false',
      CI: 'true',
      WRANGLER_SEND_METRICS: 'false',
      NO_COLOR: '1',
      ...env,
    },
    stdin: 'ignore',
    stdout: 'pipe',
    stderr: 'pipe',
  })
  const lines: string[] = []
  const pump = async (stream: ReadableStream<Uint8Array>) => {
    const decoder = new TextDecoder()
    let buffered = ''
    for await (const chunk of stream) {
      buffered += decoder.decode(chunk, { stream: true })
      let newline: number
      while ((newline = buffered.indexOf('\n')) >= 0) {
        lines.push(buffered.slice(0, newline))
        buffered = buffered.slice(newline + 1)
      }
    }
    if (buffered) lines.push(buffered)
  }
  const pumped = Promise.all([pump(child.stdout), pump(child.stderr)])
  const baseUrl = `http://127.0.0.1:${port}`
  const deadline = Date.now() + (options.timeoutMs ?? 90_000)
  for (;;) {
    // With several processes on one port (REUSE_PORT), another may answer first: wait for this one's own word.
    const listening = lines.some((line) => line.includes('"msg":"listening"')) || (runtime === 'workers' && lines.some((line) => line.includes('Ready on')))
    if (listening && (await fetch(`${baseUrl}/healthz`).then((r) => r.ok, () => false))) break
    if (child.exitCode !== null || Date.now() > deadline) {
      for (const pid of descendants(child.pid)) kill(pid)
      child.kill('SIGKILL')
      await pumped
      throw new Error(`npm run ${RUNTIMES[runtime]} did not start:\n${lines.slice(-40).join('\n')}`)
    }
    await Bun.sleep(200)
  }
  return {
    runtime,
    child,
    baseUrl,
    port,
    lines,
    logs: () => lines.filter((line) => line.startsWith('{')).map((line) => JSON.parse(line)),
    async stop(timeoutMs = 20_000) {
      const tree = descendants(child.pid)
      child.kill('SIGTERM')
      const code = await Promise.race([child.exited, Bun.sleep(timeoutMs).then(() => null)])
      // wrangler's children (workerd, esbuild) go a moment after it (a busy machine's moment may be long);
      // anything still there at the suite's deadline is a leak.
      await until('the processes started under npm to exit after SIGTERM', () => !tree.some(alive), { everyMs: 100 }).catch(() => {})
      const left = tree.filter(alive)
      for (const pid of [...left, child.pid]) kill(pid)
      await pumped
      if (left.length) throw new Error(`npm run ${RUNTIMES[runtime]} left processes behind after SIGTERM: ${left.join(', ')}`)
      return code
    },
  }
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0)
    // A zombie is gone in all but name: its parent has not reaped it yet.
    const state = spawnSync(['ps', '-o', 'stat=', '-p', String(pid)]).stdout.toString().trim()
    return state !== '' && !state.startsWith('Z')
  } catch {
    return false
  }
}

function kill(pid: number) {
  try {
    process.kill(pid, 'SIGKILL')
  } catch {}
}
