-- set_node: ids congruent to the node number modulo 2^node_bits, increasing,
-- with a read_all that stays exact; argument checks and privileges
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

-- unset: node 0 of 0 bits, ids 1, 2, 3 ...
SELECT * FROM ledger.node();

-- before the first append the first id is the node number itself
SELECT ledger.set_node(5);
SELECT * FROM ledger.node();
SELECT ledger.append('n', '{}') AS a, ledger.append('n', '{}') AS b;
SELECT s.seqincrement FROM pg_catalog.pg_sequence s
 WHERE s.seqrelid = 'ledger.entries_id_seq'::regclass;

-- later: ids go on increasing, congruent to the new number
SELECT ledger.set_node(2, 3);
SELECT id, id % 8 AS node FROM (SELECT ledger.append('n', '{}') AS id FROM generate_series(1, 3)) s;
SELECT ledger.set_node(0, 0);
SELECT ledger.append('n', '{}');

-- node 0 with bits: no id 0
DROP EXTENSION ledger CASCADE;
CREATE EXTENSION ledger;
SELECT ledger.set_node(0, 4);
SELECT ledger.append('z', '{}'), ledger.append('z', '{}');

-- read_all returns every id, in order, across the changes
SELECT ledger.set_node(3, 4);
SELECT count(*) FROM (SELECT ledger.append('z', '{}') FROM generate_series(1, 3)) s;
SELECT string_agg(id::text, ' ' ORDER BY id) FROM ledger.read_all(0, 100);
SELECT string_agg(id::text, ' ' ORDER BY id) FROM ledger.read_all(35, 100);

-- arguments
SELECT pg_temp.err($$SELECT ledger.set_node(16, 4)$$);
SELECT pg_temp.err($$SELECT ledger.set_node(-1)$$);
SELECT pg_temp.err($$SELECT ledger.set_node(1, 17)$$);
SELECT pg_temp.err($$SELECT ledger.set_node(1, -1)$$);
SELECT pg_temp.err($$SELECT ledger.set_node(NULL)$$);
SELECT pg_temp.err($$SELECT ledger.set_node(1, NULL)$$);
SELECT * FROM ledger.node();

-- privileges: admins set it, readers see it, nobody writes the table
DROP ROLE IF EXISTS regress_node_r;
DROP ROLE IF EXISTS regress_node_a;
CREATE ROLE regress_node_r IN ROLE ledger_reader;
CREATE ROLE regress_node_a IN ROLE ledger_admin;
SET ROLE regress_node_r;
SELECT * FROM ledger.node();
SELECT pg_temp.err($$SELECT ledger.set_node(1)$$);
SELECT pg_temp.err($$UPDATE ledger.node_settings SET node = 1$$);
RESET ROLE;
SET ROLE regress_node_a;
SELECT ledger.set_node(1, 4);
SELECT pg_temp.err($$UPDATE ledger.node_settings SET node = 2$$);
RESET ROLE;
SELECT * FROM ledger.node();
DROP ROLE regress_node_r;
DROP ROLE regress_node_a;
