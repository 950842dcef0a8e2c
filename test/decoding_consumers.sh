#!/bin/bash
#
# test/decoding_consumers.sh — real CDC consumers of the output plugin, killed,
# reconnected, and put through a server restart and a crash, under concurrent
# appenders, tag and annotation changes, trims and retention.
#
# Consumers (CONSUMERS, each NAME:FRAMING, all running at once on own slots):
#   recvlogical  pg_recvlogical, restarted with --startpos = the lsn of the last
#                line of its file (test/decoding/recvlogical_applied.py drops a
#                cut-off transaction that the server then sends again whole);
#   psycopg2     test/decoding/psycopg2_consumer.py, psycopg2's
#                LogicalReplicationConnection, confirming msg.data_start;
#   pglogrepl    test/decoding/pglogrepl (Go, jackc/pglogrepl with pgx's pgconn),
#                confirming with standby status updates.
# FRAMING on passes include-transaction and applies at each commit line; off
# applies a transaction when the next one starts and confirms its last line.
# Every consumer resumes from the lsn of the last line it applied.
#
# Timeline: slots are created, consumers start under supervisors (a killed or
# disconnected consumer is started again), appenders run; a killer SIGKILLs
# the consumers in turn; a third of the way in the server restarts
# (pg_ctl restart -m fast), two thirds in it crashes (pg_ctl stop -m
# immediate, then start).  Then retention is cleared, two sentinel entries are
# appended, and each consumer must receive the second.
#
# Checks per consumer, against the server's own state:
#   - transactions arrive in commit order: the lsn that closes each applied
#     transaction is higher than every one before; no line is applied twice
#     (re-sent = 0);
#   - nothing lost: each stream's seqs 1..last_seq (ledger.stat) all arrived;
#   - applying the lines (entries, tags, annotations, trims) builds a mirror
#     equal to ledger.read_all, column by column;
#   - with framing, each transaction is begin ... commit with the right count;
#   - every line's protocol position equals its "lsn" (psycopg2, pglogrepl);
#   - it was killed and reconnected, across the restart and the crash.
# Prints a figures line per consumer (entries, lost, re-sent, sessions) and
# "N passed, M failed" last; exits non-zero on any failure.
#
# Starts its own server (it restarts and crashes it).  Knobs: CONSUMERS,
# WORKERS (3), ROUNDS per worker (250), TIMEOUT seconds per wait (120).

set -u

SRC=${LEDGER_SRC:-$(cd "$(dirname "$0")/.." && pwd)}
# the server is the one whose tools come first on PATH, unless PG_CONFIG says
[ -n "${PG_CONFIG:-}" ] || PG_CONFIG=$(command -v pg_config)
export PG_CONFIG
. "$SRC/test/lib/common.sh"

# initdb refuses root: run as the test user, with the same environment
if [ "$(id -u)" = 0 ]; then
	WORK=$(mktemp -d /tmp/ledger_consumers.XXXXXX)
	cp -a "$SRC/test" "$WORK/test"
	chown -R "$(ledger_test_user)" "$WORK"
	exec runuser -u "$(ledger_test_user)" -- env PATH="$PGBIN:$PATH" PG_CONFIG="$PG_CONFIG" \
		LEDGER_SRC="$WORK" LEDGER_CONSUMERS_TMP="$WORK" bash "$WORK/test/decoding_consumers.sh"
fi

CONSUMERS=${CONSUMERS:-recvlogical:on psycopg2:off psycopg2:on pglogrepl:on pglogrepl:off}
WORKERS=${WORKERS:-3}
ROUNDS=${ROUNDS:-250}
TIMEOUT=${TIMEOUT:-120}
PYTHON=/usr/bin/python3

WORK=$(mktemp -d "${TMPDIR:-/tmp}/ledger_consumers.XXXXXX")
PIDS=()
passed=0
failed=0

ok() { passed=$((passed + 1)); echo "ok - $1"; }
not_ok() { failed=$((failed + 1)); echo "not ok - $1"; }

finish()
{
	echo "$passed passed, $failed failed"
	[ "$failed" -eq 0 ]
	exit $?
}

