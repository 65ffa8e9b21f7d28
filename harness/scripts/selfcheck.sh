#!/usr/bin/env bash
# selfcheck.sh - the kit checks its own rules (make test runs it; rustlings' `dev check`):
#   - every lab in labs/manifest has README.md, lab.h, pitfall.c, exercise.c, test.c,
#     solutions/NN-slug/solution.c, at least 6 wrong answers in wrong/, and bench.c
#     (bench.c is required once labs/01-blocking-sleep/bench.c exists: the worked example);
#   - exercise.c is its pitfall.c plus comments (TODO markers): the same code once comments and
#     blank space are stripped (by the C preprocessor, so strings are left alone);
#   - every wrong/<name>.c opens with  /* WRONG: <rule> -- caught by: labNN::<test> */  naming a
#     test of its lab's test.c, and the lab's README links it (wrong/<name>.c);
#   - every manifest weight row is `weight labNN::<test> <points>` naming a test that exists,
#     and every manifest key is one its readers know (the common keys below, or a key a bench
#     script or bench.c reads);
#   and prints each lab's pitfall <-> solution diff size (changed lines: the lesson's size).
#
#   selfcheck.sh [--root DIR] [-q]   DIR: the kit to check (default: this one)
# Exit status: 0 when every rule holds, 1 when one is broken (each is listed), 2 on usage.
set -uo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
quiet=0
usage() { sed -n '2,16p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; }
while [ $# -gt 0 ]; do
  case "$1" in
    --root) [ $# -ge 2 ] || { echo "selfcheck.sh: --root needs a directory" >&2; usage >&2; exit 2; }
            root=$(cd "$2" 2>/dev/null && pwd) || { echo "selfcheck.sh: no directory $2" >&2; exit 2; }
            shift ;;
    -q|--quiet) quiet=1 ;;
    -h|--help) usage; exit 0 ;;
    *) echo "selfcheck.sh: unknown option '$1'" >&2; usage >&2; exit 2 ;;
  esac
  shift
