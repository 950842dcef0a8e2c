#!/usr/bin/env bash
# bench/repro_stat_plan.sh — repro for a finding of the benchmark: ledger.stat()
# (and any stream-scoped query planned as "WHERE stream_id = $1 ORDER BY id
# [DESC] LIMIT n") can be planned over entries_pkey with a filter on stream_id,
# so its cost grows with the entries OTHER streams appended after the stream's
# last entry, instead of staying O(log n).  Needs the extension installed
# (bash bench/run.sh --quick does that); run as root or a user who can initdb.
# Expect at least one line (which one depends on the ANALYZE sample) at
# 10-50x the others, and the plan below to filter thousands of rows.
set -uo pipefail
SRC=$(cd "$(dirname "$0")/.." && pwd)
. "$SRC/test/lib/common.sh"
D=$(mktemp -d /tmp/ledger-repro.XXXXXX)
[ "$(id -u)" = 0 ] && chown "$(ledger_test_user)" "$D"
trap 'ledger_stop_cluster "$D/c"; rm -rf "$D"' EXIT
ledger_write_conf "$D/conf" "$SRC"
ledger_start_cluster "$D/c" "$D/conf" >/dev/null || exit 1
psql -X -q -c "CREATE EXTENSION ledger"
batch() { echo "SELECT count(*) FROM ledger.append_batch('$1', (SELECT jsonb_agg(jsonb_build_object('payload', jsonb_build_object('n', g))) FROM generate_series(1, $2) g));"; }
{ for i in $(seq 1 30); do batch big 10000; done; batch s10 10; } | psql -X -q -At >/dev/null
echo "SELECT count FROM ledger.stat('big');" > "$D/big.sql"
echo "SELECT count FROM ledger.stat('s10');" > "$D/s10.sql"
lat() { pgbench -n -M prepared -T 3 -f "$D/$1.sql" 2>&1 | grep -oP 'latency average = \K.*'; }
for n in 1000 10000 30000; do
	batch other $n | psql -X -q -At >/dev/null
	psql -X -q -c "VACUUM ANALYZE ledger.entries"
	echo "stat(big) $(lat big)   stat(s10) $(lat s10)   [300k in 'big', 10 in 's10', then +$n appended to 'other']"
done
echo "custom plan of stat()'s last-entry query for 'big':"
psql -X -c "EXPLAIN (ANALYZE, COSTS OFF) SELECT e.id, e.created_at FROM ledger.entries e
	WHERE e.stream_id = (SELECT stream_id FROM ledger.streams WHERE name = 'big') ORDER BY e.id DESC LIMIT 1"
