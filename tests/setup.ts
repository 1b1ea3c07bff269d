import { afterAll } from 'bun:test'
import { readDefaults } from '../proof/database-facts.ts'
import { startTestDatabase } from './support/database.ts'
import { closeTestSql, publishStatistics } from './support/db.ts'

const database = await startTestDatabase()
process.env.WAITRESS_TEST_DATABASE_URL = database.url
process.env.WAITRESS_TEST_APP_DATABASE_URL = database.appUrl
process.env.WAITRESS_TEST_APP_LOGIN = database.appLogin
// Before the invariant checker reads PostgreSQL's deadlock counter, it ends
// the sessions of this process's pools so that they publish what they
// counted (they reconnect by themselves): see deadlockCount.
readDefaults.publish = publishStatistics

afterAll(async () => {
  await closeTestSql()
  await database.stop()
})
