-- migrate:up
set local role waitress_owner;

-- Every code a caller can meet, written once: the SQLSTATEs the functions
-- raise (source waitress), PostgreSQL's own codes that bad input or load can
-- cause (source postgresql), and the service's own (source service). The
-- service's status map, docs/sql-contract.md and the OpenAPI document are
-- generated from this table (npm run generate); a test fails when a function
-- raises a code that is not here, or a waitress code here is raised nowhere.
create table waitress.refusals (
  code text primary key,
  http_status integer not null,
  source text not null,
  title text not null,
  meaning text not null,
  detail text,
  hint text,
  constraint refusals_code_is_sqlstate check (code ~ '^[0-9A-Z]{5}$'),
  constraint refusals_http_status_is_error check (http_status between 400 and 599),
  constraint refusals_source_known check (source in ('waitress', 'postgresql', 'service'))
);

comment on table waitress.refusals is
  'Every error code a caller can meet: its HTTP status, a title, what it means, the keys of its JSON DETAIL '
  'and the HINT sent with it. The one source of the status map, the docs and the OpenAPI document.';

-- The limits, written once: every function that enforces one reads it here
-- (add_cart_item, update_cart_item, the checkout). What a hostile request or
-- cart can make a function do under a lock is bounded by them. The refusals
-- below name the same numbers in their words (a test checks they agree).
--
-- A set-returning SQL function with no SET clause, so the planner inlines it:
-- a caller's cached plan holds the numbers as constants, where a pinned
-- search_path would make every call parse and plan the body again. Its body
-- names no object, so there is nothing for a search_path to redirect.
create function waitress.limits()
returns table (
  max_item_ids integer,       -- distinct cart item ids one order request names (WA110)
  max_lines integer,          -- cart lines one order request buys (WA112)
  max_note_length integer,    -- characters of an order's note (WA111)
  max_open_lines integer,     -- open (unpurchased) lines of a cart (WA114)
  max_line_quantity integer   -- units of a product on one cart line (WA115)
)
language sql
immutable
as $$
  select 100, 100, 1000, 100, 10000
$$;

comment on function waitress.limits() is
  'The limits, written once: item ids per order request (after duplicates collapse), lines one order buys, note '
  'length, open lines per cart, units per cart line.';

