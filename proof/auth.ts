import { jwt } from '@elysiajs/jwt'

/** The headers a request made on behalf of this user carries. */
export type Authorize = (userId: number) => Promise<Record<string, string>>

/** For a service without AUTH_JWT_SECRET: the open contract, no token needed. */
export const openContract: Authorize = async () => ({})

/**
 * For a service with AUTH_JWT_SECRET: a bearer token per user (sub = the user
 * id, valid for an hour), signed with the same secret as the service and as
 * `npm run token` does, made once per user.
 */
export function bearerTokens(secret: string): Authorize {
  const signer = jwt({ name: 'jwt', secret, alg: 'HS256' }).decorator.jwt
  const tokens = new Map<number, Promise<string>>()
  return async (userId) => {
    let token = tokens.get(userId)
    if (!token) tokens.set(userId, (token = signer.sign({ sub: String(userId), exp: '1h' })))
    return { authorization: `Bearer ${await token}` }
  }
}
