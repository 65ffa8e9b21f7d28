#!/usr/bin/env bash
# bench-fanout.sh - lab 03's bench scenario: one batch of N item fetches per point, N swept at a
# fixed limit K, then K swept at a fixed N.
#
#   bench-fanout.sh --lab NN [--variants "pitfall solution exercise"] [--out DIR] [--quick] [--full]
#   bench-fanout.sh --lab NN --replot [--out DIR]   summary and plots again from fanout.csv
#
# One upstream (build/bin/upstream with the manifest's `upstream` options) serves the whole run.
# Each point starts a fresh build/bin/labNN-VARIANT (so its peak RSS is that point's) with
#   --upstream URL/item --max-inflight K   under a soft fd limit of `nofile` (default 1024,
# Debian's default: what a service gets unless someone raises it), sends ONE GET /batch?n=N with
# curl, samples the service's open fds every 10 ms meanwhile, then reads its peak RSS (VmHWM),
# its /debug/stats and the upstream's /stats (reset before each point).
# The K sweep runs for every variant but the pitfall (which ignores K).
#
# Manifest keys (scenario-specific):
#   fanout_n   N values of the N sweep          (default: 10 100 500 1000 5000)
#   fanout_k   K of the N sweep                 (default: 16)
#   k_sweep    K values of the K sweep          (default: 8 16 32 64 128)
#   k_sweep_n  N of the K sweep                 (default: 500)
#   nofile     the service's soft RLIMIT_NOFILE (default: 1024)
# --quick: N 10 100 1000, K 8 32 128. --full is accepted (nothing is skipped anyway).
#
# Writes DIR/NN-slug/ (DIR defaults to results/):
#   fanout.csv   sweep (n or k), variant, n, k, latency_ms, ideal_ms (ceil(N/K) x latency),
#                total_ms (curl's), elapsed_ms (the service's), ok, err, err_connect, err_timeout,
#                err_http, base_fds, peak_fds, base_rss_kb, peak_rss_kb, lab_peak_inflight,
#                up_inflight_peak, up_connections_peak, loop_lag_max_ms
#   fanout-time.{png,svg}    total time vs N, with the ideal ceil(N/K) x latency
#   fanout-fds.{png,svg}     peak fds and peak RSS vs N
#   fanout-inflight.{png,svg} the upstream's peak in-flight vs N
#   fanout-errors.{png,svg}  failed items vs N
#   fanout-k.{png,svg}       total time vs K at fixed N, with the ideal
#   summary.txt              the figures (also on stdout)

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
. "$HERE/benchlib.sh"
. "$HERE/manifest.sh"

usage() {
  echo "usage:"; sed -n '5,6p' "$0" | sed 's/^# \{0,1\}//'
  echo "  Sweeps the batch size N and the limit K over each variant of lab NN (lab 03)."
  echo "  See the header of $0 for the CSV columns and plots."
}

lab_arg="" variants="" out_dir="" quick=0 replot=0
while [ $# -gt 0 ]; do
  case "$1" in
    --lab) [ $# -ge 2 ] || { usage >&2; exit 2; }; lab_arg=$2; shift 2 ;;
    --variants) [ $# -ge 2 ] || { usage >&2; exit 2; }; variants=$2; shift 2 ;;
    --out) [ $# -ge 2 ] || { usage >&2; exit 2; }; out_dir=$2; shift 2 ;;
    --quick) quick=1; shift ;;
    --full) shift ;;
    --replot) replot=1; shift ;;
    -h|--help) usage; exit 0 ;;
    *) echo "bench-fanout.sh: unknown argument '$1'" >&2; usage >&2; exit 2 ;;
  esac
done
[ -n "$lab_arg" ] || { echo "bench-fanout.sh: --lab is required" >&2; usage >&2; exit 2; }

bench_init || exit 1
lab=$(manifest_resolve "$lab_arg") || { bench_err "no lab '$lab_arg' in labs/manifest"; exit 2; }
num=${lab%%-*}
tag="lab $num"
variants=${variants:-pitfall solution exercise}
out_dir=${out_dir:-$BENCH_ROOT/results}
dir=$out_dir/$lab
csv=$dir/fanout.csv

