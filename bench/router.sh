#!/usr/bin/env bash
# bench/router.sh — what the ledger_router hop costs: the same calls made on a
# node directly and through a router database (PL/Proxy), back to back, one
# run each, 1 client (latency) and 4 clients (throughput).
#
#   bash bench/router.sh            15 s per pgbench run
#   BENCH_DURATION=5 bash bench/router.sh
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
DUR=${BENCH_DURATION:-15}

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
echo "workload,path,clients,tps,latency_ms" > "$RAW"
run() {	# run WORKLOAD PATH CLIENTS HOST PORT SCRIPT
	local log=$WORK/$1-$2-$3.log
	as_test_user pgbench -n -h "$4" -p "$5" -c "$3" -j "$3" -T "$DUR" -f "$6" postgres >"$log" 2>&1
	local tps lat
	tps=$(sed -n 's/^tps = \([0-9.]*\) .*/\1/p' "$log")
	lat=$(sed -n 's/^latency average = \([0-9.]*\) ms/\1/p' "$log")
	[ -n "$tps" ] || { echo "pgbench failed:"; cat "$log"; return 1; }
	echo "$1,$2,$3,$tps,$lat" >> "$RAW"
	printf '  %-7s %-7s %s clients: %10s tps  %8s ms\n' "$1" "$2" "$3" "$tps" "$lat"
}

log "one run each, $DUR s"
for clients in 1 4; do
	for w in append read count; do
		run "$w" direct $clients "$NODE_HOST" "$NODE_PORT" "$WORK/$w.sql"
		run "$w" router $clients "$ROUTER_HOST" "$ROUTER_PORT" "$WORK/$w.sql"
	done
	run append hop $clients "$ROUTER_HOST" "$ROUTER_PORT" "$WORK/hop.sql"
done

# summary: per workload and client count, router - direct latency and the tps ratio
/usr/bin/python3 - "$RAW" "$DUR" > "$OUT/summary.md" <<'EOF'
import csv, sys
rows = list(csv.DictReader(open(sys.argv[1])))
get = {(r['workload'], r['path'], r['clients']): r for r in rows}
print(f"# ledger_router overhead (one run each, {sys.argv[2]} s, `bash bench/router.sh`)\n")
print("| workload | clients | direct tps | router tps | router/direct | direct ms | router ms | added per call |")
print("|---|---|---|---|---|---|---|---|")
for (w, p, c), r in get.items():
    if p != 'router':
        continue
    d = get[(w, 'direct', c)]
    added = (float(r['latency_ms']) - float(d['latency_ms'])) * 1000
    print(f"| {w} | {c} | {float(d['tps']):.0f} | {float(r['tps']):.0f} | {float(r['tps']) / float(d['tps']):.2f} "
          f"| {float(d['latency_ms']):.3f} | {float(r['latency_ms']):.3f} | {added:.0f} µs |")
for c in ('1', '4'):
    h, r, d = get.get(('append', 'hop', c)), get.get(('append', 'router', c)), get.get(('append', 'direct', c))
    if h and r and d:
        print(f"\nappend, {c} client(s): PL/Proxy's hop alone adds {(float(h['latency_ms']) - float(d['latency_ms'])) * 1000:.0f} µs; "
              f"routing, deadline and error handling add {(float(r['latency_ms']) - float(h['latency_ms'])) * 1000:.0f} µs more.")
EOF
cat "$OUT/summary.md"
echo "results in $OUT"
