-- The buffers a read touches do not depend on other streams' entries (nor,
-- for a tag filter, on the stream's untagged entries)
-- (issue 14): a stream of four entries appended around 60,000 entries of
-- another stream is read in a few dozen buffers by every reader, in custom
-- and in generic plans.  (A read that scans the primary key filtered by
-- stream touches every page of the other stream: ~1,100 buffers here.)
SET client_min_messages = warning;
DROP EXTENSION IF EXISTS ledger CASCADE;
RESET client_min_messages;
CREATE EXTENSION ledger;

SELECT ledger.append('lone', '{"n": 1}', tags => '{red}') > 0 AS ok;
SELECT count(*) FROM ledger.append_batch('big',
	(SELECT array_agg(ROW(jsonb_build_object('n', g), '', '', '{}', '{}')::ledger.append_input)
	   FROM generate_series(1, 60000) g));
SELECT ledger.append('lone', '{"n": 2}', order_key => 'k') > 0 AS ok;
SELECT ledger.append('lone', '{"n": 3}', tags => '{red,blue}') > 0 AS ok;
SELECT ledger.append('lone', '{"n": 4}') > 0 AS ok;
SELECT ledger.append('lonesome', '{"n": 1}') > 0 AS ok;
-- two tagged entries at the end of the big stream: a tag filter finds them
-- through the tag index, not by scanning the stream
SELECT ledger.append('big', '{"n": 0}', tags => '{rare}') > 0 AS ok;
SELECT ledger.append('big', '{"n": 0}', tags => '{rare,red}') > 0 AS ok;
VACUUM ANALYZE ledger.entries;

-- Shared buffers (hit + read) of one call, inner queries included: the
-- Function Scan node's counts cover the function's own SPI statements.
-- Each call runs once before it is measured, so that plans are built.
CREATE FUNCTION pg_temp.buffers(q text) RETURNS bigint LANGUAGE plpgsql AS $$
DECLARE
	plan json;
BEGIN
	EXECUTE 'SELECT count(*) FROM ' || q;
	EXECUTE 'EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) SELECT * FROM ' || q INTO plan;
	RETURN ((plan -> 0 -> 'Plan' ->> 'Shared Hit Blocks')::bigint
			+ (plan -> 0 -> 'Plan' ->> 'Shared Read Blocks')::bigint);
END $$;

CREATE TEMP TABLE probes (q text, nrows int);
INSERT INTO probes VALUES
	($$ledger.read('lone')$$, 4),
	($$ledger.read('lone', descending => true)$$, 4),
	($$ledger.read('lone', order_key => 'k')$$, 1),
	($$ledger.read('lone', tag => 'red')$$, 2),
	($$ledger.read('lone', all_tags => '{red,blue}')$$, 1),
	($$ledger.read_all(streams => 'lone')$$, 4),
	($$ledger.read_all(streams => 'lone*')$$, 5),
	($$ledger.get('lone', 1)$$, 1),
	($$ledger.read('big', tag => 'rare')$$, 2),
	($$ledger.read('big', tag => 'nomatch')$$, 0),
	($$ledger.read('big', all_tags => '{rare,red}')$$, 1),
	($$ledger.read('big', tag => 'rare', after => 0, descending => true)$$, 0);

-- right rows, in id order (descending: reversed)
SELECT seq FROM ledger.read('lone', descending => true);
SELECT stream, seq FROM ledger.read_all(streams => 'lone*');
SELECT seq, tags FROM ledger.read('big', tag => 'rare');
SELECT seq, tags FROM ledger.read('big', tag => 'rare', descending => true, "limit" => 1);
SELECT seq, tags FROM ledger.read('big', all_tags => '{red,rare}');
SELECT count(*) FROM ledger.read('big', tag => 'rare', after => 0, descending => true);
-- all_tags => '{}' holds for untagged entries too
SELECT count(*) FROM ledger.read('lone', all_tags => '{}');
CREATE FUNCTION pg_temp.nrows(q text) RETURNS bigint LANGUAGE plpgsql AS $$
DECLARE
	n bigint;
BEGIN
	EXECUTE 'SELECT count(*) FROM ' || q INTO n;
	RETURN n;
END $$;
SELECT q AS wrong_row_count FROM probes WHERE pg_temp.nrows(q) <> nrows;
SELECT count(*) FILTER (WHERE pg_temp.buffers(q) > 60) AS over_60_buffers,
	   string_agg(CASE WHEN pg_temp.buffers(q) > 60 THEN q END, ', ') AS which
  FROM probes;
SET plan_cache_mode = force_generic_plan;
SELECT count(*) FILTER (WHERE pg_temp.buffers(q) > 60) AS over_60_buffers,
	   string_agg(CASE WHEN pg_temp.buffers(q) > 60 THEN q END, ', ') AS which
  FROM probes;
RESET plan_cache_mode;
