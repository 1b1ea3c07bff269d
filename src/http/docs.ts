import { Elysia } from 'elysia'
// Swagger UI's browser assets, pinned in package.json, imported as text when
// this module loads: nothing reads the filesystem at request time, and no
// request leaves the page for a CDN.
import swaggerUiBundle from '../../node_modules/swagger-ui-dist/swagger-ui-bundle.js' with { type: 'text' }
import swaggerUiCss from '../../node_modules/swagger-ui-dist/swagger-ui.css' with { type: 'text' }
import type { AccessPlugin } from './access.ts'

/** The version of swagger-ui-dist in package.json: a new version is a new asset URL. */
const SWAGGER_UI_VERSION = '5.35.0'

const escapeHtml = (text: string) =>
  text.replace(/[&<>"']/g, (c) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' })[c]!)

const page = (title: string, path: string) => `<!doctype html>
<html lang="en">
  <head>
    <meta charset="utf-8" />
    <meta name="viewport" content="width=device-width, initial-scale=1" />
    <title>${escapeHtml(title)}</title>
    <link rel="stylesheet" href="${path}/swagger-ui-${SWAGGER_UI_VERSION}.css" />
  </head>
  <body>
    <div id="swagger-ui"></div>
    <script src="${path}/swagger-ui-bundle-${SWAGGER_UI_VERSION}.js"></script>
    <script>
      // validatorUrl: null, so the page never asks validator.swagger.io about the document.
      window.ui = SwaggerUIBundle({ url: '${path}/json', dom_id: '#swagger-ui', validatorUrl: null, deepLinking: true })
    </script>
  </body>
</html>`

const asset = (body: string, type: string) => () =>
  new Response(body, { headers: { 'content-type': type, 'cache-control': 'public, max-age=31536000, immutable' } })

/**
 * The API's documentation, for anyone (access: probe): the page at `path`
 * and `path`/, the OpenAPI document at `path`/json (built on first request,
 * once every route is registered), and the page's assets, all from this service.
 */
export function docsRoutes(access: AccessPlugin, options: { title: string; path?: string; document: () => unknown }) {
  const path = options.path ?? '/swagger'
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
    .get(`${path}/swagger-ui-bundle-${SWAGGER_UI_VERSION}.js`, asset(swaggerUiBundle, 'text/javascript; charset=utf-8'), hidden)
    .get(`${path}/swagger-ui-${SWAGGER_UI_VERSION}.css`, asset(swaggerUiCss, 'text/css; charset=utf-8'), hidden)
}
