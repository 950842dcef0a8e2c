#!/usr/bin/env bash
#
# test/worker_sinks.sh — the export sinks end to end, against real peers: a
# SQLite file, FerretDB (a MongoDB-wire server, test/lib/ferretdb.sh) or the
# MongoDB of LEDGER_TEST_MONGODB_URI, and ledger-check (test/golib), which
# reads each export as the Go library's stores do and compares it with
# ledger.read row for row.
#
# Covers: mirroring of entries, tags, annotations and trims; dedup keys
# reused after a trim; a file deleted or replaced under a running sink;
# rows written by somebody else; two sinks on one collection; a sink in
# error holding retention; a target ahead of the server (a failover to a
# lagging replica, faked); payloads by value; kill -9 of the worker and a
# server restart while mutations flow; the host allowlist, redaction of
# every secret form, SIGTERM of a worker stuck on a silent host, the
# confused-deputy case; pause/resume/drop and the extension's life cycle.
#
# Needs a running preloaded server (PGHOST/PGPORT/PGUSER, a superuser), its
# data directory in PGDATA (for the restart; the server log is read from
# LEDGER_SERVER_LOG or $PGDATA/../server.log), and LEDGER_SRC (the tree).
# Prints "N passed, M failed" last; exits non-zero on any failure.

set -u

SRC=${LEDGER_SRC:-$(cd "$(dirname "$0")/.." && pwd)}
. "$SRC/test/lib/ferretdb.sh"
DB=ledger_sinks_test
STUCK_DB=ledger_sinks_stuck
WORK=$(mktemp -d "${TMPDIR:-/tmp}/ledger-worker.XXXXXX")
chmod 755 "$WORK"
SERVER_LOG=${LEDGER_SERVER_LOG:-$(dirname "${PGDATA:-/nonexistent}")/server.log}
BLACKHOLE_PID=
PASS=0
FAIL=0

cleanup() {
	ledger_ferretdb_stop
	[ -n "$BLACKHOLE_PID" ] && kill "$BLACKHOLE_PID" 2>/dev/null
	for j in $(jobs -p); do kill "$j" 2>/dev/null; done
	psql -X -q -d postgres -c "DROP DATABASE IF EXISTS $DB WITH (FORCE)" >/dev/null 2>&1
	psql -X -q -d postgres -c "DROP DATABASE IF EXISTS $STUCK_DB WITH (FORCE)" >/dev/null 2>&1
	psql -X -q -d postgres -c "ALTER SYSTEM RESET ledger.sink_hosts" -c "SELECT pg_reload_conf()" >/dev/null 2>&1
	rm -rf "$WORK"
}
trap cleanup EXIT

pass() { PASS=$((PASS + 1)); echo "ok - $1"; }
fail() { FAIL=$((FAIL + 1)); echo "not ok - $1"; }
expect() {	# expect DESC ACTUAL EXPECTED
	if [ "$2" == "$3" ]; then pass "$1"; else fail "$1"; echo "#   got:      $2"; echo "#   expected: $3"; fi
}
expect_no() {	# expect_no DESC TEXT SUBSTRING
	if [[ "$2" != *"$3"* ]]; then pass "$1"; else fail "$1"; echo "#   found \"$3\" in: ${2:0:300}"; fi
}
finish() {
	echo "$PASS passed, $FAIL failed"
	[ "$FAIL" -eq 0 ] && [ "$PASS" -gt 0 ]
	exit $?
}

q() { psql -X -q -At -d "$DB" -c "$1" 2>&1; }
err() { psql -X -q -At -d "$DB" -c "\\set VERBOSITY sqlstate" -c "$1" 2>&1 | tail -1; }
# poll DESC SQL EXPECTED [SECONDS]: wait until SQL returns EXPECTED
poll() {
	local deadline=$((SECONDS + ${4:-30})) got
	while :; do
		got=$(q "$2")
		[ "$got" == "$3" ] && { pass "$1"; return 0; }
		[ $SECONDS -ge $deadline ] && { fail "$1"; echo "#   last: $got"; echo "#   want: $3"; return 1; }
		sleep 0.2
	done
}
wait_server() {
	local deadline=$((SECONDS + 60))
	until psql -X -q -At -d postgres -c "SELECT 1" >/dev/null 2>&1; do
		[ $SECONDS -ge $deadline ] && return 1
		sleep 0.3
	done
}
sqlite_q() { sqlite3 -batch -noheader -cmd ".timeout 5000" "$1" "$2"; }
state_of() { q "SELECT state FROM ledger.sinks_status WHERE name = '$1'"; }
worker_pid() { psql -X -q -At -d "${1:-$DB}" -c "SELECT pid FROM pg_stat_activity WHERE datname = current_database() AND backend_type = 'ledger worker'"; }

# check_until DESC SECONDS CHECK-ARGS...: ledger-check passes (the export
# equals ledger.read, row for row) before the deadline
check_until() {
	local desc=$1 deadline=$((SECONDS + $2)) out
	shift 2
	while :; do
		out=$(PGDATABASE=$DB "$CHECK" "$@" 2>&1) && { pass "$desc ($(tail -1 <<<"$out" | sed 's/^ledger-check: //'))"; return 0; }
		if [ $SECONDS -ge $deadline ]; then
			fail "$desc"; sed 's/^/#   /' <<<"$out" | head -15; return 1
		fi
		sleep 0.5
	done
}

