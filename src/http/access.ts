import { Elysia } from 'elysia'
import { jwt } from '@elysiajs/jwt'
import { ApiError } from './errors.ts'

/**
 * Who may call a route, declared once on the route (`access: 'user'`). From
 * that one declaration come: whether a token is needed, whether the request
 * counts against the rate limit, the actor the handler receives, and the
 * route's OpenAPI security and `x-access`.
 *
 * - probe:    anyone, no token, not rate-limited (health, readiness, metrics, the docs)
 * - public:   anyone, no token (the catalogue); rate-limited
 * - user:     a signed-in user acting for themselves (carts, checkouts, their orders)
 * - seller:   a signed-in user acting on what they sell (the database checks it is theirs)
 * - operator: a signed-in user whose token carries `"role": "operator"` (the inventory audit)
 *
 * Without AUTH_JWT_SECRET every request is `open` (the original contract, for
 * development): it may name any user, and every level lets it through.
 */
export const ACCESS_LEVELS = ['probe', 'public', 'user', 'seller', 'operator'] as const
export type Access = (typeof ACCESS_LEVELS)[number]

export type Actor = { kind: 'open' } | { kind: 'user'; id: number; operator: boolean }

const OPEN: Actor = { kind: 'open' }

export const needsToken = (level: Access) => level === 'user' || level === 'seller' || level === 'operator'
export const isRateLimited = (level: Access) => level !== 'probe'

/** The OpenAPI security scheme of the routes that need a token when authentication is on. */
export const bearerScheme = {
  type: 'http' as const,
  scheme: 'bearer',
  bearerFormat: 'JWT',
  description:
    'When the service has AUTH_JWT_SECRET: an HS256 JWT whose `sub` is the user id (decimal digits) and which has ' +
    '`exp`; operators also carry `"role": "operator"`. `npm run token -- --sub 42` mints one for development. ' +
    'Without AUTH_JWT_SECRET no token is needed.',
}

/** What each level means, for the API's documentation. */
export const ACCESS_TEXT: Record<Access, string> = {
  probe: 'Open to anyone, without a token, and not rate-limited.',
  public: 'Open to anyone, without a token.',
  user: "Needs a bearer token when authentication is on; acts as the token's user.",
  seller: "Needs a bearer token when authentication is on; only the product's seller may (anyone else: 404).",
  operator: 'Needs a bearer token with "role": "operator" when authentication is on (anyone else: 403).',
}

/** The HTTP errors a level adds to a route's own, for its response map. */
export const accessErrors = (level: Access): number[] =>
  [...(needsToken(level) ? [401] : []), ...(level === 'operator' ? [403] : []), ...(isRateLimited(level) ? [429] : [])]

/** Undefined when the request may go on; else how long the client must wait, and why. */
export type RateLimitRefusal = { retryAfter: number; reason: string }
export type RateLimiter = (client: string) => RateLimitRefusal | undefined | Promise<RateLimitRefusal | undefined>

export interface AccessOptions {
  /** HS256 secret of the bearer tokens; without it every request is `open`. */
  secret?: string
  rateLimiter?: RateLimiter
  /**
   * How long a 429 is held before it is sent, in ms: between half of it and
   * all of it, at random, and at most its Retry-After; 0 or unset: at once.
   * A client that floods over a few connections, each waiting for its
   * answer, then sends a few requests a second instead of thousands. At most
   * MAX_HELD_REFUSALS are held at once; beyond, they are answered at once.
   */
  rateLimitDelayMs?: number
  /** Resolves after `ms` (default: setTimeout); injected so that any runtime can provide it. */
  sleep?: (ms: number) => Promise<void>
  /** Most 429s held at once (default MAX_HELD_REFUSALS). */
  maxHeldRefusals?: number
  /**
   * The client's address, for the rate limit of requests without a token
   * (each runtime knows it its own way). Default: what the server adapter
   * says (Bun's server.requestIP).
   */
  clientAddress?: (request: Request, server: unknown) => string | undefined
}

interface RouteAccess {
  method: string
  pattern: RegExp
  level: Access
}

/** 429s held at once (RATE_LIMIT_DELAY), in all: each costs a timer and an open connection, no more. */
export const MAX_HELD_REFUSALS = 10_000

