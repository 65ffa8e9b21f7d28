#!/usr/bin/env bash
# bench-gather.sh - lab 04's bench scenario: a steady load where a fraction of the dashboards fail.
#
#   bench-gather.sh --lab NN [--variants "pitfall solution exercise"] [--out DIR] [--quick] [--full]
#
# For each variant: start build/bin/upstream (the manifest's `upstream` options) and the lab (its
# `args` plus --upstream URL), then two open-loop loadgen steps at the first of `loads` req/s over
# `conns` connections:
#   mixed    GET `path` for `step_s` s (the lab's --fail-percent decides which dashboards fail),
#            sampling /debug/stats every 200 ms: calls in flight, memory, late callbacks over time
#   failing  GET `path`?fail=1 for `fail_step_s` s after a 1 s warm-up: the failure path's latency
# --quick: 2 s and 1 s steps (a smoke run). --full is accepted and changes nothing.
#
# Writes DIR/NN-slug/ (DIR defaults to results/):
#   gather.csv            variant, step (mixed|failing), then loadgen's summary row
#   latency.csv           variant, then p50/p90/p99 of each step (for the latency plot)
#   timeline.csv          variant, t_s, calls_inflight, dashboards_live, rss_kb, late_callbacks,
#                         orphan_s_total (upstream seconds spent on calls after their dashboard
#                         had answered), loop_lag_max_ms: one row per sample of the mixed step
#   final-VARIANT.csv     key,value of the lab's /debug/stats after the mixed step had settled
#   upstream-VARIANT.csv  key,value of the upstream's /stats after the variant
#   latency.* inflight.* wasted.* rss.* (png and svg), summary.txt (also on stdout)
# Scenario keys in the manifest: fail_step_s (default 3), timeout_ms (default 2000).

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
. "$HERE/benchlib.sh"
. "$HERE/manifest.sh"

usage() {
  echo "usage:"; sed -n '4p' "$0" | sed 's/^# \{0,1\}//'
  echo "  Drives each variant of lab NN with a steady load, part of it failing; writes CSVs,"
  echo "  plots and a summary. See the header of $0."
}

lab_arg="" variants="" out_dir="" quick=0
while [ $# -gt 0 ]; do
  case "$1" in
    --lab) [ $# -ge 2 ] || { usage >&2; exit 2; }; lab_arg=$2; shift 2 ;;
    --variants) [ $# -ge 2 ] || { usage >&2; exit 2; }; variants=$2; shift 2 ;;
    --out) [ $# -ge 2 ] || { usage >&2; exit 2; }; out_dir=$2; shift 2 ;;
    --quick) quick=1; shift ;;
    --full) shift ;;
    -h|--help) usage; exit 0 ;;
    *) echo "bench-gather.sh: unknown argument '$1'" >&2; usage >&2; exit 2 ;;
  esac
done
[ -n "$lab_arg" ] || { echo "bench-gather.sh: --lab is required" >&2; usage >&2; exit 2; }

bench_init || exit 1
lab=$(manifest_resolve "$lab_arg") || { bench_err "no lab '$lab_arg' in labs/manifest"; exit 2; }
num=${lab%%-*}
tag="lab $num"
variants=${variants:-pitfall solution exercise}
out_dir=${out_dir:-$BENCH_ROOT/results}
dir=$out_dir/$lab

read -r -a lab_args <<< "$(manifest_get "$lab" args "")"
read -r -a up_args <<< "$(manifest_get "$lab" upstream "")"
[ "${up_args[0]:-}" = none ] && up_args=()
read -r -a loads <<< "$(manifest_get "$lab" loads 200)"
rate=${loads[0]}
conns=$(manifest_get "$lab" conns 200)
step_s=$(manifest_get "$lab" step_s 8)
fail_step_s=$(manifest_get "$lab" fail_step_s 3)
timeout_ms=$(manifest_get "$lab" timeout_ms 2000)
path=$(manifest_get "$lab" path /dashboard)
title=$(manifest_get "$lab" title "")
warm_s=1
if [ "$quick" = 1 ]; then step_s=2 fail_step_s=1 warm_s=0.3; fi