# ------------------------------------------------------------------ set-up
HARNESS=$WORK/harness
gcc -O1 -I"$SRC/src" $(pkg-config --cflags libmongoc-1.0 sqlite3) \
	"$SRC"/src/sink_sqlite.c "$SRC"/src/sink_mongo.c "$SRC"/src/sink_bson.c "$SRC"/src/sink_redact.c \
	"$SRC/test/sink_harness/harness.c" $(pkg-config --libs libmongoc-1.0 sqlite3) -o "$HARNESS" ||
	{ fail "harness builds"; finish; }
CHECK=$(ledger_go_build "$SRC/test/golib" ledger-check) || { fail "ledger-check builds (Go and the module proxy)"; finish; }
if [ -n "${LEDGER_TEST_MONGODB_URI:-}" ]; then
	MONGO_URI=$LEDGER_TEST_MONGODB_URI
	REAL_MONGODB=1
	echo "# MongoDB: the server at LEDGER_TEST_MONGODB_URI"
else
	ledger_ferretdb_start "$WORK" || { fail "FerretDB starts"; finish; }
	MONGO_URI=$FERRETDB_URI
	REAL_MONGODB=
	echo "# MongoDB: FerretDB on $MONGO_URI"
fi
MDB="ledger_wt_$$"

psql -X -q -d postgres -c "DROP DATABASE IF EXISTS $DB WITH (FORCE)" >/dev/null 2>&1
psql -X -q -d postgres -c "CREATE DATABASE $DB" >/dev/null || { fail "create database"; finish; }
q "CREATE EXTENSION ledger" >/dev/null

WORKERS="SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND backend_type = 'ledger worker'"
poll "a database without sinks or retention holds no worker" "$WORKERS" "0" 10

# ------------------------------------------------------------------ mirror: entries, side data, trims
q "SELECT ledger.create_sink('lite', 'sqlite', '$WORK/main.db', '*', '{\"file_mode\": \"0644\"}')" >/dev/null
q "SELECT ledger.create_sink('mongo', 'mongodb', '$MONGO_URI', 'm-*', jsonb_build_object('database', '$MDB', 'collection', 'main'))" >/dev/null
poll "creating a sink starts the worker" "$WORKERS" "1"

appender() {	# appender N PREFIX: appends, with a rolled-back one and a batch now and then
	local i
	for i in $(seq "$1"); do
		echo "SELECT ledger.append('$2' || ($i % 3), jsonb_build_object('i', $i, 'q', 'quote\" back\\\\ é', 'f', $i * 0.5),
			order_key => 'k' || ($i % 4), tags => ARRAY['t' || ($i % 2), 'all'], metadata => jsonb_build_object('m', ($i % 3)::text));"
		if [ $((i % 10)) = 0 ]; then
			echo "BEGIN; SELECT ledger.append('$2' || 'rb', '{\"gone\": true}'); ROLLBACK;"
			echo "SELECT count(*) FROM ledger.append_batch('$2' || 'batch', (SELECT jsonb_agg(jsonb_build_object('payload', g)) FROM generate_series(1, 20) g));"
		fi
	done | psql -X -q -At -d "$DB" >/dev/null 2>&1
}
appender 80 m- & A1=$!
appender 80 x- & A2=$!
wait $A1 $A2
check_until "sqlite mirrors every stream (entries)" 60 -sqlite "$WORK/main.db"
check_until "mongodb mirrors m-* (entries)" 60 -mongo "$MONGO_URI" -db "$MDB" -collection main -streams 'm-*'
expect "the SQLite file has file_mode 0644" "$(stat -c %a "$WORK/main.db")" "644"
expect "and so has its -wal" "$(stat -c %a "$WORK/main.db-wal")" "644"
expect "sqlite cursor row equals the position" \
	"$(sqlite_q "$WORK/main.db" "SELECT cursor FROM ledger_entries_cursors WHERE name = 'ledger_sink:lite'")" \
	"$(q "SELECT position FROM ledger.sinks WHERE name = 'lite'")"
expect "nothing rolled back was exported" "$(sqlite_q "$WORK/main.db" "SELECT count(*) FROM ledger_entries WHERE stream LIKE '%rb'")" "0"
expect "exported_total counts what the targets hold" \
	"$(q "SELECT string_agg(exported_total::text, ',' ORDER BY name) FROM ledger.sinks_status WHERE name IN ('lite', 'mongo')")" \
	"$(q "SELECT count(*) FROM ledger.entries"),$(q "SELECT count(*) FROM ledger.entries e JOIN ledger.streams s USING (stream_id) WHERE s.name LIKE 'm-%'")"

M1=$(q "SELECT min(id) FROM ledger.entries e JOIN ledger.streams s USING (stream_id) WHERE s.name = 'm-1'")
q "SELECT ledger.set_tags('m-1', $M1, '{retagged,again}')" >/dev/null
q "SELECT ledger.set_annotations('m-1', $M1, '{\"reviewed\": \"yes\", \"by\": \"bob\"}')" >/dev/null
q "SELECT ledger.set_annotations('m-1', $M1, '{\"by\": null}')" >/dev/null
q "SELECT ledger.set_tags('m-2', (SELECT max(e.id) FROM ledger.entries e JOIN ledger.streams s USING (stream_id) WHERE s.name = 'm-2'), '{}')" >/dev/null
q "SELECT ledger.trim('m-0', (SELECT e.id FROM ledger.entries e JOIN ledger.streams s USING (stream_id) WHERE s.name = 'm-0' ORDER BY e.id OFFSET 9 LIMIT 1))" >/dev/null
check_until "tags, annotations (and a deletion) and a trim reach the SQLite file" 30 -sqlite "$WORK/main.db"
check_until "and the MongoDB collection" 30 -mongo "$MONGO_URI" -db "$MDB" -collection main -streams 'm-*'
expect "the mutations reached it as updates, not as new rows" \
	"$(sqlite_q "$WORK/main.db" "SELECT tags || '|' || annotations || '|' || (updated_at IS NOT NULL) FROM ledger_entries WHERE id = $M1")" \
	'["retagged","again"]|{"reviewed":"yes"}|1'
