-- migrate:up
-- The order lifecycle. Every transition locks the order row first, then (to
-- give stock back) its products in ascending id order: the same discipline as
-- place_order, so transitions and checkouts cannot deadlock each other.
--
--   pending  -> paid (pay) -> accepted (accept) -> delivered (deliver) -> remitted (remit)
--   pending  -> cancelled (cancel)       pending -> expired (expire_orders)
--   paid     -> rejected (reject)        paid, accepted -> cancelled (cancel)
--   rejected, cancelled (if it was paid) -> refunded (refund)
--
-- An order that dies before delivery (cancelled, expired, rejected) gives its
-- stock back exactly once: the move into those states happens once under the
-- order's lock, and stock_movements_once_per_order_line refuses a second release.

create function public.release_order_stock(p_order_ids bigint[]) returns void
language plpgsql
set search_path = ''
as $$
begin
  perform from public.products p
   where p.id in (select oi.product_id from public.order_items oi where oi.order_id = any (p_order_ids))
   order by p.id
     for no key update;

  with lines as (
    select oi.order_id, oi.product_id, oi.quantity
      from public.order_items oi
     where oi.order_id = any (p_order_ids)
  ), restocked as (
    update public.products p
       set stock = p.stock + returned.quantity
      from (select product_id, sum(quantity)::integer as quantity from lines group by product_id) returned
     where p.id = returned.product_id
  )
  insert into public.stock_movements (product_id, quantity, reason, order_id)
  select product_id, quantity, 'release', order_id from lines;
end
$$;

comment on function public.release_order_stock(bigint[]) is
  'Internal: gives the stock of these orders'' lines back, with one release movement per line. '
  'The caller holds the orders'' locks and has moved them to a state that releases.';

create function public.transition_order(
  p_order_id bigint,
  p_action text,
  p_from public.order_state[],
  p_to public.order_state,
  p_must_be_paid boolean default false
) returns public.orders
language plpgsql
set search_path = ''
as $$
declare
  v_order public.orders;
begin
  select * into v_order from public.orders where id = p_order_id for no key update;
  if not found then
    raise exception using
      errcode = 'WA008',
      message = format('order %s not found', p_order_id),
      detail = jsonb_build_object('order_id', p_order_id)::text;
  end if;

  if not v_order.state = any (p_from) or (p_must_be_paid and v_order.paid_at is null) then
    raise exception using
      errcode = 'WA009',
      message = format('order %s is %s%s: it cannot be %s',
                       v_order.code, v_order.state,
                       case when p_must_be_paid and v_order.paid_at is null then ' and was never paid' else '' end,
                       p_to),
      detail = jsonb_build_object('order_id', v_order.id, 'code', v_order.code, 'state', v_order.state,
                                  'action', p_action, 'allowed_from', to_jsonb(p_from),
                                  'paid', v_order.paid_at is not null)::text,
      hint = format('%s applies to orders that are %s%s.', p_action, array_to_string(p_from, ' or '),
                    case when p_must_be_paid then ' and were paid' else '' end);
  end if;

  update public.orders
     set state = p_to,
         paid_at = case when p_to = 'paid' then now() else paid_at end
   where id = p_order_id
  returning * into v_order;

  if p_to in ('cancelled', 'expired', 'rejected') then
    perform public.release_order_stock(array[p_order_id]);
  end if;
  return v_order;
end
$$;

comment on function public.transition_order(bigint, text, public.order_state[], public.order_state, boolean) is
  'Internal: moves one order from one of p_from to p_to under its row lock, giving stock back when it dies. '
  'WA008 unknown order; WA009 not in a state the action applies to (DETAIL names the state).';

create function public.pay_order(p_order_id bigint) returns jsonb
language plpgsql security definer set search_path = ''
as $$
declare v_order public.orders;
begin
  v_order := public.transition_order(p_order_id, 'pay', '{pending}', 'paid');
  return public.order_json(v_order);
end
$$;

