-- decoding: the logical decoding output plugin (src/decoder.c)
--
-- Volatile fields (xid, lsn, commit_time, created_at) are dropped, ids are
-- shown relative to an id taken at the start, and transactions are numbered
-- in the order they appear in the output.  Only lines for this test's
-- streams ('dec-*') are looked at: the background worker may trim other
-- tests' streams meanwhile.
SET client_min_messages = warning;
CREATE EXTENSION IF NOT EXISTS ledger;
RESET client_min_messages;
\set VERBOSITY terse

SELECT 'init' FROM pg_create_logical_replication_slot('regress_slot', 'ledger');

-- Fetch (or peek at) the slot's changes as stable jsonb lines.
CREATE FUNCTION decoding_changes(base bigint, peek boolean,
								 VARIADIC options text[] DEFAULT '{}')
RETURNS TABLE(txn bigint, line jsonb)
LANGUAGE plpgsql AS $$
BEGIN
	RETURN QUERY EXECUTE format($q$
		WITH c AS (
			SELECT n, data::jsonb AS j
			FROM %I('regress_slot', NULL, NULL, VARIADIC $2)
				WITH ORDINALITY AS c(l, x, data, n)
			WHERE data::jsonb->>'stream' LIKE 'dec-%%'
		), f AS (
			SELECT n, j, min(n) OVER (PARTITION BY j->'xid') AS first FROM c
		)
		SELECT dense_rank() OVER (ORDER BY first),
			(j - '{xid,lsn,commit_time,created_at}'::text[])
			|| CASE WHEN j ? 'id' THEN jsonb_build_object('id',
					(j->>'id')::bigint - $1) ELSE '{}' END
			|| CASE WHEN j ? 'before_id' THEN jsonb_build_object('before_id',
					(j->>'before_id')::bigint - $1) ELSE '{}' END
		FROM f ORDER BY n$q$,
		CASE WHEN peek THEN 'pg_logical_slot_peek_changes'
			ELSE 'pg_logical_slot_get_changes' END)
	USING base, options;
END
$$;

-- The ids below are relative to this one.
SELECT ledger.append('dec-base', '{}') AS base \gset
SELECT count(*) FROM pg_logical_slot_get_changes('regress_slot', NULL, NULL)
WHERE data::jsonb->>'stream' LIKE 'dec-%';

-- Single appends, a multi-append transaction, a batch, a duplicate.
SELECT ledger.append('dec-a', '{"n": 1}', order_key => 'k1',
					 dedup_key => 'd1', metadata => '{"m": "v"}',
					 tags => '{t1,t2}') - :base AS id;
BEGIN;
SELECT ledger.append('dec-a', '{"n": 2}') - :base AS id;
SELECT ledger.append('dec-b', '{"n": 3}') - :base AS id;
SELECT ledger.append('dec-a', '{"n": 4}') - :base AS id;
COMMIT;
SELECT ord, id - :base AS id, seq, duplicate
FROM ledger.append_batch('dec-b',
	'[{"payload": {"n": 5}}, {"payload": {"n": 6}, "dedup_key": "d6"},
	  {"payload": {"n": 7}, "tags": ["x"]}]'::jsonb);
-- duplicate: no new entry, no line
SELECT ledger.append('dec-a', '{"n": 99}', dedup_key => 'd1') - :base AS id;
SELECT * FROM decoding_changes(:base, false);

-- Rolled back transactions and subtransactions write nothing.
BEGIN;
SELECT ledger.append('dec-a', '{"rolled": "back"}') > 0 AS appended;
ROLLBACK;
BEGIN;
SELECT ledger.append('dec-c', '{"kept": 1}') > 0 AS appended;
SAVEPOINT s1;
SELECT ledger.append('dec-c', '{"rolled": "back"}') > 0 AS appended;
ROLLBACK TO SAVEPOINT s1;
SELECT ledger.append('dec-c', '{"kept": 2}') > 0 AS appended;
COMMIT;
SELECT txn, line - 'id' AS line FROM decoding_changes(:base, false);

-- Other tables, even ones named like ours, write nothing.
CREATE TABLE public.entries (id bigint, payload jsonb);
CREATE TABLE public.streams (stream_id integer, name text);
INSERT INTO public.streams VALUES (1, 'dec-a');
INSERT INTO public.entries VALUES (1, '{}');
UPDATE public.entries SET payload = '{"x": 1}';
DELETE FROM public.entries;
DROP TABLE public.entries, public.streams;
SELECT count(*) FROM pg_logical_slot_get_changes('regress_slot', NULL, NULL)
WHERE data::jsonb->>'stream' LIKE 'dec-%';

-- Commit order across concurrent sessions (a later id committing first) is
-- covered by test/decoding_recvlogical.sh; one session commits in order.

-- A payload with quotes, backslashes, control characters and non-ASCII
-- text round-trips exactly; the raw line shows the escaping.
SELECT ledger.append('dec-"quoted"\stream',
	jsonb_build_object('q', 'say "hi"', 'b', 'back\slash', 'c',
					   E'tab\there\nnew\u0001line\u001f',
					   'u', 'héllo wörld ☃ 日本 😀', E'k\"ey', '\\')) - :base AS id;
SELECT regexp_replace(data,
		'"(xid|lsn|id|created_at)":("[^"]*"|[0-9]+)', '"\1":…', 'g') AS data
FROM pg_logical_slot_peek_changes('regress_slot', NULL, NULL)
WHERE data::jsonb->>'stream' LIKE 'dec-%';
SELECT data::jsonb->'payload' = jsonb_build_object('q', 'say "hi"',
		'b', 'back\slash', 'c', E'tab\there\nnew\u0001line\u001f',
		'u', 'héllo wörld ☃ 日本 😀', E'k\"ey', '\\') AS payload_round_trips,
	data::jsonb->>'stream' = 'dec-"quoted"\stream' AS stream_round_trips
