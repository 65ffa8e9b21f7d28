# shellcheck shell=bash
# perf.sh - the performance rows of make grade (sourced by grade.sh, after sandbox.sh).
#
# A lab's block of labs/manifest may hold
#   perf FIGURE OP BOUND POINTS   a row worth POINTS: figures["exercise"][FIGURE] of a short run of
#                                 the lab's bench (--quick) on the submission's own exercise.c must
#                                 be OP (>= <= > <) BOUND: a number, NAME or X*NAME, NAME a
#                                 lab-level figure of the same run (a limit that run measured)
#   perf_runs R                   best of R runs (default 3), stopping as soon as every perf row
#                                 of the lab is met
#   perf_plot NAME                the plot shown beside the solution's (results/NN-slug/NAME.svg)
#   leaderboard EXPR ORDER TITLE  a Gradescope leaderboard column: EXPR is FIGURE or FIGURE/NAME
#
# Where it runs: the bench, the upstream and the submission's service share one sandbox (its own
# network namespace: loopback only). As root the bench stays root inside it and the service runs
# as the job's sandbox uid with no capabilities (a wrapper: setpriv), so code under test can
# neither write the bench's results nor signal or trace the bench. Only the files a bench needs
# are in it: the bench, upstream and hello binaries, the manifest, the plot scripts, the lab's
# folder (no solution, no other variant).
#
# The solution's picture: the kit's solutions/NN-slug/solution.c, built in the same sandbox and
# measured by the same short bench once per kit (kept in BROOT/_ref/NN-slug/ while the solution,
# the bench and the lab's manifest block stay the same). A Gradescope bundle has no solutions:
# make autograder measures them and ships the pictures in harness/grader/ref/NN-slug/.
#
# GRADE_PERF (or grade.sh --perf): passed (default: measure a lab whose visible suite passed every
# test; a service that breaks its contract is not timed), always, or 0 (no performance rows).

GR_PERF_TIMEOUT=${GR_PERF_TIMEOUT:-180}   # seconds one bench run may take

gr_perf_lines() { manifest_all "$1" perf 2>/dev/null; }

# The points of a lab's perf rows.
gr_perf_points() { gr_perf_lines "$1" | awk '{ p += $4 } END { print p + 0 }'; }

gr_perf_name() { echo "performance: $1 $2 $3"; }  # FIGURE OP BOUND

