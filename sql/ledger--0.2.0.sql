/* sql/ledger--0.2.0.sql — schema, functions, roles and grants of ledger 0.2.0 */

\echo Use "CREATE EXTENSION ledger" to load this file. \quit

-- The schema is the extension's own: created here (so a schema "ledger"
-- that already exists -- whoever made it, whatever it holds -- makes
-- CREATE EXTENSION fail before any SECURITY DEFINER code is installed
-- into it) and dropped with the extension.  ledger.control names
-- pg_catalog as the extension's schema for that reason, as pg_cron does.
CREATE SCHEMA ledger;

-- ---------------------------------------------------------------------------
-- Roles. They are cluster-wide, so they outlive DROP EXTENSION and are shared
-- by every database that creates the extension.
-- ---------------------------------------------------------------------------
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

REVOKE ALL ON SCHEMA ledger FROM PUBLIC;
GRANT USAGE ON SCHEMA ledger TO ledger_reader;

-- ---------------------------------------------------------------------------
-- Stream patterns: the one matcher (src/pattern.c) that every query uses.
-- ---------------------------------------------------------------------------
CREATE FUNCTION ledger.pattern_rank(pattern text, stream text)
RETURNS integer
AS 'MODULE_PATHNAME', 'ledger_pattern_rank_sql'
LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;
COMMENT ON FUNCTION ledger.pattern_rank(text, text) IS
'How well a streams pattern (a name, or a prefix ending in *) matches a stream: -1 not at all, higher wins';

-- ---------------------------------------------------------------------------
-- Public types
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
-- Storage. Nothing here is reachable by PUBLIC; users go through functions.
-- ---------------------------------------------------------------------------

-- One row per stream. The row doubles as the stream's append lock: every
-- append bumps last_seq with an UPDATE, so appends to one stream serialize on
-- this row until commit while appends to other streams never meet.
-- count = last_seq - trimmed_seq, so count/stat never scan entries.  The
-- stream's schema version is not kept here: it is read from stream_settings,
-- so set_schema_version never locks a stream.
CREATE TABLE ledger.streams (
	stream_id			integer NOT NULL,
	name				text COLLATE "C" NOT NULL,
	last_seq			bigint NOT NULL DEFAULT 0,
	trimmed_seq			bigint NOT NULL DEFAULT 0,
	created_at			timestamptz NOT NULL DEFAULT pg_catalog.now(),
	last_appended_at	timestamptz,
	CONSTRAINT streams_pkey PRIMARY KEY (stream_id),
	CONSTRAINT streams_name_key UNIQUE (name),
	CONSTRAINT streams_seq_check CHECK (trimmed_seq OPERATOR(pg_catalog.>=) 0 AND trimmed_seq OPERATOR(pg_catalog.<=) last_seq)
) WITH (fillfactor = 50);
CREATE SEQUENCE ledger.streams_stream_id_seq AS integer OWNED BY ledger.streams.stream_id;
ALTER TABLE ledger.streams
	ALTER COLUMN stream_id SET DEFAULT pg_catalog.nextval('ledger.streams_stream_id_seq');

-- Entry ids come from this sequence. CACHE must stay 1: the read_all horizon
-- relies on ids being handed out in real-time order across backends.
CREATE SEQUENCE ledger.entries_id_seq AS bigint CACHE 1;

-- Fixed-width columns first, to keep rows free of alignment padding.
CREATE TABLE ledger.entries (
	id				bigint NOT NULL,
	seq				bigint NOT NULL,
	created_at		timestamptz NOT NULL,
	stream_id		integer NOT NULL,
	schema_version	integer NOT NULL,
	updated_at		timestamptz,
	order_key		text COLLATE "C" NOT NULL,
	dedup_key		text COLLATE "C" NOT NULL,
	payload			jsonb NOT NULL,
	metadata		jsonb NOT NULL,
	tags			text[] COLLATE "C" NOT NULL,
	annotations		jsonb NOT NULL,
	CONSTRAINT entries_pkey PRIMARY KEY (id)
);
ALTER SEQUENCE ledger.entries_id_seq OWNED BY ledger.entries.id;
CREATE INDEX entries_stream_id_idx ON ledger.entries (stream_id, id);
CREATE UNIQUE INDEX entries_stream_seq_idx ON ledger.entries (stream_id, seq);
CREATE INDEX entries_stream_order_idx ON ledger.entries (stream_id, order_key, id);
CREATE UNIQUE INDEX entries_stream_dedup_idx ON ledger.entries (stream_id, dedup_key)
	WHERE dedup_key OPERATOR(pg_catalog.<>) '';

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

