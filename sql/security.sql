-- roles, grants, SECURITY DEFINER, and entries that nobody can change directly
SET client_min_messages = warning;
DROP EXTENSION IF EXISTS ledger CASCADE;
RESET client_min_messages;
CREATE EXTENSION ledger;
CREATE FUNCTION pg_temp.err(q text) RETURNS text LANGUAGE plpgsql AS $$
BEGIN
	EXECUTE q;
	RETURN 'ok';
EXCEPTION WHEN OTHERS THEN
	RETURN SQLSTATE || ': ' || SQLERRM;
END $$;

DROP ROLE IF EXISTS regress_ledger_nobody;
DROP ROLE IF EXISTS regress_ledger_r;
DROP ROLE IF EXISTS regress_ledger_w;
DROP ROLE IF EXISTS regress_ledger_a;
CREATE ROLE regress_ledger_nobody;
CREATE ROLE regress_ledger_r IN ROLE ledger_reader;
CREATE ROLE regress_ledger_w IN ROLE ledger_writer;
CREATE ROLE regress_ledger_a IN ROLE ledger_admin;

-- every function that touches the tables pins search_path with pg_catalog
-- first, and is SECURITY DEFINER -- but for those that must check their
-- caller's privileges as current_user (they become the owner only for their
-- own table access); redact_target, pattern_rank and tag_keys (an index
-- expression) touch no table
SELECT p.proname, p.prosecdef, p.proconfig
  FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
 WHERE n.nspname = 'ledger' AND p.prorettype <> 'trigger'::regtype
   AND p.proname NOT IN ('redact_target', 'pattern_rank', 'tag_keys')
   AND ((NOT p.prosecdef AND p.proname NOT IN ('register_upcaster', 'create_sink'))
		OR p.proconfig IS NULL
		OR NOT 'search_path=pg_catalog, ledger, pg_temp' = ANY (p.proconfig));
SELECT p.oid::regprocedure AS invoker_function FROM pg_proc p
 WHERE p.pronamespace = 'ledger'::regnamespace AND NOT p.prosecdef
   AND p.prorettype <> 'trigger'::regtype ORDER BY 1;

-- PUBLIC executes nothing and reads no table
SELECT p.oid::regprocedure AS public_can_execute
  FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
 WHERE n.nspname = 'ledger' AND has_function_privilege('regress_ledger_nobody', p.oid, 'EXECUTE');
SELECT c.relname, has_table_privilege('regress_ledger_nobody', c.oid, 'SELECT') AS sel,
	   has_table_privilege('regress_ledger_nobody', c.oid, 'INSERT,UPDATE,DELETE,TRUNCATE') AS write
  FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
 WHERE n.nspname = 'ledger' AND c.relkind IN ('r', 'v', 'S')
 ORDER BY 1;

-- the EXECUTE ladder
SELECT f AS function,
	   has_function_privilege('regress_ledger_r', f, 'EXECUTE') AS reader,
	   has_function_privilege('regress_ledger_w', f, 'EXECUTE') AS writer,
	   has_function_privilege('regress_ledger_a', f, 'EXECUTE') AS admin
  FROM (SELECT p.oid::regprocedure AS f FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
		 WHERE n.nspname = 'ledger' AND p.prorettype <> 'trigger'::regtype) s
 ORDER BY f::text;

-- roles in action
SELECT ledger.append('sec', '{"a": 1}') AS id \gset
SET ROLE regress_ledger_nobody;
SELECT pg_temp.err($$SELECT * FROM ledger.read('sec')$$);
SELECT pg_temp.err($$SELECT * FROM ledger.entries$$);
RESET ROLE;
SET ROLE regress_ledger_r;
SELECT seq, payload FROM ledger.read('sec');
SELECT ledger.count('sec');
SELECT pg_temp.err($$SELECT ledger.append('sec', '{}')$$);
SELECT pg_temp.err($$SELECT * FROM ledger.entries$$);
SELECT count(*) FROM ledger.upcasters;
RESET ROLE;
SET ROLE regress_ledger_w;
SELECT ledger.append('sec', '{"a": 2}') > 0 AS writer_appends;
SELECT ledger.set_tags('sec', :id, '{w}');
SELECT pg_temp.err($$SELECT ledger.trim('sec', 1000)$$);
SELECT pg_temp.err($$SELECT ledger.set_schema_version('sec', 2)$$);
SELECT pg_temp.err($$UPDATE ledger.entries SET payload = '{}'$$);
RESET ROLE;
SET ROLE regress_ledger_a;
SELECT ledger.set_retention('sec', max_entries => 10);
SELECT count(*) > 0 FROM ledger.health();
RESET ROLE;

-- not even a superuser changes entries directly
SELECT pg_temp.err($$UPDATE ledger.entries SET payload = '{"forged": true}'$$);
SELECT pg_temp.err($$UPDATE ledger.entries SET tags = '{}'$$);
SELECT pg_temp.err($$DELETE FROM ledger.entries$$);
SELECT pg_temp.err($$TRUNCATE ledger.entries$$);
SET session_replication_role = replica;
SELECT pg_temp.err($$DELETE FROM ledger.entries$$);
RESET session_replication_role;
SELECT seq, payload, tags FROM ledger.read('sec');

DROP ROLE regress_ledger_nobody;
DROP ROLE regress_ledger_r;
DROP ROLE regress_ledger_w;
DROP ROLE regress_ledger_a;
