#!/usr/bin/env bash
# grade-all.sh - grades every submission in a folder (make grade-all SUBMISSIONS=DIR).
#
#   grade-all.sh --submissions DIR [--lab NN]... [--out DIR] [--repeat N] [--san 0|1] [--jobs N]
#                [--build-root DIR] [--kit-ready] [--shard K/M]
#   grade-all.sh --merge --out DIR SHARD_OUT...
#
# Each folder in DIR is one student's submission (laid out as grade.sh --submission accepts) and
# is graded in its own build folder (build/grade/NAME), up to --jobs at a time (default: the
# machine's cores). The kit itself is built once, before.
# Writes OUT/grades.csv (one row per student, one column per lab, then total and max), and per
# student OUT/NAME/results.json, junit.xml, results.tap, summary.txt, grade.log. Default OUT:
# results/grade/all.
#
# --shard K/M grades only every M-th submission from the K-th (K = 1..M, in the order of their
# names), so that M machines (a CI matrix: docs/ci/grade-course.yml) can share a course; each
# shard's OUT holds its students and its own grades.csv. --merge joins the OUTs of all M shards
# into OUT: the students' folders and the grades.csv one unsharded run writes, byte for byte.
# --kit-ready: BUILD-ROOT/_kit is already built (e.g. by an earlier shard on the same machine).
set -uo pipefail
# shellcheck source=../grader/lib.sh
. "$(cd "$(dirname "${BASH_SOURCE[0]}")/../grader" && pwd)/lib.sh"

usage() { gr_usage "$0"; }
usage_error() { echo "grade-all.sh: $*" >&2; usage >&2; exit 2; }

shard_outs=() subs="" out="$GR_ROOT/results/grade/all" jobs=$(nproc 2>/dev/null || echo 2) broot="$GR_ROOT/build/grade"
san=${GRADE_SAN:-1} pass=() shard="" merge=0 kit_ready=0
while [ $# -gt 0 ]; do
  case "$1" in
    --shard) [ $# -ge 2 ] || usage_error "--shard needs K/M"; shard=$2; shift 2 ;;
    --merge) merge=1; shift ;;
    --kit-ready) kit_ready=1; shift ;;
    --submissions) [ $# -ge 2 ] || usage_error "--submissions needs a folder"; subs=$2; shift 2 ;;
    --out) [ $# -ge 2 ] || usage_error "--out needs a folder"; out=$2; shift 2 ;;
    --jobs) [ $# -ge 2 ] || usage_error "--jobs needs a number"; jobs=$2; shift 2 ;;
    --build-root) [ $# -ge 2 ] || usage_error "--build-root needs a folder"; broot=$2; shift 2 ;;
    --san) [ $# -ge 2 ] || usage_error "--san needs 0 or 1"; san=$2; shift 2 ;;
    --lab|--repeat) [ $# -ge 2 ] || usage_error "$1 needs a value"; pass+=("$1" "$2"); shift 2 ;;
    -h|--help) usage; exit 0 ;;
    *) if [ "$merge" = 1 ] && [ -d "$1" ]; then shard_outs+=("$1"); shift; else usage_error "unknown argument '$1'"; fi ;;
  esac
done

