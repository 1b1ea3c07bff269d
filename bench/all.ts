/**
 * `npm run bench`: every benchmark of the service in one command, one after
 * the other (never side by side: they would share the same two cores), each
 * writing its own report:
 *
 * 1. bench/bench.ts: one hot product, multi-line carts, the rest of the shop
 *    during a sale, hostile carts, 3 processes on one port, PgBouncer
 *    (docs/benchmarks.md). Every flag given goes to it.
 * 2. bench/shards.ts (`npm run bench:shards`): the many-sellers scenario on
 *    1, 2 and 4 shards, the router hop, a two-shard checkout against a
 *    one-shard one (docs/benchmarks-shards.md).
 * 3. bench/sync-standby.ts (`npm run bench:ha`): checkouts with and without
 *    the synchronous standby (docs/benchmarks-ha.json; docs/operations.md
 *    quotes it).
 *
 * 2 and 3 run only in a full run (no --quick, --scenarios or --out: those
 * ask for part of the first one), and need PostgreSQL 15's server binaries
 * (2 also PL/Proxy) from Debian's packages: without them they are skipped,
 * saying which package to install.
 */
import { existsSync } from 'node:fs'
import { join, resolve } from 'node:path'

const REPO = resolve(import.meta.dir, '..')
const PG15 = '/usr/lib/postgresql/15/bin/postgres'
const PLPROXY = '/usr/share/postgresql/15/extension/plproxy.control'

const args = process.argv.slice(2)
const partial = args.some((arg) => ['--quick', '--help', '-h'].includes(arg) || arg.startsWith('--scenarios') || arg.startsWith('--out'))

function run(script: string, scriptArgs: string[]): boolean {
  console.error(`== npm run bench: bun ${script} ${scriptArgs.join(' ')}`.trimEnd())
  const child = Bun.spawnSync([process.execPath, join(REPO, script), ...scriptArgs], { cwd: REPO, stdio: ['inherit', 'inherit', 'inherit'] })
  return child.exitCode === 0
}

let ok = run('bench/bench.ts', args)
if (!partial) {
  const missing = [!existsSync(PG15) && 'postgresql-15', !existsSync(PLPROXY) && 'postgresql-15-plproxy'].filter(Boolean)
  if (missing.length) {
    console.error(`== npm run bench: the sharded and synchronous-standby benchmarks need ${missing.join(' and ')} (apt-get install ${missing.join(' ')}): skipped`)
  } else {
    ok = run('bench/shards.ts', []) && ok
    ok = run('bench/sync-standby.ts', ['--out', join(REPO, 'docs/benchmarks-ha.json')]) && ok
  }
}
process.exit(ok ? 0 : 1)
