#!/usr/bin/env bash
# bench/export.sh — export throughput and lag of the sinks: how fast the
# background worker drains a backlog of N entries into a SQLite file and
# into MongoDB (FerretDB, test/lib/ferretdb.sh, or LEDGER_TEST_MONGODB_URI),
# and the commit-to-target lag of appends and of set_tags on an idle system,
# measured by a client (ledger-check -lag: one open connection appends or
# changes tags, then polls the export through the Go library's reads).
# Usage: bash bench/export.sh [N, default 200000]; PG_CONFIG picks the server.
set -euo pipefail
SRC=$(cd "$(dirname "$0")/.." && pwd)
. "$SRC/test/lib/common.sh"
. "$SRC/test/lib/ferretdb.sh"
N=${1:-200000}
LAG_N=${BENCH_LAG_N:-200}

ledger_install_deps
ledger_build_install "$SRC"
WORK=$(mktemp -d /tmp/ledger-bench-export.XXXXXX)
chmod 755 "$WORK"
[ "$(id -u)" = 0 ] && chown "$(ledger_test_user)" "$WORK"
trap 'ledger_ferretdb_stop; ledger_stop_cluster "$WORK/cluster"; rm -rf "$WORK"' EXIT
ledger_write_conf "$WORK/ledger.conf" "$SRC"
echo "ledger.export_batch = 5000" >> "$WORK/ledger.conf"
ledger_start_cluster "$WORK/cluster" "$WORK/ledger.conf"
CHECK=$(ledger_go_build "$SRC/test/golib" ledger-check)

if [ -n "${LEDGER_TEST_MONGODB_URI:-}" ]; then
	MONGO_URI=$LEDGER_TEST_MONGODB_URI; MONGO_KIND="a real MongoDB"
else
	ledger_ferretdb_start "$WORK"
	MONGO_URI=$FERRETDB_URI; MONGO_KIND="FerretDB 1.24.2 on its SQLite backend"
fi

psql_() { as_test_user psql -X -q -At -v ON_ERROR_STOP=1 "$@"; }
psql_ -c "CREATE EXTENSION ledger" >/dev/null
# the backlog: ~200-byte payloads in batches of 1000, over 8 streams
psql_ -c "SELECT count(*) FROM generate_series(1, $N / 1000) b,
	LATERAL ledger.append_batch('bench-' || (b % 8), (SELECT jsonb_agg(jsonb_build_object('payload',
		jsonb_build_object('order', b * 1000 + g, 'customer', 'customer-' || g, 'amount', g * 1.5,
						   'note', repeat('n', 120)), 'order_key', 'c' || (g % 50), 'tags', jsonb_build_array('t' || (g % 5)))) FROM generate_series(1, 1000) g))" >/dev/null
MAXID=$(psql_ -c "SELECT max(id) FROM ledger.entries")

measure() {	# measure NAME KIND TARGET OPTIONS
	local t0 t1
	t0=$(date +%s.%N)
	psql_ -c "SELECT ledger.create_sink('$1', '$2', '$3', 'bench-*', '$4')" >/dev/null
	until [ "$(psql_ -c "SELECT position >= $MAXID FROM ledger.sinks_status WHERE name = '$1'")" = t ]; do
		sleep 0.05
		if [ "$(psql_ -c "SELECT state FROM ledger.sinks_status WHERE name = '$1'")" = error ]; then
			psql_ -c "SELECT last_error FROM ledger.sinks_status WHERE name = '$1'"; return 1
		fi
	done
	t1=$(date +%s.%N)
	echo "$t0 $t1" | awk -v n="$N" -v name="$1" '{printf "| %s | %d | %.2f | %.0f |\n", name, n, $2 - $1, n / ($2 - $1)}'
	psql_ -c "SELECT ledger.pause_sink('$1')" >/dev/null
}

echo "# export throughput: a backlog of $N entries (ledger.export_batch = 5000); MongoDB: $MONGO_KIND"
echo "# machine: $(nproc) cores, load average $(cut -d' ' -f1-3 /proc/loadavg) at start (shared with other work)"
echo
echo "| sink | entries | seconds | entries/s |"
echo "|---|---|---|---|"
measure lite sqlite "$WORK/export.db" '{}'
measure mongo mongodb "$MONGO_URI" '{"database": "bench"}'
echo
echo "$MONGO_KIND on its own, for scale: $("$CHECK" -mongo "$MONGO_URI" -db bench_raw -collection raw -raw-insert "$N")"

# commit-to-target lag while idle, from a client's point of view
psql_ -c "SELECT ledger.drop_sink('lite'), ledger.drop_sink('mongo')" >/dev/null
psql_ -c "SELECT ledger.create_sink('lag_lite', 'sqlite', '$WORK/lag.db', 'lag')" >/dev/null
psql_ -c "SELECT ledger.create_sink('lag_mongo', 'mongodb', '$MONGO_URI', 'lag-m', '{\"database\": \"lag\"}')" >/dev/null
psql_ -c "SELECT ledger.append('lag', '{}'), ledger.append('lag-m', '{}')" >/dev/null
until [ "$(psql_ -c "SELECT bool_and(exported_total = 1) FROM ledger.sinks_status")" = t ]; do sleep 0.1; done
echo
echo "## SQLite, $LAG_N appends and $LAG_N set_tags, one at a time"
as_test_user env PGHOST="$PGHOST" PGPORT="$PGPORT" PGUSER=postgres PGDATABASE=postgres \
	"$CHECK" -sqlite "$WORK/lag.db" -lag "$LAG_N" -lag-stream lag
echo
echo "## MongoDB ($MONGO_KIND), $LAG_N appends and $LAG_N set_tags, one at a time"
as_test_user env PGHOST="$PGHOST" PGPORT="$PGPORT" PGUSER=postgres PGDATABASE=postgres \
	"$CHECK" -mongo "$MONGO_URI" -db lag -lag "$LAG_N" -lag-stream lag-m
echo
echo "# load average at the end: $(cut -d' ' -f1-3 /proc/loadavg)"
