import { resolve } from 'node:path'
import type { Subprocess } from 'bun'
import { localService } from '../../bench/npm-start.ts'
import { freePort } from '../../src/db/embedded.ts'
import { until } from './wait.ts'

export interface RunningService {
  child: Subprocess<'ignore', 'pipe', 'pipe'>
  baseUrl: string
  port: number
  /** Everything the service wrote so far: stdout (its JSON log) and stderr, read as they come so a full pipe never blocks it. */
  output(): { stdout: string; stderr: string }
  /** The JSON log lines written so far. */
  log(): any[]
  /** A value of its Prometheus metrics now (GET /metrics), e.g. waitress_db_pool_waiting. */
  metric(name: string): Promise<number>
  /** How it ended: its exit code, or the signal that ended it, with the last of what it wrote. */
  exit(): Promise<{ code: number | null; signal: string | number | null; tail: string }>
}

/**
 * Starts the real service as its own process, as `npm start` runs it, on a
 * free port against `databaseUrl`, and waits until it answers /healthz. Its output is
 * read continuously (a service whose stdout pipe fills up blocks, then dies).
 */
export async function startService(databaseUrl: string, env: Record<string, string> = {}, port?: number): Promise<RunningService> {
  port ??= await freePort()
  const root = resolve(import.meta.dir, '../..')
  const service = localService(root, databaseUrl, port, { LOG_FORMAT: 'json', ...env })
  const child = Bun.spawn(service.cmd, {
    cwd: root,
    env: service.env as Record<string, string>,
    stdin: 'ignore',
    stdout: 'pipe',
    stderr: 'pipe',
  })
  const stdout = drain(child.stdout)
  const stderr = drain(child.stderr)
  const output = () => ({ stdout: stdout.text(), stderr: stderr.text() })
  const tail = () => {
    const { stdout: out, stderr: err } = output()
    return `${out.slice(-1500)}${err ? `\nstderr: ${err.slice(-1500)}` : ''}`
  }
  const baseUrl = `http://127.0.0.1:${port}`
  await until(
    `the service on port ${port} to answer /healthz`,
    async () => {
      if (child.exitCode !== null || child.signalCode !== null)
        throw new Error(`the service did not start (exit ${child.exitCode ?? child.signalCode}): ${tail()}`)
      return fetch(`${baseUrl}/healthz`).then(
        (r) => r.ok,
        () => false,
      )
    },
    { everyMs: 25, seen: tail },
  )
  return {
    child,
    baseUrl,
    port,
    output,
    log: () =>
      stdout
        .text()
        .split('\n')
        .filter((line) => line.startsWith('{'))
        .map((line) => JSON.parse(line)),
    metric: async (name) => {
      const text = await (await fetch(`${baseUrl}/metrics`)).text()
      const match = new RegExp(`^${name} (\\S+)$`, 'm').exec(text)
      if (!match) throw new Error(`the service has no metric ${name}`)
      return Number(match[1])
    },
    exit: async () => {
      await child.exited
      await Promise.all([stdout.done, stderr.done])
      return { code: child.exitCode, signal: child.signalCode, tail: tail() }
    },
  }
}

function drain(stream: ReadableStream<Uint8Array>) {
  const decoder = new TextDecoder()
  let text = ''
  const done = (async () => {
    for await (const chunk of stream) text += decoder.decode(chunk, { stream: true })
  })().catch(() => {})
  return { text: () => text, done }
}
