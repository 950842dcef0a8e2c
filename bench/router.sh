#!/usr/bin/env bash
# bench/router.sh — what the ledger_router hop costs: the same calls made on a
# node directly and through a router database (PL/Proxy), 1 client (latency)
# and 4 clients (throughput).  One run of the script interleaves the paths in
# rounds (direct, router, direct, router, …) and reports each figure's median
# over the rounds, so that a burst of other load on the machine hits both.
#
#   bash bench/router.sh                          5 rounds of 5 s per figure
#   BENCH_ROUNDS=3 BENCH_DURATION=10 bash bench/router.sh
#
# Two throwaway clusters on loopback: a ledger node (preloaded) and a router
# (ledger_router, one node).  Workloads (each client its own stream):
#   append      ledger.append(stream, ~100-byte payload)
#   read        ledger.read('r', after => random id, "limit" => 10), a 10,000-entry stream
#   count       ledger.count('r'): the cheapest call, so nearly all hop
#   hop only    ledger_router.node_append(0, …): PL/Proxy's call without the
#               router's routing, deadline and error handling (router side)
# Writes bench/results/router-<timestamp>/{raw.csv,summary.md}.
set -uo pipefail

SRC=$(cd "$(dirname "$0")/.." && pwd)
. "$SRC/test/lib/common.sh"
DUR=${BENCH_DURATION:-5}
ROUNDS=${BENCH_ROUNDS:-5}

ledger_install_deps || exit 1
ledger_build_install "$SRC" || exit 1

TS=$(date -u +%Y%m%dT%H%M%SZ)
OUT=$SRC/bench/results/router-$TS
mkdir -p "$OUT" || exit 1
WORK=$(mktemp -d /tmp/ledger-bench-router.XXXXXX)
[ "$(id -u)" = 0 ] && chown "$(ledger_test_user)" "$WORK" && chown "$(ledger_test_user)" "$OUT"
trap 'ledger_stop_cluster "$WORK/node"; ledger_stop_cluster "$WORK/router"; rm -rf "$WORK"' EXIT

ledger_write_conf "$WORK/ledger.conf" "$SRC"
ledger_start_cluster "$WORK/node" "$WORK/ledger.conf" || exit 1
NODE_PORT=$PGPORT NODE_HOST=$PGHOST
: > "$WORK/router.conf"
ledger_start_cluster "$WORK/router" "$WORK/router.conf" || exit 1
ROUTER_PORT=$PGPORT ROUTER_HOST=$PGHOST

node_sql() { as_test_user psql -X -q -At -v ON_ERROR_STOP=1 -h "$NODE_HOST" -p "$NODE_PORT" -d postgres "$@"; }
router_sql() { as_test_user psql -X -q -At -v ON_ERROR_STOP=1 -h "$ROUTER_HOST" -p "$ROUTER_PORT" -d postgres "$@"; }

node_sql -c "CREATE EXTENSION ledger" -c "SELECT ledger.set_node(1)" >/dev/null || exit 1
router_sql -c "CREATE EXTENSION ledger_router CASCADE" \
	-c "SELECT ledger_router.add_node('n1', 'host=127.0.0.1 port=$NODE_PORT dbname=postgres', 1)" >/dev/null || exit 1
# the stream to read: 10,000 entries
node_sql -c "SELECT count(*) FROM generate_series(1, 10) b,
	LATERAL ledger.append_batch('r', (SELECT jsonb_agg(jsonb_build_object('payload',
		jsonb_build_object('order', b * 1000 + g, 'note', repeat('n', 60)))) FROM generate_series(1, 1000) g))" >/dev/null
MAXID=$(node_sql -c "SELECT max(id) FROM ledger.entries")

