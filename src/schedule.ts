/**
 * Runs `tick` every `everyMs` until the returned function is called. The
 * service's timers (expiry, purge) take one, so tests can pass their own and
 * drive the ticks instead of waiting for a clock.
 */
export type Schedule = (tick: () => Promise<void> | void, everyMs: number) => () => void

/** setInterval; `unref` lets the process exit while the timer is pending. */
export const every =
  (options: { unref?: boolean } = {}): Schedule =>
  (tick, everyMs) => {
    const timer = setInterval(() => void tick(), everyMs)
    if (options.unref) timer.unref()
    return () => clearInterval(timer)
  }