create function public.accept_order(p_order_id bigint) returns jsonb
language plpgsql security definer set search_path = ''
as $$
declare v_order public.orders;
begin
  v_order := public.transition_order(p_order_id, 'accept', '{paid}', 'accepted');
  return public.order_json(v_order);
end
$$;

create function public.reject_order(p_order_id bigint) returns jsonb
language plpgsql security definer set search_path = ''
as $$
declare v_order public.orders;
begin
  v_order := public.transition_order(p_order_id, 'reject', '{paid}', 'rejected');
  return public.order_json(v_order);
end
$$;

create function public.deliver_order(p_order_id bigint) returns jsonb
language plpgsql security definer set search_path = ''
as $$
declare v_order public.orders;
begin
  v_order := public.transition_order(p_order_id, 'deliver', '{accepted}', 'delivered');
  return public.order_json(v_order);
end
$$;

create function public.remit_order(p_order_id bigint) returns jsonb
language plpgsql security definer set search_path = ''
as $$
declare v_order public.orders;
begin
  v_order := public.transition_order(p_order_id, 'remit', '{delivered}', 'remitted');
  return public.order_json(v_order);
end
$$;

create function public.refund_order(p_order_id bigint) returns jsonb
language plpgsql security definer set search_path = ''
as $$
declare v_order public.orders;
begin
  v_order := public.transition_order(p_order_id, 'refund', '{rejected,cancelled}', 'refunded', p_must_be_paid => true);
  return public.order_json(v_order);
end
$$;

create function public.cancel_order(p_order_id bigint) returns jsonb
language plpgsql security definer set search_path = ''
as $$
declare v_order public.orders;
begin
  v_order := public.transition_order(p_order_id, 'cancel', '{pending,paid,accepted}', 'cancelled');
  return public.order_json(v_order);
end
$$;

comment on function public.pay_order(bigint) is 'pending -> paid. Returns the order document. WA008, WA009.';
comment on function public.accept_order(bigint) is 'paid -> accepted (by the seller). WA008, WA009.';
comment on function public.reject_order(bigint) is 'paid -> rejected (by the seller); gives the stock back. WA008, WA009.';
comment on function public.deliver_order(bigint) is 'accepted -> delivered. WA008, WA009.';
comment on function public.remit_order(bigint) is 'delivered -> remitted (the seller is paid). WA008, WA009.';
comment on function public.refund_order(bigint) is 'rejected, or cancelled after payment -> refunded. WA008, WA009.';
comment on function public.cancel_order(bigint) is
  'pending, paid or accepted -> cancelled (by the buyer, before delivery); gives the stock back. WA008, WA009.';

revoke execute on function public.release_order_stock(bigint[]) from public;
revoke execute on function public.transition_order(bigint, text, public.order_state[], public.order_state, boolean) from public;
revoke execute on function public.pay_order(bigint) from public;
revoke execute on function public.accept_order(bigint) from public;
revoke execute on function public.reject_order(bigint) from public;
revoke execute on function public.deliver_order(bigint) from public;
revoke execute on function public.remit_order(bigint) from public;
revoke execute on function public.refund_order(bigint) from public;
revoke execute on function public.cancel_order(bigint) from public;
grant execute on function public.pay_order(bigint) to waitress_api;
grant execute on function public.accept_order(bigint) to waitress_api;
grant execute on function public.reject_order(bigint) to waitress_api;
grant execute on function public.deliver_order(bigint) to waitress_api;
grant execute on function public.remit_order(bigint) to waitress_api;
grant execute on function public.refund_order(bigint) to waitress_api;
grant execute on function public.cancel_order(bigint) to waitress_api;

-- migrate:down
drop function if exists public.cancel_order(bigint);
drop function if exists public.refund_order(bigint);
drop function if exists public.remit_order(bigint);
drop function if exists public.deliver_order(bigint);
drop function if exists public.reject_order(bigint);
drop function if exists public.accept_order(bigint);
drop function if exists public.pay_order(bigint);
drop function if exists public.transition_order(bigint, text, public.order_state[], public.order_state, boolean);
drop function if exists public.release_order_stock(bigint[]);
