#!/bin/bash
# bench/append_cpu.sh — backend CPU time per transaction of the append
# workloads, ledger vs plain INSERT: a figure that a busy machine distorts
# far less than tps (2 shared cores make pgbench ratios swing 0.5-1.6).
#
#   bash bench/append_cpu.sh PG_BINDIR [N]
#
# One psql session per variant runs N prepared EXECUTEs, each its own
# transaction (synchronous_commit = off, so no fsync wait), and reads its
# backend's utime+stime from /proc (the WAL each transaction writes, from
# the insert LSN before and after, is exact).  W1: one append (~230-byte payload);
# W3: one 100-entry call (jsonb and composite forms) vs one 100-row INSERT
# (N/10 transactions).  ratio = plain CPU / ledger CPU (> 1: ledger is
# cheaper).  Run as root or postgres, on the same host as the server.
set -u
BIN=$1
N=${2:-20000}
HERE=$(cd "$(dirname "$0")" && pwd)
PORT=${APPEND_CPU_PORT:-54398}
. "$HERE/cluster.sh"
bench_cluster_start "$BIN" "$PORT" append_cpu "synchronous_commit = off"
TICK=$(getconf CLK_TCK)

# cpu NAME PREPARE EXECUTE COUNT: "CPU-microseconds WAL-bytes" per transaction
cpu() {
	{
		echo "$2"
		echo "SELECT pg_current_wal_insert_lsn() AS wal0 \\gset"
		echo "\\o /dev/null"
		for ((i = 0; i < $4; i++)); do echo "$3"; done
		echo "\\o"
		# the backend reads its own utime + stime
		echo "SELECT s[14]::bigint + s[15]::bigint, pg_wal_lsn_diff(pg_current_wal_insert_lsn(), :'wal0') FROM string_to_array(pg_read_file('/proc/self/stat'), ' ') s;"
	} > "$WORK/$1.sql"
	chmod 644 "$WORK/$1.sql"
	local ticks wal
	IFS='|' read -r ticks wal <<<"$(q -f "$WORK/$1.sql" | tail -1)"
	echo "$(echo "scale=1; $ticks * 1000000 / $TICK / $4" | bc) $(echo "scale=1; $wal / $4" | bc)"
}

P="jsonb_build_object('type', 'order_placed', 'order_id', \$1::bigint, 'customer', 'customer-' || (\$1::bigint % 997), 'amount', (\$1::bigint % 100000) / 100.0, 'currency', 'EUR', 'sku', 'SKU-' || (\$1::bigint % 4999), 'qty', 1 + \$1::bigint % 7, 'note', 'benchmark payload padded to about two hundred bytes of json text')"
BATCH_J=$(q -c "SELECT quote_literal(jsonb_agg(jsonb_build_object('payload', bench.payload(g)) ORDER BY g)::text) FROM generate_series(1, 100) g")
BATCH_C=$(q -c "SELECT quote_literal(array_agg(ROW(bench.payload(g), '', '', '{}'::jsonb, '{}'::text[])::ledger.append_input ORDER BY g)::text) FROM generate_series(1, 100) g")
BATCH_P=$(q -c "SELECT string_agg(format('(''w3p'', nextval(''bench.plain_seq''), %s::jsonb)', quote_literal(bench.payload(g)::text)), ', ' ORDER BY g) FROM generate_series(1, 100) g")

w1l=$(cpu w1_ledger "PREPARE a(int) AS SELECT ledger.append('w1', $P);" "EXECUTE a(12345);" "$N")
w1p=$(cpu w1_plain "PREPARE a(int) AS INSERT INTO bench.plain (stream, seq, payload) VALUES ('w1', nextval('bench.plain_seq'), $P);" "EXECUTE a(12345);" "$N")
n3=$((N / 10))
w3j=$(cpu w3_jsonb "PREPARE a AS SELECT count(*) FROM ledger.append_batch('w3j', $BATCH_J::jsonb);" "EXECUTE a;" "$n3")
w3c=$(cpu w3_composite "PREPARE a AS SELECT count(*) FROM ledger.append_batch('w3c', $BATCH_C::ledger.append_input[]);" "EXECUTE a;" "$n3")
w3p=$(cpu w3_plain "PREPARE a AS INSERT INTO bench.plain (stream, seq, payload) VALUES $BATCH_P;" "EXECUTE a;" "$n3")
row() {	# row WORKLOAD VARIANT "LEDGER_CPU LEDGER_WAL" "PLAIN_CPU PLAIN_WAL"
	local lc lw pc pw
	read -r lc lw <<<"$3"
	read -r pc pw <<<"$4"
	echo "$1,$2,$lc,$pc,$(echo "scale=3; $pc / $lc" | bc),$lw,$pw"
}
echo "workload,variant,cpu_us_per_txn,plain_cpu_us,ratio,wal_bytes_per_txn,plain_wal_bytes"
row W1 ledger "$w1l" "$w1p"
row W3 ledger_jsonb "$w3j" "$w3p"
row W3 ledger_composite "$w3c" "$w3p"
