/**
 * Expiry from pg_cron (Debian's postgresql-15-cron, 1.4: no seconds
 * schedules, so this waits for the next minute, 75 s at most), with the TTL
 * from ORDER_PAYMENT_TTL as the service reads it, run as the service's login.
 * Runs where the test server preloads pg_cron (.ci/run's PostgreSQL 15);
 * skipped, saying so, elsewhere.
 */
import { afterAll, beforeAll, describe, expect, it } from 'bun:test'
import { loadConfig } from '../../src/config.ts'
import { applySessionDefaults } from '../../src/db/app-login.ts'
import { schedulePgCron, unschedulePgCron } from '../../src/db/pg-cron.ts'
import { sessionDefaults } from '../../src/runtime/service.ts'
import { appLogin, testDatabaseUrl, testSql } from '../support/db.ts'
import { agePastDeadline, createProduct, placedOrder, stockOf } from '../support/fixtures.ts'
import { until } from '../support/wait.ts'

const sql = testSql()
const [{ cronDatabase }] = await sql<{ cronDatabase: string | null }[]>`select current_setting('cron.database_name', true) as "cronDatabase"`
if (!cronDatabase) console.warn('pg_cron is not preloaded on the test server: tests/runtimes/pg-cron.test.ts skipped (.ci/run runs it on PostgreSQL 15)')

describe.skipIf(!cronDatabase)('expiry scheduled in pg_cron', () => {
  let jobs: Awaited<ReturnType<typeof schedulePgCron>> | undefined

  beforeAll(async () => {
    // The job session starts as the login's role defaults say: waitress_api.
    await applySessionDefaults(sql, appLogin(), sessionDefaults(loadConfig({})))
  })

  afterAll(async () => {
    if (jobs) await unschedulePgCron(testDatabaseUrl(), jobs.cronDatabase)
  })

  it('expires an overdue order at the next minute, as the service login, with the TTL of ORDER_PAYMENT_TTL', async () => {
    const config = loadConfig({ ORDER_PAYMENT_TTL: '10m' })
    const product = await createProduct(sql, { stock: 5 })
    const overdue = await placedOrder(sql, product.id, 2)
    const fresh = await placedOrder(sql, product.id, 1)
    await agePastDeadline(sql, [overdue])
    // The lease is shared with every service's timer: none ran it this minute.
    await sql`delete from waitress.job_leases where job = 'expire_orders'`

    jobs = await schedulePgCron(testDatabaseUrl(), { ttlSeconds: config.orderPaymentTtlSeconds, login: appLogin() })
    const cron = (await import('postgres')).default(
      Object.assign(new URL(testDatabaseUrl()), { pathname: `/${jobs.cronDatabase}` }).toString(),
      { max: 1, onnotice: () => {} },
    )
    try {
      const [job] = await cron<{ command: string; username: string; database: string }[]>`
        select command, username, database from cron.job where jobid = ${jobs.expire}`
      expect(job.command).toContain('make_interval(secs => 600)')
      expect(job).toMatchObject({ username: appLogin(), database: decodeURIComponent(new URL(testDatabaseUrl()).pathname.slice(1)) })

      // pg_cron runs it at the next minute: at most 60 s, and the deadline leaves a busy machine room.
      const jobId = jobs.expire
      const run = await until(
        'pg_cron to run the expiry job',
        async () => {
          const [row] = await cron<{ status: string; return_message: string }[]>`
            select status, return_message from cron.job_run_details
             where jobid = ${jobId} and status in ('succeeded', 'failed') order by runid desc limit 1`
          return row
        },
        { deadlineMs: 85_000, everyMs: 1_000 },
      )
      expect(run).toMatchObject({ status: 'succeeded' })
    } finally {
      await cron.end({ timeout: 5 })
    }
    const states = await sql<{ id: number; state: string }[]>`select id, state::text from waitress.orders where id in (${overdue}, ${fresh}) order by id`
    expect([...states]).toEqual([
      { id: overdue, state: 'expired' },
      { id: fresh, state: 'pending' },
    ])
    expect(await stockOf(sql, product.id)).toBe(4)
  }, 110_000)
})
