-- migrate:up
set local role waitress_owner;

-- The service's own answer to a checkout whose statement reached the
-- database, which then went away (a failover, a lost connection) before
-- answering: it may have committed. Retrying with the same Idempotency-Key
-- answers with the order if it was placed, or places it once.
insert into waitress.refusals (code, http_status, source, title, meaning, detail, hint) values
  ('WA103', 503, 'service', 'checkout outcome unknown',
   'The checkout reached the database, which went away before answering (a failover, a lost connection): it may have been placed, whole, or not at all.',
   null, 'Retry with the same Idempotency-Key: the recorded order comes back if it was placed, else it is placed once. Without a key, read the orders (GET /orders) before checking out again.')
on conflict (code) do nothing;

-- migrate:down
set local role waitress_owner;
delete from waitress.refusals where code = 'WA103';
