#!/usr/bin/env bash
# test/read_memory.sh — a read larger than work_mem spills to disk instead of
# growing the backend's memory (issue 14).  Reads 300,000 small entries with
# work_mem = 1MB through read() and read_all() and checks the backend's peak
# anonymous memory (VmHWM from /proc/<pid>/status, the server runs on this
# machine) grew by less than BOUND_KB.  A read that materialised its whole
# result in an SPI tuple table grows by well over 100 MB here.
# Runs against the server in PGHOST/PGPORT with ledger created (run_all.sh).
set -euo pipefail

N=300000
BOUND_KB=${READ_MEMORY_BOUND_KB:-40000}
STREAM=read-memory-$$

psql -X -q -v ON_ERROR_STOP=1 <<SQL
SELECT count(*) FROM ledger.append_batch('$STREAM',
	(SELECT pg_catalog.array_agg(ROW(pg_catalog.jsonb_build_object('n', g), '', '', '{}', '{}')::ledger.append_input)
	   FROM pg_catalog.generate_series(1, $N) g)) \\g /dev/null
SQL

hwm() {	# hwm PID: peak resident memory of a process, in kB
	awk '/^VmHWM:/ { print $2 }' "/proc/$1/status"
}

fail=0
for q in "ledger.read('$STREAM', \"limit\" => $N)" \
         "ledger.read_all(\"limit\" => $N, streams => '$STREAM')"; do
	# One session, driven through a coprocess, so that its /proc entry is
	# read while the backend lives: its pid, its peak before and after.
	coproc PSQL { psql -X -q -At -v ON_ERROR_STOP=1 2>&1; }
	echo "SET work_mem = '1MB';" >&"${PSQL[1]}"
	echo "SELECT pg_catalog.pg_backend_pid();" >&"${PSQL[1]}"
	read -r pid <&"${PSQL[0]}"
	# Warm-up: touch the table and both indexes a read may scan, so that
	# shared buffers mapped for the first time do not count as growth.
	echo "SELECT count(*) FROM ledger.read('$STREAM', \"limit\" => 10);" >&"${PSQL[1]}"
	read -r _ <&"${PSQL[0]}"
	echo "SELECT count(*) FROM (SELECT e.* FROM ledger.entries e WHERE e.stream_id OPERATOR(pg_catalog.=) (SELECT s.stream_id FROM ledger.streams s WHERE s.name OPERATOR(pg_catalog.=) '$STREAM') ORDER BY e.stream_id, e.id) w;" >&"${PSQL[1]}"
	read -r _ <&"${PSQL[0]}"
	echo "SELECT count(*) FROM (SELECT e.* FROM ledger.entries e ORDER BY e.id) w;" >&"${PSQL[1]}"
	read -r _ <&"${PSQL[0]}"
	before=$(hwm "$pid")
	echo "SELECT count(*) FROM $q;" >&"${PSQL[1]}"
	read -r count <&"${PSQL[0]}"
	after=$(hwm "$pid")
	echo "\\q" >&"${PSQL[1]}"
	wait "$PSQL_PID" || true
	grew=$((after - before))
	echo "# $q: $count rows, peak memory $before kB -> $after kB (+$grew kB, bound $BOUND_KB kB)"
	if [ "$count" != "$N" ]; then
		echo "not ok: $q returned $count rows, not $N"; fail=1
	elif [ $grew -ge "$BOUND_KB" ]; then
		echo "not ok: $q grew the backend's peak memory by $grew kB"; fail=1
	fi
done

psql -X -q -v ON_ERROR_STOP=1 -c "SELECT ledger.trim('$STREAM', 9223372036854775807)" >/dev/null
[ $fail = 0 ] && echo "ok: reads of $N entries stay within $BOUND_KB kB of memory"
exit $fail
