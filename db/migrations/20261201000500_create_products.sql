-- migrate:up
set local role waitress_owner;

-- fillfactor leaves room on each page so that stock updates of a hot product
-- stay HOT (no index writes, no page hops).
create table waitress.products (
  id bigint generated always as identity primary key,
  name text not null,
  seller_id bigint not null,
  price bigint not null,
  active boolean not null default true,
  stock integer not null,
  weight integer not null,
  created_at timestamptz not null default now(),
  updated_at timestamptz not null default now(),
  constraint products_name_present check (length(btrim(name)) between 1 and 200),
  constraint products_seller_id_positive check (seller_id > 0),
  constraint products_price_nonnegative check (price >= 0),
  constraint products_stock_nonnegative check (stock >= 0),
  constraint products_weight_positive check (weight > 0)
) with (fillfactor = 80);

create index products_seller_id_idx on waitress.products (seller_id);

create trigger products_set_updated_at
  before update on waitress.products
  for each row execute function waitress.set_updated_at();

comment on table waitress.products is
  'What sellers offer. stock is the quantity still for sale and can never go below zero.';
comment on column waitress.products.price is 'Unit price in the smallest currency unit (e.g. cents).';
comment on column waitress.products.weight is 'Unit weight in grams.';
comment on column waitress.products.active is 'Inactive products cannot be added to carts or ordered.';

-- migrate:down
set local role waitress_owner;
drop table if exists waitress.products;
