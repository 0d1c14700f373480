#!/usr/bin/env bash
# run.sh - the Outpost benchmark suite: one command, one table.
#   wire    bytes per reading and traffic per device-month (bench_wire)
#   ingest  bridge vs broker and raw-insert ceilings, SQLite and PostgreSQL (bench/ingest.sh)
#   device  RSS, CPU and 90-day backlog drain of outpost-device (bench/device.sh)
#   fleet   concurrent mutual-TLS devices and broker-restart recovery (bench/fleet.sh)
# Every ratio is against a ceiling measured in the same run. Results: docs/PERFORMANCE.md.
set -euo pipefail

usage() {
	cat <<'USAGE'
Usage: bench/run.sh [--quick] [--only wire,ingest,device,fleet] [--no-build] [--no-bootstrap]
  --quick          smaller loads (minutes instead of tens of minutes); figures are noisier
  --only LIST      run only these parts (default: all)
  --no-build       use the binaries in the build directory as they are
  --no-bootstrap   do not install Debian packages first
Environment: OUTPOST_BUILD_DIR (default build), BENCH_WORK (default build/bench-work).
Progress and log locations go to stderr, the table to stdout.
USAGE
}

quick=() only=wire,ingest,device,fleet build=1 bootstrap=1
while [ $# -gt 0 ]; do
	case $1 in
	--quick) quick=(--quick) ;;
	--only) [ $# -ge 2 ] || { usage >&2; exit 2; }; only=$2; shift ;;
	--only=*) only=${1#*=} ;;
	--no-build) build=0 ;;
	--no-bootstrap) bootstrap=0 ;;
	-h | --help) usage; exit 0 ;;
	*) echo "run.sh: unknown argument: $1 (try --help)" >&2; exit 2 ;;
	esac
	shift
done

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/.." && pwd)
builddir=${OUTPOST_BUILD_DIR:-$root/build}
export OUTPOST_BUILD_DIR=$builddir
[ "$bootstrap" = 1 ] && "$root/scripts/bootstrap.sh"
if [ "$build" = 1 ]; then
	echo "bench: building in $builddir (RelWithDebInfo)" >&2
	cmake -S "$root" -B "$builddir" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DWITH_POSTGRES=ON >/dev/null
	cmake --build "$builddir" -j "$(nproc)" >/dev/null
fi

# provenance, printed above the table: which code, when (a table stitched from several runs
# must say which part came from which)
commit=$(git -C "$root" describe --always --dirty 2>/dev/null || echo '?')
commit_date=$(git -C "$root" log -1 --format=%cs 2>/dev/null || echo '?')
started=$(date -u +%Y-%m-%dT%H:%MZ)
load0=$(cut -d' ' -f1 /proc/loadavg)
echo "bench: commit $commit ($commit_date), started $started, load average $load0" >&2

want() { case ",$only," in *",$1,"*) return 0 ;; *) return 1 ;; esac; }
rows=$(mktemp)
trap 'rm -f "$rows"' EXIT
status=0
part() { # NAME COMMAND...
	local name=$1
	shift
	want "$name" || return 0
	echo "bench: --- $name" >&2
	if ! "$@" >>"$rows"; then
		echo "bench: $name failed (its rows above are kept)" >&2
		echo "$name|FAILED|see the log above|" >>"$rows"
		status=1
	fi
}

# shellcheck disable=SC2317 # called through part()
wire() {
	local pki=${BENCH_WORK:-$builddir/bench-work}/wire-pki
	mkdir -p "$(dirname "$pki")"
	"$root/scripts/provision-certs.sh" --out "$pki" --count 1 >/dev/null
	"$builddir/bench/bench_wire" "$pki"
}
part wire wire
part ingest "$here/ingest.sh" "${quick[@]}"
part device "$here/device.sh" "${quick[@]}"
part fleet "$here/fleet.sh" "${quick[@]}"

cpu=$(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo)
mem=$(awk '/^MemTotal/ { printf "%.0f GiB", $2 / 1048576 }' /proc/meminfo)
printf '\nOutpost benchmarks, commit %s (%s), run %s .. %s, %s, parts: %s\n' \
	"$commit" "$commit_date" "$started" "$(date -u +%Y-%m-%dT%H:%MZ)" "${quick[*]:-full}" "$only"
printf 'machine: %s cores, %s, %s, %s; load average %s before the run\n' \
	"$(nproc)" "${cpu:-unknown CPU}" "$mem" "$(uname -sr)" "$load0"
[ "${#quick[@]}" -gt 0 ] && printf '%s\n' '--quick: small loads, no target verdicts (quick: no verdict)'
echo
{
	echo "area|measure|result|ceiling / target"
	echo "----|-------|------|-----------------"
	cat "$rows"
} | column -t -s '|'
exit $status
