-- migrate:up
set local role waitress_owner;

-- The checkout: the SQL contract's heart, in one file.
--
-- waitress.place_orders(p_requests) is the one implementation of a checkout's
-- rules, for one buyer or many at once. Each request is a checkout of its own
-- (all of a cart's open items, or exactly item_ids), all or nothing, decided
-- in arrival order; a refused request takes no stock. The whole call is one
-- transaction: one lock per cart and per product, one commit, set-based
-- writes. api.place_order and api.place_buyer_order call it for one request;
-- api.place_orders hands it a batch.
--
-- Lock order, as everywhere: carts in ascending id, then products in
-- ascending id. FOR NO KEY UPDATE serialises buyers of a product without
-- blocking the key-share locks that foreign-key checks (adding the product to
-- another cart) take on it. Every check runs before the first write, and all
-- writes are one statement.
--
-- p_requests: [{"cart_id": 1} | {"buyer_id": 42}, "item_ids": [..] | null,
--               "note": ".." | null, "one_seller": true | false,
--               "user_id": 42 | null (on whose behalf: another's cart is WA001)}, ...]
-- returns, in the same order: {"orders": [Order, ...]}
--                           | {"error": {"code", "message", "detail", "hint"}}
create function waitress.place_orders(p_requests jsonb) returns jsonb
language plpgsql
set search_path = ''
-- Every statement below reads or writes a handful of rows by key. Planning
-- them once per session (generic plans) saves about a third of a checkout's
-- CPU; forbidding sequential scans keeps those plans right even when they
-- were made while the tables were still empty.
set plan_cache_mode = force_generic_plan
set enable_seqscan = off
as $$
declare
  v_count integer;
  -- The requests, by position (1-based arrival order). The item ids they name
  -- are one flat array, request k's at r_item_from[k] .. r_item_from[k] + r_item_count[k] - 1.
  r_cart_ids bigint[];
  r_buyer_ids bigint[];
  r_notes text[];
  r_one_seller boolean[];
  r_user_ids bigint[];
  r_names_items boolean[];
  r_item_count integer[];
  r_item_from integer[];
  r_items bigint[];
  -- The batch's carts, locked, ascending; and their open lines, grouped by
  -- cart (cart k's at c_line_from[k] .. c_line_from[k] + c_line_count[k] - 1).
  v_cart_ids bigint[];
  v_cart_users bigint[];
  c_line_from integer[];
  c_line_count integer[];
  l_item bigint[];
  l_cart bigint[];
  l_product bigint[];
  l_quantity integer[];
  l_price bigint[];
  l_weight integer[];
  l_seller bigint[];
  l_for_sale boolean[];
  l_name text[];
  l_taken boolean[];
  -- The batch's products, locked, ascending, and their stock as allocated so far.
  v_products bigint[];
  v_remaining integer[];
  -- One request at a time.
  v_results jsonb[];
  v_ord integer;
  v_at integer;
  v_line integer;
  v_item integer;
  v_found boolean;
  v_cart_id bigint;
  v_buyer_id bigint;
  v_lines integer[];
  v_missing bigint[];
  v_unavailable jsonb;
  v_shortages jsonb;
  v_sellers bigint[];
  v_stock integer;
  -- Accepted lines: what the one write statement writes.
  a_ord integer[] := '{}';
  a_item bigint[] := '{}';
  a_product bigint[] := '{}';
  a_quantity integer[] := '{}';
  a_price bigint[] := '{}';
  a_weight integer[] := '{}';
  a_seller bigint[] := '{}';
  a_buyer bigint[] := '{}';
  a_note text[] := '{}';
  v_order_ids bigint[];
  v_order_ords integer[];
  v_ord_orders record;
begin
  if jsonb_typeof(p_requests) is distinct from 'array' or jsonb_array_length(p_requests) > 1000 then
    raise exception using errcode = '22023', message = 'place_orders takes a JSON array of at most 1000 requests';
  end if;
  v_count := jsonb_array_length(p_requests);
  if v_count = 0 then
    return '[]'::jsonb;
  end if;
  v_results := array_fill(null::jsonb, array[v_count]);

  select array_agg((r->>'cart_id')::bigint order by ord),
         array_agg((r->>'buyer_id')::bigint order by ord),
         array_agg(r->>'note' order by ord),
         array_agg(coalesce((r->>'one_seller')::boolean, false) order by ord),
         array_agg((r->>'user_id')::bigint order by ord),
         array_agg(jsonb_typeof(r->'item_ids') = 'array' order by ord),
         array_agg(case when jsonb_typeof(r->'item_ids') = 'array' then jsonb_array_length(r->'item_ids') else 0 end order by ord)
    into r_cart_ids, r_buyer_ids, r_notes, r_one_seller, r_user_ids, r_names_items, r_item_count
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

  -- Lock every cart of the batch, in id order.
  select array_agg(c.id order by c.id), array_agg(c.user_id order by c.id)
    into v_cart_ids, v_cart_users
    from (select c.id, c.user_id
            from waitress.carts c
           where c.id = any (r_cart_ids) or c.user_id = any (r_buyer_ids)
           order by c.id
             for no key update) c;
  v_cart_ids := coalesce(v_cart_ids, '{}');

  -- Then every product on their open lines, in id order, and read their stock.
  select array_agg(p.id order by p.id), array_agg(p.stock order by p.id)
    into v_products, v_remaining
    from (select p.id, p.stock
            from waitress.products p
           where p.id in (select ci.product_id from waitress.cart_items ci
                           where ci.cart_id = any (v_cart_ids) and not ci.purchased)
           order by p.id
             for no key update) p;

  -- The open lines of those carts, with what is needed to decide and to write.
  select coalesce(array_agg(ci.id order by ci.cart_id, ci.id), '{}'),
         array_agg(ci.cart_id order by ci.cart_id, ci.id),
         array_agg(ci.product_id order by ci.cart_id, ci.id),
         array_agg(ci.quantity order by ci.cart_id, ci.id),
         array_agg(p.price order by ci.cart_id, ci.id),
         array_agg(p.weight order by ci.cart_id, ci.id),
         array_agg(p.seller_id order by ci.cart_id, ci.id),
         array_agg(p.active and p.price > 0 order by ci.cart_id, ci.id),
         array_agg(p.name order by ci.cart_id, ci.id)
    into l_item, l_cart, l_product, l_quantity, l_price, l_weight, l_seller, l_for_sale, l_name
    from waitress.cart_items ci
    join waitress.products p on p.id = ci.product_id
   where ci.cart_id = any (v_cart_ids) and not ci.purchased;

  l_taken := array_fill(false, array[greatest(cardinality(l_item), 1)]);
  c_line_from := array_fill(0, array[greatest(cardinality(v_cart_ids), 1)]);
  c_line_count := array_fill(0, array[greatest(cardinality(v_cart_ids), 1)]);
  v_at := 0;
  for v_line in 1 .. cardinality(l_item) loop
    if v_line = 1 or l_cart[v_line] <> l_cart[v_line - 1] then
      v_at := array_position(v_cart_ids, l_cart[v_line]);
      c_line_from[v_at] := v_line;
    end if;
    c_line_count[v_at] := c_line_count[v_at] + 1;
  end loop;

  for v_ord in 1 .. v_count loop
    -- The cart.
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
        v_results[v_ord] := jsonb_build_object('error', waitress.refusal('WA005',
          format('buyer %s has no cart, so cart items %s cannot be ordered',
                            r_buyer_ids[v_ord],
                            array_to_string(r_items[r_item_from[v_ord] : r_item_from[v_ord] + r_item_count[v_ord] - 1], ', ', 'null')),
          jsonb_build_object('buyer_id', r_buyer_ids[v_ord],
                                       'cart_item_ids', to_jsonb(r_items[r_item_from[v_ord] : r_item_from[v_ord] + r_item_count[v_ord] - 1]))));
        continue;
      end if;
    end if;
    v_cart_id := v_cart_ids[v_at];
    v_buyer_id := v_cart_users[v_at];

    -- The lines to buy: the cart's open lines not bought earlier in this
    -- batch, all of them or the named ones (which must all be among them).
    v_lines := '{}';
    if r_names_items[v_ord] then
      v_missing := '{}';
      for v_item in r_item_from[v_ord] .. r_item_from[v_ord] + r_item_count[v_ord] - 1 loop
        v_found := false;
        for v_line in c_line_from[v_at] .. c_line_from[v_at] + c_line_count[v_at] - 1 loop
          if l_item[v_line] = r_items[v_item] and not l_taken[v_line] then
            v_found := true;
            if not v_line = any (v_lines) then
              v_lines := v_lines || v_line;
            end if;
          end if;
        end loop;
        if not v_found and not coalesce(r_items[v_item] = any (v_missing), false) then
          v_missing := v_missing || r_items[v_item];
        end if;
      end loop;
      if cardinality(v_missing) > 0 then
        v_missing := array(select m from unnest(v_missing) m order by m nulls last);
        v_results[v_ord] := jsonb_build_object('error', waitress.refusal('WA005',
          format('cart items %s are not open items of cart %s', array_to_string(v_missing, ', ', 'null'), v_cart_id),
          jsonb_build_object('cart_id', v_cart_id, 'cart_item_ids', to_jsonb(v_missing))));
        continue;
      end if;
    else
      for v_line in c_line_from[v_at] .. c_line_from[v_at] + c_line_count[v_at] - 1 loop
        if not l_taken[v_line] then
          v_lines := v_lines || v_line;
        end if;
      end loop;
    end if;

    if cardinality(v_lines) = 0 then
      v_results[v_ord] := jsonb_build_object('error', waitress.refusal('WA006',
          format('cart %s has nothing to order', v_cart_id),
          jsonb_build_object('cart_id', v_cart_id)));
      continue;
    end if;

    -- Every check before taking anything; lines are reported by product id.
    v_unavailable := '[]';
    v_shortages := '[]';
    v_sellers := '{}';
    if cardinality(v_lines) > 1 then
      v_lines := array(select x from unnest(v_lines) x order by l_product[x]);
    end if;
    foreach v_line in array v_lines loop
      v_stock := v_remaining[array_position(v_products, l_product[v_line])];
      if not l_for_sale[v_line] then
        v_unavailable := v_unavailable || jsonb_build_object('product_id', l_product[v_line], 'name', l_name[v_line]);
      end if;
      if l_quantity[v_line] > v_stock then
        v_shortages := v_shortages || jsonb_build_object('product_id', l_product[v_line], 'name', l_name[v_line],
                                                         'requested', l_quantity[v_line], 'available', v_stock);
      end if;
      if not l_seller[v_line] = any (v_sellers) then
        v_sellers := v_sellers || l_seller[v_line];
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

    -- Accepted: take the stock, and remember the lines for the write.
    foreach v_line in array v_lines loop
      v_at := array_position(v_products, l_product[v_line]);
      v_remaining[v_at] := v_remaining[v_at] - l_quantity[v_line];
      l_taken[v_line] := true;
      a_ord := a_ord || v_ord;
      a_item := a_item || l_item[v_line];
      a_product := a_product || l_product[v_line];
      a_quantity := a_quantity || l_quantity[v_line];
      a_price := a_price || l_price[v_line];
      a_weight := a_weight || l_weight[v_line];
      a_seller := a_seller || l_seller[v_line];
      a_buyer := a_buyer || v_buyer_id;
      a_note := a_note || r_notes[v_ord];
    end loop;
  end loop;

  if cardinality(a_item) > 0 then
    -- One statement writes everything: stock, cart lines, orders (one per
    -- request and seller), their lines and the ledger.
    with lines as (
      select *
        from unnest(a_ord, a_item, a_product, a_quantity, a_price, a_weight, a_seller, a_buyer, a_note)
          as l(ord, cart_item_id, product_id, quantity, price, weight, seller_id, buyer_id, note)
    ), sold as (
      update waitress.products p
         set stock = p.stock - s.quantity
        from (select product_id, sum(quantity)::integer as quantity from lines group by product_id) s
       where p.id = s.product_id
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
    ), inserted_lines as (
      insert into waitress.order_items (order_id, product_id, cart_item_id, quantity, price, weight)
      select o.id, l.product_id, l.cart_item_id, l.quantity, l.price, l.weight
        from lines l
        join new_orders o on o.ord = l.ord and o.seller_id = l.seller_id
       order by o.id, l.cart_item_id
    ), sales as (
      insert into waitress.stock_movements (product_id, quantity, reason, order_id)
      select l.product_id, -l.quantity, 'sale', o.id
        from lines l
        join new_orders o on o.ord = l.ord and o.seller_id = l.seller_id
    )
    select array_agg(id order by id), array_agg(ord order by id) into v_order_ids, v_order_ords from new_orders;

    for v_ord_orders in
      select v_order_ords[array_position(v_order_ids, o.id)] as ord, jsonb_agg(waitress.order_json(o) order by o.id) as orders
        from waitress.orders o
       where o.id = any (v_order_ids)
       group by 1
    loop
      v_results[v_ord_orders.ord] := jsonb_build_object('orders', v_ord_orders.orders);
    end loop;
  end if;

  return to_jsonb(v_results);
end
$$;

comment on function waitress.place_orders(jsonb) is
  'The checkout''s rules, once: many checkouts in one transaction, each all or nothing, in arrival order. '
  'Returns one {"orders": [...]} or {"error": {code, message, detail, hint}} per request, in order.';

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
  '"item_ids", "note", "one_seller", "user_id"; returns per request {"orders": [...]} or {"error": {code, message, '
  'detail, hint}}, the codes of api.place_order.';

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
  v_owner bigint;
  v_replay record;
  v_result jsonb;
  v_request jsonb := jsonb_build_object('cart_id', p_cart_id, 'item_ids', to_jsonb(p_item_ids), 'note', p_note);
begin
  if p_idempotency_key is not null then
    -- Whose cart it is comes first: another user's key on it reveals nothing.
    select c.user_id into v_owner from waitress.carts c where c.id = p_cart_id;
    if not found or v_owner <> coalesce(p_user_id, v_owner) then
      perform waitress.refuse('WA001', format('cart %s not found', p_cart_id), jsonb_build_object('cart_id', p_cart_id));
    end if;
    select * into v_replay from waitress.idempotency_begin(v_owner, p_idempotency_key, 'place_order', v_request);
    if v_replay.status is not null then
      return jsonb_build_object('orders', v_replay.data, 'replayed', true);
    end if;
  end if;

  v_result := waitress.place_orders(jsonb_build_array(v_request || jsonb_build_object('user_id', p_user_id)))->0;
  if v_result ? 'error' then
    perform waitress.raise(v_result->'error');
  end if;

  if p_idempotency_key is not null then
    perform waitress.idempotency_finish(v_owner, p_idempotency_key, 201, v_result->'orders');
  end if;
  return jsonb_build_object('orders', v_result->'orders', 'replayed', false);
end
$$;

comment on function api.place_order(bigint, bigint[], text, text, bigint) is
  'Checks out a cart: all its open items, or exactly p_item_ids; one order per seller. Returns {"orders": [Order, '
  '...], "replayed": false}. With p_idempotency_key (scoped to the cart''s buyer), exactly once: a retry with the '
  'same parameters returns the first orders with "replayed": true; other parameters are WA101. p_user_id: the '
  'user acting (another user''s cart is WA001); null acts for anyone. Refusals: WA001, WA003, WA004, WA005, WA006, '
  'WA101, WA102. On any error nothing changes.';

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
  v_replay record;
  v_result jsonb;
  v_request jsonb := jsonb_build_object('buyer_id', p_buyer_id, 'item_ids', to_jsonb(p_cart_item_ids), 'note', p_note,
                                        'one_seller', true);
begin
  if coalesce(cardinality(p_cart_item_ids), 0) = 0 then
    perform waitress.refuse('WA006', 'no cart items to order', jsonb_build_object('buyer_id', p_buyer_id),
                            'Name at least one cart item, or check out the whole cart.');
  end if;
  if p_idempotency_key is not null then
    select * into v_replay from waitress.idempotency_begin(p_buyer_id, p_idempotency_key, 'place_buyer_order', v_request);
    if v_replay.status is not null then
      return jsonb_build_object('orders', v_replay.data, 'replayed', true);
    end if;
  end if;

  v_result := waitress.place_orders(jsonb_build_array(v_request))->0;
  if v_result ? 'error' then
    perform waitress.raise(v_result->'error');
  end if;

  if p_idempotency_key is not null then
    perform waitress.idempotency_finish(p_buyer_id, p_idempotency_key, 201, v_result->'orders');
  end if;
  return jsonb_build_object('orders', v_result->'orders', 'replayed', false);
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
drop function if exists waitress.place_orders(jsonb);
