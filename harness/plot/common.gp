# common.gp - loaded by every Loopholes plot: terminal, CSV input, one colour per variant.
#
# Set by the caller (benchlib.sh's bench_plot / bench_dumb pass them with gnuplot -e):
#   term   a terminal with its options, e.g. "pngcairo size 1000,600" or "dumb size 100,26"
#   out    the output file; "" writes to stdout (for dumb)
# The same variant has the same colour and point in every plot: pitfall red, solution green,
# exercise blue, anything else grey.

if (!exists("term")) term = "pngcairo size 1000,600"
if (!exists("out")) out = ""
set terminal @term
if (out ne "") { set output out } else { set output }
set termoption noenhanced

set datafile separator ","
set datafile columnheaders
set datafile missing ""

vcolor(v) = v eq "pitfall" ? "#d62728" : v eq "solution" ? "#2ca02c" : \
            v eq "exercise" ? "#1f77b4" : "#7f7f7f"
vpoint(v) = v eq "pitfall" ? 7 : v eq "solution" ? 5 : v eq "exercise" ? 9 : 13
# the exercise is dashed: while it still equals the pitfall, the red line shows through its gaps
vdash(v) = v eq "exercise" ? 2 : 1
fmax(a, b) = a > b ? a : b

set grid lc rgb "#d0d0d0"
# The key goes under the plot: inside, it would hide data wherever the data happens to be. Each
# script sets the bottom margin its key needs (keymargin(rows)). A text plot keeps it inside.
isdumb = strstrt(term, "dumb") == 1
if (isdumb) {
  set key top left Left reverse samplen 3
} else {
  set key below center horizontal box Left reverse samplen 3 spacing 1.1 width 1
}
# A key under the plot needs room below the x label: `set bmargin keymargin(ROWS)` (-1 = auto).
# One row is reserved here; a script that moves the key inside can `set bmargin` back to auto.
keymargin(rows) = isdumb ? -1 : 4 + 1.6 * rows
set bmargin keymargin(1)
set title font ",13"
set tics nomirror
set border 3
