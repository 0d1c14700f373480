#!/usr/bin/env bash
# device.sh - the device benchmark: outpost-device at the reference profile (sim collector, 100
# metrics every 10 s, batched every 60 s) connected to the real broker and the real bridge
# (SQLite), and the drain of a full 90-day offline spool once the link is back.
#   1. memory: peak RSS (VmHWM), and PSS and anonymous memory from /proc/PID/smaps_rollup, and
#      the working set (pages referenced during the run, via /proc/PID/clear_refs)
#      (most of the RSS is shared library pages);
#   2. CPU: % of one core over the run, from /proc/PID/stat ticks, once connected;
#   3. drain: bench_spoolfill writes, with the device's own spool, catalog, collector and batch
#      modules, what the agent seals in 90 days offline (129,600 signed batches, consecutive
#      seqs, prev_seq chain); then outpost-device starts with the link up and the clock runs
#      until the bridge has committed (and so acknowledged) the whole backlog; meanwhile the
#      live batches it seals must keep getting through (their delay is reported).
# Rows on stdout (AREA|MEASURE|RESULT|NOTE), progress on stderr.
set -euo pipefail

usage() {
	cat <<'USAGE'
Usage: bench/device.sh [--quick]
  --quick   60 s for memory/CPU instead of 5 minutes, and a 3-day backlog instead of 90 days
            (the 90-day drain time is then an extrapolation, labelled as such)
Environment: OUTPOST_BUILD_DIR (default build), BENCH_WORK (default build/bench-work),
BENCH_DEVICE_SECONDS (memory/CPU run length), BENCH_DRAIN_DAYS (backlog size in days).
USAGE
}

quick=0
for a in "$@"; do
	case $a in
	--quick) quick=1 ;;
	-h | --help) usage; exit 0 ;;
	*) echo "device.sh: unknown argument: $a" >&2; usage >&2; exit 2 ;;
	esac
done

# shellcheck source=bench/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
trap bench_cleanup EXIT

work=$BENCH_WORK/device
device_bin=$BENCH_BUILD/device/outpost-device
fill_bin=$BENCH_BUILD/bench/bench_spoolfill
for b in "$device_bin" "$fill_bin" "$BENCH_BUILD/bridge/outpost-bridge"; do
	[ -x "$b" ] || bench_fail "missing $b (build first)"
done
command -v sqlite3 >/dev/null || bench_fail "sqlite3 (the command-line shell) is needed"

# the reference profile
metrics=100 sample_s=10 batch_s=60
run_s=300 days=90
[ "$quick" = 1 ] && run_s=60 days=3
run_s=${BENCH_DEVICE_SECONDS:-$run_s}
days=${BENCH_DRAIN_DAYS:-$days}
full_batches=$((90 * 86400 / batch_s)) # 129,600
batches=$((days * 86400 / batch_s))
# 90 days of this profile is ~150 MB of spool (bench_spoolfill prints it): more than the
# default spool_max_bytes (64 MiB, ~38 days here), so the drain device gets a bigger spool
spool_max=256MiB spool_max_bytes=$((256 << 20))
drain_limit_s=1800
[ "$quick" = 1 ] && drain_limit_s=600
hz=$(getconf CLK_TCK)

mkdir -p "$work"
pki=$work/pki
bench_say "device: PKI with 2 devices"
bench_pki "$pki" 2
run=$work/run
rm -rf "$run"
mkdir -p "$run"
bench_broker_start "$pki" "$run/broker"
db=$run/device.db
bench_bridge_start "$pki" "sqlite:$db" "$run/bridge.log"
bench_wait_port "$BENCH_INTERNAL" 5 || true

fmt() { printf "%.${2:-1}f" "$1"; }
q() { sqlite3 -cmd '.timeout 5000' "$db" "$1" 2>/dev/null || true; }
dev_q() { # DEVICE COLUMNS -> "a|b|c" from the devices table
	q "SELECT $2 FROM devices WHERE device_id = '$1';"
}