cleanup()
{
	local pid

	touch "$WORK/stop"
	for pid in "${PIDS[@]}"; do
		kill "$pid" 2>/dev/null
	done
	for pid in "$WORK"/c-*/pid; do
		[ -f "$pid" ] && kill -9 "$(cat "$pid")" 2>/dev/null
	done
	wait 2>/dev/null
	ledger_stop_cluster "$WORK/cluster"
	[ -n "${KEEP_TEST_DIR:-}" ] || rm -rf "$WORK"
	[ -n "${LEDGER_CONSUMERS_TMP:-}" ] && rm -rf "$LEDGER_CONSUMERS_TMP"
}
trap cleanup EXIT

# tool NAME AVAILABLE: a consumer whose tool is missing fails in CI, else is
# left out with a visible note.
tool_missing()
{
	if [ "${CI:-}" = true ]; then
		not_ok "$1 is available"
	else
		echo "# $1 is not available: its consumers are left out"
	fi
}

PSQL=(psql -X -q -v ON_ERROR_STOP=1 -At)
[ -n "${KEEP_TEST_DIR:-}" ] && echo "# test directory $WORK is kept"

# -- tools -------------------------------------------------------------------

GO=${GO:-$(command -v go || echo /usr/local/go/bin/go)}
wanted=""
for c in $CONSUMERS; do
	case ${c%%:*} in
		recvlogical)
			command -v pg_recvlogical >/dev/null || { tool_missing pg_recvlogical; continue; } ;;
		psycopg2)
			"$PYTHON" -c 'import psycopg2.extras' 2>/dev/null ||
				{ tool_missing "python3-psycopg2 (for $PYTHON)"; continue; } ;;
		pglogrepl)
			[ -x "$GO" ] || { tool_missing go; continue; } ;;
		*)
			not_ok "known consumer $c"; continue ;;
	esac
	wanted="$wanted $c"
done
CONSUMERS=$wanted

if [[ " $CONSUMERS" == *" pglogrepl:"* ]]; then
	# the module cache outlives the run when the home directory is writable
	if [ -w "${HOME:-/nonexistent}" ]; then
		export GOPATH=${GOPATH:-$HOME/go} GOCACHE=${GOCACHE:-$HOME/.cache/go-build}
	else
		export GOPATH=$WORK/go GOCACHE=$WORK/go-build
	fi
	if (cd "$SRC/test/decoding/pglogrepl" && GOFLAGS="-mod=readonly -buildvcs=false" "$GO" build -o "$WORK/pglogrepl_consumer" .) \
		>"$WORK/go-build.log" 2>&1; then
		ok "pglogrepl consumer builds"
	else
		not_ok "pglogrepl consumer builds"
		sed 's/^/#   /' "$WORK/go-build.log" | tail -20
		finish
	fi
fi
[ -n "$CONSUMERS" ] || { not_ok "some consumer to test"; finish; }

# -- server --------------------------------------------------------------------

ledger_write_conf "$WORK/ledger.conf" "$SRC"
if ! ledger_start_cluster "$WORK/cluster" "$WORK/ledger.conf" >"$WORK/start.log" 2>&1; then
	not_ok "server starts"
	cat "$WORK/start.log"
	finish
fi
PGDATA=$WORK/cluster/data
DSN="host=$PGHOST port=$PGPORT dbname=postgres user=postgres"
"${PSQL[@]}" -c "CREATE EXTENSION ledger" || { not_ok "create extension"; finish; }

server_up()
{
	local deadline=$((SECONDS + TIMEOUT))

	until pg_isready -q -h "$PGHOST" -p "$PGPORT"; do
		[ $SECONDS -ge $deadline ] && return 1
		sleep 0.1
	done
}

# -- consumers -------------------------------------------------------------------

# The last complete line of a file (a kill may leave half a line: cut it).
last_line()
{
	local file=$1 size

	[ -s "$file" ] || return 0
	if [ "$(tail -c 1 "$file" | od -An -c | tr -d ' ')" != '\n' ]; then
		size=$(( $(wc -c <"$file") - $(tail -n 1 "$file" | wc -c) ))
		truncate -s "$size" "$file"
	fi
	tail -n 1 "$file"
}

