import { afterAll } from 'bun:test'
import { startTestDatabase } from './support/database.ts'
import { closeTestSql } from './support/db.ts'

const database = await startTestDatabase()
process.env.WAITRESS_TEST_DATABASE_URL = database.url
process.env.WAITRESS_TEST_APP_DATABASE_URL = database.appUrl
process.env.WAITRESS_TEST_APP_LOGIN = database.appLogin

afterAll(async () => {
  await closeTestSql()
  await database.stop()
})
