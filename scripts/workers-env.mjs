// Writes the configuration variables set in this environment (and only
// those: loadConfig's list) to dist/workers-dev.env, which npm run
// start:workers hands to wrangler dev (--env-file): the worker then reads
// PORT's siblings (DATABASE_URL, APP_DATABASE_URL, RATE_LIMIT, …) from the
// environment exactly like npm start does. The file is git-ignored and
// readable by its owner only (it may hold passwords).
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs'

const source = readFileSync('src/config.ts', 'utf8')
const list = /export const CONFIG_VARIABLES = \[([\s\S]*?)\] as const/.exec(source)?.[1]
if (!list) throw new Error('CONFIG_VARIABLES not found in src/config.ts')
const names = [...list.matchAll(/'([A-Z0-9_]+)'/g)].map((m) => m[1])
// PORT and HOST are wrangler's (--port, --ip); the worker has no socket of its own.
const lines = names
  .filter((name) => name !== 'PORT' && name !== 'HOST' && process.env[name] !== undefined && process.env[name] !== '')
  .map((name) => `${name}=${JSON.stringify(process.env[name])}`)
mkdirSync('dist', { recursive: true })
writeFileSync('dist/workers-dev.env', lines.join('\n') + '\n', { mode: 0o600 })
console.error(`dist/workers-dev.env: ${lines.length} configuration variables from the environment`)
