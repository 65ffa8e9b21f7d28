#!/usr/bin/env bash
# autograder.sh - a Gradescope autograder bundle (make autograder [LAB=NN]).
#
#   autograder.sh [--lab NN]... [--out DIR] [--unpacked DIR] [--build-root DIR]
#
# Writes DIR/loopholes-autograder.zip (default DIR: dist): the kit with its hidden tests but
# without the solutions, and, at the root as Gradescope wants them, setup.sh (installs the packages and builds the kit
# once, when Gradescope builds the image) and run_autograder (grades /autograder/submission into
# /autograder/results/results.json). The labs given with --lab are the assignment; default: every
# lab with a test.c. A submission may be the student's whole tree, its labs/ folder, or, for a
# one-lab assignment, a single exercise.c.
#
# --unpacked DIR also leaves the bundle's tree in DIR, as Gradescope unpacks it into
# /autograder/source (for a trial run where unzip is not installed).
# --build-root DIR: where grade.sh's kit is (default $BUILD/grade, BUILD=build): the kit's solutions are
# measured there once, for the pictures beside the students' performance rows.
# Try it without Gradescope: unzip into ROOT/source, put a submission in ROOT/submission, then
#   AUTOGRADER_ROOT=ROOT bash ROOT/source/setup.sh && AUTOGRADER_ROOT=ROOT ROOT/source/run_autograder
set -uo pipefail
# shellcheck source=../grader/lib.sh
. "$(cd "$(dirname "${BASH_SOURCE[0]}")/../grader" && pwd)/lib.sh"

