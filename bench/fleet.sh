#!/usr/bin/env bash
# fleet.sh - the fleet benchmark: N device sessions (real Paho, real mutual TLS, one Ed25519
# certificate each: bench_fleet on the device's own link module) against one real broker
# (docker/mosquitto/run-broker.sh) and one real bridge (SQLite store), on loopback.
#   1. ramp by levels; a level is held when every session is connected and has had a signed
#      batch acknowledged by the bridge; the broker's RSS is read at each level;
#   2. at the largest level held the broker is restarted on the same ports (SIGTERM, its
#      persistence saved and loaded again) and the time until every session is back (and
#      acknowledged again) is measured; sessions reconnect with the device's full-jitter backoff.
# Both device transports, each with its own broker and bridge: wss (the primary: WebSockets+TLS
# first, MQTT+TLS at once when a WSS attempt fails, as the device does) and mqtts (MQTT+TLS only).
# Rows on stdout (AREA|MEASURE|RESULT|NOTE), progress on stderr.
set -euo pipefail

usage() {
	cat <<'USAGE'
Usage: bench/fleet.sh [--quick]
  --quick   one level of 500 sessions (a few minutes)
Environment: OUTPOST_BUILD_DIR (default build), BENCH_WORK (default build/bench-work),
BENCH_FLEET_TRANSPORTS ("wss mqtts"; quick: wss; also wssonly: WebSockets without the MQTTS
fallback, as at a site that blocks 8883), BENCH_FLEET_LEVELS_WSS (5000,7500,10000;
quick 500), BENCH_FLEET_LEVELS_MQTTS (5000,10000; quick 500),
BENCH_FLEET_PROCS (simulator processes, 40; quick 10),
BENCH_FLEET_RAMP (new sessions per second in all, 250),
BENCH_FLEET_CONNECT_TIMEOUT (seconds per connection attempt; the device's default, 30),
BENCH_FLEET_RECONNECT_SPREAD (milliseconds: the first reconnect window after a lost connection,
the device's reconnect_spread, 30000).
USAGE
}

# --restart-request DIR: the simulator's restart command. Asks the fleet.sh that started the
# simulator to restart the broker (it owns the broker process) and waits until it has.
if [ "${1:-}" = --restart-request ]; then
	[ $# -eq 2 ] || { usage >&2; exit 2; }
	rm -f "$2/restart.done"
	: >"$2/restart.req"
	for _ in $(seq 1 1200); do
		[ -e "$2/restart.done" ] && exit 0
		sleep 0.1
	done
	echo "fleet.sh: no broker restart within 120 s" >&2
	exit 1
fi

quick=0
for a in "$@"; do
	case $a in
	--quick) quick=1 ;;
	-h | --help) usage; exit 0 ;;
	*) echo "fleet.sh: unknown argument: $a" >&2; usage >&2; exit 2 ;;
	esac
done

# shellcheck source=bench/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
trap bench_cleanup EXIT

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
bin=$BENCH_BUILD/bench
for b in bench_fleet bench_certgen; do
	[ -x "$bin/$b" ] || bench_fail "missing $bin/$b (build first)"
done
[ -x "$BENCH_BUILD/bridge/outpost-bridge" ] || bench_fail "missing outpost-bridge (build first)"

declare -A levels
if [ "$quick" = 1 ]; then
	transports=${BENCH_FLEET_TRANSPORTS:-wss}
	levels[wss]=${BENCH_FLEET_LEVELS_WSS:-500}
	levels[mqtts]=${BENCH_FLEET_LEVELS_MQTTS:-500}
	levels[wssonly]=${BENCH_FLEET_LEVELS_WSS:-500}
else
	transports=${BENCH_FLEET_TRANSPORTS:-wss mqtts}
	levels[wss]=${BENCH_FLEET_LEVELS_WSS:-5000,7500,10000}
	levels[mqtts]=${BENCH_FLEET_LEVELS_MQTTS:-5000,10000}
	levels[wssonly]=${BENCH_FLEET_LEVELS_WSS:-5000,7500,10000}
