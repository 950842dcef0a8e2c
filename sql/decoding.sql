-- decoding: the logical decoding output plugin (src/decoder.c)
--
-- Volatile fields (xid, lsn, commit_time, created_at, updated_at) are
-- dropped, ids are shown relative to an id taken at the start, and
-- transactions are numbered in the order they appear in the output.  Only
-- lines for this test's streams ('dec-*') are looked at: the background
-- worker may trim other tests' streams meanwhile.
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
			(j - '{xid,lsn,commit_time,created_at,updated_at}'::text[])
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

-- The error a statement raises, or 'no error'.
CREATE FUNCTION error_of(statement text) RETURNS text
LANGUAGE plpgsql AS $$
BEGIN
	EXECUTE statement;
	RETURN 'no error';
EXCEPTION WHEN OTHERS THEN
	RETURN SQLSTATE || ': ' || SQLERRM;
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

-- Tags and annotations: one line per call, the new tags or the merged
-- annotations, with the entry's updated_at as stored.
SELECT ledger.set_tags('dec-a', :base + 2, '{new,"t \"q\""}');
SELECT ledger.set_annotations('dec-a', :base + 2, '{"note": "hello", "by": "me"}');
SELECT ledger.set_annotations('dec-a', :base + 2, '{"by": null, "k": "v"}');
SELECT * FROM decoding_changes(:base, true);
SELECT bool_and(data::jsonb->>'updated_at'
		= to_char(e.updated_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"+00:00"'))
	AS last_updated_at_as_stored
FROM (SELECT data FROM pg_logical_slot_peek_changes('regress_slot', NULL, NULL)
	  WHERE data::jsonb->>'stream' = 'dec-a' ORDER BY lsn DESC LIMIT 1) c,
	ledger.entries e WHERE e.id = :base + 2;
-- include-annotations off: no such lines
SELECT * FROM decoding_changes(:base, false, 'include-annotations', 'off');

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

-- Keys per option (default: xid and lsn, no commit_time), and the data
-- model's columns on an entry line.
SELECT array_agg(k ORDER BY k) AS keys,
	array_agg(k ORDER BY k) = (SELECT array_agg(c ORDER BY c) FROM (
			SELECT a.attname::text FROM pg_attribute a
			WHERE a.attrelid = 'ledger.entry'::regclass AND a.attnum > 0
			UNION ALL SELECT unnest('{kind,lsn,xid}'::text[])) AS m(c))
		AS keys_are_the_data_model
FROM pg_logical_slot_peek_changes('regress_slot', NULL, NULL, 'streams', 'dec-other'),
	jsonb_object_keys(data::jsonb) AS k;
SELECT array_agg(k ORDER BY k) AS keys
FROM pg_logical_slot_peek_changes('regress_slot', NULL, NULL, 'streams', 'dec-other',
	'include-xids', 'off', 'include-lsn', 'false', 'include-timestamp', 'on',
	'format-version', '2'),
	jsonb_object_keys(data::jsonb) AS k;
SELECT (data::jsonb->>'xid')::xid = x AS xid_matches,
	(data::jsonb->>'lsn')::pg_lsn = l AS lsn_is_the_position,
	(data::jsonb->>'commit_time')::timestamptz
		>= (data::jsonb->>'created_at')::timestamptz AS commit_after_create
FROM pg_logical_slot_peek_changes('regress_slot', NULL, NULL, 'streams', 'dec-other',
	'include-timestamp', 'yes') AS c(l, x, data);
SELECT count(*) FROM pg_logical_slot_get_changes('regress_slot', NULL, NULL)
WHERE data::jsonb->>'stream' LIKE 'dec-%';

-- Timestamps: microseconds, UTC, whatever the session's TimeZone, and equal
-- to the stored values.
SET TimeZone = 'Asia/Kathmandu';
SELECT ledger.append('dec-time', '{}') > 0 AS appended;
SELECT ledger.set_tags('dec-time', (SELECT max(id) FROM ledger.read('dec-time')), '{t}');
SELECT j->>'kind' AS kind,
	j->>'created_at' ~ '^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}\+00:00$' AS created_at_fixed,
	j->>'commit_time' ~ '^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}\+00:00$' AS commit_time_fixed,
	coalesce(j->>'updated_at', 'null') ~ '^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}\+00:00|null)$' AS updated_at_fixed,
	(j->>'created_at')::timestamptz = (SELECT created_at FROM ledger.read('dec-time')) AS created_at_as_stored
FROM pg_logical_slot_get_changes('regress_slot', NULL, NULL,
	'streams', 'dec-time', 'include-timestamp', 'on') AS c(l, x, data),
	LATERAL (SELECT data::jsonb) AS d(j);
RESET TimeZone;

-- include-transaction: a begin and a commit line around each transaction
-- that wrote a line; the commit line counts them.  Lines of other streams
-- (filtered out) frame nothing.
BEGIN;
SELECT ledger.append('dec-f', '{"f": 1}') > 0 AS appended;
SELECT ledger.append('dec-f', '{"f": 2}') > 0 AS appended;
SELECT ledger.set_tags('dec-f', (SELECT max(id) FROM ledger.read('dec-f')), '{x}');
COMMIT;
SELECT ledger.append('dec-g', '{"g": 1}') > 0 AS appended;
SELECT ledger.trim('dec-f', (SELECT min(id) FROM ledger.read('dec-f'))) AS deleted;
SELECT data::jsonb->>'kind' AS kind, data::jsonb->>'stream' AS stream,
	data::jsonb->'changes' AS changes,
	(SELECT array_agg(k ORDER BY k) FROM jsonb_object_keys(data::jsonb) k) AS keys
FROM pg_logical_slot_peek_changes('regress_slot', NULL, NULL, 'streams', 'dec-f',
	'include-transaction', 'on');

-- Positions.  With framing, every line of a transaction but the commit line
-- carries the start of the commit record; the commit line its end, which is
-- also where the next transaction's lines start at the earliest.  Without
-- framing the last line of a transaction carries the end.  The protocol
-- position of each line (the lsn column here) is its "lsn".
CREATE TEMP TABLE framed AS
SELECT n, l, data::jsonb AS j
FROM pg_logical_slot_peek_changes('regress_slot', NULL, NULL, 'streams', 'dec-f',
	'include-transaction', 'on') WITH ORDINALITY AS c(l, x, data, n);
CREATE TEMP TABLE unframed AS
SELECT n, l, data::jsonb AS j
FROM pg_logical_slot_peek_changes('regress_slot', NULL, NULL, 'streams', 'dec-f')
	WITH ORDINALITY AS c(l, x, data, n);
SELECT bool_and((j->>'lsn')::pg_lsn = l) AS lsn_is_the_position FROM framed;
SELECT bool_and((j->>'lsn')::pg_lsn = l) AS lsn_is_the_position FROM unframed;
SELECT f.j->>'kind' AS kind,
	(f.j->>'lsn')::pg_lsn = (SELECT (b.j->>'lsn')::pg_lsn FROM framed b
		WHERE b.j->>'kind' = 'begin' AND b.j->'xid' = f.j->'xid') AS lsn_is_begins,
	(f.j->>'lsn')::pg_lsn = (SELECT (c.j->>'lsn')::pg_lsn FROM framed c
		WHERE c.j->>'kind' = 'commit' AND c.j->'xid' = f.j->'xid') AS lsn_is_commits
FROM framed f ORDER BY n;
SELECT u.j->>'kind' AS kind,
	(u.j->>'lsn')::pg_lsn = (SELECT (c.j->>'lsn')::pg_lsn FROM framed c
		WHERE c.j->>'kind' = 'commit' AND c.j->'xid' = u.j->'xid') AS lsn_is_commits
FROM unframed u ORDER BY n;
SELECT bool_and((c.j->>'lsn')::pg_lsn > (b.j->>'lsn')::pg_lsn) AS commit_after_begin,
	bool_and(c.j->>'commit_time' = b.j->>'commit_time') AS same_commit_time
FROM framed b JOIN framed c ON c.j->'xid' = b.j->'xid'
WHERE b.j->>'kind' = 'begin' AND c.j->>'kind' = 'commit';

-- Confirming a line's lsn resumes after the last whole transaction: the
-- commit line's (or, unframed, the last line's) skips its transaction and
-- loses nothing after it; any other line's re-sends its transaction whole.
-- A slot advanced to a position is what a consumer confirming it leaves.
SELECT 'init' FROM pg_create_logical_replication_slot('regress_resume', 'ledger');
BEGIN;
SELECT ledger.append('dec-r', '{"t": 1, "n": 1}') > 0 AS appended;
SELECT ledger.append('dec-r', '{"t": 1, "n": 2}') > 0 AS appended;
COMMIT;
BEGIN;
SELECT ledger.append('dec-r', '{"t": 2, "n": 1}') > 0 AS appended;
SELECT ledger.append('dec-r', '{"t": 2, "n": 2}') > 0 AS appended;
COMMIT;
CREATE TEMP TABLE resume AS
SELECT n, data::jsonb AS j
FROM pg_logical_slot_peek_changes('regress_resume', NULL, NULL, 'streams', 'dec-r',
	'include-transaction', 'on') WITH ORDINALITY AS c(l, x, data, n);
-- Confirm the lsn of the last line of this kind in transaction t, then
-- show what a reconnect gets.
CREATE FUNCTION resumed_from(confirmed_kind text, t int, options text[] DEFAULT '{}')
RETURNS TABLE(kind text, payload jsonb)
LANGUAGE plpgsql AS $$
DECLARE
	confirmed pg_lsn;
BEGIN
	SELECT (r.j->>'lsn')::pg_lsn INTO confirmed FROM resume r
	WHERE r.j->>'kind' = confirmed_kind
	  AND (r.j->'xid') = (SELECT r2.j->'xid' FROM resume r2
						  WHERE (r2.j->'payload'->>'t')::int = t LIMIT 1)
	ORDER BY r.n DESC LIMIT 1;
	PERFORM pg_replication_slot_advance('regress_resume', confirmed);
	RETURN QUERY SELECT data::jsonb->>'kind', data::jsonb->'payload'
		FROM pg_logical_slot_peek_changes('regress_resume', NULL, NULL,
			VARIADIC '{streams,dec-r}'::text[] || options);
END
$$;
SELECT * FROM resumed_from('begin', 1);
SELECT * FROM resumed_from('entry', 1, '{include-transaction,on}');
SELECT * FROM resumed_from('commit', 1, '{include-transaction,on}');
SELECT * FROM resumed_from('begin', 2);
SELECT * FROM resumed_from('entry', 2);
SELECT * FROM resumed_from('commit', 2);
SELECT pg_drop_replication_slot('regress_resume');

-- Format version 1 is what ledger 0.1 wrote: kinds entry, trim and (with
-- include-annotations) annotate; every lsn the start of the commit record,
-- which confirmed re-sends the transaction; no annotations or updated_at on
-- entry lines; no framing; timestamps as to_json() prints them.
SET TimeZone = 'America/New_York';
SELECT ledger.append('dec-v1', '{"one": 1}', tags => '{a}') > 0 AS appended;
SELECT ledger.set_tags('dec-v1', (SELECT max(id) FROM ledger.read('dec-v1')), '{b}');
SELECT ledger.trim('dec-v1', (SELECT max(id) FROM ledger.read('dec-v1'))) AS deleted;
SELECT line FROM decoding_changes(:base, true, 'format-version', '1');
SELECT line FROM decoding_changes(:base, true, 'format-version', '1',
	'include-annotations', 'on');
SELECT data::jsonb->>'kind' AS kind,
	(data::jsonb->>'lsn')::pg_lsn >= l AS lsn_not_before_position,
	data::jsonb->>'created_at' LIKE '%-05:00' OR data::jsonb->>'created_at' LIKE '%-04:00'
		AS created_at_in_session_zone
FROM pg_logical_slot_peek_changes('regress_slot', NULL, NULL, 'streams', 'dec-v1',
	'format-version', '1') AS c(l, x, data);
RESET TimeZone;
SELECT * FROM pg_logical_slot_peek_changes('regress_slot', NULL, NULL,
	'format-version', '1', 'include-transaction', 'on');
SELECT count(*) FROM pg_logical_slot_get_changes('regress_slot', NULL, NULL)
WHERE data::jsonb->>'stream' LIKE 'dec-%';

-- Stream names come from ledger.stream_names under the historic snapshot,
-- not from the transaction touching the stream's ledger.streams row.  Each
-- pg_logical_slot_*_changes call starts with no names cached.  (WAL older
-- than ledger.stream_names: test/t/020_decoding_history.pl.)
-- A tag change touches only ledger.entries:
SELECT ledger.append('dec-untouched', '{"n": 1}') - :base AS id \gset untouched_
SELECT count(*) FROM pg_logical_slot_get_changes('regress_slot', NULL, NULL)
WHERE data::jsonb->>'stream' LIKE 'dec-%';
SELECT ledger.set_tags('dec-untouched', :base + :untouched_id, '{seen}');
SELECT * FROM decoding_changes(:base, false);
-- An entry written by a transaction that leaves ledger.streams alone (as
-- the direct INSERT of a superuser; seq is reserved beforehand):
UPDATE ledger.streams SET last_seq = last_seq + 1 WHERE name = 'dec-untouched';
SELECT count(*) FROM pg_logical_slot_get_changes('regress_slot', NULL, NULL)
WHERE data::jsonb->>'stream' LIKE 'dec-%';
INSERT INTO ledger.entries (id, seq, created_at, stream_id, schema_version,
	order_key, dedup_key, payload, metadata, tags, annotations)
SELECT nextval('ledger.entries_id_seq'), 2, now(), stream_id, 1, '', '',
	'{"direct": true}', '{}', '{}', '{}'
FROM ledger.streams WHERE name = 'dec-untouched';
SELECT txn, line - 'id' AS line FROM decoding_changes(:base, false);
-- A stream created and appended to in one transaction:
BEGIN;
SELECT ledger.append('dec-new-in-txn', '{"n": 1}') > 0 AS appended;
SELECT ledger.append('dec-new-in-txn', '{"n": 2}') > 0 AS appended;
COMMIT;
SELECT txn, line->'stream' AS stream, line->'seq' AS seq
FROM decoding_changes(:base, false);
SELECT count(*) = 0 AS every_stream_named
FROM ledger.streams s LEFT JOIN ledger.stream_names n USING (stream_id)
WHERE n.name IS DISTINCT FROM s.name;

-- Bad options.
SELECT * FROM pg_logical_slot_peek_changes('regress_slot', NULL, NULL, 'no-such-option', 'on');
SELECT * FROM pg_logical_slot_peek_changes('regress_slot', NULL, NULL, 'include-xids', 'maybe');
SELECT * FROM pg_logical_slot_peek_changes('regress_slot', NULL, NULL, 'include-annotations', '');
SELECT * FROM pg_logical_slot_peek_changes('regress_slot', NULL, NULL, 'include-transaction', 'sometimes');
SELECT * FROM pg_logical_slot_peek_changes('regress_slot', NULL, NULL, 'format-version', '3');
SELECT * FROM pg_logical_slot_peek_changes('regress_slot', NULL, NULL, 'format-version', '');
-- A streams pattern is refused exactly as the SQL functions refuse it.
SELECT p AS pattern,
	error_of(format('SELECT * FROM pg_logical_slot_peek_changes(%L, NULL, NULL, %L, %L)',
					'regress_slot', 'streams', p)) AS decoding,
	error_of(format('SELECT * FROM pg_logical_slot_peek_changes(%L, NULL, NULL, %L, %L)',
					'regress_slot', 'streams', p))
	= error_of(format('SELECT * FROM ledger.read_all(streams => %L)', p)) AS as_read_all
FROM unnest(ARRAY['a*b*', '**', '*a', '', E'a\nb', E'a\u0085b', repeat('x', 256),
				  repeat('x', 255) || '**', repeat('é', 128)]) AS p;
SELECT p AS pattern,
	error_of(format('SELECT * FROM pg_logical_slot_peek_changes(%L, NULL, NULL, %L, %L)',
					'regress_slot', 'streams', p)) AS decoding
FROM unnest(ARRAY['dec-*', '*', repeat('x', 255), repeat('x', 255) || '*']) AS p;

-- Invalid UTF-8 reaches the plugin only from a SQL_ASCII database, where
-- text goes unchecked; it is refused there as read_all refuses it.
\set home_db :DBNAME
CREATE DATABASE regress_decoding_ascii ENCODING 'SQL_ASCII' LC_COLLATE 'C'
	LC_CTYPE 'C' TEMPLATE template0;
\c regress_decoding_ascii
SET client_min_messages = warning;
CREATE EXTENSION ledger;
RESET client_min_messages;
\set VERBOSITY terse
CREATE FUNCTION error_of(statement text) RETURNS text
LANGUAGE plpgsql AS $$
BEGIN
	EXECUTE statement;
	RETURN 'no error';
EXCEPTION WHEN OTHERS THEN
	RETURN SQLSTATE || ': ' || SQLERRM;
END
$$;
SELECT 'init' FROM pg_create_logical_replication_slot('regress_ascii', 'ledger');
SELECT n AS pattern_number,
	error_of(format('SELECT * FROM pg_logical_slot_peek_changes(%L, NULL, NULL, %L, %L)',
					'regress_ascii', 'streams', p)) AS decoding,
	error_of(format('SELECT * FROM pg_logical_slot_peek_changes(%L, NULL, NULL, %L, %L)',
					'regress_ascii', 'streams', p))
	= error_of(format('SELECT * FROM ledger.read_all(streams => %L)', p)) AS as_read_all
FROM unnest(ARRAY[E'a\xffb', E'\xc3(*', E'ok-\xe2\x82', E'\xed\xa0\x80']) WITH ORDINALITY AS u(p, n);
SELECT pg_drop_replication_slot('regress_ascii');
\c :home_db
DROP DATABASE regress_decoding_ascii;
\set VERBOSITY terse

-- Messages under ledger's prefixes that ledger did not write are skipped:
-- anyone may call pg_logical_emit_message().  Not even a real change of the
-- same transaction lends them credit: a forged trim after a real one, an
-- annotate message for another entry than the one the call changed, or a
-- second one for the same entry.
SELECT 'emitted' FROM pg_logical_emit_message(true, 'ledger.trim',
	'{"stream": "dec-a", "before_id": 1, "deleted": 0}');
SELECT 'emitted' FROM pg_logical_emit_message(true, 'ledger.annotate',
	'{"op": "tags", "stream": "dec-a", "id": 1, "tags": [], "annotations": {}}');
SELECT 'emitted' FROM pg_logical_emit_message(false, 'ledger.trim',
	'{"stream": "dec-a", "before_id": 1, "deleted": 0}');
SELECT 'emitted' FROM pg_logical_emit_message(true, 'other.prefix', 'x');
BEGIN;
SELECT ledger.trim('dec-a', :base + 1) AS deleted;
SELECT 'emitted' FROM pg_logical_emit_message(true, 'ledger.trim',
	format('{"stream": "dec-a", "before_id": %s, "deleted": 1}', :base + 1000));
SELECT ledger.set_tags('dec-a', :base + 4, '{real}');
SELECT 'emitted' FROM pg_logical_emit_message(true, 'ledger.annotate',
	format('{"op": "tags", "stream": "dec-a", "id": %s, "tags": ["forged"]}', :base + 4));
COMMIT;
BEGIN;
SELECT ledger.set_annotations('dec-a', :base + 4, '{"real": "yes"}');
SELECT 'emitted' FROM pg_logical_emit_message(true, 'ledger.annotate',
	format('{"op": "annotations", "stream": "dec-a", "id": %s, "annotations": {"forged": "yes"}}', :base + 2));
COMMIT;
SELECT * FROM decoding_changes(:base, false);

SELECT pg_drop_replication_slot('regress_slot');
DROP FUNCTION decoding_changes(bigint, boolean, text[]);
DROP FUNCTION resumed_from(text, int, text[]);
DROP FUNCTION error_of(text);
