#!/usr/bin/env bash
# watch.sh - runs make check LAB=NN again each time labs/NN-slug/exercise.c is saved
# (make watch LAB=NN). Uses inotifywait (package inotify-tools) when present, else looks at the
# file's modification time once a second. Ctrl-C stops it.
#
#   watch.sh LAB [--max-runs N]   (--max-runs: stop after N checks; for scripts and tests)
set -uo pipefail
# shellcheck source=../grader/lib.sh
. "$(cd "$(dirname "${BASH_SOURCE[0]}")/../grader" && pwd)/lib.sh"

usage() { gr_usage "$0"; }
lab="" max=0
while [ $# -gt 0 ]; do
  case "$1" in
    --max-runs) [ $# -ge 2 ] || { usage >&2; exit 2; }; max=$2; shift ;;
    -h|--help) usage; exit 0 ;;
    -*) echo "watch.sh: unknown option '$1'" >&2; usage >&2; exit 2 ;;
    *) lab=$1 ;;
  esac
  shift
done
if [ -z "$lab" ]; then echo "watch.sh: which lab? make watch LAB=NN" >&2; usage >&2; exit 2; fi
case "$max" in ''|*[!0-9]*) echo "watch.sh: --max-runs wants a number" >&2; exit 2 ;; esac
slug=$(gr_resolve "$lab") || exit 2
cd "$GR_ROOT" || exit 1
ex="labs/$slug/exercise.c"
[ -f "$ex" ] || gr_die "$ex does not exist: make reset LAB=$(gr_num "$slug") creates it"

mtime() { stat -c %Y.%s "$ex" 2>/dev/null; }
wait_for_save() {
  local before; before=$(mtime)
  if command -v inotifywait >/dev/null 2>&1; then
    # Editors often save by writing a new file and renaming it: watch the folder, not the inode.
    while :; do
      inotifywait -q -q -e close_write,moved_to,create "labs/$slug" 2>/dev/null
      [ "$(mtime)" != "$before" ] && return
    done
  else
    while [ "$(mtime)" = "$before" ]; do sleep 1; done
  fi
}

runs=0
while :; do
  if [ -t 1 ]; then clear 2>/dev/null || true; fi
  echo "[$(date +%H:%M:%S)] make check LAB=$(gr_num "$slug")   (watching $ex; Ctrl-C stops)"
  "$GR_ROOT/harness/scripts/check.sh" "$slug"
  runs=$((runs + 1))
  if [ "$max" -gt 0 ] && [ "$runs" -ge "$max" ]; then exit 0; fi
  echo; echo "waiting for $ex to be saved..."
  wait_for_save
done
