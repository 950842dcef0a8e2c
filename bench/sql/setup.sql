-- bench/sql/setup.sql — the comparison tables of the benchmark, in schema bench.
--
-- bench.plain: the "bare INSERT" bar.  Same columns as a ledger entry and the
--   same indexes ledger keeps (by stream name instead of ledger's stream_id):
--   pkey (id), (stream, id), unique (stream, seq), (stream, order_key, id),
--   unique (stream, dedup_key) WHERE dedup_key <> ''.  seq comes from a plain
--   sequence, so it is unique but NOT gapless per stream.
-- bench.md_entries + bench.md_append(): the best known design for gapless
--   per-stream positions without an extension (message-db's write_message):
--   pg_advisory_xact_lock(hashtext(stream)), max(seq)+1, INSERT.
\set ON_ERROR_STOP on
SET client_min_messages = warning;

CREATE EXTENSION IF NOT EXISTS ledger;
DROP SCHEMA IF EXISTS bench CASCADE;
CREATE SCHEMA bench;

-- About 200 bytes of JSON, deterministic in n.  run.sh inlines the same
-- expression into the pgbench scripts (keep them in sync: PAYLOAD_TEMPLATE).
CREATE FUNCTION bench.payload(n bigint) RETURNS jsonb
LANGUAGE sql IMMUTABLE PARALLEL SAFE
RETURN jsonb_build_object('type', 'order_placed', 'order_id', n,
	'customer', 'customer-' || (n % 997), 'amount', (n % 100000) / 100.0,
	'currency', 'EUR', 'sku', 'SKU-' || (n % 4999), 'qty', 1 + n % 7,
	'note', 'benchmark payload padded to about two hundred bytes of json text');

CREATE TABLE bench.plain (
	id				bigserial PRIMARY KEY,
	stream			text COLLATE "C" NOT NULL,
	seq				bigint NOT NULL,
	payload			jsonb NOT NULL,
	order_key		text COLLATE "C" NOT NULL DEFAULT '',
	dedup_key		text COLLATE "C" NOT NULL DEFAULT '',
	schema_version	integer NOT NULL DEFAULT 1,
	metadata		jsonb NOT NULL DEFAULT '{}',
	tags			text[] COLLATE "C" NOT NULL DEFAULT '{}',
	annotations		jsonb NOT NULL DEFAULT '{}',
	created_at		timestamptz NOT NULL DEFAULT now(),
	updated_at		timestamptz
);
CREATE INDEX plain_stream_id_idx ON bench.plain (stream, id);
CREATE UNIQUE INDEX plain_stream_seq_idx ON bench.plain (stream, seq);
CREATE INDEX plain_stream_order_idx ON bench.plain (stream, order_key, id);
CREATE UNIQUE INDEX plain_stream_dedup_idx ON bench.plain (stream, dedup_key) WHERE dedup_key <> '';
CREATE INDEX plain_tags_idx ON bench.plain USING gin (tags) WHERE tags <> '{}';	-- as ledger's tag index (partial, tagged rows only)
CREATE SEQUENCE bench.plain_seq;

CREATE TABLE bench.md_entries (LIKE bench.plain INCLUDING DEFAULTS);
CREATE SEQUENCE bench.md_entries_id_seq OWNED BY bench.md_entries.id;
ALTER TABLE bench.md_entries ALTER COLUMN id SET DEFAULT nextval('bench.md_entries_id_seq');
ALTER TABLE bench.md_entries ADD PRIMARY KEY (id);
CREATE INDEX md_stream_id_idx ON bench.md_entries (stream, id);
CREATE UNIQUE INDEX md_stream_seq_idx ON bench.md_entries (stream, seq);
CREATE INDEX md_stream_order_idx ON bench.md_entries (stream, order_key, id);
CREATE UNIQUE INDEX md_stream_dedup_idx ON bench.md_entries (stream, dedup_key) WHERE dedup_key <> '';

CREATE FUNCTION bench.md_append(p_stream text, p_payload jsonb) RETURNS bigint
LANGUAGE plpgsql AS $$
DECLARE
	v_seq bigint;
	v_id bigint;
BEGIN
	PERFORM pg_advisory_xact_lock(hashtext(p_stream));
	SELECT coalesce(max(seq), 0) + 1 INTO v_seq FROM bench.md_entries WHERE stream = p_stream;
	INSERT INTO bench.md_entries (stream, seq, payload) VALUES (p_stream, v_seq, p_payload)
		RETURNING id INTO v_id;
	RETURN v_id;
END
$$;

-- message-db's get_stream_messages (W4): plpgsql, rows after a position of a stream
CREATE FUNCTION bench.md_get_stream_messages(p_stream text, p_position bigint, p_batch_size integer)
RETURNS SETOF bench.md_entries
LANGUAGE plpgsql AS $$
BEGIN
	RETURN QUERY SELECT * FROM bench.md_entries
		WHERE stream = p_stream AND seq >= p_position ORDER BY seq LIMIT p_batch_size;
END
$$;
