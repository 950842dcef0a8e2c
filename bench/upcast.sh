#!/usr/bin/env bash
# bench/upcast.sh — the cost of upcasting on the read path: reads of 100
# entries through a 3-step declarative chain (v1 -> v2 -> v3 -> v4) against
# the same reads without upcasting (as_version => 1), same stream, same run.
# Usage: bash bench/upcast.sh [seconds per run, default 15]
set -euo pipefail
SRC=$(cd "$(dirname "$0")/.." && pwd)
. "$SRC/test/lib/common.sh"
DURATION=${1:-15}

ledger_install_deps
ledger_build_install "$SRC"
WORK=$(mktemp -d /tmp/ledger-bench-upcast.XXXXXX)
[ "$(id -u)" = 0 ] && chown "$(ledger_test_user)" "$WORK"
trap 'ledger_stop_cluster "$WORK/cluster"; rm -rf "$WORK"' EXIT
ledger_write_conf "$WORK/ledger.conf" "$SRC"
ledger_start_cluster "$WORK/cluster" "$WORK/ledger.conf"

as_test_user psql -X -q -v ON_ERROR_STOP=1 <<'SQL'
CREATE EXTENSION ledger;
SELECT count(*) FROM ledger.append_batch('up',
	(SELECT jsonb_agg(jsonb_build_object('payload', jsonb_build_object(
		'customer_name', 'customer ' || g, 'amount', g, 'legacy', true,
		'note', repeat('x', 120)))) FROM generate_series(1, 10000) g));
SELECT ledger.register_upcaster('up', 1, 2, rename => '{"customer_name": "name"}');
SELECT ledger.register_upcaster('up', 2, 3, defaults => '{"currency": "EUR", "email": "unknown"}');
SELECT ledger.register_upcaster('up', 3, 4, remove => '{legacy}');
SELECT ledger.set_schema_version('up', 4);
SQL
MAXID=$(as_test_user psql -X -At -c "SELECT max(id) FROM ledger.entries")
run() { as_test_user pgbench -n -M prepared -c 2 -j 2 -T "$DURATION" -f "$1" 2>/dev/null | sed -n 's/^tps = \([0-9.]*\).*/\1/p'; }
for mode in rows count; do
	if [ $mode = rows ]; then SEL='*'; else SEL='count(*)'; fi
	printf '\\set pos random(1, %d)\nSELECT %s FROM ledger.read('"'up'"', after => :pos, "limit" => 100);\n' $((MAXID - 100)) "$SEL" > "$WORK/chain.sql"
	printf '\\set pos random(1, %d)\nSELECT %s FROM ledger.read('"'up'"', after => :pos, "limit" => 100, as_version => 1);\n' $((MAXID - 100)) "$SEL" > "$WORK/plain.sql"
	chmod 644 "$WORK"/*.sql
	# plain, chain, plain, chain: averages damp drift on a busy machine
	P1=$(run "$WORK/plain.sql"); C1=$(run "$WORK/chain.sql")
	P2=$(run "$WORK/plain.sql"); C2=$(run "$WORK/chain.sql")
	echo "$mode $P1 $P2 $C1 $C2" >> "$WORK/results"
done
echo "| read of 100 entries, 2 clients | no upcasting (tps) | 3-step declarative chain (tps) | extra cost of the chain |"
echo "|---|---|---|---|"
awk '{p = ($2 + $3) / 2; c = ($4 + $5) / 2;
	printf "| %s | %.0f | %.0f | %.1f%% |\n", ($1 == "rows" ? "SELECT * (rows sent to the client)" : "SELECT count(*) (server side only)"), p, c, (p / c - 1) * 100}' "$WORK/results"
