# shellcheck shell=bash
# lib.sh - what the learner scripts (check, hint, reset, progress, watch) and the grader share.
# Source it from bash after setting nothing: it finds the kit's root from its own path.
# Only bash, coreutils, awk and sed: a fresh machine has no python3 or jq.

GR_ROOT=${GR_ROOT:-$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)}
GR_DIR="$GR_ROOT/harness/grader"
# shellcheck source=../scripts/manifest.sh
. "$GR_ROOT/harness/scripts/manifest.sh"

# Seconds a whole suite may take before it is stopped (each test also has its own .timeout).
GR_SUITE_TIMEOUT=${GR_SUITE_TIMEOUT:-120}
# Criterion jobs per suite: 1 keeps one test's load from skewing another's timings.
GR_JOBS=${GR_JOBS:-1}
# When set, every test's timeout in seconds (Criterion's --timeout overrides each test's
# .timeout): a cap for a course where hanging submissions are common. Unset: the tests' own.
GR_TEST_TIMEOUT=${GR_TEST_TIMEOUT:-}

gr_die() { echo "$(basename "$0"): $*" >&2; exit 1; }

# NN-slug -> NN
gr_num() { echo "${1%%-*}"; }

# The labs that can be checked or graded: in the manifest, with a folder and a test.c.
gr_labs() {
  local l
  for l in $(manifest_labs); do
    [ -f "$GR_ROOT/labs/$l/test.c" ] && echo "$l"
  done
}

# LAB (NN or NN-slug) -> NN-slug, or die with the list of labs.
gr_resolve() {
  local l
  if [ -z "${1:-}" ]; then gr_die "which lab? LAB=NN, one of: $(manifest_labs | tr '\n' ' ')"; fi
  l=$(manifest_resolve "$1") || gr_die "no lab '$1' in labs/manifest; labs: $(manifest_labs | tr '\n' ' ')"
  [ -d "$GR_ROOT/labs/$l" ] || gr_die "lab $l is in the manifest but labs/$l/ does not exist yet"
  echo "$l"
}

# The tests a suite source declares, as suite/name, in file order. Used to know which tests
# should have reported (a suite stopped by the outer timeout reports nothing) and to score a
# submission that does not compile.
gr_declared_tests() {
  sed -n 's/^[[:space:]]*Test([[:space:]]*\([A-Za-z_0-9]*\)[[:space:]]*,[[:space:]]*\([A-Za-z_0-9]*\).*/\1\/\2/p' "$1"
}

# Points for a test (suite/name) of a lab: `weight` rows of the manifest name it as suite/name,
# suite::name or just name. Default 1.
gr_weight() {
  local lab=$1 test=$2 w
  w=$(manifest_all "$lab" weight | awk -v t="$test" '
    { n = $1; gsub(/::/, "/", n); short = t; sub(/^.*\//, "", short) }
    n == t || n == short { print $2; exit }')
  echo "${w:-1}"
}

# stdin -> one line: printable ASCII only, "\n" for newlines, "\\" for backslashes, tabs as spaces,
# at most $1 characters (default 6000). Whatever a submission prints or the compiler quotes from
# it cannot break a row, the JSON or the XML after this.
gr_encode() {
  LC_ALL=C tr '\t' ' ' | LC_ALL=C tr -c '\n\40-\176' '?' | LC_ALL=C awk -v max="${1:-6000}" '
    { gsub(/\\/, "&&"); s = (NR > 1) ? s "\\n" $0 : $0 }
    END {
      if (length(s) > max) { s = substr(s, 1, max); sub(/\\+$/, "", s); s = s "\\n[... cut]" }
      printf "%s", s
    }'
}

# The one-line encoding back to text.
gr_decode() {
  awk '{
    out = ""; n = length($0)
    for (i = 1; i <= n; i++) {
      c = substr($0, i, 1)
      if (c == "\\" && i < n) { i++; c = substr($0, i, 1); out = out (c == "n" ? "\n" : c) }
      else out = out c
    }
    print out
  }'
}

# Runs one Criterion suite: BIN JSON LOG [criterion options...]. Criterion writes its own report
# (--json) so nothing the code under test prints can pass for a result. Returns the suite's exit
# status; 124 or 137 when the outer timeout stopped it.
gr_run_suite() {
  local bin=$1 json=$2 log=$3; shift 3
  rm -f "$json"
  # timeout(1) signals its whole process group, so Criterion's workers go too.
  # The log keeps the first GR_LOG_BYTES of output; the rest is read and dropped, so a
  # submission that prints in a loop can neither fill the disk nor block on a full pipe.
  timeout -k 5 "$GR_SUITE_TIMEOUT" "$bin" --json="$json" --jobs "$GR_JOBS" --ascii \
    ${GR_TEST_TIMEOUT:+--timeout "$GR_TEST_TIMEOUT"} "$@" 2>&1 </dev/null |
    { head -c "${GR_LOG_BYTES:-4000000}"; cat >/dev/null; } >"$log"
  return "${PIPESTATUS[0]}"
}

# Criterion's JSON -> "suite/name<TAB>STATUS<TAB>message" lines.
gr_parse() {
  [ -s "$1" ] && awk -f "$GR_DIR/criterion.awk" "$1"
}

# A Criterion message -> what a learner reads: no "file.c:123: " prefix, a word for a crash.
gr_explain() {
  local status=$1 msg=$2
  msg=$(printf '%s' "$msg" | sed -e 's/^[A-Za-z0-9_./-]*\.c:[0-9]*: //' -e 's/\\n[A-Za-z0-9_./-]*\.c:[0-9]*: /\\n/g')
  case "$status:$msg" in
    ERRORED:*crashed*) echo "the test process crashed (a signal such as SIGSEGV or SIGABRT): look for a NULL pointer, a freed struct or an assert in your file" ;;
    ERRORED:*timed\ out*) echo "the test timed out: something never answered, or the loop never stopped (a blocked or spinning loop, a handle never closed)" ;;
    FAILED:) echo "the test process ended without a verdict (exit() or abort() in the code under test?)" ;;
    UNFINISHED:*) echo "the test's process ended before the test's last line ran (exit() or a kill in the code under test?): Criterion saw a clean exit, but a test passes only when it runs to its end" ;;
    *) printf '%s\n' "$msg" ;;
  esac
}

