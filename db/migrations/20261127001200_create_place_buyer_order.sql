-- migrate:up
create function public.place_buyer_order(
  p_buyer_id bigint,
  p_cart_item_ids bigint[],
  p_note text default null
) returns jsonb
language plpgsql
security definer
set search_path = ''
as $$
declare
  v_cart_id bigint;
  v_orders jsonb[];
begin
  select c.id into v_cart_id from public.carts c where c.user_id = p_buyer_id;
  if not found then
    raise exception using
      errcode = 'WA005',
      message = format('buyer %s has no cart, so cart items %s cannot be ordered',
                       p_buyer_id, array_to_string(p_cart_item_ids, ', ', 'null')),
      detail = jsonb_build_object('buyer_id', p_buyer_id, 'cart_item_ids', to_jsonb(p_cart_item_ids))::text,
      hint = 'Add items to the buyer''s cart first.';
  end if;
  if coalesce(cardinality(p_cart_item_ids), 0) = 0 then
    raise exception using
      errcode = 'WA006',
      message = 'no cart items to order',
      detail = jsonb_build_object('buyer_id', p_buyer_id)::text,
      hint = 'Name at least one cart item, or check out the whole cart.';
  end if;

  select array_agg(o) into v_orders from public.place_order(v_cart_id, p_cart_item_ids, p_note) o;

  -- Raising here undoes the whole checkout above: an order is for one seller.
  if cardinality(v_orders) > 1 then
    raise exception using
      errcode = 'WA007',
      message = format('the cart items belong to %s sellers; an order is for one seller',
                       cardinality(v_orders)),
      detail = jsonb_build_object('seller_ids',
                 (select jsonb_agg(o->'seller_id') from unnest(v_orders) o))::text,
      hint = 'Order the items of each seller separately, or check out the whole cart (one order per seller).';
  end if;
  return v_orders[1];
end
$$;

comment on function public.place_buyer_order(bigint, bigint[], text) is
  'Orders the given items of the buyer''s cart as one order from one seller (place_order for one seller). '
  'Raises what place_order raises, plus WA005 when the buyer has no cart and WA007 when the items span sellers.';

revoke execute on function public.place_buyer_order(bigint, bigint[], text) from public;
grant execute on function public.place_buyer_order(bigint, bigint[], text) to waitress_api;

-- migrate:down
drop function if exists public.place_buyer_order(bigint, bigint[], text);
