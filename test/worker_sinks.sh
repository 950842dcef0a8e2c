#!/usr/bin/env bash
#
# test/worker_sinks.sh — the background worker end to end: export to a real
# SQLite file and to the MongoDB-wire test server (test/mongo/server.js, or a
# real MongoDB when LEDGER_TEST_MONGODB_URI is set), exactly once across a
# locked target, a target that goes away, kill -9 of the worker and a server
# restart; pause/resume/drop; retention; bad arguments; DROP/CREATE EXTENSION.
#
# Needs a running preloaded server (PGHOST/PGPORT/PGUSER, a superuser), its
# data directory in PGDATA (for the restart), and LEDGER_SRC (the source
# tree).  Prints "N passed, M failed" last; exits non-zero on any failure.

set -u

SRC=${LEDGER_SRC:-$(cd "$(dirname "$0")/.." && pwd)}
DB=ledger_sinks_test
WORK=$(mktemp -d "${TMPDIR:-/tmp}/ledger-worker.XXXXXX")
MONGO_PID=
PASS=0
FAIL=0

cleanup() {
	[ -n "$MONGO_PID" ] && kill "$MONGO_PID" 2>/dev/null
	jobs -p | xargs -r kill 2>/dev/null
	psql -X -q -d postgres -c "DROP DATABASE IF EXISTS $DB WITH (FORCE)" >/dev/null 2>&1
	rm -rf "$WORK"
}
trap cleanup EXIT

pass() { PASS=$((PASS + 1)); echo "ok - $1"; }
fail() { FAIL=$((FAIL + 1)); echo "not ok - $1"; }
expect() {	# expect DESC ACTUAL EXPECTED
	if [ "$2" == "$3" ]; then pass "$1"; else fail "$1"; echo "#   got:      $2"; echo "#   expected: $3"; fi
}
finish() {
	echo "$PASS passed, $FAIL failed"
	[ "$FAIL" -eq 0 ] && [ "$PASS" -gt 0 ]
	exit $?
}

q() { psql -X -q -At -d "$DB" -c "$1" 2>&1; }
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
sqlite_q() { sqlite3 -batch -noheader "$WORK/export.db" "$1"; }

# ------------------------------------------------------------------ set-up
HARNESS=$WORK/harness
gcc -O1 -I"$SRC/src" $(pkg-config --cflags libmongoc-1.0 sqlite3) \
	"$SRC/src/sink_sqlite.c" "$SRC/src/sink_mongo.c" "$SRC/test/sink_harness/harness.c" \
	$(pkg-config --libs libmongoc-1.0 sqlite3) -o "$HARNESS" || { fail "harness builds"; finish; }

start_mongo() {
	node "$SRC/test/mongo/server.js" "$MONGO_PORT" >"$WORK/mongo.log" 2>&1 &
	MONGO_PID=$!
	for _ in $(seq 50); do grep -q listening "$WORK/mongo.log" && return 0; sleep 0.1; done
	return 1
}
if [ -n "${LEDGER_TEST_MONGODB_URI:-}" ]; then
	MONGO_URI=$LEDGER_TEST_MONGODB_URI
	echo "# MongoDB: the real server at LEDGER_TEST_MONGODB_URI"
else
	[ -d "$SRC/test/mongo/node_modules" ] || (cd "$SRC/test/mongo" && npm ci --silent --no-audit --no-fund >/dev/null 2>&1)
	MONGO_PORT=$(( (RANDOM % 2000) + 37000 ))
	start_mongo || { fail "mongo test server starts"; finish; }
	MONGO_URI="mongodb://127.0.0.1:$MONGO_PORT/"
	echo "# MongoDB: the wire-protocol test server test/mongo/server.js on port $MONGO_PORT"
fi
MONGO_DB="ledger_wt_$$"

psql -X -q -d postgres -c "DROP DATABASE IF EXISTS $DB WITH (FORCE)" >/dev/null 2>&1
psql -X -q -d postgres -c "CREATE DATABASE $DB" >/dev/null || { fail "create database"; finish; }
q "CREATE EXTENSION ledger" >/dev/null

WORKERS="SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND backend_type = 'ledger worker'"
expect "the launcher runs without a database" \
	"$(q "SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'ledger launcher' AND datname IS NULL")" "1"
