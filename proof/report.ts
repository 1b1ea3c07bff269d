import { percentile, type FlashSaleResult, type Progress } from './flash-sale.ts'

const int = (n: number) => (Number.isFinite(n) ? Math.round(n).toLocaleString('en-US') : '?')
const ms = (n: number) => (n >= 100 ? `${Math.round(n)} ms` : `${n.toFixed(1)} ms`)
const seconds = (n: number) => `${(n / 1000).toFixed(1)} s`
const plural = (n: number, noun: string) => `${int(n)} ${noun}${n === 1 ? '' : 's'}`

/** Plain-text columns: the first left-aligned, the rest right-aligned. */
export function table(header: string[], rows: string[][]): string {
  const widths = header.map((cell, i) => Math.max(cell.length, ...rows.map((row) => row[i].length)))
  const line = (cells: string[]) => cells.map((cell, i) => (i === 0 ? cell.padEnd(widths[i]) : cell.padStart(widths[i]))).join('  ').trimEnd()
  return [line(header), line(widths.map((w) => '-'.repeat(w))), ...rows.map(line)].join('\n')
}

const REASONS: Record<string, string> = {
  WA004: 'out of stock',
  WA003: 'not for sale',
  'other line': 'other line',
}

/** One line of progress: where the sale is and how fast it goes. */
export function progressLine(p: Progress, now = performance.now()): string {
  const elapsed = now - p.since
  switch (p.phase) {
    case 'setup':
      return `setup    ${int(p.done)}/${int(p.total)} carts filled · ${seconds(elapsed)}`
    case 'race': {
      const rate = elapsed > 0 ? (p.done * 1000) / elapsed : 0
      return (
        `race     ${int(p.done)}/${int(p.total)} checkouts · ${int(p.accepted)} accepted · ${int(p.refused)} refused · ` +
        `${int(p.failed)} failed · ${int(rate)}/s · ${seconds(elapsed)}`
      )
    }
    default:
      return `verdict  read the outcome back and checked it · ${seconds(elapsed)}`
  }
}

/** The closing report: per-product table, outcomes, latency, throughput and the verdict. */
export function report(result: FlashSaleResult): string {
  const { options, products, verdict, checkouts, latencies } = result
  const out: string[] = []

  const reasons = [...new Set(verdict.products.flatMap((p) => Object.keys(p.refused)))].sort(
    (a, b) => (a === 'other line' ? 1 : 0) - (b === 'other line' ? 1 : 0) || a.localeCompare(b),
  )
  const nameOf = new Map(products.map((p) => [p.id, p.name]))
  const rows = verdict.products.map((t) => [
    `#${t.productId} ${nameOf.get(t.productId) ?? ''}`,
    int(t.initial),
    int(t.sold),
    int(t.remaining),
    int(t.accepted),
    ...reasons.map((reason) => int(t.refused[reason] ?? 0)),
  ])
  const sum = (pick: (t: (typeof verdict.products)[number]) => number) => int(verdict.products.reduce((s, t) => s + pick(t), 0))
  rows.push(['total', sum((t) => t.initial), sum((t) => t.sold), sum((t) => t.remaining), '', ...reasons.map(() => '')])
  out.push(table(['product', 'initial', 'sold', 'remaining', 'orders accepted', ...reasons.map((r) => `refused: ${REASONS[r] ?? r}`)], rows))
  out.push('')

  const count = (kind: string) => checkouts.filter((c) => c.outcome.kind === kind).length
  const orders = checkouts.reduce((n, c) => n + (c.outcome.kind === 'accepted' ? c.outcome.orders.length : 0), 0)
  const refusedBy = new Map<string, number>()
  for (const { outcome } of checkouts)
    if (outcome.kind === 'refused') refusedBy.set(`${outcome.status} ${outcome.code ?? ''}`.trim(), (refusedBy.get(`${outcome.status} ${outcome.code ?? ''}`.trim()) ?? 0) + 1)
  const failedBy = new Map<string, number>()
  for (const { outcome } of checkouts)
    if (outcome.kind === 'failed') {
      const key = outcome.status ? `${outcome.status}${outcome.code ? ` ${outcome.code}` : ''}` : 'no answer'
      failedBy.set(key, (failedBy.get(key) ?? 0) + 1)
    }
  const breakdown = (counts: Map<string, number>) => (counts.size ? ` (${[...counts].map(([k, n]) => `${k}: ${int(n)}`).join(', ')})` : '')
  out.push(
    `checkouts   ${int(checkouts.length)}: ${int(count('accepted'))} accepted (201, ${int(orders)} orders), ` +
      `${int(count('refused'))} refused${breakdown(refusedBy)}, ${int(count('failed'))} failed${breakdown(failedBy)}`,
  )
  out.push(
    `latency     p50 ${ms(percentile(latencies, 50))} · p95 ${ms(percentile(latencies, 95))} · p99 ${ms(percentile(latencies, 99))} · ` +
      `max ${ms(Math.max(...latencies))}`,
  )
  if (result.batches)
    out.push(
      `batches     ${int(result.batches.checkouts)} checkouts in ${int(result.batches.count)} checkout calls ` +
        `(${result.batches.count ? (result.batches.checkouts / result.batches.count).toFixed(1) : '0'} a call, coalesced as they queued; from the service's /metrics)`,
    )
  const { cancelled, paidThenCancelled, paid, leftPending, expired } = result.lifecycle
  if (cancelled + paidThenCancelled + paid + leftPending > 0)
    out.push(
      `afterwards  ${int(cancelled)} orders cancelled, ${int(paidThenCancelled)} paid then cancelled, ${int(paid)} paid, ` +
        `${int(leftPending)} left unpaid to expire${leftPending ? ` (${int(expired)} expired)` : ''}` +
        `${options.restocks ? `; ${int(options.restocks)} restocks during the race` : ''}`,
    )
  const { deadlocks, retries } = verdict
  out.push(
    `deadlocks   ${deadlocks === undefined ? 'not counted' : `${int(deadlocks)} (PostgreSQL's counter, read after every session's statistics were published)`}` +
      ` · retries ${retries ? `${int(retries.deadlocks)} after a deadlock, ${int(retries.serializationFailures)} after a serialization failure (the service's /metrics)` : 'not counted by the service'}`,
  )
  out.push(
    `throughput  ${int((checkouts.length * 1000) / result.raceMs)} checkouts/s (${int(checkouts.length)} in ${seconds(result.raceMs)}, ` +
      `${Math.min(options.concurrency, checkouts.length)} in flight); setup ${int(options.buyers)} carts, ${int(result.cartLines)} lines in ${seconds(result.setupMs)}`,
  )
  out.push('')

  const from = verdict.source === 'database' ? 'read from the database' : 'read through the API'
  if (verdict.ok) out.push(`verdict     OK: all ${verdict.checked.length} invariants hold (${from})`)
  else {
    const shown = 20
    const broken = new Set(verdict.violations.map((v) => v.invariant)).size
    out.push(
      `verdict     VIOLATED: ${plural(verdict.violations.length, 'violation')} of ${plural(broken, 'invariant')} (${from})`,
    )
    for (const v of verdict.violations.slice(0, shown)) out.push(`  ${v.invariant}: ${v.message}`)
    if (verdict.violations.length > shown) out.push(`  … and ${verdict.violations.length - shown} more`)
  }
  for (const note of verdict.notes) out.push(`            note: ${note}`)
  return out.join('\n')
}
