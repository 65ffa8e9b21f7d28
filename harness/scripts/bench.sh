#!/usr/bin/env bash
# bench.sh - make bench: runs each lab's bench, build/bin/benchNN (from labs/NN-slug/bench.c, on
# the bench engine in harness/bench/; docs/bench.md).
#
#   bench.sh [--lab NN]... [--variants "pitfall solution exercise"] [--quick] [--replot] [--out DIR]
#
#   --lab NN        one lab (01 or 01-blocking-sleep), repeatable; default: every lab in
#                   labs/manifest whose bench is built
#   --variants "…"  which variants, in this order (default: pitfall solution exercise)
#   --quick         short steps: a smoke run (lab 01 in about 10 s)
#   --replot        figures, targets and plots again from the CSVs, without measuring
#   --out DIR       results go to DIR/NN-slug/ (default: results/)
# After the runs, DIR/index.html (the workshop page, build/bin/report) is written again from every
# lab's summary in DIR, those of earlier runs included.
# Binaries come from $BUILD/bin (BUILD defaults to build). Exit status: 0 when every lab ran and
# met its targets, 1 otherwise, 2 on a usage error, 130 on Ctrl-C (nothing is left running).

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
. "$HERE/manifest.sh"
BUILD=${BUILD:-build}
case "$BUILD" in /*) BIN=$BUILD/bin ;; *) BIN=$ROOT/$BUILD/bin ;; esac
usage() { echo "usage:"; sed -n '4,16p' "$0" | sed 's/^# \{0,1\}//'; }

labs=() pass=() out=results
while [ $# -gt 0 ]; do
  case "$1" in
    --lab|--variants|--out)
      [ $# -ge 2 ] && [ -n "$2" ] || { echo "bench.sh: $1 needs a value" >&2; usage >&2; exit 2; }
      if [ "$1" = --lab ]; then labs+=("$2"); else pass+=("$1" "$2"); fi
      [ "$1" = --out ] && out=$2
      shift 2 ;;
    --quick|--replot) pass+=("$1"); shift ;;
    -h|--help) usage; exit 0 ;;
    *) echo "bench.sh: unknown argument '$1'" >&2; usage >&2; exit 2 ;;
  esac
done
explicit=${#labs[@]}
[ "$explicit" -gt 0 ] || mapfile -t labs < <(manifest_labs)

cd "$ROOT" || exit 1
start=$SECONDS ran=() failed=() skipped=()
for want in "${labs[@]}"; do
  lab=$(manifest_resolve "$want") || { echo "bench.sh: no lab '$want' in labs/manifest" >&2; exit 2; }
  bin=$BIN/bench${lab%%-*}
  if [ ! -x "$bin" ]; then
    if [ "$explicit" -gt 0 ]; then
      echo "bench.sh: $bin is not built (make BUILD=$BUILD; a lab's bench is labs/$lab/bench.c)" >&2
      failed+=("$lab")
    else skipped+=("$lab"); fi
    continue
  fi
  echo "== lab ${lab%%-*} ($lab) ==" >&2
  "$bin" "${pass[@]}"
  rc=$?
  case "$rc" in
    0) ran+=("$lab") ;;
    2) exit 2 ;;
    130|143) exit "$rc" ;;   # Ctrl-C: the bench stopped what it started; do not start the next
    *) failed+=("$lab") ;;
  esac
  echo >&2
done

[ ${#skipped[@]} -eq 0 ] || echo "bench: no bench built, skipped: ${skipped[*]}" >&2
[ ${#ran[@]} -eq 0 ] || echo "bench: done: ${ran[*]} (results in results/NN-slug/; docs/bench.md)" >&2
[ ${#failed[@]} -eq 0 ] || echo "bench: FAILED or targets missed: ${failed[*]} (see the target lines above)" >&2
# The workshop page: a failure to write it is said, but the exit status stays the bench's own.
if [ ${#ran[@]} -gt 0 ] || [ ${#failed[@]} -gt 0 ]; then
  if [ -x "$BIN/report" ]; then
    "$BIN/report" --results "$out" --out "$out/index.html" >&2 ||
      echo "bench: warning: $out/index.html not (fully) written: see the report: lines above" >&2
  else
    echo "bench: $BIN/report is not built, so no $out/index.html (make BUILD=$BUILD; then make report)" >&2
  fi
fi
echo "bench: $((SECONDS - start)) s in all" >&2
[ ${#failed[@]} -eq 0 ] && [ ${#ran[@]} -gt 0 ]
