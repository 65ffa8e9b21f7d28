# report.awk - turns the grader's rows into the formats people and machines read.
#
# Input: rows.tsv, one graded row per line, tab-separated:
#   lab  name  max_score  passes  runs  status  visibility  output  [html]
# lab is NN-slug; status is passed|failed; visibility is Gradescope's (visible, hidden,
# after_due_date, after_published); output is one line: "\n" stands for a newline and "\\" for a
# backslash, and the grader has already replaced every other byte outside printable ASCII.
# html, when set, names a one-line HTML fragment in outdir (a performance row's figures and
# plots) that results.json shows as that test's output (output_format "html"); JUnit and TAP keep
# the text output. board: a file of "title<TAB>value<TAB>asc|desc" lines, Gradescope's leaderboard.
#
#   awk -F'\t' -v fmt=FORMAT [-v name=SUBMISSION -v seconds=N -v repeat=N -v outdir=DIR -v board=FILE]
#       -f report.awk rows.tsv
# FORMAT: json (Gradescope results.json), junit (JUnit XML), tap (TAP 13), table (the terminal),
#         labs (lab, score, max_score per lab: what the course CSV is made of).

function decode(s,    out, i, c, n) {
  out = ""
  n = length(s)
  for (i = 1; i <= n; i++) {
    c = substr(s, i, 1)
    if (c == "\\" && i < n) {
      i++
      c = substr(s, i, 1)
      out = out (c == "n" ? "\n" : c)
    } else {
      out = out c
    }
  }
  return out
}

function json_str(s) {          # s is already in the one-line encoding: only quotes are left
  gsub(/"/, "\\\"", s)
  return "\"" s "\""
}