poll "the change log is pruned once every sink applied it" "SELECT count(*) FROM ledger.changes" "0"

# ------------------------------------------------------------------ dedup key reused after a trim
q "SELECT ledger.append('m-dedup', '{\"v\": 1}', dedup_key => 'order-7')" >/dev/null
q "SELECT ledger.trim('m-dedup', (SELECT last_id FROM ledger.stat('m-dedup')))" >/dev/null
NEW=$(q "SELECT ledger.append('m-dedup', '{\"v\": 2}', dedup_key => 'order-7')")
check_until "a dedup key reused after its entry was trimmed: sqlite holds the new entry" 30 -sqlite "$WORK/main.db" -streams 'm-dedup'
check_until "and so does mongodb" 30 -mongo "$MONGO_URI" -db "$MDB" -collection main -streams 'm-dedup'
expect "the new entry is exported, not skipped" "$(sqlite_q "$WORK/main.db" "SELECT id || ':' || CAST(payload AS TEXT) FROM ledger_entries WHERE stream = 'm-dedup'")" "$NEW:{\"v\": 2}"

# ------------------------------------------------------------------ payloads by value
q "SELECT ledger.create_sink('mval', 'mongodb', '$MONGO_URI', 'v-ok', jsonb_build_object('database', '$MDB', 'collection', 'values_ok'))" >/dev/null
for p in '{"a": [1, "x", {"b": null}], "t": true, "f": false}' '[1, 2.5, "three", {"four": 4}]' '"just a string"' '42' 'null' 'true' \
	'-0.0' '{"z": -0.0, "neg": -7}' '{"i32": 2147483647, "i64": 9223372036854775807, "dbl": 0.1, "exp": 1e20, "small": 5e-324}'; do
	q "SELECT ledger.append('v-ok', '$p')" >/dev/null
done
for p in '{"$date": "x"}' '{"$oid": "z"}' '1e400' '123456789012345678901234567890' '{"n": 12345678901234567.5}' '{"$numberLong": "1"}'; do
	q "SELECT ledger.append('v-exotic', '$p')" >/dev/null
done
check_until "payloads by value in SQLite: scalars, arrays, -0.0, \$date/\$oid keys, 1e400, big integers" 30 -sqlite "$WORK/main.db" -streams 'v-*'
check_until "payloads by value in MongoDB: scalars, arrays, -0.0 (int32 0), int32/int64/double by value" 30 -mongo "$MONGO_URI" -db "$MDB" -collection values_ok -streams 'v-ok'
q "SELECT ledger.create_sink('mexotic', 'mongodb', '$MONGO_URI', 'v-exotic', jsonb_build_object('database', '$MDB', 'collection', 'values_exotic'))" >/dev/null
FIRST_EXOTIC=$(q "SELECT min(e.id) FROM ledger.entries e JOIN ledger.streams s USING (stream_id) WHERE s.name = 'v-exotic'")
if [ -n "$REAL_MONGODB" ]; then
	check_until "MongoDB stores {\"\$date\": \"x\"}, {\"\$oid\": \"z\"} as plain fields, 1e400 and big numbers as Decimal128" 30 \
		-mongo "$MONGO_URI" -db "$MDB" -collection values_exotic -streams 'v-exotic'
else
	# FerretDB 1.x refuses keys starting with '$' (and has no Decimal128):
	# the sink must stop at that entry, by name, and skip nothing
	poll "a document FerretDB refuses ({\"\$date\": \"x\"}) puts the sink in error" "SELECT state FROM ledger.sinks_status WHERE name = 'mexotic'" "error"
	expect "last_error names the refused entry" "$(q "SELECT last_error LIKE '%entry $FIRST_EXOTIC %' FROM ledger.sinks_status WHERE name = 'mexotic'")" "t"
	expect "nothing past it is counted exported" "$(q "SELECT position || '/' || exported_total FROM ledger.sinks_status WHERE name = 'mexotic'")" "0/0"
	q "SELECT ledger.drop_sink('mexotic')" >/dev/null
fi