done
cd "$root" || exit 2
MANIFEST=$root/labs/manifest
[ -f "$MANIFEST" ] || { echo "selfcheck: no labs/manifest in $root" >&2; exit 1; }
CC=${CC:-cc}
MIN_WRONG=6
# Keys every reader of the manifest shares (labs/manifest's header documents them).
COMMON_KEYS="lab title args upstream scenario loads conns step_s path weight hint explain"
# Where a scenario-specific key may be read: the bench scripts and the bench programs.
READERS=$(ls harness/scripts/*.sh harness/bench/*.c harness/bench/*.h labs/[0-9][0-9]-*/bench.c harness/grader/*.sh harness/grader/*.awk 2>/dev/null | grep -v '/selfcheck\.sh$')

problems=0
if [ -t 1 ]; then G=$'\e[32m' R=$'\e[31m' D=$'\e[2m' N=$'\e[0m'; else G="" R="" D="" N=""; fi
bad() { problems=$((problems + 1)); lab_bad+=("$1"); }

# C code without comments, blank lines or layout: what the compiler sees.
code_of() { "$CC" -fpreprocessed -dD -E -P "$1" 2>/dev/null | tr -s ' \t' ' ' | sed 's/^ //; s/ $//' | grep -v '^$'; }

labs=$(awk '$1 == "lab" { print $2 }' "$MANIFEST")
bench_required=0
[ -f labs/01-blocking-sleep/bench.c ] && bench_required=1

# ---- the manifest: keys and weights ----
man_bad=()
declare -A key_known=()
while read -r lineno key; do
  case " $COMMON_KEYS " in *" $key "*) continue ;; esac
  if [ -z "${key_known[$key]:-}" ]; then
    key_known[$key]=no
    if [ -n "$READERS" ] && grep -q -w -- "$key" $READERS 2>/dev/null; then key_known[$key]=yes; fi
  fi
  [ "${key_known[$key]}" = yes ] && continue
  man_bad+=("labs/manifest:$lineno: key '$key' is read by nothing (a typo? known: $COMMON_KEYS, or a key a bench script or bench.c reads)")
done < <(awk '!/^[[:space:]]*#/ && NF > 0 { print NR, $1 }' "$MANIFEST")
cur=""
while read -r lineno first rest; do
  if [ "$first" = lab ]; then cur=${rest%% *}; continue; fi
  [ "$first" = weight ] || continue
  name=${rest%% *} points=${rest#* }
  num=${cur%%-*}
  if ! [[ $name =~ ^lab([0-9][0-9])::([A-Za-z_][A-Za-z0-9_]*)$ ]] || [ "${BASH_REMATCH[1]}" != "$num" ]; then
    man_bad+=("labs/manifest:$lineno: weight '$name' is not of the form lab$num::<test> (lab $cur)"); continue
  fi
  test=${BASH_REMATCH[2]}
  [[ $points =~ ^[0-9]+$ ]] || man_bad+=("labs/manifest:$lineno: weight $name: points '$points' is not a whole number")
  if ! grep -q -E "^[[:space:]]*Test\(lab$num, *$test[,)]" "labs/$cur/test.c" 2>/dev/null; then
    man_bad+=("labs/manifest:$lineno: weight $name names no test of labs/$cur/test.c")
  fi
done < <(awk '!/^[[:space:]]*#/ && NF > 0 { $1 = $1; print NR, $0 }' "$MANIFEST")
if [ ${#man_bad[@]} -gt 0 ]; then
  problems=$((problems + ${#man_bad[@]}))
  echo "  ${R}labs/manifest${N}"
  for m in "${man_bad[@]}"; do echo "    ${R}$m${N}"; done
fi

# ---- each lab ----
for lab in $labs; do
  num=${lab%%-*}
  lab_bad=()
  d=labs/$lab
  if [ ! -d "$d" ]; then bad "labs/manifest names $lab, but $d does not exist"; fi
  for f in README.md lab.h pitfall.c exercise.c test.c; do
    [ -f "$d/$f" ] || bad "$d/$f is missing"
  done
  [ -f "solutions/$lab/solution.c" ] || bad "solutions/$lab/solution.c is missing"
  if [ "$bench_required" = 1 ] && [ ! -f "$d/bench.c" ]; then bad "$d/bench.c is missing (every lab has its bench scenario once lab 01's exists)"; fi
  [ -f "$d/test.c" ] && ! grep -q -E "^[[:space:]]*Test\(lab$num," "$d/test.c" && bad "$d/test.c has no Test(lab$num, ...): suites are named lab$num"

  # exercise.c = pitfall.c + comments
  if [ -f "$d/pitfall.c" ] && [ -f "$d/exercise.c" ]; then
    if ! cmp -s <(code_of "$d/pitfall.c") <(code_of "$d/exercise.c"); then
      first=$(diff <(code_of "$d/pitfall.c") <(code_of "$d/exercise.c") | grep -m 1 '^[<>]')
      bad "$d/exercise.c is not pitfall.c plus comments: the code differs (first: $first)"
    fi
  fi

  # the gallery
  shopt -s nullglob
  wrongs=("$d"/wrong/*.c)
  shopt -u nullglob
  [ ${#wrongs[@]} -ge $MIN_WRONG ] || bad "$d/wrong/ has ${#wrongs[@]} wrong answers, at least $MIN_WRONG wanted"
  for w in "${wrongs[@]}"; do
    wn=$(basename "$w")
    first=$(head -n 1 "$w")
    if ! [[ $first =~ ^/\*\ WRONG:\ (.+)\ --\ caught\ by:\ (lab[0-9][0-9])::([A-Za-z_][A-Za-z0-9_]*)\ \*/$ ]]; then
      bad "$w: the first line is not /* WRONG: <rule> -- caught by: lab$num::<test> */"; continue
    fi
    if [ "${BASH_REMATCH[2]}" != "lab$num" ]; then bad "$w names suite ${BASH_REMATCH[2]}, not lab$num"; continue; fi
    t=${BASH_REMATCH[3]}
    grep -q -E "^[[:space:]]*Test\(lab$num, *$t[,)]" "$d/test.c" 2>/dev/null || bad "$w: caught by lab$num::$t, but $d/test.c has no such test"
    grep -q -F "wrong/$wn" "$d/README.md" 2>/dev/null || bad "$d/README.md does not link wrong/$wn (its \"Wrong fixes people write\" section lists the gallery)"
  done

  size="?"
  if [ -f "$d/pitfall.c" ] && [ -f "solutions/$lab/solution.c" ]; then
    size=$(diff "$d/pitfall.c" "solutions/$lab/solution.c" | grep -c '^[<>]')
  fi
  if [ ${#lab_bad[@]} -eq 0 ]; then
    [ "$quiet" = 1 ] || printf '  %slab %s %-26s%s ok: %d wrong answers, pitfall <-> solution diff %s lines\n' "$G" "$num" "$lab" "$N" "${#wrongs[@]}" "$size"
  else
    printf '  %slab %s %-26s%s %d problem(s); pitfall <-> solution diff %s lines\n' "$R" "$num" "$lab" "$N" "${#lab_bad[@]}" "$size"
    for m in "${lab_bad[@]}"; do echo "    ${R}$m${N}"; done
  fi
done
[ "$bench_required" = 1 ] || echo "  ${D}(bench.c not required yet: labs/01-blocking-sleep/bench.c does not exist)${N}"

if [ "$problems" -gt 0 ]; then
  echo "selfcheck: $problems rule(s) broken"
  exit 1
fi
[ "$quiet" = 1 ] || echo "selfcheck: every rule holds"
exit 0
