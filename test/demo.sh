#!/usr/bin/env bash
# test/demo.sh — build, install, start a throwaway preloaded PostgreSQL 15 and
# show ledger doing its main job.  As root on a fresh Debian 12 it installs
# what is missing first.  The server is removed again at the end.
set -euo pipefail

SRC=$(cd "$(dirname "$0")/.." && pwd)
. "$SRC/test/lib/common.sh"

ledger_install_deps
ledger_build_install "$SRC"
WORK=$(mktemp -d /tmp/ledger-demo.XXXXXX)
[ "$(id -u)" = 0 ] && chown "$(ledger_test_user)" "$WORK"
trap 'ledger_stop_cluster "$WORK/cluster"; rm -rf "$WORK"' EXIT
ledger_write_conf "$WORK/ledger.conf" "$SRC"
ledger_start_cluster "$WORK/cluster" "$WORK/ledger.conf"
log "a throwaway server with shared_preload_libraries = 'ledger' runs on port $PGPORT"

as_test_user psql -X -v ON_ERROR_STOP=1 -e <<SQL
CREATE EXTENSION ledger;

-- Append entries to a stream; streams exist from their first append.
SELECT ledger.append('orders', '{"id": "o-1", "amount": 99.99}',
                     order_key => 'customer-123', dedup_key => 'evt-1',
                     metadata => '{"source": "api"}');
SELECT ledger.append('orders', '{"id": "o-2", "amount": 5}', order_key => 'customer-456');
-- The same dedup key again: nothing is written, the first id comes back.
SELECT ledger.append('orders', '{"id": "o-1", "amount": 99.99}', dedup_key => 'evt-1');

-- A batch is atomic.
SELECT * FROM ledger.append_batch('payments',
  '[{"payload": {"order": "o-1"}, "dedup_key": "pay-1"},
    {"payload": {"order": "o-2"}, "tags": ["refund"]}]'::jsonb);

-- Cursor reads: after an id, filtered, newest first ...
SELECT id, seq, payload, order_key FROM ledger.read('orders');
SELECT id, seq, payload FROM ledger.read('orders', order_key => 'customer-123');
-- ... and the whole log in commit-safe id order.
SELECT id, stream, seq, payload FROM ledger.read_all(after => 0);

-- O(1) counts and stream stats.
SELECT ledger.count('orders');
SELECT stream, count, first_seq, last_seq, schema_version FROM ledger.stat('orders');

-- Optimistic concurrency: append only if the stream is at seq 2.
SELECT ledger.append('orders', '{"id": "o-3"}', expected_seq => 2);

-- Schema evolution: old entries are upcast on read, never rewritten.
SELECT ledger.register_upcaster('orders', 1, 2, rename => '{"amount": "total"}',
                                defaults => '{"currency": "EUR"}');
SELECT ledger.set_schema_version('orders', 2);
SELECT seq, schema_version, payload FROM ledger.read('orders');

-- Export: the background worker copies every entry, once, to a SQLite file.
SELECT ledger.create_sink('archive', 'sqlite', '$WORK/archive.db');
SELECT pg_sleep(1.5);
SELECT name, kind, state, position, lag_entries FROM ledger.sinks_status;

-- Tails block until something commits (here: nothing, for half a second).
SELECT count(*) FROM ledger.read('quiet', wait => '0.5 s');

SELECT * FROM ledger.health();
SQL

log "the SQLite export, as the Go ledger library would read it:"
. "$SRC/test/lib/ferretdb.sh"
if CHECK=$(ledger_go_build "$SRC/test/golib" ledger-check 2>/dev/null); then
	"$CHECK" -sqlite "$WORK/archive.db" -dump
else
	sqlite3 -header "$WORK/archive.db" "SELECT id, stream, CAST(payload AS TEXT) AS payload, source_id, created_at FROM ledger_entries ORDER BY id"
fi
log "demo done; the throwaway server is removed"