start_device() { # ID STATE_DIR LOG [extra options]
	local id=$1 state=$2 log=$3
	shift 3
	"$device_bin" --id "$id" --broker-host localhost --wss-port "$BENCH_WSS" \
		--mqtts-port "$BENCH_MQTTS" --ca "$pki/ca.crt" --cert "$pki/devices/$id.crt" \
		--key "$pki/devices/$id.key" --bridge-cert "$pki/bridge.crt" --state-dir "$state" \
		--proxy none --collectors sim --sim-metrics "$metrics" --sample-interval "${sample_s}s" \
		--batch-interval "${batch_s}s" "$@" >>"$log" 2>&1 &
	DEVICE_PID=$!
	BENCH_PIDS+=("$DEVICE_PID")
}

wait_connected() { # LOG SECONDS
	for _ in $(seq 1 $(($2 * 10))); do
		grep -q 'connected to' "$1" 2>/dev/null && return 0
		kill -0 "$DEVICE_PID" 2>/dev/null || return 1
		sleep 0.1
	done
	return 1
}

smaps_kb() { # PID FIELD -> kB from smaps_rollup
	awk -v f="$2:" '$1 == f { print $2; found = 1 } END { if (!found) print 0 }' \
		"/proc/$1/smaps_rollup" 2>/dev/null || echo 0
}
status_kb() { awk -v f="$2:" '$1 == f { print $2 }' "/proc/$1/status" 2>/dev/null || echo 0; }
# sizes in MiB (2^20 bytes), labelled so; the RSS target of 6 MB is read as 10^6 bytes (5.72
# MiB), the stricter reading
mb() { bench_calc 'k / 1024' k="$1"; }
status=0

# ---------------------------------------------------------------- 1+2: memory and CPU
id=device-0001
log=$run/$id.log
bench_say "device: $id at the reference profile ($metrics metrics / ${sample_s} s, batch ${batch_s} s) for ${run_s} s"
start_device "$id" "$run/$id" "$log"
pid=$DEVICE_PID
wait_connected "$log" 30 || bench_fail "the device did not connect, see $log"
sleep 2 # Birth, first poll: the start is not the steady state
# working set: the pages the agent touches from here on (the kernel's referenced bits; RSS also
# keeps what start-up touched once, e.g. OpenSSL's initialisation)
ws_note="working set not measured (cannot write /proc/$pid/clear_refs)"
clear_ok=0
{ echo 1 >"/proc/$pid/clear_refs"; } 2>/dev/null && clear_ok=1
t0=$(date +%s.%N) c0=$(bench_cpu_ticks "$pid")
rss_max=0 pss_max=0 anon_max=0
deadline=$(($(date +%s) + run_s))
for _ in $(seq 1 $((run_s + 30))); do
	[ "$(date +%s)" -ge "$deadline" ] && break
	kill -0 "$pid" 2>/dev/null || bench_fail "the device exited, see $log"
	r=$(bench_rss_kb "$pid") p=$(smaps_kb "$pid" Pss) an=$(smaps_kb "$pid" Anonymous)
	[ "$r" -gt "$rss_max" ] && rss_max=$r
	[ "$p" -gt "$pss_max" ] && pss_max=$p
	[ "$an" -gt "$anon_max" ] && anon_max=$an
	sleep 1
done
t1=$(date +%s.%N) c1=$(bench_cpu_ticks "$pid")
hwm=$(status_kb "$pid" VmHWM)
[ "$hwm" -gt "$rss_max" ] && rss_max=$hwm
file_kb=$(smaps_kb "$pid" Rss)
file_kb=$((file_kb - $(smaps_kb "$pid" Anonymous)))
threads=$(status_kb "$pid" Threads)
[ "$clear_ok" = 1 ] &&
	ws_note="working set $(fmt "$(mb "$(smaps_kb "$pid" Referenced)")") MiB (pages touched during the run)"
stored=$(dev_q "$id" "envelopes || ' envelopes, ' || readings || ' readings'")
bench_stop_pid "$pid" 15
cpu_pct=$(bench_calc '100 * (c1 - c0) / hz / (t1 - t0)' c1="$c1" c0="$c0" hz="$hz" t1="$t1" t0="$t0")
cpu_ms=$(bench_calc '1000 * (c1 - c0) / hz' c1="$c1" c0="$c0" hz="$hz")
secs=$(bench_calc 't1 - t0' t1="$t1" t0="$t0")
bench_say "device: stored ${stored:-nothing} for $id; rss max ${rss_max} kB, pss max ${pss_max} kB, anon max ${anon_max} kB, cpu ${cpu_ms} ms in ${secs} s"
[ -n "$stored" ] || bench_fail "nothing stored for $id, see $log and $run/bridge.log"

