# shellcheck shell=bash
# Load generators: wrk, redis-benchmark, h2load and the fan-out client.
# Each run_* function leaves its figures in R_* globals (empty when unknown)
# and returns non-zero, with the reason in LOAD_ERROR, if the run failed.
# run_wrk, redis_bench and run_h2load also measure the share of CPU time the
# hypervisor stole during the run (R_STEAL, "steal N%" in R_NOTE).
#
# Sourced, not run. Expects common.sh and DURATION, THREADS, CONNECTIONS.

LOAD_ERROR=
R_RPS= R_P50= R_P99= R_NOTE= R_STEAL=

reset_results() { R_RPS= R_P50= R_P99= R_NOTE= R_STEAL= LOAD_ERROR=; }

# cpu_stat: "STEAL TOTAL", the jiffies so far of the aggregate "cpu " line of
# /proc/stat (steal is its 8th number, total the sum of all); empty if unknown.
cpu_stat() {
    awk '$1 == "cpu" { for (i = 2; i <= NF; i++) t += $i; print $9 + 0, t; exit }' /proc/stat 2>/dev/null
}

# steal_since CPU_STAT: sets R_STEAL to the percent of CPU time stolen since
# CPU_STAT (an earlier cpu_stat; empty when either reading is missing).
steal_since() {
    R_STEAL=$(awk -v a="$1" -v b="$(cpu_stat)" 'BEGIN {
        if (split(a, x, " ") < 2 || split(b, y, " ") < 2 || y[2] <= x[2]) exit
        printf "%.0f", 100 * (y[1] - x[1]) / (y[2] - x[2])
    }')
}

# note_steal: appends "steal N%" to R_NOTE (nothing if R_STEAL is unknown).
note_steal() { if [[ -n $R_STEAL ]]; then R_NOTE+="steal $R_STEAL%; "; fi; }

