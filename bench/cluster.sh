# bench/cluster.sh — sourced by bench/append_cpu.sh and bench/append_ratio.sh:
# a throwaway preloaded cluster of the PostgreSQL in BIN, with the benchmark
# tables of sql/setup.sql.
#
#   bench_cluster_start BIN PORT NAME [EXTRA_CONF_LINE...]
#
# Sets WORK (its directory, removed on exit) and defines run (as postgres
# when root) and q (psql to it).
bench_cluster_start() {
	local bin=$1 port=$2 name=$3 line
	shift 3
	BENCH_BIN=$bin BENCH_PORT=$port
	WORK=$(mktemp -d "/tmp/$name.XXXXXX")
	chmod 755 "$WORK"
	[ "$(id -u)" = 0 ] && chown postgres "$WORK"
	run "$bin/initdb" -D "$WORK/data" -A trust >/dev/null || exit 1
	{
		echo "port = $port"
		echo "unix_socket_directories = '$WORK'"
		echo "listen_addresses = ''"
		echo "shared_preload_libraries = 'ledger'"
		echo "wal_level = logical"
		echo "shared_buffers = 512MB"
		echo "max_wal_size = 8GB"
		echo "checkpoint_timeout = 30min"
		for line in "$@"; do echo "$line"; done
	} >> "$WORK/data/postgresql.conf"
	run "$bin/pg_ctl" -D "$WORK/data" -l "$WORK/log" -w start >/dev/null || exit 1
	trap 'run "$BENCH_BIN/pg_ctl" -D "$WORK/data" -m immediate stop >/dev/null; rm -rf "$WORK"' EXIT
	q -f "$(dirname "${BASH_SOURCE[0]}")/sql/setup.sql" >/dev/null || exit 1
}
run() { if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }
q() { run "$BENCH_BIN/psql" -h "$WORK" -p "$BENCH_PORT" -d postgres -X -q -At -v ON_ERROR_STOP=1 "$@"; }
