#!/usr/bin/env bash
# bench/run.sh — ledger against plain PostgreSQL, in one throwaway cluster, back
# to back, so every figure is also a ratio measured in the same run.
#
#   bash bench/run.sh            full run (10 s per pgbench run, 1,000,000-entry stream, ~16 min)
#   bash bench/run.sh --quick    smoke test (3 s per run, 100,000-entry stream)
#
# Installs what it needs (as root), builds and installs the extension, starts a
# preloaded PostgreSQL 15 cluster, runs W1-W4 for ledger, a plain table, pgq and
# message-db's design, the batch-dedup, cancel and memory probes, W5, then
# bench/read_cost.sh if present, then a second cluster without
# shared_preload_libraries, and writes
# bench/results/<timestamp>/{results.csv,metrics.csv,summary.md,chart.png}.
# PG_CONFIG names the PostgreSQL installation to build against and run (as in
# test/lib/common.sh).  Tunables (environment): BENCH_DURATION,
# BENCH_LAT_DURATION, BENCH_BIG_N, BENCH_W5_DURATION, BENCH_WAKE_N,
# BENCH_W5_RATE, BENCH_BATCH_SIZES, BENCH_MEM_N.
set -uo pipefail

SRC=$(cd "$(dirname "$0")/.." && pwd)
BENCH=$SRC/bench
. "$SRC/test/lib/common.sh"
# psql, pgbench, pg_test_fsync and make all use the PG_CONFIG installation
export PATH="$PGBIN:$PATH"
[ -n "${PG_CONFIG:-}" ] && export PG_CONFIG

QUICK=0
for arg in "$@"; do
	case $arg in
		--quick) QUICK=1 ;;
		-h|--help) sed -n '2,17p' "$0"; exit 0 ;;
		*) echo "unknown argument: $arg (try --quick)" >&2; exit 2 ;;
	esac
done
if [ $QUICK = 1 ]; then
	DUR=${BENCH_DURATION:-3}; LAT_DUR=${BENCH_LAT_DURATION:-2}; BIG_N=${BENCH_BIG_N:-100000}
	W5_DUR=${BENCH_W5_DURATION:-4}; WAKE_N=${BENCH_WAKE_N:-30}
	BATCH_SIZES=${BENCH_BATCH_SIZES:-"1000 4000 8000"}
else
	DUR=${BENCH_DURATION:-10}; LAT_DUR=${BENCH_LAT_DURATION:-4}; BIG_N=${BENCH_BIG_N:-1000000}
	W5_DUR=${BENCH_W5_DURATION:-10}; WAKE_N=${BENCH_WAKE_N:-200}
	BATCH_SIZES=${BENCH_BATCH_SIZES:-"10000 40000 80000"}
fi
MEM_N=${BENCH_MEM_N:-$BIG_N}	# entries read by the memory probe (at most BIG_N)
W5_RATE=${BENCH_W5_RATE:-500}
CHUNK=10000		# entries per append_batch call while loading

START_EPOCH=$(date +%s)
TS=$(date -u +%Y%m%dT%H%M%SZ)
[ $QUICK = 1 ] && TS="$TS-quick"
OUT=$BENCH/results/$TS
mkdir -p "$OUT/pgbench" || exit 1
RAW=$OUT/raw.csv			# workload,variant,sync,clients,tps,latency_ms
METRICS=$OUT/metrics.csv	# name,value,unit
PROBLEMS=$OUT/problems.txt
echo "workload,variant,sync_commit,clients,tps,latency_ms" > "$RAW"
echo "name,value,unit" > "$METRICS"
: > "$PROBLEMS"

metric() { echo "$1,$2,$3" >> "$METRICS"; }
problem() { echo "$*" >> "$PROBLEMS"; echo "!! $*" >&2; }

# ---------------------------------------------------------------------------
# 1. packages, build, install
# ---------------------------------------------------------------------------
ledger_install_deps || exit 1
bench_pkgs=""
command -v gnuplot >/dev/null 2>&1 || bench_pkgs="$bench_pkgs gnuplot-nox"
perl -MDBD::Pg -e1 2>/dev/null || bench_pkgs="$bench_pkgs libdbd-pg-perl"
dpkg -s "postgresql-$PG_MAJOR-pgq3" >/dev/null 2>&1 || bench_pkgs="$bench_pkgs postgresql-$PG_MAJOR-pgq3"
if [ -n "$bench_pkgs" ]; then
	if [ "$(id -u)" = 0 ]; then
		log "installing:$bench_pkgs"
		export DEBIAN_FRONTEND=noninteractive
		{ apt-get install -y -qq $bench_pkgs || { apt-get update -qq && apt-get install -y -qq $bench_pkgs; }; } >/dev/null 2>&1 \
			|| echo "could not install$bench_pkgs; the parts needing them are skipped" >&2
	else
		echo "missing$bench_pkgs (run as root to install them); the parts needing them are skipped" >&2
	fi
