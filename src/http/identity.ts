import { Elysia } from 'elysia'
import { jwt } from '@elysiajs/jwt'
import { ApiError } from './errors'

/**
 * Who a request acts for. `open`: the service runs without AUTH_JWT_SECRET
 * (local development), and a request may name any user, as in the original
 * contract. `user`: a verified bearer token's `sub`.
 */
export type Actor = { kind: 'open' } | { kind: 'user'; id: number }

// Filled by the identity plugin before routing, read by the handlers. Keyed by
// the Request itself, so nothing outlives the request and nothing is shared.
const actors = new WeakMap<Request, Actor>()

/** The OpenAPI security requirement of the routes that need a token when authentication is on. */
export const bearerAuth = [{ bearerAuth: [] as string[] }]

export const bearerScheme = {
  type: 'http' as const,
  scheme: 'bearer',
  bearerFormat: 'JWT',
  description:
    'When the service has AUTH_JWT_SECRET: an HS256 JWT whose `sub` is the user id (decimal digits) and which has ' +
    '`exp`. `npm run token -- --sub 42` mints one for development. Without AUTH_JWT_SECRET no token is needed.',
}

/** Routes anyone may call without a token: the catalogue, health and the API's own documentation. */
export function isPublic(method: string, path: string): boolean {
  if (path === '/healthz' || path === '/swagger' || path.startsWith('/swagger/')) return true
  return (method === 'GET' || method === 'HEAD') && (path === '/products' || path.startsWith('/products/'))
}

const USER_ID = /^[1-9][0-9]{0,14}$/
const BEARER = /^Bearer +([A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+)$/i

const unauthorized = (message: string, invalidToken: boolean) =>
  new ApiError(401, message, {
    'www-authenticate': invalidToken ? 'Bearer realm="waitress", error="invalid_token"' : 'Bearer realm="waitress"',
  })

/**
 * Authentication, before anything else reads the request: with a secret,
 * every route but the public ones needs `Authorization: Bearer <JWT>` (HS256
 * only, `sub` and `exp` required), else 401 with WWW-Authenticate. Without a
 * secret every request is `open`.
 */
export function identity(options: { secret?: string }) {
  const plugin = new Elysia({ name: 'waitress/identity', seed: options.secret ?? '' })
  const secret = options.secret
  if (!secret) return plugin.onRequest(({ request }) => void actors.set(request, { kind: 'open' }))

  const verifier = jwt({ name: 'jwt', secret, alg: 'HS256' }).decorator.jwt
  return plugin.onRequest(async ({ request }) => {
    const header = request.headers.get('authorization')
    if (header === null) {
      if (isPublic(request.method, new URL(request.url).pathname)) return
      throw unauthorized('this route needs Authorization: Bearer <token>', false)
    }
    const token = BEARER.exec(header)?.[1]
    const payload = token ? await verifier.verify(token, { algorithms: ['HS256'], requiredClaims: ['sub', 'exp'] }) : false
    if (!payload) throw unauthorized('the bearer token is malformed, expired or not signed with this service\'s secret', true)
    if (typeof payload.sub !== 'string' || !USER_ID.test(payload.sub))
      throw unauthorized('the bearer token\'s sub must be a user id (decimal digits)', true)
    actors.set(request, { kind: 'user', id: Number(payload.sub) })
  })
}

/** The actor of a request on a route that needs one (401 if authentication is on and there was no token). */
export function actorOf(request: Request): Actor {
  const actor = actors.get(request)
  if (!actor) throw unauthorized('this route needs Authorization: Bearer <token>', false)
  return actor
}

/** The actor if the request has one, for the rate limiter. */
export const peekActor = (request: Request): Actor | undefined => actors.get(request)

/** The user to restrict data to: the token's user, or null (anyone's) without authentication. */
export const userScope = (actor: Actor): number | null => (actor.kind === 'user' ? actor.id : null)

/**
 * The user a request acts as when it names one (buyer_id, user_id, seller_id):
 * with a token, the token's user, and a named id must be that user (else 403);
 * without authentication, the named id, which is then required (else 400).
 */
export function actingAs(actor: Actor, claimed: number | undefined, field: string): number {
  if (actor.kind === 'user') {
    if (claimed !== undefined && claimed !== actor.id)
      throw new ApiError(403, `${field} ${claimed} is not the authenticated user; leave it out or send ${actor.id}`)
    return actor.id
  }
  if (claimed === undefined) throw new ApiError(400, `${field} is required (the service runs without authentication)`)
  return claimed
}
