#!/usr/bin/env bash
# upstream-capacity.sh - can build/bin/upstream keep up with the labs? Starts it on a free port and
# drives it closed-loop (every connection sends its next request as soon as the last is answered)
# at latency 0 (its raw req/s) and at latency 20 ms (does it still answer in ~20 ms with 1000
# connections waiting?), then prints req/s, latency percentiles, errors, the CPU it spent per
# request and its own loop lag, under a first row for build/bin/hello (the bare service shell,
# answering at once): the ceiling the upstream is held to.
#   -c, --connections N  connections per run (default 1000)
#   -d, --duration S     seconds per run (default 3)
#   -l, --latencies "L…" upstream latencies to try, ms (default "0 20")
#   -t, --tool T         wrk (default) or loadgen (build/bin/loadgen, closed loop)
#   BUILD=build (default): where bin/upstream (and bin/loadgen) are
# Exit status: 0 when every run completed, 1 when one failed, 2 on a usage error.
set -uo pipefail
cd "$(dirname "$0")/../.." || exit 1
BIN=${BUILD:-build}/bin
TMP=$(mktemp -d) || exit 1
declare -A PID=() URL=()
# start NAME BIN ARGS...: runs BIN --port 0 ARGS and waits for its "listening on" line.
start() {
  local name=$1 bin=$2 i; shift 2
  : > "$TMP/$name.out"
  "$bin" --port 0 "$@" > "$TMP/$name.out" 2> "$TMP/$name.err" & PID[$name]=$!
  for ((i = 0; i < 100; i++)); do
    URL[$name]=$(sed -n 's/^listening on \(http:\/\/[0-9.:]*\).*/\1/p' "$TMP/$name.out")
    [ -n "${URL[$name]}" ] && return 0
    sleep 0.05
  done
  echo "upstream-capacity.sh: $bin did not start:" >&2; cat "$TMP/$name.err" >&2; return 1
}
stop() { kill "${PID[$1]}" 2>/dev/null; wait "${PID[$1]}" 2>/dev/null; unset "PID[$1]"; }
trap 'for n in "${!PID[@]}"; do stop "$n"; done; rm -rf "$TMP"' EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
bench_err() { echo "upstream-capacity.sh: $*" >&2; }
json() { sed -n "s/.*\"$2\":\([-0-9.e+]*\).*/\1/p" <<< "$1"; }

usage() { sed -n '2,13p' "$0" | sed 's/^# \{0,1\}//'; }
conns=1000 duration=3 latencies="0 20" tool=wrk
while [ $# -gt 0 ]; do
  case "$1" in
    -c|--connections) conns=${2:-}; shift 2 || shift ;;
    -d|--duration) duration=${2:-}; shift 2 || shift ;;
    -l|--latencies) latencies=${2:-}; shift 2 || shift ;;
    -t|--tool) tool=${2:-}; shift 2 || shift ;;
    -h|--help) usage; exit 0 ;;
    *) echo "upstream-capacity.sh: unknown option '$1'" >&2; usage >&2; exit 2 ;;
  esac
done
for v in "$conns" "$duration"; do
  if ! [[ "$v" =~ ^[1-9][0-9]*$ ]]; then
    echo "upstream-capacity.sh: expected a positive integer, got '$v'" >&2; usage >&2; exit 2
  fi
done
for l in $latencies; do
  if ! [[ "$l" =~ ^[0-9]+$ ]]; then
    echo "upstream-capacity.sh: bad latency '$l'" >&2; usage >&2; exit 2
  fi
done
if [ -z "${latencies// }" ]; then echo "upstream-capacity.sh: no latencies" >&2; usage >&2; exit 2; fi
case "$tool" in
  wrk) command -v wrk >/dev/null || { echo "upstream-capacity.sh: wrk is not installed (make deps)" >&2; exit 1; } ;;
  loadgen) ;;
  *) echo "upstream-capacity.sh: --tool is wrk or loadgen, not '$tool'" >&2; usage >&2; exit 2 ;;
esac

# Every connection is a file descriptor in the upstream and in the load tool.
need=$((conns + 256))
if [ "$(ulimit -n)" != unlimited ] && [ "$(ulimit -n)" -lt "$need" ]; then
  ulimit -n "$need" 2>/dev/null || {
    bench_err "ulimit -n is $(ulimit -n), $conns connections need $need: raise it (ulimit -n $need)"
    exit 1; }
fi

# wrk prints latencies as 850.00us, 21.16ms or 1.02s: ms.
to_ms() {
  awk -v v="$1" 'BEGIN { n = v + 0; if (v ~ /us$/) n /= 1000; else if (v ~ /[0-9]s$/) n *= 1000;
                         printf "%.2f", n }'
}

