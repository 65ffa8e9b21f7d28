#!/usr/bin/env bash
# perfcheck.sh - do the performance rows hold? Grades the kit's own solution and pitfall, as if
# they were a student's exercise.c, N times each with only the build and the performance rows
# (grade.sh --perf-only: always measured, no suites), with K spinning processes keeping the
# cores busy, and counts per lab how often the solution got full marks on its performance rows
# and the pitfall 0.
#
#   harness/grader/perfcheck.sh [--runs N] [--spin K] [--lab NN]... [--build-root DIR] [--out DIR]
#                               [--kit-ready]
#
#   --runs N          rounds (default 10); each grades the solution, then the pitfall
#   --spin K          busy loops beside it (default: one per core): a loaded machine
#   --lab NN          only this lab (repeatable; default: every lab with a perf row)
#   --build-root DIR  grade.sh's build folders (default build/grade)
#   --kit-ready       DIR/_kit is built already (two perfchecks side by side must not both build it)
#   --out DIR         reports (default results/grade/perfcheck): RUN-{solution,pitfall}/ and
#                     perfcheck.tsv (lab, round, variant, score, max, figures)
# Prints one line per lab: "01-blocking-sleep  solution full 10/10  pitfall 0 10/10". Exit 0
# when the solution was full and the pitfall 0 in every round, 1 otherwise, 2 on a usage error.
set -uo pipefail
. "$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/lib.sh"

runs=10 spin=$(nproc 2>/dev/null || echo 2) labs=() broot="$GR_ROOT/build/grade" out="$GR_ROOT/results/grade/perfcheck" ready=()
while [ $# -gt 0 ]; do
  case "$1" in
    --runs) runs=${2:-}; shift 2 ;;
    --spin) spin=${2:-}; shift 2 ;;
    --lab) labs+=("${2:-}"); shift 2 ;;
    --build-root) broot=${2:-}; shift 2 ;;
    --out) out=${2:-}; shift 2 ;;
    --kit-ready) ready=(--kit-ready); shift ;;
    -h|--help) gr_usage "$0"; exit 0 ;;
    *) echo "perfcheck.sh: unknown argument '$1'" >&2; gr_usage "$0" >&2; exit 2 ;;
  esac
done
case "$runs$spin" in *[!0-9]*|'') echo "perfcheck.sh: --runs and --spin want numbers" >&2; exit 2 ;; esac
if [ ${#labs[@]} -eq 0 ]; then
  for l in $(gr_labs); do [ -n "$(manifest_all "$l" perf)" ] && labs+=("$l"); done
fi
slugs=()
for l in "${labs[@]}"; do slugs+=("$(gr_resolve "$l")") || exit 2; done
mkdir -p "$out" || exit 1
out=$(cd "$out" && pwd)
tree="$out/trees"
rm -rf "$tree"
for s in "${slugs[@]}"; do
  mkdir -p "$tree/solution/labs/$s" "$tree/pitfall/labs/$s"
  cp "$GR_ROOT/solutions/$s/solution.c" "$tree/solution/labs/$s/exercise.c"
  cp "$GR_ROOT/labs/$s/pitfall.c" "$tree/pitfall/labs/$s/exercise.c"
done

spinners=()
stop_spinners() { local p; for p in "${spinners[@]}"; do kill "$p" 2>/dev/null; done; spinners=(); }
trap stop_spinners EXIT
for ((i = 0; i < spin; i++)); do sh -c 'while :; do :; done' & spinners+=($!); done
echo "perfcheck: ${#slugs[@]} lab(s), $runs round(s), $spin spinner(s) (pids ${spinners[*]}); load $(cut -d' ' -f1-3 /proc/loadavg)"

tsv="$out/perfcheck.tsv"
printf 'lab\tround\tvariant\tscore\tmax\tfigures\n' >"$tsv"
lab_args=(); for s in "${slugs[@]}"; do lab_args+=(--lab "$s"); done
t0=$(date +%s)
for ((r = 1; r <= runs; r++)); do
  for v in solution pitfall; do
    d="$out/$r-$v"
    "$GR_ROOT/harness/scripts/grade.sh" --perf-only --quiet "${ready[@]}" "${lab_args[@]}" --submission "$tree/$v" \
      --name "perfcheck-$(basename "$out")-$v" --build-root "$broot" --out "$d" >"$d.log" 2>&1 ||
      echo "perfcheck: grade.sh failed for $v in round $r (see $d.log)" >&2
    awk -F'\t' -v r="$r" -v v="$v" -v OFS='\t' '$2 ~ /^performance: / {
        s[$1] += ($6 == "passed" ? $3 : 0); m[$1] += $3
        msg = $8; sub(/\\n.*/, "", msg); f[$1] = f[$1] (f[$1] == "" ? "" : "; ") msg }
      END { for (l in m) print l, r, v, s[l], m[l], f[l] }' "$d/rows.tsv" 2>/dev/null >>"$tsv"
  done
  echo "perfcheck: round $r of $runs done ($(( $(date +%s) - t0 )) s, load $(cut -d' ' -f1 /proc/loadavg))"
done
stop_spinners

fail=0
for s in "${slugs[@]}"; do
  line=$(awk -F'\t' -v l="$s" '$1 == l && $3 == "solution" { n++; if ($4 == $5) full++ }
    $1 == l && $3 == "pitfall" { p++; if ($4 == 0) zero++ }
    END { printf "%-28s solution full %d/%d  pitfall 0 %d/%d", l, full, n, zero, p; exit !(n > 0 && full == n && p > 0 && zero == p) }' "$tsv") || fail=1
  echo "$line"
done
echo "perfcheck: $(( $(date +%s) - t0 )) s; per-run figures in ${tsv#"$GR_ROOT/"}"
exit "$fail"
