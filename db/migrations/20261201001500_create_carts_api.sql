-- migrate:up
set local role waitress_owner;

-- Carts. A change to a cart takes the cart's row lock, as a checkout does, so
-- a line cannot change while its cart is being bought: a checkout buys exactly
-- the quantities it read; and the limits of a cart (open lines, units per
-- line: waitress.limits()) are checked under it. Another user's cart is
-- answered as if it did not exist (WA001), and nothing changes.

create function api.cart_for_user(p_user_id bigint) returns jsonb
language plpgsql
security definer
set search_path = ''
as $$
declare
  v_cart waitress.carts;
begin
  select * into v_cart from waitress.carts where user_id = p_user_id;
  if not found then
    -- Two first calls may race: the loser's insert waits for the winner's,
    -- does nothing, and the next statement sees the winner's row.
    insert into waitress.carts (user_id) values (p_user_id)
    on conflict (user_id) do nothing
    returning * into v_cart;
    if not found then
      select * into v_cart from waitress.carts where user_id = p_user_id;
    end if;
  end if;
  return waitress.cart_json(v_cart);
end
$$;

comment on function api.cart_for_user(bigint) is
  'The user''s Cart with its open lines, created on first use. Safe when called concurrently for the same user.';

create function api.add_cart_item(p_cart_id bigint, p_product_id bigint, p_quantity integer, p_user_id bigint default null)
returns jsonb
language plpgsql
security definer
set search_path = ''
as $$
declare
  v_limits record;
  v_product waitress.products;
  v_item waitress.cart_items;
  v_open integer;
begin
  if p_quantity is null or p_quantity < 1 then
    raise exception using errcode = '22023',
      message = format('quantity must be at least 1, got %s', coalesce(p_quantity::text, 'null'));
  end if;

  -- The cart's row lock serialises every change of the cart's lines and its
  -- checkouts: the count of its open lines below cannot change until we
  -- commit, so two adds can never both take the last free line.
  perform from waitress.carts where id = p_cart_id and (p_user_id is null or user_id = p_user_id) for no key update;
  if not found then
    perform waitress.refuse('WA001', format('cart %s not found', p_cart_id), jsonb_build_object('cart_id', p_cart_id));
  end if;

  select * into v_limits from waitress.limits();
  if p_quantity > v_limits.max_line_quantity then
    perform waitress.refuse('WA115',
      format('a cart line holds at most %s units, not %s', v_limits.max_line_quantity, p_quantity),
      jsonb_build_object('product_id', p_product_id, 'quantity', p_quantity, 'limit', v_limits.max_line_quantity));
  end if;

  -- Not locked: this is a courtesy check. The guarantee is made at checkout.
  select * into v_product from waitress.products where id = p_product_id;
  if not found then
    perform waitress.refuse('WA002', format('product %s not found', p_product_id), jsonb_build_object('product_id', p_product_id));
  end if;
  if not v_product.active or v_product.price = 0 then
    perform waitress.refuse('WA003', format('product "%s" (id %s) is not for sale', v_product.name, v_product.id),
                            jsonb_build_object('product_ids', jsonb_build_array(v_product.id)));
  end if;

  -- A new line only while the cart has room for one; adding to the product's
  -- open line is always allowed. Both read the partial unique index of open
  -- lines, a hundred entries at most.
  if not exists (select from waitress.cart_items ci
                  where ci.cart_id = p_cart_id and ci.product_id = p_product_id and not ci.purchased) then
    select count(*) into v_open from waitress.cart_items ci where ci.cart_id = p_cart_id and not ci.purchased;
    if v_open >= v_limits.max_open_lines then
      perform waitress.refuse('WA114',
        format('cart %s has %s open lines; a cart holds at most %s', p_cart_id, v_open, v_limits.max_open_lines),
        jsonb_build_object('cart_id', p_cart_id, 'lines', v_open, 'limit', v_limits.max_open_lines));
    end if;
  end if;

  insert into waitress.cart_items (cart_id, product_id, quantity)
  values (p_cart_id, p_product_id, p_quantity)
  on conflict (cart_id, product_id) where not purchased
  do update set quantity = waitress.cart_items.quantity + excluded.quantity
  returning * into v_item;

  -- Adding to a line: the sum may pass the limit (both parts are at most the
  -- limit, so it cannot overflow). The refusal undoes the insert.
  if v_item.quantity > v_limits.max_line_quantity then
    perform waitress.refuse('WA115',
      format('a cart line holds at most %s units; the line of product %s would hold %s',
             v_limits.max_line_quantity, p_product_id, v_item.quantity),
      jsonb_build_object('product_id', p_product_id, 'quantity', v_item.quantity, 'limit', v_limits.max_line_quantity));
  end if;

  if v_item.quantity > v_product.stock then
    perform waitress.refuse('WA004',
      format('insufficient stock for product "%s" (id %s): requested %s, available %s',
             v_product.name, v_product.id, v_item.quantity, v_product.stock),
      jsonb_build_object('shortages', jsonb_build_array(jsonb_build_object(
        'product_id', v_product.id, 'name', v_product.name, 'requested', v_item.quantity, 'available', v_product.stock))));
  end if;

  return waitress.cart_item_json(v_item);
end
$$;

comment on function api.add_cart_item(bigint, bigint, integer, bigint) is
  'Adds p_quantity of a product to a cart and returns the CartItem; a product already on an open line adds to '
  'that line. WA001 unknown cart (or another user''s), WA002 unknown product, WA003 not for sale, WA004 a line '
  'above current stock, WA114 a new line in a cart at its open-line limit, WA115 a line above the quantity limit '
  '(waitress.limits()), 22023 quantity below 1.';

