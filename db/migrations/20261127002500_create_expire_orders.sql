-- migrate:up
create function public.expire_orders(
  p_ttl interval default '30 minutes',
  p_limit integer default 500
) returns integer
language plpgsql
security definer
set search_path = ''
as $$
declare
  v_ids bigint[];
begin
  if p_ttl is null or p_ttl < interval '0' or p_limit is null or p_limit < 1 then
    raise exception using
      errcode = '22023',
      message = format('expire_orders needs a non-negative ttl and a positive limit, got %s and %s', p_ttl, p_limit);
  end if;

  -- SKIP LOCKED: an order being paid or cancelled right now is left to that
  -- transaction, and several expire_orders() calls share the work.
  select array_agg(id order by id) into v_ids
    from (select o.id
            from public.orders o
           where o.state = 'pending' and o.created_at < now() - p_ttl
           order by o.id
           limit p_limit
             for no key update skip locked) due;
  if v_ids is null then
    return 0;
  end if;

  update public.orders set state = 'expired' where id = any (v_ids);
  perform public.release_order_stock(v_ids);
  return cardinality(v_ids);
end
$$;

comment on function public.expire_orders(interval, integer) is
  'Expires up to p_limit pending orders older than p_ttl and gives their stock back; returns how many. '
  'Idempotent and safe to run from several places at once. Call it again while it returns p_limit.';

revoke execute on function public.expire_orders(interval, integer) from public;
grant execute on function public.expire_orders(interval, integer) to waitress_api;

-- migrate:down
drop function if exists public.expire_orders(interval, integer);
