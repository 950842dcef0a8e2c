#!/usr/bin/env bash
# test/sink_harness/run.sh
#   Builds the standalone sink harness (src/sink_sqlite.c, src/sink_mongo.c,
#   test/sink_harness/harness.c), starts the in-memory MongoDB test server
#   (test/mongo/server.js) and checks both sinks end to end: the SQLite file
#   with the sqlite3 CLI, the MongoDB documents and indexes through libmongoc.
#   Last line: "N passed, M failed"; exit status non-zero on any failure.
set -u

ROOT=$(cd "$(dirname "$0")/../.." && pwd)
WORK=$(mktemp -d "${TMPDIR:-/tmp}/ledger-sink-test.XXXXXX")
SERVER_PID=
PASS=0
FAIL=0

cleanup() {
    if [ -n "$SERVER_PID" ] && kill -0 "$SERVER_PID" 2>/dev/null; then
        kill -TERM "$SERVER_PID" 2>/dev/null
        wait "$SERVER_PID" 2>/dev/null
    fi
    rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

pass() { PASS=$((PASS + 1)); echo "ok - $1"; }
fail() { FAIL=$((FAIL + 1)); echo "not ok - $1"; }

# expect DESC ACTUAL EXPECTED
expect() {
    if [ "$2" == "$3" ]; then
        pass "$1"
    else
        fail "$1"
        echo "#   got:      $(printf '%s' "$2" | sed '2,$s/^/#             /')"
        echo "#   expected: $(printf '%s' "$3" | sed '2,$s/^/#             /')"
    fi
}

# expect_match DESC ACTUAL REGEX
expect_match() {
    if [[ "$2" =~ $3 ]]; then
        pass "$1"
    else
        fail "$1"
        echo "#   got: $2"
        echo "#   not matching: $3"
    fi
}

# expect_no DESC ACTUAL SUBSTRING
expect_no() {
    if [[ "$2" != *"$3"* ]]; then
        pass "$1"
    else
        fail "$1"
        echo "#   got: $2"
    fi
}

# run_harness ARGS...: run a harness scenario, count its ok/not ok lines
run_harness() {
    local out rc
    out=$("$HARNESS" "$@" 2>&1)
    rc=$?
    printf '%s\n' "$out"
    PASS=$((PASS + $(printf '%s\n' "$out" | grep -c '^ok - ')))
    FAIL=$((FAIL + $(printf '%s\n' "$out" | grep -c '^not ok - ')))
    if [ $rc -ne 0 ] && ! printf '%s\n' "$out" | grep -q '^not ok - '; then
        fail "harness $1 exited with $rc"
    fi
}

finish() {
    echo "$PASS passed, $FAIL failed"
    [ "$FAIL" -eq 0 ] && [ "$PASS" -gt 0 ]
    exit $?
}

# ------------------------------------------------------------------ build
HARNESS=$WORK/harness
CFLAGS_STRICT="-g -O1 -Wall -Wextra -Werror -Wno-unused-parameter"
if gcc $CFLAGS_STRICT -I"$ROOT/src" $(pkg-config --cflags libmongoc-1.0 sqlite3) \
        "$ROOT/src/sink_sqlite.c" "$ROOT/src/sink_mongo.c" \
        "$ROOT/test/sink_harness/harness.c" \
        $(pkg-config --libs libmongoc-1.0 sqlite3) -o "$HARNESS"; then
    pass "harness and sinks build with -Wall -Wextra -Werror"
else
    fail "harness and sinks build with -Wall -Wextra -Werror"
    finish
fi
command -v sqlite3 >/dev/null || { fail "sqlite3 CLI is installed"; finish; }

# ------------------------------------------------------------------ sqlite
echo "# --- sqlite"
DB=$WORK/export.db
run_harness sqlite "$DB"

q() { sqlite3 -batch -noheader "$DB" "$@"; }

expect "sqlite: journal mode is WAL" "$(q 'PRAGMA journal_mode')" "wal"

expect "sqlite: columns (name|type|notnull|default|pk)" \
    "$(q "SELECT name||'|'||type||'|'||\"notnull\"||'|'||coalesce(dflt_value,'')||'|'||pk FROM pragma_table_info('ledger_entries') ORDER BY cid")" \
"id|INTEGER|0||1
stream|TEXT|1||0
payload|BLOB|1||0
order_key|TEXT|1|''|0
dedup_key|TEXT|1|''|0
schema_version|INTEGER|1|1|0
metadata|TEXT|0||0
tags|TEXT|1|'[]'|0
annotations|TEXT|0||0
source_id|TEXT|1|''|0
created_at|TEXT|1|strftime('%Y-%m-%dT%H:%M:%f','now')|0
updated_at|TEXT|0||0
seq|INTEGER|0||0"

