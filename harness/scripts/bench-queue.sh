#!/usr/bin/env bash
# bench-queue.sh - lab 05's bench scenario: a producer faster than the consumer, over time.
#
#   bench-queue.sh --lab NN [--variants "pitfall solution exercise"] [--out DIR] [--quick] [--full]
#
# For each variant: start build/bin/upstream (the manifest's `upstream` options) and
# build/bin/labNN-VARIANT (`args` + --upstream URL), then POST `path` with a `payload_bytes` body
# at each rate of `loads` in turn: every rate but the last for `step_s` seconds, the last (the
# overload, ~3x the drain rate) for `overload_s` seconds, then a trickle of 5 events/s for
# `recover_s` seconds while the backlog drains. /debug/stats is sampled every 200 ms throughout.
# Then a graceful stop (SIGTERM), and the upstream's /stats tell how many acknowledged events
# were delivered (ids_seen) and how many twice (ids_duplicate). With `flow 1` in the manifest
# (and without --quick), the solution runs once more with --mode flow ("solution-flow"): the
# overload for half as long, then the trickle, drawn from the time the others' overload began.
# --quick: 1 s steps, a 3 s overload, 1 s trickle, no flow run. --full is accepted and ignored.
#
# Writes DIR/NN-slug/ (DIR defaults to results/):
#   queue.csv              variant, phase, then loadgen's summary row of each step
#   stats-VARIANT.csv      t_s, step, offered_rps, then every /debug/stats field (200 ms samples)
#   timeline-VARIANT.csv   t_s, offered_rps, queue_depth, rss_mib, latency_ms (accept to
#                          processed, of the last event delivered), queue_age_ms, acked_rps,
#                          refused_rps, forwarded_rps (per second, over the last second), parked
#   delivery.csv           variant, acked, refused, delivered (upstream ids_seen), duplicates, lost
#   queue.{png,svg}        the four panels over time; summary.txt (also on stdout)

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
. "$HERE/benchlib.sh"
. "$HERE/manifest.sh"

usage() {
  echo "usage:"; sed -n '4p' "$0" | sed 's/^# \{0,1\}//'
  echo "  Overloads each variant of lab NN's queue over time; writes CSVs, plots and a summary."
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
    *) echo "bench-queue.sh: unknown argument '$1'" >&2; usage >&2; exit 2 ;;
  esac
done
[ -n "$lab_arg" ] || { echo "bench-queue.sh: --lab is required" >&2; usage >&2; exit 2; }

bench_init || exit 1
lab=$(manifest_resolve "$lab_arg") || { bench_err "no lab '$lab_arg' in labs/manifest"; exit 2; }
num=${lab%%-*}
tag="lab $num"
variants=${variants:-pitfall solution exercise}
out_dir=${out_dir:-$BENCH_ROOT/results}
dir=$out_dir/$lab

