/**
 * A hand-written SVG line chart: orders/s against concurrent buyers (log
 * scale), one panel per scenario, one line per mode, one shared y axis.
 */
import type { Aggregate } from './report'
import { MODE_INFO, SCENARIO_INFO, type Mode, type Scenario } from './types'

const PANEL_WIDTH = 430
const PANEL_HEIGHT = 300
const MARGIN = { top: 46, right: 20, bottom: 44, left: 64 }
const LEGEND_ROW = 20

const escape = (text: string) => text.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;')

/** A round step for about `count` ticks up to max: 1, 2 or 5 × 10^k. */
export function niceStep(max: number, count = 5): number {
  if (!(max > 0)) return 1
  const raw = max / count
  const power = 10 ** Math.floor(Math.log10(raw))
  const unit = raw / power
  return (unit <= 1 ? 1 : unit <= 2 ? 2 : unit <= 5 ? 5 : 10) * power
}

export function renderChart(input: { aggregates: Aggregate[]; scenarios: Scenario[]; modes: Mode[]; concurrency: number[]; title: string }): string {
  const { aggregates, scenarios, concurrency } = input
  const modes = input.modes.filter((mode) => aggregates.some((a) => a.mode === mode))
  const xs = [...concurrency].sort((a, b) => a - b)
  const maxRate = Math.max(1, ...aggregates.map((a) => a.rate).filter(Number.isFinite))
  const step = niceStep(maxRate)
  const yMax = Math.ceil(maxRate / step) * step

  const innerWidth = PANEL_WIDTH - MARGIN.left - MARGIN.right
  const innerHeight = PANEL_HEIGHT - MARGIN.top - MARGIN.bottom
  const logMin = Math.log(xs[0])
  const logMax = Math.log(xs[xs.length - 1])
  const xOf = (c: number) => (logMax === logMin ? innerWidth / 2 : ((Math.log(c) - logMin) / (logMax - logMin)) * innerWidth * 0.9 + innerWidth * 0.05)
  const yOf = (rate: number) => innerHeight - (rate / yMax) * innerHeight

  const width = PANEL_WIDTH * scenarios.length
  const legendColumns = Math.max(1, Math.floor(width / 215))
  const legendRows = Math.ceil(modes.length / legendColumns)
  const height = PANEL_HEIGHT + 24 + legendRows * LEGEND_ROW + 10
  const out: string[] = []
  out.push(
    `<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}" viewBox="0 0 ${width} ${height}" font-family="Helvetica, Arial, sans-serif" font-size="12">`,
    `<title>${escape(input.title)}</title>`,
    `<rect width="${width}" height="${height}" fill="#ffffff"/>`,
  )

  scenarios.forEach((scenario, index) => {
    const left = index * PANEL_WIDTH + MARGIN.left
    out.push(`<g transform="translate(${left},${MARGIN.top})">`)
    out.push(`<text x="${innerWidth / 2}" y="-22" text-anchor="middle" font-size="14" font-weight="bold">${escape(SCENARIO_INFO[scenario].title)}</text>`)
    for (let y = 0; y <= yMax + step / 2; y += step) {
      const py = yOf(y).toFixed(1)
      out.push(`<line x1="0" x2="${innerWidth}" y1="${py}" y2="${py}" stroke="#e5e5e5"/>`)
      out.push(`<text x="-8" y="${py}" text-anchor="end" dominant-baseline="middle" fill="#555">${y.toLocaleString('en-US')}</text>`)
    }
    for (const c of xs) {
      const px = xOf(c).toFixed(1)
      out.push(`<line x1="${px}" x2="${px}" y1="${innerHeight}" y2="${innerHeight + 5}" stroke="#555"/>`)
      out.push(`<text x="${px}" y="${innerHeight + 18}" text-anchor="middle" fill="#555">${c}</text>`)
    }
    out.push(`<line x1="0" x2="${innerWidth}" y1="${innerHeight}" y2="${innerHeight}" stroke="#555"/>`)
    out.push(`<line x1="0" x2="0" y1="0" y2="${innerHeight}" stroke="#555"/>`)
    out.push(`<text x="${innerWidth / 2}" y="${innerHeight + 36}" text-anchor="middle" fill="#333">concurrent buyers (log scale)</text>`)
    out.push(`<text transform="translate(-50,${innerHeight / 2}) rotate(-90)" text-anchor="middle" fill="#333">orders/s (median)</text>`)
    for (const mode of modes) {
      const points = xs
        .map((c) => aggregates.find((a) => a.scenario === scenario && a.mode === mode && a.concurrency === c))
        .filter((a): a is Aggregate => !!a && Number.isFinite(a.rate))
        .map((a) => [xOf(a.concurrency), yOf(a.rate)] as const)
      if (points.length === 0) continue
      const { color, dash } = MODE_INFO[mode]
      out.push(
        `<polyline fill="none" stroke="${color}" stroke-width="2"${dash ? ` stroke-dasharray="${dash}"` : ''} points="${points.map(([x, y]) => `${x.toFixed(1)},${y.toFixed(1)}`).join(' ')}"/>`,
      )
      for (const [x, y] of points) out.push(`<circle cx="${x.toFixed(1)}" cy="${y.toFixed(1)}" r="3.5" fill="${color}"/>`)
    }
    out.push('</g>')
  })

  const legendTop = PANEL_HEIGHT + 14
  const columnWidth = width / legendColumns
  modes.forEach((mode, index) => {
    const x = (index % legendColumns) * columnWidth + 24
    const y = legendTop + Math.floor(index / legendColumns) * LEGEND_ROW
    const { color, dash, label } = MODE_INFO[mode]
    out.push(`<line x1="${x}" x2="${x + 28}" y1="${y}" y2="${y}" stroke="${color}" stroke-width="2"${dash ? ` stroke-dasharray="${dash}"` : ''}/>`)
    out.push(`<circle cx="${x + 14}" cy="${y}" r="3.5" fill="${color}"/>`)
    out.push(`<text x="${x + 36}" y="${y}" dominant-baseline="middle">${escape(label)}</text>`)
  })
  out.push('</svg>', '')
  return out.join('\n')
}
