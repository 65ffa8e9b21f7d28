#!/usr/bin/env bash
# benchlib.sh - the building blocks of a bench scenario. Source it, do not run it:
#
#   . "$(dirname "$0")/benchlib.sh"
#   bench_init                                     # paths, a temp dir, a trap that stops
#                                                  # everything you started, on any exit
#   bench_start svc "$BENCH_BIN/lab01-solution" --delay-ms 10 || exit 1
#   bench_step "${BENCH_URL[svc]}/work" 1000 100 2 || exit 1    # one loadgen step
#   echo "p99 $(bench_field p99_ms) ms"            # a field of that step's CSV row
#   bench_stop svc
#
# Functions (each returns 0, or 1 after printing an error on stderr that names what failed):
#   bench_init                     sets BENCH_ROOT, BUILD, BENCH_BIN, BENCH_PLOT_DIR, BENCH_TMP (a
#                                  temp dir removed on exit); installs the trap
#   bench_start NAME BIN [ARGS]    runs BIN --port 0 ARGS in the background and waits for its
#                                  "listening on http://..." line: sets BENCH_URL[NAME]
#                                  ("http://127.0.0.1:PORT", no trailing slash) and BENCH_PID[NAME]
#   bench_stop NAME                SIGTERM, wait, SIGKILL after BENCH_STOP_TIMEOUT_MS
#   bench_stop_all                 every service still running (the trap calls it)
#   bench_step URL RATE CONNS SECONDS [LOADGEN_OPTIONS...]
#                                  one loadgen run (RATE 0 = closed loop), quiet, bounded by
#                                  `timeout` (SECONDS + 30 s): sets BENCH_HEADER and BENCH_ROW
#                                  (its CSV header and summary row)
#   bench_field NAME [ROW [HEADER]]  a column of a CSV row by name (default: the last step's)
#   bench_progress LABEL VARIANT RATE I N / bench_progress_done
#                                  "[lab 01] solution  4000 req/s  step 4/7 ... achieved 3998,
#                                  p99 10.9 ms" on stderr
#   bench_ceiling CONNS SECONDS    closed-loop peak of build/bin/hello (a trivial handler on the
#                                  same shell): sets BENCH_CEILING_RPS
#   bench_http NAME [PATH]         GET a service's PATH (default /stats) with curl, body on stdout
#   bench_reset_stats NAME         POST /debug/stats: the shell restarts its peaks and its loop-lag
#                                  max, so loop_lag_max_ms then covers one step only
#   bench_json_get JSON KEY        a number from a flat JSON object
#   bench_stats_append OUT STEP_CSV T0_S OFFERED STEP
#                                  appends loadgen's --stats-out samples to OUT with the time
#                                  shifted by T0_S and the step's offered load in a column
#   bench_now_s                    seconds since bench_init, with decimals
#   bench_plot GP OUT_BASE [gnuplot assignments...]
#                                  renders OUT_BASE.png and OUT_BASE.svg, prints their paths
#   bench_dumb GP [gnuplot assignments...]   the same plot as text, on stdout
#   bench_log / bench_warn / bench_err MSG   messages on stderr
#
# Functions that start or stop processes or set BENCH_* variables must not run in a subshell
# ($(...) or a pipe): the trap could not see what they started.
# Tunables (environment): BENCH_START_TIMEOUT_MS (10000), BENCH_STOP_TIMEOUT_MS (5000).

if [ -n "${BENCHLIB_LOADED:-}" ]; then return 0; fi
BENCHLIB_LOADED=1

declare -gA BENCH_PID=() BENCH_URL=()
BENCH_HEADER=""
BENCH_ROW=""
BENCH_CEILING_RPS=""
BENCH_START_TIMEOUT_MS=${BENCH_START_TIMEOUT_MS:-10000}
BENCH_STOP_TIMEOUT_MS=${BENCH_STOP_TIMEOUT_MS:-5000}
BENCH_PROGRESS_OPEN=0
BENCH_LOADGEN_PID=""

