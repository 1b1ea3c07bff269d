// Swagger UI's browser assets, pinned in package.json, imported as text when
// this module loads (Bun and Deno natively; esbuild for the Node build). The
// server entries pass them to createApp; not imported under workerd, where
// wrangler's bundler refuses text imports and the assets are static files.
import script from '../../node_modules/swagger-ui-dist/swagger-ui-bundle.js' with { type: 'text' }
import stylesheet from '../../node_modules/swagger-ui-dist/swagger-ui.css' with { type: 'text' }
import type { DocsAssets } from './docs.ts'

export const swaggerUiAssets: DocsAssets = { script, stylesheet }
