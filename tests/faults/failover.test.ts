import { describe, expect, it } from 'bun:test'
import { readFileSync } from 'node:fs'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'
import postgres from 'postgres'
import { createSql, gated, type Sql } from '../../src/db/client.ts'
import { freePort } from '../../src/db/embedded.ts'
import { DatabaseUnreachableError, hostUrls, primaryUrl, replaceablePool, unreached } from '../../src/db/failover.ts'
import { redact } from '../../src/db/database.ts'
import { Gate } from '../../src/db/gate.ts'
import { testDatabaseUrl, testSql } from '../support/db.ts'
import { FaultyProxy } from '../support/proxy.ts'

/**
 * Failover handling that needs no second server: the installed postgres.js
 * carries our fix, errors are told apart by whether the statement may have
 * run, a statement that never ran is run again within its deadline, a
 * session on a read-only server is dropped with its pool, and several hosts
 * in one URL. tests/faults/failover-manual.test.ts and
 * failover-engine.test.ts fail over real clusters (scripts/ci-ha.sh).
 */

const sql = testSql()

/** The test database's URL with another host listed first. */
function withHostFirst(host: string): string {
  const url = new URL(testDatabaseUrl())
  return testDatabaseUrl().replace(`@${url.host}`, `@${host},${url.host}`)
}

