#!/usr/bin/env bash
# test.sh - the one command that proves Outpost works: installs dependencies, builds the
# normal and the ASan+UBSan trees, runs every test through ctest, then a bounded fuzz run.
set -euo pipefail

usage() {
	cat <<'USAGE'
Usage: scripts/test.sh [--no-bootstrap] [--no-sanitize] [--no-fuzz] [-R REGEX]
  --no-bootstrap   do not install Debian packages first
  --no-sanitize    skip the ASan+UBSan build (faster local iteration; CI runs it)
  --no-fuzz        skip the libFuzzer build and run
  -R REGEX         only tests whose name matches (passed to ctest)
Environment: OUTPOST_FUZZ_SECONDS (default 20) per fuzz target, JOBS (default nproc).
USAGE
}

bootstrap=1 sanitize=1 fuzz=1 filter=()
while [ $# -gt 0 ]; do
	case "$1" in
	--no-bootstrap) bootstrap=0 ;;
	--no-sanitize) sanitize=0 ;;
	--no-fuzz) fuzz=0 ;;
	-R) [ $# -ge 2 ] || { usage >&2; exit 2; }; filter=(-R "$2"); shift ;;
	-h | --help) usage; exit 0 ;;
	*) echo "test.sh: unknown argument: $1" >&2; usage >&2; exit 2 ;;
	esac
	shift
done

cd "$(dirname "$0")/.."
root=$(pwd)
jobs=${JOBS:-$(nproc)}
[ "$bootstrap" = 1 ] && scripts/bootstrap.sh

step() { printf '\n=== %s\n' "$*"; }

run_tree() { # DIR CMAKE_ARGS...
	local dir=$1
	shift
	# (tests on: scripts/run-local.sh makes a new build/ without them)
	cmake -S "$root" -B "$dir" -DWITH_POSTGRES=ON -DOUTPOST_TESTS=ON "$@" >/dev/null
	cmake --build "$dir" -j "$jobs"
	ctest --test-dir "$dir" --output-on-failure --no-tests=error -j "$jobs" "${filter[@]}"
}

step "build + tests (RelWithDebInfo)"
run_tree build -DCMAKE_BUILD_TYPE=RelWithDebInfo

if [ "$sanitize" = 1 ]; then
	step "build + tests (ASan + UBSan)"
	run_tree build-asan -DCMAKE_BUILD_TYPE=Debug -DOUTPOST_SANITIZE=ON
fi

if [ "$fuzz" = 1 ] && [ ${#filter[@]} -eq 0 ]; then
	step "fuzz (libFuzzer, clang, ${OUTPOST_FUZZ_SECONDS:-20}s per target)"
	CC=clang cmake -S "$root" -B build-fuzz -DCMAKE_BUILD_TYPE=Debug -DOUTPOST_FUZZ=ON -DOUTPOST_TESTS=OFF >/dev/null
	cmake --build build-fuzz -j "$jobs"
	for target in build-fuzz/tests/fuzz/fuzz_*; do
		[ -x "$target" ] || continue
		name=$(basename "$target")
		work="build-fuzz/corpus-$name"
		rm -rf "$work" && mkdir -p "$work"
		# New inputs go to a scratch copy; the committed corpus only seeds the run. Inputs up
		# to one past WIRE_MAX_ENVELOPE (libFuzzer's default stops at 4 KiB, below every
		# count and size limit of the wire library).
		"$target" -max_total_time="${OUTPOST_FUZZ_SECONDS:-20}" -timeout=5 -rss_limit_mb=1024 \
			-max_len=262145 \
			-artifact_prefix=build-fuzz/ -print_final_stats=1 "$work" "tests/fuzz/corpus/$name" 2>&1 | tail -n 12
	done
fi
step "all tests passed"
