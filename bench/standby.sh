#!/usr/bin/env bash
# bench/standby.sh — what carrying the read_all horizon to hot standbys costs:
# W1 (one append per transaction, each client its own stream, synchronous
# commit, fsync on) on a primary without and with a streaming standby
# attached, in interleaved rounds; the same for a plain INSERT of the same
# shape (what a standby costs any workload on this machine, which the
# standby shares); plus the WAL written per append and the share of it that
# is ledger's horizon record (pg_waldump --stats).
#
#   bash bench/standby.sh                        3 rounds of 10 s per figure
#   BENCH_ROUNDS=5 BENCH_DURATION=20 bash bench/standby.sh
#
# Writes bench/results/standby-<timestamp>/{raw.csv,summary.md}.
set -uo pipefail

SRC=$(cd "$(dirname "$0")/.." && pwd)
. "$SRC/test/lib/common.sh"
DUR=${BENCH_DURATION:-10}
ROUNDS=${BENCH_ROUNDS:-3}
WAL_N=${BENCH_WAL_APPENDS:-20000}

ledger_install_deps || exit 1
ledger_build_install "$SRC" || exit 1

TS=$(date -u +%Y%m%dT%H%M%SZ)
OUT=$SRC/bench/results/standby-$TS
mkdir -p "$OUT" || exit 1
WORK=$(mktemp -d /tmp/ledger-bench-standby.XXXXXX)
[ "$(id -u)" = 0 ] && chown "$(ledger_test_user)" "$WORK" "$OUT"
stop_all() {
	[ -d "$WORK/standby" ] && as_test_user pg_ctl -D "$WORK/standby" -m fast -w stop >/dev/null 2>&1
	ledger_stop_cluster "$WORK/primary"
	rm -rf "$WORK"
}
trap stop_all EXIT

# the primary: the tests' configuration, but with fsync on, as in production
ledger_write_conf "$WORK/ledger.conf" "$SRC"
ledger_start_cluster "$WORK/primary" "$WORK/ledger.conf" || exit 1
PRIMARY_PORT=$PGPORT
{
	echo "fsync = on"
	echo "synchronous_commit = on"
} >> "$WORK/primary/data/postgresql.conf"
as_test_user pg_ctl -D "$WORK/primary/data" -w restart -l "$WORK/primary/server.log" >/dev/null || exit 1

psql_p() { as_test_user psql -X -q -At -v ON_ERROR_STOP=1 -h "$PGHOST" -p "$PRIMARY_PORT" -d postgres "$@"; }
psql_p -c "CREATE EXTENSION ledger" >/dev/null || exit 1
psql_p -c "CREATE TABLE plain (id bigserial PRIMARY KEY, stream text NOT NULL, payload jsonb NOT NULL);
	CREATE INDEX ON plain (stream, id)" >/dev/null || exit 1

# the standby: a base backup with -R, on the next free port
as_test_user pg_basebackup -h "$PGHOST" -p "$PRIMARY_PORT" -D "$WORK/standby" -R -X stream >/dev/null || exit 1
STANDBY_PORT=$(ledger_free_port)
echo "port = $STANDBY_PORT" >> "$WORK/standby/postgresql.conf"
standby_start() { as_test_user pg_ctl -D "$WORK/standby" -l "$WORK/standby.log" -w start >/dev/null; }
standby_stop() { as_test_user pg_ctl -D "$WORK/standby" -m fast -w stop >/dev/null; }
streaming() {	# wait until the standby streams (or has gone)
	local want=$1 n
	for _ in $(seq 300); do
		n=$(psql_p -c "SELECT count(*) FROM pg_stat_replication WHERE state = 'streaming'")
		[ "$n" = "$want" ] && return 0
		sleep 0.1
	done
	echo "standby never reached $want streaming connections" >&2
	return 1
}

cat > "$WORK/w1.sql" <<'EOF'
SELECT ledger.append('w1-' || :client_id, '{"order": 1, "customer": "customer-1", "amount": 12.5, "note": "nnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnn"}');
EOF
cat > "$WORK/plain.sql" <<'EOF'
INSERT INTO plain (stream, payload) VALUES ('w1-' || :client_id, '{"order": 1, "customer": "customer-1", "amount": 12.5, "note": "nnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnn"}');
EOF
chmod a+r "$WORK/w1.sql" "$WORK/plain.sql"

