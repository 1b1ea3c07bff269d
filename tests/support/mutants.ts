import type { Sql } from '../../src/db/client.ts'

/**
 * Unsafe checkouts, made from the real one, to prove the race tests and the
 * invariant checker can fail. Each is the text of the checkout's core as the
 * database holds it (pg_get_functiondef of waitress.place_orders_attempt,
 * which decides, writes and takes the products' locks), with one thing
 * changed, created with a copy of waitress.place_orders over it in a schema
 * of its own: the real functions are never touched, so other tests are
 * unaffected. If the checkout is rewritten so that a change no longer
 * applies, installing the mutant fails and says which one.
 *
 * - random-lock-order: the products are queued for and locked in random
 *   order instead of by id. Two buyers of the same two products can then
 *   each hold one and wait for the other: a deadlock.
 * - read-then-write: the stock written back is the stock read (without a
 *   lock) less what was taken, and nobody checks that it still is what was
 *   read: the original service's bug. Two buyers who both read "5 left"
 *   both write "4 left".
 */
export const MUTANTS = {
  'random-lock-order': [
    {
      what: 'the products are queued for in id order',
      from: /from unnest\(s_product\) x;/g,
      to: 'from unnest(s_product) x order by random();',
    },
    {
      what: 'the products are locked in id order before the decrement',
      from: /order by p\.id\s+for no key update of p/g,
      to: 'order by random() for no key update of p',
    },
    {
      what: 'a locked attempt queues in id order',
      from: /from \(select distinct l_product\[c\] as id from unnest\(v_chosen\) c order by 1\) q;/g,
      to: 'from (select id from (select distinct l_product[c] as id from unnest(v_chosen) c) d order by random()) q;',
    },
    {
      what: 'a locked attempt locks in id order',
      from: /order by p\.id\s+for no key update;/g,
      to: 'order by random() for no key update;',
    },
  ],
  'read-then-write': [
    {
      what: 'the decrement checks that the stock is still there',
      from: /where waitress\.still_as_read\(p, w\.quantity, w\.price, w\.weight, w\.seller_id\)/g,
      to: 'where waitress.for_sale(p) and p.price = w.price and p.weight = w.weight and p.seller_id = w.seller_id',
    },
    {
      what: 'the stock is decremented where it is written',
      from: /set stock = p\.stock - w\.quantity/g,
      to: 'set stock = v_remaining[array_position(v_products, p.id)]',
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

/** Creates the mutant's core, place_orders over it and a one-cart place_order, in a schema of its own. */
export async function installMutant(owner: Sql, name: MutantName): Promise<Mutant> {
  const definitionOf = async (fn: string) =>
    (await owner<{ definition: string }[]>`select pg_get_functiondef(${fn}::regprocedure) as definition`)[0].definition
  const attempt = await definitionOf('waitress.place_orders_attempt(jsonb, boolean)')
  const orders = await definitionOf('waitress.place_orders(jsonb)')
  const schema = `mutant_${name.replaceAll('-', '_')}_${process.pid}`
  let text = attempt.replace(/FUNCTION waitress\.place_orders_attempt\(/, `FUNCTION ${schema}.place_orders_attempt(`)
  const caller = orders
    .replace(/FUNCTION waitress\.place_orders\(/, `FUNCTION ${schema}.place_orders(`)
    .replaceAll('waitress.place_orders_attempt(', `${schema}.place_orders_attempt(`)
  if (text === attempt || !caller.includes(`${schema}.place_orders_attempt(`))
    throw new Error('pg_get_functiondef no longer names waitress.place_orders and waitress.place_orders_attempt as expected')
  for (const change of MUTANTS[name]) {
    const found = text.match(change.from)?.length ?? 0
    if (found !== 1)
      throw new Error(`the ${name} mutant cannot be made: "${change.what}" appears ${found} times in waitress.place_orders_attempt, not once (${change.from})`)
    text = text.replace(change.from, change.to)
  }
  await owner.unsafe(`drop schema if exists ${schema} cascade`)
  await owner.unsafe(`create schema ${schema}`)
  await owner.unsafe(text)
  await owner.unsafe(caller)
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