# One closed-loop run against URL; sets RUN_RPS RUN_COUNT (answers) RUN_P50 RUN_P99 RUN_ERRORS.
run_wrk() {
  local url=$1 out=$TMP/wrk.out threads=2 rc=0
  [ "$conns" -lt 2 ] && threads=1
  timeout --foreground -k 3 $((duration + 30)) \
    wrk -t "$threads" -c "$conns" -d "${duration}s" --timeout 5s --latency "$url" > "$out" 2>&1 || rc=$?
  if [ "$rc" != 0 ]; then
    bench_err "wrk exited with status $rc (wrk -c $conns -d ${duration}s $url)"
    sed 's/^/  | /' "$out" | tail -n 5 >&2
    return 1
  fi
  RUN_RPS=$(awk '/^Requests\/sec:/ { printf "%.0f", $2 }' "$out")
  RUN_COUNT=$(awk '/ requests in / { print $1 + 0 }' "$out")
  RUN_P50=$(to_ms "$(awk '$1 == "50%" { print $2 }' "$out")")
  RUN_P99=$(to_ms "$(awk '$1 == "99%" { print $2 }' "$out")")
  RUN_ERRORS=$(awk '/Socket errors:/ { gsub(/,/, ""); n += $4 + $6 + $8 + $10 }
                    /Non-2xx or 3xx responses:/ { n += $5 } END { print n + 0 }' "$out")
  if [ -z "$RUN_RPS" ]; then
    bench_err "could not read wrk's output:"; sed 's/^/  | /' "$out" | head -n 12 >&2; return 1
  fi
}

run_loadgen() {
  local row
  row=$("$BIN/loadgen" "$1" -r 0 -c "$conns" -d "$duration" -q) || { bench_err "loadgen failed"; return 1; }
  IFS=, read -r _ _ _ RUN_RPS _ _ RUN_COUNT e1 e2 e3 e4 RUN_P50 _ RUN_P99 _ <<< "$row"
  RUN_RPS=$(printf '%.0f' "$RUN_RPS") RUN_ERRORS=$((e1 + e2 + e3 + e4))
}

# CPU seconds (user + sys) the process PID has used so far.
cpu_s() {
  awk -v hz="$(getconf CLK_TCK)" '{ printf "%.3f", ($14 + $15) / hz }' "/proc/$1/stat" 2>/dev/null || echo 0
}

row() { printf '%-15s %9s %12s %8s %8s %7s %7s %13s %9s %9s\n' "$@"; }

# One run of the load tool against NAME's URL: one row of the table.
measure() {
  local name=$1 label=$2 path=$3 lat=$4 c0 c1 peak="-" lag="-" lag99="-" ideal="-" us="-" stats debug
  [ "$name" = up ] && { curl -fsS --max-time 5 -X POST -o /dev/null "${URL[up]}/stats/reset" \
    || bench_err "warning: POST /stats/reset failed"; }
  # The shell restarts its loop-lag max: this row covers this run only.
  curl -fsS --max-time 5 -X POST -o /dev/null "${URL[$name]}/debug/stats" || true
  c0=$(cpu_s "${PID[$name]}")
  "run_$tool" "${URL[$name]}$path" || return 1
  c1=$(cpu_s "${PID[$name]}")
  [ "$RUN_COUNT" -gt 0 ] && us=$(awk -v a="$c0" -v b="$c1" -v n="$RUN_COUNT" 'BEGIN { printf "%.1f", (b - a) * 1e6 / n }')
  if [ "$name" = up ]; then
    stats=$(curl -fsS --max-time 5 "${URL[up]}/stats") && peak=$(json "$stats" inflight_peak)
  fi
  if debug=$(curl -fsS --max-time 5 "${URL[$name]}/debug/stats"); then
    lag=$(json "$debug" loop_lag_max_ms) lag99=$(json "$debug" loop_lag_p99_ms)
  fi
  # A closed loop of C connections on a server that answers in L ms cannot beat C / L.
  [ "$lat" -gt 0 ] && ideal=$((conns * 1000 / lat))
  row "$label" "$RUN_RPS" "$ideal" "$RUN_P50" "$RUN_P99" "$RUN_ERRORS" "$us" "$peak" "$lag99" "$lag"
}

echo "upstream capacity: $tool, $conns connections, closed loop, $duration s per run ($BIN)"
row run req_s ideal_req_s p50_ms p99_ms errors cpu_us inflight_peak lag_p99 lag_max
status=0
# The bare shell first (build/bin/hello answers at once): the ceiling the upstream is held to.
if start hello "$BIN/hello"; then
  measure hello "hello (ceiling)" / 0 || status=1
  stop hello
else
  bench_err "warning: no $BIN/hello: no ceiling row"
fi
start up "$BIN/upstream" --max-conns $((conns + 16)) || exit 1
for lat in $latencies; do
  measure up "upstream ${lat} ms" "/capacity?latency_ms=$lat" "$lat" || status=1
done
stop up
cat <<'TXT'
cpu_us: CPU the server spent per answered request (user + sys), steadier than req/s on a shared
machine. lag_p99, lag_max: the server's own loop lag during the run (ms, from /debug/stats).
A healthy upstream costs about what hello costs at latency 0 and answers at latency L with p50
close to L and no errors while the machine has CPU to spare; its req/s is then bounded by the
load tool and the shared CPU, not by its timers.
TXT
exit "$status"
