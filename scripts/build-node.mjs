// npm run build:node: bundles the Node entry and the project's own modules into
// dist/node/server.mjs (Node 20 runs no TypeScript). npm packages stay external:
// Node resolves them from node_modules at run time with its own export
// conditions (postgres then loads its Node build).
import { build } from 'esbuild'

const result = await build({
  entryPoints: ['src/entries/node.ts'],
  outfile: 'dist/node/server.mjs',
  bundle: true,
  platform: 'node',
  target: 'node20',
  format: 'esm',
  packages: 'external',
  sourcemap: true,
  metafile: true,
  logLevel: 'warning',
})
const inputs = Object.keys(result.metafile.inputs).length
console.error(`built dist/node/server.mjs from ${inputs} files`)
