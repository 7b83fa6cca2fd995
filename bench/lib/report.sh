# shellcheck shell=bash
# Result rows and the final report: one table (text on stdout, JSON and
# Markdown under bench/results/) with absolute figures and Spread/peer ratios.
#
# Each row is a JSON object in $ROWS_FILE:
#   workload, system ("spread" marks the reference rows), settings, status
#   ("ok" or "n/a"), rps, p50_ms, p99_ms, note, metrics (the fields compared
#   by the ratio), tag (how a Spread row is named in a peer's ratio), and any
#   extra fields (e.g. rss_kib_per_sub).
#
# Sourced, not run. Expects common.sh.

ROWS_FILE=$WORK/rows.jsonl
: >"$ROWS_FILE"

# add_row WORKLOAD SYSTEM SETTINGS RPS P50 P99 NOTE [METRICS] [EXTRA_JSON]
#   METRICS: comma-separated fields for the ratio (default "rps").
add_row() {
    jq -cn --arg w "$1" --arg s "$2" --arg set "$3" --arg rps "$4" --arg p50 "$5" \
        --arg p99 "$6" --arg note "${7%; }" --arg metrics "${8:-rps}" --argjson extra "${9:-{\}}" '
        def num: if . == "" then null else tonumber end;
        {workload: $w, system: $s, settings: $set, status: "ok",
         rps: ($rps | num), p50_ms: ($p50 | num), p99_ms: ($p99 | num),
         note: $note, metrics: ($metrics | split(",")), tag: $set} + $extra' >>"$ROWS_FILE"
}

# add_na WORKLOAD SYSTEM SETTINGS REASON: a row that could not be measured.
add_na() {
    jq -cn --arg w "$1" --arg s "$2" --arg set "$3" --arg why "$4" '
        {workload: $w, system: $s, settings: $set, status: "n/a", rps: null,
         p50_ms: null, p99_ms: null, note: ("n/a: " + $why), metrics: [], tag: $set}' >>"$ROWS_FILE"
}

# --- rounds --------------------------------------------------------------------
# get and put run every system once per round, in turn, so that all of them see
# the same drift of this machine's speed (CPU steal). Each round is a JSON
# object in $ROUNDS_FILE (key, workload, system, settings, ok, figures, steal,
# the run's own notes or the reason it failed); add_median_rows then makes one
# row per system.
ROUNDS_FILE=$WORK/rounds.jsonl
: >"$ROUNDS_FILE"