bench_log() { echo "$*" >&2; }
# A warning in the middle of a progress line starts on a line of its own.
bench__eol() { if [ "${BENCH_PROGRESS_OPEN:-0}" = 1 ]; then echo >&2; BENCH_PROGRESS_OPEN=0; fi; }
bench_warn() { bench__eol; echo "bench: warning: $*" >&2; }
bench_err() { bench__eol; echo "bench: error: $*" >&2; }

bench_init() {
  BENCH_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
  BUILD=${BUILD:-build}
  case "$BUILD" in /*) BENCH_BIN=$BUILD/bin ;; *) BENCH_BIN=$BENCH_ROOT/$BUILD/bin ;; esac
  BENCH_PLOT_DIR=$BENCH_ROOT/harness/plot
  BENCH_TMP=$(mktemp -d "${TMPDIR:-/tmp}/loopholes-bench.XXXXXX") || {
    bench_err "mktemp -d failed"; return 1; }
  bench__now
  BENCH_T0_US=$BENCH__US
  # EXIT runs on every way out; INT and TERM turn into an exit so that EXIT runs.
  trap 'bench__on_exit' EXIT
  trap 'exit 130' INT
  trap 'exit 143' TERM
  export LC_ALL=C   # decimal points, not commas, in every printf and awk
}

bench__on_exit() {
  local rc=$?
  trap - EXIT INT TERM
  if [ -n "${BENCH_LOADGEN_PID:-}" ]; then
    kill -TERM "$BENCH_LOADGEN_PID" 2>/dev/null
    wait "$BENCH_LOADGEN_PID" 2>/dev/null
  fi
  if [ "$rc" = 130 ] || [ "$rc" = 143 ]; then
    # Ctrl-C reached the services too (they drain on SIGINT): their exit status says nothing.
    BENCH_QUIET_STOP=1
    bench__eol
    echo "bench: interrupted; stopping what it started" >&2
  fi
  bench_stop_all
  [ -n "${BENCH_TMP:-}" ] && rm -rf "$BENCH_TMP"
  exit "$rc"
}

# Clocks without a fork: bash's $EPOCHREALTIME is "seconds.microseconds".
# bench__now sets BENCH__US and BENCH__MS (a function called as $(...) would fork).
bench__now() { local t=${EPOCHREALTIME/[.,]/}; BENCH__US=$((10#$t)); BENCH__MS=$((BENCH__US / 1000)); }

bench_now_s() {
  bench__now
  local us=$(( BENCH__US - BENCH_T0_US ))
  printf '%d.%03d\n' $((us / 1000000)) $((us % 1000000 / 1000))
}

# bench__secs MS: "10" for 10000, "0.4" for 400.
bench__secs() { if [ $(($1 % 1000)) = 0 ]; then echo $(($1 / 1000)); else printf '%d.%03d' $(($1 / 1000)) $(($1 % 1000)) | sed 's/0*$//'; fi; }

# A child that exited stays a zombie until we wait for it, and kill -0 still succeeds on a
# zombie: read its state instead.
bench__alive() {
  local stat st
  { read -r stat < "/proc/$1/stat"; } 2>/dev/null || return 1
  st=${stat##*) }
  st=${st%% *}
  [ -n "$st" ] && [ "$st" != Z ] && [ "$st" != X ]
}

bench_start() {
  if [ $# -lt 2 ]; then bench_err "usage: bench_start NAME BIN [ARGS...]"; return 1; fi
  local name=$1 bin=$2; shift 2
  if [ -n "${BENCH_PID[$name]:-}" ]; then bench_err "bench_start: '$name' is already running"; return 1; fi
  if [ ! -x "$bin" ]; then
    bench_err "$bin is missing: build it with  make BUILD=$BUILD ${bin#"$BENCH_ROOT"/}"
    return 1
  fi
  local out="$BENCH_TMP/$name.out" errf="$BENCH_TMP/$name.err" pid url="" deadline rc line
  : > "$out"
  "$bin" --port 0 "$@" > "$out" 2> "$errf" &
  pid=$!
  BENCH_PID[$name]=$pid
  bench__now
  deadline=$(( BENCH__MS + BENCH_START_TIMEOUT_MS ))
  while :; do
    while IFS= read -r line; do
      case "$line" in "listening on http://"*) url=${line#listening on }; url=${url%%[[:space:]]*}; break ;; esac
    done < "$out"
    [ -n "$url" ] && break
    if ! bench__alive "$pid"; then
      rc=0; wait "$pid" || rc=$?
      unset "BENCH_PID[$name]"
      bench_err "$(basename "$bin") exited with status $rc before it printed 'listening on ...'" \
        "(command: $bin --port 0 $*)"
      sed 's/^/  | /' "$errf" | tail -n 15 >&2
      return 1
    fi
    bench__now
    if [ "$BENCH__MS" -gt "$deadline" ]; then
      bench_err "$(basename "$bin") printed no 'listening on http://...' line within" \
        "$(bench__secs "$BENCH_START_TIMEOUT_MS") s (command: $bin --port 0 $*)"
      sed 's/^/  | /' "$errf" | tail -n 15 >&2
      bench_stop "$name" 2>/dev/null
      return 1
    fi
    sleep 0.02
  done
  BENCH_URL[$name]=${url%/}
}

bench_stop() {
  local name=$1 pid=${BENCH_PID[$1]:-} deadline rc killed=0
  [ -n "$pid" ] || return 0
  unset "BENCH_PID[$name]" "BENCH_URL[$name]"
  kill -TERM "$pid" 2>/dev/null
  bench__now
  deadline=$(( BENCH__MS + BENCH_STOP_TIMEOUT_MS ))
  while bench__alive "$pid"; do
    bench__now
    if [ "$BENCH__MS" -gt "$deadline" ]; then
      bench_warn "'$name' (pid $pid) still running $(bench__secs "$BENCH_STOP_TIMEOUT_MS") s after SIGTERM" \
        "(a blocked loop still working through its backlog?): SIGKILL"
      kill -KILL "$pid" 2>/dev/null
      killed=1
      break
    fi
    sleep 0.02
  done
  rc=0; wait "$pid" 2>/dev/null || rc=$?
  if [ "$killed" = 0 ] && [ "$rc" != 0 ] && [ -z "${BENCH_QUIET_STOP:-}" ]; then
    bench_warn "'$name' exited with status $rc after SIGTERM (a clean shutdown exits 0); its stderr:"
    sed 's/^/  | /' "$BENCH_TMP/$name.err" 2>/dev/null | tail -n 10 >&2
  fi
  return 0
}

bench_stop_all() {
  local name
  for name in "${!BENCH_PID[@]}"; do bench_stop "$name"; done
}

bench_step() {
  if [ $# -lt 4 ]; then bench_err "usage: bench_step URL RATE CONNS SECONDS [LOADGEN_OPTIONS...]"; return 1; fi
  local url=$1 rate=$2 conns=$3 secs=$4; shift 4
  local loadgen=$BENCH_BIN/loadgen out=$BENCH_TMP/step.csv errf=$BENCH_TMP/loadgen.err limit rc=0 nh nr
  BENCH_HEADER="" BENCH_ROW=""
  if [ ! -x "$loadgen" ]; then
    bench_err "$loadgen is missing: build it with  make BUILD=$BUILD $BUILD/bin/loadgen"
    return 1
  fi
  # Bounded in time whatever happens: the step, a warm-up, the timeout of the last requests.
  limit=$(awk -v s="$secs" 'BEGIN { printf "%d", s + 30 }')
  # In the background, then `wait`: loadgen ends cleanly on SIGINT (exit 0, a summary), and
  # bash ignores a Ctrl-C whose foreground child exited normally. `wait` returns at once on a
  # trapped signal instead, so Ctrl-C stops the run.
  timeout --foreground -k 3 "$limit" "$loadgen" "$url" -r "$rate" -c "$conns" -d "$secs" \
    --format csv --csv-header -q "$@" > "$out" 2> "$errf" &
  BENCH_LOADGEN_PID=$!
  wait "$BENCH_LOADGEN_PID" || rc=$?
  BENCH_LOADGEN_PID=""
  if [ "$rc" != 0 ]; then
    if [ "$rc" = 124 ] || [ "$rc" = 137 ]; then
      bench_err "loadgen did not finish within $limit s (loadgen $url -r $rate -c $conns -d $secs $*)"
    else
      bench_err "loadgen exited with status $rc (loadgen $url -r $rate -c $conns -d $secs $*)"
    fi
    sed 's/^/  | /' "$errf" | tail -n 10 >&2
    return 1
  fi
  { IFS= read -r BENCH_HEADER; IFS= read -r BENCH_ROW; } < "$out"
  nh=${BENCH_HEADER//[^,]/}
  nr=${BENCH_ROW//[^,]/}
  if [ -z "$BENCH_ROW" ] || [ "${#nh}" != "${#nr}" ]; then
    bench_err "loadgen printed no CSV header and row of the same width; its stdout:"
    sed 's/^/  | /' "$out" | head -n 5 >&2
    return 1
  fi
}

# bench_rel PATH: PATH relative to the kit's root when it is under it (printed paths carry no
# machine's directories).
bench_rel() { case "$1" in "$BENCH_ROOT"/*) echo "${1#"$BENCH_ROOT"/}" ;; *) echo "$1" ;; esac; }

bench_field() {
  local -a h r
  local i
  IFS=, read -r -a h <<< "${3-$BENCH_HEADER}"
  IFS=, read -r -a r <<< "${2-$BENCH_ROW}"
  for ((i = 0; i < ${#h[@]}; i++)); do
    if [ "${h[i]}" = "$1" ]; then echo "${r[i]:-}"; return 0; fi
  done
  return 1
}

bench_progress() {
  local label=$1 variant=$2 rate=$3 i=$4 n=$5 load
  if [ "$rate" = 0 ]; then load="peak (closed loop)"; else load="$rate req/s"; fi
  printf '[%s] %-9s %17s  step %s/%s ... ' "$label" "$variant" "$load" "$i" "$n" >&2
  BENCH_PROGRESS_OPEN=1
}

bench_progress_done() {
  awk -v h="$BENCH_HEADER" -v r="$BENCH_ROW" -v extra="${1:-}" 'BEGIN {
    n = split(h, H, ","); split(r, R, ","); for (i = 1; i <= n; i++) f[H[i]] = R[i]
    # Requests that got no answer, apart from answers with a non-2xx status (a lab may answer
    # 502 or 503 on purpose: lab 04 on its failure path, lab 05 when it sheds).
    e = f["err_connect"] + f["err_timeout"] + f["err_other"]
    p = f["p99_ms"] + 0
    printf "achieved %.0f, p99 " (p >= 100 ? "%.0f" : "%.1f") " ms", f["achieved_rps"], p
    if (e > 0) printf ", %d errors", e
    if (f["err_http"] + 0 > 0) printf ", %d non-2xx answers", f["err_http"]
    if (extra != "") printf ", %s", extra
    printf "\n" }' >&2
  BENCH_PROGRESS_OPEN=0
}

bench_ceiling() {
  local conns=${1:-50} secs=${2:-2}
  BENCH_CEILING_RPS=""
  bench_start __hello "$BENCH_BIN/hello" || return 1
  # A short warm-up (connections, caches), then the measured closed-loop run.
  bench_step "${BENCH_URL[__hello]}/" 0 "$conns" 0.3 >/dev/null || { bench_stop __hello; return 1; }
  if ! bench_step "${BENCH_URL[__hello]}/" 0 "$conns" "$secs"; then bench_stop __hello; return 1; fi
  bench_stop __hello
  BENCH_CEILING_RPS=$(printf '%.0f' "$(bench_field ok_rps)")
}

bench_http() {
  local name=$1 path=${2:-/stats}
  if [ -z "${BENCH_URL[$name]:-}" ]; then bench_err "bench_http: '$name' is not running"; return 1; fi
  curl -fsS --max-time 3 "${BENCH_URL[$name]}$path" || {
    bench_err "curl ${BENCH_URL[$name]}$path failed"; return 1; }
}

bench_reset_stats() {
  local name=$1
  if [ -z "${BENCH_URL[$name]:-}" ]; then bench_err "bench_reset_stats: '$name' is not running"; return 1; fi
  curl -fsS --max-time 5 -X POST -o /dev/null "${BENCH_URL[$name]}/debug/stats" 2>/dev/null || {
    bench_warn "POST ${BENCH_URL[$name]}/debug/stats failed: peaks not reset"; return 1; }
}

bench_json_get() {
  awk -v j="$1" -v k="$2" 'BEGIN {
    if (!match(j, "\"" k "\"[ \t]*:[ \t]*-?[0-9.eE+-]+")) exit 1
    v = substr(j, RSTART, RLENGTH); sub(/^[^:]*:[ \t]*/, "", v); print v }'
}

