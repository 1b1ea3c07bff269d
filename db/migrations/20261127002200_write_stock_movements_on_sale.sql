-- migrate:up
-- The functions that change stock now write the ledger in the same
-- transaction: create_product its initial stock, place_order one sale per line.
create or replace function public.create_product(
  p_name text,
  p_seller_id bigint,
  p_price bigint,
  p_stock integer,
  p_weight integer,
  p_active boolean default true
) returns public.products
language plpgsql
security definer
set search_path = ''
as $$
declare
  v_product public.products;
begin
  insert into public.products (name, seller_id, price, stock, weight, active)
  values (p_name, p_seller_id, p_price, p_stock, p_weight, coalesce(p_active, true))
  returning * into v_product;
  if v_product.stock > 0 then
    insert into public.stock_movements (product_id, quantity, reason)
    values (v_product.id, v_product.stock, 'initial');
  end if;
  return v_product;
end
$$;


-- The checkout. One call is one transaction and one round trip. Lock order is
-- always: the cart, then its products in ascending id. FOR NO KEY UPDATE
-- serialises buyers of a product without blocking the key-share locks that
-- foreign-key checks (adding the product to another cart) take on it.
-- Nothing slow happens while a product is locked: every check runs before
-- the first write, and all writes are one statement.
create or replace function public.place_order(
  p_cart_id bigint,
  p_item_ids bigint[] default null,
  p_note text default null
) returns setof jsonb
language plpgsql
security definer
set search_path = ''
as $$
declare
  v_buyer_id bigint;
  v_missing bigint[];
  v_locked integer;
  v_unavailable jsonb;
  v_shortages jsonb;
  v_order_ids bigint[];
begin
  select c.user_id into v_buyer_id
    from public.carts c
   where c.id = p_cart_id
     for no key update;
  if not found then
    raise exception using
      errcode = 'WA001',
      message = format('cart %s not found', p_cart_id),
      detail = jsonb_build_object('cart_id', p_cart_id)::text,
      hint = 'Get or create the buyer''s cart with cart_for_user(user_id).';
  end if;

  if p_item_ids is not null then
    select array_agg(distinct r.id order by r.id) into v_missing
      from unnest(p_item_ids) as r(id)
     where not exists (
       select from public.cart_items ci
        where ci.id = r.id and ci.cart_id = p_cart_id and not ci.purchased);
    if v_missing is not null then
      raise exception using
        errcode = 'WA005',
        message = format('cart items %s are not open items of cart %s',
                         array_to_string(v_missing, ', ', 'null'), p_cart_id),
        detail = jsonb_build_object('cart_id', p_cart_id, 'cart_item_ids', to_jsonb(v_missing))::text,
        hint = 'Only items in this cart that are not purchased yet can be ordered; reload the cart.';
    end if;
  end if;

  perform from public.products p
   where p.id in (
     select ci.product_id from public.cart_items ci
      where ci.cart_id = p_cart_id and not ci.purchased
        and (p_item_ids is null or ci.id = any (p_item_ids)))
   order by p.id
     for no key update;
  get diagnostics v_locked = row_count;
  if v_locked = 0 then
    raise exception using
      errcode = 'WA006',
      message = format('cart %s has nothing to order', p_cart_id),
      detail = jsonb_build_object('cart_id', p_cart_id)::text,
      hint = 'Add items to the cart first.';
  end if;

  -- Every check before any write: a refused checkout changes nothing.
  select jsonb_agg(jsonb_build_object('product_id', p.id, 'name', p.name) order by p.id)
           filter (where not p.active or p.price = 0),
         jsonb_agg(jsonb_build_object('product_id', p.id, 'name', p.name,
                                      'requested', ci.quantity, 'available', p.stock) order by p.id)
           filter (where ci.quantity > p.stock)
    into v_unavailable, v_shortages
    from public.cart_items ci
    join public.products p on p.id = ci.product_id
   where ci.cart_id = p_cart_id and not ci.purchased
     and (p_item_ids is null or ci.id = any (p_item_ids));

  if v_unavailable is not null then
    raise exception using
      errcode = 'WA003',
      message = format('product "%s" (id %s) is not for sale',
                       v_unavailable->0->>'name', v_unavailable->0->>'product_id'),
      detail = jsonb_build_object('product_ids', jsonb_path_query_array(v_unavailable, '$[*].product_id'))::text,
      hint = 'Remove the product from the order; only active products with a price above zero can be bought.';
  end if;
  if v_shortages is not null then
    raise exception using
      errcode = 'WA004',
      message = format('insufficient stock for product "%s" (id %s): requested %s, available %s',
                       v_shortages->0->>'name', v_shortages->0->>'product_id',
                       v_shortages->0->>'requested', v_shortages->0->>'available')
                || case when jsonb_array_length(v_shortages) > 1
                        then format(' (and %s more products)', jsonb_array_length(v_shortages) - 1)
                        else '' end,
      detail = jsonb_build_object('shortages', v_shortages)::text,
      hint = 'Lower each quantity to at most the available stock, or remove the line.';
  end if;

  with lines as (
    select ci.id as cart_item_id, ci.product_id, ci.quantity, p.price, p.weight, p.seller_id
      from public.cart_items ci
      join public.products p on p.id = ci.product_id
     where ci.cart_id = p_cart_id and not ci.purchased
       and (p_item_ids is null or ci.id = any (p_item_ids))
  ), sold as (
    update public.products p
       set stock = p.stock - l.quantity
      from lines l
     where p.id = l.product_id
  ), bought as (
    update public.cart_items ci
       set purchased = true
      from lines l
     where ci.id = l.cart_item_id
  ), new_orders as (
    insert into public.orders (buyer_id, seller_id, total_price, note)
    select v_buyer_id, l.seller_id, sum(l.price * l.quantity), p_note
      from lines l
     group by l.seller_id
     order by l.seller_id
    returning id, seller_id
  ), new_order_items as (
    insert into public.order_items (order_id, product_id, cart_item_id, quantity, price, weight)
    select o.id, l.product_id, l.cart_item_id, l.quantity, l.price, l.weight
      from lines l
      join new_orders o on o.seller_id = l.seller_id
     order by l.cart_item_id  ), sales as (
    insert into public.stock_movements (product_id, quantity, reason, order_id)
    select l.product_id, -l.quantity, 'sale', o.id
      from lines l
      join new_orders o on o.seller_id = l.seller_id
  )
  select array_agg(o.id) into v_order_ids from new_orders o;

  return query
    select public.order_json(o) from public.orders o
     where o.id = any (v_order_ids)
     order by o.id;