# ------------------------------------------------------------------ two sinks on one collection
q "SELECT ledger.create_sink('two_a', 'mongodb', '$MONGO_URI', 'two-a', jsonb_build_object('database', '$MDB', 'collection', 'shared'))" >/dev/null
q "SELECT ledger.create_sink('two_b', 'mongodb', '$MONGO_URI', 'two-b', jsonb_build_object('database', '$MDB', 'collection', 'shared'))" >/dev/null
q "SELECT count(*) FROM ledger.append_batch('two-a', (SELECT jsonb_agg(jsonb_build_object('payload', g)) FROM generate_series(1, 5) g))" >/dev/null
check_until "two sinks on one collection: the first exports its stream" 30 -mongo "$MONGO_URI" -db "$MDB" -collection shared -streams 'two-a'
q "SELECT ledger.pause_sink('two_a')" >/dev/null
q "SELECT count(*) FROM ledger.append_batch('two-a', (SELECT jsonb_agg(jsonb_build_object('payload', g)) FROM generate_series(6, 10) g))" >/dev/null
q "SELECT count(*) FROM ledger.append_batch('two-b', (SELECT jsonb_agg(jsonb_build_object('payload', g)) FROM generate_series(1, 10) g))" >/dev/null
check_until "the second writes past the paused first one" 30 -mongo "$MONGO_URI" -db "$MDB" -collection shared -streams 'two-b'
q "SELECT ledger.resume_sink('two_a')" >/dev/null
check_until "the resumed first sink skips nothing the second wrote past" 30 -mongo "$MONGO_URI" -db "$MDB" -collection shared -streams 'two-a'
expect "each sink counts its own entries" \
	"$(q "SELECT string_agg(exported_total::text, ',' ORDER BY name) FROM ledger.sinks_status WHERE name LIKE 'two_%'")" "10,10"

# ------------------------------------------------------------------ a file deleted, or replaced, under a running sink
q "SELECT ledger.create_sink('del', 'sqlite', '$WORK/del.db', 'del')" >/dev/null
q "SELECT ledger.create_sink('rep', 'sqlite', '$WORK/rep.db', 'rep')" >/dev/null
q "SELECT ledger.append('del', '{\"n\": 1}'), ledger.append('rep', '{\"n\": 1}')" >/dev/null
poll "both file sinks export" "SELECT string_agg(exported_total::text, ',' ORDER BY name) FROM ledger.sinks_status WHERE name IN ('del', 'rep')" "1,1"
rm -f "$WORK/del.db" "$WORK/del.db-wal" "$WORK/del.db-shm"
sqlite3 "$WORK/rep.new" "CREATE TABLE other (x)"; mv "$WORK/rep.new" "$WORK/rep.db"
q "SELECT ledger.append('del', '{\"n\": 2}'), ledger.append('rep', '{\"n\": 2}')" >/dev/null
poll "a deleted file puts its sink in error" "SELECT state FROM ledger.sinks_status WHERE name = 'del'" "error"
poll "a replaced file puts its sink in error" "SELECT state FROM ledger.sinks_status WHERE name = 'rep'" "error"
expect "last_error says the file is gone" \
	"$(q "SELECT last_error LIKE '%gone%' OR last_error LIKE '%no cursor%' FROM ledger.sinks_status WHERE name = 'del'")" "t"
expect "last_error says the file was replaced" \
	"$(q "SELECT last_error LIKE '%replaced%' OR last_error LIKE '%no cursor%' FROM ledger.sinks_status WHERE name = 'rep'")" "t"
expect "neither counts the entry it could not write" \
	"$(q "SELECT string_agg(exported_total::text || ':' || lag_entries, ',' ORDER BY name) FROM ledger.sinks_status WHERE name IN ('del', 'rep')")" "1:1,1:1"
q "SELECT ledger.drop_sink('del'), ledger.drop_sink('rep')" >/dev/null

# ------------------------------------------------------------------ rows somebody else wrote
q "SELECT ledger.create_sink('for', 'sqlite', '$WORK/for.db', 'for')" >/dev/null
q "SELECT ledger.append('for', '{\"n\": 1}')" >/dev/null
poll "the sink exports" "SELECT exported_total FROM ledger.sinks_status WHERE name = 'for'" "1"
# what the Go library's Append does: the next id, no source_id
sqlite_q "$WORK/for.db" "INSERT INTO ledger_entries (stream, payload) VALUES ('for', CAST('{}' AS BLOB))"
FOREIGN_ID=$(sqlite_q "$WORK/for.db" "SELECT max(id) FROM ledger_entries")
q "SELECT count(*) FROM ledger.append_batch('for', '[{\"payload\": 2}, {\"payload\": 3}]'::jsonb)" >/dev/null
poll "a foreign row in the SQLite target puts the sink in error" "SELECT state FROM ledger.sinks_status WHERE name = 'for'" "error"
expect "last_error names the row" "$(q "SELECT last_error ~ 'id $FOREIGN_ID\\M' FROM ledger.sinks_status WHERE name = 'for'")" "t"
q "SELECT ledger.drop_sink('for')" >/dev/null
q "SELECT ledger.pause_sink('mongo')" >/dev/null
"$HARNESS" mongo-insert "$MONGO_URI" "$MDB" main '{"stream": "m-0", "payload": {}, "tags": []}' >/dev/null
q "SELECT ledger.append('m-0', '{\"after\": \"foreign\"}')" >/dev/null
q "SELECT ledger.resume_sink('mongo')" >/dev/null
poll "a foreign document in the MongoDB target puts the sink in error" "SELECT state FROM ledger.sinks_status WHERE name = 'mongo'" "error"
expect "last_error says somebody else writes there" "$(q "SELECT last_error LIKE '%no ledger sink wrote%' FROM ledger.sinks_status WHERE name = 'mongo'")" "t"
q "SELECT ledger.drop_sink('mongo')" >/dev/null

