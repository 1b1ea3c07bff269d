-- migrate:up
set local role waitress_owner;

-- The checkout: the SQL contract's heart, in one file.
--
-- waitress.place_orders(p_requests) is the one implementation of a checkout's
-- rules, for one buyer or many at once: api.place_order and
-- api.place_buyer_order hand it one request, api.place_orders (and the
-- service's coalescing) a batch. Each request is a checkout of its own (all
-- of a cart's open items, or exactly item_ids), all or nothing, decided in
-- arrival order; a refused request takes no stock and fails no other.
--
-- The order of the work is what keeps a hot product fast and a hostile cart
-- harmless:
--
--   1. Limits, before anything is read (WA110 item ids, WA111 note): what a
--      request may make the function do is bounded before any work.
--   2. Idempotency keys are claimed (before any cart lock, as the single
--      checkout always did: a duplicate in flight waits on the key, never on
--      a lock it holds itself).
--   3. Carts are locked (ascending id) and the lines each request buys are
--      chosen (WA001, WA005, WA006, WA112, WA115). Only those lines'
--      products are ever looked at or locked: a cart's other lines cost
--      nothing.
--   4. Optimistic decision: products are READ (no lock), every rule is
--      decided in arrival order on that committed state, everything is
--      written (orders, lines, ledger, cart lines) -- still holding no
--      product lock -- and only then do the products get locked and
--      decremented, in ascending id, by one conditional UPDATE that checks
--      that each product still has the stock and the price, weight, seller
--      and for-sale state the decision used. So a product is locked for its
--      decrement and the commit and nothing else: nothing whose cost grows
--      with a cart's size or a request's size (choosing lines, rules,
--      documents, the inserts) runs while a product is locked.
--   5. If a product moved in between (stock taken by others, price changed),
--      the optimistic work is rolled back (a subtransaction) and the same
--      code decides again with the products locked first. Refusals decided
--      on the read state are sound: the state they saw was committed, and
--      less stock or a withdrawn product would only refuse them again; an
--      acceptance is checked under the lock before it counts.
--
-- Before its products' row locks every checkout queues on a transaction
-- advisory lock per product (ascending id): waiters line up in that FIFO
-- queue instead of all waking on each row-lock release, so a hot product is
-- handed from one buyer to the next at close to the cost of the bare UPDATE.
-- Nothing holding a product's row lock ever waits for an advisory lock, so
-- the two cannot deadlock. FOR NO KEY UPDATE serialises buyers of a product
-- without blocking the key-share locks that foreign-key checks take on it.
--
-- p_requests: [{"cart_id": 1} | {"buyer_id": 42}, "item_ids": [..] | null,
--               "note": ".." | null, "one_seller": true | false,
--               "user_id": 42 | null (on whose behalf: another's cart is WA001),
--               "idempotency_key": ".." | null}, ...]
-- returns, in the same order: {"orders": [Order, ...]} (+ "replayed": true for an Idempotency-Key's replay)
--                           | {"error": {"code", "message", "detail", "hint"}}

-- The limits of one order request are waitress.limits() (with the refusals):
-- the cost of a checkout under any lock is bounded by them, and HTTP and SQL
-- callers meet the same numbers.

-- What "for sale" means, and what a product read without its lock must still
-- be when a checkout decrements it: for sale, with the stock the line takes,
-- at the price, weight and seller the order was written with. Each rule is
-- written once, here, for every path; plain SQL without a SET clause, so the
-- planner inlines them and they cost nothing at run time.
create function waitress.for_sale(p waitress.products) returns boolean
language sql immutable parallel safe
as $$
  select p.active and p.price > 0
$$;

create function waitress.still_as_read(
  p waitress.products, p_quantity integer, p_price bigint, p_weight integer, p_seller_id bigint
) returns boolean
language sql immutable parallel safe
as $$
  select waitress.for_sale(p) and p.stock >= p_quantity
     and p.price = p_price and p.weight = p_weight and p.seller_id = p_seller_id
$$;

-- One attempt at deciding and writing a batch (steps 3 to 5 above).
-- p_requests holds null where a request is already answered. p_locked:
-- false = optimistic (raises raise_exception when a product moved, so the
-- caller rolls back and calls again), true = products locked before deciding.
create function waitress.place_orders_attempt(p_requests jsonb, p_locked boolean) returns jsonb
language plpgsql
set search_path = ''
-- Every statement below reads or writes a handful of rows by key. Planning
-- them once per session (generic plans) saves about a third of a checkout's
-- CPU; forbidding sequential scans keeps those plans right even when they
-- were made while the tables were still empty.
set plan_cache_mode = force_generic_plan
set enable_seqscan = off
-- The documents are built here (to_jsonb of the rows written), so their
-- timestamps follow this function's TimeZone, as waitress.order_json's do.
set timezone = 'UTC'
as $$
declare
  v_count integer := jsonb_array_length(p_requests);
  r_live boolean[];
  r_cart_ids bigint[];
  r_buyer_ids bigint[];
  r_notes text[];
  r_one_seller boolean[];
  r_user_ids bigint[];
  r_names_items boolean[];
  r_item_count integer[];
  r_item_from integer[];
  r_items bigint[];
  r_cart_at integer[];
  r_line_from integer[];
  r_line_count integer[];
  v_whole_carts bigint[];
  -- The batch's carts, locked, ascending; and the candidate lines, grouped by
  -- cart (cart k's at c_line_from[k] .. c_line_from[k] + c_line_count[k] - 1).
  v_cart_ids bigint[];
  v_cart_users bigint[];
  c_line_from integer[];
  c_line_count integer[];
  l_item bigint[];
  l_cart bigint[];
  l_product bigint[];
  l_quantity integer[];
  l_taken boolean[];
  -- Chosen lines per request: indexes into l_*, request k's at r_line_from[k] ...
  v_chosen integer[] := '{}';
  -- The products of the chosen lines, ascending, as read (or locked), and
  -- their stock as allocated so far.
  v_products bigint[];
  p_price bigint[];
  p_weight integer[];
  p_seller bigint[];
  p_for_sale boolean[];
  p_name text[];
  v_remaining integer[];
  v_results jsonb[];
  v_ord integer;
  v_at integer;
  v_pat integer;
  v_line integer;
  v_k integer;
  v_cart_id bigint;
  v_buyer_id bigint;
  v_lines integer[];
  v_named bigint[];
  v_missing bigint[];
  v_unavailable jsonb;
  v_shortages jsonb;
  v_sellers bigint[];
  v_stock integer;
  v_total numeric;
  v_overflow boolean;
  -- Accepted lines: what the write statement writes.
  a_ord integer[] := '{}';
  a_item bigint[] := '{}';
  a_product bigint[] := '{}';
  a_quantity integer[] := '{}';
  a_price bigint[] := '{}';
  a_weight integer[] := '{}';
  a_seller bigint[] := '{}';
  a_buyer bigint[] := '{}';
  a_note text[] := '{}';
  s_product bigint[];
  s_quantity integer[];
  s_price bigint[];
  s_weight integer[];
  s_seller bigint[];
  v_sold integer;
  v_order_ids bigint[];
  v_order_ords integer[];
  v_max_lines integer;
  v_max_quantity integer;
  l_over bigint[];
  v_over bigint[];
  v_items jsonb;
  v_product_docs jsonb;
  v_item_docs jsonb[];
  v_item_orders bigint[];
  v_item_products bigint[];
  v_order_docs jsonb[];
begin
  select l.max_lines, l.max_line_quantity into v_max_lines, v_max_quantity from waitress.limits() l;
  v_results := array_fill(null::jsonb, array[v_count]);

  select array_agg(r is not null and jsonb_typeof(r) = 'object' order by ord),
         array_agg((r->>'cart_id')::bigint order by ord),
         array_agg((r->>'buyer_id')::bigint order by ord),
         array_agg(r->>'note' order by ord),
         array_agg(coalesce((r->>'one_seller')::boolean, false) order by ord),
         array_agg((r->>'user_id')::bigint order by ord),
         array_agg(coalesce(jsonb_typeof(r->'item_ids') = 'array', false) order by ord),
         array_agg(case when jsonb_typeof(r->'item_ids') = 'array' then jsonb_array_length(r->'item_ids') else 0 end order by ord)
    into r_live, r_cart_ids, r_buyer_ids, r_notes, r_one_seller, r_user_ids, r_names_items, r_item_count
    from jsonb_array_elements(p_requests) with ordinality as x(r, ord);

  select coalesce(array_agg((i.item #>> '{}')::bigint order by x.ord, i.pos), '{}')
    into r_items
    from jsonb_array_elements(p_requests) with ordinality as x(r, ord)
    cross join lateral jsonb_array_elements(
      case when jsonb_typeof(x.r->'item_ids') = 'array' then x.r->'item_ids' else '[]'::jsonb end
    ) with ordinality as i(item, pos);

  r_item_from := array_fill(1, array[v_count]);
  for v_ord in 2 .. v_count loop
    r_item_from[v_ord] := r_item_from[v_ord - 1] + r_item_count[v_ord - 1];
  end loop;

  -- 3. Lock every cart of the batch, in id order.
  select array_agg(c.id order by c.id), array_agg(c.user_id order by c.id)
    into v_cart_ids, v_cart_users
    from (select c.id, c.user_id
            from waitress.carts c
           where c.id = any (r_cart_ids) or c.user_id = any (r_buyer_ids)
           order by c.id
             for no key update) c;
  v_cart_ids := coalesce(v_cart_ids, '{}');
  v_cart_users := coalesce(v_cart_users, '{}');

  -- Each live request's cart (WA001, WA005 for a buyer without one).
  r_cart_at := array_fill(null::integer, array[v_count]);
  v_whole_carts := '{}';
  for v_ord in 1 .. v_count loop
    continue when not r_live[v_ord];
    if r_cart_ids[v_ord] is not null then
      v_at := array_position(v_cart_ids, r_cart_ids[v_ord]);
      -- Someone else's cart is answered as if it did not exist.
      if v_at is not null and r_user_ids[v_ord] is not null and v_cart_users[v_at] <> r_user_ids[v_ord] then
        v_at := null;
      end if;
      if v_at is null then
        v_results[v_ord] := jsonb_build_object('error', waitress.refusal('WA001',
          format('cart %s not found', r_cart_ids[v_ord]),
          jsonb_build_object('cart_id', r_cart_ids[v_ord])));
        continue;
      end if;
    else
      v_at := array_position(v_cart_users, r_buyer_ids[v_ord]);
      if v_at is null then
        v_named := r_items[r_item_from[v_ord] : r_item_from[v_ord] + r_item_count[v_ord] - 1];
        v_results[v_ord] := jsonb_build_object('error', waitress.refusal('WA005',
          format('buyer %s has no cart, so cart items %s cannot be ordered',
                 r_buyer_ids[v_ord], array_to_string(v_named, ', ', 'null')),
          jsonb_build_object('buyer_id', r_buyer_ids[v_ord], 'cart_item_ids', to_jsonb(v_named))));
        continue;
      end if;
    end if;
    r_cart_at[v_ord] := v_at;
    if not r_names_items[v_ord] then
      v_whole_carts := v_whole_carts || v_cart_ids[v_at];
    end if;
  end loop;

  -- The candidate lines: all open lines of carts checked out whole, and the
  -- named open lines of the others. A cart's other lines are never read.
  select coalesce(array_agg(ci.id order by ci.cart_id, ci.id), '{}'),
         array_agg(ci.cart_id order by ci.cart_id, ci.id),
         array_agg(ci.product_id order by ci.cart_id, ci.id),
         array_agg(ci.quantity order by ci.cart_id, ci.id),
         coalesce(array_agg(ci.id order by ci.cart_id, ci.id) filter (where ci.quantity > v_max_quantity), '{}')
    into l_item, l_cart, l_product, l_quantity, l_over
    from waitress.cart_items ci
   where ci.cart_id = any (v_cart_ids) and not ci.purchased
     and (ci.cart_id = any (v_whole_carts) or ci.id = any (r_items));

  l_taken := array_fill(false, array[greatest(cardinality(l_item), 1)]);
  c_line_from := array_fill(1, array[greatest(cardinality(v_cart_ids), 1)]);
  c_line_count := array_fill(0, array[greatest(cardinality(v_cart_ids), 1)]);
  v_at := 0;
  for v_line in 1 .. cardinality(l_item) loop
    if v_line = 1 or l_cart[v_line] <> l_cart[v_line - 1] then
      v_at := array_position(v_cart_ids, l_cart[v_line]);
      c_line_from[v_at] := v_line;
    end if;
    c_line_count[v_at] := c_line_count[v_at] + 1;
  end loop;

  -- Which lines each request buys (WA005, WA006, WA112, WA115), before any product is read.
  r_line_from := array_fill(1, array[v_count]);
  r_line_count := array_fill(0, array[v_count]);
  for v_ord in 1 .. v_count loop
    continue when r_cart_at[v_ord] is null or v_results[v_ord] is not null;
    v_at := r_cart_at[v_ord];
    v_lines := '{}';
    if r_names_items[v_ord] then
      v_named := r_items[r_item_from[v_ord] : r_item_from[v_ord] + r_item_count[v_ord] - 1];
      for v_line in c_line_from[v_at] .. c_line_from[v_at] + c_line_count[v_at] - 1 loop
        if l_item[v_line] = any (v_named) then
          v_lines := v_lines || v_line;
        end if;
      end loop;
      if cardinality(v_lines) < (select count(*) from (select distinct x from unnest(v_named) x) d) then
        v_missing := array(select distinct x from unnest(v_named) x
                            where not coalesce(x = any (l_item[c_line_from[v_at] : c_line_from[v_at] + c_line_count[v_at] - 1]), false)
                            order by 1 nulls last);
        v_results[v_ord] := jsonb_build_object('error', waitress.refusal('WA005',
          format('cart items %s are not open items of cart %s', array_to_string(v_missing, ', ', 'null'), v_cart_ids[v_at]),
          jsonb_build_object('cart_id', v_cart_ids[v_at], 'cart_item_ids', to_jsonb(v_missing))));
        continue;
      end if;
    else
      v_lines := array(select g from generate_series(c_line_from[v_at], c_line_from[v_at] + c_line_count[v_at] - 1) g);
    end if;
    if cardinality(v_lines) = 0 then
      v_results[v_ord] := jsonb_build_object('error', waitress.refusal('WA006',
          format('cart %s has nothing to order', v_cart_ids[v_at]),
          jsonb_build_object('cart_id', v_cart_ids[v_at])));
      continue;
    end if;
    if cardinality(v_lines) > v_max_lines then
      v_results[v_ord] := jsonb_build_object('error', waitress.refusal('WA112',
          format('cart %s has %s open lines; an order takes at most %s', v_cart_ids[v_at], cardinality(v_lines), v_max_lines),
          jsonb_build_object('cart_id', v_cart_ids[v_at], 'lines', cardinality(v_lines), 'limit', v_max_lines)));
      continue;
    end if;
    -- Adding and changing a line refuse it past the quantity limit, but a
    -- line can still get there: a sharded checkout that is undone merges the
    -- bought units back into the product's open line, and the limit may be
    -- lowered. Such a line is named, and the buyer lowers it (l_over is
    -- empty otherwise, so this costs nothing).
    if l_over <> '{}' then
      v_over := array(select l_item[c] from unnest(v_lines) c where l_item[c] = any (l_over) order by 1);
      if v_over <> '{}' then
        v_results[v_ord] := jsonb_build_object('error', waitress.refusal('WA115',
            format('cart items %s hold more than %s units', array_to_string(v_over, ', '), v_max_quantity),
            jsonb_build_object('cart_id', v_cart_ids[v_at], 'cart_item_ids', to_jsonb(v_over), 'limit', v_max_quantity)));
        continue;
      end if;
    end if;
    r_line_from[v_ord] := cardinality(v_chosen) + 1;
    r_line_count[v_ord] := cardinality(v_lines);
    v_chosen := v_chosen || v_lines;
  end loop;

  if cardinality(v_chosen) = 0 then
    return to_jsonb(v_results);
  end if;

  -- 4. The products of the chosen lines only, ascending: read, or (p_locked)
  -- queued for and locked before anything is decided.
  if p_locked then
    perform pg_advisory_xact_lock(1463899218, (q.id % 2147483647)::integer)
       from (select distinct l_product[c] as id from unnest(v_chosen) c order by 1) q;
    perform from waitress.products p
      where p.id = any (array(select l_product[c] from unnest(v_chosen) c))
      order by p.id
        for no key update;
  end if;
  -- (Locked, the rows read are those locked: each statement reads what is committed.)
  select array_agg(p.id order by p.id), array_agg(p.price order by p.id), array_agg(p.weight order by p.id),
         array_agg(p.seller_id order by p.id), array_agg(waitress.for_sale(p) order by p.id),
         array_agg(p.name order by p.id), array_agg(p.stock order by p.id)
    into v_products, p_price, p_weight, p_seller, p_for_sale, p_name, v_remaining
    from waitress.products p
   where p.id = any (array(select l_product[c] from unnest(v_chosen) c));

  -- Every rule, request by request in arrival order; each line's work is a
  -- few array look-ups, and no request has more than max_lines lines.
  for v_ord in 1 .. v_count loop
    continue when r_line_count[v_ord] = 0 or v_results[v_ord] is not null;
    v_at := r_cart_at[v_ord];
    v_cart_id := v_cart_ids[v_at];
    v_buyer_id := v_cart_users[v_at];
    v_lines := v_chosen[r_line_from[v_ord] : r_line_from[v_ord] + r_line_count[v_ord] - 1];

    -- A line bought by an earlier request of this batch is no longer open.
    if true = any (array(select l_taken[x] from unnest(v_lines) x)) then
      if r_names_items[v_ord] then
        v_missing := array(select l_item[x] from unnest(v_lines) x where l_taken[x] order by 1);
        v_results[v_ord] := jsonb_build_object('error', waitress.refusal('WA005',
          format('cart items %s are not open items of cart %s', array_to_string(v_missing, ', ', 'null'), v_cart_id),
          jsonb_build_object('cart_id', v_cart_id, 'cart_item_ids', to_jsonb(v_missing))));
        continue;
      end if;
      v_lines := array(select x from unnest(v_lines) x where not l_taken[x]);
      if cardinality(v_lines) = 0 then
        v_results[v_ord] := jsonb_build_object('error', waitress.refusal('WA006',
            format('cart %s has nothing to order', v_cart_id), jsonb_build_object('cart_id', v_cart_id)));
        continue;
      end if;
    end if;

    -- Every check before taking anything; lines are reported by product id.
    v_unavailable := '[]';
    v_shortages := '[]';
    v_sellers := '{}';
    v_total := 0;
    v_overflow := false;
    if cardinality(v_lines) > 1 then
      v_lines := array(select x from unnest(v_lines) x order by l_product[x]);
    end if;
    foreach v_line in array v_lines loop
      v_pat := array_position(v_products, l_product[v_line]);
      v_stock := v_remaining[v_pat];
      if not p_for_sale[v_pat] then
        v_unavailable := v_unavailable || jsonb_build_object('product_id', l_product[v_line], 'name', p_name[v_pat]);
      end if;
      if l_quantity[v_line] > v_stock then
        v_shortages := v_shortages || jsonb_build_object('product_id', l_product[v_line], 'name', p_name[v_pat],
                                                         'requested', l_quantity[v_line], 'available', v_stock);
      end if;
      if not p_seller[v_pat] = any (v_sellers) then
        v_sellers := v_sellers || p_seller[v_pat];
      end if;
      -- price × quantity in numeric: a total past bigint is this request's refusal, not the batch's error.
      v_total := v_total + p_price[v_pat]::numeric * l_quantity[v_line];
      if v_total > 9223372036854775807 then
        v_overflow := true;
      end if;
    end loop;

    if jsonb_array_length(v_unavailable) > 0 then
      v_results[v_ord] := jsonb_build_object('error', waitress.refusal('WA003',
          format('product "%s" (id %s) is not for sale', v_unavailable->0->>'name', v_unavailable->0->>'product_id'),
          jsonb_build_object('product_ids', jsonb_path_query_array(v_unavailable, '$[*].product_id'))));
      continue;
    end if;
    if jsonb_array_length(v_shortages) > 0 then
      v_results[v_ord] := jsonb_build_object('error', waitress.refusal('WA004',
          format('insufficient stock for product "%s" (id %s): requested %s, available %s',
                          v_shortages->0->>'name', v_shortages->0->>'product_id',
                          v_shortages->0->>'requested', v_shortages->0->>'available')
                   || case when jsonb_array_length(v_shortages) > 1
                           then format(' (and %s more products)', jsonb_array_length(v_shortages) - 1)
                           else '' end,
          jsonb_build_object('shortages', v_shortages)));
      continue;
    end if;
    if r_one_seller[v_ord] and cardinality(v_sellers) > 1 then
      v_sellers := array(select s from unnest(v_sellers) s order by s);
      v_results[v_ord] := jsonb_build_object('error', waitress.refusal('WA007',
          format('the cart items belong to %s sellers; an order is for one seller', cardinality(v_sellers)),
          jsonb_build_object('seller_ids', to_jsonb(v_sellers))));
      continue;
    end if;
    if v_overflow then
      v_results[v_ord] := jsonb_build_object('error', waitress.refusal('WA113',
          format('the total of cart %s is %s, more than an order can hold', v_cart_id, v_total),
          jsonb_build_object('cart_id', v_cart_id)));
      continue;
    end if;

    -- Accepted: take the stock, and remember the lines for the write.
    foreach v_line in array v_lines loop
      v_pat := array_position(v_products, l_product[v_line]);
      v_remaining[v_pat] := v_remaining[v_pat] - l_quantity[v_line];
      l_taken[v_line] := true;
      a_ord := a_ord || v_ord;
      a_item := a_item || l_item[v_line];
      a_product := a_product || l_product[v_line];
      a_quantity := a_quantity || l_quantity[v_line];
      a_price := a_price || p_price[v_pat];
      a_weight := a_weight || p_weight[v_pat];
      a_seller := a_seller || p_seller[v_pat];
      a_buyer := a_buyer || v_buyer_id;
      a_note := a_note || r_notes[v_ord];
    end loop;
  end loop;

  if cardinality(a_item) = 0 then
    return to_jsonb(v_results);
  end if;

  -- One statement writes the orders (one per request and seller), their
  -- lines, the ledger and the cart lines; no product is locked yet (the
  -- foreign-key checks take key-share locks, which no checkout conflicts with).
  with lines as (
    select *
      from unnest(a_ord, a_item, a_product, a_quantity, a_price, a_weight, a_seller, a_buyer, a_note)
        as l(ord, cart_item_id, product_id, quantity, price, weight, seller_id, buyer_id, note)
  ), bought as (
    update waitress.cart_items ci
       set purchased = true
     where ci.id in (select cart_item_id from lines)
  ), new_orders as (
    select waitress.new_order_id(o.seller_id) as id, o.*
      from (select ord, seller_id, min(buyer_id) as buyer_id, min(note) as note,
                   sum(price * quantity) as total_price
              from lines
             group by ord, seller_id
             order by ord, seller_id) o
  ), inserted_orders as (
    insert into waitress.orders (id, buyer_id, seller_id, total_price, note)
    overriding system value
    select id, buyer_id, seller_id, total_price, note from new_orders order by id
    returning *
  ), inserted_lines as (
    insert into waitress.order_items (order_id, product_id, cart_item_id, quantity, price, weight)
    select o.id, l.product_id, l.cart_item_id, l.quantity, l.price, l.weight
      from lines l
      join new_orders o on o.ord = l.ord and o.seller_id = l.seller_id
     order by o.id, l.cart_item_id
    returning *
  ), sales as (
    insert into waitress.stock_movements (product_id, quantity, reason, order_id)
    select i.product_id, -i.quantity, 'sale', i.order_id from inserted_lines i
  )
  -- The documents are built from the rows just written (the keys of
  -- waitress.order_json, named: a shard's orders have columns of their own),
  -- not read back.
  select (select array_agg(o.id order by o.id) from inserted_orders o),
         (select array_agg(n.ord order by n.id) from new_orders n),
         (select array_agg(jsonb_build_object('id', o.id, 'code', waitress.order_code(o.id, o.created_at), 'buyer_id', o.buyer_id, 'seller_id', o.seller_id,
                                            'state', o.state, 'total_price', o.total_price, 'note', o.note, 'paid_at', o.paid_at,
                                            'created_at', o.created_at, 'updated_at', o.updated_at) order by o.id)
            from inserted_orders o),
         (select array_agg(jsonb_build_object('id', i.id, 'cart_item_id', i.cart_item_id, 'quantity', i.quantity,
                                              'price', i.price, 'weight', i.weight) order by i.order_id, i.cart_item_id)
            from inserted_lines i),
         (select array_agg(i.order_id order by i.order_id, i.cart_item_id) from inserted_lines i),
         (select array_agg(i.product_id order by i.order_id, i.cart_item_id) from inserted_lines i)
    into v_order_ids, v_order_ords, v_order_docs, v_item_docs, v_item_orders, v_item_products;

  -- Then, last, the products: queue, lock in id order and decrement, each
  -- only if it still is as decided (always true when p_locked).
  select array_agg(x.product_id order by x.product_id), array_agg(x.quantity order by x.product_id),
         array_agg(x.price order by x.product_id), array_agg(x.weight order by x.product_id),
         array_agg(x.seller_id order by x.product_id)
    into s_product, s_quantity, s_price, s_weight, s_seller
    from (select product_id, sum(quantity)::integer as quantity, min(price) as price, min(weight) as weight,
                 min(seller_id) as seller_id
            from unnest(a_product, a_quantity, a_price, a_weight, a_seller) as l(product_id, quantity, price, weight, seller_id)
           group by product_id) x;
  if not p_locked then
    perform pg_advisory_xact_lock(1463899218, (x % 2147483647)::integer) from unnest(s_product) x;
  end if;
  with want as (
    select * from unnest(s_product, s_quantity, s_price, s_weight, s_seller) as w(id, quantity, price, weight, seller_id)
  ), locked as (
    select p.id
      from waitress.products p
      join want w on w.id = p.id
     where waitress.still_as_read(p, w.quantity, w.price, w.weight, w.seller_id)
     order by p.id
       for no key update of p
  )
  , sold as (
    update waitress.products p
       set stock = p.stock - w.quantity
      from want w
     where p.id = w.id
       and (select count(*) from locked) = cardinality(s_product)
    returning p.id, waitress.product_json(p) as doc
  )
  select jsonb_object_agg(sold.id::text, sold.doc) into v_product_docs from sold;
  if coalesce((select count(*) from jsonb_object_keys(v_product_docs)), 0) <> cardinality(s_product) then
    -- A product moved since it was read: the caller rolls this attempt back
    -- and decides again with the products locked first.
    raise exception 'checkout: a product changed while the batch was decided; deciding again under its lock';
  end if;

  -- The documents: each order with its lines, each line with its product.
  -- Orders and lines are both in order id order, so one pass pairs them (a
  -- query per order over all the lines would cost the batch's size squared).
  v_line := 1;
  for v_k in 1 .. cardinality(v_order_ids) loop
    v_items := '[]';
    while v_line <= cardinality(v_item_orders) and v_item_orders[v_line] = v_order_ids[v_k] loop
      v_items := v_items || jsonb_build_array(v_item_docs[v_line]
                                              || jsonb_build_object('product', v_product_docs->(v_item_products[v_line]::text)));
      v_line := v_line + 1;
    end loop;
    v_ord := v_order_ords[v_k];
    v_results[v_ord] := jsonb_build_object('orders', coalesce(v_results[v_ord]->'orders', '[]')
                                                     || jsonb_build_array(v_order_docs[v_k] || jsonb_build_object('items', v_items)));
  end loop;

  return to_jsonb(v_results);
end
$$;

comment on function waitress.place_orders_attempt(jsonb, boolean) is
  'One attempt of waitress.place_orders: decides and writes the requests not yet answered (null ones are skipped). '
  'Optimistic unless p_locked; raises raise_exception when a product moved, for the caller to roll back and retry locked.';

create function waitress.place_orders(p_requests jsonb) returns jsonb
language plpgsql
set search_path = ''
as $$
declare
  v_count integer;
  v_limits record;
  v_open jsonb[];
  v_results jsonb[];
  v_answers jsonb;
  v_r jsonb;
  v_ord integer;
  v_key text;
  v_owner bigint;
  v_owners bigint[];
  v_claimed boolean[];
  v_first_of integer[];
  v_replay record;
  v_names integer;
  v_state text;
  v_message text;
  v_detail text;
  v_hint text;
begin
  if jsonb_typeof(p_requests) is distinct from 'array' or jsonb_array_length(p_requests) > 1000 then
    raise exception using errcode = '22023', message = 'place_orders takes a JSON array of at most 1000 requests';
  end if;
  v_count := jsonb_array_length(p_requests);
  if v_count = 0 then
    return '[]'::jsonb;
  end if;
  select * into v_limits from waitress.limits();
  -- Anything but an object is a request that names nothing (answered WA005, as before).
  v_open := array(select case when jsonb_typeof(r) = 'object' then r else '{}'::jsonb end from jsonb_array_elements(p_requests) r);
  v_results := array_fill(null::jsonb, array[v_count]);
  v_owners := array_fill(null::bigint, array[v_count]);
  v_claimed := array_fill(false, array[v_count]);
  v_first_of := array_fill(null::integer, array[v_count]);

  for v_ord in 1 .. v_count loop
    v_r := v_open[v_ord];
    -- 1. Limits: what one request may cost is bounded before any work.
    if jsonb_typeof(v_r->'item_ids') = 'array' and jsonb_array_length(v_r->'item_ids') > v_limits.max_item_ids then
      -- Duplicates collapse: a long list of few ids is as cheap as the few.
      v_r := jsonb_set(v_r, '{item_ids}', (select coalesce(jsonb_agg(distinct x), '[]') from jsonb_array_elements(v_r->'item_ids') x));
      v_open[v_ord] := v_r;
      v_names := jsonb_array_length(v_r->'item_ids');
      if v_names > v_limits.max_item_ids then
        v_results[v_ord] := jsonb_build_object('error', waitress.refusal('WA110',
          format('the order names %s cart items; at most %s', v_names, v_limits.max_item_ids),
          jsonb_build_object('cart_item_ids', v_names, 'limit', v_limits.max_item_ids)));
        continue;
      end if;
    end if;
    if length(v_r->>'note') > v_limits.max_note_length then
      v_results[v_ord] := jsonb_build_object('error', waitress.refusal('WA111',
        format('the note has %s characters; at most %s', length(v_r->>'note'), v_limits.max_note_length),
        jsonb_build_object('length', length(v_r->>'note'), 'limit', v_limits.max_note_length)));
      continue;
    end if;

    -- 2. An Idempotency-Key, scoped to the cart's buyer: whose cart it is
    -- comes first (another user's key on it reveals nothing), then the key is
    -- claimed, or the first response is replayed, in this transaction.
    v_key := v_r->>'idempotency_key';
    continue when v_key is null;
    if v_r ? 'cart_id' and v_r->'cart_id' <> 'null' then
      select c.user_id into v_owner from waitress.carts c where c.id = (v_r->>'cart_id')::bigint;
      if not found or v_owner <> coalesce((v_r->>'user_id')::bigint, v_owner) then
        v_results[v_ord] := jsonb_build_object('error', waitress.refusal('WA001',
          format('cart %s not found', v_r->>'cart_id'), jsonb_build_object('cart_id', (v_r->>'cart_id')::bigint)));
        continue;
      end if;
      v_r := jsonb_build_object('cart_id', v_r->'cart_id', 'item_ids', v_r->'item_ids', 'note', v_r->'note');
      v_state := 'place_order';
    else
      v_owner := (v_r->>'buyer_id')::bigint;
      v_r := jsonb_build_object('buyer_id', v_r->'buyer_id', 'item_ids', v_r->'item_ids', 'note', v_r->'note',
                                'one_seller', coalesce(v_r->'one_seller', 'false'));
      v_state := 'place_buyer_order';
    end if;
    begin
      select * into v_replay from waitress.idempotency_begin(v_owner, v_key, v_state, v_r);
    exception when sqlstate 'WA101' or sqlstate 'WA102' then
      get stacked diagnostics v_state = returned_sqlstate, v_message = message_text, v_detail = pg_exception_detail,
                              v_hint = pg_exception_hint;
      -- "In progress" because an earlier request of this very batch claimed
      -- the key (a client's retry that arrived while both waited for a call):
      -- it is a duplicate of that one and gets its answer, as it would have
      -- had it arrived a moment later.
      if v_state = 'WA102' then
        v_first_of[v_ord] := (select e from generate_subscripts(v_claimed, 1) e
                               where e < v_ord and v_claimed[e] and v_owners[e] = v_owner
                                 and v_open[e]->>'idempotency_key' = v_key
                               limit 1);
        if v_first_of[v_ord] is not null then
          v_results[v_ord] := '{}'::jsonb; -- answered below, once its first is decided
          continue;
        end if;
      end if;
      v_results[v_ord] := jsonb_build_object('error', jsonb_build_object('code', v_state, 'message', v_message,
                                             'detail', v_detail::jsonb, 'hint', v_hint));
      continue;
    end;
    if v_replay.status is not null then
      v_results[v_ord] := jsonb_build_object('orders', v_replay.data, 'replayed', true);
      continue;
    end if;
    v_owners[v_ord] := v_owner;
    v_claimed[v_ord] := true;
  end loop;

  -- 3-5. Decide and write the rest: optimistically, or again under the locks.
  v_answers := to_jsonb(array(select case when v_results[i] is null then v_open[i] end from generate_subscripts(v_open, 1) i));
  begin
    v_answers := waitress.place_orders_attempt(v_answers, false);
  exception when raise_exception then
    v_answers := waitress.place_orders_attempt(v_answers, true);
  end;

  for v_ord in 1 .. v_count loop
    if v_results[v_ord] is null then
      v_results[v_ord] := v_answers->(v_ord - 1);
    elsif v_first_of[v_ord] is not null then
      v_results[v_ord] := case when v_results[v_first_of[v_ord]] ? 'orders'
                               then v_results[v_first_of[v_ord]] || '{"replayed": true}'
                               else v_results[v_first_of[v_ord]] end;
    end if;
    if v_claimed[v_ord] then
      if v_results[v_ord] ? 'orders' then
        perform waitress.idempotency_finish(v_owners[v_ord], v_open[v_ord]->>'idempotency_key', 201, v_results[v_ord]->'orders');
      else
        -- A refusal keeps no record: as for a single checkout, whose
        -- transaction rolls back, a retry with the key is decided afresh.
        delete from waitress.idempotency_keys k
         where k.user_id = v_owners[v_ord] and k.key = v_open[v_ord]->>'idempotency_key';
      end if;
    end if;
  end loop;

  return to_jsonb(v_results);
end
$$;

comment on function waitress.place_orders(jsonb) is
  'The checkout''s rules, once: many checkouts in one transaction, each all or nothing, in arrival order. '
  'Returns one {"orders": [...]} ("replayed": true added for a replay) or {"error": {code, message, detail, hint}} per request, in order.';

-- The one-request path: a lone checkout without an Idempotency-Key (a SQL
-- caller, an edge runtime, a request that found the service idle) skips the
-- batch machinery: no JSON requests, no loops, no subtransaction. It only
-- ever ACCEPTS: it places the order when the request passes every rule that
-- waitress.place_orders applies (open lines of the cart, the limits, for
-- sale, stock, one seller, a total that fits), in the same order of work
-- (lines chosen under the cart lock, everything written, the products queued
-- for, locked and decremented last). Whenever anything is off it returns
-- null, and the caller hands the request to waitress.place_orders, which
-- decides and words every refusal: the rules are written once, and both
-- paths are run against the same cases (tests/sql/checkout-paths.test.ts).
create function waitress.place_one(
  p_cart_id bigint, p_buyer_id bigint, p_item_ids bigint[], p_note text, p_one_seller boolean, p_user_id bigint
) returns jsonb
language plpgsql
set search_path = ''
set plan_cache_mode = force_generic_plan
set enable_seqscan = off
-- The documents are built here (to_jsonb of the rows written), so their
-- timestamps follow this function's TimeZone, as waitress.order_json's do.
set timezone = 'UTC'
as $$
declare
  v_limits record;
  v_cart bigint;
  v_buyer bigint;
  v_line record;
  l_item bigint[] := '{}';
  l_product bigint[] := '{}';
  l_qty integer[] := '{}';
  l_price bigint[] := '{}';
  l_weight integer[] := '{}';
  l_seller bigint[] := '{}';
  v_total numeric := 0;
  v_sellers bigint[];
  v_seller bigint;
  v_seller_total numeric;
  v_order_id bigint;
  v_order_ids bigint[] := '{}';
  v_order_docs jsonb[] := '{}';
  v_item_docs jsonb[] := '{}';
  v_item_orders bigint[] := '{}';
  v_item_products bigint[] := '{}';
  v_item_qty integer[] := '{}';
  v_doc jsonb;
  v_product_docs jsonb;
  v_sold integer;
  v_orders jsonb;
  v_items jsonb;
  v_k integer;
  v_i integer;
begin
  select * into v_limits from waitress.limits();
  if cardinality(p_item_ids) > v_limits.max_item_ids or length(p_note) > v_limits.max_note_length
     or array_position(p_item_ids, null) is not null then
    return null;
  end if;
  if p_cart_id is not null then
    select c.id, c.user_id into v_cart, v_buyer from waitress.carts c where c.id = p_cart_id for no key update;
  else
    select c.id, c.user_id into v_cart, v_buyer from waitress.carts c where c.user_id = p_buyer_id for no key update;
  end if;
  if v_cart is null or v_buyer <> coalesce(p_user_id, v_buyer) then
    return null;
  end if;

  -- The lines, read with their products (no product lock), in product order.
  -- A loop rather than aggregates: this runs once per order, and PostgreSQL
  -- sets up every aggregate (and its sort) again on each execution.
  for v_line in
    select ci.id, ci.product_id, ci.quantity, p.price, p.weight, p.seller_id,
           waitress.for_sale(p) and p.stock >= ci.quantity and ci.quantity <= v_limits.max_line_quantity as ok
      from waitress.cart_items ci
      join waitress.products p on p.id = ci.product_id
     where ci.cart_id = v_cart and not ci.purchased
       and (p_item_ids is null or ci.id = any (p_item_ids))
     order by ci.product_id
  loop
    if not v_line.ok then
      return null;
    end if;
    l_item := l_item || v_line.id;
    l_product := l_product || v_line.product_id;
    l_qty := l_qty || v_line.quantity;
    l_price := l_price || v_line.price;
    l_weight := l_weight || v_line.weight;
    l_seller := l_seller || v_line.seller_id;
    v_total := v_total + v_line.price::numeric * v_line.quantity;
  end loop;
  -- Duplicate item ids (which waitress.place_orders collapses) fail the count
  -- check too, and are left to it.
  if cardinality(l_item) = 0 or cardinality(l_item) > v_limits.max_lines
     or cardinality(l_item) <> coalesce(cardinality(p_item_ids), cardinality(l_item))
     or v_total > 9223372036854775807 then
    return null;
  end if;
  if cardinality(array_remove(l_seller, l_seller[1])) = 0 then
    v_sellers := l_seller[1:1];
  elsif p_one_seller then
    return null;
  else
    v_sellers := array(select distinct s from unnest(l_seller) s order by 1);
  end if;

  -- Everything written, before any product is locked: the lines bought, one
  -- order per seller (ascending, so ids ascend with sellers) with its lines,
  -- then the ledger.
  update waitress.cart_items ci set purchased = true where ci.id = any (l_item);
  foreach v_seller in array v_sellers loop
    if cardinality(v_sellers) = 1 then
      v_seller_total := v_total;
    else
      v_seller_total := 0;
      for v_i in 1 .. cardinality(l_item) loop
        if l_seller[v_i] = v_seller then
          v_seller_total := v_seller_total + l_price[v_i]::numeric * l_qty[v_i];
        end if;
      end loop;
    end if;
    insert into waitress.orders (id, buyer_id, seller_id, total_price, note)
    overriding system value
    values (waitress.new_order_id(v_seller), v_buyer, v_seller, v_seller_total, p_note)
    returning id, jsonb_build_object('id', id, 'code', waitress.order_code(id, created_at), 'buyer_id', buyer_id, 'seller_id', seller_id,
                                     'state', state, 'total_price', total_price, 'note', note, 'paid_at', paid_at,
                                     'created_at', created_at, 'updated_at', updated_at)
      into v_order_id, v_doc;
    v_order_ids := v_order_ids || v_order_id;
    v_order_docs := v_order_docs || v_doc;
    for v_line in
      insert into waitress.order_items (order_id, product_id, cart_item_id, quantity, price, weight)
      select v_order_id, l.product_id, l.cart_item_id, l.quantity, l.price, l.weight
        from unnest(l_item, l_product, l_qty, l_price, l_weight, l_seller) as l(cart_item_id, product_id, quantity, price, weight, seller_id)
       where l.seller_id = v_seller
       order by l.cart_item_id
      returning product_id, quantity,
                jsonb_build_object('id', id, 'cart_item_id', cart_item_id, 'quantity', quantity, 'price', price, 'weight', weight) as doc
    loop
      v_item_docs := v_item_docs || v_line.doc;
      v_item_orders := v_item_orders || v_order_id;
      v_item_products := v_item_products || v_line.product_id;
      v_item_qty := v_item_qty || v_line.quantity;
    end loop;
  end loop;
  insert into waitress.stock_movements (product_id, quantity, reason, order_id)
  select m.product_id, -m.quantity, 'sale', m.order_id
    from unnest(v_item_products, v_item_qty, v_item_orders) as m(product_id, quantity, order_id);

  -- Last: the queue, then the products locked in id order and decremented if still as read.
  -- One product (the hot-product case) is one conditional UPDATE, like the
  -- bare decrement; several are locked in id order first, all or none.
  if cardinality(l_product) = 1 then
    perform pg_advisory_xact_lock(1463899218, (l_product[1] % 2147483647)::integer);
    update waitress.products p
       set stock = p.stock - l_qty[1]
     where p.id = l_product[1] and waitress.still_as_read(p, l_qty[1], l_price[1], l_weight[1], l_seller[1])
    returning jsonb_build_object(p.id::text, waitress.product_json(p)) into v_product_docs;
    v_sold := case when v_product_docs is null then 0 else 1 end;
  else
    perform pg_advisory_xact_lock(1463899218, (x % 2147483647)::integer) from unnest(l_product) x;
    with want as (
      select * from unnest(l_product, l_qty, l_price, l_weight, l_seller) as w(id, quantity, price, weight, seller_id)
    ), locked as (
      select p.id
        from waitress.products p
        join want w on w.id = p.id
       where waitress.still_as_read(p, w.quantity, w.price, w.weight, w.seller_id)
       order by p.id
         for no key update of p
    ), sold as (
      update waitress.products p
         set stock = p.stock - w.quantity
        from want w
       where p.id = w.id
         and (select count(*) from locked) = cardinality(l_product)
      returning p.id, waitress.product_json(p) as doc
    )
    select jsonb_object_agg(sold.id::text, sold.doc), count(*) into v_product_docs, v_sold from sold;
  end if;
  if v_sold <> cardinality(l_product) then
    -- A product moved since it was read: take back what was written (this
    -- transaction's own rows) and let waitress.place_orders decide.
    delete from waitress.stock_movements m where m.order_id = any (v_order_ids);
    delete from waitress.order_items i where i.order_id = any (v_order_ids);
    delete from waitress.orders o where o.id = any (v_order_ids);
    update waitress.cart_items ci set purchased = false where ci.id = any (l_item);
    return null;
  end if;

  -- The documents: each order with its lines, each line with its product.
  v_orders := '[]';
  for v_k in 1 .. cardinality(v_order_ids) loop
    v_items := '[]';
    for v_i in 1 .. cardinality(v_item_docs) loop
      if v_item_orders[v_i] = v_order_ids[v_k] then
        v_items := v_items || jsonb_build_array(v_item_docs[v_i] || jsonb_build_object('product', v_product_docs->(v_item_products[v_i]::text)));
      end if;
    end loop;
    v_orders := v_orders || jsonb_build_array(v_order_docs[v_k] || jsonb_build_object('items', v_items));
  end loop;
  return jsonb_build_object('orders', v_orders, 'replayed', false);
end
$$;

comment on function waitress.place_one(bigint, bigint, bigint[], text, boolean, bigint) is
  'The one-request path of a checkout without an idempotency key: places the order when every rule of '
  'waitress.place_orders passes, else returns null for waitress.place_orders to decide.';

create function api.place_orders(p_requests jsonb) returns jsonb
language sql
security definer
set search_path = ''
as $$
  select waitress.place_orders(p_requests)
$$;

comment on function api.place_orders(jsonb) is
  'Many checkouts in one transaction (at most 1000), each all or nothing, decided in arrival order: a refused '
  'request takes no stock and a later, smaller one can still buy. Requests {"cart_id"} or {"buyer_id"}, '
  '"item_ids", "note", "one_seller", "user_id", "idempotency_key" (as p_idempotency_key of api.place_order, '
  'recorded in this transaction); returns per request {"orders": [...]} ("replayed": true for a replay) or {"error": {code, '
  'message, detail, hint}}, the codes of api.place_order.';

create function api.place_order(
  p_cart_id bigint,
  p_item_ids bigint[] default null,
  p_note text default null,
  p_idempotency_key text default null,
  p_user_id bigint default null
) returns jsonb
language plpgsql
security definer
set search_path = ''
as $$
declare
  v_result jsonb;
begin
  if p_idempotency_key is null then
    v_result := waitress.place_one(p_cart_id, null, p_item_ids, p_note, false, p_user_id);
    if v_result is not null then
      return v_result;
    end if;
  end if;
  v_result := waitress.place_orders(jsonb_build_array(jsonb_build_object(
    'cart_id', p_cart_id, 'item_ids', to_jsonb(p_item_ids), 'note', p_note,
    'user_id', p_user_id, 'idempotency_key', p_idempotency_key)))->0;
  if v_result ? 'error' then
    perform waitress.raise(v_result->'error');
  end if;
  return jsonb_build_object('orders', v_result->'orders', 'replayed', coalesce((v_result->>'replayed')::boolean, false));
end
$$;

comment on function api.place_order(bigint, bigint[], text, text, bigint) is
  'Checks out a cart: all its open items, or exactly p_item_ids; one order per seller. Returns {"orders": [Order, '
  '...], "replayed": false}. With p_idempotency_key (scoped to the cart''s buyer), exactly once: a retry with the '
  'same parameters returns the first orders with "replayed": true; other parameters are WA101. p_user_id: the '
  'user acting (another user''s cart is WA001); null acts for anyone. Refusals: WA001, WA003, WA004, WA005, WA006, '
  'WA101, WA102, WA110, WA111, WA112, WA113, WA115. On any error nothing changes.';

create function api.place_buyer_order(
  p_buyer_id bigint,
  p_cart_item_ids bigint[],
  p_note text default null,
  p_idempotency_key text default null
) returns jsonb
language plpgsql
security definer
set search_path = ''
as $$
declare
  v_result jsonb;
begin
  if coalesce(cardinality(p_cart_item_ids), 0) = 0 then
    perform waitress.refuse('WA006', 'no cart items to order', jsonb_build_object('buyer_id', p_buyer_id),
                            'Name at least one cart item, or check out the whole cart.');
  end if;
  if p_idempotency_key is null then
    v_result := waitress.place_one(null, p_buyer_id, p_cart_item_ids, p_note, true, null);
    if v_result is not null then
      return v_result;
    end if;
  end if;
  v_result := waitress.place_orders(jsonb_build_array(jsonb_build_object(
    'buyer_id', p_buyer_id, 'item_ids', to_jsonb(p_cart_item_ids), 'note', p_note, 'one_seller', true,
    'idempotency_key', p_idempotency_key)))->0;
  if v_result ? 'error' then
    perform waitress.raise(v_result->'error');
  end if;
  return jsonb_build_object('orders', v_result->'orders', 'replayed', coalesce((v_result->>'replayed')::boolean, false));
end
$$;

comment on function api.place_buyer_order(bigint, bigint[], text, text) is
  'Orders the given items of the buyer''s cart as one order from one seller: {"orders": [Order], "replayed": ...}. '
  'Refuses what api.place_order refuses, plus WA005 when the buyer has no cart and WA007 when the items span '
  'sellers. With p_idempotency_key (scoped to the buyer), exactly once.';

-- migrate:down
set local role waitress_owner;
drop function if exists api.place_buyer_order(bigint, bigint[], text, text);
drop function if exists api.place_order(bigint, bigint[], text, text, bigint);
drop function if exists api.place_orders(jsonb);
drop function if exists waitress.place_one(bigint, bigint, bigint[], text, boolean, bigint);
drop function if exists waitress.place_orders(jsonb);
drop function if exists waitress.place_orders_attempt(jsonb, boolean);
drop function if exists waitress.still_as_read(waitress.products, integer, bigint, integer, bigint);
drop function if exists waitress.for_sale(waitress.products);
