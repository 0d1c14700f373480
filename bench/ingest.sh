#!/usr/bin/env bash
# ingest.sh - the ingest benchmark: signed batches from many simulated devices through the real
# broker into the real bridge, on SQLite and PostgreSQL, for 1, 50 and 500 readings per message,
# each beside two ceilings measured in the same run:
#   (a) the broker's delivery rate of the same envelopes to a do-nothing subscriber (bench_sink);
#   (b) the same rows inserted into the same table by a minimal C program (bench_rawinsert);
# and the "what a user would write" baseline: python3-paho-mqtt inserting JSON into SQLite.
# Rows on stdout (AREA|MEASURE|RESULT|NOTE), progress on stderr.
set -euo pipefail

usage() {
	cat <<'USAGE'
Usage: bench/ingest.sh [--quick] [--no-postgres]
  --quick         fewer messages (about a minute in all instead of several)
  --no-postgres   SQLite only
Environment: OUTPOST_BUILD_DIR (default build), BENCH_WORK (default build/bench-work),
BENCH_SQLITE_SYNC (full: the bridge's default; normal), BENCH_DEVICES (default 40),
BENCH_PROFILES (readings per message to run, default "1 50 500"; the naive baseline runs
only with 50), BENCH_STORES (default "sqlite postgresql").
Exits non-zero when a run did not complete (the naive baseline's included).
USAGE
}

quick=0 pg=1
for a in "$@"; do
	case $a in
	--quick) quick=1 ;;
	--no-postgres) pg=0 ;;
	-h | --help) usage; exit 0 ;;
	*) echo "ingest.sh: unknown argument: $a" >&2; usage >&2; exit 2 ;;
	esac
done

# shellcheck source=bench/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
trap bench_cleanup EXIT

work=$BENCH_WORK/ingest
sync=${BENCH_SQLITE_SYNC:-full}
devices=${BENCH_DEVICES:-40}
profiles=${BENCH_PROFILES:-1 50 500}
stores=${BENCH_STORES:-sqlite postgresql}
for r in $profiles; do
	case $r in 1 | 50 | 500) ;; *) bench_fail "BENCH_PROFILES: $r is not one of 1 50 500" ;; esac
done
[[ " $stores " == *" postgresql "* ]] || pg=0
bin=$BENCH_BUILD/bench
for b in bench_loadgen bench_sink bench_rawinsert; do
	[ -x "$bin/$b" ] || bench_fail "missing $bin/$b (build first)"
done
mkdir -p "$work"
pki=$work/pki
bench_say "ingest: PKI with $devices devices"
bench_pki "$pki" "$devices"
rm -rf "$work/run"
mkdir -p "$work/run"
run=$work/run
bench_broker_start "$pki" "$run/broker"

# profiles: readings per message -> rows x columns, messages per device (full / quick), and the
# raw insert's transaction size in messages (at most the bridge's 1024 messages / 100k readings)
declare -A rows=([1]=1 [50]=5 [500]=5) cols=([1]=1 [50]=10 [500]=100)
declare -A per_dev=([1]=5000 [50]=1500 [500]=250) per_dev_quick=([1]=300 [50]=150 [500]=30)
declare -A txn=([1]=1000 [50]=1000 [500]=200)
declare -A sink_msg_s

status=0

# a timed run whose generator had to resend (no ack moved for 10 s) is flagged: its rate
# includes that stall
resent_note() { # LOADGEN_OUTPUT
	local n
	n=$(bench_kv "$1" resent)
	[ "${n:-0}" = 0 ] || printf '; FLAGGED: the load generator resent %s envelope(s) after an ack stalled for 10 s' "$n"
}

pct() { bench_calc '100 * a / b' a="$1" b="$2"; }
fmt0() { printf '%.0f' "$1"; }

loadgen() { # MODE READINGS PORT [extra]
	local mode=$1 r=$2 port=$3
	shift 3
	local n=${per_dev[$r]}
	[ "$quick" = 1 ] && n=${per_dev_quick[$r]}
	"$bin/bench_loadgen" --pki "$pki" --port "$port" --devices "$devices" --batches "$n" \
		--rows "${rows[$r]}" --cols "${cols[$r]}" --mode "$mode" --timeout 300 "$@"
}
messages() {
	local n=${per_dev[$1]}
	[ "$quick" = 1 ] && n=${per_dev_quick[$1]}
	echo $((n * devices))
}

wait_log() { # FILE TEXT SECONDS
	for _ in $(seq 1 $(($3 * 10))); do
		grep -q "$2" "$1" 2>/dev/null && return 0
		sleep 0.1
	done
	return 1
}

