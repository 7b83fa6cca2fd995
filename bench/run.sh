#!/usr/bin/env bash
# Spread side by side with Redis, etcd and nginx on this machine.
#
#   bench/run.sh [--quick] [--no-build] [--no-install] [--only LIST]
#
# Builds Spread (release) and the fan-out client, installs the peers from
# Debian packages if missing (wrk, redis-server, etcd-server, etcd-client,
# nginx-light, nghttp2-client, jq), starts every server on 127.0.0.1 on a free
# port with a temp data dir, runs the workloads, prints one table of absolute
# figures and Spread/peer ratios, and writes it as JSON and Markdown to
# bench/results/side-by-side-<date>.{json,md} (with the servers' settings).
# Whatever cannot run is a row marked "n/a: <reason>".
#
# This VM's speed drifts (the hypervisor steals 0-40% of the CPU time), so get
# and put run in ROUNDS interleaved rounds: each round runs every system once,
# in turn, and the row of a system has the medians over its rounds, with each
# round's req/s and CPU steal in the note. Every load run notes its steal.
#
# Workloads (LIST for --only, comma-separated; default all):
#   get       GET of one hot 100-byte key: spread, nginx (static file),
#             etcd (JSON gateway range), redis (redis-benchmark GET)
#   put       100-byte writes to 10k keys, acked when durable: spread flush and
#             batch, etcd (JSON gateway put), redis AOF always and everysec
#   h2        HTTP/2 over TLS GET with h2load (spread: once it serves TLS)
#   fanout    1k and 10k subscribers, one write: time until the last has it,
#             and server RSS per idle subscriber: spread WebSocket vs redis pub/sub,
#             and the floor (no server: one thread writes a frame to each of N
#             loopback sockets, the kernel's cost on this machine)
#   storm     PUT latency at a steady rate (500/s, 2 connections), alone and
#             while 1000 WebSocket subscribers connect and disconnect in a
#             loop (at 2000 sessions/s, and flat out), then alone again
#   latency   write -> subscriber latency on one node: one subscriber, writes
#             at a steady rate (1000/s) on another connection, per-write
#             p50/p99/max: spread WebSocket (lazy and flush) vs redis
#             PUBLISH -> SUBSCRIBE and the actix floor (bench/actix_floor:
#             no store, only the thread hand-offs, with 2 and 0 of them), in
#             ROUNDS interleaved rounds; and one fdatasync's cost on the
#             data directories' filesystem
#   cluster   propagation (write at node A -> WebSocket subscriber at node
#             C, 3 nodes) vs a 3-server NATS cluster (PUB at one, SUB at
#             another), redis pub/sub and two linked actix floor servers
#             (2 and 0 hand-offs at each); replicated durable PUTs (3 nodes,
#             w=quorum and w=1) vs a 3-member etcd cluster; a forwarded GET
#             (2 nodes, replication 1) vs the same GET at the owner;
#             membership of 16 nodes: time to converge, and to declare a
#             node killed with SIGKILL dead
#   antientropy  k differing events among N (two embedded nodes, the merkle
#             walk): bytes against the minimum, questions, time, trees' bytes
#             per key (the antientropy binary of bench/embedded)
#   time      time travel on an embedded node (the time binary of
#             bench/embedded): ?at= reads vs latest reads, playback of 100k
#             events (events/s, RSS), write p50/p99 with and without
#             compaction of 1M history events running (RSS through the sweep)
#   embedded  cargo bench embedded -- 'get|set_lazy' (Node::get/set vs sled
#             get/insert), and RSS after loading 1M keys x 100 B into a Node
#             and into raw sled (the rss binary of bench/embedded)
#
# Options and environment:
#   --quick            smoke run: DURATION=3, ROUNDS=1 (get and put run for
#                      DURATION too), fan-out 1k only, 5 writes, latency 2000
#                      writes
#   --no-build         use the existing binaries
#   --no-install       do not apt-get missing tools (their rows become n/a)
#   --only LIST        run only these workloads
#   DURATION           seconds per load run of h2 (default 10)
#   ROUNDS             interleaved rounds of get, put and latency (default 3); each
#                      row is the median over the rounds
#   ROUND_DURATION     seconds per load run of get and put, that is per system
#                      and round (default 6)
#   THREADS            load generator threads (default 2)
#   CONNECTIONS        client connections (default 50)
#   H2_STREAMS         h2load concurrent streams per connection (default 1)
#   FANOUT_SIZES       subscriber counts (default "1000 10000")
#   FANOUT_REPEATS     measured writes per fan-out size (default 20)
#   FANOUT_DURABILITY  spread durability in the fan-out runs (default lazy:
#                      Redis pub/sub persists nothing either)
#   FANOUT_THREADS     receiver threads of the fan-out client (default 1)
#   FANOUT_POLL_US     fan-out client: during a write, poll the sockets every
#                      this many µs instead of waiting in epoll (default 100;
#                      0 = plain epoll wake-ups)
#   STORM_SUBSCRIBERS  storm clients (default 1000)
#   STORM_RATES        storm sessions per second, one run each; 0 = each
#                      client reconnects at once (default "2000 0")
#   STORM_WRITES       measured PUTs per phase (default 2000; a phase stops
#                      writing after 30 s)
#   STORM_WRITE_RATE   PUTs per second (default 500)
#   STORM_CONNECTIONS  writer connections (default 2)
#   STORM_DURABILITY   spread durability in the storm runs (default flush)
#   LATENCY_WRITES     measured writes per latency run (default 10000)
#   LATENCY_WARMUP     writes before them, not counted (default 500)
#   LATENCY_RATE       writes per second of the latency runs (default 1000)
#   LATENCY_TIMEOUT    seconds a latency run may take (default 300)
#   FSYNC_COUNT        fdatasyncs measured per round (default 1000)
#   CARGO_TARGET_DIR   where cargo builds (default <repo>/target)
#
# Everything runs on one machine, so the figures are indicative.

set -uo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT" || exit 1

QUICK=0 BUILD=1 INSTALL=1 ONLY=all
while [[ $# -gt 0 ]]; do
    case "$1" in
        --quick) QUICK=1 ;;
        --no-build) BUILD=0 ;;
        --no-install) INSTALL=0 ;;
        --only)
            ONLY=${2:?--only needs a list}
            shift
            ;;
        --only=*) ONLY=${1#--only=} ;;
        -h | --help)
            awk 'NR == 1 { next } /^#/ { sub(/^# ?/, ""); print; next } { exit }' "${BASH_SOURCE[0]}"
            exit 0
            ;;
        *)
            echo "run.sh: unknown option '$1' (try --help)" >&2
            exit 2
            ;;
    esac
    shift
done

if [[ $QUICK == 1 ]]; then
    DURATION=${DURATION:-3}
    ROUNDS=${ROUNDS:-1}
    ROUND_DURATION=${ROUND_DURATION:-$DURATION}
    FANOUT_SIZES=${FANOUT_SIZES:-1000}
    FANOUT_REPEATS=${FANOUT_REPEATS:-5}
    STORM_WRITES=${STORM_WRITES:-500}
    STORM_RATES=${STORM_RATES:-2000}
    LATENCY_WRITES=${LATENCY_WRITES:-2000}
    LATENCY_WARMUP=${LATENCY_WARMUP:-200}
    FSYNC_COUNT=${FSYNC_COUNT:-300}
    CRITERION_ARGS=${CRITERION_ARGS:---warm-up-time 1 --measurement-time 2}
