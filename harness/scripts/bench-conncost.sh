#!/usr/bin/env bash
# bench-conncost.sh - lab 02's bench scenario: what a connection per request costs when every new
# connection pays a handshake, against a server with a connection limit.
#
#   bench-conncost.sh --lab NN [--variants "pitfall solution exercise"] [--out DIR] [--quick] [--full]
#
# For each variant and each offered load in `loads`, a fresh build/bin/upstream (the manifest's
# `upstream` options: latency L, connect cost C added to each new connection's first answer,
# --max-conns M, --backlog) and a fresh build/bin/labNN-VARIANT (`args`, --upstream URL) run one
# open-loop loadgen step (`warmup_s` of warm-up, then `step_s` measured, `conns` connections,
# GET `path`). Then the lab's /debug/stats, the TIME_WAIT sockets towards the upstream's port
# (ss), the lab stops, and the upstream's /stats gives the connections it accepted.
# With a connection per request the service can do at most about M / (C + L) requests/s; above
# that, connections wait in the upstream's backlog (or are dropped when it is full) and time out.
#
# Manifest keys (scenario-specific): warmup_s (default 1), table_rps (the load of the summary
# table, default 500). --quick: loads 100 and 500, 1 s steps, 0.5 s warm-up. --full: accepted.
#
# Writes DIR/NN-slug/ (DIR defaults to results/):
#   conncost.csv  variant, loadgen's summary (offered_rps, achieved_rps, ok_rps, sent, responses,
#                 ok, errors, err_pct, p50_ms, p90_ms, p99_ms, max_ms, mean_ms), then the upstream's
#                 up_conns (connections accepted from the lab), up_requests, up_conns_per_s
#                 (over warm-up + step), conns_per_req, up_inflight_peak, time_wait (sockets in
#                 TIME_WAIT towards the upstream after the step), lab_conns_opened (the lab's
#                 upstream_connections_opened)
#   conncost-latency.{png,svg}     p50 and p99 vs offered load
#   conncost-throughput.{png,svg}  ok responses/s vs offered load, with the M / (C + L) limit
#   conncost-errors.{png,svg}      errors (%) vs offered load
#   conncost-conns.{png,svg}       upstream connections opened per second vs offered load
#   summary.txt                    the table at table_rps, next to the quoted one, and the targets

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
. "$HERE/benchlib.sh"
. "$HERE/manifest.sh"

usage() {
  echo "usage:"; sed -n '5p' "$0" | sed 's/^# \{0,1\}//'
  echo "  Sweeps offered load over each variant of lab NN (lab 02) against an upstream with a"
  echo "  connect cost and a connection limit. See the header of $0 for the CSV and plots."
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
    *) echo "bench-conncost.sh: unknown argument '$1'" >&2; usage >&2; exit 2 ;;
  esac
done
[ -n "$lab_arg" ] || { echo "bench-conncost.sh: --lab is required" >&2; usage >&2; exit 2; }

bench_init || exit 1
lab=$(manifest_resolve "$lab_arg") || { bench_err "no lab '$lab_arg' in labs/manifest"; exit 2; }
num=${lab%%-*}
tag="lab $num"
variants=${variants:-pitfall solution exercise}
out_dir=${out_dir:-$BENCH_ROOT/results}
dir=$out_dir/$lab
csv=$dir/conncost.csv

read -r -a lab_args <<< "$(manifest_get "$lab" args "")"
read -r -a up_args <<< "$(manifest_get "$lab" upstream "--latency-ms 5 --connect-cost-ms 66 --max-conns 8")"
read -r -a loads <<< "$(manifest_get "$lab" loads "50 100 200 500")"
conns=$(manifest_get "$lab" conns 600)
step_s=$(manifest_get "$lab" step_s 3)
warmup_s=$(manifest_get "$lab" warmup_s 1)
table_rps=$(manifest_get "$lab" table_rps 500)
path=$(manifest_get "$lab" path "/price?sku=sku-1")
if [ "$quick" = 1 ]; then loads=(100 500); step_s=1; warmup_s=0.5; table_rps=500; fi