wait_file() { # FILE SECONDS
	for _ in $(seq 1 $(($2 * 10))); do
		[ -e "$1" ] && return 0
		sleep 0.1
	done
	return 1
}

# (a) the broker's delivery rate to a do-nothing subscriber, once per message size
measure_sink() { # READINGS
	local r=$1 out=$run/sink-$1.txt ready=$run/sink-$1.ready
	rm -f "$ready"
	"$bin/bench_sink" --pki "$pki" --port "$BENCH_INTERNAL" --expect "$(messages "$r")" \
		--ready "$ready" --timeout 300 >"$out" 2>>"$run/sink.log" &
	local pid=$!
	BENCH_PIDS+=("$pid")
	wait_file "$ready" 20 || bench_fail "bench_sink did not subscribe, see $run/sink.log"
	loadgen sink "$r" "$BENCH_MQTTS" >"$run/loadgen-sink-$r.txt" 2>>"$run/loadgen.log"
	wait "$pid" || bench_fail "bench_sink failed, see $run/sink.log"
	[ "$(bench_kv "$out" ok)" = 1 ] || bench_fail "bench_sink lost messages: $(cat "$out")"
	sink_msg_s[$r]=$(bench_kv "$out" msg_s)
	bench_say "ingest: broker to a do-nothing subscriber, $r readings/msg: ${sink_msg_s[$r]} msg/s"
}

# one store: raw insert, then the bridge, for each message size
measure_store() { # NAME URL_FRESH_CMD
	local name=$1 fresh=$2 r
	for r in $profiles; do
		local url raw
		# the ceiling: each transaction's rows sorted by key, as the bridge inserts a group's
		# (faster than arrival order, which is measured too and quoted)
		local order
		for order in arrival key; do
			url=$($fresh "raw-$r-$order")
			bench_say "ingest: $name raw insert, $r readings/msg, rows in $order order"
			raw=$run/raw-$name-$r-$order.txt
			"$bin/bench_rawinsert" --store "$url" --devices "$devices" --messages "$(messages "$r")" \
				--rows "${rows[$r]}" --cols "${cols[$r]}" --txn "${txn[$r]}" --sync "$sync" \
				--order "$order" >"$raw" 2>>"$run/rawinsert.log" ||
				bench_fail "bench_rawinsert failed, see $run/rawinsert.log"
		done

		url=$($fresh "bridge-$r")
		bench_say "ingest: $name bridge, $r readings/msg"
		local log=$run/bridge-$name-$r.log out=$run/loadgen-bridge-$name-$r.txt
		bench_bridge_start "$pki" "$url" "$log" --sqlite-sync "$sync"
		# the load only once the bridge is connected (as tests/support/h_bridge.c waits); it
		# subscribes right after that log line (no line at the SUBACK), well before the
		# generator's devices have made their TLS connections and sent their Births
		wait_log "$log" 'connected to' 30 ||
			bench_fail "the bridge did not connect within 30 s, see $log"
		loadgen bridge "$r" "$BENCH_MQTTS" >"$out" 2>>"$run/loadgen.log" ||
			bench_fail "bench_loadgen failed, see $run/loadgen.log"
		bench_stop_pid "$BENCH_BRIDGE_PID" 30
		[ "$(bench_kv "$out" ok)" = 1 ] || bench_fail "the bridge run did not complete: $(cat "$out")"
		grep -q 'error' "$log" && bench_say "ingest: the bridge logged errors, see $log"

		local b_msg b_rd raw_rd arr_rd s_msg ra rb
		b_msg=$(bench_kv "$out" msg_s) b_rd=$(bench_kv "$out" rd_s)
		raw_rd=$(bench_kv "$raw" rows_s) s_msg=${sink_msg_s[$r]}
		arr_rd=$(bench_kv "$run/raw-$name-$r-arrival.txt" rows_s)
		ra=$(pct "$b_msg" "$s_msg") rb=$(pct "$b_rd" "$raw_rd")
		local note verdict
		note="$(fmt0 "$ra")% of broker (${s_msg} msg/s), $(fmt0 "$rb")% of raw insert ($(fmt0 "$raw_rd") rd/s in key order; $(fmt0 "$arr_rd") in arrival order)"
		if [ "$name" = SQLite ] && [ "$r" = 50 ]; then
			verdict="MISSED by $(fmt0 "$(bench_calc '70 - x' x="$rb")") points"
			awk -v x="$rb" 'BEGIN { exit !(x >= 70) }' && verdict=met
			bench_verdict_quick verdict
			note="$note; target >= 70% of raw: $verdict"
			BRIDGE_SQLITE_50_RD=$b_rd
		fi
		if [ "$r" = 1 ]; then
			verdict="MISSED by $(fmt0 "$(bench_calc '50 - x' x="$ra")") points"
			awk -v x="$ra" 'BEGIN { exit !(x >= 50) }' && verdict=met
			bench_verdict_quick verdict
			note="$note; target >= 50% of broker: $verdict"
		fi
		note="$note$(resent_note "$out")"
		bench_row ingest "bridge, $name, $r reading(s)/msg" "$(fmt0 "$b_msg") msg/s, $(fmt0 "$b_rd") rd/s" "$note"
	done
}