PAYLOAD="'{\"order\": 1, \"customer\": \"customer-1\", \"amount\": 12.5, \"note\": \"$(printf 'n%.0s' $(seq 40))\"}'"
cat > "$WORK/append.sql" <<EOF
SELECT ledger.append('w-' || :client_id, $PAYLOAD);
EOF
cat > "$WORK/read.sql" <<EOF
\set after random(1, $MAXID - 20 * 1024)
SELECT count(*) FROM ledger.read('r', after => :after, "limit" => 10);
EOF
cat > "$WORK/count.sql" <<EOF
SELECT ledger.count('r');
EOF
cat > "$WORK/hop.sql" <<EOF
SELECT ledger_router.node_append(0, 'h-' || :client_id, $PAYLOAD, '', '', '{}', '{}', NULL, NULL);
EOF
chmod a+r "$WORK"/*.sql

RAW=$OUT/raw.csv
echo "round,workload,path,clients,tps,latency_ms" > "$RAW"
run() {	# run WORKLOAD PATH CLIENTS HOST PORT SCRIPT   (uses $round)
	local log=$WORK/$1-$2-$3-$round.log
	as_test_user pgbench -n -h "$4" -p "$5" -c "$3" -j "$3" -T "$DUR" -f "$6" postgres >"$log" 2>&1
	local tps lat
	tps=$(sed -n 's/^tps = \([0-9.]*\) .*/\1/p' "$log")
	lat=$(sed -n 's/^latency average = \([0-9.]*\) ms/\1/p' "$log")
	[ -n "$tps" ] || { echo "pgbench failed:"; cat "$log"; return 1; }
	echo "$round,$1,$2,$3,$tps,$lat" >> "$RAW"
	printf '  round %s  %-7s %-7s %s clients: %10s tps  %8s ms\n' "$round" "$1" "$2" "$3" "$tps" "$lat"
}

log "$ROUNDS rounds of $DUR s per figure"
for round in $(seq "$ROUNDS"); do
	for clients in 1 4; do
		for w in append read count; do
			run "$w" direct $clients "$NODE_HOST" "$NODE_PORT" "$WORK/$w.sql"
			run "$w" router $clients "$ROUTER_HOST" "$ROUTER_PORT" "$WORK/$w.sql"
		done
		run append hop $clients "$ROUTER_HOST" "$ROUTER_PORT" "$WORK/hop.sql"
	done
done

# summary: per workload and client count, router - direct latency and the tps ratio
/usr/bin/python3 - "$RAW" "$DUR" "$ROUNDS" > "$OUT/summary.md" <<'EOF'
import csv, statistics, sys
from collections import defaultdict
runs = defaultdict(list)
for r in csv.DictReader(open(sys.argv[1])):
    runs[(r['workload'], r['path'], r['clients'])].append((float(r['tps']), float(r['latency_ms'])))
med = {k: (statistics.median(t for t, _ in v), statistics.median(l for _, l in v)) for k, v in runs.items()}
print(f"# ledger_router overhead: medians of {sys.argv[3]} interleaved rounds of {sys.argv[2]} s (`bash bench/router.sh`)\n")
print("| workload | clients | direct tps | router tps | router/direct | direct ms | router ms | added per call |")
print("|---|---|---|---|---|---|---|---|")
for (w, p, c) in sorted(med, key=lambda k: (k[2], k[0])):
    if p != 'router':
        continue
    (dt, dl), (rt, rl) = med[(w, 'direct', c)], med[(w, 'router', c)]
    print(f"| {w} | {c} | {dt:.0f} | {rt:.0f} | {rt / dt:.2f} | {dl:.3f} | {rl:.3f} | {(rl - dl) * 1000:.0f} µs |")
for c in ('1', '4'):
    if ('append', 'hop', c) in med:
        hl, rl, dl = med[('append', 'hop', c)][1], med[('append', 'router', c)][1], med[('append', 'direct', c)][1]
        print(f"\nappend, {c} client(s): PL/Proxy's call alone adds {(hl - dl) * 1000:.0f} µs to the direct call; "
              f"the router's routing, deadline and error handling add {(rl - hl) * 1000:.0f} µs to that.")
EOF
cat "$OUT/summary.md"
echo "results in $OUT"
