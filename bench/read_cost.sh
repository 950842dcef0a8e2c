#!/usr/bin/env bash
# bench/read_cost.sh — do the buffers a read touches depend on the size of the
# database?  (issue 14; a probe, not a timed test)
#
#   bash bench/read_cost.sh                      10,000,000 entries of other streams
#   BENCH_OTHER_N=1000000 bash bench/read_cost.sh
#
# Builds and installs the extension (BENCH_NO_BUILD=1 skips that), starts a
# throwaway preloaded cluster, creates a probe stream 'lone' of four entries
# (two tagged, one with an order key) in an empty database and measures each
# reader on it; then loads BENCH_OTHER_N entries of ten other streams with
# append_batch (10,000 entries per call, what append does, one call per
# transaction), VACUUM ANALYZE, and measures again.  Writes
# bench/results/<timestamp>/read_cost.md (the table) and read_cost_plans.txt
# (the inner plans, from auto_explain).
#
# How the buffers are counted: EXPLAIN (ANALYZE, BUFFERS) SELECT * FROM
# ledger.read(...) reports, on its Function Scan node, the shared buffers hit
# and read while the node ran -- the function's own SPI statements included
# (the counters are backend-wide and the node's instrumentation takes their
# difference; auto_explain's nested plans in read_cost_plans.txt add up to
# it).  Each call runs once before it is measured, so that its plans and
# caches are built; plan_cache_mode is the default, then force_generic_plan.
set -uo pipefail

SRC=$(cd "$(dirname "$0")/.." && pwd)
. "$SRC/test/lib/common.sh"
# Called by bench/run.sh: --quick (or BENCH_QUICK=1) loads 100,000 entries,
# BENCH_OUT names the output directory, and the build is run.sh's.
QUICK=${BENCH_QUICK:-0}
[ "${1:-}" = --quick ] && QUICK=1
if [ "$QUICK" = 1 ]; then OTHER_N=${BENCH_OTHER_N:-100000}; else OTHER_N=${BENCH_OTHER_N:-10000000}; fi
CHUNK=10000

TS=$(date -u +%Y%m%dT%H%M%SZ)
OUT=${BENCH_OUT:-$SRC/bench/results/$TS}
mkdir -p "$OUT" || exit 1

if [ -z "${BENCH_NO_BUILD:-}" ]; then
	ledger_install_deps || exit 1
	ledger_build_install "$SRC" || { echo "build failed" >&2; exit 1; }
fi

WORK=$(mktemp -d /tmp/ledger-read-cost.XXXXXX)
[ "$(id -u)" = 0 ] && chown "$(ledger_test_user)" "$WORK"
ledger_write_conf "$WORK/ledger.conf" "$SRC"
cat >> "$WORK/ledger.conf" <<'CONF'
shared_buffers = 512MB
max_wal_size = 8GB
checkpoint_timeout = 30min
CONF
trap 'ledger_stop_cluster "$WORK"; rm -rf "$WORK"' EXIT
ledger_start_cluster "$WORK" "$WORK/ledger.conf" || exit 1
psql_() { as_test_user env PGHOST="$PGHOST" PGPORT="$PGPORT" PGUSER=postgres PGDATABASE=postgres psql -X -q -v ON_ERROR_STOP=1 "$@"; }

psql_ <<'SQL' || exit 1
CREATE EXTENSION ledger;
SELECT ledger.append('lone', '{"n": 1}', tags => '{red}') \g /dev/null
SELECT ledger.append('lone', '{"n": 2}', order_key => 'k') \g /dev/null
SELECT ledger.append('lone', '{"n": 3}', tags => '{red,blue}') \g /dev/null
SELECT ledger.append('lone', '{"n": 4}') \g /dev/null
SQL

PROBES=(
	"ledger.read('lone')"
	"ledger.read('lone', descending => true)"
	"ledger.read('lone', order_key => 'k')"
	"ledger.read('lone', tag => 'red')"
	"ledger.read_all(streams => 'lone')"
	"ledger.read_all(streams => 'lo*')"
	"ledger.get('lone', 1)"
)

