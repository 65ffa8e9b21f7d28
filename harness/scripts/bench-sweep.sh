#!/usr/bin/env bash
# bench-sweep.sh - the default bench scenario: sweep the offered load over each variant of a lab.
#
#   bench-sweep.sh --lab NN [--variants "pitfall solution exercise"] [--out DIR] [--quick] [--full]
#   bench-sweep.sh --lab NN --replot [--out DIR]   summary and plots again from the CSVs
#
# For each variant: start build/bin/labNN-VARIANT (and build/bin/upstream when the manifest names
# one; the lab gets --upstream URL), warm up, run one open-loop loadgen step per offered load in
# the manifest's `loads` (step_s seconds each, `conns` connections, GET `path`) while sampling
# /debug/stats every 100 ms, then one closed-loop step (peak throughput). The trivial-handler
# ceiling (build/bin/hello, closed loop) is measured in the same run.
#
# Once a variant has collapsed (2xx answers < 60% of the offered load in one step, or < 80% in
# two steps in a row), its higher open-loop loads are skipped: they would only repeat the same
# cap while requests time out (and every timeout leaves work behind in a blocked server). The
# closed-loop peak step still runs. --full runs every load.
# --quick: three loads, 0.5 s steps (a CI smoke run; lab 01 in < 30 s).
#
# Writes DIR/NN-slug/ (DIR defaults to results/):
#   sweep.csv            variant, then loadgen's summary row (label "open" or "closed"), then
#                        lag_max_ms (the highest loop lag during the step) and lag_p99_ms (the
#                        highest per-second p99 of the loop lag sampled during the step).
#                        The first row, variant "hello", is the ceiling (empty lag columns).
#   stats-VARIANT.csv    t_s (since the variant started), step, offered_rps (0 = closed loop),
#                        then every /debug/stats field, one row per 100 ms sample
#   upstream-VARIANT.csv key,value of the upstream's /stats after the variant's sweep
#   throughput.{png,svg} latency.{png,svg} looplag.{png,svg}, summary.txt (also on stdout)
#
# Environment: BUILD (default build), BENCH_PLOTS=0 (no pictures: figures and CSVs only).
# Scenario-specific manifest keys: timeout_ms (loadgen's per-request timeout in the open-loop
# steps, default 2000: a collapsed variant's p99 shows as this; the closed-loop step waits at
# least 3000, since there every connection queues behind the others).
# See docs/bench.md for the columns and how to read the plots.

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
. "$HERE/benchlib.sh"
. "$HERE/manifest.sh"

usage() {
  echo "usage:"; sed -n '4,5p' "$0" | sed 's/^# \{0,1\}//'
  echo "  Sweeps offered load over each variant of lab NN; writes CSVs, plots and a summary."
  echo "  See the header of $0 or docs/bench.md."
}

lab_arg="" variants="" out_dir="" quick=0 full=0 replot=0
while [ $# -gt 0 ]; do
  case "$1" in
    --lab) [ $# -ge 2 ] || { usage >&2; exit 2; }; lab_arg=$2; shift 2 ;;
    --variants) [ $# -ge 2 ] || { usage >&2; exit 2; }; variants=$2; shift 2 ;;
    --out) [ $# -ge 2 ] || { usage >&2; exit 2; }; out_dir=$2; shift 2 ;;
    --quick) quick=1; shift ;;
    --full) full=1; shift ;;
    --replot) replot=1; shift ;;
    -h|--help) usage; exit 0 ;;
    *) echo "bench-sweep.sh: unknown argument '$1'" >&2; usage >&2; exit 2 ;;
  esac
done
[ -n "$lab_arg" ] || { echo "bench-sweep.sh: --lab is required" >&2; usage >&2; exit 2; }

bench_init || exit 1
lab=$(manifest_resolve "$lab_arg") || { bench_err "no lab '$lab_arg' in labs/manifest"; exit 2; }
num=${lab%%-*}
tag="lab $num"
out_dir=${out_dir:-$BENCH_ROOT/results}
dir=$out_dir/$lab
if [ "$replot" = 1 ] && [ -z "$variants" ] && [ -s "$dir/sweep.csv" ]; then
  variants=$(awk -F, 'NR > 1 && $1 != "hello" && !seen[$1]++ { printf "%s ", $1 }' "$dir/sweep.csv")
fi
variants=${variants:-pitfall solution exercise}

