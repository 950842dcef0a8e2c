#!/usr/bin/env bash
# bench/export.sh — export throughput and lag of the sinks: how fast the
# background worker copies a backlog of N entries into a SQLite file and into
# MongoDB (the test server test/mongo/server.js, or LEDGER_TEST_MONGODB_URI),
# and the lag from the commit of an append to its export while idle.
# Usage: bash bench/export.sh [N, default 200000]
set -euo pipefail
SRC=$(cd "$(dirname "$0")/.." && pwd)
. "$SRC/test/lib/common.sh"
N=${1:-200000}

ledger_install_deps
ledger_build_install "$SRC"
WORK=$(mktemp -d /tmp/ledger-bench-export.XXXXXX)
[ "$(id -u)" = 0 ] && chown "$(ledger_test_user)" "$WORK"
MONGO_PID=
trap '[ -n "$MONGO_PID" ] && kill $MONGO_PID; ledger_stop_cluster "$WORK/cluster"; rm -rf "$WORK"' EXIT
ledger_write_conf "$WORK/ledger.conf" "$SRC"
echo "ledger.export_batch = 5000" >> "$WORK/ledger.conf"
ledger_start_cluster "$WORK/cluster" "$WORK/ledger.conf"

if [ -n "${LEDGER_TEST_MONGODB_URI:-}" ]; then
	MONGO_URI=$LEDGER_TEST_MONGODB_URI; MONGO_KIND="a real MongoDB"
else
	[ -d "$SRC/test/mongo/node_modules" ] || (cd "$SRC/test/mongo" && npm ci --silent --no-audit --no-fund >/dev/null)
	PORT=$(( (RANDOM % 2000) + 39000 ))
	node "$SRC/test/mongo/server.js" "$PORT" >"$WORK/mongo.log" 2>&1 &
	MONGO_PID=$!
	for _ in $(seq 50); do grep -q listening "$WORK/mongo.log" && break; sleep 0.1; done
	MONGO_URI="mongodb://127.0.0.1:$PORT/"; MONGO_KIND="the Node.js MongoDB-wire test server"
fi

psql_() { as_test_user psql -X -q -At -v ON_ERROR_STOP=1 "$@"; }
psql_ -c "CREATE EXTENSION ledger" >/dev/null
# the backlog: ~200-byte payloads in batches of 1000
psql_ -c "SELECT count(*) FROM generate_series(1, $N / 1000) b,
	LATERAL ledger.append_batch('bench-' || (b % 8), (SELECT jsonb_agg(jsonb_build_object('payload',
		jsonb_build_object('order', b * 1000 + g, 'customer', 'customer-' || g, 'amount', g * 1.5,
						   'note', repeat('n', 120)), 'order_key', 'c' || (g % 50))) FROM generate_series(1, 1000) g))" >/dev/null
MAXID=$(psql_ -c "SELECT max(id) FROM ledger.entries")

measure() {	# measure NAME KIND TARGET OPTIONS
	local t0 t1
	t0=$(date +%s.%N)
	psql_ -c "SELECT ledger.create_sink('$1', '$2', '$3', '*', '$4')" >/dev/null
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

echo "# export throughput (backlog of $N entries, ledger.export_batch = 5000); MongoDB: $MONGO_KIND"
echo
echo "| sink | entries | seconds | entries/s |"
echo "|---|---|---|---|"
measure lite sqlite "$WORK/export.db" '{}'
measure mongo mongodb "$MONGO_URI" '{"database": "bench"}'

# commit-to-export lag on an idle system: one append at a time
psql_ -c "SELECT ledger.resume_sink('lite')" >/dev/null
for i in $(seq 50); do
	ID=$(psql_ -c "SELECT ledger.append('lag', '{\"i\": $i}')")
	t0=$(date +%s%N)
	until [ "$(psql_ -c "SELECT position >= $ID FROM ledger.sinks_status WHERE name = 'lite'")" = t ]; do sleep 0.002; done
	echo $(( ($(date +%s%N) - t0) / 1000 ))
done | sort -n > "$WORK/lag.txt"
echo
awk '{a[NR]=$1} END {printf "sqlite commit-to-export lag over %d appends: median %.1f ms, p99 %.1f ms (includes one psql poll round trip)\n", NR, a[int(NR/2)+1]/1000, a[int(NR*0.99)+ (NR*0.99 > int(NR*0.99))]/1000}' "$WORK/lag.txt"