-- Per-pattern settings: schema version and retention. A pattern is an exact
-- stream name or a prefix ending in '*'; the longest match wins.
CREATE TABLE ledger.stream_settings (
	pattern			text COLLATE "C" NOT NULL,
	schema_version	integer,
	max_entries		bigint,
	max_age			interval,
	updated_at		timestamptz NOT NULL DEFAULT pg_catalog.now(),
	CONSTRAINT stream_settings_pkey PRIMARY KEY (pattern),
	CONSTRAINT stream_settings_version_check CHECK (schema_version OPERATOR(pg_catalog.>=) 1),
	CONSTRAINT stream_settings_max_entries_check CHECK (max_entries OPERATOR(pg_catalog.>=) 0)
);

CREATE TABLE ledger.upcasters (
	streams			text COLLATE "C" NOT NULL,
	from_version	integer NOT NULL,
	to_version		integer NOT NULL,
	rename			jsonb NOT NULL DEFAULT '{}',
	defaults		jsonb NOT NULL DEFAULT '{}',
	remove			text[] NOT NULL DEFAULT '{}',
	fn				regprocedure,
	created_at		timestamptz NOT NULL DEFAULT pg_catalog.now(),
	-- a function upcaster runs as this role (the one that registered it)
	registered_by	regrole,
	CONSTRAINT upcasters_pkey PRIMARY KEY (streams, from_version),
	CONSTRAINT upcasters_version_check CHECK (from_version OPERATOR(pg_catalog.>=) 1 AND to_version OPERATOR(pg_catalog.>=) 1
		AND from_version OPERATOR(pg_catalog.<>) to_version)
);
COMMENT ON TABLE ledger.upcasters IS 'Upcaster registrations; change them with ledger.register_upcaster/drop_upcaster';

-- Backends cache upcasters and schema versions; any change (pg_restore's
-- included) tells them to reload.
CREATE FUNCTION ledger.invalidate_caches() RETURNS trigger
	AS 'MODULE_PATHNAME', 'ledger_invalidate_caches' LANGUAGE C;
CREATE TRIGGER upcasters_invalidate_caches AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON ledger.upcasters
	FOR EACH STATEMENT EXECUTE FUNCTION ledger.invalidate_caches();
CREATE TRIGGER stream_settings_invalidate_caches AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON ledger.stream_settings
	FOR EACH STATEMENT EXECUTE FUNCTION ledger.invalidate_caches();
ALTER TABLE ledger.upcasters ENABLE ALWAYS TRIGGER upcasters_invalidate_caches;
ALTER TABLE ledger.stream_settings ENABLE ALWAYS TRIGGER stream_settings_invalidate_caches;

-- Backups keep the log: pg_dump includes these tables' rows and sequences.
SELECT pg_catalog.pg_extension_config_dump('ledger.streams', '');
SELECT pg_catalog.pg_extension_config_dump('ledger.streams_stream_id_seq', '');
SELECT pg_catalog.pg_extension_config_dump('ledger.entries', '');
SELECT pg_catalog.pg_extension_config_dump('ledger.entries_id_seq', '');
SELECT pg_catalog.pg_extension_config_dump('ledger.stream_settings', '');
SELECT pg_catalog.pg_extension_config_dump('ledger.upcasters', '');

REVOKE ALL ON ALL TABLES IN SCHEMA ledger FROM PUBLIC;
REVOKE ALL ON ALL SEQUENCES IN SCHEMA ledger FROM PUBLIC;
GRANT SELECT ON ledger.upcasters, ledger.stream_settings TO ledger_reader;

