#!/usr/bin/env bash
# harness/tests/bench.sh - a quick self-test of the bench runner (bench.sh, benchlib.sh,
# bench-sweep.sh, the gnuplot scripts) with stand-in binaries, so it runs in a few seconds and
# needs nothing built: a fake loadgen prints plausible CSV, fake lab services print their
# "listening on" line and wait for SIGTERM.
#
# Checks: usage errors exit 2; a quick sweep of lab 01 writes sweep.csv, stats-*.csv, the plots
# and a summary with the physics line; nothing is left running; a service that never listens or
# that dies at once gives an error naming the binary. Exit 0 = pass.

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
T=$(mktemp -d "${TMPDIR:-/tmp}/loopholes-benchtest.XXXXXX") || exit 1
trap '[ -n "${KEEP:-}" ] || rm -rf "$T"' EXIT
failures=0
pass() { echo "ok   - $*"; }
fail() { echo "FAIL - $*"; failures=$((failures + 1)); }
check() { local what=$1; shift; if "$@"; then pass "$what"; else fail "$what"; fi; }

mkdir -p "$T/build/bin" "$T/out"
export FAKE_DIR=$T

# A fake service: a free-looking port, remembered with the binary's name for the fake loadgen.
cat > "$T/build/bin/fake-service" <<'EOF'
#!/usr/bin/env bash
port=$((20000 + RANDOM % 20000))
echo "$port $(basename "$0")" >> "$FAKE_DIR/ports"
echo "$$" >> "$FAKE_DIR/pids"
trap 'exit 0' TERM
echo "listening on http://127.0.0.1:$port"
for ((i = 0; i < 600; i++)); do sleep 0.1; done
EOF
for b in lab01-pitfall lab01-solution lab01-exercise hello; do
  cp "$T/build/bin/fake-service" "$T/build/bin/$b"
done
cat > "$T/build/bin/lab01-never" <<'EOF'
#!/usr/bin/env bash
echo "$$" >> "$FAKE_DIR/pids"
trap 'exit 0' TERM
for ((i = 0; i < 600; i++)); do sleep 0.1; done
EOF
cat > "$T/build/bin/lab01-dies" <<'EOF'
#!/usr/bin/env bash
echo "lab01-dies: uv_listen: address already in use" >&2
exit 3
EOF

# A fake loadgen: the pitfall caps at 95 req/s with p99 near the timeout, the solution follows
# the load up to 9600 req/s with p99 about 10.5 ms.
cat > "$T/build/bin/loadgen" <<'EOF'
#!/usr/bin/env bash
echo "$$" >> "$FAKE_DIR/pids"
url=$1; shift
rate=0 secs=1 label=x stats=""
while [ $# -gt 0 ]; do
  case "$1" in
    -r) rate=$2; shift 2 ;; -d) secs=$2; shift 2 ;; --label) label=$2; shift 2 ;;
    --stats-out) stats=$2; shift 2 ;; -c|-t|--stats-url|--stats-interval-ms|--format) shift 2 ;;
    *) shift ;;
  esac
done
port=${url#http://127.0.0.1:}; port=${port%%/*}
name=$(awk -v p="$port" '$1 == p { print $2 }' "$FAKE_DIR/ports" | tail -n 1)
case "$name" in *solution) cap=9600 p99=10.5 lag=0.8 ;; hello) cap=30000 p99=3 lag=0.1 ;; *) cap=95 p99=1000 lag=1200 ;; esac
echo "label,offered_rps,achieved_rps,ok_rps,sent,responses,ok,err_connect,err_timeout,err_http,err_other,p50_ms,p90_ms,p99_ms,p999_ms,max_ms,mean_ms,duration_s"
awk -v r="$rate" -v c="$cap" -v p="$p99" -v l="$label" -v d="$secs" 'BEGIN {
  a = (r > 0 && r < c) ? r : c
  printf "%s,%s,%.1f,%.1f,%d,%d,%d,0,0,0,0,%.2f,%.2f,%.2f,%.2f,%.2f,%.2f,%s\n", l, r, a, a, a * d, a * d, a * d, p * 0.9, p, p, p, p, p * 0.9, d }'
if [ -n "$stats" ]; then
  awk -v l="$lag" 'BEGIN { print "t_s,loop_lag_max_ms,loop_lag_recent_max_ms,idle_fraction,inflight,rss_kb"
    for (i = 1; i <= 5; i++) printf "%.1f,%.3f,%.3f,0.5,3,2048\n", i * 0.1, l * i / 5, l * i / 6 }' > "$stats"
fi
if [ -n "${FAKE_SLOW:-}" ]; then
  sleep "$FAKE_SLOW" & s=$!
  trap 'kill $s 2>/dev/null; exit 143' TERM
  wait $s
fi

EOF
chmod +x "$T/build/bin/"*

# ---- usage ----
"$ROOT/harness/scripts/bench.sh" --bogus >/dev/null 2>&1
check "bench.sh --bogus exits 2" [ $? = 2 ]
"$ROOT/harness/scripts/bench.sh" --variants "pitfall wrong" >/dev/null 2>&1
check "bench.sh with an unknown variant exits 2" [ $? = 2 ]
"$ROOT/harness/scripts/bench.sh" --help >/dev/null 2>&1
check "bench.sh --help exits 0" [ $? = 0 ]
"$ROOT/harness/scripts/bench-sweep.sh" >/dev/null 2>&1
check "bench-sweep.sh without --lab exits 2" [ $? = 2 ]

