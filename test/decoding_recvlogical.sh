#!/bin/bash
#
# test/decoding_recvlogical.sh — the output plugin under concurrent appenders,
# read through pg_recvlogical.
#
# Needs a running server with wal_level = logical, the ledger extension
# installed in the database, a free replication slot and a wal sender; the
# connection comes from PGHOST/PGPORT/PGDATABASE/PGUSER.  Runs as a role that
# may create replication slots and read ledger's tables (a superuser).
#
# Starts pg_recvlogical on a new slot (with include-transaction), runs
# concurrent psql appenders (single appends, multi-statement transactions,
# batches, rolled-back transactions and subtransactions, a trim), then loads
# the received lines into a temp table and checks them against ledger.entries:
#   - every line is a JSON object with the documented keys;
#   - every transaction is a begin line, its changes, and a commit line that
#     counts them, all with the transaction's xid;
#   - the received entry ids are exactly the committed ones, each once;
#   - nothing from rolled-back work arrives;
#   - every transaction's lines form one block, ids ascending inside it;
#   - commit LSNs never decrease (commit order), and each stream's seqs
#     arrive as 1, 2, 3, ... (appends to a stream commit in seq order);
#   - every field equals the stored row (payloads round-trip exactly);
#   - one trim line per trim call, with the right count.
# Prints "N passed, M failed" last; exits non-zero on any failure.
#
# Knobs (environment): WORKERS (4), ROUNDS per worker (60), TIMEOUT seconds to
# wait for pg_recvlogical (120), LEDGER_PLUGIN (ledger; the output plugin name
# must be listed in output_plugin_libraries where the server has that setting).

set -u

WORKERS=${WORKERS:-4}
ROUNDS=${ROUNDS:-60}
TIMEOUT=${TIMEOUT:-120}

TAG="rt$$x$RANDOM"
SLOT="ledger_recv_${TAG}"
PLUGIN=${LEDGER_PLUGIN:-ledger}
WORK=$(mktemp -d "${TMPDIR:-/tmp}/ledger_recvlogical.XXXXXX")
OUT="$WORK/received.jsonl"
RECV_PID=""
APPENDER_PIDS=()
passed=0
failed=0

PSQL=(psql -X -q -v ON_ERROR_STOP=1 -At)

ok()
{
	passed=$((passed + 1))
	echo "ok - $1"
}

not_ok()
{
	failed=$((failed + 1))
	echo "not ok - $1"
}

# check NAME SQL: the SQL returns one boolean row.
check()
{
	local name=$1 sql=$2 result

	result=$("${PSQL[@]}" -f "$WORK/load.sql" -c "$sql" 2>&1)
	if [ "$result" = "t" ]; then
		ok "$name"
	else
		not_ok "$name"
		echo "#   got: $result" | head -20
	fi
}

cleanup()
{
	local pid

	for pid in "${APPENDER_PIDS[@]}"; do
		kill "$pid" 2>/dev/null
	done
	if [ -n "$RECV_PID" ]; then
		kill "$RECV_PID" 2>/dev/null
		wait "$RECV_PID" 2>/dev/null
	fi
	"${PSQL[@]}" -c "SELECT pg_drop_replication_slot('$SLOT')
		FROM pg_replication_slots WHERE slot_name = '$SLOT'" >/dev/null 2>&1
	rm -rf "$WORK"
}
trap cleanup EXIT

finish()
{
	echo "$passed passed, $failed failed"
	[ "$failed" -eq 0 ]
	exit $?
}

# -- setup -----------------------------------------------------------------

if [ "$("${PSQL[@]}" -c "SELECT to_regnamespace('ledger') IS NULL")" = "t" ]; then
	"${PSQL[@]}" -c "CREATE EXTENSION ledger" || { not_ok "create extension"; finish; }
fi

if "${PSQL[@]}" -c "SELECT pg_create_logical_replication_slot('$SLOT', '$PLUGIN')" >/dev/null; then
	ok "create slot $SLOT with plugin $PLUGIN"
else
	not_ok "create slot $SLOT with plugin $PLUGIN"
	finish
fi

pg_recvlogical -d "${PGDATABASE:-postgres}" --slot "$SLOT" --start --no-loop \
	-F 0 -s 1 -o include-timestamp=on -o include-transaction=on -f "$OUT" 2>"$WORK/recvlogical.err" &
RECV_PID=$!

# -- concurrent appenders ----------------------------------------------------
#
# Each worker's transactions touch streams in ascending order, so appenders
# serialize on stream rows without deadlocking.  Payloads carry quotes,
# backslashes, control characters and non-ASCII text.

