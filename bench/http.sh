#!/usr/bin/env bash
# HTTP load test of `spread serve` with wrk.
#
#   bench/http.sh [--quick] [--no-build]
#
# Builds the release binary, then for each durability mode (flush, batch,
# lazy) starts a server on a free port with a fresh data dir and runs:
#   - flush only: GET of one hot key (100-byte value), `wrk --latency`;
#   - every mode: PUT of 100-byte bodies to /raw/bench/k<1..10000> (bench/put.lua).
# Prints a table (req/s, p50, p99, errors) and writes it as Markdown to
# bench/results/http-<date>.md.
#
# Options and environment:
#   --quick        DURATION=3
#   --no-build     use the existing binary (default: cargo build --release)
#   DURATION       seconds per wrk run (default 10)
#   THREADS        wrk threads (default 2)
#   CONNECTIONS    wrk connections (default 50)
#   CARGO_TARGET_DIR  where the binary is built (default <repo>/target)
#
# Both wrk and the server run on this machine, so the numbers are indicative.

set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"

BUILD=1
while [[ $# -gt 0 ]]; do
    case "$1" in
        --quick) DURATION=3 ;;
        --no-build) BUILD=0 ;;
        -h | --help)
            sed -n '2,21p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'
            exit 0
            ;;
        *)
            echo "http.sh: unknown option '$1' (try --help)" >&2
            exit 2
            ;;
    esac
    shift
done
DURATION=${DURATION:-10}
THREADS=${THREADS:-2}
CONNECTIONS=${CONNECTIONS:-50}
MODES=(flush batch lazy)
START_DEADLINE=60 # seconds for a server to print its address

TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
[[ $TARGET_DIR == /* ]] || TARGET_DIR=$ROOT/$TARGET_DIR
BIN=$TARGET_DIR/release/spread

log() { printf '== %s\n' "$*" >&2; }

# --- cleanup: always stop the server and remove temp files -----------------
SERVER_PID=
WORK=$(mktemp -d -t spread-http-bench.XXXXXX)

stop_server() {
    if [[ -n $SERVER_PID ]]; then
        if kill -0 "$SERVER_PID" 2>/dev/null; then
            kill "$SERVER_PID" 2>/dev/null || true
            # Give it time to flush; then insist.
            for _ in $(seq 50); do
                kill -0 "$SERVER_PID" 2>/dev/null || break
                sleep 0.1
            done
            kill -9 "$SERVER_PID" 2>/dev/null || true
        fi
        wait "$SERVER_PID" 2>/dev/null || true
        SERVER_PID=
    fi
}

cleanup() {
    stop_server
    rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# --- prerequisites ----------------------------------------------------------
if [[ $BUILD == 1 ]]; then
    log "building $BIN"
    cargo build --release --bin spread
fi
[[ -x $BIN ]] || {
    echo "http.sh: no binary at $BIN" >&2
    exit 1
}

if ! command -v wrk >/dev/null; then
    if [[ $(id -u) == 0 ]] && command -v apt-get >/dev/null; then
        log "installing wrk"
        apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk
    else
        echo "http.sh: wrk is missing (apt-get install wrk)" >&2
        exit 1
    fi
fi
command -v curl >/dev/null || {
    echo "http.sh: curl is missing" >&2
    exit 1
}

# --- server -----------------------------------------------------------------
ADDR=

# start_server MODE: a fresh data dir, a free port; sets SERVER_PID and ADDR.
start_server() {
    local mode=$1 data out line deadline
    data=$WORK/data-$mode
    out=$WORK/server-$mode.log
    mkdir -p "$data"
    "$BIN" serve --listen 127.0.0.1:0 --data "$data" --durability "$mode" >"$out" 2>&1 &
    SERVER_PID=$!
    ADDR=
    deadline=$((SECONDS + START_DEADLINE))
    while [[ -z $ADDR ]]; do
        line=$(grep -m1 -o 'listening on http://[0-9.:]*' "$out" || true)
        if [[ -n $line ]]; then
            ADDR=${line#listening on http://}
            break
        fi
        if ! kill -0 "$SERVER_PID" 2>/dev/null; then
            echo "http.sh: the server exited before listening:" >&2
            cat "$out" >&2
            exit 1
        fi
        if ((SECONDS >= deadline)); then
            echo "http.sh: no address from the server within ${START_DEADLINE}s:" >&2
            cat "$out" >&2
            exit 1
        fi
        sleep 0.05
    done
    curl -fsS -o /dev/null "http://$ADDR/healthz"
    log "server ($mode) pid $SERVER_PID on $ADDR"
}

# --- wrk runs ---------------------------------------------------------------
ROWS=() # "workload|durability|req/s|p50|p99|non-2xx|socket errors"

# run_wrk WORKLOAD MODE URL [wrk args...]: runs wrk, records a row.
run_wrk() {
    local workload=$1 mode=$2 url=$3 out
    shift 3
    out=$WORK/wrk-$workload-$mode.txt
    log "$workload ($mode): wrk -t$THREADS -c$CONNECTIONS -d${DURATION}s $*"
    wrk -t"$THREADS" -c"$CONNECTIONS" -d"${DURATION}s" --latency "$@" "$url" >"$out"
    cat "$out" >&2
    ROWS+=("$(awk -v w="$workload" -v m="$mode" '
        /^Requests\/sec:/ { rps = $2 }
        $1 == "50%" { p50 = $2 }
        $1 == "99%" { p99 = $2 }
        /Non-2xx or 3xx responses:/ { bad = $NF }
        /Socket errors:/ {
            gsub(",", "")
            sock = $4 + $6 + $8 + $10
        }
        END {
            printf "%s|%s|%s|%s|%s|%d|%d", w, m, rps, p50, p99, bad, sock
        }' "$out")")
}

VALUE=$(head -c 100 /dev/zero | tr '\0' 'v')
for mode in "${MODES[@]}"; do
    start_server "$mode"
    if [[ $mode == flush ]]; then
        printf '%s' "$VALUE" |
            curl -fsS -o /dev/null -X PUT --data-binary @- \
                -H 'Content-Type: application/octet-stream' "http://$ADDR/raw/bench/hot"
        got=$(curl -fsS "http://$ADDR/raw/bench/hot" | wc -c)
        [[ $got == 100 ]] || {
            echo "http.sh: GET /raw/bench/hot returned $got bytes, expected 100" >&2
            exit 1
        }
        run_wrk "GET hot key" "$mode" "http://$ADDR/raw/bench/hot"
    fi
    run_wrk "PUT 10k keys" "$mode" "http://$ADDR" -s "$ROOT/bench/put.lua"
    stop_server
done

# --- report -----------------------------------------------------------------
HEADER="workload|durability|req/s|p50|p99|non-2xx|socket errors"
echo
{
    echo "$HEADER"
    printf '%s\n' "${ROWS[@]}"
} | column -t -s '|'

mkdir -p "$ROOT/bench/results"
REPORT=$ROOT/bench/results/http-$(date +%Y-%m-%d-%H%M%S).md
COMMIT=$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)
if [[ -n $(git -C "$ROOT" status --porcelain 2>/dev/null) ]]; then COMMIT="$COMMIT (dirty)"; fi
{
    echo "# spread HTTP load ($(date -u +'%Y-%m-%d %H:%M UTC'))"
    echo
    echo "- commit: $COMMIT"
    echo "- machine: $(nproc) cores, $(uname -sr); wrk and the server share it"
    echo "- wrk: -t$THREADS -c$CONNECTIONS -d${DURATION}s --latency"
    echo "- GET: one hot key, 100-byte value; PUT: 100-byte bodies to /raw/bench/k<random 1..10000>"
    echo "- each durability mode runs on a fresh server and data dir"
    echo
    echo "| ${HEADER//|/ | } |"
    echo "|---|---|--:|--:|--:|--:|--:|"
    for row in "${ROWS[@]}"; do echo "| ${row//|/ | } |"; done
} >"$REPORT"
echo
echo "report: ${REPORT#"$ROOT"/}"
