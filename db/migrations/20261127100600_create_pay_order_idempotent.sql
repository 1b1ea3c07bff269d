-- migrate:up
-- The payment, as the API calls it: on behalf of the buyer, and exactly once
-- per Idempotency-Key (the record is written in the payment's transaction).
create function public.pay_order_idempotent(
  p_user_id bigint,
  p_order_id bigint,
  p_idempotency_key text default null,
  out status integer,
  out data jsonb,
  out replayed boolean
)
language plpgsql
security definer
set search_path = ''
as $$
declare
  v_buyer_id bigint;
begin
  select o.buyer_id into v_buyer_id from public.orders o where o.id = p_order_id;
  if not found then
    raise exception using
      errcode = 'WA008',
      message = format('order %s not found', p_order_id),
      detail = jsonb_build_object('order_id', p_order_id)::text;
  end if;

  if p_idempotency_key is not null then
    select b.status, b.data into status, data
      from public.idempotency_begin(v_buyer_id, p_idempotency_key, 'pay_order',
                                    jsonb_build_object('order_id', p_order_id)) b;
    if status is not null then
      replayed := true;
      return;
    end if;
  end if;

  -- order_action_as checks that p_user_id may pay it (the buyer; WA008/WA011 otherwise).
  data := public.order_action_as(p_user_id, p_order_id, 'pay');
  status := 200;
  replayed := false;

  if p_idempotency_key is not null then
    perform public.idempotency_finish(v_buyer_id, p_idempotency_key, status, data);
  end if;
end
$$;

comment on function public.pay_order_idempotent(bigint, bigint, text) is
  'pay_order on behalf of p_user_id (null: anyone), exactly once per p_idempotency_key (scoped to the order''s buyer): '
  'a retry returns the recorded (200, order) with replayed = true instead of a 409 for an order already paid.';

revoke execute on function public.pay_order_idempotent(bigint, bigint, text) from public;
grant execute on function public.pay_order_idempotent(bigint, bigint, text) to waitress_api;

-- migrate:down
drop function if exists public.pay_order_idempotent(bigint, bigint, text);
