#!/usr/bin/env bash
# stall-tsan.sh - the stall detector's watchdog thread under ThreadSanitizer: builds
# harness/tests/tsan/stall.c with harness/lib/probe.c and hist.c, -fsanitize=thread, into
# $BUILD/tsan/, and runs it (about 5 s). Fails on any TSan report (a data race, a thread not
# joined) or a stall not filed. Exit 77 (skipped) when the compiler cannot build for TSan.
# Run by make test; alone: BUILD=build harness/tests/stall-tsan.sh
set -uo pipefail
cd "$(dirname "$0")/../.."
BUILD=${BUILD:-build}
CC=${CC:-cc}
out=$BUILD/tsan
mkdir -p "$out"
flags=(-std=c11 -D_DEFAULT_SOURCE -D_GNU_SOURCE -Wall -Wextra -Werror -pedantic -O1 -g
       -fsanitize=thread -fno-omit-frame-pointer -Iharness/lib $(pkg-config --cflags libuv))
if ! echo 'int main(void){return 0;}' | "$CC" -fsanitize=thread -x c - -o "$out/probe" 2>/dev/null; then
  echo "SKIPPED - $CC cannot build with -fsanitize=thread (gcc needs libtsan)"; exit 77
fi
if ! "$CC" "${flags[@]}" harness/tests/tsan/stall.c harness/lib/probe.c harness/lib/hist.c \
     $(pkg-config --libs libuv) -lpthread -o "$out/stall"; then
  echo "FAILED - the TSan build of the stall detector did not compile"; exit 1
fi
export TSAN_OPTIONS="halt_on_error=1 exitcode=66 report_thread_leaks=1 second_deadlock_stack=1"
"$out/stall" >"$out/stall.log" 2>&1
rc=$?
if [ "$rc" != 0 ] || grep -q 'ThreadSanitizer' "$out/stall.log"; then
  echo "FAILED - exit $rc, log $out/stall.log:"; grep -v '^stall: ' "$out/stall.log" | head -n 60; exit 1
fi
grep -v '^stall: ' "$out/stall.log"
echo "stall lines printed by the watchdog: $(grep -c '^stall: ' "$out/stall.log")"