gen_worker()
{
	local w=$1 r s p

	echo "\\set ON_ERROR_STOP 0"
	for ((r = 1; r <= ROUNDS; r++)); do
		s="${TAG}-$((r % 3))"
		p="jsonb_build_object('w', $w, 'r', $r, 's', E'q\"b\\\\\\\\t\\t\\u0001 é ☃ 日本')"
		case $((r % 6)) in
			0)
				echo "SELECT ledger.append('$s', $p, order_key => 'w$w');"
				;;
			1)
				echo "BEGIN;"
				echo "SELECT ledger.append('${TAG}-0', $p);"
				echo "SELECT ledger.append('${TAG}-1', $p, tags => '{a,b}');"
				echo "SELECT ledger.append('${TAG}-1', $p, metadata => '{\"k\": \"v\"}');"
				echo "COMMIT;"
				;;
			2)
				echo "BEGIN;"
				echo "SELECT ledger.append('$s', jsonb_build_object('rollback', true));"
				echo "ROLLBACK;"
				;;
			3)
				echo "SELECT count(*) FROM ledger.append_batch('$s', jsonb_build_array("
				echo "  jsonb_build_object('payload', $p, 'dedup_key', 'w$w-r$r'),"
				echo "  jsonb_build_object('payload', $p, 'dedup_key', 'w$w-r$r'),"
				echo "  jsonb_build_object('payload', $p)));"
				;;
			4)
				echo "BEGIN;"
				echo "SELECT ledger.append('$s', $p);"
				echo "SAVEPOINT sp;"
				echo "SELECT ledger.append('$s', jsonb_build_object('rollback', true));"
				echo "ROLLBACK TO SAVEPOINT sp;"
				echo "SELECT ledger.append('$s', $p);"
				echo "COMMIT;"
				;;
			5)
				echo "BEGIN;"
				echo "SELECT ledger.append('$s', $p);"
				echo "SELECT pg_sleep(0.01);"
				echo "SELECT ledger.append('$s', $p);"
				echo "COMMIT;"
				;;
		esac
	done
}

for ((w = 1; w <= WORKERS; w++)); do
	gen_worker "$w" >"$WORK/worker$w.sql"
	psql -X -q -At -f "$WORK/worker$w.sql" >"$WORK/worker$w.out" 2>&1 &
	APPENDER_PIDS+=($!)
done

appenders_ok=1
for pid in "${APPENDER_PIDS[@]}"; do
	wait "$pid" || appenders_ok=0
done
APPENDER_PIDS=()
if [ "$appenders_ok" = 1 ] && ! grep -q "ERROR" "$WORK"/worker*.out; then
	ok "$WORKERS concurrent appenders ran without errors"
else
	not_ok "$WORKERS concurrent appenders ran without errors"
	grep -h "ERROR" "$WORK"/worker*.out | head -5 | sed 's/^/#   /'
fi

# The committed ids, before the trim below deletes some.
"${PSQL[@]}" -c "\\copy (SELECT e.id FROM ledger.entries e JOIN ledger.streams s ON s.stream_id = e.stream_id WHERE s.name LIKE '${TAG}-%') TO '$WORK/committed.ids'"

# One trim, then a sentinel entry that tells us pg_recvlogical caught up.
trimmed=$("${PSQL[@]}" -c "SELECT ledger.trim('${TAG}-2',
	(SELECT min(e.id) + 2 FROM ledger.entries e JOIN ledger.streams s
	 ON s.stream_id = e.stream_id WHERE s.name = '${TAG}-2'))")
sentinel=$("${PSQL[@]}" -c "SELECT ledger.append('${TAG}-end', '{}')")

deadline=$((SECONDS + TIMEOUT))
until grep -q "\"id\":$sentinel," "$OUT" 2>/dev/null; do
	if [ $SECONDS -ge $deadline ] || ! kill -0 "$RECV_PID" 2>/dev/null; then
		break
	fi
	sleep 0.2
done
if grep -q "\"id\":$sentinel," "$OUT" 2>/dev/null; then
	ok "pg_recvlogical received everything up to the sentinel entry"
else
	not_ok "pg_recvlogical received everything up to the sentinel entry"
	sed 's/^/#   /' "$WORK/recvlogical.err" | head -20
	finish
fi
kill "$RECV_PID" 2>/dev/null
wait "$RECV_PID" 2>/dev/null
RECV_PID=""

# -- checks ------------------------------------------------------------------
#
# load.sql rebuilds, in each checking session, temp tables of the received
# lines (n = line number) and of the committed entries of our streams.

cat >"$WORK/load.sql" <<EOF
CREATE TEMP TABLE raw (n bigserial, line text);
\\copy raw (line) FROM '$OUT' WITH (FORMAT csv, DELIMITER E'\\x01', QUOTE E'\\x02')
CREATE TEMP TABLE got AS
	SELECT n, line::jsonb AS j FROM raw
	WHERE line::jsonb->>'stream' LIKE '${TAG}-%'
	  AND line::jsonb->>'stream' <> '${TAG}-end';
CREATE TEMP TABLE committed_ids (id bigint);
\\copy committed_ids FROM '$WORK/committed.ids'
CREATE TEMP TABLE committed AS
	SELECT e.*, s.name AS stream FROM ledger.entries e
	JOIN ledger.streams s ON s.stream_id = e.stream_id
	WHERE s.name LIKE '${TAG}-%' AND s.name <> '${TAG}-end';
