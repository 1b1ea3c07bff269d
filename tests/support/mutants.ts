import type { Sql } from '../../src/db/client.ts'

/**
 * Unsafe checkouts, made from the real one, to prove the race tests and the
 * invariant checker can fail. Each is the text of waitress.place_orders as
 * the database holds it (pg_get_functiondef), with one thing changed,
 * created in a schema of its own: the real functions are never touched, so
 * other tests are unaffected. If the checkout is rewritten so that a change
 * no longer applies, installing the mutant fails and says which one.
 *
 * - random-lock-order: the products are locked in random order instead of
 *   by id. Two buyers of the same two products can then each hold one and
 *   wait for the other: a deadlock.
 * - read-then-write: the products are read without a lock, and the stock
 *   written back is the stock read less what was taken, the original
 *   service's bug. Two buyers who both read "5 left" both write "4 left".
 */
export const MUTANTS = {
  'random-lock-order': [
    {
      what: 'the products are locked in id order',
      from: /order by p\.id\s+for no key update/g,
      to: 'order by random() for no key update',
    },
  ],
  'read-then-write': [
    {
      what: 'the products are locked in id order',
      from: /order by p\.id\s+for no key update/g,
      to: 'order by p.id',
    },
    {
      what: 'the stock is decremented where it is written',
      from: /set stock = p\.stock - s\.quantity\s+from \(select product_id, sum\(quantity\)::integer as quantity from lines group by product_id\) s/g,
      to:
        'set stock = s.remaining ' +
        'from (select r.product_id, r.remaining from unnest(v_products, v_remaining) as r(product_id, remaining) ' +
        'where r.product_id in (select product_id from lines)) s',
    },
  ],
} as const

export type MutantName = keyof typeof MUTANTS

export interface Mutant {
  name: MutantName
  /** The schema its functions live in. */
  schema: string
  /**
   * Its place_order(cart_id): the orders, or the refusal raised as by
   * api.place_order. Call it as the owner (a superuser: it sets
   * deadlock_timeout to 100 ms, to find its deadlocks sooner).
   */
  placeOrder(sql: Sql, cartId: number): Promise<{ orders: unknown[] }>
  drop(): Promise<void>
}

/** Creates the mutant's place_orders and a one-cart place_order over it, in a schema of its own. */
export async function installMutant(owner: Sql, name: MutantName): Promise<Mutant> {
  const [{ definition }] = await owner<{ definition: string }[]>`select pg_get_functiondef('waitress.place_orders(jsonb)'::regprocedure) as definition`
  const schema = `mutant_${name.replaceAll('-', '_')}_${process.pid}`
  let text = definition.replace(/FUNCTION waitress\.place_orders\(/, `FUNCTION ${schema}.place_orders(`)
  if (text === definition) throw new Error('pg_get_functiondef no longer names waitress.place_orders as expected')
  for (const change of MUTANTS[name]) {
    const found = text.match(change.from)?.length ?? 0
    if (found !== 1)
      throw new Error(`the ${name} mutant cannot be made: "${change.what}" appears ${found} times in waitress.place_orders, not once (${change.from})`)
    text = text.replace(change.from, change.to)
  }
  await owner.unsafe(`drop schema if exists ${schema} cascade`)
  await owner.unsafe(`create schema ${schema}`)
  await owner.unsafe(text)
  await owner.unsafe(`
    create function ${schema}.place_order(p_cart_id bigint) returns jsonb
    language plpgsql
    set search_path = ''
    -- A deadlock is found 100 ms into the wait instead of PostgreSQL's default
    -- second: the same deadlocks, found sooner, so a race of them ends in seconds.
    set deadlock_timeout = '100ms'
    as $$
    declare
      v_result jsonb := ${schema}.place_orders(jsonb_build_array(jsonb_build_object('cart_id', p_cart_id)))->0;
    begin
      if v_result ? 'error' then
        perform waitress.raise(v_result->'error');
      end if;
      return jsonb_build_object('orders', v_result->'orders');
    end
    $$`)
  return {
    name,
    schema,
    async placeOrder(sql, cartId) {
      const [{ placed }] = await sql<{ placed: { orders: unknown[] } }[]>`select ${sql(schema)}.place_order(${cartId}::bigint) as placed`
      return placed
    },
    drop: async () => void (await owner.unsafe(`drop schema if exists ${schema} cascade`)),
  }
}
