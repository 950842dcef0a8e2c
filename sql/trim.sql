-- trim keeps seq, count and stat right and frees dedup keys
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

SELECT count(*) FROM (SELECT ledger.append('tr', jsonb_build_object('i', i), dedup_key => 'd' || i)
					  FROM generate_series(1, 10) i) s;
SELECT ledger.append('keep', '{}') AS keep_id \gset

SELECT ledger.trim('tr', 4);
SELECT ledger.count('tr');
SELECT count, first_id, last_id, first_seq, last_seq FROM ledger.stat('tr');
SELECT min(seq), max(seq) FROM ledger.read('tr');
SELECT pg_temp.err($$SELECT ledger.get('tr', 4)$$);
SELECT seq FROM ledger.get('tr', 5);
-- trimming again below the cut deletes nothing
SELECT ledger.trim('tr', 3);
-- other streams are untouched, even below before_id
SELECT ledger.trim('tr', :keep_id);
SELECT ledger.count('keep');
-- a dedup key becomes reusable after its entry is trimmed
SELECT ledger.append('tr', '{"again": 1}', dedup_key => 'd1') > :keep_id AS new_entry;
SELECT ledger.append('tr', '{"again": 5}', dedup_key => 'd5') > :keep_id AS still_new;
SELECT count, first_seq, last_seq FROM ledger.stat('tr');
-- trim everything: seq continues, count is zero
SELECT ledger.trim('tr', 1000000);
SELECT count, first_id, last_id, first_seq, last_seq, last_appended_at IS NOT NULL AS kept_time FROM ledger.stat('tr');
SELECT pg_temp.err($$SELECT ledger.get('tr', 12)$$);
SELECT * FROM ledger.streams(prefix => 't');
SELECT ledger.append('tr', '{}', expected_seq => 12) > 0 AS continues;
SELECT seq FROM ledger.read('tr');
-- missing streams and odd bounds
SELECT ledger.trim('missing', 10);
SELECT ledger.trim('tr', 0);
SELECT ledger.trim('tr', -1);
SELECT pg_temp.err($$SELECT ledger.trim('tr', NULL)$$);
SELECT pg_temp.err($$SELECT ledger.trim('', 1)$$);
SELECT * FROM ledger.stat('missing');

-- set_retention only records settings (the worker enforces them)
SELECT ledger.set_retention('tr', max_entries => 5);
SELECT ledger.set_retention('logs-*', max_age => '7 days');
SELECT ledger.set_retention('logs-*', max_entries => 100, max_age => '1 day');
SELECT pattern, max_entries, max_age FROM ledger.stream_settings ORDER BY pattern;
SELECT pg_temp.err($$SELECT ledger.set_retention('tr', max_entries => -1)$$);
SELECT pg_temp.err($$SELECT ledger.set_retention('tr', max_age => '-1 day')$$);
SELECT pg_temp.err($$SELECT ledger.set_retention('tr', max_age => '0')$$);
SELECT pg_temp.err($$SELECT ledger.set_retention('a*b', max_entries => 1)$$);
SELECT pg_temp.err($$SELECT ledger.set_retention(NULL, max_entries => 1)$$);
