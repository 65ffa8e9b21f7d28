# queue.gp - lab 05's own picture, over time: queue depth, RSS, accept-to-processed latency, acked vs refused.
#
#   files      timeline CSVs, space separated (written by labs/05-unbounded-queue/bench.c: t_s,
#              offered_rps, queue_depth, rss_mib, latency_ms, queue_age_ms, acked_rps, refused_rps, ...)
#   variants   the variant of each file, in the same order ("solution-flow" is drawn grey)
#   queue_cap  Q, drawn as a dashed line on the queue panel (0: none)
#   plottitle  the overall title
if (!exists("plotdir")) plotdir = "harness/plot"
load plotdir."/common.gp"
if (!exists("variants")) variants = "pitfall solution exercise"
if (!exists("files")) files = "timeline-pitfall.csv timeline-solution.csv timeline-exercise.csv"
if (!exists("queue_cap")) queue_cap = 0
if (!exists("plottitle")) plottitle = "lab 05: an unbounded queue versus backpressure"
# solution-flow: the solution in --mode flow, dotted in the solution's green
vc(v) = v eq "solution-flow" ? vcolor("solution") : vcolor(v)
vd(v) = v eq "solution-flow" ? 3 : vdash(v)

set multiplot layout 2,2 title plottitle font ",12"
set key top left font ",9" spacing 1.0
set xlabel "time since the variant started (s)"

# 1. queue depth, log scale: the pitfall's grows by (offered - drain) every second
set title "queue depth (events, log)"
set logscale y 10
set yrange [1:*]
set ylabel "events queued"
if (queue_cap > 0) {
  set arrow 1 from graph 0, first queue_cap to graph 1, first queue_cap nohead dt 2 lc rgb "#000000"
  set label 1 sprintf("Q = %d", queue_cap) at graph 0.99, first queue_cap right offset 0, 0.6
}
plot for [i = 1:words(files)] word(files, i) using "t_s":(column("queue_depth") >= 1 ? column("queue_depth") : 1) \
  with lines lw 2 dt vd(word(variants, i)) lc rgb vc(word(variants, i)) title word(variants, i)
unset arrow 1
unset label 1

# 2. RSS: linear growth while the queue grows
set title "resident memory (MiB)"
unset logscale y
set yrange [*:*]
set ylabel "RSS (MiB)"
plot for [i = 1:words(files)] word(files, i) using "t_s":"rss_mib" \
  with lines lw 2 dt vd(word(variants, i)) lc rgb vc(word(variants, i)) title word(variants, i)

# 3. accept-to-processed latency of the last delivered event, log scale
set title "acknowledged -> delivered upstream (ms, log)"
set logscale y 10
set yrange [10:*]
set ylabel "last delivered event (ms)"
plot for [i = 1:words(files)] word(files, i) using "t_s":(column("latency_ms") > 10 ? column("latency_ms") : 10) \
  with lines lw 2 dt vd(word(variants, i)) lc rgb vc(word(variants, i)) title word(variants, i)

# 4. acknowledged (solid) and refused (points) per second
set title "acked (lines), refused 503 (points), per s"
set bmargin keymargin(2)
unset logscale y
set yrange [0:*]
set ylabel "events/s"
plot for [i = 1:words(files)] word(files, i) using "t_s":"acked_rps" \
       with lines lw 2 dt vd(word(variants, i)) lc rgb vc(word(variants, i)) title word(variants, i)." acked", \
     for [i = 1:words(files)] word(files, i) using "t_s":(column("refused_rps") > 0 ? column("refused_rps") : NaN) \
       with points pt vpoint(word(variants, i)) ps 0.5 lc rgb vc(word(variants, i)) title word(variants, i)." refused"
unset multiplot