# ------------------------------------------------------------------ a target ahead of the server (failover to a lagging replica, faked)
q "SELECT ledger.create_sink('fo', 'sqlite', '$WORK/fo.db', 'fo')" >/dev/null
q "SELECT ledger.create_sink('mfo', 'mongodb', '$MONGO_URI', 'fo', jsonb_build_object('database', '$MDB', 'collection', 'fo'))" >/dev/null
q "SELECT count(*) FROM ledger.append_batch('fo', '[{\"payload\": 1}, {\"payload\": 2}]'::jsonb)" >/dev/null
poll "both sinks export" "SELECT string_agg(exported_total::text, ',' ORDER BY name) FROM ledger.sinks_status WHERE name IN ('fo', 'mfo')" "2,2"
q "SELECT ledger.pause_sink('fo'), ledger.pause_sink('mfo')" >/dev/null
AHEAD=$(( $(q "SELECT pg_sequence_last_value('ledger.entries_id_seq')") + 3115 ))
# what the old primary had exported: rows past this server's newest id
sqlite_q "$WORK/fo.db" "INSERT INTO ledger_entries (id, stream, payload, source_id, seq) VALUES ($AHEAD, 'fo', CAST('{}' AS BLOB), '$AHEAD', 3);
	UPDATE ledger_entries_cursors SET cursor = '$AHEAD' WHERE name = 'ledger_sink:fo'"
"$HARNESS" mongo-insert "$MONGO_URI" "$MDB" fo "{\"_id\": {\"\$oid\": \"$("$HARNESS" oid $AHEAD)\"}, \"stream\": \"fo\", \"payload\": {}, \"tags\": [], \"source_id\": \"$AHEAD\"}" >/dev/null
q "SELECT ledger.resume_sink('fo'), ledger.resume_sink('mfo')" >/dev/null
poll "a SQLite target ahead of the server puts the sink in error" "SELECT state FROM ledger.sinks_status WHERE name = 'fo'" "error"
poll "a MongoDB target ahead of the server puts the sink in error" "SELECT state FROM ledger.sinks_status WHERE name = 'mfo'" "error"
expect "both say the target is ahead, naming the id" \
	"$(q "SELECT bool_and(last_error LIKE '%ahead%' AND last_error LIKE '%$AHEAD%') FROM ledger.sinks_status WHERE name IN ('fo', 'mfo')")" "t"
q "SELECT ledger.append('fo', '{\"n\": 3}')" >/dev/null
sleep 1.5	# time for a wrong export to happen; the state is what matters
expect "no new entry is exported into a target ahead of the server" \
	"$(sqlite_q "$WORK/fo.db" "SELECT count(*) FROM ledger_entries") $(q "SELECT exported_total FROM ledger.sinks_status WHERE name = 'fo'")" "3 2"
q "SELECT ledger.drop_sink('fo'), ledger.drop_sink('mfo')" >/dev/null

# ------------------------------------------------------------------ retention held by a sink in error
q "SELECT ledger.create_sink('hold', 'sqlite', '$WORK/no-such-dir/hold.db', 'ret-*')" >/dev/null
poll "a sink whose target cannot be opened is in error" "SELECT state FROM ledger.sinks_status WHERE name = 'hold'" "error"
q "SELECT count(*) FROM ledger.append_batch('ret-x', (SELECT jsonb_agg(jsonb_build_object('payload', g)) FROM generate_series(1, 10) g))" >/dev/null
q "SELECT ledger.set_retention('ret-x', max_entries => 2)" >/dev/null
q "SELECT ledger.enforce_retention('ret-x')" >/dev/null
expect "retention never deletes what a sink in error has not exported" "$(q "SELECT count FROM ledger.stat('ret-x')")" "10"
q "SELECT ledger.pause_sink('hold')" >/dev/null
q "SELECT ledger.enforce_retention('ret-x')" >/dev/null
expect "nor what a paused sink has not exported" "$(q "SELECT count FROM ledger.stat('ret-x')")" "10"
q "SELECT ledger.drop_sink('hold')" >/dev/null
poll "drop_sink releases it" "SELECT count FROM ledger.stat('ret-x')" "2" 30
check_until "retention deletions reach the SQLite mirror" 30 -sqlite "$WORK/main.db" -streams 'ret-*'

# ------------------------------------------------------------------ security: host allowlist
q "SELECT ledger.create_sink('mongo', 'mongodb', '$MONGO_URI', 'm-*', jsonb_build_object('database', '$MDB', 'collection', 'main2'))" >/dev/null
MPORT=$(sed -E 's|.*:([0-9]+)/?.*|\1|' <<<"${MONGO_URI%%\?*}")
q "DROP ROLE IF EXISTS ledger_wt_admin; CREATE ROLE ledger_wt_admin IN ROLE ledger_admin" >/dev/null
as_admin() { err "SET ROLE ledger_wt_admin; $1"; }
expect "ledger.sink_hosts empty: a ledger_admin may not create a mongodb sink (42501)" \
	"$(as_admin "SELECT ledger.create_sink('ssrf', 'mongodb', 'mongodb://127.0.0.1:$MPORT/', '*', '{\"database\": \"d\"}')")" "ERROR:  42501"
q "ALTER SYSTEM SET ledger.sink_hosts = '127.0.0.1:$MPORT, [::1]:*'" >/dev/null; q "SELECT pg_reload_conf()" >/dev/null
sleep 0.3
expect "a listed host:port is allowed" \
	"$(as_admin "SELECT ledger.create_sink('listed', 'mongodb', 'mongodb://127.0.0.1:$MPORT/', 'nothing', '{\"database\": \"d\"}')")" ""
expect "another port of a listed host is refused (42501)" \
	"$(as_admin "SELECT ledger.create_sink('ssrf', 'mongodb', 'mongodb://127.0.0.1:22/', '*', '{\"database\": \"d\"}')")" "ERROR:  42501"
