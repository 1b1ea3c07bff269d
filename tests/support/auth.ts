import { jwt } from '@elysiajs/jwt'

/** The secret of the apps that tests run with authentication on. */
export const TEST_SECRET = 'test-secret-that-is-long-enough-0123456789'

/** A bearer token as a client would send it; `claims` may override or break anything. */
export async function tokenFor(
  sub: number | string | undefined,
  options: { secret?: string; alg?: 'HS256' | 'HS384' | 'HS512'; exp?: string | number; claims?: Record<string, unknown> } = {},
): Promise<string> {
  const signer = jwt({ name: 'jwt', secret: options.secret ?? TEST_SECRET, alg: options.alg ?? 'HS256' }).decorator.jwt
  return signer.sign({ ...(sub === undefined ? {} : { sub: String(sub) }), exp: options.exp ?? '1h', ...options.claims })
}

export const bearer = async (sub: number, options?: Parameters<typeof tokenFor>[1]) => ({
  authorization: `Bearer ${await tokenFor(sub, options)}`,
})

/** An unsigned token (alg "none"), which must never be accepted. */
export function unsignedToken(sub: number): string {
  const part = (value: object) => Buffer.from(JSON.stringify(value)).toString('base64url')
  return `${part({ alg: 'none', typ: 'JWT' })}.${part({ sub: String(sub), exp: Math.floor(Date.now() / 1000) + 3600 })}.`
}
