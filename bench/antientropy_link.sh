#!/usr/bin/env bash
# Anti-entropy over a real peer link: two release nodes on loopback
# (replication 2, lazy, --log-retention 1 so cursors cannot help), N events
# of 100 B imported at a and replicated to b; b killed with SIGKILL; K newer
# versions written at a; b restarted: its reset streams pull what they lack
# by comparing merkle trees with a. Prints the load time, both nodes'
# anti-entropy and replication counters, and the time from b's restart to
# equal roots. Needs curl and jq, and target/release/spread (cargo build
# --release).
#
#   N=1000000 K=100 bench/antientropy_link.sh
set -euo pipefail
N=${N:-100000}; K=${K:-100}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
BIN=${SPREAD_BIN:-$ROOT/target/release/spread}
[[ -x $BIN ]] || { echo "no $BIN: cargo build --release first" >&2; exit 1; }
W=$(mktemp -d /tmp/ael.XXXX)
SECRET=bench-antientropy-secret-0123456789
A=127.0.0.1:18301 B=127.0.0.1:18302
common=(--cluster-secret "$SECRET" --replication 2 --anti-entropy-interval 0 --log-retention 1 --durability lazy --cache-mb 512)
start() { # id addr extra...
  local id=$1 addr=$2; shift 2
  "$BIN" serve --node-id "$id" --listen "$addr" --data "$W/$id" "${common[@]}" "$@" >>"$W/$id.log" 2>&1 &
  echo $! > "$W/$id.pid"
  until curl -fs "http://$addr/cluster" >/dev/null 2>&1; do sleep 0.05; done
}
root() { curl -fs "http://$1/digest/?depth=0" | jq -r '.hash + " " + (.items|tostring)'; }
both_alive() { [[ $(curl -fs "http://$A/cluster" | jq '[.members[] | select(.state=="alive")] | length') -ge 1 && $(curl -fs "http://$B/cluster" | jq '[.members[] | select(.state=="alive")] | length') -ge 1 ]]; }
equal() { local t0; t0=$(date +%s%N); until [[ "$(root $A)" == "$(root $B)" ]]; do sleep 0.02; (( ($(date +%s%N) - t0) / 1000000 < ${1:-600000} )) || { echo "never equal: $(root $A) / $(root $B)"; return 1; }; done; }
cleanup() { for f in "$W"/*.pid; do kill -9 "$(cat "$f")" 2>/dev/null || true; done; rm -rf "$W"; }
trap cleanup EXIT
start a $A
start b $B --join $A
until both_alive; do sleep 0.1; done
V=$(printf 'v%.0s' $(seq 1 100))
t0=$(date +%s%N)
awk -v n="$N" -v v="$V" 'BEGIN { for (i = 0; i < n; i++) printf "{\"path\":\"bench/%d/k%d\",\"version\":\"%d.w\",\"value\":\"%s\"}\n", i % 1000, i, 1700000000000000 + i, v }' > "$W/events.jsonl"
split -l 100000 "$W/events.jsonl" "$W/chunk."
for c in "$W"/chunk.*; do curl -fs -X POST --data-binary @"$c" "http://$A/import" >/dev/null; done
equal
echo "loaded $N into both in $(( ($(date +%s%N) - t0) / 1000000 )) ms: $(root $A)" >&2
kill -9 "$(cat "$W/b.pid")"
for i in $(seq 0 $((K - 1))); do
  j=$(( (i * 7919) % N ))
  curl -fs -o /dev/null -X PUT --data-binary "new$i" "http://$A/raw/bench/$((j % 1000))/k$j?w=1"
done
sleep 1  # the log trims (retention 1) as later commits land
t0=$(date +%s%N)
start b $B --join $A
equal
ms=$(( ($(date +%s%N) - t0) / 1000000 ))
m() { curl -fs "http://$1/metrics" | awk -v k="$2" '$1 == k { print $2 }'; }
for n in a b; do
  addr=$A; [[ $n == b ]] && addr=$B
  echo "$n: sessions $(m $addr 'spread_antientropy_sessions_total{result="ok"}') questions $(m $addr spread_antientropy_questions_total) ae_in $(m $addr 'spread_antientropy_bytes_total{dir="in"}') ae_out $(m $addr 'spread_antientropy_bytes_total{dir="out"}') ae_events_in $(m $addr 'spread_antientropy_events_total{dir="in"}') repl_in $(m $addr 'spread_replication_events_total{dir="in"}') session_ms $(m $addr spread_antientropy_session_milliseconds_total) peer_bytes_in $(m $addr 'spread_peer_bytes_total{dir="in"}')"
done
echo "N=$N K=$K: from b's restart to equal roots: $ms ms"
