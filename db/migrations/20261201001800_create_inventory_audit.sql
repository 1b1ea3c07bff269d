-- migrate:up
set local role waitress_owner;

create function api.inventory_audit()
returns table (
  product_id bigint,
  name text,
  stock integer,
  ledger_stock bigint,
  sold_in_ledger bigint,
  sold_in_orders bigint
)
language sql
stable
security definer
set search_path = ''
as $$
  select p.id, p.name, p.stock,
         coalesce(ledger.stock, 0), coalesce(ledger.sold, 0), coalesce(ordered.sold, 0)
    from waitress.products p
    left join (
      select m.product_id,
             sum(m.quantity) as stock,
             -coalesce(sum(m.quantity) filter (where m.reason in ('sale', 'release')), 0) as sold
        from waitress.stock_movements m
       group by m.product_id
    ) ledger on ledger.product_id = p.id
    left join (
      select oi.product_id, sum(oi.quantity) as sold
        from waitress.order_items oi
        join waitress.orders o on o.id = oi.order_id
       where o.state in ('pending', 'paid', 'accepted', 'delivered', 'remitted')
       group by oi.product_id
    ) ordered on ordered.product_id = p.id
   where p.stock <> coalesce(ledger.stock, 0)
      or coalesce(ledger.sold, 0) <> coalesce(ordered.sold, 0)
   order by p.id
$$;

comment on function api.inventory_audit() is
  'Every product whose stock differs from the sum of its movements, or whose units sold per the ledger '
  '(sales less releases) differ from the lines of its live orders (not cancelled, expired, rejected or refunded). '
  'It must always return nothing.';

-- migrate:down
set local role waitress_owner;
drop function if exists api.inventory_audit();