fi
# Paho runs all clients of a process on one receive thread that polls and scans every one of
# them: 250 sessions per process keep that scan small beside the TLS work it simulates
procs=${BENCH_FLEET_PROCS:-40}
[ "$quick" = 1 ] && procs=${BENCH_FLEET_PROCS:-10}
ramp=${BENCH_FLEET_RAMP:-250}
connect_timeout=${BENCH_FLEET_CONNECT_TIMEOUT:-30}
spread=${BENCH_FLEET_RECONNECT_SPREAD:-30000}
target_n=10000 target_s=120
[[ "$procs" =~ ^[1-9][0-9]?$ ]] && [ "$procs" -le 64 ] || bench_fail "BENCH_FLEET_PROCS: 1..64"
[[ "$ramp" =~ ^[1-9][0-9]*$ ]] || bench_fail "BENCH_FLEET_RAMP: a positive number"
[[ "$connect_timeout" =~ ^[1-9][0-9]{0,2}$ ]] || bench_fail "BENCH_FLEET_CONNECT_TIMEOUT: 1..999 seconds"
[[ "$spread" =~ ^(0|[1-9][0-9]{0,5})$ ]] || bench_fail "BENCH_FLEET_RECONNECT_SPREAD: 0..999999 ms"
max_n=0
for t in $transports; do
	case $t in wss | mqtts | wssonly) ;; *) bench_fail "BENCH_FLEET_TRANSPORTS: wss, mqtts or wssonly, not $t" ;; esac
	[[ "${levels[$t]}" =~ ^[0-9]+(,[0-9]+)*$ ]] || bench_fail "levels for $t: not a list of numbers: ${levels[$t]}"
	m=$(tr ',' '\n' <<<"${levels[$t]}" | sort -n | tail -1)
	[ "$m" -gt "$max_n" ] && max_n=$m
done
[ "$max_n" -le 30000 ] || bench_fail "at most 30000 sessions"

# file descriptors: each session is one socket in a simulator and one in the broker
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
nofile=$(ulimit -n)
bench_say "fleet: nofile $nofile (the broker and the simulators inherit it); $procs simulator process(es)"
[ "$nofile" = unlimited ] || [ "$nofile" -ge $((max_n + 200)) ] ||
	bench_say "fleet: nofile $nofile is below $max_n sessions + 200: the broker will refuse connections"

work=$BENCH_WORK/fleet
mkdir -p "$work"
pki=$work/pki certs=$work/certs
bench_say "fleet: PKI and $max_n device certificates (kept between runs) in $work"
bench_pki "$pki" 1
certgen() {
	# each simulator runs an equal share, rounded up: certificates for all of them
	local n=$((((max_n + procs - 1) / procs) * procs))
	"$bin/bench_certgen" --pki "$pki" --out "$certs" --prefix fleet- --count "$n" --width 5 \
		>"$work/certgen.txt" 2>&1 || bench_fail "bench_certgen failed, see $work/certgen.txt"
}
certgen
# certificates of an older PKI would be refused: start over if the CA changed
if ! openssl verify -CAfile "$pki/ca.crt" "$certs/fleet-00001.crt" >/dev/null 2>&1; then
	bench_say "fleet: the certificates are from another CA; issuing them again"
	rm -rf "$certs"
	certgen
fi

# CPU and RSS of the broker, the bridge and the simulators every 5 s (for the log)
declare -A last_ticks
monitor() { # NAME PID
	local t d
	t=$(bench_cpu_ticks "$2")
	d=$((t - ${last_ticks[$1]:-$t}))
	last_ticks[$1]=$t
	printf '%s cpu=%s%% rss_kb=%s ' "$1" "$(bench_calc 'd / 5' d="$d")" "$(bench_rss_kb "$2")"
}

# value of KEY on a line of key=value words
kv() { tr ' ' '\n' <<<"$1" | awk -F= -v k="$2" '$1 == k { print $2; exit }'; }

