#!/usr/bin/env bash
# deps.sh - installs the Debian packages Loopholes needs (make deps).
#   --check  only say what is missing (exit 1 if anything is)
#   --quiet  print nothing when everything is there
set -euo pipefail

# package : how to tell it is there
checks=(
  "build-essential:command -v cc"
  "make:command -v make"
  "pkg-config:command -v pkg-config"
  "libuv1-dev:pkg-config --exists libuv"
  "libcurl4-openssl-dev:pkg-config --exists libcurl"
  "libcriterion-dev:pkg-config --exists criterion"
  "libhttp-parser-dev:test -f /usr/include/http_parser.h"
  "libjansson-dev:pkg-config --exists jansson"
  "gnuplot-nox:command -v gnuplot"
  "wrk:command -v wrk"
  "curl:command -v curl"
  "iproute2:command -v ss"
  "bubblewrap:command -v bwrap"
  "zip:command -v zip"
  "chromium:command -v chromium"     # the report page's browser test (harness/tests/report.sh)
)

mode=install
case "${1:-}" in
  --check) mode=check ;;
  --quiet) mode=quiet ;;
  -h|--help) sed -n '2,4p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
  "") ;;
  *) echo "deps.sh: unknown option '$1'" >&2; sed -n '2,4p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 2 ;;
esac

missing=()
for c in "${checks[@]}"; do
  pkg=${c%%:*}; test=${c#*:}
  # pkg-config itself may be the missing piece
  if ! bash -c "$test" >/dev/null 2>&1; then missing+=("$pkg"); fi
done

if [ ${#missing[@]} -eq 0 ]; then
  [ "$mode" = quiet ] || echo "deps: everything is installed"
  exit 0
fi
if [ "$mode" = check ]; then
  echo "deps: missing: ${missing[*]}"
  exit 1
fi

if ! command -v apt-get >/dev/null 2>&1; then
  echo "deps: apt-get not found; install these packages by hand: ${missing[*]}" >&2
  exit 1
fi
sudo=""
if [ "$(id -u)" != 0 ]; then
  if command -v sudo >/dev/null 2>&1; then sudo="sudo"; else
    echo "deps: not root and no sudo; as root run: apt-get install ${missing[*]}" >&2; exit 1
  fi
fi
echo "deps: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get update -qq || { echo "deps: apt-get update failed" >&2; exit 1; }
$sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null \
  || { echo "deps: apt-get install ${missing[*]} failed" >&2; exit 1; }
echo "deps: installed ${missing[*]}"
