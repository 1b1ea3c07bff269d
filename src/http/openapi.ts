import type { AnyElysia } from 'elysia'
import { OptionalKind } from '@sinclair/typebox'
import { toOpenAPISchema } from '@elysiajs/openapi'
import { DOCUMENT_AS } from '../models.ts'
import { ACCESS_TEXT, bearerScheme, type Access } from './access.ts'
import { REFUSALS } from '../generated/sql.ts'

/**
 * The OpenAPI document of the API, generated from the same TypeBox schemas
 * that validate the requests and responses (@elysiajs/openapi's
 * toOpenAPISchema), then finished by one pass, finish(), that makes it what
 * `redocly lint` accepts and what clients should see.
 *
 * OpenAPI 3.1: its schemas are JSON Schema 2020-12, which is what TypeBox
 * emits (const, type: "null"), so nothing has to be translated to 3.0's
 * nullable and enum.
 */
export const OPENAPI_VERSION = '3.1.0'

type Json = Record<PropertyKey, any>

/** What the generator reads of an app (protected in Elysia's types, public at run time). */
interface RouteSource {
  getGlobalRoutes(): { method: string; path: string; hooks: Json }[]
  getGlobalDefinitions(): Json
}

export interface DocumentOptions {
  info: { title: string; version: string; description?: string }
  /** Paths left out of the document (the documentation's own routes are always left out). */
  exclude?: string[]
}

const TAGS = [
  { name: 'products', description: 'The catalogue, the stock and its ledger (stock movements).' },
  { name: 'carts', description: "A user's cart, its lines, and checking it out: one order per seller, all or nothing." },
  { name: 'orders', description: 'Ordering some cart lines, listing and reading orders, and moving them through their lifecycle.' },
  { name: 'inventory', description: 'The audit of stock against the ledger and the orders (operators only).' },
  { name: 'health', description: 'Liveness and readiness probes: no token, never rate-limited.' },
]

/** What each status means on any route; the route's own description says which refusal is which. */
const STATUS_TEXT: Record<string, string> = {
  200: 'OK',
  201: 'Created',
  400: 'Invalid request: a parameter, header or body fails validation, or the body is not a JSON object',
  401: 'No valid bearer token (only when the service has AUTH_JWT_SECRET); comes with WWW-Authenticate',
  403: "Acting for another user, the other party's action on an order (WA011), or an operator's route without the operator role",
  404: 'Not found',
  409: 'Conflict: the order is not in a state the action applies to (WA009), the cart line was already bought (WA013), or a request with this Idempotency-Key is still in progress (WA102)',
  413: 'The request body is larger than MAX_BODY_BYTES',
  415: 'The request body is declared as something other than JSON (a body without Content-Type is read as JSON)',
  422: 'Refused: see code (a refusal code such as WA004, docs/sql-contract.md) and details',
  429: 'Too many requests from this client (only when RATE_LIMIT is set); retry after Retry-After seconds',
  500: 'Internal server error (logged with the request id)',
  503: 'The database is busy or unavailable, or the service is shutting down; retry after Retry-After seconds',
}

/** An example error body per status, for the documentation. */
const ERROR_EXAMPLES: Record<string, { error: string; code?: string; details?: unknown }> = {
  400: { error: 'id must be a positive integer id' },
  401: { error: 'this route needs Authorization: Bearer <token>' },
  403: { error: 'buyer_id 9 is not the authenticated user; leave it out or send 4' },
  404: { error: 'product 42 not found' },
  409: {
    error: 'order OS260000000042 is delivered: it cannot be paid',
    code: 'WA009',
    details: { order_id: 42, code: 'OS260000000042', state: 'delivered', action: 'pay', allowed_from: ['pending'], paid: true },
  },
  413: { error: 'the request body is larger than 65536 bytes' },
  415: { error: 'send the request body as JSON: with content-type: application/json, or with no content-type at all' },
  422: {
    error: 'insufficient stock for product "Kopi Gayo 250g" (id 7): requested 3, available 1',
    code: 'WA004',
    details: { shortages: [{ product_id: 7, name: 'Kopi Gayo 250g', requested: 3, available: 1 }] },
  },
  429: { error: 'too many requests: at most 100 per 60 s per client; retry in 12 s' },
  500: { error: 'internal server error' },
  503: { error: 'the database is busy or unavailable; retry shortly' },
}