# run_wrk TAG URL [wrk args...] [-- script args...]: wrk -t$THREADS
# -c$CONNECTIONS -d$DURATION --latency (the script's arguments go after the
# URL, where wrk wants them). Non-2xx answers, socket errors and the CPU
# steal go to R_NOTE.
run_wrk() {
    local tag=$1 url=$2 out cpu0 rc=0 a script_args=() wrk_args=()
    shift 2
    while (($#)); do
        a=$1
        shift
        if [[ $a == -- ]]; then
            script_args=(-- "$@")
            break
        fi
        wrk_args+=("$a")
    done
    set -- "${wrk_args[@]}"
    reset_results
    out=$WORK/wrk-$tag.txt
    no_other_load
    log "$tag: wrk -t$THREADS -c$CONNECTIONS -d${DURATION}s --latency $* $url ${script_args[*]}"
    cpu0=$(cpu_stat)
    timeout $((DURATION + 60)) wrk -t"$THREADS" -c"$CONNECTIONS" -d"${DURATION}s" --latency "$@" "$url" "${script_args[@]}" >"$out" 2>&1 || rc=$?
    steal_since "$cpu0"
    if ((rc != 0)); then
        LOAD_ERROR="wrk failed: $(tail -n 2 "$out" | tr '\n' ' ')"
        return 1
    fi
    sed 's/^/   /' "$out" >&2
    local p50 p99 bad sock
    R_RPS=$(awk '/^Requests\/sec:/ { printf "%.0f", $2 }' "$out")
    p50=$(awk '$1 == "50%" { print $2 }' "$out")
    p99=$(awk '$1 == "99%" { print $2 }' "$out")
    bad=$(awk '/Non-2xx or 3xx responses:/ { print $NF }' "$out")
    sock=$(awk '/Socket errors:/ { gsub(",", ""); print $4 + $6 + $8 + $10 }' "$out")
    [[ -n $p50 ]] && R_P50=$(to_ms "$p50")
    [[ -n $p99 ]] && R_P99=$(to_ms "$p99")
    [[ -n $bad && $bad != 0 ]] && R_NOTE+="$bad non-2xx; "
    [[ -n $sock && $sock != 0 ]] && R_NOTE+="$sock socket errors; "
    note_steal
    [[ -n $R_RPS ]] || {
        LOAD_ERROR="no Requests/sec in the wrk output"
        return 1
    }
}

# redis_bench TAG TEST [redis-benchmark args...]: one redis-benchmark test
# (`-t TEST`) against REDIS_PORT. A short calibration run picks -n so the
# measured run lasts about DURATION seconds; R_STEAL is over the measured run.
redis_bench() {
    local tag=$1 test=$2 out rps n cpu0 rc=0
    shift 2
    reset_results
    out=$WORK/redis-benchmark-$tag.csv
    local base=(-h 127.0.0.1 -p "$REDIS_PORT" -c "$CONNECTIONS" -P 1 --threads "$THREADS" -t "$test" --csv "$@")
    no_other_load
    # Calibrate: about a second's worth of requests.
    if ! timeout 120 redis-benchmark "${base[@]}" -n "${REDIS_CALIBRATE_N:-5000}" >"$out" 2>&1; then
        LOAD_ERROR="redis-benchmark failed: $(tail -n 2 "$out" | tr '\n' ' ')"
        return 1
    fi
    rps=$(redis_csv_field "$out" 2)
    n=$(awk -v r="${rps:-0}" -v d="$DURATION" 'BEGIN { n = int(r * d); if (n < 5000) n = 5000; if (n > 20000000) n = 20000000; print n }')
    log "$tag: redis-benchmark ${base[*]} -n $n (calibrated at ${rps:-?} req/s)"
    cpu0=$(cpu_stat)
    timeout $((DURATION * 4 + 120)) redis-benchmark "${base[@]}" -n "$n" >"$out" 2>&1 || rc=$?
    steal_since "$cpu0"
    if ((rc != 0)); then
        LOAD_ERROR="redis-benchmark failed: $(tail -n 2 "$out" | tr '\n' ' ')"
        return 1
    fi
    sed 's/^/   /' "$out" >&2
    R_RPS=$(redis_csv_field "$out" 2 | awk '{ printf "%.0f", $1 }')
    R_P50=$(redis_csv_field "$out" 5)
    R_P99=$(redis_csv_field "$out" 7)
    R_NOTE="n=$n; "
    note_steal
    [[ -n $R_RPS ]] || {
        LOAD_ERROR="no figures in the redis-benchmark output"
        return 1
    }
}

# redis_csv_field FILE N: field N of the last data row of redis-benchmark --csv
# ("test","rps","avg_latency_ms","min_latency_ms","p50_latency_ms","p95_latency_ms",
# "p99_latency_ms","max_latency_ms").
redis_csv_field() {
    grep -v '^"test"' "$1" | grep '^"' | tail -n 1 | tr -d '"' | cut -d, -f"$2"
}

# run_h2load TAG URL: h2load over TLS (ALPN h2), CONNECTIONS clients,
# H2_STREAMS streams each, for DURATION seconds. h2load reports no latency
# percentiles: the mean request time goes to R_NOTE (so does the CPU steal).
run_h2load() {
    local tag=$1 url=$2 out cpu0 rc=0
    reset_results
    out=$WORK/h2load-$tag.txt
    no_other_load
    local args=(-t "$THREADS" -c "$CONNECTIONS" -m "$H2_STREAMS" -D "$DURATION" --warm-up-time 1 "$url")
    log "$tag: h2load ${args[*]}"
    cpu0=$(cpu_stat)
    timeout $((DURATION + 60)) h2load "${args[@]}" >"$out" 2>&1 || rc=$?
    steal_since "$cpu0"
    if ((rc != 0)); then
        LOAD_ERROR="h2load failed: $(grep -m1 -i 'error\|fail' "$out" | cut -c1-120)"
        return 1
    fi
    sed 's/^/   /' "$out" >&2
    R_RPS=$(awk '/^finished in/ { for (i = 1; i <= NF; i++) if ($(i + 1) == "req/s,") printf "%.0f", $i }' "$out")
    local mean failed
    mean=$(awk '/^time for request:/ { print $6 }' "$out")
    failed=$(awk '/^requests:/ { for (i = 1; i <= NF; i++) if ($(i + 1) ~ /^(failed|errored),?$/) s += $i } END { print s + 0 }' "$out")
    [[ -n $mean ]] && R_NOTE+="mean $(to_ms "$mean") ms (h2load has no percentiles); "
    [[ $failed != 0 ]] && R_NOTE+="$failed failed/errored; "
    grep -q 'h2' <(grep -i 'application protocol' "$out") || R_NOTE+="not h2?; "
    note_steal
    [[ -n $R_RPS && $R_RPS != 0 ]] || {
        LOAD_ERROR="h2load: no successful requests ($(grep -m1 '^requests:' "$out"))"
        return 1
    }
}

# run_fanout TAG SERVER_PID SUBCOMMAND ADDR N: the fan-out client with N
# subscribers, FANOUT_THREADS receiver threads polling every FANOUT_POLL_US. Reads the server's RSS
# before connecting and while the subscribers sit idle. Sets F_JSON (the
# client's result), F_RSS_BEFORE and F_RSS_IDLE (KiB). An empty SERVER_PID
# (floor: no server) leaves the RSS figures empty; an empty ADDR is not passed.
F_JSON= F_RSS_BEFORE= F_RSS_IDLE=
run_fanout() {
    local tag=$1 server=$2 sub=$3 addr=$4 n=$5 out err fifo pid
    reset_results
    F_JSON= F_RSS_BEFORE= F_RSS_IDLE=
    out=$WORK/fanout-$tag.out
    err=$WORK/fanout-$tag.err
    fifo=$WORK/fanout-$tag.go
    rm -f "$fifo"
    mkfifo "$fifo" || {
        LOAD_ERROR="mkfifo failed"
        return 1
    }
    sleep 0.5
    [[ -n $server ]] && F_RSS_BEFORE=$(rss_kb "$server")
    local args=("$sub")
    [[ -n $addr ]] && args+=("$addr")
    args+=(--subscribers "$n" --repeats "$FANOUT_REPEATS" --threads "${FANOUT_THREADS:-1}"
        --poll-us "${FANOUT_POLL_US:-100}" --pause-stdin)
    log "$tag: fanout ${args[*]} (server RSS before: ${F_RSS_BEFORE:-n/a} KiB)"
    timeout "$FANOUT_TIMEOUT" "$FANOUT_BIN" "${args[@]}" <"$fifo" >"$out" 2>"$err" &
    pid=$!
    track "$pid"
    # Read-write open: never blocks, and keeps the client's stdin open.
    exec 7<>"$fifo"
    if ! wait_until "$FANOUT_TIMEOUT" "$pid" grep -q '^idle ' "$out"; then
        exec 7>&-
        stop_pid "$pid"
        LOAD_ERROR="fan-out client: $(tail -n 2 "$err" | tr '\n' ' ' | cut -c1-200)"
        return 1
    fi
    sleep 1 # let the server settle after the last handshake
    [[ -n $server ]] && F_RSS_IDLE=$(rss_kb "$server")
    echo go >&7
    exec 7>&-
    local rc=0
    wait "$pid" || rc=$?
    stop_pid "$pid"
    sed 's/^/   /' "$err" >&2
    F_JSON=$(grep '^{' "$out" | tail -n 1)
    if [[ $rc != 0 || -z $F_JSON ]]; then
        LOAD_ERROR="fan-out client exited $rc: $(tail -n 2 "$err" | tr '\n' ' ' | cut -c1-200)"
        return 1
    fi
    log "$tag: $F_JSON (server RSS idle: ${F_RSS_IDLE:-n/a} KiB)"
}

# run_storm TAG SERVER_PID ADDR STORM_RATE: the fan-out client's `storm`
# subcommand against Spread at ADDR: STORM_WRITES PUTs at STORM_WRITE_RATE/s
# over STORM_CONNECTIONS connections, alone, then while STORM_SUBSCRIBERS
# WebSocket clients connect and disconnect (STORM_RATE sessions/s, 0 = flat
# out), then alone again. Sets S_JSON (the client's result) and the server's
# RSS before, after and at its peak (S_RSS_BEFORE, S_RSS_AFTER, S_RSS_PEAK, KiB),
# and the CPU steal over the run (R_STEAL).
S_JSON= S_RSS_BEFORE= S_RSS_AFTER= S_RSS_PEAK=
run_storm() {
    local tag=$1 server=$2 addr=$3 rate=$4 out err pid rc=0 cpu0
    reset_results
    S_JSON= S_RSS_BEFORE= S_RSS_AFTER= S_RSS_PEAK=
    out=$WORK/storm-$tag.out
    err=$WORK/storm-$tag.err
    S_RSS_BEFORE=$(rss_kb "$server")
    local args=(storm "$addr" --subscribers "$STORM_SUBSCRIBERS" --storm-rate "$rate"
        --writes "$STORM_WRITES" --rate "$STORM_WRITE_RATE" --connections "$STORM_CONNECTIONS")
    log "$tag: fanout ${args[*]} (server RSS before: $S_RSS_BEFORE KiB)"
    cpu0=$(cpu_stat)
    timeout "$STORM_TIMEOUT" "$FANOUT_BIN" "${args[@]}" >"$out" 2>"$err" &
    pid=$!
    track "$pid"
    wait "$pid" || rc=$?
    stop_pid "$pid"
    steal_since "$cpu0"
    S_RSS_AFTER=$(rss_kb "$server")
    S_RSS_PEAK=$(awk '/^VmHWM:/ { print $2 }' "/proc/$server/status" 2>/dev/null)
    sed 's/^/   /' "$err" >&2
    S_JSON=$(grep '^{' "$out" | tail -n 1)
    if [[ $rc != 0 || -z $S_JSON ]]; then
        LOAD_ERROR="storm client exited $rc: $(tail -n 2 "$err" | tr '\n' ' ' | cut -c1-200)"
        return 1
    fi
    log "$tag: server RSS $S_RSS_BEFORE -> $S_RSS_AFTER KiB (peak $S_RSS_PEAK KiB)"
}

# task_cpu PID: one line per thread of PID: "TID<tab>NAME<tab>CPU_NS" (CPU
# time so far, from /proc/PID/task/TID/schedstat).
task_cpu() {
    local t
    for t in /proc/"$1"/task/*; do
        printf '%s\t%s\t%s\n' "${t##*/}" "$(cat "$t/comm" 2>/dev/null)" \
            "$(cut -d' ' -f1 "$t/schedstat" 2>/dev/null)"
    done
}

# cpu_per_op BEFORE_FILE AFTER_FILE OPS: the CPU the process spent between two
# task_cpu readings, per operation: "TOTAL<tab>NAME a, NAME b, ..." in µs, by
# thread name (numbered threads such as sled-io-N summed), largest first.
cpu_per_op() {
    awk -F'\t' -v n="$3" '
        FNR == NR { before[$1] = $3; next }
        {
            c = $2; sub(/\|.*/, "", c); sub(/-[0-9]+$/, "", c)
            if (c == "spread-committe") c = "spread-committer"
            d = $3 - before[$1]; if (d < 0) d = 0
            by[c] += d; total += d
        }
        END {
            if (n <= 0) exit
            printf "%.0f\t", total / n / 1000
            sep = ""
            for (k = 0; k < 8; k++) {
                best = ""; max = -1
                for (c in by) if (by[c] > max) { max = by[c]; best = c }
                if (best == "" || max / n / 1000 < 0.5) break
                printf "%s%s %.0f", sep, best, max / n / 1000; sep = ", "
                delete by[best]
            }
            print ""
        }' "$1" "$2"
}

# run_latency TAG SYSTEM ADDR SERVER_PID [SUB_ADDR]: the fan-out client's `latency`
# (subscribing at SUB_ADDR when given: another node of a cluster)
# subcommand (SYSTEM spread or redis at ADDR): one subscriber, LATENCY_WRITES
# writes (+LATENCY_WARMUP) at LATENCY_RATE/s on another connection. Sets
# L_JSON (the client's result), R_P50 and R_P99 (delivery latency, ms),
# R_NOTE (max, p999, ack latency, misses, the server's CPU per write) and
# L_CPU (that CPU by thread), and the CPU steal over the run (R_STEAL).
L_JSON= L_CPU=
run_latency() {
    local tag=$1 system=$2 addr=$3 server=$4 out err rc=0 cpu0 cpu
    reset_results
    L_JSON= L_CPU=
    out=$WORK/latency-$tag.out
    err=$WORK/latency-$tag.err
    local args=(latency "$system" "$addr" --writes "$LATENCY_WRITES" --warmup "$LATENCY_WARMUP"
        --rate "$LATENCY_RATE" --value-bytes 100)
    [[ -n ${5:-} ]] && args+=(--sub-addr "$5")
    no_other_load
    log "$tag: fanout ${args[*]}"
    task_cpu "$server" >"$WORK/latency-$tag.cpu0"
    cpu0=$(cpu_stat)
    timeout "$LATENCY_TIMEOUT" "$FANOUT_BIN" "${args[@]}" >"$out" 2>"$err" || rc=$?
    steal_since "$cpu0"
    task_cpu "$server" >"$WORK/latency-$tag.cpu1"
    sed 's/^/   /' "$err" >&2
    L_JSON=$(grep '^{' "$out" | tail -n 1)
    if ((rc != 0)) || [[ -z $L_JSON ]]; then
        LOAD_ERROR="latency client exited $rc: $(tail -n 2 "$err" | tr '\n' ' ' | cut -c1-200)"
        return 1
    fi
    cpu=$(cpu_per_op "$WORK/latency-$tag.cpu0" "$WORK/latency-$tag.cpu1" "$((LATENCY_WRITES + LATENCY_WARMUP))")
    L_CPU=${cpu#*$'\t'}
    R_P50=$(jq -r .p50_ms <<<"$L_JSON")
    R_P99=$(jq -r .p99_ms <<<"$L_JSON")
    R_NOTE=$(jq -r --arg cpu "${cpu%%$'\t'*}" '
        "max \(.max_ms), p999 \(.p999_ms), ack p50 \(.ack_p50_ms) / p99 \(.ack_p99_ms) ms, "
        + "server CPU \($cpu) µs/write"
        + (if .missed > 0 then ", \(.missed) of \(.writes) missed" else "" end)
        + (if .late_writes > 0 then ", \(.late_writes) sent late" else "" end)' <<<"$L_JSON")
    R_NOTE+="; "
    note_steal
    log "$tag: $L_JSON; server CPU per write (µs): ${cpu%%$'\t'*} ($L_CPU)"
}
