import { describe, expect, it } from 'bun:test'
import { createHmac } from 'node:crypto'
import { DERIVED_LOGIN, derivePassword } from '../../src/db/app-login.ts'

/** The derivation written out with node:crypto, which takes any key, the empty one included. */
const expected = (adminPassword: string) =>
  createHmac('sha256', adminPassword).update(`waitress-login:${DERIVED_LOGIN}`).digest('base64url')

describe("the derived login's password", () => {
  it('is HMAC-SHA256 of the login under the administrator password', async () => {
    expect(await derivePassword('s3cret', DERIVED_LOGIN)).toBe(expected('s3cret'))
  })

  it('is derived from a DATABASE_URL with no password too (trust authentication), where WebCrypto refuses an empty key', async () => {
    const password = await derivePassword('', DERIVED_LOGIN)
    expect(password).toBe(expected(''))
    expect(password).not.toBe(await derivePassword('s3cret', DERIVED_LOGIN))
  })
})
