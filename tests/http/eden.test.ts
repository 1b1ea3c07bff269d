/**
 * The typed client: Eden Treaty over the App type. `npm run typecheck` (tsc)
 * checks the type assertions below; `bun test` runs the calls against the
 * app in-process (treaty(app) calls app.handle, no network).
 */
import { describe, expect, it } from 'bun:test'
import { treaty } from '@elysiajs/eden'
import type { App } from '../../src/app.ts'
import type { ErrorBody } from '../../src/http/errors.ts'
import { app } from '../support/http.ts'

type Equal<A, B> = (<T>() => T extends A ? 1 : 2) extends <T>() => T extends B ? 1 : 2 ? true : false
const assertType = <T extends true>() => {}

const api = treaty<App>(app as App)

type ProductData = {
  id: number
  name: string
  seller_id: number
  price: number
  active: boolean
  stock: number
  weight: number
  created_at: string
  updated_at: string
}

describe('Eden Treaty over the App type', () => {
  it('types the success data and every declared error status, and matches what the server sends', async () => {
    const created = await api.products.post({ name: 'Eden mug', seller_id: 1, price: 900, stock: 3, weight: 250 })
    if (created.error) throw new Error(`expected 201, got ${created.status}: ${JSON.stringify(created.error.value)}`)
    // Success: the data of the 201, integers as number (not string | number).
    assertType<Equal<typeof created.data.data.id, number>>()
    assertType<Equal<typeof created.data.meta.http_status, number>>()
    expect(created.data.data).toMatchObject({ name: 'Eden mug', stock: 3 })
    const id = created.data.data.id

    const found = await api.products({ id }).get()
    if (found.error) throw new Error(`expected 200, got ${found.status}`)
    assertType<Equal<Omit<typeof found.data.data, never>, ProductData>>()
    expect(found.data.data.id).toBe(id)

    // An error: error.status is the union of the route's declared statuses,
    // and error.value the error envelope for each of them. Elysia adds 422
    // to every route with a schema, typed as its own validation error, unless
    // the route declares 422 itself; this service never sends that shape
    // (a validation failure is a 400 in the envelope), so it stays unused.
    const missing = await api.products({ id: 987654321 }).get()
    expect(missing.data).toBeNull()
    if (!missing.error) throw new Error('expected an error')
    assertType<Equal<typeof missing.error.status, 400 | 404 | 422 | 429 | 500 | 503>>()
    switch (missing.error.status) {
      case 404:
        assertType<Equal<typeof missing.error.value.error, string>>()
        assertType<Equal<typeof missing.error.value.meta, { http_status: number }>>()
        expect(missing.error.value).toEqual({ error: 'product 987654321 not found', code: 'WA002', details: { product_id: 987654321 }, meta: { http_status: 404 } })
        break
      default:
        throw new Error(`expected 404, got ${missing.error.status}`)
    }

    // A refusal of the database: code and details are in the envelope's type.
    const overdrawn = await api.products({ id }).adjust.post({ quantity: -10, reason: 'more than there is' })
    if (!overdrawn.error) throw new Error('expected 422')
    if (overdrawn.error.status !== 422) throw new Error(`expected 422, got ${overdrawn.error.status}`)
    assertType<Equal<typeof overdrawn.error.value.code, string | undefined>>()
    expect(overdrawn.error.value.code).toBe('WA010')
    const body: ErrorBody = overdrawn.error.value // the envelope the server builds is the one the client reads
    expect(body.meta.http_status).toBe(422)
  })

  it("types the README's example: a checkout with an Idempotency-Key, its refusal codes and its orders", async () => {
    const placed = await api.carts({ id: 987654321 }).checkout.post({ note: 'gift' }, { headers: { 'idempotency-key': crypto.randomUUID() } })
    if (!placed.error) throw new Error('expected a refusal: the cart does not exist')
    assertType<Equal<typeof placed.error.status, 400 | 401 | 404 | 409 | 413 | 415 | 422 | 429 | 500 | 503>>()
    expect(placed.error.status).toBe(404)
    if (placed.error.status === 404) expect(placed.error.value.code).toBe('WA001')
    type Reply = Awaited<ReturnType<ReturnType<typeof api.carts>['checkout']['post']>>
    const typed = (ok: NonNullable<Reply['data']>) => ok.data.map((order) => [order.code, order.total_price] as const)
    assertType<Equal<ReturnType<typeof typed>, (readonly [string, number])[]>>()
  })

  it('refuses at compile time what the server would refuse at run time', () => {
    // Each call is type-checked only (never run): tsc fails if an error below goes away.
    const unused = () => {
      // @ts-expect-error price must be a number
      api.products.post({ name: 'x', price: '9', stock: 1, weight: 1 })
      // @ts-expect-error weight is required
      api.products.post({ name: 'x', price: 9, stock: 1 })
      // @ts-expect-error state is one of the order states
      api.orders.get({ query: { state: 'lost' } })
    }
    expect(typeof unused).toBe('function')
  })
})
