-- migrate:up
set local role waitress_owner;

create type waitress.stock_movement_reason as enum ('initial', 'restock', 'correction', 'sale', 'release');

comment on type waitress.stock_movement_reason is
  'Why a product''s stock changed: initial stock, restock, manual correction, sale (an order took it), '
  'release (an order that died gave it back).';

-- The ledger: every change of products.stock is one row here, written in the
-- same transaction by the function that changes the stock. api.inventory_audit()
-- compares the two.
-- One-column rules are domains, as for cart_items (20261201000700): planned
-- once per session, not on every insert of a checkout.
create domain waitress.stock_movement_quantity as integer
  constraint stock_movements_quantity_nonzero check (value <> 0);
create domain waitress.stock_movement_note as text
  constraint stock_movements_note_length check (length(value) <= 500);

create table waitress.stock_movements (
  id bigint generated always as identity primary key,
  product_id bigint not null,
  quantity waitress.stock_movement_quantity not null,
  reason waitress.stock_movement_reason not null,
  order_id bigint,
  note waitress.stock_movement_note,
  created_at timestamptz not null default now(),
  constraint stock_movements_product_id_fkey foreign key (product_id) references waitress.products (id),
  constraint stock_movements_order_id_fkey foreign key (order_id) references waitress.orders (id),
  -- A sale takes stock; initial stock, a restock and a release give it
  -- (a correction goes either way). Written as small expressions: these two
  -- are planned again on every insert.
  constraint stock_movements_sign_matches_reason check (reason = 'correction' or (quantity < 0) = (reason = 'sale')),
  constraint stock_movements_order_iff_sale_or_release check ((order_id is not null) = (reason = 'sale' or reason = 'release'))
);

create index stock_movements_product_id_idx on waitress.stock_movements (product_id, id);
-- At most one sale and one release per order line: stock comes back exactly once.
create unique index stock_movements_once_per_order_line
  on waitress.stock_movements (order_id, product_id, reason) where order_id is not null;

comment on table waitress.stock_movements is
  'Inventory ledger: one signed row per change of a product''s stock. For every product, stock = sum(quantity).';

-- migrate:down
set local role waitress_owner;
drop table if exists waitress.stock_movements;
drop domain if exists waitress.stock_movement_note;
drop domain if exists waitress.stock_movement_quantity;
drop type if exists waitress.stock_movement_reason;
