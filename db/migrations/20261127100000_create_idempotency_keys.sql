-- migrate:up
-- Idempotency records: the first response to a request sent with an
-- Idempotency-Key, kept for 24 hours so that a retry gets that response
-- instead of a second order. A record is written by the same transaction
-- as the checkout it records (see place_order_idempotent), so there is no
-- moment when the order exists and the key does not, or the other way round.
-- Keys are scoped per buyer: two buyers may use the same key.
create table public.idempotency_keys (
  buyer_id bigint not null,
  key text not null,
  action text not null,
  request_hash bytea not null,
  response_status integer,
  response_body jsonb,
  created_at timestamptz not null default now(),
  constraint idempotency_keys_pkey primary key (buyer_id, key),
  constraint idempotency_keys_buyer_id_positive check (buyer_id > 0),
  constraint idempotency_keys_key_length check (length(key) between 1 and 255)
);

create index idempotency_keys_created_at_idx on public.idempotency_keys (created_at);

comment on table public.idempotency_keys is
  'The first successful response per (buyer, Idempotency-Key), written in the checkout''s own transaction; '
  'kept idempotency_key_ttl() (24 hours), then purged by purge_idempotency_keys().';
comment on column public.idempotency_keys.action is 'What the key was used for: the function name, e.g. place_order.';
comment on column public.idempotency_keys.request_hash is
  'sha256 of the action and its parameters: the same key with other parameters is refused (WA101).';
comment on column public.idempotency_keys.response_status is 'HTTP status of the first response (201 for a checkout).';
comment on column public.idempotency_keys.response_body is 'The first response''s data, returned again on every retry.';

create function public.idempotency_key_ttl() returns interval
language sql immutable
set search_path = ''
as $$
  select interval '24 hours'
$$;

comment on function public.idempotency_key_ttl() is 'How long an idempotency key is kept: 24 hours.';

-- Claims a key, or answers with what the first request with this key got.
-- The insert comes first: a duplicate sent while the first request is still
-- running waits on the primary key until that transaction ends, then sees its
-- committed record (or, if it failed, claims the key itself).
create function public.idempotency_begin(
  p_buyer_id bigint,
  p_key text,
  p_action text,
  p_request jsonb,
  out status integer,
  out data jsonb
)
language plpgsql
set search_path = ''
as $$
declare
  v_hash bytea := pg_catalog.sha256(pg_catalog.convert_to(p_action || ' ' || p_request::text, 'UTF8'));
  v_record public.idempotency_keys;
begin
  -- A record older than the TTL is as good as purged: the key starts afresh.
  -- Waiting for a concurrent holder of the key is bounded by the session's
  -- lock_timeout, if it has one: then the duplicate gets WA102 (409).
  begin
    insert into public.idempotency_keys as k (buyer_id, key, action, request_hash)
    values (p_buyer_id, p_key, p_action, v_hash)
    on conflict (buyer_id, key) do update
       set action = excluded.action, request_hash = excluded.request_hash,
           response_status = null, response_body = null, created_at = now()
     where k.created_at < now() - public.idempotency_key_ttl()
    returning * into v_record;
  exception when lock_not_available then
    raise exception using
      errcode = 'WA102',
      message = format('a request with idempotency key "%s" is still in progress', p_key),
      detail = jsonb_build_object('idempotency_key', p_key, 'action', p_action)::text,
      hint = 'Retry shortly: once the first request has finished, its response is returned.';
  end;
  if v_record.buyer_id is not null then
    return; -- the key is ours: status and data stay null, go on
  end if;

  select * into strict v_record
    from public.idempotency_keys k
   where k.buyer_id = p_buyer_id and k.key = p_key;

  if v_record.request_hash <> v_hash then
    raise exception using
      errcode = 'WA101',
      message = format('idempotency key "%s" was already used for a different request (%s)', p_key, v_record.action),
      detail = jsonb_build_object('idempotency_key', p_key, 'action', v_record.action)::text,
      hint = 'Send a new key with a new request; reuse a key only to retry exactly the same request.';
  end if;
  if v_record.response_status is null then
    -- Only possible inside the one transaction that claimed the key and has not finished.
    raise exception using
      errcode = 'WA102',
      message = format('a request with idempotency key "%s" is still in progress', p_key),
      detail = jsonb_build_object('idempotency_key', p_key, 'action', v_record.action)::text,
      hint = 'Retry once the first request has finished.';
  end if;
  status := v_record.response_status;
  data := v_record.response_body;
end
$$;

comment on function public.idempotency_begin(bigint, text, text, jsonb) is
  'For functions that make a request idempotent: claims (buyer, key) for this action and parameters and returns nulls, '
  'or returns the status and data recorded for the same request; waits while a concurrent request holds the key '
  '(WA102 if lock_timeout runs out first). Raises WA101 when the key was used with other parameters. '
  'Call idempotency_finish in the same transaction.';

create function public.idempotency_finish(p_buyer_id bigint, p_key text, p_status integer, p_data jsonb) returns void
language sql
set search_path = ''
as $$
  update public.idempotency_keys
     set response_status = p_status, response_body = p_data
   where buyer_id = p_buyer_id and key = p_key
$$;

comment on function public.idempotency_finish(bigint, text, integer, jsonb) is
  'Records the response of a request whose key idempotency_begin claimed, in the same transaction.';

create function public.purge_idempotency_keys() returns integer
language sql
security definer
set search_path = ''
as $$
  with purged as (
    delete from public.idempotency_keys
     where created_at < now() - public.idempotency_key_ttl()
    returning 1
  )
  select count(*)::integer from purged
$$;

comment on function public.purge_idempotency_keys() is
  'Deletes idempotency records older than idempotency_key_ttl() and returns how many. '
  'The service runs it on a timer (PURGE_INTERVAL); safe to run from several places at once.';

-- begin and finish write the records: only the security definer functions
-- that wrap a checkout call them, never the API role.
revoke execute on function public.idempotency_key_ttl() from public;
revoke execute on function public.idempotency_begin(bigint, text, text, jsonb) from public;
revoke execute on function public.idempotency_finish(bigint, text, integer, jsonb) from public;
revoke execute on function public.purge_idempotency_keys() from public;
grant execute on function public.purge_idempotency_keys() to waitress_api;

-- migrate:down
drop function if exists public.purge_idempotency_keys();
drop function if exists public.idempotency_finish(bigint, text, integer, jsonb);
drop function if exists public.idempotency_begin(bigint, text, text, jsonb);
drop function if exists public.idempotency_key_ttl();
drop table if exists public.idempotency_keys;
