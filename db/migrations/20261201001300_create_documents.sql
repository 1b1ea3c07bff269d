-- migrate:up
set local role waitress_owner;

-- The JSON shapes the REST API serves, defined once, next to the data, so
-- that SQL callers and HTTP clients see the same documents. Ids are JSON
-- numbers; timestamps are ISO 8601 in UTC (+00:00) whatever the caller's
-- session says: each function sets its own TimeZone, so no client has to send
-- one (a transaction pooler keeps no session state). PL/pgSQL, not
-- SQL: a SQL function that cannot be inlined (these pin search_path) plans
-- its query again at every call; a PL/pgSQL one keeps its plan for the session.

create function waitress.product_json(p_product waitress.products) returns jsonb
language plpgsql stable
set search_path = ''
set timezone = 'UTC'
as $$
begin
  return (
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
  );
end
$$;

create function waitress.cart_item_json(p_item waitress.cart_items) returns jsonb
language plpgsql stable
set search_path = ''
set timezone = 'UTC'
as $$
begin
  return (
  select jsonb_build_object(
      'id', p_item.id,
      'cart_id', p_item.cart_id,
      'quantity', p_item.quantity,
      'purchased', p_item.purchased,
      'product', waitress.product_json(p),
      'created_at', p_item.created_at,
      'updated_at', p_item.updated_at
    )
    from waitress.products p
    where p.id = p_item.product_id
  );
end
$$;

create function waitress.cart_json(p_cart waitress.carts) returns jsonb
language plpgsql stable
set search_path = ''
set timezone = 'UTC'
as $$
begin
  return (
  select jsonb_build_object(
      'id', p_cart.id,
      'user_id', p_cart.user_id,
      'items', coalesce(
        (select jsonb_agg(waitress.cart_item_json(ci) order by ci.id)
           from waitress.cart_items ci
          where ci.cart_id = p_cart.id and not ci.purchased),
        '[]'::jsonb),
      'created_at', p_cart.created_at,
      'updated_at', p_cart.updated_at
    )
  );
end
$$;

create function waitress.order_json(p_order waitress.orders) returns jsonb
language plpgsql stable
set search_path = ''
set timezone = 'UTC'
as $$
begin
  return (
  select jsonb_build_object(
      'id', p_order.id,
      'code', waitress.order_code(p_order.id, p_order.created_at),
      'buyer_id', p_order.buyer_id,
      'seller_id', p_order.seller_id,
      'state', p_order.state,
      'total_price', p_order.total_price,
      'note', p_order.note,
      'items', coalesce(
        (select jsonb_agg(jsonb_build_object(
                  'id', oi.id,
                  'cart_item_id', oi.cart_item_id,
                  'quantity', oi.quantity,
                  'price', oi.price,
                  'weight', oi.weight,
                  'product', waitress.product_json(p))
                order by oi.cart_item_id)
           from waitress.order_items oi
           join waitress.products p on p.id = oi.product_id
          where oi.order_id = p_order.id),
        '[]'::jsonb),
      'paid_at', p_order.paid_at,
      'created_at', p_order.created_at,
      'updated_at', p_order.updated_at
    )
  );
end
$$;

comment on function waitress.product_json(waitress.products) is 'A product as the API serves it (the Product schema).';
comment on function waitress.cart_item_json(waitress.cart_items) is 'A cart line with its product (the CartItem schema).';
comment on function waitress.cart_json(waitress.carts) is 'A cart with its open lines (the Cart schema).';
comment on function waitress.order_json(waitress.orders) is 'An order with its lines, each with its product (the Order schema).';

-- migrate:down
set local role waitress_owner;
drop function if exists waitress.order_json(waitress.orders);
drop function if exists waitress.cart_json(waitress.carts);
drop function if exists waitress.cart_item_json(waitress.cart_items);
drop function if exists waitress.product_json(waitress.products);
