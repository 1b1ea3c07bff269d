-- migrate:up
set local role waitress_owner;

-- The catalogue and a product's stock. Functions that act on behalf of a user
-- take p_user_id last: the authenticated user, or null for a caller trusted to
-- act for anyone (the service without authentication, a backend in SQL). A
-- product's stock and history are its seller's: for anyone else the product
-- does not exist (WA002).

create function api.create_product(
  p_name text,
  p_seller_id bigint,
  p_price bigint,
  p_stock integer,
  p_weight integer,
  p_active boolean default true
) returns jsonb
language plpgsql
security definer
set search_path = ''
as $$
declare
  v_product waitress.products;
begin
  insert into waitress.products (name, seller_id, price, stock, weight, active)
  values (p_name, p_seller_id, p_price, p_stock, p_weight, coalesce(p_active, true))
  returning * into v_product;
  if v_product.stock > 0 then
    insert into waitress.stock_movements (product_id, quantity, reason)
    values (v_product.id, v_product.stock, 'initial');
  end if;
  return waitress.product_json(v_product);
end
$$;

comment on function api.create_product(text, bigint, bigint, integer, integer, boolean) is
  'Adds a product for sale, with its initial stock in the ledger; returns the Product. Invalid values fail on the '
  'products_* check constraints (23514).';

create function api.product(p_product_id bigint) returns jsonb
language plpgsql
stable
security definer
set search_path = ''
as $$
declare
  v_product waitress.products;
begin
  select * into v_product from waitress.products where id = p_product_id;
  if not found then
    perform waitress.refuse('WA002', format('product %s not found', p_product_id), jsonb_build_object('product_id', p_product_id));
  end if;
  return waitress.product_json(v_product);
end
$$;

comment on function api.product(bigint) is 'The Product. WA002 when there is none.';

create function waitress.check_page(p_limit integer, p_offset integer) returns void
language plpgsql
immutable
set search_path = ''
as $$
begin
  if p_limit is null or p_limit not between 1 and 100 or p_offset is null or p_offset < 0 then
    raise exception using errcode = '22023',
      message = format('a page is 1 to 100 rows from an offset of 0 or more, got limit %s offset %s', p_limit, p_offset);
  end if;
end
$$;

comment on function waitress.check_page(integer, integer) is 'Internal: 22023 unless 1 <= p_limit <= 100 and p_offset >= 0.';

create function api.products(p_limit integer default 10, p_offset integer default 0) returns jsonb
language plpgsql
stable
security definer
set search_path = ''
as $$
begin
  perform waitress.check_page(p_limit, p_offset);
  return coalesce((select jsonb_agg(waitress.product_json(p) order by p.id)
                     from (select * from waitress.products order by id limit p_limit offset p_offset) p), '[]');
end
$$;

comment on function api.products(integer, integer) is 'A page of products by id, as a JSON array (limit 1 to 100).';

create function api.restock_product(p_product_id bigint, p_quantity integer, p_note text default null, p_user_id bigint default null)
returns jsonb
language plpgsql
security definer
set search_path = ''
as $$
declare
  v_product waitress.products;
begin
  if p_quantity is null or p_quantity < 1 then
    raise exception using errcode = '22023',
      message = format('a restock adds at least 1 unit, got %s', coalesce(p_quantity::text, 'null'));
  end if;

  update waitress.products set stock = stock + p_quantity
   where id = p_product_id and (p_user_id is null or seller_id = p_user_id)
  returning * into v_product;
  if not found then
    perform waitress.refuse('WA002', format('product %s not found', p_product_id), jsonb_build_object('product_id', p_product_id));
  end if;

  insert into waitress.stock_movements (product_id, quantity, reason, note)
  values (p_product_id, p_quantity, 'restock', p_note);
  return waitress.product_json(v_product);
end
$$;

comment on function api.restock_product(bigint, integer, text, bigint) is
  'Adds p_quantity (>= 1) units to a product''s stock, with its restock movement; returns the Product. '
  'WA002 for an unknown product or another seller''s.';

create function api.adjust_stock(p_product_id bigint, p_quantity integer, p_reason text, p_user_id bigint default null)
returns jsonb
language plpgsql
security definer
set search_path = ''
as $$
declare
  v_product waitress.products;
begin
  if p_quantity is null or p_quantity = 0 then
    raise exception using errcode = '22023', message = 'a correction changes the stock by a non-zero number of units';
  end if;
  if p_reason is null or length(btrim(p_reason)) = 0 then
    raise exception using errcode = '22023',
      message = 'a correction needs a reason (e.g. "stock count 2026-11-27: 3 damaged")';
  end if;

  select * into v_product
    from waitress.products
   where id = p_product_id and (p_user_id is null or seller_id = p_user_id)
     for no key update;
  if not found then
    perform waitress.refuse('WA002', format('product %s not found', p_product_id), jsonb_build_object('product_id', p_product_id));
  end if;
  if v_product.stock + p_quantity < 0 then
    perform waitress.refuse('WA010',
      format('a correction of %s would take the stock of product "%s" (id %s) below zero: it has %s',
             p_quantity, v_product.name, v_product.id, v_product.stock),
      jsonb_build_object('product_id', v_product.id, 'stock', v_product.stock, 'quantity', p_quantity));
  end if;

  update waitress.products set stock = stock + p_quantity
   where id = p_product_id
  returning * into v_product;
  insert into waitress.stock_movements (product_id, quantity, reason, note)
  values (p_product_id, p_quantity, 'correction', p_reason);
  return waitress.product_json(v_product);
end
$$;

comment on function api.adjust_stock(bigint, integer, text, bigint) is
  'Corrects a product''s stock by a signed, non-zero quantity with a reason, never below zero (WA010), with its '
  'correction movement; returns the Product. WA002 for an unknown product or another seller''s.';

create function api.stock_movements(p_product_id bigint, p_limit integer default 10, p_offset integer default 0,
                                    p_user_id bigint default null)
returns jsonb
language plpgsql
stable
security definer
set search_path = ''
set timezone = 'UTC'
as $$
begin
  perform waitress.check_page(p_limit, p_offset);
  if not exists (select from waitress.products p
                  where p.id = p_product_id and (p_user_id is null or p.seller_id = p_user_id)) then
    perform waitress.refuse('WA002', format('product %s not found', p_product_id), jsonb_build_object('product_id', p_product_id));
  end if;
  return coalesce((select jsonb_agg(to_jsonb(m) order by m.id)
                     from (select * from waitress.stock_movements
                            where product_id = p_product_id
                            order by id
                            limit p_limit offset p_offset) m), '[]');
end
$$;

comment on function api.stock_movements(bigint, integer, integer, bigint) is
  'A page of a product''s ledger, oldest first, as a JSON array of StockMovement: its stock is the sum of the '
  'quantities. The seller''s only: WA002 for anyone else.';

-- migrate:down
set local role waitress_owner;
drop function if exists api.stock_movements(bigint, integer, integer, bigint);
drop function if exists api.adjust_stock(bigint, integer, text, bigint);
drop function if exists api.restock_product(bigint, integer, text, bigint);
drop function if exists api.products(integer, integer);
drop function if exists waitress.check_page(integer, integer);
drop function if exists api.product(bigint);
drop function if exists api.create_product(text, bigint, bigint, integer, integer, boolean);
