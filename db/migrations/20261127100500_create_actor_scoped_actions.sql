-- migrate:up
-- The lifecycle and stock actions as the API calls them: on behalf of a user
-- (p_user_id; null when authentication is off, acting for anyone). An order
-- is seen only by its buyer and its seller (anyone else: WA008, as if it did
-- not exist); the buyer pays and cancels, the seller accepts, rejects,
-- delivers, remits and refunds (the other party: WA011). A product's stock
-- and flash-sale mode are its seller's (anyone else: WA002).

create function public.order_action_as(p_user_id bigint, p_order_id bigint, p_action text) returns jsonb
language plpgsql
security definer
set search_path = ''
as $$
declare
  v_order public.orders;
  v_by_buyer boolean := p_action in ('pay', 'cancel');
  v_allowed_user bigint;
begin
  if p_action is null or p_action not in ('pay', 'accept', 'reject', 'deliver', 'remit', 'refund', 'cancel') then
    raise exception using errcode = '22023', message = format('unknown order action %s', coalesce(p_action, 'null'));
  end if;
  select * into v_order from public.orders where id = p_order_id;
  if not found or (p_user_id is not null and p_user_id <> v_order.buyer_id and p_user_id <> v_order.seller_id) then
    raise exception using
      errcode = 'WA008',
      message = format('order %s not found', p_order_id),
      detail = jsonb_build_object('order_id', p_order_id)::text;
  end if;
  v_allowed_user := case when v_by_buyer then v_order.buyer_id else v_order.seller_id end;
  if p_user_id is not null and p_user_id <> v_allowed_user then
    raise exception using
      errcode = 'WA011',
      message = format('only the %s of order %s may %s it', case when v_by_buyer then 'buyer' else 'seller' end,
                       v_order.code, p_action),
      detail = jsonb_build_object('order_id', v_order.id, 'action', p_action,
                                  'allowed', case when v_by_buyer then 'buyer' else 'seller' end)::text;
  end if;

  return case p_action
    when 'pay' then public.pay_order(p_order_id)
    when 'accept' then public.accept_order(p_order_id)
    when 'reject' then public.reject_order(p_order_id)
    when 'deliver' then public.deliver_order(p_order_id)
    when 'remit' then public.remit_order(p_order_id)
    when 'refund' then public.refund_order(p_order_id)
    when 'cancel' then public.cancel_order(p_order_id)
  end;
end
$$;

comment on function public.order_action_as(bigint, bigint, text) is
  'Runs a lifecycle action (pay, accept, reject, deliver, remit, refund, cancel) on behalf of p_user_id: '
  'WA008 when the order is not theirs to see, WA011 when the action is the other party''s.';

create function public.own_product(p_user_id bigint, p_product_id bigint) returns void
language plpgsql
stable
set search_path = ''
as $$
begin
  if not exists (select from public.products p
                  where p.id = p_product_id and (p_user_id is null or p.seller_id = p_user_id)) then
    raise exception using
      errcode = 'WA002',
      message = format('product %s not found', p_product_id),
      detail = jsonb_build_object('product_id', p_product_id)::text;
  end if;
end
$$;

comment on function public.own_product(bigint, bigint) is
  'Internal: WA002 unless the product exists and (with a user) is that user''s to sell.';

create function public.restock_product_as(p_user_id bigint, p_product_id bigint, p_quantity integer, p_note text default null)
returns public.products
language plpgsql security definer set search_path = ''
as $$
begin
  perform public.own_product(p_user_id, p_product_id);
  return public.restock_product(p_product_id, p_quantity, p_note);
end
$$;

create function public.adjust_stock_as(p_user_id bigint, p_product_id bigint, p_quantity integer, p_reason text)
returns public.products
language plpgsql security definer set search_path = ''
as $$
begin
  perform public.own_product(p_user_id, p_product_id);
  return public.adjust_stock(p_product_id, p_quantity, p_reason);
end
$$;

create function public.set_flash_sale_as(p_user_id bigint, p_product_id bigint, p_enabled boolean)
returns public.products
language plpgsql security definer set search_path = ''
as $$
begin
  perform public.own_product(p_user_id, p_product_id);
  return public.set_flash_sale(p_product_id, p_enabled);
end
$$;

comment on function public.restock_product_as(bigint, bigint, integer, text) is 'restock_product by the product''s seller.';
comment on function public.adjust_stock_as(bigint, bigint, integer, text) is 'adjust_stock by the product''s seller.';
comment on function public.set_flash_sale_as(bigint, bigint, boolean) is 'set_flash_sale by the product''s seller.';

revoke execute on function public.order_action_as(bigint, bigint, text) from public;
revoke execute on function public.own_product(bigint, bigint) from public;
revoke execute on function public.restock_product_as(bigint, bigint, integer, text) from public;
revoke execute on function public.adjust_stock_as(bigint, bigint, integer, text) from public;
revoke execute on function public.set_flash_sale_as(bigint, bigint, boolean) from public;
grant execute on function public.order_action_as(bigint, bigint, text) to waitress_api;
grant execute on function public.restock_product_as(bigint, bigint, integer, text) to waitress_api;
grant execute on function public.adjust_stock_as(bigint, bigint, integer, text) to waitress_api;
grant execute on function public.set_flash_sale_as(bigint, bigint, boolean) to waitress_api;

-- migrate:down
drop function if exists public.set_flash_sale_as(bigint, bigint, boolean);
drop function if exists public.adjust_stock_as(bigint, bigint, integer, text);
drop function if exists public.restock_product_as(bigint, bigint, integer, text);
drop function if exists public.own_product(bigint, bigint);
drop function if exists public.order_action_as(bigint, bigint, text);
