#!/usr/bin/env bash
# bootstrap.sh - install the Debian packages Outpost needs to build, test, run and benchmark.
# Idempotent and non-interactive: does nothing when every package is present.
set -euo pipefail

packages=(
	# build
	build-essential cmake pkg-config clang libclang-rt-14-dev
	protobuf-c-compiler libprotobuf-c-dev
	libwolfssl-dev libpaho-mqtt-dev libmosquitto-dev libsqlite3-dev libpq-dev
	# the broker plugin (broker/outpost_auth.c)
	mosquitto-dev libssl-dev
	# broker, PKI and tools the scripts call
	mosquitto mosquitto-clients openssl sqlite3 procps util-linux
	# tests: Criterion, a throwaway PostgreSQL cluster, an HTTP CONNECT proxy
	libcriterion-dev postgresql tinyproxy
	# benchmarks: the naive-subscriber baseline
	python3 python3-paho-mqtt
	# docker/ checked offline (tests/docker): compose schema, YAML, shell lint, ELF and packages
	docker-compose python3-yaml shellcheck binutils
)

case "${1:-}" in
-h | --help)
	echo "Usage: scripts/bootstrap.sh [--list]"
	echo "Installs missing Debian packages with apt-get (needs root or sudo). --list prints them."
	exit 0
	;;
--list) printf '%s\n' "${packages[@]}"; exit 0 ;;
"") ;;
*) echo "bootstrap: unknown argument: $1" >&2; exit 2 ;;
esac

missing=()
for p in "${packages[@]}"; do
	dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0

echo "bootstrap: installing ${missing[*]}"
sudo=()
if [ "$(id -u)" -ne 0 ]; then
	command -v sudo >/dev/null || { echo "bootstrap: need root (or sudo) to install: ${missing[*]}" >&2; exit 1; }
	sudo=(sudo)
fi
export DEBIAN_FRONTEND=noninteractive
# Package scripts must not start system services (mosquitto, postgresql, tinyproxy): the
# project runs its own instances on its own ports.
policy=/usr/sbin/policy-rc.d
restore_policy=0
if [ ! -e "$policy" ]; then
	printf '#!/bin/sh\nexit 101\n' | "${sudo[@]}" tee "$policy" >/dev/null
	"${sudo[@]}" chmod 755 "$policy"
	restore_policy=1
fi
trap '[ "$restore_policy" = 1 ] && "${sudo[@]}" rm -f "$policy"' EXIT
"${sudo[@]}" apt-get update -q || echo "bootstrap: apt-get update failed; trying the cached lists" >&2
"${sudo[@]}" apt-get install -y -q --no-install-recommends "${missing[@]}"
# ... nor enable them at boot (the packages do): after a reboot the machine would run a system
# broker, PostgreSQL cluster and proxy nothing here uses. Only for packages this run installed.
for svc in mosquitto postgresql tinyproxy; do
	[[ " ${missing[*]} " == *" $svc "* ]] || continue
	if command -v systemctl >/dev/null; then
		"${sudo[@]}" systemctl disable --quiet "$svc" 2>/dev/null || true
	elif command -v update-rc.d >/dev/null; then
		"${sudo[@]}" update-rc.d "$svc" disable >/dev/null 2>&1 || true
	fi
done