end
$$;

comment on function public.place_order(bigint, bigint[], text) is
  'Checks out a cart: all its open items, or exactly p_item_ids. Returns one order document per seller. '
  'Raises WA001 (no such cart), WA005 (an id is not an open item of the cart), WA006 (nothing to order), '
  'WA003 (a product not for sale), WA004 (insufficient stock; DETAIL lists every short line). '
  'On any error nothing changes.';

-- migrate:down
create or replace function public.create_product(
  p_name text,
  p_seller_id bigint,
  p_price bigint,
  p_stock integer,
  p_weight integer,
  p_active boolean default true
) returns public.products
language plpgsql
security definer
set search_path = ''
as $$
declare
  v_product public.products;
begin
  insert into public.products (name, seller_id, price, stock, weight, active)
  values (p_name, p_seller_id, p_price, p_stock, p_weight, coalesce(p_active, true))
  returning * into v_product;
  return v_product;
end
$$;


-- The checkout. One call is one transaction and one round trip. Lock order is
-- always: the cart, then its products in ascending id. FOR NO KEY UPDATE
-- serialises buyers of a product without blocking the key-share locks that
-- foreign-key checks (adding the product to another cart) take on it.
-- Nothing slow happens while a product is locked: every check runs before
-- the first write, and all writes are one statement.
create or replace function public.place_order(
  p_cart_id bigint,
  p_item_ids bigint[] default null,
  p_note text default null
) returns setof jsonb
language plpgsql
security definer
set search_path = ''
as $$
declare
  v_buyer_id bigint;
  v_missing bigint[];
  v_locked integer;
  v_unavailable jsonb;
  v_shortages jsonb;
  v_order_ids bigint[];
