#!/usr/bin/env bash
# check.sh - the learner's check: builds labs/NN-slug/exercise.c with the lab's suite and runs it
# (make check LAB=NN). For each failing test: what it measured, the pitfall it points to, a hint.
#
#   check.sh [--quiet] LAB       LAB is NN or NN-slug; --quiet prints one summary line
#
# Environment: BUILD (default build), SAN=1 to build and run under AddressSanitizer + UBSan.
# Exit status: 0 when every test passes, 1 when one fails or the file does not compile, 2 on usage.
set -uo pipefail
# Two Criterion jobs, as make test runs the suites: quick feedback while working. The grader runs
# one at a time (GR_JOBS=1) so that no test's load skews another's timings.
GR_JOBS=${GR_JOBS:-2}
# shellcheck source=../grader/lib.sh
. "$(cd "$(dirname "${BASH_SOURCE[0]}")/../grader" && pwd)/lib.sh"

usage() { gr_usage "$0"; }
quiet=0 lab=""
while [ $# -gt 0 ]; do
  case "$1" in
    -q|--quiet) quiet=1 ;;
    -h|--help) usage; exit 0 ;;
    -*) echo "check.sh: unknown option '$1'" >&2; usage >&2; exit 2 ;;
    *) [ -z "$lab" ] || { echo "check.sh: one lab at a time" >&2; usage >&2; exit 2; }; lab=$1 ;;
  esac
  shift
done
if [ -z "$lab" ]; then echo "check.sh: which lab? make check LAB=NN" >&2; usage >&2; exit 2; fi
slug=$(gr_resolve "$lab") || exit 2
num=$(gr_num "$slug")
SAN=${SAN:-0}
if [ -z "${BUILD:-}" ]; then if [ "$SAN" = 1 ]; then BUILD=build-san; else BUILD=build; fi; fi
cd "$GR_ROOT" || exit 1
src="labs/$slug/exercise.c"
state="build/learner"  # the learner's state: hints seen, last results (whatever BUILD is)
mkdir -p "$state"

[ -f "labs/$slug/test.c" ] || gr_die "lab $slug has no test.c yet: nothing to check against"
if [ ! -f "$src" ]; then
  echo "check: $src does not exist. Create it from the pitfall with: make reset LAB=$num" >&2
  exit 1
fi

title=$(manifest_get "$slug" title "")
[ "$quiet" = 1 ] || echo "checking $src against labs/$slug/test.c ..."

# 1. Build.
buildlog="$state/$slug.build.log"
if ! LC_ALL=C make -s SAN="$SAN" BUILD="$BUILD" "$BUILD/test/lab$num-exercise" >"$buildlog" 2>&1; then
  echo "$(gr_sha256 "$src") compile 0" >"$state/$slug.status"
  if [ "$quiet" = 1 ]; then echo "$slug: does not compile"; exit 1; fi
  echo
  grep -v -e '^make\(\[[0-9]*\]\)\{0,1\}: ' -e '^  [A-Z][A-Z]*  *[^ ]' "$buildlog" | head -n 40
  echo
  echo "FAIL: $src does not compile. The kit builds with -std=c11 -Wall -Wextra -Werror -pedantic,"
  echo "so a warning stops the build too: fix the first message above, then run make check LAB=$num again."
  exit 1
fi

# 2. Run the suite (each test in its own process, with its own timeout).
json="$state/$slug.json"; log="$state/$slug.log"
gr_run_suite "$BUILD/test/lab$num-exercise" "$json" "$log"
rc=$?
declared=$(gr_declared_tests "labs/$slug/test.c")
total=$(printf '%s\n' "$declared" | grep -c .)
# In the order test.c declares them (Criterion reports in its own order).
results=$(gr_parse "$json" | awk -F'\t' -v order="$declared" '
  BEGIN { n = split(order, o, "\n"); for (i = 1; i <= n; i++) rank[o[i]] = i }
  !($2 == "SKIPPED" && $3 == "The test was skipped.") { print (($1 in rank) ? rank[$1] : 999) "\t" $0 }' |
  sort -n -k1,1 | cut -f2- || true)
