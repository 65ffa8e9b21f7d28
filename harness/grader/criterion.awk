# criterion.awk - reads the report Criterion 2.4.1 writes with --json=FILE and prints one line per
# test:  suite/name <TAB> STATUS <TAB> message
# STATUS is Criterion's own (PASSED, FAILED, ERRORED, SKIPPED); the message joins the test's
# messages with "\n" (a backslash and an n: the line stays one line) and turns tabs into spaces.
#
# Why not a JSON parser: there is no jq or python3 on a fresh machine, and Criterion 2.4.1 does not
# escape quotes inside messages, so its "JSON" is not always JSON. Its layout, though, is fixed:
# one key per line, and each message is one quoted line of its own (a message with a newline in
# it becomes several). That is what this script relies on.
#
#   awk -f criterion.awk report.json

function unquote(s) {
  sub(/^[[:space:]]*"/, "", s)
  sub(/",?[[:space:]]*$/, "", s)
  gsub(/\t/, " ", s)
  gsub(/\\/, "&&", s)           # keep the one-line encoding reversible
  return s
}

function flush() {
  if (test != "") printf "%s/%s\t%s\t%s\n", suite, test, status, msg
  test = ""; status = ""; msg = ""; inmsg = 0
}

/^    {/ { flush(); suite = ""; next }                       # a suite opens
/^      "name": "/ { s = $0; sub(/^[^:]*: "/, "", s); sub(/",?[[:space:]]*$/, "", s); suite = s; next }
/^        {/ { flush(); next }                               # a test opens
/^          "name": "/ { s = $0; sub(/^[^:]*: "/, "", s); sub(/",?[[:space:]]*$/, "", s); test = s; next }
/^          "status": "/ { s = $0; sub(/^[^:]*: "/, "", s); sub(/",?[[:space:]]*$/, "", s); status = s; next }
/^          "messages": \[.*\],?[[:space:]]*$/ {                 # all on one line: ["a"] or []
  s = $0; sub(/^[^[]*\[/, "", s); sub(/\],?[[:space:]]*$/, "", s)
  if (s ~ /"/) msg = unquote(s)
  next
}
/^          "messages": \[/ { inmsg = 1; next }
inmsg && /^          \]/ { inmsg = 0; next }
inmsg {
  line = unquote($0)
  if (line ~ /^[[:space:]]*$/ && msg == "") next
  msg = (msg == "") ? line : msg "\\n" line
  next
}
END { flush() }