/** Builds the document of every route `app` has (call it once all routes are registered). */
export function openApiDocument(app: AnyElysia, options: DocumentOptions): Json {
  const source = app as unknown as RouteSource
  const routes = source.getGlobalRoutes()
  // Every body is read by our one JSON parser (src/http/body.ts), which
  // answers 415 to anything else: tell the generator, which otherwise
  // advertises form and text bodies (or, seeing a custom parser, none).
  const optionalBodies = new Set<string>()
  const asJsonRoutes = routes.map((route) => {
    if (!route.hooks?.body) return route
    if (route.hooks.body[OptionalKind] === 'Optional') optionalBodies.add(`${route.method.toLowerCase()} ${route.path}`)
    return { ...route, hooks: { ...route.hooks, parse: [{ fn: 'json' }] } }
  })
  const generated = toOpenAPISchema(
    { getGlobalRoutes: () => asJsonRoutes, getGlobalDefinitions: () => source.getGlobalDefinitions() } as unknown as AnyElysia,
    { paths: options.exclude ?? [] },
    undefined,
    undefined,
    OPENAPI_VERSION,
  ) as Json

  const document: Json = {
    openapi: OPENAPI_VERSION,
    info: { ...options.info, description: [options.info.description, codeTable()].filter(Boolean).join('\n\n') },
    servers: [{ url: '/', description: 'This service' }],
    tags: TAGS,
    paths: generated.paths,
    components: { securitySchemes: { bearerAuth: bearerScheme }, schemas: {} },
  }
  return finish(document, optionalBodies)
}

/** The codes an error envelope's `code` can hold, from the one table in SQL (waitress.refusals, generated). */
function codeTable(): string {
  const rows = Object.entries(REFUSALS)
    .sort(([a, x], [b, y]) => Number(x.source !== 'waitress') - Number(y.source !== 'waitress') || a.localeCompare(b))
    .map(([code, r]) => `| \`${code}\` | ${r.status} | ${r.title} |`)
  return ['### Codes', '', '| code | HTTP | meaning |', '| --- | --- | --- |', ...rows].join('\n')
}

const METHODS = ['get', 'put', 'post', 'delete', 'patch', 'head', 'options', 'trace']

/**
 * The one pass over the generated document:
 * - schemas: drop Elysia's keywords (`error`, our validation messages;
 *   `nullable`, a 3.0 leftover of t.Nullable), show a path or query value
 *   as the integer it decodes to (DOCUMENT_AS), and move every schema with
 *   a title into components.schemas, referenced by $ref;
 * - operations: the access level's meaning added to the description (the
 *   level and its security come from the route's own declaration, see
 *   access.ts), a description for every response, header descriptions, an
 *   example for every body.
 */
function finish(document: Json, optionalBodies: Set<string>): Json {
  const components: Json = document.components.schemas
  const schema = (value: Json) => cleanSchema(value, components)

  for (const [path, item] of Object.entries<Json>(document.paths)) {
    for (const method of METHODS) {
      const operation = item[method]
      if (!operation) continue
      const level = operation['x-access'] as Access | undefined
      if (!level) throw new Error(`OpenAPI: ${method.toUpperCase()} ${path} declares no access level`)
      operation.security ??= []
      operation.description = [operation.description, `**Access: ${level}.** ${ACCESS_TEXT[level]}`].filter(Boolean).join('\n\n')

      for (const parameter of operation.parameters ?? []) {
        parameter.schema = schema(parameter.schema)
        moveDescription(parameter)
      }

      const body = operation.requestBody
      if (body) {
        const elysiaPath = path.replace(/\{([^}]+)\}/g, ':$1')
        body.required = !optionalBodies.has(`${method} ${elysiaPath}`)
        if (body.description === undefined) delete body.description
        for (const media of Object.values<Json>(body.content)) {
          media.schema = schema(media.schema)
          media.example = exampleOf(media.schema, components)
        }
      }

      for (const [status, response] of Object.entries<Json>(operation.responses ?? {})) {
        response.description = STATUS_TEXT[status] ?? `Status ${status}`
        for (const header of Object.values<Json>(response.headers ?? {})) {
          header.schema = schema(header.schema)
          moveDescription(header)
        }
        for (const media of Object.values<Json>(response.content ?? {})) {
          media.schema = schema(media.schema)
          const status_ = Number(status)
          media.example =
            status_ >= 400
              ? { ...ERROR_EXAMPLES[status], meta: { http_status: status_ } }
              : withStatus(exampleOf(media.schema, components), status_)
        }
      }
    }
  }
  const used = new Set(Object.values<Json>(document.paths).flatMap((item) => METHODS.flatMap((method) => item[method]?.tags ?? [])))
  document.tags = document.tags.filter((tag: { name: string }) => used.has(tag.name))
  document.components.schemas = Object.fromEntries(Object.entries(components).sort(([a], [b]) => a.localeCompare(b)))
  return document
}