FROM pg_logical_slot_get_changes('regress_slot', NULL, NULL)
WHERE data::jsonb->>'stream' LIKE 'dec-%';

-- Schema versions: payloads are emitted as stored, with their version.
SELECT ledger.set_schema_version('dec-v', 2);
SELECT ledger.append('dec-v', '{"v": 2}') > 0 AS appended;
SELECT ledger.append('dec-v', '{"v": 1}', schema_version => 1) > 0 AS appended;
SELECT line->'payload' AS payload, line->'schema_version' AS schema_version
FROM decoding_changes(:base, false);

-- Trim: one line per call, not one per deleted row; a trim that deletes
-- nothing writes nothing.
SELECT ledger.trim('dec-b', :base + 6) AS deleted;
SELECT ledger.trim('dec-b', :base + 6) AS deleted;
SELECT * FROM decoding_changes(:base, false);

-- Tags and annotations: nothing unless include-annotations is on.
SELECT ledger.set_tags('dec-a', :base + 2, '{new,"t \"q\""}');
SELECT ledger.set_annotations('dec-a', :base + 2, '{"note": "hello"}');
SELECT * FROM decoding_changes(:base, true);
SELECT * FROM decoding_changes(:base, false, 'include-annotations', 'on');

-- The streams option: exact name, prefix, everything.
SELECT ledger.append('dec-orders-1', '{"o": 1}') > 0 AS appended;
SELECT ledger.append('dec-orders-2', '{"o": 2}') > 0 AS appended;
SELECT ledger.append('dec-orders', '{"o": 3}') > 0 AS appended;
SELECT ledger.append('dec-other', '{"o": 4}') > 0 AS appended;
SELECT ledger.trim('dec-orders-2', :base + 1000000) AS deleted;
SELECT line->'kind' AS kind, line->'stream' AS stream
FROM decoding_changes(:base, true, 'streams', 'dec-orders-1');
SELECT line->'kind' AS kind, line->'stream' AS stream
FROM decoding_changes(:base, true, 'streams', 'dec-orders-*');
SELECT line->'kind' AS kind, line->'stream' AS stream
FROM decoding_changes(:base, true, 'streams', 'dec-orders*');
SELECT line->'kind' AS kind, line->'stream' AS stream
FROM decoding_changes(:base, true, 'streams', '*');

-- include-xids / include-lsn / include-timestamp / format-version: which
-- keys appear (default: xid and lsn, no commit_time).
SELECT array_agg(k ORDER BY k) AS keys
FROM pg_logical_slot_peek_changes('regress_slot', NULL, NULL, 'streams', 'dec-other'),
	jsonb_object_keys(data::jsonb) AS k;
SELECT array_agg(k ORDER BY k) AS keys
FROM pg_logical_slot_peek_changes('regress_slot', NULL, NULL, 'streams', 'dec-other',
	'include-xids', 'off', 'include-lsn', 'false', 'include-timestamp', 'on',
	'format-version', '1'),
	jsonb_object_keys(data::jsonb) AS k;
SELECT (data::jsonb->>'xid')::xid = x AS xid_matches,
	(data::jsonb->>'lsn')::pg_lsn > l AS lsn_after_change,
	(data::jsonb->>'commit_time')::timestamptz
		>= (data::jsonb->>'created_at')::timestamptz AS commit_after_create
FROM pg_logical_slot_peek_changes('regress_slot', NULL, NULL, 'streams', 'dec-other',
	'include-timestamp', 'yes') AS c(l, x, data);
SELECT count(*) FROM pg_logical_slot_get_changes('regress_slot', NULL, NULL)
WHERE data::jsonb->>'stream' LIKE 'dec-%';

-- Bad options.
SELECT * FROM pg_logical_slot_peek_changes('regress_slot', NULL, NULL, 'no-such-option', 'on');
SELECT * FROM pg_logical_slot_peek_changes('regress_slot', NULL, NULL, 'include-xids', 'maybe');
SELECT * FROM pg_logical_slot_peek_changes('regress_slot', NULL, NULL, 'include-annotations', '');
SELECT * FROM pg_logical_slot_peek_changes('regress_slot', NULL, NULL, 'format-version', '2');
SELECT * FROM pg_logical_slot_peek_changes('regress_slot', NULL, NULL, 'format-version', '');
SELECT * FROM pg_logical_slot_peek_changes('regress_slot', NULL, NULL, 'streams', '');
SELECT * FROM pg_logical_slot_peek_changes('regress_slot', NULL, NULL, 'streams', E'a\nb');
SELECT * FROM pg_logical_slot_peek_changes('regress_slot', NULL, NULL, 'streams', repeat('x', 256));

-- Messages under ledger's prefixes that ledger did not write are skipped:
-- anyone may call pg_logical_emit_message().
SELECT 'emitted' FROM pg_logical_emit_message(true, 'ledger.trim',
	'{"stream": "dec-a", "before_id": 1, "deleted": 0}');
SELECT 'emitted' FROM pg_logical_emit_message(true, 'ledger.annotate',
	'{"stream": "dec-a", "id": 1, "tags": [], "annotations": {}}');
SELECT 'emitted' FROM pg_logical_emit_message(false, 'ledger.trim',
	'{"stream": "dec-a", "before_id": 1, "deleted": 0}');
SELECT 'emitted' FROM pg_logical_emit_message(true, 'other.prefix', 'x');
SELECT * FROM decoding_changes(:base, false, 'include-annotations', 'on');

SELECT pg_drop_replication_slot('regress_slot');
DROP FUNCTION decoding_changes(bigint, boolean, text[]);