insert into waitress.refusals (code, http_status, source, title, meaning, detail, hint) values
  ('WA001', 404, 'waitress', 'cart not found',
   'No such cart, or it is another user''s (answered exactly as if it did not exist).',
   '{"cart_id"}', 'Get the buyer''s cart first: GET /carts, or api.cart_for_user(user_id).'),
  ('WA002', 404, 'waitress', 'product not found',
   'No such product, or (for its stock and history) it is another seller''s.',
   '{"product_id"}', 'Check the product id; only a product''s seller may change its stock or read its history.'),
  ('WA003', 422, 'waitress', 'product not for sale',
   'A product is inactive or priced at zero.',
   '{"product_ids": [...]}', 'Remove the product from the order; only active products with a price above zero can be bought.'),
  ('WA004', 422, 'waitress', 'insufficient stock',
   'A line asks for more units than the product has; every short line is listed.',
   '{"shortages": [{"product_id", "name", "requested", "available"}]}',
   'Lower each quantity to at most the available stock, or remove the line.'),
  ('WA005', 422, 'waitress', 'not open items of the cart',
   'An id is not an open (unpurchased) item of the cart, or the buyer has no cart.',
   '{"cart_id" or "buyer_id", "cart_item_ids": [...]}',
   'Only items in the cart that are not purchased yet can be ordered; reload the cart.'),
  ('WA006', 422, 'waitress', 'nothing to order',
   'The cart has no open items, or the request named none.',
   '{"cart_id"} or {"buyer_id"}', 'Add items to the cart first.'),
  ('WA007', 422, 'waitress', 'several sellers',
   'An order is for one seller, and the items belong to several.',
   '{"seller_ids": [...]}', 'Order the items of each seller separately, or check out the whole cart (one order per seller).'),
  ('WA008', 404, 'waitress', 'order not found',
   'No such order, or the user is neither its buyer nor its seller.',
   '{"order_id"}', 'Check the order id; an order is visible to its buyer and its seller only.'),
  ('WA009', 409, 'waitress', 'order in the wrong state',
   'The order is not in a state the action applies to; DETAIL names the current state.',
   '{"order_id", "code", "state", "action", "allowed_from", "paid"}',
   'Read the order again: another action may have moved it first.'),
  ('WA010', 422, 'waitress', 'correction below zero',
   'A stock correction would take the stock below zero.',
   '{"product_id", "stock", "quantity"}', 'Units already sold are released by cancelling their orders, not by a correction.'),
  ('WA011', 403, 'waitress', 'the other party''s action',
   'The buyer pays and cancels; the seller accepts, rejects, delivers, remits and refunds.',
   '{"order_id", "action", "allowed"}', 'Ask the other party of the order to do it.'),
  ('WA012', 404, 'waitress', 'cart item not found',
   'No such cart item, or it is in another user''s cart (answered exactly as if it did not exist).',
   '{"cart_item_id"}', 'Reload the cart (GET /carts, or api.cart_for_user(user_id)): it lists the open items and their ids.'),
  ('WA013', 409, 'waitress', 'cart item already purchased',
   'The cart item was bought by a checkout: it belongs to its order now and can no longer be changed or removed.',
   '{"cart_item_id", "order_id"}',
   'Reload the cart: the line is no longer in it. To undo the purchase, cancel the order; to buy more, add the product again.'),
  ('WA101', 422, 'waitress', 'idempotency key reused',
   'The Idempotency-Key was already used for a different request.',
   '{"idempotency_key", "action"}', 'Send a new key with a new request; reuse a key only to retry exactly the same request.'),
  ('WA102', 409, 'waitress', 'idempotent request in progress',
   'A request with this Idempotency-Key is still running and the wait for it ran into lock_timeout.',
   '{"idempotency_key", "action"}', 'Retry shortly: once the first request has finished, its response is returned.'),
  ('WA103', 503, 'service', 'checkout outcome unknown',
   'The checkout reached the database, which went away before answering (a failover, a lost connection): it may '
   'have been placed, whole, or not at all.',
   null, 'Retry with the same Idempotency-Key: the recorded order comes back if it was placed, else it is placed once. '
   'Without a key, read the orders (GET /orders) before checking out again.'),
  ('WA110', 422, 'waitress', 'too many item ids',
   'An order request names more cart items than the limit (100; duplicates collapse first).',
   '{"cart_item_ids": count, "limit"}', 'Name at most 100 cart items per order; place several orders for more.'),
  ('WA111', 422, 'waitress', 'note too long',
   'An order''s note is longer than the limit (1000 characters).',
   '{"length", "limit"}', 'Shorten the note to at most 1000 characters.'),
  ('WA112', 422, 'waitress', 'too many lines',
   'The order would buy more cart lines than the limit (100).',
   '{"cart_id", "lines", "limit"}', 'Name at most 100 cart items per order (cart_item_ids), or remove lines from the cart.'),
  ('WA113', 422, 'waitress', 'total out of range',
   'The order''s total (price × quantity over its lines) is larger than an amount can be.',
   '{"cart_id"}', 'Lower the quantities.'),
  ('WA114', 422, 'waitress', 'too many open lines',
   'The cart already holds the most open lines it may (100): a product not in it yet would start one more. '
   'Adding to a product already in the cart still works.',
   '{"cart_id", "lines", "limit"}',
   'Remove a line (DELETE /carts/items/:id, api.remove_cart_item) or check out part of the cart first; a cart holds '
   'at most 100 open lines.'),
  ('WA115', 422, 'waitress', 'line quantity above the limit',
   'A cart line would hold more units of its product than the limit (10000), by adding or by setting its quantity; '
   'at checkout, a line above it is named.',
   '{"product_id", "quantity", "limit"} or, at checkout, {"cart_id", "cart_item_ids": [...], "limit"}',
   'Keep each line at or below 10000 units: lower the quantity (PATCH /carts/items/:id, api.update_cart_item).'),
  ('22023', 422, 'postgresql', 'invalid argument', 'An argument is out of its range (a quantity below 1, an empty reason, ...).', null, null),
  ('22001', 422, 'postgresql', 'string too long', 'A text value is longer than its column allows.', null, null),
  ('22003', 422, 'postgresql', 'number out of range', 'A number does not fit its column.', null, null),
  ('22021', 400, 'postgresql', 'invalid byte sequence', 'Text with a character PostgreSQL cannot store (NUL).', null, null),
  ('22P02', 400, 'postgresql', 'invalid text representation', 'A value is not of its type.', null, null),
  ('22P05', 400, 'postgresql', 'untranslatable character', 'Text with a character the database encoding lacks.', null, null),
  ('23502', 422, 'postgresql', 'missing value', 'A required value is null.', null, null),
  ('23503', 422, 'postgresql', 'unknown reference', 'A value refers to a row that does not exist.', null, null),
  ('23505', 409, 'postgresql', 'duplicate', 'A value that must be unique already exists.', null, null),
  ('23514', 422, 'postgresql', 'schema rule', 'A value breaks a named check constraint of the schema.', null, null),
  ('25006', 503, 'postgresql', 'read-only server', 'The connection reached a standby; the service reconnects to the primary.', null, null),
  ('40001', 503, 'postgresql', 'serialization failure', 'Transient: the statement may simply run again.', null, null),
  ('40P01', 503, 'postgresql', 'deadlock', 'Transient; none is expected, since every function locks in one order.', null, null),
  ('53300', 503, 'postgresql', 'too many connections', 'The server has no connection slot left.', null, null),
  ('55P03', 503, 'postgresql', 'lock timeout', 'A lock wait ran into lock_timeout.', null, null),
  ('57014', 503, 'postgresql', 'statement timeout', 'A statement ran into statement_timeout, or was cancelled.', null, null),
  ('57P01', 503, 'postgresql', 'server shutting down', 'An administrator ended the session or the server is stopping.', null, null),
  ('57P02', 503, 'postgresql', 'crash shutdown', 'The server is restarting after a crash.', null, null),
  ('57P03', 503, 'postgresql', 'server starting', 'The server does not accept connections yet.', null, null);

