#!/usr/bin/env bash
# test.sh - make test: the harness's own tests, then every lab's suite on its solution (must
# pass) and on its pitfall (must fail: "pitfall reproduced"), on every extra right variant
# (solutions/NN-slug/<name>.c: must pass) and on every wrong answer (labs/NN-slug/wrong/<name>.c:
# the test its first line names must fail on it), then the kit's self-check.
# Ends with "N passed, N failed".
#   BUILD=build (default) or build-san (make test SAN=1)
#   LAB=NN      only that lab, or LAB="01 02": those (the harness tests still run)
#   HARNESS=0   skip the harness's own tests (labs and self-check only)
#   TEST_JOBS=N how many lab suites run at once (default 3)
#   TEST_RERUN=0 no second run of a test that failed on a right answer (or passed on a wrong
#               one); by default it gets one, and one that needed it is named at the end
#   SUITE_TIMEOUT=S, SCRIPT_TIMEOUT=S  limits per lab suite (180) and per harness script (900)
#   -v          print every suite's full output
set -uo pipefail
cd "$(dirname "$0")/../.."
source harness/scripts/manifest.sh

BUILD=${BUILD:-build}
verbose=0
case "${1:-}" in
  -v|--verbose) verbose=1 ;;
  -h|--help) sed -n '2,14p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
  "") ;;
  *) echo "test.sh: unknown option '$1'" >&2; sed -n '2,14p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 2 ;;
esac

LOGS=$BUILD/logs
mkdir -p "$LOGS"
SUITE_TIMEOUT=${SUITE_TIMEOUT:-180}
# The harness's own test scripts grade whole submissions and build a handout: the grader's ran
# past 180 s on a loaded machine (166 s in when it was killed), so they get their own limit.
SCRIPT_TIMEOUT=${SCRIPT_TIMEOUT:-900}
export LOOPHOLES_BIN=$PWD/$BUILD/bin
# Sanitizer builds: report and fail, never hang on a prompt; leaks count.
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=0:exitcode=23}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}

passed=0 failed=0 skipped=0
failures=()
t_start=$(date +%s)

if [ -t 1 ]; then G=$'\e[32m' R=$'\e[31m' D=$'\e[2m' N=$'\e[0m'; else G="" R="" D="" N=""; fi

# Runs one Criterion binary; sets S_TESTED S_PASSED S_FAILED S_RC and leaves its output in $2.
run_suite() {
  local bin=$1 log=$2
  timeout --kill-after=5 "$SUITE_TIMEOUT" "$bin" --jobs 2 >"$log" 2>&1
  S_RC=$?
  local syn
  syn=$(grep -a 'Synthesis:' "$log" | tail -n 1)
  S_TESTED=$(sed -n 's/.*Tested: \([0-9]*\).*/\1/p' <<<"$syn")
  S_PASSED=$(sed -n 's/.*Passing: \([0-9]*\).*/\1/p' <<<"$syn")
  local f c
  f=$(sed -n 's/.*Failing: \([0-9]*\).*/\1/p' <<<"$syn")
  c=$(sed -n 's/.*Crashing: \([0-9]*\).*/\1/p' <<<"$syn")
  S_TESTED=${S_TESTED:-0} S_PASSED=${S_PASSED:-0}
  S_FAILED=$(( ${f:-0} + ${c:-0} ))
  if [ "$S_RC" = 124 ] || [ "$S_RC" = 137 ]; then echo "(suite timed out after ${SUITE_TIMEOUT}s)" >>"$log"; fi
  # A sanitizer report in any test process fails the suite, even if Criterion counted it a pass.
  if grep -a -q -E 'ERROR: (AddressSanitizer|LeakSanitizer)|runtime error:' "$log"; then
    echo "(sanitizer report in the log)" >>"$log"
    [ "$S_RC" = 0 ] && S_RC=23
    [ "$S_FAILED" = 0 ] && S_FAILED=1 && S_PASSED=$((S_PASSED > 0 ? S_PASSED - 1 : 0))
  fi
}

show_log() {
  if [ "$verbose" = 1 ]; then sed 's/^/    /' "$1"; else
    grep -a -E '^\[----\]   [^ ]|\[FAIL\]|CRASH|ERROR|Sanitizer|runtime error|timed out' "$1" | head -n 40 | sed 's/^/    /'
  fi
}