# Runs the lab's bench in the sandbox on SERVICE as variant VARIANT; results in OUT/NN-slug/,
# the bench's output in LOG. Returns the bench's exit status (124/137: stopped by the timeout).
perf_run() {  # SLUG SERVICE VARIANT OUT LOG
  local slug=$1 svc=$2 variant=$3 pout=$4 log=$5 num binds=() drop="" wrap bin root
  num=$(gr_num "$slug")
  local kit="$broot/_kit"
  rm -rf "$pout" && mkdir -p "$pout" || return 1
  wrap="$pout.wrap"
  if [ "$GR_BOX_MODE" = bwrap ]; then
    [ "$(id -u)" != 0 ] ||
      drop="setpriv --reuid $GR_BOX_UID --regid $GR_BOX_UID --clear-groups --inh-caps=-all --bounding-set=-all --"
    printf '#!/bin/sh\n# the service under test, as the sandbox uid\nexec prlimit --as=%s -- %s /grade/sub/service "$@"\n' \
      "$((GR_LIM_MEM * 1024 * 1024))" "$drop" >"$wrap"
    chmod 755 "$wrap" "$pout"
    bin=/grade/bin root=/kit/root
    binds=(--perms 0755 --tmpfs /grade --ro-bind "$kit/bin/bench$num" "$bin/bench$num"
      --ro-bind "$kit/bin/upstream" "$bin/upstream" --ro-bind "$kit/bin/hello" "$bin/hello"
      --ro-bind "$svc" /grade/sub/service --ro-bind "$wrap" "$bin/lab$num-$variant"
      --ro-bind "$GR_ROOT/labs/manifest" "$root/labs/manifest" --ro-bind "$GR_ROOT/harness/plot" "$root/harness/plot"
      --ro-bind "$GR_ROOT/labs/$slug" "$root/labs/$slug" --bind "$pout" /grade/out --chdir "$root")
  else
    # No sandbox (GR_SANDBOX=none): the same files through a folder of links; the whole command
    # already runs as the sandbox uid.
    bin="$pout.bin" root=$GR_ROOT
    rm -rf "$bin" && mkdir -p "$bin" || return 1
    ln -s "$kit/bin/bench$num" "$kit/bin/upstream" "$kit/bin/hello" "$bin/"
    printf '#!/bin/sh\nexec prlimit --as=%s -- %s "$@"\n' "$((GR_LIM_MEM * 1024 * 1024))" "$svc" >"$bin/lab$num-$variant"
    chmod 755 "$bin/lab$num-$variant" "$pout"
    [ "$(id -u)" != 0 ] || chown "$GR_BOX_UID" "$pout"
    binds=(--chdir "$GR_ROOT")
  fi
  binds+=(--setenv LOOPHOLES_ROOT "$root" --setenv LOOPHOLES_BIN "$bin")
  gr_box_cmd perf "${binds[@]}" -- "$bin/bench$num" --quick --variants "$variant" \
    --out "$( [ "$GR_BOX_MODE" = bwrap ] && echo /grade/out || echo "$pout")"
  timeout -k 5 "$GR_PERF_TIMEOUT" "${GR_CMD[@]}" >"$log" 2>&1 </dev/null
  local rc=$?
  gr_box_wait_gone
  return "$rc"
}

# Best of the runs: for each perf row the best value any run had (met in one run is met), as
# perfscore's P lines; SCORE files in the order they ran.
perf_best() {  # SCORE...
  awk -F'\t' -v OFS='\t' '
    $1 != "P" { next }
    { k = $2 SUBSEP $3 SUBSEP $4
      if (!(k in line)) { order[++n] = k; line[k] = $0; vals[k] = $6 }
      else vals[k] = vals[k] ", " $6
      split(line[k], o, "\t")
      better = ($7 == 1 && o[7] != 1) || ($7 == o[7] && $6 != "nan" && (o[6] == "nan" || \
               (($3 ~ />/) ? $6 + 0 > o[6] + 0 : $6 + 0 < o[6] + 0)))
      if (better) line[k] = $0 }
    END { for (i = 1; i <= n; i++) print line[order[i]], vals[order[i]] }' "$@"
}

# An <img> of an SVG file as a data: URI (Gradescope shows output_format "html"); nothing when
# the file is missing or larger than 300 kB.
perf_img() {  # SVG ALT
  [ -f "$1" ] && [ "$(wc -c <"$1")" -le 300000 ] || return 0
  printf "<img alt='%s' style='max-width:49%%' src='data:image/svg+xml;base64,%s'/>" "$(html_esc "$2")" "$(base64 -w0 "$1")"
}

# The plot to show: perf_plot, else the first SVG the run wrote.
perf_plot_file() {  # SLUG DIR
  local p; p=$(manifest_get "$1" perf_plot "")
  if [ -n "$p" ]; then echo "$2/$p.svg"; else find "$2" -maxdepth 1 -name '*.svg' 2>/dev/null | LC_ALL=C sort | head -n 1; fi
}

html_esc() { printf '%s' "$1" | sed -e 's/&/\&amp;/g' -e 's/</\&lt;/g' -e 's/>/\&gt;/g' -e "s/'/\&#39;/g" -e 's/"/\&quot;/g' -e 's/\\/\&#92;/g'; }

