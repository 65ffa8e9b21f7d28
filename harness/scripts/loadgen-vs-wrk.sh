#!/usr/bin/env bash
# loadgen-vs-wrk.sh - is build/bin/loadgen fast enough to measure with? Starts build/bin/hello
# (GET / -> 200) on a free port, then runs wrk and loadgen closed-loop against it, alternating,
# and prints each tool's peak throughput and the ratio loadgen / wrk (target: >= 0.9), and the
# CPU each tool spent per request (user + sys): on a busy machine the throughputs swing with
# the other load, the CPU cost per request much less.
#   -d, --duration S     seconds per run (default 5)
#   -c, --connections N  keep-alive connections, both tools (default 50)
#   -n, --runs N         runs per tool (default 2)
#   --overload           instead: beyond capacity. wrk measures lab 01's solution closed-loop
#                        (-c 200, its capacity C), then loadgen offers 3 x C open-loop over the
#                        same 200 connections: it must measure >= 0.9 C and open <= 200 + 1%
#                        connections (the service's connections_accepted), with no reconnect storm
#   BUILD=build (default): where bin/hello, bin/lab01-solution and bin/loadgen are
# Exit status: 0 when the ratio meets the target, 1 when it does not (or a run failed), 2 on usage.
set -euo pipefail
cd "$(dirname "$0")/../.."

usage() { sed -n '2,16p' "$0" | sed 's/^# \{0,1\}//'; }
duration=5 conns=50 runs=2 overload=0
while [ $# -gt 0 ]; do
  case "$1" in
    -d|--duration) duration=${2:-}; shift 2 || true ;;
    -c|--connections) conns=${2:-}; shift 2 || true ;;
    -n|--runs) runs=${2:-}; shift 2 || true ;;
    --overload) overload=1 conns=200 duration=6 server=lab01-solution; shift ;;
    -h|--help) usage; exit 0 ;;
    *) echo "loadgen-vs-wrk.sh: unknown option '$1'" >&2; usage >&2; exit 2 ;;
  esac
done
for v in "$duration" "$conns" "$runs"; do
  if ! [[ "$v" =~ ^[1-9][0-9]*$ ]]; then
    echo "loadgen-vs-wrk.sh: bad number '$v'" >&2; usage >&2; exit 2
  fi
done

BIN=${BUILD:-build}/bin
server=${server:-hello}
for tool in "$BIN/$server" "$BIN/loadgen"; do
  [ -x "$tool" ] || { echo "loadgen-vs-wrk.sh: $tool is missing: run make first" >&2; exit 1; }
done
command -v wrk >/dev/null || { echo "loadgen-vs-wrk.sh: wrk is missing: make deps" >&2; exit 1; }

tmp=$(mktemp -d)
hello_pid=
cleanup() {
  if [ -n "$hello_pid" ]; then kill "$hello_pid" 2>/dev/null || true; wait "$hello_pid" 2>/dev/null || true; fi
  rm -rf "$tmp"
}
trap cleanup EXIT

args=(); [ "$server" = hello ] || args=(--delay-ms 10)
"$BIN/$server" --port 0 "${args[@]}" >"$tmp/hello.out" 2>"$tmp/hello.err" &
hello_pid=$!
url=
for _ in $(seq 50); do  # up to 5 s for the "listening on" line
  url=$(sed -n 's/^listening on \(http:\/\/[0-9.:]*\).*/\1/p' "$tmp/hello.out")
  [ -n "$url" ] && break
  sleep 0.1
done
[ -n "$url" ] || { echo "loadgen-vs-wrk.sh: hello did not start:" >&2; cat "$tmp/hello.err" >&2; exit 1; }
base=$url url="$url/"
[ "$server" = hello ] || url="$base/work"
accepted() { curl -fsS --max-time 5 "$base/debug/stats" | sed -n 's/.*"connections_accepted":\([0-9]*\).*/\1/p'; }
if [ "$overload" = 1 ]; then
  echo "beyond capacity: $url ($BIN/$server --delay-ms 10), $conns connections, ${duration}s per run"
  wrk -t1 -c"$conns" -d"${duration}s" "$url" >"$tmp/out" 2>&1 || { cat "$tmp/out" >&2; exit 1; }
  cap=$(awk '/^Requests\/sec:/ { printf "%.0f", $2 }' "$tmp/out")
  rate=$((3 * cap))
  a0=$(accepted)
  "$BIN/loadgen" "$url" -r "$rate" -c "$conns" -d "$duration" -q >"$tmp/out" || exit 1
  a1=$(accepted)
  opened=$((a1 - a0 - 1))   # the second /debug/stats call is a connection too
  IFS=, read -r _ _ achieved _ sent _ _ econn etime _ _ _ _ p99 _ < "$tmp/out"
  echo "  wrk closed loop:             capacity C = $cap req/s"
  echo "  loadgen open loop at 3 x C = $rate req/s: achieved $achieved req/s, $etime timeouts," \
    "$econn connect errors, p99 $p99 ms"
  awk -v a="$achieved" -v c="$cap" -v o="$opened" -v n="$conns" 'BEGIN {
    r = a / c; ok = r >= 0.9 && o <= n * 1.01
    printf "  ratio loadgen/wrk %.2f (target >= 0.90); connections opened %d for -c %d (target <= %d): %s\n",
      r, o, n, int(n * 1.01), ok ? "ok" : "MISSED"
    exit !ok }'
  exit $?
