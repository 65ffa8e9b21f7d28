# overtime.gp - the common picture "a stats field over time, one line per variant"
# (bench_plot(b, "overtime", ...)). One CSV with `variant` and `t_s` columns (a sampled table).
#
#   csv        the table (e.g. "timeline.csv")
#   variants   the variants to draw, in this order
#   ycol       the column to draw; ylabel its label; scale multiplies it (default 1)
#   logy       1 for a log scale (default 0)
#   plottitle  what the reader should see
if (!exists("plotdir")) plotdir = "harness/plot"
load plotdir."/common.gp"
if (!exists("variants")) variants = "pitfall solution exercise"
if (!exists("ycol")) ycol = "inflight"
if (!exists("ylabel")) ylabel = ycol
if (!exists("scale")) scale = 1
if (!exists("logy")) logy = 0
if (!exists("plottitle")) plottitle = ylabel." over time"
set title plottitle
set xlabel "time (s)"
set ylabel ylabel
set format y "%g"
if (logy) { set logscale y 10 } else { set yrange [0:*] }
set bmargin keymargin(1)
plot for [v in variants] csv using (strcol("variant") eq v ? column("t_s") : NaN):(column(ycol) * scale) \
       with lines lw 2 dt vdash(v) lc rgb vcolor(v) title v
