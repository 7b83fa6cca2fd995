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
  def names: {rps: "req/s", p50_ms: "p50", rss_kib_per_sub: "RSS/sub"};
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
        echo "Fan-out rows: p50/p99 are over the per-write time until the LAST subscriber"
        echo "had the value; RSS/sub is the server's VmRSS growth per idle subscriber."
        echo "The floor row has no server: one thread of a helper process writes one"
        echo "frame to each of N loopback TCP sockets (the kernel's cost per core on this"
        echo "machine, read by the same client), so Spread/floor is how far Spread is from"
        echo "the best any server could do here."
        echo
        echo "## Server settings"
        echo
        cat "$SETTINGS_MD"
    } >"$base.md"
}