# probe LABEL: one line "mode|query|rows|buffers|ms" per probe and plan mode
probe() {
	local sql="CREATE FUNCTION pg_temp.cost(q text, OUT nrows bigint, OUT buffers bigint, OUT ms numeric) LANGUAGE plpgsql AS \$\$
DECLARE plan json;
BEGIN
	EXECUTE 'SELECT count(*) FROM ' || q;
	EXECUTE 'EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) SELECT * FROM ' || q INTO plan;
	nrows := (plan -> 0 -> 'Plan' ->> 'Actual Rows')::bigint;
	buffers := (plan -> 0 -> 'Plan' ->> 'Shared Hit Blocks')::bigint + (plan -> 0 -> 'Plan' ->> 'Shared Read Blocks')::bigint;
	ms := round((plan -> 0 ->> 'Execution Time')::numeric, 3);
END \$\$;"
	local mode q
	for mode in auto force_generic_plan; do
		for q in "${PROBES[@]}"; do
			sql="$sql
SET plan_cache_mode = $mode;
SELECT '$mode', \$q\$$q\$q\$, * FROM pg_temp.cost(\$q\$$q\$q\$);"
		done
	done
	psql_ -At -F '|' <<<"$sql" > "$WORK/$1.txt" || exit 1
	# the inner plans, for the record
	{
		echo "=== $1"
		for q in "${PROBES[@]}"; do
			printf "LOAD 'auto_explain'; SET auto_explain.log_min_duration = 0; SET auto_explain.log_nested_statements = on;
SET auto_explain.log_analyze = on; SET auto_explain.log_buffers = on; SET auto_explain.log_timing = off;
SET auto_explain.log_level = notice; SET client_min_messages = notice;
SELECT count(*) FROM %s;\n" "$q" | psql_ -At 2>&1 | grep -v '^NOTICE:  duration: .*plan:$' | grep -v '^[0-9]*$'
		done
	} >> "$OUT/read_cost_plans.txt"
}

log "probing the lone stream in an empty database"
probe before

log "loading $OTHER_N entries of other streams ($CHUNK per append_batch call)"
start=$(date +%s)
for ((s = 1; s <= OTHER_N; s += CHUNK)); do
	e=$((s + CHUNK - 1)); [ $e -gt "$OTHER_N" ] && e=$OTHER_N
	echo "SELECT count(*) FROM ledger.append_batch('other-$(( (s / CHUNK) % 10 ))', (SELECT pg_catalog.array_agg(ROW(pg_catalog.jsonb_build_object('n', g), '', '', '{}', CASE WHEN g % 100 = 0 THEN '{red}'::text[] ELSE '{}' END)::ledger.append_input ORDER BY g) FROM pg_catalog.generate_series($s, $e) g)) \\g /dev/null"
done | psql_ || exit 1
load_s=$(( $(date +%s) - start ))
log "loaded in ${load_s}s; VACUUM ANALYZE"
psql_ -c "VACUUM ANALYZE ledger.entries" -c "VACUUM ANALYZE ledger.streams" || exit 1
size=$(psql_ -At -c "SELECT pg_catalog.pg_size_pretty(pg_catalog.pg_total_relation_size('ledger.entries'))")

log "probing the lone stream again"
probe after

{
	echo "# Read cost against database size"
	echo
	echo "$(date -u '+%Y-%m-%d %H:%M UTC'), $("$PGBIN/postgres" --version), $(nproc) cores."
	echo "Probe stream 'lone': 4 entries.  'after': $OTHER_N entries of 10 other streams"
	echo "(1% tagged red, loaded in ${load_s}s with append_batch), ledger.entries $size."
	echo "Buffers = shared hit + read of the Function Scan node of"
	echo "EXPLAIN (ANALYZE, BUFFERS) SELECT * FROM <call>, the call's inner queries included,"
	echo "second call of the session.  Command: BENCH_OTHER_N=$OTHER_N bash bench/read_cost.sh"
	echo
	echo "| plan cache | call | rows | buffers before | buffers after | ratio | ms before | ms after |"
	echo "|---|---|---|---|---|---|---|---|"
	paste -d '|' "$WORK/before.txt" "$WORK/after.txt" | awk -F '|' '{
		ratio = ($4 > 0) ? sprintf("%.2f", $9 / $4) : "-";
		printf "| %s | `%s` | %s | %s | %s | %s | %s | %s |\n", $1, $2, $3, $4, $9, ratio, $5, $10 }'
} > "$OUT/read_cost.md"
cp "$OUT/read_cost.md" "$OUT/summary.md"
cat "$OUT/read_cost.md"
echo "written: $OUT/read_cost.md, $OUT/read_cost_plans.txt"
