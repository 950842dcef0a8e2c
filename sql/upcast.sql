-- schema versions and upcasters
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

-- v1 entries
SELECT ledger.append('orders-eu', '{"customer_name": "Ann", "amount": 10, "legacy": true}') AS e1 \gset
SELECT ledger.append('orders-us', '{"customer_name": "Bob", "amount": 20}') AS e2 \gset
SELECT schema_version FROM ledger.stat('orders-eu');

-- v2 renames and adds a default; v3 removes a field and adds another default
SELECT ledger.register_upcaster('orders-*', 1, 2,
	rename => '{"customer_name": "name"}', defaults => '{"email": "unknown@example.com"}');
SELECT ledger.register_upcaster('orders-*', 2, 3, remove => '{legacy}', defaults => '{"currency": "EUR"}');
SELECT streams, from_version, to_version, rename, defaults, remove, fn FROM ledger.upcasters ORDER BY 1, 2;

-- reading before the version is raised: payloads as stored
SELECT seq, schema_version, payload FROM ledger.read('orders-eu');
SELECT ledger.set_schema_version('orders-*', 3);
SELECT (ledger.stat('orders-eu')).schema_version AS existing, (ledger.stat('orders-new')).schema_version AS future;
-- new appends are stamped with the current version; reads upcast old ones
SELECT ledger.append('orders-eu', '{"name": "Cy", "email": "cy@x", "currency": "USD"}') AS e3 \gset
SELECT seq, schema_version, payload FROM ledger.read('orders-eu');
SELECT seq, schema_version, payload FROM ledger.read('orders-eu', as_version => 2);
SELECT seq, schema_version, payload FROM ledger.read('orders-eu', as_version => 1, "limit" => 1);
SELECT id = :e2 AS same, schema_version, payload FROM ledger.get('orders-us', 1);
SELECT stream, schema_version, payload FROM ledger.read_all();
-- stored payloads were never rewritten
SELECT schema_version, payload FROM ledger.entries ORDER BY id;

-- rename keeps an existing target key
SELECT ledger.append('keep', '{"old": 1, "new": 2}', schema_version => 1) > 0;
SELECT ledger.register_upcaster('keep', 1, 2, rename => '{"old": "new"}', defaults => '{"old": "d"}');
SELECT ledger.set_schema_version('keep', 2);
SELECT payload FROM ledger.read('keep');

-- longest matching pattern wins, for versions and upcasters alike
SELECT ledger.set_schema_version('orders-us', 2);
SELECT ledger.register_upcaster('orders-us', 1, 2, rename => '{"customer_name": "buyer"}');
SELECT schema_version FROM ledger.stat('orders-us');
SELECT schema_version, payload FROM ledger.read('orders-us');
SELECT schema_version, payload FROM ledger.read('orders-eu', "limit" => 1);
-- clearing the exact setting falls back to the prefix
SELECT ledger.set_schema_version('orders-us', NULL);
SELECT schema_version FROM ledger.stat('orders-us');

-- a missing step is 22000 naming stream, entry and step
SELECT ledger.set_schema_version('gap', 1);
SELECT ledger.append('gap', '{"a": 1}') AS gap_id \gset
SELECT ledger.register_upcaster('gap', 2, 3, defaults => '{"b": 2}');
SELECT ledger.set_schema_version('gap', 3);
SELECT pg_temp.err($$SELECT * FROM ledger.read('gap')$$);
SELECT pg_temp.err($$SELECT ledger.get('gap', 1)$$);
SELECT pg_temp.err($$SELECT * FROM ledger.read_all(streams => 'gap')$$);
-- reading below the stored version without a way down is 22023
SELECT ledger.append('gap', '{"a": 3}', schema_version => 3) > 0;
SELECT pg_temp.err(format($$SELECT * FROM ledger.read('gap', as_version => 2, after => %s)$$, :gap_id));
-- by default an entry newer than the stream's version is returned as stored
SELECT ledger.append('newer', '{"a": 1}', schema_version => 5) > 0;
SELECT schema_version, payload FROM ledger.read('newer');
SELECT schema_version, payload FROM ledger.get('newer', 1);
SELECT pg_temp.err($$SELECT * FROM ledger.read('newer', as_version => 4)$$);
-- declarative steps need object payloads
SELECT ledger.append('scalar', '5', schema_version => 1) > 0;
SELECT ledger.register_upcaster('scalar', 1, 2, defaults => '{"x": 1}');
SELECT pg_temp.err($$SELECT * FROM ledger.read('scalar', as_version => 2)$$);

