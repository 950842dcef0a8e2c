#!/bin/bash
# bench/read_ratio.sh — the read workload of bench/run.sh (W4) alone, in a
# throwaway cluster, for comparing two builds of ledger quickly:
#
#   bash bench/read_ratio.sh PG_BINDIR OUTFILE [DURATION] [ENTRIES]
#
# Uses whatever ledger is installed for PG_BINDIR.  Loads ENTRIES (default
# 200,000) into stream 'big' and into bench.plain, then W4: 100 entries after
# a random position, rows sent to the client, 1 and 2 clients,
# `pgbench -n -M prepared -T DURATION`, synchronous_commit irrelevant (reads).
# Prints and appends to OUTFILE "workload,variant,sync,clients,tps,ratio".
# Run as root (the cluster runs as postgres) or as postgres.
set -u
BIN=$1
OUTFILE=$2
DUR=${3:-10}
N=${4:-200000}
HERE=$(cd "$(dirname "$0")" && pwd)
PORT=${READ_RATIO_PORT:-54398}
. "$HERE/cluster.sh"
bench_cluster_start "$BIN" "$PORT" read_ratio

for s in $(seq 1 10000 "$N"); do
	e=$((s + 9999 < N ? s + 9999 : N))
	q -c "SELECT count(*) FROM ledger.append_batch('big', (SELECT jsonb_agg(jsonb_build_object('payload', bench.payload(g)) ORDER BY g) FROM generate_series($s, $e) g))" >/dev/null
done
q -c "INSERT INTO bench.plain (stream, seq, payload) SELECT 'big', g, bench.payload(g) FROM generate_series(1, $N) g"
q -c "VACUUM ANALYZE"
read -r LO HI <<<"$(q -F ' ' -c "SELECT first_id, last_id FROM ledger.stat('big')")"
read -r PLO PHI <<<"$(q -F ' ' -c "SELECT min(id), max(id) FROM bench.plain WHERE stream = 'big'")"
printf '\\set pos random(%s, %s)\nSELECT * FROM ledger.read('"'big'"', after => :pos, "limit" => 100);\n' $((LO - 1)) $((HI - 100)) > "$WORK/w4_ledger.sql"
printf '\\set pos random(%s, %s)\nSELECT * FROM bench.plain WHERE stream = '"'big'"' AND id > :pos ORDER BY id LIMIT 100;\n' $((PLO - 1)) $((PHI - 100)) > "$WORK/w4_plain.sql"
chmod 644 "$WORK"/*.sql

declare -A TPS
cell() {	# cell VARIANT CLIENTS
	TPS[$1,$2]=$(run "$BIN/pgbench" -h "$WORK" -p "$PORT" -n -M prepared \
		-c "$2" -j "$2" -T "$DUR" -f "$WORK/w4_$1.sql" postgres 2>&1 |
		grep -m1 -oP '^tps = \K[0-9.]+')
}
for c in 1 2; do
	cell ledger $c
	cell plain $c
	t=${TPS[ledger,$c]:-NA} p=${TPS[plain,$c]:-NA} r=NA
	[ "$t" != NA ] && [ "$p" != NA ] && r=$(echo "scale=3; $t / $p" | bc)
	echo "W4,ledger,-,$c,$t,$r" | tee -a "$OUTFILE"
done