bench_stats_append() {
  local out=$1 step_csv=$2 t0=$3 offered=$4 step=$5
  # No samples (a loop so blocked that no sample was answered in the step): nothing to append.
  [ -s "$step_csv" ] || return 0
  local hdr=""
  if [ -s "$out" ]; then IFS= read -r hdr < "$out"; fi
  # Columns are matched by name to OUT's header (the first step's): a key missing in a later
  # step stays empty, a new one is dropped.
  awk -F, -v OFS=, -v t0="$t0" -v off="$offered" -v step="$step" -v hdr="$hdr" '
    NR == 1 {
      for (i = 1; i <= NF; i++) col[$i] = i
      if (hdr == "") { hdr = "t_s,step,offered_rps"; for (i = 2; i <= NF; i++) hdr = hdr "," $i; print hdr }
      n = split(hdr, H, ",")
      next
    }
    {
      line = sprintf("%.3f,%s,%s", $col["t_s"] + t0, step, off)
      for (i = 4; i <= n; i++) line = line "," ((H[i] in col) ? $col[H[i]] : "")
      print line
    }' "$step_csv" >> "$out"
}

bench__term() {
  if [ -z "${BENCH_PNG_TERM:-}" ]; then
    if gnuplot -e 'set terminal pngcairo' </dev/null >/dev/null 2>&1; then
      BENCH_PNG_TERM="pngcairo size 1000,600 font 'DejaVu Sans,11' linewidth 1.5"
    else
      BENCH_PNG_TERM="png size 1000,600 font 'DejaVuSans,10'"
    fi
  fi
}

