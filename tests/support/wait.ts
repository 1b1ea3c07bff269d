/**
 * Waiting on conditions, never on the clock: a test that needs something to
 * have happened (a session blocked on a lock, a log line written, a process
 * gone) asks for it until it holds. The deadline is only there to turn a
 * hang into a failure that says what never happened; on a busy machine the
 * condition simply takes longer, so deadlines are generous.
 */

export const DEFAULT_DEADLINE_MS = 30_000

export class NeverHappened extends Error {}

/**
 * Resolves with the first value of `check` that is neither undefined, null
 * nor false, polling every `everyMs`. After `deadlineMs` it throws, naming
 * `what` and, when given, what `seen` reports of the last look.
 */
export async function until<T>(
  what: string,
  check: () => Promise<T | undefined | null | false> | T | undefined | null | false,
  options: { deadlineMs?: number; everyMs?: number; seen?: () => string | Promise<string> } = {},
): Promise<T> {
  const deadline = performance.now() + (options.deadlineMs ?? DEFAULT_DEADLINE_MS)
  for (;;) {
    const value = await check()
    if (value !== undefined && value !== null && value !== false) return value
    if (performance.now() > deadline) {
      const seen = options.seen ? ` (last seen: ${await options.seen()})` : ''
      throw new NeverHappened(`waited ${options.deadlineMs ?? DEFAULT_DEADLINE_MS} ms for ${what}, in vain${seen}`)
    }
    await Bun.sleep(options.everyMs ?? 10)
  }
}

/** A promise that settles as `promise` does, or fails naming `what` once `deadlineMs` have passed: for awaits that must not hang a test. */
export async function within<T>(what: string, promise: Promise<T>, deadlineMs = DEFAULT_DEADLINE_MS): Promise<T> {
  let timer: ReturnType<typeof setTimeout> | undefined
  const late = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new NeverHappened(`waited ${deadlineMs} ms for ${what}, in vain`)), deadlineMs)
  })
  try {
    return await Promise.race([promise, late])
  } finally {
    clearTimeout(timer)
  }
}

/** Whether `promise` has settled yet (without waiting for it). */
export function settledYet(promise: Promise<unknown>): () => boolean {
  let settled = false
  promise.then(
    () => (settled = true),
    () => (settled = true),
  )
  return () => settled
}