sleep 1.5
expect "a database without sinks or retention holds no worker" "$(q "$WORKERS")" "0"
expect "health calls that idle, not broken" "$(q "SELECT ok || ':' || (detail LIKE 'idle%') FROM ledger.health() WHERE check_name = 'worker'")" "true:true"

# ------------------------------------------------------------------ export
q "SELECT ledger.create_sink('lite', 'sqlite', '$WORK/export.db')" >/dev/null
q "SELECT ledger.create_sink('mongo', 'mongodb', '$MONGO_URI', 'a*', jsonb_build_object('database', '$MONGO_DB'))" >/dev/null
poll "creating a sink starts the worker (pg_stat_activity)" \
	"SELECT backend_type || '/' || application_name FROM pg_stat_activity WHERE datname = current_database() AND backend_type = 'ledger worker'" \
	"ledger worker/ledger worker"
expect "health reports the worker" "$(q "SELECT ok FROM ledger.health() WHERE check_name = 'worker'")" "t"
expect "two sinks exist" "$(q "SELECT string_agg(name || ':' || kind || ':' || state, ',' ORDER BY name) FROM ledger.sinks_status")" \
	"lite:sqlite:active,mongo:mongodb:active"

appender() {	# appender N STREAM_PREFIX
	local i
	for i in $(seq "$1"); do
		echo "SELECT ledger.append('$2' || ($i % 3), jsonb_build_object('i', $i, 'q', 'quote\" back\\\\ é'), order_key => 'k$i', tags => '{x}');"
		if [ $((i % 10)) = 0 ]; then
			echo "BEGIN; SELECT ledger.append('$2' || 'rb', '{\"gone\": true}'); ROLLBACK;"
			echo "SELECT count(*) FROM ledger.append_batch('$2' || 'batch', (SELECT jsonb_agg(jsonb_build_object('payload', g)) FROM generate_series(1, 20) g));"
		fi
	done | psql -X -q -At -d "$DB" >/dev/null 2>&1
}
appender 100 a & A1=$!
appender 100 b & A2=$!
appender 60 a & A3=$!
wait $A1 $A2 $A3

caught_up="SELECT bool_and(lag_entries = 0 AND position >= (SELECT max(id) FROM ledger.entries)) FROM ledger.sinks_status"
poll "both sinks catch up" "$caught_up" "t" 60

PG_ALL=$(q "SELECT string_agg(id::text, ',' ORDER BY id) FROM ledger.entries")
PG_A=$(q "SELECT string_agg(e.id::text, ',' ORDER BY e.id) FROM ledger.entries e JOIN ledger.streams s USING (stream_id) WHERE s.name LIKE 'a%'")
expect "sqlite holds every entry, in id order, once" "$(sqlite_q "SELECT group_concat(id, ',') FROM (SELECT id FROM ledger_entries ORDER BY id)")" "$PG_ALL"
expect "sqlite source_id is the PostgreSQL id" "$(sqlite_q "SELECT count(*) FROM ledger_entries WHERE source_id <> CAST(id AS TEXT)")" "0"
mongo_ids() { "$HARNESS" mongo-dump "$MONGO_URI" "$MONGO_DB" ledger_entries | sed -E 's/.*"source_id" : "([0-9]+)".*/\1/' | paste -sd, -; }
expect "mongodb holds every entry of a*, in _id order, once" "$(mongo_ids)" "$PG_A"
expect "nothing rolled back was exported" "$(sqlite_q "SELECT count(*) FROM ledger_entries WHERE stream LIKE '%rb'")" "0"
expect "exported_total counts what was written" \
	"$(q "SELECT string_agg(exported_total::text, ',' ORDER BY name) FROM ledger.sinks_status")" \
	"$(q "SELECT count(*) FROM ledger.entries"),$(q "SELECT count(*) FROM ledger.entries e JOIN ledger.streams s USING (stream_id) WHERE s.name LIKE 'a%'")"
expect "sqlite payloads and fields match" \
	"$(sqlite_q "SELECT stream || '|' || CAST(payload AS TEXT) || '|' || order_key || '|' || tags || '|' || seq FROM ledger_entries ORDER BY id LIMIT 1")" \
	"$(q "SELECT s.name || '|' || e.payload::text || '|' || e.order_key || '|' || to_jsonb(e.tags)::text || '|' || e.seq FROM ledger.entries e JOIN ledger.streams s USING (stream_id) ORDER BY e.id LIMIT 1")"