-- ---------------------------------------------------------------------------
-- Guards: entries change only through ledger's own functions, whoever asks.
-- ENABLE ALWAYS keeps them on under session_replication_role = replica.
-- ---------------------------------------------------------------------------
CREATE FUNCTION ledger.guard_entries() RETURNS trigger
	AS 'MODULE_PATHNAME', 'ledger_guard_entries' LANGUAGE C;
CREATE TRIGGER entries_guard_row BEFORE UPDATE OR DELETE ON ledger.entries
	FOR EACH ROW EXECUTE FUNCTION ledger.guard_entries();
CREATE TRIGGER entries_guard_truncate BEFORE TRUNCATE ON ledger.entries
	FOR EACH STATEMENT EXECUTE FUNCTION ledger.guard_entries();
ALTER TABLE ledger.entries ENABLE ALWAYS TRIGGER entries_guard_row;
ALTER TABLE ledger.entries ENABLE ALWAYS TRIGGER entries_guard_truncate;
REVOKE ALL ON FUNCTION ledger.guard_entries() FROM PUBLIC;

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

-- ---------------------------------------------------------------------------
-- Writing
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
AS 'MODULE_PATHNAME', 'ledger_append'
LANGUAGE C VOLATILE PARALLEL UNSAFE SECURITY DEFINER
SET search_path = pg_catalog, ledger, pg_temp;
COMMENT ON FUNCTION ledger.append(text, jsonb, text, text, jsonb, text[], integer, bigint) IS
'Appends one entry to a stream and returns its id; with a dedup_key already in the stream, writes nothing and returns the existing id';

CREATE FUNCTION ledger.append_batch(
	stream			text,
	entries			ledger.append_input[],
	schema_version	integer DEFAULT NULL,
	expected_seq	bigint DEFAULT NULL)
RETURNS TABLE (ord integer, id bigint, seq bigint, duplicate boolean)
AS 'MODULE_PATHNAME', 'ledger_append_batch'
LANGUAGE C VOLATILE PARALLEL UNSAFE SECURITY DEFINER ROWS 100
SET search_path = pg_catalog, ledger, pg_temp;
COMMENT ON FUNCTION ledger.append_batch(text, ledger.append_input[], integer, bigint) IS
'Appends entries to a stream atomically; one row per input with its id, seq and whether it was a duplicate';

CREATE FUNCTION ledger.append_batch(
	stream			text,
	entries			jsonb,
	schema_version	integer DEFAULT NULL,
	expected_seq	bigint DEFAULT NULL)
RETURNS TABLE (ord integer, id bigint, seq bigint, duplicate boolean)
AS 'MODULE_PATHNAME', 'ledger_append_batch_jsonb'
LANGUAGE C VOLATILE PARALLEL UNSAFE SECURITY DEFINER ROWS 100
SET search_path = pg_catalog, ledger, pg_temp;
COMMENT ON FUNCTION ledger.append_batch(text, jsonb, integer, bigint) IS
'Appends a JSON array of {payload, order_key, dedup_key, metadata, tags} objects atomically';

-- An untyped literal ('[…]') would be ambiguous between the two forms above;
-- a text parameter is preferred for it, so this overload takes such calls.
CREATE FUNCTION ledger.append_batch(
	stream			text,
	entries			text,
	schema_version	integer DEFAULT NULL,
	expected_seq	bigint DEFAULT NULL)
RETURNS TABLE (ord integer, id bigint, seq bigint, duplicate boolean)
AS 'MODULE_PATHNAME', 'ledger_append_batch_jsonb'
LANGUAGE C VOLATILE PARALLEL UNSAFE SECURITY DEFINER ROWS 100
SET search_path = pg_catalog, ledger, pg_temp;
COMMENT ON FUNCTION ledger.append_batch(text, text, integer, bigint) IS
'The jsonb form of append_batch, for a JSON array given as text or as an untyped literal';

-- ---------------------------------------------------------------------------
-- Reading
-- ---------------------------------------------------------------------------
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
AS 'MODULE_PATHNAME', 'ledger_read'
LANGUAGE C VOLATILE PARALLEL UNSAFE SECURITY DEFINER ROWS 100
SET search_path = pg_catalog, ledger, pg_temp;
COMMENT ON FUNCTION ledger.read(text, bigint, integer, boolean, text, text, text[], jsonb, jsonb, integer, interval) IS
'Reads entries of one stream after a cursor id, optionally filtered, upcast and waiting for new entries';