describe('the installed postgres.js', () => {
  it('carries patches/postgres+3.4.9.patch (applied by patch-package at npm install)', () => {
    const entry = fileURLToPath(import.meta.resolve('postgres'))
    const root = join(dirname(entry), '..')
    expect(JSON.parse(readFileSync(join(root, 'package.json'), 'utf8')).version).toBe('3.4.9')
    // src for Bun, Deno and Node's ESM, cjs for require, cf for Cloudflare's workerd.
    for (const file of ['src/connection.js', 'cjs/src/connection.js', 'cf/src/connection.js']) {
      const source = readFileSync(join(root, file), 'utf8')
      // target_session_attrs is checked on every new session, not only the first
      expect(source).toContain('if (starting && target_session_attrs)')
      // no write on a socket that is gone (an uncaught TypeError)
      expect(source).toMatch(/function nextWrite\(fn\) \{\n\s+if \(!socket\)/)
      // no query "answered" by the next session's startup
      expect(source).toContain("if (!socket || (starting && !q.sessionCheck))")
      // a call cancelled while its session was starting frees the session
      expect(source).toContain('if (initial && !initial.reserve && initial.cancelled)')
      // read-write means what it means in libpq: not a hot standby either
      expect(source).toContain("(x === 'read-write' && (xs.default_transaction_read_only === 'on' || xs.in_hot_standby === 'on'))")
    }
  })
})

describe('what a failed call tells about its statement', () => {
  const pgError = (code: string) => new postgres.PostgresError({ code, message: code } as never)
  const sent = { state: {} }
  const unsent = { state: null }

  it('never ran: a standby or read-only server, a server starting, a refused or timed-out connect', () => {
    for (const code of ['25006', '57P03', '53300']) expect(unreached(pgError(code), sent)).toBe('not-sent')
    for (const code of ['ECONNREFUSED', 'CONNECT_TIMEOUT']) expect(unreached(Object.assign(new Error(code), { code }), sent)).toBe('not-sent')
  })

  it('may have run: the session lost after the statement was sent; not sent if it was still waiting for a session', () => {
    for (const code of ['57P01', '57P02', '08006']) {
      expect(unreached(pgError(code), sent)).toBe('outcome-unknown')
      expect(unreached(pgError(code), unsent)).toBe('not-sent')
    }
    for (const code of ['CONNECTION_CLOSED', 'CONNECTION_DESTROYED', 'ECONNRESET', 'EPIPE']) {
      expect(unreached(Object.assign(new Error(code), { code }), sent)).toBe('outcome-unknown')
      expect(unreached(Object.assign(new Error(code), { code }), unsent)).toBe('not-sent')
    }
  })

  it('anything else keeps its own meaning: a refusal, a timeout, a bug', () => {
    for (const error of [pgError('WA004'), pgError('57014'), pgError('40001'), new TypeError('x')]) expect(unreached(error, sent)).toBeUndefined()
  })
})

describe('several hosts in one URL', () => {
  it('splits libpq’s host list into one URL per host, without target_session_attrs', () => {
    expect(hostUrls('postgres://u:p@h1:5433,h2:5434/db?target_session_attrs=read-write&sslmode=disable')).toEqual([
      'postgres://u:p@h1:5433/db?sslmode=disable',
      'postgres://u:p@h2:5434/db?sslmode=disable',
    ])
    expect(hostUrls('postgres://u@h1:1,h2:2/db?target_session_attrs=primary')).toEqual(['postgres://u@h1:1/db', 'postgres://u@h2:2/db'])
    expect(hostUrls('postgres://u@h/db')).toEqual(['postgres://u@h/db'])
    expect(redact('postgres://u:secret@h1:1,h2:2/db')).toBe('postgres://u:***@h1:1,h2:2/db')
  })

  it('finds the primary for dbmate, skipping a host that is down', async () => {
    const closed = await freePort()
    const found = await primaryUrl(withHostFirst(`127.0.0.1:${closed}`))
    expect(found).toBe(hostUrls(withHostFirst(`127.0.0.1:${closed}`))[1])
    await expect(primaryUrl(`postgres://postgres@127.0.0.1:${closed},127.0.0.1:${closed}/x`)).rejects.toThrow('no primary among the 2 hosts')
  })

  it('a pool connects through the hosts that answer', async () => {
    const pool = createSql(withHostFirst(`127.0.0.1:${await freePort()}`), { max: 2 })
    try {
      expect((await pool`select 1 as one`)[0].one).toBe(1)
    } finally {
      await pool.end({ timeout: 1 })
    }
  })

  it('with every host down, a call fails within its deadline as not sent (postgres.js alone would wait for ever)', async () => {
    const [a, b] = [await freePort(), await freePort()]
    const pool = createSql(`postgres://postgres@127.0.0.1:${a},127.0.0.1:${b}/x`, { max: 1 })
    const db = gated(pool, new Gate(1, 10, 1_000), { queryTimeoutMs: 800 })
    try {
      const started = performance.now()
      const error = await db`select 1`.catch((e) => e)
      expect(error).toBeInstanceOf(DatabaseUnreachableError)
      expect(error.unreached).toBe('not-sent')
      expect(performance.now() - started).toBeLessThan(3_000)
    } finally {
      await pool.end({ timeout: 0 })
    }
  })
})

describe('a call whose deadline passes while its session is still starting', () => {
  it('never runs, and leaves the session free for the next call (else the pool would lose it for good)', async () => {
    const upstream = new URL(testDatabaseUrl())
    const proxy = await FaultyProxy.start(Number(upstream.port))
    const viaProxy = new URL(upstream)
    viaProxy.port = String(proxy.port)
    // One session, whose startup (several round trips at 400 ms each) outlasts the first call's deadline.
    const pool = createSql(viaProxy.toString(), { max: 1 })
    const db = gated(pool, new Gate(1, 10, 5_000), { queryTimeoutMs: 300 })
    try {
      proxy.latencyMs = 400
      const error = await db`select 1`.catch((e) => e)
      expect(error).toBeInstanceOf(DatabaseUnreachableError)
      expect(error.unreached).toBe('not-sent')
      proxy.latencyMs = 0
      // The same session, once started, takes the next call (postgres.js 3.4.9 unpatched: never again).
      const slow = gated(pool, new Gate(1, 10, 5_000), { queryTimeoutMs: 10_000 })
      const [{ one }] = await slow`select 1 as one`
      expect(one).toBe(1)
    } finally {
      await pool.end({ timeout: 1 })
      await proxy.stop()
    }
  })
})

describe('a session on a read-only server (25006)', () => {
  it('is dropped with its pool, and the statement, which never ran, runs again on the new pool', async () => {
    await sql`create table if not exists public.failover_writes (id bigint generated always as identity primary key)`
    const pools: Sql[] = []
    const make = () => {
      // The first pool stands for sessions left on a standby: every write is refused with 25006.
      const pool = createSql(testDatabaseUrl(), { max: 2 })
      const readOnly = pools.length === 0
      pools.push(pool)
      if (!readOnly) return pool
      return createSql(testDatabaseUrl() + (testDatabaseUrl().includes('?') ? '&' : '?') + 'default_transaction_read_only=on', { max: 2 })
    }
    const replaced: string[] = []
    const pool = replaceablePool(make, { onReplace: (reason) => replaced.push(reason) })
    const db = gated(pool, new Gate(2, 10, 1_000), { queryTimeoutMs: 5_000, onReadOnly: () => pool.replace('25006') })
    try {
      const [row] = await db`insert into public.failover_writes default values returning id`
      expect(row.id).toBeGreaterThan(0)
      expect(replaced).toEqual(['25006'])
      // At most one replacement a second, however many sessions report it.
      expect(pool.replace('again')).toBe(false)
    } finally {
      await pool.end({ timeout: 1 })
      await Promise.all(pools.map((p) => p.end({ timeout: 1 })))
      await sql`drop table public.failover_writes`
    }
  })
})
