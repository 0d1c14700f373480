#!/usr/bin/env bash
# listening.sh - whether TCP ports are open on this host (this network namespace): a socket in
# LISTEN state on the port, on any address, IPv4 or IPv6, read from /proc/net/tcp and tcp6.
# Nothing connects: mosquitto logs every connection that closes before its TLS handshake
# ("Client connection from 127.0.0.1 failed: ... unexpected eof while reading"), and a probe
# every 30 s would bury the real handshake failures. The one implementation for healthcheck.sh and
# scripts/run-local.sh (ports free before the broker starts, then its listeners open).
set -euo pipefail

usage() {
	cat <<'USAGE'
Usage: docker/mosquitto/listening.sh PORT...

Exit 0 when every PORT has a TCP socket listening on it (any address, IPv4 or IPv6, any
process of this network namespace), 1 when one has none, 2 on a usage error or when
/proc/net/tcp cannot be read. Prints nothing. Connects to nothing.
USAGE
}

case "${1:-}" in
-h | --help) usage; exit 0 ;;
"") usage >&2; exit 2 ;;
esac
hex=()
for p in "$@"; do
	[[ "$p" =~ ^[1-9][0-9]{0,4}$ ]] && [ "$p" -le 65535 ] ||
		{ echo "listening: not a port: $p (try --help)" >&2; exit 2; }
	hex+=("$(printf '%04X' "$p")")
done
files=()
for f in /proc/net/tcp /proc/net/tcp6; do
	[ -r "$f" ] && files+=("$f")
done
[ ${#files[@]} -gt 0 ] || { echo "listening: cannot read /proc/net/tcp" >&2; exit 2; }
# Lines: "sl local_address rem_address st ...", the address as hex IP:PORT, st 0A for LISTEN.
awk -v want="${hex[*]}" '
	BEGIN { n = split(want, w, " "); for (i = 1; i <= n; i++) missing[w[i]] = 1 }
	$4 == "0A" { p = $2; sub(/.*:/, "", p); delete missing[p] }
	END { for (p in missing) exit 1; exit 0 }
' "${files[@]}"
