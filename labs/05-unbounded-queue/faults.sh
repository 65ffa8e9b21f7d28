#!/usr/bin/env bash
# faults.sh - lab 05's delivery under faults, measured: a 1 s upstream outage (503, reset, no
# answer) at 600 events/s, and upstream latencies near the forward timeout. For each it prints
# acknowledged, refused, delivered (the upstream's events_unique), duplicates (events_duplicate)
# and lost. The README's table came from it.
#   labs/05-unbounded-queue/faults.sh            the solution, from build/
#   V=pitfall B=build labs/05-unbounded-queue/faults.sh
set -u
cd "$(dirname "$0")/../.." || exit 1
B=${B:-build}; V=${V:-solution}
T=$(mktemp -d); UP="" LAB=""
trap 'kill $LAB $UP 2>/dev/null; rm -rf "$T"' EXIT
trap 'exit 1' INT TERM PIPE
[ -x "$B/bin/lab05-$V" ] && [ -x "$B/bin/upstream" ] && [ -x "$B/bin/loadgen" ] || { echo "faults.sh: build first (make BUILD=$B)" >&2; exit 2; }
body=$(printf '%1000s' '')
port_of() { sed -n 's/.*listening on http:\/\/127.0.0.1:\([0-9]*\).*/\1/p' "$1" | head -1; }
start() { # $1 = upstream args, $2 = lab args
  "$B"/bin/upstream --port 0 $1 > $T/f-up.out 2>$T/f-up.err & UP=$!
  for i in $(seq 50); do UPP=$(port_of $T/f-up.out); [ -n "$UPP" ] && break; sleep 0.1; done
  "$B"/bin/lab05-$V --port 0 --upstream http://127.0.0.1:$UPP $2 > $T/f-lab.out 2>$T/f-lab.err & LAB=$!
  for i in $(seq 50); do LP=$(port_of $T/f-lab.out); [ -n "$LP" ] && break; sleep 0.1; done
}
j() { tr ',{}' '\n\n\n' | sed -n "s/^\"$1\":\([0-9.]*\)$/\1/p"; }
report() {
  for i in $(seq 600); do d=$(curl -s 127.0.0.1:$LP/debug/stats | j queue_depth); [ "$d" = 0 ] && break; sleep 0.1; done
  ls=$(curl -s 127.0.0.1:$LP/debug/stats); us=$(curl -s 127.0.0.1:$UPP/stats)
  a=$(echo "$ls" | j acked); r=$(echo "$ls" | j refused); f=$(echo "$ls" | j forwarded); e=$(echo "$ls" | j forward_errors); l=$(echo "$ls" | j lost)
  u=$(echo "$us" | j events_unique); du=$(echo "$us" | j events_duplicate)
  echo "$1: acknowledged $a, refused $r, delivered unique $u, duplicates $du, lost $((a - u)) (lab: forwarded $f, lost $l, failed attempts $e, held $d, drained in ${i}00 ms)"
  kill $LAB; wait $LAB 2>/dev/null; kill $UP; wait $UP 2>/dev/null; LAB="" UP=""
}
# 0) 600 events/s for 3 s into --workers 4 --queue-cap 100; the upstream answers 503 from 1 s to 2 s (--outage).
start "--latency-ms 20 --outage 1000-2000" "--workers 4 --queue-cap 100"
curl -s -X POST 127.0.0.1:$UPP/stats/reset >/dev/null
"$B"/bin/loadgen http://127.0.0.1:$LP/events -m POST -b "$body" -r 600 -c 64 -d 3 -q > $T/f-lg0.csv
report "outage 1 s (--outage 1000-2000, 503) at 600/s"
start "--latency-ms 20 --outage 1000-2000 --outage-mode reset" "--workers 4 --queue-cap 100"
curl -s -X POST 127.0.0.1:$UPP/stats/reset >/dev/null
"$B"/bin/loadgen http://127.0.0.1:$LP/events -m POST -b "$body" -r 600 -c 64 -d 3 -q > $T/f-lg0b.csv
report "outage 1 s (--outage-mode reset) at 600/s"
# 1) 600 events/s for 3 s into --workers 4 --queue-cap 100; the upstream stops (SIGSTOP) from 1 s to 2 s.
start "--latency-ms 20" "--workers 4 --queue-cap 100 --forward-timeout-ms ${FT:-1000}"
"$B"/bin/loadgen http://127.0.0.1:$LP/events -m POST -b "$body" -r 600 -c 64 -d 3 -q > $T/f-lg1.csv &
LG=$!; sleep 1; kill -STOP $UP; sleep 1; kill -CONT $UP; wait $LG
report "outage 1 s (SIGSTOP) at 600/s, forward timeout ${FT:-1000} ms"
# 2) the upstream takes 450-550 ms, the forward timeout is 500 ms.
start "--latency-ms 450 --jitter-ms 100" "--workers 16 --queue-cap 100 --forward-timeout-ms 500"
"$B"/bin/loadgen http://127.0.0.1:$LP/events -m POST -b "$body" -r 30 -c 64 -d 5 -q > $T/f-lg2.csv
report "latency 450-550 ms vs forward timeout 500 ms, 30/s for 5 s"
# 2b) latency 1.4-1.6x the timeout (as in the suite): every first attempt times out.
start "--latency-ms 700 --jitter-ms 100" "--workers 16 --queue-cap 100 --forward-timeout-ms 500"
"$B"/bin/loadgen http://127.0.0.1:$LP/events -m POST -b "$body" -r 10 -c 64 -d 5 -q > $T/f-lg2b.csv
report "latency 700-800 ms vs forward timeout 500 ms, 10/s for 5 s"
# 3) the same, but the upstream finishes work whose client left (--workers 64: a pool that does not see the cancel).
start "--latency-ms 450 --jitter-ms 100 --workers 64" "--workers 16 --queue-cap 100 --forward-timeout-ms 500"
"$B"/bin/loadgen http://127.0.0.1:$LP/events -m POST -b "$body" -r 30 -c 64 -d 5 -q > $T/f-lg3.csv
report "same, upstream completes abandoned work (--workers 64)"
