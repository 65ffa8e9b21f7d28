#!/usr/bin/env bash
# harness/tests/selfcheck.sh - the kit's self-check (harness/scripts/selfcheck.sh) must pass on a
# kit that keeps its rules and fail on one that breaks any of them, naming the rule.
#
# A copy of the kit in a temp dir: labs 01 and 02 with their solutions, their manifest blocks,
# and the scripts and bench sources that read the manifest. The copy must pass; then each rule is
# broken in a fresh copy, one at a time, and the self-check must fail with the expected message.
set -uo pipefail
cd "$(dirname "$0")/../.."
root=$PWD
if [ ! -d solutions/01-blocking-sleep ]; then
  echo "no solutions/ here (a student handout): the kit's self-check is the instructor's"; exit 0
fi
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
fails=0
LABS="01-blocking-sleep 02-client-per-request"

make_kit() {  # DIR: a fresh, rule-keeping copy
  local d=$1 l
  rm -rf "$d"; mkdir -p "$d/labs" "$d/solutions" "$d/harness"
  cp -r harness/scripts "$d/harness/"
  [ -d harness/bench ] && cp -r harness/bench "$d/harness/"
  [ -d harness/grader ] && cp -r harness/grader "$d/harness/"
  for l in $LABS; do
    cp -r "labs/$l" "$d/labs/"
    cp -r "solutions/$l" "$d/solutions/"
    rm -rf "$d/labs/$l/.backup"
    # bench.c is required once lab 01 has one: give both the same standing.
    [ -f "$d/labs/01-blocking-sleep/bench.c" ] && [ ! -f "$d/labs/$l/bench.c" ] && echo "/* bench */" >"$d/labs/$l/bench.c"
    # the README links its gallery (the rule holds in the copy even while the kit's lags)
    for w in "$d/labs/$l"/wrong/*.c; do
      grep -q -F "wrong/$(basename "$w")" "$d/labs/$l/README.md" || echo "- [wrong/$(basename "$w")](wrong/$(basename "$w"))" >>"$d/labs/$l/README.md"
    done
  done
  # The manifest: its header and the two labs' blocks.
  awk -v keep=" $LABS " '
    /^lab[[:space:]]/ { inlab = index(keep, " " $2 " ") > 0; started = 1 }
    !started || inlab { print }' labs/manifest >"$d/labs/manifest"
}

# The cases run four at a time, each in its own copy; results are printed in order at the end.
case_no=0
run_case() {  # KIND NAME [PATTERN] COMMANDS
  case_no=$((case_no + 1))
  while [ "$(jobs -rp | wc -l)" -ge 4 ]; do wait -n; done
  ( "$@" >"$tmp/result.$(printf '%03d' $case_no)" 2>&1 ) &
}

# expect_fail NAME GREP_PATTERN COMMANDS...: break a fresh copy with COMMANDS (run in it), then
# the self-check must exit 1 and say GREP_PATTERN.
expect_fail() {
  local name=$1 pat=$2; shift 2
  local d=$tmp/$name out rc
  make_kit "$d"
  (cd "$d" && eval "$*") || { echo "  FAIL  $name: could not break the copy"; return; }
  out=$("$root/harness/scripts/selfcheck.sh" --root "$d" 2>&1); rc=$?
  if [ "$rc" = 1 ] && grep -q -E -- "$pat" <<<"$out"; then
    echo "  ok    $name: caught ($(grep -m 1 -E -- "$pat" <<<"$out" | sed 's/^ *//' | cut -c1-100))"
  else
    echo "  FAIL  $name: exit $rc, wanted 1 with /$pat/; output:"; sed 's/^/        /' <<<"$out" | head -n 20
  fi
}

expect_pass() {
  local name=$1; shift
  local d=$tmp/$name out rc
  make_kit "$d"
  (cd "$d" && eval "$*") || { echo "  FAIL  $name: could not change the copy"; return; }
  out=$("$root/harness/scripts/selfcheck.sh" --root "$d" 2>&1); rc=$?
  if [ "$rc" = 0 ]; then echo "  ok    $name: passes"; else
    echo "  FAIL  $name: exit $rc, wanted 0; output:"; sed 's/^/        /' <<<"$out" | head -n 20
  fi
}

