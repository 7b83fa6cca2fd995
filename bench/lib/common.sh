# shellcheck shell=bash
# Shared helpers for bench/run.sh: logging, temp dir, free ports, process
# tracking (everything started is stopped by PID on exit), small parsers.
#
# Sourced, not run. Expects ROOT (the repository) to be set.

log() { printf '== %s\n' "$*" >&2; }
warn() { printf '!! %s\n' "$*" >&2; }
die() {
    printf 'bench: %s\n' "$*" >&2
    exit 1
}

# --- temp dir and processes --------------------------------------------------
WORK=$(mktemp -d -t spread-bench.XXXXXX)
PIDS=() # every background process we started, oldest first

# track PID: remember a process so cleanup stops it.
track() { PIDS+=("$1"); }

# stop_pid PID [GRACE_SECONDS]: TERM, wait, then KILL; forget the PID.
stop_pid() {
    local pid=$1 grace=${2:-10} i kept=()
    if kill -0 "$pid" 2>/dev/null; then
        kill "$pid" 2>/dev/null || true
        for ((i = 0; i < grace * 10; i++)); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.1
        done
        if kill -0 "$pid" 2>/dev/null; then
            warn "pid $pid ignored TERM for ${grace}s; sending KILL"
            kill -9 "$pid" 2>/dev/null || true
        fi
    fi
    wait "$pid" 2>/dev/null || true
    for i in "${PIDS[@]}"; do [[ $i == "$pid" ]] || kept+=("$i"); done
    PIDS=("${kept[@]}")
}

# stop_all: stops every tracked process, newest first.
stop_all() {
    local i
    for ((i = ${#PIDS[@]} - 1; i >= 0; i--)); do
        stop_pid "${PIDS[i]}"
    done
    PIDS=()
}

cleanup() {
    local rc=$?
    trap - EXIT INT TERM
    stop_all
    rm -rf "$WORK"
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# --- ports and waiting ---------------------------------------------------------
# free_port: prints a TCP port nothing listens on (random, checked).
free_port() {
    local port i
    for ((i = 0; i < 200; i++)); do
        port=$((10000 + RANDOM % 22000)) # below the ephemeral range (32768+)
        # Skip ports in the local (ephemeral) range's busy set and anything listening.
        if ! (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null &&
            ! grep -qi ":$(printf '%04X' "$port") " /proc/net/tcp /proc/net/tcp6 2>/dev/null; then
            echo "$port"
            return 0
        fi
    done
    return 1
}

# free_ports WHAT N: N distinct free ports into FREE_PORTS; else START_ERROR
# (naming WHAT), with PORT_TAKEN when one port came twice, and fails.
free_ports() {
    local what=$1 n=$2 i p
    FREE_PORTS=()
    for ((i = 0; i < n; i++)); do
        p=$(free_port) || {
            START_ERROR="$what: no free port"
            return 1
        }
        FREE_PORTS+=("$p")
    done
    if (($(printf '%s\n' "${FREE_PORTS[@]}" | sort -u | wc -l) != n)); then
        START_ERROR="$what: free_port gave one port twice" PORT_TAKEN=1
        return 1
    fi
}

# wait_until SECONDS PID CMD...: polls CMD every 50 ms until it succeeds;
# fails if PID dies or the deadline passes.
wait_until() {
    local secs=$1 pid=$2 deadline
    shift 2
    deadline=$((SECONDS + secs))
    until "$@" >/dev/null 2>&1; do
        if ! kill -0 "$pid" 2>/dev/null; then return 1; fi
        if ((SECONDS >= deadline)); then return 1; fi
        sleep 0.05
    done
}

# port_open PORT: something accepts connections on 127.0.0.1:PORT.
port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# rss_kb PID: resident memory of a process in KiB (VmRSS).
rss_kb() { awk '/^VmRSS:/ { print $2 }' "/proc/$1/status"; }

# no_other_load [SECONDS]: waits (bounded) while another load generator runs.
no_other_load() {
    local secs=${1:-180} deadline=$((SECONDS + ${1:-180})) others
    while others=$({ pgrep -x wrk; pgrep -x redis-benchmark; pgrep -x h2load; } | tr '\n' ' ') && [[ -n $others ]]; do
        if ((SECONDS >= deadline)); then
            warn "another load generator (pid $others) still runs after ${secs}s; going on anyway"
            return 0
        fi
        log "waiting: another load generator is running (pid $others)"
        sleep 5
    done
}

# --- unit conversions ----------------------------------------------------------
# to_ms VALUE: "512.00us" / "1.23ms" / "1.02s" / "3m" -> milliseconds (stdout).
to_ms() {
    awk -v v="$1" 'BEGIN {
        n = v + 0; u = v; sub(/^[0-9.]+/, "", u)
        if (u == "us") n /= 1000
        else if (u == "s") n *= 1000
        else if (u == "m") n *= 60000
        else if (u == "ns") n /= 1e6
        printf "%.3f", n
    }'
}

# b64 STRING: base64 without newlines.
b64() { printf '%s' "$1" | base64 -w0; }