read -r -a lab_args <<< "$(manifest_get "$lab" args "")"
read -r -a up_args <<< "$(manifest_get "$lab" upstream "--latency-ms 20")"
read -r -a loads <<< "$(manifest_get "$lab" loads "100 200 600")"
conns=$(manifest_get "$lab" conns 32)
step_s=$(manifest_get "$lab" step_s 2)
path=$(manifest_get "$lab" path /events)
overload_s=$(manifest_get "$lab" overload_s 10)
recover_s=$(manifest_get "$lab" recover_s 3)
payload_bytes=$(manifest_get "$lab" payload_bytes 1024)
flow=$(manifest_get "$lab" flow 0)
title=$(manifest_get "$lab" title "")
timeout_ms=2000
trickle=5
if [ "$quick" = 1 ]; then step_s=1 overload_s=3 recover_s=1 flow=0; fi
overload=${loads[${#loads[@]} - 1]}

# The queue's bound, for the summary: --queue-cap in args, else the lab's default.
queue_cap=$(printf '%s\n' "${lab_args[@]}" | awk 'p { print; exit } $0 == "--queue-cap" { p = 1 }')
[ -n "$queue_cap" ] || queue_cap=$("$BENCH_BIN/lab$num-solution" --help 2>/dev/null |
  sed -n 's/.*--queue-cap N.*(default \([0-9]*\)).*/\1/p')

for v in $variants; do
  [ -x "$BENCH_BIN/lab$num-$v" ] || {
    bench_err "$BUILD/bin/lab$num-$v is missing: make BUILD=$BUILD $BUILD/bin/lab$num-$v"; exit 1; }
done
for t in loadgen upstream; do
  [ -x "$BENCH_BIN/$t" ] || { bench_err "$BUILD/bin/$t is missing: make BUILD=$BUILD $BUILD/bin/$t"; exit 1; }
done
runs=$variants
if [ "$flow" = 1 ] && [[ " $variants " == *" solution "* ]]; then runs="$runs solution-flow"; fi

mkdir -p "$dir" || { bench_err "mkdir -p $dir failed"; exit 1; }
rm -f "$dir"/queue.csv "$dir"/stats-*.csv "$dir"/timeline-*.csv "$dir"/delivery.csv \
  "$dir"/summary.txt "$dir"/queue.png "$dir"/queue.svg
body=$(head -c "$payload_bytes" /dev/zero | tr '\0' 'x')

bench_log "[$tag] $lab: ${title:-?}"
bench_log "[$tag] runs: $runs; POST $path ($payload_bytes B) at ${loads[*]} events/s" \
  "($step_s s each, the last for $overload_s s), then $trickle/s for $recover_s s; $conns connections"
t_start=$(bench_now_s)
overload_t=0   # when the overload began in the last full run: the flow run is drawn from there

# timeline STATS_CSV: the per-second rates and the units the plots want.
timeline() {
  awk -F, -v OFS=, '
    NR == 1 { for (i = 1; i <= NF; i++) c[$i] = i
      print "t_s,offered_rps,queue_depth,rss_mib,latency_ms,queue_age_ms,acked_rps,refused_rps,forwarded_rps,parked"
      next }
    {
      n++; t[n] = $c["t_s"]; a[n] = $c["acked"]; r[n] = $c["refused"]; f[n] = $c["forwarded"]
      while (j < n - 1 && t[j + 1] <= t[n] - 1.0) j++      # the newest sample a second ago
      if (j < 1) j = 1
      dt = t[n] - t[j]
      ar = dt > 0 ? (a[n] - a[j]) / dt : 0; rr = dt > 0 ? (r[n] - r[j]) / dt : 0
      fr = dt > 0 ? (f[n] - f[j]) / dt : 0
      printf "%s,%s,%s,%.2f,%s,%s,%.1f,%.1f,%.1f,%s\n", $c["t_s"], $c["offered_rps"], $c["queue_depth"],
        $c["rss_kb"] / 1024, $c["latency_last_ms"], $c["queue_age_ms"], ar, rr, fr, $c["parked"]
    }' "$1"
}

# run_variant LABEL BIN_VARIANT [EXTRA_ARGS...]
run_variant() {
  local v=$1 bin=$2; shift 2
  local step_csv=$BENCH_TMP/stats-step.csv stats_csv=$dir/stats-$v.csv t0 t_step i=0 stats
  local -a phases
  local shift_s=0
  [ "$v" = solution-flow ] && shift_s=$overload_t
  bench_start upstream "$BENCH_BIN/upstream" "${up_args[@]}" || return 1
  bench_start svc "$BENCH_BIN/lab$num-$bin" "${lab_args[@]}" "$@" --upstream "${BENCH_URL[upstream]}" ||
    return 1
  if [ "$v" = solution-flow ]; then
    phases=("$overload:$(( (overload_s + 1) / 2 )):overload" "$trickle:$recover_s:after")
  else
    phases=()
    for rate in "${loads[@]}"; do
      if [ "$rate" = "$overload" ]; then phases+=("$rate:$overload_s:overload")
      else phases+=("$rate:$step_s:$(awk -v r="$rate" -v o="$overload" 'BEGIN { printf "%.1fx", 3 * r / o }')"); fi
    done
    phases+=("$trickle:$recover_s:after")
  fi
  t0=$(bench_now_s)
  for ph in "${phases[@]}"; do
    local rate=${ph%%:*} rest=${ph#*:}; local secs=${rest%%:*} name=${rest#*:}
    i=$((i + 1))
    bench_progress "$tag" "$v" "$rate" "$i" "${#phases[@]}"
    t_step=$(awk -v a="$(bench_now_s)" -v b="$t0" -v s="$shift_s" 'BEGIN { printf "%.3f", a - b + s }')
    [ "$name" = overload ] && [ "$v" != solution-flow ] && overload_t=$t_step
    rm -f "$step_csv"
    bench_step "${BENCH_URL[svc]}$path" "$rate" "$conns" "$secs" -m POST -b "$body" -t "$timeout_ms" \
      --label "$name" --stats-url "${BENCH_URL[svc]}/debug/stats" --stats-interval-ms 200 \
      --stats-out "$step_csv" || return 1
    [ -s "$dir/queue.csv" ] || echo "variant,phase,$BENCH_HEADER" > "$dir/queue.csv"
    echo "$v,$name,$BENCH_ROW" >> "$dir/queue.csv"
    bench_stats_append "$stats_csv" "$step_csv" "$t_step" "$rate" "$name"
    stats=$(bench_http svc /debug/stats) || return 1
    bench_progress_done "queue $(bench_json_get "$stats" queue_depth), RSS $(bench_json_get "$stats" rss_kb) KiB"
  done
  # Final counters, then a graceful stop: what the lab acknowledged must reach the upstream.
  stats=$(bench_http svc /debug/stats) || return 1
  bench_stop svc
  local up; up=$(bench_http upstream /stats) || return 1
  bench_stop upstream
  local acked refused seen dup
  acked=$(bench_json_get "$stats" acked); refused=$(bench_json_get "$stats" refused)
  seen=$(bench_json_get "$up" ids_seen); dup=$(bench_json_get "$up" ids_duplicate)
  [ -s "$dir/delivery.csv" ] || echo "variant,acked,refused,delivered,duplicates,lost" > "$dir/delivery.csv"
  echo "$v,$acked,$refused,$seen,$dup,$(awk -v a="$acked" -v s="$seen" 'BEGIN { print a - s }')" >> "$dir/delivery.csv"
  timeline "$stats_csv" > "$dir/timeline-$v.csv"
}

for v in $runs; do
  if [ "$v" = solution-flow ]; then run_variant "$v" solution --mode flow
  else run_variant "$v" "$v"; fi || { bench_err "[$tag] $v: the run stopped (see above)"; exit 1; }
done

# ---- figures: slopes and bounds during the overload ----
# overload_figures STATS_CSV: rows of the overload step -> least-squares slopes of queue and RSS,
# the queue's peak, RSS growth (last - first sample), worst latency, the drain rate achieved.
overload_figures() {
  awk -F, 'NR == 1 { for (i = 1; i <= NF; i++) c[$i] = i; next }
    $c["step"] == "overload" {
      t = $c["t_s"]; q = $c["queue_depth"]; m = $c["rss_kb"] / 1024
      n++; st += t; stt += t * t; sq += t * q; sm += t * m; sqq += q; smm += m
      if (n == 1) { m0 = m; f0 = $c["forwarded"]; t0 = t }
      m1 = m; f1 = $c["forwarded"]; t1 = t
      if (q > qmax) qmax = q
      if ($c["latency_last_ms"] > lmax) lmax = $c["latency_last_ms"]
    }
    END {
      d = n * stt - st * st
      qs = d > 0 ? (n * sq - st * sqq) / d : 0; ms = d > 0 ? (n * sm - st * smm) / d : 0
      printf "%.1f %.3f %d %.2f %.0f %.0f\n", qs, ms, qmax, m1 - m0, lmax,
        (t1 > t0 ? (f1 - f0) / (t1 - t0) : 0) }' "$1"
}

summary=$BENCH_TMP/summary.txt
{
  echo "Lab $num ($lab): $title"
  echo "lab args: ${lab_args[*]:-none}; upstream: ${up_args[*]}; POST $path with $payload_bytes B;" \
    "$conns connections; overload $overload events/s for $overload_s s"
  echo
  awk -F, 'NR == 1 { for (i = 1; i <= NF; i++) c[$i] = i
      printf "%-14s %-9s %8s %9s %8s %8s %9s %9s %9s\n", "variant", "phase", "offered", "achieved",
        "2xx/s", "errors", "p50 ms", "p99 ms", "max ms"; next }
    { e = $c["err_connect"] + $c["err_timeout"] + $c["err_http"] + $c["err_other"]
      printf "%-14s %-9s %8.0f %9.0f %8.0f %8d %9.1f %9.1f %9.1f\n", $c["variant"], $c["phase"],
        $c["offered_rps"], $c["achieved_rps"], $c["ok_rps"], e, $c["p50_ms"], $c["p99_ms"], $c["max_ms"] }' \
    "$dir/queue.csv"
  echo
  echo "during the overload ($overload events/s for $overload_s s), then a graceful stop:"
  for v in $runs; do
    read -r qs ms qmax mgrow lmax drain <<< "$(overload_figures "$dir/stats-$v.csv")"
    IFS=, read -r _ acked refused seen dup lost <<< "$(grep "^$v," "$dir/delivery.csv")"
    printf '%-14s queue %+.0f events/s (peak %s), RSS %+.2f MiB/s (%+.1f MiB), latency up to %s ms, drain %s/s;\n' \
      "$v" "$qs" "$qmax" "$ms" "$mgrow" "$lmax" "$drain"
    printf '%-14s acked %s, refused %s, delivered %s, duplicates %s, lost %s\n' "" "$acked" "$refused" \
      "$seen" "$dup" "$lost"
  done
  if [ -n "$queue_cap" ]; then
    drain=$(overload_figures "$dir/stats-solution.csv" 2>/dev/null | awk '{ print $6 }')
    [ -n "$drain" ] && [ "$drain" != 0 ] &&
      echo "Q = $queue_cap at a drain rate of $drain/s: an acknowledged event waits at most about" \
        "$(awk -v q="$queue_cap" -v d="$drain" 'BEGIN { printf "%.0f", 1000 * q / d }') ms (Q / drain rate)"
  fi
  if [ -f "$dir/stats-solution.csv" ]; then
    read -r _ _ qmax mgrow _ _ <<< "$(overload_figures "$dir/stats-solution.csv")"
    IFS=, read -r _ _ _ _ dup lost <<< "$(grep "^solution," "$dir/delivery.csv")"
    ok() { if awk "BEGIN { exit !($1) }"; then echo ok; else echo MISSED; fi; }
    echo "targets: solution queue <= Q: $(ok "$qmax <= ${queue_cap:-0}"); RSS growth < 2 MiB:" \
      "$(ok "$mgrow < 2"); none lost: $(ok "$lost == 0"); no duplicates: $(ok "$dup == 0")"
  fi
  echo "bench took $(awk -v a="$(bench_now_s)" -v b="$t_start" 'BEGIN { printf "%.0f", a - b }') s"
} > "$summary"

# ---- plots ----
pictures=()
files="" drawn=""
for v in $runs; do files="$files $dir/timeline-$v.csv"; drawn="$drawn $v"; done
if command -v gnuplot >/dev/null; then
  gp=("files='${files# }'" "variants='${drawn# }'" "queue_cap=${queue_cap:-0}"
      "plottitle='Lab $num: $overload events/s offered for $overload_s s against a drain of about $((overload / 3))/s'")
  mapfile -t pictures < <(bench_plot "$BENCH_PLOT_DIR/queue.gp" "$dir/queue" "${gp[@]}")
else
  bench_warn "gnuplot is missing (make deps): no plots"
fi
{
  echo
  echo "files:"
  for f in queue.csv delivery.csv $(cd "$dir" && ls stats-*.csv timeline-*.csv 2>/dev/null); do echo "  $(bench_rel "$dir/$f")"; done
  for p in "${pictures[@]}"; do echo "  $(bench_rel "$p")"; done
  echo "  $(bench_rel "$dir/summary.txt")"
} >> "$summary"
cp "$summary" "$dir/summary.txt"
echo
cat "$summary"