-- A line to change or remove: its cart's row lock first (as every cart change
-- and every checkout takes it), then the line itself. A line's cart never
-- changes, so reading it unlocked to find the cart is safe; whether it is
-- purchased is read only once the cart is locked, so it cannot change under
-- us. Ownership comes first: another user's line is WA012 whatever its state.
create function waitress.lock_open_cart_item(p_cart_item_id bigint, p_user_id bigint) returns waitress.cart_items
language plpgsql
set search_path = ''
as $$
declare
  v_cart_id bigint;
  v_item waitress.cart_items;
  v_order_id bigint;
begin
  select ci.cart_id into v_cart_id from waitress.cart_items ci where ci.id = p_cart_item_id;
  if found then
    perform from waitress.carts c
     where c.id = v_cart_id and (p_user_id is null or c.user_id = p_user_id)
       for no key update;
  end if;
  if not found then
    perform waitress.refuse('WA012', format('cart item %s not found', p_cart_item_id),
                            jsonb_build_object('cart_item_id', p_cart_item_id));
  end if;

  -- Removed by a request that held the cart's lock before us: gone now.
  select * into v_item from waitress.cart_items ci where ci.id = p_cart_item_id for update;
  if not found then
    perform waitress.refuse('WA012', format('cart item %s not found', p_cart_item_id),
                            jsonb_build_object('cart_item_id', p_cart_item_id));
  end if;
  if v_item.purchased then
    select oi.order_id into v_order_id from waitress.order_items oi where oi.cart_item_id = p_cart_item_id;
    perform waitress.refuse('WA013',
      format('cart item %s was purchased%s: it can no longer be changed or removed', p_cart_item_id,
             coalesce(format(' (order %s)', v_order_id), '')),
      jsonb_build_object('cart_item_id', p_cart_item_id, 'order_id', v_order_id));
  end if;
  return v_item;
end
$$;

comment on function waitress.lock_open_cart_item(bigint, bigint) is
  'Internal: locks a cart item''s cart, then the item, and returns it; WA012 when there is none or it is in '
  'another user''s cart (p_user_id; null: anyone''s), WA013 when it was purchased.';

create function api.update_cart_item(p_cart_item_id bigint, p_quantity integer, p_user_id bigint default null)
returns jsonb
language plpgsql
security definer
set search_path = ''
as $$
declare
  v_item waitress.cart_items;
  v_product waitress.products;
  v_max_quantity integer;
begin
  if p_quantity is null or p_quantity < 1 then
    raise exception using errcode = '22023',
      message = format('quantity must be at least 1, got %s', coalesce(p_quantity::text, 'null')),
      hint = 'To take a line out of the cart, remove it (DELETE /carts/items/:id, api.remove_cart_item).';
  end if;

  v_item := waitress.lock_open_cart_item(p_cart_item_id, p_user_id);

  select l.max_line_quantity into v_max_quantity from waitress.limits() l;
  if p_quantity > v_max_quantity then
    perform waitress.refuse('WA115', format('a cart line holds at most %s units, not %s', v_max_quantity, p_quantity),
      jsonb_build_object('product_id', v_item.product_id, 'quantity', p_quantity, 'limit', v_max_quantity));
  end if;

  -- Not locked, as when adding: a courtesy check. The guarantee is made at checkout.
  select * into strict v_product from waitress.products where id = v_item.product_id;
  if not v_product.active or v_product.price = 0 then
    perform waitress.refuse('WA003', format('product "%s" (id %s) is not for sale', v_product.name, v_product.id),
                            jsonb_build_object('product_ids', jsonb_build_array(v_product.id)));
  end if;
  if p_quantity > v_product.stock then
    perform waitress.refuse('WA004',
      format('insufficient stock for product "%s" (id %s): requested %s, available %s',
             v_product.name, v_product.id, p_quantity, v_product.stock),
      jsonb_build_object('shortages', jsonb_build_array(jsonb_build_object(
        'product_id', v_product.id, 'name', v_product.name, 'requested', p_quantity, 'available', v_product.stock))));
  end if;

  update waitress.cart_items set quantity = p_quantity where id = p_cart_item_id returning * into v_item;
  return waitress.cart_item_json(v_item);
end
$$;

comment on function api.update_cart_item(bigint, integer, bigint) is
  'Sets the quantity of an open cart line and returns the CartItem. p_user_id: the user acting (another user''s '
  'line is WA012); null acts for anyone. WA012 unknown line, WA013 a purchased line, WA115 a quantity above the '
  'limit (waitress.limits()), WA003 a product no longer for sale, WA004 a quantity above current stock, 22023 a '
  'quantity below 1 (remove the line instead).';

create function api.remove_cart_item(p_cart_item_id bigint, p_user_id bigint default null)
returns jsonb
language plpgsql
security definer
set search_path = ''
as $$
declare
  v_item waitress.cart_items;
begin
  v_item := waitress.lock_open_cart_item(p_cart_item_id, p_user_id);
  delete from waitress.cart_items where id = p_cart_item_id;
  return waitress.cart_json((select c from waitress.carts c where c.id = v_item.cart_id));
end
$$;

comment on function api.remove_cart_item(bigint, bigint) is
  'Removes an open line from its cart and returns the Cart without it. p_user_id: the user acting (another user''s '
  'line is WA012); null acts for anyone. WA012 unknown line, WA013 a purchased line.';

-- migrate:down
set local role waitress_owner;
drop function if exists api.remove_cart_item(bigint, bigint);
drop function if exists api.update_cart_item(bigint, integer, bigint);
drop function if exists waitress.lock_open_cart_item(bigint, bigint);
drop function if exists api.add_cart_item(bigint, bigint, integer, bigint);
drop function if exists api.cart_for_user(bigint);