-- function upcasters
CREATE FUNCTION public.add_total(p jsonb) RETURNS jsonb LANGUAGE sql IMMUTABLE
	AS $$ SELECT p || jsonb_build_object('total', (p->>'amount')::numeric * 2) $$;
CREATE FUNCTION public.boom(p jsonb) RETURNS jsonb LANGUAGE plpgsql
	AS $$ BEGIN RAISE EXCEPTION 'upcaster exploded on %', p->>'a' USING ERRCODE = 'P0001'; END $$;
CREATE FUNCTION public.nothing(p jsonb) RETURNS jsonb LANGUAGE sql AS $$ SELECT NULL::jsonb $$;
CREATE FUNCTION public.arrayish(p jsonb) RETURNS jsonb LANGUAGE sql AS $$ SELECT '[1]'::jsonb $$;
CREATE FUNCTION public.wrong_sig(p text) RETURNS jsonb LANGUAGE sql AS $$ SELECT '{}'::jsonb $$;
CREATE FUNCTION public.whoami(p jsonb) RETURNS jsonb LANGUAGE sql AS $$ SELECT p || jsonb_build_object('user', current_user) $$;

SELECT ledger.append('fn', '{"amount": 4}', schema_version => 1) > 0;
SELECT ledger.register_upcaster('fn', 1, 2, fn => 'public.add_total(jsonb)');
SELECT ledger.set_schema_version('fn', 2);
SELECT payload FROM ledger.read('fn');
SELECT ledger.register_upcaster('fn', 1, 2, fn => 'public.boom(jsonb)');
SELECT pg_temp.err($$SELECT * FROM ledger.read('fn')$$);
SELECT ledger.register_upcaster('fn', 1, 2, fn => 'public.nothing(jsonb)');
SELECT pg_temp.err($$SELECT * FROM ledger.read('fn')$$);
SELECT ledger.register_upcaster('fn', 1, 2, fn => 'public.arrayish(jsonb)');
SELECT pg_temp.err($$SELECT * FROM ledger.read('fn')$$);
SELECT pg_temp.err($$SELECT ledger.register_upcaster('fn', 1, 2, fn => 'public.wrong_sig(text)')$$);
SELECT pg_temp.err($$SELECT ledger.register_upcaster('fn', 1, 2, NULL::regprocedure)$$);

-- who a function upcaster runs as: see upcaster_security.sql

-- drop_upcaster
SELECT ledger.drop_upcaster('fn', 1);
SELECT pg_temp.err($$SELECT * FROM ledger.read('fn')$$);
SELECT pg_temp.err($$SELECT ledger.drop_upcaster('fn', 1)$$);

-- untyped literals pick the declarative form
SELECT ledger.register_upcaster('untyped', 1, 2, '{"a": "b"}');
SELECT ledger.register_upcaster('untyped', 2, 3, '{}', '{"c": 1}');
SELECT from_version, to_version, rename, defaults, fn FROM ledger.upcasters WHERE streams = 'untyped' ORDER BY 1;
-- a function upcaster is named or cast
SELECT ledger.register_upcaster('fn', 1, 2, 'public.add_total(jsonb)'::regprocedure);
SELECT payload FROM ledger.read('fn');
SELECT pg_temp.err($$SELECT ledger.register_upcaster('fn', 1, 2, fn => 'public.no_such_fn(jsonb)')$$);

-- bad registrations
SELECT pg_temp.err($$SELECT ledger.register_upcaster('x', 0, 1)$$);
SELECT pg_temp.err($$SELECT ledger.register_upcaster('x', 2, 2)$$);
SELECT pg_temp.err($$SELECT ledger.register_upcaster('x', 1, 2, rename => '{"a": 1}')$$);
SELECT pg_temp.err($$SELECT ledger.register_upcaster('x', 1, 2, defaults => '[]')$$);
SELECT pg_temp.err($$SELECT ledger.register_upcaster('x', 1, 2, remove => ARRAY[NULL]::text[])$$);
SELECT pg_temp.err($$SELECT ledger.register_upcaster('x*y', 1, 2)$$);
SELECT pg_temp.err($$SELECT ledger.set_schema_version('x', 0)$$);
SELECT pg_temp.err($$SELECT ledger.set_schema_version('', 1)$$);

DROP FUNCTION public.add_total(jsonb), public.boom(jsonb), public.nothing(jsonb),
	public.arrayish(jsonb), public.wrong_sig(text), public.whoami(jsonb);
