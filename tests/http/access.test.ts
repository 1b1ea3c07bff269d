import { describe, expect, it } from 'bun:test'
import { createApp } from '../../src/app.ts'
import { ACCESS_LEVELS, needsToken, type Access } from '../../src/http/access.ts'
import { apiSql } from '../support/db.ts'
import { bearer, TEST_SECRET } from '../support/auth.ts'
import { newUserId } from '../support/fixtures.ts'
import { requester } from '../support/http.ts'

const secured = requester(createApp(apiSql(), { authJwtSecret: TEST_SECRET }))

interface Operation {
  method: string
  path: string
  access: Access
  security: unknown[]
}

/** Every operation of the OpenAPI document, with the access level it declares. */
async function operations(): Promise<Operation[]> {
  const spec = (await secured('/swagger/json')).body
  return Object.entries(spec.paths as Record<string, Record<string, { 'x-access': Access; security?: unknown[] }>>).flatMap(([path, methods]) =>
    Object.entries(methods).map(([method, operation]) => ({
      method: method.toUpperCase(),
      path: path.replaceAll(/\{[^}]+\}/g, (name) => (name === '{action}' ? 'pay' : '1')),
      access: operation['x-access'],
      security: operation.security ?? [],
    })),
  )
}

describe('who may call each route, as the OpenAPI document declares it', () => {
  it('declares a level on every operation, and a bearer token exactly on those that need one', async () => {
    const all = await operations()
    expect(all.length).toBeGreaterThan(12)
    for (const op of all) {
      expect({ op: `${op.method} ${op.path}`, known: ACCESS_LEVELS.includes(op.access) }).toEqual({ op: `${op.method} ${op.path}`, known: true })
      expect({ op: `${op.method} ${op.path}`, security: op.security }).toEqual({
        op: `${op.method} ${op.path}`,
        security: needsToken(op.access) ? [{ bearerAuth: [] }] : [],
      })
    }
    const levels = new Set(all.map((op) => op.access))
    for (const level of ['public', 'user', 'seller', 'operator', 'probe'] as const) expect(levels.has(level)).toBe(true)
  })

  it('answers each route without a token, with a user token and with an operator token as its level says', async () => {
    const user = await bearer(newUserId())
    const operator = await bearer(newUserId(), { claims: { role: 'operator' } })
    for (const op of await operations()) {
      const name = `${op.method} ${op.path} (${op.access})`
      const anonymous = await secured(op.path, { method: op.method })
      if (needsToken(op.access)) {
        expect({ name, status: anonymous.status }).toEqual({ name, status: 401 })
        expect(anonymous.headers.get('www-authenticate')).toStartWith('Bearer realm="waitress"')
      } else {
        expect({ name, unauthorised: anonymous.status === 401 || anonymous.status === 403 }).toEqual({ name, unauthorised: false })
      }
      const asUser = await secured(op.path, { method: op.method, headers: user })
      const refusedUser = asUser.status === 401 || (asUser.status === 403 && asUser.body?.code === undefined && op.access === 'operator')
      expect({ name, refused: refusedUser }).toEqual({ name, refused: op.access === 'operator' })
      const asOperator = await secured(op.path, { method: op.method, headers: operator })
      expect({ name, status: asOperator.status === 401 || asOperator.status === 403 }).toEqual({ name, status: false })
    }
  })

  it('counts every route but the probes against the rate limit', async () => {
    const limited = requester(createApp(apiSql(), { authJwtSecret: TEST_SECRET, rateLimit: { limit: 1, windowSeconds: 86_400 } }))
    for (const op of await operations()) {
      const name = `${op.method} ${op.path} (${op.access})`
      const headers = await bearer(newUserId(), { claims: { role: 'operator' } })
      const replies = [await limited(op.path, { method: op.method, headers }), await limited(op.path, { method: op.method, headers })]
      const throttled = replies[1].status === 429
      expect({ name, throttled }).toEqual({ name, throttled: op.access !== 'probe' })
    }
  })
})
