#!/usr/bin/env bash
# grade.sh - the grader's and the learner loop's self-test (run by make test).
#
# Grades lab 01 only, with sample submissions: correct (also uploaded as one file to the
# Gradescope bundle), pitfall, and tamper (the pitfall plus a test.c loosened so it would pass),
# built here from the kit so they never drift, and crash, hang, nocompile, garbage, uaf
# (harness/tests/submissions/).
# Checks the CSV, every results.json against Gradescope's fields (gscheck), JUnit and TAP, the
# sanitizer row, the performance rows (html with plots, leaderboard, perfscore), REPEAT, the student handout (no solutions; check fails, hint, fix, check passes,
# reset, progress) and the Gradescope bundle run in a scratch /autograder.
# The kit is built once into $BUILD/grade-selftest/ and reused by later runs.
set -uo pipefail
cd "$(dirname "$0")/../.." || exit 1
ROOT=$PWD
BUILD=${BUILD:-build}
case "$BUILD" in /*) ;; *) BUILD="$ROOT/$BUILD" ;; esac
broot="$BUILD/grade-selftest"
T=$(mktemp -d "${TMPDIR:-/tmp}/loopholes-grade-test.XXXXXX") || exit 1
trap '[ -n "${KEEP:-}" ] || rm -rf "$T"' EXIT
# Two Criterion jobs, and a 6 s cap per test so the hanging sample costs seconds, not minutes.
export GR_JOBS=2 GR_TEST_TIMEOUT=6 GR_SUITE_TIMEOUT=90
L=01-blocking-sleep

fails=0 t0=$(date +%s)
ok() { echo "ok    $*"; }
bad() { echo "FAIL  $*"; fails=$((fails + 1)); }
section() { echo "== $* [$(( $(date +%s) - t0 )) s]"; }
check() {  # DESCRIPTION COMMAND...
  local d=$1; shift
  if "$@" >/dev/null 2>&1; then ok "$d"; else bad "$d"; fi
}
field() {  # CSV NAME COLUMN -> value
  awk -F, -v n="$2" -v c="$3" 'NR == 1 { for (i = 1; i <= NF; i++) col[$i] = i; next } $1 == n { print $(col[c]) }' "$1"
}
row_of() {  # ROWS.TSV NAME-PATTERN -> the rows whose name matches
  awk -F'\t' -v p="$2" '$2 ~ p' "$1"
}

# First run: make test has just built the library, tools and test objects into $BUILD; start the
# kit from them instead of compiling everything again (plain or sanitizer kit, as $BUILD is).
build_san=0
if [ -f "$BUILD/lib/libloopholes.a" ]; then
  kit="$broot/_kit"
  # Not "nm | grep -q": under pipefail, grep quitting early makes nm's SIGPIPE the pipeline's status.
  case "$(nm "$BUILD/lib/libloopholes.a" 2>/dev/null)" in *__asan_*) kit="$broot/_kit-san" build_san=1 ;; esac
  if [ ! -d "$kit" ]; then
    mkdir -p "$kit" && cp -a "$BUILD/lib" "$BUILD/bin" "$BUILD/obj" "$kit/" 2>/dev/null
    rm -f "$kit"/obj/labs/*/exercise.[od] "$kit"/obj/labs/*/pitfall.[od] "$kit"/obj/labs/*/solution.[od] \
      "$kit"/obj/labs/*/glue-pitfall* "$kit"/obj/labs/*/glue-solution* "$kit"/bin/lab[0-9]*
  fi
fi
# From here on every command runs as a user would type it: no SAN=1 or other variables handed
# down by the make test that started this script (they would turn the plain kit into a sanitizer one).
unset MAKEFLAGS MFLAGS MAKELEVEL SAN
make -s SAN="$build_san" BUILD="$BUILD" "$BUILD/grader/gscheck" >"$T/tools.log" 2>&1 ||
  { cat "$T/tools.log"; echo "FAIL  cannot build the grader's tools"; exit 1; }