expect "any host of a seed list outside the list is refused (42501)" \
	"$(as_admin "SELECT ledger.create_sink('ssrf', 'mongodb', 'mongodb://127.0.0.1:$MPORT,10.1.2.3:27017/', '*', '{\"database\": \"d\"}')")" "ERROR:  42501"
expect "a unix-domain socket is for superusers only (42501)" \
	"$(as_admin "SELECT ledger.create_sink('ssrf', 'mongodb', 'mongodb://%2Ftmp%2Fmongodb-27017.sock/', '*', '{\"database\": \"d\"}')")" "ERROR:  42501"
expect "a mongodb+srv target is for superusers only (42501)" \
	"$(as_admin "SELECT ledger.create_sink('ssrf', 'mongodb', 'mongodb+srv://cluster.example.com/', '*', '{\"database\": \"d\"}')")" "ERROR:  42501"
expect "a non-superuser cannot widen ledger.sink_hosts (42501)" \
	"$(as_admin "SET ledger.sink_hosts = '10.0.0.1:*'")" "ERROR:  42501"
q "SELECT ledger.drop_sink('listed')" >/dev/null

# ------------------------------------------------------------------ security: the confused deputy (pg_write_server_files as current_user)
q "DROP ROLE IF EXISTS ledger_wt_deputy; CREATE ROLE ledger_wt_deputy IN ROLE ledger_admin;
   GRANT CREATE ON SCHEMA public TO ledger_wt_deputy;
   SET ROLE ledger_wt_deputy;
   CREATE FUNCTION public.deputy(path text) RETURNS void LANGUAGE sql SECURITY DEFINER
     SET search_path = pg_catalog AS \$\$ SELECT ledger.create_sink('deputy', 'sqlite', path) \$\$;
   RESET ROLE" >/dev/null
expect "inside another role's SECURITY DEFINER function, a superuser's call is checked as that role (42501)" \
	"$(err "SELECT public.deputy('$WORK/deputy.db')")" "ERROR:  42501"
q "DROP ROLE IF EXISTS ledger_wt_writer; CREATE ROLE ledger_wt_writer IN ROLE ledger_admin, pg_write_server_files" >/dev/null
expect "a member of pg_write_server_files may create a sqlite sink itself" \
	"$(err "SET ROLE ledger_wt_writer; SELECT ledger.create_sink('writer', 'sqlite', '$WORK/writer.db', 'nothing')")" ""
q "SELECT ledger.drop_sink('writer'); DROP FUNCTION public.deputy(text); REVOKE CREATE ON SCHEMA public FROM ledger_wt_deputy" >/dev/null

# ------------------------------------------------------------------ security: no secret is ever shown
SECRETS=("se?cr3t-pw" "KeyFilePw-77" "SessTok-99")
q "SELECT ledger.create_sink('sec1', 'mongodb', 'mongodb://u:se?cr3t-pw@127.0.0.1:1/?serverSelectionTimeoutMS=300', 'nothing', '{\"database\": \"d\"}')" >/dev/null
q "SELECT ledger.create_sink('sec2', 'mongodb', 'mongodb://u:p@127.0.0.1:1/?tls=true&tlsCertificateKeyFile=/nonexistent.pem&tlsCertificateKeyFilePassword=KeyFilePw-77', 'nothing', '{\"database\": \"d\"}')" >/dev/null
q "SELECT ledger.create_sink('sec3', 'mongodb', 'mongodb://AKIA:x@127.0.0.1:1/?authMechanism=MONGODB-AWS&authMechanismProperties=AWS_SESSION_TOKEN:SessTok-99', 'nothing', '{\"database\": \"d\"}')" >/dev/null
expect "the three sinks exist" "$(q "SELECT count(*) FROM ledger.sinks WHERE name LIKE 'sec%'")" "3"
poll "sinks with secrets in their URIs fail (unreachable)" "SELECT count(*) FROM ledger.sinks_status WHERE name LIKE 'sec%' AND state = 'error'" "3" 30
SHOWN=$(q "SELECT string_agg(target || ' ' || COALESCE(last_error, ''), ' ') FROM ledger.sinks_status WHERE name LIKE 'sec%'")
HEALTH=$(q "SELECT string_agg(detail, ' ') FROM ledger.health()")
for s in "${SECRETS[@]}"; do
	expect_no "sinks_status target and last_error hide $s" "$SHOWN" "$s"
	expect_no "health() hides $s" "$HEALTH" "$s"
	[ -f "$SERVER_LOG" ] && expect_no "the server log hides $s" "$(cat "$SERVER_LOG")" "$s"
done
expect "the redacted targets keep what is not secret" \
	"$(q "SELECT string_agg(target, ' ' ORDER BY name) FROM ledger.sinks_status WHERE name LIKE 'sec%'")" \
	"mongodb://u:***@127.0.0.1:1/?serverSelectionTimeoutMS=300 mongodb://u:***@127.0.0.1:1/?tls=true&tlsCertificateKeyFile=***&tlsCertificateKeyFilePassword=*** mongodb://AKIA:***@127.0.0.1:1/?authMechanism=MONGODB-AWS&authMechanismProperties=AWS_SESSION_TOKEN:***"