EOF

check "every line is a JSON object with a kind" \
	"SELECT bool_and(jsonb_typeof(line::jsonb) = 'object' AND line::jsonb ? 'kind') FROM raw"

check "entry lines have exactly the documented keys" \
	"SELECT bool_and((SELECT array_agg(k ORDER BY k) FROM jsonb_object_keys(j) k)
		= '{annotations,commit_time,created_at,dedup_key,id,kind,lsn,metadata,order_key,payload,schema_version,seq,stream,tags,updated_at,xid}')
	 FROM got WHERE j->>'kind' = 'entry'"

check "every transaction is begin, its changes, commit (which counts them)" \
	"SELECT count(*) > 0 AND bool_and(ok) FROM (
		SELECT (array_agg(j->>'kind' ORDER BY n))[1] = 'begin'
			AND (array_agg(j->>'kind' ORDER BY n DESC))[1] = 'commit'
			AND count(*) - 2 = max((j->>'changes')::int)
			AND max(n) - min(n) + 1 = count(*) AS ok
		FROM (SELECT n, line::jsonb AS j FROM raw) r
		WHERE j->'xid' IN (SELECT j->'xid' FROM got)
		GROUP BY j->'xid') t"

check "received entry ids = committed ids, each once" \
	"SELECT (SELECT array_agg((j->>'id')::bigint ORDER BY (j->>'id')::bigint)
			FROM got WHERE j->>'kind' = 'entry')
		= (SELECT array_agg(id ORDER BY id) FROM committed_ids)"

check "no line from rolled-back work" \
	"SELECT count(*) = 0 FROM got WHERE j->'payload' ? 'rollback'"

check "each transaction's lines form one block" \
	"SELECT count(*) = 0 FROM (
		SELECT xid FROM (
			SELECT j->>'xid' AS xid,
				n - row_number() OVER (PARTITION BY j->>'xid' ORDER BY n) AS block
			FROM got) b
		GROUP BY xid HAVING count(DISTINCT block) > 1) split"

check "ids ascend inside each transaction" \
	"SELECT bool_and(ok) FROM (
		SELECT (j->>'id')::bigint > lag((j->>'id')::bigint, 1, 0::bigint)
			OVER (PARTITION BY j->>'xid' ORDER BY n) AS ok
		FROM got WHERE j->>'kind' = 'entry') s"

check "commit LSNs never decrease (commit order)" \
	"SELECT bool_and(ok) FROM (
		SELECT (j->>'lsn')::pg_lsn >= lag((j->>'lsn')::pg_lsn, 1, '0/0')
			OVER (ORDER BY n) AS ok FROM raw, LATERAL (SELECT line::jsonb) x(j)) s"

check "each stream's seqs arrive as 1, 2, 3, ..." \
	"SELECT bool_and(seq = rn) FROM (
		SELECT (j->>'seq')::bigint AS seq,
			row_number() OVER (PARTITION BY j->>'stream' ORDER BY n) AS rn
		FROM got WHERE j->>'kind' = 'entry') s"

check "every field equals the stored row" \
	"SELECT count(*) = 0 FROM got g JOIN committed c ON c.id = (g.j->>'id')::bigint
	 WHERE g.j->>'kind' = 'entry' AND NOT (
		g.j->>'stream' = c.stream AND (g.j->>'seq')::bigint = c.seq
		AND g.j->'payload' = c.payload AND g.j->'metadata' = c.metadata
		AND g.j->>'order_key' = c.order_key AND g.j->>'dedup_key' = c.dedup_key
		AND (g.j->>'schema_version')::int = c.schema_version
		AND ARRAY(SELECT jsonb_array_elements_text(g.j->'tags')) = c.tags
		AND (g.j->>'created_at')::timestamptz = c.created_at)"

check "payload text round-trips (quotes, backslashes, control chars, non-ASCII)" \
	"SELECT count(*) > 0 AND bool_and(j->'payload'->>'s' = E'q\"b\\\\\\\\t\\t\\u0001 é ☃ 日本')
	 FROM got WHERE j->'payload' ? 's'"

check "one trim line, deleted = $trimmed" \
	"SELECT count(*) = 1 AND bool_and((j->>'deleted')::bigint = $trimmed
		AND j->>'stream' = '${TAG}-2')
	 FROM got WHERE j->>'kind' = 'trim'"

check "no lines for other kinds (no tags or annotations were set)" \
	"SELECT count(*) = 0 FROM raw WHERE line::jsonb->>'kind' NOT IN ('begin', 'entry', 'trim', 'commit')"

# Not a check: show that commit order really differed from id order.
echo "# $("${PSQL[@]}" -f "$WORK/load.sql" -c "SELECT count(*) FROM (
	SELECT (j->>'id')::bigint < max((j->>'id')::bigint) OVER (ORDER BY n
		ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING) AS late
	FROM got WHERE j->>'kind' = 'entry') s WHERE late") entry lines arrived after a higher id (commit order != id order)"

finish
