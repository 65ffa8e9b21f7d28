#!/usr/bin/env bash
# bench.sh - make bench: drive every lab (or one) with load, write CSVs and plots to results/.
#
#   bench.sh [--lab NN] [--variants "pitfall solution exercise"] [--quick] [--full] [--out DIR]
#
#   --lab NN        one lab (01 or 01-blocking-sleep); default: every lab in labs/manifest whose
#                   binaries are built
#   --variants "…"  which variants, in this order (default: pitfall solution exercise)
#   --quick         short steps, for a CI smoke run (lab 01 in < 30 s)
#   --full          do not skip the loads above a variant's saturation
#   --out DIR       where results go (default: results/), as DIR/NN-slug/
#
# Each lab runs the scenario its manifest block names (`scenario`, default sweep):
# harness/scripts/bench-<scenario>.sh --lab NN-slug --variants "…" --out DIR [--quick] [--full].
# Binaries come from $BUILD/bin (BUILD defaults to build). See docs/bench.md.

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
. "$HERE/manifest.sh"
BUILD=${BUILD:-build}
export BUILD
case "$BUILD" in /*) BIN=$BUILD/bin ;; *) BIN=$ROOT/$BUILD/bin ;; esac

usage() { echo "usage:"; sed -n '4,11p' "$0" | sed 's/^# \{0,1\}//'; }

labs=() variants="" pass=() out="results"
while [ $# -gt 0 ]; do
  case "$1" in
    --lab) [ $# -ge 2 ] && [ -n "$2" ] || { echo "bench.sh: --lab needs a lab number" >&2; usage >&2; exit 2; }
      labs+=("$2"); shift 2 ;;
    --variants) [ $# -ge 2 ] && [ -n "$2" ] || { echo "bench.sh: --variants needs a list" >&2; usage >&2; exit 2; }
      variants=$2; shift 2 ;;
    --out) [ $# -ge 2 ] && [ -n "$2" ] || { echo "bench.sh: --out needs a folder" >&2; usage >&2; exit 2; }
      pass+=(--out "$2"); out=$2; shift 2 ;;
    --quick|--full) pass+=("$1"); shift ;;
    -h|--help) usage; exit 0 ;;
    *) echo "bench.sh: unknown argument '$1'" >&2; usage >&2; exit 2 ;;
  esac
done
for v in $variants; do
  case "$v" in
    pitfall|solution|exercise) ;;
    *) echo "bench.sh: unknown variant '$v' (pitfall, solution or exercise)" >&2; usage >&2; exit 2 ;;
  esac
done

explicit=1
if [ ${#labs[@]} -eq 0 ]; then
  explicit=0
  mapfile -t labs < <(manifest_labs)
fi

failed=() ran=() skipped=()
for want in "${labs[@]}"; do
  lab=$(manifest_resolve "$want") || { echo "bench.sh: no lab '$want' in labs/manifest" >&2; exit 2; }
  num=${lab%%-*}
  vs=${variants:-pitfall solution exercise}
  missing=""
  for v in $vs; do [ -x "$BIN/lab$num-$v" ] || missing="$missing $BUILD/bin/lab$num-$v"; done
  if [ -n "$missing" ]; then
    if [ "$explicit" = 1 ]; then
      echo "bench.sh: lab $num is not built:$missing (make BUILD=$BUILD$missing)" >&2
      failed+=("$lab"); continue
    fi
    skipped+=("$lab"); continue
  fi
  scenario=$(manifest_get "$lab" scenario sweep)
  script=$HERE/bench-$scenario.sh
  if [ ! -f "$script" ]; then
    echo "bench.sh: lab $num wants scenario '$scenario' but $script does not exist" >&2
    failed+=("$lab"); continue
  fi
  echo "== lab $num ($lab): scenario $scenario ==" >&2
  if bash "$script" --lab "$lab" --variants "$vs" "${pass[@]}"; then
    ran+=("$lab")
  else
    rc=$?
    # Ctrl-C: stop here rather than start the next lab.
    [ "$rc" = 130 ] || [ "$rc" = 143 ] && exit "$rc"
    failed+=("$lab")
  fi
done

echo >&2
[ ${#skipped[@]} -eq 0 ] || echo "bench: not built, skipped: ${skipped[*]} (make, then make bench)" >&2
[ ${#ran[@]} -eq 0 ] || echo "bench: done: ${ran[*]}. results in $out/NN-slug/ (docs/bench.md explains them)" >&2
if [ ${#failed[@]} -gt 0 ]; then
  echo "bench: FAILED: ${failed[*]}" >&2
  exit 1
fi
if [ ${#ran[@]} -eq 0 ]; then
  echo "bench: nothing ran (build first: make)" >&2
  exit 1
fi
