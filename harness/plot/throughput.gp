# throughput.gp - achieved vs offered load, one line per variant (results/NN-slug/throughput.*).
#
#   csv        sweep.csv (columns used: variant, offered_rps, achieved_rps)
#   variants   "pitfall solution exercise": the variants to draw, in this order
#   plottitle  what the reader should see
#   nd         the Little's-law limit N/D in req/s (0: none)
#   nd_text    its label, e.g. "N/D = 100 conns / 10 ms = 10000 req/s"
#   blocked    the blocked-loop limit 1000/D in req/s (0: none)
#   ceiling    the trivial-handler ceiling in req/s (0: not measured)
#   peaks      each variant's closed-loop peak in req/s, in the order of variants (0: none),
#              drawn as a dotted line in the variant's colour
#   linear     1 for linear axes; by default both axes are logarithmic, so that a variant stuck
#              at 100 req/s is as visible as one following the load to 8000
# Closed-loop rows (offered_rps 0) are not drawn here: the summary reports them as peaks.
if (!exists("plotdir")) plotdir = "harness/plot"
load plotdir."/common.gp"
if (!exists("csv")) csv = "sweep.csv"
if (!exists("variants")) variants = "pitfall solution exercise"
if (!exists("plottitle")) plottitle = "achieved vs offered load"
if (!exists("nd")) nd = 0
if (!exists("nd_text")) nd_text = sprintf("N/D = %.0f req/s", nd)
if (!exists("blocked")) blocked = 0
if (!exists("ceiling")) ceiling = 0
if (!exists("linear")) linear = 0
if (!exists("peaks")) peaks = ""

stats csv using (column("offered_rps") > 0 ? column("offered_rps") : NaN) nooutput
xmin = STATS_min
xmax = STATS_max
stats csv using (column("offered_rps") > 0 ? column("achieved_rps") : NaN) nooutput
amin = STATS_min
top = fmax(xmax, nd > 0 && nd < 3 * xmax ? nd : 0)
if (linear) {
  set xrange [0:xmax * 1.04]
  set yrange [0:top * 1.12]
  ylo = 0
} else {
  set logscale xy 10
  set format x "%g"
  set format y "%g"
  ylo = (blocked > 0 && blocked < amin ? blocked : amin) / 2.5
  set xrange [xmin / 1.25:xmax * 1.25]
  set yrange [ylo:top * 1.6]
}
ytop = linear ? top * 1.12 : top * 1.6

set title plottitle
set bmargin keymargin(3)
if (!isdumb) set key vertical maxrows 3 width -8
set xlabel "offered load (req/s, open loop: constant arrival rate)".(linear ? "" : ", log scale")
set ylabel "achieved throughput (responses/s".(linear ? ")" : ", log scale)")

if (nd > 0 && nd <= ytop) {
  set arrow 1 from graph 0, first nd to graph 1, first nd nohead dt 2 lw 1.5 lc rgb "#000000"
  set label 1 nd_text." (Little's law)" at graph 0.99, first nd right offset 0, 0.7 tc rgb "#000000"
}
if (blocked > 0 && blocked >= ylo) {
  set arrow 2 from graph 0, first blocked to graph 1, first blocked nohead dt 4 lw 1.5 lc rgb "#d62728"
  set label 2 sprintf("blocked loop: 1000/D = %.0f req/s", blocked) at graph 0.99, first blocked \
      right offset 0, 0.7 tc rgb "#d62728"
}
if (ceiling > 0 && ceiling <= ytop) {
  set arrow 3 from graph 0, first ceiling to graph 1, first ceiling nohead dt 4 lc rgb "#555555"
  set label 3 sprintf("trivial handler ceiling = %.0f req/s", ceiling) at graph 0.99, \
      first ceiling right offset 0, 0.7 tc rgb "#555555"
}

npeaks = 0
do for [i = 1:words(peaks)] {
  p = word(peaks, i) + 0
  if (p > ylo && p < ytop) {
    set arrow (10 + i) from graph 0, first p to graph 1, first p nohead dt 3 lw 1.5 \
        lc rgb vcolor(word(variants, i))
    npeaks = npeaks + 1
  }
}

plot x with lines dt 2 lc rgb "#aaaaaa" title "ideal: achieved = offered", \
     (ceiling > ytop ? ceiling : NaN) with lines dt 4 lc rgb "#555555" \
       title (ceiling > ytop ? sprintf("trivial-handler ceiling %.0f req/s (off the chart)", ceiling) : ""), \
     NaN with lines dt 3 lw 1.5 lc rgb "#555555" \
       title (npeaks > 0 ? "dotted: each variant's peak (closed loop)" : ""), \
     for [v in variants] csv using \
       ((strcol("variant") eq v && column("offered_rps") > 0) ? column("offered_rps") : NaN):"achieved_rps" \
       with linespoints lw 2 dt vdash(v) pt vpoint(v) ps 1.3 lc rgb vcolor(v) title v
