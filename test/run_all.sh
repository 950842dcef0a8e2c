#!/usr/bin/env bash
# test/run_all.sh — every test of ledger, from a fresh Debian 12 (as root it
# installs what is missing): build with -Werror, install, then
#   1. pg_regress   (sql/*.sql against expected/*.out, own preloaded server)
#   2. isolation    (test/specs/*.spec, own preloaded server)
#   3. TAP          (test/t/*.pl, PostgreSQL::Test::Cluster servers)
#   4. shell tests  (test/*.sh against one preloaded server; sink harness)
# and ends with one line "summary: N passed, M failed".
set -uo pipefail

SRC=$(cd "$(dirname "$0")/.." && pwd)
. "$SRC/test/lib/common.sh"

ledger_install_deps || { echo "summary: 0 passed, 1 failed"; exit 1; }
ledger_build_install "$SRC" || { echo "summary: 0 passed, 1 failed"; exit 1; }

# The sink tests build their Go peers (FerretDB, ledger-check) themselves,
# through the Go module proxy, into the test user's cache (test/lib/ferretdb.sh).

# Tests run as a non-root user on a copy of the tree it may write to.
WORK=$(mktemp -d /tmp/ledger-tests.XXXXXX)
cp -a "$SRC/." "$WORK/tree"
rm -rf "$WORK/tree/.git"
ledger_write_conf "$WORK/ledger.conf" "$SRC"
cp "$WORK/ledger.conf" "$WORK/tree/test/ledger.conf"
[ "$(id -u)" = 0 ] && chown -R "$(ledger_test_user)" "$WORK"

PASSED=0
FAILED=0
FAILURES=()
record() {	# record NAME ok|fail
	if [ "$2" = ok ]; then PASSED=$((PASSED + 1)); else FAILED=$((FAILED + 1)); FAILURES+=("$1"); fi
}

# Each suite's per-test lines count as tests.
count_suite() {	# count_suite SUITE LOGFILE
	local line name
	while IFS= read -r line; do
		name=$(sed -E 's/^(test|ok|not ok) +[0-9]* *-? *([^ ]+).*/\2/' <<<"$line")
		if [[ "$line" =~ \.\.\.\ ok|^ok ]]; then record "$1/$name" ok; else record "$1/$name" fail; fi
	done < <(grep -E '^(test |ok |not ok )|^     [a-z_]+ +\.\.\. ' "$2" | grep -E '\.\.\. (ok|FAILED|failed)|^(ok|not ok) ')
}

log "pg_regress"
as_test_user make -C "$WORK/tree" installcheck ISOLATION= TAP_TESTS= PG_CFLAGS="$LEDGER_PG_CFLAGS" >"$WORK/regress.log" 2>&1
REGRESS_RC=$?
count_suite regress "$WORK/regress.log"
grep -E '\.\.\. (ok|FAILED)' "$WORK/regress.log"
if [ $REGRESS_RC != 0 ]; then
	[ -f "$WORK/tree/regression.diffs" ] && head -300 "$WORK/tree/regression.diffs"
	tail -50 "$WORK/tree/log/postmaster.log" 2>/dev/null
	grep -q '\.\.\. ' "$WORK/regress.log" || { cat "$WORK/regress.log"; record regress/run fail; }
fi

