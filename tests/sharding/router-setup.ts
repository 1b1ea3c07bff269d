/**
 * Preload of the unchanged HTTP suite against a sharded deployment:
 *
 *   bun --config=tests/sharding/router.bunfig.toml test tests/http
 *
 * (scripts/ci-sharding.sh runs it). Instead of tests/setup.ts's single
 * database, a router and two shards on PostgreSQL 15 with PL/Proxy; the
 * tests' pools connect to the router exactly as they would to one database
 * (the owner's for fixtures, waitress_app acting as waitress_api for the
 * app). Their direct reads of tables go through a test-only facade
 * (support/facade.ts).
 */
import { afterAll } from 'bun:test'
import { shardingAvailable, startLocalCluster } from '../../scripts/local-shards.ts'
import { closeTestSql } from '../support/db.ts'
import { installFacade } from './support/facade.ts'

const available = shardingAvailable()
if (!available.ok) throw new Error(`cannot run the HTTP suite on shards here: ${available.reason}`)

const cluster = await startLocalCluster({ shards: 2 })
await installFacade(cluster.routerUrl, cluster.shardUrls)
process.env.WAITRESS_TEST_DATABASE_URL = cluster.routerUrl
process.env.WAITRESS_TEST_APP_DATABASE_URL = cluster.appUrl
process.env.WAITRESS_TEST_APP_LOGIN = 'waitress_app'
process.env.WAITRESS_SHARDED = '1'

afterAll(async () => {
  await closeTestSql()
  cluster.destroy()
})