# The solution's short run, once per kit: BROOT/_ref/NN-slug/run/NN-slug/. Prints that folder,
# or nothing when the solution could not be built or measured.
perf_reference() {  # SLUG
  local slug=$1 ref="$broot/_ref/$1" key lock rc=0
  local src="$GR_ROOT/solutions/$slug/solution.c"
  if [ ! -f "$src" ]; then
    # A Gradescope bundle: no solutions, their pictures measured when it was made (autograder.sh).
    [ ! -f "$GR_DIR/ref/$slug/summary.json" ] || echo "$GR_DIR/ref/$slug"
    return 0
  fi
  mkdir -p "$ref" || return 0
  key=$( { gr_sha256 "$src"; gr_sha256 "$broot/_kit/bin/bench$(gr_num "$slug")"; manifest_all "$slug" args;
           manifest_all "$slug" upstream; } 2>/dev/null | sha256sum | cut -c1-16)
  exec {lock}>"$ref.lock" && flock "$lock"   # grade-all's jobs: one measures, the others wait
  if [ "$(cat "$ref/key" 2>/dev/null)" != "$key" ] || [ ! -f "$ref/run/$slug/summary.json" ]; then
    rm -f "$ref/key"
    say "  measuring the kit's solution of $slug once (the picture beside the submissions')" >&2
    if box_build "$slug" "$src" "$broot/_kit" "$ref/box" F "$ref/build.log" && [ -x "$ref/box/bin/service" ]; then
      perf_run "$slug" "$ref/box/bin/service" solution "$ref/run" "$ref/bench.log"
      rc=$?
      [ "$rc" -gt 1 ] || [ ! -f "$ref/run/$slug/summary.json" ] || echo "$key" >"$ref/key"
    fi
  fi
  exec {lock}>&-
  [ -f "$ref/key" ] && echo "$ref/run/$slug"
  return 0
}

