-- ledger.max_payload_bytes bounds a whole entry -- payload, metadata, tags
-- and annotations together -- at append and at every side-data change; and
-- no error message pastes a whole value (they quote a short prefix)
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
-- the length of an error message, and its SQLSTATE
CREATE FUNCTION pg_temp.errlen(q text) RETURNS text LANGUAGE plpgsql AS $$
BEGIN
	EXECUTE q;
	RETURN 'ok';
EXCEPTION WHEN OTHERS THEN
	RETURN SQLSTATE || ', ' || CASE WHEN length(SQLERRM) < 200 THEN 'short' ELSE length(SQLERRM)::text END;
END $$;

SET ledger.max_payload_bytes = 1000;
SELECT ledger.append('lim', '{"a": 1}') AS small \gset

-- metadata, tags: each alone under the limit, not with the payload
SELECT pg_temp.err($$SELECT ledger.append('lim', jsonb_build_object('p', repeat('p', 600)),
	metadata => jsonb_build_object('m', repeat('m', 600)))$$);
SELECT pg_temp.err($$SELECT ledger.append('lim', '{}', tags => ARRAY(SELECT 't' || g FROM generate_series(1, 400) g))$$);
SELECT pg_temp.err($$SELECT ledger.append('lim', '{}', metadata => jsonb_build_object('m', repeat('m', 2000)))$$);
SELECT pg_temp.err($$SELECT * FROM ledger.append_batch('lim', jsonb_build_array(
	jsonb_build_object('payload', 1),
	jsonb_build_object('payload', 2, 'tags', (SELECT jsonb_agg('t' || g) FROM generate_series(1, 400) g))))$$);
SELECT pg_temp.err($$SELECT * FROM ledger.append_batch('lim',
	ARRAY[ROW('{}', '', '', jsonb_build_object('m', repeat('m', 2000)), '{}')::ledger.append_input])$$);
SELECT count(*) AS entries_after_refused_appends FROM ledger.read('lim');

-- side data: the entry as changed must fit; a refused change changes nothing
SELECT pg_temp.err(format($$SELECT ledger.set_annotations('lim', %s, jsonb_build_object('n', repeat('n', 2000)))$$, :small));
SELECT pg_temp.err(format($$SELECT ledger.set_tags('lim', %s, ARRAY(SELECT 't' || g FROM generate_series(1, 400) g))$$, :small));
SELECT ledger.set_annotations('lim', :small, jsonb_build_object('n', repeat('n', 400)));
SELECT pg_temp.err(format($$SELECT ledger.set_annotations('lim', %s, jsonb_build_object('o', repeat('o', 700)))$$, :small));
SELECT length(annotations->>'n') AS kept, annotations ? 'o' AS grew, tags FROM ledger.read('lim');
-- a deletion always fits
SELECT ledger.set_annotations('lim', :small, '{"n": null}');
SELECT annotations FROM ledger.read('lim');

-- error messages stay short, whatever the value
RESET ledger.max_payload_bytes;
SELECT pg_temp.errlen($$SELECT * FROM ledger.append_batch('big', jsonb_build_object('x', repeat('x', 100000)))$$);
SELECT pg_temp.errlen($$SELECT ledger.append('big', '{}', metadata => jsonb_build_array(repeat('x', 100000)))$$);
SELECT pg_temp.errlen($$SELECT ledger.append('big', '{}', metadata => jsonb_build_object(repeat('k', 100000), 1))$$);
SELECT pg_temp.errlen($$SELECT ledger.register_upcaster('big', 1, 2, defaults => to_jsonb(repeat('x', 100000)))$$);
SELECT pg_temp.errlen($$SELECT ledger.append('big', '{}', metadata => jsonb_build_object('k', repeat('v', 100000), 'n', 1))$$);
SELECT ledger.append('big', '{}') > 0 AS appended;
SELECT pg_temp.errlen(format($$SELECT ledger.set_annotations('big', %s, to_jsonb(repeat('x', 100000)))$$,
	(SELECT max(id) FROM ledger.read('big'))));
CREATE FUNCTION public.huge_array(p jsonb) RETURNS jsonb LANGUAGE sql AS $$ SELECT to_jsonb(ARRAY[repeat('x', 100000)]) $$;
SELECT ledger.register_upcaster('big', 1, 2, fn => 'public.huge_array(jsonb)');
SELECT ledger.set_schema_version('big', 2);
SELECT pg_temp.errlen($$SELECT * FROM ledger.read('big')$$);
-- names are quoted short too
SELECT pg_temp.err($$SELECT ledger.append(repeat('s', 1000), '{}')$$);
SELECT pg_temp.err($$SELECT * FROM ledger.read_all(streams => repeat('s', 300) || '*')$$);

DROP FUNCTION public.huge_array(jsonb);
DROP EXTENSION ledger CASCADE;