# supervise NAME FRAMING: run the consumer, start it again whenever it dies.
supervise()
{
	local name=$1 framing=$2 dir="$WORK/c-$1-$2" slot="ledger_$1_$2" start args

	while [ ! -e "$WORK/stop" ]; do
		date +%s.%N >>"$dir/starts"
		case $name in
			recvlogical)
				last_line "$dir/raw.jsonl" >/dev/null
				start=$(last_line "$dir/raw.jsonl" | sed -n 's/.*"lsn":"\([0-9A-F]*\/[0-9A-F]*\)".*/\1/p')
				args=()
				[ -n "$start" ] && args+=(--startpos="$start")
				[ "$framing" = on ] && args+=(-o include-transaction=on)
				wc -l <"$dir/raw.jsonl" >>"$dir/sessions"
				pg_recvlogical -d "$DSN" --slot "$slot" --start --no-loop -F 0 -s 1 \
					"${args[@]}" -f "$dir/raw.jsonl" 2>>"$dir/stderr" &
				;;
			psycopg2)
				"$PYTHON" "$SRC/test/decoding/psycopg2_consumer.py" --dsn "$DSN" --slot "$slot" \
					--framing "$framing" --applied "$dir/applied.jsonl" \
					--received "$dir/received.jsonl" --mismatches "$dir/mismatches" 2>>"$dir/stderr" &
				;;
			pglogrepl)
				"$WORK/pglogrepl_consumer" -dsn "$DSN" -slot "$slot" \
					-framing "$framing" -applied "$dir/applied.jsonl" \
					-received "$dir/received.jsonl" -mismatches "$dir/mismatches" 2>>"$dir/stderr" &
				;;
		esac
		echo $! >"$dir/pid"
		wait $!
		sleep 0.2
	done
}

for c in $CONSUMERS; do
	dir="$WORK/c-${c%%:*}-${c##*:}"
	mkdir -p "$dir"
	touch "$dir/raw.jsonl" "$dir/applied.jsonl" "$dir/received.jsonl" "$dir/mismatches" "$dir/sessions" "$dir/starts"
	"${PSQL[@]}" -c "SELECT 'created' FROM pg_create_logical_replication_slot('ledger_${c%%:*}_${c##*:}', 'ledger')" >/dev/null ||
		{ not_ok "create slot for $c"; finish; }
	supervise "${c%%:*}" "${c##*:}" 2>>"$dir/supervisor.err" &
	PIDS+=($!)
done
ok "slots created, consumers started:$CONSUMERS"

# -- workload ----------------------------------------------------------------------
#
# Each round is one transaction (retried while the server is down or a
# concurrent trim took the entry it meant to tag).  A worker's transactions
# lock its streams in ascending order.

"${PSQL[@]}" -c "SELECT ledger.set_retention('cs-1-2', max_entries => 15)" >/dev/null