CREATE FUNCTION ledger.read_all(
	after			bigint DEFAULT 0,
	"limit"			integer DEFAULT 100,
	streams			text DEFAULT NULL,
	wait			interval DEFAULT NULL)
RETURNS SETOF ledger.entry
AS 'MODULE_PATHNAME', 'ledger_read_all'
LANGUAGE C VOLATILE PARALLEL UNSAFE SECURITY DEFINER ROWS 100
SET search_path = pg_catalog, ledger, pg_temp;
COMMENT ON FUNCTION ledger.read_all(bigint, integer, text, interval) IS
'Reads entries of all streams (or those matching a pattern) in id order, never skipping an entry that commits later';

CREATE FUNCTION ledger.get(stream text, seq bigint)
RETURNS ledger.entry
AS 'MODULE_PATHNAME', 'ledger_get'
LANGUAGE C STABLE PARALLEL RESTRICTED SECURITY DEFINER
SET search_path = pg_catalog, ledger, pg_temp;
COMMENT ON FUNCTION ledger.get(text, bigint) IS
'Returns the entry at a seq of a stream; 22003 when it was trimmed or lies beyond the last entry';

CREATE FUNCTION ledger.count(stream text)
RETURNS bigint
AS 'MODULE_PATHNAME', 'ledger_count'
LANGUAGE C STABLE PARALLEL RESTRICTED SECURITY DEFINER
SET search_path = pg_catalog, ledger, pg_temp;
COMMENT ON FUNCTION ledger.count(text) IS 'Number of entries in a stream, without scanning it';

CREATE FUNCTION ledger.stat(stream text)
RETURNS ledger.stream_stat
AS 'MODULE_PATHNAME', 'ledger_stat'
LANGUAGE C STABLE PARALLEL RESTRICTED SECURITY DEFINER
SET search_path = pg_catalog, ledger, pg_temp;
COMMENT ON FUNCTION ledger.stat(text) IS 'Count, id and seq range, schema version and times of a stream';

CREATE FUNCTION ledger.streams(
	after		text DEFAULT NULL,
	"limit"		integer DEFAULT 100,
	prefix		text DEFAULT NULL)
RETURNS SETOF text
AS 'MODULE_PATHNAME', 'ledger_streams'
LANGUAGE C STABLE PARALLEL RESTRICTED SECURITY DEFINER ROWS 100
SET search_path = pg_catalog, ledger, pg_temp;
COMMENT ON FUNCTION ledger.streams(text, integer, text) IS
'Names of streams holding at least one entry, ascending, after a name and/or under a prefix';

-- ---------------------------------------------------------------------------
-- Mutable side data
-- ---------------------------------------------------------------------------
CREATE FUNCTION ledger.set_tags(stream text, id bigint, tags text[])
RETURNS void
AS 'MODULE_PATHNAME', 'ledger_set_tags'
LANGUAGE C VOLATILE PARALLEL UNSAFE SECURITY DEFINER
SET search_path = pg_catalog, ledger, pg_temp;
COMMENT ON FUNCTION ledger.set_tags(text, bigint, text[]) IS 'Replaces the tags of an entry';

CREATE FUNCTION ledger.set_annotations(stream text, id bigint, annotations jsonb)
RETURNS void
AS 'MODULE_PATHNAME', 'ledger_set_annotations'
LANGUAGE C VOLATILE PARALLEL UNSAFE SECURITY DEFINER
SET search_path = pg_catalog, ledger, pg_temp;
COMMENT ON FUNCTION ledger.set_annotations(text, bigint, jsonb) IS
'Merges string annotations into an entry; a JSON null value deletes that key';

-- ---------------------------------------------------------------------------
-- Retention
-- ---------------------------------------------------------------------------
CREATE FUNCTION ledger.trim(stream text, before_id bigint)
RETURNS bigint
AS 'MODULE_PATHNAME', 'ledger_trim'
LANGUAGE C VOLATILE PARALLEL UNSAFE SECURITY DEFINER
SET search_path = pg_catalog, ledger, pg_temp;
COMMENT ON FUNCTION ledger.trim(text, bigint) IS
'Deletes the entries of a stream with id <= before_id and returns how many';