fi
HAVE_DBD=0; perl -MDBD::Pg -e1 2>/dev/null && HAVE_DBD=1
# pgq: Debian installs it into the system server's directories; a PG_CONFIG
# installation elsewhere (e.g. a relocated copy) gets the same files copied in.
HAVE_PGQ=0
PG_SHAREDIR=$("$PGBIN/pg_config" --sharedir)
PG_PKGLIBDIR=$("$PGBIN/pg_config" --pkglibdir)
if [ ! -f "$PG_SHAREDIR/extension/pgq.control" ] && dpkg -s "postgresql-$PG_MAJOR-pgq3" >/dev/null 2>&1; then
	while read -r f; do
		[ -f "$f" ] || continue
		case $f in
			/usr/share/postgresql/$PG_MAJOR/*) dst=$PG_SHAREDIR/${f#/usr/share/postgresql/$PG_MAJOR/} ;;
			/usr/lib/postgresql/$PG_MAJOR/lib/*) dst=$PG_PKGLIBDIR/${f#/usr/lib/postgresql/$PG_MAJOR/lib/} ;;
			*) continue ;;
		esac
		mkdir -p "$(dirname "$dst")" && cp -p "$f" "$dst"
	done < <(dpkg -L "postgresql-$PG_MAJOR-pgq3")
fi
[ -f "$PG_SHAREDIR/extension/pgq.control" ] && HAVE_PGQ=1
ledger_build_install "$SRC" || { echo "build failed" >&2; exit 1; }

# ---------------------------------------------------------------------------
# 2. machine record
# ---------------------------------------------------------------------------
WORK=$(mktemp -d /tmp/ledger-bench.XXXXXX)
[ "$(id -u)" = 0 ] && chown "$(ledger_test_user)" "$WORK"
CLUSTERS=()
cleanup() {
	local c
	for c in "${CLUSTERS[@]}"; do ledger_stop_cluster "$c"; done
	for c in "${CLUSTERS[@]}"; do
		[ -f "$c/server.log" ] && grep -E 'PANIC|FATAL|ERROR|WARNING|TRAP|terminated by signal' "$c/server.log" | grep -v 'due to administrator command' \
			> "$OUT/server-$(basename "$c").errors.log" 2>/dev/null
	done
	rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

log "machine record"
metric nproc "$(nproc)" cores
metric memory_total "$(awk '/^MemTotal/ {printf "%.1f", $2/1048576}' /proc/meminfo)" GiB
metric cpu_model "\"$(awk -F': ' '/^model name/ {print $2; exit}' /proc/cpuinfo)\"" ""
metric postgres "\"$("$PGBIN/postgres" --version)\"" ""
( cd "$WORK" && as_test_user pg_test_fsync -s 1 -f "$WORK/fsync.test" ) > "$OUT/pg_test_fsync.txt" 2>&1
FSYNC_LINE=$(grep -m1 -E '^\s+fdatasync\s' "$OUT/pg_test_fsync.txt" | sed -E 's/^\s+//; s/\s+/ /g')
metric pg_test_fsync_fdatasync "$(awk '{print $2}' <<<"$FSYNC_LINE")" ops/sec
log "pg_test_fsync: ${FSYNC_LINE:-unavailable}"

# ---------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------
ledger_write_conf "$WORK/ledger.conf" "$SRC"
cat >> "$WORK/ledger.conf" <<'EOF'
# bench: room for the 1M-entry streams; no checkpoint in the middle of a run
shared_buffers = 512MB
max_wal_size = 8GB
checkpoint_timeout = 30min
max_connections = 50
EOF
grep -v '^shared_preload_libraries' "$WORK/ledger.conf" > "$WORK/nopreload.conf"

q() { psql -X -q -At -v ON_ERROR_STOP=1 "$@"; }

start_cluster() {	# start_cluster DIR CONF
	CLUSTERS+=("$1")
	ledger_start_cluster "$1" "$2" || return 1
	# ledger_start_cluster turns fsync off (fine for tests); a benchmark of
	# synchronous_commit needs it on.  postgresql.auto.conf wins.
	q -c "ALTER SYSTEM SET fsync = on" -c "SELECT pg_reload_conf()" >/dev/null || return 1
	sleep 1
	[ "$(q -c 'SHOW fsync')" = on ] || { problem "could not turn fsync on in $1"; return 1; }
	q -f "$BENCH/sql/setup.sql" >/dev/null || return 1
}

# The same ~200-byte JSON as bench.payload(n) (bench/sql/setup.sql), inline.
PAYLOAD_TEMPLATE="jsonb_build_object('type', 'order_placed', 'order_id', N, 'customer', 'customer-' || (N % 997), 'amount', (N % 100000) / 100.0, 'currency', 'EUR', 'sku', 'SKU-' || (N % 4999), 'qty', 1 + N % 7, 'note', 'benchmark payload padded to about two hundred bytes of json text')"
PAYLOAD=${PAYLOAD_TEMPLATE//N/CAST(:r AS bigint)}

SCRIPTS=$WORK/scripts
mkdir -p "$SCRIPTS"
script() {	# script NAME <<< body ; prints the path
	cat > "$SCRIPTS/$1.sql"
	echo "$SCRIPTS/$1.sql"
}

# bench_run WORKLOAD VARIANT SYNC CLIENTS SCRIPTFILE DURATION [pgbench args...]
bench_run() {
	local wl=$1 var=$2 sync=$3 cl=$4 file=$5 dur=$6
	shift 6
	local name="${wl}_${var}_${sync}_c${cl}"
	local logf="$OUT/pgbench/$name.log"
	local pgopt=""
	[ "$sync" = off ] && pgopt="-c synchronous_commit=off"
	q -c CHECKPOINT >/dev/null
	PGOPTIONS="$pgopt" pgbench -n -M prepared -c "$cl" -j "$cl" -T "$dur" -f "$file" "$@" > "$logf" 2>&1
	local rc=$?
	local tps lat
	tps=$(grep -m1 -oP '^tps = \K[0-9.]+' "$logf")
	lat=$(grep -m1 -oP '^latency average = \K[0-9.]+' "$logf")
	if [ $rc != 0 ] || [ -z "$tps" ] || grep -qE 'ERROR|aborted' "$logf"; then
		problem "$name: pgbench exit $rc: $(grep -m3 -E 'ERROR|aborted|FATAL|error' "$logf" | tr '\n' ' ')"
	fi
	printf '    %-10s %-16s sync=%-3s c=%s  tps=%-12s lat=%s ms\n' "$wl" "$var" "$sync" "$cl" "${tps:-NA}" "${lat:-NA}"
	echo "$wl,$var,$sync,$cl,${tps:-NA},${lat:-NA}" >> "$RAW"
}

# ---------------------------------------------------------------------------
# 3. the preloaded cluster
# ---------------------------------------------------------------------------
log "starting the preloaded cluster"
C1=$WORK/c1
start_cluster "$C1" "$WORK/ledger.conf" || exit 1
log "payload: $(q -c "SELECT octet_length(bench.payload(123456)::text)") bytes of JSON text"
if [ $HAVE_PGQ = 1 ]; then
	# one queue per workload; no ticker runs, so events stay in the queue's current table
	q -c "CREATE EXTENSION pgq" -c "SELECT pgq.create_queue(x) FROM unnest(ARRAY['w1', 'w2', 'w3']) x" >/dev/null \
		|| { problem "CREATE EXTENSION pgq failed"; HAVE_PGQ=0; }
else
	problem "pgq skipped: postgresql-$PG_MAJOR-pgq3 is not installed for $PGBIN"
fi

# --- load: BIG_N entries in 'big', 1,000 in 'k1', 10 in 's10', same in bench.plain
log "loading $BIG_N entries into ledger stream 'big' and bench.plain"
T0=$(date +%s.%N)
{
	for ((s = 1; s <= BIG_N; s += CHUNK)); do
		e=$((s + CHUNK - 1)); [ $e -gt $BIG_N ] && e=$BIG_N
		echo "SELECT count(*) FROM ledger.append_batch('big', (SELECT jsonb_agg(jsonb_build_object('payload', bench.payload(g)) ORDER BY g) FROM generate_series($s, $e) g));"
	done
	echo "SELECT count(*) FROM ledger.append_batch('k1', (SELECT jsonb_agg(jsonb_build_object('payload', bench.payload(g)) ORDER BY g) FROM generate_series(1, 1000) g));"
	echo "SELECT count(*) FROM ledger.append_batch('s10', (SELECT jsonb_agg(jsonb_build_object('payload', bench.payload(g)) ORDER BY g) FROM generate_series(1, 10) g));"
} > "$WORK/load.sql"
q -f "$WORK/load.sql" >/dev/null || { problem "loading ledger failed"; exit 1; }
T1=$(date +%s.%N)
q <<EOF >/dev/null || { problem "loading bench.plain failed"; exit 1; }
INSERT INTO bench.plain (stream, seq, payload) SELECT 'big', g, bench.payload(g) FROM generate_series(1, $BIG_N) g;
INSERT INTO bench.plain (stream, seq, payload) SELECT 'k1', g, bench.payload(g) FROM generate_series(1, 1000) g;
INSERT INTO bench.plain (stream, seq, payload) SELECT 's10', g, bench.payload(g) FROM generate_series(1, 10) g;
EOF
# message-db's table starts as big as the others (its max(seq) plan depends on it)
q -c "INSERT INTO bench.md_entries (stream, seq, payload) SELECT stream, seq, payload FROM bench.plain ORDER BY id" >/dev/null \
	|| { problem "loading bench.md_entries failed"; exit 1; }
T2=$(date +%s.%N)
metric load_ledger_entries_per_s "$(awk -v a="$T0" -v b="$T1" -v n="$BIG_N" 'BEGIN {printf "%.0f", (n + 1010) / (b - a)}')" entries/s
metric load_plain_entries_per_s "$(awk -v a="$T1" -v b="$T2" -v n="$BIG_N" 'BEGIN {printf "%.0f", (n + 1010) / (b - a)}')" entries/s
[ "$(q -c "SELECT count FROM ledger.stat('big')")" = "$BIG_N" ] || problem "ledger.stat('big').count is not $BIG_N after the load"

# --- storage
log "storage"
q -c "VACUUM ANALYZE ledger.entries, ledger.streams, bench.plain, bench.md_entries" >/dev/null
q -F ' ' -c "SELECT pg_total_relation_size('ledger.entries') + pg_total_relation_size('ledger.streams'),
	(SELECT count(*) FROM ledger.entries), pg_total_relation_size('bench.plain'), (SELECT count(*) FROM bench.plain)" \
	> "$WORK/storage.txt"
read -r LB LN PB PN < "$WORK/storage.txt"
metric storage_ledger_bytes_per_entry "$(awk -v b="$LB" -v n="$LN" 'BEGIN {printf "%.1f", b / n}')" bytes
metric storage_plain_bytes_per_entry "$(awk -v b="$PB" -v n="$PN" 'BEGIN {printf "%.1f", b / n}')" bytes
metric storage_entries "$LN" entries
q -c "SELECT c.relname, pg_relation_size(c.oid) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
	WHERE n.nspname IN ('ledger', 'bench') AND c.relkind IN ('r', 'i', 't') AND pg_relation_size(c.oid) > 0 ORDER BY 1" \
	> "$OUT/storage_relations.txt"

# --- W4: reads, rows sent to the client (pgq has no read by position: '–')
log "W4: read 100 after a random position, rows sent to the client"
read -r BIG_LO BIG_HI <<<"$(q -F ' ' -c "SELECT first_id, last_id FROM ledger.stat('big')")"
read -r K1_LO K1_HI <<<"$(q -F ' ' -c "SELECT first_id, last_id FROM ledger.stat('k1')")"
read -r PB_LO PB_HI <<<"$(q -F ' ' -c "SELECT min(id), max(id) FROM bench.plain WHERE stream = 'big'")"
W4L=$(script w4_ledger <<EOF
\set pos random($((BIG_LO - 1)), $((BIG_HI - 100)))
SELECT * FROM ledger.read('big', after => :pos, "limit" => 100);
EOF
)
W4P=$(script w4_plain <<EOF
\set pos random($((PB_LO - 1)), $((PB_HI - 100)))
SELECT * FROM bench.plain WHERE stream = 'big' AND id > :pos ORDER BY id LIMIT 100;
EOF
)
W4M=$(script w4_messagedb <<EOF
\set pos random(1, $((BIG_N - 99)))
SELECT * FROM bench.md_get_stream_messages('big', :pos, 100);
EOF
)
for sync in on off; do
	bench_run W4 ledger $sync 2 "$W4L" "$DUR"
	bench_run W4 plain $sync 2 "$W4P" "$DUR"
	bench_run W4 messagedb $sync 2 "$W4M" "$DUR"
done

log "W4 scaling: per-call latency at 10 / 1,000 vs $BIG_N entries (1 client)"
bench_run scale read_1k on 1 "$(script read_1k <<EOF
\set pos random($((K1_LO - 1)), $((K1_HI - 100)))
SELECT * FROM ledger.read('k1', after => :pos, "limit" => 100);
EOF
)" "$LAT_DUR"
bench_run scale read_big on 1 "$W4L" "$LAT_DUR"
for fn in count stat get; do
	for st in s10 big; do
		n=10; [ $st = big ] && n=$BIG_N
		case $fn in
			count) sql="SELECT ledger.count('$st');" ;;
			stat)  sql="SELECT count FROM ledger.stat('$st');" ;;
			get)   sql=$'\\set s random(1, '$n$')\n'"SELECT id FROM ledger.get('$st', :s);" ;;
		esac
		bench_run scale "${fn}_$st" on 1 "$(script "${fn}_$st" <<<"$sql")" "$LAT_DUR"
	done
done

# --- W1: one append per transaction, each client its own stream
# (pgq has no streams: all clients insert into one queue, as pgq is used)
log "W1: one append per transaction, a stream per client"
W1L=$(script w1_ledger <<EOF
\set r random(1, 1000000000)
SELECT ledger.append('w1-' || :client_id, $PAYLOAD);
EOF
)
W1P=$(script w1_plain <<EOF
\set r random(1, 1000000000)
INSERT INTO bench.plain (stream, seq, payload) VALUES ('w1-' || :client_id, nextval('bench.plain_seq'), $PAYLOAD);
EOF
)
W1Q=$(script w1_pgq <<EOF
\set r random(1, 1000000000)
SELECT pgq.insert_event('w1', 'order_placed', ($PAYLOAD)::text);
EOF
)
W1M=$(script w1_messagedb <<EOF
\set r random(1, 1000000000)
SELECT bench.md_append('w1-' || :client_id, $PAYLOAD);
EOF
)
for sync in on off; do
	for c in 1 4; do
		bench_run W1 ledger $sync $c "$W1L" "$DUR"
		bench_run W1 plain $sync $c "$W1P" "$DUR"
		[ $HAVE_PGQ = 1 ] && bench_run W1 pgq $sync $c "$W1Q" "$DUR"
		bench_run W1 messagedb $sync $c "$W1M" "$DUR"
	done
done

# --- W2: one hot stream, 4 clients
log "W2: one append per transaction, 4 clients on one stream"
W2L=$(script w2_ledger <<EOF
\set r random(1, 1000000000)
SELECT ledger.append('hot', $PAYLOAD);
EOF
)
W2M=$(script w2_messagedb <<EOF
\set r random(1, 1000000000)
SELECT bench.md_append('hot', $PAYLOAD);
EOF
)
W2P=$(script w2_plain <<EOF
\set r random(1, 1000000000)
INSERT INTO bench.plain (stream, seq, payload) VALUES ('hot', nextval('bench.plain_seq'), $PAYLOAD);
EOF
)
W2Q=$(script w2_pgq <<EOF
\set r random(1, 1000000000)
SELECT pgq.insert_event('w2', 'order_placed', ($PAYLOAD)::text);
EOF
)
for sync in on off; do
	bench_run W2 ledger $sync 4 "$W2L" "$DUR"
	bench_run W2 plain $sync 4 "$W2P" "$DUR"
	[ $HAVE_PGQ = 1 ] && bench_run W2 pgq $sync 4 "$W2Q" "$DUR"
	bench_run W2 messagedb $sync 4 "$W2M" "$DUR"
done

# --- W3: 100 appends per transaction, the same 100 payloads everywhere
log "W3: 100 appends per transaction, 2 clients"
BATCH_J=$(q -c "SELECT quote_literal(jsonb_agg(jsonb_build_object('payload', bench.payload(g)) ORDER BY g)::text) FROM generate_series(1, 100) g")
BATCH_C=$(q -c "SELECT quote_literal(array_agg(ROW(bench.payload(g), '', '', '{}'::jsonb, '{}'::text[])::ledger.append_input ORDER BY g)::text) FROM generate_series(1, 100) g")
BATCH_P=$(q -c "SELECT string_agg(format('(''w3p-'' || :client_id, nextval(''bench.plain_seq''), %s::jsonb)', quote_literal(bench.payload(g)::text)), E',\n' ORDER BY g) FROM generate_series(1, 100) g")
BATCH_A=$(q -c "SELECT quote_literal(array_agg(bench.payload(g) ORDER BY g)::text) FROM generate_series(1, 100) g")
W3J=$(script w3_ledger_jsonb <<<"SELECT count(*) FROM ledger.append_batch('w3j-' || :client_id, $BATCH_J::jsonb);")
W3C=$(script w3_ledger <<<"SELECT count(*) FROM ledger.append_batch('w3c-' || :client_id, $BATCH_C::ledger.append_input[]);")
W3P=$(script w3_plain <<<"INSERT INTO bench.plain (stream, seq, payload) VALUES $BATCH_P;")
W3Q=$(script w3_pgq <<<"SELECT count(pgq.insert_event('w3', 'order_placed', e)) FROM unnest($BATCH_A::text[]) e;")
W3M=$(script w3_messagedb <<<"SELECT count(bench.md_append('w3m-' || :client_id, e)) FROM unnest($BATCH_A::jsonb[]) e;")
for sync in on off; do
	bench_run W3 ledger $sync 2 "$W3C" "$DUR"
	bench_run W3 ledger_jsonb $sync 2 "$W3J" "$DUR"
	bench_run W3 plain $sync 2 "$W3P" "$DUR"
	[ $HAVE_PGQ = 1 ] && bench_run W3 pgq $sync 2 "$W3Q" "$DUR"
	bench_run W3 messagedb $sync 2 "$W3M" "$DUR"
done
# every W3 transaction must have written 100 entries
for st in w3j-0 w3j-1 w3c-0 w3c-1; do
	n=$(q -c "SELECT coalesce((SELECT count FROM ledger.stat('$st')), 0) % 100")
	[ "$n" = 0 ] || problem "stream $st holds a count that is not a multiple of 100"
done

# --- batch-dedup probe: append_batch of n entries with distinct dedup keys, and
# with half of them duplicates (each key twice); then the cancel probe: the
# largest batch under statement_timeout = 1s, time until the error returns.
# The batches are built beforehand (bench.probe_batch) so only the call is timed;
# each call is capped at 300 s.
log "batch-dedup probe: $BATCH_SIZES entries"
q -c "CREATE UNLOGGED TABLE bench.probe_batch (n int, dup bool, j jsonb, PRIMARY KEY (n, dup))" >/dev/null
for n in $BATCH_SIZES; do
	q -c "INSERT INTO bench.probe_batch SELECT $n, d, (SELECT jsonb_agg(jsonb_build_object('payload', bench.payload(g),
		'dedup_key', 'k' || CASE WHEN d THEN g / 2 ELSE g END) ORDER BY g) FROM generate_series(1, $n) g)
		FROM (VALUES (false), (true)) v(d)" >/dev/null || problem "building the $n-entry probe batch failed"
done
time_call() {	# time_call SQL... ; prints "ms rc", stderr of psql in $WORK/call.err
	local t0 t1 rc
	t0=$(date +%s%N)
	psql -X -q -At "$@" > "$WORK/call.out" 2> "$WORK/call.err"
	rc=$?
	t1=$(date +%s%N)
	echo "$(( (t1 - t0) / 1000000 )) $rc"
}
for n in $BATCH_SIZES; do
	for d in false true; do
		var=distinct; [ $d = true ] && var=halfdup
		read -r ms rc <<<"$(time_call -v ON_ERROR_STOP=1 -c "SET statement_timeout = '300s'" \
			-c "SELECT count(*), count(*) FILTER (WHERE duplicate) FROM ledger.append_batch('dd-$var-$n', (SELECT j FROM bench.probe_batch WHERE n = $n AND dup = $d))")"
		if [ "$rc" != 0 ]; then
			problem "dedup probe $n $var: $(head -1 "$WORK/call.err")"
			ms=NA
		fi
		printf '    dedup %-8s n=%-6s %s ms (written, duplicates: %s)\n' "$var" "$n" "$ms" "$(tr '|' ' ' < "$WORK/call.out")"
		metric "dedup_${var}_$n" "$ms" ms
	done
done
CANCEL_N=${BATCH_SIZES##* }
log "cancel probe: statement_timeout = 1s on the $CANCEL_N-entry batch"
read -r ms rc <<<"$(time_call -c "SET statement_timeout = '1s'" \
	-c "SELECT count(*) FROM ledger.append_batch('cancel-$CANCEL_N', (SELECT j FROM bench.probe_batch WHERE n = $CANCEL_N AND NOT dup))")"
cancel_err=$(grep -m1 ERROR "$WORK/call.err" | tr -d '",')
if [ -n "$cancel_err" ]; then
	[ "$(q -c "SELECT count(*) FROM ledger.entries WHERE stream_id IN (SELECT stream_id FROM ledger.streams WHERE name = 'cancel-$CANCEL_N')")" = 0 ] \
		|| problem "cancel probe: the cancelled batch left entries behind"
else
	# finished before the timeout: nothing to cancel (the figure is its duration)
	cancel_err="completed within the timeout, not cancelled"
fi
printf '    cancel n=%s: %s ms (%s)\n' "$CANCEL_N" "$ms" "$cancel_err"
metric cancel_n "$CANCEL_N" entries
metric cancel_ms "$ms" ms
metric cancel_error "\"$cancel_err\"" ""
q -c "DROP TABLE bench.probe_batch" >/dev/null

# --- memory probe: peak RSS (VmHWM) of the backend reading MEM_N entries in one
# call, against the same plain SELECT; rows go to the client through COPY TO
# STDOUT (psql streams them to /dev/null instead of holding them).  VmHWM counts
# the shared_buffers pages the backend touched too: vmhwm_start is the session's
# figure before the read.
[ "$MEM_N" -gt "$BIG_N" ] && MEM_N=$BIG_N
log "memory probe: read $MEM_N entries in one call (work_mem $(q -c 'SHOW work_mem'))"
# VmHWM counts the shared_buffers pages the backend touched, which stay mapped:
# private peak ~ VmHWM - RssShmem - RssFile (read after the query).
HWM_SQL="SELECT (regexp_match(st, 'VmHWM:\\s+(\\d+)'))[1], (regexp_match(st, 'RssShmem:\\s+(\\d+)'))[1],
	(regexp_match(st, 'RssFile:\\s+(\\d+)'))[1] FROM pg_read_file('/proc/' || pg_backend_pid() || '/status') st"
for side in ledger plain; do
	if [ $side = ledger ]; then
		sel="SELECT * FROM ledger.read('big', \"limit\" => $MEM_N)"
	else
		sel="SELECT * FROM bench.plain WHERE stream = 'big' ORDER BY id LIMIT $MEM_N"
	fi
	q > "$WORK/mem.out" 2> "$WORK/mem.err" <<EOF
$HWM_SQL;
\\o /dev/null
\\timing on
COPY ($sel) TO STDOUT;
\\timing off
\\o
$HWM_SQL;
EOF
	if [ $? != 0 ]; then
		problem "memory probe ($side): $(head -2 "$WORK/mem.err" | tr '\n' ' ')"
		continue
	fi
	hwm0=$(sed -n 1p "$WORK/mem.out" | cut -d'|' -f1)
	IFS='|' read -r hwm1 shm1 file1 < <(tail -1 "$WORK/mem.out")
	priv=$((hwm1 - shm1 - file1))
	ms=$(grep -m1 -oP '^Time: \K[0-9.]+' "$WORK/mem.out")
	printf '    %-7s VmHWM %s kB before, %s kB after (RssShmem %s, RssFile %s: private peak ~%s kB); %s ms\n' \
		"$side" "$hwm0" "$hwm1" "$shm1" "$file1" "$priv" "${ms:-NA}"
	metric "mem_${side}_vmhwm_start" "$hwm0" kB
	metric "mem_${side}_vmhwm" "$hwm1" kB
	metric "mem_${side}_rssshmem" "$shm1" kB
	metric "mem_${side}_private_peak" "$priv" kB
	metric "mem_${side}_ms" "${ms:-NA}" ms
done
metric mem_n "$MEM_N" entries
metric work_mem "$(q -c 'SHOW work_mem')" ""

# --- W5: read_all consumer lag and wake-up latency
if [ $HAVE_DBD = 1 ]; then
	log "W5: wake-up latency of read(wait) ($WAKE_N iterations)"
	perl "$BENCH/wakeup.pl" "$WAKE_N" > "$OUT/w5_wakeup.txt" 2> "$WORK/wakeup.err" \
		|| problem "wakeup.pl failed: $(tail -3 "$WORK/wakeup.err" | tr '\n' ' ')"
	for mode in rate full; do
		rate_args=(); label="4 appenders unthrottled"
		[ $mode = rate ] && { rate_args=(-R "$W5_RATE"); label="4 appenders at $W5_RATE appends/s in total"; }
		log "W5: read_all consumer lag, $label"
		after=$(q -c "SELECT coalesce(max(id), 0) FROM ledger.entries")
		stopf=$WORK/w5_$mode.stop
		perl "$BENCH/lag_consumer.pl" "$after" "$stopf" "$OUT/w5_lag_$mode.txt" 2> "$WORK/w5_$mode.err" &
		cpid=$!
		sleep 0.5
		bench_run W5 "appenders_$mode" on 4 "$(script w5 <<EOF
\set r random(1, 1000000000)
SELECT ledger.append('w5-' || :client_id, jsonb_build_object('t', extract(epoch FROM clock_timestamp()), 'p', $PAYLOAD));
EOF
)" "$W5_DUR" "${rate_args[@]}"
		touch "$stopf"
		if ! wait $cpid; then
			problem "lag_consumer.pl ($mode) failed: $(tail -3 "$WORK/w5_$mode.err" | tr '\n' ' ')"
			continue
		fi
		appended=$(q -c "SELECT count(*) FROM ledger.entries WHERE id > $after AND stream_id IN (SELECT stream_id FROM ledger.streams WHERE name LIKE 'w5-%')")
		delivered=$(awk '/^delivered/ {print $2}' "$OUT/w5_lag_$mode.txt")
		order_errors=$(awk '/^order_errors/ {print $2}' "$OUT/w5_lag_$mode.txt")
		metric "w5_${mode}_appended" "$appended" entries
		metric "w5_${mode}_delivered" "$delivered" entries
		[ "$appended" = "$delivered" ] || problem "W5 ($mode): appended $appended entries but read_all delivered $delivered"
		[ "$order_errors" = 0 ] || problem "W5 ($mode): read_all delivered $order_errors entries out of id order or twice"
	done
else
	problem "W5 skipped: DBD::Pg (libdbd-pg-perl) is not installed"
fi

# --- read cost against database size: bench/read_cost.sh (written separately).
# It gets this cluster (PGHOST, PGPORT, PGUSER, PGDATABASE, PATH, PG_CONFIG) and
# BENCH_OUT=$OUT/read_cost, BENCH_QUICK=0|1; it may start a cluster of its own
# instead.  Whatever it leaves in $OUT/read_cost/summary.md goes into summary.md.
if [ -f "$BENCH/read_cost.sh" ]; then
	log "read cost against database size: bench/read_cost.sh"
	mkdir -p "$OUT/read_cost"
	[ "$(id -u)" = 0 ] && chown "$(ledger_test_user)" "$OUT/read_cost"
	BENCH_NO_BUILD=1 BENCH_OUT=$OUT/read_cost BENCH_QUICK=$QUICK PGHOST=$PGHOST PGPORT=$PGPORT PGUSER=$PGUSER PGDATABASE=$PGDATABASE \
		bash "$BENCH/read_cost.sh" $([ $QUICK = 1 ] && echo --quick) > "$OUT/read_cost.log" 2>&1 \
		|| problem "read_cost.sh failed (exit $?): $(tail -3 "$OUT/read_cost.log" | tr '\n' ' ')"
else
	echo "read_cost.sh not present"
	echo "read_cost.sh not present" > "$OUT/read_cost.log"
fi

# ---------------------------------------------------------------------------
# 4. the horizon: the same W1 4-client run without shared_preload_libraries
# ---------------------------------------------------------------------------
log "stopping the preloaded cluster; starting one without shared_preload_libraries"
ledger_stop_cluster "$C1"
C2=$WORK/c2
start_cluster "$C2" "$WORK/nopreload.conf" || exit 1
[ -z "$(q -c 'SHOW shared_preload_libraries')" ] || problem "second cluster still preloads: $(q -c 'SHOW shared_preload_libraries')"
for sync in off on; do
	bench_run horizon ledger_nopreload $sync 4 "$W1L" "$DUR"
	bench_run horizon plain_nopreload $sync 4 "$W1P" "$DUR"
done
ledger_stop_cluster "$C2"

# ---------------------------------------------------------------------------
# 5. report
# ---------------------------------------------------------------------------
ELAPSED=$(( $(date +%s) - START_EPOCH ))
metric runtime_seconds "$ELAPSED" s
metric mode "$([ $QUICK = 1 ] && echo quick || echo full)" ""
metric duration_per_run "$DUR" s
metric w5_rate_target "$W5_RATE" appends/s
metric big_stream_entries "$BIG_N" entries
metric fsync_line "\"$FSYNC_LINE\"" ""
perl "$BENCH/report.pl" "$OUT" || { echo "report failed" >&2; exit 1; }
if command -v gnuplot >/dev/null 2>&1 && [ -s "$OUT/chart.dat" ]; then
	gnuplot -e "datafile='$OUT/chart.dat'; outfile='$OUT/chart.png'" "$BENCH/chart.gp" 2> "$WORK/gnuplot.err" \
		|| echo "chart skipped: $(head -3 "$WORK/gnuplot.err")" >&2
else
	echo "chart skipped: gnuplot not available" >&2
fi
echo
cat "$OUT/summary.md"
echo
echo "results: $OUT (total runtime ${ELAPSED}s)"