expect "sqlite created_at is UTC text YYYY-MM-DDTHH:MM:SS.fff" \
	"$(sqlite_q "SELECT count(*) FROM ledger_entries WHERE created_at NOT GLOB '[0-9][0-9][0-9][0-9]-[0-9][0-9]-[0-9][0-9]T[0-9][0-9]:[0-9][0-9]:[0-9][0-9].[0-9][0-9][0-9]'")" "0"
expect "sqlite table has the Go library's columns" \
	"$(sqlite_q "SELECT group_concat(name || ':' || type, ',') FROM pragma_table_info('ledger_entries')")" \
	"id:INTEGER,stream:TEXT,payload:BLOB,order_key:TEXT,dedup_key:TEXT,schema_version:INTEGER,metadata:TEXT,tags:TEXT,annotations:TEXT,source_id:TEXT,created_at:TEXT,updated_at:TEXT,seq:INTEGER"
expect "sqlite cursor row equals the position" \
	"$(sqlite_q "SELECT cursor FROM ledger_entries_cursors WHERE name = 'ledger_sink:lite'")" \
	"$(q "SELECT max(id) FROM ledger.entries")"

# ------------------------------------------------------------------ pause / resume
q "SELECT ledger.pause_sink('lite')" >/dev/null
BEFORE=$(sqlite_q "SELECT count(*) FROM ledger_entries")
q "SELECT count(*) FROM ledger.append_batch('paused', (SELECT jsonb_agg(jsonb_build_object('payload', g)) FROM generate_series(1, 10) g))" >/dev/null
sleep 1.5
expect "a paused sink exports nothing" "$(sqlite_q "SELECT count(*) FROM ledger_entries")" "$BEFORE"
expect "sinks_status shows paused and the lag" "$(q "SELECT state || ':' || lag_entries FROM ledger.sinks_status WHERE name = 'lite'")" "paused:10"
q "SELECT ledger.resume_sink('lite')" >/dev/null
poll "a resumed sink catches up" "$caught_up" "t"

# ------------------------------------------------------------------ a locked SQLite file
(echo "BEGIN EXCLUSIVE; INSERT INTO ledger_entries_cursors VALUES ('lock-holder', '0');"; sleep 8; echo "ROLLBACK;") | sqlite3 "$WORK/export.db" &
LOCKER=$!
sleep 0.5
q "SELECT ledger.append('locked', '{\"n\": 1}')" >/dev/null
poll "a locked target puts the sink in error" "SELECT state FROM ledger.sinks_status WHERE name = 'lite'" "error" 20
expect "last_error says why" "$(q "SELECT last_error LIKE '%locked%' AND last_error_at IS NOT NULL FROM ledger.sinks_status WHERE name = 'lite'")" "t"
expect "health reports the sink in error" "$(q "SELECT ok FROM ledger.health() WHERE check_name = 'sinks'")" "f"
expect "appends are never blocked by a failing sink" "$(q "SELECT ledger.append('locked', '{\"n\": 2}') > 0")" "t"
wait $LOCKER
poll "the sink recovers once the lock is gone" "$caught_up" "t" 90
expect "still every entry exactly once in sqlite" \
	"$(sqlite_q "SELECT group_concat(id, ',') FROM (SELECT id FROM ledger_entries ORDER BY id)")" \
	"$(q "SELECT string_agg(id::text, ',' ORDER BY id) FROM ledger.entries")"

# ------------------------------------------------------------------ MongoDB goes away and comes back
if [ -n "$MONGO_PID" ]; then
	kill "$MONGO_PID"; wait "$MONGO_PID" 2>/dev/null; MONGO_PID=
	FLOOR=$(q "SELECT position FROM ledger.sinks_status WHERE name = 'mongo'")
	q "SELECT count(*) FROM ledger.append_batch('a-outage', (SELECT jsonb_agg(jsonb_build_object('payload', g)) FROM generate_series(1, 25) g))" >/dev/null
	poll "an unreachable MongoDB puts the sink in error" "SELECT state FROM ledger.sinks_status WHERE name = 'mongo'" "error" 20
	expect "the error does not leak the URI's password (none here) and names the target" \
		"$(q "SELECT last_error LIKE '%mongodb%' FROM ledger.sinks_status WHERE name = 'mongo'")" "t"
	start_mongo || fail "mongo test server restarts"
	poll "the sink resumes when MongoDB is back" "$caught_up" "t" 90
	# the restarted test server is empty: it must hold exactly what came after
	expect "entries of the outage arrive exactly once" "$(mongo_ids)" \
		"$(q "SELECT string_agg(e.id::text, ',' ORDER BY e.id) FROM ledger.entries e JOIN ledger.streams s USING (stream_id) WHERE s.name LIKE 'a%' AND e.id > $FLOOR")"
