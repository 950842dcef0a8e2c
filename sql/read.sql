-- read filters and cursors, read_all, get, count, stat, streams
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

SELECT count(*) FROM (
	SELECT ledger.append('r', jsonb_build_object('i', i),
						 order_key => 'k' || (i % 3),
						 metadata => jsonb_build_object('parity', CASE WHEN i % 2 = 0 THEN 'even' ELSE 'odd' END),
						 tags => CASE WHEN i % 4 = 0 THEN '{four,even}'::text[] WHEN i % 2 = 0 THEN '{even}' ELSE '{}' END)
	FROM generate_series(1, 12) i) s;
SELECT ledger.append('other', '{"i": 0}') AS other_id \gset

-- cursor paging
SELECT id, seq FROM ledger.read('r', "limit" => 5);
SELECT id, seq FROM ledger.read('r', after => 5, "limit" => 5);
SELECT id, seq FROM ledger.read('r', after => 10, "limit" => 5);
SELECT id, seq FROM ledger.read('r', after => 12);
-- descending
SELECT id FROM ledger.read('r', descending => true, "limit" => 3);
SELECT id FROM ledger.read('r', after => 4, descending => true);
-- filters
SELECT seq FROM ledger.read('r', order_key => 'k1');
SELECT seq FROM ledger.read('r', order_key => 'k1', descending => true, "limit" => 2);
SELECT seq FROM ledger.read('r', tag => 'even');
SELECT seq FROM ledger.read('r', all_tags => '{four,even}');
SELECT seq FROM ledger.read('r', metadata => '{"parity": "odd"}');
SELECT seq FROM ledger.read('r', tag => 'even', metadata => '{"parity": "even"}', order_key => 'k0');
SELECT seq FROM ledger.read('r', annotations => '{"x": "y"}');
-- a missing stream reads as empty
SELECT count(*) FROM ledger.read('no-such-stream');
-- bad arguments
SELECT pg_temp.err($$SELECT * FROM ledger.read('r', "limit" => 0)$$);
SELECT pg_temp.err($$SELECT * FROM ledger.read('r', "limit" => -1)$$);
SELECT pg_temp.err($$SELECT * FROM ledger.read('')$$);
SELECT pg_temp.err($$SELECT * FROM ledger.read('r', as_version => 0)$$);
SELECT pg_temp.err($$SELECT * FROM ledger.read('r', all_tags => ARRAY[NULL]::text[])$$);
SELECT pg_temp.err($$SELECT * FROM ledger.read('r', wait => '-1 s')$$);

-- read_all
SELECT id, stream, seq FROM ledger.read_all("limit" => 3);
SELECT id, stream, seq FROM ledger.read_all(after => 11);
SELECT id, stream FROM ledger.read_all(streams => 'other');
SELECT count(*) FROM ledger.read_all(streams => 'r*', "limit" => 1000);
SELECT count(*) FROM ledger.read_all(streams => '*', "limit" => 1000);
SELECT count(*) FROM ledger.read_all(after => NULL);
SELECT pg_temp.err($$SELECT * FROM ledger.read_all("limit" => 0)$$);
SELECT pg_temp.err($$SELECT * FROM ledger.read_all(streams => '')$$);
SELECT pg_temp.err($$SELECT * FROM ledger.read_all(streams => 'a*b')$$);
SELECT pg_temp.err($$SELECT * FROM ledger.read_all(streams => '**')$$);

-- get
SELECT id, seq, payload FROM ledger.get('r', 3);
SELECT pg_temp.err($$SELECT ledger.get('r', 13)$$);
SELECT pg_temp.err($$SELECT ledger.get('r', 0)$$);
SELECT pg_temp.err($$SELECT ledger.get('r', -5)$$);
SELECT pg_temp.err($$SELECT ledger.get('missing', 1)$$);
SELECT pg_temp.err($$SELECT ledger.get('r', NULL)$$);

-- count and stat
SELECT ledger.count('r'), ledger.count('other'), ledger.count('missing');
SELECT stream, count, first_id, last_id, first_seq, last_seq, schema_version,
	   created_at IS NOT NULL AS has_created, last_appended_at IS NOT NULL AS has_last
  FROM ledger.stat('r');
SELECT stream, count, first_id, last_id, first_seq, last_seq, schema_version, created_at, last_appended_at
  FROM ledger.stat('missing');
SELECT pg_temp.err($$SELECT ledger.count('')$$);

-- streams
SELECT ledger.append(s, '{}') > 0 FROM unnest(ARRAY['a/1', 'a/2', 'a/3', 'b/1', 'ab']) s;
SELECT * FROM ledger.streams();
SELECT * FROM ledger.streams(after => 'a/2');
SELECT * FROM ledger.streams(prefix => 'a/');
SELECT * FROM ledger.streams(prefix => 'a', "limit" => 2);
SELECT * FROM ledger.streams(after => 'a/1', prefix => 'a/', "limit" => 1);
SELECT * FROM ledger.streams(prefix => 'zzz');
SELECT pg_temp.err($$SELECT * FROM ledger.streams("limit" => 0)$$);

-- cursor reads use the indexes
SET enable_seqscan = off;
EXPLAIN (COSTS OFF) SELECT e.id FROM ledger.entries e
  WHERE e.stream_id = 1 AND e.id > 5 ORDER BY e.stream_id, e.id LIMIT 100;
EXPLAIN (COSTS OFF) SELECT e.id FROM ledger.entries e
  WHERE e.stream_id = 1 AND e.order_key = 'k1' AND e.id > 5 ORDER BY e.stream_id, e.order_key, e.id LIMIT 100;
EXPLAIN (COSTS OFF) SELECT e.id FROM ledger.entries e
  WHERE e.stream_id = 1 AND e.seq = 3;
-- also without hints, and with many entries of other streams after this one's
RESET enable_seqscan;
SELECT count(*) FROM ledger.append_batch('noise', (SELECT jsonb_agg(jsonb_build_object('payload', g)) FROM generate_series(1, 3000) g));
ANALYZE ledger.entries;
EXPLAIN (COSTS OFF) SELECT e.id FROM ledger.entries e
  WHERE e.stream_id = 1 AND e.id > 5 ORDER BY e.stream_id, e.id LIMIT 100;
