#!/usr/bin/env bash
# handout.sh - packs the kit for a course (make handout):
#
#   dist/loopholes-student.tar.gz     what learners get: no solutions/ (so no hidden tests), no
#                                     galleries of wrong answers (labs/*/wrong/: most are one bug
#                                     from the solution; hand them out after the due date with
#                                     HANDOUT_WRONG=1), no grader samples, no instructor docs; each lab's pristine
#                                     exercise.c as labs/NN-slug/.exercise.orig (make reset uses
#                                     it), the tests' sha256 (make grade reports edited tests), and
#                                     a GitHub Classroom autograding setup in .github/
#   dist/loopholes-instructor.tar.gz  everything, with the same tests' sha256 and the kit's seal
#                                     (harness/grader/kit.sha256: make grade refuses an edited kit)
#
#   handout.sh [--out DIR]     (default: dist)
set -uo pipefail
# shellcheck source=../grader/lib.sh
. "$(cd "$(dirname "${BASH_SOURCE[0]}")/../grader" && pwd)/lib.sh"

usage() { gr_usage "$0"; }
out="$GR_ROOT/dist"
while [ $# -gt 0 ]; do
  case "$1" in
    --out) [ $# -ge 2 ] || { usage >&2; exit 2; }; out=$2; shift 2 ;;
    -h|--help) usage; exit 0 ;;
    *) echo "handout.sh: unknown argument '$1'" >&2; usage >&2; exit 2 ;;
  esac
done
mkdir -p "$out" || gr_die "cannot create $out"
out=$(cd "$out" && pwd)
stage="$out/.stage"
rm -rf "$stage" && mkdir -p "$stage" || gr_die "cannot create $stage"
trap 'rm -rf "$stage"' EXIT

files="$stage/files"
gr_kit_files >"$files" || gr_die "cannot list the kit's files"
[ -s "$files" ] || gr_die "no files to pack"

# What a learner must not get.
# After the due date the galleries are teaching material: HANDOUT_WRONG=1 keeps them.
wrong_excluded='labs/[^/]+/wrong/|'
[ "${HANDOUT_WRONG:-0}" = 1 ] && wrong_excluded=''
student_excluded='^(solutions/|'"$wrong_excluded"'harness/tests/submissions/|harness/tests/grade[^/]*\.sh$|harness/grader/kit\.sha256$|docs/instructor\.md$|docs/interviews\.md$|docs/ci/)'

copy_tree() {  # LIST DEST
  mkdir -p "$2" && (cd "$GR_ROOT" && tar -cf - -T "$1") | (cd "$2" && tar -xf -) || gr_die "copying into $2 failed"
}

# ---- student ----
sdir="$stage/loopholes"
grep -v -E "$student_excluded" "$files" >"$stage/student.list"
copy_tree "$stage/student.list" "$sdir"
for l in $(manifest_labs); do
  [ -f "$sdir/labs/$l/exercise.c" ] && cp "$sdir/labs/$l/exercise.c" "$sdir/labs/$l/.exercise.orig"
done
gr_test_hashes >"$sdir/harness/grader/tests.sha256"
# Without solutions/ the Makefile must not ask for solution binaries.
if grep -q '^VARIANTS := pitfall solution exercise$' "$sdir/Makefile"; then
  sed -i 's/^VARIANTS := pitfall solution exercise$/VARIANTS := pitfall exercise/' "$sdir/Makefile"
else
  echo "handout.sh: warning: the Makefile's VARIANTS line is not the one expected; the student Makefile may ask for solutions/" >&2
fi

