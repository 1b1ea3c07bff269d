-- migrate:up
set local role waitress_owner;

-- Carts. A change to a cart takes the cart's row lock, as a checkout does, so
-- a line cannot change while its cart is being bought: a checkout buys exactly
-- the quantities it read. Another user's cart is answered as if it did not
-- exist (WA001), and nothing changes.

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
  v_product waitress.products;
  v_item waitress.cart_items;
begin
  if p_quantity is null or p_quantity < 1 then
    raise exception using errcode = '22023',
      message = format('quantity must be at least 1, got %s', coalesce(p_quantity::text, 'null'));
  end if;

  perform from waitress.carts where id = p_cart_id and (p_user_id is null or user_id = p_user_id) for no key update;
  if not found then
    perform waitress.refuse('WA001', format('cart %s not found', p_cart_id), jsonb_build_object('cart_id', p_cart_id));
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

  insert into waitress.cart_items (cart_id, product_id, quantity)
  values (p_cart_id, p_product_id, p_quantity)
  on conflict (cart_id, product_id) where not purchased
  do update set quantity = waitress.cart_items.quantity + excluded.quantity
  returning * into v_item;

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
  'above current stock, 22023 quantity below 1.';

-- migrate:down
set local role waitress_owner;
drop function if exists api.add_cart_item(bigint, bigint, integer, bigint);
drop function if exists api.cart_for_user(bigint);
