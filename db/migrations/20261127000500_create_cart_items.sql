-- migrate:up
create table public.cart_items (
  id bigint generated always as identity primary key,
  cart_id bigint not null,
  product_id bigint not null,
  quantity integer not null,
  purchased boolean not null default false,
  created_at timestamptz not null default now(),
  updated_at timestamptz not null default now(),
  constraint cart_items_cart_id_fkey foreign key (cart_id) references public.carts (id),
  constraint cart_items_product_id_fkey foreign key (product_id) references public.products (id),
  constraint cart_items_quantity_positive check (quantity >= 1)
);

-- A product appears at most once among a cart's open (unpurchased) lines;
-- adding it again adds to that line.
create unique index cart_items_one_open_line_per_product
  on public.cart_items (cart_id, product_id) where not purchased;

create index cart_items_product_id_idx on public.cart_items (product_id);

create trigger cart_items_set_updated_at
  before update on public.cart_items
  for each row execute function public.set_updated_at();

comment on table public.cart_items is
  'Lines of a cart. purchased becomes true exactly once, when place_order buys the line.';

grant select on public.cart_items to waitress_api;

-- migrate:down
drop table if exists public.cart_items;