const USER_ID = /^[1-9][0-9]{0,14}$/
const MALFORMED = "the bearer token is malformed, expired or not signed with this service's secret"
const BEARER = /^Bearer +([A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+)$/i

const unauthorized = (message: string, invalidToken: boolean) =>
  new ApiError(401, message, {
    'www-authenticate': invalidToken ? 'Bearer realm="waitress", error="invalid_token"' : 'Bearer realm="waitress"',
  })

/** `/orders/:id/:action` → /^\/orders\/[^/]+\/[^/]+$/ */
function pathPattern(path: string): RegExp {
  const source = path
    .split('/')
    .map((part) => (part.startsWith(':') ? '[^/]+' : part === '*' ? '.*' : part.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')))
    .join('/')
  return new RegExp(`^${source}/?$`)
}

/**
 * The access plugin: the `access` macro for the routes, and authentication
 * and rate limiting before anything reads the request (401 and 429 come
 * before a body is parsed). Call `learn(app)` once every route is registered.
 */
export function createAccess(options: AccessOptions) {
  const actors = new WeakMap<Request, Actor>()
  const sleep = options.sleep ?? ((ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms)))
  let held = 0
  let routes: RouteAccess[] = []
  const clientAddress =
    options.clientAddress ??
    ((request: Request, server: unknown) =>
      (server as { requestIP?: (request: Request) => { address: string } | null } | null)?.requestIP?.(request)?.address)
  const verifier = options.secret ? jwt({ name: 'jwt', secret: options.secret, alg: 'HS256' }).decorator.jwt : undefined

  const levelOf = (method: string, path: string): Access => {
    const wanted = method === 'HEAD' ? 'GET' : method
    // An unknown route is answered 404 like a public one: no token needed, rate-limited.
    return routes.find((route) => route.method === wanted && route.pattern.test(path))?.level ?? 'public'
  }

  async function authenticate(request: Request, level: Access): Promise<Actor | undefined> {
    if (!verifier) return OPEN
    const header = request.headers.get('authorization')
    if (header === null) {
      if (needsToken(level)) throw unauthorized('this route needs Authorization: Bearer <token>', false)
      return undefined
    }
    if (level === 'probe') return undefined
    const token = BEARER.exec(header)?.[1]
    if (!token) throw unauthorized(MALFORMED, true)
    const now = Date.now()
    let known = verified.get(token)
    if (!known || known.until <= now) {
      known = await verify(token, now)
      remember(token, known)
    }
    if (typeof known.result === 'string') throw unauthorized(known.result, true)
    return known.result
  }

  /**
   * What verifying a token said: its actor until its exp, or why it is
   * refused (for a minute). Kept per exact token text, so a client's every
   * request does not cost an HMAC, a flood of them least of all: a flooding
   * client is then refused (429) for the price of a map lookup.
   */
  const verified = new Map<string, { result: Actor | string; until: number }>()
  const VERIFIED_MAX = 10_000

  async function verify(token: string, now: number): Promise<{ result: Actor | string; until: number }> {
    const refused = (reason: string) => ({ result: reason, until: now + 60_000 })
    const payload = await verifier!.verify(token, { algorithms: ['HS256'], requiredClaims: ['sub', 'exp'] })
    if (!payload) return refused(MALFORMED)
    if (typeof payload.sub !== 'string' || !USER_ID.test(payload.sub)) return refused("the bearer token's sub must be a user id (decimal digits)")
    const actor: Actor = { kind: 'user', id: Number(payload.sub), operator: payload.role === 'operator' }
    return { result: actor, until: Math.min(Number(payload.exp) * 1000, now + 3_600_000) }
  }

  function remember(token: string, known: { result: Actor | string; until: number }) {
    verified.delete(token)
    if (verified.size >= VERIFIED_MAX) verified.delete(verified.keys().next().value!)
    verified.set(token, known)
  }

  const plugin = new Elysia({ name: 'waitress/access', seed: options.secret ?? '' })
    .onRequest(async ({ request, server }) => {
      const level = levelOf(request.method, new URL(request.url).pathname)
      const actor = await authenticate(request, level)
      if (actor) actors.set(request, actor)
      if (options.rateLimiter && isRateLimited(level)) {
        const client = actor?.kind === 'user' ? `user:${actor.id}` : `ip:${clientAddress(request, server) ?? 'unknown'}`
        const limited = await options.rateLimiter(client)
        if (limited) {
          let retryAfter = limited.retryAfter
          // Between half the delay and all of it, so that a flood's connections, refused together, do not all come back together.
          const hold = Math.min((options.rateLimitDelayMs ?? 0) * (0.5 + Math.random() / 2), retryAfter * 1000)
          if (hold > 0 && held < (options.maxHeldRefusals ?? MAX_HELD_REFUSALS)) {
            held++
            try {
              await sleep(hold)
            } finally {
              held--
            }
            retryAfter = Math.max(1, Math.ceil(retryAfter - hold / 1000))
          }
          throw new ApiError(429, `too many requests: ${limited.reason}; retry in ${retryAfter} s`, {
            'retry-after': String(retryAfter),
          })
        }
      }
      if (level === 'operator' && actor?.kind === 'user' && !actor.operator)
        throw new ApiError(403, 'this route is for operators: a token with "role": "operator"')
    })
    .macro({
      access: (level: Access) => ({
        detail: {
          'x-access': level,
          security: needsToken(level) ? [{ bearerAuth: [] as string[] }] : [],
        },
        resolve: ({ request }) => ({ actor: actors.get(request) ?? OPEN }),
      }),
    })

  return {
    plugin,
    /** Reads every route's declared level; a route that declares none is a bug caught at start. */
    learn(app: { routes: { method: string; path: string; hooks?: { detail?: Record<string, unknown> } }[] }) {
      routes = app.routes.map((route) => {
        const level = route.hooks?.detail?.['x-access'] as Access | undefined
        if (!level || !ACCESS_LEVELS.includes(level)) throw new Error(`route ${route.method} ${route.path} declares no access level`)
        return { method: route.method, pattern: pathPattern(route.path), level }
      })
    },
    /** Every route and its level, for the tests and the docs. */
    get routes(): readonly { method: string; level: Access; pattern: RegExp }[] {
      return routes
    },
  }
}

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

export type AccessPlugin = ReturnType<typeof createAccess>['plugin']
