-- migrate:up
set local role waitress_owner;

-- A rule on one column is a domain, not a table CHECK: PostgreSQL reads a
-- table's CHECK constraints back from their stored text and plans them again
-- on every statement that writes the table, while a domain's rule stays
-- planned in the session's type cache. The checkout writes this table on
-- every order, so the difference is paid per order (docs/architecture.md).
-- The domain's constraint keeps the rule's name, which errors report.
create domain waitress.cart_item_quantity as integer
  constraint cart_items_quantity_positive check (value >= 1);

create table waitress.cart_items (
  id bigint generated always as identity primary key,
  cart_id bigint not null,
  product_id bigint not null,
  quantity waitress.cart_item_quantity not null,
  purchased boolean not null default false,
  created_at timestamptz not null default now(),
  updated_at timestamptz not null default now(),
  constraint cart_items_cart_id_fkey foreign key (cart_id) references waitress.carts (id),
  constraint cart_items_product_id_fkey foreign key (product_id) references waitress.products (id)
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
drop domain if exists waitress.cart_item_quantity;
