# vsload.gp - the common picture "a column against a swept parameter, one line per variant"
# (bench_plot(b, "vsload", ...)). One CSV with a `variant` column, one row per point.
#
#   csv        the table (e.g. "conncost.csv")
#   variants   the variants to draw, in this order ("pitfall solution exercise")
#   xcol       the swept column (default "offered_rps"); xlabel its label
#   ycol       the column drawn solid; ycol2 (optional) a second one drawn dotted; ylabel
#   where      optional "COLUMN=VALUE": only rows where that column has that text (e.g. "sweep=n")
#   logy, logx 1 for a log scale (default 0); ymin, ymax optional range
#   diag       1: a grey y = x line, labelled diag_text ("everything offered")
#   ref1, ref2 optional horizontal lines (0 = none) with ref1_text, ref2_text
#   plottitle  what the reader should see
if (!exists("plotdir")) plotdir = "harness/plot"
load plotdir."/common.gp"
if (!exists("variants")) variants = "pitfall solution exercise"
if (!exists("xcol")) xcol = "offered_rps"
if (!exists("xlabel")) xlabel = "offered load (requests/s)"
if (!exists("ycol")) ycol = "achieved_rps"
if (!exists("ycol2")) ycol2 = ""
if (!exists("ylabel")) ylabel = ycol
if (!exists("where")) where = ""
if (!exists("logy")) logy = 0
if (!exists("logx")) logx = 0
if (!exists("diag")) diag = 0
if (!exists("diag_text")) diag_text = "y = x"
if (!exists("ref1")) ref1 = 0
if (!exists("ref2")) ref2 = 0
if (!exists("ref1_text")) ref1_text = ""
if (!exists("ref2_text")) ref2_text = ""
if (!exists("plottitle")) plottitle = ylabel." vs ".xlabel

wcol = where eq "" ? "" : where[1:strstrt(where, "=") - 1]
wval = where eq "" ? "" : where[strstrt(where, "=") + 1:]
keep(v) = strcol("variant") eq v && (wcol eq "" || strcol(wcol) eq wval)
set samples 1000
set format x "%g"
set format y "%g"
set xlabel xlabel
set ylabel ylabel
set title plottitle
if (logy) { set logscale y 10 }
if (logx) { set logscale x 10 } else { set xrange [0:*] }
if (exists("ymin") && exists("ymax")) { set yrange [ymin:ymax] } else { if (exists("ymin")) { set yrange [ymin:*] } }
entries = words(variants) * (ycol2 ne "" ? 2 : 1) + (diag ? 1 : 0) + (ref1 ? 1 : 0) + (ref2 ? 1 : 0)
if (!isdumb) { set key maxcols 2 }
set bmargin keymargin(int((entries + 1) / 2))
plot (diag ? x : NaN) with lines dt 3 lw 1.5 lc rgb "#888888" title (diag ? diag_text : ""), \
     (ref1 ? ref1 : NaN) with lines dt 2 lw 1.5 lc rgb "#000000" title ref1_text, \
     (ref2 ? ref2 : NaN) with lines dt 4 lw 1.5 lc rgb "#888888" title ref2_text, \
     for [v in variants] csv using (keep(v) ? column(xcol) : NaN):(column(ycol)) \
       with linespoints lw 2 dt vdash(v) pt vpoint(v) ps 1.3 lc rgb vcolor(v) \
       title v.(ycol2 ne "" ? " ".ycol : ""), \
     for [v in (ycol2 ne "" ? variants : "")] csv using (keep(v) ? column(xcol) : NaN):(column(ycol2)) \
       with linespoints lw 1.5 dt 3 pt vpoint(v) ps 0.9 lc rgb vcolor(v) title v." ".ycol2