CREATE FUNCTION ledger.set_retention(
	streams		text,
	max_entries	bigint DEFAULT NULL,
	max_age		interval DEFAULT NULL)
RETURNS void
AS 'MODULE_PATHNAME', 'ledger_set_retention'
LANGUAGE C VOLATILE PARALLEL UNSAFE SECURITY DEFINER
SET search_path = pg_catalog, ledger, pg_temp;
COMMENT ON FUNCTION ledger.set_retention(text, bigint, interval) IS
'Sets (or with NULLs clears) the retention limits of streams matching a pattern; the background worker enforces them';

CREATE FUNCTION ledger.enforce_retention(streams text DEFAULT '*')
RETURNS bigint
AS 'MODULE_PATHNAME', 'ledger_enforce_retention'
LANGUAGE C VOLATILE PARALLEL UNSAFE SECURITY DEFINER
SET search_path = pg_catalog, ledger, pg_temp;
COMMENT ON FUNCTION ledger.enforce_retention(text) IS
'Enforces the retention limits of streams matching a pattern now, in this transaction, skipping streams locked by open transactions; returns the number of entries deleted';

-- ---------------------------------------------------------------------------
-- Schema versions and upcasters
-- ---------------------------------------------------------------------------
CREATE FUNCTION ledger.set_schema_version(streams text, version integer)
RETURNS void
AS 'MODULE_PATHNAME', 'ledger_set_schema_version'
LANGUAGE C VOLATILE PARALLEL UNSAFE SECURITY DEFINER
SET search_path = pg_catalog, ledger, pg_temp;
COMMENT ON FUNCTION ledger.set_schema_version(text, integer) IS
'Sets the schema version that new appends are stamped with and reads upcast to, for streams matching a pattern';

CREATE FUNCTION ledger.register_upcaster(
	streams			text,
	from_version	integer,
	to_version		integer,
	rename			jsonb DEFAULT '{}',
	defaults		jsonb DEFAULT '{}',
	remove			text[] DEFAULT '{}')
RETURNS void
AS 'MODULE_PATHNAME', 'ledger_register_upcaster'
LANGUAGE C VOLATILE PARALLEL UNSAFE SECURITY INVOKER
SET search_path = pg_catalog, ledger, pg_temp;
COMMENT ON FUNCTION ledger.register_upcaster(text, integer, integer, jsonb, jsonb, text[]) IS
'Registers a declarative upcaster (rename, then defaults, then remove) from one schema version to another';

-- Takes untyped literals for rename/defaults, which would otherwise be
-- ambiguous with the regprocedure form below.  rename has no default here,
-- so calls without it still resolve to the jsonb form.
CREATE FUNCTION ledger.register_upcaster(
	streams			text,
	from_version	integer,
	to_version		integer,
	rename			text,
	defaults		text DEFAULT '{}',
	remove			text[] DEFAULT '{}')
RETURNS void
AS 'MODULE_PATHNAME', 'ledger_register_upcaster'
LANGUAGE C VOLATILE PARALLEL UNSAFE SECURITY INVOKER
SET search_path = pg_catalog, ledger, pg_temp;
COMMENT ON FUNCTION ledger.register_upcaster(text, integer, integer, text, text, text[]) IS
'The declarative register_upcaster, for rename/defaults given as JSON text or untyped literals';

CREATE FUNCTION ledger.register_upcaster(
	streams			text,
	from_version	integer,
	to_version		integer,
	fn				regprocedure)
RETURNS void
AS 'MODULE_PATHNAME', 'ledger_register_upcaster_fn'
LANGUAGE C VOLATILE PARALLEL UNSAFE SECURITY INVOKER
SET search_path = pg_catalog, ledger, pg_temp;
COMMENT ON FUNCTION ledger.register_upcaster(text, integer, integer, regprocedure) IS
'Registers a function fn(jsonb) RETURNS jsonb as the upcaster from one schema version to another; it runs as the registering role, in a security-restricted operation';

