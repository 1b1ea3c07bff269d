import { readFileSync } from 'node:fs'
import { join } from 'node:path'

/**
 * The command and environment that run the service of `root` as `npm start`
 * does: its package.json start script, in sh. A bench measures what users
 * run, the settings the script gives Bun included (MIMALLOC_PURGE_DELAY).
 * As npm does, the checkout's node_modules/.bin goes first on PATH (its
 * `bun`); the script execs it, so the child's pid is the service's.
 */
export function npmStart(root: string, env: Record<string, string | undefined>): { cmd: string[]; env: Record<string, string | undefined> } {
  const script: string = JSON.parse(readFileSync(join(root, 'package.json'), 'utf8')).scripts.start
  return { cmd: ['sh', '-c', script], env: { ...env, PATH: `${join(root, 'node_modules', '.bin')}:${env.PATH ?? ''}` } }
}

/**
 * The service of `root` as the benches and tests run it: `npm start` on
 * 127.0.0.1:`port` against `databaseUrl`, already migrated (MIGRATE_ON_START
 * false), with no expiry timer (EXPIRE_ORDERS_EVERY 0); `env` adds to or
 * overrides the environment it inherits.
 */
export function localService(root: string, databaseUrl: string, port: number, env: Record<string, string | undefined> = {}) {
  return npmStart(root, {
    ...process.env,
    DATABASE_URL: databaseUrl,
    PORT: String(port),
    HOST: '127.0.0.1',
    MIGRATE_ON_START: 'false',
    EXPIRE_ORDERS_EVERY: '0',
    ...env,
  })
}
