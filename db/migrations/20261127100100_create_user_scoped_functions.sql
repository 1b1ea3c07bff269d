-- migrate:up
-- The API's identity check, in SQL: p_user_id is the authenticated user (the
-- JWT's sub), or null when the service runs without authentication (the open
-- contract: any cart, any order). Someone else's cart or order is answered
-- exactly like one that does not exist, and nothing changes.

create function public.add_cart_item_as(
  p_user_id bigint,
  p_cart_id bigint,
  p_product_id bigint,
  p_quantity integer
) returns public.cart_items
language plpgsql
security definer
set search_path = ''
as $$
begin
  -- A cart's user_id never changes, so reading it unlocked is safe.
  if p_user_id is not null
     and not exists (select from public.carts c where c.id = p_cart_id and c.user_id = p_user_id) then
    raise exception using
      errcode = 'WA001',
      message = format('cart %s not found', p_cart_id),
      detail = jsonb_build_object('cart_id', p_cart_id)::text,
      hint = 'Get or create the buyer''s cart with cart_for_user(user_id).';
  end if;
  return public.add_cart_item(p_cart_id, p_product_id, p_quantity);
end
$$;

comment on function public.add_cart_item_as(bigint, bigint, bigint, integer) is
  'add_cart_item on behalf of p_user_id: another user''s cart is WA001 (not found), as if it did not exist. '
  'p_user_id null: any cart.';

create function public.order_as(p_user_id bigint, p_order_id bigint) returns jsonb
language sql
stable
set search_path = ''
as $$
  select public.order_json(o)
    from public.orders o
   where o.id = p_order_id
     and (p_user_id is null or p_user_id in (o.buyer_id, o.seller_id))
$$;

comment on function public.order_as(bigint, bigint) is
  'The order document if p_user_id is its buyer or its seller (or p_user_id is null), else null.';

revoke execute on function public.add_cart_item_as(bigint, bigint, bigint, integer) from public;
revoke execute on function public.order_as(bigint, bigint) from public;
grant execute on function public.add_cart_item_as(bigint, bigint, bigint, integer) to waitress_api;
grant execute on function public.order_as(bigint, bigint) to waitress_api;

-- migrate:down
drop function if exists public.order_as(bigint, bigint);
drop function if exists public.add_cart_item_as(bigint, bigint, bigint, integer);