BAD=$(psql -X -q -At -d "$DB" -c "SET log_min_error_statement = panic" -c "SELECT ledger.create_sink('pw', 'mongodb', 'mongodb://u:se?cr3t-pw@[bad', '{\"database\": \"d\"}')" 2>&1)
expect_no "a refused URI's error hides the password" "$BAD" "se?cr3t-pw"
q "SELECT ledger.drop_sink('sec1'), ledger.drop_sink('sec2'), ledger.drop_sink('sec3')" >/dev/null

# ------------------------------------------------------------------ security: SIGTERM of a worker stuck on a silent host
BH_PORT=$(ledger_free_port)
/usr/bin/python3 -c "
import socket, time
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(('127.0.0.1', $BH_PORT)); s.listen(64)
print('listening', flush=True); time.sleep(300)" >"$WORK/blackhole.log" 2>&1 &
BLACKHOLE_PID=$!
for _ in $(seq 50); do grep -q listening "$WORK/blackhole.log" && break; sleep 0.1; done
psql -X -q -d postgres -c "DROP DATABASE IF EXISTS $STUCK_DB WITH (FORCE)" -c "CREATE DATABASE $STUCK_DB" >/dev/null
psql -X -q -d "$STUCK_DB" -c "CREATE EXTENSION ledger" \
	-c "SELECT ledger.create_sink('stuck', 'mongodb', 'mongodb://127.0.0.1:$BH_PORT/?serverSelectionTimeoutMS=90000&connectTimeoutMS=90000&socketTimeoutMS=0', '*', '{\"database\": \"d\"}')" >/dev/null
deadline=$((SECONDS + 20))
STUCK_PID=
until [ -n "$STUCK_PID" ] || [ $SECONDS -ge $deadline ]; do
	STUCK_PID=$(psql -X -q -At -d "$STUCK_DB" -c "SELECT pid FROM pg_stat_activity WHERE backend_type = 'ledger worker' AND query = 'ledger: opening sink stuck'")
	sleep 0.05
done
expect "the worker waits on the silent host (pg_stat_activity)" "$([ -n "$STUCK_PID" ] && echo yes)" "yes"
t0=$(date +%s%N)
psql -X -q -At -d postgres -c "SELECT pg_terminate_backend($STUCK_PID)" >/dev/null
until ! kill -0 "$STUCK_PID" 2>/dev/null; do [ $(( ($(date +%s%N) - t0) / 1000000 )) -gt 5000 ] && break; sleep 0.01; done
MS=$(( ($(date +%s%N) - t0) / 1000000 ))
if [ "$MS" -lt 1000 ]; then pass "pg_terminate_backend of a worker stuck on a silent host returns within 1 s ($MS ms)"; else fail "pg_terminate_backend of a stuck worker took $MS ms"; fi

# ------------------------------------------------------------------ kill -9 of the worker and a server restart while mutations flow
mutator() {	# mutator ROUND: appends (dedup keys: a retried chunk is harmless), tags, annotations, trims
	local r=$1 i
	for i in $(seq 40); do
		echo "SELECT ledger.append('m-flow', jsonb_build_object('r', $r, 'i', $i), dedup_key => 'r$r-i$i');"
		echo "SELECT ledger.set_tags('m-flow', e.id, ARRAY['r$r', 'i$i']) FROM ledger.entries e JOIN ledger.streams s USING (stream_id) WHERE s.name = 'm-flow' ORDER BY e.id DESC OFFSET 3 LIMIT 1;"
		echo "SELECT ledger.set_annotations('m-flow', e.id, jsonb_build_object('seen', '$r-$i')) FROM ledger.entries e JOIN ledger.streams s USING (stream_id) WHERE s.name = 'm-flow' ORDER BY e.id DESC OFFSET 1 LIMIT 1;"
		[ $((i % 15)) = 0 ] && echo "SELECT ledger.trim('m-flow', (SELECT e.id FROM ledger.entries e JOIN ledger.streams s USING (stream_id) WHERE s.name = 'm-flow' ORDER BY e.id OFFSET 5 LIMIT 1));"
	done
}
flow() {	# flow ROUNDS: each round retried until it went through whole
	local r
	for r in $(seq "$1"); do
		until mutator "$r" | psql -X -q -At -v ON_ERROR_STOP=1 -d "$DB" >/dev/null 2>&1; do sleep 0.3; done
	done
}
flow 4 & FLOW=$!
sleep 1
WPID=$(worker_pid)
[ -n "$WPID" ] && kill -9 "$WPID"
wait_server || fail "the server comes back after the worker's crash"
poll "the worker is back after kill -9" "$WORKERS" "1" 60
sleep 1
if [ -n "${PGDATA:-}" ]; then
	t0=$(date +%s)
	pg_ctl -D "$PGDATA" -m fast -w stop >/dev/null 2>&1
	STOP_S=$(( $(date +%s) - t0 ))
	pg_ctl -D "$PGDATA" -l "$SERVER_LOG" -w start >/dev/null 2>&1 || fail "the server starts again"
	wait_server
	if [ "$STOP_S" -le 3 ]; then pass "pg_ctl stop -m fast with a worker stuck on a silent host takes ${STOP_S} s"; else fail "pg_ctl stop -m fast took ${STOP_S} s"; fi
	poll "the worker is back after a restart" "$WORKERS" "1" 60
fi
wait $FLOW
check_until "after kill -9 and a restart while mutations flowed: sqlite equals ledger.read, row for row" 90 -sqlite "$WORK/main.db"
check_until "and so does mongodb" 90 -mongo "$MONGO_URI" -db "$MDB" -collection main2 -streams 'm-*'
expect "the sinks are active" "$(q "SELECT string_agg(state, ',' ORDER BY name) FROM ledger.sinks_status WHERE name IN ('lite', 'mongo')")" "active,active"

