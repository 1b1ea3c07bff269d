// Copies Swagger UI's two browser assets where wrangler serves static files
// ([assets] in wrangler.toml), under the paths the docs page asks for: under
// workerd they are answered before the worker runs (wrangler's bundler refuses
// the text imports the server entries use for them).
import { copyFileSync, mkdirSync, readFileSync } from 'node:fs'

const version = JSON.parse(readFileSync('node_modules/swagger-ui-dist/package.json', 'utf8')).version
const docs = readFileSync('src/http/docs.ts', 'utf8')
if (!docs.includes(`SWAGGER_UI_VERSION = '${version}'`))
  throw new Error(`swagger-ui-dist is ${version} but src/http/docs.ts names another version: update SWAGGER_UI_VERSION`)
mkdirSync('dist/workers-assets/swagger', { recursive: true })
copyFileSync('node_modules/swagger-ui-dist/swagger-ui-bundle.js', `dist/workers-assets/swagger/swagger-ui-bundle-${version}.js`)
copyFileSync('node_modules/swagger-ui-dist/swagger-ui.css', `dist/workers-assets/swagger/swagger-ui-${version}.css`)
console.error(`copied Swagger UI ${version} to dist/workers-assets/swagger`)
