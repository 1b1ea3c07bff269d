/**
 * `npm run db:migrate`: migrates DATABASE_URL with dbmate, as before; with
 * SHARD_URLS set, DATABASE_URL is the router and every shard is migrated
 * too, then the router's cluster is configured (scripts/shards.ts,
 * docs/scale-out.md).
 */
import { migrate } from '../src/db/migrate.ts'
import { migrateSharded, parseShardUrls, redact, waitForServer } from './shards.ts'

const databaseUrl = process.env.DATABASE_URL
if (!databaseUrl) {
  console.error('DATABASE_URL is not set: the database to migrate (with SHARD_URLS: the router)')
  process.exit(2)
}
const shardUrls = parseShardUrls(process.env.SHARD_URLS)
if (shardUrls.length === 0) {
  await waitForServer(databaseUrl)
  await migrate(databaseUrl)
  console.log(`migrated ${redact(databaseUrl)}`)
} else {
  await migrateSharded({ routerUrl: databaseUrl, shardUrls }, (line) => console.log(line))
}