sqlite_fresh() { # TAG -> URL of an empty SQLite store
	rm -f "$run/$1.db" "$run/$1.db-wal" "$run/$1.db-shm"
	echo "sqlite:$run/$1.db"
}
pg_fresh() { # TAG -> URL of an empty PostgreSQL store
	bench_pg_reset
	echo "$BENCH_PG_URL"
}

for r in $profiles; do measure_sink "$r"; done
[[ " $stores " == *" sqlite "* ]] && measure_store SQLite sqlite_fresh
if [ "$pg" = 1 ]; then
	bench_pg_start "$run/pg"
	measure_store PostgreSQL pg_fresh
	bench_pg_stop
fi

# the naive baseline: the same readings as JSON (50 per message), one commit per message
if [[ " $profiles " != *" 50 "* ]] || [[ " $stores " != *" sqlite "* ]]; then
	: # the baseline is compared with the bridge on SQLite at 50 readings/msg
elif [ -x /usr/bin/python3 ] && /usr/bin/python3 -c 'import paho.mqtt' 2>/dev/null; then
	r=50
	# the bridge's devices and messages per device; the total bounded so that the JSON the slow
	# subscriber has not taken yet fits in the broker's queue for one client (the shipped
	# max_queued_bytes, 256 MiB: ~4.8 kB per message here, 40,000 are ~190 MB)
	nd=$devices per=${per_dev[$r]}
	[ "$quick" = 1 ] && per=${per_dev_quick[$r]}
	[ $((nd * per)) -gt 40000 ] && per=$((40000 / nd))
	ready=$run/naive.ready out=$run/naive.txt
	rm -f "$ready" "$run/naive.db"
	bench_say "ingest: naive python subscriber, $nd devices x $per messages of $r readings"
	/usr/bin/python3 "$BENCH_ROOT/bench/naive_sub.py" --pki "$pki" --port "$BENCH_INTERNAL" \
		--db "$run/naive.db" --expect "$((per * nd))" --ready "$ready" --timeout 600 \
		>"$out" 2>>"$run/naive.log" &
	pid=$!
	BENCH_PIDS+=("$pid")
	wait_file "$ready" 30 || bench_fail "naive_sub.py did not subscribe, see $run/naive.log"
	"$bin/bench_loadgen" --pki "$pki" --port "$BENCH_MQTTS" --devices "$nd" --batches "$per" \
		--rows "${rows[$r]}" --cols "${cols[$r]}" --mode json --timeout 300 \
		>"$run/loadgen-json.txt" 2>>"$run/loadgen.log" ||
		bench_say "ingest: bench_loadgen (json) failed, see $run/loadgen.log"
	wait "$pid" || bench_say "naive_sub.py exited non-zero, see $run/naive.log"
	n_rd=$(bench_kv "$out" rd_s)
	how="$nd devices x $per msgs"
	[ "$per" = "${per_dev[$r]}" ] || [ "$quick" = 1 ] ||
		how="$how (the bridge: x ${per_dev[$r]}; bounded by the broker's queue)"
	if [ "$(bench_kv "$out" ok)" != 1 ]; then
		bench_row ingest "naive python3-paho + sqlite3, JSON, $r readings/msg" "INCOMPLETE" \
			"stored $(bench_kv "$out" msgs) of $((per * nd)) messages ($how), see $run/naive.log; no verdict"
		status=1
	else
		x=$(bench_calc 'a / b' a="${BRIDGE_SQLITE_50_RD:-0}" b="$n_rd")
		verdict=MISSED
		awk -v x="$x" 'BEGIN { exit !(x >= 20) }' && verdict=met
		bench_verdict_quick verdict
		bench_row ingest "naive python3-paho + sqlite3, JSON, $r readings/msg" \
			"$(fmt0 "$(bench_kv "$out" msg_s)") msg/s, $(fmt0 "$n_rd") rd/s" \
			"bridge on SQLite is $(printf '%.1f' "$x")x this (target >= 20x: $verdict); $how"
	fi
else
	bench_row ingest "naive python3-paho + sqlite3" "not run" "python3-paho-mqtt missing (scripts/bootstrap.sh installs it)"
fi
exit $status