# A fresh broker and bridge, the simulators through LEVELS (and the restart when every level
# held), all stopped again; results in RUN/fleet-*.txt.
sims() { # TRANSPORT LEVELS RUN
	local tp=$1 lv=$2 run=$3
	rm -rf "$run"
	mkdir -p "$run"
	BENCH_WSS="" BENCH_MQTTS="" BENCH_INTERNAL=""
	bench_broker_start "$pki" "$run/broker"
	bench_wait_port "$BENCH_WSS" 10 || bench_fail "no WSS listener, see $run/broker/broker.log"
	local conf_max
	conf_max=$(awk '$1 == "max_connections" { print $2 }' "$run/broker/mosquitto.conf" | tail -1)
	bench_say "fleet[$tp]: broker pid $BENCH_BROKER_PID (wss $BENCH_WSS, mqtts $BENCH_MQTTS, internal $BENCH_INTERNAL; max_connections ${conf_max:--1, unlimited}; nofile $(awk '/^Max open files/ { print $4 }' "/proc/$BENCH_BROKER_PID/limits")); levels $lv"
	bench_bridge_start "$pki" "sqlite:$run/outpost.db" "$run/bridge.log"
	for _ in $(seq 1 100); do
		grep -q 'connected to' "$run/bridge.log" 2>/dev/null && break
		sleep 0.1
	done

	local ports=(--wss-port "$BENCH_WSS" --mqtts-port "$BENCH_MQTTS")
	[ "$tp" = mqtts ] && ports=(--mqtts-port "$BENCH_MQTTS")
	[ "$tp" = wssonly ] && ports=(--wss-port "$BENCH_WSS")
	# each simulator runs its share of every level, ids in disjoint ranges
	local per_levels per_max p
	per_levels=$(tr ',' '\n' <<<"$lv" | awk -v k="$procs" '{ printf "%s%d", (NR > 1 ? "," : ""), int(($1 + k - 1) / k) }')
	per_max=$(((max_n + procs - 1) / procs))
	local fleet_pids=()
	for ((p = 0; p < procs; p++)); do
		"$bin/bench_fleet" --pki "$pki" --certs "$certs" --prefix fleet- --width 5 \
			--host 127.0.0.1 "${ports[@]}" --levels "$per_levels" --offset $((p * per_max)) \
			--procs "$procs" --sync-dir "$run" --proc-index "$p" \
			--ramp-rate $(((ramp + procs - 1) / procs)) --level-timeout 180 \
			--connect-timeout "$connect_timeout" --reconnect-spread-ms "$spread" \
			--restart-timeout 300 --broker-pidfile "$run/broker/broker.pid" \
			--restart-cmd "$here/fleet.sh --restart-request $run" \
			>"$run/fleet-$p.txt" 2>"$run/fleet-$p.log" &
		fleet_pids+=($!)
		BENCH_PIDS+=($!)
	done

	# supervise: restart requests, monitoring, an overall deadline
	local deadline=$((SECONDS + 1800)) next_mon=$SECONDS alive t0 t1
	last_ticks=()
	while :; do
		alive=0
		for p in "${fleet_pids[@]}"; do kill -0 "$p" 2>/dev/null && alive=1; done
		[ "$alive" = 1 ] || break
		if [ -e "$run/restart.req" ]; then
			rm -f "$run/restart.req"
			# SIGTERM (mosquitto saves its persistence), then the same ports again
			t0=$(date +%s%N)
			bench_stop_pid "$BENCH_BROKER_PID" 30
			t1=$(date +%s%N)
			bench_broker_start "$pki" "$run/broker"
			bench_wait_port "$BENCH_WSS" 10 || bench_fail "no WSS listener after the restart"
			: >"$run/restart.done"
			bench_say "fleet[$tp]: broker restarted (stopped in $(bench_calc '(b - a) / 1e9' a="$t0" b="$t1") s, listening $(bench_calc '(b - a) / 1e9' a="$t1" b="$(date +%s%N)") s later), pid $BENCH_BROKER_PID"
		fi
		if [ "$SECONDS" -ge "$next_mon" ]; then
			{
				printf '%s ' "$(date +%T)"
				monitor broker "$BENCH_BROKER_PID"
				monitor bridge "$BENCH_BRIDGE_PID"
				for ((p = 0; p < procs; p++)); do monitor "fleet$p" "${fleet_pids[$p]}"; done
				echo
			} >>"$run/monitor.log"
			next_mon=$((SECONDS + 5))
		fi
		if [ "$SECONDS" -ge "$deadline" ]; then
			bench_say "fleet[$tp]: the simulators did not finish within 30 minutes; stopping them"
			for p in "${fleet_pids[@]}"; do bench_stop_pid "$p" 10; done
			break
		fi
		sleep 0.2
	done
	local rc=0
	for p in "${fleet_pids[@]}"; do wait "$p" || rc=1; done
	[ "$rc" = 0 ] || bench_say "fleet[$tp]: a simulator exited non-zero, see $run/fleet-*.log"
	cat "$run"/fleet-*.txt >&2
	local cpu_note
	cpu_note=$(awk '{ for (i = 2; i <= NF; i += 3) { split($(i + 1), c, "="); sub("%", "", c[2]); k = $i; v = c[2] + 0; s[k] += v; n[k]++; if (v > m[k]) m[k] = v } }
		END { for (k in s) printf "%s %.0f%% avg %.0f%% max; ", k, s[k] / n[k], m[k] }' "$run/monitor.log")
	bench_say "fleet[$tp]: CPU (100% = one core): $cpu_note"
	bench_cleanup
}

fleet_run() { # TRANSPORT LEVELS
	local tp=$1 lv=$2 run=$work/run-$1 p
	sims "$tp" "$lv" "$run"

	# levels: held when every simulator held its share
	local held=0 prev_n=0 prev_rss base_rss held_rss=0 step="" n per ok rss s up_s line r up
	local failed_level=0 largest=0
	base_rss=$(kv "$(grep '^fleet start' "$run/fleet-0.txt")" broker_rss_kb)
	base_rss=${base_rss:-0}
	prev_rss=$base_rss
	for n in ${lv//,/ }; do
		per=$(((n + procs - 1) / procs))
		[ $((per * procs)) -gt "$largest" ] && largest=$((per * procs))
	done
	for n in ${lv//,/ }; do
		per=$(((n + procs - 1) / procs))
		n=$((per * procs)) # what ran: each simulator its equal share
		ok=1 rss=0 up_s=0
		for ((p = 0; p < procs; p++)); do
			line=$(grep "^fleet level n=$per " "$run/fleet-$p.txt" || true)
			[ -n "$line" ] || { ok=0; continue; }
			[ "$(kv "$line" ok)" = 1 ] || ok=0
			r=$(kv "$line" broker_rss_kb)
			[ "$r" -gt "$rss" ] && rss=$r
			s=$(kv "$line" acked_s)
			up_s=$(bench_calc 's > u ? s : u' s="$s" u="$up_s")
		done
		if [ "$ok" != 1 ]; then
			bench_say "fleet[$tp]: level $n NOT held: $(grep -h "^fleet level n=$per " "$run"/fleet-*.txt |
				awk '{ for (i = 1; i <= NF; i++) { split($i, a, "="); v[a[1]] += a[2] } } END { printf "up %d, acked %d within 180 s; after the soak up %d, %d with a batch unacked > 30 s", v["up"], v["acked"], v["soak_up"], v["lagging"] }')"
			failed_level=$n
			break
		fi
		bench_say "fleet[$tp]: level $n held (all acked after $up_s s), broker RSS $rss KiB"
		# the step from the level before (or from idle): what the last sessions added
		step="$(printf '%.0f' "$(bench_calc '(r - q) / (n - m)' r="$rss" q="$prev_rss" n="$n" m="$prev_n")") KiB per session from $prev_n to $n sessions ($prev_rss -> $rss KiB)"
		held=$n prev_n=$n prev_rss=$rss held_rss=$rss
	done
	# "the largest N held" only when a larger level was tried and did not hold; otherwise N
	# is only the largest level this run tried
	local held_txt=$held
	[ "$held" -gt 0 ] && [ "$held" = "$largest" ] && held_txt=">= $held (largest tested)"

	# connected only (no ack required): the largest level at which every session was up
	local conn=0 conn_s=0 sums
	for n in ${lv//,/ }; do
		per=$(((n + procs - 1) / procs))
		sums=$(grep -h "^fleet level n=$per " "$run"/fleet-*.txt |
			awk '{ for (i = 1; i <= NF; i++) { split($i, a, "="); if (a[1] == "up") u += a[2]; if (a[1] == "up_s" && a[2] + 0 > t) t = a[2] + 0; if (a[1] == "up_s" && a[2] + 0 < 0) bad = 1 } k++ }
				END { print u + 0, (bad ? -1 : t), k + 0 }')
		read -r up s line <<<"$sums"
		if [ "$line" != "$procs" ] || [ "$up" != $((per * procs)) ] || [ "$s" = -1 ]; then break; fi
		conn=$((per * procs)) conn_s=$s
	done

	local how="one simulator process" verdict name=WSS
	[ "$procs" -gt 1 ] && how="$procs simulator processes"
	[ "$tp" = mqtts ] && name="MQTTS only"
	[ "$tp" = wss ] && name="WSS, MQTTS fallback"
	[ "$tp" = wssonly ] && name="WSS only (8883 blocked)"
	local tried="levels $lv"
	[ "$failed_level" -gt 0 ] && tried="levels $lv, $failed_level not held"
	if [ "$held" -ge "$target_n" ]; then verdict="met"; else verdict="MISSED by $((target_n - held))"; fi
	bench_verdict_quick verdict
	bench_row fleet "concurrent mutual-TLS devices, $name" "$held_txt" \
		"all connected and acked, still so 60 s later with no batch unacked > 30 s; $tried, $how, 1 broker, 1 bridge; each session polls for tasks on connect and every 300 s as the agent, and seals one extra batch at each connect, which the agent does not (target >= $target_n: $verdict)"
	local conn_txt=$conn
	[ "$conn" -gt 0 ] && [ "$conn" = "$largest" ] && conn_txt=">= $conn (largest tested)"
	if [ "$conn" -ge "$target_n" ]; then verdict="met"; else verdict="MISSED by $((target_n - conn))"; fi
	bench_verdict_quick verdict
	bench_row fleet "concurrent mutual-TLS sessions connected (acks not required), $name" "$conn_txt" \
		"every session up (TLS + MQTT CONNECT + SUBSCRIBE) at level $conn, the last one $conn_s s after the level started (target >= $target_n: $verdict)"
	if [ "$held" -gt 0 ]; then
		bench_row fleet "broker RSS per connection, $name" \
			"$(printf '%.0f' "$(bench_calc '(r - b) / n' r="$held_rss" b="$base_rss" n="$held")") KiB" \
			"(RSS at $held sessions - idle RSS) / $held: $held_rss KiB - $base_rss KiB; last step: $step"
	fi

	# restart: the slowest simulator decides
	local rlines
	rlines=$(grep -h '^fleet restart' "$run"/fleet-*.txt || true)
	local fresh=""
	if [ -z "$rlines" ] && [ "$held" -gt 0 ]; then
		# the same steps up to it: straight to it, the births and first batches of all at once
		# swamp the bridge (measured: 7504 at once did not hold where 5000 then 7504 did)
		local steps
		steps=$(tr ',' '\n' <<<"$lv" | awk -v k="$procs" -v h="$held" '{ n = int(($1 + k - 1) / k) * k; if (n <= h) printf "%s%d", (c++ ? "," : ""), n }')
		fresh="; measured on a fresh broker and bridge ramped again through $steps (the level above did not hold)"
		# a level did not hold: the restart runs on a fresh broker and bridge at the last
		# level held, not on the backlog of the overload
		bench_say "fleet[$tp]: the restart at $held devices, on a fresh broker and bridge"
		sims "$tp" "$steps" "$run-restart"
		rlines=$(grep -h '^fleet restart' "$run-restart"/fleet-*.txt || true)
	fi
	if [ -z "$rlines" ]; then
		bench_row fleet "devices back after a broker restart, $name" "not measured" \
			"no level held (target <= $target_s s: MISSED)"
		return 0
	fi
	worst() { # KEY: the largest value over the simulators, -1 if one of them has -1
		awk -v k="$1" '{ for (i = 1; i <= NF; i++) { split($i, a, "="); if (a[1] == k) { v = a[2] + 0; if (v < 0) bad = 1; if (v > m) m = v } } }
			END { print bad ? -1 : m }' <<<"$rlines"
	}
	sum() { awk -v k="$1" '{ for (i = 1; i <= NF; i++) { split($i, a, "="); if (a[1] == k) t += a[2] } } END { print t + 0 }' <<<"$rlines"; }
	local back_s acked_s ready_s p50 p90 back acked wss rn
	back_s=$(worst back_s) acked_s=$(worst acked_s) ready_s=$(worst ready_s)
	p50=$(worst p50_s) p90=$(worst p90_s) back=$(sum back) acked=$(sum acked) wss=$(sum on_wss)
	rn=$(sum n)
	local where=""
	[ "$tp" = wss ] && where="; $wss of them on WSS, the rest fell back to MQTTS"
	where="$where$fresh"
	[ "$rn" = "$held" ] || where="$where; the simulators held different levels: the restart ran at $rn"
	local result="$back_s s"
	[ "$back_s" = -1 ] && result="> 300 s ($back of $rn)"
	# reconnected is not recovered: the target is data flowing again, so the verdict is on the
	# second row, every session's data acknowledged again
	bench_row fleet "all $rn sessions reconnected after a broker restart, $name" "$result" \
		"from SIGTERM to every session connected and subscribed again (no verdict: see the next row); broker listening again after $ready_s s; p50 $p50 s, p90 $p90 s (per simulator, worst)$where; reconnect spread $(bench_calc "a / 1000" a="$spread") s, full-jitter backoff 1 s..5 min, connect timeout $connect_timeout s"
	if [ "$acked_s" = -1 ]; then
		result="> 300 s ($acked of $rn)"
		verdict="MISSED: $acked of $rn acked again within 300 s"
	elif [ "$(bench_calc 'b <= t' b="$acked_s" t="$target_s")" = 1 ]; then
		result="$acked_s s" verdict="met"
	else
		result="$acked_s s" verdict="MISSED by $(bench_calc 'b - t' b="$acked_s" t="$target_s") s"
	fi
	bench_verdict_quick verdict
	bench_row fleet "all $rn devices acked again after a broker restart, $name" "$result" \
		"from SIGTERM to every session having had all it sent since it reconnected acknowledged by the bridge (data flowing again) (target <= $target_s s: $verdict)"
}

for t in $transports; do
	fleet_run "$t" "${levels[$t]}"
done
