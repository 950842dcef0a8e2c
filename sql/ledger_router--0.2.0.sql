/* sql/ledger_router--0.2.0.sql — a router database for a ledger sharded by stream */

\echo Use "CREATE EXTENSION ledger_router CASCADE" to load this file. \quit

-- ---------------------------------------------------------------------------
-- How it works.  Every stream lives on one node (a database running
-- ledger).  A stream's slot is a hash of its name (src/ledger_router.c: the
-- same on every platform and version) into 4096 slots; each slot belongs to
-- a node (ledger_router.slots), and a pin (ledger_router.pins) overrides the
-- slot for one stream.  Schema ledger here has the stream-scoped functions of
-- ledger with the same signatures; each finds the stream's node and runs the
-- same function there through PL/Proxy (cluster ledger_nodes, one partition
-- per node, as the connecting role: privileges are checked on the node).
-- Each remote call commits on its own (PL/Proxy runs autocommit).
--
-- Ids are unique across nodes because each node draws ids congruent to its
-- node number modulo 2^node_bits (ledger.set_node on the node); so the low
-- bits of an id name its node, and a consumer of every stream keeps one
-- cursor per node, each node's read_all keeping its own horizon.
--
-- Operators are written OPERATOR(pg_catalog.x), and all such forms bind
-- alike, left to right: hence the parentheses inside expressions.
--
-- Nothing here is SECURITY DEFINER: PL/Proxy connects as current_user, and a
-- definer's rights would connect every caller as the extension's owner.
-- ---------------------------------------------------------------------------

CREATE SCHEMA ledger;
CREATE SCHEMA ledger_router;
COMMENT ON SCHEMA ledger IS 'ledger''s stream functions, each run on the node that owns the stream';
COMMENT ON SCHEMA ledger_router IS 'The node list, slot map and pins of a ledger router, and its cross-node functions';

-- Roles as in ledger.  They are cluster-wide: a router in a cluster that also
-- holds a node shares them.
DO $roles$
BEGIN
	IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_roles WHERE rolname OPERATOR(pg_catalog.=) 'ledger_reader') THEN
		CREATE ROLE ledger_reader NOLOGIN;
	END IF;
	IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_roles WHERE rolname OPERATOR(pg_catalog.=) 'ledger_writer') THEN
		CREATE ROLE ledger_writer NOLOGIN;
	END IF;
	IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_roles WHERE rolname OPERATOR(pg_catalog.=) 'ledger_admin') THEN
		CREATE ROLE ledger_admin NOLOGIN;
	END IF;
END
$roles$;

GRANT ledger_reader TO ledger_writer;
GRANT ledger_writer TO ledger_admin;

REVOKE ALL ON SCHEMA ledger, ledger_router FROM PUBLIC;
GRANT USAGE ON SCHEMA ledger, ledger_router TO ledger_reader;

-- ---------------------------------------------------------------------------
-- Public types, exactly as ledger defines them
-- ---------------------------------------------------------------------------
CREATE TYPE ledger.entry AS (
	id				bigint,
	stream			text,
	seq				bigint,
	payload			jsonb,
	order_key		text,
	dedup_key		text,
	schema_version	integer,
	metadata		jsonb,
	tags			text[],
	annotations		jsonb,
	created_at		timestamptz,
	updated_at		timestamptz
);
COMMENT ON TYPE ledger.entry IS 'One log entry as returned by the read functions';

CREATE TYPE ledger.append_input AS (
	payload		jsonb,
	order_key	text,
	dedup_key	text,
	metadata	jsonb,
	tags		text[]
);
COMMENT ON TYPE ledger.append_input IS 'One element of ledger.append_batch(stream, ledger.append_input[])';

CREATE TYPE ledger.stream_stat AS (
	stream				text,
	count				bigint,
	first_id			bigint,
	last_id				bigint,
	first_seq			bigint,
	last_seq			bigint,
	schema_version		integer,
	created_at			timestamptz,
	last_appended_at	timestamptz
);
COMMENT ON TYPE ledger.stream_stat IS 'Result of ledger.stat(stream)';

-- ---------------------------------------------------------------------------
-- Configuration.  No foreign keys: pg_restore loads these tables in any
-- order; the functions below keep them consistent.
-- ---------------------------------------------------------------------------

-- node is the node's own number (ledger.node() on it); partition is its
-- place in the PL/Proxy cluster, kept dense by the trigger below.
CREATE TABLE ledger_router.nodes (
	node		integer NOT NULL,
	name		text COLLATE "C" NOT NULL,
	connstr		text NOT NULL,
	node_bits	integer NOT NULL,
	partition	integer NOT NULL,
	added_at	timestamptz NOT NULL DEFAULT pg_catalog.now(),
	CONSTRAINT nodes_pkey PRIMARY KEY (node),
	CONSTRAINT nodes_name_key UNIQUE (name),
	CONSTRAINT nodes_node_check CHECK (node OPERATOR(pg_catalog.>=) 0)
);
COMMENT ON TABLE ledger_router.nodes IS 'The nodes of this router; change them with ledger_router.add_node/drop_node';

-- Empty until the first node joins, which gets every slot.  moving_to is
-- set between begin_move and finish_move.
CREATE TABLE ledger_router.slots (
	slot		integer NOT NULL,
	node		integer NOT NULL,
	moving_to	integer,
	CONSTRAINT slots_pkey PRIMARY KEY (slot),
	CONSTRAINT slots_slot_check CHECK (slot OPERATOR(pg_catalog.>=) 0 AND slot OPERATOR(pg_catalog.<) 4096)
);
CREATE INDEX slots_node_idx ON ledger_router.slots (node);
COMMENT ON TABLE ledger_router.slots IS 'Which node owns each of the 4096 slots that stream names hash into';

CREATE TABLE ledger_router.pins (
	stream		text COLLATE "C" NOT NULL,
	node		integer NOT NULL,
	pinned_at	timestamptz NOT NULL DEFAULT pg_catalog.now(),
	CONSTRAINT pins_pkey PRIMARY KEY (stream)
);
CREATE INDEX pins_node_idx ON ledger_router.pins (node);
COMMENT ON TABLE ledger_router.pins IS 'Streams placed on a node other than their slot''s: kept where they were when their slot moved, or pinned by hand';

-- What the router told every node, so that a node joining later is told too.
CREATE TABLE ledger_router.schema_versions (
	pattern		text COLLATE "C" NOT NULL,
	version		integer NOT NULL,
	CONSTRAINT schema_versions_pkey PRIMARY KEY (pattern)
);
COMMENT ON TABLE ledger_router.schema_versions IS 'ledger.set_schema_version calls applied to every node, replayed on a joining node';

CREATE TABLE ledger_router.retention (
	pattern		text COLLATE "C" NOT NULL,
	max_entries	bigint,
	max_age		interval,
	CONSTRAINT retention_pkey PRIMARY KEY (pattern)
);
COMMENT ON TABLE ledger_router.retention IS 'ledger.set_retention calls applied to every node, replayed on a joining node';

CREATE TABLE ledger_router.upcasters (
	streams			text COLLATE "C" NOT NULL,
	from_version	integer NOT NULL,
	to_version		integer NOT NULL,
	rename			jsonb,
	defaults		jsonb,
	remove			text[],
	fn				text,
	CONSTRAINT upcasters_pkey PRIMARY KEY (streams, from_version)
);
COMMENT ON TABLE ledger_router.upcasters IS 'Upcasters registered on every node (fn: a qualified signature), replayed on a joining node';

SELECT pg_catalog.pg_extension_config_dump('ledger_router.nodes', '');
SELECT pg_catalog.pg_extension_config_dump('ledger_router.slots', '');
SELECT pg_catalog.pg_extension_config_dump('ledger_router.pins', '');
SELECT pg_catalog.pg_extension_config_dump('ledger_router.schema_versions', '');
SELECT pg_catalog.pg_extension_config_dump('ledger_router.retention', '');
SELECT pg_catalog.pg_extension_config_dump('ledger_router.upcasters', '');

REVOKE ALL ON ALL TABLES IN SCHEMA ledger_router FROM PUBLIC;
-- The topology is no secret (pg_foreign_server shows the connection strings
-- to everyone); connection strings never hold passwords (see add_node).
GRANT SELECT ON ALL TABLES IN SCHEMA ledger_router TO ledger_reader;
GRANT INSERT, UPDATE, DELETE ON ledger_router.slots, ledger_router.pins,
	ledger_router.schema_versions, ledger_router.retention, ledger_router.upcasters
	TO ledger_admin;

-- ---------------------------------------------------------------------------
-- The PL/Proxy cluster: partition p<i> is the node with partition i.
-- PL/Proxy refuses a cluster without partitions, so an empty router keeps a
-- placeholder that route() never lets a call reach.  Passwords belong in
-- user mappings (CREATE USER MAPPING FOR role SERVER ledger_nodes OPTIONS
-- (user '…', password '…')), which only their owners can read.
-- ---------------------------------------------------------------------------
CREATE SERVER ledger_nodes FOREIGN DATA WRAPPER plproxy
	OPTIONS (modular_mapping '1', p0 'dbname=ledger_router_has_no_nodes');
CREATE USER MAPPING FOR PUBLIC SERVER ledger_nodes;
GRANT USAGE ON FOREIGN SERVER ledger_nodes TO ledger_reader;

