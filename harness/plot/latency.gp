# latency.gp - p99 latency vs offered load, log scale, one line per variant (latency.*).
#
#   csv        sweep.csv (columns used: variant, offered_rps, p99_ms)
#   variants   the variants to draw
#   plottitle  what the reader should see
#   delay      the lab's delay D in ms: no answer can come sooner (0: none)
#   timeout    loadgen's timeout in ms: an unanswered request counts as this (0: none)
if (!exists("plotdir")) plotdir = "harness/plot"
load plotdir."/common.gp"
if (!exists("csv")) csv = "sweep.csv"
if (!exists("variants")) variants = "pitfall solution exercise"
if (!exists("plottitle")) plottitle = "p99 latency vs offered load"
if (!exists("delay")) delay = 0
if (!exists("timeout")) timeout = 0

stats csv using "offered_rps" nooutput
xmax = STATS_max
set xrange [0:xmax * 1.04]
set logscale y 10
set format y "%g"
stats csv using (column("offered_rps") > 0 ? column("p99_ms") : NaN) nooutput
ylo = (delay > 0 && delay < STATS_min ? delay : STATS_min) / 2.5
yhi = (timeout > STATS_max ? timeout : STATS_max) * 2.5
set yrange [fmax(ylo, 0.01):yhi]

set title plottitle
set bmargin keymargin(1)
set xlabel "offered load (req/s, open loop: latency counted from the intended send time)"
set ylabel "p99 latency (ms, log scale)"

if (delay > 0) {
  set arrow 1 from graph 0, first delay to graph 1, first delay nohead dt 2 lc rgb "#000000"
  # under the line: no answer can be faster, so no data lives there
  set label 1 sprintf("D = %.0f ms: the fastest possible answer", delay) at graph 0.99, first delay \
      right offset 0, -0.8 tc rgb "#000000"
}
if (timeout > 0) {
  set arrow 2 from graph 0, first timeout to graph 1, first timeout nohead dt 3 lc rgb "#555555"
  set label 2 sprintf("timeout %.0f ms: unanswered requests count as this", timeout) \
      at graph 0.99, first timeout right offset 0, 0.7 tc rgb "#555555"
}

plot for [v in variants] csv using \
       ((strcol("variant") eq v && column("offered_rps") > 0) ? column("offered_rps") : NaN):(fmax(column("p99_ms"), 0.01)) \
       with linespoints lw 2 dt vdash(v) pt vpoint(v) ps 1.3 lc rgb vcolor(v) title v." p99"
