-- function upcasters run as the role that registered them, in a
-- security-restricted operation: a reader (a superuser too) lends them no
-- privilege, and a temporary function cannot be registered
SET client_min_messages = warning;
DROP EXTENSION IF EXISTS ledger CASCADE;
DROP ROLE IF EXISTS regress_up_admin;
DROP ROLE IF EXISTS regress_up_reader;
DROP ROLE IF EXISTS regress_up_deputy;
RESET client_min_messages;
CREATE EXTENSION ledger;
CREATE FUNCTION pg_temp.err(q text) RETURNS text LANGUAGE plpgsql AS $$
BEGIN
	EXECUTE q;
	RETURN 'ok';
EXCEPTION WHEN OTHERS THEN
	RETURN SQLSTATE || ': ' || SQLERRM;
END $$;

CREATE ROLE regress_up_admin IN ROLE ledger_admin;
CREATE ROLE regress_up_reader IN ROLE ledger_reader;
CREATE ROLE regress_up_deputy;
GRANT CREATE ON SCHEMA public TO regress_up_admin, regress_up_deputy;

-- the admin's own function records who runs it
SET ROLE regress_up_admin;
CREATE FUNCTION public.up_whoami(p jsonb) RETURNS jsonb LANGUAGE sql
	AS $$ SELECT p || jsonb_build_object('ran_as', current_user::text,
	                                     'superuser', (SELECT rolsuper FROM pg_roles WHERE rolname = current_user)) $$;
REVOKE EXECUTE ON FUNCTION public.up_whoami(jsonb) FROM PUBLIC;
SELECT ledger.append('trojan', '{"a": 1}', schema_version => 1) > 0 AS appended;
SELECT ledger.register_upcaster('trojan', 1, 2, fn => 'public.up_whoami(jsonb)');
SELECT ledger.set_schema_version('trojan', 2);
RESET ROLE;

SELECT registered_by FROM ledger.upcasters WHERE streams = 'trojan';

-- a superuser reading the stream does not run the admin's code as superuser
SELECT payload->>'ran_as' AS ran_as, payload->>'superuser' AS superuser FROM ledger.read('trojan');
SELECT payload->>'ran_as' AS ran_as FROM ledger.get('trojan', 1);
-- a reader without EXECUTE on the function reads it just the same
SET ROLE regress_up_reader;
SELECT payload->>'ran_as' AS ran_as FROM ledger.read('trojan');
SELECT payload->>'ran_as' AS ran_as FROM ledger.read_all() WHERE stream = 'trojan';
RESET ROLE;

-- the upcaster cannot change the session: it runs restricted
CREATE FUNCTION public.up_sneaky(p jsonb) RETURNS jsonb LANGUAGE plpgsql AS $$
BEGIN
	CREATE TEMP TABLE up_sneaky_t (x int);
	RETURN p;
END $$;
ALTER FUNCTION public.up_sneaky(jsonb) OWNER TO regress_up_admin;
SET ROLE regress_up_admin;
SELECT ledger.register_upcaster('trojan', 1, 2, fn => 'public.up_sneaky(jsonb)');
RESET ROLE;
SELECT pg_temp.err($$SELECT * FROM ledger.read('trojan')$$);

-- a setting the upcaster changes does not outlive it
CREATE FUNCTION public.up_setter(p jsonb) RETURNS jsonb LANGUAGE plpgsql AS $$
BEGIN
	PERFORM set_config('work_mem', '77kB', false);
	RETURN p;
END $$;
ALTER FUNCTION public.up_setter(jsonb) OWNER TO regress_up_admin;
SET ROLE regress_up_admin;
SELECT ledger.register_upcaster('trojan', 1, 2, fn => 'public.up_setter(jsonb)');
RESET ROLE;
SET work_mem = '4MB';
SELECT count(*) FROM ledger.read('trojan');
SHOW work_mem;

-- the registrant must be allowed to execute the function
SET ROLE regress_up_admin;
SELECT regexp_replace(pg_temp.err($$SELECT ledger.register_upcaster('trojan', 1, 2, fn => 'pg_temp.err(text)')$$), 'pg_temp_\d+', 'pg_temp_N');
RESET ROLE;
CREATE FUNCTION public.up_private(p jsonb) RETURNS jsonb LANGUAGE sql AS $$ SELECT p $$;
REVOKE EXECUTE ON FUNCTION public.up_private(jsonb) FROM PUBLIC;
SET ROLE regress_up_admin;
SELECT pg_temp.err($$SELECT ledger.register_upcaster('trojan', 1, 2, fn => 'public.up_private(jsonb)')$$);
RESET ROLE;

-- and must keep that right: revoked later, reads fail with 42501
SET ROLE regress_up_admin;
SELECT ledger.register_upcaster('trojan', 1, 2, fn => 'public.up_whoami(jsonb)');
RESET ROLE;
GRANT EXECUTE ON FUNCTION public.up_private(jsonb) TO regress_up_admin;
SET ROLE regress_up_admin;
SELECT ledger.register_upcaster('trojan', 1, 2, fn => 'public.up_private(jsonb)');
RESET ROLE;
REVOKE EXECUTE ON FUNCTION public.up_private(jsonb) FROM regress_up_admin;
SELECT pg_temp.err($$SELECT * FROM ledger.read('trojan')$$);

-- a function in a temporary schema is refused
CREATE FUNCTION pg_temp.up_evil(p jsonb) RETURNS jsonb LANGUAGE sql AS $$ SELECT p $$;
SELECT regexp_replace(pg_temp.err($$SELECT ledger.register_upcaster('trojan', 1, 2, fn => 'pg_temp.up_evil(jsonb)')$$), 'pg_temp_\d+', 'pg_temp_N');

-- inside another role's SECURITY DEFINER function, the registrant is that
-- role (current_user), not the session user
CREATE FUNCTION public.up_deputy_fn(p jsonb) RETURNS jsonb LANGUAGE sql AS $$ SELECT p || '{"deputy": true}' $$;
ALTER FUNCTION public.up_deputy_fn(jsonb) OWNER TO regress_up_deputy;
CREATE FUNCTION public.up_deputy_register() RETURNS void LANGUAGE sql SECURITY DEFINER
	AS $$ SELECT ledger.register_upcaster('deputy', 1, 2, fn => 'public.up_deputy_fn(jsonb)') $$;
GRANT ledger_admin TO regress_up_deputy;
ALTER FUNCTION public.up_deputy_register() OWNER TO regress_up_deputy;
SELECT public.up_deputy_register();
SELECT registered_by FROM ledger.upcasters WHERE streams = 'deputy';

-- without ledger_admin nobody registers anything
SET ROLE regress_up_reader;
SELECT pg_temp.err($$SELECT ledger.register_upcaster('trojan', 1, 2, fn => 'public.up_whoami(jsonb)')$$);
RESET ROLE;

DROP EXTENSION ledger CASCADE;
-- the extension's schema goes with it, so CREATE EXTENSION works again
SELECT count(*) AS ledger_schemas FROM pg_namespace WHERE nspname = 'ledger';
DROP FUNCTION public.up_whoami(jsonb), public.up_sneaky(jsonb), public.up_setter(jsonb),
	public.up_private(jsonb), public.up_deputy_fn(jsonb), public.up_deputy_register();
REVOKE CREATE ON SCHEMA public FROM regress_up_admin, regress_up_deputy;
DROP ROLE regress_up_admin;
DROP ROLE regress_up_reader;
DROP ROLE regress_up_deputy;
