/* sql/ledger--0.1.0--0.2.0.sql — upgrade a ledger 0.1.0 database to 0.2.0 */

\echo Use "ALTER EXTENSION ledger UPDATE" to load this file. \quit

CREATE FUNCTION ledger.pattern_rank(pattern text, stream text)
RETURNS integer
AS 'MODULE_PATHNAME', 'ledger_pattern_rank_sql'
LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;
COMMENT ON FUNCTION ledger.pattern_rank(text, text) IS
'How well a streams pattern (a name, or a prefix ending in *) matches a stream: -1 not at all, higher wins';
REVOKE ALL ON FUNCTION ledger.pattern_rank(text, text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION ledger.pattern_rank(text, text) TO ledger_reader;

-- SECURITY DEFINER functions resolve pg_catalog first, so that no object in
-- schema ledger can shadow a built-in operator or function.
ALTER FUNCTION ledger.append(text, jsonb, text, text, jsonb, text[], integer, bigint) SET search_path = pg_catalog, ledger, pg_temp;
ALTER FUNCTION ledger.append_batch(text, ledger.append_input[], integer, bigint) SET search_path = pg_catalog, ledger, pg_temp;
ALTER FUNCTION ledger.append_batch(text, jsonb, integer, bigint) SET search_path = pg_catalog, ledger, pg_temp;
ALTER FUNCTION ledger.append_batch(text, text, integer, bigint) SET search_path = pg_catalog, ledger, pg_temp;
ALTER FUNCTION ledger.read(text, bigint, integer, boolean, text, text, text[], jsonb, jsonb, integer, interval) SET search_path = pg_catalog, ledger, pg_temp;
ALTER FUNCTION ledger.read_all(bigint, integer, text, interval) SET search_path = pg_catalog, ledger, pg_temp;
ALTER FUNCTION ledger.get(text, bigint) SET search_path = pg_catalog, ledger, pg_temp;
ALTER FUNCTION ledger.count(text) SET search_path = pg_catalog, ledger, pg_temp;
ALTER FUNCTION ledger.stat(text) SET search_path = pg_catalog, ledger, pg_temp;
ALTER FUNCTION ledger.streams(text, integer, text) SET search_path = pg_catalog, ledger, pg_temp;
ALTER FUNCTION ledger.set_tags(text, bigint, text[]) SET search_path = pg_catalog, ledger, pg_temp;
ALTER FUNCTION ledger.set_annotations(text, bigint, jsonb) SET search_path = pg_catalog, ledger, pg_temp;
ALTER FUNCTION ledger.trim(text, bigint) SET search_path = pg_catalog, ledger, pg_temp;
ALTER FUNCTION ledger.set_retention(text, bigint, interval) SET search_path = pg_catalog, ledger, pg_temp;
ALTER FUNCTION ledger.set_schema_version(text, integer) SET search_path = pg_catalog, ledger, pg_temp;
ALTER FUNCTION ledger.register_upcaster(text, integer, integer, jsonb, jsonb, text[]) SET search_path = pg_catalog, ledger, pg_temp;
ALTER FUNCTION ledger.register_upcaster(text, integer, integer, text, text, text[]) SET search_path = pg_catalog, ledger, pg_temp;
ALTER FUNCTION ledger.register_upcaster(text, integer, integer, regprocedure) SET search_path = pg_catalog, ledger, pg_temp;
ALTER FUNCTION ledger.drop_upcaster(text, integer) SET search_path = pg_catalog, ledger, pg_temp;
ALTER FUNCTION ledger.create_sink(text, text, text, text, jsonb) SET search_path = pg_catalog, ledger, pg_temp;
ALTER FUNCTION ledger.drop_sink(text) SET search_path = pg_catalog, ledger, pg_temp;
ALTER FUNCTION ledger.pause_sink(text) SET search_path = pg_catalog, ledger, pg_temp;
ALTER FUNCTION ledger.resume_sink(text) SET search_path = pg_catalog, ledger, pg_temp;
ALTER FUNCTION ledger.health() SET search_path = pg_catalog, ledger, pg_temp;

-- The schema version is read from stream_settings only, so that
-- set_schema_version never locks stream rows.
ALTER TABLE ledger.streams DROP COLUMN schema_version;

-- Function upcasters run as the role that registered them.  0.1.0 did not
-- record it; the function's owner stands in for the registrations it made.
ALTER TABLE ledger.upcasters ADD COLUMN registered_by regrole;
UPDATE ledger.upcasters u SET registered_by = p.proowner::pg_catalog.regrole
  FROM pg_catalog.pg_proc p
 WHERE p.oid OPERATOR(pg_catalog.=) u.fn::pg_catalog.oid;

-- One cache-invalidation trigger function for upcasters and schema versions.
DROP TRIGGER upcasters_changed ON ledger.upcasters;
DROP FUNCTION ledger.upcasters_changed();
CREATE FUNCTION ledger.invalidate_caches() RETURNS trigger
	AS 'MODULE_PATHNAME', 'ledger_invalidate_caches' LANGUAGE C;
CREATE TRIGGER upcasters_invalidate_caches AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON ledger.upcasters
	FOR EACH STATEMENT EXECUTE FUNCTION ledger.invalidate_caches();
CREATE TRIGGER stream_settings_invalidate_caches AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON ledger.stream_settings
	FOR EACH STATEMENT EXECUTE FUNCTION ledger.invalidate_caches();
ALTER TABLE ledger.upcasters ENABLE ALWAYS TRIGGER upcasters_invalidate_caches;
ALTER TABLE ledger.stream_settings ENABLE ALWAYS TRIGGER stream_settings_invalidate_caches;
REVOKE ALL ON FUNCTION ledger.invalidate_caches() FROM PUBLIC;

-- Dropping a sink wakes the worker too (retention may move on).
DROP TRIGGER sinks_wake_worker ON ledger.sinks;
CREATE TRIGGER sinks_wake_worker AFTER INSERT OR UPDATE OR DELETE ON ledger.sinks
	FOR EACH STATEMENT EXECUTE FUNCTION ledger.wake_worker();
ALTER TABLE ledger.sinks ENABLE ALWAYS TRIGGER sinks_wake_worker;

CREATE FUNCTION ledger.enforce_retention(streams text DEFAULT '*')
RETURNS bigint
AS 'MODULE_PATHNAME', 'ledger_enforce_retention'
LANGUAGE C VOLATILE PARALLEL UNSAFE SECURITY DEFINER
SET search_path = pg_catalog, ledger, pg_temp;
COMMENT ON FUNCTION ledger.enforce_retention(text) IS
'Enforces the retention limits of streams matching a pattern now, in this transaction, skipping streams locked by open transactions; returns the number of entries deleted';
REVOKE ALL ON FUNCTION ledger.enforce_retention(text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION ledger.enforce_retention(text) TO ledger_admin;

-- register_upcaster records its caller, so it runs as the caller and
-- becomes the extension owner only to write ledger.upcasters.
ALTER FUNCTION ledger.register_upcaster(text, integer, integer, jsonb, jsonb, text[]) SECURITY INVOKER;
ALTER FUNCTION ledger.register_upcaster(text, integer, integer, text, text, text[]) SECURITY INVOKER;
ALTER FUNCTION ledger.register_upcaster(text, integer, integer, regprocedure) SECURITY INVOKER;
COMMENT ON FUNCTION ledger.register_upcaster(text, integer, integer, regprocedure) IS
'Registers a function fn(jsonb) RETURNS jsonb as the upcaster from one schema version to another; it runs as the registering role, in a security-restricted operation';

-- Pattern matching through ledger.pattern_rank.
CREATE OR REPLACE VIEW ledger.sinks_status AS
SELECT k.name::text AS name,
	   k.kind,
	   ledger.redact_target(k.kind, k.target) AS target,
	   k.streams::text AS streams,
	   k.state,
	   k.position,
	   lag.entries AS lag_entries,
	   lag.seconds AS lag_seconds,
	   k.exported_total,
	   k.last_error,
	   k.last_error_at
  FROM ledger.sinks k
 CROSS JOIN LATERAL (
	-- the matching entries not exported yet, and the age of the oldest
	SELECT pg_catalog.count(*) AS entries,
		   COALESCE(pg_catalog.date_part('epoch',
				pg_catalog.now() OPERATOR(pg_catalog.-) pg_catalog.min(e.created_at)), 0)::double precision AS seconds
	  FROM ledger.entries e
	  JOIN ledger.streams s ON s.stream_id OPERATOR(pg_catalog.=) e.stream_id
	 WHERE e.id OPERATOR(pg_catalog.>) k.position
	   AND ledger.pattern_rank(k.streams, s.name) OPERATOR(pg_catalog.>=) 0) lag;
COMMENT ON VIEW ledger.sinks_status IS 'One row per export sink: state, position and lag';



-- ---------------------------------------------------------------------------
-- Export mirror: the change log (src/mirror.c).  While a sink exists,
-- set_tags/set_annotations and every trim (retention's included) record
-- here what changed; the ids come from ledger.entries_id_seq, drawn after
-- the change's locks, so that entries and changes form one commit-ordered
-- sequence below the read_all horizon.  entry_id is the entry (update) or
-- the stream's highest deleted id (trim).  Pruned below the smallest
-- position of the sinks.
-- ---------------------------------------------------------------------------
CREATE TABLE ledger.changes (
	id			bigint NOT NULL,
	entry_id	bigint NOT NULL,
	stream_id	integer NOT NULL,
	kind		text NOT NULL,
	CONSTRAINT changes_pkey PRIMARY KEY (id),
	CONSTRAINT changes_kind_check CHECK (kind OPERATOR(pg_catalog.=) ANY (ARRAY['update', 'trim']))
);
COMMENT ON TABLE ledger.changes IS 'Side-data changes and trims not yet applied by every export sink';
SELECT pg_catalog.pg_extension_config_dump('ledger.changes', '');
REVOKE ALL ON ledger.changes FROM PUBLIC;

-- create_sink checks its caller's privileges as current_user (COPY's rule
-- for server files), so it runs as the caller and becomes the extension
-- owner only to write ledger.sinks.
ALTER FUNCTION ledger.create_sink(text, text, text, text, jsonb) SECURITY INVOKER;
COMMENT ON FUNCTION ledger.create_sink(text, text, text, text, jsonb) IS
'Creates an export sink that mirrors streams into a SQLite file (kind sqlite, target an absolute path; needs pg_write_server_files) or a MongoDB collection (kind mongodb, target a MongoDB URI to a host in ledger.sink_hosts)';
COMMENT ON FUNCTION ledger.redact_target(text, text) IS
'A sink target safe to show: a MongoDB URI with its password and every secret-bearing option value masked';

-- ---------------------------------------------------------------------------
-- Logical decoding: stream names the output plugin can read.
-- The plugin (src/decoder.c) names a decoded entry's stream by reading this
-- table under its historic snapshot, which only catalog tables are kept
-- for; hence user_catalog_table.  ledger.streams cannot be that table: its
-- row is created with INSERT ... ON CONFLICT, which catalog tables refuse.
-- The trigger (src/stream_names.c) writes each row once, out of the stream
-- of decoded changes, so that dropping the table never leaves a slot with
-- changes of a relation it can no longer open.  Rows are not dumped: a
-- restore's COPY into ledger.streams fires the trigger again.
-- ---------------------------------------------------------------------------
CREATE TABLE ledger.stream_names (
	stream_id	integer NOT NULL,
	name		text COLLATE "C" NOT NULL,
	CONSTRAINT stream_names_pkey PRIMARY KEY (stream_id)
) WITH (user_catalog_table = true);
COMMENT ON TABLE ledger.stream_names IS
'Stream names for the logical decoding plugin (a user catalog table); filled by a trigger on ledger.streams';
REVOKE ALL ON ledger.stream_names FROM PUBLIC;

CREATE FUNCTION ledger.copy_stream_name() RETURNS trigger
	AS 'MODULE_PATHNAME', 'ledger_copy_stream_name' LANGUAGE C;
COMMENT ON FUNCTION ledger.copy_stream_name() IS
'Trigger: copies a new stream''s name into ledger.stream_names for the logical decoding plugin';
REVOKE ALL ON FUNCTION ledger.copy_stream_name() FROM PUBLIC;
CREATE TRIGGER streams_copy_name AFTER INSERT ON ledger.streams
	FOR EACH ROW EXECUTE FUNCTION ledger.copy_stream_name();
ALTER TABLE ledger.streams ENABLE ALWAYS TRIGGER streams_copy_name;
-- streams created by ledger 0.1, through the trigger function
CREATE TRIGGER streams_copy_name_backfill AFTER UPDATE ON ledger.streams
	FOR EACH ROW EXECUTE FUNCTION ledger.copy_stream_name();
UPDATE ledger.streams SET name = name;
DROP TRIGGER streams_copy_name_backfill ON ledger.streams;

-- ---------------------------------------------------------------------------
-- Node identity, for a ledger sharded by stream (extension ledger_router).
-- Once set, every id this database hands out is congruent to its node number
-- modulo 2^node_bits: ids stay unique across the nodes of a router, and the
-- low bits of an id name the node it came from.  The id sequence steps by
-- 2^node_bits; the read_all horizon (last_value + 1 as a floor) stays exact,
-- since every later id is at least last_value + 2^node_bits.
-- The setting lives in a table because pg_dump restores an extension's
-- sequence value but not its INCREMENT; the trigger re-applies the row to
-- the sequence whenever it is written, pg_restore's COPY included.
-- ---------------------------------------------------------------------------
CREATE TABLE ledger.node_settings (
	singleton	boolean NOT NULL DEFAULT true,
	node		integer NOT NULL,
	node_bits	integer NOT NULL,
	updated_at	timestamptz NOT NULL DEFAULT pg_catalog.now(),
	CONSTRAINT node_settings_pkey PRIMARY KEY (singleton),
	CONSTRAINT node_settings_singleton_check CHECK (singleton),
	CONSTRAINT node_settings_bits_check CHECK (node_bits OPERATOR(pg_catalog.>=) 0 AND node_bits OPERATOR(pg_catalog.<=) 16),
	CONSTRAINT node_settings_node_check CHECK (node OPERATOR(pg_catalog.>=) 0
		AND node OPERATOR(pg_catalog.<) (1 OPERATOR(pg_catalog.<<) node_bits))
);
SELECT pg_catalog.pg_extension_config_dump('ledger.node_settings', '');
REVOKE ALL ON ledger.node_settings FROM PUBLIC;

CREATE FUNCTION ledger.node_settings_apply() RETURNS trigger
LANGUAGE plpgsql
SET search_path = pg_catalog, ledger, pg_temp
AS $apply$
DECLARE
	stride		bigint := 1::bigint OPERATOR(pg_catalog.<<) NEW.node_bits;
	seq			record;
	aligned		bigint;
BEGIN
	-- ALTER SEQUENCE waits for the transactions that drew ids and holds off
	-- new draws until we commit, so no id escapes between the two steps.
	EXECUTE pg_catalog.format('ALTER SEQUENCE ledger.entries_id_seq INCREMENT BY %s', stride);
	SELECT s.last_value, s.is_called INTO seq FROM ledger.entries_id_seq s;
	IF NOT seq.is_called THEN
		-- no id drawn yet: the first one is the node number itself
		PERFORM pg_catalog.setval('ledger.entries_id_seq'::pg_catalog.regclass,
			CASE WHEN NEW.node OPERATOR(pg_catalog.>) 0 THEN NEW.node ELSE stride END, false);
		RETURN NULL;
	END IF;
	-- The smallest value >= last_value congruent to the node number: ids go
	-- on increasing, and the next one (aligned + stride) carries the node.
	-- (OPERATOR() forms all bind alike, left to right: hence the parentheses.)
	aligned := seq.last_value OPERATOR(pg_catalog.+)
		((((NEW.node OPERATOR(pg_catalog.-) seq.last_value) OPERATOR(pg_catalog.%) stride)
		  OPERATOR(pg_catalog.+) stride) OPERATOR(pg_catalog.%) stride);
	PERFORM pg_catalog.setval('ledger.entries_id_seq'::pg_catalog.regclass, aligned, true);
	RETURN NULL;
END
$apply$;
COMMENT ON FUNCTION ledger.node_settings_apply() IS
'Trigger: makes the id sequence step by 2^node_bits from a value congruent to the node number';
REVOKE ALL ON FUNCTION ledger.node_settings_apply() FROM PUBLIC;
CREATE TRIGGER node_settings_apply AFTER INSERT OR UPDATE ON ledger.node_settings
	FOR EACH ROW EXECUTE FUNCTION ledger.node_settings_apply();
ALTER TABLE ledger.node_settings ENABLE ALWAYS TRIGGER node_settings_apply;

CREATE FUNCTION ledger.set_node(node integer, node_bits integer DEFAULT 10)
RETURNS void
LANGUAGE plpgsql VOLATILE PARALLEL UNSAFE SECURITY DEFINER
SET search_path = pg_catalog, ledger, pg_temp
AS $set_node$
BEGIN
	IF set_node.node_bits IS NULL OR set_node.node_bits OPERATOR(pg_catalog.<) 0
	   OR set_node.node_bits OPERATOR(pg_catalog.>) 16 THEN
		RAISE EXCEPTION USING ERRCODE = '22023',
			MESSAGE = pg_catalog.format('node_bits must lie between 0 and 16, not %s',
										 COALESCE(set_node.node_bits::text, 'NULL')),
			DETAIL = 'Ids carry the node number in their low node_bits bits.';
	END IF;
	IF set_node.node IS NULL OR set_node.node OPERATOR(pg_catalog.<) 0
	   OR set_node.node OPERATOR(pg_catalog.>=) (1 OPERATOR(pg_catalog.<<) set_node.node_bits) THEN
		RAISE EXCEPTION USING ERRCODE = '22023',
			MESSAGE = pg_catalog.format('node number %s does not fit in %s node bits',
										 COALESCE(set_node.node::text, 'NULL'), set_node.node_bits),
			DETAIL = pg_catalog.format('With %s node bits, node numbers lie between 0 and %s.',
									   set_node.node_bits,
									   (1 OPERATOR(pg_catalog.<<) set_node.node_bits) OPERATOR(pg_catalog.-) 1);
	END IF;
	INSERT INTO ledger.node_settings AS s (singleton, node, node_bits)
	VALUES (true, set_node.node, set_node.node_bits)
	ON CONFLICT (singleton) DO UPDATE
		SET node = excluded.node, node_bits = excluded.node_bits, updated_at = pg_catalog.now();
END
$set_node$;
COMMENT ON FUNCTION ledger.set_node(integer, integer) IS
'Makes every later id congruent to this node number modulo 2^node_bits, so ids are unique across the nodes of a ledger_router';

CREATE FUNCTION ledger.node(OUT node integer, OUT node_bits integer)
RETURNS record
LANGUAGE sql STABLE PARALLEL SAFE SECURITY DEFINER
SET search_path = pg_catalog, ledger, pg_temp
AS $node$
	SELECT COALESCE(s.node, 0), COALESCE(s.node_bits, 0)
	  FROM (VALUES (true)) AS one(singleton)
	  LEFT JOIN ledger.node_settings s ON s.singleton
$node$;
COMMENT ON FUNCTION ledger.node() IS
'This database''s node number and node bits (0, 0 until ledger.set_node)';

REVOKE ALL ON FUNCTION ledger.set_node(integer, integer), ledger.node() FROM PUBLIC;
GRANT EXECUTE ON FUNCTION ledger.node() TO ledger_reader;
GRANT EXECUTE ON FUNCTION ledger.set_node(integer, integer) TO ledger_admin;

-- Tag filters within one stream: a GIN index over "<stream_id>:<tag>" keys
-- (ledger.tag_keys), so read(stream, tag => ...) finds the stream's tagged
-- entries without scanning the stream.  Untagged entries are left out: they
-- cost an append nothing.
CREATE FUNCTION ledger.tag_keys(stream_id integer, tags text[])
RETURNS text[]
AS 'MODULE_PATHNAME', 'ledger_tag_keys'
LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;
COMMENT ON FUNCTION ledger.tag_keys(integer, text[]) IS
'The keys of the index that serves tag filters: each tag prefixed with the stream id and a colon';
CREATE INDEX entries_tag_keys_idx ON ledger.entries USING gin (ledger.tag_keys(stream_id, tags))
	WHERE tags OPERATOR(pg_catalog.<>) '{}';
REVOKE ALL ON FUNCTION ledger.tag_keys(integer, text[]) FROM PUBLIC;
