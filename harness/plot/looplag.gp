# looplag.gp - loop lag over time, every variant on the same axes, log scale (looplag.*).
#
#   files      the stats CSVs, space separated (stats-pitfall.csv stats-solution.csv ...),
#              columns t_s, offered_rps and lagcol (written by bench_stats_append)
#   variants   the variant of each file, in the same order
#   lagcol     the column to draw (e.g. "loop_lag_max_ms")
#   plottitle  what the reader should see
#   delay      the lab's delay D in ms (0: none)
#   loadfile   the stats CSV whose offered_rps is drawn in grey against the right axis
#              (default: the first file; pass the one with the most steps)
if (!exists("plotdir")) plotdir = "harness/plot"
load plotdir."/common.gp"
if (!exists("variants")) variants = "pitfall solution exercise"
if (!exists("files")) files = "stats-pitfall.csv stats-solution.csv stats-exercise.csv"
if (!exists("lagcol")) lagcol = "loop_lag_max_ms"
if (!exists("plottitle")) plottitle = "event-loop lag over the sweep"
if (!exists("delay")) delay = 0
if (!exists("loadfile")) loadfile = word(files, 1)
floor_ms = 0.05

set logscale y 10
set format y "%g"
set yrange [floor_ms:*]
set y2range [0:*]
set y2tics
set ytics nomirror
set title plottitle
set bmargin keymargin(2)
set xlabel "time since the variant started (s); one step of offered load after another"
set ylabel "loop lag (ms, log scale): how late a timer due now fires"
set y2label "offered load (req/s)" tc rgb "#999999"


# D goes in the key: any place on the plot may hold data.
plot (delay > 0 ? delay : NaN) with lines dt 2 lc rgb "#000000" \
       title (delay > 0 ? sprintf("D = %.0f ms", delay) : ""), \
     loadfile using "t_s":(column("offered_rps") > 0 ? column("offered_rps") : NaN) axes x1y2 \
       with steps lw 1 lc rgb "#bbbbbb" title "offered load (right axis)", \
     for [i = 1:words(files)] word(files, i) using "t_s":(fmax(column(lagcol), floor_ms)) \
       with lines lw 2 dt vdash(word(variants, i)) lc rgb vcolor(word(variants, i)) title word(variants, i)