GS="$BUILD/grader/gscheck"

# ---- 1. a folder of submissions, graded in parallel ----
section "make grade-all: pitfall, tamper, crash, hang, nocompile, garbage"
subs="$T/subs"
# tamper: the pitfall, with a test.c loosened so that the pitfall would pass it. The grader must
# report the edit and grade with the kit's own test.c (so the pitfall still loses its points).
mkdir -p "$subs/tamper/labs/$L" "$subs/pitfall/labs/$L"
cp "labs/$L/pitfall.c" "$subs/pitfall/labs/$L/exercise.c"
cp "labs/$L/pitfall.c" "$subs/tamper/labs/$L/exercise.c"
sed -e 's/serial_ms \/ 4/serial_ms * 4/' -e 's/2\.0 \* DELAY_MS/200.0 * DELAY_MS/' "labs/$L/test.c" >"$subs/tamper/labs/$L/test.c"
cmp -s "labs/$L/test.c" "$subs/tamper/labs/$L/test.c" && echo "// edited" >>"$subs/tamper/labs/$L/test.c"
cp -r harness/tests/submissions/crash harness/tests/submissions/hang harness/tests/submissions/nocompile \
  harness/tests/submissions/garbage "$subs/"

harness/scripts/grade-all.sh --submissions "$subs" --lab 01 --san 0 --jobs 2 --out "$T/all" \
  --build-root "$broot" >"$T/all.log" 2>&1
rc=$?
check "grade-all exits 0 (exit $rc)" test "$rc" = 0
csv="$T/all/grades.csv"
check "grades.csv has a header and 6 students" test "$(head -n 1 "$csv" 2>/dev/null)" = "student,$L,total,max" -a "$(wc -l <"$csv" 2>/dev/null)" = 7
max=$(field "$csv" tamper max)
p=$(field "$csv" tamper total)
check "tamper: graded with the kit's test.c, the pitfall loses the timing tests ($p of $max)" awk -v p="$p" -v m="$max" 'BEGIN { exit !(p != "" && m > 0 && p + 0 < m / 2) }'
pp=$(field "$csv" pitfall total)
check "pitfall loses the timing tests ($pp of $max)" awk -v p="$pp" -v m="$max" 'BEGIN { exit !(p != "" && p + 0 < m / 2) }'
check "tamper scores no more than the same pitfall without the edit ($p vs $pp)" awk -v a="$p" -v b="$pp" 'BEGIN { exit !(a != "" && b != "" && a + 0 <= b + 0) }'
check "tamper: the edited test.c is reported" sh -c "awk -F'\t' '\$2 ~ /^integrity: test.c/ && \$8 ~ /edited/' '$T/all/tamper/rows.tsv' | grep -q ."
check "tamper: the failures carry the measured figure" grep -q -E 'took [0-9]+ ms|loop lag [0-9]+ ms' "$T/all/tamper/rows.tsv"
check "nocompile scores 0" test "$(field "$csv" nocompile total)" = 0
check "nocompile is out of as many points as the others ($(field "$csv" nocompile max) of $max)" test "$(field "$csv" nocompile max)" = "$max"
check "nocompile's build row quotes the compiler" sh -c "awk -F'\t' '\$2 ~ /^build/ && \$6 == \"failed\" && \$8 ~ /error/' '$T/all/nocompile/rows.tsv' | grep -q ."
check "crash: its tests fail as crashes" grep -q 'crashed' "$T/all/crash/rows.tsv"
check "crash: scores 0 on the tests" test "$(field "$csv" crash total)" = 0
check "hang: the tests that ask for a long delay time out and fail, the others pass" sh -c "awk -F'\t' '\$6 == \"failed\" && \$2 !~ /^(integrity|performance)/ { n++; if (\$8 ~ /timed out|no answer/) t++ } \$6 == \"passed\" { p++ } END { exit !(n >= 1 && t == n && p >= 5) }' '$T/all/hang/rows.tsv'"
check "garbage: the answer it quoted is in the report, its bytes made harmless" sh -c "grep -q 'GET /work answered' '$T/all/garbage/rows.tsv' && test -z \"\$(LC_ALL=C tr -d '\\11\\12\\40-\\176' <'$T/all/garbage/rows.tsv')\""
check "garbage: the fake result lines it printed were not taken for results" sh -c "awk -F'\t' '\$2 == \"lab01/waits_the_full_delay\" && \$6 == \"failed\"' '$T/all/garbage/rows.tsv' | grep -q ."
for n in pitfall tamper crash hang nocompile garbage; do
  d="$T/all/$n"
  check "$n: results.json validates against Gradescope's fields" "$GS" "$d/results.json"
  nrows=$(wc -l <"$d/rows.tsv")
  check "$n: JUnit XML has one testcase per row, classname per lab" test "$(grep -c "<testcase classname=\"loopholes.$L\"" "$d/junit.xml")" = "$nrows"
  check "$n: TAP plan matches its results" test "$(grep -c -E '^(not )?ok [0-9]+ - ' "$d/results.tap")" = "$nrows" -a "$(sed -n 2p "$d/results.tap")" = "1..$nrows"