-- A refusal as a value: {code, message, detail, hint}, the hint from the table.
-- The batch checkout answers each request with one; raise() turns one into an error.
create function waitress.refusal(p_code text, p_message text, p_detail jsonb default null, p_hint text default null)
returns jsonb
language plpgsql
stable
set search_path = ''
as $$
declare
  v_hint text;
begin
  select r.hint into v_hint from waitress.refusals r where r.code = p_code and r.source = 'waitress';
  if not found then
    raise exception 'refusal code % is not in waitress.refusals', p_code;
  end if;
  return jsonb_build_object('code', p_code, 'message', p_message, 'detail', p_detail, 'hint', coalesce(p_hint, v_hint));
end
$$;

comment on function waitress.refusal(text, text, jsonb, text) is
  'A refusal as a JSON value {code, message, detail, hint}; the hint is the table''s unless p_hint is given.';

create function waitress.raise(p_refusal jsonb) returns void
language plpgsql
set search_path = ''
as $$
begin
  raise exception using
    errcode = p_refusal->>'code',
    message = p_refusal->>'message',
    detail = coalesce((p_refusal->'detail')::text, ''),
    hint = coalesce(p_refusal->>'hint', '');
end
$$;

comment on function waitress.raise(jsonb) is 'Raises a refusal made by waitress.refusal(): SQLSTATE, message, JSON DETAIL and HINT.';

create function waitress.refuse(p_code text, p_message text, p_detail jsonb default null, p_hint text default null)
returns void
language plpgsql
set search_path = ''
as $$
begin
  perform waitress.raise(waitress.refusal(p_code, p_message, p_detail, p_hint));
end
$$;

comment on function waitress.refuse(text, text, jsonb, text) is 'Raises a refusal: waitress.raise(waitress.refusal(...)).';

-- migrate:down
set local role waitress_owner;
drop function if exists waitress.refuse(text, text, jsonb, text);
drop function if exists waitress.raise(jsonb);
drop function if exists waitress.refusal(text, text, jsonb, text);
drop function if exists waitress.limits();
drop table if exists waitress.refusals;
