import { describe, expect, it } from 'bun:test'
import { createApp } from '../../src/app.ts'
import { apiSql } from '../support/db.ts'
import { tokenFor, TEST_SECRET } from '../support/auth.ts'
import { newUserId } from '../support/fixtures.ts'
import { requester } from '../support/http.ts'
import { until } from '../support/wait.ts'

const req = requester(createApp(apiSql(), { authJwtSecret: TEST_SECRET }))

describe('a bearer token, once verified and remembered', () => {
  it('stops working at its exp all the same', async () => {
    const userId = newUserId()
    // Valid for a few more seconds (the two requests must come before then,
    // even on a busy machine); then the clock must pass exp: that is the test.
    const exp = Math.floor(Date.now() / 1000) + 5
    const token = await tokenFor(userId, { exp })
    const headers = { authorization: `Bearer ${token}` }
    expect((await req(`/carts`, { headers })).status).toBe(200)
    expect((await req(`/carts`, { headers })).status).toBe(200)
    expect(Date.now() / 1000).toBeLessThan(exp) // both were made while it was valid
    await until('the clock to pass the token\'s exp', () => Date.now() / 1000 > exp + 1, { everyMs: 100 })
    const expired = await req(`/carts`, { headers })
    expect(expired.status).toBe(401)
    expect(expired.headers.get('www-authenticate')).toContain('invalid_token')
  })

  it('is the exact text: another signature, or a changed claim, is verified (and refused) on its own', async () => {
    const userId = newUserId()
    const token = await tokenFor(userId)
    expect((await req('/carts', { headers: { authorization: `Bearer ${token}` } })).status).toBe(200)
    const [header, payload, signature] = token.split('.')
    const otherUser = Buffer.from(JSON.stringify({ ...JSON.parse(Buffer.from(payload, 'base64url').toString()), sub: String(userId + 1) })).toString('base64url')
    for (const forged of [`${header}.${otherUser}.${signature}`, `${header}.${payload}.${signature.slice(0, -2)}AA`])
      expect((await req('/carts', { headers: { authorization: `Bearer ${forged}` } })).status).toBe(401)
  })
})