fi

# ------------------------------------------------------------------ kill -9 of the worker
MONGO_FLOOR=$(q "SELECT position FROM ledger.sinks_status WHERE name = 'mongo'")
MONGO_BEFORE=$(mongo_ids)
appender 150 a >/dev/null 2>&1 &
APP=$!
sleep 0.7
WPID=$(q "SELECT pid FROM pg_stat_activity WHERE datname = current_database() AND backend_type = 'ledger worker'")
kill -9 "$WPID"
wait $APP 2>/dev/null
wait_server || fail "server comes back after the worker's crash"
poll "the worker is back after kill -9" \
	"SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND backend_type = 'ledger worker'" "1" 60
# the crash may have cut the appender short: append the rest after recovery
appender 30 a
poll "sinks catch up after the crash" "$caught_up" "t" 90
expect "sqlite: every entry exactly once after kill -9" \
	"$(sqlite_q "SELECT group_concat(id, ',') FROM (SELECT id FROM ledger_entries ORDER BY id)")" \
	"$(q "SELECT string_agg(id::text, ',' ORDER BY id) FROM ledger.entries")"
expect "mongodb: every entry exactly once after kill -9" "$(mongo_ids)" \
	"$(q "SELECT string_agg(e.id::text, ',' ORDER BY e.id) FROM ledger.entries e JOIN ledger.streams s USING (stream_id) WHERE s.name LIKE 'a%' AND e.id > ${FLOOR:-0}")"

# ------------------------------------------------------------------ server restart
if [ -n "${PGDATA:-}" ]; then
	pg_ctl -D "$PGDATA" -m fast -w restart >/dev/null 2>&1 || fail "server restarts"
	wait_server
	poll "the worker is back after a restart" \
		"SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND backend_type = 'ledger worker'" "1" 60
	q "SELECT count(*) FROM ledger.append_batch('after-restart', (SELECT jsonb_agg(jsonb_build_object('payload', g)) FROM generate_series(1, 30) g))" >/dev/null
	poll "sinks continue after a restart" "$caught_up" "t" 60
	expect "sqlite: still exactly once after the restart" \
		"$(sqlite_q "SELECT count(*) || '/' || count(DISTINCT id) FROM ledger_entries")" \
		"$(q "SELECT count(*) || '/' || count(*) FROM ledger.entries")"
fi

# ------------------------------------------------------------------ retention
q "SELECT ledger.set_retention('ret-count', max_entries => 5)" >/dev/null
q "SELECT ledger.set_retention('ret-age*', max_age => '1 second')" >/dev/null
q "SELECT count(*) FROM (SELECT ledger.append('ret-count', jsonb_build_object('i', i)) FROM generate_series(1, 20) i) x" >/dev/null
q "SELECT count(*) FROM (SELECT ledger.append('ret-age-1', jsonb_build_object('i', i)) FROM generate_series(1, 3) i) x" >/dev/null
poll "max_entries keeps the newest 5" "SELECT count || ':' || first_seq || ':' || last_seq FROM ledger.stat('ret-count')" "5:16:20" 30
poll "max_age removes old entries" "SELECT count FROM ledger.stat('ret-age-1')" "0" 30
expect "retention never outruns an active sink: the export keeps all 20 (an archive)" \
	"$(sqlite_q "SELECT count(*) FROM ledger_entries WHERE stream = 'ret-count'")" "20"
expect "a newer append continues the seq" "$(q "SELECT (ledger.get('ret-count', 20)).seq")" "20"
q "SELECT ledger.set_retention('ret-count', NULL, NULL)" >/dev/null
q "SELECT ledger.append('ret-count', '{}')" >/dev/null
sleep 1.5
expect "clearing the limit stops retention" "$(q "SELECT count FROM ledger.stat('ret-count')")" "6"