L1=labs/01-blocking-sleep L2=labs/02-client-per-request
echo "selfcheck on a copy of the kit (labs 01, 02):"
run_case expect_pass "intact kit" true
run_case expect_pass "exercise with a comment and a TODO more" \
  "printf '/* TODO: your code here */\n// and here\n\n' >>$L1/exercise.c"
diff_size() {
  local d=$tmp/diffsize out
  make_kit "$d"
  out=$("$root/harness/scripts/selfcheck.sh" --root "$d" 2>&1)
  if grep -q -E 'pitfall <-> solution diff [0-9]+ lines' <<<"$out"; then echo "  ok    prints each lab's pitfall <-> solution diff size"
  else echo "  FAIL  no diff size in: $out"; fi
}
run_case diff_size

run_case expect_fail "exercise code differs" "exercise.c is not pitfall.c plus comments" \
  "printf 'static int extra_code;\n' >>$L1/exercise.c"
run_case expect_fail "exercise string differs" "exercise.c is not pitfall.c plus comments" \
  "sed -i 's/done\\\\n/DONE\\\\n/' $L1/exercise.c && grep -q DONE $L1/exercise.c"
run_case expect_fail "weight names no test" "weight lab01::no_such_test names no test" \
  "sed -i 's/^weight    lab01::requests_overlap 3/weight    lab01::no_such_test 3/' labs/manifest && grep -q no_such_test labs/manifest"
run_case expect_fail "weight in the old form" "is not of the form lab02::" \
  "sed -i '0,/^weight    lab02::\\([a-z_]*\\)/s//weight    client_per_request::\\1/' labs/manifest && grep -q client_per_request:: labs/manifest"
run_case expect_fail "weight of another lab's suite" "is not of the form lab02::" \
  "sed -i '0,/^weight    lab02::/s//weight    lab01::/' labs/manifest"
run_case expect_fail "unknown manifest key" "key 'wieght' is read by nothing" \
  "sed -i 's/^weight    lab01::requests_overlap 3/wieght    lab01::requests_overlap 3/' labs/manifest && grep -q wieght labs/manifest"
run_case expect_fail "README missing" "README.md is missing" "rm $L2/README.md"
run_case expect_fail "lab.h missing" "lab.h is missing" "rm $L1/lab.h"
run_case expect_fail "pitfall missing" "pitfall.c is missing" "rm $L2/pitfall.c"
run_case expect_fail "suite missing" "test.c is missing" "rm $L1/test.c"
run_case expect_fail "solution missing" "solution.c is missing" "rm solutions/02-client-per-request/solution.c"
run_case expect_fail "suite not named labNN" "has no Test\\(lab01," "sed -i 's/Test(lab01,/Test(sleep,/' $L1/test.c"
run_case expect_fail "too few wrong answers" "wrong answers, at least 6 wanted" \
  "ls $L2/wrong/*.c | tail -n +6 | xargs rm -f"
run_case expect_fail "wrong answer without its header" "the first line is not /\\* WRONG:" \
  "w=\$(ls $L1/wrong/*.c | head -n 1); sed -i '1s/.*/\\/* a wrong answer *\\//' \$w"
run_case expect_fail "wrong answer names a missing test" "has no such test" \
  "w=\$(ls $L1/wrong/*.c | head -n 1); sed -i '1s/lab01::[a-z_]*/lab01::nothing_here/' \$w"
run_case expect_fail "README does not link a wrong answer" "does not link wrong/extra_one.c" \
  "cp \$(ls $L1/wrong/*.c | head -n 1) $L1/wrong/extra_one.c"
if [ -f labs/01-blocking-sleep/bench.c ]; then
  run_case expect_fail "bench.c missing" "bench.c is missing" "rm $L2/bench.c"
fi
run_case expect_fail "manifest names a lab with no folder" "does not exist" \
  "printf '\nlab       03-not-here\ntitle     x\n' >>labs/manifest"

wait
cat "$tmp"/result.*
fails=$(cat "$tmp"/result.* | grep -c '^  FAIL')
if [ "$fails" -gt 0 ]; then echo "$fails check(s) failed"; exit 1; fi
echo "all checks passed"