# ---- the labs' runs go through a pool of TEST_JOBS at once (default 3), each suite with two
# Criterion jobs and each wrong answer with one. The tests measure ratios and counts and hold on a
# loaded machine, so running several suites together is safe, and it keeps make test short.
TEST_JOBS=${TEST_JOBS:-3}
pool() {  # runs "$@" in the background once fewer than TEST_JOBS are running
  while [ "$(jobs -rp | wc -l)" -ge "$TEST_JOBS" ]; do wait -n; done
  "$@" &
}

# A whole suite: "RC TESTED PASSED FAILED" into $3. Extra arguments go to the suite binary.
suite_job() {
  local bin=$1 log=$2 res=$3; shift 3
  if [ "$#" -gt 0 ]; then
    timeout --kill-after=5 "$SUITE_TIMEOUT" "$bin" --jobs 2 "$@" >"$log" 2>&1
    S_RC=$?
    local syn f c
    syn=$(grep -a 'Synthesis:' "$log" | tail -n 1)
    S_TESTED=$(sed -n 's/.*Tested: \([0-9]*\).*/\1/p' <<<"$syn"); S_TESTED=${S_TESTED:-0}
    S_PASSED=$(sed -n 's/.*Passing: \([0-9]*\).*/\1/p' <<<"$syn"); S_PASSED=${S_PASSED:-0}
    f=$(sed -n 's/.*Failing: \([0-9]*\).*/\1/p' <<<"$syn"); c=$(sed -n 's/.*Crashing: \([0-9]*\).*/\1/p' <<<"$syn")
    S_FAILED=$(( ${f:-0} + ${c:-0} ))
  else
    run_suite "$bin" "$log"
    rerun_failed "$bin" "$log" "$res"
  fi
  echo "$S_RC $S_TESTED $S_PASSED $S_FAILED" >"$res"
}

# A suite that should pass (a solution, a right answer) and failed: each failed test runs once
# more, alone. When every one passes there, the suite counts as passed, and the tests that needed
# it are written to $3.rerun and named in the verdicts and the summary: a test that fails now and
# then on a loaded machine is a defect to fix, shown, not hidden. A sanitizer report, a timed-out
# suite, or a failure Criterion did not name gets no rerun. TEST_RERUN=0: no reruns.
rerun_failed() {
  local bin=$1 log=$2 res=$3 names t n=0
  rm -f "$res.rerun"
  [ "${TEST_RERUN:-1}" = 1 ] && [ "$S_RC" != 0 ] && [ "$S_FAILED" -gt 0 ] || return 0
  grep -a -q -E 'sanitizer report in the log|suite timed out' "$log" && return 0
  names=$(grep -a -o -E '\[FAIL\] lab[0-9]+::[A-Za-z0-9_]+' "$log" | sed 's/\[FAIL\] //' | sort -u)
  [ -n "$names" ] && [ "$(wc -l <<<"$names")" = "$S_FAILED" ] || return 0
  for t in $names; do
    n=$((n + 1))
    timeout --kill-after=5 "$SUITE_TIMEOUT" "$bin" --jobs 1 --filter "${t/:://}" >"$log.rerun$n" 2>&1 || return 0
    grep -a -q -E 'ERROR: (AddressSanitizer|LeakSanitizer)|runtime error:' "$log.rerun$n" && return 0
  done
  echo "$names" >"$res.rerun"
  S_RC=0 S_PASSED=$S_TESTED S_FAILED=0
}

# One wrong answer: only the test its first line names runs (that keeps make test fast), and it
# must fail. Writes "caught|missed|bad <detail>" to $4.
WRONG_RE='^/\* WRONG: (.+) -- caught by: (lab[0-9][0-9])::([A-Za-z_][A-Za-z0-9_]*) \*/$'
wrong_job() {
  local lab=$1 num=$2 f=$3 out=$4 name first suite test bin log
  name=$(basename "$f" .c)
  first=$(head -n 1 "$f")
  if ! [[ $first =~ $WRONG_RE ]]; then
    echo "bad its first line is not /* WRONG: <rule> -- caught by: lab$num::<test> */" >"$out"; return
  fi
  suite=${BASH_REMATCH[2]} test=${BASH_REMATCH[3]}
  if [ "$suite" != "lab$num" ]; then echo "bad it names suite $suite, not lab$num" >"$out"; return; fi
  bin=$BUILD/test/lab$num-wrong-$name log=$LOGS/lab$num-wrong-$name.log
  if [ ! -x "$bin" ]; then echo "bad not built ($bin)" >"$out"; return; fi
  timeout --kill-after=5 "$SUITE_TIMEOUT" "$bin" --jobs 1 --filter "$suite/$test" >"$log" 2>&1
  local rc=$? syn tested
  syn=$(grep -a 'Synthesis:' "$log" | tail -n 1)
  tested=$(sed -n 's/.*Tested: \([0-9]*\).*/\1/p' <<<"$syn")
  if [ "${tested:-0}" = 0 ] && [ "$rc" = 0 ]; then
    echo "bad its named test $suite::$test does not exist in labs/$lab/test.c" >"$out"
  elif [ "$rc" = 0 ] && ! grep -a -q -E 'ERROR: (AddressSanitizer|LeakSanitizer)|runtime error:' "$log"; then
    # Missed once: one more run (TEST_RERUN=0: none); caught there, it counts, and says so.
    if [ "${TEST_RERUN:-1}" = 1 ] &&
        ! timeout --kill-after=5 "$SUITE_TIMEOUT" "$bin" --jobs 1 --filter "$suite/$test" >"$log.rerun1" 2>&1; then
      echo "caught $suite::$test (on its rerun: it PASSED on the first run)" >"$out"
    else
      echo "missed $suite::$test PASSED on it" >"$out"
    fi
  else
    echo "caught $suite::$test" >"$out"
  fi
}

