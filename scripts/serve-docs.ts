/**
 * Serves the API without a database, for looking at its documentation
 * (scripts/docs-screenshot.sh): every route that needs the database answers
 * 503, /swagger and /swagger/json work. PORT picks the port (0: a free one).
 */
import { createSql } from '../src/db/client.ts'
import { createApp } from '../src/app.ts'
import { swaggerUiAssets } from '../src/http/swagger-ui-assets.ts'

const app = createApp(createSql('postgres://nobody@127.0.0.1:1/none'), { docsAssets: swaggerUiAssets }).listen({ port: Number(process.env.PORT ?? 0), hostname: '127.0.0.1' })
console.log(`docs at http://127.0.0.1:${app.server!.port}/swagger`)