passed=$(printf '%s\n' "$results" | awk -F'\t' '$2 == "PASSED"' | grep -c . || true)
if [ -z "$results" ]; then
  echo "check: the suite reported nothing (exit status $rc); its output is in $log" >&2
  [ "$rc" = 124 ] || [ "$rc" = 137 ] && echo "check: it was stopped after ${GR_SUITE_TIMEOUT} s: does your code hang?" >&2
  passed=0
fi
echo "$(gr_sha256 "$src") $passed $total" >"$state/$slug.status"

if [ "$quiet" = 1 ]; then
  if [ "$passed" = "$total" ] && [ "$total" -gt 0 ]; then echo "$slug: done ($total of $total)"; exit 0; fi
  echo "$slug: failing $((total - passed)) of $total"; exit 1
fi

# 3. Explain. The manifest may name the pitfall a test points to (`explain <test> <text>` rows);
# otherwise the lab's own pitfall (its title) is the one.
hints_shown=$(cat "$state/$slug.hints" 2>/dev/null || echo 0)
[ "$hints_shown" -ge 1 ] 2>/dev/null || hints_shown=1
mapfile -t hints < <(manifest_all "$slug" hint)
echo
while IFS=$'\t' read -r t status msg; do
  [ -n "$t" ] || continue
  if [ "$status" = PASSED ]; then printf '  ok    %s\n' "$t"; continue; fi
  printf '  FAIL  %s\n' "$t"
  printf '%s\n' "$(gr_explain "$status" "$msg")" | gr_decode | LC_ALL=C tr -c '\n\40-\176' '?' | fold -s -w 92 | sed 's/^/          /' | sed '1s/^          /    saw:  /'
  short=${t#*/}
  why=$(manifest_all "$slug" explain | awk -v t="$t" -v s="$short" '{ n = $1; gsub(/::/, "/", n) } n == t || n == s { sub(/^[^[:space:]]+[[:space:]]+/, ""); print; exit }')
  printf '    pitfall: %s\n' "${why:-$title (lab $num)}"
  if [ ${#hints[@]} -gt 0 ]; then
    k=$hints_shown; [ "$k" -le ${#hints[@]} ] || k=${#hints[@]}
    printf '%s\n' "${hints[$((k - 1))]}" | fold -s -w 92 | sed 's/^/          /' | sed "1s/^          /    hint $k\/${#hints[@]}: /"
  fi
done <<<"$results"
if [ "$SAN" = 1 ] && grep -q -E 'ERROR: (AddressSanitizer|LeakSanitizer)|runtime error:' "$log"; then
  echo
  echo "  The sanitizers reported a memory error (first lines; the whole report is in $log):"
  report=$(gr_sanitizer_report "$log" 1)   # one that involves your file first
  [ -n "$report" ] || report=$(gr_sanitizer_report "$log")
  printf '%s\n' "$report" | sed 's/^/    /'
  passed=-1
fi
echo
if [ "$passed" = "$total" ] && [ "$total" -gt 0 ]; then
  echo "PASS: all $total tests of lab $num pass."
  echo "Next:"
  [ "$SAN" = 1 ] || echo "  make check LAB=$num SAN=1                        the same under AddressSanitizer + UBSan"
  echo "  make bench LAB=$num VARIANTS=\"pitfall exercise\"   see the difference under load (results/$slug/)"
  next=$(gr_labs | awk -v cur="$slug" 'found { print; exit } $0 == cur { found = 1 }')
  if [ -n "$next" ]; then echo "  make check LAB=$(gr_num "$next")                              the next lab: labs/$next/README.md"
  else echo "  make progress                                   every lab at a glance"; fi
  exit 0
fi
if [ "$passed" -ge 0 ]; then echo "FAIL: $passed of $total tests pass."; fi
echo "Next: read labs/$slug/README.md, fix $src, then make check LAB=$num again"
echo "      (make hint LAB=$num for one more hint, make watch LAB=$num to re-check on every save)."
exit 1