# The perf rows of a lab whose exercise was built into BOX/bin/service. MODE: measure, or a
# reason it was not measured (the rows then fail with it).
perf_rows() {  # SLUG BOX MODE
  # The runs happen in the build area (the sandbox's uid can cross it; the logs are root's alone),
  # and are copied to the logs afterwards.
  local slug=$1 box=$2 mode=$3 lines runs i pdir="$bdir/perf-$1" best score html first=1
  lines=$(gr_perf_lines "$slug")
  [ -n "$lines" ] || return 0
  if [ "$mode" = measure ] && [ ! -x "$box/bin/service" ]; then
    mode="not measured: exercise.c did not link into a service ($(head -c 300 "$box/obj/service.log" 2>/dev/null | tr '\n' ' '))"
  fi
  if [ "$mode" != measure ]; then
    while read -r fig op bound pts; do
      row "$slug" "$(gr_perf_name "$fig" "$op" "$bound")" "$pts" 0 0 failed visible "$mode"
    done <<<"$lines"
    perf_board "$slug" ""
    return 0
  fi
  runs=$(manifest_get "$slug" perf_runs 3)
  case "$runs" in ''|*[!0-9]*|0) runs=3 ;; esac
  rm -rf "$pdir" && mkdir -p "$pdir"
  local scores=() log rc summary ok_runs=0 why=""
  for ((i = 1; i <= runs; i++)); do
    log="$pdir/run$i.log"
    perf_run "$slug" "$box/bin/service" exercise "$pdir/run$i" "$log"
    rc=$?
    summary="$pdir/run$i/$slug/summary.json"
    if [ -f "$summary" ] && [ ! -L "$summary" ]; then
      { printf '%s\n' "$lines" | sed 's/^/perf /'; manifest_all "$slug" leaderboard | sed 's/^/leaderboard /'; } |
        "$broot/_kit/grader/perfscore" "$summary" exercise >"$pdir/run$i.score" 2>"$pdir/run$i.score.err"
      scores+=("$pdir/run$i.score")
      ok_runs=$((ok_runs + 1))
    else
      why="the bench ended without its summary (exit status $rc$( [ "$rc" = 124 ] && echo ": stopped after $GR_PERF_TIMEOUT s")): $(tail -n 3 "$log" | tr '\n' ' ' | head -c 300)"
    fi
    # Stop early once every row is met in some run.
    [ ${#scores[@]} -gt 0 ] && [ "$(perf_best "${scores[@]}" | awk -F'\t' '$7 != 1' | wc -l)" = 0 ] && break
  done
  if [ ${#scores[@]} -eq 0 ]; then
    while read -r fig op bound pts; do
      row "$slug" "$(gr_perf_name "$fig" "$op" "$bound")" "$pts" 0 1 failed visible "not measured: $why"
    done <<<"$lines"
    cp -r "$pdir" "$logs/$slug.perf" 2>/dev/null
    perf_board "$slug" ""
    return 0
  fi
  local nrun=$(( i > runs ? runs : i ))
  # The run to show: the one that met the most rows (the latest of equals).
  local show="" most=-1 s m
  for s in "${scores[@]}"; do
    m=$(awk -F'\t' '$1 == "P" && $7 == 1' "$s" | wc -l)
    [ "$m" -lt "$most" ] || { most=$m show=$s; }
  done
  local rundir="${show%.score}/$slug" ref figs
  ref=$(perf_reference "$slug")
  figs=$(awk -F'\t' '$1 == "F" { printf "%s%s = %s", (n++ ? ", " : ""), $2, $3 }' "$show")
  html="$slug.perf.html"
  best=$(perf_best "${scores[@]}")
  local table="" fig op btext bval val met pts all
  while IFS=$'\t' read -r _ fig op btext bval val met pts all; do
    table="$table<tr><td>$(html_esc "$fig")</td><td>$(html_esc "$val")</td><td>$(html_esc "$op $btext")$( [ "$btext" = "$bval" ] || printf ' = %s' "$bval")</td><td>$( [ "$met" = 1 ] && echo met || echo '<b>missed</b>')</td><td>$(html_esc "$all")</td></tr>"
  done <<<"$best"
  {
    printf "<p>Lab %s, a short run of its bench (make bench LAB=%s QUICK=1) on your exercise.c, best of %d run(s):</p>" "$(gr_num "$slug")" "$(gr_num "$slug")" "$nrun"
    printf "<table><tr><th>figure</th><th>yours</th><th>target</th><th></th><th>each run</th></tr>%s</table>" "$table"
    printf "<p>your run's figures: %s</p>" "$(html_esc "$figs")"
    perf_img "$(perf_plot_file "$slug" "$rundir")" "your exercise.c"
    [ -z "$ref" ] || perf_img "$(perf_plot_file "$slug" "$ref")" "the kit's solution"
    printf "<p>left: yours; right: the kit's solution, measured on the same grader.</p>"
  } | tr -d '\n\t' >"$out/$html"
  while IFS=$'\t' read -r _ fig op btext bval val met pts all; do
    local msg
    msg="exercise $fig = $val, target $op $btext$( [ "$btext" = "$bval" ] || printf ' = %s' "$bval"): $( [ "$met" = 1 ] && echo met || echo MISSED) (best of $nrun run(s): $all)\\nfigures of the run shown: $figs"
    row "$slug" "$(gr_perf_name "$fig" "$op" "$btext")" "$pts" "$( [ "$met" = 1 ] && echo 1 || echo 0)" 1 \
      "$( [ "$met" = 1 ] && echo passed || echo failed)" visible "$msg" "$( [ "$first" = 1 ] && echo "$html")"
    first=0
  done <<<"$best"
  perf_board "$slug" "$show"
  cp -r "$pdir" "$logs/$slug.perf" 2>/dev/null
}

# The lab's leaderboard columns from SCORE (nothing: 0, not measured).
perf_board() {  # SLUG SCORE
  if [ -n "$2" ]; then
    awk -F'\t' -v OFS='\t' '$1 == "B" { print $2, $3, $4 }' "$2" >>"$out/leaderboard.tsv"
  else
    manifest_all "$1" leaderboard | while read -r _ order title; do
      printf '%s\t0\t%s\n' "$title" "$order" >>"$out/leaderboard.tsv"
    done
  fi
}
