import { describe, expect, it } from 'bun:test'
import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join, resolve } from 'node:path'

/** Reads the server's JSON log lines until `done` says so. */
async function readLog(stream: ReadableStream<Uint8Array>, done: (lines: any[]) => boolean): Promise<any[]> {
  const lines: any[] = []
  const decoder = new TextDecoder()
  let buffered = ''
  for await (const chunk of stream) {
    buffered += decoder.decode(chunk, { stream: true })
    let newline: number
    while ((newline = buffered.indexOf('\n')) >= 0) {
      const line = buffered.slice(0, newline)
      buffered = buffered.slice(newline + 1)
      if (line.startsWith('{')) lines.push(JSON.parse(line))
    }
    if (done(lines)) break
  }
  return lines
}

describe('npm start on the embedded PostgreSQL', () => {
  it('makes its own waitress_app login, says when authentication is off, and serves', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'waitress-server-'))
    const env: Record<string, string> = {
      ...(process.env as Record<string, string>),
      PORT: '0',
      HOST: '127.0.0.1',
      EMBEDDED_PG_DIR: join(dir, 'data'),
      PURGE_INTERVAL: '0',
    }
    for (const name of ['AUTH_JWT_SECRET', 'DATABASE_URL', 'APP_DATABASE_URL', 'NODE_ENV', 'RATE_LIMIT']) delete env[name]
    const child = Bun.spawn([process.execPath, 'src/server.ts'], { cwd: resolve(import.meta.dir, '../..'), env, stdout: 'pipe', stderr: 'inherit' })
    try {
      const lines = await readLog(child.stdout, (seen) => seen.some((line) => line.msg === 'listening'))
      const ready = lines.find((line) => line.msg === 'database ready')
      expect(ready.requests_as).toBe('waitress_app, a fresh password at every start')
      expect(ready.database).not.toContain('waitress@') // no password in the log
      expect(lines.find((line) => line.msg === 'authentication off')).toMatchObject({ level: 'warn', reason: expect.stringContaining('AUTH_JWT_SECRET') })
      const url = lines.find((line) => line.msg === 'listening').url as string

      expect((await fetch(`${url}/healthz`)).status).toBe(200)
      const created = await fetch(`${url}/products`, {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify({ name: 'Booted', seller_id: 1, price: 1, stock: 1, weight: 1 }),
      })
      expect(created.status).toBe(201)
    } finally {
      child.kill('SIGTERM')
      expect(await child.exited).toBe(0)
      rmSync(dir, { recursive: true, force: true })
    }
  })
})
