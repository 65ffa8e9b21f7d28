#!/usr/bin/env bash
# harness/tests/labrt-usage.sh - lab_main's option parsing (harness/lib/labrt.c), through real
# lab binaries: a usage error prints its reason then the usage on stderr and exits 2; --help
# prints the usage on stdout and exits 0. Needs $BUILD/bin (make test sets BUILD). Exit 0 = pass.

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
BIN=$ROOT/${BUILD:-build}/bin
T=$(mktemp -d "${TMPDIR:-/tmp}/loopholes-labrt.XXXXXX") || exit 1
trap 'rm -rf "$T"' EXIT
failures=0
pass() { echo "ok   - $*"; }
fail() { echo "FAIL - $*"; failures=$((failures + 1)); }

# expect RC STREAM TEXT BINARY ARGS...: runs BINARY ARGS (killed after 5 s: a usage error must
# not start a server), checks the exit status and that TEXT and "usage:" are on STREAM.
expect() {
  local want_rc=$1 stream=$2 text=$3 bin=$4 rc out
  shift 4
  timeout 5 "$BIN/$bin" "$@" >"$T/stdout" 2>"$T/stderr" </dev/null
  rc=$?
  out=$(cat "$T/$stream")
  if [ "$rc" != "$want_rc" ]; then
    fail "$bin $*: exit $rc, want $want_rc; stderr: $(head -n 2 "$T/stderr")"
  elif [[ "$out" != *"$text"* || "$out" != *"usage: $bin"* ]]; then
    fail "$bin $*: want '$text' then the usage on $stream, got: $(head -n 3 "$T/$stream")"
  else
    pass "$bin $*: exit $rc, '$text' on $stream"
  fi
}

for b in lab01-solution lab02-solution; do
  [ -x "$BIN/$b" ] || { echo "FAIL - $BIN/$b not built (make BUILD=${BUILD:-build} all)"; exit 1; }
done

expect 2 stderr "unknown option '--bogus'" lab01-solution --bogus
expect 2 stderr "unknown option '--bogus'" lab01-solution --bogus=3
expect 2 stderr "unknown option '--bogus'" lab01-solution --delay-ms 5 --bogus
expect 2 stderr "option --delay-ms needs a value" lab01-solution --delay-ms
expect 2 stderr "option --port needs a value" lab01-solution --port
expect 2 stderr "--delay-ms wants a number >= 0, not 'abc'" lab01-solution --delay-ms abc
expect 2 stderr "unexpected argument 'stray'" lab01-solution stray
# lab_create returning UV_EINVAL: options that parse but do not fit the lab.
expect 2 stderr "lab_create: invalid argument" lab02-solution --port 0 --pool 0
expect 2 stderr "--header-timeout-ms wants a number of ms from 1 to 3600000, not '0'" lab01-solution --header-timeout-ms 0
expect 2 stderr "--idle-timeout-ms wants a number of ms from 1 to 3600000, not 'x'" lab01-solution --idle-timeout-ms=x
expect 2 stderr "--stall-ms wants a number of ms from 1 to 3600000, not '-1'" lab01-solution --stall-ms -1
expect 0 stdout "--delay-ms N" lab01-solution --help
expect 0 stdout "--header-timeout-ms N" lab01-solution --help
expect 0 stdout "--stall-ms N" lab01-solution --help
if grep -q . "$T/stderr"; then fail "--help wrote on stderr: $(head -n 2 "$T/stderr")"; fi
expect 0 stdout "--reuseport" lab01-solution --help

# --reuseport (lab 11's rolling restart): a second instance listens on the first one's port; a
# third without the flag is refused (address in use, exit 1). Each is stopped by its own pid.
"$BIN/lab01-solution" --port 0 --reuseport >"$T/a.out" 2>"$T/a.err" </dev/null & a_pid=$!
for _ in $(seq 50); do grep -q "listening on" "$T/a.out" && break; sleep 0.1; done
port=$(sed -n 's/^listening on http:.*:\([0-9]*\)$/\1/p' "$T/a.out")
if [ -z "$port" ]; then
  fail "lab01-solution --port 0 --reuseport did not listen: $(head -n 2 "$T/a.err")"
else
  "$BIN/lab01-solution" --port "$port" --reuseport >"$T/b.out" 2>"$T/b.err" </dev/null & b_pid=$!
  for _ in $(seq 50); do grep -q "listening on" "$T/b.out" && break; sleep 0.1; done
  if grep -q "listening on http://127.0.0.1:$port" "$T/b.out"; then
    pass "--reuseport: a second instance listens on port $port too"
  else
    fail "--reuseport: a second instance did not listen on port $port: $(head -n 2 "$T/b.err")"
  fi
  timeout 5 "$BIN/lab01-solution" --port "$port" >"$T/c.out" 2>"$T/c.err" </dev/null
  rc=$?
  if [ "$rc" = 1 ] && grep -q "address already in use" "$T/c.err"; then
    pass "without --reuseport: port $port in use, exit 1"
  else
    fail "without --reuseport a third instance on port $port: exit $rc, $(head -n 1 "$T/c.err")"
  fi
  kill -TERM "$b_pid" 2>/dev/null; wait "$b_pid" 2>/dev/null
fi
kill -TERM "$a_pid" 2>/dev/null; wait "$a_pid" 2>/dev/null

[ "$failures" = 0 ] && echo "all passed" || echo "$failures failed"
[ "$failures" = 0 ]
