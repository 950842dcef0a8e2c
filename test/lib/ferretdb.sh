# test/lib/ferretdb.sh — Go-built test peers: FerretDB (a real MongoDB-wire
# server, test/golib/ferretdb) and the Go-library export checker (test/golib).
# Source it; it defines functions only.
#
#   ledger_go_build DIR NAME      build the Go module in DIR into the bin cache
#                                 as NAME (once per source change); prints the path
#   ledger_ferretdb_start WORKDIR start FerretDB on a free loopback port, data
#                                 in WORKDIR/ferretdb; sets FERRETDB_PID,
#                                 FERRETDB_PORT, FERRETDB_URI
#   ledger_ferretdb_stop          stop it (SIGTERM, then wait)
#
# Go comes from PATH or /usr/local/go/bin; modules from the Go module proxy.
# When run as root, go runs as the test user (postgres), so that every test
# shares one module and build cache (under that user's home) whoever starts
# it.  LEDGER_GO_CACHE overrides the cache directory.

. "$(dirname "${BASH_SOURCE[0]}")/port.sh"

FERRETDB_PID=
FERRETDB_PORT=
FERRETDB_URI=

_ledger_go() {
	local go
	go=$(command -v go 2>/dev/null || true)
	[ -z "$go" ] && [ -x /usr/local/go/bin/go ] && go=/usr/local/go/bin/go
	if [ -z "$go" ]; then
		echo "go is not installed (PATH or /usr/local/go/bin): cannot build the Go test peers" >&2
		return 127
	fi
	local cache=${LEDGER_GO_CACHE:-}
	if [ "$(id -u)" = 0 ]; then
		local home
		home=$(getent passwd postgres | cut -d: -f6)
		cache=${cache:-$home/.cache/ledger-go}
		runuser -u postgres -- mkdir -p "$cache"
		runuser -u postgres -- env HOME="$home" GOPATH="$cache/gopath" GOMODCACHE="$cache/gopath/pkg/mod" \
			GOCACHE="$cache/build" GOFLAGS=-mod=mod GOTOOLCHAIN=local PATH="$(dirname "$go"):$PATH" "$go" "$@"
	else
		cache=${cache:-${XDG_CACHE_HOME:-$HOME/.cache}/ledger-go}
		mkdir -p "$cache"
		env GOPATH="$cache/gopath" GOMODCACHE="$cache/gopath/pkg/mod" GOCACHE="$cache/build" \
			GOFLAGS=-mod=mod GOTOOLCHAIN=local PATH="$(dirname "$go"):$PATH" "$go" "$@"
	fi
}

_ledger_go_bin_dir() {
	if [ -n "${LEDGER_GO_CACHE:-}" ]; then
		echo "$LEDGER_GO_CACHE/bin"
	elif [ "$(id -u)" = 0 ]; then
		echo "$(getent passwd postgres | cut -d: -f6)/.cache/ledger-go/bin"
	else
		echo "${XDG_CACHE_HOME:-$HOME/.cache}/ledger-go/bin"
	fi
}

# ledger_go_build DIR NAME: the module's sources are copied aside (the test
# user may not read the tree), built, and the binary kept under a name that
# carries the sources' hash, so a change rebuilds and nothing stale runs.
ledger_go_build() {
	local dir=$1 name=$2 bindir hash out tmp
	bindir=$(_ledger_go_bin_dir)
	hash=$(cd "$dir" && find . -maxdepth 1 -type f \( -name '*.go' -o -name go.mod -o -name go.sum \) -print0 |
		sort -z | xargs -0 cat | sha256sum | cut -c1-16)
	out="$bindir/$name-$hash"
	if [ ! -x "$out" ]; then
		tmp=$(mktemp -d "${TMPDIR:-/tmp}/ledger-go-src.XXXXXX")
		cp "$dir"/*.go "$dir"/go.mod "$dir"/go.sum "$tmp"/ 2>/dev/null
		chmod -R a+rX "$tmp"
		if [ "$(id -u)" = 0 ]; then
			runuser -u postgres -- mkdir -p "$bindir"
			chown -R postgres "$tmp"
		else
			mkdir -p "$bindir"
		fi
		if ! (cd "$tmp" && _ledger_go build -o "$out.tmp" . >&2); then
			rm -rf "$tmp"
			echo "building $name from $dir failed" >&2
			return 1
		fi
		mv "$out.tmp" "$out"
		rm -rf "$tmp"
	fi
	echo "$out"
}

ledger_ferretdb_start() {
	local work=$1 bin deadline
	bin=$(ledger_go_build "$(cd "$(dirname "${BASH_SOURCE[0]}")/../golib/ferretdb" && pwd)" ferretdb) || return 1
	mkdir -p "$work/ferretdb"
	FERRETDB_PORT=$(ledger_free_port) || return 1
	"$bin" -listen "127.0.0.1:$FERRETDB_PORT" -dir "$work/ferretdb" >"$work/ferretdb.log" 2>&1 &
	FERRETDB_PID=$!
	deadline=$((SECONDS + 30))
	until (exec 3<>"/dev/tcp/127.0.0.1/$FERRETDB_PORT") 2>/dev/null; do
		if ! kill -0 "$FERRETDB_PID" 2>/dev/null || [ $SECONDS -ge $deadline ]; then
			echo "FerretDB did not start:" >&2
			cat "$work/ferretdb.log" >&2
			FERRETDB_PID=
			return 1
		fi
		sleep 0.1
	done
	FERRETDB_URI="mongodb://127.0.0.1:$FERRETDB_PORT/"
}

ledger_ferretdb_stop() {
	if [ -n "$FERRETDB_PID" ]; then
		kill "$FERRETDB_PID" 2>/dev/null
		wait "$FERRETDB_PID" 2>/dev/null
		FERRETDB_PID=
	fi
	return 0
}