# record_round KEY WORKLOAD SYSTEM SETTINGS NOTE [METRICS]: one successful round
# of the system KEY names, from the R_* figures of the last load run. NOTE is
# the row's fixed note; the run's own (R_NOTE, less the steal) goes with the round.
record_round() {
    local own=${R_NOTE//"steal $R_STEAL%; "/}
    own=${own%; }
    jq -cn --arg key "$1" --arg w "$2" --arg s "$3" --arg set "$4" --arg note "$5" \
        --arg metrics "${6:-rps}" --arg rps "$R_RPS" --arg p50 "$R_P50" --arg p99 "$R_P99" \
        --arg steal "$R_STEAL" --arg own "${own//; /, }" '
        def num: if . == "" then null else tonumber end;
        {key: $key, workload: $w, system: $s, settings: $set, ok: true,
         rps: ($rps | num), p50_ms: ($p50 | num), p99_ms: ($p99 | num),
         steal: ($steal | num), own: $own, note: $note, metrics: $metrics}' >>"$ROUNDS_FILE"
}

# record_round_na KEY WORKLOAD SYSTEM SETTINGS REASON: a round that failed.
record_round_na() {
    jq -cn --arg key "$1" --arg w "$2" --arg s "$3" --arg set "$4" --arg why "$5" '
        {key: $key, workload: $w, system: $s, settings: $set, ok: false, reason: $why}' >>"$ROUNDS_FILE"
}

# One line per system (KEY, in the order first recorded) of workload $w, its
# fields joined by \u001f: status ("ok" or "n/a"), system, settings, then the
# medians over the successful rounds (req/s, p50, p99), the note (each round's
# req/s and steal, the failed rounds) or the n/a reason, and the metrics.
MEDIAN_JQ='
  def median: sort | length as $n
    | if $n == 0 then null elif $n % 2 == 1 then .[($n - 1) / 2]
      else (.[$n / 2 - 1] + .[$n / 2]) / 2 end;
  def ms: if . == null then "" else (. * 1000 | round) / 1000 | tostring end;
  def kilo: if . >= 1000 then (. / 100 | round) as $d | "\($d / 10 | floor).\($d % 10)k"
            else "\(round)" end;
  def firsts: reduce .[] as $x ([]; if any(.[]; . == $x) then . else . + [$x] end);
  def metric_name: {rps: "req/s", p50_ms: "p50", p99_ms: "p99"}[.] // .;
  # "Spread/peer req/s per round (<spread settings>): a, b, c; median m" for
  # each Spread key of the workload: round i of Spread against round i of the
  # peer (the two ran minutes apart at most, under the same drift). Rounds
  # that measure req/s compare req/s; others (latency) each of their metrics.
  def per_round_ratios($all; $peer):
    ($peer | map(select(.ok) | .metrics) | .[0] // "rps" | split(",")
     | if any(.[]; . == "rps") then ["rps"] else . end) as $metrics
    | ($all | map(select(.system == "spread") | .key) | firsts)[] as $sk
    | ($all | map(select(.key == $sk))) as $sr
    | $metrics[] as $m
    | [ range(0; [($sr | length), ($peer | length)] | min) as $i
        | select($sr[$i].ok and $peer[$i].ok and ($sr[$i][$m] // 0) > 0 and ($peer[$i][$m] // 0) > 0)
        | $sr[$i][$m] / $peer[$i][$m] ] as $r
    | select(($r | length) > 1)
    | "Spread/peer \($m | metric_name) per round (\($sr[0].settings)): "
      + ($r | map(. * 100 | round / 100 | tostring) | join(", "))
      + "; median \($r | median | . * 100 | round / 100)";
  map(select(.workload == $w)) as $all
  | ($all | map(.key) | firsts)[] as $key
  | ($all | map(select(.key == $key))) as $rs
  | ($rs | map(select(.ok))) as $ok
  | ($rs | length - ($ok | length)) as $failed
  | if ($ok | length) == 0 then
      ["n/a", $rs[-1].system, $rs[-1].settings, "", "", "", $rs[-1].reason, ""]
    else
      $ok[-1] as $last
      | ($rs | map(
            if .ok then
              (if .rps != null then (.rps | kilo) else "\(.p50_ms | ms) / \(.p99_ms | ms) ms" end)
              + ([(.steal // empty | "steal \(.)%"), (.own | select(. != ""))]
                 | if length > 0 then " (" + join(", ") + ")" else "" end)
            else "n/a" end) | join(", ")) as $list
      | ["ok", $last.system, $last.settings,
         ($ok | map(.rps // empty) | median | if . == null then "" else round | tostring end),
         ($ok | map(.p50_ms // empty) | median | ms),
         ($ok | map(.p99_ms // empty) | median | ms),
         ([ "rounds: " + $list + (if ($ok | length) > 1 then "; median" else "" end),
            (if $failed > 0 then
               "\($failed) of \($rs | length) rounds failed: "
               + ($rs | map(select(.ok | not) | .reason) | firsts | join("; "))
             else empty end),
            (if $last.system != "spread" then per_round_ratios($all; $rs) else empty end),
            ($last.note | select(. != "")) ] | join("; ")),
         $last.metrics]
    end
  | map(tostring | gsub("\u001f"; " ")) | join("\u001f")'

# add_median_rows WORKLOAD: one row (add_row) per system recorded for WORKLOAD
# with the medians over its successful rounds; add_na with the last reason for
# a system whose every round failed.
add_median_rows() {
    local lines status system settings rps p50 p99 note metrics
    lines=$(jq -rs --arg w "$1" "$MEDIAN_JQ" "$ROUNDS_FILE") || {
        warn "could not summarise the rounds of '$1' (see $ROUNDS_FILE)"
        return 1
    }
    [[ -n $lines ]] || return 0
    while IFS=$'\x1f' read -r status system settings rps p50 p99 note metrics; do
        if [[ $status == ok ]]; then
            add_row "$1" "$system" "$settings" "$rps" "$p50" "$p99" "$note" "$metrics"
        else
            add_na "$1" "$system" "$settings" "$note"
        fi
    done <<<"$lines"
}

# Row objects with their ratios (on peer rows: Spread's figure / the peer's,
# for each Spread row of the same workload and each of the peer's metrics).
RATIOS_JQ='
  def r2: if . == null then null else (. * 100 | round) / 100 end;
  . as $rows
  | map(
      if .status == "ok" and .system != "spread" then
        . as $p
        | .ratios = [ $rows[]
            | select(.workload == $p.workload and .system == "spread" and .status == "ok")
            | . as $s
            | { spread: $s.tag }
              + ( [ $p.metrics[]
                    | . as $m
                    | select(($s[$m] // 0) > 0 and ($p[$m] // 0) > 0)
                    | { key: $m, value: ($s[$m] / $p[$m] | r2) } ]
                  | from_entries ) ]
      else .ratios = [] end)'

# The cell text of a row: figures rounded, ratios as "req/s 0.85, p50 1.2"
# (prefixed with the Spread row's tag when the workload has several).
CELLS_JQ='
  def names: {rps: "req/s", p50_ms: "p50", p99_ms: "p99", rss_kib_per_sub: "RSS/sub"};
  def f(d): if . == null then "-" else (. * d | round) / d | tostring end;
  def ratio_text:
    if (.ratios | length) == 0 then (if .system == "spread" and .status == "ok" then "(ref)" else "" end)
    else (.ratios | length) as $n
         | [ .ratios[]
             | (if $n > 1 then .spread + ": " else "" end)
               + ([ to_entries[] | select(.key != "spread")
                    | (names[.key] // .key) + " " + (.value | tostring) ] | join(", ")) ]
         | join("; ")
    end;
  [ .workload, .system, .settings, (.rps | f(1)), (.p50_ms | f(1000)), (.p99_ms | f(1000)),
    .note, ratio_text ]'

HEADER_CELLS='["workload", "system", "settings", "req/s", "p50 ms", "p99 ms", "notes", "Spread/peer"]'

# print_table: the table as aligned text on stdout.
print_table() {
    jq -rs "$RATIOS_JQ | ($HEADER_CELLS), (.[] | $CELLS_JQ) | map(gsub(\"\\\\|\"; \"/\")) | join(\"|\")" "$ROWS_FILE" |
        column -t -s '|'
}

# write_reports BASENAME META_JSON: BASENAME.json and BASENAME.md.
write_reports() {
    local base=$1 meta=$2
    jq -s --argjson meta "$meta" --rawfile settings "$SETTINGS_MD" \
        "$RATIOS_JQ | {meta: (\$meta + {settings_markdown: \$settings}), rows: .}" "$ROWS_FILE" >"$base.json"
    {
        echo "# Spread side by side ($(jq -r '.date' <<<"$meta"))"
        echo
        jq -r 'to_entries[] | select(.key != "date") | "- \(.key): \(.value)"' <<<"$meta"
        echo
        jq -rs "$RATIOS_JQ | ($HEADER_CELLS | \"| \" + join(\" | \") + \" |\"),
            \"|---|---|---|--:|--:|--:|---|---|\",
            (.[] | $CELLS_JQ | map(gsub(\"\\\\|\"; \"/\")) | \"| \" + join(\" | \") + \" |\")" "$ROWS_FILE"
        echo
        echo "Spread/peer: Spread's figure divided by the peer's, for each Spread row of"
        echo "the workload (named before the colon). For req/s above 1 means Spread is"
        echo "faster; for p50 (latency) and RSS/sub above 1 means Spread is slower or bigger."
        echo "GET and PUT rows: each figure is the median over interleaved rounds (every"
        echo "round runs each system once, in turn, so all see the same drift of this VM's"
        echo "speed); the note lists each round's req/s and the share of CPU time the"
        echo "hypervisor stole during it; a peer's note also gives Spread/peer per round"
        echo "(round i of Spread against round i of the peer) and their median."
        echo "Fan-out rows: p50/p99 are over the per-write time until the LAST subscriber"
        echo "had the value; RSS/sub is the server's VmRSS growth per idle subscriber."
        echo "The floor row has no server: one thread of a helper process writes one"
        echo "frame to each of N loopback TCP sockets (the kernel's cost per core on this"
        echo "machine, read by the same client), so Spread/floor is how far Spread is from"
        echo "the best any server could do here."
        echo "Storm rows: p50/p99 are the PUT latencies (send to answer) of writers at a"
        echo "steady rate while WebSocket clients connect, read a little and disconnect"
        echo "in a loop; the baseline row is the same writes without the storm."
        echo "Latency rows: p50/p99 are over the per-write time from just before a write"
        echo "is sent to the moment one subscriber (its own connection and thread) reads"
        echo "it, for writes at a steady rate with one in flight; medians over interleaved"
        echo "rounds (each round: Spread lazy, Redis, Spread flush), each round's p50 / p99"
        echo "in the note, and Spread/Redis per round on the Redis row. The fdatasync row"
        echo "is one small append + fdatasync on the filesystem of the data directories,"
        echo "measured in the same rounds: the unit of the \`flush\` budget."
        echo
        echo "## Server settings"
        echo
        cat "$SETTINGS_MD"
    } >"$base.md"
}
