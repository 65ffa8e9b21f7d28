#!/usr/bin/env bash
# manifest.sh - reads labs/manifest. Source it, or run it:
#   manifest.sh labs                 every lab's NN-slug, in order
#   manifest.sh get  LAB KEY [DEF]   the first value of KEY in LAB's block (DEF when absent)
#   manifest.sh all  LAB KEY         every value of KEY in LAB's block, one per line
#   manifest.sh resolve LAB          NN or NN-slug -> NN-slug (exit 1 if no such lab)
# LAB may be "01" or "01-blocking-sleep".

MANIFEST=${MANIFEST:-$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)/labs/manifest}

manifest_labs() {
  awk '$1 == "lab" { print $2 }' "$MANIFEST"
}

manifest_resolve() {
  local want=$1 l
  for l in $(manifest_labs); do
    if [ "$l" = "$want" ] || [ "${l%%-*}" = "$want" ] || [ "${l%%-*}" = "$(printf '%02d' "$((10#${want%%-*}))" 2>/dev/null)" ]; then
      echo "$l"; return 0
    fi
  done
  return 1
}

manifest_all() {
  local lab; lab=$(manifest_resolve "$1") || return 1
  awk -v lab="$lab" -v key="$2" '
    /^[[:space:]]*#/ || NF == 0 { next }
    $1 == "lab" { inlab = ($2 == lab); next }
    inlab && $1 == key { sub(/^[^[:space:]]+[[:space:]]+/, ""); print }
  ' "$MANIFEST"
}

manifest_get() {
  local v; v=$(manifest_all "$1" "$2" | head -n 1)
  if [ -n "$v" ]; then echo "$v"; else echo "${3:-}"; fi
}

if [ "${BASH_SOURCE[0]}" = "$0" ]; then
  cmd=${1:-}; shift || true
  case "$cmd" in
    labs) manifest_labs ;;
    get) manifest_get "$@" ;;
    all) manifest_all "$@" ;;
    resolve) manifest_resolve "$@" ;;
    *) sed -n '2,7p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 2 ;;
  esac
fi
