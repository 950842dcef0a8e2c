-- append, append_batch (both forms), dedup, expected_seq, schema_version
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

-- ids are unique and increasing; seq is 1, 2, 3 per stream
SELECT ledger.append('orders', '{"n": 1}');
SELECT ledger.append('orders', '{"n": 2}', order_key => 'cust-1');
SELECT ledger.append('payments', '{"n": 1}');
SELECT ledger.append('orders', '{"n": 3}', order_key => 'cust-2', metadata => '{"source": "api"}', tags => '{a,b}');
SELECT id, stream, seq, payload, order_key, dedup_key, schema_version, metadata, tags, annotations, updated_at
  FROM ledger.read('orders');
SELECT id, seq FROM ledger.read('payments');

-- any JSON value is a payload
SELECT ledger.append('scalars', '42'), ledger.append('scalars', '"text"'),
       ledger.append('scalars', 'null'), ledger.append('scalars', '[1, {"a": 2}]');
SELECT seq, payload FROM ledger.read('scalars');

-- dedup: the existing id comes back and nothing is written
SELECT ledger.append('orders', '{"n": 4}', dedup_key => 'evt-1') AS first_id \gset
SELECT ledger.append('orders', '{"n": 999}', dedup_key => 'evt-1') = :first_id AS same_id;
SELECT ledger.count('orders');
-- the same key in another stream is independent
SELECT ledger.append('payments', '{"n": 2}', dedup_key => 'evt-1') <> :first_id AS other_stream_new_id;

-- expected_seq
SELECT ledger.append('orders', '{"n": 5}', expected_seq => 4) > 0 AS appended;
SELECT pg_temp.err($$SELECT ledger.append('orders', '{"n": 6}', expected_seq => 3)$$);
SELECT pg_temp.err($$SELECT ledger.append('fresh', '{}', expected_seq => 1)$$);
SELECT ledger.append('fresh', '{}', expected_seq => 0) > 0 AS empty_stream_ok;
SELECT pg_temp.err($$SELECT ledger.append('orders', '{}', expected_seq => -1)$$);
-- a dedup hit returns the existing id whatever expected_seq says (idempotent retry)
SELECT ledger.append('orders', '{"n": 4}', dedup_key => 'evt-1', expected_seq => 4) = :first_id AS retry_ok;
DO $$
DECLARE st text; det text;
BEGIN
	PERFORM ledger.append('orders', '{}', expected_seq => 1);
EXCEPTION WHEN serialization_failure THEN
	GET STACKED DIAGNOSTICS st = RETURNED_SQLSTATE, det = PG_EXCEPTION_DETAIL;
	RAISE NOTICE 'sqlstate % detail %', st, det;
END $$;

-- the failed appends left no trace
SELECT ledger.count('orders'), (ledger.stat('orders')).last_seq;

-- batches: jsonb form
SELECT * FROM ledger.append_batch('batch', '[
	{"payload": {"i": 1}, "order_key": "k1", "dedup_key": "d1", "metadata": {"m": "1"}, "tags": ["x"]},
	{"payload": {"i": 2}},
	{"payload": {"i": 3}, "dedup_key": "d1"},
	{"payload": {"i": 4}, "dedup_key": "d2", "order_key": null, "metadata": null, "tags": null}
]'::jsonb);
-- re-sending the same keys: all duplicates, existing ids and seqs
SELECT * FROM ledger.append_batch('batch', '[{"payload": 0, "dedup_key": "d2"}, {"payload": 0, "dedup_key": "d1"}]'::jsonb);
SELECT seq, payload, order_key, dedup_key, metadata, tags FROM ledger.read('batch');
-- composite form
SELECT * FROM ledger.append_batch('batch', ARRAY[
	ROW('{"i": 5}', 'k5', 'd5', '{"m": "5"}', '{y,z}')::ledger.append_input,
	ROW('{"i": 6}', NULL, NULL, NULL, NULL)::ledger.append_input]);