# The course CSV from the students' folders in OUT: NAMES in order, the labs any of them was
# graded on as columns in manifest order. The same code writes a run's, a shard's and a merge's.
write_csv() {  # OUT NAME...
  local o=$1 n f csvname l; shift
  local labs_cols cols=()
  labs_cols=$(for n in "$@"; do cat "$o/$n/labs.tsv" 2>/dev/null; done | cut -f1 | LC_ALL=C sort -u)
  for l in $(manifest_labs); do printf '%s\n' "$labs_cols" | grep -qx "$l" && cols+=("$l"); done
  printf 'student'; for l in "${cols[@]}"; do printf ',%s' "$l"; done; printf ',total,max\n'
  for n in "$@"; do
    f="$o/$n/labs.tsv"
    # CSV: a name with a comma or a quote is quoted, its quotes doubled.
    csvname=$n
    case "$n" in *[,\"]*) csvname="\"${n//\"/\"\"}\"" ;; esac
    if [ ! -s "$f" ] || [ -f "$o/$n/grading-failed" ]; then printf '%s' "$csvname"; for l in "${cols[@]}"; do printf ',error'; done; printf ',error,error\n'; continue; fi
    awk -F'\t' -v name="$csvname" -v cols="${cols[*]}" '
      { score[$1] = $2; max[$1] = $3 }
      END {
        k = split(cols, c, " "); printf "%s", name; s = 0; m = 0
        for (i = 1; i <= k; i++) { printf ",%s", ((c[i] in score) ? score[c[i]] : ""); s += score[c[i]]; m += max[c[i]] }
        printf ",%g,%g\n", s, m
      }' "$f"
  done
}

if [ "$merge" = 1 ]; then
  [ ${#shard_outs[@]} -gt 0 ] || usage_error "--merge needs the shards' output folders"
  mkdir -p "$out" || gr_die "cannot create $out"
  total_m="" seen="" course=""
  for d in "${shard_outs[@]}"; do
    [ -f "$d/shard.txt" ] && [ -f "$d/course.names" ] || gr_die "$d is not a shard's output (no shard.txt): grade it with --shard K/M"
    read -r k m <"$d/shard.txt"
    [ -z "$total_m" ] || [ "$m" = "$total_m" ] || gr_die "$d is shard $k of $m, the others are of $total_m"
    total_m=$m
    case " $seen " in *" $k "*) gr_die "shard $k/$m is given twice" ;; esac
    seen="$seen $k"
    [ -z "$course" ] || cmp -s "$course" "$d/course.names" || gr_die "$d graded another list of submissions than ${course%/course.names}"
    course="$d/course.names"
    while IFS= read -r n; do
      [ -d "$d/$n" ] || gr_die "$d (shard $k/$m) has no folder for its student '$n'"
      rm -rf "${out:?}/$n" && cp -a "$d/$n" "$out/$n" || gr_die "cannot copy $d/$n"
    done <"$d/shard.names"
  done
  for ((k = 1; k <= total_m; k++)); do
    case " $seen " in *" $k "*) ;; *) gr_die "shard $k/$total_m is missing: merge all $total_m shards" ;; esac
  done
  mapfile -t names <"$course"
  write_csv "$out" "${names[@]}" >"$out/grades.csv"
  echo "merged ${#shard_outs[@]} shards (${#names[@]} submissions) into ${out#"$GR_ROOT/"}/grades.csv"
  exit 0
fi

[ -n "$subs" ] || usage_error "which folder? make grade-all SUBMISSIONS=DIR"
[ -d "$subs" ] || usage_error "'$subs' is not a folder"
case "$jobs" in ''|*[!0-9]*|0) usage_error "--jobs wants a number of 1 or more" ;; esac
case "$san" in 0|1) ;; *) usage_error "--san wants 0 or 1" ;; esac
mkdir -p "$out" "$broot" || gr_die "cannot create $out or $broot"
out=$(cd "$out" && pwd); broot=$(cd "$broot" && pwd); subs=$(cd "$subs" && pwd)