begin
  select c.user_id into v_buyer_id
    from public.carts c
   where c.id = p_cart_id
     for no key update;
  if not found then
    raise exception using
      errcode = 'WA001',
      message = format('cart %s not found', p_cart_id),
      detail = jsonb_build_object('cart_id', p_cart_id)::text,
      hint = 'Get or create the buyer''s cart with cart_for_user(user_id).';
  end if;

  if p_item_ids is not null then
    select array_agg(distinct r.id order by r.id) into v_missing
      from unnest(p_item_ids) as r(id)
     where not exists (
       select from public.cart_items ci
        where ci.id = r.id and ci.cart_id = p_cart_id and not ci.purchased);
    if v_missing is not null then
      raise exception using
        errcode = 'WA005',
        message = format('cart items %s are not open items of cart %s',
                         array_to_string(v_missing, ', ', 'null'), p_cart_id),
        detail = jsonb_build_object('cart_id', p_cart_id, 'cart_item_ids', to_jsonb(v_missing))::text,
        hint = 'Only items in this cart that are not purchased yet can be ordered; reload the cart.';
    end if;
  end if;

  perform from public.products p
   where p.id in (
     select ci.product_id from public.cart_items ci
      where ci.cart_id = p_cart_id and not ci.purchased
        and (p_item_ids is null or ci.id = any (p_item_ids)))
   order by p.id
     for no key update;
  get diagnostics v_locked = row_count;
  if v_locked = 0 then
    raise exception using
      errcode = 'WA006',
      message = format('cart %s has nothing to order', p_cart_id),
      detail = jsonb_build_object('cart_id', p_cart_id)::text,
      hint = 'Add items to the cart first.';
  end if;

  -- Every check before any write: a refused checkout changes nothing.
  select jsonb_agg(jsonb_build_object('product_id', p.id, 'name', p.name) order by p.id)
           filter (where not p.active or p.price = 0),
         jsonb_agg(jsonb_build_object('product_id', p.id, 'name', p.name,
                                      'requested', ci.quantity, 'available', p.stock) order by p.id)
           filter (where ci.quantity > p.stock)
    into v_unavailable, v_shortages
    from public.cart_items ci
    join public.products p on p.id = ci.product_id
   where ci.cart_id = p_cart_id and not ci.purchased
     and (p_item_ids is null or ci.id = any (p_item_ids));

  if v_unavailable is not null then
    raise exception using
      errcode = 'WA003',
      message = format('product "%s" (id %s) is not for sale',
                       v_unavailable->0->>'name', v_unavailable->0->>'product_id'),
      detail = jsonb_build_object('product_ids', jsonb_path_query_array(v_unavailable, '$[*].product_id'))::text,
      hint = 'Remove the product from the order; only active products with a price above zero can be bought.';
  end if;
  if v_shortages is not null then
    raise exception using
      errcode = 'WA004',
      message = format('insufficient stock for product "%s" (id %s): requested %s, available %s',
                       v_shortages->0->>'name', v_shortages->0->>'product_id',
                       v_shortages->0->>'requested', v_shortages->0->>'available')
                || case when jsonb_array_length(v_shortages) > 1
                        then format(' (and %s more products)', jsonb_array_length(v_shortages) - 1)
                        else '' end,
      detail = jsonb_build_object('shortages', v_shortages)::text,
      hint = 'Lower each quantity to at most the available stock, or remove the line.';
  end if;

  with lines as (
    select ci.id as cart_item_id, ci.product_id, ci.quantity, p.price, p.weight, p.seller_id
      from public.cart_items ci
      join public.products p on p.id = ci.product_id
     where ci.cart_id = p_cart_id and not ci.purchased
       and (p_item_ids is null or ci.id = any (p_item_ids))
  ), sold as (
    update public.products p
       set stock = p.stock - l.quantity
      from lines l
     where p.id = l.product_id
  ), bought as (
    update public.cart_items ci
       set purchased = true
      from lines l
     where ci.id = l.cart_item_id
  ), new_orders as (
    insert into public.orders (buyer_id, seller_id, total_price, note)
    select v_buyer_id, l.seller_id, sum(l.price * l.quantity), p_note
      from lines l
     group by l.seller_id
     order by l.seller_id
    returning id, seller_id
  ), new_order_items as (
    insert into public.order_items (order_id, product_id, cart_item_id, quantity, price, weight)
    select o.id, l.product_id, l.cart_item_id, l.quantity, l.price, l.weight
      from lines l
      join new_orders o on o.seller_id = l.seller_id
     order by l.cart_item_id
  )
  select array_agg(o.id) into v_order_ids from new_orders o;

  return query
    select public.order_json(o) from public.orders o
     where o.id = any (v_order_ids)
     order by o.id;
end
$$;

comment on function public.place_order(bigint, bigint[], text) is
  'Checks out a cart: all its open items, or exactly p_item_ids. Returns one order document per seller. '
  'Raises WA001 (no such cart), WA005 (an id is not an open item of the cart), WA006 (nothing to order), '
  'WA003 (a product not for sale), WA004 (insufficient stock; DETAIL lists every short line). '
  'On any error nothing changes.';
