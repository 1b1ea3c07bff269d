-- migrate:up
set local role waitress_owner;

-- price and weight are copied from the product at purchase: later product
-- edits never change what was sold.
-- One-column rules are domains, as for cart_items (20261201000700): planned
-- once per session, not on every insert of a checkout.
create domain waitress.order_item_quantity as integer
  constraint order_items_quantity_positive check (value >= 1);
create domain waitress.order_item_price as bigint
  constraint order_items_price_positive check (value > 0);
create domain waitress.order_item_weight as integer
  constraint order_items_weight_positive check (value > 0);

create table waitress.order_items (
  id bigint generated always as identity primary key,
  order_id bigint not null,
  product_id bigint not null,
  cart_item_id bigint not null,
  quantity waitress.order_item_quantity not null,
  price waitress.order_item_price not null,
  weight waitress.order_item_weight not null,
  created_at timestamptz not null default now(),
  constraint order_items_order_id_fkey foreign key (order_id) references waitress.orders (id),
  constraint order_items_product_id_fkey foreign key (product_id) references waitress.products (id),
  constraint order_items_cart_item_id_fkey foreign key (cart_item_id) references waitress.cart_items (id),
  constraint order_items_cart_item_id_key unique (cart_item_id),
  constraint order_items_one_line_per_product unique (order_id, product_id)
);

create index order_items_product_id_idx on waitress.order_items (product_id);

comment on table waitress.order_items is
  'Lines of an order. Each cart item is sold at most once (order_items_cart_item_id_key).';

-- migrate:down
set local role waitress_owner;
drop table if exists waitress.order_items;
drop domain if exists waitress.order_item_weight;
drop domain if exists waitress.order_item_price;
drop domain if exists waitress.order_item_quantity;