t0=$(date +%s%N)
DROPPED=$(psql -X -q -At -d postgres -c "DROP DATABASE $STUCK_DB WITH (FORCE)" 2>&1 && echo dropped)
MS=$(( ($(date +%s%N) - t0) / 1000000 ))
expect "DROP DATABASE ... WITH (FORCE) of a database whose worker is stuck on a silent host succeeds ($MS ms)" "$DROPPED" "dropped"
kill "$BLACKHOLE_PID" 2>/dev/null; BLACKHOLE_PID=

# ------------------------------------------------------------------ pause / resume, a locked file, bad arguments
q "SELECT ledger.pause_sink('lite')" >/dev/null
BEFORE=$(sqlite_q "$WORK/main.db" "SELECT count(*) FROM ledger_entries")
q "SELECT count(*) FROM ledger.append_batch('paused', (SELECT jsonb_agg(jsonb_build_object('payload', g)) FROM generate_series(1, 10) g))" >/dev/null
poll "sinks_status shows paused and the lag" "SELECT state || ':' || lag_entries FROM ledger.sinks_status WHERE name = 'lite'" "paused:10"
expect "a paused sink exports nothing" "$(sqlite_q "$WORK/main.db" "SELECT count(*) FROM ledger_entries")" "$BEFORE"
q "SELECT ledger.resume_sink('lite')" >/dev/null
check_until "a resumed sink catches up" 30 -sqlite "$WORK/main.db"
(echo "BEGIN EXCLUSIVE; INSERT INTO ledger_entries_cursors VALUES ('lock-holder', '0');"; sleep 8; echo "ROLLBACK;") | sqlite3 "$WORK/main.db" &
LOCKER=$!
sleep 0.5
q "SELECT ledger.append('locked', '{\"n\": 1}')" >/dev/null
poll "a locked target puts the sink in error" "SELECT state FROM ledger.sinks_status WHERE name = 'lite'" "error" 20
expect "appends are never blocked by a failing sink" "$(q "SELECT ledger.append('locked', '{\"n\": 2}') > 0")" "t"
wait $LOCKER
check_until "the sink recovers once the lock is gone" 90 -sqlite "$WORK/main.db"

expect "unknown kind is 22023" "$(err "SELECT ledger.create_sink('x', 'kafka', 'x')")" "ERROR:  22023"
expect "relative sqlite path is 22023" "$(err "SELECT ledger.create_sink('x', 'sqlite', 'relative.db')")" "ERROR:  22023"
expect "'..' in a sqlite path is 22023" "$(err "SELECT ledger.create_sink('x', 'sqlite', '/tmp/../etc/x.db')")" "ERROR:  22023"
expect "unknown sqlite option is 22023" "$(err "SELECT ledger.create_sink('x', 'sqlite', '/tmp/x.db', options => '{\"colour\": 1}')")" "ERROR:  22023"
expect "a file_mode other than 0600/0640/0644 is 22023" "$(err "SELECT ledger.create_sink('x', 'sqlite', '/tmp/x.db', options => '{\"file_mode\": \"0666\"}')")" "ERROR:  22023"
expect "bad MongoDB URI is 22023" "$(err "SELECT ledger.create_sink('x', 'mongodb', 'http://nope')")" "ERROR:  22023"
expect "MongoDB without a database is 22023" "$(err "SELECT ledger.create_sink('x', 'mongodb', 'mongodb://127.0.0.1:1/')")" "ERROR:  22023"
expect "duplicate sink name is 42710" "$(err "SELECT ledger.create_sink('lite', 'sqlite', '$WORK/other.db')")" "ERROR:  42710"
expect "dropping a missing sink is 42704" "$(err "SELECT ledger.drop_sink('nope')")" "ERROR:  42704"
expect "only pg_write_server_files may create sqlite sinks (42501)" \
	"$(as_admin "SELECT ledger.create_sink('x', 'sqlite', '/tmp/x.db')")" "ERROR:  42501"
q "DROP ROLE ledger_wt_admin; DROP ROLE ledger_wt_deputy; DROP ROLE ledger_wt_writer" >/dev/null

# ------------------------------------------------------------------ drop, and the extension's life cycle
q "SELECT ledger.drop_sink(name) FROM ledger.sinks" >/dev/null
poll "with the last sink gone, the change log is empty" "SELECT count(*) FROM ledger.changes" "0"
q "SELECT ledger.set_retention('ret-x', NULL, NULL)" >/dev/null
poll "with nothing left to do the worker leaves" "$WORKERS" "0" 30 || {
	echo "#   what the worker still had: settings, sinks, its activity"
	q "SELECT pattern, max_entries, max_age FROM ledger.stream_settings WHERE max_entries IS NOT NULL OR max_age IS NOT NULL" | sed 's/^/#     /'
	q "SELECT name, state FROM ledger.sinks" | sed 's/^/#     /'
	q "SELECT pid, state, wait_event, backend_start FROM pg_stat_activity WHERE backend_type = 'ledger worker'" | sed 's/^/#     /'
}
expect "an idle database can be dropped without FORCE" \
	"$(psql -X -q -At -d postgres -c "DROP DATABASE $DB" 2>&1 && echo dropped)" "dropped"

finish
