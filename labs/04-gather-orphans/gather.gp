# gather.gp - lab 04's own picture (labs/04-gather-orphans/bench.c): the latency bars per
# variant, mixed load and failing-only; its time plots use the shared harness/plot/overtime.gp.
#
#   kind       "latency" (the only one)
#   csv        latency.csv
#   variants   the variants to draw
#   plottitle  what the reader should see
#   fail_ms    latency of the failing call: no failure can be answered sooner (latency plot)
#   slow_ms    latency of the slow sibling
if (!exists("plotdir")) plotdir = "harness/plot"
load plotdir."/common.gp"
if (!exists("kind")) kind = "latency"
if (!exists("csv")) csv = "latency.csv"
if (!exists("variants")) variants = "pitfall solution exercise"
if (!exists("plottitle")) plottitle = "lab 04"
if (!exists("fail_ms")) fail_ms = 0
if (!exists("slow_ms")) slow_ms = 0

set title plottitle

if (kind eq "latency") {
  set style data histogram
  set style histogram cluster gap 1
  set style fill solid 0.85 border -1
  set boxwidth 0.9
  set logscale y 10
  set format y "%g"
  set yrange [1:(slow_ms > 0 ? slow_ms * 10 : 10000)]
  set ylabel "latency (ms, log scale; open loop)"
  set xlabel "variant"
  set key top right
  if (fail_ms > 0) {
    set arrow 1 from graph 0, first fail_ms to graph 1, first fail_ms nohead dt 2 lc rgb "#000000"
    set label 1 sprintf("failing call %.0f ms", fail_ms) at graph 0.01, first fail_ms left \
        offset 0, 0.7 tc rgb "#000000"
    set arrow 2 from graph 0, first 2 * fail_ms to graph 1, first 2 * fail_ms nohead dt 3 \
        lc rgb "#555555"
    set label 2 "2x: target for the\nfailure path's p99" at graph 0.01, \
        first 2 * fail_ms left offset 0, 1.2 tc rgb "#555555"
  }
  if (slow_ms > 0) {
    set arrow 3 from graph 0, first slow_ms to graph 1, first slow_ms nohead dt 2 lc rgb "#d62728"
    set label 3 sprintf("slow sibling %.0f ms", slow_ms) at graph 0.01, first slow_ms left \
        offset 0, 0.7 tc rgb "#d62728"
  }
  plot csv using "failing_p50":xtic(1) title "failing only, p50" lc rgb "#9ecae1", \
       '' using "failing_p90" title "failing only, p90" lc rgb "#6baed6", \
       '' using "failing_p99" title "failing only, p99" lc rgb "#3182bd", \
       '' using "mixed_p99" title "mixed (half fail), p99" lc rgb "#31a354"
}