/** A parameter's or header's description belongs on it, not on its schema. */
function moveDescription(holder: Json) {
  if (holder.schema?.description !== undefined && holder.description === undefined) {
    holder.description = holder.schema.description
    delete holder.schema.description
  }
  if (holder.schema?.examples?.length && holder.example === undefined) holder.example = holder.schema.examples[0]
}

const SCHEMA_MAPS = ['properties', 'patternProperties', '$defs']
const SCHEMA_LISTS = ['allOf', 'anyOf', 'oneOf', 'prefixItems']
const SCHEMA_VALUES = ['items', 'additionalProperties', 'not', 'contains', 'if', 'then', 'else', 'propertyNames']

function cleanSchema(input: Json, components: Json): Json {
  if (!input || typeof input !== 'object' || Array.isArray(input)) return input
  const documentAs = input[DOCUMENT_AS]
  if (documentAs) return { ...documentAs, ...(input.description ? { description: input.description } : {}) }

  const { error: _message, nullable: _nullable, ...schema } = input
  for (const key of SCHEMA_MAPS)
    if (schema[key]) schema[key] = Object.fromEntries(Object.entries<Json>(schema[key]).map(([name, child]) => [name, cleanSchema(child, components)]))
  for (const key of SCHEMA_LISTS) if (Array.isArray(schema[key])) schema[key] = schema[key].map((child: Json) => cleanSchema(child, components))
  for (const key of SCHEMA_VALUES) if (schema[key] && typeof schema[key] === 'object') schema[key] = cleanSchema(schema[key], components)

  if (typeof schema.title !== 'string') return schema
  const name = schema.title
  const existing = components[name]
  if (existing && JSON.stringify(existing) !== JSON.stringify(schema))
    throw new Error(`OpenAPI: two different schemas are titled ${name}; give one another title`)
  components[name] = schema
  return { $ref: `#/components/schemas/${name}` }
}

function withStatus(example: unknown, status: number): unknown {
  if (example && typeof example === 'object' && 'meta' in example) return { ...example, meta: { http_status: status } }
  return example
}

/** An example value of a schema: its own example, else one built from its parts. */
function exampleOf(schema: Json | undefined, components: Json, depth = 0): unknown {
  if (!schema || depth > 12) return undefined
  if (schema.$ref) return exampleOf(components[schema.$ref.split('/').pop()], components, depth + 1)
  if (schema.examples?.length) return schema.examples[0]
  if (schema.const !== undefined) return schema.const
  if (schema.enum?.length) return schema.enum[0]
  const options = schema.anyOf ?? schema.oneOf
  if (options?.length) return exampleOf(options[0], components, depth + 1)
  const type = Array.isArray(schema.type) ? schema.type[0] : schema.type
  switch (type) {
    case 'object':
      return Object.fromEntries(
        Object.entries<Json>(schema.properties ?? {}).map(([name, child]) => [name, exampleOf(child, components, depth + 1)]),
      )
    case 'array':
      return [exampleOf(schema.items, components, depth + 1)]
    case 'integer':
      return Math.max(schema.minimum ?? 1, 1)
    case 'number':
      return 1
    case 'boolean':
      return true
    case 'null':
      return null
    case 'string':
      return schema.format === 'date-time' ? '2026-11-27T09:00:00.000Z' : 'string'
  }
  return undefined
}