done
"$GS" "$T/all/crash/results.json" 2>&1 | grep -q "score 0 of $max" && ok "gscheck reads the crash's score" || bad "gscheck reads the crash's score"

# ---- 1b. the hostile gallery: submissions that attack the grader instead of solving the lab ----
section "hostile gallery (harness/tests/submissions/hostile/), graded in the sandbox"
HG=harness/tests/submissions/hostile H="$T/hostile"
mkdir -p "$H/subs" "$H/out"
# Each case is its attack.c on top of the lab's pitfall or solution (its first line says which),
# written here so that it never drifts from them. The attacker knows the grading machine's paths:
# KIT_REAL is this kit, KIT_ROOT a copy of its sources (a decoy no other helper edits meanwhile,
# so its hash must not change at all) outside the sandbox like the kit itself.
compose() {  # CASE
  local f="$HG/$1.c" base src d="$H/subs/$1/labs/$L"
  base=$(sed -n '1s/.*-- base: \([a-z]*\).*/\1/p' "$f")
  mkdir -p "$d"
  { printf '#define KIT_ROOT "%s"\n#define KIT_REAL "%s"\n#define KIT_SOLUTION "%s/solutions/%s/solution.c"\n' "$H/kit" "$ROOT" "$ROOT" "$L"
    case "$base" in
      solution|pitfall)
        src="labs/$L/pitfall.c"; [ "$base" = solution ] && src="solutions/$L/solution.c"
        printf '#define lab_create hostile_base_lab_create\n#define lab_destroy hostile_base_lab_destroy\n#line 1 "%s"\n' "$base.c"
        cat "$src"
        printf '#undef lab_create\n#undef lab_destroy\n#line 1 "%s.c"\n' "$1" ;;
    esac
    cat "$f"; } >"$d/exercise.c"
}
mkdir -p "$H/kit/results/grade" && cp -a labs solutions harness "$H/kit/" 2>/dev/null
kit_hash() {  # the decoy's files (and their list), and the ready kit every submission links
  { find "$H/kit" -print | LC_ALL=C sort
    find "$H/kit" "$broot/_kit" "$broot/_kit-san" -type f ! -name '*.log' -print0 2>/dev/null | LC_ALL=C sort -z | xargs -0 sha256sum; } | sha256sum | cut -c1-16
}
real_hash() { sha256sum labs/manifest labs/$L/* solutions/$L/* 2>/dev/null | sha256sum | cut -c1-16; }
real_before=$(real_hash)
# Processes of each case's own sandbox uid that outlived their suite, and that still ran when its
# grading ended (grade.sh counts them while it still holds that uid, so that the gradings other
# people run on this machine at the same time are not counted).
sandbox_procs() { cat "$H"/out/*/logs/sandbox.txt 2>/dev/null | awk '$1 == "outlived" || $1 == "alive_at_end" { n += $2 } END { print n + 0 }'; }
mapfile -t hcases < <(cd "$HG" && ls ./*.c | sed 's|^\./||; s|\.c$||')
for c in "${hcases[@]}"; do compose "$c"; done
# The forger is graded with the sanitizer row too (below, --kit-ready): on a fresh clone nothing
# has built the SAN kit yet, and four cases building it at once would race.
[ -d "$broot/_kit-san" ] || make -s -k SAN=1 BUILD="$broot/_kit-san" GRADE_LABS="$L" grade-kit \
  >"$broot/_kit-san.log" 2>&1 || echo "  (building $broot/_kit-san failed: see $broot/_kit-san.log)"
hash_before=$(kit_hash)
# Four at a time, tests capped at 3 s, 1 GiB per process: an attack gains nothing from a busy
# machine (every case is compared with the pitfall's score from an idle one, above), and the
# gallery stays short. The result forger also gets the sanitizer row (it once rewrote the rows there).
printf '%s\n' "${hcases[@]}" | GR_TEST_TIMEOUT=3 GR_MEM_MB=1024 xargs -P 4 -I{} bash -c '
  c=$1; san=0; [ "$c" = forge_results ] && san=1
  s=$(date +%s%N)
  harness/scripts/grade.sh --submission "$2/subs/$c" --name "$c" --lab 01 --san "$san" --kit-ready \
    --build-root "$3" --out "$2/out/$c" --quiet >"$2/out/$c.log" 2>&1
  echo "$? $(( ($(date +%s%N) - s) / 1000000 ))" >"$2/out/$c.rc"
' _ {} "$H" "$broot"
left=$(sandbox_procs)
hash_after=$(kit_hash)
real_after=$(real_hash)
printf '  %-18s %12s %9s %8s   (plain pitfall: %s of %s test points)\n' case "test points" "wall(s)" status "$pp" "$max"
limit_s=$((2 * GR_SUITE_TIMEOUT))
for c in "${hcases[@]}"; do
  read -r hrc hms <"$H/out/$c.rc"
  # The forger is also graded with the sanitizer row: compare the tests' points with the pitfall's.
  htests=$(awk -F'\t' '$2 !~ /^sanitizers/ && $6 == "passed" { s += $3 } END { print s + 0 }' "$H/out/$c/rows.tsv" 2>/dev/null)
  hmax=$(awk -F'\t' '$2 !~ /^sanitizers/ { m += $3 } END { print m + 0 }' "$H/out/$c/rows.tsv" 2>/dev/null)
  printf '  %-18s %8s/%-3s %9.1f %8s\n' "$c" "$htests" "$hmax" "$(awk -v m="$hms" 'BEGIN { print m / 1000 }')" "exit $hrc"
  check "hostile $c: graded (exit 0)" test "$hrc" = 0
  # A grading that did not finish says why here: its own log is in a folder removed at exit.
  [ "$hrc" = 0 ] || tail -n 15 "$H/out/$c.log" | sed "s/^/      $c: /"
  check "hostile $c: graded in the bwrap sandbox" grep -q '^sandbox bwrap$' "$H/out/$c/logs/sandbox.txt"
  check "hostile $c: scores no more than the plain pitfall ($htests vs $pp)" awk -v a="$htests" -v b="$pp" 'BEGIN { exit !(a != "" && a + 0 <= b + 0) }'
  check "hostile $c: finished within 2x the suite timeout ($hms ms <= ${limit_s} s)" test "$hms" -le $((limit_s * 1000))
done
hrow() { awk -F'\t' -v p="$2" '$6 == "failed" && $8 ~ p' "$H/out/$1/rows.tsv" 2>/dev/null | grep -q .; }
check "hostile exit_early: its passes are reported as ended early" hrow exit_early "last line ran"
check "hostile exit_in_destroy: its passes are reported as ended early" hrow exit_in_destroy "last line ran"
check "hostile include_relative: the solution cannot be found" hrow include_relative "solution.c"
check "hostile include_absolute: the solution cannot be found" hrow include_absolute "solution.c"
check "hostile constructor: refused, naming the constructor" hrow constructor "constructor"
check "hostile output_flood: stopped for its output" hrow output_flood "printed more than"
check "hostile kill_parent: the missing report says so" hrow kill_parent "without writing its report"
check "hostile forge_results: its report holds the grader's rows only (the pitfall's and the sanitizer row)" test "$(wc -l <"$H/out/forge_results/rows.tsv")" = "$(( $(wc -l <"$T/all/pitfall/rows.tsv") + 1 ))"
check "hostile gallery: no process left behind ($left)" test "$left" = 0
check "hostile gallery: the kit is byte-identical afterwards ($hash_before = $hash_after)" test "$hash_before" = "$hash_after"
echo "  plain pitfall: $pp of $max; suite timeout ${GR_SUITE_TIMEOUT} s; processes left: $left; kit hash $hash_before -> $hash_after"
# The real tree too (not a check: other people may be editing it right now).
echo "  this kit's lab $L files and manifest: $real_before -> $real_after$([ "$real_before" = "$real_after" ] && echo " (unchanged)" || echo " (changed: edited meanwhile? compare with git diff)")"

# ---- 1c. a course in shards: 3 shards + merge give what one run gives, byte for byte ----
section "make grade-all SHARD=K/3 three times, then make grade-merge, against one run"
C="$T/course"
mkdir -p "$C/subs"
# Submissions whose grades do not depend on timing (and cost seconds): they do not build, are
# refused, or have no exercise.c; one name needs CSV quoting.
for n in a-nocompile "o,brien"; do cp -r harness/tests/submissions/nocompile "$C/subs/$n"; done
mkdir -p "$C/subs/d-empty"
cp -r "$H/subs/constructor" "$C/subs/e-constructor"
harness/scripts/grade-all.sh --submissions "$C/subs" --lab 01 --san 0 --jobs 2 --kit-ready --build-root "$broot" \
  --out "$C/one" >"$C/one.log" 2>&1
for k in 1 2 3; do
  harness/scripts/grade-all.sh --submissions "$C/subs" --lab 01 --san 0 --jobs 2 --kit-ready --build-root "$broot" \
    --shard "$k/3" --out "$C/shard$k" >"$C/shard$k.log" 2>&1
done
make -s grade-merge OUT="$C/merged" SHARDS="$C/shard1 $C/shard2 $C/shard3" >"$C/merge.log" 2>&1
check "3 shards hold the 4 submissions between them, each once" test "$(cat "$C"/shard[123]/shard.names 2>/dev/null | LC_ALL=C sort | uniq | wc -l)" = 4 -a "$(cat "$C"/shard[123]/shard.names 2>/dev/null | wc -l)" = 4
check "the merged grades.csv is byte-identical to one run's" cmp "$C/one/grades.csv" "$C/merged/grades.csv"
check "...and has a row per submission" test "$(wc -l <"$C/merged/grades.csv")" = 5
check "...and each student's results.json too" sh -c "for d in '$C'/one/*/; do n=\$(basename \"\$d\"); sed 's/\"execution_time\": [0-9]*/T/' \"\$d/results.json\" >'$C/a.json'; sed 's/\"execution_time\": [0-9]*/T/' '$C/merged/'\"\$n\"/results.json >'$C/b.json'; cmp -s '$C/a.json' '$C/b.json' || exit 1; done"
make -s grade-merge OUT="$C/bad" SHARDS="$C/shard1 $C/shard3" >"$C/bad.log" 2>&1
check "grade-merge refuses a missing shard" sh -c "! test -f '$C/bad/grades.csv' && grep -q 'shard 2/3 is missing' '$C/bad.log'"

# ---- 2. sanitizers and REPEAT: a use after free is a failed row of its own ----
section "sanitizer rows and REPEAT=2: correct, uaf"
mkdir -p "$T/san/correct/labs/$L"
cp "solutions/$L/solution.c" "$T/san/correct/labs/$L/exercise.c"
cp -r harness/tests/submissions/uaf "$T/san/"
harness/scripts/grade-all.sh --submissions "$T/san" --lab 01 --san 1 --repeat 2 --jobs 2 --out "$T/sanout" \
  --build-root "$broot" >"$T/san.log" 2>&1
csv="$T/sanout/grades.csv"
smax=$(field "$csv" correct max)
check "correct scores full marks ($(field "$csv" correct total) of $smax)" test -n "$smax" -a "$(field "$csv" correct total)" = "$smax"
check "correct, graded after the hostile gallery: out of as many points as before it ($smax = $max + the sanitizer row)" test "$smax" = "$((max + 1))"
check "correct: the sanitizer row passes" sh -c "awk -F'\t' '\$2 ~ /^sanitizers/ && \$6 == \"passed\"' '$T/sanout/correct/rows.tsv' | grep -q ."
check "uaf: the sanitizer row fails, naming exercise.c" sh -c "awk -F'\t' '\$2 ~ /^sanitizers/ && \$6 == \"failed\" && \$8 ~ /use-after-free/ && \$8 ~ /exercise\\.c:[0-9]/' '$T/sanout/uaf/rows.tsv' | grep -q ."
check "REPEAT=2: every test ran twice" sh -c "awk -F'\t' '\$2 ~ /^lab01\\// && \$5 != 2 { bad = 1 } END { exit bad }' '$T/sanout/correct/rows.tsv'"
check "correct, uaf: results.json validates" sh -c "'$GS' '$T/sanout/correct/results.json' && '$GS' '$T/sanout/uaf/results.json'"

# ---- 2b. performance rows (manifest perf, harness/grader/perf.sh) ----
section "performance rows: correct measured, pitfall not measured and then measured anyway"
PR="$T/sanout/correct"
check "correct: its performance row is measured and met, with its figures" sh -c "awk -F'\t' '\$2 ~ /^performance: peak_rps/ && \$6 == \"passed\" && \$8 ~ /peak_rps = [0-9]/ && \$8 ~ /limit_rps = [0-9]/' '$PR/rows.tsv' | grep -q ."
check "correct: results.json shows it as html, its plot beside the solution's" sh -c "grep -q '\"output_format\": \"html\"' '$PR/results.json' && test \"\$(grep -o 'data:image/svg+xml;base64,' '$PR/results.json' | wc -l)\" = 2"
check "correct: a Gradescope leaderboard column (lab 01 peak / limit)" grep -q -E '"leaderboard": \[\{"name": "lab 01 peak / limit", "value": 0\.[0-9]+\}' "$PR/results.json"
check "correct: JUnit and TAP carry the row with its figures" sh -c "grep -q 'name=\"performance: peak_rps' '$PR/junit.xml' && grep -A8 'performance: peak_rps' '$PR/results.tap' | grep -q 'peak_rps = [0-9]'"
check "pitfall: not measured (its suite failed), 0 points" sh -c "awk -F'\t' '\$2 ~ /^performance: / && \$6 == \"failed\" && \$8 ~ /not measured: the suite did not pass/' '$T/all/pitfall/rows.tsv' | grep -q ."
harness/scripts/grade.sh --perf-only --lab 01 --kit-ready --quiet --submission "$subs/pitfall" --name perf-pitfall \
  --build-root "$broot" --out "$T/perfpit" >"$T/perfpit.log" 2>&1
check "pitfall, measured anyway (--perf-only): misses by far, in every run, and says by how much" sh -c "awk -F'\t' '\$2 ~ /^performance: peak_rps/ && \$6 == \"failed\" && \$8 ~ /MISSED \\(best of [0-9]/' '$T/perfpit/rows.tsv' | grep -q ."
# perfscore on a summary.json of known figures: bounds as numbers and X*NAME, a missing figure.
printf '{"figures": {"exercise": {"peak_rps": 3000, "lag_ms": 2}, "limit_rps": 10000}}' >"$T/sum.json"
printf 'perf peak_rps >= 0.25*limit_rps 3\nperf peak_rps >= 0.5*limit_rps 3\nperf lag_ms <= 5 1\nperf gone >= 1 1\nleaderboard peak_rps/limit_rps desc lab 01\n' |
  "$broot/_kit/grader/perfscore" "$T/sum.json" exercise >"$T/sum.out" 2>&1
check "perfscore: met, missed, a missing figure missed, a ratio for the leaderboard" sh -c "awk -F'\t' '\$1 == \"P\" { r = r \$7 } \$1 == \"B\" { b = \$3 } END { exit !(r == \"1010\" && b == 0.3) }' '$T/sum.out'"
printf 'perf peak_rps => 1 1\n' | "$broot/_kit/grader/perfscore" "$T/sum.json" exercise >/dev/null 2>&1
check "perfscore: a malformed perf row is a usage error (exit 2)" test $? = 2

# ---- 3. the student handout and the learner loop in it (no .git there) ----
section "make handout, then the learner loop in the student tree"
harness/scripts/handout.sh --out "$T/dist" >"$T/handout.log" 2>&1
check "make handout writes both tarballs" test -s "$T/dist/loopholes-student.tar.gz" -a -s "$T/dist/loopholes-instructor.tar.gz"
check "the student tarball holds no solution and no hidden test" sh -c "! tar -tzf '$T/dist/loopholes-student.tar.gz' | grep -E '/(solutions|submissions)/|/(solution|hidden)\\.c\$|/docs/(interviews|instructor)\\.md\$'"
check "the instructor tarball holds the solutions" sh -c "tar -tzf '$T/dist/loopholes-instructor.tar.gz' | grep -q 'solutions/$L/solution.c'"
mkdir -p "$T/i" && tar -xzf "$T/dist/loopholes-instructor.tar.gz" -C "$T/i"
check "the instructor tree comes sealed (harness/grader/kit.sha256 matches it)" sh -c "cd '$T/i/loopholes-instructor' && test -s harness/grader/kit.sha256 && sha256sum -c --quiet harness/grader/kit.sha256"
mkdir -p "$T/h" && tar -xzf "$T/dist/loopholes-student.tar.gz" -C "$T/h"
H="$T/h/loopholes"
check "the handout ships a pristine exercise.c and the tests' hashes" test -f "$H/labs/$L/.exercise.orig" -a -s "$H/harness/grader/tests.sha256"
check "the handout has a GitHub Classroom configuration" grep -q 'make grade LAB=01' "$H/.github/classroom/autograding.json"
# Reuse the kit's objects (older sources, newer objects: make sees them up to date).
mkdir -p "$H/build" && cp -a "$broot/_kit/." "$H/build/"
(cd "$H" && BUILD=build make -s check LAB=01) >"$T/check1.log" 2>&1
rc=$?
check "make check LAB=01 fails on the starting exercise.c (exit $rc)" test "$rc" != 0
check "...and shows what it saw, the pitfall and a hint" sh -c "grep -q 'saw:' '$T/check1.log' && grep -q 'pitfall:' '$T/check1.log' && grep -q 'hint 1/' '$T/check1.log'"
(cd "$H" && BUILD=build make -s hint LAB=01 && make -s hint LAB=01) >"$T/hint.log" 2>&1
check "make hint LAB=01 shows one more hint per call" grep -q '^> hint 2/' "$T/hint.log"
cp "solutions/$L/solution.c" "$H/labs/$L/exercise.c"
(cd "$H" && BUILD=build make -s check LAB=01) >"$T/check2.log" 2>&1
rc=$?
check "make check LAB=01 passes once exercise.c is fixed (exit $rc)" test "$rc" = 0
check "...and says what to try next" grep -q 'make bench LAB=01' "$T/check2.log"
(cd "$H" && BUILD=build make -s progress) >"$T/progress1.log" 2>&1
check "make progress says lab 01 is done" grep -q "^$L .*done" "$T/progress1.log"
(cd "$H" && BUILD=build make -s reset LAB=01) >"$T/reset.log" 2>&1
check "make reset LAB=01 restores the pristine exercise.c" cmp -s "$H/labs/$L/exercise.c" "$H/labs/$L/.exercise.orig"
check "...keeping a backup of the learner's file" sh -c "cmp -s '$H'/labs/$L/.backup/exercise-*.c 'solutions/$L/solution.c'"
(cd "$H" && BUILD=build make -s progress) >"$T/progress2.log" 2>&1
check "make progress says lab 01 is not started after the reset" grep -q "^$L .*not started" "$T/progress2.log"

# ---- 4. the Gradescope bundle, run in a scratch /autograder ----
section "make autograder, run in a scratch /autograder"
A="$T/ag/autograder"
mkdir -p "$A/submission" "$A/results"
harness/scripts/autograder.sh --lab 01 --out "$T/dist" --unpacked "$A/source" --build-root "$broot" >"$T/ag.log" 2>&1
check "make autograder writes the zip" test -s "$T/dist/loopholes-autograder.zip"
if command -v unzip >/dev/null 2>&1; then
  check "the zip has setup.sh and run_autograder at its root" sh -c "unzip -Z1 '$T/dist/loopholes-autograder.zip' | grep -qx setup.sh && unzip -Z1 '$T/dist/loopholes-autograder.zip' | grep -qx run_autograder && unzip -tq '$T/dist/loopholes-autograder.zip'"
fi
check "setup.sh and run_autograder are executable bash" sh -c "test -x '$A/source/setup.sh' && test -x '$A/source/run_autograder' && bash -n '$A/source/setup.sh' && bash -n '$A/source/run_autograder'"
mkdir -p "$A/source/build/grade" && cp -a "$broot/_kit" "$A/source/build/grade/"   # what setup.sh builds
cp "solutions/$L/solution.c" "$A/submission/exercise.c"   # a one-file upload
check "the bundle leaves the solutions out" test ! -e "$A/source/solutions/$L/solution.c"
# An instructor's hidden suite, present in the bundle only.
mkdir -p "$A/source/solutions/$L"
cat >"$A/source/solutions/$L/hidden.c" <<'EOF_HIDDEN'
#include <criterion/criterion.h>
#include <stdio.h>

#include "labrt.h"
#include "testkit.h"

Test(lab01_hidden, answers_with_a_short_delay, .timeout = 20) {
  static tk_resp_t resp[4];
  labrun_t *run = NULL;
  int rc = labrun_start(&run, &LAB_DEF, (const char *[]){"--delay-ms", "5", NULL});
  cr_assert_eq(rc, 0, "the lab did not start: %d", rc);
  char url[128];
  snprintf(url, sizeof url, "%s/work", labrun_url(run));
  int ok = tk_get_many(url, 4, 5000, resp);
  labrun_report_t report;
  labrun_stop(run, 5000, &report);
  cr_assert_eq(ok, 4, "only %d of 4 requests with a 5 ms delay got an answer", ok);
}
EOF_HIDDEN
cp "$A/source/run_autograder" "$A/run_autograder"
AUTOGRADER_ROOT="$A" GRADE_SAN=0 "$A/run_autograder" >"$T/run_autograder.log" 2>&1
check "run_autograder writes a valid /autograder/results/results.json" "$GS" "$A/results/results.json"
check "...with the hidden suite's rows, visible after the due date" sh -c "grep -q '\"name\": \"$L: hidden: lab01_hidden/answers_with_a_short_delay\", [^}]*\"visibility\": \"after_due_date\"' '$A/results/results.json'"
check "...grading the uploaded file (full marks for the solution, hidden test included)" sh -c "'$GS' '$A/results/results.json' | grep -q 'score $((max + 1)) of $((max + 1))'"

echo "$(( $(date +%s) - t0 )) s; $fails failed"
[ "$fails" = 0 ]