usage() { gr_usage "$0"; }
out="$GR_ROOT/dist" labs=() unpacked="" broot=${BUILD:-build}/grade
case "$broot" in /*) ;; *) broot="$GR_ROOT/$broot" ;; esac
while [ $# -gt 0 ]; do
  case "$1" in
    --lab) [ $# -ge 2 ] || { usage >&2; exit 2; }; for l in $2; do labs+=("$(gr_resolve "$l")") || exit 2; done; shift 2 ;;
    --out) [ $# -ge 2 ] || { usage >&2; exit 2; }; out=$2; shift 2 ;;
    --unpacked) [ $# -ge 2 ] || { usage >&2; exit 2; }; unpacked=$2; shift 2 ;;
    --build-root) [ $# -ge 2 ] || { usage >&2; exit 2; }; broot=$2; shift 2 ;;
    -h|--help) usage; exit 0 ;;
    *) echo "autograder.sh: unknown argument '$1'" >&2; usage >&2; exit 2 ;;
  esac
done
if [ ${#labs[@]} -eq 0 ]; then mapfile -t labs < <(gr_labs); fi
[ ${#labs[@]} -gt 0 ] || gr_die "no lab has a test.c: nothing to grade"
command -v zip >/dev/null 2>&1 || gr_die "zip is not installed: make deps installs it (Debian package zip)"
mkdir -p "$out" || gr_die "cannot create $out"
out=$(cd "$out" && pwd)
stage="$out/.autograder-stage"
rm -rf "$stage" && mkdir -p "$stage" || exit 1
trap 'rm -rf "$stage"' EXIT

# No solution.c: the grader does not need them, and a submission must not be able to #include one
# from a known path on the grading machine. Hidden tests (solutions/*/hidden.c) stay.
gr_kit_files | grep -v -E '^harness/tests/submissions/|^solutions/[^/]+/solution\.c$' >"$stage.list"
(cd "$GR_ROOT" && tar -cf - -T "$stage.list") | (cd "$stage" && tar -xf -) || gr_die "copying the kit failed"
rm -f "$stage.list"
gr_test_hashes >"$stage/harness/grader/tests.sha256"
lab_nums=$(for l in "${labs[@]}"; do gr_num "$l"; done | paste -sd " " -)
# The bundle has no solution.c, so the picture beside each student's performance row (manifest
# `perf`) is the kit's solution measured here, by the same short bench: harness/grader/ref/.
if [ "${GRADE_PERF:-passed}" != 0 ]; then
  ref_args=(); for l in "${labs[@]}"; do ref_args+=(--lab "$l"); done
  "$GR_ROOT/harness/scripts/grade.sh" --perf-refs --san 0 --quiet "${ref_args[@]}" --build-root "$broot" --out "$stage.refs" >&2 || true
  rm -rf "$stage.refs"
  for l in "${labs[@]}"; do
    d="$broot/_ref/$l/run/$l"
    [ -f "$d/summary.json" ] || continue
    mkdir -p "$stage/harness/grader/ref/$l" && cp "$d"/*.svg "$d/summary.json" "$stage/harness/grader/ref/$l/" 2>/dev/null
  done
fi

cat >"$stage/setup.sh" <<'EOF'
#!/usr/bin/env bash
# Gradescope runs this once, as root, while it builds the autograder image: the kit's packages,
# then the kit itself (library, tools, test objects, plain and with sanitizers), so that each
# submission only compiles its own exercise.c.
set -uo pipefail
cd "$(dirname "$0")" || exit 1
export DEBIAN_FRONTEND=noninteractive
harness/scripts/deps.sh || exit 1
make -s -k BUILD=build/grade/_kit grade-kit || echo "setup.sh: part of the kit did not build" >&2
if [ "${GRADE_SAN:-1}" = 1 ]; then
  make -s -k SAN=1 BUILD=build/grade/_kit-san GRADE_PERF_KIT= grade-kit || echo "setup.sh: part of the sanitizer kit did not build" >&2
fi
exit 0
EOF
cat >"$stage/run_autograder" <<EOF
#!/usr/bin/env bash
# Gradescope runs this for each submission: grades /autograder/submission with the kit's own
# suites and writes /autograder/results/results.json. AUTOGRADER_ROOT replaces /autograder for
# a local trial run.
set -uo pipefail
LABS="$lab_nums"
EOF
cat >>"$stage/run_autograder" <<'EOF'
root=${AUTOGRADER_ROOT:-/autograder}
src=$(cd "$(dirname "$0")" && pwd)
[ -f "$src/harness/scripts/grade.sh" ] || src="$root/source"
mkdir -p "$root/results"
args=()
for l in $LABS; do args+=(--lab "$l"); done
# grade.sh rebuilds nothing that setup.sh built: make finds the kit up to date.
"$src/harness/scripts/grade.sh" "${args[@]}" --submission "$root/submission" --name submission \
  --out "$root/results/loopholes"
rc=$?
if [ "$rc" = 0 ] && [ -s "$root/results/loopholes/results.json" ]; then
  cp "$root/results/loopholes/results.json" "$root/results/results.json"
else
  # Gradescope needs a results.json whatever happened; this one says the grader itself failed.
  printf '{"score": 0, "output": "The autograder failed (grade.sh exit status %s) before it could grade this submission; the course staff can see why in the autograder output.", "stdout_visibility": "hidden", "tests": []}\n' "$rc" >"$root/results/results.json"
fi
exit 0
EOF
chmod +x "$stage/setup.sh" "$stage/run_autograder"

zip="$out/loopholes-autograder.zip"
rm -f "$zip"
# Debian's zip: names from stdin in a fixed order, no directory entries, no extra attributes.
(cd "$stage" && find . -type f | sed 's|^\./||' | LC_ALL=C sort | zip -q -X -D "$zip" -@) || gr_die "writing $zip failed"
if [ -n "$unpacked" ]; then
  mkdir -p "$unpacked" && cp -a "$stage/." "$unpacked/" || gr_die "cannot copy the bundle into $unpacked"
fi
echo "wrote ${zip#"$GR_ROOT/"} ($(cd "$stage" && find . -type f | wc -l) files; labs: $lab_nums)"
echo "Next: upload it as the assignment's autograder on Gradescope (setup.sh and run_autograder are at its root),"
echo "      or try it locally: see the top of harness/scripts/autograder.sh"
