import { createSql } from './client.ts'

/** The purge of src/db/maintenance.ts (purgeIfDue), as one statement under the same lease. */
const PURGE_COMMAND =
  "with lease as (select api.take_job_lease('purge', interval '50 minutes') as taken) " +
  'select case when taken then api.purge_idempotency_keys() end, case when taken then api.purge_rate_limit_windows() end from lease'

/** The names of this database's jobs in cron.job. */
export const cronJobNames = (database: string) => ({ expire: `waitress-expire-orders@${database}`, purge: `waitress-purge@${database}` })

export interface CronSchedule {
  /** ORDER_PAYMENT_TTL, in seconds: the same setting the service reads. */
  ttlSeconds: number
  /** The login the jobs run as (it must have LOGIN): the service's own, so they act as waitress_api by its role defaults. */
  login: string
  /** cron syntax; pg_cron 1.4 (Debian 12) has no seconds schedules. */
  schedule?: string
}

/**
 * Schedules expiry and purges in pg_cron for DATABASE_URL's database, as
 * `login`. pg_cron must be in shared_preload_libraries with
 * cron.use_background_workers = on (the jobs then need no password); its
 * extension lives in cron.database_name (default postgres), where this
 * creates it if needed, which takes a superuser. The jobs call the same
 * lease functions as the services' timers, so both may run side by side.
 * Scheduling again replaces the jobs. Returns their ids.
 */
export async function schedulePgCron(adminUrl: string, options: CronSchedule): Promise<{ expire: number; purge: number; cronDatabase: string }> {
  const admin = createSql(adminUrl, { max: 1 })
  let database: string
  let cronDatabase: string | null
  try {
    ;[{ database, cronDatabase }] = await admin<{ database: string; cronDatabase: string | null }[]>`
      select current_database() as database, current_setting('cron.database_name', true) as "cronDatabase"`
  } finally {
    await admin.end({ timeout: 5 })
  }
  if (!cronDatabase)
    throw new Error("pg_cron is not loaded: add it to shared_preload_libraries (and cron.use_background_workers = on), then restart PostgreSQL")
  const url = new URL(adminUrl)
  url.pathname = `/${cronDatabase}`
  const cron = createSql(url.toString(), { max: 1 })
  const names = cronJobNames(database)
  const schedule = options.schedule ?? '* * * * *'
  const ttl = Math.round(options.ttlSeconds)
  try {
    await cron`create extension if not exists pg_cron`
    await cron`select cron.unschedule(jobid) from cron.job where jobname in (${names.expire}, ${names.purge})`
    const [{ expire }] = await cron<{ expire: number }[]>`
      select cron.schedule_in_database(${names.expire}, ${schedule},
               format('select api.expire_orders_due(make_interval(secs => %s), interval %L, 10000)', ${ttl}::integer, '50 seconds'),
               ${database}, ${options.login}) as expire`
    const [{ purge }] = await cron<{ purge: number }[]>`
      select cron.schedule_in_database(${names.purge}, '17 * * * *', ${PURGE_COMMAND}, ${database}, ${options.login}) as purge`
    return { expire: Number(expire), purge: Number(purge), cronDatabase }
  } finally {
    await cron.end({ timeout: 5 })
  }
}

/** Removes this database's jobs. */
export async function unschedulePgCron(adminUrl: string, cronDatabase: string): Promise<void> {
  const database = decodeURIComponent(new URL(adminUrl).pathname.slice(1))
  const url = new URL(adminUrl)
  url.pathname = `/${cronDatabase}`
  const cron = createSql(url.toString(), { max: 1 })
  const names = cronJobNames(database)
  try {
    await cron`select cron.unschedule(jobid) from cron.job where jobname in (${names.expire}, ${names.purge})`
  } finally {
    await cron.end({ timeout: 5 })
  }
}
