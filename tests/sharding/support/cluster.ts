import { createSql, type Sql } from '../../../src/db/client.ts'
import { migrate } from '../../../src/db/migrate.ts'
import { shardingAvailable, startLocalCluster, type ClusterOptions, type LocalCluster } from '../../../scripts/local-shards.ts'
import { recyclablePool } from '../../support/db.ts'

/**
 * Whether the sharding tests run here: they need PostgreSQL 15 and PL/Proxy
 * (scripts/ci-sharding.sh installs them). Without them they are skipped;
 * SHARDING_TESTS=0 skips them anyway, SHARDING_TESTS=1 fails instead of skipping.
 */
export const sharding = (() => {
  if (process.env.SHARDING_TESTS === '0') return { ok: false as const, reason: 'SHARDING_TESTS=0' }
  return shardingAvailable()
})()
if (!sharding.ok) {
  // scripts/ci-sharding.sh sets SHARDING_TESTS=1: there, a skip would pass CI without testing anything.
  if (process.env.SHARDING_TESTS === '1') throw new Error(`SHARDING_TESTS=1, but the sharding tests cannot run here: ${sharding.reason}`)
  console.warn(`tests/sharding skipped: ${sharding.reason}`)
}

export interface TestCluster extends LocalCluster {
  /** The router as its owner (fixtures, checks). */
  router: Sql
  /** The router as the service connects: waitress_app acting as waitress_api. */
  api: Sql
  /** Each shard as its owner, in shard order. */
  shards: Sql[]
  close(): Promise<void>
}

/**
 * The cluster's pools are recyclable (tests/support/db.ts): before the
 * invariant checker reads the shards' deadlock counters it ends their
 * sessions, and with the router's sessions their PL/Proxy connections to the
 * shards, so that every one publishes what it counted.
 */
export async function startTestCluster(options: ClusterOptions = {}): Promise<TestCluster> {
  const cluster = await startLocalCluster(options)
  const router = recyclablePool(cluster.routerUrl, { max: 10 })
  const api = recyclablePool(cluster.appUrl, { max: 10, role: 'waitress_api' })
  const shards = cluster.shardUrls.map((url) => recyclablePool(url, { max: 5 }))
  return {
    ...cluster,
    router,
    api,
    shards,
    async close() {
      await Promise.all([router, api, ...shards].map((sql) => sql.end({ timeout: 5 })))
      cluster.destroy()
    },
  }
}

let shared: Promise<TestCluster> | undefined

const ID_TABLES = ['products', 'carts', 'cart_items', 'orders', 'order_items', 'stock_movements']

/**
 * One router and two shards on one server, shared by the test files of this
 * process (removed at exit). Their ids start above 1,000,000, each table's
 * in a range of its own, so that a test can tell an id from a quantity or a
 * price in a message, and a product's id from an order's.
 */
export function sharedCluster(): Promise<TestCluster> {
  shared ??= (async () => {
    const cluster = await startTestCluster({ shards: 2, prefix: 'shared_' })
    // Each table's ids in a range of their own (1.6 M, 3.2 M, ...), so that a number names one thing.
    for (const sql of cluster.shards)
      for (const [i, table] of ID_TABLES.entries())
        await sql.unsafe(`select setval(pg_get_serial_sequence('waitress.${table}', 'id'), ${-100000 * (i + 1)})`)
    return cluster
  })()
  return shared
}

export interface SingleDatabase {
  owner: Sql
  api: Sql
  close(): Promise<void>
}

/**
 * A single database (db/migrations only) on the cluster's server, ids above
 * 1,000,000: what the router must be indistinguishable from.
 */
export async function singleReference(cluster: TestCluster, name = 'single_reference'): Promise<SingleDatabase> {
  const url = cluster.routerServer.url(name)
  await migrate(url)
  const owner = createSql(url, { max: 5 })
  for (const [i, table] of ID_TABLES.entries())
    await owner.unsafe(`select setval(pg_get_serial_sequence('waitress.${table}', 'id'), ${1_000_000 * (i + 1)})`)
  const api = createSql(url, { max: 5, role: 'waitress_api' })
  return { owner, api, close: async () => void (await Promise.all([owner.end({ timeout: 5 }), api.end({ timeout: 5 })])) }
}

let nextUser = 200_000_000 + Math.floor(Math.random() * 1_000_000) * 100

/** User ids whose partition is on the given shard (of a cluster of `shards`), each used once. */
export async function usersOn(router: Sql, shard: number, count: number): Promise<number[]> {
  const found: number[] = []
  while (found.length < count) {
    const from = nextUser
    nextUser += 200
    const rows = await router<{ id: number }[]>`
      select s as id from generate_series(${from}::bigint, ${from + 199}::bigint) s
       where (waitress.partition_map())[waitress.partition_of(s) + 1] = ${shard}`
    found.push(...rows.map((row) => row.id))
  }
  return found.slice(0, count)
}

export interface ProductRow {
  id: number
  name: string
  seller_id: number
  price: number
  stock: number
}

export async function createProduct(sql: Sql, fields: { name?: string; seller_id: number; price?: number; stock?: number; weight?: number; active?: boolean }): Promise<ProductRow> {
  const [row] = await sql<{ p: ProductRow }[]>`
    select api.create_product(${fields.name ?? 'Kopi'}, ${fields.seller_id}, ${fields.price ?? 1000}, ${fields.stock ?? 10},
                              ${fields.weight ?? 100}, ${fields.active ?? true}) as p`
  return row.p
}

export async function cartOf(sql: Sql, userId: number): Promise<{ id: number; user_id: number; items: any[] }> {
  const [row] = await sql<{ c: { id: number; user_id: number; items: any[] } }[]>`select api.cart_for_user(${userId}) as c`
  return row.c
}

export async function addItem(sql: Sql, cartId: number, productId: number, quantity: number): Promise<number> {
  const [row] = await sql<{ id: number }[]>`select (api.add_cart_item(${cartId}, ${productId}, ${quantity})->>'id')::bigint as id`
  return row.id
}

/** The shard (index) a database-side row is on, found by asking each shard. */
export async function shardsHolding(cluster: TestCluster, table: string, id: number): Promise<number[]> {
  const found: number[] = []
  for (const [k, sql] of cluster.shards.entries()) {
    const [{ n }] = await sql.unsafe(`select count(*)::int as n from waitress.${table} where id = $1`, [id])
    if (n > 0) found.push(k)
  }
  return found
}

/** The error a statement raised, as a plain object (code, message, detail, hint). */
export async function errorOf(query: Promise<unknown>): Promise<{ code: string; message: string; detail?: string; hint?: string }> {
  try {
    await query
  } catch (error: any) {
    return { code: error.code, message: error.message, detail: error.detail, hint: error.hint }
  }
  throw new Error('expected the statement to fail')
}
