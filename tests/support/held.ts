import type { Sql } from '../../src/db/client.ts'

/**
 * The pool, except that every statement whose text matches `pattern` waits
 * before it is sent until the test calls release(): a way to keep the code
 * under test "in the database" for as long as a test needs, with no clock.
 * `held` counts the statements that reached the hold so far.
 */
export function holdingStatements(sql: Sql, pattern: RegExp) {
  let release!: () => void
  const released = new Promise<void>((resolve) => (release = resolve))
  let held = 0
  const pool = new Proxy(sql, {
    apply(target, thisArg, args) {
      const text = Array.isArray(args[0]) ? (args[0] as string[]).join('$') : ''
      if (!pattern.test(text)) return Reflect.apply(target, thisArg, args)
      held++
      return released.then(() => Reflect.apply(target, thisArg, args))
    },
  })
  return { sql: pool, release, held: () => held }
}
