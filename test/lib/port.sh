# test/lib/port.sh — ledger_free_port: a loopback TCP port nothing holds.
# Source it; it defines functions only.
#
# Ports come from below the kernel's ephemeral range (32768-60999 on Linux)
# so that a client connection of some other process cannot be holding the
# port we pick; that happened in CI, where the port was free to connect to
# (no listener) yet taken for bind.  The check binds, as the server will.
# The caller still retries on EADDRINUSE: between our check and the
# server's bind another process can take the port.

ledger_free_port() {
	local port
	for _ in $(seq 200); do
		port=$(( (RANDOM % 12000) + 20000 ))
		if /usr/bin/python3 - "$port" 2>/dev/null <<'PY'
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
s.bind(("127.0.0.1", int(sys.argv[1])))
s.close()
PY
		then
			echo "$port"
			return 0
		fi
	done
	return 1
}