RAW=$OUT/raw.csv
echo "round,workload,standby,clients,tps,latency_ms" > "$RAW"
run() {	# run WORKLOAD STANDBY CLIENTS
	local log=$WORK/$1-$2-$3-$round.log tps lat
	as_test_user pgbench -n -h "$PGHOST" -p "$PRIMARY_PORT" -c "$3" -j "$3" -T "$DUR" -f "$WORK/$1.sql" postgres >"$log" 2>&1
	tps=$(sed -n 's/^tps = \([0-9.]*\) .*/\1/p' "$log")
	lat=$(sed -n 's/^latency average = \([0-9.]*\) ms/\1/p' "$log")
	[ -n "$tps" ] || { cat "$log"; return 1; }
	echo "$round,$1,$2,$3,$tps,$lat" >> "$RAW"
	printf '  round %s  %-5s standby %-3s %s clients: %10s tps  %8s ms\n' "$round" "$1" "$2" "$3" "$tps" "$lat"
}

log "W1, $ROUNDS rounds of $DUR s, fsync on"
for round in $(seq "$ROUNDS"); do
	streaming 0 || exit 1
	for c in 1 4; do run w1 no $c; run plain no $c; done
	standby_start && streaming 1 || exit 1
	for c in 1 4; do run w1 yes $c; run plain yes $c; done
	standby_stop
done

# WAL per append, with the standby attached (horizon records flushed)
standby_start && streaming 1 || exit 1
START_LSN=$(psql_p -c "SELECT pg_current_wal_insert_lsn()")
psql_p -c "DO \$\$ BEGIN FOR i IN 1..$WAL_N LOOP PERFORM ledger.append('wal', '{\"order\": 1, \"note\": \"nnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnn\"}'); COMMIT; END LOOP; END \$\$" >/dev/null
END_LSN=$(psql_p -c "SELECT pg_current_wal_insert_lsn()")
WAL_BYTES=$(psql_p -c "SELECT pg_wal_lsn_diff('$END_LSN', '$START_LSN')::bigint")
as_test_user pg_waldump --stats -p "$WORK/primary/data/pg_wal" -s "$START_LSN" -e "$END_LSN" > "$WORK/waldump.txt" 2>&1
LEDGER_LINE=$(grep -E '^(ledger|custom197) ' "$WORK/waldump.txt" | head -1)
standby_stop

/usr/bin/python3 - "$RAW" "$DUR" "$ROUNDS" "$WAL_N" "$WAL_BYTES" "$LEDGER_LINE" > "$OUT/summary.md" <<'EOF'
import csv, re, statistics, sys
from collections import defaultdict
raw, dur, rounds, n, wal_bytes, line = sys.argv[1:7]
runs = defaultdict(list)
for r in csv.DictReader(open(raw)):
    runs[(r['workload'], r['standby'], r['clients'])].append((float(r['tps']), float(r['latency_ms'])))
med = {k: (statistics.median(t for t, _ in v), statistics.median(l for _, l in v)) for k, v in runs.items()}
print(f"# Horizon records for hot standbys (medians of {rounds} interleaved rounds of {dur} s, fsync on, `bash bench/standby.sh`)\n")
print("| workload | clients | tps, no standby | tps, standby attached | ratio | ms, no standby | ms, standby |")
print("|---|---|---|---|---|---|---|")
for w in ('w1', 'plain'):
    for c in ('1', '4'):
        (t0, l0), (t1, l1) = med[(w, 'no', c)], med[(w, 'yes', c)]
        print(f"| {'W1 (ledger.append)' if w == 'w1' else 'plain INSERT'} | {c} | {t0:.0f} | {t1:.0f} | {t1 / t0:.2f} | {l0:.3f} | {l1:.3f} |")
for c in ('1', '4'):
    rw = med[('w1', 'yes', c)][0] / med[('w1', 'no', c)][0]
    rp = med[('plain', 'yes', c)][0] / med[('plain', 'no', c)][0]
    print(f"\n{c} client(s): attaching a standby keeps {rw:.2f} of W1's throughput and {rp:.2f} of plain INSERT's; "
          f"ledger's own share of the cost (W1 ratio / plain ratio) is {rw / rp:.2f}.")
n = int(n); wal_bytes = int(wal_bytes)
print(f"\nWAL for {n} single-append transactions (standby attached): {wal_bytes / n:.0f} bytes per append in all.")
m = re.match(r'^\S+\s+(\d+)\s+\(\s*[\d.]+\)\s+(\d+)', line)
if m:
    count, rec = int(m.group(1)), int(m.group(2))
    print(f"ledger's horizon records: {count} records, {rec} bytes, {rec / n:.0f} bytes per append "
          f"({100.0 * rec / wal_bytes:.1f} % of that WAL).")
else:
    print(f"(pg_waldump gave no line for ledger's resource manager: {line!r})")
EOF
cat "$OUT/summary.md"
echo "results in $OUT"