rss_mb=$(mb "$rss_max") target_mib=$(bench_calc '6e6 / 1048576')
if awk -v x="$rss_mb" -v t="$target_mib" 'BEGIN { exit !(x <= t) }'; then
	verdict="met"
else
	verdict="MISSED by $(fmt "$(bench_calc 'x - t' x="$rss_mb" t="$target_mib")") MiB"
fi
bench_verdict_quick verdict
bench_row device "memory at the reference profile (${run_s} s, sim ${metrics} metrics)" \
	"RSS $(fmt "$rss_mb") MiB, PSS $(fmt "$(mb "$pss_max")") MiB, anon $(fmt "$(mb "$anon_max")") MiB" \
	"max over the run; $(fmt "$(mb "$file_kb")") MiB of the RSS is file pages (shared libraries), $threads threads; $ws_note; target <= 6 MB (10^6 B, $(fmt "$target_mib" 2) MiB) RSS: $verdict"
if awk -v x="$cpu_pct" 'BEGIN { exit !(x <= 1) }'; then
	verdict="met"
else
	verdict="MISSED by $(fmt "$(bench_calc 'x - 1' x="$cpu_pct")" 2) points"
fi
bench_verdict_quick verdict
verdict="target <= 1%: $verdict"
bench_row device "CPU at the reference profile" "$(fmt "$cpu_pct" 3)% of one core" \
	"$(fmt "$cpu_ms" 0) ms CPU in $(fmt "$secs" 0) s once connected; $verdict"

# ---------------------------------------------------------------- 3: the backlog drain
id=device-0002
state=$run/$id
log=$run/$id.log
bench_say "device: spooling $batches batches ($days days offline) for $id"
fill=$run/spoolfill.txt
"$fill_bin" --state-dir "$state" --id "$id" --key "$pki/devices/$id.key" --batches "$batches" \
	--metrics "$metrics" --sample-ms $((sample_s * 1000)) --batch-ms $((batch_s * 1000)) \
	--spool-max-bytes "$spool_max_bytes" >"$fill" 2>>"$run/spoolfill.log" ||
	bench_fail "bench_spoolfill failed, see $run/spoolfill.log"
last_seq=$(bench_kv "$fill" last_seq)
spool_bytes=$(bench_kv "$fill" spool_bytes)
if [ "$(bench_kv "$fill" spool_records)" != "$batches" ] || [ "$(bench_kv "$fill" dropped)" != 0 ]; then
	bench_fail "the spool did not keep the whole backlog: $(cat "$fill")"
fi
per_readings=$(bench_calc 'r / n' r="$(bench_kv "$fill" readings)" n="$batches")
per_batch=$(bench_calc 'b / n' b="$spool_bytes" n="$batches")
full_mb=$(bench_calc 'p * n / 1048576' p="$per_batch" n="$full_batches")
bench_say "device: spool $(fmt "$(mb $((spool_bytes / 1024)))") MiB, $(fmt "$per_batch" 0) B per batch (90 days: $(fmt "$full_mb" 0) MiB) in $(bench_kv "$fill" fill_s) s"

bench_say "device: starting $id with the link up; waiting for seq $last_seq to be stored (at most ${drain_limit_s} s)"
b0=$(bench_cpu_ticks "$BENCH_BRIDGE_PID")
t0=$(date +%s.%N) t0_ms=$(date +%s%3N)
start_device "$id" "$state" "$log" --spool-max-bytes "$spool_max"
pid=$DEVICE_PID
done_s="" frontier=0 last_report=0
deadline=$(($(date +%s) + drain_limit_s))
for _ in $(seq 1 $((drain_limit_s * 2))); do
	kill -0 "$pid" 2>/dev/null || bench_fail "the device exited, see $log"
	[ "$(date +%s)" -ge "$deadline" ] && break
	frontier=$(dev_q "$id" frontier)
	frontier=${frontier:-0}
	if [ "$frontier" -ge "$last_seq" ]; then
		t1=$(date +%s.%N)
		done_s=$(bench_calc 't1 - t0' t1="$t1" t0="$t0")
		break
	fi
	el=$(($(date +%s%3N) - t0_ms))
	if [ $((el / 10000)) -gt "$last_report" ]; then
		last_report=$((el / 10000))
		bench_say "device: drain: $frontier / $last_seq stored after $((el / 1000)) s"
	fi
	sleep 0.5
