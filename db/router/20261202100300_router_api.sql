-- migrate:up
-- The router's api: exactly the functions of a single database's api that
-- the service calls, with the same signatures (tests/sharding/signatures.test.ts
-- holds the two sets equal), each routed to the shard(s) where its data is.
-- A refusal reaches the caller exactly as a single database raises it: same
-- SQLSTATE, message, DETAIL and HINT. A shard that cannot be reached is
-- 08006 (the service's 503 with Retry-After).
set local role waitress_owner;

-- ---------------------------------------------------------------- errors
-- A failed PL/Proxy call, as an error document:
--   PL/Proxy could not reach the shard, or the connection broke mid-call
--   (its own XX000 "PL/Proxy function ...: [db] PQconnectPoll: ... Connection
--   refused", timeouts, ...)            -> 08006, "a shard ... is unavailable"
--   a remote error (PL/Proxy keeps its SQLSTATE and prefixes message, detail
--   and hint)                           -> the same, the prefixes removed
--   anything else                       -> as it is
create function waitress.error_of(p_state text, p_message text, p_detail text, p_hint text) returns jsonb
language sql
immutable
set search_path = ''
as $$
  select case
    when p_message ~ '^PL/Proxy function \S+: (\[[^]]*\] )?(PQconnectPoll|PQconnectStart|PQsendQuery|PQsendQueryParams|PQconsumeInput|PQflush|PQgetResult|connect timeout|query timeout|connect failed|Remote error|Connection)'
      or (p_state = 'XX000' and p_message ~ '^\S+\(\d+\): \[[^]]*\] REMOTE ')
      or p_state like '08%'
    then jsonb_build_object('code', '08006', 'message', 'a shard of the database is unavailable',
                            'detail', jsonb_build_object('shard', substring(p_message from '\[([^]]*)\]'))::text,
                            'hint', 'Retry shortly.')
    when p_message ~ '^\S+\(\d+\): \[[^]]*\] REMOTE [A-Z]+: '
    then jsonb_build_object('code', p_state,
                            'message', regexp_replace(p_message, '^\S+\(\d+\): \[[^]]*\] REMOTE [A-Z]+: ', ''),
                            'detail', nullif(regexp_replace(coalesce(p_detail, ''), '^Remote detail: ', ''), ''),
                            'hint', nullif(regexp_replace(coalesce(p_hint, ''), '^Remote hint: ', ''), ''))
    else jsonb_build_object('code', p_state, 'message', p_message, 'detail', nullif(p_detail, ''), 'hint', nullif(p_hint, ''))
  end
$$;

comment on function waitress.error_of(text, text, text, text) is
  'A failed PL/Proxy call as an error document: unreachable shard -> 08006; remote error -> its own fields.';

-- Raises an error document as the error itself. A DETAIL or HINT the
-- error did not have is not sent (an empty one would reach the caller as "").
create function waitress.raise_error(p_error jsonb) returns void
language plpgsql
set search_path = ''
as $$
declare
  c text := coalesce(p_error->>'code', 'XX000');
  m text := coalesce(p_error->>'message', 'error');
  d text := p_error->>'detail';
  h text := p_error->>'hint';
begin
  if d is null and h is null then
    raise exception using errcode = c, message = m;
  elsif h is null then
    raise exception using errcode = c, message = m, detail = d;
  elsif d is null then
    raise exception using errcode = c, message = m, hint = h;
  else
    raise exception using errcode = c, message = m, detail = d, hint = h;
  end if;
end
$$;

comment on function waitress.raise_error(jsonb) is 'Raises {code, message, detail, hint} with exactly those fields.';

-- A shard's answer: its result, or its error raised.
create function waitress.ok(p_envelope jsonb) returns jsonb
language plpgsql
set search_path = ''
as $$
begin
  if p_envelope ? 'error' then
    perform waitress.raise_error(p_envelope->'error');
  end if;
  return p_envelope->'ok';
end
$$;

comment on function waitress.ok(jsonb) is 'The "ok" of a shard''s answer, or its "error" raised.';

create function waitress.failed(p_state text, p_message text, p_detail text, p_hint text) returns jsonb
language sql
immutable
set search_path = ''
as $$
  select jsonb_build_object('error', waitress.error_of(p_state, p_message, p_detail, p_hint))
$$;

comment on function waitress.failed(text, text, text, text) is 'A failed PL/Proxy call as a shard''s error answer.';

-- A DETAIL as JSON (a refusal's), or as a JSON string (PostgreSQL's own).
create function waitress.json_or_text(p_detail text) returns jsonb
language plpgsql
immutable
set search_path = ''
as $$
begin
  return nullif(p_detail, '')::jsonb;
exception when others then
  return to_jsonb(p_detail);
end
$$;

comment on function waitress.json_or_text(text) is 'A DETAIL as JSON when it is JSON, else as a JSON string.';

-- Checkouts of one cart take turns on the router: each shard's part commits
-- on its own, so two checkouts of a cart must not interleave across shards.
create function waitress.lock_cart(p_cart_id bigint) returns void
language sql
set search_path = ''
as $$
  select pg_catalog.pg_advisory_xact_lock(7261216, pg_catalog.hashint8(coalesce(p_cart_id, 0)))
$$;

comment on function waitress.lock_cart(bigint) is 'The router''s lock of a cart for a checkout across shards, until the transaction ends.';

-- Every piece of a paged list from every shard (each its first offset + limit),
-- as one page in id order.
create function waitress.merge_pages(p_parts jsonb[], p_limit integer, p_offset integer) returns jsonb
language plpgsql
set search_path = ''
as $$
declare
  v_part jsonb;
begin
  foreach v_part in array coalesce(p_parts, '{}') loop
    perform waitress.ok(v_part);
  end loop;
  return coalesce((select jsonb_agg(x.d order by (x.d->>'id')::bigint)
                     from (select d
                             from unnest(p_parts) part, jsonb_array_elements(part->'ok') d
                            order by (d->>'id')::bigint
                           offset p_offset limit p_limit) x), '[]');
end
$$;

comment on function waitress.merge_pages(jsonb[], integer, integer) is 'Pages from every shard merged into one, by id.';

-- ---------------------------------------------------------------- products
create function api.create_product(
  p_name text,
  p_seller_id bigint,
  p_price bigint,
  p_stock integer,
  p_weight integer,
  p_active boolean default true
) returns jsonb
language plpgsql
security definer
set search_path = ''
as $$
declare
  v jsonb; s text; m text; d text; h text;
begin
  begin
    v := rpc.create_product(coalesce(waitress.partition_of(p_seller_id), 0), p_name, p_seller_id, p_price, p_stock, p_weight, p_active);
  exception when others then
    get stacked diagnostics s = returned_sqlstate, m = message_text, d = pg_exception_detail, h = pg_exception_hint;
    v := waitress.failed(s, m, d, h);
  end;
  return waitress.ok(v);
end
$$;

create function api.product(p_product_id bigint) returns jsonb
language plpgsql
security definer
set search_path = ''
as $$
declare
  v jsonb; s text; m text; d text; h text;
begin
  begin
    v := rpc.product(coalesce(p_product_id, 0), p_product_id);
  exception when others then
    get stacked diagnostics s = returned_sqlstate, m = message_text, d = pg_exception_detail, h = pg_exception_hint;
    v := waitress.failed(s, m, d, h);
  end;
  return waitress.ok(v);
end
$$;

create function api.products(p_limit integer default 10, p_offset integer default 0) returns jsonb
language plpgsql
security definer
set search_path = ''
as $$
declare
  v_parts jsonb[]; s text; m text; d text; h text;
begin
  begin
    v_parts := array(select e from rpc.products_page_all(p_limit, p_offset) e);
  exception when others then
    get stacked diagnostics s = returned_sqlstate, m = message_text, d = pg_exception_detail, h = pg_exception_hint;
    v_parts := array[waitress.failed(s, m, d, h)];
  end;
  return waitress.merge_pages(v_parts, p_limit, p_offset);
end
$$;

create function api.restock_product(p_product_id bigint, p_quantity integer, p_note text default null, p_user_id bigint default null)
returns jsonb
language plpgsql
security definer
set search_path = ''
as $$
declare
  v jsonb; s text; m text; d text; h text;
begin
  begin
    v := rpc.restock_product(coalesce(p_product_id, 0), p_product_id, p_quantity, p_note, p_user_id);
  exception when others then
    get stacked diagnostics s = returned_sqlstate, m = message_text, d = pg_exception_detail, h = pg_exception_hint;
    v := waitress.failed(s, m, d, h);
  end;
  return waitress.ok(v);
end
$$;

create function api.adjust_stock(p_product_id bigint, p_quantity integer, p_reason text, p_user_id bigint default null)
returns jsonb
language plpgsql
security definer
set search_path = ''
as $$
declare
  v jsonb; s text; m text; d text; h text;
begin
  begin
    v := rpc.adjust_stock(coalesce(p_product_id, 0), p_product_id, p_quantity, p_reason, p_user_id);
  exception when others then
    get stacked diagnostics s = returned_sqlstate, m = message_text, d = pg_exception_detail, h = pg_exception_hint;
    v := waitress.failed(s, m, d, h);
  end;
  return waitress.ok(v);
end
$$;

create function api.stock_movements(p_product_id bigint, p_limit integer default 10, p_offset integer default 0,
                                    p_user_id bigint default null)
returns jsonb
language plpgsql
security definer
set search_path = ''
as $$
declare
  v jsonb; s text; m text; d text; h text;
begin
  begin
    v := rpc.stock_movements(coalesce(p_product_id, 0), p_product_id, p_limit, p_offset, p_user_id);
  exception when others then
    get stacked diagnostics s = returned_sqlstate, m = message_text, d = pg_exception_detail, h = pg_exception_hint;
    v := waitress.failed(s, m, d, h);
  end;
  return waitress.ok(v);
end
$$;

-- ---------------------------------------------------------------- carts
-- The cart at its home, with the lines held there, plus the lines gathered
-- in parallel from the other shards its lines may be on, in id order.
create function api.cart_for_user(p_user_id bigint) returns jsonb
language plpgsql
security definer
set search_path = ''
as $$
declare
  v jsonb; v_parts jsonb[]; v_home integer := coalesce(waitress.partition_of(p_user_id), 0); v_remote integer;
  s text; m text; d text; h text;
begin
  begin
    v := rpc.cart_home(v_home, p_user_id);
    if not v ? 'error' then
      v_remote := (v->'ok'->>'partitions')::integer & ~waitress.database_mask(v_home);
      if v_remote <> 0 then
        v_parts := array(select e from rpc.cart_lines_in(v_remote, (v->'ok'->'cart'->>'id')::bigint) e);
      end if;
    end if;
  exception when others then
    get stacked diagnostics s = returned_sqlstate, m = message_text, d = pg_exception_detail, h = pg_exception_hint;
    v := waitress.failed(s, m, d, h);
  end;
  v := waitress.ok(v)->'cart';
  if v_parts is null then
    return v;
  end if;
  v_parts := v_parts || jsonb_build_object('ok', v->'items');
  return jsonb_set(v, '{items}', waitress.merge_pages(v_parts, 2147483647, 0));
end
$$;

-- Two hops: the cart's home checks whose cart it is and notes the product's
-- partition (before the line exists, so no checkout or read can miss it),
-- then the product's shard adds the line with the one schema's add_cart_item.
-- A bad quantity goes straight to the product's shard, which refuses it as a
-- single database does (before looking at the cart).
create function api.add_cart_item(p_cart_id bigint, p_product_id bigint, p_quantity integer, p_user_id bigint default null)
returns jsonb
language plpgsql
security definer
set search_path = ''
as $$
declare
  v jsonb; s text; m text; d text; h text;
begin
  begin
    if p_quantity is null or p_quantity < 1 or p_cart_id is null or p_product_id is null then
      v := rpc.add_cart_item(coalesce(p_product_id, 0), p_cart_id, p_product_id, p_quantity, p_user_id);
    else
      v := rpc.cart_touch(p_cart_id, p_cart_id, p_user_id, (p_product_id & 15)::integer);
      if not v ? 'error' then
        v := rpc.cart_add_line(p_product_id, p_cart_id, (v->'ok'->>'user_id')::bigint, p_product_id, p_quantity, p_user_id);
      end if;
    end if;
  exception when others then
    get stacked diagnostics s = returned_sqlstate, m = message_text, d = pg_exception_detail, h = pg_exception_hint;
    v := waitress.failed(s, m, d, h);
  end;
  return waitress.ok(v);
end
$$;

-- A cart line lives on its product's shard, with a copy of its cart's row
-- (the lock every change of the cart takes there): its id routes there, and
-- the one schema's function changes it.
create function api.update_cart_item(p_cart_item_id bigint, p_quantity integer, p_user_id bigint default null)
returns jsonb
language plpgsql
security definer
set search_path = ''
as $$
declare
  v jsonb; s text; m text; d text; h text;
begin
  begin
    v := rpc.update_cart_item(coalesce(p_cart_item_id, 0), p_cart_item_id, p_quantity, p_user_id);
  exception when others then
    get stacked diagnostics s = returned_sqlstate, m = message_text, d = pg_exception_detail, h = pg_exception_hint;
    v := waitress.failed(s, m, d, h);
  end;
  return waitress.ok(v);
end
$$;

-- Removed on the line's shard; the answer is the whole cart, as its home and
-- the other shards of its lines now have it (api.cart_for_user).
create function api.remove_cart_item(p_cart_item_id bigint, p_user_id bigint default null)
returns jsonb
language plpgsql
security definer
set search_path = ''
as $$
declare
  v jsonb; s text; m text; d text; h text;
begin
  begin
    v := rpc.remove_cart_item(coalesce(p_cart_item_id, 0), p_cart_item_id, p_user_id);
  exception when others then
    get stacked diagnostics s = returned_sqlstate, m = message_text, d = pg_exception_detail, h = pg_exception_hint;
    v := waitress.failed(s, m, d, h);
  end;
  return api.cart_for_user((waitress.ok(v)->>'user_id')::bigint);
end
$$;

-- ---------------------------------------------------------------- the checkout across shards
-- The refusal a single database would give a request whose lines are spread
-- over several shards, from each shard's verdict on its own lines (a dry run):
-- its checks come in the one schema's order (WA001, WA005, WA006, WA003,
-- WA004, then WA007 for one seller), each listing every line concerned, in
-- product id order, as one database lists them. Null when nothing is refused.
create function waitress.merge_refusals(p_outcomes jsonb[], p_one_seller boolean, p_route bigint) returns jsonb
language plpgsql
set search_path = ''
as $$
declare
  v_errors jsonb[];
  v_first jsonb;
  v_ids jsonb;
  v_list jsonb;
  v_sellers bigint[];
  v_count integer;
begin
  select array_agg(coalesce(o->'error', o->'ok'->'error')) into v_errors
    from unnest(p_outcomes) o
   where o ? 'error' or o->'ok' ? 'error';

  -- Anything but a refusal of the checkout's rules (a bad argument, ...): as it is.
  v_first := (select e from unnest(v_errors) e where e->>'code' not in ('WA001', 'WA003', 'WA004', 'WA005', 'WA006') limit 1);
  if v_first is not null then
    return v_first;
  end if;
  v_first := (select e from unnest(v_errors) e where e->>'code' = 'WA001' limit 1);
  if v_first is not null then
    return v_first;
  end if;

  v_first := (select e from unnest(v_errors) e where e->>'code' = 'WA005' limit 1);
  if v_first is not null then
    if not (v_first->>'detail')::jsonb ? 'cart_id' then
      return v_first;
    end if;
    select jsonb_agg(i order by (i #>> '{}')::bigint nulls last) into v_ids
      from (select distinct i from unnest(v_errors) e, jsonb_array_elements((e->>'detail')::jsonb->'cart_item_ids') i
             where e->>'code' = 'WA005') x;
    return jsonb_build_object(
      'code', 'WA005',
      'message', format('cart items %s are not open items of cart %s',
                        (select string_agg(coalesce(i #>> '{}', 'null'), ', ' order by (i #>> '{}')::bigint nulls last)
                           from jsonb_array_elements(v_ids) i),
                        (v_first->>'detail')::jsonb->>'cart_id'),
      'detail', jsonb_build_object('cart_id', ((v_first->>'detail')::jsonb->'cart_id'), 'cart_item_ids', v_ids)::text,
      'hint', v_first->>'hint');
  end if;

  -- Nothing to order anywhere.
  if cardinality(v_errors) = cardinality(p_outcomes) and (select bool_and(e->>'code' = 'WA006') from unnest(v_errors) e) then
    return v_errors[1];
  end if;

  -- Not for sale: every such product, named by the lowest.
  select e into v_first from unnest(v_errors) e
   where e->>'code' = 'WA003'
   order by ((e->>'detail')::jsonb->'product_ids'->>0)::bigint limit 1;
  if v_first is not null then
    select jsonb_agg(i order by (i #>> '{}')::bigint) into v_ids
      from unnest(v_errors) e, jsonb_array_elements((e->>'detail')::jsonb->'product_ids') i
     where e->>'code' = 'WA003';
    return v_first || jsonb_build_object('detail', jsonb_build_object('product_ids', v_ids)::text);
  end if;

  -- Insufficient stock: every short line, the first named.
  select jsonb_agg(x order by (x->>'product_id')::bigint) into v_list
    from unnest(v_errors) e, jsonb_array_elements((e->>'detail')::jsonb->'shortages') x
   where e->>'code' = 'WA004';
  if v_list is not null then
    v_first := (select e from unnest(v_errors) e where e->>'code' = 'WA004' limit 1);
    v_count := jsonb_array_length(v_list);
    return jsonb_build_object(
      'code', 'WA004',
      'message', format('insufficient stock for product "%s" (id %s): requested %s, available %s',
                        v_list->0->>'name', v_list->0->>'product_id', v_list->0->>'requested', v_list->0->>'available')
                 || case when v_count > 1 then format(' (and %s more products)', v_count - 1) else '' end,
      'detail', jsonb_build_object('shortages', v_list)::text,
      'hint', v_first->>'hint');
  end if;

  if p_one_seller then
    select array_agg(distinct (o->>'seller_id')::bigint order by (o->>'seller_id')::bigint) into v_sellers
      from unnest(p_outcomes) x, jsonb_array_elements(x->'ok'->'orders') o;
    if cardinality(v_sellers) > 1 then
      return waitress.ok(rpc.refusal(p_route, 'WA007',
        format('the cart items belong to %s sellers; an order is for one seller', cardinality(v_sellers)),
        jsonb_build_object('seller_ids', to_jsonb(v_sellers)), null));
    end if;
  end if;
  return null;
end
$$;

comment on function waitress.merge_refusals(jsonb[], boolean, bigint) is
  'The refusal one database would give, from each shard''s dry run of its lines; null when none refuses.';

-- Undoes the parts placed on these targets; true when every shard confirmed.
create function waitress.compensate(p_targets integer[], p_checkout_id uuid) returns boolean
language plpgsql
set search_path = ''
as $$
declare
  t integer;
  v jsonb;
  v_all boolean := true;
begin
  foreach t in array coalesce(p_targets, '{}') loop
    begin
      v := rpc.compensate_part(t, p_checkout_id);
      if v ? 'error' then
        raise exception '%', v->'error'->>'message';
      end if;
    exception when others then
      v_all := false;
      raise warning 'checkout %: could not undo its part on partition %''s shard: %; it stays in the journal',
        p_checkout_id, t, sqlerrm;
    end;
  end loop;
  return v_all;
end
$$;

comment on function waitress.compensate(integer[], uuid) is
  'Undoes a checkout''s parts on these shards (the lifecycle''s cancel); true when every shard confirmed.';

-- A checkout whose lines are not all at the cart's home (checkout_home said
-- where they are): p_remote {cart_id, buyer_id, partitions} and, when the
-- journal is open, {state, checkout_id, [orders]}. p_request is the one
-- schema's checkout request, which each shard runs on its own lines.
--   1. lines on several databases: every shard's dry run first, in parallel,
--      writing nothing; a refusal is merged into what one database would say
--   2. each database's part in turn, each one transaction there
--   3. a refusal or a shard that cannot be reached at part k: the parts
--      placed are undone through the lifecycle's cancel; the key is free again
--   4. placed everywhere: the response is recorded under the key
-- Until 3 or 4 is done, the journal at home says so: a retry with the key
-- resumes (each placed part replays), or the sweeper undoes it.
create function waitress.checkout_across(p_action text, p_remote jsonb, p_request jsonb, p_key text) returns jsonb
language plpgsql
set search_path = ''
as $$
declare
  v_cart bigint := (p_remote->>'cart_id')::bigint;
  v_buyer bigint := (p_remote->>'buyer_id')::bigint;
  v_mask integer := (p_remote->>'partitions')::integer;
  v_journal jsonb := p_remote;
  v_checkout uuid;
  v_targets integer[];
  v_target integer;
  v_one_seller boolean := coalesce((p_request->>'one_seller')::boolean, false);
  v_item_ids bigint[];
  v_outcomes jsonb[];
  v jsonb;
  v_error jsonb;
  v_empty jsonb;
  v_done integer[] := '{}';
  v_orders jsonb := '[]';
  v_replayed boolean := true;
  v_settled boolean;
  s text; m text; d text; h text;
begin
  if p_action <> 'place_order' then
    -- (api.place_order locks the cart before its home call)
    perform waitress.lock_cart(v_cart);
  end if;
  v_targets := waitress.targets(v_mask);

  if not p_remote ? 'state' and (p_key is not null or (cardinality(v_targets) > 1 and not v_one_seller)) then
    if jsonb_typeof(p_request->'item_ids') = 'array' then
      v_item_ids := array(select (i #>> '{}')::bigint from jsonb_array_elements(p_request->'item_ids') i);
    end if;
    begin
      v := rpc.checkout_begin(v_cart, p_action, v_cart, v_buyer, v_item_ids, p_request->>'note', p_key, v_mask);
    exception when others then
      get stacked diagnostics s = returned_sqlstate, m = message_text, d = pg_exception_detail, h = pg_exception_hint;
      v := waitress.failed(s, m, d, h);
    end;
    v_journal := v_journal || waitress.ok(v);
  end if;
  if v_journal->>'state' = 'done' then
    return jsonb_build_object('orders', v_journal->'orders', 'replayed', true);
  end if;
  v_checkout := (v_journal->>'checkout_id')::uuid;
  if v_journal->>'state' = 'resume' then
    v_targets := waitress.targets((v_journal->>'partitions')::integer);
  end if;

  -- 1. Several databases: decide first, write nothing.
  -- (A request for one seller whose lines are on several databases is never
  -- placed: it is refused here, WA007 at the latest.)
  -- (waitress.checkout_precheck = off skips it: the benchmark measures what it costs.)
  if cardinality(v_targets) > 1
     and (v_one_seller
          or (v_journal->>'state' is distinct from 'resume' and coalesce(current_setting('waitress.checkout_precheck', true), '') <> 'off')) then
    begin
      v_outcomes := array(select e from rpc.place_part_in(v_mask, null, p_request || '{"one_seller": false}', v_cart, v_buyer, true) e);
    exception when others then
      get stacked diagnostics s = returned_sqlstate, m = message_text, d = pg_exception_detail, h = pg_exception_hint;
      v_error := waitress.error_of(s, m, d, h);
    end;
    if v_error is null then
      v_error := waitress.merge_refusals(v_outcomes, v_one_seller, v_cart);
    end if;
    if v_error is not null then
      if v_checkout is not null then
        begin
          perform waitress.ok(rpc.checkout_abort(v_cart, v_checkout, v_buyer, p_key));
        exception when others then
          null; -- nothing was placed; the sweeper closes the journal
        end;
      end if;
      perform waitress.raise_error(v_error);
    end if;
  end if;

  -- 2. Each database's part, in turn.
  foreach v_target in array v_targets loop
    begin
      v := rpc.place_part(v_target, v_checkout, p_request, v_cart, v_buyer, false);
    exception when others then
      -- Not an answer of the shard: its part may or may not have committed.
      get stacked diagnostics s = returned_sqlstate, m = message_text, d = pg_exception_detail, h = pg_exception_hint;
      v_error := waitress.error_of(s, m, d, h);
      v_done := v_done || v_target;
      exit;
    end;
    if v ? 'error' then
      v_error := v->'error';
      exit;
    end if;
    v := v->'ok';
    if v ? 'error' then
      if v->'error'->>'code' = 'WA006' then
        v_empty := v->'error';
        continue;
      end if;
      v_error := v->'error';
      exit;
    end if;
    v_done := v_done || v_target;
    v_orders := v_orders || (v->'orders');
    v_replayed := v_replayed and (v->>'replayed')::boolean;
  end loop;
  if v_error is null and jsonb_array_length(v_orders) = 0 then
    v_error := coalesce(v_empty, jsonb_build_object('code', 'WA006', 'message', format('cart %s has nothing to order', v_cart),
                                                    'detail', jsonb_build_object('cart_id', v_cart)::text));
  end if;

  -- 3. Refused, or a shard unreachable: undo what was placed.
  if v_error is not null then
    if v_checkout is null then
      -- One part and no key: nothing else was placed. (A part whose outcome is
      -- unknown is the caller's to retry, as with a single database.)
      perform waitress.raise_error(v_error);
    end if;
    v_settled := waitress.compensate(v_done, v_checkout);
    if v_settled then
      begin
        perform waitress.ok(rpc.checkout_abort(v_cart, v_checkout, v_buyer, p_key));
      exception when others then
        null; -- undone everywhere; the sweeper closes the journal
      end;
    elsif v_error->>'code' <> '08006' then
      v_error := jsonb_build_object('code', '08006', 'message', 'a shard of the database is unavailable',
        'detail', jsonb_build_object('checkout', 'refused, not yet undone everywhere')::text,
        'hint', 'Retry with the same Idempotency-Key: the checkout resumes where it stopped.');
    end if;
    perform waitress.raise_error(v_error);
  end if;

  -- 4. Placed everywhere: one order per seller, in seller order as one database answers.
  v_orders := (select jsonb_agg(o order by (o->>'seller_id')::bigint, (o->>'id')::bigint) from jsonb_array_elements(v_orders) o);
  if v_checkout is not null then
    begin
      perform waitress.ok(rpc.checkout_finish(v_cart, v_checkout, v_buyer, p_key, v_orders));
    exception when others then
      -- Placed, not recorded: a retry with the key replays every part; without
      -- a key, the sweeper undoes them. Either way the answer is not known yet.
      get stacked diagnostics s = returned_sqlstate, m = message_text, d = pg_exception_detail, h = pg_exception_hint;
      v_error := waitress.error_of(s, m, d, h);
      perform waitress.raise_error(case when v_error->>'code' = '08006' then v_error
        else jsonb_build_object('code', '08006', 'message', 'a shard of the database is unavailable') end);
    end;
  end if;
  return jsonb_build_object('orders', v_orders, 'replayed', v_replayed and v_journal->>'state' = 'resume');
end
$$;

comment on function waitress.checkout_across(text, jsonb, jsonb, text) is
  'A checkout whose lines are on shards other than the cart''s home: dry runs, parts, compensation, the journal.';

create function api.place_order(
  p_cart_id bigint,
  p_item_ids bigint[] default null,
  p_note text default null,
  p_idempotency_key text default null,
  p_user_id bigint default null
) returns jsonb
language plpgsql
security definer
set search_path = ''
as $$
declare
  v jsonb; s text; m text; d text; h text;
begin
  perform waitress.lock_cart(p_cart_id);
  begin
    v := rpc.checkout_home(coalesce(p_cart_id, 0), 'place_order', p_cart_id, null, p_item_ids, p_note, p_idempotency_key,
                           p_user_id, true, waitress.partition_map());
  exception when others then
    get stacked diagnostics s = returned_sqlstate, m = message_text, d = pg_exception_detail, h = pg_exception_hint;
    v := waitress.failed(s, m, d, h);
  end;
  v := waitress.ok(v);
  if v ? 'done' then
    return v->'done';
  end if;
  return waitress.checkout_across('place_order', v->'remote',
    jsonb_build_object('cart_id', p_cart_id, 'item_ids', to_jsonb(p_item_ids), 'note', p_note, 'user_id', p_user_id),
    p_idempotency_key);
end
$$;

create function api.place_buyer_order(
  p_buyer_id bigint,
  p_cart_item_ids bigint[],
  p_note text default null,
  p_idempotency_key text default null
) returns jsonb
language plpgsql
security definer
set search_path = ''
as $$
declare
  v jsonb; s text; m text; d text; h text;
begin
  begin
    v := rpc.checkout_home(coalesce(waitress.partition_of(p_buyer_id), 0), 'place_buyer_order', null, p_buyer_id,
                           p_cart_item_ids, p_note, p_idempotency_key, null, false, waitress.partition_map());
  exception when others then
    get stacked diagnostics s = returned_sqlstate, m = message_text, d = pg_exception_detail, h = pg_exception_hint;
    v := waitress.failed(s, m, d, h);
  end;
  v := waitress.ok(v);
  if v ? 'done' then
    return v->'done';
  end if;
  return waitress.checkout_across('place_buyer_order', v->'remote',
    jsonb_build_object('buyer_id', p_buyer_id, 'item_ids', to_jsonb(p_cart_item_ids), 'note', p_note, 'one_seller', true),
    p_idempotency_key);
end
$$;

-- Part of a batch: these requests (positions), each on the one database
-- holding its lines (p_target), one place_orders call per database. A
-- database that cannot be reached answers its requests with 08006.
create function waitress.place_groups(p_outcomes jsonb[], p_positions integer[], p_requests jsonb, p_target integer[],
                                      p_resolved jsonb[])
returns jsonb[]
language plpgsql
set search_path = ''
as $$
declare
  v_outcomes jsonb[] := p_outcomes;
  v_group jsonb;
  v_part jsonb;
  v jsonb;
  t integer;
  s text; m text; d text; h text;
begin
  if coalesce(cardinality(p_positions), 0) = 0 then
    return v_outcomes;
  end if;
  foreach t in array waitress.targets((select bit_or(1 << p_target[pos]) from unnest(p_positions) pos)) loop
    select jsonb_agg((p_requests->(pos - 1)) || jsonb_build_object('target', t,
                       'cart', p_resolved[pos]->'cart_id', 'buyer', p_resolved[pos]->'buyer_id') order by pos)
      into v_group
      from unnest(p_positions) pos
     where waitress.database_mask(t) & (1 << p_target[pos]) <> 0;
    begin
      v := rpc.batch_part(t, v_group);
      for v_part in select jsonb_array_elements(waitress.ok(v)) loop
        v_outcomes[(v_part->>'i')::integer + 1] := v_part->'outcome';
      end loop;
    exception when others then
      get stacked diagnostics s = returned_sqlstate, m = message_text, d = pg_exception_detail, h = pg_exception_hint;
      v := waitress.error_of(s, m, d, h);
      if v->>'code' not in ('08006', '57P01', '57P02', '57P03') then
        -- A request broke a rule of the schema (22xxx, 23xxx): the one schema
        -- fails the whole call then, and so does this.
        perform waitress.raise_error(v);
      end if;
      for v_part in select jsonb_array_elements(v_group) loop
        v_outcomes[(v_part->>'i')::integer + 1] := jsonb_build_object('error', v || jsonb_build_object('detail', waitress.json_or_text(v->>'detail')));
      end loop;
    end;
  end loop;
  return v_outcomes;
end
$$;

comment on function waitress.place_groups(jsonb[], integer[], jsonb, integer[], jsonb[]) is
  'Part of a batch: its requests on each database as one place_orders call there.';

-- Many checkouts at once (coalesced batches): the requests whose lines are on
-- one shard go to that shard together, as one place_orders call there (each
-- still all or nothing, in arrival order); a request spanning shards is a
-- checkout across shards of its own. A shard that cannot be reached answers
-- its requests with 08006, the others are placed.
create function api.place_orders(p_requests jsonb) returns jsonb
language plpgsql
security definer
set search_path = ''
as $$
declare
  v_requests jsonb;
  v_outcomes jsonb[];
  v_resolved jsonb[];
  v_homes integer[];
  v_target integer[];
  v_multi integer[] := '{}';
  v_pending integer[] := '{}';
  v_mask integer;
  v_dbs integer[];
  v_home jsonb;
  t integer;
  i integer;
  v_request jsonb;
  v jsonb;
  v_unavailable jsonb;
  s text; m text; d text; h text;
begin
  if jsonb_typeof(p_requests) is distinct from 'array' or jsonb_array_length(p_requests) not between 1 and 1000 then
    -- The one schema answers (22023, or [] for none).
    begin
      v := rpc.place_orders(0, p_requests);
    exception when others then
      get stacked diagnostics s = returned_sqlstate, m = message_text, d = pg_exception_detail, h = pg_exception_hint;
      v := waitress.failed(s, m, d, h);
    end;
    return waitress.ok(v);
  end if;

  -- Each request's home: the cart's partition, or the buyer's.
  select jsonb_agg(x.r || jsonb_build_object('i', x.n - 1, 'home',
           case when x.r->>'cart_id' is not null then ((x.r->>'cart_id')::bigint & 15)::integer
                else coalesce(waitress.partition_of((x.r->>'buyer_id')::bigint), 0) end) order by x.n)
    into v_requests
    from jsonb_array_elements(p_requests) with ordinality x(r, n);
  v_outcomes := array_fill(null::jsonb, array[jsonb_array_length(v_requests)]);
  v_resolved := array_fill(null::jsonb, array[jsonb_array_length(v_requests)]);
  v_homes := array(select (r->>'home')::integer from jsonb_array_elements(v_requests) r);
  v_unavailable := jsonb_build_object('error', jsonb_build_object('code', '08006', 'message', 'a shard of the database is unavailable',
                                                                  'detail', null, 'hint', 'Retry shortly.'));

  -- The carts, at their homes (one call per database concerned).
  foreach t in array waitress.targets((select bit_or(1 << hp) from unnest(v_homes) hp)) loop
    begin
      for v_home in select jsonb_array_elements(waitress.ok(rpc.batch_homes(t, v_requests))) loop
        v_resolved[(v_home->>'i')::integer + 1] := v_home;
      end loop;
    exception when others then
      for i in 1 .. cardinality(v_homes) loop
        if waitress.database_mask(t) & (1 << v_homes[i]) <> 0 then
          v_outcomes[i] := v_unavailable;
        end if;
      end loop;
    end;
  end loop;

  -- Where each request runs: the one database holding its lines (or its
  -- home, where the one schema refuses a missing cart or an empty one), or
  -- several: a checkout across shards.
  v_target := array_fill(null::integer, array[cardinality(v_homes)]);
  for i in 1 .. cardinality(v_homes) loop
    continue when v_outcomes[i] is not null;
    v_request := v_requests->(i - 1);
    if v_resolved[i] is null then
      v_target[i] := v_homes[i];
      continue;
    end if;
    if jsonb_typeof(v_request->'item_ids') = 'array' then
      select coalesce(bit_or(1 << ((x #>> '{}')::bigint & 15)::integer), 0) into v_mask
        from jsonb_array_elements(v_request->'item_ids') x where jsonb_typeof(x) = 'number';
    else
      v_mask := (v_resolved[i]->>'partitions')::integer;
    end if;
    v_dbs := waitress.targets(v_mask);
    if cardinality(v_dbs) = 0 then
      v_target[i] := v_homes[i];
    elsif cardinality(v_dbs) = 1 and (v_request->>'idempotency_key' is null or v_dbs[1] = v_homes[i]) then
      v_target[i] := v_dbs[1];
    else
      -- Lines on several databases, or a key whose lines are not at home: as
      -- for a lone checkout (api.place_order), the key is claimed at home and
      -- the checkout runs across shards, so a key means the same whichever
      -- way its request came.
      v_multi := v_multi || i;
      v_resolved[i] := v_resolved[i] || jsonb_build_object('partitions', v_mask);
    end if;
  end loop;

  -- In arrival order: the requests of one database go there together, as one
  -- place_orders call; a request spanning shards is decided after every
  -- request before it, and before any after it.
  perform waitress.lock_cart(c) from (select distinct (v_resolved[mi]->>'cart_id')::bigint as c from unnest(v_multi) mi order by 1) x;
  for i in 1 .. cardinality(v_homes) loop
    continue when v_outcomes[i] is not null;
    if i = any (v_multi) then
      v_outcomes := waitress.place_groups(v_outcomes, v_pending, v_requests, v_target, v_resolved);
      v_pending := '{}';
      v_request := v_requests->(i - 1);
      begin
        v := waitress.checkout_across(case when v_request ? 'cart_id' and v_request->'cart_id' <> 'null'
                                           then 'place_order' else 'place_buyer_order' end,
                                      v_resolved[i] - 'i', v_request - 'i' - 'home' - 'idempotency_key',
                                      v_request->>'idempotency_key');
        v_outcomes[i] := jsonb_build_object('orders', v->'orders')
                         || case when (v->>'replayed')::boolean then '{"replayed": true}'::jsonb else '{}'::jsonb end;
      exception when others then
        get stacked diagnostics s = returned_sqlstate, m = message_text, d = pg_exception_detail, h = pg_exception_hint;
        v_outcomes[i] := jsonb_build_object('error', jsonb_build_object('code', s, 'message', m,
                                                                        'detail', waitress.json_or_text(d), 'hint', nullif(h, '')));
      end;
    else
      v_pending := v_pending || i;
    end if;
  end loop;
  v_outcomes := waitress.place_groups(v_outcomes, v_pending, v_requests, v_target, v_resolved);

  return to_jsonb(v_outcomes);
end
$$;

-- ---------------------------------------------------------------- orders
create function api.orders(
  p_buyer_id bigint default null,
  p_seller_id bigint default null,
  p_state text default null,
  p_limit integer default 10,
  p_offset integer default 0,
  p_after bigint default null,
  p_user_id bigint default null
) returns jsonb
language plpgsql
security definer
set search_path = ''
as $$
declare
  v_parts jsonb[]; s text; m text; d text; h text;
begin
  begin
    if p_seller_id is not null then
      -- A seller's orders are on the seller's shard.
      v_parts := array[rpc.orders_page(waitress.partition_of(p_seller_id), p_buyer_id, p_seller_id, p_state, p_limit,
                                       p_offset, p_after, p_user_id)];
    else
      v_parts := array(select e from rpc.orders_page_all(p_buyer_id, p_seller_id, p_state, p_limit, p_offset, p_after, p_user_id) e);
    end if;
  exception when others then
    get stacked diagnostics s = returned_sqlstate, m = message_text, d = pg_exception_detail, h = pg_exception_hint;
    v_parts := array[waitress.failed(s, m, d, h)];
  end;
  return waitress.merge_pages(v_parts, p_limit, p_offset);
end
$$;

create function api.order(p_order_id bigint, p_user_id bigint default null) returns jsonb
language plpgsql
security definer
set search_path = ''
as $$
declare
  v jsonb; s text; m text; d text; h text;
begin
  begin
    v := rpc.order(coalesce(p_order_id, 0), p_order_id, p_user_id);
  exception when others then
    get stacked diagnostics s = returned_sqlstate, m = message_text, d = pg_exception_detail, h = pg_exception_hint;
    v := waitress.failed(s, m, d, h);
  end;
  return waitress.ok(v);
end
$$;

-- An order lives on its seller's shard with its lines, stock and key records:
-- its actions are the one schema's, there.
create function api.act_on_order(
  p_order_id bigint,
  p_action text,
  p_idempotency_key text default null,
  p_user_id bigint default null
) returns jsonb
language plpgsql
security definer
set search_path = ''
as $$
declare
  v jsonb; s text; m text; d text; h text;
begin
  begin
    v := rpc.act_on_order(coalesce(p_order_id, 0), p_order_id, p_action, p_idempotency_key, p_user_id);
  exception when others then
    get stacked diagnostics s = returned_sqlstate, m = message_text, d = pg_exception_detail, h = pg_exception_hint;
    v := waitress.failed(s, m, d, h);
  end;
  return waitress.ok(v);
end
$$;

-- Undoes the checkouts that stopped half-way longer than p_age ago (the
-- router died between two parts, or could not reach a shard to undo a part):
-- each part is cancelled through the lifecycle, its lines go back in the
-- cart, the key is free again. A checkout still running holds its cart's
-- lock and is left alone. Returns how many were undone.
create function waitress.sweep_checkouts(p_age interval) returns integer
language plpgsql
set search_path = ''
as $$
declare
  t integer;
  v jsonb;
  c jsonb;
  v_count integer := 0;
begin
  foreach t in array waitress.all_targets() loop
    begin
      v := waitress.ok(rpc.stale_checkouts(t, p_age));
    exception when others then
      continue;
    end;
    for c in select jsonb_array_elements(v) loop
      continue when not pg_catalog.pg_try_advisory_xact_lock(7261216, pg_catalog.hashint8((c->>'cart_id')::bigint));
      if waitress.compensate(waitress.targets((c->>'partitions')::integer), (c->>'id')::uuid) then
        begin
          perform waitress.ok(rpc.checkout_abort((c->>'cart_id')::bigint, (c->>'id')::uuid, (c->>'buyer_id')::bigint,
                                                 c->>'idempotency_key'));
          v_count := v_count + 1;
        exception when others then
          null;
        end;
      end if;
    end loop;
  end loop;
  return v_count;
end
$$;

comment on function waitress.sweep_checkouts(interval) is
  'Undoes checkouts across shards that stopped half-way more than p_age ago; returns how many.';

-- Every shard expires its own orders; then the checkouts that stopped
-- half-way are undone. A shard that cannot be reached is skipped (its orders
-- expire at the next call after it is back).
create function api.expire_orders(p_ttl interval default '30 minutes', p_limit integer default 500) returns integer
language plpgsql
security definer
set search_path = ''
as $$
declare
  t integer;
  v jsonb;
  v_total integer := 0;
begin
  foreach t in array waitress.all_targets() loop
    begin
      v := rpc.expire_orders(t, p_ttl, p_limit);
    exception when others then
      continue;
    end;
    v_total := v_total + (waitress.ok(v) #>> '{}')::integer;
  end loop;
  perform waitress.sweep_checkouts(interval '1 minute');
  return v_total;
end
$$;

-- Periodic jobs run once per period across every service process: the
-- lease lives on the first shard, one for the whole cluster. (Its lock ends
-- with that shard's own transaction; the lease row alone keeps a second
-- process from running the job within the period.)
create function api.take_job_lease(p_job text, p_every interval) returns boolean
language plpgsql
security definer
set search_path = ''
as $$
begin
  return (waitress.ok(rpc.take_job_lease((waitress.all_targets())[1], p_job, p_every)) #>> '{}')::boolean;
end
$$;

create function api.expire_orders_due(p_ttl interval, p_every interval, p_limit integer default 500) returns integer
language plpgsql
security definer
set search_path = ''
as $$
begin
  if not api.take_job_lease('expire_orders', p_every) then
    return null;
  end if;
  return api.expire_orders(p_ttl, p_limit);
end
$$;

create function api.inventory_audit()
returns table (
  product_id bigint,
  name text,
  stock integer,
  ledger_stock bigint,
  sold_in_ledger bigint,
  sold_in_orders bigint
)
language plpgsql
security definer
set search_path = ''
as $$
declare
  v_parts jsonb[]; v_part jsonb; s text; m text; d text; h text;
begin
  begin
    v_parts := array(select e from rpc.inventory_audit_all() e);
  exception when others then
    get stacked diagnostics s = returned_sqlstate, m = message_text, d = pg_exception_detail, h = pg_exception_hint;
    v_parts := array[waitress.failed(s, m, d, h)];
  end;
  foreach v_part in array v_parts loop
    perform waitress.ok(v_part);
  end loop;
  return query
    select a.product_id, a.name, a.stock, a.ledger_stock, a.sold_in_ledger, a.sold_in_orders
      from unnest(v_parts) part,
           jsonb_to_recordset(part->'ok') as a(product_id bigint, name text, stock integer, ledger_stock bigint,
                                               sold_in_ledger bigint, sold_in_orders bigint)
     order by a.product_id;
end
$$;

-- The migrations applied on every shard (readiness waits for the slowest).
create function api.applied_migrations() returns setof text
language plpgsql
security definer
set search_path = ''
as $$
declare
  v_parts jsonb[]; v_part jsonb; s text; m text; d text; h text;
begin
  begin
    v_parts := array(select e from rpc.applied_migrations_all() e);
  exception when others then
    get stacked diagnostics s = returned_sqlstate, m = message_text, d = pg_exception_detail, h = pg_exception_hint;
    v_parts := array[waitress.failed(s, m, d, h)];
  end;
  foreach v_part in array v_parts loop
    perform waitress.ok(v_part);
  end loop;
  return query
    select v #>> '{}'
      from unnest(v_parts) part, jsonb_array_elements(part->'ok') v
     group by 1
    having count(*) = cardinality(v_parts)
     order by 1;
end
$$;

create function api.purge_idempotency_keys() returns integer
language plpgsql
security definer
set search_path = ''
as $$
declare
  t integer; v_total integer := 0;
begin
  foreach t in array waitress.all_targets() loop
    begin
      v_total := v_total + (waitress.ok(rpc.purge_idempotency_keys(t)) #>> '{}')::integer;
    exception when others then
      null;
    end;
  end loop;
  return v_total;
end
$$;

create function api.purge_rate_limit_windows() returns integer
language plpgsql
security definer
set search_path = ''
as $$
declare
  t integer; v_total integer := 0;
begin
  foreach t in array waitress.all_targets() loop
    begin
      v_total := v_total + (waitress.ok(rpc.purge_rate_limit_windows(t)) #>> '{}')::integer;
    exception when others then
      null;
    end;
  end loop;
  return v_total;
end
$$;

-- A client's counter lives on one shard (by a hash of the client). When that
-- shard cannot be reached the request is let through: a limiter that fails
-- closed would turn one shard's outage into everyone's.
create function api.rate_limit_hit(p_client text, p_limit integer, p_window_seconds integer, p_hits integer default 1)
returns integer
language plpgsql
security definer
set search_path = ''
as $$
declare
  v jsonb; s text; m text; d text; h text;
begin
  begin
    v := rpc.rate_limit_hit(pg_catalog.hashtext(coalesce(p_client, '')), p_client, p_limit, p_window_seconds, p_hits);
  exception when others then
    get stacked diagnostics s = returned_sqlstate, m = message_text, d = pg_exception_detail, h = pg_exception_hint;
    v := waitress.failed(s, m, d, h);
    if v->'error'->>'code' = '08006' then
      return 0;
    end if;
  end;
  return (waitress.ok(v) #>> '{}')::integer;
end
$$;

-- migrate:down
set local role waitress_owner;
do $$
declare
  f regprocedure;
begin
  for f in select p.oid::regprocedure from pg_catalog.pg_proc p
            where p.pronamespace = 'api'::regnamespace
               or (p.pronamespace = 'waitress'::regnamespace
                   and p.proname in ('json_or_text', 'place_groups', 'error_of', 'raise_error', 'ok', 'failed', 'lock_cart', 'merge_pages', 'merge_refusals',
                                     'compensate', 'checkout_across', 'sweep_checkouts'))
  loop
    execute format('drop function %s', f);
  end loop;
end
$$;
