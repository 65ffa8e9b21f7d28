#!/usr/bin/env bash
# reset.sh - restores labs/NN-slug/exercise.c to its starting point (make reset LAB=NN), keeping
# the current file in labs/NN-slug/.backup/exercise-YYYYmmdd-HHMMSS.c.
#
#   reset.sh LAB
#
# Where the starting point comes from, first found wins:
#   1. labs/NN-slug/.exercise.orig   the pristine copy a handout ships (make handout)
#   2. git: HEAD:labs/NN-slug/exercise.c   a clone of the kit (if you committed your own work,
#      HEAD holds it: use git log to pick an older version instead)
#   3. labs/NN-slug/pitfall.c with a TODO note on top   no handout copy, no git
set -uo pipefail
# shellcheck source=../grader/lib.sh
. "$(cd "$(dirname "${BASH_SOURCE[0]}")/../grader" && pwd)/lib.sh"

usage() { gr_usage "$0"; }
case "${1:-}" in
  -h|--help) usage; exit 0 ;;
  "") echo "reset.sh: which lab? make reset LAB=NN" >&2; usage >&2; exit 2 ;;
  -*) echo "reset.sh: unknown option '$1'" >&2; usage >&2; exit 2 ;;
esac
[ $# -eq 1 ] || { echo "reset.sh: one lab at a time" >&2; usage >&2; exit 2; }
slug=$(gr_resolve "$1") || exit 2
num=$(gr_num "$slug")
cd "$GR_ROOT" || exit 1
dir="labs/$slug"; ex="$dir/exercise.c"
tmp=$(mktemp) || exit 1
trap 'rm -f "$tmp"' EXIT

if [ -f "$dir/.exercise.orig" ]; then
  cp "$dir/.exercise.orig" "$tmp" && from="the handout's pristine copy ($dir/.exercise.orig)"
elif git rev-parse --is-inside-work-tree >/dev/null 2>&1 && git cat-file -e "HEAD:$ex" 2>/dev/null; then
  git show "HEAD:$ex" >"$tmp" && from="git (HEAD:$ex)"
elif [ -f "$dir/pitfall.c" ]; then
  { printf '/* TODO: this is lab %s'"'"'s pitfall. Make it pass make check LAB=%s without changing what\n' "$num" "$num"
    printf ' * it answers: labs/%s/README.md explains what to change. */\n' "$slug"
    cat "$dir/pitfall.c"; } >"$tmp" && from="the pitfall ($dir/pitfall.c) with a TODO note (no pristine copy or git history found)"
else
  gr_die "nothing to restore $ex from: no $dir/.exercise.orig, no git history, no $dir/pitfall.c"
fi

if [ -f "$ex" ]; then
  if cmp -s "$tmp" "$ex"; then echo "$ex is already at its starting point (from $from)"; exit 0; fi
  mkdir -p "$dir/.backup" || exit 1
  backup="$dir/.backup/exercise-$(date +%Y%m%d-%H%M%S).c"
  cp -p "$ex" "$backup" || gr_die "cannot back up $ex to $backup: nothing changed"
  echo "your file is saved in $backup"
fi
cp "$tmp" "$ex" || gr_die "cannot write $ex"
rm -f "build/learner/$slug.status"
echo "restored $ex from $from"
echo "Next: make check LAB=$num   (it fails: that is the starting point)"
