/**
 * Starting and stopping as a user does: npm start on the embedded PostgreSQL
 * stopped by SIGTERM sent to npm and by SIGHUP, a run killed outright whose
 * embedded server the next start finds and stops, and a database out of
 * reach reported in one line, exit 1, by every server runtime.
 */
import { describe, expect, it } from 'bun:test'
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { testDatabaseUrl } from '../support/db.ts'
import { until } from '../support/wait.ts'
import { descendants, lowFreePort, ROOT, RUNTIMES, startRuntime, type Runtime } from '../support/runtime.ts'

const postmasterPid = (dataDir: string) => Number(readFileSync(join(dataDir, 'postmaster.pid'), 'utf8').split('\n')[0])
const alive = (pid: number) => {
  try {
    process.kill(pid, 0)
    return !Bun.spawnSync(['ps', '-o', 'stat=', '-p', String(pid)]).stdout.toString().trim().startsWith('Z')
  } catch {
    return false
  }
}
const gone = async (pid: number) => await until(`process ${pid} (the embedded PostgreSQL) to exit`, () => !alive(pid), { everyMs: 100 })

describe('npm start on the embedded PostgreSQL', () => {
  it('stops with everything it started on SIGTERM to npm and on SIGHUP; after a SIGKILL the next start stops the leftover server', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'waitress-lifecycle-'))
    const dataDir = join(dir, 'data')
    const env = { DATABASE_URL: '', APP_DATABASE_URL: '', EMBEDDED_PG_DIR: dataDir, MIGRATE_ON_START: 'true', PURGE_INTERVAL: '0', EXPIRE_ORDERS_EVERY: '0' }
    try {
      // 1. SIGTERM to npm: npm passes it on (the script execs bun), bun drains and stops its PostgreSQL.
      let service = await startRuntime('bun', env, { timeoutMs: 120_000 })
      let postgres = postmasterPid(dataDir)
      expect(await service.stop()).toBe(0)
      expect(await gone(postgres)).toBe(true)
      expect(service.logs().at(-1)).toMatchObject({ msg: 'stopped' })

      // 2. SIGHUP (a closed terminal) to the server itself: the same orderly stop.
      service = await startRuntime('bun', env, { timeoutMs: 120_000 })
      postgres = postmasterPid(dataDir)
      const [bun] = descendants(service.child.pid).filter((pid) => pid !== postgres && descendants(pid).includes(postgres))
      process.kill(bun, 'SIGHUP')
      expect(await service.child.exited).toBe(0)
      expect(await gone(postgres)).toBe(true)
      expect(service.logs().find((line) => line.msg === 'shutting down: draining requests in flight')).toMatchObject({ signal: 'SIGHUP' })

      // 3. Killed outright: its PostgreSQL lives on, holding the data directory; the next start stops it and serves.
      service = await startRuntime('bun', env, { timeoutMs: 120_000 })
      postgres = postmasterPid(dataDir)
      for (const pid of descendants(service.child.pid).filter((pid) => pid !== postgres && !descendants(postgres).includes(pid))) process.kill(pid, 'SIGKILL')
      service.child.kill('SIGKILL')
      await service.child.exited
      expect(alive(postgres)).toBe(true)
      service = await startRuntime('bun', env, { timeoutMs: 120_000 })
      expect(service.logs().find((line) => line.msg === 'an embedded PostgreSQL left running by an earlier run: stopping it')).toMatchObject({
        level: 'warn',
        pid: postgres,
      })
      expect(alive(postgres)).toBe(false)
      expect((await fetch(`${service.baseUrl}/readyz`)).status).toBe(200)
      expect(await service.stop()).toBe(0)
      expect(existsSync(join(dataDir, 'postmaster.pid'))).toBe(false)
    } finally {
      rmSync(dir, { recursive: true, force: true })
    }
  }, 300_000)
})

/** Runs a server entry that should refuse to start; its whole output and exit code. */
async function refusal(runtime: Exclude<Runtime, 'workers'>, env: Record<string, string>) {
  const child = Bun.spawn(['npm', 'run', '--silent', RUNTIMES[runtime]], {
    cwd: ROOT,
    env: { ...(process.env as Record<string, string>), PORT: String(await lowFreePort()), HOST: '127.0.0.1', LOG_FORMAT: 'json', MIGRATE_ON_START: 'false', APP_DATABASE_URL: '', ...env },
    stdout: 'pipe',
    stderr: 'pipe',
  })
  const [code, stdout, stderr] = await Promise.all([child.exited, new Response(child.stdout).text(), new Response(child.stderr).text()])
  const lines = (stdout + stderr).split('\n').filter((line) => line.trim() !== '' && !line.startsWith('built dist/node'))
  return { code, lines }
}

describe('a database out of reach at start', () => {
  const admin = new URL(testDatabaseUrl())
  const variant = (change: (url: URL) => void) => {
    const url = new URL(admin)
    change(url)
    return url.toString()
  }
  const cases: [string, string, RegExp][] = [
    ['a wrong port', variant((url) => (url.port = '1')), /cannot use the database at postgres:\/\/.*:1\/.*ECONNREFUSED/],
    ['an unknown host', variant((url) => (url.hostname = 'no-such-host.invalid')), /cannot use the database at .*no-such-host\.invalid.*(ENOTFOUND|EAI_NONAME|getaddrinfo)/i],
    ['a wrong password', variant((url) => ((url.username = 'waitress_nobody'), (url.password = 'wrong'))), /cannot use the database at .*(password authentication failed|role "waitress_nobody" does not exist)/],
    ['a malformed URL', 'postgres://user:pw@localhost:notaport/db', /DATABASE_URL has a malformed port/],
  ]
  for (const runtime of ['bun', 'deno', 'node'] as const)
    it(`is one log line and exit 1 under ${runtime}: ${runtime === 'bun' ? cases.map(([name]) => name).join(', ') : 'a wrong port, a malformed URL'}`, async () => {
      for (const [name, url, reason] of runtime === 'bun' ? cases : [cases[0], cases[3]]) {
        const { code, lines } = await refusal(runtime, { DATABASE_URL: url })
        expect({ name, code, lines: lines.length }).toEqual({ name, code: 1, lines: 1 })
        const line = JSON.parse(lines[0])
        expect({ name, msg: line.msg, level: line.level }).toEqual({ name, msg: 'refusing to start', level: 'error' })
        expect(line.reason).toMatch(reason)
        // A URL in the line has its password masked.
        expect(line.reason).not.toMatch(/\/\/[^/:@]*:(?!\*\*\*@|password@)[^@/]*@/)
      }
    }, 120_000)
})