gr_sha256() { sha256sum "$1" | awk '{ print $1 }'; }

# A script's usage: its opening comment block, without the "# ".
gr_usage() { awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$1"; }

# The kit's files, relative to the root: what git tracks plus new files it does not ignore (or,
# without git, every file outside build folders). Never build output, dist/ or results/grade/.
gr_kit_files() {
  ( cd "$GR_ROOT" || exit 1
    if git rev-parse --is-inside-work-tree >/dev/null 2>&1; then
      git ls-files -co --exclude-standard
    else
      find . -type f ! -path './.git/*' | sed 's|^\./||'
    fi ) | grep -v -E '^(build[^/]*|dist|results/grade)/|(^|/)\.backup/' | while IFS= read -r f; do
      [ -f "$GR_ROOT/$f" ] && printf '%s\n' "$f"
    done | LC_ALL=C sort -u
}

# The points a lab is worth: its declared tests' weights, plus the sanitizer row and the
# performance rows (manifest `perf`, harness/grader/perf.sh).
gr_lab_points() {
  local slug=$1
  manifest_all "$slug" weight | awk -v declared="$(gr_declared_tests "$GR_ROOT/labs/$slug/test.c")" \
    -v perf="$(manifest_all "$slug" perf | awk '{ p += $4 } END { print p + 0 }')" '
    { n = $1; gsub(/::/, "/", n); w[n] = $2 }
    END {
      k = split(declared, t, "\n"); p = ("sanitizers" in w) ? w["sanitizers"] : 1
      for (i = 1; i <= k; i++) {
        short = t[i]; sub(/^.*\//, "", short)
        p += (t[i] in w) ? w[t[i]] : (short in w) ? w[short] : 1
      }
      print p + perf
    }'
}

# sha256 lines ("HASH  path") of the files a submission must not change: every lab's test.c and
# lab.h. grade.sh checks against them when harness/grader/tests.sha256 exists.
gr_test_hashes() {
  ( cd "$GR_ROOT" && for l in $(manifest_labs); do
      for f in "labs/$l/test.c" "labs/$l/lab.h"; do [ -f "$f" ] && sha256sum "$f"; done
    done )
}

# The first AddressSanitizer/LeakSanitizer/UBSan report in LOG, at most 40 lines, without the
# "==PID==" prefixes. With ONLY_EXERCISE=1, only a report that involves an exercise.c (a frame,
# or where the memory was allocated or freed): reports about the kit's own code do not count
# against a submission.
gr_sanitizer_report() {  # LOG [ONLY_EXERCISE]
  awk -v only="${2:-0}" '
    function done_block() {
      if (!found && (!only || block ~ /exercise\.c/)) { found = 1; printf "%s", block }
      inrep = 0; lines = 0
    }
    /ERROR: (AddressSanitizer|LeakSanitizer)/ || /runtime error:/ { if (inrep) done_block(); inrep = 1; block = "" }
    inrep { block = block $0 "\n"; lines++ }
    inrep && (/^SUMMARY:/ || (block ~ /runtime error:/ && lines > 12)) { done_block() }
    END { if (inrep) done_block() }
  ' "$1" | sed -e 's/^==[0-9]*==//' | head -n 40
}

# The files grading depends on, as "sha256  path" lines: every lab's test.c and lab.h, the
# manifest, hidden tests, the testkit, the shared library's sources, the tools the suites start,
# the grader and its scripts, the Makefile. make grade-seal stores them in harness/grader/
# kit.sha256; grade.sh checks them before grading (and, without a stored seal, after it).
# With LAB arguments (what grade.sh checks when no seal was stored): those labs' files and what
# every grading reads (manifest, testkit, grader), not the whole kit.
gr_kit_seal() {  # [LAB...]
  local labs="*" wide="harness/lib/* harness/tools/*.c Makefile"
  [ $# -eq 0 ] || { labs="$*"; wide=""; }
  ( cd "$GR_ROOT" || exit 1
    # shellcheck disable=SC2086
    for f in labs/manifest $(for l in $labs; do echo "labs/$l/test.c labs/$l/lab.h solutions/$l/hidden.c"; done) \
             harness/testkit/* harness/grader/* harness/grade.mk harness/scripts/grade.sh harness/scripts/grade-all.sh \
             harness/scripts/manifest.sh $wide; do
      case "$f" in harness/grader/kit.sha256|harness/grader/tests.sha256) continue ;; esac
      [ -f "$f" ] && sha256sum "$f"
    done ) | LC_ALL=C sort -k 2
}

# The files of a seal that changed or went missing since (one per line; nothing: intact).
gr_seal_check() {  # SEAL
  local want f have
  while read -r want f; do
    f=${f#\*}
    have=$(cd "$GR_ROOT" && sha256sum "$f" 2>/dev/null | awk '{ print $1 }')
    if [ -z "$have" ]; then echo "$f (missing)"; elif [ "$have" != "$want" ]; then echo "$f"; fi
  done <"$1"
}
