-- migrate:up
create function public.set_flash_sale(p_product_id bigint, p_enabled boolean) returns public.products
language plpgsql
security definer
set search_path = ''
as $$
declare
  v_product public.products;
begin
  update public.products set flash_sale = coalesce(p_enabled, false)
   where id = p_product_id
  returning * into v_product;
  if not found then
    raise exception using
      errcode = 'WA002',
      message = format('product %s not found', p_product_id),
      detail = jsonb_build_object('product_id', p_product_id)::text;
  end if;
  return v_product;
end
$$;

comment on function public.set_flash_sale(bigint, boolean) is
  'Switches a product''s flash-sale mode on or off, at run time. WA002 for an unknown product.';

revoke execute on function public.set_flash_sale(bigint, boolean) from public;
grant execute on function public.set_flash_sale(bigint, boolean) to waitress_api;

-- migrate:down
drop function if exists public.set_flash_sale(bigint, boolean);
