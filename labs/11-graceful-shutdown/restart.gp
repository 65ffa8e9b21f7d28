# restart.gp - lab 11's own picture (labs/11-graceful-shutdown/bench.c): a rolling restart under
# open-loop load; requests that failed per 100 ms, by the time they were sent, one line per variant.
#
#   csv        restart-timeline.csv (variant, t_s, sent, failed)
#   variants   the variants to draw
#   sig_s      when instance A got SIGTERM (s from the start of the load)
#   b_s        when instance B started on the same port (SO_REUSEPORT)
#   plottitle  what the reader should see
if (!exists("plotdir")) plotdir = "harness/plot"
load plotdir."/common.gp"
if (!exists("csv")) csv = "restart-timeline.csv"
if (!exists("variants")) variants = "pitfall solution exercise"
if (!exists("sig_s")) sig_s = 0
if (!exists("b_s")) b_s = 0
if (!exists("plottitle")) plottitle = "Rolling restart"

set title plottitle
set xlabel "send time (s from the start of the load)"
set ylabel "requests failed per 100 ms"
set format y "%g"
set yrange [0:*]
set offsets 0, 0, 1, 0
if (sig_s > 0) {
  set arrow 1 from first sig_s, graph 0 to first sig_s, graph 1 nohead dt 2 lc rgb "#000000"
  set label 1 "SIGTERM to A" at first sig_s, graph 0.95 left offset 0.5, 0 tc rgb "#000000"
}
if (b_s > 0) {
  set arrow 2 from first b_s, graph 0 to first b_s, graph 1 nohead dt 3 lc rgb "#555555"
  set label 2 "B listens too" at first b_s, graph 0.88 left offset 0.5, 0 tc rgb "#555555"
}
plot for [v in variants] csv using (strcol("variant") eq v ? column("t_s") : NaN):(column("failed")) \
       with steps lw 2 dt vdash(v) lc rgb vcolor(v) title v
