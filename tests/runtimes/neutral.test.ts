import { describe, expect, it } from 'bun:test'
import { resolve } from 'node:path'

const root = resolve(import.meta.dir, '../..')
const check = (...args: string[]) => {
  const run = Bun.spawnSync(['node', 'scripts/check-neutral.mjs', ...args], { cwd: root, stdout: 'pipe', stderr: 'pipe' })
  return { code: run.exitCode, out: run.stdout.toString() + run.stderr.toString() }
}

describe('the runtime-neutral core', () => {
  it('bundles for a neutral platform with no runtime import or global (createApp and what workerd shares with it)', () => {
    const { code, out } = check()
    expect(out).toContain('core is runtime-neutral')
    expect(code).toBe(0)
  }, 60_000)

  it('fails, naming each, on node:fs, process.*, import.meta.dir and Bun.*', () => {
    const { code, out } = check('--entry', 'tests/runtimes/fixtures/not-neutral.ts')
    expect(code).toBe(1)
    for (const needle of ['imports node:fs', 'uses process.', 'uses import.meta.dir', 'uses Bun.']) expect(out).toContain(needle)
  }, 60_000)
})
