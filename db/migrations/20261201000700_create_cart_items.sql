-- migrate:up
set local role waitress_owner;

create table waitress.cart_items (
  id bigint generated always as identity primary key,
  cart_id bigint not null,
  product_id bigint not null,
  quantity integer not null,
  purchased boolean not null default false,
  created_at timestamptz not null default now(),
  updated_at timestamptz not null default now(),
  constraint cart_items_cart_id_fkey foreign key (cart_id) references waitress.carts (id),
  constraint cart_items_product_id_fkey foreign key (product_id) references waitress.products (id),
  constraint cart_items_quantity_positive check (quantity >= 1)
);

-- A product appears at most once among a cart's open (unpurchased) lines;
-- adding it again adds to that line.
create unique index cart_items_one_open_line_per_product
  on waitress.cart_items (cart_id, product_id) where not purchased;

create index cart_items_product_id_idx on waitress.cart_items (product_id);

create trigger cart_items_set_updated_at
  before update on waitress.cart_items
  for each row execute function waitress.set_updated_at();

comment on table waitress.cart_items is
  'Lines of a cart. purchased becomes true exactly once, when a checkout buys the line.';

-- migrate:down
set local role waitress_owner;
drop table if exists waitress.cart_items;
