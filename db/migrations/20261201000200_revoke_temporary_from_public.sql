-- migrate:up
-- PostgreSQL lets every role create temporary tables in a new database. The
-- service's login needs none, so it may run no DDL at all, temporary or not.
-- (The database's owner and superusers keep the right; a login that does not
-- own the database gets a warning here and nothing changes.)
do $$
begin
  execute format('revoke temporary on database %I from public', current_database());
end
$$;

-- migrate:down
do $$
begin
  execute format('grant temporary on database %I to public', current_database());
end
$$;