read -r -a lab_args <<< "$(manifest_get "$lab" args "")"
read -r -a up_args <<< "$(manifest_get "$lab" upstream none)"
read -r -a loads <<< "$(manifest_get "$lab" loads "200 500 1000 2000")"
conns=$(manifest_get "$lab" conns 50)
step_s=$(manifest_get "$lab" step_s 2)
path=$(manifest_get "$lab" path /)
timeout_ms=$(manifest_get "$lab" timeout_ms 2000)
title=$(manifest_get "$lab" title "")
warm_s=0.5
ceiling_s=2

# D: the delay every request waits (lab 01's --delay-ms), when the lab has one.
delay_ms=0
for ((i = 0; i < ${#lab_args[@]}; i++)); do
  case "${lab_args[i]}" in
    --delay-ms) delay_ms=${lab_args[i + 1]:-0} ;;
    --delay-ms=*) delay_ms=${lab_args[i]#--delay-ms=} ;;
  esac
done

for l in "${loads[@]}"; do
  case "$l" in ''|*[!0-9]*) bench_err "labs/manifest: $lab: loads must be whole req/s, got '$l'"; exit 2 ;; esac
done

if [ "$quick" = 1 ]; then
  n=${#loads[@]}
  if [ "$n" -gt 3 ]; then loads=("${loads[0]}" "${loads[n / 2]}" "${loads[n - 1]}"); fi
  step_s=0.5 warm_s=0.2 ceiling_s=0.5
fi

# The service's /debug/stats has loop_lag_max_ms (highest since start or since POST
# /debug/stats, which resets it before every step) and loop_lag_recent_max_ms (over the last
# second: the time series). has_column CSV NAME; lag_max CSV NAME: the highest value in a step.
has_column() {
  local h=""
  { IFS= read -r h < "$1"; } 2>/dev/null
  case ",$h," in *",$2,"*) return 0 ;; esac
  return 1
}
lag_max() {
  has_column "$1" "$2" || { echo ""; return 0; }
  awk -F, -v c="$2" 'NR == 1 { for (i = 1; i <= NF; i++) if ($i == c) k = i; next }
    $k != "" { n++; if ($k + 0 > m) m = $k + 0 } END { if (n) printf "%.3f\n", m; else print "" }' "$1"
}

# fmt X: a figure with as many decimals as it deserves (1234, 12.3, 1.23).
fmt() {
  local i=${1%.*}
  i=${i#-}
  if [ "${i:-0}" -ge 100 ]; then printf '%.0f' "$1"
  elif [ "${i:-0}" -ge 10 ]; then printf '%.1f' "$1"
  else printf '%.2f' "${1:-0}"; fi
}

# run_variant VARIANT: start it (and its upstream), warm up, run the steps, stop it. Appends to
# sweep.csv and stats-VARIANT.csv.
run_variant() {
  local v=$1
  local url step_csv=$BENCH_TMP/stats-step.csv stats_csv=$dir/stats-$1.csv
  local -a args=("${lab_args[@]}")
  local t0_us t_step rate i n lag lag99 after achieved mode step_timeout
  local saturated=0 skipped=0 collapsed=0 collapse_note="" step_lagcol=loop_lag_max_ms
  if [ "${up_args[0]:-none}" != none ]; then
    bench_start upstream "$BENCH_BIN/upstream" "${up_args[@]}" || return 1
    # The lab is told where its upstream is: {upstream} in args, or --upstream URL.
    if [[ " ${args[*]} " == *"{upstream}"* ]]; then
      args=("${args[@]//\{upstream\}/${BENCH_URL[upstream]}}")
    else
      args+=(--upstream "${BENCH_URL[upstream]}")
    fi
  fi
  bench_start svc "$BENCH_BIN/lab$num-$v" "${args[@]}" || return 1
  url=${BENCH_URL[svc]}
  # Warm-up (connections, page faults) at half the first load: below a blocked variant's
  # capacity too, so that no backlog spills into the first step.
  bench_step "$url$path" "$(( (${loads[0]} + 1) / 2 ))" "$conns" "$warm_s" -t "$timeout_ms" || return 1

  bench__now
  t0_us=$BENCH__US
  n=$(( ${#loads[@]} + 1 ))
  i=0
  for rate in "${loads[@]}" 0; do
    i=$((i + 1))
    if [ "$rate" != 0 ] && [ "$full" = 0 ] && [ "$collapsed" = 1 ]; then
      skipped=$((skipped + 1)); continue
    fi
    bench__now
    t_step=$(( (BENCH__US - t0_us) / 1000 ))
    t_step=$((t_step / 1000)).$(printf '%03d' $((t_step % 1000)))
    : > "$step_csv"
    # No reset (a service without POST /debug/stats): the recent window is the best we have.
    if [ "$step_lagcol" = loop_lag_max_ms ] && ! bench_reset_stats svc; then
      step_lagcol=loop_lag_recent_max_ms
    fi
    mode=open; [ "$rate" = 0 ] && mode=closed
    step_timeout=$timeout_ms
    [ "$rate" = 0 ] && [ "$step_timeout" -lt 3000 ] && step_timeout=3000
    bench_progress "$tag" "$v" "$rate" "$i" "$n"
    bench_step "$url$path" "$rate" "$conns" "$step_s" -t "$step_timeout" --label "$mode" \
      --stats-url "$url/debug/stats" --stats-interval-ms 100 --stats-out "$step_csv" || return 1
    [ -s "$dir/sweep.csv" ] || echo "variant,$BENCH_HEADER,lag_max_ms,lag_p99_ms" > "$dir/sweep.csv"
    lag=$(lag_max "$step_csv" "$step_lagcol")
    # A blocked loop answers few samples during the step (none, in a closed-loop step): ask once
    # more after it. Since the reset, loop_lag_max_ms covers the whole step.
    if [ "$step_lagcol" = loop_lag_max_ms ]; then
      after=$(bench_http svc /debug/stats 2>/dev/null) &&
        after=$(bench_json_get "$after" loop_lag_max_ms) &&
        lag=$(awk -v a="${lag:-0}" -v b="$after" 'BEGIN { printf "%.3f", (b + 0 > a + 0) ? b : a }')
    fi
    lag99=$(lag_max "$step_csv" loop_lag_p99_ms)
    echo "$v,$BENCH_ROW,$lag,$lag99" >> "$dir/sweep.csv"
    bench_stats_append "$stats_csv" "$step_csv" "$t_step" "$rate" "$i"
    bench_progress_done "loop lag max $(fmt "${lag:-0}") ms"
    if [ "$rate" != 0 ]; then
      achieved=$(bench_field ok_rps)
      achieved=${achieved%.*}
      if [ $(( ${achieved:-0} * 10 )) -lt $((rate * 8)) ]; then
        saturated=$((saturated + 1))
      else
        saturated=0
      fi
      if [ $(( ${achieved:-0} * 10 )) -lt $((rate * 6)) ] || [ "$saturated" -ge 2 ]; then
        [ "$collapsed" = 1 ] || collapse_note="at $rate req/s (2xx answers: $achieved/s)"
        collapsed=1
      fi
    fi
  done
  [ "$skipped" = 0 ] || bench_log "[$tag] $v: collapsed $collapse_note; skipped $skipped higher load(s) (--full runs them)"
  bench_stop svc
  # After the lab is gone: its connections no longer hold the upstream's slots (--max-conns),
  # and the counters are final.
  local up_json
  if [ -n "${BENCH_PID[upstream]:-}" ] && up_json=$(bench_http upstream /stats); then
    { echo "key,value"; tr -d '{}" \n' <<< "$up_json" | tr ',' '\n' | tr ':' ','; echo; } |
      grep -v '^$' > "$dir/upstream-$v.csv"
  fi
  bench_stop upstream
}

if [ "$replot" = 1 ]; then
  [ -s "$dir/sweep.csv" ] || { bench_err "$dir/sweep.csv is missing: run the bench first"; exit 1; }
else
  for v in $variants; do
    [ -x "$BENCH_BIN/lab$num-$v" ] || {
      bench_err "$BUILD/bin/lab$num-$v is missing: make BUILD=$BUILD $BUILD/bin/lab$num-$v"; exit 1; }
  done
  [ -x "$BENCH_BIN/loadgen" ] || { bench_err "$BUILD/bin/loadgen is missing: make BUILD=$BUILD $BUILD/bin/loadgen"; exit 1; }
  if [ "${up_args[0]:-none}" != none ] && [ ! -x "$BENCH_BIN/upstream" ]; then
    bench_err "$BUILD/bin/upstream is missing: make BUILD=$BUILD $BUILD/bin/upstream"; exit 1
  fi

  mkdir -p "$dir" || { bench_err "mkdir -p $dir failed"; exit 1; }
  rm -f "$dir"/sweep.csv "$dir"/stats-*.csv "$dir"/upstream-*.csv "$dir"/summary.txt \
    "$dir"/throughput.png "$dir"/throughput.svg "$dir"/latency.png "$dir"/latency.svg \
    "$dir"/looplag.png "$dir"/looplag.svg

  bench_log "[$tag] $lab: ${title:-?}"
  bench_log "[$tag] variants: $variants; loads: ${loads[*]} req/s + peak; $conns connections;" \
    "$step_s s per step; GET $path$([ "$delay_ms" = 0 ] || echo "; D = $delay_ms ms")"

  # The ceiling first, while the machine is in the same state as for the sweep. Its loadgen row
  # is the first row of sweep.csv (variant "hello").
  bench_log "[$tag] ceiling: build/bin/hello, closed loop, $conns connections, $ceiling_s s ..."
  if bench_ceiling "$conns" "$ceiling_s"; then
    echo "variant,$BENCH_HEADER,lag_max_ms,lag_p99_ms" > "$dir/sweep.csv"
    echo "hello,$BENCH_ROW,," >> "$dir/sweep.csv"
    bench_log "[$tag] ceiling: $BENCH_CEILING_RPS req/s (a trivial handler on the same shell)"
  else
    bench_warn "no ceiling measured (build it: make BUILD=$BUILD $BUILD/bin/hello)"
  fi


  for v in $variants; do
    run_variant "$v" || { bench_err "[$tag] $v: the sweep stopped (see above)"; exit 1; }
  done
fi

# ---- figures ----
# One awk pass over sweep.csv: per variant its peak throughput, its highest loop lag (max and
# p99) under the offered loads and at the closed-loop peak; the highest open-loop load both
# pitfall and solution were offered, and their p99 there.
ceiling=0 common=0
eval "$(awk -F, '
  NR == 1 { for (i = 1; i <= NF; i++) c[$i] = i; next }
  {
    v = $c["variant"]; gsub(/[^a-z0-9_]/, "_", v)
    if (v == "hello") { printf "ceiling=%.0f\n", $c["ok_rps"]; next }
    if (!dur) { dur = $c["duration_s"] + 0; printf "step_s=%s\n", dur }
    a = $c["achieved_rps"] + 0; lag = $c["lag_max_ms"] + 0; off = $c["offered_rps"] + 0
    if (a > peak[v]) peak[v] = a
    seen[v] = 1
    if (off > 0) {
      p99[v, off] = $c["p99_ms"]; has[v, off] = 1; offs[off] = 1
      if (lag > lagm[v]) lagm[v] = lag
      if ($c["lag_p99_ms"] + 0 > lag99[v]) lag99[v] = $c["lag_p99_ms"] + 0
    } else {
      if (lag > lagpk[v]) lagpk[v] = lag
      if (a > cpeak[v]) cpeak[v] = a
    }
  }
  END {
    for (v in seen) printf "peak_%s=%.0f\nlag_%s=%.3f\nlag99_%s=%.3f\nlagpk_%s=%.3f\n",
      v, peak[v], v, lagm[v], v, lag99[v], v, lagpk[v]
    for (v in seen) printf "cpeak_%s=%.0f\n", v, cpeak[v]
    common = 0
    for (o in offs) if (has["pitfall", o] && has["solution", o] && o + 0 > common) common = o + 0
    printf "common=%s\n", common
    if (common > 0) printf "p99_pit=%s\np99_sol=%s\n", p99["pitfall", common], p99["solution", common]
  }' "$dir/sweep.csv")"

nd=0 blocked=0
if [ "$delay_ms" != 0 ]; then
  nd=$(awk -v n="$conns" -v d="$delay_ms" 'BEGIN { printf "%.0f", n * 1000 / d }')
  blocked=$(awk -v d="$delay_ms" 'BEGIN { printf "%.0f", 1000 / d }')
fi
limit=0
if [ "$nd" != 0 ] && [ "$ceiling" != 0 ]; then
  limit=$(( nd < ceiling ? nd : ceiling ))
elif [ "$nd" != 0 ]; then limit=$nd
else limit=$ceiling
fi

summary=$BENCH_TMP/summary.txt
{
  echo "Lab $num ($lab): $title"
  echo "$conns connections, $step_s s per step, GET $path, lab args: ${lab_args[*]:-none}," \
    "upstream: ${up_args[*]:-none}"
  echo
  awk -F, 'NR == 1 { for (i = 1; i <= NF; i++) c[$i] = i
      printf "%-9s %8s %8s %8s %8s %8s %8s %7s %8s %8s\n", "variant", "offered", "achieved", "ok/s",
        "p50 ms", "p99 ms", "max ms", "errors", "lag max", "lag p99"; next }
    { e = $c["err_connect"] + $c["err_timeout"] + $c["err_http"] + $c["err_other"]
      printf "%-9s %8s %8.0f %8.0f %8.2f %8.2f %8.2f %7d %8s %8s\n", $c["variant"],
        ($c["offered_rps"] + 0 == 0 ? ($c["variant"] == "hello" ? "ceiling" : "peak") : sprintf("%.0f", $c["offered_rps"])),
        $c["achieved_rps"], $c["ok_rps"], $c["p50_ms"], $c["p99_ms"], $c["max_ms"], e,
        num($c["lag_max_ms"]), num($c["lag_p99_ms"]) }
    function num(x) { return x == "" ? "-" : sprintf("%.2f", x) }' "$dir/sweep.csv"
  echo "(hello: the trivial handler, closed loop; peak: closed loop; lag: the event loop's lag in ms"
  echo " during the step, from /debug/stats; -: no sample answered, the loop was too busy)"
  echo
  # The limit the physics allows, and how close the solution came.
  line="limit:"
  if [ "$nd" != 0 ] && [ "$ceiling" != 0 ]; then
    line="$line min(N/D = $conns/${delay_ms}ms = $nd, ceiling = $ceiling) = $limit req/s"
  elif [ "$nd" != 0 ]; then
    line="$line N/D = $conns/${delay_ms}ms = $nd req/s (ceiling not measured)"
  elif [ "$ceiling" != 0 ]; then
    line="$line ceiling = $ceiling req/s (trivial handler, closed loop)"
  else
    line="$line unknown (no ceiling measured, no --delay-ms)"
  fi
  if [ -n "${peak_solution:-}" ] && [ "$limit" != 0 ]; then
    line="$line; solution peak $peak_solution ($(awk -v p="$peak_solution" -v l="$limit" 'BEGIN { printf "%.0f", 100 * p / l }')%)"
  fi
  echo "$line"
  for v in $variants; do
    pk=peak_$v lg=lag_$v l99=lag99_$v lpk=lagpk_$v
    printf '%-9s peak %s req/s; loop lag under the offered loads: max %s ms, p99 %s ms; at peak: max %s ms\n' \
      "$v:" "${!pk:-?}" "$(fmt "${!lg:-0}")" "$(fmt "${!l99:-0}")" "$(fmt "${!lpk:-0}")"
  done
  if [ "$nd" != 0 ] && [ -n "${peak_pitfall:-}" ]; then
    echo "pitfall peak $peak_pitfall req/s vs the blocked-loop limit 1000/D = $blocked req/s"
  fi
  ratio=""
  if [ "${common:-0}" != 0 ] && [ -n "${p99_pit:-}" ] && [ -n "${p99_sol:-}" ]; then
    ratio=$(awk -v a="$p99_pit" -v b="$p99_sol" 'BEGIN { if (b > 0) printf "%.0f", a / b }')
    echo "p99 at $common req/s: pitfall $(fmt "$p99_pit") ms / solution $(fmt "$p99_sol") ms = ${ratio}x"
  fi
  # Targets of a blocking-delay lab (lab 01's issue), checked when D is known.
  if [ "$nd" != 0 ] && [ -n "${peak_solution:-}" ] && [ -n "${peak_pitfall:-}" ]; then
    ok() { if awk "BEGIN { exit !($1) }"; then echo ok; else echo MISSED; fi; }
    echo "targets: solution peak >= 80% of limit: $(ok "$peak_solution >= 0.8 * $limit");" \
      "pitfall peak <= 1.5 x 1000/D: $(ok "$peak_pitfall <= 1.5 * $blocked");" \
      "pitfall p99 >= 20x solution: $( [ -n "$ratio" ] && ok "$ratio >= 20" || echo n/a);" \
      "solution lag max < 5 ms: $(ok "${lag_solution:-0} < 5");" \
      "pitfall lag >= D: $(ok "${lag_pitfall:-0} >= $delay_ms")"
  fi
  [ "$replot" = 1 ] || echo "bench took $(bench_now_s | cut -d. -f1) s"
} > "$summary"

# ---- plots ----
drawn=""
for v in $variants; do grep -q "^$v," "$dir/sweep.csv" && drawn="$drawn $v"; done
drawn=${drawn# }
sol_peak=${peak_solution:-}
pit_peak=${peak_pitfall:-}
if [ "$blocked" != 0 ] && [ -n "$pit_peak" ]; then
  t_title="Lab $num: blocking D = $delay_ms ms per request caps the pitfall at 1000/D = $blocked req/s (it reached $pit_peak)"
elif [ -n "$pit_peak" ]; then
  t_title="Lab $num: the pitfall tops out at $pit_peak req/s"
else
  t_title="Lab $num: achieved vs offered load"
fi
[ -n "$sol_peak" ] && t_title="$t_title\nthe solution follows the offered load (peak $sol_peak req/s closed loop)"
l_title="Lab $num: p99 latency"
[ -n "$ratio" ] && l_title="$l_title: at $common req/s the pitfall answers ${ratio}x slower than the solution ($(fmt "$p99_pit") ms vs $(fmt "$p99_sol") ms)"
l_title="$l_title\nopen loop: a request waiting behind a blocked loop counts from its intended send time"
g_title="Lab $num: event-loop lag during the sweep"
[ -n "${lag_pitfall:-}" ] && g_title="$g_title: pitfall up to $(fmt "$lag_pitfall") ms"
[ -n "${lag_solution:-}" ] && g_title="$g_title, solution at most $(fmt "$lag_solution") ms"
g_title="$g_title\nthe lag is how late a timer due now fires: every request on the loop waits that long too"

files="" loadfile="" most=0 lagcol=""
for v in $drawn; do
  f=$dir/stats-$v.csv
  [ -s "$f" ] || continue
  files="$files $f"; vs_lag="${vs_lag:-} $v"
  if [ -z "$lagcol" ]; then
    for c in loop_lag_recent_max_ms loop_lag_max_ms; do has_column "$f" "$c" && { lagcol=$c; break; }; done
  fi
  rows=$(wc -l < "$f")
  if [ "$rows" -gt "$most" ]; then most=$rows; loadfile=$f; fi
done

pictures=()
if [ "${BENCH_PLOTS:-1}" = 0 ]; then
  :   # the self-test's replot: figures only
elif command -v gnuplot >/dev/null; then
  peaks=""
  for v in $drawn; do cp=cpeak_$v; peaks="$peaks ${!cp:-0}"; done
  tp=("csv='$dir/sweep.csv'" "variants='$drawn'" "peaks='${peaks# }'" "plottitle=\"$t_title\"" "nd=$nd"
      "nd_text='N/D = $conns conns / $delay_ms ms = $nd req/s'" "blocked=$blocked" "ceiling=$ceiling")
  lp=("csv='$dir/sweep.csv'" "variants='$drawn'" "plottitle=\"$l_title\"" "delay=$delay_ms"
      "timeout=$timeout_ms")
  mapfile -t -O "${#pictures[@]}" pictures < <(bench_plot "$BENCH_PLOT_DIR/throughput.gp" "$dir/throughput" "${tp[@]}")
  mapfile -t -O "${#pictures[@]}" pictures < <(bench_plot "$BENCH_PLOT_DIR/latency.gp" "$dir/latency" "${lp[@]}")
  if [ -n "$files" ] && [ -n "$lagcol" ]; then
    gp=("files='${files# }'" "variants='${vs_lag# }'" "loadfile='$loadfile'" "lagcol='$lagcol'"
        "plottitle=\"$g_title\"" "delay=$delay_ms")
    mapfile -t -O "${#pictures[@]}" pictures < <(bench_plot "$BENCH_PLOT_DIR/looplag.gp" "$dir/looplag" "${gp[@]}")
  fi
  {
    echo
    bench_dumb "$BENCH_PLOT_DIR/throughput.gp" "${tp[@]}" "plottitle='throughput: achieved vs offered (req/s, log-log)'"
    bench_dumb "$BENCH_PLOT_DIR/latency.gp" "${lp[@]}" "plottitle='p99 latency (ms, log) vs offered load (req/s)'"
  } >> "$summary"
else
  bench_warn "gnuplot is missing (make deps): no plots"
fi

{
  echo
  # Paths inside the kit are shown relative to its root (results/01-blocking-sleep/...).
  echo "files:"
  for f in sweep.csv $(cd "$dir" && ls stats-*.csv upstream-*.csv 2>/dev/null); do echo "  $(bench_rel "$dir/$f")"; done
  for p in "${pictures[@]}"; do echo "  $(bench_rel "$p")"; done
  echo "  $(bench_rel "$dir/summary.txt")"
} >> "$summary"
cp "$summary" "$dir/summary.txt"
echo
cat "$summary"
