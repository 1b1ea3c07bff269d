-- migrate:up
create function public.inventory_audit()
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
set search_path = ''
as $$
  select p.id, p.name, p.stock,
         coalesce(ledger.stock, 0), coalesce(ledger.sold, 0), coalesce(ordered.sold, 0)
    from public.products p
    left join (
      select m.product_id,
             sum(m.quantity) as stock,
             -coalesce(sum(m.quantity) filter (where m.reason in ('sale', 'release')), 0) as sold
        from public.stock_movements m
       group by m.product_id
    ) ledger on ledger.product_id = p.id
    left join (
      select oi.product_id, sum(oi.quantity) as sold
        from public.order_items oi
        join public.orders o on o.id = oi.order_id
       where o.state in ('pending', 'paid', 'accepted', 'delivered', 'remitted')
       group by oi.product_id
    ) ordered on ordered.product_id = p.id
   where p.stock <> coalesce(ledger.stock, 0)
      or coalesce(ledger.sold, 0) <> coalesce(ordered.sold, 0)
   order by p.id
$$;

comment on function public.inventory_audit() is
  'Every product whose stock differs from the sum of its movements, or whose units sold per the ledger '
  '(sales less releases) differ from the lines of its live orders (not cancelled, expired, rejected or refunded). '
  'It must always return nothing.';

revoke execute on function public.inventory_audit() from public;
grant execute on function public.inventory_audit() to waitress_api;

-- migrate:down
drop function if exists public.inventory_audit();
