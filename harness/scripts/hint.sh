#!/usr/bin/env bash
# hint.sh - one more hint for a lab each call (make hint LAB=NN). The hints are the lab's `hint`
# rows in labs/manifest, in order; how many you have seen is kept in build/learner/NN-slug.hints.
#
#   hint.sh LAB          show the hints so far plus the next one
#   hint.sh --reset LAB  start again from the first hint
set -uo pipefail
# shellcheck source=../grader/lib.sh
. "$(cd "$(dirname "${BASH_SOURCE[0]}")/../grader" && pwd)/lib.sh"

usage() { gr_usage "$0"; }
reset=0 lab=""
while [ $# -gt 0 ]; do
  case "$1" in
    --reset) reset=1 ;;
    -h|--help) usage; exit 0 ;;
    -*) echo "hint.sh: unknown option '$1'" >&2; usage >&2; exit 2 ;;
    *) lab=$1 ;;
  esac
  shift
done
if [ -z "$lab" ]; then echo "hint.sh: which lab? make hint LAB=NN" >&2; usage >&2; exit 2; fi
slug=$(gr_resolve "$lab") || exit 2
num=$(gr_num "$slug")
cd "$GR_ROOT" || exit 1
state="build/learner"
mkdir -p "$state" || exit 1
f="$state/$slug.hints"
if [ "$reset" = 1 ]; then rm -f "$f"; echo "hints for lab $num start again from the first: make hint LAB=$num"; exit 0; fi

mapfile -t hints < <(manifest_all "$slug" hint)
n=${#hints[@]}
if [ "$n" = 0 ]; then echo "lab $num has no hints in labs/manifest; its README (labs/$slug/README.md) explains the fix."; exit 0; fi
shown=$(cat "$f" 2>/dev/null || echo 0)
[ "$shown" -ge 0 ] 2>/dev/null || shown=0
[ "$shown" -lt "$n" ] && shown=$((shown + 1))
echo "$shown" >"$f"

echo "Lab $num - $(manifest_get "$slug" title "")"
for ((i = 1; i <= shown; i++)); do
  mark="  "; [ "$i" = "$shown" ] && mark="> "
  printf '%s\n' "${hints[$((i - 1))]}" | fold -s -w 90 | sed "1s/^/${mark}hint $i\/$n: /; 2,\$s/^/            /"
done
if [ "$shown" -lt "$n" ]; then echo "(make hint LAB=$num for the next one; make check LAB=$num to test your file)"
else echo "(that was the last hint; labs/$slug/README.md walks through the fix)"; fi
