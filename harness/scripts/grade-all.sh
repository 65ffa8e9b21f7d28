#!/usr/bin/env bash
# grade-all.sh - grades every submission in a folder (make grade-all SUBMISSIONS=DIR).
#
#   grade-all.sh --submissions DIR [--lab NN]... [--out DIR] [--repeat N] [--san 0|1] [--jobs N]
#                [--build-root DIR]
#
# Each folder in DIR is one student's submission (laid out as grade.sh --submission accepts) and
# is graded in its own build folder (build/grade/NAME), up to --jobs at a time (default: the
# machine's cores). The kit itself is built once, before.
# Writes OUT/grades.csv (one row per student, one column per lab, then total and max), and per
# student OUT/NAME/results.json, junit.xml, results.tap, summary.txt, grade.log. Default OUT:
# results/grade/all.
set -uo pipefail
# shellcheck source=../grader/lib.sh
. "$(cd "$(dirname "${BASH_SOURCE[0]}")/../grader" && pwd)/lib.sh"

usage() { gr_usage "$0"; }
usage_error() { echo "grade-all.sh: $*" >&2; usage >&2; exit 2; }

subs="" out="$GR_ROOT/results/grade/all" jobs=$(nproc 2>/dev/null || echo 2) broot="$GR_ROOT/build/grade"
san=${GRADE_SAN:-1} pass=()
while [ $# -gt 0 ]; do
  case "$1" in
    --submissions) [ $# -ge 2 ] || usage_error "--submissions needs a folder"; subs=$2; shift 2 ;;
    --out) [ $# -ge 2 ] || usage_error "--out needs a folder"; out=$2; shift 2 ;;
    --jobs) [ $# -ge 2 ] || usage_error "--jobs needs a number"; jobs=$2; shift 2 ;;
    --build-root) [ $# -ge 2 ] || usage_error "--build-root needs a folder"; broot=$2; shift 2 ;;
    --san) [ $# -ge 2 ] || usage_error "--san needs 0 or 1"; san=$2; shift 2 ;;
    --lab|--repeat) [ $# -ge 2 ] || usage_error "$1 needs a value"; pass+=("$1" "$2"); shift 2 ;;
    -h|--help) usage; exit 0 ;;
    *) usage_error "unknown argument '$1'" ;;
  esac
done
[ -n "$subs" ] || usage_error "which folder? make grade-all SUBMISSIONS=DIR"
[ -d "$subs" ] || usage_error "'$subs' is not a folder"
case "$jobs" in ''|*[!0-9]*|0) usage_error "--jobs wants a number of 1 or more" ;; esac
case "$san" in 0|1) ;; *) usage_error "--san wants 0 or 1" ;; esac
mkdir -p "$out" "$broot" || gr_die "cannot create $out or $broot"
out=$(cd "$out" && pwd); broot=$(cd "$broot" && pwd); subs=$(cd "$subs" && pwd)

mapfile -t names < <(find "$subs" -mindepth 1 -maxdepth 1 -type d ! -name '.*' -printf '%f\n' | LC_ALL=C sort)
[ ${#names[@]} -gt 0 ] || gr_die "no submission folders in $subs"

start_s=$(date +%s)
echo "building the kit once into $broot/_kit ..."
make -C "$GR_ROOT" -s -k SAN=0 BUILD="$broot/_kit" grade-kit >"$broot/_kit.log" 2>&1 ||
  { echo "grade-all.sh: part of the kit did not build; see $broot/_kit.log" >&2; tail -n 20 "$broot/_kit.log" >&2; }
if [ "$san" = 1 ]; then
  make -C "$GR_ROOT" -s -k SAN=1 BUILD="$broot/_kit-san" grade-kit >"$broot/_kit-san.log" 2>&1 ||
    echo "grade-all.sh: part of the sanitizer kit did not build; see $broot/_kit-san.log" >&2
fi

echo "grading ${#names[@]} submissions, $jobs at a time ..."
export GR_GRADE="$GR_ROOT/harness/scripts/grade.sh" GR_SUBS="$subs" GR_OUT="$out" GR_BROOT="$broot" GR_SAN="$san"
export GR_PASS="${pass[*]:-}"
# One grade.sh per student; its own output goes to its own log, one line here when it is done.
printf '%s\0' "${names[@]}" | xargs -0 -P "$jobs" -I{} bash -c '
  n=$1; mkdir -p "$GR_OUT/$n"
  # shellcheck disable=SC2086
  "$GR_GRADE" --submission "$GR_SUBS/$n" --name "$n" --out "$GR_OUT/$n" --build-root "$GR_BROOT" \
    --kit-ready --san "$GR_SAN" $GR_PASS >"$GR_OUT/$n/grade.log" 2>&1
  rc=$?
  total=$(awk -F"\t" "{ s += \$2; m += \$3 } END { if (NR) printf \"%g of %g\", s, m }" "$GR_OUT/$n/labs.tsv" 2>/dev/null)
  if [ "$rc" != 0 ]; then
    # Not this student'"'"'s score: the grader (or the kit) failed. The CSV says "error".
    echo "$rc" >"$GR_OUT/$n/grading-failed"
    total="grading failed (exit $rc), see $GR_OUT/$n/grade.log"
  else
    rm -f "$GR_OUT/$n/grading-failed"
  fi
  echo "  $n: ${total:-no result, see $GR_OUT/$n/grade.log}"
' _ {}

# The course CSV: the labs any submission was graded on, in manifest order.
labs_cols=$(cat "$out"/*/labs.tsv 2>/dev/null | cut -f1 | LC_ALL=C sort -u)
cols=()
for l in $(manifest_labs); do printf '%s\n' "$labs_cols" | grep -qx "$l" && cols+=("$l"); done
{
  printf 'student'; for l in "${cols[@]}"; do printf ',%s' "$l"; done; printf ',total,max\n'
  for n in "${names[@]}"; do
    f="$out/$n/labs.tsv"
    # CSV: a name with a comma or a quote is quoted, its quotes doubled.
    csvname=$n
    case "$n" in *[,\"]*) csvname="\"${n//\"/\"\"}\"" ;; esac
    if [ ! -s "$f" ] || [ -f "$out/$n/grading-failed" ]; then printf '%s' "$csvname"; for l in "${cols[@]}"; do printf ',error'; done; printf ',error,error\n'; continue; fi
    awk -F'\t' -v name="$csvname" -v cols="${cols[*]}" '
      { score[$1] = $2; max[$1] = $3 }
      END {
        k = split(cols, c, " "); printf "%s", name; s = 0; m = 0
        for (i = 1; i <= k; i++) { printf ",%s", ((c[i] in score) ? score[c[i]] : ""); s += score[c[i]]; m += max[c[i]] }
        printf ",%g,%g\n", s, m
      }' "$f"
  done
} >"$out/grades.csv"

echo
column -s, -t <"$out/grades.csv" 2>/dev/null || cat "$out/grades.csv"
echo
echo "graded ${#names[@]} submissions in $(( $(date +%s) - start_s )) s: ${out#"$GR_ROOT/"}/grades.csv; per student: ${out#"$GR_ROOT/"}/NAME/results.json"
echo "Next: look at the lowest rows' ${out#"$GR_ROOT/"}/NAME/summary.txt; a timing failure on a correct-looking file: grade it again with REPEAT=3"
