-- migrate:up
create function public.cart_for_user(p_user_id bigint) returns public.carts
language plpgsql
security definer
set search_path = ''
as $$
declare
  v_cart public.carts;
begin
  select * into v_cart from public.carts where user_id = p_user_id;
  if found then
    return v_cart;
  end if;

  -- Two first calls may race: the loser's insert waits for the winner's,
  -- does nothing, and the next statement sees the winner's row.
  insert into public.carts (user_id) values (p_user_id)
  on conflict (user_id) do nothing
  returning * into v_cart;
  if not found then
    select * into v_cart from public.carts where user_id = p_user_id;
  end if;
  return v_cart;
end
$$;

comment on function public.cart_for_user(bigint) is
  'The user''s cart, created on first use. Safe when called concurrently for the same user.';

create function public.add_cart_item(
  p_cart_id bigint,
  p_product_id bigint,
  p_quantity integer
) returns public.cart_items
language plpgsql
security definer
set search_path = ''
as $$
declare
  v_product public.products;
  v_item public.cart_items;
begin
  if p_quantity is null or p_quantity < 1 then
    raise exception using
      errcode = '22023',
      message = format('quantity must be at least 1, got %s', coalesce(p_quantity::text, 'null'));
  end if;

  -- Same lock as place_order: a line cannot change while its cart is being
  -- bought, so a checkout buys exactly the quantities it read.
  perform from public.carts where id = p_cart_id for no key update;
  if not found then
    raise exception using
      errcode = 'WA001',
      message = format('cart %s not found', p_cart_id),
      detail = jsonb_build_object('cart_id', p_cart_id)::text,
      hint = 'Get or create the buyer''s cart with cart_for_user(user_id).';
  end if;

  -- Not locked: this is a courtesy check. The guarantee is made at checkout.
  select * into v_product from public.products where id = p_product_id;
  if not found then
    raise exception using
      errcode = 'WA002',
      message = format('product %s not found', p_product_id),
      detail = jsonb_build_object('product_id', p_product_id)::text;
  end if;
  if not v_product.active or v_product.price = 0 then
    raise exception using
      errcode = 'WA003',
      message = format('product "%s" (id %s) is not for sale', v_product.name, v_product.id),
      detail = jsonb_build_object('product_ids', jsonb_build_array(v_product.id))::text,
      hint = 'Only active products with a price above zero can be bought.';
  end if;

  insert into public.cart_items (cart_id, product_id, quantity)
  values (p_cart_id, p_product_id, p_quantity)
  on conflict (cart_id, product_id) where not purchased
  do update set quantity = public.cart_items.quantity + excluded.quantity
  returning * into v_item;

  if v_item.quantity > v_product.stock then
    raise exception using
      errcode = 'WA004',
      message = format('insufficient stock for product "%s" (id %s): requested %s, available %s',
                       v_product.name, v_product.id, v_item.quantity, v_product.stock),
      detail = jsonb_build_object('shortages', jsonb_build_array(jsonb_build_object(
                 'product_id', v_product.id, 'name', v_product.name,
                 'requested', v_item.quantity, 'available', v_product.stock)))::text,
      hint = 'Lower the quantity to at most the available stock.';
  end if;

  return v_item;
end
$$;

comment on function public.add_cart_item(bigint, bigint, integer) is
  'Adds quantity of a product to a cart; a product already on an open line adds to that line. '
  'Refuses (WA001) unknown cart, (WA002) unknown product, (WA003) a product not for sale, '
  '(WA004) a line above current stock, (22023) quantity below 1.';

revoke execute on function public.cart_for_user(bigint) from public;
revoke execute on function public.add_cart_item(bigint, bigint, integer) from public;
grant execute on function public.cart_for_user(bigint) to waitress_api;
grant execute on function public.add_cart_item(bigint, bigint, integer) to waitress_api;

-- migrate:down
drop function if exists public.add_cart_item(bigint, bigint, integer);
drop function if exists public.cart_for_user(bigint);
