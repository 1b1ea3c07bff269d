-- migrate:up
create function public.restock_product(
  p_product_id bigint,
  p_quantity integer,
  p_note text default null
) returns public.products
language plpgsql
security definer
set search_path = ''
as $$
declare
  v_product public.products;
begin
  if p_quantity is null or p_quantity < 1 then
    raise exception using
      errcode = '22023',
      message = format('a restock adds at least 1 unit, got %s', coalesce(p_quantity::text, 'null'));
  end if;

  update public.products set stock = stock + p_quantity
   where id = p_product_id
  returning * into v_product;
  if not found then
    raise exception using
      errcode = 'WA002',
      message = format('product %s not found', p_product_id),
      detail = jsonb_build_object('product_id', p_product_id)::text;
  end if;

  insert into public.stock_movements (product_id, quantity, reason, note)
  values (p_product_id, p_quantity, 'restock', p_note);
  return v_product;
end
$$;

comment on function public.restock_product(bigint, integer, text) is
  'Adds p_quantity (>= 1) units to a product''s stock, with its restock movement. WA002 for an unknown product.';

create function public.adjust_stock(
  p_product_id bigint,
  p_quantity integer,
  p_reason text
) returns public.products
language plpgsql
security definer
set search_path = ''
as $$
declare
  v_product public.products;
begin
  if p_quantity is null or p_quantity = 0 then
    raise exception using
      errcode = '22023',
      message = 'a correction changes the stock by a non-zero number of units';
  end if;
  if p_reason is null or length(btrim(p_reason)) = 0 then
    raise exception using
      errcode = '22023',
      message = 'a correction needs a reason (e.g. "stock count 2026-11-27: 3 damaged")';
  end if;

  select * into v_product from public.products where id = p_product_id for no key update;
  if not found then
    raise exception using
      errcode = 'WA002',
      message = format('product %s not found', p_product_id),
      detail = jsonb_build_object('product_id', p_product_id)::text;
  end if;
  if v_product.stock + p_quantity < 0 then
    raise exception using
      errcode = 'WA010',
      message = format('a correction of %s would take the stock of product "%s" (id %s) below zero: it has %s',
                       p_quantity, v_product.name, v_product.id, v_product.stock),
      detail = jsonb_build_object('product_id', v_product.id, 'stock', v_product.stock, 'quantity', p_quantity)::text,
      hint = 'Units already sold are released by cancelling their orders, not by a correction.';
  end if;

  update public.products set stock = stock + p_quantity
   where id = p_product_id
  returning * into v_product;
  insert into public.stock_movements (product_id, quantity, reason, note)
  values (p_product_id, p_quantity, 'correction', p_reason);
  return v_product;
end
$$;

comment on function public.adjust_stock(bigint, integer, text) is
  'Corrects a product''s stock by a signed, non-zero quantity with a reason, never below zero (WA010), '
  'with its correction movement. WA002 for an unknown product.';

revoke execute on function public.restock_product(bigint, integer, text) from public;
revoke execute on function public.adjust_stock(bigint, integer, text) from public;
grant execute on function public.restock_product(bigint, integer, text) to waitress_api;
grant execute on function public.adjust_stock(bigint, integer, text) to waitress_api;

-- migrate:down
drop function if exists public.adjust_stock(bigint, integer, text);
drop function if exists public.restock_product(bigint, integer, text);
