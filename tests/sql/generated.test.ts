import { describe, expect, it } from 'bun:test'
import { readFileSync } from 'node:fs'
import { GENERATED_TS, readSqlFacts, renderSqlContract, renderTypeScript, SQL_CONTRACT_MD } from '../../scripts/generate.ts'
import { statusForSqlstate } from '../../src/http/errors.ts'
import { testSql } from '../support/db.ts'

const sql = testSql()

describe('what is generated from the SQL (npm run generate)', () => {
  it('is current: src/generated/sql.ts and the tables of docs/sql-contract.md', async () => {
    const facts = await readSqlFacts(sql)
    const message = 'out of date: run npm run generate'
    expect(readFileSync(GENERATED_TS, 'utf8'), message).toBe(renderTypeScript(facts))
    const contract = readFileSync(SQL_CONTRACT_MD, 'utf8')
    expect(contract, message).toBe(renderSqlContract(contract, facts))
  })
})

describe('the refusal codes', () => {
  it('raised anywhere in the SQL are all in waitress.refusals, and every waitress code there is raised somewhere', async () => {
    // Every SQLSTATE literal a function of ours raises: errcode = '…' or a refuse/refusal('…', …) call.
    const raised = await sql<{ code: string; fn: string }[]>`
      select distinct m[1] as code, p.oid::regprocedure::text as fn
        from pg_catalog.pg_proc p
       cross join lateral regexp_matches(p.prosrc, '(?:errcode\\s*=\\s*|refuse\\(|refusal\\()''([0-9A-Z]{5})''', 'g') as m
       where p.pronamespace in ('api'::regnamespace, 'waitress'::regnamespace)`
    const known = new Set((await sql<{ code: string }[]>`select code from waitress.refusals`).map((r) => r.code))
    expect(raised.length).toBeGreaterThan(20)
    for (const { code, fn } of raised) expect({ code, fn, known: known.has(code) }).toEqual({ code, fn, known: true })

    const facts = await readSqlFacts(sql)
    const unraised = facts.refusals.filter((r) => r.source === 'waitress' && r.raised_by.length === 0).map((r) => r.code)
    expect(unraised).toEqual([])
  })

  it('reach HTTP clients with the status the table gives them', async () => {
    const rows = await sql<{ code: string; http_status: number }[]>`select code, http_status from waitress.refusals`
    for (const { code, http_status } of rows) expect({ code, status: statusForSqlstate(code) }).toEqual({ code, status: http_status })
    expect(statusForSqlstate('08006')).toBe(503)
    expect(statusForSqlstate('XX000')).toBe(500)
  })

  it('of the limits name the numbers waitress.limits() enforces', async () => {
    const [limits] = await sql`select * from waitress.limits()`
    const named: [string, number][] = [
      ['WA110', limits.max_item_ids],
      ['WA111', limits.max_note_length],
      ['WA112', limits.max_lines],
      ['WA114', limits.max_open_lines],
      ['WA115', limits.max_line_quantity],
    ]
    for (const [code, limit] of named) {
      const [{ meaning }] = await sql`select meaning from waitress.refusals where code = ${code}`
      expect({ code, names: new RegExp(`\\(${limit}\\b`).test(meaning) }).toEqual({ code, names: true })
    }
  })

  it('give every waitress refusal a hint a caller can act on', async () => {
    const [{ missing }] = await sql`
      select count(*)::int as missing from waitress.refusals where source = 'waitress' and (hint is null or detail is null)`
    expect(missing).toBe(0)
  })
})
