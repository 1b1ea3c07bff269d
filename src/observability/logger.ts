import pino, { type Logger } from 'pino'
import pretty from 'pino-pretty'

export type { Logger }
export { silentLogger } from './log.ts'

/**
 * The server entries' logger (Bun, Deno, Node; never on workerd, where pino
 * has no JSON destination: src/observability/log.ts has consoleLogger).
 * One JSON line per event (request, error, lifecycle) in production; the same
 * events, human-readable, on a developer's terminal. Never logs headers or
 * bodies: nothing secret reaches the log.
 */
export function createLogger(options: { level?: string; format?: 'json' | 'pretty'; base?: Record<string, unknown> } = {}): Logger {
  const level = options.level ?? 'info'
  const format = options.format ?? (process.stdout.isTTY && process.env.NODE_ENV !== 'production' ? 'pretty' : 'json')
  const base = {
    level,
    base: { service: 'waitress', ...options.base },
    timestamp: pino.stdTimeFunctions.isoTime,
    formatters: { level: (label: string) => ({ level: label }) },
  }
  // A closed stdout (the reader went away) must not crash the process mid-shutdown.
  const stdout = pino.destination({ dest: 1, sync: true })
  stdout.on('error', () => {})
  return format === 'pretty'
    ? pino(base, pretty({ colorize: true, translateTime: 'SYS:HH:MM:ss.l', ignore: 'service', destination: stdout }))
    : pino(base, stdout)
}