SELECT seq, payload, order_key, dedup_key, metadata, tags FROM ledger.read('batch', after => 0) WHERE seq > 3;
-- an untyped literal needs no cast
SELECT ord, seq, duplicate FROM ledger.append_batch('untyped', '[{"payload": 1}, {"payload": 2}]');
SELECT pg_temp.err($$SELECT * FROM ledger.append_batch('untyped', 'not json')$$);
-- empty batches return no rows and create nothing
SELECT * FROM ledger.append_batch('empty-batch', '[]'::jsonb);
SELECT * FROM ledger.append_batch('empty-batch', ARRAY[]::ledger.append_input[]);
SELECT * FROM ledger.stat('empty-batch');
-- batch expected_seq
SELECT count(*) FROM ledger.append_batch('batch', '[{"payload": 7}]'::jsonb, expected_seq => 5);
SELECT pg_temp.err($$SELECT * FROM ledger.append_batch('batch', '[{"payload": 8}]'::jsonb, expected_seq => 5)$$);
-- a batch is atomic: a bad entry writes nothing
SELECT pg_temp.err($$SELECT * FROM ledger.append_batch('batch', '[{"payload": 8}, {"payload": 9, "metadata": {"a": 1}}]'::jsonb)$$);
SELECT pg_temp.err($$SELECT * FROM ledger.append_batch('batch', '[{"payload": 8}, {"nopayload": 9}]'::jsonb)$$);
SELECT pg_temp.err($$SELECT * FROM ledger.append_batch('batch', '[{"payload": 8, "colour": "red"}]'::jsonb)$$);
SELECT pg_temp.err($$SELECT * FROM ledger.append_batch('batch', '[{"payload": 8, "tags": [1]}]'::jsonb)$$);
SELECT pg_temp.err($$SELECT * FROM ledger.append_batch('batch', '[{"payload": 8, "order_key": 5}]'::jsonb)$$);
SELECT pg_temp.err($$SELECT * FROM ledger.append_batch('batch', '[1]'::jsonb)$$);
SELECT pg_temp.err($$SELECT * FROM ledger.append_batch('batch', '{"payload": 1}'::jsonb)$$);
SELECT pg_temp.err($$SELECT * FROM ledger.append_batch('batch', NULL::jsonb)$$);
SELECT pg_temp.err($$SELECT * FROM ledger.append_batch('batch', ARRAY[NULL]::ledger.append_input[])$$);
SELECT pg_temp.err($$SELECT * FROM ledger.append_batch('batch', ARRAY[ROW(NULL, '', '', '{}', '{}')]::ledger.append_input[])$$);
SELECT ledger.count('batch');

-- schema_version: explicit, default, bad
SELECT ledger.append('versions', '{}') AS v1 \gset
SELECT ledger.append('versions', '{}', schema_version => 3) AS v3 \gset
SELECT seq, schema_version FROM ledger.read('versions', after => :v1, as_version => 3);
SELECT pg_temp.err($$SELECT ledger.append('versions', '{}', schema_version => 0)$$);

-- bad arguments: nothing is written
SELECT pg_temp.err($$SELECT ledger.append('', '{}')$$);
SELECT pg_temp.err($$SELECT ledger.append(NULL, '{}')$$);
SELECT pg_temp.err($$SELECT ledger.append(repeat('x', 256), '{}')$$);
SELECT ledger.append(repeat('x', 255), '{}') > 0 AS max_length_ok;
SELECT pg_temp.err($$SELECT ledger.append(E'bad\nname', '{}')$$);
SELECT pg_temp.err($$SELECT ledger.append(E'tab\there', '{}')$$);
SELECT pg_temp.err($$SELECT ledger.append(E'del\u007f', '{}')$$);
SELECT pg_temp.err($$SELECT ledger.append(E'c1\u0085', '{}')$$);
SELECT ledger.append('ünïcødé/stream:1', '{}') > 0 AS unicode_ok;
SELECT pg_temp.err($$SELECT ledger.append('s', NULL)$$);
SELECT pg_temp.err($$SELECT ledger.append('s', '{}', metadata => '{"nested": {"a": "b"}}')$$);
SELECT pg_temp.err($$SELECT ledger.append('s', '{}', metadata => '{"n": 1}')$$);
SELECT pg_temp.err($$SELECT ledger.append('s', '{}', metadata => '["a"]')$$);
SELECT pg_temp.err($$SELECT ledger.append('s', '{}', metadata => '"a"')$$);
SELECT pg_temp.err($$SELECT ledger.append('s', '{}', tags => ARRAY['a', NULL])$$);
SELECT pg_temp.err($$SELECT ledger.append('s', '{}', tags => '{{a},{b}}')$$);
-- NULL optional arguments mean their defaults
SELECT ledger.append('s', '{}', order_key => NULL, dedup_key => NULL, metadata => NULL, tags => NULL) > 0 AS nulls_ok;
SELECT order_key, dedup_key, metadata, tags FROM ledger.read('s');
-- payload size limit
SET ledger.max_payload_bytes = 100;
SELECT pg_temp.err($$SELECT ledger.append('s', jsonb_build_object('big', repeat('x', 200)))$$);
SELECT pg_temp.err($$SELECT * FROM ledger.append_batch('s', jsonb_build_array(jsonb_build_object('payload', 1), jsonb_build_object('payload', repeat('x', 200))))$$);
RESET ledger.max_payload_bytes;
SELECT ledger.count('s');
SHOW ledger.max_payload_bytes;
SELECT pg_temp.err($$SET ledger.max_payload_bytes = 0$$);