-- Keeps partitions dense and the server's partitions equal to the node
-- list, also when pg_restore loads the table (a dump keeps no extension
-- member's options).
CREATE FUNCTION ledger_router.nodes_changed() RETURNS trigger
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $nodes_changed$
DECLARE
	have	text[];
	opts	text[] := '{}';
	nparts	integer := 0;
	r		record;
BEGIN
	-- the renumbering below fires this trigger again
	IF pg_catalog.pg_trigger_depth() OPERATOR(pg_catalog.>) 1 THEN
		RETURN NULL;
	END IF;
	UPDATE ledger_router.nodes n SET partition = ranked.place
	  FROM (SELECT m.node, pg_catalog.row_number() OVER (ORDER BY m.node) OPERATOR(pg_catalog.-) 1 AS place
			  FROM ledger_router.nodes m) ranked
	 WHERE n.node OPERATOR(pg_catalog.=) ranked.node
	   AND n.partition OPERATOR(pg_catalog.<>) ranked.place;

	SELECT pg_catalog.array_agg(pg_catalog.split_part(o, '=', 1)) INTO have
	  FROM pg_catalog.pg_foreign_server s, pg_catalog.unnest(s.srvoptions) o
	 WHERE s.srvname OPERATOR(pg_catalog.=) 'ledger_nodes';
	have := COALESCE(have, '{}');

	FOR r IN SELECT n.partition, n.connstr FROM ledger_router.nodes n ORDER BY n.partition
	LOOP
		opts := opts OPERATOR(pg_catalog.||) pg_catalog.format('%s p%s %L',
			CASE WHEN ('p' OPERATOR(pg_catalog.||) r.partition) OPERATOR(pg_catalog.=) ANY (have)
				 THEN 'SET' ELSE 'ADD' END, r.partition, r.connstr);
		nparts := nparts OPERATOR(pg_catalog.+) 1;
	END LOOP;
	IF nparts OPERATOR(pg_catalog.=) 0 THEN
		opts := ARRAY[pg_catalog.format('%s p0 %L',
			CASE WHEN 'p0' OPERATOR(pg_catalog.=) ANY (have) THEN 'SET' ELSE 'ADD' END,
			'dbname=ledger_router_has_no_nodes')];
		nparts := 1;
	END IF;
	opts := opts OPERATOR(pg_catalog.||) ARRAY(
		SELECT 'DROP ' OPERATOR(pg_catalog.||) h FROM pg_catalog.unnest(have) h
		 WHERE h OPERATOR(pg_catalog.~) '^p[0-9]+$'
		   AND pg_catalog.substr(h, 2)::integer OPERATOR(pg_catalog.>=) nparts);
	EXECUTE 'ALTER SERVER ledger_nodes OPTIONS (' OPERATOR(pg_catalog.||)
		pg_catalog.array_to_string(opts, ', ') OPERATOR(pg_catalog.||) ')';
	RETURN NULL;
END
$nodes_changed$;
COMMENT ON FUNCTION ledger_router.nodes_changed() IS
'Trigger: numbers the nodes'' partitions densely and writes them into the options of server ledger_nodes';
CREATE TRIGGER nodes_changed AFTER INSERT OR DELETE OR UPDATE OF node, connstr ON ledger_router.nodes
	FOR EACH STATEMENT EXECUTE FUNCTION ledger_router.nodes_changed();
ALTER TABLE ledger_router.nodes ENABLE ALWAYS TRIGGER nodes_changed;

-- ---------------------------------------------------------------------------
-- Routing and errors
-- ---------------------------------------------------------------------------
CREATE FUNCTION ledger_router.slot_of(stream text)
RETURNS integer
AS 'MODULE_PATHNAME', 'ledger_router_slot_of'
LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;
COMMENT ON FUNCTION ledger_router.slot_of(text) IS
'The slot (0..4095) a stream name hashes into: FNV-1a (32 bits) of its bytes h, then ((h >> 20) # h) & 4095';

-- A value shown in a message: at most 48 characters, control characters as ?
CREATE FUNCTION ledger_router.quote_value(value text)
RETURNS text
LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE
RETURN pg_catalog.regexp_replace(pg_catalog.left(value, 48), '[\x01-\x1f\x7f-\x9f]', '?', 'g')
	OPERATOR(pg_catalog.||) CASE WHEN pg_catalog.length(value) OPERATOR(pg_catalog.>) 48 THEN '...' ELSE '' END;
COMMENT ON FUNCTION ledger_router.quote_value(text) IS
'A user value shortened for an error message (48 characters, control characters replaced)';

CREATE FUNCTION ledger_router.no_nodes() RETURNS void
LANGUAGE plpgsql STABLE PARALLEL SAFE
AS $no_nodes$
BEGIN
	RAISE EXCEPTION USING ERRCODE = '55000',
		MESSAGE = 'the ledger router has no nodes',
		HINT = 'Add one with ledger_router.add_node(name, connstr, node).';
END
$no_nodes$;
COMMENT ON FUNCTION ledger_router.no_nodes() IS 'Raises the error of a router without nodes';

-- A deadline for the next call to a node (src/ledger_router.c):
-- ledger_router.call_timeout plus the wait the call asks the node for.
CREATE FUNCTION ledger_router.arm(wait interval DEFAULT NULL)
RETURNS void
AS 'MODULE_PATHNAME', 'ledger_router_arm'
LANGUAGE C VOLATILE PARALLEL UNSAFE;
COMMENT ON FUNCTION ledger_router.arm(interval) IS
'Arms the deadline of the next call to a node: ledger_router.call_timeout plus wait';

CREATE FUNCTION ledger_router.disarm()
RETURNS boolean
AS 'MODULE_PATHNAME', 'ledger_router_disarm'
LANGUAGE C VOLATILE PARALLEL UNSAFE;
COMMENT ON FUNCTION ledger_router.disarm() IS
'Disarms the deadline; true when it had passed (and so cancelled the call)';

-- The PL/Proxy partition of the node that owns a stream.  A write first
-- takes a shared advisory lock on the slot's group (class 19538, 'LR'),
-- held to the end of the transaction, so that move_slots can wait for the
-- writes that still go to a slot's old node; then it reads the slot map.
-- Last, it arms the deadline of the call that follows.
CREATE FUNCTION ledger_router.route(stream text, writing boolean, wait interval DEFAULT NULL)
RETURNS integer
LANGUAGE plpgsql VOLATILE PARALLEL UNSAFE
AS $route$
DECLARE
	stream_slot	integer := ledger_router.slot_of(stream);
	target		record;
BEGIN
	IF stream_slot IS NULL THEN
		-- any node answers a NULL stream with ledger's own error
		SELECT n.partition INTO target FROM ledger_router.nodes n ORDER BY n.partition LIMIT 1;
		IF NOT FOUND THEN
			PERFORM ledger_router.no_nodes();
		END IF;
		PERFORM ledger_router.arm(wait);
		RETURN target.partition;
	END IF;
	IF writing THEN
		PERFORM pg_catalog.pg_advisory_xact_lock_shared(19538, stream_slot OPERATOR(pg_catalog.>>) 4);
	END IF;
	SELECT n.partition, s.moving_to IS NOT NULL AND p.stream IS NULL AS moving,
		   (SELECT m.name FROM ledger_router.nodes m WHERE m.node OPERATOR(pg_catalog.=) s.moving_to) AS moving_to
	  INTO target
	  FROM ledger_router.slots s
	  LEFT JOIN ledger_router.pins p ON p.stream OPERATOR(pg_catalog.=) route.stream
	  JOIN ledger_router.nodes n ON n.node OPERATOR(pg_catalog.=) COALESCE(p.node, s.node)
	 WHERE s.slot OPERATOR(pg_catalog.=) stream_slot;
	IF NOT FOUND THEN
		PERFORM ledger_router.no_nodes();
	END IF;
	IF writing AND target.moving THEN
		RAISE EXCEPTION USING ERRCODE = '55006',
			MESSAGE = pg_catalog.format('stream "%s" is in slot %s, which is moving to node "%s"',
										ledger_router.quote_value(stream), stream_slot, target.moving_to),
			DETAIL = 'Writes to the streams of a moving slot wait until ledger_router.finish_move.',
			HINT = 'Retry in a moment.';
	END IF;
	PERFORM ledger_router.arm(wait);
	RETURN target.partition;
END
$route$;
COMMENT ON FUNCTION ledger_router.route(text, boolean, interval) IS
'The PL/Proxy partition of the node that owns a stream (its pin, else its slot''s node); a write waits for a move of its slot; arms the call''s deadline';

-- The node names that do not answer: the one behind a partition, or, for a
-- call that ran on every node, each node that fails a probe.
CREATE FUNCTION ledger_router.unreachable(part integer)
RETURNS text
LANGUAGE plpgsql VOLATILE PARALLEL UNSAFE
AS $unreachable$
DECLARE
	names	text[] := '{}';
	r		record;
BEGIN
	IF part IS NOT NULL THEN
		RETURN (SELECT pg_catalog.format('"%s"', n.name) FROM ledger_router.nodes n
				 WHERE n.partition OPERATOR(pg_catalog.=) part);
	END IF;
	FOR r IN SELECT n.partition, n.name FROM ledger_router.nodes n ORDER BY n.partition
	LOOP
		BEGIN
			PERFORM ledger_router.arm();
			PERFORM ledger_router.node_identity(r.partition);
			PERFORM ledger_router.disarm();
		EXCEPTION WHEN OTHERS OR query_canceled THEN
			IF SQLSTATE OPERATOR(pg_catalog.=) '57014' AND NOT ledger_router.disarm() THEN
				RAISE;
			END IF;
			names := names OPERATOR(pg_catalog.||) pg_catalog.format('"%s"', r.name);
		END;
	END LOOP;
	-- every node answers now: the failure was passing
	IF pg_catalog.cardinality(names) OPERATOR(pg_catalog.=) 0 THEN
		RETURN '(none now)';
	END IF;
	RETURN pg_catalog.array_to_string(names, ', ');
END
$unreachable$;
COMMENT ON FUNCTION ledger_router.unreachable(integer) IS
'Names the node behind a partition, or (NULL) every node that does not answer a probe';

-- Re-raises an error caught around a PL/Proxy call, disarming the call's
-- deadline.  A node's own error keeps its SQLSTATE, message, detail and
-- hint, without PL/Proxy's prefixes, so that errors read as ledger's.  A
-- connection that fails, or a deadline that passed, becomes 08006 naming
-- the node.  Anything else is raised as it came.
CREATE FUNCTION ledger_router.rethrow(part integer, state text, message text, detail text, hint text)
RETURNS void
LANGUAGE plpgsql VOLATILE PARALLEL UNSAFE
AS $rethrow$
DECLARE
	timed_out	boolean := ledger_router.disarm();
	remote		text[] := pg_catalog.regexp_match(message, '^\S+\(\d+\): \[[^]]*\] REMOTE [^:]*: (.*)$');
BEGIN
	IF state OPERATOR(pg_catalog.=) '57014' AND timed_out THEN
		state := '08006';
		message := pg_catalog.format('ledger router: node %s did not answer within ledger_router.call_timeout (%s)',
									 ledger_router.unreachable(part),
									 pg_catalog.current_setting('ledger_router.call_timeout'));
		detail := 'The node accepts connections or holds one open, but does not answer.';
		hint := 'Check the node; raise ledger_router.call_timeout if it is only slow.';
	ELSIF remote IS NOT NULL THEN
		message := remote[1];
		detail := pg_catalog.regexp_replace(detail, '^Remote detail: ', '');
		hint := pg_catalog.regexp_replace(hint, '^Remote hint: ', '');
	ELSIF state OPERATOR(pg_catalog.=) 'XX000'
		  AND message OPERATOR(pg_catalog.~) '^PL/Proxy function \S+: (\[[^]]*\] |connect timeout|query timeout)' THEN
		state := '08006';
		detail := 'PL/Proxy: ' OPERATOR(pg_catalog.||)
			pg_catalog.regexp_replace(message, '^PL/Proxy function \S+: (\[[^]]*\] )?', '');
		message := pg_catalog.format('ledger router: node %s cannot be reached', ledger_router.unreachable(part));
		hint := 'Check that the node runs and accepts connections from the router; ledger_router.nodes holds its connection string.';
	END IF;
	IF detail OPERATOR(pg_catalog.<>) '' AND hint OPERATOR(pg_catalog.<>) '' THEN
		RAISE EXCEPTION USING ERRCODE = state, MESSAGE = message, DETAIL = detail, HINT = hint;
	ELSIF detail OPERATOR(pg_catalog.<>) '' THEN
		RAISE EXCEPTION USING ERRCODE = state, MESSAGE = message, DETAIL = detail;
	ELSIF hint OPERATOR(pg_catalog.<>) '' THEN
		RAISE EXCEPTION USING ERRCODE = state, MESSAGE = message, HINT = hint;
	ELSE
		RAISE EXCEPTION USING ERRCODE = state, MESSAGE = message;
	END IF;
END
$rethrow$;
COMMENT ON FUNCTION ledger_router.rethrow(integer, text, text, text, text) IS
'Re-raises an error of a PL/Proxy call: a node''s error as the node raised it, a failed connection or a passed deadline as 08006 naming the node';

-- ---------------------------------------------------------------------------
-- Calls on one node (RUN ON part) or on every node (RUN ON ALL).  Internal:
-- the functions in schema ledger and below call them.
-- ---------------------------------------------------------------------------
CREATE FUNCTION ledger_router.node_append(part integer, stream text, payload jsonb, order_key text,
	dedup_key text, metadata jsonb, tags text[], schema_version integer, expected_seq bigint)
RETURNS bigint
LANGUAGE plproxy
AS $$
	CLUSTER 'ledger_nodes';
	RUN ON part;
	SELECT ledger.append(stream, payload, order_key, dedup_key, metadata, tags, schema_version, expected_seq);
$$;

CREATE FUNCTION ledger_router.node_append_batch(part integer, stream text, entries ledger.append_input[],
	schema_version integer, expected_seq bigint)
RETURNS TABLE (ord integer, id bigint, seq bigint, duplicate boolean)
LANGUAGE plproxy
AS $$
	CLUSTER 'ledger_nodes';
	RUN ON part;
	SELECT * FROM ledger.append_batch(stream, entries, schema_version, expected_seq);
$$;

CREATE FUNCTION ledger_router.node_append_batch(part integer, stream text, entries jsonb,
	schema_version integer, expected_seq bigint)
RETURNS TABLE (ord integer, id bigint, seq bigint, duplicate boolean)
LANGUAGE plproxy
AS $$
	CLUSTER 'ledger_nodes';
	RUN ON part;
	SELECT * FROM ledger.append_batch(stream, entries, schema_version, expected_seq);
$$;

CREATE FUNCTION ledger_router.node_append_batch(part integer, stream text, entries text,
	schema_version integer, expected_seq bigint)
RETURNS TABLE (ord integer, id bigint, seq bigint, duplicate boolean)
LANGUAGE plproxy
AS $$
	CLUSTER 'ledger_nodes';
	RUN ON part;
	SELECT * FROM ledger.append_batch(stream, entries, schema_version, expected_seq);
$$;

CREATE FUNCTION ledger_router.node_read(part integer, stream text, after bigint, lim integer,
	descending boolean, order_key text, tag text, all_tags text[], metadata jsonb,
	annotations jsonb, as_version integer, wait interval)
RETURNS SETOF ledger.entry
LANGUAGE plproxy
AS $$
	CLUSTER 'ledger_nodes';
	RUN ON part;
	SELECT * FROM ledger.read(stream, after, lim, descending, order_key, tag, all_tags,
							  metadata, annotations, as_version, wait);
$$;

CREATE FUNCTION ledger_router.node_get(part integer, stream text, seq bigint)
RETURNS ledger.entry
LANGUAGE plproxy
AS $$
	CLUSTER 'ledger_nodes';
	RUN ON part;
	SELECT * FROM ledger.get(stream, seq);
$$;

CREATE FUNCTION ledger_router.node_count(part integer, stream text)
RETURNS bigint
LANGUAGE plproxy
AS $$
	CLUSTER 'ledger_nodes';
	RUN ON part;
	SELECT ledger.count(stream);
$$;

CREATE FUNCTION ledger_router.node_stat(part integer, stream text)
RETURNS ledger.stream_stat
LANGUAGE plproxy
AS $$
	CLUSTER 'ledger_nodes';
	RUN ON part;
	SELECT * FROM ledger.stat(stream);
$$;

CREATE FUNCTION ledger_router.node_set_tags(part integer, stream text, id bigint, tags text[])
RETURNS void
LANGUAGE plproxy
AS $$
	CLUSTER 'ledger_nodes';
	RUN ON part;
	SELECT ledger.set_tags(stream, id, tags);
$$;

CREATE FUNCTION ledger_router.node_set_annotations(part integer, stream text, id bigint, annotations jsonb)
RETURNS void
LANGUAGE plproxy
AS $$
	CLUSTER 'ledger_nodes';
	RUN ON part;
	SELECT ledger.set_annotations(stream, id, annotations);
$$;

CREATE FUNCTION ledger_router.node_trim(part integer, stream text, before_id bigint)
RETURNS bigint
LANGUAGE plproxy
AS $$
	CLUSTER 'ledger_nodes';
	RUN ON part;
	SELECT ledger.trim(stream, before_id);
$$;

CREATE FUNCTION ledger_router.node_set_schema_version(part integer, streams text, version integer)
RETURNS void
LANGUAGE plproxy
AS $$
	CLUSTER 'ledger_nodes';
	RUN ON part;
	SELECT ledger.set_schema_version(streams, version);
$$;

CREATE FUNCTION ledger_router.node_set_retention(part integer, streams text, max_entries bigint, max_age interval)
RETURNS void
LANGUAGE plproxy
AS $$
	CLUSTER 'ledger_nodes';
	RUN ON part;
	SELECT ledger.set_retention(streams, max_entries, max_age);
$$;

CREATE FUNCTION ledger_router.node_register_upcaster(part integer, streams text, from_version integer,
	to_version integer, rename jsonb, defaults jsonb, remove text[])
RETURNS void
LANGUAGE plproxy
AS $$
	CLUSTER 'ledger_nodes';
	RUN ON part;
	SELECT ledger.register_upcaster(streams, from_version, to_version, rename, defaults, remove);
$$;

-- fn travels as a qualified signature and is resolved on the node
CREATE FUNCTION ledger_router.node_register_upcaster_fn(part integer, streams text, from_version integer,
	to_version integer, fn text)
RETURNS void
LANGUAGE plproxy
AS $$
	CLUSTER 'ledger_nodes';
	RUN ON part;
	SELECT ledger.register_upcaster(streams, from_version, to_version, fn::pg_catalog.regprocedure);
$$;

CREATE FUNCTION ledger_router.node_drop_upcaster(part integer, streams text, from_version integer)
RETURNS void
LANGUAGE plproxy
AS $$
	CLUSTER 'ledger_nodes';
	RUN ON part;
	SELECT ledger.drop_upcaster(streams, from_version);
$$;

CREATE FUNCTION ledger_router.node_streams(part integer, after text, lim integer, prefix text)
RETURNS SETOF text
LANGUAGE plproxy
AS $$
	CLUSTER 'ledger_nodes';
	RUN ON part;
	SELECT * FROM ledger.streams(after, lim, prefix);
$$;

CREATE FUNCTION ledger_router.every_node_streams(after text, lim integer, prefix text)
RETURNS SETOF text
LANGUAGE plproxy
AS $$
	CLUSTER 'ledger_nodes';
	RUN ON ALL;
	SELECT * FROM ledger.streams(after, lim, prefix);
$$;

CREATE FUNCTION ledger_router.node_read_all(part integer, after bigint, lim integer, streams text, wait interval)
RETURNS SETOF ledger.entry
LANGUAGE plproxy
AS $$
	CLUSTER 'ledger_nodes';
	RUN ON part;
	SELECT * FROM ledger.read_all(after, lim, streams, wait);
$$;

-- Each node picks its own cursor out of "after": the largest id that
-- carries its node number in the low bits.
CREATE FUNCTION ledger_router.every_node_read_all(after bigint[], lim integer, streams text)
RETURNS SETOF ledger.entry
LANGUAGE plproxy
AS $$
	CLUSTER 'ledger_nodes';
	RUN ON ALL;
	SELECT e.* FROM ledger.node() AS me,
		ledger.read_all(COALESCE((SELECT pg_catalog.max(c) FROM pg_catalog.unnest(after) AS c
			WHERE (c OPERATOR(pg_catalog.&) ((1::bigint OPERATOR(pg_catalog.<<) me.node_bits) OPERATOR(pg_catalog.-) 1))
				  OPERATOR(pg_catalog.=) me.node), 0), lim, streams) AS e;
$$;

CREATE FUNCTION ledger_router.node_identity(part integer,
	OUT node integer, OUT node_bits integer, OUT has_streams boolean)
RETURNS record
LANGUAGE plproxy
AS $$
	CLUSTER 'ledger_nodes';
	RUN ON part;
	SELECT me.node, me.node_bits,
		   EXISTS (SELECT 1 FROM ledger.streams(NULL, 1)) AS has_streams
	  FROM ledger.node() AS me;
$$;

CREATE FUNCTION ledger_router.node_health(part integer)
RETURNS TABLE (check_name text, ok boolean, detail text)
LANGUAGE plproxy
AS $$
	CLUSTER 'ledger_nodes';
	RUN ON part;
	SELECT * FROM ledger.health();
$$;

COMMENT ON FUNCTION ledger_router.node_append(integer, text, jsonb, text, text, jsonb, text[], integer, bigint) IS 'Internal: ledger.append on one node';
COMMENT ON FUNCTION ledger_router.node_append_batch(integer, text, ledger.append_input[], integer, bigint) IS 'Internal: ledger.append_batch on one node';
COMMENT ON FUNCTION ledger_router.node_append_batch(integer, text, jsonb, integer, bigint) IS 'Internal: ledger.append_batch (jsonb) on one node';
COMMENT ON FUNCTION ledger_router.node_append_batch(integer, text, text, integer, bigint) IS 'Internal: ledger.append_batch (text) on one node';
COMMENT ON FUNCTION ledger_router.node_read(integer, text, bigint, integer, boolean, text, text, text[], jsonb, jsonb, integer, interval) IS 'Internal: ledger.read on one node';
COMMENT ON FUNCTION ledger_router.node_get(integer, text, bigint) IS 'Internal: ledger.get on one node';
COMMENT ON FUNCTION ledger_router.node_count(integer, text) IS 'Internal: ledger.count on one node';
COMMENT ON FUNCTION ledger_router.node_stat(integer, text) IS 'Internal: ledger.stat on one node';
COMMENT ON FUNCTION ledger_router.node_set_tags(integer, text, bigint, text[]) IS 'Internal: ledger.set_tags on one node';
COMMENT ON FUNCTION ledger_router.node_set_annotations(integer, text, bigint, jsonb) IS 'Internal: ledger.set_annotations on one node';
COMMENT ON FUNCTION ledger_router.node_trim(integer, text, bigint) IS 'Internal: ledger.trim on one node';
COMMENT ON FUNCTION ledger_router.node_set_schema_version(integer, text, integer) IS 'Internal: ledger.set_schema_version on one node';
COMMENT ON FUNCTION ledger_router.node_set_retention(integer, text, bigint, interval) IS 'Internal: ledger.set_retention on one node';
COMMENT ON FUNCTION ledger_router.node_register_upcaster(integer, text, integer, integer, jsonb, jsonb, text[]) IS 'Internal: a declarative ledger.register_upcaster on one node';
COMMENT ON FUNCTION ledger_router.node_register_upcaster_fn(integer, text, integer, integer, text) IS 'Internal: a function ledger.register_upcaster on one node';
COMMENT ON FUNCTION ledger_router.node_drop_upcaster(integer, text, integer) IS 'Internal: ledger.drop_upcaster on one node';
COMMENT ON FUNCTION ledger_router.node_streams(integer, text, integer, text) IS 'Internal: ledger.streams on one node';
COMMENT ON FUNCTION ledger_router.every_node_streams(text, integer, text) IS 'Internal: ledger.streams on every node';
COMMENT ON FUNCTION ledger_router.node_read_all(integer, bigint, integer, text, interval) IS 'Internal: ledger.read_all on one node';
COMMENT ON FUNCTION ledger_router.every_node_read_all(bigint[], integer, text) IS 'Internal: ledger.read_all on every node, each after its own cursor';
COMMENT ON FUNCTION ledger_router.node_identity(integer) IS 'Internal: a node''s number and node bits, and whether it holds streams';
COMMENT ON FUNCTION ledger_router.node_health(integer) IS 'Internal: ledger.health on one node';

-- ---------------------------------------------------------------------------
-- The stream-scoped functions of ledger, each run on the stream's node.
-- Each one: route, call, and on error re-raise it as the node raised it.
-- ---------------------------------------------------------------------------
CREATE FUNCTION ledger.append(
	stream			text,
	payload			jsonb,
	order_key		text DEFAULT '',
	dedup_key		text DEFAULT '',
	metadata		jsonb DEFAULT '{}',
	tags			text[] DEFAULT '{}',
	schema_version	integer DEFAULT NULL,
	expected_seq	bigint DEFAULT NULL)
RETURNS bigint
LANGUAGE plpgsql VOLATILE PARALLEL UNSAFE
AS $fn$
DECLARE
	result		bigint;
	part		integer := ledger_router.route(append.stream, true);
	e_state		text;
	e_message	text;
	e_detail	text;
	e_hint		text;
BEGIN
	result := ledger_router.node_append(part, append.stream, append.payload, append.order_key,
		append.dedup_key, append.metadata, append.tags, append.schema_version, append.expected_seq);
	PERFORM ledger_router.disarm();
	RETURN result;
EXCEPTION WHEN OTHERS OR query_canceled THEN
	GET STACKED DIAGNOSTICS e_state = RETURNED_SQLSTATE, e_message = MESSAGE_TEXT,
		e_detail = PG_EXCEPTION_DETAIL, e_hint = PG_EXCEPTION_HINT;
	PERFORM ledger_router.rethrow(part, e_state, e_message, e_detail, e_hint);
END
$fn$;
COMMENT ON FUNCTION ledger.append(text, jsonb, text, text, jsonb, text[], integer, bigint) IS
'Appends one entry to a stream on its node and returns its id; with a dedup_key already in the stream, writes nothing and returns the existing id';

CREATE FUNCTION ledger.append_batch(
	stream			text,
	entries			ledger.append_input[],
	schema_version	integer DEFAULT NULL,
	expected_seq	bigint DEFAULT NULL)
RETURNS TABLE (ord integer, id bigint, seq bigint, duplicate boolean)
LANGUAGE plpgsql VOLATILE PARALLEL UNSAFE ROWS 100
AS $fn$
DECLARE
	part		integer := ledger_router.route(append_batch.stream, true);
	e_state		text;
	e_message	text;
	e_detail	text;
	e_hint		text;
BEGIN
	RETURN QUERY SELECT * FROM ledger_router.node_append_batch(part, append_batch.stream,
		append_batch.entries, append_batch.schema_version, append_batch.expected_seq);
	PERFORM ledger_router.disarm();
EXCEPTION WHEN OTHERS OR query_canceled THEN
	GET STACKED DIAGNOSTICS e_state = RETURNED_SQLSTATE, e_message = MESSAGE_TEXT,
		e_detail = PG_EXCEPTION_DETAIL, e_hint = PG_EXCEPTION_HINT;
	PERFORM ledger_router.rethrow(part, e_state, e_message, e_detail, e_hint);
END
$fn$;
COMMENT ON FUNCTION ledger.append_batch(text, ledger.append_input[], integer, bigint) IS
'Appends entries to a stream on its node atomically; one row per input with its id, seq and whether it was a duplicate';

CREATE FUNCTION ledger.append_batch(
	stream			text,
	entries			jsonb,
	schema_version	integer DEFAULT NULL,
	expected_seq	bigint DEFAULT NULL)
RETURNS TABLE (ord integer, id bigint, seq bigint, duplicate boolean)
LANGUAGE plpgsql VOLATILE PARALLEL UNSAFE ROWS 100
AS $fn$
DECLARE
	part		integer := ledger_router.route(append_batch.stream, true);
	e_state		text;
	e_message	text;
	e_detail	text;
	e_hint		text;
BEGIN
	RETURN QUERY SELECT * FROM ledger_router.node_append_batch(part, append_batch.stream,
		append_batch.entries, append_batch.schema_version, append_batch.expected_seq);
	PERFORM ledger_router.disarm();
EXCEPTION WHEN OTHERS OR query_canceled THEN
	GET STACKED DIAGNOSTICS e_state = RETURNED_SQLSTATE, e_message = MESSAGE_TEXT,
		e_detail = PG_EXCEPTION_DETAIL, e_hint = PG_EXCEPTION_HINT;
	PERFORM ledger_router.rethrow(part, e_state, e_message, e_detail, e_hint);
END
$fn$;
COMMENT ON FUNCTION ledger.append_batch(text, jsonb, integer, bigint) IS
'Appends a JSON array of {payload, order_key, dedup_key, metadata, tags} objects atomically, on the stream''s node';

CREATE FUNCTION ledger.append_batch(
	stream			text,
	entries			text,
	schema_version	integer DEFAULT NULL,
	expected_seq	bigint DEFAULT NULL)
RETURNS TABLE (ord integer, id bigint, seq bigint, duplicate boolean)
LANGUAGE plpgsql VOLATILE PARALLEL UNSAFE ROWS 100
AS $fn$
DECLARE
	part		integer := ledger_router.route(append_batch.stream, true);
	e_state		text;
	e_message	text;
	e_detail	text;
	e_hint		text;
BEGIN
	RETURN QUERY SELECT * FROM ledger_router.node_append_batch(part, append_batch.stream,
		append_batch.entries, append_batch.schema_version, append_batch.expected_seq);
	PERFORM ledger_router.disarm();
EXCEPTION WHEN OTHERS OR query_canceled THEN
	GET STACKED DIAGNOSTICS e_state = RETURNED_SQLSTATE, e_message = MESSAGE_TEXT,
		e_detail = PG_EXCEPTION_DETAIL, e_hint = PG_EXCEPTION_HINT;
	PERFORM ledger_router.rethrow(part, e_state, e_message, e_detail, e_hint);
END
$fn$;
COMMENT ON FUNCTION ledger.append_batch(text, text, integer, bigint) IS
'The jsonb form of append_batch, for a JSON array given as text or as an untyped literal';

CREATE FUNCTION ledger.read(
	stream			text,
	after			bigint DEFAULT NULL,
	"limit"			integer DEFAULT 100,
	descending		boolean DEFAULT false,
	order_key		text DEFAULT NULL,
	tag				text DEFAULT NULL,
	all_tags		text[] DEFAULT NULL,
	metadata		jsonb DEFAULT NULL,
	annotations		jsonb DEFAULT NULL,
	as_version		integer DEFAULT NULL,
	wait			interval DEFAULT NULL)
RETURNS SETOF ledger.entry
LANGUAGE plpgsql VOLATILE PARALLEL UNSAFE ROWS 100
AS $fn$
DECLARE
	part		integer := ledger_router.route(read.stream, false, read.wait);
	e_state		text;
	e_message	text;
	e_detail	text;
	e_hint		text;
BEGIN
	RETURN QUERY SELECT * FROM ledger_router.node_read(part, read.stream, read.after, read."limit",
		read.descending, read.order_key, read.tag, read.all_tags, read.metadata, read.annotations,
		read.as_version, read.wait);
	PERFORM ledger_router.disarm();
EXCEPTION WHEN OTHERS OR query_canceled THEN
	GET STACKED DIAGNOSTICS e_state = RETURNED_SQLSTATE, e_message = MESSAGE_TEXT,
		e_detail = PG_EXCEPTION_DETAIL, e_hint = PG_EXCEPTION_HINT;
	PERFORM ledger_router.rethrow(part, e_state, e_message, e_detail, e_hint);
END
$fn$;
COMMENT ON FUNCTION ledger.read(text, bigint, integer, boolean, text, text, text[], jsonb, jsonb, integer, interval) IS
'Reads entries of one stream from its node after a cursor id, optionally filtered, upcast and waiting for new entries';

CREATE FUNCTION ledger.get(stream text, seq bigint)
RETURNS ledger.entry
LANGUAGE plpgsql STABLE PARALLEL RESTRICTED
AS $fn$
DECLARE
	result		ledger.entry;
	part		integer := ledger_router.route(get.stream, false);
	e_state		text;
	e_message	text;
	e_detail	text;
	e_hint		text;
BEGIN
	result := ledger_router.node_get(part, get.stream, get.seq);
	PERFORM ledger_router.disarm();
	RETURN result;
EXCEPTION WHEN OTHERS OR query_canceled THEN
	GET STACKED DIAGNOSTICS e_state = RETURNED_SQLSTATE, e_message = MESSAGE_TEXT,
		e_detail = PG_EXCEPTION_DETAIL, e_hint = PG_EXCEPTION_HINT;
	PERFORM ledger_router.rethrow(part, e_state, e_message, e_detail, e_hint);
END
$fn$;
COMMENT ON FUNCTION ledger.get(text, bigint) IS
'Returns the entry at a seq of a stream, from its node; 22003 when it was trimmed or lies beyond the last entry';

CREATE FUNCTION ledger.count(stream text)
RETURNS bigint
LANGUAGE plpgsql STABLE PARALLEL RESTRICTED
AS $fn$
DECLARE
	result		bigint;
	part		integer := ledger_router.route(count.stream, false);
	e_state		text;
	e_message	text;
	e_detail	text;
	e_hint		text;
BEGIN
	result := ledger_router.node_count(part, count.stream);
	PERFORM ledger_router.disarm();
	RETURN result;
EXCEPTION WHEN OTHERS OR query_canceled THEN
	GET STACKED DIAGNOSTICS e_state = RETURNED_SQLSTATE, e_message = MESSAGE_TEXT,
		e_detail = PG_EXCEPTION_DETAIL, e_hint = PG_EXCEPTION_HINT;
	PERFORM ledger_router.rethrow(part, e_state, e_message, e_detail, e_hint);
END
$fn$;
COMMENT ON FUNCTION ledger.count(text) IS 'Number of entries in a stream, from its node, without scanning it';

CREATE FUNCTION ledger.stat(stream text)
RETURNS ledger.stream_stat
LANGUAGE plpgsql STABLE PARALLEL RESTRICTED
AS $fn$
DECLARE
	result		ledger.stream_stat;
	part		integer := ledger_router.route(stat.stream, false);
	e_state		text;
	e_message	text;
	e_detail	text;
	e_hint		text;
BEGIN
	result := ledger_router.node_stat(part, stat.stream);
	PERFORM ledger_router.disarm();
	RETURN result;
EXCEPTION WHEN OTHERS OR query_canceled THEN
	GET STACKED DIAGNOSTICS e_state = RETURNED_SQLSTATE, e_message = MESSAGE_TEXT,
		e_detail = PG_EXCEPTION_DETAIL, e_hint = PG_EXCEPTION_HINT;
	PERFORM ledger_router.rethrow(part, e_state, e_message, e_detail, e_hint);
END
$fn$;
COMMENT ON FUNCTION ledger.stat(text) IS 'Count, id and seq range, schema version and times of a stream, from its node';

-- Every node's streams, merged: each node returns up to "limit" names after
-- the cursor, so the first "limit" of the union are the answer.
CREATE FUNCTION ledger.streams(
	after		text DEFAULT NULL,
	"limit"		integer DEFAULT 100,
	prefix		text DEFAULT NULL)
RETURNS SETOF text
LANGUAGE plpgsql STABLE PARALLEL RESTRICTED ROWS 100
AS $fn$
DECLARE
	e_state		text;
	e_message	text;
	e_detail	text;
	e_hint		text;
BEGIN
	IF NOT EXISTS (SELECT 1 FROM ledger_router.nodes) THEN
		PERFORM ledger_router.no_nodes();
	END IF;
	PERFORM ledger_router.arm();
	RETURN QUERY SELECT s.name FROM ledger_router.every_node_streams(streams.after, streams."limit", streams.prefix) AS s(name)
		ORDER BY s.name COLLATE "C" LIMIT streams."limit";
	PERFORM ledger_router.disarm();
EXCEPTION WHEN OTHERS OR query_canceled THEN
	GET STACKED DIAGNOSTICS e_state = RETURNED_SQLSTATE, e_message = MESSAGE_TEXT,
		e_detail = PG_EXCEPTION_DETAIL, e_hint = PG_EXCEPTION_HINT;
	PERFORM ledger_router.rethrow(NULL, e_state, e_message, e_detail, e_hint);
END
$fn$;
COMMENT ON FUNCTION ledger.streams(text, integer, text) IS
'Names of streams holding at least one entry on any node, ascending, after a name and/or under a prefix';

CREATE FUNCTION ledger.set_tags(stream text, id bigint, tags text[])
RETURNS void
LANGUAGE plpgsql VOLATILE PARALLEL UNSAFE
AS $fn$
DECLARE
	part		integer := ledger_router.route(set_tags.stream, true);
	e_state		text;
	e_message	text;
	e_detail	text;
	e_hint		text;
BEGIN
	PERFORM ledger_router.node_set_tags(part, set_tags.stream, set_tags.id, set_tags.tags);
	PERFORM ledger_router.disarm();
EXCEPTION WHEN OTHERS OR query_canceled THEN
	GET STACKED DIAGNOSTICS e_state = RETURNED_SQLSTATE, e_message = MESSAGE_TEXT,
		e_detail = PG_EXCEPTION_DETAIL, e_hint = PG_EXCEPTION_HINT;
	PERFORM ledger_router.rethrow(part, e_state, e_message, e_detail, e_hint);
END
$fn$;
COMMENT ON FUNCTION ledger.set_tags(text, bigint, text[]) IS 'Replaces the tags of an entry, on its stream''s node';

CREATE FUNCTION ledger.set_annotations(stream text, id bigint, annotations jsonb)
RETURNS void
LANGUAGE plpgsql VOLATILE PARALLEL UNSAFE
AS $fn$
DECLARE
	part		integer := ledger_router.route(set_annotations.stream, true);
	e_state		text;
	e_message	text;
	e_detail	text;
	e_hint		text;
BEGIN
	PERFORM ledger_router.node_set_annotations(part, set_annotations.stream, set_annotations.id,
		set_annotations.annotations);
	PERFORM ledger_router.disarm();
EXCEPTION WHEN OTHERS OR query_canceled THEN
	GET STACKED DIAGNOSTICS e_state = RETURNED_SQLSTATE, e_message = MESSAGE_TEXT,
		e_detail = PG_EXCEPTION_DETAIL, e_hint = PG_EXCEPTION_HINT;
	PERFORM ledger_router.rethrow(part, e_state, e_message, e_detail, e_hint);
END
$fn$;
COMMENT ON FUNCTION ledger.set_annotations(text, bigint, jsonb) IS
'Merges string annotations into an entry, on its stream''s node; a JSON null value deletes that key';

CREATE FUNCTION ledger.trim(stream text, before_id bigint)
RETURNS bigint
LANGUAGE plpgsql VOLATILE PARALLEL UNSAFE
AS $fn$
DECLARE
	result		bigint;
	part		integer := ledger_router.route(trim.stream, true);
	e_state		text;
	e_message	text;
	e_detail	text;
	e_hint		text;
BEGIN
	result := ledger_router.node_trim(part, trim.stream, trim.before_id);
	PERFORM ledger_router.disarm();
	RETURN result;
EXCEPTION WHEN OTHERS OR query_canceled THEN
	GET STACKED DIAGNOSTICS e_state = RETURNED_SQLSTATE, e_message = MESSAGE_TEXT,
		e_detail = PG_EXCEPTION_DETAIL, e_hint = PG_EXCEPTION_HINT;
	PERFORM ledger_router.rethrow(part, e_state, e_message, e_detail, e_hint);
END
$fn$;
COMMENT ON FUNCTION ledger.trim(text, bigint) IS
'Deletes the entries of a stream with id <= before_id, on its node, and returns how many';

-- ---------------------------------------------------------------------------
-- Pattern-scoped settings go to every node, one after the other, so that a
-- failure names its node.  The router records them (first, so that a router
-- that cannot write changes no node) for nodes that join later.  A failure
-- leaves the nodes before it changed and the record rolled back: every one
-- of these calls can simply be repeated.
-- ---------------------------------------------------------------------------
CREATE FUNCTION ledger.set_schema_version(streams text, version integer)
RETURNS void
LANGUAGE plpgsql VOLATILE PARALLEL UNSAFE
AS $fn$
DECLARE
	part		integer;
	e_state		text;
	e_message	text;
	e_detail	text;
	e_hint		text;
BEGIN
	IF NOT EXISTS (SELECT 1 FROM ledger_router.nodes) THEN
		PERFORM ledger_router.no_nodes();
	END IF;
	-- recorded first: a router that cannot write (a standby) changes no node
	INSERT INTO ledger_router.schema_versions AS v (pattern, version)
	VALUES (set_schema_version.streams, set_schema_version.version)
	ON CONFLICT (pattern) DO UPDATE SET version = excluded.version;
	FOR part IN SELECT n.partition FROM ledger_router.nodes n ORDER BY n.partition
	LOOP
		PERFORM ledger_router.arm();
		PERFORM ledger_router.node_set_schema_version(part, set_schema_version.streams, set_schema_version.version);
	END LOOP;
	part := NULL;
	PERFORM ledger_router.disarm();
EXCEPTION WHEN OTHERS OR query_canceled THEN
	GET STACKED DIAGNOSTICS e_state = RETURNED_SQLSTATE, e_message = MESSAGE_TEXT,
		e_detail = PG_EXCEPTION_DETAIL, e_hint = PG_EXCEPTION_HINT;
	PERFORM ledger_router.rethrow(part, e_state, e_message, e_detail, e_hint);
END
$fn$;
COMMENT ON FUNCTION ledger.set_schema_version(text, integer) IS
'Sets, on every node, the schema version that new appends are stamped with and reads upcast to, for streams matching a pattern';

CREATE FUNCTION ledger.set_retention(
	streams		text,
	max_entries	bigint DEFAULT NULL,
	max_age		interval DEFAULT NULL)
RETURNS void
LANGUAGE plpgsql VOLATILE PARALLEL UNSAFE
AS $fn$
DECLARE
	part		integer;
	e_state		text;
	e_message	text;
	e_detail	text;
	e_hint		text;
BEGIN
	IF NOT EXISTS (SELECT 1 FROM ledger_router.nodes) THEN
		PERFORM ledger_router.no_nodes();
	END IF;
	-- recorded first: a router that cannot write (a standby) changes no node
	IF set_retention.max_entries IS NULL AND set_retention.max_age IS NULL THEN
		DELETE FROM ledger_router.retention r WHERE r.pattern OPERATOR(pg_catalog.=) set_retention.streams;
	ELSE
		INSERT INTO ledger_router.retention AS r (pattern, max_entries, max_age)
		VALUES (set_retention.streams, set_retention.max_entries, set_retention.max_age)
		ON CONFLICT (pattern) DO UPDATE SET max_entries = excluded.max_entries, max_age = excluded.max_age;
	END IF;
	FOR part IN SELECT n.partition FROM ledger_router.nodes n ORDER BY n.partition
	LOOP
		PERFORM ledger_router.arm();
		PERFORM ledger_router.node_set_retention(part, set_retention.streams, set_retention.max_entries,
			set_retention.max_age);
	END LOOP;
	part := NULL;
	PERFORM ledger_router.disarm();
EXCEPTION WHEN OTHERS OR query_canceled THEN
	GET STACKED DIAGNOSTICS e_state = RETURNED_SQLSTATE, e_message = MESSAGE_TEXT,
		e_detail = PG_EXCEPTION_DETAIL, e_hint = PG_EXCEPTION_HINT;
	PERFORM ledger_router.rethrow(part, e_state, e_message, e_detail, e_hint);
END
$fn$;
COMMENT ON FUNCTION ledger.set_retention(text, bigint, interval) IS
'Sets (or with NULLs clears), on every node, the retention limits of streams matching a pattern';

CREATE FUNCTION ledger.register_upcaster(
	streams			text,
	from_version	integer,
	to_version		integer,
	rename			jsonb DEFAULT '{}',
	defaults		jsonb DEFAULT '{}',
	remove			text[] DEFAULT '{}')
RETURNS void
LANGUAGE plpgsql VOLATILE PARALLEL UNSAFE
AS $fn$
DECLARE
	part		integer;
	e_state		text;
	e_message	text;
	e_detail	text;
	e_hint		text;
BEGIN
	IF NOT EXISTS (SELECT 1 FROM ledger_router.nodes) THEN
		PERFORM ledger_router.no_nodes();
	END IF;
	-- recorded first: a router that cannot write (a standby) changes no node
	INSERT INTO ledger_router.upcasters AS u (streams, from_version, to_version, rename, defaults, remove, fn)
	VALUES (register_upcaster.streams, register_upcaster.from_version, register_upcaster.to_version,
			register_upcaster.rename, register_upcaster.defaults, register_upcaster.remove, NULL)
	ON CONFLICT ON CONSTRAINT upcasters_pkey DO UPDATE
		SET to_version = excluded.to_version, rename = excluded.rename, defaults = excluded.defaults,
			remove = excluded.remove, fn = NULL;
	FOR part IN SELECT n.partition FROM ledger_router.nodes n ORDER BY n.partition
	LOOP
		PERFORM ledger_router.arm();
		PERFORM ledger_router.node_register_upcaster(part, register_upcaster.streams,
			register_upcaster.from_version, register_upcaster.to_version, register_upcaster.rename,
			register_upcaster.defaults, register_upcaster.remove);
	END LOOP;
	part := NULL;
	PERFORM ledger_router.disarm();
EXCEPTION WHEN OTHERS OR query_canceled THEN
	GET STACKED DIAGNOSTICS e_state = RETURNED_SQLSTATE, e_message = MESSAGE_TEXT,
		e_detail = PG_EXCEPTION_DETAIL, e_hint = PG_EXCEPTION_HINT;
	PERFORM ledger_router.rethrow(part, e_state, e_message, e_detail, e_hint);
END
$fn$;
COMMENT ON FUNCTION ledger.register_upcaster(text, integer, integer, jsonb, jsonb, text[]) IS
'Registers, on every node, a declarative upcaster (rename, then defaults, then remove) from one schema version to another';

-- As in ledger: takes untyped literals for rename/defaults.
CREATE FUNCTION ledger.register_upcaster(
	streams			text,
	from_version	integer,
	to_version		integer,
	rename			text,
	defaults		text DEFAULT '{}',
	remove			text[] DEFAULT '{}')
RETURNS void
LANGUAGE sql VOLATILE PARALLEL UNSAFE
BEGIN ATOMIC
	SELECT ledger.register_upcaster(streams, from_version, to_version,
		rename::pg_catalog.jsonb, defaults::pg_catalog.jsonb, remove);
END;
COMMENT ON FUNCTION ledger.register_upcaster(text, integer, integer, text, text, text[]) IS
'The declarative register_upcaster, for rename/defaults given as JSON text or untyped literals';

-- fn must exist on the router too (for the regprocedure argument) and on
-- every node; the nodes get its qualified signature and resolve it there.
CREATE FUNCTION ledger.register_upcaster(
	streams			text,
	from_version	integer,
	to_version		integer,
	fn				regprocedure)
RETURNS void
LANGUAGE plpgsql VOLATILE PARALLEL UNSAFE
AS $fn$
DECLARE
	part		integer;
	signature	text;
	e_state		text;
	e_message	text;
	e_detail	text;
	e_hint		text;
BEGIN
	IF NOT EXISTS (SELECT 1 FROM ledger_router.nodes) THEN
		PERFORM ledger_router.no_nodes();
	END IF;
	SELECT pg_catalog.format('%I.%I(%s)', n.nspname, p.proname, pg_catalog.oidvectortypes(p.proargtypes))
	  INTO signature
	  FROM pg_catalog.pg_proc p JOIN pg_catalog.pg_namespace n ON n.oid OPERATOR(pg_catalog.=) p.pronamespace
	 WHERE p.oid OPERATOR(pg_catalog.=) register_upcaster.fn::pg_catalog.oid;
	-- recorded first: a router that cannot write (a standby) changes no node
	INSERT INTO ledger_router.upcasters AS u (streams, from_version, to_version, rename, defaults, remove, fn)
	VALUES (register_upcaster.streams, register_upcaster.from_version, register_upcaster.to_version,
			NULL, NULL, NULL, signature)
	ON CONFLICT ON CONSTRAINT upcasters_pkey DO UPDATE
		SET to_version = excluded.to_version, rename = NULL, defaults = NULL, remove = NULL, fn = excluded.fn;
	FOR part IN SELECT n.partition FROM ledger_router.nodes n ORDER BY n.partition
	LOOP
		PERFORM ledger_router.arm();
		PERFORM ledger_router.node_register_upcaster_fn(part, register_upcaster.streams,
			register_upcaster.from_version, register_upcaster.to_version, signature);
	END LOOP;
	part := NULL;
	PERFORM ledger_router.disarm();
EXCEPTION WHEN OTHERS OR query_canceled THEN
	GET STACKED DIAGNOSTICS e_state = RETURNED_SQLSTATE, e_message = MESSAGE_TEXT,
		e_detail = PG_EXCEPTION_DETAIL, e_hint = PG_EXCEPTION_HINT;
	PERFORM ledger_router.rethrow(part, e_state, e_message, e_detail, e_hint);
END
$fn$;
COMMENT ON FUNCTION ledger.register_upcaster(text, integer, integer, regprocedure) IS
'Registers, on every node, a function fn(jsonb) RETURNS jsonb as the upcaster from one schema version to another';

CREATE FUNCTION ledger.drop_upcaster(streams text, from_version integer)
RETURNS void
LANGUAGE plpgsql VOLATILE PARALLEL UNSAFE
AS $fn$
DECLARE
	part		integer;
	e_state		text;
	e_message	text;
	e_detail	text;
	e_hint		text;
BEGIN
	IF NOT EXISTS (SELECT 1 FROM ledger_router.nodes) THEN
		PERFORM ledger_router.no_nodes();
	END IF;
	-- recorded first: a router that cannot write (a standby) changes no node
	DELETE FROM ledger_router.upcasters u
	 WHERE u.streams OPERATOR(pg_catalog.=) drop_upcaster.streams
	   AND u.from_version OPERATOR(pg_catalog.=) drop_upcaster.from_version;
	FOR part IN SELECT n.partition FROM ledger_router.nodes n ORDER BY n.partition
	LOOP
		PERFORM ledger_router.arm();
		PERFORM ledger_router.node_drop_upcaster(part, drop_upcaster.streams, drop_upcaster.from_version);
	END LOOP;
	part := NULL;
	PERFORM ledger_router.disarm();
EXCEPTION WHEN OTHERS OR query_canceled THEN
	GET STACKED DIAGNOSTICS e_state = RETURNED_SQLSTATE, e_message = MESSAGE_TEXT,
		e_detail = PG_EXCEPTION_DETAIL, e_hint = PG_EXCEPTION_HINT;
	PERFORM ledger_router.rethrow(part, e_state, e_message, e_detail, e_hint);
END
$fn$;
COMMENT ON FUNCTION ledger.drop_upcaster(text, integer) IS
'Removes, on every node, the upcaster registered for a pattern and from_version';

-- ---------------------------------------------------------------------------
-- Consumers of every stream: one cursor per node, as Kafka keeps one offset
-- per partition.  Each node's read_all keeps its own horizon, so a consumer
-- that advances each node's cursor to the last id it got from that node
-- never skips an entry.
-- ---------------------------------------------------------------------------
CREATE FUNCTION ledger_router.read_node(
	node		text,
	after		bigint DEFAULT 0,
	"limit"		integer DEFAULT 100,
	streams		text DEFAULT NULL,
	wait		interval DEFAULT NULL)
RETURNS SETOF ledger.entry
LANGUAGE plpgsql VOLATILE PARALLEL UNSAFE ROWS 100
AS $fn$
DECLARE
	part		integer;
	e_state		text;
	e_message	text;
	e_detail	text;
	e_hint		text;
BEGIN
	SELECT n.partition INTO part FROM ledger_router.nodes n WHERE n.name OPERATOR(pg_catalog.=) read_node.node;
	IF NOT FOUND THEN
		RAISE EXCEPTION USING ERRCODE = '42704',
			MESSAGE = pg_catalog.format('the ledger router has no node "%s"',
										COALESCE(ledger_router.quote_value(read_node.node), 'NULL'));
	END IF;
	BEGIN
		PERFORM ledger_router.arm(read_node.wait);
		RETURN QUERY SELECT * FROM ledger_router.node_read_all(part, read_node.after, read_node."limit",
			read_node.streams, read_node.wait);
		PERFORM ledger_router.disarm();
	EXCEPTION WHEN OTHERS OR query_canceled THEN
		GET STACKED DIAGNOSTICS e_state = RETURNED_SQLSTATE, e_message = MESSAGE_TEXT,
			e_detail = PG_EXCEPTION_DETAIL, e_hint = PG_EXCEPTION_HINT;
		PERFORM ledger_router.rethrow(part, e_state, e_message, e_detail, e_hint);
	END;
END
$fn$;
COMMENT ON FUNCTION ledger_router.read_node(text, bigint, integer, text, interval) IS
'ledger.read_all on one node: a consumer of every stream keeps one cursor per node and reads each with this';

CREATE FUNCTION ledger_router.read_all(
	after		bigint[] DEFAULT '{}',
	"limit"		integer DEFAULT 100,
	streams		text DEFAULT NULL)
RETURNS TABLE (node text, id bigint, stream text, seq bigint, payload jsonb, order_key text,
			   dedup_key text, schema_version integer, metadata jsonb, tags text[],
			   annotations jsonb, created_at timestamptz, updated_at timestamptz)
LANGUAGE plpgsql VOLATILE PARALLEL UNSAFE ROWS 100
AS $fn$
DECLARE
	e_state		text;
	e_message	text;
	e_detail	text;
	e_hint		text;
BEGIN
	IF NOT EXISTS (SELECT 1 FROM ledger_router.nodes) THEN
		PERFORM ledger_router.no_nodes();
	END IF;
	PERFORM ledger_router.arm();
	RETURN QUERY
	SELECT n.name::text, e.id, e.stream, e.seq, e.payload, e.order_key, e.dedup_key, e.schema_version,
		   e.metadata, e.tags, e.annotations, e.created_at, e.updated_at
	  FROM ledger_router.every_node_read_all(COALESCE(read_all.after, '{}'), read_all."limit", read_all.streams) AS e
	  LEFT JOIN ledger_router.nodes n
		ON n.node::bigint OPERATOR(pg_catalog.=)
		   (e.id OPERATOR(pg_catalog.&) ((1::bigint OPERATOR(pg_catalog.<<) n.node_bits) OPERATOR(pg_catalog.-) 1))
	 ORDER BY n.node, e.id;
	PERFORM ledger_router.disarm();
EXCEPTION WHEN OTHERS OR query_canceled THEN
	GET STACKED DIAGNOSTICS e_state = RETURNED_SQLSTATE, e_message = MESSAGE_TEXT,
		e_detail = PG_EXCEPTION_DETAIL, e_hint = PG_EXCEPTION_HINT;
	PERFORM ledger_router.rethrow(NULL, e_state, e_message, e_detail, e_hint);
END
$fn$;
COMMENT ON FUNCTION ledger_router.read_all(bigint[], integer, text) IS
'One page of every node''s read_all, tagged with the node; after holds the last id seen from each node (any order), a node without one starts at 0';

-- ---------------------------------------------------------------------------
-- Administration
-- ---------------------------------------------------------------------------
CREATE FUNCTION ledger_router.node_of(stream text)
RETURNS text
LANGUAGE sql STABLE PARALLEL SAFE
BEGIN ATOMIC
	SELECT n.name::text
	  FROM ledger_router.slots s
	  LEFT JOIN ledger_router.pins p ON p.stream OPERATOR(pg_catalog.=) node_of.stream
	  JOIN ledger_router.nodes n ON n.node OPERATOR(pg_catalog.=) COALESCE(p.node, s.node)
	 WHERE s.slot OPERATOR(pg_catalog.=) ledger_router.slot_of(node_of.stream);
END;
COMMENT ON FUNCTION ledger_router.node_of(text) IS 'The name of the node that owns a stream';

-- Replays the settings the router recorded onto one node.
CREATE FUNCTION ledger_router.replay_settings(part integer)
RETURNS void
LANGUAGE plpgsql VOLATILE PARALLEL UNSAFE
AS $fn$
DECLARE
	r	record;
BEGIN
	FOR r IN SELECT * FROM ledger_router.schema_versions v ORDER BY v.pattern
	LOOP
		PERFORM ledger_router.arm();
		PERFORM ledger_router.node_set_schema_version(part, r.pattern, r.version);
	END LOOP;
	FOR r IN SELECT * FROM ledger_router.retention t ORDER BY t.pattern
	LOOP
		PERFORM ledger_router.arm();
		PERFORM ledger_router.node_set_retention(part, r.pattern, r.max_entries, r.max_age);
	END LOOP;
	FOR r IN SELECT * FROM ledger_router.upcasters u ORDER BY u.streams, u.from_version
	LOOP
		IF r.fn IS NULL THEN
			PERFORM ledger_router.arm();
			PERFORM ledger_router.node_register_upcaster(part, r.streams, r.from_version, r.to_version,
				r.rename, r.defaults, r.remove);
		ELSE
			PERFORM ledger_router.arm();
			PERFORM ledger_router.node_register_upcaster_fn(part, r.streams, r.from_version,
				r.to_version, r.fn);
		END IF;
	END LOOP;
	PERFORM ledger_router.disarm();
END
$fn$;
COMMENT ON FUNCTION ledger_router.replay_settings(integer) IS
'Gives one node the schema versions, retention limits and upcasters the router recorded';

-- Needs a superuser (no role is granted it): it aims the router's
-- connections at a server, as ledger.sink_hosts does for sinks.
CREATE FUNCTION ledger_router.add_node(name text, connstr text, node integer)
RETURNS void
LANGUAGE plpgsql VOLATILE PARALLEL UNSAFE
AS $fn$
DECLARE
	part		integer;
	ident		record;
	bits		integer;
	e_state		text;
	e_message	text;
	e_detail	text;
	e_hint		text;
BEGIN
	IF add_node.name IS NULL OR add_node.name OPERATOR(pg_catalog.=) '' OR add_node.connstr IS NULL
	   OR add_node.node IS NULL OR add_node.node OPERATOR(pg_catalog.<) 0 THEN
		RAISE EXCEPTION USING ERRCODE = '22023',
			MESSAGE = 'a node needs a name, a connection string and a node number >= 0';
	END IF;
	IF add_node.connstr OPERATOR(pg_catalog.~*) '(^|[\s?&])password\s*=' OR
	   add_node.connstr OPERATOR(pg_catalog.~*) '^postgres(ql)?://[^/@]*:[^/@]*@' THEN
		RAISE EXCEPTION USING ERRCODE = '22023',
			MESSAGE = pg_catalog.format('the connection string of node "%s" contains a password',
										ledger_router.quote_value(add_node.name)),
			DETAIL = 'Every user of the router database can read the connection strings.',
			HINT = 'Give the password in a user mapping (CREATE USER MAPPING FOR … SERVER ledger_nodes OPTIONS (user …, password …)) or in the router''s ~/.pgpass.';
	END IF;

	-- one change of the node list at a time
	LOCK TABLE ledger_router.nodes IN SHARE ROW EXCLUSIVE MODE;
	IF EXISTS (SELECT 1 FROM ledger_router.nodes n
				WHERE n.name OPERATOR(pg_catalog.=) add_node.name OR n.node OPERATOR(pg_catalog.=) add_node.node) THEN
		RAISE EXCEPTION USING ERRCODE = '42710',
			MESSAGE = pg_catalog.format('the ledger router already has a node named "%s" or numbered %s',
										ledger_router.quote_value(add_node.name), add_node.node);
	END IF;
	SELECT n.node_bits INTO bits FROM ledger_router.nodes n LIMIT 1;

	-- join the cluster first, so that the checks below reach the node the
	-- way every later call will
	INSERT INTO ledger_router.nodes AS n (node, name, connstr, node_bits, partition)
	VALUES (add_node.node, add_node.name, add_node.connstr, 0, -1);
	SELECT n.partition INTO part FROM ledger_router.nodes n WHERE n.node OPERATOR(pg_catalog.=) add_node.node;
	BEGIN
		PERFORM ledger_router.arm();
		SELECT * INTO ident FROM ledger_router.node_identity(part);
		PERFORM ledger_router.disarm();
	EXCEPTION WHEN OTHERS OR query_canceled THEN
		GET STACKED DIAGNOSTICS e_state = RETURNED_SQLSTATE, e_message = MESSAGE_TEXT,
			e_detail = PG_EXCEPTION_DETAIL, e_hint = PG_EXCEPTION_HINT;
		PERFORM ledger_router.rethrow(part, e_state, e_message, e_detail, e_hint);
	END;

	IF ident.node_bits OPERATOR(pg_catalog.=) 0 OR ident.node OPERATOR(pg_catalog.<>) add_node.node THEN
		RAISE EXCEPTION USING ERRCODE = '55000',
			MESSAGE = pg_catalog.format('node "%s" is node number %s with %s node bits, not node number %s',
										ledger_router.quote_value(add_node.name), ident.node, ident.node_bits, add_node.node),
			HINT = pg_catalog.format('Run SELECT ledger.set_node(%s) in the node''s database first.', add_node.node);
	END IF;
	IF bits IS NOT NULL AND ident.node_bits OPERATOR(pg_catalog.<>) bits THEN
		RAISE EXCEPTION USING ERRCODE = '55000',
			MESSAGE = pg_catalog.format('node "%s" has %s node bits, the router''s nodes have %s',
										ledger_router.quote_value(add_node.name), ident.node_bits, bits),
			DETAIL = 'The low bits of an id name its node only when every node uses the same number of bits.';
	END IF;
	IF ident.has_streams THEN
		RAISE EXCEPTION USING ERRCODE = '55000',
			MESSAGE = pg_catalog.format('node "%s" already holds streams', ledger_router.quote_value(add_node.name)),
			DETAIL = 'A node joins empty: the router would not look for its streams there.';
	END IF;
	UPDATE ledger_router.nodes n SET node_bits = ident.node_bits WHERE n.node OPERATOR(pg_catalog.=) add_node.node;

	-- the first node owns every slot; later ones get slots by move_slots or rebalance
	IF NOT EXISTS (SELECT 1 FROM ledger_router.slots) THEN
		INSERT INTO ledger_router.slots (slot, node)
		SELECT g, add_node.node FROM pg_catalog.generate_series(0, 4095) g;
	END IF;

	BEGIN
		PERFORM ledger_router.replay_settings(part);
	EXCEPTION WHEN OTHERS OR query_canceled THEN
		GET STACKED DIAGNOSTICS e_state = RETURNED_SQLSTATE, e_message = MESSAGE_TEXT,
			e_detail = PG_EXCEPTION_DETAIL, e_hint = PG_EXCEPTION_HINT;
		PERFORM ledger_router.rethrow(part, e_state, e_message, e_detail, e_hint);
	END;
END
$fn$;
COMMENT ON FUNCTION ledger_router.add_node(text, text, integer) IS
'Adds an empty node (ledger.set_node(node) already run on it) to the router; the first node gets every slot, later ones none until move_slots or rebalance';

CREATE FUNCTION ledger_router.drop_node(name text)
RETURNS void
LANGUAGE plpgsql VOLATILE PARALLEL UNSAFE
AS $fn$
DECLARE
	victim		record;
	ident		record;
	e_state		text;
	e_message	text;
	e_detail	text;
	e_hint		text;
BEGIN
	LOCK TABLE ledger_router.nodes IN SHARE ROW EXCLUSIVE MODE;
	SELECT n.node, n.partition INTO victim FROM ledger_router.nodes n WHERE n.name OPERATOR(pg_catalog.=) drop_node.name;
	IF NOT FOUND THEN
		RAISE EXCEPTION USING ERRCODE = '42704',
			MESSAGE = pg_catalog.format('the ledger router has no node "%s"',
										COALESCE(ledger_router.quote_value(drop_node.name), 'NULL'));
	END IF;
	IF EXISTS (SELECT 1 FROM ledger_router.pins p WHERE p.node OPERATOR(pg_catalog.=) victim.node) THEN
		RAISE EXCEPTION USING ERRCODE = '55000',
			MESSAGE = pg_catalog.format('node "%s" holds pinned streams', ledger_router.quote_value(drop_node.name)),
			DETAIL = 'Their entries live on that node.';
	END IF;
	IF EXISTS (SELECT 1 FROM ledger_router.nodes n WHERE n.node OPERATOR(pg_catalog.<>) victim.node) THEN
		IF EXISTS (SELECT 1 FROM ledger_router.slots s
					WHERE s.node OPERATOR(pg_catalog.=) victim.node OR s.moving_to OPERATOR(pg_catalog.=) victim.node) THEN
			RAISE EXCEPTION USING ERRCODE = '55000',
				MESSAGE = pg_catalog.format('node "%s" owns slots', ledger_router.quote_value(drop_node.name)),
				HINT = 'Move them to other nodes first with ledger_router.move_slots; its streams stay pinned to it.';
		END IF;
	ELSE
		-- the last node: only when it holds nothing
		BEGIN
			PERFORM ledger_router.arm();
			SELECT * INTO ident FROM ledger_router.node_identity(victim.partition);
			PERFORM ledger_router.disarm();
		EXCEPTION WHEN OTHERS OR query_canceled THEN
			GET STACKED DIAGNOSTICS e_state = RETURNED_SQLSTATE, e_message = MESSAGE_TEXT,
				e_detail = PG_EXCEPTION_DETAIL, e_hint = PG_EXCEPTION_HINT;
			PERFORM ledger_router.rethrow(victim.partition, e_state, e_message, e_detail, e_hint);
		END;
		IF ident.has_streams THEN
			RAISE EXCEPTION USING ERRCODE = '55000',
				MESSAGE = pg_catalog.format('node "%s" holds streams', ledger_router.quote_value(drop_node.name)),
				DETAIL = 'It is the router''s last node.';
		END IF;
		DELETE FROM ledger_router.slots;
	END IF;
	DELETE FROM ledger_router.nodes n WHERE n.node OPERATOR(pg_catalog.=) victim.node;
END
$fn$;
COMMENT ON FUNCTION ledger_router.drop_node(text) IS
'Removes a node that owns no slots and no pinned streams (or the last node, when it holds no streams)';

CREATE FUNCTION ledger_router.check_slots(slots integer[])
RETURNS void
LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE
AS $fn$
BEGIN
	IF slots IS NULL OR EXISTS (SELECT 1 FROM pg_catalog.unnest(slots) s
								 WHERE s IS NULL OR s OPERATOR(pg_catalog.<) 0 OR s OPERATOR(pg_catalog.>) 4095) THEN
		RAISE EXCEPTION USING ERRCODE = '22023',
			MESSAGE = pg_catalog.format('slots must lie between 0 and 4095, not %s',
										COALESCE(slots::text, 'NULL'));
	END IF;
END
$fn$;
COMMENT ON FUNCTION ledger_router.check_slots(integer[]) IS 'Raises 22023 unless every slot lies between 0 and 4095';

-- Step 1 of a move: writes to the slots' streams that are not pinned fail
-- with 55006 (retry) until finish_move; reads still go to the old node.
CREATE FUNCTION ledger_router.begin_move(slots integer[], to_node text)
RETURNS integer
LANGUAGE plpgsql VOLATILE PARALLEL UNSAFE
AS $fn$
DECLARE
	target	integer;
	marked	integer;
BEGIN
	PERFORM ledger_router.check_slots(slots);
	SELECT n.node INTO target FROM ledger_router.nodes n WHERE n.name OPERATOR(pg_catalog.=) begin_move.to_node;
	IF NOT FOUND THEN
		RAISE EXCEPTION USING ERRCODE = '42704',
			MESSAGE = pg_catalog.format('the ledger router has no node "%s"',
										COALESCE(ledger_router.quote_value(begin_move.to_node), 'NULL'));
	END IF;
	UPDATE ledger_router.slots s SET moving_to = target
	 WHERE s.slot OPERATOR(pg_catalog.=) ANY (begin_move.slots) AND s.node OPERATOR(pg_catalog.<>) target;
	GET DIAGNOSTICS marked = ROW_COUNT;
	RETURN marked;
END
$fn$;
COMMENT ON FUNCTION ledger_router.begin_move(integer[], text) IS
'Marks slots as moving to a node: until finish_move, writes to their streams that are not pinned fail with 55006';

-- Step 2: pin every stream the moving slots already have to its node, then
-- hand the slots over.  New streams of these slots are created on the new
-- node from now on; no entry moves.
CREATE FUNCTION ledger_router.finish_move(slots integer[])
RETURNS bigint
LANGUAGE plpgsql VOLATILE PARALLEL UNSAFE
AS $fn$
DECLARE
	owner		record;
	part		integer;
	page		text[];
	pinned		bigint := 0;
	n_rows		bigint;
	page_size	constant integer := 10000;
	e_state		text;
	e_message	text;
	e_detail	text;
	e_hint		text;
BEGIN
	PERFORM ledger_router.check_slots(slots);
	FOR owner IN SELECT s.node, pg_catalog.array_agg(s.slot) AS moving
				   FROM ledger_router.slots s
				  WHERE s.slot OPERATOR(pg_catalog.=) ANY (finish_move.slots) AND s.moving_to IS NOT NULL
				  GROUP BY s.node ORDER BY s.node
	LOOP
		SELECT n.partition INTO part FROM ledger_router.nodes n WHERE n.node OPERATOR(pg_catalog.=) owner.node;
		page := NULL;
		LOOP
			-- the node's own order, so that its last name is the next cursor
			PERFORM ledger_router.arm();
			SELECT pg_catalog.array_agg(x.name ORDER BY x.ord) INTO page
			  FROM ledger_router.node_streams(part, page[pg_catalog.cardinality(page)], page_size, NULL)
				   WITH ORDINALITY AS x(name, ord);
			PERFORM ledger_router.disarm();
			EXIT WHEN page IS NULL;
			INSERT INTO ledger_router.pins AS p (stream, node)
			SELECT x.name, owner.node FROM pg_catalog.unnest(page) AS x(name)
			 WHERE ledger_router.slot_of(x.name) OPERATOR(pg_catalog.=) ANY (owner.moving)
			ON CONFLICT ON CONSTRAINT pins_pkey DO NOTHING;
			GET DIAGNOSTICS n_rows = ROW_COUNT;
			pinned := pinned OPERATOR(pg_catalog.+) n_rows;
			EXIT WHEN pg_catalog.cardinality(page) OPERATOR(pg_catalog.<) page_size;
		END LOOP;
	END LOOP;
	part := NULL;
	UPDATE ledger_router.slots s SET node = s.moving_to, moving_to = NULL
	 WHERE s.slot OPERATOR(pg_catalog.=) ANY (finish_move.slots) AND s.moving_to IS NOT NULL;
	RETURN pinned;
EXCEPTION WHEN OTHERS OR query_canceled THEN
	GET STACKED DIAGNOSTICS e_state = RETURNED_SQLSTATE, e_message = MESSAGE_TEXT,
		e_detail = PG_EXCEPTION_DETAIL, e_hint = PG_EXCEPTION_HINT;
	PERFORM ledger_router.rethrow(part, e_state, e_message, e_detail, e_hint);
END
$fn$;
COMMENT ON FUNCTION ledger_router.finish_move(integer[]) IS
'Completes a move: pins the moving slots'' existing streams to their node and hands the slots to the new node; returns how many streams were pinned';

-- Both steps in one transaction, for a single router: the exclusive locks
-- wait for this router's writes that still go to the old node.
CREATE FUNCTION ledger_router.move_slots(slots integer[], to_node text)
RETURNS bigint
LANGUAGE plpgsql VOLATILE PARALLEL UNSAFE
AS $fn$
BEGIN
	PERFORM ledger_router.check_slots(slots);
	PERFORM pg_catalog.pg_advisory_xact_lock(19538, g.grp)
	   FROM (SELECT DISTINCT s OPERATOR(pg_catalog.>>) 4 AS grp FROM pg_catalog.unnest(move_slots.slots) s ORDER BY 1) g;
	PERFORM ledger_router.begin_move(move_slots.slots, move_slots.to_node);
	RETURN ledger_router.finish_move(move_slots.slots);
END
$fn$;
COMMENT ON FUNCTION ledger_router.move_slots(integer[], text) IS
'Hands slots to a node at once (begin_move and finish_move in one transaction); returns how many existing streams were pinned to their node';

-- Evens out the slot counts with as few moves as possible.
CREATE FUNCTION ledger_router.rebalance()
RETURNS integer
LANGUAGE plpgsql VOLATILE PARALLEL UNSAFE
AS $fn$
DECLARE
	r		record;
	moved	integer := 0;
BEGIN
	IF NOT EXISTS (SELECT 1 FROM ledger_router.nodes) THEN
		PERFORM ledger_router.no_nodes();
	END IF;
	FOR r IN
		WITH share AS (
			-- 4096 / n each, one more for the first 4096 % n nodes
			SELECT n.node, n.name,
				   (4096 OPERATOR(pg_catalog./) c.total) OPERATOR(pg_catalog.+)
				   CASE WHEN pg_catalog.row_number() OVER (ORDER BY n.node) OPERATOR(pg_catalog.<=)
							 (4096 OPERATOR(pg_catalog.%) c.total) THEN 1 ELSE 0 END AS fair
			  FROM ledger_router.nodes n, (SELECT pg_catalog.count(*)::integer AS total FROM ledger_router.nodes) c),
		owned AS (
			SELECT s.slot, s.node,
				   pg_catalog.row_number() OVER (PARTITION BY s.node ORDER BY s.slot DESC) AS k
			  FROM ledger_router.slots s WHERE s.moving_to IS NULL),
		surplus AS (
			SELECT o.slot, pg_catalog.row_number() OVER (ORDER BY o.node, o.slot) AS rn
			  FROM owned o JOIN share sh ON sh.node OPERATOR(pg_catalog.=) o.node
			 WHERE o.k OPERATOR(pg_catalog.>) sh.fair),
		deficit AS (
			SELECT sh.name, pg_catalog.row_number() OVER (ORDER BY sh.node, g) AS rn
			  FROM share sh
			  CROSS JOIN LATERAL pg_catalog.generate_series(1, sh.fair OPERATOR(pg_catalog.-)
					(SELECT pg_catalog.count(*) FROM owned o WHERE o.node OPERATOR(pg_catalog.=) sh.node)::integer) g)
		SELECT d.name, pg_catalog.array_agg(s.slot ORDER BY s.slot) AS slots
		  FROM surplus s JOIN deficit d ON d.rn OPERATOR(pg_catalog.=) s.rn
		 GROUP BY d.name ORDER BY d.name
	LOOP
		PERFORM ledger_router.move_slots(r.slots, r.name);
		moved := moved OPERATOR(pg_catalog.+) pg_catalog.cardinality(r.slots);
	END LOOP;
	RETURN moved;
END
$fn$;
COMMENT ON FUNCTION ledger_router.rebalance() IS
'Moves slots from nodes above their fair share (4096 / nodes) to nodes below it; returns how many slots moved';

-- Places a stream on a node before its first append (entries never move).
CREATE FUNCTION ledger_router.pin_stream(stream text, node text)
RETURNS void
LANGUAGE plpgsql VOLATILE PARALLEL UNSAFE
AS $fn$
DECLARE
	target		record;
	owner_node	record;
	st			ledger.stream_stat;
	e_state		text;
	e_message	text;
	e_detail	text;
	e_hint		text;
BEGIN
	IF pin_stream.stream IS NULL THEN
		RAISE EXCEPTION USING ERRCODE = '22023', MESSAGE = 'stream must not be NULL';
	END IF;
	SELECT n.node, n.name INTO target FROM ledger_router.nodes n WHERE n.name OPERATOR(pg_catalog.=) pin_stream.node;
	IF NOT FOUND THEN
		RAISE EXCEPTION USING ERRCODE = '42704',
			MESSAGE = pg_catalog.format('the ledger router has no node "%s"',
										COALESCE(ledger_router.quote_value(pin_stream.node), 'NULL'));
	END IF;
	PERFORM pg_catalog.pg_advisory_xact_lock(19538, ledger_router.slot_of(pin_stream.stream) OPERATOR(pg_catalog.>>) 4);
	SELECT n.node, n.name, n.partition INTO owner_node
	  FROM ledger_router.slots s
	  LEFT JOIN ledger_router.pins p ON p.stream OPERATOR(pg_catalog.=) pin_stream.stream
	  JOIN ledger_router.nodes n ON n.node OPERATOR(pg_catalog.=) COALESCE(p.node, s.node)
	 WHERE s.slot OPERATOR(pg_catalog.=) ledger_router.slot_of(pin_stream.stream);
	IF owner_node.node OPERATOR(pg_catalog.<>) target.node THEN
		BEGIN
			PERFORM ledger_router.arm();
			st := ledger_router.node_stat(owner_node.partition, pin_stream.stream);
			PERFORM ledger_router.disarm();
		EXCEPTION WHEN OTHERS OR query_canceled THEN
			GET STACKED DIAGNOSTICS e_state = RETURNED_SQLSTATE, e_message = MESSAGE_TEXT,
				e_detail = PG_EXCEPTION_DETAIL, e_hint = PG_EXCEPTION_HINT;
			PERFORM ledger_router.rethrow(owner_node.partition, e_state, e_message, e_detail, e_hint);
		END;
		IF st.last_seq OPERATOR(pg_catalog.>) 0 THEN
			RAISE EXCEPTION USING ERRCODE = '55000',
				MESSAGE = pg_catalog.format('stream "%s" already has entries on node "%s"',
											ledger_router.quote_value(pin_stream.stream), owner_node.name),
				DETAIL = 'Entries do not move between nodes: a stream can be placed on another node only before its first append.';
		END IF;
	END IF;
	INSERT INTO ledger_router.pins AS p (stream, node) VALUES (pin_stream.stream, target.node)
	ON CONFLICT ON CONSTRAINT pins_pkey DO UPDATE SET node = excluded.node, pinned_at = pg_catalog.now();
END
$fn$;
COMMENT ON FUNCTION ledger_router.pin_stream(text, text) IS
'Places a stream on a node regardless of its slot; refused once the stream has entries elsewhere';

CREATE FUNCTION ledger_router.unpin_stream(stream text)
RETURNS boolean
LANGUAGE plpgsql VOLATILE PARALLEL UNSAFE
AS $fn$
DECLARE
	pin			record;
	st			ledger.stream_stat;
	e_state		text;
	e_message	text;
	e_detail	text;
	e_hint		text;
BEGIN
	PERFORM pg_catalog.pg_advisory_xact_lock(19538, ledger_router.slot_of(unpin_stream.stream) OPERATOR(pg_catalog.>>) 4);
	SELECT n.name, n.partition, n.node, s.node AS slot_node,
		   (SELECT m.name FROM ledger_router.nodes m WHERE m.node OPERATOR(pg_catalog.=) s.node) AS slot_name
	  INTO pin
	  FROM ledger_router.pins p
	  JOIN ledger_router.nodes n ON n.node OPERATOR(pg_catalog.=) p.node
	  JOIN ledger_router.slots s ON s.slot OPERATOR(pg_catalog.=) ledger_router.slot_of(p.stream)
	 WHERE p.stream OPERATOR(pg_catalog.=) unpin_stream.stream;
	IF NOT FOUND THEN
		RETURN false;
	END IF;
	IF pin.node OPERATOR(pg_catalog.<>) pin.slot_node THEN
		BEGIN
			PERFORM ledger_router.arm();
			st := ledger_router.node_stat(pin.partition, unpin_stream.stream);
			PERFORM ledger_router.disarm();
		EXCEPTION WHEN OTHERS OR query_canceled THEN
			GET STACKED DIAGNOSTICS e_state = RETURNED_SQLSTATE, e_message = MESSAGE_TEXT,
				e_detail = PG_EXCEPTION_DETAIL, e_hint = PG_EXCEPTION_HINT;
			PERFORM ledger_router.rethrow(pin.partition, e_state, e_message, e_detail, e_hint);
		END;
		IF st.last_seq OPERATOR(pg_catalog.>) 0 THEN
			RAISE EXCEPTION USING ERRCODE = '55000',
				MESSAGE = pg_catalog.format('stream "%s" has entries on node "%s", where it is pinned',
											ledger_router.quote_value(unpin_stream.stream), pin.name),
				DETAIL = pg_catalog.format('Without the pin the router would look for it on node "%s".', pin.slot_name);
		END IF;
	END IF;
	DELETE FROM ledger_router.pins p WHERE p.stream OPERATOR(pg_catalog.=) unpin_stream.stream;
	RETURN true;
END
$fn$;
COMMENT ON FUNCTION ledger_router.unpin_stream(text) IS
'Removes a stream''s pin when that does not lose it (its slot''s node is the pinned one, or it has no entries); false when it had none';

CREATE FUNCTION ledger_router.health()
RETURNS TABLE (check_name text, ok boolean, detail text)
LANGUAGE plpgsql VOLATILE PARALLEL UNSAFE
AS $fn$
DECLARE
	r			record;
	ident		record;
	failing		text;
	e_message	text;
BEGIN
	FOR r IN SELECT n.node, n.name, n.node_bits, n.partition FROM ledger_router.nodes n ORDER BY n.node
	LOOP
		check_name := pg_catalog.format('node "%s"', r.name);
		BEGIN
			PERFORM ledger_router.arm();
			SELECT * INTO ident FROM ledger_router.node_identity(r.partition);
			SELECT pg_catalog.string_agg(h.check_name OPERATOR(pg_catalog.||) ': ' OPERATOR(pg_catalog.||) h.detail, '; ')
			  INTO failing FROM ledger_router.node_health(r.partition) h WHERE NOT h.ok;
			PERFORM ledger_router.disarm();
			IF ident.node OPERATOR(pg_catalog.<>) r.node OR ident.node_bits OPERATOR(pg_catalog.<>) r.node_bits THEN
				ok := false;
				detail := pg_catalog.format('the node says it is node %s with %s node bits, the router has it as node %s with %s',
											ident.node, ident.node_bits, r.node, r.node_bits);
			ELSIF failing IS NOT NULL THEN
				ok := false;
				detail := failing;
			ELSE
				ok := true;
				detail := pg_catalog.format('node %s answers; its ledger.health() is all ok', r.node);
			END IF;
		EXCEPTION WHEN OTHERS OR query_canceled THEN
			IF SQLSTATE OPERATOR(pg_catalog.=) '57014' AND NOT ledger_router.disarm() THEN
				RAISE;
			END IF;
			GET STACKED DIAGNOSTICS e_message = MESSAGE_TEXT;
			ok := false;
			detail := CASE WHEN SQLSTATE OPERATOR(pg_catalog.=) '57014'
						   THEN 'no answer within ledger_router.call_timeout'
						   ELSE pg_catalog.regexp_replace(e_message, '^PL/Proxy function \S+: ', '') END;
		END;
		RETURN NEXT;
	END LOOP;
	check_name := 'slots';
	SELECT pg_catalog.count(*) OPERATOR(pg_catalog.=) 4096
		   AND pg_catalog.count(*) FILTER (WHERE s.moving_to IS NOT NULL) OPERATOR(pg_catalog.=) 0,
		   pg_catalog.format('%s of 4096 slots assigned, %s moving; %s pinned streams',
							 pg_catalog.count(*), pg_catalog.count(*) FILTER (WHERE s.moving_to IS NOT NULL),
							 (SELECT pg_catalog.count(*) FROM ledger_router.pins))
	  INTO ok, detail FROM ledger_router.slots s;
	RETURN NEXT;
END
$fn$;
COMMENT ON FUNCTION ledger_router.health() IS
'One row per node (reachable, the node number it reports, its ledger.health()) and one for the slot map';

-- ---------------------------------------------------------------------------
-- Privileges: as in ledger, plus the router's own functions.  The nodes
-- check them again, since calls reach them as the calling role.
-- ---------------------------------------------------------------------------
REVOKE ALL ON ALL FUNCTIONS IN SCHEMA ledger, ledger_router FROM PUBLIC;

GRANT EXECUTE ON FUNCTION
	ledger.read(text, bigint, integer, boolean, text, text, text[], jsonb, jsonb, integer, interval),
	ledger.get(text, bigint),
	ledger.count(text),
	ledger.stat(text),
	ledger.streams(text, integer, text),
	ledger_router.read_node(text, bigint, integer, text, interval),
	ledger_router.read_all(bigint[], integer, text),
	ledger_router.node_of(text),
	ledger_router.slot_of(text),
	ledger_router.quote_value(text),
	ledger_router.no_nodes(),
	ledger_router.arm(interval),
	ledger_router.disarm(),
	ledger_router.route(text, boolean, interval),
	ledger_router.unreachable(integer),
	ledger_router.rethrow(integer, text, text, text, text),
	ledger_router.node_read(integer, text, bigint, integer, boolean, text, text, text[], jsonb, jsonb, integer, interval),
	ledger_router.node_get(integer, text, bigint),
	ledger_router.node_count(integer, text),
	ledger_router.node_stat(integer, text),
	ledger_router.node_streams(integer, text, integer, text),
	ledger_router.every_node_streams(text, integer, text),
	ledger_router.node_read_all(integer, bigint, integer, text, interval),
	ledger_router.every_node_read_all(bigint[], integer, text),
	ledger_router.node_identity(integer)
TO ledger_reader;

GRANT EXECUTE ON FUNCTION
	ledger.append(text, jsonb, text, text, jsonb, text[], integer, bigint),
	ledger.append_batch(text, ledger.append_input[], integer, bigint),
	ledger.append_batch(text, jsonb, integer, bigint),
	ledger.append_batch(text, text, integer, bigint),
	ledger.set_tags(text, bigint, text[]),
	ledger.set_annotations(text, bigint, jsonb),
	ledger_router.node_append(integer, text, jsonb, text, text, jsonb, text[], integer, bigint),
	ledger_router.node_append_batch(integer, text, ledger.append_input[], integer, bigint),
	ledger_router.node_append_batch(integer, text, jsonb, integer, bigint),
	ledger_router.node_append_batch(integer, text, text, integer, bigint),
	ledger_router.node_set_tags(integer, text, bigint, text[]),
	ledger_router.node_set_annotations(integer, text, bigint, jsonb)
TO ledger_writer;

GRANT EXECUTE ON FUNCTION
	ledger.trim(text, bigint),
	ledger.set_schema_version(text, integer),
	ledger.set_retention(text, bigint, interval),
	ledger.register_upcaster(text, integer, integer, jsonb, jsonb, text[]),
	ledger.register_upcaster(text, integer, integer, text, text, text[]),
	ledger.register_upcaster(text, integer, integer, regprocedure),
	ledger.drop_upcaster(text, integer),
	ledger_router.begin_move(integer[], text),
	ledger_router.finish_move(integer[]),
	ledger_router.move_slots(integer[], text),
	ledger_router.check_slots(integer[]),
	ledger_router.rebalance(),
	ledger_router.pin_stream(text, text),
	ledger_router.unpin_stream(text),
	ledger_router.health(),
	ledger_router.replay_settings(integer),
	ledger_router.node_trim(integer, text, bigint),
	ledger_router.node_set_schema_version(integer, text, integer),
	ledger_router.node_set_retention(integer, text, bigint, interval),
	ledger_router.node_register_upcaster(integer, text, integer, integer, jsonb, jsonb, text[]),
	ledger_router.node_register_upcaster_fn(integer, text, integer, integer, text),
	ledger_router.node_drop_upcaster(integer, text, integer),
	ledger_router.node_health(integer)
TO ledger_admin;
-- ledger_router.add_node and drop_node: superusers only.