done
t1_ms=$(date +%s%3N)
dev_ticks=$(bench_cpu_ticks "$pid")
dev_rss=$(status_kb "$pid" VmHWM)
b1=$(bench_cpu_ticks "$BENCH_BRIDGE_PID")
wall=$(bench_calc '(b - a) / 1000' b="$t1_ms" a="$t0_ms")
dev_cpu=$(bench_calc '100 * t / hz / w' t="$dev_ticks" hz="$hz" w="$wall")
brg_cpu=$(bench_calc '100 * (b1 - b0) / hz / w' b1="$b1" b0="$b0" hz="$hz" w="$wall")

# live data during the drain: the batches the device sealed while it drained (seq above the
# backlog, sealed before the last backlog envelope was stored). Those not stored yet are
# counted too: the device seals one every batch interval from its start, so the drain's length
# says how many there are; they are waited for (bounded), and each must be stored no later
# than the last backlog envelope (live data goes ahead of the backlog), unless it was sealed in
# the drain's last second (it cannot be stored before the envelope stored as it was sealed).
# The agent schedules each batch one interval after the previous seal, so the schedule drifts
# late: one batch fewer than the drain's length says is tolerated.
live() { # -> "count|max delay ms|stored after the backlog's last" of live batches sealed before T_MS
	q "SELECT count(*), coalesce(max(e.stored_at - e.sent_at), 0),
	   coalesce(sum(e.sent_at <= $1 - 1000 AND e.stored_at > (SELECT max(b.stored_at)
	                FROM envelopes b WHERE b.device = d.id AND b.seq <= $last_seq)), 0)
	   FROM envelopes e JOIN devices d ON d.id = e.device WHERE d.device_id = '$id'
	   AND e.kind = 2 AND e.seq > $last_seq AND e.sent_at <= $1;"
}
live_ok=1
# the agent seals its first batch one batch interval after its "started:" log line (its run
# loop, after the spool is opened), then one every interval
start_ms=$t0_ms started=$(awk '/ started: / { print $1; exit }' "$log")
[ -n "$started" ] && start_ms=$(date -u -d "$started" +%s%3N 2>/dev/null || echo "$t0_ms")
# the drain ends when the last backlog envelope is stored (not when this script noticed)
end_ms=$t1_ms live_want=0
if [ -n "$done_s" ]; then
	end_ms=$(q "SELECT max(e.stored_at) FROM envelopes e JOIN devices d ON d.id = e.device
		WHERE d.device_id = '$id' AND e.seq <= $last_seq;")
	end_ms=${end_ms:-$t1_ms}
	live_want=$(((end_ms - start_ms) / (batch_s * 1000)))
fi
live_need=$((live_want > 0 ? live_want - 1 : 0))
for _ in $(seq 1 $((batch_s + 30))); do
	r=$(live "$end_ms")
	[ "${r%%|*}" -ge "$live_need" ] && break
	sleep 1
done
live_during=$(live "$end_ms")
IFS='|' read -r live_n live_max live_late <<<"$live_during"
live_note="$live_n of $live_want live batch(es) sealed during the drain stored, max delay seal -> stored ${live_max} ms"
if [ "$live_n" -lt "$live_need" ]; then
	live_ok=0
	live_note="LIVE DATA HELD BACK: $live_n of $live_want live batch(es) sealed during the drain stored within $((batch_s + 30)) s after it (max delay of those ${live_max} ms)"
elif [ "${live_late:-0}" -gt 0 ]; then
	live_ok=0
	live_note="LIVE DATA HELD BACK: $live_late of $live_n live batch(es) sealed during the drain stored after the last backlog envelope (max delay ${live_max} ms)"
fi
if [ -n "$done_s" ] && [ "$live_want" = 0 ]; then
	# the drain ended before the first live batch: wait for it, to show it is not held back
	for _ in $(seq 1 $((batch_s + 30))); do
		r=$(live 9999999999999)
		[ "${r%%|*}" -gt 0 ] && break
		sleep 1
	done
	r=$(live 9999999999999)
	IFS='|' read -r live_n live_max live_late <<<"$r"
	if [ "$live_n" -gt 0 ]; then
		live_note="no live batch was sealed during the drain (it is shorter than the ${batch_s} s batch interval); the first one after it: delay ${live_max} ms"
	else
		live_ok=0
		live_note="no live batch stored within $((batch_s + 30)) s after the drain (see $log)"
	fi
fi
[ "$live_ok" = 1 ] || status=1
segs=$(find "$state/spool" -name 'seg-*.log' | wc -l)
# nothing of the backlog may be missing: every envelope and every reading stored
got=$(q "SELECT count(*) || '|' || coalesce(sum(e.n_readings), 0) FROM envelopes e
	JOIN devices d ON d.id = e.device WHERE d.device_id = '$id' AND e.seq <= $last_seq;")
if [ -n "$done_s" ] && [ "$got" != "$batches|$(bench_kv "$fill" readings)" ]; then
	bench_fail "the store holds ${got:-nothing} (envelopes|readings) of the backlog, expected $batches|$(bench_kv "$fill" readings)"
fi
bench_say "device: drain ${done_s:-not finished} s; device cpu ${dev_cpu}%, bridge cpu ${brg_cpu}%, device VmHWM ${dev_rss} kB, segments left $segs; $live_note"
bench_stop_pid "$pid" 15
grep -q 'ignored an ack\|error' "$log" && bench_say "device: the device logged warnings/errors, see $log"

def_days=$(bench_calc '64 * 1048576 / p / (86400 / b)' p="$per_batch" b="$batch_s")
sizing="$(fmt "$per_batch" 0) B/batch of $(fmt "$per_readings" 0) readings: 90 days = ~$(fmt "$full_mb" 0) MiB of spool; the 64 MiB default spool_max_bytes holds ~$(fmt "$def_days" 0) days of this profile, so spool_max_bytes=$spool_max; spool segments left after the drain: $segs"
load="all ${got%%|*} envelopes and ${got##*|} readings stored; device $(fmt "$dev_cpu" 0)% / bridge $(fmt "$brg_cpu" 0)% of one core (machine load average $(cut -d' ' -f1 /proc/loadavg) on $(nproc) cores)"
if [ -z "$done_s" ]; then
	bench_row device "drain of a $days-day backlog ($batches batches)" "not finished in ${drain_limit_s} s" \
		"stored up to seq $frontier of $last_seq; $live_note; $load; target <= 10 min for 90 days: MISSED"
elif [ "$batches" = "$full_batches" ]; then
	rate=$(bench_calc 'n / s' n="$batches" s="$done_s")
	mins=$(bench_calc 's / 60' s="$done_s")
	if awk -v x="$mins" 'BEGIN { exit !(x <= 10) }'; then
		verdict="met"
	else
		verdict="MISSED by $(fmt "$(bench_calc 'x - 10' x="$mins")") min"
	fi
	[ "$live_ok" = 1 ] || verdict="MISSED (live data held back)"
	bench_verdict_quick verdict
	verdict="target <= 10 min, live data not held back: $verdict"
	bench_row device "drain of a 90-day backlog ($batches batches, $(fmt "$(bench_calc 'n * r / 1e6' n="$batches" r="$per_readings")") M readings)" \
		"$(fmt "$mins") min ($(fmt "$rate" 0) batches/s)" "$live_note; $load; $sizing; $verdict"
else
	rate=$(bench_calc 'n / s' n="$batches" s="$done_s")
	ext=$(bench_calc 's * f / n / 60' s="$done_s" f="$full_batches" n="$batches")
	if awk -v x="$ext" 'BEGIN { exit !(x <= 10) }'; then
		verdict="met (extrapolated)"
	else
		verdict="MISSED by $(fmt "$(bench_calc 'x - 10' x="$ext")") min (extrapolated)"
	fi
	[ "$live_ok" = 1 ] || verdict="MISSED (live data held back)"
	bench_verdict_quick verdict
	verdict="target <= 10 min, live data not held back: $verdict"
	bench_row device "drain of a $days-day backlog ($batches batches)" \
		"$(fmt "$done_s") s ($(fmt "$rate" 0) batches/s); EXTRAPOLATED to 90 days: $(fmt "$ext") min" \
		"linear extrapolation from $days days, not measured; $live_note; $load; $sizing; $verdict"
fi
exit $status