CREATE FUNCTION ledger.drop_upcaster(streams text, from_version integer)
RETURNS void
AS 'MODULE_PATHNAME', 'ledger_drop_upcaster'
LANGUAGE C VOLATILE PARALLEL UNSAFE SECURITY DEFINER
SET search_path = pg_catalog, ledger, pg_temp;
COMMENT ON FUNCTION ledger.drop_upcaster(text, integer) IS 'Removes the upcaster registered for a pattern and from_version';

-- ---------------------------------------------------------------------------
-- Export sinks, served by the background worker (src/export.c).  A sink
-- mirrors its streams: entries, then their side-data changes and trims, in
-- commit order.  position is the last item the target has applied; the
-- target keeps its own cursor, written with or after the items, and the
-- worker resumes from position, checking what the target holds.
-- ---------------------------------------------------------------------------
CREATE TABLE ledger.sinks (
	name			text COLLATE "C" NOT NULL,
	kind			text NOT NULL,
	target			text NOT NULL,
	streams			text COLLATE "C" NOT NULL DEFAULT '*',
	options			jsonb NOT NULL DEFAULT '{}',
	state			text NOT NULL DEFAULT 'active',
	position		bigint NOT NULL DEFAULT 0,
	exported_total	bigint NOT NULL DEFAULT 0,
	last_error		text,
	last_error_at	timestamptz,
	created_at		timestamptz NOT NULL DEFAULT pg_catalog.now(),
	CONSTRAINT sinks_pkey PRIMARY KEY (name),
	CONSTRAINT sinks_kind_check CHECK (kind OPERATOR(pg_catalog.=) ANY (ARRAY['sqlite', 'mongodb'])),
	CONSTRAINT sinks_state_check CHECK (state OPERATOR(pg_catalog.=) ANY (ARRAY['active', 'paused', 'error']))
);
SELECT pg_catalog.pg_extension_config_dump('ledger.sinks', '');
REVOKE ALL ON ledger.sinks FROM PUBLIC;

CREATE FUNCTION ledger.redact_target(kind text, target text) RETURNS text
	AS 'MODULE_PATHNAME', 'ledger_redact_target'
	LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;

CREATE VIEW ledger.sinks_status AS
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
REVOKE ALL ON ledger.sinks_status FROM PUBLIC;
GRANT SELECT ON ledger.sinks_status TO ledger_admin;

CREATE FUNCTION ledger.create_sink(
	name		text,
	kind		text,
	target		text,
	streams		text DEFAULT '*',
	options		jsonb DEFAULT '{}')
RETURNS void
AS 'MODULE_PATHNAME', 'ledger_create_sink'
LANGUAGE C VOLATILE PARALLEL UNSAFE SECURITY INVOKER
SET search_path = pg_catalog, ledger, pg_temp;

CREATE FUNCTION ledger.drop_sink(name text)
RETURNS void
AS 'MODULE_PATHNAME', 'ledger_drop_sink'
LANGUAGE C VOLATILE PARALLEL UNSAFE SECURITY DEFINER
SET search_path = pg_catalog, ledger, pg_temp;
COMMENT ON FUNCTION ledger.drop_sink(text) IS 'Removes an export sink; what it exported stays in the target';

CREATE FUNCTION ledger.pause_sink(name text)
RETURNS void
AS 'MODULE_PATHNAME', 'ledger_pause_sink'
LANGUAGE C VOLATILE PARALLEL UNSAFE SECURITY DEFINER
SET search_path = pg_catalog, ledger, pg_temp;
COMMENT ON FUNCTION ledger.pause_sink(text) IS 'Stops exporting to a sink until resume_sink';

CREATE FUNCTION ledger.resume_sink(name text)
RETURNS void
AS 'MODULE_PATHNAME', 'ledger_resume_sink'
LANGUAGE C VOLATILE PARALLEL UNSAFE SECURITY DEFINER
SET search_path = pg_catalog, ledger, pg_temp;
COMMENT ON FUNCTION ledger.resume_sink(text) IS 'Resumes a paused sink (or retries one in error at once)';

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
COMMENT ON FUNCTION ledger.create_sink(text, text, text, text, jsonb) IS
'Creates an export sink that mirrors streams into a SQLite file (kind sqlite, target an absolute path; needs pg_write_server_files) or a MongoDB collection (kind mongodb, target a MongoDB URI to a host in ledger.sink_hosts)';
COMMENT ON FUNCTION ledger.redact_target(text, text) IS
'A sink target safe to show: a MongoDB URI with its password and every secret-bearing option value masked';