if ls "$SRC"/test/specs/*.spec >/dev/null 2>&1; then
	log "isolation"
	as_test_user make -C "$WORK/tree" installcheck REGRESS= TAP_TESTS= >"$WORK/isolation.log" 2>&1
	ISO_RC=$?
	count_suite isolation "$WORK/isolation.log"
	grep -E '\.\.\. (ok|FAILED)' "$WORK/isolation.log"
	if [ $ISO_RC != 0 ]; then
		[ -f "$WORK/tree/output_iso/regression.diffs" ] && head -300 "$WORK/tree/output_iso/regression.diffs"
		grep -q '\.\.\. ' "$WORK/isolation.log" || { cat "$WORK/isolation.log"; record isolation/run fail; }
	fi
fi

if ls "$SRC"/test/t/*.pl >/dev/null 2>&1; then
	log "TAP"
	as_test_user make -C "$WORK/tree" installcheck REGRESS= ISOLATION= >"$WORK/tap.log" 2>&1
	TAP_RC=$?
	while IFS= read -r f; do
		base=$(basename "$f")
		if grep -qE "^test/t/$base \.+ ok|^test/t/$base \.\. ok" "$WORK/tap.log"; then record "tap/$base" ok; else record "tap/$base" fail; fi
	done < <(ls "$SRC"/test/t/*.pl)
	grep -E '^test/t/' "$WORK/tap.log" | sed 's/^/    /'
	if [ $TAP_RC != 0 ]; then
		grep -E '^not ok|^#' "$WORK/tap.log" | head -80
		for l in "$WORK"/tree/tmp_check/log/*.log; do [ -f "$l" ] && { echo "--- $l"; tail -40 "$l"; }; done
	fi
	grep -E '^(Files=|Result:)' "$WORK/tap.log"
fi

log "shell tests"
if ! ledger_start_cluster "$WORK/cluster" "$WORK/ledger.conf"; then
	record shell/cluster fail
else
	as_test_user psql -X -q -c "CREATE EXTENSION ledger" >/dev/null
	for t in "$SRC"/test/*.sh; do
		name=$(basename "$t" .sh)
		# compile_versions needs other versions' headers (README, Tests)
		case $name in run_all|demo|compile_versions) continue ;; esac
		as_test_user env PGHOST="$PGHOST" PGPORT="$PGPORT" PGUSER=postgres PGDATABASE=postgres \
			PGDATA="$WORK/cluster/data" LEDGER_SRC="$WORK/tree" bash "$WORK/tree/test/$name.sh" >"$WORK/$name.log" 2>&1
		rc=$?
		last=$(tail -1 "$WORK/$name.log")
		echo "    $name: $last"
		if [ $rc = 0 ]; then record "shell/$name" ok; else record "shell/$name" fail; tail -40 "$WORK/$name.log"; fi
	done
	ledger_stop_cluster "$WORK/cluster"
	[ $FAILED -gt 0 ] && tail -30 "$WORK/cluster/server.log"
fi

log "sink harness"
bash "$SRC/test/sink_harness/run.sh" >"$WORK/sinks.log" 2>&1
rc=$?
echo "    sinks: $(tail -1 "$WORK/sinks.log")"
if [ $rc = 0 ]; then record shell/sink_harness ok; else record shell/sink_harness fail; grep -E '^not ok|^#' "$WORK/sinks.log" | head -40; fi

log "version agreement"
# Every extension of the Makefile (ledger, ledger_router): its control file,
# its script and its META.json "provides" entry carry EXTVERSION, as does
# the distribution itself.
EXTVERSION=$(sed -n 's/^EXTVERSION *= *//p' "$SRC/Makefile")
EXTENSIONS=$(sed -n 's/^EXTENSION *= *//p' "$SRC/Makefile")
version_ok=yes
/usr/bin/python3 -c 'import json, sys; m = json.load(open(sys.argv[1])); sys.exit(m["version"] != sys.argv[2])' \
	"$SRC/META.json" "$EXTVERSION" || { version_ok=no; echo "META.json's version is not $EXTVERSION"; }
for ext in $EXTENSIONS; do
	if ! grep -q "^default_version = '$EXTVERSION'" "$SRC/$ext.control" ||
	   [ ! -f "$SRC/sql/$ext--$EXTVERSION.sql" ] ||
	   ! /usr/bin/python3 -c 'import json, sys; m = json.load(open(sys.argv[1])); p = m["provides"][sys.argv[2]]; sys.exit(p["version"] != sys.argv[3] or p["file"] != "sql/%s--%s.sql" % (sys.argv[2], sys.argv[3]))' \
			"$SRC/META.json" "$ext" "$EXTVERSION" 2>/dev/null; then
		version_ok=no
		echo "$ext.control, sql/$ext--$EXTVERSION.sql or META.json's provides.$ext disagree with Makefile EXTVERSION $EXTVERSION"
	fi
done
if [ $version_ok = yes ]; then record version ok; else record version fail; fi

if [ ${#FAILURES[@]} -gt 0 ]; then
	echo "failed: ${FAILURES[*]}"
fi
[ "${KEEP_TEST_DIR:-}" ] && echo "kept $WORK" || rm -rf "$WORK"
echo "summary: $PASSED passed, $FAILED failed"
[ $FAILED = 0 ]