# ---- a quick sweep of lab 01 on the fakes ----
BUILD=$T/build "$ROOT/harness/scripts/bench.sh" --lab 01 --quick --variants "pitfall solution" --out "$T/out" > "$T/stdout" 2> "$T/stderr"
rc=$?
check "bench.sh --lab 01 --quick exits 0 (got $rc)" [ "$rc" = 0 ]
d=$T/out/01-blocking-sleep
check "sweep.csv: header, the ceiling (hello), the pitfall collapsed (200 + peak), the solution (3 loads + peak)" \
  awk -F, 'NR == 1 { ok = ($1 == "variant" && /,lag_max_ms,lag_p99_ms$/) } END { exit !(ok && NR == 8) }' "$d/sweep.csv"
check "sweep.csv has the solution's closed-loop peak" grep -q '^solution,closed,0,9600' "$d/sweep.csv"
check "sweep.csv's first row is the ceiling" awk -F, 'NR == 2 { exit !($1 == "hello" && $3 == 0) }' "$d/sweep.csv"
check "stats-pitfall.csv starts with t_s,step,offered_rps" grep -q '^t_s,step,offered_rps,loop_lag_max_ms' "$d/stats-pitfall.csv"
check "summary prints the limit min(N/D, ceiling)" \
  grep -q 'limit: min(N/D = 100/10ms = 10000, ceiling = 30000) = 10000 req/s; solution peak 9600 (96%)' "$T/stdout"
check "summary prints the p99 ratio" grep -q 'p99 at [0-9]* req/s: pitfall .* ms / solution .* ms = [0-9]*x' "$T/stdout"
check "progress lines name lab, variant, load and step" \
  grep -q '^\[lab 01\] solution .* req/s  step 1/4 ... achieved' "$T/stderr"
check "the collapsed pitfall skips its higher loads" grep -q 'pitfall: collapsed at 200 req/s (2xx answers: 95/s); skipped 2 higher load' "$T/stderr"
if command -v gnuplot >/dev/null; then
  for p in throughput latency looplag; do
    check "$p.png and $p.svg are written" test -s "$d/$p.png" -a -s "$d/$p.svg"
  done
  check "the summary has a text plot" grep -q 'throughput: achieved vs offered' "$d/summary.txt"
fi
left=0
while read -r pid; do [ -e "/proc/$pid" ] && ! grep -q ') Z' "/proc/$pid/stat" && left=$((left + 1)); done < "$T/pids"
check "no service left running after the sweep ($left left)" [ "$left" = 0 ]
BENCH_PLOTS=0 BUILD=$T/build "$ROOT/harness/scripts/bench-sweep.sh" --lab 01 --replot --out "$T/out" > "$T/replot" 2>&1
check "--replot redraws from the CSVs alone (exit $?)" \
  grep -q 'limit: min(N/D = 100/10ms = 10000, ceiling = 30000) = 10000 req/s' "$T/replot"

# ---- SIGTERM (or Ctrl-C) in the middle of a step stops everything ----
: > "$T/pids"
FAKE_SLOW=20 BUILD=$T/build "$ROOT/harness/scripts/bench-sweep.sh" --lab 01 --variants solution \
  --quick --out "$T/out2" > "$T/term.out" 2>&1 &
sweep=$!
# wait until hello (the ceiling) and its first loadgen run have started
for ((i = 0; i < 50; i++)); do [ "$(grep -c . "$T/pids")" -ge 2 ] && break; sleep 0.1; done
sleep 0.3
kill -TERM "$sweep"
wait "$sweep"
check "the sweep exits 143 on SIGTERM (got $?)" [ $? = 143 ]
left=0
while read -r pid; do [ -e "/proc/$pid" ] && ! grep -q ') Z' "/proc/$pid/stat" && left=$((left + 1)); done < "$T/pids"
check "nothing left running after SIGTERM, loadgen included ($left left)" [ "$left" = 0 ]

# ---- start failures name the binary ----
out=$(BUILD=$T/build bash -c '
  . "$1/harness/scripts/benchlib.sh"; bench_init
  BENCH_START_TIMEOUT_MS=400 bench_start never "$BUILD/bin/lab01-never" && echo started
  bench_start dies "$BUILD/bin/lab01-dies" && echo started
  exit 0' _ "$ROOT" 2>&1)
check "a service that never listens: error names it and the timeout" \
  grep -q "lab01-never printed no 'listening on http://...' line within 0.4 s" <<< "$out"
check "a service that dies: error names it, its status and its stderr" \
  grep -q 'lab01-dies exited with status 3' <<< "$out"
check "... and shows its stderr" grep -q 'uv_listen: address already in use' <<< "$out"
check "neither counts as started" [ "$(grep -c started <<< "$out")" = 0 ]
sleep 0.2
left=0
while read -r pid; do [ -e "/proc/$pid" ] && ! grep -q ') Z' "/proc/$pid/stat" && left=$((left + 1)); done < "$T/pids"
check "nothing left running after the failed starts ($left left)" [ "$left" = 0 ]

if [ "$failures" != 0 ]; then
  echo "bench self-test: $failures failed; stderr of the sweep:"
  sed 's/^/  | /' "$T/stderr" | tail -n 30
  exit 1
fi
echo "bench self-test: all passed"
