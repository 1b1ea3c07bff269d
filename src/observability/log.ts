/**
 * The one logging surface of the core (createApp and everything on the
 * request path): pino's call shape, so a pino logger passes as it is. The
 * server entries (Bun, Deno, Node) pass pino (src/observability/logger.ts);
 * the workers entry passes consoleLogger, since pino has no JSON destination
 * under workerd. Nothing here touches a runtime: Web-standard APIs only.
 */
export interface Logger {
  debug(fields: Record<string, unknown>, msg: string): void
  info(fields: Record<string, unknown>, msg: string): void
  warn(fields: Record<string, unknown>, msg: string): void
  error(fields: Record<string, unknown>, msg: string): void
}

export const LOG_LEVELS = { trace: 10, debug: 20, info: 30, warn: 40, error: 50, fatal: 60, silent: Infinity } as const
export type LogLevel = keyof typeof LOG_LEVELS

/** A logger that drops everything (tests, tools). */
export const silentLogger = (): Logger => ({ debug() {}, info() {}, warn() {}, error() {} })

/**
 * One JSON object per line on console.log, with the keys pino writes (level
 * as a label, time in ISO 8601, the base fields, msg): the logger of runtimes
 * where pino cannot write JSON lines (workerd).
 */
export function consoleLogger(base: Record<string, unknown> = { service: 'waitress' }, level: LogLevel = 'info'): Logger {
  const min = LOG_LEVELS[level]
  const write = (label: 'debug' | 'info' | 'warn' | 'error') => (fields: Record<string, unknown>, msg: string) => {
    if (LOG_LEVELS[label] < min) return
    console.log(JSON.stringify({ level: label, time: new Date().toISOString(), ...base, ...fields, msg }))
  }
  return { debug: write('debug'), info: write('info'), warn: write('warn'), error: write('error') }
}