fi
DURATION=${DURATION:-10}
ROUNDS=${ROUNDS:-3}
ROUND_DURATION=${ROUND_DURATION:-6}
THREADS=${THREADS:-2}
CONNECTIONS=${CONNECTIONS:-50}
H2_STREAMS=${H2_STREAMS:-1}
FANOUT_SIZES=${FANOUT_SIZES:-1000 10000}
FANOUT_REPEATS=${FANOUT_REPEATS:-20}
FANOUT_DURABILITY=${FANOUT_DURABILITY:-lazy}
FANOUT_THREADS=${FANOUT_THREADS:-1}
FANOUT_POLL_US=${FANOUT_POLL_US:-100}
FANOUT_TIMEOUT=${FANOUT_TIMEOUT:-300}
STORM_SUBSCRIBERS=${STORM_SUBSCRIBERS:-1000}
STORM_RATES=${STORM_RATES:-2000 0}
STORM_WRITES=${STORM_WRITES:-2000}
STORM_WRITE_RATE=${STORM_WRITE_RATE:-500}
STORM_CONNECTIONS=${STORM_CONNECTIONS:-2}
STORM_DURABILITY=${STORM_DURABILITY:-flush}
STORM_TIMEOUT=${STORM_TIMEOUT:-300}
LATENCY_WRITES=${LATENCY_WRITES:-10000}
LATENCY_WARMUP=${LATENCY_WARMUP:-500}
LATENCY_RATE=${LATENCY_RATE:-1000}
LATENCY_TIMEOUT=${LATENCY_TIMEOUT:-300}
FSYNC_COUNT=${FSYNC_COUNT:-1000}
CRITERION_ARGS=${CRITERION_ARGS:---warm-up-time 2 --measurement-time 5}

TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
[[ $TARGET_DIR == /* ]] || TARGET_DIR=$ROOT/$TARGET_DIR
BIN=$TARGET_DIR/release/spread
FANOUT_BIN=$TARGET_DIR/release/spread-bench-fanout
ACTIX_FLOOR_BIN=$TARGET_DIR/release/spread-bench-actix-floor

# shellcheck source=bench/lib/common.sh
source "$ROOT/bench/lib/common.sh"
# shellcheck source=bench/lib/servers.sh
source "$ROOT/bench/lib/servers.sh"
# shellcheck source=bench/lib/load.sh
source "$ROOT/bench/lib/load.sh"
# shellcheck source=bench/lib/report.sh
source "$ROOT/bench/lib/report.sh"

for setting in ROUNDS ROUND_DURATION LATENCY_WRITES LATENCY_RATE FSYNC_COUNT; do
    [[ ${!setting} =~ ^[1-9][0-9]*$ ]] || die "$setting must be a positive whole number, not '${!setting}'"
done
[[ $LATENCY_WARMUP =~ ^[0-9]+$ ]] || die "LATENCY_WARMUP must be a whole number, not '$LATENCY_WARMUP'"

wants() { [[ $ONLY == all || ,$ONLY, == *,$1,* ]]; }

STARTED=$SECONDS
declare -A PHASE_SECS=()
phase_start() { PHASE_T0=$SECONDS; }
phase_end() { PHASE_SECS[$1]=$((SECONDS - PHASE_T0)); }

# --- file descriptors: 10k subscribers on each side ------------------------------
HARD_NOFILE=$(ulimit -Hn)
if [[ $HARD_NOFILE == unlimited ]] || ((HARD_NOFILE >= 65536)); then
    ulimit -n 65536 2>/dev/null || true
fi
# 65536 when allowed; else as high as the hard limit goes.
if (($(ulimit -n) < 65536)); then ulimit -n "$HARD_NOFILE" 2>/dev/null || true; fi
NOFILE=$(ulimit -n)
log "open files limit: $NOFILE"

# --- tools ---------------------------------------------------------------------
# tool command -> Debian package
declare -A PACKAGE_OF=(
    [wrk]=wrk [redis-server]=redis-server [redis-benchmark]=redis-tools [redis-cli]=redis-tools
    [etcd]=etcd-server [etcdctl]=etcd-client [nginx]=nginx-light [h2load]=nghttp2-client
    [jq]=jq [curl]=curl [openssl]=openssl [nats-server]=nats-server
)
declare -A MISSING=() # tool -> why it is not there

have() { command -v "$1" >/dev/null 2>&1; }

install_tools() {
    local tool pkg wanted=() available=() candidate
    for tool in "${!PACKAGE_OF[@]}"; do
        have "$tool" || wanted+=("${PACKAGE_OF[$tool]}")
    done
    ((${#wanted[@]})) || return 0
    mapfile -t wanted < <(printf '%s\n' "${wanted[@]}" | sort -u)
    if [[ $INSTALL == 0 ]]; then
        log "not installing (--no-install): ${wanted[*]}"
    elif [[ $(id -u) != 0 ]] || ! have apt-get; then
        warn "cannot install ${wanted[*]} (needs root and apt-get)"
    else
        log "installing: ${wanted[*]}"
        apt-get update -qq || warn "apt-get update failed"
        for pkg in "${wanted[@]}"; do
            candidate=$(apt-cache policy "$pkg" 2>/dev/null | awk '/Candidate:/ { print $2 }')
            if [[ -z $candidate || $candidate == "(none)" ]]; then
                warn "package $pkg: no installation candidate"
            else
                available+=("$pkg")
            fi
        done
        if ((${#available[@]})); then
            DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${available[@]}" >"$WORK/apt.log" 2>&1 ||
                for pkg in "${available[@]}"; do # one by one, so one failure costs one package
                    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$pkg" >>"$WORK/apt.log" 2>&1 ||
                        warn "apt-get install $pkg failed"
                done
        fi
    fi
    for tool in "${!PACKAGE_OF[@]}"; do
        have "$tool" || MISSING[$tool]="${tool} missing (package ${PACKAGE_OF[$tool]} not installed)"
    done
}

phase_start
install_tools
phase_end install
for tool in jq curl; do
    have "$tool" || die "$tool is required (apt-get install $tool)"
done

# why_not TOOL...: the reason the first missing tool is missing (empty: all there).
why_not() {
    local t
    for t in "$@"; do
        if [[ -n ${MISSING[$t]:-} ]]; then
            printf '%s' "${MISSING[$t]}"
            return 0
        fi
    done
}

# --- build ---------------------------------------------------------------------
phase_start
if [[ $BUILD == 1 ]]; then
    log "building spread, the fan-out client and the actix floor (release) into $TARGET_DIR"
    cargo build --release --bin spread || die "cargo build --release --bin spread failed"
    cargo build --release -p spread-bench-fanout || die "cargo build -p spread-bench-fanout failed"
    cargo build --release -p spread-bench-actix-floor || die "cargo build -p spread-bench-actix-floor failed"
    if wants embedded; then
        cargo bench -p spread-actors --bench embedded --no-run ||
            warn "cargo bench --no-run failed; the embedded rows will be n/a"
    fi
fi
phase_end build
[[ -x $BIN ]] || die "no spread binary at $BIN"

VALUE=$(head -c 100 /dev/zero | tr '\0' 'v')
no_other_load
LOADAVG_START=$(cut -d' ' -f1-3 /proc/loadavg)
if awk -v l="${LOADAVG_START%% *}" -v n="$(nproc)" 'BEGIN { exit !(l > n) }'; then
    warn "load average $LOADAVG_START on $(nproc) cores: something else is busy; figures will be noisy"
fi

# spread_put_hot: stores VALUE at /raw/bench/hot and reads it back.
spread_put_hot() {
    local got
    printf '%s' "$VALUE" |
        curl -fsSk -o /dev/null -X PUT --data-binary @- -H 'Content-Type: application/octet-stream' \
            "$SPREAD_SCHEME://$SPREAD_ADDR/raw/bench/hot" || return 1
    got=$(curl -fsSk "$SPREAD_SCHEME://$SPREAD_ADDR/raw/bench/hot" | wc -c)
    [[ $got == 100 ]] || {
        warn "GET /raw/bench/hot returned $got bytes, expected 100"
        return 1
    }
}

# clear_errors: forget the reasons of earlier failures (before each attempt).
clear_errors() { LOAD_ERROR= START_ERROR=; }
# na_reason: why the last attempt failed.
na_reason() { printf '%s' "${LOAD_ERROR:-${START_ERROR:-failed (see the log above)}}"; }

# --- rounds ----------------------------------------------------------------------
# get and put run ROUNDS rounds; each round runs every system of the workload
# once, in turn (a fresh server per run), so all of them see the same drift of
# the machine's speed. Each run is recorded (record_round, record_round_na) and
# add_median_rows makes one row per system from the medians.

# round_log WORKLOAD ROUND: announces a round.
round_log() { log "$1: round $2 of $ROUNDS (${ROUND_DURATION}s per run)"; }

# one_round KEY WORKLOAD SYSTEM SETTINGS NOTE TOOLS RUN [ARGS...]: one round of
# one system. Without the TOOLS (space-separated) the round is n/a; else RUN
# ARGS starts the server and loads it (LOAD_ERROR or START_ERROR say why it
# failed), and its figures are recorded under KEY. Stops what it started.
one_round() {
    local key=$1 w=$2 system=$3 settings=$4 note=$5 tools=$6 why
    shift 6
    clear_errors
    # shellcheck disable=SC2086 # TOOLS is a word list
    why=$(why_not $tools)
    if [[ -n $why ]]; then
        record_round_na "$key" "$w" "$system" "$settings" "$why"
    elif "$@"; then
        record_round "$key" "$w" "$system" "$settings" "$note" rps,p50_ms
    else
        record_round_na "$key" "$w" "$system" "$settings" "$(na_reason)"
    fi
    stop_all
}

# --- 1. hot-key GET ------------------------------------------------------------
# Each *_get ROUND starts its server, stores the 100-byte value, and loads it.
spread_get() {
    start_spread get flush && spread_put_hot &&
        run_wrk "spread-get-r$1" "http://$SPREAD_ADDR/raw/bench/hot"
}
nginx_get() {
    start_nginx && run_wrk "nginx-get-r$1" "http://127.0.0.1:$NGINX_PORT/raw/bench/hot"
}
etcd_get() {
    start_etcd && etcd_put bench/hot "$VALUE" &&
        run_wrk "etcd-get-r$1" "http://127.0.0.1:$ETCD_PORT" -s "$ROOT/bench/lua/etcd-range.lua"
}
redis_get() {
    start_redis get || return 1
    if ! redis-benchmark -h 127.0.0.1 -p "$REDIS_PORT" -t set -n 1 -c 1 -d 100 -q >/dev/null 2>&1 ||
        [[ $(redis-cli -p "$REDIS_PORT" strlen 'key:__rand_int__') != 100 ]]; then
        LOAD_ERROR="could not preload the key"
        return 1
    fi
    redis_bench "redis-get-r$1" get -d 100
}

workload_get() {
    local w="GET hot key (100 B)" r
    local DURATION=$ROUND_DURATION # seen by run_wrk and redis_bench
    for ((r = 1; r <= ROUNDS; r++)); do
        round_log get "$r"
        one_round spread "$w" spread "GET /raw/bench/hot, wrk" "" "wrk" spread_get "$r"
        one_round nginx "$w" nginx "static file, wrk" "" "wrk nginx openssl" nginx_get "$r"
        one_round etcd "$w" etcd "POST /v3/kv/range, serializable (JSON, value in base64), wrk" "" \
            "wrk etcd" etcd_get "$r"
        one_round redis "$w" redis "GET, redis-benchmark -P 1 --threads $THREADS" "" \
            "redis-server redis-benchmark redis-cli" redis_get "$r"
    done
    add_median_rows "$w"
}

# --- 2. durable PUT --------------------------------------------------------------
# spread_put ROUND MODE, etcd_put_load ROUND, redis_set ROUND MODE: start the
# server (durability MODE) and load it with 100-byte writes to 10k keys.
spread_put() {
    start_spread "put-$2" "$2" &&
        run_wrk "spread-put-$2-r$1" "http://$SPREAD_ADDR" -s "$ROOT/bench/put.lua"
}
etcd_put_load() {
    start_etcd &&
        run_wrk "etcd-put-r$1" "http://127.0.0.1:$ETCD_PORT" -s "$ROOT/bench/lua/etcd-put.lua"
}
redis_set() {
    start_redis "aof-$2" "appendonly yes" "appendfsync $2" &&
        redis_bench "redis-set-$2-r$1" set -d 100 -r 10000
}

workload_put() {
    local w="PUT 100 B to 10k keys, durable ack" r mode
    local DURATION=$ROUND_DURATION # seen by run_wrk and redis_bench
    for ((r = 1; r <= ROUNDS; r++)); do
        round_log put "$r"
        for mode in flush batch; do
            one_round "spread-$mode" "$w" spread "$mode" "PUT /raw/bench/k<1..10000>, wrk" "wrk" \
                spread_put "$r" "$mode"
        done
        one_round etcd "$w" etcd "POST /v3/kv/put (JSON gateway, WAL fsync), wrk" "" "wrk etcd" \
            etcd_put_load "$r"
        for mode in always everysec; do
            one_round "redis-$mode" "$w" redis "SET, appendfsync $mode, redis-benchmark -P 1" "" \
                "redis-server redis-benchmark" redis_set "$r" "$mode"
        done
    done
    add_median_rows "$w"
}

# --- 3. HTTP/2 over TLS ----------------------------------------------------------
# h2_row SYSTEM SETTINGS URL: one h2load row (the server must be up).
h2_row() {
    local w="GET hot key, HTTP/2 + TLS (h2load)"
    if run_h2load "h2-$1" "$3"; then
        add_row "$w" "$1" "$2" "$R_RPS" "" "" "$R_NOTE" rps
    else
        add_na "$w" "$1" "$2" "$LOAD_ERROR"
    fi
}

workload_h2() {
    local w="GET hot key, HTTP/2 + TLS (h2load)" why
    clear_errors
    why=$(why_not h2load openssl)
    if [[ -n $why ]]; then
        add_na "$w" spread "h2 + TLS" "$why"
    elif ! "$BIN" serve --help 2>/dev/null | grep -q -- '--tls-cert'; then
        add_na "$w" spread "h2 + TLS" "TLS not served yet (spread serve has no --tls-cert)"
    elif ensure_cert && start_spread h2 flush --tls-cert "$CERT" --tls-key "$KEY" && spread_put_hot; then
        h2_row spread "h2 + TLS, -m $H2_STREAMS" "$SPREAD_SCHEME://$SPREAD_ADDR/raw/bench/hot"
    else
        add_na "$w" spread "h2 + TLS" "$(na_reason)"
    fi
    stop_all

    clear_errors

    why=$(why_not h2load nginx openssl)
    if [[ -n $why ]]; then
        add_na "$w" nginx "static file, h2 + TLS" "$why"
    elif start_nginx; then
        h2_row nginx "static file, h2 + TLS, -m $H2_STREAMS" "https://127.0.0.1:$NGINX_TLS_PORT/raw/bench/hot"
    else
        add_na "$w" nginx "static file, h2 + TLS" "$(na_reason)"
    fi
    stop_all
}

# --- 4. fan-out ------------------------------------------------------------------
# fanout_row WORKLOAD SYSTEM SETTINGS N: a row from the last run_fanout. Without
# a server process (floor) the RSS figures are n/a and only p50 is compared.
fanout_row() {
    local n=$4 per=null before=null idle=null metrics=p50_ms rss extra note
    if [[ -n $F_RSS_BEFORE && -n $F_RSS_IDLE ]]; then
        per=$(awk -v a="$F_RSS_BEFORE" -v b="$F_RSS_IDLE" -v n="$n" 'BEGIN { printf "%.2f", (b - a) / n }')
        before=$F_RSS_BEFORE idle=$F_RSS_IDLE metrics=p50_ms,rss_kib_per_sub
        rss="RSS $per KiB/subscriber ($((before / 1024)) -> $((idle / 1024)) MiB)"
    else
        rss="RSS n/a (no server process)"
    fi
    extra=$(jq -c --argjson before "$before" --argjson idle "$idle" --argjson per "$per" \
        '{max_ms, rss_kib_per_sub: $per, rss_before_kib: $before, rss_idle_kib: $idle, fanout: .}' <<<"$F_JSON")
    note=$(jq -r --arg rss "$rss" \
        '"last delivery over \(.repeats) writes, max \(.max_ms) ms; first delivery p50 \(.first_p50_ms) ms; median delivery \(.delivery_p50_ms) ms; \($rss); connect \(.connect_s) s; client \(.threads) receiver thread(s), poll \(.poll_us) µs"
         + (if .send_loop_p50_ms then "; sender write loop p50 \(.send_loop_p50_ms) ms" else "" end)' <<<"$F_JSON")
    add_row "$1" "$2" "$3" "" "$(jq -r .p50_ms <<<"$F_JSON")" "$(jq -r .p99_ms <<<"$F_JSON")" \
        "$note" "$metrics" "$extra"
}

workload_fanout() {
    local n w why
    if [[ ! -x $FANOUT_BIN ]]; then
        MISSING[fanout]="no fan-out client at $FANOUT_BIN"
    fi
    for n in $FANOUT_SIZES; do
        w="fan-out: $n subscribers, 1 write"
        if ((n + 100 > NOFILE)); then
            add_na "$w" spread "WebSocket" "open files limit $NOFILE is too low for $n subscribers"
            add_na "$w" redis "pub/sub" "open files limit $NOFILE is too low for $n subscribers"
            add_na "$w" floor "loopback TCP" "open files limit $NOFILE is too low for $n subscribers"
            continue
        fi
        clear_errors
        why=${MISSING[fanout]:-}
        if [[ -n $why ]]; then
            add_na "$w" spread "WebSocket /wss" "$why"
        elif start_spread "fan-$n" "$FANOUT_DURABILITY" &&
            run_fanout "spread-$n" "$SPREAD_PID" spread "$SPREAD_ADDR" "$n"; then
            fanout_row "$w" spread "WebSocket /wss, PUT, durability $FANOUT_DURABILITY" "$n"
        else
            add_na "$w" spread "WebSocket /wss" "$(na_reason)"
        fi
        stop_all

        clear_errors

        why=${MISSING[fanout]:-$(why_not redis-server)}
        if [[ -n $why ]]; then
            add_na "$w" redis "pub/sub" "$why"
        elif start_redis "fan-$n" && run_fanout "redis-$n" "$REDIS_PID" redis "127.0.0.1:$REDIS_PORT" "$n"; then
            fanout_row "$w" redis "SUBSCRIBE/PUBLISH, no persistence" "$n"
        else
            add_na "$w" redis "pub/sub" "$(na_reason)"
        fi
        stop_all

        clear_errors

        # The floor: no server, the client's own child process sends one frame
        # to each subscriber from one thread (the kernel's per-core cost).
        why=${MISSING[fanout]:-}
        if [[ -n $why ]]; then
            add_na "$w" floor "loopback TCP" "$why"
        elif run_fanout "floor-$n" "" floor "" "$n"; then
            fanout_row "$w" floor "loopback TCP, 1 sending thread, no server" "$n"
        else
            add_na "$w" floor "loopback TCP" "$(na_reason)"
        fi
        stop_all
    done
}

# --- 4b. writers during a subscriber storm -----------------------------------------
# storm_rows RATE: rows from the last run_storm: the writers' baseline (the
# first run only) and their latency during the storm, with the storm's
# figures, the run's own baseline and the after phase in the note.
STORM_BASELINE_ADDED=
storm_rows() {
    local w="PUT latency during a subscriber storm" what extra note
    if [[ $1 == 0 ]]; then what="flat out"; else what="$1 sessions/s"; fi
    if [[ -z $STORM_BASELINE_ADDED ]]; then
        STORM_BASELINE_ADDED=1
        add_row "$w" spread "no storm: $STORM_WRITE_RATE PUT/s, $STORM_CONNECTIONS connections, $STORM_DURABILITY" \
            "" "$(jq -r .baseline.p50_ms <<<"$S_JSON")" "$(jq -r .baseline.p99_ms <<<"$S_JSON")" \
            "$(jq -r '.baseline | "max \(.max_ms) ms over \(.writes) writes; \(.writes_per_s) PUT/s"' <<<"$S_JSON")" \
            p50_ms "$(jq -c '{max_ms: .baseline.max_ms, storm: .}' <<<"$S_JSON")"
    fi
    extra=$(jq -c --argjson b "$S_RSS_BEFORE" --argjson a "$S_RSS_AFTER" --argjson p "${S_RSS_PEAK:-null}" \
        '{max_ms: .storm.max_ms, p99_ratio, rss_before_kib: $b, rss_after_kib: $a, rss_peak_kib: $p, storm: .}' <<<"$S_JSON")
    note=$(jq -r --arg rss "server RSS $((S_RSS_BEFORE / 1024)) -> $((S_RSS_AFTER / 1024)) MiB, peak $((${S_RSS_PEAK:-0} / 1024)) MiB" '
        "p99 \(.p99_ratio)x, p50 \(.p50_ratio)x the baseline of this run (\(.baseline.p50_ms) / \(.baseline.p99_ms) ms); "
        + "max \(.storm.max_ms) ms over \(.storm.writes) writes at \(.storm.writes_per_s) PUT/s (from the schedule: p99 \(.storm.scheduled_p99_ms) ms); "
        + "storm \(.storm.sessions_per_s) sessions/s, \(.storm.ready_sessions_per_s)/s to ready (\(.keys)-value snapshot), \(.storm.storm_errors) failed; "
        + "after the storm p50 / p99 \(.after.p50_ms) / \(.after.p99_ms) ms; \($rss)"' <<<"$S_JSON")
    [[ -n $R_STEAL ]] && note+="; steal $R_STEAL% over the three phases"
    add_row "$w" spread "storm: $STORM_SUBSCRIBERS WebSocket clients, $what" "" \
        "$(jq -r .storm.p50_ms <<<"$S_JSON")" "$(jq -r .storm.p99_ms <<<"$S_JSON")" "$note" p50_ms "$extra"
}

workload_storm() {
    local w="PUT latency during a subscriber storm" rate why
    if [[ ! -x $FANOUT_BIN ]]; then
        MISSING[fanout]="no fan-out client at $FANOUT_BIN"
    fi
    for rate in $STORM_RATES; do
        clear_errors
        why=${MISSING[fanout]:-}
        if ((STORM_SUBSCRIBERS + 100 > NOFILE)); then
            why="open files limit $NOFILE is too low for $STORM_SUBSCRIBERS subscribers"
        fi
        if [[ -n $why ]]; then
            add_na "$w" spread "storm $rate sessions/s" "$why"
        elif start_spread "storm-$rate" "$STORM_DURABILITY" &&
            run_storm "storm-$rate" "$SPREAD_PID" "$SPREAD_ADDR" "$rate"; then
            storm_rows "$rate"
        else
            add_na "$w" spread "storm $rate sessions/s" "$(na_reason)"
        fi
        stop_all
    done
}

# --- 4c. write -> subscriber latency ------------------------------------------------
# Each round runs Spread lazy, Redis and Spread flush in turn (a fresh server
# each), then measures fdatasync on the filesystem of the data directories.
LAT_W="write -> subscriber latency, 1 subscriber, $LATENCY_RATE writes/s"
FSYNC_W="fdatasync on the data directories' filesystem"

# spread_latency ROUND MODE, redis_latency ROUND: start the server and run
# the latency client against it.
spread_latency() {
    start_spread "lat-$2" "$2" && run_latency "spread-$2-r$1" spread "$SPREAD_ADDR" "$SPREAD_PID"
}
redis_latency() {
    start_redis lat && run_latency "redis-r$1" redis "127.0.0.1:$REDIS_PORT" "$REDIS_PID"
}
# start_floor TAG HOPS [--relay-to ADDR]: an actix floor server
# (bench/actix_floor: no store, a write handed through HOPS actor threads to
# the WebSocket sessions, and relayed over one link with --relay-to); sets
# FLOOR_PID and FLOOR_ADDR.
start_floor() {
    local out=$WORK/actix-floor-$1.log
    [[ -x $ACTIX_FLOOR_BIN ]] || {
        LOAD_ERROR="no actix floor server at $ACTIX_FLOOR_BIN"
        return 1
    }
    "$ACTIX_FLOOR_BIN" --hops "$2" "${@:3}" >"$out" 2>&1 &
    FLOOR_PID=$!
    track "$FLOOR_PID"
    wait_until "$START_DEADLINE" "$FLOOR_PID" floor_addr "$out" || {
        LOAD_ERROR="the actix floor server ($1) did not start: $(tail -n 1 "$out")"
        return 1
    }
    FLOOR_ADDR=$(floor_addr "$out")
}
floor_addr() { grep -o 'listening on http://[0-9.:]*' "$1" | head -n 1 | sed 's|.*http://||'; }
# floor_latency ROUND HOPS: one floor server, measured with the same client
# as Spread.
floor_latency() {
    start_floor "lat-$2" "$2" && run_latency "actix-floor-$2-r$1" spread "$FLOOR_ADDR" "$FLOOR_PID"
}

# latency_round KEY SYSTEM SETTINGS TOOLS RUN [ARGS...]: as one_round, for the
# latency rows (p50 and p99 compared; the fixed note is the server's CPU per
# write by thread, from the last round).
latency_round() {
    local key=$1 system=$2 settings=$3 tools=$4 why
    shift 4
    clear_errors
    # shellcheck disable=SC2086 # TOOLS is a word list
    why=$(why_not $tools)
    [[ -z $why && ! -x $FANOUT_BIN ]] && why="no fan-out client at $FANOUT_BIN"
    local w=${ROUND_W:-$LAT_W}
    if [[ -n $why ]]; then
        record_round_na "$key" "$w" "$system" "$settings" "$why"
    elif "$@"; then
        record_round "$key" "$w" "$system" "$settings" \
            "$system CPU per write by thread in the last round (µs): $L_CPU" p50_ms,p99_ms
    else
        record_round_na "$key" "$w" "$system" "$settings" "$(na_reason)"
    fi
    stop_all
}

# fsync_round: one fdatasync measurement in $WORK (where the data directories
# are); appends its figures to FSYNC_JSONS.
FSYNC_JSONS=()
fsync_round() {
    local json
    [[ -x $FANOUT_BIN ]] || return 1
    json=$("$FANOUT_BIN" fdatasync "$WORK" --count "$FSYNC_COUNT" --bytes 128 --gap-us 1000 2>"$WORK/fsync.err" |
        grep '^{' | tail -n 1)
    if [[ -z $json ]]; then
        warn "fdatasync probe failed: $(tail -n 1 "$WORK/fsync.err")"
        return 1
    fi
    log "fdatasync: $json"
    FSYNC_JSONS+=("$json")
}

# lat_fig SETTINGS FIELD: FIELD of the latency row with SETTINGS (empty if none).
lat_fig() {
    jq -rs --arg w "$LAT_W" --arg s "$1" --arg f "$2" \
        'map(select(.workload == $w and .settings == $s and .status == "ok"))[0][$f] // empty' "$ROWS_FILE"
}

workload_latency() {
    local r lazy="lazy (WebSocket /wss, PUT)" flush="flush (WebSocket /wss, PUT)" redis="PUBLISH -> SUBSCRIBE, no persistence"
    local floor2="no store: HTTP worker -> 2 actor threads (Spread's hand-offs) -> WebSocket session"
    local floor0="no store: HTTP worker -> WebSocket session, no hand-off between"
    for ((r = 1; r <= ROUNDS; r++)); do
        log "latency: round $r of $ROUNDS ($LATENCY_WRITES writes at $LATENCY_RATE/s per run)"
        latency_round spread-lazy spread "$lazy" "" spread_latency "$r" lazy
        latency_round redis redis "$redis" "redis-server redis-cli" redis_latency "$r"
        latency_round spread-flush spread "$flush" "" spread_latency "$r" flush
        latency_round floor-2 actix-floor "$floor2" "" floor_latency "$r" 2
        latency_round floor-0 actix-floor "$floor0" "" floor_latency "$r" 0
        fsync_round
    done
    add_median_rows "$LAT_W"

    # fdatasync: medians over the rounds, and the goal of the issue: p50 and
    # p99 with lazy <= Redis; with flush <= Redis + one fdatasync (its p50).
    local fs fsj note verdict
    fs=$(df -T "$WORK" 2>/dev/null | awk 'NR == 2 { print $2 " on " $1 }')
    if ((${#FSYNC_JSONS[@]} == 0)); then
        add_na "$FSYNC_W" disk "fdatasync" "the probe failed (see the log)"
        return 0
    fi
    fsj=$(printf '%s\n' "${FSYNC_JSONS[@]}" | jq -cs '
        def median: sort | length as $n | if $n % 2 == 1 then .[($n - 1) / 2] else (.[$n / 2 - 1] + .[$n / 2]) / 2 end;
        {p50_ms: (map(.p50_ms) | median), p99_ms: (map(.p99_ms) | median),
         overwrite_p50_ms: (map(.overwrite_p50_ms) | median),
         rounds: (map("\(.p50_ms) / \(.p99_ms) ms") | join(", "))}')
    verdict=$(jq -rn --argjson f "$fsj" \
        --arg lp50 "$(lat_fig "$lazy" p50_ms)" --arg lp99 "$(lat_fig "$lazy" p99_ms)" \
        --arg fp50 "$(lat_fig "$flush" p50_ms)" --arg fp99 "$(lat_fig "$flush" p99_ms)" \
        --arg rp50 "$(lat_fig "$redis" p50_ms)" --arg rp99 "$(lat_fig "$redis" p99_ms)" '
        def num: if . == "" then null else tonumber end;
        def r3: . * 1000 | round / 1000;
        def r2: . * 100 | round / 100;
        def check($a; $b): if $a <= $b then "met" else "NOT met" end;
        ($lp50 | num) as $lp50 | ($lp99 | num) as $lp99 | ($fp50 | num) as $fp50 | ($fp99 | num) as $fp99
        | ($rp50 | num) as $rp50 | ($rp99 | num) as $rp99 | $f.p50_ms as $fs
        | [ (if $lp50 and $rp50 then
               "goal lazy <= 1.0x Redis: p50 \($lp50) vs \($rp50) ms (\($lp50 / $rp50 | r2)x), "
               + "p99 \($lp99) vs \($rp99) ms (\($lp99 / $rp99 | r2)x): "
               + (if $lp50 <= $rp50 and $lp99 <= $rp99 then "met" else "NOT met" end)
             else empty end),
            (if $fp50 and $rp50 then
               "goal flush <= Redis + one fdatasync (\($fs) ms): p50 \($fp50) vs \($rp50 + $fs | r3) ms ("
               + check($fp50; $rp50 + $fs) + "), p99 \($fp99) vs \($rp99 + $fs | r3) ms (" + check($fp99; $rp99 + $fs) + ")"
             else empty end) ]
        | join("; ")')
    note="rounds (p50 / p99): $(jq -r .rounds <<<"$fsj"); overwrite in place p50 $(jq -r .overwrite_p50_ms <<<"$fsj") ms; $fs"
    [[ -n $verdict ]] && note+="; $verdict"
    add_row "$FSYNC_W" disk "128-byte append + fdatasync, 1 per ms, $FSYNC_COUNT per round" "" \
        "$(jq -r .p50_ms <<<"$fsj")" "$(jq -r .p99_ms <<<"$fsj")" "$note" p50_ms
    if [[ -n $verdict ]]; then log "latency: ${verdict//; /$'\n'== latency: }"; fi
}

# --- 5. propagation across nodes ---------------------------------------------------
# Three Spread nodes (replication 3, lazy): writes at A, one WebSocket
# subscriber at C, with the latency client; interleaved with the issue's
# reference, a 3-server NATS cluster (PUB at one server, SUB at another,
# across their routes), and Redis pub/sub on one node.
PROP_W="propagation: write at node A -> subscriber at node C, 1 subscriber, $LATENCY_RATE writes/s"
spread_propagation() { # ROUND
    start_spread_cluster prop 3 lazy || return 1
    run_latency "prop-r$1" spread "${CLUSTER_ADDRS[0]}" "${CLUSTER_PIDS[0]}" "${CLUSTER_ADDRS[2]}"
}
# floor_propagation ROUND HOPS: two floor servers, writes at A relayed over
# one link to C, the subscriber at C.
floor_propagation() {
    local c
    start_floor "prop-c-$2" "$2" || return 1
    c=$FLOOR_ADDR
    start_floor "prop-a-$2" "$2" --relay-to "$c" || return 1
    run_latency "prop-floor-$2-r$1" spread "$FLOOR_ADDR" "$FLOOR_PID" "$c"
}
nats_propagation() { # ROUND
    start_nats_cluster || return 1
    run_latency "prop-nats-r$1" nats "127.0.0.1:${NATS_PORTS[0]}" "${NATS_PIDS[0]}" "127.0.0.1:${NATS_PORTS[2]}"
}

# Replicated durable writes: three Spread nodes (replication 3, flush: a
# write is acked once w owners have it on disk) loaded at node A with
# bench/put.lua, w=quorum and w=1, against a 3-member etcd cluster on this
# box (its leader's JSON gateway; raft commits after a majority's WAL fsync).
REPL_W="replicated PUT 100 B to 10k keys, 3 nodes, durable ack"
spread_replicated_put() { # ROUND W
    start_spread_cluster "repl-$2-" 3 flush &&
        spread_wait_writable "${CLUSTER_ADDRS[0]}" &&
        run_wrk "spread-repl-$2-r$1" "http://${CLUSTER_ADDRS[0]}" -s "$ROOT/bench/put.lua" -- "w=$2"
}
# spread_wait_writable ADDR: a w=all write at ADDR succeeds (every owner is
# linked and takes writes), within 30 s.
spread_wait_writable() {
    local t0
    t0=$(now_ms)
    until printf 'x' | curl -fsS -o /dev/null -X PUT --data-binary @- "http://$1/raw/bench/ready?w=all" 2>/dev/null; do
        (($(now_ms) - t0 < 30000)) || {
            LOAD_ERROR="a w=all write at $1 did not succeed within 30 s"
            return 1
        }
        sleep 0.05
    done
}
etcd_cluster_put_load() { # ROUND
    start_etcd_cluster &&
        run_wrk "etcd3-put-r$1" "http://127.0.0.1:$ETCD_PORT" -s "$ROOT/bench/lua/etcd-put.lua"
}

# Forwarded read: two nodes, replication 1, so a key has one owner and the
# other node owns nothing of it; the same GET at the owner and at the other
# node (which forwards it over the peer link): the cost of one hop.
FWD_W="GET one 100-byte key, 2 nodes, replication 1"
FWD_OWNER= FWD_OTHER=
spread_forward_setup() {
    local a b
    start_spread_cluster fwd 2 flush --replication 1 && spread_wait_writable "${CLUSTER_ADDRS[0]}" || return 1
    printf '%s' "$VALUE" | curl -fsS -o /dev/null -X PUT --data-binary @- "http://${CLUSTER_ADDRS[0]}/raw/bench/hot?w=all" || {
        LOAD_ERROR="the hot key could not be written"
        return 1
    }
    a=$(curl -s -o /dev/null -w '%{http_code}' "http://${CLUSTER_ADDRS[0]}/raw/bench/hot?local=true")
    b=$(curl -s -o /dev/null -w '%{http_code}' "http://${CLUSTER_ADDRS[1]}/raw/bench/hot?local=true")
    case "$a$b" in
    200404) FWD_OWNER=${CLUSTER_ADDRS[0]} FWD_OTHER=${CLUSTER_ADDRS[1]} ;;
    404200) FWD_OWNER=${CLUSTER_ADDRS[1]} FWD_OTHER=${CLUSTER_ADDRS[0]} ;;
    *)
        LOAD_ERROR="?local=true reads answered $a and $b: not one owner and one other"
        return 1
        ;;
    esac
    [[ $(curl -fsS "http://$FWD_OTHER/raw/bench/hot") == "$VALUE" ]] || {
        LOAD_ERROR="the forwarded read did not return the value"
        return 1
    }
}
# fwd_round ROUND: both reads on the same pair of nodes, owner first.
fwd_round() {
    local r=$1 settings
    clear_errors
    if ! spread_forward_setup; then
        record_round_na fwd-owner "$FWD_W" spread "at the owner" "$(na_reason)"
        record_round_na fwd-other "$FWD_W" spread "at the other node (forwarded: one hop)" "$(na_reason)"
        stop_all
        return 0
    fi
    for settings in owner other; do
        local url="http://$FWD_OWNER/raw/bench/hot" label="at the owner"
        [[ $settings == other ]] && url="http://$FWD_OTHER/raw/bench/hot" label="at the other node (forwarded: one hop)"
        clear_errors
        if run_wrk "fwd-$settings-r$r" "$url"; then
            record_round "fwd-$settings" "$FWD_W" spread "$label" "GET /raw/bench/hot, wrk" rps,p50_ms
        else
            record_round_na "fwd-$settings" "$FWD_W" spread "$label" "$(na_reason)"
        fi
    done
    stop_all
}

# Membership of 16 nodes at the default timings (heartbeat 1 s, peer timeout
# 5 s), small footprint each: nodes 2..16 join node 1; the time from the last
# start until every node lists 16 alive members, then the time from a SIGKILL
# until every other node lists that node dead. Goals: <= 2 s and <= 5 s.
CLUSTER_NODES=${CLUSTER_NODES:-16}
workload_cluster() {
    local r
    for ((r = 1; r <= ROUNDS; r++)); do
        ROUND_W=$PROP_W latency_round prop-spread spread "3 nodes, replication 3, lazy (WebSocket /wss at C, PUT at A)" "" spread_propagation "$r"
        ROUND_W=$PROP_W latency_round prop-nats nats "3-server cluster (routes), PUB at one, SUB at another, PING/PONG after each PUB" "nats-server jq" nats_propagation "$r"
        ROUND_W=$PROP_W latency_round prop-redis redis "PUBLISH -> SUBSCRIBE, one node, no persistence" "redis-server redis-cli" redis_latency "$r"
        ROUND_W=$PROP_W latency_round prop-floor-2 actix-floor "2 actix servers, no store: 2 actor threads at each, one WebSocket link" "" floor_propagation "$r" 2
        ROUND_W=$PROP_W latency_round prop-floor-0 actix-floor "2 actix servers, no store, no hand-off: one WebSocket link" "" floor_propagation "$r" 0
    done
    add_median_rows "$PROP_W"
    local DURATION=$ROUND_DURATION # seen by run_wrk
    for ((r = 1; r <= ROUNDS; r++)); do
        round_log "replicated put" "$r"
        one_round spread-repl-quorum "$REPL_W" spread "w=quorum, flush (PUT at node A, wrk)" "" "wrk" \
            spread_replicated_put "$r" quorum
        one_round spread-repl-1 "$REPL_W" spread "w=1, flush (PUT at node A, wrk)" "" "wrk" \
            spread_replicated_put "$r" 1
        one_round etcd3 "$REPL_W" etcd "3 members, POST /v3/kv/put at the leader (JSON gateway, WAL fsync), wrk" "" \
            "wrk etcd" etcd_cluster_put_load "$r"
    done
    add_median_rows "$REPL_W"
    for ((r = 1; r <= ROUNDS; r++)); do
        round_log "forwarded read" "$r"
        fwd_round "$r"
    done
    add_median_rows "$FWD_W"
    local w="membership, $CLUSTER_NODES nodes" n=$CLUSTER_NODES i addrs=() pids=() t0 conv dead pid
    local secret=bench-cluster-secret-0123456789
    local small=(--workers 1 --cache-mb 8 --partitions 1024 --cluster-secret "$secret")
    for ((i = 1; i <= n; i++)); do
        local join=()
        ((i > 1)) && join=(--join "${addrs[0]}")
        if ! start_spread "cluster-$i" lazy --node-id "n$i" "${small[@]}" "${join[@]}"; then
            add_na "$w" spread "$n nodes" "$(na_reason)"
            for pid in "${pids[@]}"; do stop_pid "$pid" 2; done
            return 0
        fi
        addrs+=("$SPREAD_ADDR")
        pids+=("$SPREAD_PID")
    done
    t0=$(now_ms)
    conv=
    while (($(now_ms) - t0 < 60000)); do
        cluster_all_alive "$n" "${addrs[@]}" && { conv=$(($(now_ms) - t0)); break; }
        sleep 0.05
    done
    if [[ -z $conv ]]; then
        add_na "$w" spread "$n nodes" "membership did not converge within 60 s"
    else
        kill -9 "${pids[$((n - 1))]}" 2>/dev/null
        t0=$(now_ms)
        dead=
        while (($(now_ms) - t0 < 60000)); do
            cluster_all_dead "n$n" "${addrs[@]:0:n-1}" && { dead=$(($(now_ms) - t0)); break; }
            sleep 0.05
        done
        local c_s d_s
        c_s=$(awk -v m="$conv" 'BEGIN { printf "%.2f", m / 1000 }')
        d_s=$(awk -v m="${dead:-60000}" 'BEGIN { printf "%.2f", m / 1000 }')
        add_row "$w" spread "$n nodes, default timings (heartbeat 1 s, peer timeout 5 s), 1 worker, 8 MiB cache each" "" "" "" \
            "converged ${c_s} s after the last node started (goal <= 2 s: $(awk -v c="$conv" 'BEGIN { print (c <= 2000 ? "met" : "NOT met") }')); a node killed with SIGKILL was dead for every other node after ${d_s} s$([[ -z $dead ]] && echo ' (not within 60 s)') (goal <= 5 s: $(awk -v d="${dead:-60000}" 'BEGIN { print (d <= 5000 ? "met" : "NOT met") }'))" \
            "" "{\"converge_ms\": $conv, \"dead_ms\": ${dead:-null}}"
    fi
    for pid in "${pids[@]}"; do stop_pid "$pid" 2; done
}

# --- 6. embedded library -----------------------------------------------------------
# criterion_ns GROUP FUNCTION: the estimate (ns per iteration) of the last run.
criterion_ns() {
    local f=$TARGET_DIR/criterion/$1/$2/new/estimates.json
    [[ -f $f && $f -nt $WORK ]] || return 1
    jq -r '(.slope.point_estimate // .mean.point_estimate)' "$f"
}

workload_embedded() {
    local w="embedded get (10k keys, 100 B)" out=$WORK/criterion.txt node sled cpu0 steal=
    log "embedded: cargo bench -p spread-actors --bench embedded -- 'get|set_lazy' $CRITERION_ARGS"
    cpu0=$(cpu_stat)
    # shellcheck disable=SC2086 # CRITERION_ARGS is a list of flags
    if timeout 900 cargo bench -p spread-actors --bench embedded -- 'get|set_lazy' $CRITERION_ARGS >"$out" 2>&1 &&
        node=$(criterion_ns get node_get) && sled=$(criterion_ns get sled_get); then
        grep -E 'time:|^(get|set_lazy)/' "$out" | sed 's/^/   /' >&2
        # One steal figure for the whole criterion run (get and set).
        reset_results && steal_since "$cpu0" && [[ -n $R_STEAL ]] && steal="; steal $R_STEAL%"
        add_row "$w" spread "Node::get (criterion)" "$(awk -v ns="$node" 'BEGIN { printf "%.0f", 1e9 / ns }')" \
            "" "" "$(printf '%.0f ns/op%s' "$node" "$steal")" rps
        add_row "$w" sled "sled::Db::get (criterion)" "$(awk -v ns="$sled" 'BEGIN { printf "%.0f", 1e9 / ns }')" \
            "" "" "$(printf '%.0f ns/op%s' "$sled" "$steal")" rps
        # set: Node::set with 64 writes in flight (lazy: acked once applied,
        # like sled's insert) against sled's insert; one at a time in the note.
        local x64 one ins
        w="embedded set (10k keys, 100 B)"
        if x64=$(criterion_ns set_lazy node_set_x64) && one=$(criterion_ns set_lazy node_set) &&
            ins=$(criterion_ns set_lazy sled_insert); then
            add_row "$w" spread "Node::set, 64 in flight, lazy (criterion)" \
                "$(awk -v ns="$x64" 'BEGIN { printf "%.0f", 64 * 1e9 / ns }')" "" "" \
                "$(awk -v ns="$one" -v s="$steal" 'BEGIN { printf "one at a time: %.0f us per write (thread hand-offs)%s", ns / 1000, s }')" rps
            add_row "$w" sled "sled::Db::insert (criterion)" "$(awk -v ns="$ins" 'BEGIN { printf "%.0f", 1e9 / ns }')" \
                "" "" "$(printf '%.0f ns/op; no history, log or fan-out%s' "$ins" "$steal")" rps
        else
            add_na "$w" spread "Node::set" "no criterion estimate for set_lazy"
        fi
    else
        local why
        why=$(grep -m1 -E '^error' "$out" | cut -c1-120)
        add_na "$w" spread "Node::get" "cargo bench failed: ${why:-see log}"
        add_na "$w" sled "sled::Db::get" "cargo bench failed"
    fi

    # Resident memory after loading N keys x 100 B (bench/embedded/src/rss.rs):
    # a Node (lazy durability, otherwise Config defaults = `spread serve`'s,
    # 256 MiB sled cache), then raw sled with the same cache, each in its own
    # process with mimalloc (as the spread binary). RSS_KEYS overrides N
    # (default 1000000, --quick 100000); RSS_TIMEOUT bounds each run (s).
    local keys=${RSS_KEYS:-$((QUICK == 1 ? 100000 : 1000000))} rss_timeout=${RSS_TIMEOUT:-300}
    local label rss_bin=$TARGET_DIR/release/rss mode json rc log_file note extra settings
    if [[ ! $keys =~ ^[1-9][0-9]*$ ]]; then
        add_na "embedded RSS, $keys keys x 100 B" spread "Node" "RSS_KEYS '$keys' is not a positive number"
        return 0
    fi
    if ((keys % 1000000 == 0)); then
        label="$((keys / 1000000))M"
    elif ((keys % 1000 == 0)); then
        label="$((keys / 1000))k"
    else
        label=$keys
    fi
    w="embedded RSS and disk, $label keys x 100 B, scattered writes"
    if [[ $BUILD == 1 ]]; then
        log "embedded: cargo build --release -p spread-bench-embedded --bin rss"
        cargo build --release -p spread-bench-embedded --bin rss >"$WORK/rss-build.log" 2>&1 ||
            warn "cargo build -p spread-bench-embedded failed; the RSS rows will be n/a"
    fi
    for mode in spread sled; do
        settings=$([[ $mode == spread ]] && echo "Node, lazy durability" || echo "sled::Db, Spread's sled config")
        log_file=$WORK/rss-$mode.log
        if [[ ! -x $rss_bin ]]; then
            add_na "$w" "$mode" "$settings" "no rss binary at $rss_bin (cargo build --release -p spread-bench-embedded --bin rss)"
            continue
        fi
        log "embedded RSS: $mode, $keys keys x 100 B"
        # The data dir is under $WORK, so even a run killed by the timeout leaves nothing.
        cpu0=$(cpu_stat)
        json=$(timeout "$rss_timeout" "$rss_bin" "$mode" --keys "$keys" --value-bytes 100 \
            --dir "$WORK/rss-$mode-data" 2>"$log_file")
        rc=$?
        reset_results && steal_since "$cpu0"
        rm -rf "$WORK/rss-$mode-data"
        if ((rc == 0)) && jq -e '.rss_kib > 0' <<<"$json" >/dev/null 2>&1; then
            tail -n 1 "$log_file" | sed 's/^/   /' >&2
            settings="$settings, $(jq -r '"\(.cache_bytes / 1048576 | floor) MiB cache, \(.allocator)"' <<<"$json")"
            extra=$(jq -c '
                def mib: . / 1024 * 10 | round / 10;
                {rss_mib: (.rss_kib | mib), rss_after_reads_mib: (.rss_after_reads_kib | mib),
                 rss_bytes_per_key: .rss_per_key_bytes, disk_bytes_per_key: .disk_per_key_bytes,
                 rss: .}' <<<"$json")
            note=$(jq -r '
                def mib: . / 1024 | round;
                "RSS \(.rss_open_kib | mib) -> \(.rss_kib | mib) MiB after the load, "
                + "\(.rss_per_key_bytes | round) B/key; \(.rss_after_reads_kib | mib) MiB after \(.reads) reads; "
                + "peak \(.hwm_kib | mib) MiB; disk \(.disk_bytes / 1048576 | round) MiB, "
                + "\(.disk_per_key_bytes | round) B/key; "
                + "load \(.load_secs * 10 | round / 10) s (\(.writes_per_sec | round) writes/s)"' <<<"$json")
            [[ -n $R_STEAL ]] && note+="; steal $R_STEAL%"
            add_row "$w" "$mode" "$settings" "" "" "" "$note" rss_mib,rss_after_reads_mib "$extra"
        elif ((rc == 124)); then
            add_na "$w" "$mode" "$settings" "rss timed out after ${rss_timeout}s (RSS_TIMEOUT)"
        else
            add_na "$w" "$mode" "$settings" "rss failed (exit $rc): $(tail -n 1 "$log_file" | cut -c1-120)"
        fi
    done
}

# build_embedded BIN: builds a binary of bench/embedded (unless --no-build);
# false, with a warning, when it is not there afterwards.
build_embedded() {
    if [[ $BUILD == 1 ]]; then
        log "$1: cargo build --release -p spread-bench-embedded --bin $1"
        cargo build --release -p spread-bench-embedded --bin "$1" >"$WORK/$1-build.log" 2>&1 ||
            warn "cargo build of the $1 binary failed"
    fi
    [[ -x $TARGET_DIR/release/$1 ]]
}

# --- run -------------------------------------------------------------------------
# --- 7. anti-entropy --------------------------------------------------------------
# The antientropy binary of bench/embedded: two embedded nodes in one
# process hold N events of 100 B, one of them k more; the walk of their
# merkle trees finds them. Per (N, k): bytes the walk's answers and the
# missing events weigh against the minimum (the k events alone), questions
# (round trips), the walk's time (no network), the trees' bytes per key.
# Goal (issue 20): <= 3x the minimum bytes, and under 1 s for 1M / 100.
# AE_N and AE_K override the sizes (default 10000,100000,1000000 and
# 1,100,10000; --quick: 10000 and 1,100).
workload_antientropy() {
    local bin=$TARGET_DIR/release/antientropy line w="anti-entropy: k differing events among N"
    local ns=${AE_N:-$([[ $QUICK == 1 ]] && echo 10000 || echo 10000,100000,1000000)}
    local ks=${AE_K:-$([[ $QUICK == 1 ]] && echo 1,100 || echo 1,100,10000)}
    if ! build_embedded antientropy; then
        add_na "$w" spread "merkle walk" "no antientropy binary at $bin"
        return 0
    fi
    log "antientropy: N in $ns, k in $ks"
    while IFS= read -r line; do
        [[ $line == "{"* ]] || continue
        log "antientropy: $line"
        add_row "$w" spread "$(jq -r '"N=\(.n), k=\(.k)"' <<<"$line")" "" "" "" \
            "$(jq -r '"\(.bytes) bytes for \(.minimum_bytes) of events (\(.ratio)x the minimum; goal <= 3x), \(.questions) questions, walk \(.walk_ms) ms (no network), trees \(.tree_bytes_per_key) B/key, load \(.load_s) s"' <<<"$line")" \
            "" "$line"
    done < <(timeout 3600 "$bin" --n "$ns" --k "$ks" 2>"$WORK/ae.err")
}

# --- 8. time travel --------------------------------------------------------------
# The time binary of bench/embedded (one embedded node, no HTTP): reads of
# the past (get_at at a random time) against latest reads (get) over 10k
# paths x 20 versions; a playback of 100k events (1,000 paths) drained as
# fast as it comes, with RSS before and at its peak; write latency (one
# writer, lazy) on a store of 1M history events, history kept whole, then
# while compaction drops all but each path's latest version, with RSS
# through the sweep. TIME_ARGS overrides the sizes (--quick: a tenth).
workload_time() {
    local bin=$TARGET_DIR/release/time line w="time travel (embedded node)"
    local args=${TIME_ARGS:-$([[ $QUICK == 1 ]] && echo "--paths 1000 --versions 10 --playback 10000 --history 100000" || echo "--paths 10000 --versions 20 --playback 100000 --history 1000000")}
    if ! build_embedded time; then
        add_na "$w" spread "time travel" "no time binary at $bin"
        return 0
    fi
    log "time: $args"
    # shellcheck disable=SC2086
    while IFS= read -r line; do
        [[ $line == "{"* ]] || continue
        log "time: $line"
        case $(jq -r .measure <<<"$line") in
        at_read)
            add_row "$w" spread "$(jq -r '"?at= read vs latest read, \(.paths) paths x \(.versions) versions"' <<<"$line")" "" "" "" \
                "$(jq -r '"get_at \(.at_ns) ns, get \(.latest_ns) ns per read (\(.ratio)x)"' <<<"$line")" "" "$line" ;;
        playback)
            add_row "$w" spread "$(jq -r '"playback of \(.events) events"' <<<"$line")" "" "" "" \
                "$(jq -r '"\(.events_per_s) events/s, \(.seconds) s; RSS \(.rss_before_mib) MiB before, \(.rss_peak_mib) MiB at peak"' <<<"$line")" "" "$line" ;;
        compaction)
            add_row "$w" spread "$(jq -r '"write latency, \(.history) history events, \(.run)"' <<<"$line")" "" \
                "$(jq -r '.p50_us / 1000' <<<"$line")" "$(jq -r '.p99_us / 1000' <<<"$line")" \
                "$(jq -r 'if .run == "compacting" then "max \(.max_us) us; \(.dropped) events dropped in a \(.sweep_seconds) s sweep (\(.dropped_during_writes) while writing); RSS \(.rss_min_mib)-\(.rss_max_mib) MiB" else "max \(.max_us) us" end' <<<"$line")" "p50,p99" "$line" ;;
        esac
    done < <(timeout 3600 "$bin" $args 2>"$WORK/time.err")
}

for workload in get put h2 fanout storm latency cluster embedded antientropy time; do
    wants "$workload" || continue
    log "--- workload: $workload"
    phase_start
    "workload_$workload"
    phase_end "$workload"
    stop_all
done

# --- report ----------------------------------------------------------------------
TOTAL=$((SECONDS - STARTED))
echo
print_table
echo

mkdir -p "$ROOT/bench/results"
BASE=$ROOT/bench/results/side-by-side-$(date +%Y-%m-%d-%H%M%S)
COMMIT=$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)
if [[ -n $(git -C "$ROOT" status --porcelain 2>/dev/null) ]]; then COMMIT="$COMMIT (dirty)"; fi
version_of() { if have "$1"; then { "$@" 2>&1 || true; } | head -n 1 | cut -c1-80; else echo missing; fi; }
PHASES=$(for k in "${!PHASE_SECS[@]}"; do printf '%s %ss, ' "$k" "${PHASE_SECS[$k]}"; done)
META=$(jq -n \
    --arg date "$(date -u +'%Y-%m-%d %H:%M UTC')" \
    --arg commit "$COMMIT" \
    --arg machine "$(nproc) cores, $(awk '/MemTotal/ { printf "%.0f GiB", $2 / 1048576 }' /proc/meminfo), $(uname -sr); servers and load generators share it" \
    --arg mode "$([[ $QUICK == 1 ]] && echo quick || echo default)" \
    --arg load "get and put: $ROUNDS interleaved rounds x $ROUND_DURATION s per system (ROUNDS x ROUND_DURATION), medians over the rounds; h2: $DURATION s per run; $CONNECTIONS connections, $THREADS client threads, 100-byte values" \
    --arg fanout "sizes: $FANOUT_SIZES; $FANOUT_REPEATS measured writes (+2 warm-up) each; client: $FANOUT_THREADS receiver thread(s) polling every $FANOUT_POLL_US µs during a write + 1 driver thread; spread durability $FANOUT_DURABILITY; floor = one thread writing to N loopback sockets" \
    --arg storm "storm rates (sessions/s, 0 = flat out): $STORM_RATES; $STORM_SUBSCRIBERS WebSocket clients; $STORM_WRITES measured PUTs (+200 warm-up) per phase at $STORM_WRITE_RATE/s over $STORM_CONNECTIONS connections; spread durability $STORM_DURABILITY" \
    --arg latency "$ROUNDS interleaved rounds (spread lazy, redis, spread flush, then an fdatasync probe); $LATENCY_WRITES measured writes (+$LATENCY_WARMUP warm-up) at $LATENCY_RATE/s, 100-byte values, one subscriber, one writer connection (one write in flight); fdatasync: $FSYNC_COUNT x (128-byte append + fdatasync), 1 per ms" \
    --arg tools "$(version_of wrk -v | cut -d' ' -f1-2); redis $(version_of redis-server --version | grep -o 'v=[0-9.]*'); $(version_of etcd --version); $(version_of nginx -v); $(version_of h2load --version)" \
    --arg limits "open files $NOFILE" \
    --arg loadavg "$LOADAVG_START at the start, $(cut -d' ' -f1-3 /proc/loadavg) at the end" \
    --arg time "${TOTAL}s in all (${PHASES%, })" \
    '{date: $date, commit: $commit, machine: $machine, mode: $mode, load: $load,
      fanout: $fanout, storm: $storm, latency: $latency, tools: $tools, limits: $limits, loadavg: $loadavg, time: $time}')
write_reports "$BASE" "$META"
log "total ${TOTAL}s (${PHASES%, })"
echo "results: ${BASE#"$ROOT"/}.json, ${BASE#"$ROOT"/}.md"
