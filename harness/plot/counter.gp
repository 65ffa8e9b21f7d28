# counter.gp - the common picture "counters per variant" (bench_plot(b, "counter", ...)): a
# clustered bar per variant and counter. One CSV with a `variant` column, one row per variant.
#
#   csv        the table (e.g. "delivery.csv")
#   variants   the variants to draw (rows whose variant is not listed are skipped)
#   counters   the columns, space separated ("acked delivered lost")
#   ylabel, plottitle; logy 1 for a log scale
if (!exists("plotdir")) plotdir = "harness/plot"
load plotdir."/common.gp"
if (!exists("variants")) variants = "pitfall solution exercise"
if (!exists("counters")) counters = "ok err"
if (!exists("ylabel")) ylabel = "count"
if (!exists("logy")) logy = 0
if (!exists("plottitle")) plottitle = counters." per variant"
set title plottitle
set ylabel ylabel
set style fill solid 0.85 border -1
set boxwidth 0.8 / words(counters)
set xtics ()
if (logy) { set logscale y 10; set yrange [0.5:*] } else { set yrange [0:*] }
set xrange [-0.6:words(variants) - 0.4]
do for [i = 1:words(variants)] { set xtics add (word(variants, i) i - 1) }
shade(k) = k == 1 ? 1.0 : k == 2 ? 0.6 : k == 3 ? 0.35 : 0.2
vindex(v) = sum [i = 1:words(variants)] (word(variants, i) eq v ? i : 0)
vrgb(v) = v eq "pitfall" ? 0xd62728 : v eq "solution" ? 0x2ca02c : v eq "exercise" ? 0x1f77b4 : 0x7f7f7f
set bmargin keymargin(1)
# Each variant in its colour; the counters left to right, each lighter than the one before.
plot for [k = 1:words(counters)] csv using \
       (vindex(strcol("variant")) > 0 ? vindex(strcol("variant")) - 1 - 0.4 + (k - 0.5) * 0.8 / words(counters) : NaN):(column(word(counters, k))):(vrgb(strcol("variant"))) \
       with boxes lc rgb variable fs solid shade(k) title word(counters, k)
