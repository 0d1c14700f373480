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
# Package scripts must not start system services (mosquitto, postgresql, tinyproxy): the
# project runs its own instances on its own ports. A policy-rc.d says so while apt runs. The
# one written here carries a mark and this run's pid: one left by a run killed before its EXIT
# trap (SIGKILL, a power cut), which would keep every service on the machine from starting at
# its next upgrade, is removed by the next run once that pid is gone. A policy-rc.d without
# the mark, or one whose run is still going, is never touched.
policy=/usr/sbin/policy-rc.d
policy_mark="# written by Outpost's scripts/bootstrap.sh while it installs packages, removed when it ends; pid"
leftover=0
if [ -f "$policy" ]; then
	owner=""
	while IFS= read -r line; do
		case $line in "$policy_mark "*) owner=${line#"$policy_mark "} ;; esac
	done <"$policy" || true
	[[ "$owner" =~ ^[0-9]+$ ]] && [ ! -d "/proc/$owner" ] && leftover=1
fi
[ ${#missing[@]} -eq 0 ] && [ "$leftover" = 0 ] && exit 0

sudo=()
if [ "$(id -u)" -ne 0 ]; then
	if command -v sudo >/dev/null; then
		sudo=(sudo)
	elif [ ${#missing[@]} -gt 0 ]; then
		echo "bootstrap: need root (or sudo) to install: ${missing[*]}" >&2
		exit 1
	fi
fi
if [ ${#missing[@]} -eq 0 ]; then
	# (nothing to install: a leftover that cannot be removed is said, not fatal)
	echo "bootstrap: removing $policy, left by an earlier run that did not finish (it keeps" \
		"services from starting)"
	"${sudo[@]}" ${sudo:+-n} rm -f "$policy" || echo "bootstrap: WARNING: could not remove $policy; remove it as root" >&2
	exit 0
fi
echo "bootstrap: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
# The trap before the file: a run stopped right after writing it still removes it.
restore_policy=0
trap '[ "$restore_policy" = 0 ] || "${sudo[@]}" rm -f "$policy"' EXIT
if [ ! -e "$policy" ] || [ "$leftover" = 1 ]; then
	restore_policy=1
	printf '#!/bin/sh\n%s %s\nexit 101\n' "$policy_mark" "$$" | "${sudo[@]}" tee "$policy" >/dev/null
	"${sudo[@]}" chmod 755 "$policy"
fi
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