expect_match "sqlite: id is INTEGER PRIMARY KEY AUTOINCREMENT" \
    "$(q "SELECT sql FROM sqlite_master WHERE name='ledger_entries'")" \
    "id +INTEGER PRIMARY KEY AUTOINCREMENT"

expect "sqlite: indexes (name|unique|partial)" \
    "$(q "SELECT name||'|'||\"unique\"||'|'||partial FROM pragma_index_list('ledger_entries') WHERE origin='c' ORDER BY name")" \
"idx_ledger_entries_dedup|1|1
idx_ledger_entries_source|1|1
idx_ledger_entries_stream|0|0
idx_ledger_entries_stream_id|0|0
idx_ledger_entries_stream_order|0|0
idx_ledger_entries_tags|0|0"

idxcols() { q "SELECT group_concat(name, ',') FROM (SELECT name FROM pragma_index_info('$1') ORDER BY seqno)"; }
expect "sqlite: idx_ledger_entries_stream_id columns" "$(idxcols idx_ledger_entries_stream_id)" "stream,id"
expect "sqlite: idx_ledger_entries_stream columns" "$(idxcols idx_ledger_entries_stream)" "stream"
expect "sqlite: idx_ledger_entries_stream_order columns" "$(idxcols idx_ledger_entries_stream_order)" "stream,order_key,id"
expect "sqlite: idx_ledger_entries_dedup columns" "$(idxcols idx_ledger_entries_dedup)" "stream,dedup_key"
expect "sqlite: idx_ledger_entries_source columns" "$(idxcols idx_ledger_entries_source)" "source_id"
expect "sqlite: idx_ledger_entries_tags columns" "$(idxcols idx_ledger_entries_tags)" "stream,tags"
SCHEMA=$(q ".schema")
expect_match "sqlite: dedup index is partial on dedup_key != ''" "$SCHEMA" \
    "CREATE UNIQUE INDEX idx_ledger_entries_dedup ON ledger_entries\(stream, dedup_key\) WHERE dedup_key != ''"
expect_match "sqlite: source index is partial on source_id != ''" "$SCHEMA" \
    "CREATE UNIQUE INDEX idx_ledger_entries_source ON ledger_entries\(source_id\) WHERE source_id != ''"
expect_match "sqlite: cursors table" "$SCHEMA" \
    "CREATE TABLE ledger_entries_cursors \(name TEXT NOT NULL PRIMARY KEY, cursor TEXT NOT NULL\)"
expect_no "sqlite: no DATETIME/TIMESTAMP column types" "$(q "SELECT group_concat(type) FROM pragma_table_info('ledger_entries')")" "TIME"

expect "sqlite: row count (6 + 200, re-sent batches added nothing)" "$(q 'SELECT count(*) FROM ledger_entries')" "206"
expect "sqlite: cursor row" "$(q 'SELECT name||"|"||cursor FROM ledger_entries_cursors')" "ledger_sink:s1|299"
expect "sqlite: rows 1..9" \
    "$(q "SELECT id||'|'||stream||'|'||typeof(payload)||'|'||CAST(payload AS TEXT)||'|'||order_key||'|'||dedup_key||'|'||schema_version||'|'||coalesce(metadata,'NULL')||'|'||tags||'|'||coalesce(annotations,'NULL')||'|'||source_id||'|'||created_at||'|'||coalesce(updated_at,'NULL')||'|'||seq FROM ledger_entries WHERE id < 100 ORDER BY id")" \
