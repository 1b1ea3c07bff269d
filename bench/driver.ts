/**
 * The loop every load-generator process runs. `concurrency` workers, each one
 * buyer at a time (a closed loop: a worker sends its next request when the
 * previous one is answered):
 *
 *   warm-up for warmupSeconds, then wait for every request to finish;
 *   print {"event":"ready"} and wait for "go" on stdin (the orchestrator reads
 *   the CPU counters in between, so the measured phase starts from quiet);
 *   run for `seconds`, wait for the requests still running, print
 *   {"event":"done", ...LoadResult}; wait for "exit" (the orchestrator reads
 *   the counters again while every connection is still open, so no backend's
 *   CPU time is lost) and return, after which the caller closes its connections.
 */
import { readFileSync } from 'node:fs'
import { quantile } from './stats'
import type { Buyer, LoadConfig, LoadResult, Outcome } from './types'

export function readLoadConfig(): LoadConfig {
  const path = process.argv[2]
  if (!path) throw new Error('usage: bun bench/load-….ts <config.json> (started by bench/bench.ts)')
  return JSON.parse(readFileSync(path, 'utf8'))
}

export async function runLoad(
  config: LoadConfig,
  attempt: (buyer: Buyer | undefined) => Promise<Outcome>,
  options: { needsBuyers: boolean; describeError: (error: unknown) => string },
): Promise<void> {
  const stdin = console[Symbol.asyncIterator]()
  const waitFor = async (word: string) => {
    for (;;) {
      const { value, done } = await stdin.next()
      if (done) throw new Error(`stdin closed while waiting for "${word}"`)
      if (String(value).trim() === word) return
    }
  }

  let next = 0
  let exhausted = false
  const latencies: number[] = []
  let ok = 0
  let units = 0
  let attempts = 0
  const errors: Record<string, number> = {}

  async function phase(seconds: number, record: boolean): Promise<number> {
    const started = performance.now()
    const deadline = started + seconds * 1000
    let last = started
    const worker = async () => {
      while (performance.now() < deadline) {
        let buyer: Buyer | undefined
        if (options.needsBuyers) {
          buyer = config.buyers[next]
          if (!buyer) {
            exhausted = true
            return
          }
          next++
        }
        const sent = performance.now()
        let outcome: Outcome
        try {
          outcome = await attempt(buyer)
        } catch (error) {
          outcome = { ok: false, units: 0, error: options.describeError(error) }
        }
        const answered = performance.now()
        last = Math.max(last, answered)
        if (!record) continue
        attempts++
        latencies.push(answered - sent)
        units += outcome.units
        if (outcome.ok) ok++
        else {
          const kind = outcome.error ?? 'unknown'
          errors[kind] = (errors[kind] ?? 0) + 1
        }
      }
    }
    await Promise.all(Array.from({ length: config.concurrency }, worker))
    return last - started
  }

  await phase(config.warmupSeconds, false)
  console.log(JSON.stringify({ event: 'ready' }))
  await waitFor('go')
  const elapsedMs = await phase(config.seconds, true)
  latencies.sort((a, b) => a - b)
  const result: LoadResult = {
    ok,
    units,
    attempts,
    errors,
    elapsedMs,
    p50: quantile(latencies, 0.5),
    p95: quantile(latencies, 0.95),
    p99: quantile(latencies, 0.99),
    max: latencies.length ? latencies[latencies.length - 1] : Number.NaN,
    used: next,
    exhausted,
  }
  console.log(JSON.stringify({ event: 'done', ...result }))
  await waitFor('exit')
}

/** A stable, short error kind for a database error: SQLSTATE and its condition name when known. */
export function describeSqlError(error: unknown): string {
  const { code, message } = error as { code?: string; message?: string }
  if (code && /^[0-9A-Z]{5}$/.test(code)) return CONDITIONS[code] ? `${code} ${CONDITIONS[code]}` : code
  if (code) return code
  return String(message ?? error).slice(0, 60)
}

const CONDITIONS: Record<string, string> = {
  '40001': 'serialization_failure',
  '40P01': 'deadlock_detected',
  '53300': 'too_many_connections',
  '55P03': 'lock_not_available',
  '57014': 'query_canceled',
  '23514': 'check_violation',
  '23505': 'unique_violation',
  WA004: 'insufficient stock',
  WA005: 'not an open cart item',
}