# ------------------------------------------------------------------ bad arguments
err() { psql -X -q -At -d "$DB" -v VERBOSITY=sqlstate -c "\\set VERBOSITY sqlstate" -c "$1" 2>&1 | tail -1; }
expect "unknown kind is 22023" "$(err "SELECT ledger.create_sink('x', 'kafka', 'x')")" "ERROR:  22023"
expect "relative sqlite path is 22023" "$(err "SELECT ledger.create_sink('x', 'sqlite', 'relative.db')")" "ERROR:  22023"
expect "'..' in a sqlite path is 22023" "$(err "SELECT ledger.create_sink('x', 'sqlite', '/tmp/../etc/x.db')")" "ERROR:  22023"
expect "unknown sqlite option is 22023" "$(err "SELECT ledger.create_sink('x', 'sqlite', '/tmp/x.db', options => '{\"colour\": 1}')")" "ERROR:  22023"
expect "bad table option is 22023" "$(err "SELECT ledger.create_sink('x', 'sqlite', '/tmp/x.db', options => '{\"table\": \"a b\"}')")" "ERROR:  22023"
expect "bad MongoDB URI is 22023" "$(err "SELECT ledger.create_sink('x', 'mongodb', 'http://nope')")" "ERROR:  22023"
expect "MongoDB without a database is 22023" "$(err "SELECT ledger.create_sink('x', 'mongodb', 'mongodb://127.0.0.1:1/')")" "ERROR:  22023"
expect "bad streams pattern is 22023" "$(err "SELECT ledger.create_sink('x', 'sqlite', '/tmp/x.db', 'a*b')")" "ERROR:  22023"
expect "duplicate sink name is 42710" "$(err "SELECT ledger.create_sink('lite', 'sqlite', '$WORK/other.db')")" "ERROR:  42710"
expect "dropping a missing sink is 42704" "$(err "SELECT ledger.drop_sink('nope')")" "ERROR:  42704"
PW_ERR=$(psql -X -q -At -d "$DB" -c "SELECT ledger.create_sink('pw', 'mongodb', 'mongodb://u:hunter2@[bad', '{\"database\": \"d\"}')" 2>&1)
expect "a MongoDB password never shows in errors" "$(grep -c hunter2 <<<"$PW_ERR")" "0"
q "DROP ROLE IF EXISTS ledger_wt_admin; CREATE ROLE ledger_wt_admin IN ROLE ledger_admin" >/dev/null
expect "only pg_write_server_files may create sqlite sinks (42501)" \
	"$(err "SET ROLE ledger_wt_admin; SELECT ledger.create_sink('x', 'sqlite', '/tmp/x.db')")" "ERROR:  42501"
expect "ledger_admin reads sinks_status" "$(err "SET ROLE ledger_wt_admin; SELECT count(*) FROM ledger.sinks_status")" "2"
q "DROP ROLE ledger_wt_admin" >/dev/null
q "SELECT ledger.create_sink('secret', 'mongodb', 'mongodb://u:hunter2@127.0.0.1:9/?serverSelectionTimeoutMS=300', '*', '{\"database\": \"d\"}')" >/dev/null
poll "a failing sink with a password in its URI goes to error" "SELECT state FROM ledger.sinks_status WHERE name = 'secret'" "error" 20
expect "the password never shows in sinks_status" "$(q "SELECT count(*) FROM ledger.sinks_status WHERE target LIKE '%hunter2%' OR last_error LIKE '%hunter2%'")" "0"
q "SELECT ledger.drop_sink('secret')" >/dev/null

# ------------------------------------------------------------------ drop, and the extension's life cycle
q "SELECT ledger.drop_sink('mongo')" >/dev/null
expect "drop_sink removes the sink" "$(q "SELECT string_agg(name, ',') FROM ledger.sinks_status")" "lite"
q "DROP EXTENSION ledger" >/dev/null
poll "the worker leaves after DROP EXTENSION" "$WORKERS" "0" 30
q "CREATE EXTENSION ledger" >/dev/null
q "SELECT ledger.set_retention('x*', max_entries => 10)" >/dev/null
poll "a retention limit starts the worker, no restart needed" "$WORKERS" "1" 30
q "SELECT ledger.set_retention('x*', NULL, NULL)" >/dev/null
poll "with nothing left to do the worker leaves" "$WORKERS" "0" 30
expect "an idle database can be dropped without FORCE" \
	"$(psql -X -q -At -d postgres -c "DROP DATABASE $DB" 2>&1 && echo dropped)" "dropped"

finish
