#!/usr/bin/env bash
# test/compile_versions.sh — compile every src/*.c of ledger against the headers
# of another PostgreSQL major version (16, 17, ...) than the one installed, so
# that no version is ruled out without a server of that version to build on.
# Not part of test/run_all.sh: a CI machine has no second PostgreSQL's headers.
#
#   bash test/compile_versions.sh PATH [PATH...]
#
# PATH is either
#   - a PostgreSQL source tree (git archive REL_17_STABLE of postgres/postgres,
#     or a release tarball); unless it is configured already, the script runs
#       ./configure --without-readline --without-zlib --without-icu --without-llvm
#       make -C src/backend generated-headers
#     in it (src/include then has pg_config.h, fmgroids.h, errcodes.h,
#     nodetags.h, catalog/*_d.h; 17's also utils/wait_event_types.h), or
#   - an installed server include directory (pg_config --includedir-server),
#     e.g. one unpacked from a postgresql-server-dev-NN package with dpkg -x.
#
# Each file is compiled with -O2 (so the optimizer's warnings are there too)
# and the warning flags PGXS 16/17 use, plus -Wall -Wextra -Werror as the real
# build is run; the object is thrown away. Exit status 0 only if every file of
# every PATH compiles with no warning. Needs gcc, pkg-config and the dev files of
# libmongoc and sqlite3 (test/lib/common.sh installs them).
set -uo pipefail

SRC=$(cd "$(dirname "$0")/.." && pwd)

if [ $# -eq 0 ]; then
	sed -n '2,23p' "$0" | sed 's/^# \{0,1\}//'
	exit 2
fi

# PGXS 16/17's CFLAGS (src/Makefile.global) and the CI's PG_CFLAGS.
WARN="-Wall -Wmissing-prototypes -Wpointer-arith -Wdeclaration-after-statement
	-Werror=vla -Wendif-labels -Wmissing-format-attribute -Wimplicit-fallthrough=3
	-Wcast-function-type -Wshadow=compatible-local -Wformat-security
	-fno-strict-aliasing -fwrapv -fexcess-precision=standard
	-Wno-format-truncation -Wno-stringop-truncation
	-Wextra -Werror -Wno-unused-parameter -Wno-missing-field-initializers"
# The Makefile's PG_CPPFLAGS; PGXS adds -D_GNU_SOURCE on Linux.
VERSION=$(sed -n 's/^EXTVERSION *= *//p' "$SRC/Makefile")
DEPS=$(pkg-config --cflags libmongoc-1.0 sqlite3) || exit 1

status=0
for tree in "$@"; do
	tree=$(cd "$tree" && pwd) || { status=1; continue; }
	# An unconfigured source tree: configure it and generate its headers (no
	# server build; bison and flex are not needed for these).
	if [ -x "$tree/configure" ] && [ ! -f "$tree/src/include/pg_config.h" ]; then
		echo "configuring $tree (log: $tree/compile_versions.log)"
		(cd "$tree" &&
			./configure --without-readline --without-zlib --without-icu --without-llvm &&
			make -C src/backend generated-headers) >"$tree/compile_versions.log" 2>&1 ||
			{ echo "$tree: configure or generated-headers failed, see $tree/compile_versions.log" >&2; exit 1; }
	fi
	if [ -f "$tree/src/include/pg_config.h" ]; then
		INC="-I$tree/src/include -I$tree/src/interfaces/libpq"
		for h in utils/fmgroids.h utils/errcodes.h catalog/pg_proc_d.h; do
			[ -f "$tree/src/include/$h" ] || {
				echo "$tree: src/include/$h missing: run make -C src/backend generated-headers" >&2
				exit 1
			}
		done
	elif [ -f "$tree/pg_config.h" ]; then
		# .../include/postgresql/NN/server: libpq-fe.h is two levels up
		INC="-I$tree -I$tree/../.."
	else
		echo "$tree: neither a configured source tree nor a server include directory" >&2
		exit 1
	fi
	pgver=$(sed -n 's/^#define PG_VERSION_NUM \([0-9]*\)/\1/p' "$tree"/pg_config.h "$tree"/src/include/pg_config.h 2>/dev/null | head -1)

	errors=0
	files=0
	for f in "$SRC"/src/*.c; do
		files=$((files + 1))
		# shellcheck disable=SC2086
		if ! gcc -O2 -c -o /dev/null $WARN -I"$SRC/src" -DLEDGER_VERSION="\"$VERSION\"" \
			$DEPS $INC -D_GNU_SOURCE "$f"; then
			errors=$((errors + 1))
			echo "FAILED: ${f#"$SRC"/} against PG_VERSION_NUM $pgver" >&2
		fi
	done
	echo "PG_VERSION_NUM $pgver ($tree): $files files, $errors failed"
	[ "$errors" -eq 0 ] || status=1
done
exit $status