round_sql()
{
	local w=$1 r=$2 s="cs-$w-$(($2 % 3))" p
	local pick="(SELECT id FROM ledger.read('$s', \"limit\" => 30, descending => true) ORDER BY random() LIMIT 1)"

	p="jsonb_build_object('w', $w, 'r', $r, 's', E'q\"b\\\\ é ☃')"
	case $((r % 8)) in
		0) echo "SELECT ledger.append('$s', $p, order_key => 'w$w', metadata => '{\"m\": \"v\"}', tags => '{a,b}')" ;;
		1) echo "BEGIN; SELECT ledger.append('cs-$w-0', $p); SELECT ledger.append('cs-$w-1', $p);
			SELECT ledger.append('cs-$w-2', $p); COMMIT" ;;
		2) # every fifth a big one, for the killer to cut in the middle
			echo "SELECT count(*) FROM ledger.append_batch('$s', (SELECT jsonb_agg(jsonb_build_object(
			'payload', jsonb_build_object('w', $w, 'r', $r, 'i', i, 'big', $((r % 5 == 2)) = 1,
				'pad', repeat('p', 200)),
				'dedup_key', CASE WHEN i % 10 = 0 THEN 'd$r-' || (i % 20) ELSE '' END))
			FROM generate_series(1, CASE WHEN $r % 5 = 2 THEN 300 ELSE 40 END) i))" ;;
		3) echo "BEGIN; SELECT ledger.append('$s', '{\"rollback\": true}'); ROLLBACK" ;;
		4) echo "BEGIN; SELECT ledger.append('$s', $p); SAVEPOINT sp;
			SELECT ledger.append('$s', '{\"rollback\": true}'); ROLLBACK TO SAVEPOINT sp;
			SELECT ledger.append('$s', $p); COMMIT" ;;
		5) echo "BEGIN; SELECT ledger.set_tags('$s', id, ARRAY['t$r', 'w$w']) FROM $pick x;
			SELECT ledger.set_annotations('$s', id, '{\"r\": \"$r\", \"gone\": null}') FROM $pick x; COMMIT" ;;
		6) echo "DO \$\$ DECLARE i bigint; BEGIN
			i := ledger.append('$s', $p);
			PERFORM ledger.set_tags('$s', i, '{fresh}');
			PERFORM ledger.set_annotations('$s', i, '{\"fresh\": \"yes\"}'); END \$\$" ;;
		7) echo "BEGIN; SELECT ledger.append('cs-$w-é', $p);
			SELECT ledger.set_annotations('cs-$w-é', id, '{\"gone\": \"soon\", \"k\": \"$r\"}') FROM
				(SELECT id FROM ledger.read('cs-$w-é', \"limit\" => 5, descending => true) ORDER BY random() LIMIT 1) x;
			COMMIT" ;;
	esac
}

worker()
{
	local w=$1 r attempt

	for ((r = 1; r <= ROUNDS; r++)); do
		for ((attempt = 1; attempt <= 200; attempt++)); do
			psql -X -q -At -v ON_ERROR_STOP=1 -c "$(round_sql "$w" "$r")" >/dev/null 2>>"$WORK/worker$w.err" && break
			sleep 0.05
		done
		echo "$r" >"$WORK/worker$w.progress"
		sleep 0.02
	done
}

trimmer()
{
	local w

	while [ ! -e "$WORK/workers_done" ]; do
		w=$((RANDOM % WORKERS + 1))
		psql -X -q -At -c "SELECT ledger.trim('cs-$w-0', COALESCE((SELECT max(id) FROM ledger.read('cs-$w-0', \"limit\" => 3)), 0))" \
			>/dev/null 2>&1
		sleep 0.3
	done
}

progress()
{
	local total=0 w done_rounds

	for ((w = 1; w <= WORKERS; w++)); do
		done_rounds=$(cat "$WORK/worker$w.progress" 2>/dev/null)
		total=$((total + ${done_rounds:-0}))
	done
	echo $total
}

# Kill the consumers in turn, every other time while the consumer is in the
# middle of receiving a big transaction (or after a few seconds of waiting).
killer()
{
	local c i=0 pid file deadline list=($CONSUMERS)

	while [ ! -e "$WORK/workers_done" ]; do
		sleep "0.$((RANDOM % 8 + 4))"
		c=${list[$((i % ${#list[@]}))]}
		file="$WORK/c-${c%%:*}-${c##*:}/received.jsonl"
		[ "${c%%:*}" = recvlogical ] && file="$WORK/c-${c%%:*}-${c##*:}/raw.jsonl"
		if [ $((i / ${#list[@]} % 2)) = 1 ]; then
			deadline=$((SECONDS + 3))
			until tail -c 400 "$file" | grep -q '"big": true' || [ $SECONDS -ge $deadline ]; do
				sleep 0.01
			done
		fi
		pid=$(cat "$WORK/c-${c%%:*}-${c##*:}/pid" 2>/dev/null)
		[ -n "$pid" ] && kill -9 "$pid" 2>/dev/null && echo "$c" >>"$WORK/kills"
		i=$((i + 1))
	done
}

WORKER_PIDS=()
for ((w = 1; w <= WORKERS; w++)); do
	worker "$w" &
	WORKER_PIDS+=($!)
done
trimmer &
PIDS+=($!)
killer &
PIDS+=($!)

wait_progress()
{
	local goal=$1 deadline=$((SECONDS + TIMEOUT))

	until [ "$(progress)" -ge "$goal" ]; do
		[ $SECONDS -ge $deadline ] && return 1
		sleep 0.1
	done
}

total_rounds=$((WORKERS * ROUNDS))
if wait_progress $((total_rounds / 3)) && date +%s.%N >"$WORK/restarted_at" &&
	pg_ctl -D "$PGDATA" -m fast -w -t 60 restart -l "$WORK/cluster/server.log" >/dev/null && server_up; then
	ok "server restarted (pg_ctl restart -m fast) under load"
else
	not_ok "server restarted (pg_ctl restart -m fast) under load"
fi
if wait_progress $((2 * total_rounds / 3)) && date +%s.%N >"$WORK/crashed_at" &&
	pg_ctl -D "$PGDATA" -m immediate -w stop >/dev/null &&
	pg_ctl -D "$PGDATA" -w -t 60 start -l "$WORK/cluster/server.log" >/dev/null && server_up; then
	ok "server crashed (pg_ctl stop -m immediate) and recovered under load"
else
	not_ok "server crashed (pg_ctl stop -m immediate) and recovered under load"
fi

echo "# workload running after ${SECONDS}s"
workers_ok=1
for pid in "${WORKER_PIDS[@]}"; do
	wait "$pid" || workers_ok=0
done
# A fast workload can end before the killer's second round: keep killing
# (consumers still reading the backlog) until each was killed twice.
deadline=$((SECONDS + TIMEOUT))
for c in $CONSUMERS; do
	until [ "$(grep -cx "$c" "$WORK/kills" 2>/dev/null)" -ge 2 ] || [ $SECONDS -ge $deadline ]; do
		sleep 0.1
	done
done
touch "$WORK/workers_done"
if [ "$workers_ok" = 1 ] && [ "$(progress)" -eq "$total_rounds" ]; then
	ok "$WORKERS appenders ran $total_rounds transactions"
else
	not_ok "$WORKERS appenders ran $total_rounds transactions"
fi

echo "# workload done after ${SECONDS}s"

# Quiesce: no retention pass may commit after the sentinels.
"${PSQL[@]}" -c "SELECT ledger.set_retention('cs-1-2')" >/dev/null
deadline=$((SECONDS + TIMEOUT))
quiet=0
while [ $quiet -lt 3 ] && [ $SECONDS -lt $deadline ]; do
	busy=$("${PSQL[@]}" -c "SELECT count(*) FROM pg_stat_activity
		WHERE backend_type = 'ledger worker' AND xact_start IS NOT NULL")
	[ "$busy" = 0 ] && quiet=$((quiet + 1)) || quiet=0
	sleep 0.1
done
sentinel1=$("${PSQL[@]}" -c "SELECT ledger.append('end', '{\"n\": 1}')")
sentinel2=$("${PSQL[@]}" -c "SELECT ledger.append('end', '{\"n\": 2}')")

for c in $CONSUMERS; do
	dir="$WORK/c-${c%%:*}-${c##*:}"
	seen="$dir/received.jsonl"
	[ "${c%%:*}" = recvlogical ] && seen="$dir/raw.jsonl"
	deadline=$((SECONDS + TIMEOUT))
	until grep -q "\"id\":$sentinel2," "$seen" || [ $SECONDS -ge $deadline ]; do
		sleep 0.2
	done
	grep -q "\"id\":$sentinel2," "$seen" || { not_ok "$c received the sentinel"; tail -5 "$dir/stderr" | sed 's/^/#   /'; }
done
echo "# sentinels received after ${SECONDS}s"
touch "$WORK/stop"
for c in $CONSUMERS; do
	pid=$(cat "$WORK/c-${c%%:*}-${c##*:}/pid" 2>/dev/null)
	[ -n "$pid" ] && kill -9 "$pid" 2>/dev/null
done
for pid in "${PIDS[@]}"; do
	wait "$pid" 2>/dev/null
done
PIDS=()

# -- checks ------------------------------------------------------------------------
#
# The server's entries of the workload's streams as ledger.read_all returns
# them; then per consumer, in schema chk: its applied lines (n = line
# number), grouped into transactions (consecutive lines of one xid), and the
# mirror they build.

"${PSQL[@]}" >/dev/null <<'EOF'
CREATE TABLE expected_entries AS SELECT * FROM ledger.read_all(0, 1, 'cs-*') WHERE false;
DO $$
DECLARE
	last_id bigint := 0;
	got int;
BEGIN
	LOOP
		INSERT INTO expected_entries SELECT * FROM ledger.read_all(last_id, 1000, 'cs-*');
		GET DIAGNOSTICS got = ROW_COUNT;
		EXIT WHEN got = 0;
		SELECT max(id) INTO last_id FROM expected_entries;
	END LOOP;
END
$$;
CREATE TABLE expected_seqs AS
	SELECT name AS stream, (ledger.stat(name)).last_seq FROM ledger.streams WHERE name LIKE 'cs-%';
EOF

load_sql()
{
	cat <<EOF
SET client_min_messages = warning;
DROP SCHEMA IF EXISTS chk CASCADE;
CREATE SCHEMA chk;
SET search_path = chk, public;
CREATE TABLE raw (n bigserial, line text);
\\copy raw (line) FROM '$1' WITH (FORMAT csv, DELIMITER E'\\x01', QUOTE E'\\x02')
CREATE TABLE got AS
	SELECT n, j, j->>'kind' AS kind, (j->>'lsn')::pg_lsn AS lsn,
		sum(CASE WHEN j->'xid' IS DISTINCT FROM prev_xid THEN 1 ELSE 0 END) OVER (ORDER BY n) AS txn
	FROM (SELECT n, line::jsonb AS j, lag(line::jsonb->'xid') OVER (ORDER BY n) AS prev_xid FROM raw) r;
CREATE TABLE txns AS
	SELECT txn, min(n) AS first_n, (array_agg(lsn ORDER BY n DESC))[1] AS closing_lsn,
		bool_or(j->>'stream' LIKE 'cs-%') AS workload
	FROM got GROUP BY txn;
CREATE TABLE mirror (LIKE public.expected_entries);
CREATE INDEX ON mirror (id);
CREATE INDEX ON mirror (stream, id);
DO \$\$
DECLARE
	c record;
BEGIN
	FOR c IN SELECT j FROM got WHERE j->>'stream' LIKE 'cs-%' ORDER BY n LOOP
		CASE c.j->>'kind'
			WHEN 'entry' THEN
				INSERT INTO mirror SELECT (c.j->>'id')::bigint, c.j->>'stream', (c.j->>'seq')::bigint,
					c.j->'payload', c.j->>'order_key', c.j->>'dedup_key', (c.j->>'schema_version')::int,
					c.j->'metadata', ARRAY(SELECT jsonb_array_elements_text(c.j->'tags')),
					c.j->'annotations', (c.j->>'created_at')::timestamptz, (c.j->>'updated_at')::timestamptz;
			WHEN 'tags' THEN
				UPDATE mirror SET tags = ARRAY(SELECT jsonb_array_elements_text(c.j->'tags')),
					updated_at = (c.j->>'updated_at')::timestamptz WHERE id = (c.j->>'id')::bigint;
			WHEN 'annotations' THEN
				UPDATE mirror SET annotations = c.j->'annotations',
					updated_at = (c.j->>'updated_at')::timestamptz WHERE id = (c.j->>'id')::bigint;
			WHEN 'trim' THEN
				DELETE FROM mirror WHERE stream = c.j->>'stream' AND id <= (c.j->>'before_id')::bigint;
			ELSE
				RAISE EXCEPTION 'unexpected line %', c.j;
		END CASE;
	END LOOP;
END
\$\$;
EOF
}

# check NAME SQL: the SQL (on the tables load_sql made) returns one row "t".
check()
{
	local name=$1 sql=$2 result

	result=$(echo "SET search_path = chk, public; $sql;" | "${PSQL[@]}" 2>&1)
	if [ "$result" = "t" ]; then
		ok "$CONSUMER: $name"
	else
		not_ok "$CONSUMER: $name"
		echo "$result" | head -10 | sed 's/^/#   got: /'
	fi
}

figures()
{
	{ echo "SET search_path = chk, public; SELECT
		(SELECT count(*) FROM got WHERE kind = 'entry' AND j->>'stream' LIKE 'cs-%'),
		(SELECT coalesce(sum(e.last_seq), 0) - (SELECT count(DISTINCT (j->>'stream', j->>'seq'))
			FROM got WHERE kind = 'entry' AND j->>'stream' LIKE 'cs-%') FROM expected_seqs e),
		(SELECT count(*) - count(DISTINCT j->>'id') FROM got WHERE kind = 'entry' AND j->>'stream' LIKE 'cs-%'),
		(SELECT count(*) FROM txns t WHERE t.workload AND t.closing_lsn <= (SELECT max(closing_lsn)
			FROM txns p WHERE p.first_n < t.first_n));"; } | "${PSQL[@]}" -F ' ' 2>&1
}

for c in $CONSUMERS; do
	CONSUMER=$c
	name=${c%%:*}
	framing=${c##*:}
	dir="$WORK/c-$name-$framing"
	APPLIED="$dir/applied.jsonl"
	if [ "$name" = recvlogical ]; then
		"$PYTHON" "$SRC/test/decoding/recvlogical_applied.py" "$dir/raw.jsonl" "$dir/sessions" "$APPLIED" |
			sed "s/^/# $c: /"
	fi

	load_sql "$APPLIED" | "${PSQL[@]}" >/dev/null || not_ok "$c: load its lines"
	check "transactions in commit order" \
		"SELECT count(*) = 0 FROM txns t WHERE t.closing_lsn <= (SELECT max(closing_lsn)
			FROM txns p WHERE p.first_n < t.first_n)"
	check "no line applied twice (re-sent 0)" \
		"SELECT count(*) = count(DISTINCT j) FROM got"
	check "no entry lost (every stream's seqs 1..last_seq arrived)" \
		"SELECT count(*) = 0 FROM expected_seqs e
		 WHERE e.last_seq <> (SELECT count(DISTINCT (g.j->>'seq')::bigint) FROM got g
			 WHERE g.kind = 'entry' AND g.j->>'stream' = e.stream
			   AND (g.j->>'seq')::bigint BETWEEN 1 AND e.last_seq)"
	check "no entry from rolled-back work" \
		"SELECT count(*) = 0 FROM got WHERE j->'payload' ? 'rollback'"
	check "the mirror built from the lines equals ledger.read_all" \
		"SELECT count(*) = 0 FROM ((SELECT * FROM mirror EXCEPT ALL SELECT * FROM expected_entries)
			UNION ALL (SELECT * FROM expected_entries EXCEPT ALL SELECT * FROM mirror)) d"
	check "tags, annotations and trim lines arrived" \
		"SELECT count(DISTINCT kind) = 3 FROM got WHERE kind IN ('tags', 'annotations', 'trim')"
	if [ "$framing" = on ]; then
		check "every transaction is begin ... commit, and commit counts its lines" \
			"SELECT bool_and(ok) FROM (SELECT
				(array_agg(kind ORDER BY n))[1] = 'begin' AND (array_agg(kind ORDER BY n DESC))[1] = 'commit'
				AND count(*) FILTER (WHERE kind NOT IN ('begin', 'commit')) =
					max((j->>'changes')::int) FILTER (WHERE kind = 'commit') AS ok
				FROM got JOIN txns USING (txn) WHERE txns.workload GROUP BY txn) t"
	else
		check "no begin or commit lines" \
			"SELECT count(*) = 0 FROM got WHERE kind IN ('begin', 'commit')"
	fi
	if [ "$name" != recvlogical ]; then
		if [ ! -s "$dir/mismatches" ]; then
			ok "$c: every line's protocol position is its lsn"
		else
			not_ok "$c: every line's protocol position is its lsn"
			head -3 "$dir/mismatches" | sed 's/^/#   /'
		fi
	fi
	kills=$(grep -cx "$c" "$WORK/kills" 2>/dev/null)
	sessions=$(wc -l <"$dir/starts")
	after_restart=$(awk -v t="$(cat "$WORK/restarted_at")" -v u="$(cat "$WORK/crashed_at")" '$1 > t && $1 < u' "$dir/starts" | wc -l)
	after_crash=$(awk -v t="$(cat "$WORK/crashed_at")" '$1 > t' "$dir/starts" | wc -l)
	if [ "${kills:-0}" -ge 2 ] && [ "$after_restart" -ge 1 ] && [ "$after_crash" -ge 1 ]; then
		ok "$c: killed $kills times, reconnected across the restart and the crash ($sessions sessions)"
	else
		not_ok "$c: killed ${kills:-0} times, reconnected across the restart ($after_restart) and the crash ($after_crash)"
	fi
	read -r entries lost resent_entries resent_txns <<<"$(figures)"
	if [ "$name" = recvlogical ]; then
		unapplied=$(( $(wc -l <"$dir/raw.jsonl") - $(wc -l <"$APPLIED") ))
	else
		unapplied=$(( $(wc -l <"$dir/received.jsonl") - $(wc -l <"$APPLIED") ))
	fi
	echo "# figures $c: entries=$entries lost=$lost re-sent=$resent_entries (transactions re-sent $resent_txns)" \
		"sessions=$sessions kills=${kills:-0} lines-received-twice-after-a-cut=$unapplied"
done

echo "# checked after ${SECONDS}s"
finish
