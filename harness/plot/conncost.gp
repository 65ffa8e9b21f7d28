# conncost.gp - lab 02's plots, from conncost.csv (harness/scripts/bench-conncost.sh writes both).
#
#   csv       conncost.csv (columns used: variant, offered_rps, ok_rps, err_pct, p50_ms, p99_ms,
#             up_conns_per_s)
#   variants  "pitfall solution exercise": the variants to draw, in this order
#   which     latency     p50 (solid) and p99 (dotted) vs offered load, log scale
#             throughput  ok responses/s vs offered load, with y = x and the M / (C + L) limit
#             errors      errors (% of requests sent) vs offered load
#             conns       upstream connections opened per second vs offered load, with y = x
#   latency, cost, maxconns, pool, limit: the knobs (ms, ms, connections, connections, req/s)
if (!exists("plotdir")) plotdir = "harness/plot"
load plotdir."/common.gp"
if (!exists("csv")) csv = "conncost.csv"
if (!exists("variants")) variants = "pitfall solution exercise"
if (!exists("which")) which = "latency"
if (!exists("latency")) latency = 5
if (!exists("cost")) cost = 66
if (!exists("maxconns")) maxconns = 8
if (!exists("pool")) pool = 8
if (!exists("limit")) limit = maxconns * 1000.0 / (cost + latency)

set samples 1000
set format x "%g"
set format y "%g"
set xlabel "offered load (requests/s)"
set xrange [0:*]
isv(v) = strcol("variant") eq v
knobs = sprintf("upstream latency %g ms, connect cost %g ms, at most %g connections", latency, cost, maxconns)

if (which eq "latency") {
  set title "latency vs offered load (".knobs.")"
  set ylabel "latency (ms, log scale): p50 solid, p99 dotted"
  set bmargin keymargin(3)
  set logscale y 10
  plot latency with lines dt 2 lw 1.5 lc rgb "#000000" title sprintf("upstream latency L = %g ms", latency), \
       latency + cost with lines dt 3 lw 1.5 lc rgb "#888888" \
         title sprintf("L + connect cost C = %g ms", latency + cost), \
       for [v in variants] csv using (isv(v) ? column("offered_rps") : NaN):"p50_ms" \
         with linespoints lw 2 dt vdash(v) pt vpoint(v) ps 1.3 lc rgb vcolor(v) title v." p50", \
       for [v in variants] csv using (isv(v) ? column("offered_rps") : NaN):"p99_ms" \
         with linespoints lw 1.5 dt 3 pt vpoint(v) ps 0.9 lc rgb vcolor(v) title v." p99"
}

if (which eq "throughput") {
  set title "answered (200) per second vs offered load"
  set bmargin keymargin(5)
  set ylabel "ok responses/s"
  set yrange [0:*]
  plot x with lines dt 3 lw 1.5 lc rgb "#888888" title "everything offered", \
       limit with lines dt 2 lw 1.5 lc rgb "#000000" \
         title sprintf("a connection per request: M / (C + L) = %.0f req/s", limit), \
       for [v in variants] csv using (isv(v) ? column("offered_rps") : NaN):"ok_rps" \
         with linespoints lw 2 dt vdash(v) pt vpoint(v) ps 1.3 lc rgb vcolor(v) title v
}

if (which eq "errors") {
  set title "errors vs offered load: timeouts (504) and failed calls (502)"
  set ylabel "errors (% of requests sent)"
  set yrange [0:100]
  plot for [v in variants] csv using (isv(v) ? column("offered_rps") : NaN):"err_pct" \
         with linespoints lw 2 dt vdash(v) pt vpoint(v) ps 1.3 lc rgb vcolor(v) title v
}

if (which eq "conns") {
  set title sprintf("new connections the upstream accepted per second (pool %g)", pool)
  set ylabel "connections opened/s (log scale)"
  set bmargin keymargin(2)
  set logscale y 10
  set yrange [0.1:*]
  plot x with lines dt 3 lw 1.5 lc rgb "#888888" title "one per request offered", \
       for [v in variants] csv using (isv(v) ? column("offered_rps") : NaN):"up_conns_per_s" \
         with linespoints lw 2 dt vdash(v) pt vpoint(v) ps 1.3 lc rgb vcolor(v) title v
}
