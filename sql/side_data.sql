-- set_tags and set_annotations: the only mutable parts of an entry
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

SELECT ledger.append('t', '{"a": 1}', tags => '{old}') AS id \gset
SELECT ledger.append('u', '{"a": 1}') AS other \gset
SELECT tags, annotations, updated_at IS NULL AS never_updated FROM ledger.read('t');

SELECT ledger.set_tags('t', :id, '{new,tags}');
SELECT tags, updated_at IS NOT NULL AS updated FROM ledger.read('t');
SELECT seq FROM ledger.read('t', tag => 'new');
SELECT ledger.set_tags('t', :id, '{}');
SELECT tags FROM ledger.read('t');

SELECT ledger.set_annotations('t', :id, '{"reviewed": "yes", "by": "ann"}');
SELECT ledger.set_annotations('t', :id, '{"by": null, "note": "ok"}');
SELECT annotations FROM ledger.read('t');
SELECT seq FROM ledger.read('t', annotations => '{"reviewed": "yes"}');
-- deleting a key that is not there is fine
SELECT ledger.set_annotations('t', :id, '{"missing": null}');
SELECT annotations FROM ledger.read('t');

-- payload, metadata and the rest never change
SELECT payload, metadata, seq FROM ledger.read('t');

-- errors
SELECT pg_temp.err(format($$SELECT ledger.set_tags('t', %s, '{x}')$$, :other));
SELECT pg_temp.err($$SELECT ledger.set_tags('t', 999999, '{x}')$$);
SELECT pg_temp.err($$SELECT ledger.set_tags('missing', 1, '{x}')$$);
SELECT pg_temp.err(format($$SELECT ledger.set_tags('t', %s, ARRAY[NULL]::text[])$$, :id));
SELECT pg_temp.err($$SELECT ledger.set_annotations('t', 999999, '{}')$$);
SELECT pg_temp.err(format($$SELECT ledger.set_annotations('t', %s, '{"n": 1}')$$, :id));
SELECT pg_temp.err(format($$SELECT ledger.set_annotations('t', %s, '[]')$$, :id));
SELECT pg_temp.err(format($$SELECT ledger.set_annotations('t', %s, NULL)$$, :id));
SELECT pg_temp.err($$SELECT ledger.set_tags('t', NULL, '{x}')$$);
SELECT annotations, tags FROM ledger.read('t');