function xml_str(s) {
  s = decode(s)
  gsub(/&/, "\\&amp;", s); gsub(/</, "\\&lt;", s); gsub(/>/, "\\&gt;", s)
  gsub(/"/, "\\&quot;", s); gsub(/'/, "\\&apos;", s)
  return s
}

function num(x) { return sprintf("%g", x + 0) }

function score_of(i) { return status[i] == "passed" ? max[i] + 0 : 0 }

{
  n++
  lab[n] = $1; tname[n] = $2; max[n] = $3 + 0; passes[n] = $4 + 0; runs[n] = $5 + 0
  status[n] = $6; vis[n] = $7; out[n] = $8; html[n] = $9
  if (!(($1) in labmax)) { labs[++nlabs] = $1; labmax[$1] = 0; labscore[$1] = 0; labtests[$1] = 0 }
  labmax[$1] += max[n]; labscore[$1] += score_of(n); labtests[$1]++
  if (status[n] != "passed") labfail[$1]++
  total += score_of(n); totalmax += max[n]
}

END {
  if (fmt == "json") json()
  else if (fmt == "junit") junit()
  else if (fmt == "tap") tap()
  else if (fmt == "table") table()
  else if (fmt == "labs") { for (l = 1; l <= nlabs; l++) printf "%s\t%s\t%s\n", labs[l], num(labscore[labs[l]]), num(labmax[labs[l]]) }
  else { print "report.awk: unknown fmt '" fmt "'" > "/dev/stderr"; exit 2 }
}

function json(    i, l, k, t, summary, fragment, f) {
  summary = ""
  for (l = 1; l <= nlabs; l++)
    summary = summary sprintf("%s: %s of %s points\\n", labs[l], num(labscore[labs[l]]), num(labmax[labs[l]]))
  summary = summary sprintf("total: %s of %s points", num(total), num(totalmax))
  if (repeat + 0 > 1) summary = summary sprintf("\\neach test ran %d times; it passes when it passed in more than half of them", repeat)
  printf "{\n"
  printf "  \"score\": %s,\n", num(total)
  printf "  \"execution_time\": %d,\n", seconds + 0
  printf "  \"output\": %s,\n", json_str(summary)
  printf "  \"output_format\": \"text\",\n"
  printf "  \"test_output_format\": \"text\",\n"
  printf "  \"test_name_format\": \"text\",\n"
  printf "  \"visibility\": \"visible\",\n"
  printf "  \"stdout_visibility\": \"hidden\",\n"
  printf "  \"extra_data\": {\"kit\": \"loopholes\", \"submission\": %s, \"max_score\": %s, \"repeat\": %d},\n", \
    json_str(name), num(totalmax), (repeat + 0 > 0 ? repeat : 1)
  leaderboard()
  printf "  \"tests\": ["
  k = 0
  for (l = 1; l <= nlabs; l++) {
    t = 0
    for (i = 1; i <= n; i++) {
      if (lab[i] != labs[l]) continue
      t++
      printf "%s\n    {\"name\": %s, \"number\": \"%d.%d\", \"score\": %s, \"max_score\": %s, \"status\": \"%s\", ", \
        (k++ ? "," : ""), json_str(lab[i] ": " tname[i]), l, t, num(score_of(i)), num(max[i]), status[i]
      fragment = ""
      if (html[i] != "" && outdir != "") {
        f = outdir "/" html[i]
        if ((getline fragment < f) <= 0) fragment = ""
        close(f)
      }
      if (fragment != "")
        printf "\"output\": %s, \"output_format\": \"html\", \"tags\": [%s], \"visibility\": \"%s\", ", \
          json_str(fragment), json_str(lab[i]), vis[i]
      else
        printf "\"output\": %s, \"output_format\": \"text\", \"tags\": [%s], \"visibility\": \"%s\", ", \
          json_str(out[i]), json_str(lab[i]), vis[i]
      printf "\"extra_data\": {\"passes\": %d, \"runs\": %d}}", passes[i], runs[i]
    }
  }
  printf "\n  ]\n}\n"
}

# Gradescope's leaderboard: one column per `leaderboard` row of the graded labs (a lab not
# measured scores 0 there).
function leaderboard(    line, f, k, sep) {
  if (board == "") return
  sep = ""
  k = 0
  while ((getline line < board) > 0) {
    split(line, f, "\t")
    if (f[1] == "") continue
    if (!k++) printf "  \"leaderboard\": ["
    printf "%s{\"name\": %s, \"value\": %s%s}", sep, json_str(f[1]), num(f[2]), (f[3] == "asc" ? ", \"order\": \"asc\"" : "")
    sep = ", "
  }
  close(board)
  if (k) printf "],\n"
}

function junit(    i, l) {
  printf "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n"
  printf "<testsuites name=\"loopholes %s\" tests=\"%d\" failures=\"%d\" time=\"%d\">\n", xml_str(name), n, n - passed_count(), seconds + 0
  for (l = 1; l <= nlabs; l++) {
    printf "  <testsuite name=\"%s\" tests=\"%d\" failures=\"%d\">\n", xml_str(labs[l]), labtests[labs[l]], labfail[labs[l]] + 0
    for (i = 1; i <= n; i++) {
      if (lab[i] != labs[l]) continue
      printf "    <testcase classname=\"loopholes.%s\" name=\"%s\">\n", xml_str(labs[l]), xml_str(tname[i])
      printf "      <properties><property name=\"score\" value=\"%s\"/><property name=\"max_score\" value=\"%s\"/>", num(score_of(i)), num(max[i])
      printf "<property name=\"passes\" value=\"%d\"/><property name=\"runs\" value=\"%d\"/></properties>\n", passes[i], runs[i]
      if (status[i] != "passed")
        printf "      <failure message=\"%s\">%s</failure>\n", xml_str(first_line(out[i])), xml_str(out[i])
      else if (out[i] != "")
        printf "      <system-out>%s</system-out>\n", xml_str(out[i])
      printf "    </testcase>\n"
    }
    printf "  </testsuite>\n"
  }
  printf "</testsuites>\n"
}

function passed_count(    i, c) { c = 0; for (i = 1; i <= n; i++) if (status[i] == "passed") c++; return c }

function first_line(s) { sub(/\\n.*/, "", s); return s }

function tap(    i, lines, m, j) {
  printf "TAP version 13\n1..%d\n", n
  for (i = 1; i <= n; i++) {
    printf "%s %d - %s: %s\n", (status[i] == "passed" ? "ok" : "not ok"), i, lab[i], tname[i]
    printf "  ---\n  score: %s\n  max_score: %s\n  passes: %d\n  runs: %d\n", num(score_of(i)), num(max[i]), passes[i], runs[i]
    if (out[i] != "") {
      printf "  message: |\n"
      m = split(decode(out[i]), lines, "\n")
      for (j = 1; j <= m; j++) {
        # a line of its own "..." or "---" would end or open the YAML block early
        if (lines[j] ~ /^[[:space:]]*(\.\.\.|---)[[:space:]]*$/) lines[j] = "# " lines[j]
        printf "    %s\n", lines[j]
      }
    }
    printf "  ...\n"
  }
}

function table(    i, l, res, w, msg) {
  w = 14
  for (i = 1; i <= n; i++) if (length(tname[i]) > w) w = length(tname[i])
  if (w > 60) w = 60
  for (l = 1; l <= nlabs; l++) {
    printf "\n%s\n", labs[l]
    for (i = 1; i <= n; i++) {
      if (lab[i] != labs[l]) continue
      res = (status[i] == "passed") ? "pass" : "FAIL"
      if (runs[i] > 1) res = res sprintf(" %d/%d", passes[i], runs[i])
      else if (runs[i] == 0) res = (status[i] == "passed") ? "ok" : "FAIL"
      printf "  %-" w "s  %-9s %5s/%-5s\n", tname[i], res, num(score_of(i)), num(max[i])
      if (status[i] != "passed" && out[i] != "") {
        msg = first_line(out[i])
        if (length(msg) > 150) msg = substr(msg, 1, 147) "..."
        printf "      %s\n", decode(msg)
      }
    }
    printf "  %-" w "s  %-9s %5s/%-5s\n", "lab total", "", num(labscore[labs[l]]), num(labmax[labs[l]])
  }
  printf "\n%s: %s of %s points\n", (name != "" ? name : "total"), num(total), num(totalmax)
  for (i = 1; i <= n; i++)
    if (runs[i] > 1 && passes[i] > 0 && passes[i] < runs[i])
      printf "flaky: %s %s passed %d of %d runs (%s: more than half is a pass)\n", lab[i], tname[i], passes[i], runs[i], status[i]
}
