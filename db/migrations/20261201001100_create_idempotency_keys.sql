-- migrate:up
set local role waitress_owner;

-- Idempotency records: the first response to a request sent with an
-- Idempotency-Key, kept for 24 hours so that a retry gets that response
-- instead of a second order. A record is written by the same transaction as
-- the work it records, so there is no moment when the order exists and the
-- key does not, or the other way round. Keys are scoped to the user who sent
-- them (without authentication: to the owner of the object acted on), and
-- every function checks that the user may act on the object before it looks
-- a key up, so another user's key reveals nothing.
create table waitress.idempotency_keys (
  user_id bigint not null,
  key text not null,
  action text not null,
  request_hash bytea not null,
  response_status integer,
  response_body jsonb,
  created_at timestamptz not null default now(),
  constraint idempotency_keys_pkey primary key (user_id, key),
  constraint idempotency_keys_user_id_positive check (user_id > 0),
  constraint idempotency_keys_key_length check (length(key) between 1 and 255)
);

create index idempotency_keys_created_at_idx on waitress.idempotency_keys (created_at);

comment on table waitress.idempotency_keys is
  'The first successful response per (user, Idempotency-Key), written in the same transaction as the work; '
  'kept waitress.idempotency_key_ttl() (24 hours), then purged by api.purge_idempotency_keys().';
comment on column waitress.idempotency_keys.action is 'What the key was used for, e.g. place_order.';
comment on column waitress.idempotency_keys.request_hash is
  'sha256 of the action and its parameters: the same key with other parameters is refused (WA101).';
comment on column waitress.idempotency_keys.response_status is 'HTTP status of the first response (201 for a checkout).';
comment on column waitress.idempotency_keys.response_body is 'The first response''s data, returned again on every retry.';

create function waitress.idempotency_key_ttl() returns interval
language sql
immutable
set search_path = ''
as $$
  select interval '24 hours'
$$;

comment on function waitress.idempotency_key_ttl() is 'How long an idempotency key is kept: 24 hours.';

-- Claims a key, or answers with what the first request with this key got.
-- The insert comes first: a duplicate sent while the first request is still
-- running waits on the primary key until that transaction ends, then sees its
-- committed record (or, if it failed, claims the key itself).
create function waitress.idempotency_begin(
  p_user_id bigint,
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
  v_record waitress.idempotency_keys;
begin
  -- A record older than the TTL is as good as purged: the key starts afresh.
  -- Waiting for a concurrent holder of the key is bounded by the session's
  -- lock_timeout, if it has one: then the duplicate gets WA102 (409).
  begin
    insert into waitress.idempotency_keys as k (user_id, key, action, request_hash)
    values (p_user_id, p_key, p_action, v_hash)
    on conflict (user_id, key) do update
       set action = excluded.action, request_hash = excluded.request_hash,
           response_status = null, response_body = null, created_at = now()
     where k.created_at < now() - waitress.idempotency_key_ttl()
    returning * into v_record;
  exception when lock_not_available then
    perform waitress.refuse('WA102', format('a request with idempotency key "%s" is still in progress', p_key),
                            jsonb_build_object('idempotency_key', p_key, 'action', p_action));
  end;
  if v_record.user_id is not null then
    return; -- the key is ours: status and data stay null, go on
  end if;

  select * into strict v_record
    from waitress.idempotency_keys k
   where k.user_id = p_user_id and k.key = p_key;

  if v_record.request_hash <> v_hash then
    perform waitress.refuse('WA101',
      format('idempotency key "%s" was already used for a different request (%s)', p_key, v_record.action),
      jsonb_build_object('idempotency_key', p_key, 'action', v_record.action));
  end if;
  if v_record.response_status is null then
    -- Only possible inside the one transaction that claimed the key and has not finished.
    perform waitress.refuse('WA102', format('a request with idempotency key "%s" is still in progress', p_key),
                            jsonb_build_object('idempotency_key', p_key, 'action', v_record.action));
  end if;
  status := v_record.response_status;
  data := v_record.response_body;
end
$$;

comment on function waitress.idempotency_begin(bigint, text, text, jsonb) is
  'Claims (user, key) for this action and parameters and returns nulls, or returns the status and data recorded '
  'for the same request; waits while a concurrent request holds the key (WA102 if lock_timeout runs out first). '
  'WA101 when the key was used with other parameters. Call idempotency_finish in the same transaction.';

create function waitress.idempotency_finish(p_user_id bigint, p_key text, p_status integer, p_data jsonb) returns void
language sql
set search_path = ''
as $$
  update waitress.idempotency_keys
     set response_status = p_status, response_body = p_data
   where user_id = p_user_id and key = p_key
$$;

comment on function waitress.idempotency_finish(bigint, text, integer, jsonb) is
  'Records the response of a request whose key idempotency_begin claimed, in the same transaction.';

create function api.purge_idempotency_keys() returns integer
language sql
security definer
set search_path = ''
as $$
  with purged as (
    delete from waitress.idempotency_keys
     where created_at < now() - waitress.idempotency_key_ttl()
    returning 1
  )
  select count(*)::integer from purged
$$;

comment on function api.purge_idempotency_keys() is
  'Deletes idempotency records older than 24 hours and returns how many. Safe to run from several places at once.';

-- migrate:down
set local role waitress_owner;
drop function if exists api.purge_idempotency_keys();
drop function if exists waitress.idempotency_finish(bigint, text, integer, jsonb);
drop function if exists waitress.idempotency_begin(bigint, text, text, jsonb);
drop function if exists waitress.idempotency_key_ttl();
drop table if exists waitress.idempotency_keys;
