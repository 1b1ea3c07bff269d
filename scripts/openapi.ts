/**
 * Writes the OpenAPI document the service serves at /swagger/json:
 * `bun scripts/openapi.ts [out.json]` (stdout without a file). No database
 * is needed: postgres.js connects lazily, and the document never queries.
 * `npm run lint:openapi` lints it with Redocly (redocly.yaml).
 */
import { createSql } from '../src/db/client.ts'
import { createApp } from '../src/app.ts'

const sql = createSql('postgres://nobody@127.0.0.1:1/none')
const response = await createApp(sql).handle(new Request('http://localhost/swagger/json'))
if (response.status !== 200) throw new Error(`/swagger/json answered ${response.status}: ${await response.text()}`)
const document = JSON.stringify(await response.json(), null, 2) + '\n'
if (process.argv[2]) await Bun.write(process.argv[2], document)
else console.log(document.trimEnd())
await sql.end()
