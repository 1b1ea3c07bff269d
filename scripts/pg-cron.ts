/**
 * npm run db:cron: expiry and purges from pg_cron instead of the services'
 * timers (then set EXPIRE_ORDERS_EVERY=0 and PURGE_INTERVAL=0 for the
 * services; both may also run side by side: they share the leases). The TTL
 * is ORDER_PAYMENT_TTL, the same setting the service reads; the jobs run as
 * the service's login (APP_DATABASE_URL's, else the derived one). See
 * docs/operations.md, "Expiry with pg_cron".
 */
import { loadConfig } from '../src/config.ts'
import { DERIVED_LOGIN } from '../src/db/app-login.ts'
import { schedulePgCron } from '../src/db/pg-cron.ts'
import { redact } from '../src/db/url.ts'

const config = loadConfig(process.env)
if (!config.databaseUrl) {
  console.error('npm run db:cron: DATABASE_URL is not set')
  process.exit(1)
}
const login = config.appDatabaseUrl ? decodeURIComponent(new URL(config.appDatabaseUrl).username) : DERIVED_LOGIN
try {
  const jobs = await schedulePgCron(config.databaseUrl, { ttlSeconds: config.orderPaymentTtlSeconds, login })
  console.log(
    `pg_cron (in database ${jobs.cronDatabase}) runs on ${redact(config.databaseUrl)} as ${login}: ` +
      `expire_orders every minute with a TTL of ${config.orderPaymentTtlSeconds} s (job ${jobs.expire}), purges hourly (job ${jobs.purge})`,
  )
} catch (error) {
  console.error(`npm run db:cron: ${(error as Error).message.split('\n')[0]}`)
  process.exit(1)
}
