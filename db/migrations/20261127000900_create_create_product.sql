-- migrate:up
create function public.create_product(
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

comment on function public.create_product(text, bigint, bigint, integer, integer, boolean) is
  'Adds a product for sale, with its initial stock in the ledger. Invalid values fail on the products_* '
  'check constraints (SQLSTATE 23514).';

revoke execute on function public.create_product(text, bigint, bigint, integer, integer, boolean) from public;
grant execute on function public.create_product(text, bigint, bigint, integer, integer, boolean) to waitress_api;

-- migrate:down
drop function if exists public.create_product(text, bigint, bigint, integer, integer, boolean);
