-- migrate:up
set local role waitress_owner;

-- The rest of the shop during a sale: checkouts that need nothing another
-- checkout holds are placed now, the others are handed back untouched.
--
-- While a crowd buys one product, the service's checkouts wait in one queue
-- and ride in batches that queue for the hot product, so a buyer of anything
-- else waits as long as the crowd. A checkout names cart items, not
-- products: only the database can tell which checkouts need the hot product.
-- The service sends each checkout that would wait here first (one call at a
-- time), and this function places, in one transaction, those whose cart and
-- products' queues are free this instant -- with waitress.place_orders, the
-- one implementation of the rules -- and answers the others
-- {"busy": [product ids]}, having written nothing for them. Busy checkouts
-- go to the service's queue as before.
--
-- It never waits while holding anything a checkout queues for: carts are
-- locked SKIP LOCKED, product queues with pg_try_advisory_xact_lock (the
-- keys of the checkout's own queue), and a checkout with an idempotency key
-- is always busy (claiming a key can wait for a duplicate in flight).
--
-- First come, first served per product: a checkout is also busy when it
-- needs a product in p_held (products of busy checkouts still waiting in the
-- service's queue) or a product of a busy checkout before it in this call.
-- So a checkout never overtakes an earlier one of the same product that was
-- handed back. p_held null means "the service has checkouts in flight whose
-- products it does not know": then nothing is placed, and every request is
-- answered with the products it needs.
--
-- p_requests: as api.place_orders (at most 1000); p_held: product ids, or null.
-- returns, in order: an outcome of api.place_orders, or {"busy": [product ids]}.
create function api.place_orders_now(p_requests jsonb, p_held bigint[] default '{}') returns jsonb
language plpgsql
security definer
set search_path = ''
as $$
declare
  v_count integer;
  v_row record;
  v_held bigint[] := coalesce(p_held, '{}');
  v_place boolean := p_held is not null;
  v_busy boolean;
  v_product bigint;
  v_results jsonb[];
  v_now integer[] := '{}';
  v_answers jsonb;
  v_k integer;
begin
  if jsonb_typeof(p_requests) is distinct from 'array' or jsonb_array_length(p_requests) > 1000 then
    raise exception using errcode = '22023', message = 'place_orders_now takes a JSON array of at most 1000 requests';
  end if;
  v_count := jsonb_array_length(p_requests);
  if v_count = 0 then
    return '[]'::jsonb;
  end if;
  v_results := array_fill(null::jsonb, array[v_count]);

  -- Each request's cart and the products of the lines it would buy, read
  -- without a lock: what it needs, not yet what it gets.
  for v_row in
    with requests as (
      select x.ord, case when jsonb_typeof(x.r) = 'object' then x.r else '{}'::jsonb end as r
        from jsonb_array_elements(p_requests) with ordinality as x(r, ord)
    ), carts as (
      select q.ord, q.r, (select c.id
                            from waitress.carts c
                           where case when q.r->>'cart_id' is not null
                                      then c.id = (q.r->>'cart_id')::bigint
                                           and c.user_id = coalesce((q.r->>'user_id')::bigint, c.user_id)
                                      else c.user_id = (q.r->>'buyer_id')::bigint end) as cart_id
        from requests q
    )
    select c.ord, c.cart_id, c.r->>'idempotency_key' is not null as keyed,
           coalesce((select array_agg(distinct ci.product_id order by ci.product_id)
                       from waitress.cart_items ci
                      where ci.cart_id = c.cart_id and not ci.purchased
                        and (jsonb_typeof(c.r->'item_ids') is distinct from 'array'
                             or ci.id in (select (i #>> '{}')::bigint from jsonb_array_elements(c.r->'item_ids') i))),
                    '{}') as products
      from carts c
     order by c.ord
  loop
    v_busy := not v_place or v_row.keyed or v_row.products && v_held;
    if not v_busy and v_row.cart_id is not null then
      perform from waitress.carts c where c.id = v_row.cart_id for no key update skip locked;
      v_busy := not found;
      foreach v_product in array v_row.products loop
        exit when v_busy;
        -- The key of the product's queue in waitress.place_orders_attempt and waitress.place_one.
        v_busy := not pg_try_advisory_xact_lock(1463899218, (v_product % 2147483647)::integer);
      end loop;
    end if;
    if v_busy then
      v_results[v_row.ord] := jsonb_build_object('busy', to_jsonb(v_row.products));
      v_held := v_held || v_row.products;
    else
      -- No cart or no lines: the core words the refusal, holding nothing.
      v_now := v_now || v_row.ord::integer;
    end if;
  end loop;

  if cardinality(v_now) > 0 then
    v_answers := waitress.place_orders(to_jsonb(array(select p_requests->(k - 1) from unnest(v_now) k)));
    for v_k in 1 .. cardinality(v_now) loop
      v_results[v_now[v_k]] := v_answers->(v_k - 1);
    end loop;
  end if;
  return to_jsonb(v_results);
end
$$;

comment on function api.place_orders_now(jsonb, bigint[]) is
  'Checkouts placed now when nothing they need is held: as api.place_orders (at most 1000 requests), but a request '
  'whose cart or products another checkout holds, that needs a product of p_held or of a busy request before it, '
  'or that carries an idempotency_key, is answered {"busy": [product ids]} with nothing written (every request, when '
  'p_held is null).';

-- migrate:down
set local role waitress_owner;
drop function if exists api.place_orders_now(jsonb, bigint[]);
