# fanout.gp - lab 03's own plots, from fanout.csv (labs/03-unbounded-fanout/bench.c writes both).
#
#   csv       fanout.csv (columns used: sweep, variant, n, k, total_ms, err, peak_fds,
#             peak_rss_kb, up_inflight_peak)
#   variants  "pitfall solution exercise": the variants to draw, in this order
#   which     time      total time of one batch vs N, with the ideal ceil(N/K) x latency
#             fds       peak open fds and peak RSS of the service vs N (two panels)
#             inflight  the upstream's peak requests in flight vs N, with K and N drawn
#             errors    failed items of the batch vs N
#             k         total time vs K at N = ksweepn, with the ideal ceil(N/K) x latency
#   latency   the upstream's latency per item (ms); kfixed: K of the N sweep;
#   ksweepn   N of the K sweep; nofile: the service's fd limit (drawn on the fds panel)
if (!exists("plotdir")) plotdir = "harness/plot"
load plotdir."/common.gp"
if (!exists("csv")) csv = "fanout.csv"
if (!exists("variants")) variants = "pitfall solution exercise"
if (!exists("which")) which = "time"
if (!exists("latency")) latency = 20
if (!exists("kfixed")) kfixed = 16
if (!exists("ksweepn")) ksweepn = 1000
if (!exists("nofile")) nofile = 0

set samples 1000
set logscale x 10
set format x "%g"
set format y "%g"
isn(v) = strcol("sweep") eq "n" && strcol("variant") eq v
isk(v) = strcol("sweep") eq "k" && strcol("variant") eq v
ideal(n, k) = ceil(n / k) * latency
# The x range of the sweep drawn, with a margin on the log scale.
stats csv using (strcol("sweep") eq (which eq "k" ? "k" : "n") ? column(which eq "k" ? "k" : "n") : NaN) nooutput
set xrange [STATS_min / 1.5:STATS_max * 1.5]

if (which eq "time") {
  set bmargin keymargin(4)
  set title sprintf("one batch of N items: total time vs N (K = %d, upstream latency %d ms)", kfixed, latency)
  set xlabel "N, items in the batch (log scale)"
  set ylabel "total time of the batch (ms, log scale)"
  set logscale y 10
  plot ideal(x, kfixed) with lines dt 2 lw 1.5 lc rgb "#000000" \
         title sprintf("ideal with the limit: ceil(N/K) x latency = ceil(N/%d) x %d ms", kfixed, latency), \
       latency with lines dt 3 lw 1.5 lc rgb "#888888" title sprintf("all at once: one latency (%d ms)", latency), \
       for [v in variants] csv using (isn(v) ? column("n") : NaN):"total_ms" \
         with linespoints lw 2 dt vdash(v) pt vpoint(v) ps 1.3 lc rgb vcolor(v) title v
}

if (which eq "fds") {
  set bmargin keymargin(1)
  set multiplot layout 1,2 title sprintf("what one batch of N items costs the service (K = %d)", kfixed)
  set logscale y 10
  set xlabel "N, items in the batch (log scale)"
  set title "peak open file descriptors"
  set ylabel "fds (log scale)"
  if (nofile > 0) {
    set arrow 1 from graph 0, first nofile to graph 1, first nofile nohead dt 2 lw 1.5 lc rgb "#000000"
    set label 1 sprintf("fd limit %d (EMFILE above)", nofile) at graph 0.02, first nofile offset 0, 0.7 \
        tc rgb "#000000"
  }
  plot for [v in variants] csv using (isn(v) ? column("n") : NaN):"peak_fds" \
         with linespoints lw 2 dt vdash(v) pt vpoint(v) ps 1.3 lc rgb vcolor(v) title v
  unset arrow 1
  unset label 1
  set title "peak resident memory (VmHWM)"
  set ylabel "MB (log scale)"
  plot for [v in variants] csv using (isn(v) ? column("n") : NaN):(column("peak_rss_kb") / 1024.0) \
         with linespoints lw 2 dt vdash(v) pt vpoint(v) ps 1.3 lc rgb vcolor(v) title v
  unset multiplot
}

if (which eq "inflight") {
  set bmargin keymargin(2)
  set title sprintf("what the upstream sees: its peak requests in flight vs N (K = %d)", kfixed)
  set xlabel "N, items in the batch (log scale)"
  set ylabel "upstream's peak in-flight requests (log scale)"
  set logscale y 10
  plot x with lines dt 3 lw 1.5 lc rgb "#888888" title "N: every item at once", \
       kfixed with lines dt 2 lw 1.5 lc rgb "#000000" title sprintf("K = %d: the limit", kfixed), \
       for [v in variants] csv using (isn(v) ? column("n") : NaN):"up_inflight_peak" \
         with linespoints lw 2 dt vdash(v) pt vpoint(v) ps 1.3 lc rgb vcolor(v) title v
}

if (which eq "errors") {
  set bmargin keymargin(1)
  set title sprintf("failed items in one batch vs N (service fd limit %d)", nofile)
  set xlabel "N, items in the batch (log scale)"
  set ylabel "failed items (EMFILE, refused, timeouts)"
  set yrange [0:*]
  if (nofile > 0) {
    set arrow 1 from first nofile, graph 0 to first nofile, graph 1 nohead dt 2 lw 1.5 lc rgb "#000000"
    set label 1 sprintf("N = fd limit %d: one socket per item no longer fits", nofile) \
        at first nofile, graph 0.5 right offset -1, 0 tc rgb "#000000"
  }
  plot for [v in variants] csv using (isn(v) ? column("n") : NaN):"err" \
         with linespoints lw 2 dt vdash(v) pt vpoint(v) ps 1.3 lc rgb vcolor(v) title v
}

if (which eq "k") {
  set bmargin keymargin(3)
  set title sprintf("choosing K: total time of a batch of N = %d vs K (upstream latency %d ms)", ksweepn, latency)
  set xlabel "K, the limit on fetches in flight (log scale)"
  set ylabel "total time of the batch (ms, log scale)"
  set logscale y 10
  plot ideal(ksweepn, x) with lines dt 2 lw 1.5 lc rgb "#000000" \
         title sprintf("ideal: ceil(N/K) x latency = ceil(%d/K) x %d ms", ksweepn, latency), \
       for [v in variants] csv using (isk(v) ? column("k") : NaN):"total_ms" \
         with linespoints lw 2 dt vdash(v) pt vpoint(v) ps 1.3 lc rgb vcolor(v) title v
}