'1|orders|blob|{"a": 1, "b": [true, null, 2.5], "s": "x\u00e9"}|||1|NULL|[]|NULL|1|2023-11-14T22:13:20.123|NULL|1
2|orders|blob|[1, "two", {"three": 3}]|ok1|d1|2|{"k":"v","k2":"v2"}|["t1","t2"]|{"note":"n"}|2|2023-11-14T22:13:20.124|2023-11-14T22:13:25.124|2
3|users|blob|42|||1|NULL|["solo"]|NULL|3|2023-11-14T22:13:20.125|NULL|1
5|orders|blob|"just a string"||d2|1|NULL|[]|NULL|5|2023-11-14T22:13:20.126|NULL|3
7|users|blob|null|||1|NULL|[]|NULL|7|2023-11-14T22:13:20.127|NULL|2
9|orders|blob|{"big": 9000000000}|ok1||3|NULL|[]|NULL|9|2023-11-14T22:13:20.128|NULL|4'
expect "sqlite: every created_at/updated_at is YYYY-MM-DDTHH:MM:SS.fff" \
    "$(q "SELECT count(*) FROM ledger_entries WHERE created_at NOT GLOB '[0-9][0-9][0-9][0-9]-[0-9][0-9]-[0-9][0-9]T[0-9][0-9]:[0-9][0-9]:[0-9][0-9].[0-9][0-9][0-9]' OR (updated_at IS NOT NULL AND updated_at NOT GLOB '[0-9][0-9][0-9][0-9]-[0-9][0-9]-[0-9][0-9]T[0-9][0-9]:[0-9][0-9]:[0-9][0-9].[0-9][0-9][0-9]')")" "0"
# The Go library's Read query with its tag / metadata / annotation filters.
expect "sqlite: the Go library's Read query and json_each filters" \
    "$(q "SELECT id, stream, order_key, dedup_key, schema_version, metadata, tags, annotations, created_at, updated_at FROM ledger_entries WHERE stream = 'orders' AND id > 1 AND EXISTS (SELECT 1 FROM json_each(tags) WHERE json_each.value = 't2') AND EXISTS (SELECT 1 FROM json_each(metadata) WHERE json_each.key = 'k' AND json_each.value = 'v') AND EXISTS (SELECT 1 FROM json_each(annotations) WHERE json_each.key = 'note' AND json_each.value = 'n') ORDER BY id ASC LIMIT 10")" \
    '2|orders|ok1|d1|2|{"k":"v","k2":"v2"}|["t1","t2"]|{"note":"n"}|2023-11-14T22:13:20.124|2023-11-14T22:13:25.124'