# GitHub Classroom: one graded step per lab, all-or-nothing on make grade LAB=NN STRICT=1 (the
# repository's own suites checked against tests.sha256). The legacy autograding.json and the
# current workflow with classroom-resources' command grader run the same command.
json_escape() { printf '%s' "$1" | sed -e 's/\\/\\\\/g' -e 's/"/\\"/g'; }
mkdir -p "$sdir/.github/classroom" "$sdir/.github/workflows"
{
  echo '{'
  echo '  "tests": ['
  first=1
  for l in $(gr_labs); do
    num=$(gr_num "$l")
    [ "$first" = 1 ] || echo ','
    first=0
    printf '    {\n      "name": "lab %s: %s",\n      "setup": "sudo -E harness/scripts/deps.sh",\n' "$num" "$(json_escape "$(manifest_get "$l" title "")")"
    printf '      "run": "make grade LAB=%s STRICT=1",\n      "input": "",\n      "output": "",\n' "$num"
    printf '      "comparison": "included",\n      "timeout": 15,\n      "points": %s\n    }' "$(gr_lab_points "$l")"
  done
  echo
  echo '  ]'
  echo '}'
} >"$sdir/.github/classroom/autograding.json"
{
  echo "# GitHub Classroom autograding: make grade per lab with the repository's own suites."
  echo "name: Autograding Tests"
  echo "'on':"
  echo "- push"
  echo "- workflow_dispatch"
  echo "- repository_dispatch"
  echo "permissions:"
  echo "  checks: write"
  echo "  actions: read"
  echo "  contents: read"
  echo "jobs:"
  echo "  run-autograding-tests:"
  echo "    runs-on: ubuntu-latest"
  echo "    if: github.actor != 'github-classroom[bot]'"
  echo "    steps:"
  echo "    - name: Checkout code"
  echo "      uses: actions/checkout@v4"
  echo "    - name: Install the kit's packages"
  echo "      run: sudo -E harness/scripts/deps.sh"
  runners=""
  envs=""
  for l in $(gr_labs); do
    num=$(gr_num "$l")
    echo "    - name: lab $num"
    echo "      id: lab$num"
    echo "      uses: classroom-resources/autograding-command-grader@v1"
    echo "      with:"
    echo "        test-name: lab $num"
    echo "        setup-command: ''"
    echo "        command: make grade LAB=$num STRICT=1"
    echo "        timeout: 15"
    echo "        max-score: $(gr_lab_points "$l")"
    runners="${runners:+$runners,}lab$num"
    envs="$envs        LAB${num}_RESULTS: \"\${{steps.lab$num.outputs.result}}\"\n"
  done
  echo "    - name: Autograding Reporter"
  echo "      uses: classroom-resources/autograding-grading-reporter@v1"
  echo "      env:"
  printf '%b' "$envs"
  echo "      with:"
  echo "        runners: $runners"
} >"$sdir/.github/workflows/classroom.yml"

tar -C "$stage" -czf "$out/loopholes-student.tar.gz" loopholes || gr_die "writing loopholes-student.tar.gz failed"
# The student tarball must not leak: check what it really holds.
if tar -tzf "$out/loopholes-student.tar.gz" | grep -E '(^|/)(solutions/|solution\.c$|hidden\.c$|submissions/)'; then
  rm -f "$out/loopholes-student.tar.gz"
  gr_die "the student tarball would contain the files above: not written"
fi

# ---- instructor ----
idir="$stage/loopholes-instructor"
copy_tree "$files" "$idir"
gr_test_hashes >"$idir/harness/grader/tests.sha256"
# The instructor tree is sealed: make grade there refuses a kit whose tests, testkit, manifest or
# grader changed (make grade-seal after an edit on purpose).
(GR_ROOT="$idir" gr_kit_seal) >"$idir/harness/grader/kit.sha256" || gr_die "sealing the instructor tree failed"
tar -C "$stage" -czf "$out/loopholes-instructor.tar.gz" loopholes-instructor || gr_die "writing loopholes-instructor.tar.gz failed"

ns=$(tar -tzf "$out/loopholes-student.tar.gz" | grep -c -v '/$')
ni=$(tar -tzf "$out/loopholes-instructor.tar.gz" | grep -c -v '/$')
echo "wrote ${out#"$GR_ROOT/"}/loopholes-student.tar.gz ($ns files: no solutions, no hidden tests)"
echo "wrote ${out#"$GR_ROOT/"}/loopholes-instructor.tar.gz ($ni files)"
echo "Next: make autograder (Gradescope bundle), or give learners the student tarball:"
echo "      tar xzf loopholes-student.tar.gz && cd loopholes && make && make check LAB=01"