-- A batch's dedup keys are sorted, not compared pairwise, and every loop
-- checks for interrupts: a batch of 150,000 keys is cancelled by its
-- statement_timeout at once (it took 47 s when duplicates were found in
-- O(n^2) without CHECK_FOR_INTERRUPTS, the stream locked all the while).
CREATE TEMP TABLE big_batch AS
	SELECT array_agg(row(jsonb_build_object('i', g), '', 'key-' || g, '{}', '{}')::ledger.append_input ORDER BY g) AS b
	FROM generate_series(1, 150000) g;
SELECT clock_timestamp() AS t0 \gset
\set VERBOSITY terse
SET statement_timeout = '500ms';
SELECT count(*) FROM ledger.append_batch('dedup-cancel', (SELECT b FROM big_batch));
RESET statement_timeout;
\set VERBOSITY default
SELECT clock_timestamp() - :'t0'::timestamptz < interval '5 s' AS cancelled_promptly;
SELECT ledger.count('dedup-cancel');
DROP TABLE big_batch;

-- duplicates inside a batch point at the first occurrence; keys the stream
-- holds already point at that entry
SELECT ledger.append('dup-mix', '"old b"', dedup_key => 'b') AS old_b \gset
CREATE TEMP TABLE dup_result AS
SELECT * FROM ledger.append_batch('dup-mix', '[{"payload": 1, "dedup_key": "a"}, {"payload": 2, "dedup_key": "b"},
	{"payload": 3}, {"payload": 4, "dedup_key": "a"}, {"payload": 5, "dedup_key": "c"},
	{"payload": 6, "dedup_key": "b"}, {"payload": 7, "dedup_key": "c"}, {"payload": 8, "dedup_key": "a"},
	{"payload": 9}, {"payload": 10, "dedup_key": "aa"}]'::jsonb);
SELECT r.ord, r.seq, r.duplicate, r.id = :old_b AS is_old_b, e.payload
FROM dup_result r LEFT JOIN ledger.read('dup-mix') e USING (id) ORDER BY r.ord;
SELECT seq, payload, dedup_key FROM ledger.read('dup-mix');
DROP TABLE dup_result;

-- Entries are written straight into the heap and indexes: the unique
-- indexes still catch a seq or dedup key taken twice (here faked by
-- rewinding the stream's counter behind ledger's back)
SELECT ledger.append('uniq', '1', dedup_key => 'u1') > 0 AS ok;
UPDATE ledger.streams SET last_seq = 0 WHERE name = 'uniq';
SELECT pg_temp.err($$SELECT ledger.append('uniq', '2')$$);
SELECT pg_temp.err($$SELECT * FROM ledger.append_batch('uniq', '[{"payload": 2}, {"payload": 3}]'::jsonb)$$);
UPDATE ledger.streams SET last_seq = 1 WHERE name = 'uniq';
-- a table with an INSERT trigger is written through the executor, which fires it
CREATE TABLE pg_temp.fired (id bigint);
CREATE FUNCTION pg_temp.note_insert() RETURNS trigger LANGUAGE plpgsql AS
$$BEGIN INSERT INTO pg_temp.fired VALUES (NEW.id); RETURN NEW; END$$;
CREATE TRIGGER entries_test_insert AFTER INSERT ON ledger.entries
	FOR EACH ROW EXECUTE FUNCTION pg_temp.note_insert();
SELECT count(*) FROM ledger.append_batch('uniq', '[{"payload": 4}, {"payload": 5}]'::jsonb);
SELECT ledger.append('uniq', '6') > 0 AS ok;
SELECT count(*) AS fired FROM pg_temp.fired;
DROP TRIGGER entries_test_insert ON ledger.entries;
SELECT seq, payload FROM ledger.read('uniq');

-- Many appends to one stream in one transaction fill the stream row's page
-- with versions no one can prune, so some updates of the row are not HOT
-- and need index entries of their own: the row is still found by name
DO $$
BEGIN
	FOR i IN 1..400 LOOP
		PERFORM ledger.append('many-versions', to_jsonb(i));
	END LOOP;
END $$;
SELECT ledger.append('many-versions', '401') > 0 AS ok;
SELECT count, first_seq, last_seq FROM ledger.stat('many-versions');
SELECT count(*) FROM ledger.streams WHERE name = 'many-versions';