# Other right answers: solutions/NN-slug/<name>.c but solution.c (and the grader's hidden.c).
lab_extras() {
  local f name
  for f in solutions/"$1"/*.c; do
    [ -f "$f" ] || continue
    name=$(basename "$f" .c)
    case "$name" in solution|hidden|pitfall|exercise) continue ;; esac
    echo "$name"
  done
}

if [ "${HARNESS:-1}" = 0 ]; then echo "== harness: skipped (HARNESS=0)"; fi
h_t0=$(date +%s)
[ "${HARNESS:-1}" = 0 ] || echo "== harness"
for bin in "$BUILD"/test/harness-*; do
  [ "${HARNESS:-1}" = 0 ] && break
  [ -x "$bin" ] || continue
  name=$(basename "$bin")
  run_suite "$bin" "$LOGS/$name.log"
  if [ "$S_RC" = 0 ] && [ "$S_TESTED" -gt 0 ]; then
    passed=$((passed + S_PASSED))
    printf '  %s%-28s%s %s/%s passed\n' "$G" "$name" "$N" "$S_PASSED" "$S_TESTED"
  else
    passed=$((passed + S_PASSED)); failed=$((failed + (S_FAILED > 0 ? S_FAILED : 1)))
    failures+=("$name")
    printf '  %s%-28s%s %s/%s passed (exit %s), log: %s\n' "$R" "$name" "$N" "$S_PASSED" "$S_TESTED" "$S_RC" "$LOGS/$name.log"
    show_log "$LOGS/$name.log"
  fi
done
for script in harness/tests/*.sh; do
  [ "${HARNESS:-1}" = 0 ] && break
  [ -x "$script" ] || continue
  name=$(basename "$script" .sh)
  BUILD=$BUILD timeout --kill-after=5 "$SCRIPT_TIMEOUT" "$script" >"$LOGS/script-$name.log" 2>&1
  rc=$?
  if [ "$rc" = 124 ] || [ "$rc" = 137 ]; then echo "(timed out after ${SCRIPT_TIMEOUT}s: SCRIPT_TIMEOUT)" >>"$LOGS/script-$name.log"; fi
  if [ "$rc" = 0 ]; then
    passed=$((passed + 1))
    printf '  %s%-28s%s passed\n' "$G" "$name.sh" "$N"
  elif [ "$rc" = 77 ]; then  # the script could not run here (a missing tool): said, not passed
    skipped=$((skipped + 1))
    printf '  %s%-28s SKIPPED%s %s\n' "$R" "$name.sh" "$N" "$(grep -m 1 SKIP "$LOGS/script-$name.log" | sed 's/^SKIPPED - //')"
  else
    failed=$((failed + 1)); failures+=("$name.sh")
    printf '  %s%-28s%s FAILED, log: %s\n' "$R" "$name.sh" "$N" "$LOGS/script-$name.log"
    tail -n 15 "$LOGS/script-$name.log" | sed 's/^/    /'
  fi
done

[ "${HARNESS:-1}" = 0 ] || printf '  %s(harness: %ss)%s\n' "$D" "$(( $(date +%s) - h_t0 ))" "$N"

labs=$(manifest_labs)
if [ -n "${LAB:-}" ]; then
  labs=""
  for l in $LAB; do
    r=$(manifest_resolve "$l") || { echo "test.sh: no lab '$l' in labs/manifest" >&2; exit 2; }
    labs="$labs $r"
  done
fi
echo "== labs: the suite passes on solution.c and every other right answer, fails on pitfall.c and"
echo "   on every wrong answer in wrong/ (its named test); $TEST_JOBS runs at a time"
l_t0=$(date +%s)
rm -f "$LOGS"/lab*.res "$LOGS"/lab*.result "$LOGS"/lab*.rerun*
# A pitfall needs one failing test to be reproduced: --fail-fast (the whole suite with -v).
pit_args=(--fail-fast); [ "$verbose" = 1 ] && pit_args=()
run_labs=()
# Phase 1: start every run, the long ones (whole suites) first.
for lab in $labs; do
  num=${lab%%-*}
  sol=$BUILD/test/lab$num-solution pit=$BUILD/test/lab$num-pitfall
  if [ ! -f "solutions/$lab/solution.c" ] && [ -f "labs/$lab/test.c" ]; then
    printf '  %slab %s %-24s no solutions/ here (a student handout): make check LAB=%s runs your exercise.c%s\n' \
      "$D" "$num" "$lab" "$num" "$N"
    continue
  fi
  if [ ! -x "$sol" ] || [ ! -x "$pit" ]; then
    if [ -d "labs/$lab" ] && [ -f "labs/$lab/test.c" ]; then
      failed=$((failed + 1)); failures+=("lab $num not built")
      printf '  %slab %s %-24s%s suite binaries missing (%s)\n' "$R" "$num" "$lab" "$N" "$sol"
    else
      printf '  %slab %s %-24s not written yet%s\n' "$D" "$num" "$lab" "$N"
    fi
    continue
  fi
  run_labs+=("$lab")
  pool suite_job "$sol" "$LOGS/lab$num-solution.log" "$LOGS/lab$num-solution.res"
  pool suite_job "$pit" "$LOGS/lab$num-pitfall.log" "$LOGS/lab$num-pitfall.res" "${pit_args[@]}"
  for name in $(lab_extras "$lab"); do
    [ -x "$BUILD/test/lab$num-$name" ] &&
      pool suite_job "$BUILD/test/lab$num-$name" "$LOGS/lab$num-$name.log" "$LOGS/lab$num-$name.res"
  done
done
for lab in "${run_labs[@]}"; do
  num=${lab%%-*}
  for f in labs/"$lab"/wrong/*.c; do
    [ -f "$f" ] || continue
    pool wrong_job "$lab" "$num" "$f" "$LOGS/lab$num-wrong-$(basename "$f" .c).result"
  done
done
wait

# Phase 2: the verdicts, lab by lab.
reruns=()
rerun_note() {  # RN=" (X passed on its rerun)" when $1.rerun names tests; adds them to reruns
  RN=""
  [ -s "$1.rerun" ] || return 0
  local t list=""
  for t in $(cat "$1.rerun"); do list+="${list:+, }$t"; reruns+=("$t failed once on $2"); done
  RN=" ${R}(${list} passed on its rerun)${N}"
}
read_res() { read -r S_RC S_TESTED S_PASSED S_FAILED <"$1" 2>/dev/null || { S_RC=99 S_TESTED=0 S_PASSED=0 S_FAILED=1; }; }
for lab in "${run_labs[@]}"; do
  num=${lab%%-*}
  read_res "$LOGS/lab$num-solution.res"
  s_rc=$S_RC
  passed=$((passed + S_PASSED))
  if [ "$S_RC" = 0 ] && [ "$S_TESTED" -gt 0 ]; then
    rerun_note "$LOGS/lab$num-solution.res" "lab $num's solution"
    sol_msg="${G}solution ${S_PASSED}/${S_TESTED} passed${N}$RN"
  else
    failed=$((failed + (S_FAILED > 0 ? S_FAILED : 1))); failures+=("lab $num solution")
    sol_msg="${R}solution ${S_PASSED}/${S_TESTED} passed (exit $S_RC)${N}"
  fi
  read_res "$LOGS/lab$num-pitfall.res"
  if [ "$S_RC" != 0 ] && [ "$S_FAILED" -gt 0 ]; then
    passed=$((passed + 1))
    first_fail=$(grep -a -m 1 -o -E '\[FAIL\] lab[0-9]+::[A-Za-z0-9_]+' "$LOGS/lab$num-pitfall.log" | sed 's/\[FAIL\] //')
    pit_msg="${G}pitfall reproduced${N} (${first_fail:-a test} fails on it)"
  else
    failed=$((failed + 1)); failures+=("lab $num pitfall NOT reproduced")
    pit_msg="${R}pitfall NOT reproduced: its suite passed (exit $S_RC)${N}"
  fi
  printf '  lab %s %-24s %s   %s\n' "$num" "$lab" "$sol_msg" "$pit_msg"
  [ "$s_rc" = 0 ] || show_log "$LOGS/lab$num-solution.log"
  if [ "$verbose" = 1 ]; then show_log "$LOGS/lab$num-pitfall.log"; fi
  for name in $(lab_extras "$lab"); do
    if [ ! -x "$BUILD/test/lab$num-$name" ]; then
      failed=$((failed + 1)); failures+=("lab $num $name not built")
      printf '    %sright answer %-22s%s not built (%s)\n' "$R" "$name" "$N" "$BUILD/test/lab$num-$name"; continue
    fi
    read_res "$LOGS/lab$num-$name.res"
    passed=$((passed + S_PASSED))
    if [ "$S_RC" = 0 ] && [ "$S_TESTED" -gt 0 ]; then
      rerun_note "$LOGS/lab$num-$name.res" "solutions/$lab/$name.c"
      printf '    %sright answer %-22s%s %s/%s passed%s\n' "$G" "$name" "$N" "$S_PASSED" "$S_TESTED" "$RN"
    else
      failed=$((failed + (S_FAILED > 0 ? S_FAILED : 1))); failures+=("lab $num right answer $name rejected")
      printf '    %sright answer %-22s%s REJECTED: %s/%s passed (exit %s), log: %s\n' "$R" "$name" "$N" \
        "$S_PASSED" "$S_TESTED" "$S_RC" "$LOGS/lab$num-$name.log"
      show_log "$LOGS/lab$num-$name.log"
    fi
  done
  shipped=0 caught=0 bad=()
  for f in labs/"$lab"/wrong/*.c; do
    [ -f "$f" ] || continue
    name=$(basename "$f" .c)
    shipped=$((shipped + 1))
    res=$(cat "$LOGS/lab$num-wrong-$name.result" 2>/dev/null || echo "bad no result")
    kind=${res%% *} detail=${res#* }
    if [ "$kind" = caught ]; then
      caught=$((caught + 1))
      case $detail in *"on its rerun"*) reruns+=("${detail%% *} missed labs/$lab/wrong/$name.c once") ;; esac
    else
      bad+=("$name: $detail")
    fi
  done
  [ "$shipped" -gt 0 ] || continue
  passed=$((passed + caught))
  if [ "$caught" = "$shipped" ]; then
    printf '    %swrong answers: %d shipped, %d caught by their named test%s\n' "$G" "$shipped" "$caught" "$N"
  else
    failed=$((failed + shipped - caught))
    failures+=("lab $num wrong answers [$(printf '%s; ' "${bad[@]}" | sed 's/; $//')]")
    printf '    %swrong answers: %d shipped, %d caught by their named test%s\n' "$R" "$shipped" "$caught" "$N"
    for res in "${bad[@]}"; do printf '      %s%s%s\n' "$R" "$res" "$N"; done
  fi
done
printf '  %s(labs: %ss)%s\n' "$D" "$(( $(date +%s) - l_t0 ))" "$N"

# The kit's own rules (harness/scripts/selfcheck.sh); a student handout has no solutions/ or
# gallery to check.
if [ -d solutions ] && [ -z "${LAB:-}" ]; then
  echo "== kit self-check (harness/scripts/selfcheck.sh)"
  if harness/scripts/selfcheck.sh >"$LOGS/selfcheck.log" 2>&1; then
    passed=$((passed + 1))
    sed 's/^/  /' "$LOGS/selfcheck.log" | grep -v -E '^  +selfcheck: every rule holds' | sed 's/^  //'
  else
    failed=$((failed + 1)); failures+=("selfcheck")
    sed 's/^/  /' "$LOGS/selfcheck.log" | head -n 60 | sed 's/^  //'
  fi
fi

elapsed=$(( $(date +%s) - t_start ))
echo
if [ ${#reruns[@]} -gt 0 ]; then
  echo "Passed on a rerun, so flaky on this machine (a defect to fix; TEST_RERUN=0 runs without):"
  for t in "${reruns[@]}"; do echo "  $t"; done
fi
if [ ${#failures[@]} -gt 0 ]; then
  echo "Failed: ${failures[*]} (logs in $LOGS/)"
else
  echo "All green in ${elapsed}s. Next: make bench LAB=01   (or make check LAB=01 to work on a lab)"
fi
echo "$passed passed, $failed failed$([ "$skipped" = 0 ] || echo ", $skipped skipped")"
[ "$failed" = 0 ]
