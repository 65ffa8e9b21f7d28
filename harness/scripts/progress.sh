#!/usr/bin/env bash
# progress.sh - every lab at a glance (make progress): not started, failing k of n, or done.
#
#   progress.sh [--cached]    --cached: do not run suites, use the last make check of each lab
#
# A lab whose exercise.c changed since its last check is checked again (a few seconds each).
set -uo pipefail
# shellcheck source=../grader/lib.sh
. "$(cd "$(dirname "${BASH_SOURCE[0]}")/../grader" && pwd)/lib.sh"

cached=0
case "${1:-}" in
  --cached) cached=1 ;;
  -h|--help) gr_usage "$0"; exit 0 ;;
  "") ;;
  *) echo "progress.sh: unknown argument '$1'" >&2; gr_usage "$0" >&2; exit 2 ;;
esac
cd "$GR_ROOT" || exit 1
state="build/learner"
mkdir -p "$state" || exit 1

pristine() {  # SLUG -> the starting point's sha256, or nothing
  if [ -f "labs/$1/.exercise.orig" ]; then gr_sha256 "labs/$1/.exercise.orig"
  elif git cat-file -e "HEAD:labs/$1/exercise.c" 2>/dev/null; then git show "HEAD:labs/$1/exercise.c" | sha256sum | awk '{ print $1 }'
  fi
}

printf '%-28s %-44s %s\n' "lab" "title" "state"
done_n=0 all_n=0
for slug in $(manifest_labs); do
  title=$(manifest_get "$slug" title "" | cut -c1-44)
  ex="labs/$slug/exercise.c"
  if [ ! -f "labs/$slug/test.c" ]; then state_s="not available yet (no test.c)"
  elif [ ! -f "$ex" ]; then state_s="no exercise.c (make reset LAB=$(gr_num "$slug"))"; all_n=$((all_n + 1))
  else
    all_n=$((all_n + 1))
    sum=$(gr_sha256 "$ex")
    read -r csum cpass ctotal 2>/dev/null <"$state/$slug.status" || csum=""
    if [ "$csum" != "$sum" ] && [ "$sum" = "$(pristine "$slug")" ]; then
      state_s="not started"
    else
      if [ "$csum" != "$sum" ] && [ "$cached" = 0 ]; then
        BUILD="${BUILD:-build}" "$GR_ROOT/harness/scripts/check.sh" --quiet "$slug" >/dev/null 2>&1
        read -r csum cpass ctotal 2>/dev/null <"$state/$slug.status" || csum=""
      fi
      if [ "$csum" != "$sum" ]; then state_s="changed since the last check"
      elif [ "$cpass" = compile ]; then state_s="does not compile"
      elif [ "$cpass" = "$ctotal" ] && [ "$ctotal" -gt 0 ]; then state_s="done ($ctotal of $ctotal)"; done_n=$((done_n + 1))
      else state_s="failing $((ctotal - cpass)) of $ctotal"; fi
    fi
  fi
  printf '%-28s %-44s %s\n' "$slug" "$title" "$state_s"
done
echo
echo "$done_n of $all_n labs done. Next: make check LAB=NN on the first one not done."
