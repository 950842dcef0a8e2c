#!/usr/bin/env bash
# test/sink_harness/run.sh
#   Builds the standalone sink harness (src/sink_*.c + harness.c) and checks
#   the sinks outside the server: JSON to BSON by value (read back by
#   libbson), redaction of every secret form, the hosts of a URI, the SQLite
#   mirror on a real file, the MongoDB mirror on FerretDB (a real
#   MongoDB-wire server, test/lib/ferretdb.sh; or the MongoDB named by
#   LEDGER_TEST_MONGODB_URI), and the capped time-outs against a port that
#   accepts and never answers.
#   Last line: "N passed, M failed"; exit status non-zero on any failure.
set -u

ROOT=$(cd "$(dirname "$0")/../.." && pwd)
. "$ROOT/test/lib/ferretdb.sh"
WORK=$(mktemp -d "${TMPDIR:-/tmp}/ledger-sink-test.XXXXXX")
chmod 755 "$WORK"
BLACKHOLE_PID=
PASS=0
FAIL=0

cleanup() {
	ledger_ferretdb_stop
	[ -n "$BLACKHOLE_PID" ] && kill "$BLACKHOLE_PID" 2>/dev/null
	rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

pass() { PASS=$((PASS + 1)); echo "ok - $1"; }
fail() { FAIL=$((FAIL + 1)); echo "not ok - $1"; }
expect() {	# expect DESC ACTUAL EXPECTED
	if [ "$2" == "$3" ]; then pass "$1"; else fail "$1"; echo "#   got:      $2"; echo "#   expected: $3"; fi
}
expect_no() {	# expect_no DESC ACTUAL SUBSTRING
	if [[ "$2" != *"$3"* ]]; then pass "$1"; else fail "$1"; echo "#   got: $2"; fi
}
run_scenario() {	# count the ok/not ok lines of a harness scenario
	local out rc
	out=$("$HARNESS" "$@" 2>&1)
	rc=$?
	printf '%s\n' "$out" | grep -E '^(ok|not ok) - '
	PASS=$((PASS + $(printf '%s\n' "$out" | grep -c '^ok - ')))
	FAIL=$((FAIL + $(printf '%s\n' "$out" | grep -c '^not ok - ')))
	if [ $rc -ne 0 ] && ! printf '%s\n' "$out" | grep -q '^not ok - '; then
		fail "harness $1 exited with $rc"
		printf '%s\n' "$out" | tail -5
	fi
}
finish() {
	echo "$PASS passed, $FAIL failed"
	[ "$FAIL" -eq 0 ] && [ "$PASS" -gt 0 ]
	exit $?
}

# ------------------------------------------------------------------ build
HARNESS=$WORK/harness
gcc -O1 -Wall -Wextra -Werror -Wno-unused-parameter -I"$ROOT/src" $(pkg-config --cflags libmongoc-1.0 sqlite3) \
	"$ROOT"/src/sink_sqlite.c "$ROOT"/src/sink_mongo.c "$ROOT"/src/sink_bson.c "$ROOT"/src/sink_redact.c \
	"$ROOT/test/sink_harness/harness.c" $(pkg-config --libs libmongoc-1.0 sqlite3) -o "$HARNESS" ||
	{ fail "harness builds"; finish; }

# ------------------------------------------------------------------ JSON to BSON, by value
bson() { "$HARNESS" bson "$1"; }
expect 'bson: {"$date": "x"} stays a plain field' "$(bson '{"$date": "x"}')" '{ "v" : { "$date" : "x" } }'
expect 'bson: {"$oid": "z"} stays a plain field' "$(bson '{"$oid": "z"}')" '{ "v" : { "$oid" : "z" } }'
expect 'bson: {"$numberLong": "1"} stays a plain field' "$(bson '{"$numberLong": "1"}')" '{ "v" : { "$numberLong" : "1" } }'
expect 'bson: 1e400 is Decimal128' "$(bson 1e400)" '{ "v" : { "$numberDecimal" : "1E+400" } }'
expect 'bson: 123456789012345678901234567890 is Decimal128' "$(bson 123456789012345678901234567890)" \
	'{ "v" : { "$numberDecimal" : "1.2345678901234567890123456789E+29" } }'
expect 'bson: 18446744073709551617 is Decimal128, not 1' "$(bson 18446744073709551617)" \
	'{ "v" : { "$numberDecimal" : "18446744073709551617" } }'
expect 'bson: 12345678901234567.5 is Decimal128, not rounded' "$(bson 12345678901234567.5)" \
	'{ "v" : { "$numberDecimal" : "12345678901234567.5" } }'
expect 'bson: -0.0 (jsonb has no negative zero) is int32 0' "$(bson -0.0)" '{ "v" : { "$numberInt" : "0" } }'
expect 'bson: 2.5 is a double' "$(bson 2.5)" '{ "v" : { "$numberDouble" : "2.5" } }'
expect 'bson: 1e20 is a double (exact)' "$(bson 1e20)" '{ "v" : { "$numberDouble" : "1e+20" } }'
expect 'bson: 2147483647 is int32' "$(bson 2147483647)" '{ "v" : { "$numberInt" : "2147483647" } }'
expect 'bson: 2147483648 is int64' "$(bson 2147483648)" '{ "v" : { "$numberLong" : "2147483648" } }'
expect 'bson: 9223372036854775808 is Decimal128' "$(bson 9223372036854775808)" '{ "v" : { "$numberDecimal" : "9223372036854775808" } }'
expect 'bson: -9223372036854775808 is int64' "$(bson -9223372036854775808)" '{ "v" : { "$numberLong" : "-9223372036854775808" } }'
expect 'bson: arrays and scalars by value' "$(bson '[1, [2, {"a": null}], true, "\u00e9\ud83d\ude00"]')" \
	'{ "v" : [ { "$numberInt" : "1" }, [ { "$numberInt" : "2" }, { "a" : null } ], true, "é😀" ] }'
expect 'bson: dotted and empty keys are data' "$(bson '{"a.b": 1, "": 2}')" \
	'{ "v" : { "a.b" : { "$numberInt" : "1" }, "" : { "$numberInt" : "2" } } }'
expect 'bson: a number Decimal128 cannot hold exactly is an error, not a rounded value' \
	"$(bson 1000000000000000000000000000000000000000001 | cut -c1-4)" "ERR "

# ------------------------------------------------------------------ redaction, every form
redact() { "$HARNESS" redact mongodb "$1"; }
expect "redact: userinfo password" "$(redact 'mongodb://u:hunter2@h:27017/db')" 'mongodb://u:***@h:27017/db'
expect "redact: a password holding ? / @ :" "$(redact 'mongodb://u:se?c/r@t:x@h/db?w=1')" 'mongodb://u:***@h/db?w=1'
expect "redact: a percent-encoded password" "$(redact 'mongodb://u:p%40ss@h/')" 'mongodb://u:***@h/'
expect "redact: tlsCertificateKeyFilePassword" "$(redact 'mongodb://h/?tlsCertificateKeyFilePassword=kfp&w=1')" \
	'mongodb://h/?tlsCertificateKeyFilePassword=***&w=1'
expect "redact: any option naming a key, secret or token, any case, ; too" \
	"$(redact 'mongodb://h/?TLSCERTIFICATEKEYFILE=/k.pem;mySecret=s&apiToken=t&appname=a')" \
	'mongodb://h/?TLSCERTIFICATEKEYFILE=***;mySecret=***&apiToken=***&appname=a'
expect "redact: authMechanismProperties values" \
	"$(redact 'mongodb://u:p@h/?authMechanism=MONGODB-AWS&authMechanismProperties=AWS_SESSION_TOKEN:tok,SERVICE_NAME:svc')" \
	'mongodb://u:***@h/?authMechanism=MONGODB-AWS&authMechanismProperties=AWS_SESSION_TOKEN:***,SERVICE_NAME:***'
expect "redact: an @ in an option value hides more, never less" "$(redact 'mongodb://h/?appname=a@b&password=x')" \
	'mongodb://h/?appname=a@b&password=***'
expect "redact: not a URI: hidden whole" "$(redact 'u:pw@host')" '***'
expect "redact: sqlite paths are shown" "$("$HARNESS" redact sqlite /srv/x.db)" '/srv/x.db'
SCRUBBED=$("$HARNESS" scrub mongodb 'mongodb://u:se?cret@h/?tlsCertificateKeyFilePassword=kfp%21' 'auth failed for se?cret, key kfp! or kfp%21')
expect_no "scrub: the password leaves driver messages" "$SCRUBBED" 'se?cret'
expect_no "scrub: decoded option secrets leave driver messages" "$SCRUBBED" 'kfp!'
expect_no "scrub: raw option secrets leave driver messages" "$SCRUBBED" 'kfp%21'

# ------------------------------------------------------------------ hosts (for ledger.sink_hosts)
expect "hosts: seed list" "$("$HARNESS" hosts 'mongodb://a.example:1,[::1]:2,b/')" 'srv=0 a.example:1 ::1:2 b:27017'
expect "hosts: unix socket" "$("$HARNESS" hosts 'mongodb://%2Ftmp%2Fm.sock/')" 'srv=0 /tmp/m.sock:27017[unix]'

# ------------------------------------------------------------------ SQLite mirror
run_scenario sqlite "$WORK/mirror.db"

# ------------------------------------------------------------------ MongoDB mirror
if [ -n "${LEDGER_TEST_MONGODB_URI:-}" ]; then
	MONGO_URI=$LEDGER_TEST_MONGODB_URI
	echo "# MongoDB: the server at LEDGER_TEST_MONGODB_URI"
elif ledger_ferretdb_start "$WORK"; then
	MONGO_URI=$FERRETDB_URI
	echo "# MongoDB: FerretDB on $MONGO_URI"
else
	fail "FerretDB starts"
	finish
fi
run_scenario mongo "$MONGO_URI" "ledger_harness_$$"

# ------------------------------------------------------------------ capped time-outs
BH_PORT=$(ledger_free_port)
/usr/bin/python3 -c "
import socket, time
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(('127.0.0.1', $BH_PORT)); s.listen(64)
print('listening', flush=True); time.sleep(120)" >"$WORK/blackhole.log" 2>&1 &
BLACKHOLE_PID=$!
for _ in $(seq 50); do grep -q listening "$WORK/blackhole.log" && break; sleep 0.1; done
OUT=$("$HARNESS" mongo-open "mongodb://127.0.0.1:$BH_PORT/?serverSelectionTimeoutMS=90000&connectTimeoutMS=90000&socketTimeoutMS=0" '{"database": "d"}')
MS=$(awk '{print $2}' <<<"$OUT")
if [ "${OUT:0:3}" = ERR ] && [ "${MS:-99999}" -lt 6000 ]; then
	pass "a server that never answers fails within the time-out caps, whatever the URI says (${MS} ms)"
else
	fail "a server that never answers fails within the time-out caps"; echo "#   got: $OUT"
fi

finish
