-- migrate:up
-- The checkouts as the API calls them: on behalf of a user, and idempotent
-- when given a key. Each wraps the core function without changing it:
--   idempotency_begin (claim the key, or get the recorded response)
--   -> the checkout -> idempotency_finish (record the response),
-- all in the caller's one transaction. A refused checkout raises, which rolls
-- back the key's claim too: the key stays free for a corrected retry.

create function public.place_order_idempotent(
  p_user_id bigint,
  p_cart_id bigint,
  p_note text default null,
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
  select c.user_id into v_buyer_id from public.carts c where c.id = p_cart_id;
  if not found or v_buyer_id <> coalesce(p_user_id, v_buyer_id) then
    raise exception using
      errcode = 'WA001',
      message = format('cart %s not found', p_cart_id),
      detail = jsonb_build_object('cart_id', p_cart_id)::text,
      hint = 'Get or create the buyer''s cart with cart_for_user(user_id).';
  end if;

  if p_idempotency_key is not null then
    select b.status, b.data into status, data
      from public.idempotency_begin(v_buyer_id, p_idempotency_key, 'place_order',
                                    jsonb_build_object('cart_id', p_cart_id, 'note', p_note)) b;
    if status is not null then
      replayed := true;
      return;
    end if;
  end if;

  select coalesce(jsonb_agg(o.doc order by o.n), '[]'::jsonb) into data
    from public.place_order(p_cart_id, null, p_note) with ordinality as o(doc, n);
  status := 201;
  replayed := false;

  if p_idempotency_key is not null then
    perform public.idempotency_finish(v_buyer_id, p_idempotency_key, status, data);
  end if;
end
$$;

comment on function public.place_order_idempotent(bigint, bigint, text, text) is
  'place_order on the whole cart, on behalf of p_user_id (another user''s cart is WA001; null: any cart). '
  'With p_idempotency_key: the first call checks out and records (201, the orders) for the cart''s buyer and key; '
  'a retry with the same cart and note returns that record with replayed = true and orders nothing; '
  'other parameters with the same key raise WA101. data is the JSON array of orders.';

create function public.place_buyer_order_idempotent(
  p_buyer_id bigint,
  p_cart_item_ids bigint[],
  p_note text default null,
  p_idempotency_key text default null,
  out status integer,
  out data jsonb,
  out replayed boolean
)
language plpgsql
security definer
set search_path = ''
as $$
begin
  if p_idempotency_key is not null then
    select b.status, b.data into status, data
      from public.idempotency_begin(p_buyer_id, p_idempotency_key, 'place_buyer_order',
                                    jsonb_build_object('cart_item_ids', to_jsonb(p_cart_item_ids), 'note', p_note)) b;
    if status is not null then
      replayed := true;
      return;
    end if;
  end if;

  data := public.place_buyer_order(p_buyer_id, p_cart_item_ids, p_note);
  status := 201;
  replayed := false;

  if p_idempotency_key is not null then
    perform public.idempotency_finish(p_buyer_id, p_idempotency_key, status, data);
  end if;
end
$$;

comment on function public.place_buyer_order_idempotent(bigint, bigint[], text, text) is
  'place_buyer_order, idempotent with p_idempotency_key (scoped to p_buyer_id): a retry with the same items and note '
  'returns the recorded (201, order) with replayed = true; other parameters with the same key raise WA101.';

revoke execute on function public.place_order_idempotent(bigint, bigint, text, text) from public;
revoke execute on function public.place_buyer_order_idempotent(bigint, bigint[], text, text) from public;
grant execute on function public.place_order_idempotent(bigint, bigint, text, text) to waitress_api;
grant execute on function public.place_buyer_order_idempotent(bigint, bigint[], text, text) to waitress_api;

-- migrate:down
drop function if exists public.place_buyer_order_idempotent(bigint, bigint[], text, text);
drop function if exists public.place_order_idempotent(bigint, bigint, text, text);