bench__gnuplot() {
  local gp=$1; shift
  local e="plotdir='$BENCH_PLOT_DIR'" a
  for a in "$@"; do e="$e; $a"; done
  gnuplot -e "$e" "$gp"
}

bench_plot() {
  local gp=$1 base=$2; shift 2
  command -v gnuplot >/dev/null || { bench_err "gnuplot is missing: make deps"; return 1; }
  bench__term
  if bench__gnuplot "$gp" "term=\"$BENCH_PNG_TERM\"" "out='$base.png'" "$@" 2>"$BENCH_TMP/gnuplot.err" &&
     bench__gnuplot "$gp" "term=\"svg size 1000,600 dynamic font 'sans,12'\"" "out='$base.svg'" "$@" \
       2>>"$BENCH_TMP/gnuplot.err"; then
    echo "$base.png"
    echo "$base.svg"
  else
    bench_err "gnuplot $gp failed:"; sed 's/^/  | /' "$BENCH_TMP/gnuplot.err" | tail -n 10 >&2
    return 1
  fi
}

bench_dumb() {
  local gp=$1; shift
  command -v gnuplot >/dev/null || return 1
  bench__gnuplot "$gp" "term='dumb size 100,26'" "out=''" "$@" 2>"$BENCH_TMP/gnuplot.err" || {
    bench_err "gnuplot $gp (dumb) failed:"; sed 's/^/  | /' "$BENCH_TMP/gnuplot.err" | tail -n 10 >&2
    return 1; }
}