fi
echo "target: $url ($BIN/hello), $conns connections, ${duration}s per run, $runs runs each"

wrk_best=0 lg_best=0 wrk_cpu=0 lg_cpu=0 wrk_reqs=0 lg_reqs=0
TIMEFORMAT='%U %S'  # bash's `time`: user and sys seconds of what it runs
# Runs "$@" with stdout to $tmp/out; sets CPU_S to its user + sys seconds.
timed() {
  { time "$@" >"$tmp/out" 2>"$tmp/err"; } 2>"$tmp/time" || { cat "$tmp/err" >&2; return 1; }
  CPU_S=$(awk '{ print $1 + $2 }' "$tmp/time")
}
# awk prints the larger of two numbers (bash has no floating point).
max() { awk -v a="$1" -v b="$2" 'BEGIN { print (a + 0 > b + 0) ? a : b }'; }
for i in $(seq "$runs"); do
  timed wrk -t1 -c"$conns" -d"${duration}s" "$url"
  rps=$(awk '/^Requests\/sec:/ { print $2 }' "$tmp/out")
  n=$(awk '/ requests in / { print $1 }' "$tmp/out")
  [ -n "$rps" ] && [ -n "$n" ] || { echo "loadgen-vs-wrk.sh: wrk printed no Requests/sec" >&2; exit 1; }
  printf '  run %d  wrk      %10.0f req/s  (cpu %.1f us/request)\n' "$i" "$rps" \
    "$(awk -v c="$CPU_S" -v n="$n" 'BEGIN { print c * 1e6 / n }')"
  wrk_best=$(max "$wrk_best" "$rps")
  wrk_cpu=$(awk -v a="$wrk_cpu" -v b="$CPU_S" 'BEGIN { print a + b }')
  wrk_reqs=$((wrk_reqs + n))

  timed "$BIN/loadgen" "$url" --rate 0 -c "$conns" -d "$duration" -q
  line=$(cat "$tmp/out")
  # achieved_rps is the 3rd column; errors (columns 8-11) would make the comparison meaningless
  rps=$(echo "$line" | awk -F, '{ print $3 }')
  errs=$(echo "$line" | awk -F, '{ print $8 + $9 + $10 + $11 }')
  n=$(echo "$line" | awk -F, '{ print $5 }')  # sent: every request, answered or not
  printf '  run %d  loadgen  %10.0f req/s  (cpu %.1f us/request; errors %s, p99 %s ms)\n' "$i" \
    "$rps" "$(awk -v c="$CPU_S" -v n="$n" 'BEGIN { print (n > 0) ? c * 1e6 / n : 0 }')" "$errs" \
    "$(echo "$line" | awk -F, '{ print $14 }')"
  [ "$errs" = 0 ] || { echo "loadgen-vs-wrk.sh: loadgen saw errors: $line" >&2; exit 1; }
  lg_best=$(max "$lg_best" "$rps")
  lg_cpu=$(awk -v a="$lg_cpu" -v b="$CPU_S" 'BEGIN { print a + b }')
  lg_reqs=$((lg_reqs + n))
done

awk -v wc="$wrk_cpu" -v wn="$wrk_reqs" -v lc="$lg_cpu" -v ln="$lg_reqs" 'BEGIN {
  printf "cpu per request over all runs: wrk %.1f us, loadgen %.1f us\n", wc * 1e6 / wn, lc * 1e6 / ln
}'
awk -v w="$wrk_best" -v l="$lg_best" 'BEGIN {
  ratio = (w > 0) ? l / w : 0
  printf "peak: wrk %.0f req/s, loadgen %.0f req/s, ratio loadgen/wrk %.2f (target >= 0.90): %s\n",
         w, l, ratio, (ratio >= 0.9) ? "ok" : "TOO SLOW"
  exit (ratio >= 0.9) ? 0 : 1
}'
