#!/bin/bash
# bench/append_ratio.sh — the append workloads of bench/run.sh (W1, W3) alone,
# in a throwaway cluster, for comparing two builds of ledger quickly:
#
#   bash bench/append_ratio.sh PG_BINDIR OUTFILE [DURATION]
#
# Uses whatever ledger is installed for PG_BINDIR.  W1: one append per
# transaction, a stream per client, 1 and 4 clients; W3: one call of 100
# entries (jsonb and composite forms) vs one 100-row INSERT, 2 clients; each
# at synchronous_commit on and off, `pgbench -n -M prepared -T DURATION`.
# Prints and appends to OUTFILE "workload,variant,sync,clients,tps,ratio".
# Run as root (the cluster runs as postgres) or as postgres.
set -u
BIN=$1
OUTFILE=$2
DUR=${3:-10}
HERE=$(cd "$(dirname "$0")" && pwd)
PORT=${APPEND_RATIO_PORT:-54399}
. "$HERE/cluster.sh"
bench_cluster_start "$BIN" "$PORT" append_ratio "fsync = on"

PAYLOAD="jsonb_build_object('type', 'order_placed', 'order_id', CAST(:r AS bigint), 'customer', 'customer-' || (CAST(:r AS bigint) % 997), 'amount', (CAST(:r AS bigint) % 100000) / 100.0, 'currency', 'EUR', 'sku', 'SKU-' || (CAST(:r AS bigint) % 4999), 'qty', 1 + CAST(:r AS bigint) % 7, 'note', 'benchmark payload padded to about two hundred bytes of json text')"
printf '\\set r random(1, 1000000000)\nSELECT ledger.append(%s, %s);\n' "'w1-' || :client_id" "$PAYLOAD" > "$WORK/w1_ledger.sql"
printf '\\set r random(1, 1000000000)\nINSERT INTO bench.plain (stream, seq, payload) VALUES (%s, nextval(%s), %s);\n' "'w1-' || :client_id" "'bench.plain_seq'" "$PAYLOAD" > "$WORK/w1_plain.sql"
BATCH_J=$(q -c "SELECT quote_literal(jsonb_agg(jsonb_build_object('payload', bench.payload(g)) ORDER BY g)::text) FROM generate_series(1, 100) g")
BATCH_C=$(q -c "SELECT quote_literal(array_agg(ROW(bench.payload(g), '', '', '{}'::jsonb, '{}'::text[])::ledger.append_input ORDER BY g)::text) FROM generate_series(1, 100) g")
BATCH_P=$(q -c "SELECT string_agg(format('(''w3p-'' || :client_id, nextval(''bench.plain_seq''), %s::jsonb)', quote_literal(bench.payload(g)::text)), E',\n' ORDER BY g) FROM generate_series(1, 100) g")
echo "SELECT count(*) FROM ledger.append_batch('w3j-' || :client_id, $BATCH_J::jsonb);" > "$WORK/w3_ledger_jsonb.sql"
echo "SELECT count(*) FROM ledger.append_batch('w3c-' || :client_id, $BATCH_C::ledger.append_input[]);" > "$WORK/w3_ledger_composite.sql"
echo "INSERT INTO bench.plain (stream, seq, payload) VALUES $BATCH_P;" > "$WORK/w3_plain.sql"
chmod 644 "$WORK"/*.sql

declare -A TPS
cell() {	# cell WORKLOAD VARIANT SYNC CLIENTS
	local opt=""
	[ "$3" = off ] && opt="-c synchronous_commit=off"
	q -c CHECKPOINT
	TPS[$1,$2,$3,$4]=$(PGOPTIONS="$opt" run "$BIN/pgbench" -h "$WORK" -p "$PORT" -n -M prepared \
		-c "$4" -j "$4" -T "$DUR" -f "$WORK/$(echo "$1" | tr 'A-Z' 'a-z')_$2.sql" postgres 2>&1 |
		grep -m1 -oP '^tps = \K[0-9.]+')
}
report() {	# report WORKLOAD VARIANT SYNC CLIENTS
	local t=${TPS[$1,$2,$3,$4]:-NA} p=${TPS[$1,plain,$3,$4]:-NA} r=NA
	[ "$t" != NA ] && [ "$p" != NA ] && r=$(echo "scale=3; $t / $p" | bc)
	echo "$1,$2,$3,$4,$t,$r" | tee -a "$OUTFILE"
}
for sync in on off; do
	for c in 1 4; do
		cell W1 ledger $sync $c
		cell W1 plain $sync $c
		report W1 ledger $sync $c
	done
	cell W3 ledger_jsonb $sync 2
	cell W3 ledger_composite $sync 2
	cell W3 plain $sync 2
	report W3 ledger_jsonb $sync 2
	report W3 ledger_composite $sync 2
done