mapfile -t names < <(find "$subs" -mindepth 1 -maxdepth 1 -type d ! -name '.*' -printf '%f\n' | LC_ALL=C sort)
[ ${#names[@]} -gt 0 ] || gr_die "no submission folders in $subs"
all_names=("${names[@]}")
if [ -n "$shard" ]; then
  case "$shard" in */*) ;; *) usage_error "--shard wants K/M, not '$shard'" ;; esac
  sk=${shard%%/*} sm=${shard#*/}
  case "$sk$sm" in ''|*[!0-9]*) usage_error "--shard wants K/M with numbers, not '$shard'" ;; esac
  [ "$sm" -ge 1 ] && [ "$sk" -ge 1 ] && [ "$sk" -le "$sm" ] || usage_error "--shard K/M wants 1 <= K <= M, not '$shard'"
  names=()
  for ((i = sk - 1; i < ${#all_names[@]}; i += sm)); do names+=("${all_names[$i]}"); done
  printf '%s %s\n' "$sk" "$sm" >"$out/shard.txt"
  printf '%s\n' "${all_names[@]}" >"$out/course.names"
  printf '%s\n' "${names[@]}" >"$out/shard.names"
  echo "shard $sk of $sm: ${#names[@]} of ${#all_names[@]} submissions"
else
  rm -f "$out/shard.txt" "$out/course.names" "$out/shard.names"
fi

# The labs being graded (slugs): the kit is built and sealed for those.
glabs=()
for ((i = 0; i < ${#pass[@]}; i += 2)); do
  if [ "${pass[$i]}" = --lab ]; then for l in ${pass[$((i + 1))]}; do glabs+=("$(gr_resolve "$l")") || exit 2; done; fi
done
[ ${#glabs[@]} -gt 0 ] || mapfile -t glabs < <(gr_labs)

start_s=$(date +%s)
if [ "$kit_ready" = 0 ]; then
echo "building the kit once into $broot/_kit ..."
make -C "$GR_ROOT" -s -k SAN=0 BUILD="$broot/_kit" GRADE_LABS="${glabs[*]}" grade-kit >"$broot/_kit.log" 2>&1 ||
  { echo "grade-all.sh: part of the kit did not build; see $broot/_kit.log" >&2; tail -n 20 "$broot/_kit.log" >&2; }
if [ "$san" = 1 ]; then
  make -C "$GR_ROOT" -s -k SAN=1 BUILD="$broot/_kit-san" GRADE_LABS="${glabs[*]}" GRADE_PERF_KIT= grade-kit >"$broot/_kit-san.log" 2>&1 ||
    echo "grade-all.sh: part of the sanitizer kit did not build; see $broot/_kit-san.log" >&2
fi
fi

# The kit as it is now, by sha256: every student's grading checks it first, so that a kit
# damaged while one student was graded cannot grade the next (harness/grader/kit.sha256, when
# make grade-seal wrote one, is checked instead).
seal="$GR_DIR/kit.sha256" seal_opt=--seal
if [ ! -f "$seal" ]; then
  seal="$broot/kit.seal" seal_opt=--seal-flag
  gr_kit_seal "${glabs[@]}" >"$seal" || gr_die "cannot hash the kit"
fi

echo "grading ${#names[@]} submissions, $jobs at a time ..."
export GR_GRADE="$GR_ROOT/harness/scripts/grade.sh" GR_SUBS="$subs" GR_OUT="$out" GR_BROOT="$broot" GR_SAN="$san" GR_SEAL="$seal" GR_SEAL_OPT="$seal_opt"
export GR_PASS="${pass[*]:-}"
# One grade.sh per student; its own output goes to its own log, one line here when it is done.
printf '%s\0' "${names[@]}" | xargs -0 -P "$jobs" -I{} bash -c '
  n=$1; mkdir -p "$GR_OUT/$n"
  # shellcheck disable=SC2086
  "$GR_GRADE" --submission "$GR_SUBS/$n" --name "$n" --out "$GR_OUT/$n" --build-root "$GR_BROOT" \
    --kit-ready "$GR_SEAL_OPT" "$GR_SEAL" --san "$GR_SAN" $GR_PASS >"$GR_OUT/$n/grade.log" 2>&1
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

# The course CSV (a shard's: its students only).
write_csv "$out" "${names[@]}" >"$out/grades.csv"

echo
column -s, -t <"$out/grades.csv" 2>/dev/null || cat "$out/grades.csv"
echo
echo "graded ${#names[@]} submissions in $(( $(date +%s) - start_s )) s: ${out#"$GR_ROOT/"}/grades.csv; per student: ${out#"$GR_ROOT/"}/NAME/results.json"
if [ -n "$shard" ]; then
  echo "Next: when all $sm shards are done, make grade-merge OUT=DIR SHARDS=\"their OUT folders\""
else
  echo "Next: look at the lowest rows' ${out#"$GR_ROOT/"}/NAME/summary.txt; a timing failure on a correct-looking file: grade it again with REPEAT=3"
fi