read -r -a lab_args <<< "$(manifest_get "$lab" args "")"
read -r -a up_args <<< "$(manifest_get "$lab" upstream "--latency-ms 20")"
read -r -a n_list <<< "$(manifest_get "$lab" fanout_n "10 100 500 1000 5000")"
k_fixed=$(manifest_get "$lab" fanout_k 16)
read -r -a k_list <<< "$(manifest_get "$lab" k_sweep "8 16 32 64 128")"
k_sweep_n=$(manifest_get "$lab" k_sweep_n 500)
nofile=$(manifest_get "$lab" nofile 1024)
if [ "$quick" = 1 ]; then n_list=(10 100 1000); k_list=(8 32 128); fi

latency_ms=0
for ((i = 0; i < ${#up_args[@]}; i++)); do
  case "${up_args[i]}" in
    --latency-ms) latency_ms=${up_args[i + 1]:-0} ;;
    --latency-ms=*) latency_ms=${up_args[i]#--latency-ms=} ;;
  esac
done

if [ "$replot" = 1 ]; then
  [ -s "$csv" ] || { bench_err "--replot: $csv is missing (run the bench first)"; exit 1; }
  # The variants the CSV holds, in the usual order.
  variants=$(for v in pitfall solution exercise; do
    awk -F, -v v="$v" '$2 == v { print v; exit }' "$csv"; done | tr '\n' ' ' | sed 's/ *$//')
fi

for v in $variants; do
  [ "$replot" = 1 ] && break
  [ -x "$BENCH_BIN/lab$num-$v" ] || {
    bench_err "$BUILD/bin/lab$num-$v is missing: make BUILD=$BUILD $BUILD/bin/lab$num-$v"; exit 1; }
done
[ "$replot" = 1 ] || [ -x "$BENCH_BIN/upstream" ] || {
  bench_err "$BUILD/bin/upstream is missing: make BUILD=$BUILD $BUILD/bin/upstream"; exit 1; }

mkdir -p "$dir" || { bench_err "mkdir -p $dir failed"; exit 1; }
[ "$replot" = 1 ] || rm -f "$csv"
rm -f "$dir"/summary.txt "$dir"/fanout-*.png "$dir"/fanout-*.svg

# The upstream must not be the bottleneck: it gets the hard fd limit, the service `nofile`.
hard_nofile=$(ulimit -Hn)
ulimit -Sn "$hard_nofile" 2>/dev/null || true
orig_nofile=$(ulimit -Sn)
if [ "$hard_nofile" != unlimited ] && [ "$nofile" -gt "$hard_nofile" ]; then nofile=$hard_nofile; fi

bench_log "[$tag] $lab: $(manifest_get "$lab" title "")"
bench_log "[$tag] variants: $variants; N sweep ${n_list[*]} at K=$k_fixed; K sweep ${k_list[*]}" \
  "at N=$k_sweep_n; upstream latency $latency_ms ms; service fd limit $nofile"
UP=""
if [ "$replot" = 0 ]; then
  bench_start upstream "$BENCH_BIN/upstream" "${up_args[@]}" || exit 1
  UP=${BENCH_URL[upstream]}
fi

# fd_sampler PID OUT STOP: the most fds PID had open, sampled every 10 ms until STOP exists
# (bounded: 2 minutes, or until PID is gone). Globbing /proc/PID/fd costs no fork.
fd_sampler() {
  local pid=$1 out=$2 stop=$3 max=0 i=0
  local -a f
  shopt -s nullglob
  while [ ! -e "$stop" ] && [ "$i" -lt 12000 ] && [ -d "/proc/$pid" ]; do
    f=(/proc/"$pid"/fd/*)
    [ "${#f[@]}" -gt "$max" ] && max=${#f[@]}
    i=$((i + 1))
    sleep 0.01
  done
  echo "$max" > "$out"
}

proc_kb() { awk -v k="$2:" '$1 == k { print $2 }' "/proc/$1/status" 2>/dev/null; }
jget() { bench_json_get "$1" "$2" || echo ""; }

# point SWEEP VARIANT N K: one fresh service, one batch, one CSV row.
point() {
  local sweep=$1 v=$2 n=$3 k=$4 pid body stats up ideal total base_fds base_rss peak_rss
  local stop=$BENCH_TMP/sampler.stop fdout=$BENCH_TMP/sampler.out spid peak_fds rc=0
  curl -fsS --max-time 3 -X POST "$UP/stats/reset" >/dev/null || {
    bench_err "POST $UP/stats/reset failed"; return 1; }
  ulimit -Sn "$nofile"
  bench_start svc "$BENCH_BIN/lab$num-$v" "${lab_args[@]}" --upstream "$UP/item" \
    --max-inflight "$k" --max-items 100000 || rc=1
  ulimit -Sn "$orig_nofile"
  [ "$rc" = 0 ] || return 1
  pid=${BENCH_PID[svc]}
  base_rss=$(proc_kb "$pid" VmRSS)
  rm -f "$stop" "$fdout"
  fd_sampler "$pid" "$fdout" "$stop" &
  spid=$!
  sleep 0.05   # one sample before the batch: the baseline is the lowest, the peak the highest
  base_fds=$(find "/proc/$pid/fd" -mindepth 1 -maxdepth 1 2>/dev/null | wc -l)
  printf '[%s] %-9s N=%-5s K=%-4s ... ' "$tag" "$v" "$n" "$k" >&2
  body=$(curl -sS --max-time 120 -w ' %{time_total}' "${BENCH_URL[svc]}/batch?n=$n") || {
    echo >&2; bench_err "GET /batch?n=$n failed"; touch "$stop"; wait "$spid"; bench_stop svc
    return 1; }
  total=$(awk -v t="${body##* }" 'BEGIN { printf "%.1f", t * 1000 }')
  body=${body% *}
  touch "$stop"; wait "$spid"
  peak_fds=$(cat "$fdout" 2>/dev/null || echo "")
  peak_rss=$(proc_kb "$pid" VmHWM)
  stats=$(bench_http svc /debug/stats) || stats=""
  up=$(bench_http upstream /stats) || up=""
  bench_stop svc
  ideal=$(awk -v n="$n" -v k="$k" -v l="$latency_ms" \
    'BEGIN { w = int((n + k - 1) / k); print w * l }')
  local -a cols=(sweep variant n k latency_ms ideal_ms total_ms elapsed_ms ok err err_connect
    err_timeout err_http base_fds peak_fds base_rss_kb peak_rss_kb lab_peak_inflight
    up_inflight_peak up_connections_peak loop_lag_max_ms)
  local -a vals=("$sweep" "$v" "$n" "$k" "$latency_ms" "$ideal" "$total"
    "$(jget "$body" elapsed_ms)" "$(jget "$body" ok)" "$(jget "$body" err)"
    "$(jget "$body" err_connect)" "$(jget "$body" err_timeout)" "$(jget "$body" err_http)"
    "$base_fds" "$peak_fds" "$base_rss" "$peak_rss" "$(jget "$body" peak_inflight)"
    "$(jget "$up" inflight_peak)" "$(jget "$up" connections_peak)"
    "$(jget "$stats" loop_lag_max_ms)")
  [ -s "$csv" ] || (IFS=,; echo "${cols[*]}") > "$csv"
  (IFS=,; echo "${vals[*]}") >> "$csv"
  printf '%s ms (ideal %s), %s errors, peak fds %s, peak RSS %s MB, upstream in-flight peak %s\n' \
    "$total" "$ideal" "$(jget "$body" err)" "$peak_fds" \
    "$(awk -v r="$peak_rss" 'BEGIN { printf "%.1f", r / 1024 }')" "$(jget "$up" inflight_peak)" >&2
}

if [ "$replot" = 0 ]; then
  for v in $variants; do
    for n in "${n_list[@]}"; do point n "$v" "$n" "$k_fixed" || exit 1; done
  done
  for v in $variants; do
    [ "$v" = pitfall ] && continue   # it ignores K: nothing to sweep
    for k in "${k_list[@]}"; do point k "$v" "$k_sweep_n" "$k" || exit 1; done
  done
  bench_stop upstream
fi

# ---- plots ----
common=("csv='$csv'" "variants='$variants'" "latency=$latency_ms" "kfixed=$k_fixed"
        "ksweepn=$k_sweep_n" "nofile=$nofile")
k_variants=$(echo "$variants" | tr ' ' '\n' | grep -vx pitfall | tr '\n' ' ' | sed 's/ *$//')
for which in time fds inflight errors k; do
  if [ "$which" = k ]; then
    [ -n "$k_variants" ] || continue
    bench_plot "$BENCH_PLOT_DIR/fanout.gp" "$dir/fanout-$which" "${common[@]}" "which='$which'" \
      "variants='$k_variants'" >/dev/null || exit 1
  else
    bench_plot "$BENCH_PLOT_DIR/fanout.gp" "$dir/fanout-$which" "${common[@]}" "which='$which'" \
      >/dev/null || exit 1
  fi
done

# ---- figures ----
# row VARIANT SWEEP N K COLUMN: one value of fanout.csv
row() {
  awk -F, -v v="$1" -v s="$2" -v n="$3" -v k="$4" -v col="$5" '
    NR == 1 { for (i = 1; i <= NF; i++) c[$i] = i; next }
    $c["variant"] == v && $c["sweep"] == s && $c["n"] == n && $c["k"] == k { x = $c[col] }
    END { print x }' "$csv"
}
nmax=${n_list[${#n_list[@]} - 1]}
n_ref=1000
case " ${n_list[*]} " in *" $n_ref "*) ;; *) n_ref=$nmax ;; esac
{
  echo "lab $num figures (K=$k_fixed, upstream latency $latency_ms ms, service fd limit $nofile):"
  for v in $variants; do
    [ "$v" = pitfall ] && continue
    awk -v v="$v" -v k="$k_fixed" -v nmax="$nmax" -v nref="$n_ref" \
      -v peak="$(row "$v" n "$nmax" "$k_fixed" up_inflight_peak)" \
      -v t="$(row "$v" n "$n_ref" "$k_fixed" total_ms)" -v ideal="$(row "$v" n "$n_ref" "$k_fixed" ideal_ms)" \
      -v errs="$(row "$v" n "$nmax" "$k_fixed" err)" \
      -v refpeak="$(row "$v" n "$n_ref" "$k_fixed" up_inflight_peak)" 'BEGIN {
      printf "  %-9s upstream peak in-flight at N=%d: %s (K = %d)  %s\n", v, nmax, peak, k,
        (peak == k ? "[target == K: met]" : "[target == K: MISSED]")
      r = ideal > 0 ? t / ideal : 0
      # Faster than the ideal, or more than K at once, misses the target even inside the band.
      printf "  %-9s N=%d took %.0f ms = %.2fx ceil(N/K) x latency (%.0f ms)  %s\n", v, nref, t, r,
        ideal, "[target 1-1.3x with <= K in flight: " \
        (r >= 0.9 && r <= 1.3 && refpeak <= k ? "met]" : "MISSED]")
      printf "  %-9s errors at N=%d: %s  %s\n", v, nmax, errs,
        (errs == 0 ? "[target 0: met]" : "[target 0: MISSED]") }'
  done
  if [[ " $variants " == *" pitfall "* && " $variants " == *" solution "* ]]; then
    awk -v nmax="$nmax" -v pe="$(row pitfall n "$nmax" "$k_fixed" err)" \
      -v pf="$(row pitfall n "$nmax" "$k_fixed" peak_fds)" -v sf="$(row solution n "$nmax" "$k_fixed" peak_fds)" \
      -v pr="$(row pitfall n "$nmax" "$k_fixed" peak_rss_kb)" -v sr="$(row solution n "$nmax" "$k_fixed" peak_rss_kb)" \
      -v pp="$(row pitfall n "$nmax" "$k_fixed" up_inflight_peak)" \
      -v pl="$(row pitfall n "$nmax" "$k_fixed" loop_lag_max_ms)" -v sl="$(row solution n "$nmax" "$k_fixed" loop_lag_max_ms)" 'BEGIN {
      rf = sf > 0 ? pf / sf : 0; rr = sr > 0 ? pr / sr : 0
      printf "  pitfall   N=%d: %s errors; peak fds %s vs %s (%.1fx); peak RSS %.1f MB vs %.1f MB (%.1fx); upstream in-flight peak %s; loop lag max %.0f ms vs %.0f ms  %s\n",
        nmax, pe, pf, sf, rf, pr / 1024, sr / 1024, rr, pp, pl, sl,
        (pe > 0 || rf >= 10 || rr >= 10 ? "[target errors or >= 10x: met]" : "[target errors or >= 10x: MISSED]") }'
  fi
  echo "  csv: $(bench_rel "$csv")"
  echo "  plots: $(bench_rel "$dir")/fanout-{time,fds,inflight,errors,k}.{png,svg}"
} | tee "$dir/summary.txt"