-- New or changed sinks and retention limits (pg_restore's included) start
-- or wake this database's background worker once they commit.
CREATE FUNCTION ledger.wake_worker() RETURNS trigger
	AS 'MODULE_PATHNAME', 'ledger_wake_worker' LANGUAGE C;
CREATE TRIGGER sinks_wake_worker AFTER INSERT OR UPDATE OR DELETE ON ledger.sinks
	FOR EACH STATEMENT EXECUTE FUNCTION ledger.wake_worker();
CREATE TRIGGER stream_settings_wake_worker AFTER INSERT OR UPDATE ON ledger.stream_settings
	FOR EACH STATEMENT EXECUTE FUNCTION ledger.wake_worker();
ALTER TABLE ledger.sinks ENABLE ALWAYS TRIGGER sinks_wake_worker;
ALTER TABLE ledger.stream_settings ENABLE ALWAYS TRIGGER stream_settings_wake_worker;

-- ---------------------------------------------------------------------------
-- Health
-- ---------------------------------------------------------------------------
CREATE FUNCTION ledger.health()
RETURNS TABLE (check_name text, ok boolean, detail text)
AS 'MODULE_PATHNAME', 'ledger_health'
LANGUAGE C VOLATILE PARALLEL UNSAFE SECURITY DEFINER
SET search_path = pg_catalog, ledger, pg_temp;
COMMENT ON FUNCTION ledger.health() IS
'Checks: preload, read_all horizon (oldest unsettled append), background worker, sinks';

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

-- ---------------------------------------------------------------------------
-- Privileges: PUBLIC executes nothing; each role gets its rung of the ladder
-- (ledger_admin is a member of ledger_writer, which is a member of ledger_reader).
-- register_upcaster is SECURITY INVOKER (it records its caller) and becomes
-- the extension owner only to write ledger.upcasters.
-- ---------------------------------------------------------------------------
REVOKE ALL ON ALL FUNCTIONS IN SCHEMA ledger FROM PUBLIC;

GRANT EXECUTE ON FUNCTION
	ledger.pattern_rank(text, text),
	ledger.read(text, bigint, integer, boolean, text, text, text[], jsonb, jsonb, integer, interval),
	ledger.read_all(bigint, integer, text, interval),
	ledger.get(text, bigint),
	ledger.count(text),
	ledger.stat(text),
	ledger.streams(text, integer, text)
TO ledger_reader;

GRANT EXECUTE ON FUNCTION
	ledger.append(text, jsonb, text, text, jsonb, text[], integer, bigint),
	ledger.append_batch(text, ledger.append_input[], integer, bigint),
	ledger.append_batch(text, jsonb, integer, bigint),
	ledger.append_batch(text, text, integer, bigint),
	ledger.set_tags(text, bigint, text[]),
	ledger.set_annotations(text, bigint, jsonb)
TO ledger_writer;

GRANT EXECUTE ON FUNCTION
	ledger.trim(text, bigint),
	ledger.set_retention(text, bigint, interval),
	ledger.enforce_retention(text),
	ledger.set_schema_version(text, integer),
	ledger.register_upcaster(text, integer, integer, jsonb, jsonb, text[]),
	ledger.register_upcaster(text, integer, integer, text, text, text[]),
	ledger.register_upcaster(text, integer, integer, regprocedure),
	ledger.drop_upcaster(text, integer),
	ledger.create_sink(text, text, text, text, jsonb),
	ledger.drop_sink(text),
	ledger.pause_sink(text),
	ledger.resume_sink(text),
	ledger.health()
TO ledger_admin;
-- used by the sinks_status view, with the privileges of its reader
GRANT EXECUTE ON FUNCTION ledger.redact_target(text, text) TO ledger_admin;
