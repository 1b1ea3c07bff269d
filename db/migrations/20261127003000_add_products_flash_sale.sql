-- migrate:up
alter table public.products add column flash_sale boolean not null default false;

comment on column public.products.flash_sale is
  'Flash-sale mode: while any product has it, the service coalesces concurrent checkouts into batches '
  '(place_orders), one lock and one commit per batch.';

-- The service asks "is any product in flash-sale mode?" about once a second.
create index products_flash_sale_idx on public.products (id) where flash_sale;

create or replace function public.product_json(p_product public.products) returns jsonb
language sql stable
set search_path = ''
as $$
  select jsonb_build_object(
    'id', p_product.id,
    'name', p_product.name,
    'seller_id', p_product.seller_id,
    'price', p_product.price,
    'active', p_product.active,
    'stock', p_product.stock,
    'weight', p_product.weight,
    'flash_sale', p_product.flash_sale,
    'created_at', p_product.created_at,
    'updated_at', p_product.updated_at
  )
$$;

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
create or replace function public.product_json(p_product public.products) returns jsonb
language sql stable
set search_path = ''
as $$
  select jsonb_build_object(
    'id', p_product.id,
    'name', p_product.name,
    'seller_id', p_product.seller_id,
    'price', p_product.price,
    'active', p_product.active,
    'stock', p_product.stock,
    'weight', p_product.weight,
    'created_at', p_product.created_at,
    'updated_at', p_product.updated_at
  )
$$;
drop index if exists public.products_flash_sale_idx;
alter table public.products drop column if exists flash_sale;