# The Go library's New() on our file: its DDL and migration are no-ops.
GO_NEW="CREATE TABLE IF NOT EXISTS ledger_entries (id INTEGER PRIMARY KEY AUTOINCREMENT, stream TEXT NOT NULL, payload BLOB NOT NULL, order_key TEXT NOT NULL DEFAULT '', dedup_key TEXT NOT NULL DEFAULT '', schema_version INTEGER NOT NULL DEFAULT 1, metadata TEXT, tags TEXT NOT NULL DEFAULT '[]', annotations TEXT, source_id TEXT NOT NULL DEFAULT '', created_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%f','now')), updated_at TEXT);
CREATE INDEX IF NOT EXISTS idx_ledger_entries_stream_id ON ledger_entries(stream, id);
CREATE INDEX IF NOT EXISTS idx_ledger_entries_stream ON ledger_entries(stream);
CREATE INDEX IF NOT EXISTS idx_ledger_entries_stream_order ON ledger_entries(stream, order_key, id);
CREATE UNIQUE INDEX IF NOT EXISTS idx_ledger_entries_dedup ON ledger_entries(stream, dedup_key) WHERE dedup_key != '';
CREATE UNIQUE INDEX IF NOT EXISTS idx_ledger_entries_source ON ledger_entries(source_id) WHERE source_id != '';
CREATE TABLE IF NOT EXISTS ledger_entries_cursors (name TEXT NOT NULL PRIMARY KEY, cursor TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS idx_ledger_entries_tags ON ledger_entries(stream, tags);"
expect "sqlite: the Go library's New() DDL runs cleanly on our file" "$(q "$GO_NEW" 2>&1)" ""
expect_match "sqlite: the Go library's source_id migration sees the column" \
    "$(q "ALTER TABLE ledger_entries ADD COLUMN source_id TEXT NOT NULL DEFAULT ''" 2>&1)" "duplicate column name"
# A Go Append into our file continues after our ids.
expect "sqlite: a Go-style Append gets the next id" \
    "$(q "INSERT OR IGNORE INTO ledger_entries (stream, payload, order_key, dedup_key, schema_version, metadata, tags, source_id) VALUES ('go', X'7B7D', '', '', 1, NULL, '[]', ''); SELECT max(id) FROM ledger_entries")" "300"

# A table made by the Go library itself (no seq column) is accepted; seq is added.
GODB=$WORK/go.db
sqlite3 "$GODB" "$GO_NEW"
expect "sqlite: open a Go-made file" "$("$HARNESS" sqlite-open "$GODB" '{}')" "OK"
expect "sqlite: seq column added to a Go-made table" \
    "$(sqlite3 "$GODB" "SELECT count(*) FROM pragma_table_info('ledger_entries') WHERE name='seq'")" "1"

# option table
TDB=$WORK/custom.db
expect "sqlite: open with option table" "$("$HARNESS" sqlite-open "$TDB" '{"table": "my_log"}')" "OK"
expect "sqlite: custom table, cursor table and indexes" \
    "$(sqlite3 "$TDB" "SELECT group_concat(name, ' ') FROM (SELECT name FROM sqlite_master WHERE type IN ('table','index') AND name LIKE '%my_log%' AND name NOT LIKE 'sqlite_%' ORDER BY name)")" \
    "idx_my_log_dedup idx_my_log_source idx_my_log_stream idx_my_log_stream_id idx_my_log_stream_order idx_my_log_tags my_log my_log_cursors"

# an incompatible existing table
BADDB=$WORK/bad.db
sqlite3 "$BADDB" "CREATE TABLE ledger_entries (id INTEGER PRIMARY KEY, stream TEXT, body TEXT)"
expect_match "sqlite: existing table without the columns is refused" \
    "$("$HARNESS" sqlite-open "$BADDB" '{}')" \
    "^ERR sqlite sink \"s1\": existing table \"ledger_entries\" in \".*/bad.db\" has no column \"payload\""

expect_match "sqlite: unopenable path fails with the sqlite message" \
    "$("$HARNESS" sqlite-open "$WORK/no/such/dir/x.db" '{}')" \
    "^ERR sqlite sink \"s1\": cannot open \".*/no/such/dir/x.db\": unable to open database file"

run_harness sqlite-locked "$WORK/locked.db"

# check()
chk() { "$HARNESS" check "$@"; }
expect "sqlite check: absolute path, no options" "$(chk sqlite /tmp/x.db '{}')" "OK"
expect "sqlite check: table option" "$(chk sqlite /tmp/x.db '{"table":"_t9"}')" "OK"
expect "sqlite check: relative path" "$(chk sqlite x.db '{}')" \
    'ERR sqlite sink: target "x.db" is not an absolute file path'
expect "sqlite check: .. component" "$(chk sqlite /tmp/../etc/x.db '{}')" \
    'ERR sqlite sink: target "/tmp/../etc/x.db" must not contain a ".." path component'
expect "sqlite check: trailing .." "$(chk sqlite /tmp/a/.. '{}')" \
    'ERR sqlite sink: target "/tmp/a/.." must not contain a ".." path component'
expect "sqlite check: a name with dots is fine" "$(chk sqlite /tmp/a..b.db '{}')" "OK"
expect "sqlite check: empty path" "$(chk sqlite '' '{}')" \
    'ERR sqlite sink: target must be an absolute file path, got an empty string'
expect "sqlite check: unknown option" "$(chk sqlite /tmp/x.db '{"table":"t","colour":"red"}')" \
    'ERR sqlite sink: unknown option "colour" (the only option is "table")'
expect_match "sqlite check: bad table name" "$(chk sqlite /tmp/x.db '{"table":"bad-name"}')" \
    '^ERR sqlite sink: option "table" value "bad-name" is not a valid table name'
expect_match "sqlite check: table name starting with a digit" "$(chk sqlite /tmp/x.db '{"table":"1t"}')" \
    '^ERR sqlite sink: option "table" value "1t" is not a valid table name'
expect_match "sqlite check: table name of 64 characters" \
    "$(chk sqlite /tmp/x.db "{\"table\":\"$(printf 'a%.0s' $(seq 64))\"}")" '^ERR .*not a valid table name'
expect "sqlite check: table name of 63 characters" \
    "$(chk sqlite /tmp/x.db "{\"table\":\"$(printf 'a%.0s' $(seq 63))\"}")" "OK"
expect_match "sqlite check: non-string table" "$(chk sqlite /tmp/x.db '{"table":5}')" \
    '^ERR sqlite sink: option "table" value "5" is not a valid table name'
expect "sqlite check: options not an object" "$(chk sqlite /tmp/x.db '[1]')" \
    'ERR sqlite sink: options must be a JSON object, got "[1]"'
expect "sqlite check: creates nothing" "$(ls /tmp/x.db 2>/dev/null)" ""

# ------------------------------------------------------------------ mongodb
echo "# --- mongodb"
if [ ! -d "$ROOT/test/mongo/node_modules/bson" ]; then
    (cd "$ROOT/test/mongo" && npm ci --no-audit --no-fund --loglevel=error) >"$WORK/npm.log" 2>&1 ||
        { cat "$WORK/npm.log"; fail "npm ci in test/mongo"; finish; }
fi
node "$ROOT/test/mongo/server.js" 0 >"$WORK/server.out" 2>"$WORK/server.err" &
SERVER_PID=$!
PORT=
for _ in $(seq 100); do
    PORT=$(awk '/^listening /{print $2}' "$WORK/server.out")
    [ -n "$PORT" ] && break
    kill -0 "$SERVER_PID" 2>/dev/null || break
    sleep 0.1
done
if [ -z "$PORT" ]; then
    cat "$WORK/server.err"
    fail "mongo test server starts"
    finish
fi
pass "mongo test server listens on $PORT"

URI="mongodb://127.0.0.1:$PORT/"
run_harness mongo "$URI" ledgertest

expect "mongodb: open with the database in the URI" \
    "$("$HARNESS" mongo-open "mongodb://127.0.0.1:$PORT/fromuri" '{"collection":"other"}')" "OK"

# unreachable server: fails fast, message redacted
OUT=$("$HARNESS" mongo-open "mongodb://alice:s3cr%40tPw@127.0.0.1:1/db" '{}')
expect_match "mongodb: unreachable server fails with a redacted message" "$OUT" \
    '^ERR [0-9]+ mongodb sink "m1": cannot create indexes on "mongodb://alice:\*\*\*\*@127.0.0.1:1/db"'
expect_no "mongodb: no password (raw) in the message" "$OUT" "s3cr%40tPw"
expect_no "mongodb: no password (decoded) in the message" "$OUT" "s3cr@tPw"
MS=$(printf '%s' "$OUT" | awk '{print $2}')
if [ "${MS:-99999}" -lt 5000 ]; then pass "mongodb: unreachable server fails in ${MS} ms (< 5 s)"; else fail "mongodb: unreachable server fails fast (took ${MS} ms)"; fi
OUT=$("$HARNESS" mongo-open "mongodb://a:b@127.0.0.1:1/x" '{}')
expect_match "mongodb: a one-letter password does not mangle the message" "$OUT" \
    '^ERR [0-9]+ mongodb sink "m1": cannot create indexes on "mongodb://a:\*\*\*\*@127.0.0.1:1/x" \(database "x", collection "ledger_entries"\): '
OUT=$("$HARNESS" mongo-open "mongodb://bob:hunter2hunter2@10.255.255.1:27017/db?connectTimeoutMS=500" '{}')
MS=$(printf '%s' "$OUT" | awk '{print $2}')
expect_no "mongodb: no password for a non-routable host" "$OUT" "hunter2"
if [ "${MS:-99999}" -lt 5000 ]; then pass "mongodb: non-routable host fails in ${MS} ms (< 5 s)"; else fail "mongodb: non-routable host fails fast (took ${MS} ms)"; fi

# check()
expect "mongodb check: database from options" "$(chk mongodb "mongodb://h:27017" '{"database":"d"}')" "OK"
expect "mongodb check: database from URI" "$(chk mongodb "mongodb://u:p@h:27017/d?authSource=admin" '{}')" "OK"
expect "mongodb check: no database" "$(chk mongodb "mongodb://u:pw123@h:27017/" '{}')" \
    'ERR mongodb sink: no database: URI "mongodb://u:****@h:27017/" names none and option "database" is not set'
expect "mongodb check: unknown option" "$(chk mongodb "mongodb://h/d" '{"database":"d","colection":"x"}')" \
    'ERR mongodb sink: unknown option "colection" (options are "database" and "collection")'
expect_match "mongodb check: bad collection" "$(chk mongodb "mongodb://h/d" '{"collection":"a.b"}')" \
    '^ERR mongodb sink: option "collection" value "a.b" is not a valid collection name'
expect_match "mongodb check: bad database" "$(chk mongodb "mongodb://h/" '{"database":"a b"}')" \
    '^ERR mongodb sink: database name "a b" is invalid'
expect "mongodb check: non-string option" "$(chk mongodb "mongodb://h/d" '{"collection":1}')" \
    'ERR mongodb sink: option "collection" must be a string'
expect "mongodb check: options not an object" "$(chk mongodb "mongodb://h/d" '"x"')" \
    'ERR mongodb sink: options must be a JSON object, got ""x""'
OUT=$(chk mongodb "mongodb://carol:T0pS3cret@h:99999/d" '{}' 2>/dev/null)
expect "mongodb check: invalid port is refused" "$OUT" 'ERR mongodb sink: invalid MongoDB URI "mongodb://carol:****@h:99999/d": Invalid host string in URI'
OUT=$(chk mongodb "mongodb://carol:T0p:S3cret@h/d" '{}' 2>/dev/null)
expect_match "mongodb check: unescaped : in the password is refused" "$OUT" '^ERR mongodb sink: invalid MongoDB URI "mongodb://carol:\*\*\*\*@h/d"'
expect_no "mongodb check: ... and the message has no password" "$OUT" "S3cret"
OUT=$(chk mongodb "mongodb://carol:T0p%zzS3cret@h/d" '{}' 2>/dev/null)
expect "mongodb check: bad escape in the password" "$OUT" 'ERR mongodb sink: invalid MongoDB URI "mongodb://carol:****@h/d": Incorrect URI escapes in password'
OUT=$(chk mongodb "mongodb://carol:T0pS3cret@h/d?replicaSet=" '{}' 2>/dev/null)
expect_match "mongodb check: invalid URI option value is refused" "$OUT" '^ERR mongodb sink: invalid MongoDB URI "mongodb://carol:\*\*\*\*@h/d\?replicaSet=": '
expect_no "mongodb check: ... and the message has no password" "$OUT" "T0pS3cret"
OUT=$(chk mongodb "http://dave:Pa55word@h/d" '{}')
expect_match "mongodb check: wrong scheme is refused" "$OUT" '^ERR mongodb sink: invalid MongoDB URI "http://dave:\*\*\*\*@h/d"'
expect_no "mongodb check: wrong scheme message has no password" "$OUT" "Pa55word"
expect_match "mongodb check: empty target" "$(chk mongodb '' '{}')" '^ERR mongodb sink: target must be a MongoDB URI'

# redaction
red() { "$HARNESS" redact "$@"; }
expect "redact: password replaced" "$(red mongodb 'mongodb://user:pass@host:27017/db?authSource=admin')" \
    'mongodb://user:****@host:27017/db?authSource=admin'
expect "redact: escaped password with @ and :" "$(red mongodb 'mongodb://user:p%40ss:w@h1,h2/db')" \
    'mongodb://user:****@h1,h2/db'
expect "redact: user without password unchanged" "$(red mongodb 'mongodb://user@host/db')" 'mongodb://user@host/db'
expect "redact: no credentials unchanged" "$(red mongodb 'mongodb://host/db?w=1')" 'mongodb://host/db?w=1'
expect "redact: srv" "$(red mongodb 'mongodb+srv://u:secret@cluster.example.net/db')" 'mongodb+srv://u:****@cluster.example.net/db'
expect "redact: unescaped / in password" "$(red mongodb 'mongodb://u:se/cr@t@host/db')" 'mongodb://u:****@host/db'
expect "redact: empty password" "$(red mongodb 'mongodb://u:@host/db')" 'mongodb://u:****@host/db'
expect "redact: unknown kind is redacted like a URI" "$(red other 'x://u:pw@h')" 'x://u:****@h'
expect "redact: sqlite path unchanged" "$(red sqlite '/var/lib/x:y@z.db')" '/var/lib/x:y@z.db'

finish
