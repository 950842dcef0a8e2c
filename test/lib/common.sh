# test/lib/common.sh — set-up shared by test/run_all.sh, test/demo.sh and bench/run.sh:
# installing what a fresh Debian 12 needs, building, and starting a throwaway
# preloaded server.  Source it; it defines functions only.

PG_MAJOR=15
# PG_CONFIG may name another (e.g. relocated) installation to build and test against.
if [ -n "${PG_CONFIG:-}" ] && [ -x "$PG_CONFIG" ]; then
	PGBIN=$("$PG_CONFIG" --bindir)
else
	PGBIN=/usr/lib/postgresql/$PG_MAJOR/bin
fi
LEDGER_PG_CFLAGS="-Wall -Wextra -Werror -Wno-unused-parameter -Wno-missing-field-initializers"

log() { printf '==> %s\n' "$*"; }

# Install the Debian packages the project needs, once, when run as root.
ledger_install_deps() {
	local pkgs="postgresql-$PG_MAJOR postgresql-server-dev-$PG_MAJOR postgresql-contrib postgresql-$PG_MAJOR-plproxy libbson-dev libmongoc-dev libsqlite3-dev sqlite3 libipc-run-perl python3-psycopg2 make gcc pkg-config"
	local missing=""
	local p
	for p in $pkgs; do
		dpkg -s "$p" >/dev/null 2>&1 || missing="$missing $p"
	done
	# server and headers must be the same minor release
	if [ -z "$missing" ]; then
		local srv dev
		srv=$(dpkg-query -W -f='${Version}' "postgresql-$PG_MAJOR" 2>/dev/null)
		dev=$(dpkg-query -W -f='${Version}' "postgresql-server-dev-$PG_MAJOR" 2>/dev/null)
		[ "$srv" = "$dev" ] || missing="postgresql-$PG_MAJOR postgresql-server-dev-$PG_MAJOR"
	fi
	[ -z "$missing" ] && return 0
	if [ "$(id -u)" != 0 ]; then
		echo "missing packages:$missing (run as root to install them)" >&2
		return 1
	fi
	log "installing:$missing"
	export DEBIAN_FRONTEND=noninteractive
	apt-get update -qq >/dev/null || return 1
	# the cluster Debian would create is not used; ours are throwaway
	mkdir -p /etc/postgresql-common/createcluster.d
	echo "create_main_cluster = false" > /etc/postgresql-common/createcluster.d/ledger-no-main.conf
	apt-get install -y -qq $missing postgresql-$PG_MAJOR postgresql-server-dev-$PG_MAJOR >/dev/null || return 1
}

# Build with warnings as errors and install into the server's directories.
ledger_build_install() {
	local src=$1
	log "building ledger"
	make -C "$src" -s clean >/dev/null 2>&1
	make -C "$src" -s PG_CFLAGS="$LEDGER_PG_CFLAGS" >/dev/null || return 1
	if [ -w "$($PGBIN/pg_config --pkglibdir 2>/dev/null || pg_config --pkglibdir)" ]; then
		make -C "$src" -s install >/dev/null || return 1
	else
		sudo make -C "$src" -s install >/dev/null || return 1
	fi
}

# The user that runs servers: initdb refuses root.
ledger_test_user() {
	if [ "$(id -u)" = 0 ]; then echo postgres; else id -un; fi
}

as_test_user() {
	if [ "$(id -u)" = 0 ]; then
		runuser -u postgres -- env PATH="$PGBIN:$PATH" "$@"
	else
		env PATH="$PGBIN:$PATH" "$@"
	fi
}

# Write the server configuration the tests use.  (On 15.x builds with
# output_plugin_libraries, the preloaded ledger lists itself there; the tests
# rely on that rather than on a setting of their own.)
ledger_write_conf() {
	local out=$1 src=$2
	cat "$src/test/ledger.conf" > "$out"
}

. "$(dirname "${BASH_SOURCE[0]}")/port.sh"

# Start a throwaway preloaded cluster in $1 (created), on a free port.
# Sets PGHOST, PGPORT, PGUSER, PGDATABASE for the caller.
ledger_start_cluster() {
	local dir=$1 conf=$2
	mkdir -p "$dir"
	[ "$(id -u)" = 0 ] && chown "$(ledger_test_user)" "$dir"
	as_test_user initdb -D "$dir/data" -A trust -U postgres --no-instructions >"$dir/initdb.log" 2>&1 || { cat "$dir/initdb.log"; return 1; }
	cat "$conf" >> "$dir/data/postgresql.conf"
	{
		echo "listen_addresses = '127.0.0.1'"
		echo "unix_socket_directories = '$dir'"
		echo "fsync = off"
	} >> "$dir/data/postgresql.conf"
	# The port is chosen free, but another process may bind it before the
	# server does: then pick another (the last "port =" line wins).
	local try
	for try in 1 2 3 4 5; do
		PGPORT=$(ledger_free_port) || return 1
		echo "port = $PGPORT" >> "$dir/data/postgresql.conf"
		if as_test_user pg_ctl -D "$dir/data" -l "$dir/server.log" -w -t 60 start >/dev/null; then
			break
		fi
		if [ $try = 5 ] || ! grep -q 'Address already in use' "$dir/server.log"; then
			cat "$dir/server.log"
			unset PGPORT
			return 1
		fi
	done
	export PGHOST=$dir PGPORT PGUSER=postgres PGDATABASE=postgres
}

ledger_stop_cluster() {
	local dir=$1
	[ -d "$dir/data" ] && as_test_user pg_ctl -D "$dir/data" -m fast -w stop >/dev/null 2>&1
	return 0
}