# The latencies the lab was given (its defaults otherwise): the failing call and the slow one.
opt() {
  local name=$1 def=$2 i
  for ((i = 0; i < ${#lab_args[@]}; i++)); do
    [ "${lab_args[i]}" = "$name" ] && { echo "${lab_args[i + 1]}"; return; }
  done
  echo "$def"
}
fail_ms=$(opt --orders-latency-ms 15)
slow_ms=$(opt --recs-latency-ms 300)
fail_pct=$(opt --fail-percent 100)
case "$path" in *\?*) fail_path="$path&fail=1" ;; *) fail_path="$path?fail=1" ;; esac

for v in $variants; do
  [ -x "$BENCH_BIN/lab$num-$v" ] || {
    bench_err "$BUILD/bin/lab$num-$v is missing: make BUILD=$BUILD $BUILD/bin/lab$num-$v"; exit 1; }
done
for t in loadgen upstream; do
  [ -x "$BENCH_BIN/$t" ] || { bench_err "$BUILD/bin/$t is missing: make BUILD=$BUILD $BUILD/bin/$t"; exit 1; }
done

mkdir -p "$dir" || { bench_err "mkdir -p $dir failed"; exit 1; }
rm -f "$dir"/gather.csv "$dir"/latency.csv "$dir"/timeline.csv "$dir"/final-*.csv \
  "$dir"/upstream-*.csv "$dir"/summary.txt "$dir"/{latency,inflight,wasted,rss}.{png,svg}

bench_log "[$tag] $lab: ${title:-?}"
bench_log "[$tag] variants: $variants; $rate req/s over $conns connections; mixed ${step_s} s" \
  "($fail_pct% failing), then failing only ${fail_step_s} s; GET $path; args: ${lab_args[*]}"
t_start=$(bench_now_s)

# flat JSON -> key,value lines
json_rows() { tr -d '{}" ' | tr ',' '\n' | tr ':' ','; }

run_variant() {
  local v=$1 url step_csv=$BENCH_TMP/stats-step.csv
  bench_start upstream "$BENCH_BIN/upstream" "${up_args[@]}" || return 1
  bench_start svc "$BENCH_BIN/lab$num-$v" "${lab_args[@]}" --upstream "${BENCH_URL[upstream]}" ||
    return 1
  url=${BENCH_URL[svc]}

  bench_progress "$tag" "$v" "$rate" 1 2
  rm -f "$step_csv"
  bench_step "$url$path" "$rate" "$conns" "$step_s" -t "$timeout_ms" --label mixed \
    --stats-url "$url/debug/stats" --stats-interval-ms 200 --stats-out "$step_csv" || return 1
  [ -s "$dir/gather.csv" ] || echo "variant,$BENCH_HEADER" > "$dir/gather.csv"
  echo "$v,$BENCH_ROW" >> "$dir/gather.csv"
  bench_progress_done "mixed"
  # One row per sample, columns picked by name.
  awk -F, -v OFS=, -v v="$v" '
    NR == 1 { for (i = 1; i <= NF; i++) c[$i] = i; next }
    { print v, $c["t_s"], $c["calls_inflight"], $c["dashboards_live"], $c["rss_kb"],
        $c["late_callbacks"], $c["orphan_ms_total"] / 1000, $c["loop_lag_max_ms"] }' \
    "$step_csv" >> "$dir/timeline.csv"
  # Orphans of the last requests come back within the slow call's latency: then count.
  sleep "$(awk -v s="$slow_ms" 'BEGIN { printf "%.3f", s / 1000 + 0.5 }')"
  bench_http svc /debug/stats | json_rows | { echo "key,value"; cat; } > "$dir/final-$v.csv"

  bench_progress "$tag" "$v" "$rate" 2 2
  bench_step "$url$fail_path" "$rate" "$conns" "$fail_step_s" -w "$warm_s" -t "$timeout_ms" \
    --label failing || return 1
  echo "$v,$BENCH_ROW" >> "$dir/gather.csv"
  bench_progress_done "failing only"

  bench_http upstream /stats | json_rows | { echo "key,value"; cat; } > "$dir/upstream-$v.csv"
  bench_stop svc
  bench_stop upstream
}

echo "variant,t_s,calls_inflight,dashboards_live,rss_kb,late_callbacks,orphan_s_total,loop_lag_max_ms" \
  > "$dir/timeline.csv"
for v in $variants; do
  run_variant "$v" || { bench_err "[$tag] $v: the bench stopped (see above)"; exit 1; }
done

awk -F, -v OFS=, '
  NR == 1 { for (i = 1; i <= NF; i++) c[$i] = i
            print "variant,mixed_p50,mixed_p90,mixed_p99,failing_p50,failing_p90,failing_p99"; next }
  { v = $c["variant"]; s = $c["label"]; if (!(v in seen)) { seen[v] = 1; order[++n] = v }
    p[v, s] = $c["p50_ms"] OFS $c["p90_ms"] OFS $c["p99_ms"] }
  END { for (i = 1; i <= n; i++) print order[i], p[order[i], "mixed"], p[order[i], "failing"] }' \
  "$dir/gather.csv" > "$dir/latency.csv"

# ---- figures ----
kv() { awk -F, -v k="$2" '$1 == k { print $2; found = 1 } END { if (!found) print 0 }' "$1" 2>/dev/null; }
col() { awk -F, -v v="$1" -v k="$2" 'NR == 1 { for (i = 1; i <= NF; i++) c[$i] = i; next }
  $1 == v { print $c[k] }' "$dir/latency.csv"; }
# In-flight calls and RSS in the second and the last quarter of the mixed step: flat or growing.
quarters() {
  awk -F, -v v="$1" -v k="$2" 'NR == 1 { for (i = 1; i <= NF; i++) c[$i] = i; next }
    $1 == v { t[n] = $c["t_s"]; x[n++] = $c[k] }
    END { if (n < 4) { print "0 0"; exit }
      a = 0; na = 0; b = 0; nb = 0
      for (i = 0; i < n; i++) {
        if (i >= n / 4 && i < n / 2) { a += x[i]; na++ }
        if (i >= 3 * n / 4) { b += x[i]; nb++ } }
      printf "%.1f %.1f\n", a / na, b / nb }' "$dir/timeline.csv"
}
ok() { if awk "BEGIN { exit !($1) }"; then echo ok; else echo MISSED; fi; }

summary=$BENCH_TMP/summary.txt
{
  echo "Lab $num ($lab): $title"
  echo "$rate req/s, $conns connections; mixed step ${step_s} s ($fail_pct% of the dashboards fail)," \
    "failing-only step ${fail_step_s} s; args: ${lab_args[*]}"
  echo "the failing call (orders) answers after $fail_ms ms, the slow sibling (recommendations) after $slow_ms ms"
  echo
  printf '%-9s %-8s %8s %8s %8s %8s %8s %8s %8s\n' variant step achieved "ok/s" "p50 ms" "p90 ms" \
    "p99 ms" "max ms" errors
  awk -F, 'NR == 1 { for (i = 1; i <= NF; i++) c[$i] = i; next }
    { e = $c["err_connect"] + $c["err_timeout"] + $c["err_other"]
      printf "%-9s %-8s %8.0f %8.0f %8.2f %8.2f %8.2f %8.2f %8d\n", $c["variant"], $c["label"],
        $c["achieved_rps"], $c["ok_rps"], $c["p50_ms"], $c["p90_ms"], $c["p99_ms"], $c["max_ms"], e }' \
    "$dir/gather.csv"
  echo "(a failed dashboard is an HTTP 502/504: ok/s counts 200s only; errors: no answer at all)"
  echo
  printf '%-9s %9s %9s %11s %12s %10s %11s %11s\n' variant failed late_cb "wasted s" "wasted/fail" \
    abandoned "inflight" "rss MB"
  for v in $variants; do
    f=$dir/final-$v.csv u=$dir/upstream-$v.csv
    failed=$(kv "$f" dashboards_failed) late=$(kv "$f" late_callbacks) wasted=$(kv "$f" orphan_ms_total)
    read -r if_a if_b <<< "$(quarters "$v" calls_inflight)"
    read -r rss_a rss_b <<< "$(quarters "$v" rss_kb)"
    printf '%-9s %9.0f %9.0f %11.1f %9.0f ms %10.0f %5.0f->%-5.0f %5.1f->%-5.1f\n' "$v" "$failed" \
      "$late" "$(awk -v w="$wasted" 'BEGIN { print w / 1000 }')" \
      "$(awk -v w="$wasted" -v f="$failed" 'BEGIN { print (f > 0 ? w / f : 0) }')" \
      "$(kv "$u" abandoned)" "$if_a" "$if_b" "$(awk -v r="$rss_a" 'BEGIN { print r / 1024 }')" \
      "$(awk -v r="$rss_b" 'BEGIN { print r / 1024 }')"
  done
  echo "(late_cb: call callbacks after their dashboard had answered; wasted: upstream time those calls"
  echo " ran after the answer; abandoned: calls the upstream saw cancelled; inflight and rss: mean of"
  echo " the 2nd quarter -> mean of the last quarter of the mixed step)"
  echo
  for v in $variants; do
    f=$dir/final-$v.csv
    p50=$(col "$v" failing_p50) p99=$(col "$v" failing_p99)
    late=$(kv "$f" late_callbacks) failed=$(kv "$f" dashboards_failed) wasted=$(kv "$f" orphan_ms_total)
    if awk -v p="$p50" -v s="$slow_ms" 'BEGIN { exit !(p >= 0.8 * s) }'; then
      how="waits for the slow sibling (failure path p50 $p50 ms vs the failing call's $fail_ms ms)"
    elif [ "${late%.*}" != 0 ]; then
      how="answers at the first error and orphans the siblings: $late late callbacks, $(awk -v w="$wasted" -v f="$failed" 'BEGIN { printf "%.3f", (f > 0 ? w / f / 1000 : 0) }') upstream s wasted per failed dashboard"
    else
      how="cancels the siblings: no late callback, nothing wasted"
    fi
    echo "$v: failure path p99 $p99 ms ($(awk -v p="$p99" -v f="$fail_ms" 'BEGIN { printf "%.1f", p / f }')x the failing call); $how"
  done
  if [[ " $variants " == *" solution "* ]]; then
    f=$dir/final-solution.csv
    read -r if_a if_b <<< "$(quarters solution calls_inflight)"
    read -r rss_a rss_b <<< "$(quarters solution rss_kb)"
    echo "targets: solution failure p99 <= 2 x $fail_ms ms: $(ok "$(col solution failing_p99) <= 2 * $fail_ms");" \
      "solution late callbacks 0: $(ok "$(kv "$f" late_callbacks) == 0");" \
      "in flight flat (last <= 1.2 x 2nd quarter + 2): $(ok "$if_b <= 1.2 * $if_a + 2");" \
      "RSS flat (last <= 2nd quarter + 10%): $(ok "$rss_b <= 1.1 * $rss_a")"
  fi
  echo "bench took $(awk -v a="$(bench_now_s)" -v b="$t_start" 'BEGIN { printf "%.0f", a - b }') s"
} > "$summary"

# ---- plots ----
pictures=()
if command -v gnuplot >/dev/null; then
  common=("variants='$variants'" "fail_ms=$fail_ms" "slow_ms=$slow_ms")
  tl=("csv='$dir/timeline.csv'")
  mapfile -t -O "${#pictures[@]}" pictures < <(bench_plot "$BENCH_PLOT_DIR/gather.gp" "$dir/latency" \
    "${common[@]}" "kind='latency'" "csv='$dir/latency.csv'" \
    "plottitle=\"Lab $num: latency at $rate req/s; failing only: answered at the first error ($fail_ms ms) or later?\"")
  mapfile -t -O "${#pictures[@]}" pictures < <(bench_plot "$BENCH_PLOT_DIR/gather.gp" "$dir/inflight" \
    "${common[@]}" "${tl[@]}" "kind='inflight'" \
    "plottitle=\"Lab $num: upstream calls in flight, $rate req/s, $fail_pct% of the dashboards failing\\norphans (calls nobody waits for) add to the load the upstream carries\"")
  mapfile -t -O "${#pictures[@]}" pictures < <(bench_plot "$BENCH_PLOT_DIR/gather.gp" "$dir/wasted" \
    "${common[@]}" "${tl[@]}" "kind='wasted'" \
    "plottitle=\"Lab $num: upstream seconds spent on calls after their dashboard had answered (cumulative)\"")
  mapfile -t -O "${#pictures[@]}" pictures < <(bench_plot "$BENCH_PLOT_DIR/gather.gp" "$dir/rss" \
    "${common[@]}" "${tl[@]}" "kind='rss'" "plottitle=\"Lab $num: resident memory of the service\"")
  {
    echo
    bench_dumb "$BENCH_PLOT_DIR/gather.gp" "${common[@]}" "${tl[@]}" "kind='inflight'" \
      "plottitle='upstream calls in flight over time'"
  } >> "$summary"
else
  bench_warn "gnuplot is missing (make deps): no plots"
fi

{
  echo
  echo "files:"
  for f in gather.csv latency.csv timeline.csv $(cd "$dir" && ls final-*.csv upstream-*.csv 2>/dev/null); do
    echo "  $(bench_rel "$dir/$f")"
  done
  for p in "${pictures[@]}"; do echo "  $(bench_rel "$p")"; done
  echo "  $(bench_rel "$dir/summary.txt")"
} >> "$summary"
cp "$summary" "$dir/summary.txt"
echo
cat "$summary"