# The knobs, for the physics and the plots' labels.
opt() { # opt NAME DEFAULT ARGS...: the value of --NAME in ARGS
  local name=$1 def=$2 i; shift 2
  local -a a=("$@")
  for ((i = 0; i < ${#a[@]}; i++)); do
    case "${a[i]}" in
      "--$name") echo "${a[i + 1]:-$def}"; return ;;
      "--$name="*) echo "${a[i]#--"$name"=}"; return ;;
    esac
  done
  echo "$def"
}
latency_ms=$(opt latency-ms 0 "${up_args[@]}")
cost_ms=$(opt connect-cost-ms 0 "${up_args[@]}")
max_conns=$(opt max-conns 10000 "${up_args[@]}")
backlog=$(opt backlog 511 "${up_args[@]}")
pool=$(opt pool 8 "${lab_args[@]}")
limit_rps=$(awk -v m="$max_conns" -v c="$cost_ms" -v l="$latency_ms" \
  'BEGIN { printf "%.0f", ((c + l) > 0 ? m * 1000 / (c + l) : 0) }')

for v in $variants; do
  [ -x "$BENCH_BIN/lab$num-$v" ] || {
    bench_err "$BUILD/bin/lab$num-$v is missing: make BUILD=$BUILD $BUILD/bin/lab$num-$v"; exit 1; }
done
for tool in upstream loadgen; do
  [ -x "$BENCH_BIN/$tool" ] || {
    bench_err "$BUILD/bin/$tool is missing: make BUILD=$BUILD $BUILD/bin/$tool"; exit 1; }
done
command -v ss >/dev/null || bench_warn "ss is missing (iproute2): no TIME_WAIT counts"

mkdir -p "$dir" || { bench_err "mkdir -p $dir failed"; exit 1; }
rm -f "$csv" "$dir"/summary.txt "$dir"/conncost-*.png "$dir"/conncost-*.svg

# The pitfall holds one socket per request in flight, the load generator `conns` more.
hard_nofile=$(ulimit -Hn)
ulimit -Sn "$hard_nofile" 2>/dev/null || true

bench_log "[$tag] $lab: $(manifest_get "$lab" title "")"
bench_log "[$tag] upstream: latency $latency_ms ms, connect cost $cost_ms ms, at most $max_conns" \
  "connections, backlog $backlog; lab: ${lab_args[*]}"
bench_log "[$tag] a connection per request can do at most M / (C + L) = $max_conns / ($cost_ms +" \
  "$latency_ms) ms = $limit_rps req/s"

jget() { bench_json_get "$1" "$2" || echo ""; }
echo "variant,offered_rps,achieved_rps,ok_rps,sent,responses,ok,errors,err_pct,p50_ms,p90_ms,p99_ms,max_ms,mean_ms,up_conns,up_requests,up_conns_per_s,conns_per_req,up_inflight_peak,time_wait,lab_conns_opened" > "$csv"

# point VARIANT RATE I N: fresh upstream and service, one step, one CSV row.
point() {
  local v=$1 rate=$2 i=$3 n=$4 up_port stats up tw="" row
  bench_start upstream "$BENCH_BIN/upstream" "${up_args[@]}" || return 1
  bench_start svc "$BENCH_BIN/lab$num-$v" "${lab_args[@]}" --upstream "${BENCH_URL[upstream]}" || return 1
  up_port=${BENCH_URL[upstream]##*:}
  bench_progress "$tag" "$v" "$rate" "$i" "$n"
  bench_step "${BENCH_URL[svc]}$path" "$rate" "$conns" "$step_s" -w "$warmup_s" --label "$v" || return 1
  stats=$(bench_http svc /debug/stats) || stats=""
  if command -v ss >/dev/null; then
    tw=$(ss -Htan state time-wait "( dport = :$up_port )" 2>/dev/null | wc -l)
  fi
  # Stop the service first: the upstream's /stats call then finds a free connection slot.
  bench_stop svc
  up=$(bench_http upstream /stats) || up=""
  bench_stop upstream
  row=$(awk -F, -v OFS=, -v h="$BENCH_HEADER" -v r="$BENCH_ROW" -v v="$v" \
    -v acc="$(jget "$up" connections_accepted)" -v req="$(jget "$up" requests_total)" \
    -v peak="$(jget "$up" inflight_peak)" -v tw="$tw" -v secs="$(awk -v a="$warmup_s" -v b="$step_s" 'BEGIN { print a + b }')" \
    -v opened="$(jget "$stats" upstream_connections_opened)" 'BEGIN {
      n = split(h, H, ","); split(r, R, ","); for (k = 1; k <= n; k++) f[H[k]] = R[k]
      e = f["err_connect"] + f["err_timeout"] + f["err_http"] + f["err_other"]
      pct = f["sent"] > 0 ? 100 * e / f["sent"] : 0
      if (acc != "") acc = acc - 1            # the /stats call itself is a connection
      cps = (acc != "" && secs > 0) ? acc / secs : ""
      cpr = (acc != "" && req > 0) ? acc / req : ""
      print v, f["offered_rps"], f["achieved_rps"], f["ok_rps"], f["sent"], f["responses"], f["ok"],
        e, sprintf("%.1f", pct), f["p50_ms"], f["p90_ms"], f["p99_ms"], f["max_ms"], f["mean_ms"],
        acc, req, (cps == "" ? "" : sprintf("%.1f", cps)), (cpr == "" ? "" : sprintf("%.3f", cpr)),
        peak, tw, opened }')
  echo "$row" >> "$csv"
  bench_progress_done "p50 $(bench_field p50_ms) ms, upstream connections $(echo "$row" | cut -d, -f15)"
}

for v in $variants; do
  i=0
  for r in "${loads[@]}"; do
    i=$((i + 1))
    point "$v" "$r" "$i" "${#loads[@]}" || exit 1
  done
done

# ---- plots ----
common=("csv='$csv'" "variants='$variants'" "latency=$latency_ms" "cost=$cost_ms"
        "maxconns=$max_conns" "pool=$pool" "limit=$limit_rps")
for which in latency throughput errors conns; do
  bench_plot "$BENCH_PLOT_DIR/conncost.gp" "$dir/conncost-$which" "${common[@]}" "which='$which'" \
    >/dev/null || exit 1
done

# ---- figures ----
# col VARIANT COLUMN: the value at table_rps (or the highest load when table_rps was not run)
col() {
  awk -F, -v v="$1" -v want="$2" -v rps="$table_rps" '
    NR == 1 { for (k = 1; k <= NF; k++) c[$k] = k; next }
    $c["variant"] == v { last = $c[want]; if ($c["offered_rps"] + 0 == rps + 0) hit = $c[want] }
    END { print (hit != "" ? hit : last) }' "$csv"
}
name() { case "$1" in solution) echo "shared client" ;; pitfall) echo "client per request" ;; *) echo "$1" ;; esac; }
{
  echo "lab $num at $table_rps req/s offered (upstream latency $latency_ms ms, connect cost $cost_ms ms,"
  echo "  at most $max_conns connections, backlog $backlog; lab ${lab_args[*]}):"
  for v in solution pitfall exercise; do
    [[ " $variants " == *" $v "* ]] || continue
    printf '  %-19s p50 %.1f ms, p99 %.1f ms, %.0f req/s, %s%% errors; upstream connections %s (%s per request), %s in TIME_WAIT\n' \
      "$(name "$v")" "$(col "$v" p50_ms)" "$(col "$v" p99_ms)" "$(col "$v" ok_rps)" "$(col "$v" err_pct)" \
      "$(col "$v" up_conns)" "$(col "$v" conns_per_req)" "$(col "$v" time_wait)"
  done
  echo "  quoted: shared client p50 8 ms, p99 23 ms, 500 req/s, 0% errors;"
  echo "          client per request p50 218 ms, p99 891 ms, 112 req/s, 12% errors"
  echo "  the limit for a connection per request: M / (C + L) = $max_conns / ($cost_ms + $latency_ms) ms = $limit_rps req/s"
  if [[ " $variants " == *" solution "* ]]; then
    awk -v p50="$(col solution p50_ms)" -v lat="$latency_ms" -v err="$(col solution errors)" \
      -v conns="$(col solution up_conns)" -v pool="$pool" 'BEGIN {
      printf "  target solution p50 <= 2 x latency (%d ms): %s ms  %s\n", 2 * lat, p50, (p50 <= 2 * lat ? "[met]" : "[MISSED]")
      printf "  target solution 0 errors: %d  %s\n", err, (err == 0 ? "[met]" : "[MISSED]")
      printf "  target solution upstream connections <= pool (%d): %s  %s\n", pool, conns, (conns <= pool ? "[met]" : "[MISSED]") }'
  fi
  if [[ " $variants " == *" solution "* && " $variants " == *" pitfall "* ]]; then
    awk -v sp="$(col solution p50_ms)" -v pp="$(col pitfall p50_ms)" -v cpr="$(col pitfall conns_per_req)" 'BEGIN {
      r = sp > 0 ? pp / sp : 0
      printf "  target pitfall p50 >= 10 x the solution'"'"'s: %.0fx  %s\n", r, (r >= 10 ? "[met]" : "[MISSED]")
      printf "  target pitfall one connection per request: %s per request  %s\n", cpr, (cpr >= 0.9 ? "[met]" : "[MISSED]") }'
  fi
  echo "  csv: $(bench_rel "$csv")"
  echo "  plots: $(bench_rel "$dir")/conncost-{latency,throughput,errors,conns}.{png,svg}"
} | tee "$dir/summary.txt"
