/**
 * npm run db:migrate: applies pending migrations to DATABASE_URL (dbmate, one
 * process at a time under an advisory lock), then readies the login the
 * service serves as, so every runtime can serve right after:
 *
 * - with APP_DATABASE_URL: that login's role defaults (role, statement_timeout,
 *   lock_timeout, idle_in_transaction_session_timeout) from the same settings
 *   the service reads;
 * - with DATABASE_URL alone: the login the service derives for itself
 *   (waitress_app_dev), which the workers entry cannot make (no start-up I/O).
 *
 * With SHARD_URLS set, DATABASE_URL is the router: every shard is migrated
 * too and the router's cluster configured (scripts/shards.ts,
 * docs/scale-out.md) before the login is readied on the router.
 *
 * Run it against PostgreSQL itself, not through a transaction pooler: dbmate's
 * lock and transactions need a session of their own.
 */
import { ConfigError, loadConfig } from '../src/config.ts'
import { applySessionDefaults, ensureDerivedLogin } from '../src/db/app-login.ts'
import { createSql } from '../src/db/client.ts'
import { migrate } from '../src/db/migrate.ts'
import { redact } from '../src/db/url.ts'
import { describeError, sessionDefaults } from '../src/runtime/service.ts'
import { migrateSharded, parseShardUrls } from './shards.ts'

try {
  const config = loadConfig(process.env)
  if (!config.databaseUrl) throw new ConfigError('DATABASE_URL is not set (npm start migrates its embedded PostgreSQL by itself)')
  const shardUrls = parseShardUrls(process.env.SHARD_URLS)
  if (shardUrls.length > 0) {
    await migrateSharded({ routerUrl: config.databaseUrl, shardUrls }, (line) => console.log(line))
  } else {
    await migrate(config.databaseUrl)
    console.log(`migrated ${redact(config.databaseUrl)}`)
  }
  const defaults = sessionDefaults(config)
  if (config.appDatabaseUrl) {
    const login = decodeURIComponent(new URL(config.appDatabaseUrl).username)
    const admin = createSql(config.databaseUrl, { max: 1 })
    try {
      const changed = await applySessionDefaults(admin, login, defaults)
      console.log(`${login}: ${changed.length ? changed.join(', ') : 'role defaults already set'}`)
    } finally {
      await admin.end({ timeout: 5 })
    }
  } else {
    const url = await ensureDerivedLogin(config.databaseUrl, { defaults })
    console.log(`serving login ready: ${redact(url)}`)
  }
} catch (error) {
  console.error(`npm run db:migrate: ${describeError(error)}`)
  process.exit(1)
}
