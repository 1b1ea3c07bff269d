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
