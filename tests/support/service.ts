import { resolve } from 'node:path'
import type { Subprocess } from 'bun'
import { freePort } from '../../src/db/embedded.ts'

export interface RunningService {
  child: Subprocess<'ignore', 'pipe', 'pipe'>
  baseUrl: string
  port: number
}

/**
 * Starts the real service (src/server.ts) as its own process on a free port,
 * against `databaseUrl`, and waits until it answers /healthz.
 */
export async function startService(databaseUrl: string, env: Record<string, string> = {}, port?: number): Promise<RunningService> {
  port ??= await freePort()
  const child = Bun.spawn([process.execPath, resolve(import.meta.dir, '../../src/server.ts')], {
    env: {
      ...process.env,
      DATABASE_URL: databaseUrl,
      PORT: String(port),
      HOST: '127.0.0.1',
      MIGRATE_ON_START: 'false',
      EXPIRE_ORDERS_EVERY: '0',
      LOG_FORMAT: 'json',
      ...env,
    },
    stdin: 'ignore',
    stdout: 'pipe',
    stderr: 'pipe',
  })
  const baseUrl = `http://127.0.0.1:${port}`
  for (let attempt = 0; ; attempt++) {
    if (await fetch(`${baseUrl}/healthz`).then((r) => r.ok, () => false)) break
    if (child.exitCode !== null || attempt > 200)
      throw new Error(`the service did not start: ${await new Response(child.stderr).text()}`)
    await Bun.sleep(50)
  }
  return { child, baseUrl, port }
}
