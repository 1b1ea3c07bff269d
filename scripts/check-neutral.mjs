// node scripts/check-neutral.mjs [--report] [--entry file]: bundles the core (createApp, and what the
// workers entry shares with it) for a neutral platform (esbuild platform: 'neutral') and fails (exit 1)
// when it, or anything it imports, reaches a runtime: node:* or Node builtins, bun, cloudflare:*, or (in
// the project's own files) Bun.*, Deno.*, process.*, import.meta.dir, require(), __dirname, Buffer.
// The postgres driver is the one allowed exception: it stays external (each runtime resolves its own build).
// Why grep the project's sources and not the bundle: Elysia's own runtime-guarded code mentions Bun.env
// and process.env; only the project's files must not. Why not bun build --target=browser: it silently
// stubs an ESM import of node:fs instead of failing.
import { build } from 'esbuild'
import { builtinModules } from 'node:module'
import { readFile } from 'node:fs/promises'
import { relative } from 'node:path'

const args = process.argv.slice(2)
const option = (name) => (args.includes(name) ? args[args.indexOf(name) + 1] : undefined)
const CORE_ENTRIES = option('--entry') ? [option('--entry')] : ['src/app.ts', 'src/config.ts', 'src/db/client.ts', 'src/db/app-login.ts', 'src/expiry.ts', 'src/observability/log.ts']
// --driver CONDITION: bundle postgres too, resolved with that export condition, to see what it pulls in.
const driverCondition = option('--driver')
const ALLOWED_EXTERNAL = driverCondition ? [] : ['postgres']
const report = args.includes('--report')
// --strict: ignore package.json "browser" fields (what a bundler for workerd, and every browser bundler, honours).
const strict = args.includes('--strict')

const builtins = new Set(builtinModules.flatMap((name) => [name, `node:${name}`]))
const RUNTIME_MODULE = /^(node:|bun$|bun:|cloudflare:|deno:|npm:|jsr:)/
// In the project's own files only: the runtimes' globals and Node-isms that break elsewhere.
const RUNTIME_GLOBAL = new RegExp(/\b(?:Bun|Deno)\s*\.|\bprocess\s*\.|\bimport\.meta\.(?:dir|dirname|filename|path|require)\b|\brequire\s*\(|\b__dirname\b|\b__filename\b|\bBuffer\s*\./.source, 'g')

const violations = []
const guard = {
  name: 'neutral-guard',
  setup(b) {
    b.onResolve({ filter: /.*/ }, (args) => {
      if (args.kind === 'entry-point') return
      if (RUNTIME_MODULE.test(args.path) || builtins.has(args.path)) {
        violations.push(`${relative('.', args.importer)} imports ${args.path}`)
        return { path: args.path, external: true }
      }
      if (ALLOWED_EXTERNAL.includes(args.path)) return { path: args.path, external: true }
    })
    b.onLoad({ filter: /\.[cm]?[jt]sx?$/ }, async (args) => {
      if (args.path.includes('/node_modules/')) return
      const source = await readFile(args.path, 'utf8')
      const code = source.replace(/\/\*[\s\S]*?\*\//g, '').replace(/(^|[^:])\/\/.*$/gm, '$1') // comments out
      code.split('\n').forEach((line, i) => {
        for (const hit of line.matchAll(RUNTIME_GLOBAL)) violations.push(`${relative('.', args.path)}:${i + 1} uses ${hit[0].trim()}`)
      })
      return { contents: source, loader: args.path.endsWith('.ts') ? 'ts' : 'js' }
    })
  },
}

const result = await build({
  entryPoints: CORE_ENTRIES,
  bundle: true,
  write: false,
  outdir: 'dist/neutral',
  platform: 'neutral',
  format: 'esm',
  target: 'es2022',
  // neutral resolves no package.json fields by default; these are what every runtime (and wrangler) honours.
  mainFields: strict ? ['module', 'main'] : ['browser', 'module', 'main'],
  conditions: driverCondition ? [driverCondition] : [],
  metafile: true,
  logLevel: 'silent',
  plugins: [guard],
}).catch((error) => {
  console.error(error.errors?.map((e) => `${e.location?.file ?? ''}: ${e.text}`).join('\n') ?? error)
  process.exit(2)
})

if (report) {
  const packages = {}
  for (const [file, input] of Object.entries(result.metafile.inputs)) {
    const name = file.match(/node_modules\/((?:@[^/]+\/)?[^/]+)/)?.[1] ?? '(project)'
    packages[name] = (packages[name] ?? 0) + input.bytes
  }
  console.log('bundled:', Object.entries(packages).sort((a, b) => b[1] - a[1]).map(([n, s]) => `${n} ${Math.round(s / 1024)}K`).join(', '))
  const externals = new Set(Object.values(result.metafile.outputs).flatMap((o) => o.imports.filter((i) => i.external).map((i) => i.path)))
  console.log('external imports:', [...externals].join(', '))
}
if (violations.length) {
  console.error(`core is not runtime-neutral (${violations.length}):\n  ` + [...new Set(violations)].join('\n  '))
  process.exit(1)
}
console.log(`core is runtime-neutral: ${CORE_ENTRIES.length} entries, ${Object.keys(result.metafile.inputs).length} modules, no runtime imports or globals`)
