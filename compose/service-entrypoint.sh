#!/bin/sh
# `shopgate-service NAME`: one shop service replica in a container.
#
# Instance ids are <service>-<port>: unique on one host, but every replica of a compose service
# would bind the same port and so register the same id in the one catalog. Each replica listens
# instead on a port derived from its own address on the compose network (unique within a /16),
# and writes it to /tmp/shopgate-port for the HEALTHCHECK (`shopgate-service --health`).
set -eu
port_file=/tmp/shopgate-port
if [ "${1:-}" = "--health" ]; then
    exec python3 -c 'import sys, urllib.request
port = open(sys.argv[1]).read().strip()
urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2)' "$port_file"
fi
[ $# -ge 1 ] || { echo "usage: shopgate-service NAME [shopgate service options]" >&2; exit 2; }
name=$1; shift
port=$(python3 -c 'import ipaddress, socket
address = socket.gethostbyname(socket.gethostname())
print(20000 + int(ipaddress.ip_address(address)) % 40000)')
echo "$port" > "$port_file"
exec python3 -m shopgate service "$name" --bind 0.0.0.0 --port "$port" "$@"
