-- migrate:up
set local role waitress_owner;

-- Periodic jobs (expiring overdue orders, purging keys and rate-limit
-- windows) that every service process schedules but that should run once per
-- period across all of them, however many processes, isolates or runtimes
-- share the database. A lease row per job, taken in the same statement as
-- the work, under a transaction-scoped advisory lock. Never a session lock:
-- behind a transaction pooler (PgBouncer) the session belongs to whichever
-- client the pooler lends it to next, so two processes would both "hold" it.
-- Correctness never depends on this (expire_orders skips locked orders, the
-- purges are idempotent): it only saves the duplicate work.
create table waitress.job_leases (
  job text primary key,
  ran_at timestamptz not null default '-infinity'
);

comment on table waitress.job_leases is
  'When each periodic job last ran, in any process: the lease that makes it run once per period.';

create function api.take_job_lease(p_job text, p_every interval) returns boolean
language plpgsql
security definer
set search_path = ''
as $$
begin
  if p_job is null or p_every is null or p_every < interval '0' then
    raise exception using errcode = '22023',
      message = format('a job lease needs a name and a non-negative period, got %s and %s', p_job, p_every);
  end if;
  -- Someone runs it right now: skip at once, holding nothing, waiting for nothing.
  if not pg_catalog.pg_try_advisory_xact_lock(pg_catalog.hashtext('waitress.job_leases:' || p_job)) then
    return false;
  end if;
  insert into waitress.job_leases as l (job, ran_at) values (p_job, now())
  on conflict (job) do update set ran_at = excluded.ran_at
   where l.ran_at <= now() - p_every;
  -- Ran less than p_every ago, in this process or another: skip.
  return found;
end
$$;

comment on function api.take_job_lease(text, interval) is
  'True (and the lease renewed) when job p_job last ran p_every or longer ago and nobody runs it now; else false. '
  'The lock and the lease end with the calling statement''s transaction: take it in the statement that does the job, '
  'e.g. with lease as (select api.take_job_lease(''purge'', interval ''1 hour'') as taken) '
  'select case when taken then api.purge_idempotency_keys() end from lease.';

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

comment on function api.expire_orders_due(interval, interval, integer) is
  'api.expire_orders(p_ttl, p_limit) if no process ran it within p_every, else null (skipped). '
  'What each service process calls on its timer: the first batch of a period runs once across processes; '
  'while it returns p_limit, call api.expire_orders for the rest.';

-- migrate:down
set local role waitress_owner;
drop function if exists api.expire_orders_due(interval, interval, integer);
drop function if exists api.take_job_lease(text, interval);
drop table if exists waitress.job_leases;
