import { describe, expect, it } from 'bun:test'
import { createSql } from '../../src/db/client.ts'
import { purgeIfDue } from '../../src/db/maintenance.ts'
import { expireOverdueOrders } from '../../src/expiry.ts'
import { appDatabaseUrl, testSql } from '../support/db.ts'

const sql = testSql()

describe('periodic jobs run once per period across processes', () => {
  it('purges in one of five concurrent sessions, then in none until the period is over', async () => {
    await sql`delete from waitress.job_leases where job = 'purge'`
    const sessions = Array.from({ length: 5 }, () => createSql(appDatabaseUrl(), { max: 1, role: 'waitress_api' }))
    try {
      const first = await Promise.all(sessions.map((session) => purgeIfDue(session, 3600)))
      expect(first.filter((purged) => purged !== undefined)).toHaveLength(1)
      expect(await purgeIfDue(sessions[0], 3600)).toBeUndefined()
      await sql`update waitress.job_leases set ran_at = now() - interval '2 hours' where job = 'purge'`
      expect(await purgeIfDue(sessions[1], 3600)).toEqual({ idempotency_keys: expect.any(Number), rate_limit_windows: expect.any(Number) })
    } finally {
      await Promise.all(sessions.map((session) => session.end({ timeout: 5 })))
      await sql`delete from waitress.job_leases where job = 'purge'`
    }
  })

  it('expires from five concurrent sessions without a conflict, the lease taken and recorded once', async () => {
    await sql`delete from waitress.job_leases where job = 'expire_orders'`
    const sessions = Array.from({ length: 5 }, () => createSql(appDatabaseUrl(), { max: 1, role: 'waitress_api' }))
    try {
      await Promise.all(sessions.map((session) => expireOverdueOrders(session, 30 * 60, 3600)))
      const [{ ran }] = await sql<{ ran: boolean }[]>`select ran_at > now() - interval '1 minute' as ran from waitress.job_leases where job = 'expire_orders'`
      expect(ran).toBe(true)
      const [{ runs }] = await sql<{ runs: number }[]>`select count(*)::int as runs from waitress.job_leases where job = 'expire_orders'`
      expect(runs).toBe(1)
    } finally {
      await Promise.all(sessions.map((session) => session.end({ timeout: 5 })))
      await sql`delete from waitress.job_leases where job = 'expire_orders'`
    }
  })
})
