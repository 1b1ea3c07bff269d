import { Elysia } from 'elysia'
import type { AccessPlugin } from './access.ts'
import { ApiError } from './errors.ts'

/** The version of swagger-ui-dist in package.json: a new version is a new asset URL. */
export const SWAGGER_UI_VERSION = '5.35.0'

/**
 * Swagger UI's browser assets (swagger-ui-dist), as text. The server entries
 * pass them in (src/http/swagger-ui-assets.ts imports them as text when it
 * loads: nothing reads the filesystem at request time, and no request leaves
 * the page for a CDN). Under workerd they are static assets, answered before
 * the worker runs (wrangler.toml [assets], scripts/workers-assets.mjs).
 */
export interface DocsAssets {
  script: string
  stylesheet: string
}

/** Where the page asks for its assets, under the docs path. */
export const docsAssetPaths = (path = '/swagger') => ({
  script: `${path}/swagger-ui-bundle-${SWAGGER_UI_VERSION}.js`,
  stylesheet: `${path}/swagger-ui-${SWAGGER_UI_VERSION}.css`,
})

const escapeHtml = (text: string) =>
  text.replace(/[&<>"']/g, (c) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' })[c]!)

const page = (title: string, path: string) => `<!doctype html>
<html lang="en">
  <head>
    <meta charset="utf-8" />
    <meta name="viewport" content="width=device-width, initial-scale=1" />
    <title>${escapeHtml(title)}</title>
    <link rel="stylesheet" href="${docsAssetPaths(path).stylesheet}" />
  </head>
  <body>
    <div id="swagger-ui"></div>
    <script src="${docsAssetPaths(path).script}"></script>
    <script>
      // validatorUrl: null, so the page never asks validator.swagger.io about the document.
      window.ui = SwaggerUIBundle({ url: '${path}/json', dom_id: '#swagger-ui', validatorUrl: null, deepLinking: true })
    </script>
  </body>
</html>`

const asset = (body: () => string | undefined, type: string) => () => {
  const text = body()
  if (text === undefined) throw new ApiError(404, 'this runtime serves the docs assets itself')
  return new Response(text, { headers: { 'content-type': type, 'cache-control': 'public, max-age=31536000, immutable' } })
}

/**
 * The API's documentation, for anyone (access: probe): the page at `path`
 * and `path`/, the OpenAPI document at `path`/json (built on first request,
 * once every route is registered), and the page's assets, all from this service.
 */
export function docsRoutes(access: AccessPlugin, options: { title: string; path?: string; document: () => unknown; assets?: DocsAssets }) {
  const path = options.path ?? '/swagger'
  const paths = docsAssetPaths(path)
  const html = page(options.title, path)
  let document: string | undefined
  const servePage = () => new Response(html, { headers: { 'content-type': 'text/html; charset=utf-8' } })
  const hidden = { access: 'probe', detail: { hide: true } } as const
  return new Elysia({ name: 'waitress/docs' })
    .use(access)
    .get(path, servePage, hidden)
    .get(`${path}/`, servePage, hidden)
    .get(
      `${path}/json`,
      () => {
        document ??= JSON.stringify(options.document())
        return new Response(document, { headers: { 'content-type': 'application/json; charset=utf-8' } })
      },
      hidden,
    )
    .get(paths.script, asset(() => options.assets?.script, 'text/javascript; charset=utf-8'), hidden)
    .get(paths.stylesheet, asset(() => options.assets?.stylesheet, 'text/css; charset=utf-8'), hidden)
}
