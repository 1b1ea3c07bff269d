-- migrate:up
set local role waitress_owner;

-- Request counters for rate limiting, shared by every API process: one row
-- per client, a fixed window. Unlogged: after a crash the counters start from
-- zero, which only forgives a few requests.
create unlogged table waitress.rate_limit_windows (
  client text primary key,
  window_ends_at timestamptz not null,
  hits integer not null
);

comment on table waitress.rate_limit_windows is
  'Requests per client (user:<sub> or ip:<address>) in the current fixed window. Written only by api.rate_limit_hit().';

create function api.rate_limit_hit(p_client text, p_limit integer, p_window_seconds integer, p_hits integer default 1)
returns integer
language sql
security definer
set search_path = ''
as $$
  insert into waitress.rate_limit_windows as w (client, window_ends_at, hits)
  values (p_client,
          pg_catalog.to_timestamp((floor(extract(epoch from now()) / p_window_seconds) + 1) * p_window_seconds),
          p_hits)
  on conflict (client) do update
     set hits = case when w.window_ends_at = excluded.window_ends_at then w.hits + excluded.hits else excluded.hits end,
         window_ends_at = excluded.window_ends_at
  returning case when w.hits > p_limit
                 then greatest(1, ceil(extract(epoch from w.window_ends_at - now())))::integer
                 else 0 end
$$;

comment on function api.rate_limit_hit(text, integer, integer, integer) is
  'Counts p_hits requests of p_client in the current window of p_window_seconds (aligned to the epoch) and returns 0 '
  'while the client is within p_limit requests, else the seconds until the window ends (for Retry-After).';

create function api.purge_rate_limit_windows() returns integer
language sql
security definer
set search_path = ''
as $$
  with purged as (delete from waitress.rate_limit_windows where window_ends_at < now() returning 1)
  select count(*)::integer from purged
$$;

comment on function api.purge_rate_limit_windows() is 'Deletes the counters of windows that have ended; returns how many.';

-- migrate:down
set local role waitress_owner;
drop function if exists api.purge_rate_limit_windows();
drop function if exists api.rate_limit_hit(text, integer, integer, integer);
drop table if exists waitress.rate_limit_windows;
