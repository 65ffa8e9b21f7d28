#!/usr/bin/env bash
# harness/tests/report.sh - the workshop page (build/bin/report, harness/tools/report.c) in a real
# browser. Builds the page from a small fixture results tree (harness/tests/report-fixture/: two
# labs with summary.json and plots, one whose run did not finish; every other lab of
# labs/manifest has no results), then opens it in headless Chromium (Debian's chromium):
#   - every lab of the manifest has its section; benched labs show their plots, the others
#     "not benched yet: make bench LAB=NN";
#   - every image rendered (an inline SVG has a box, an <img> a natural size), no id used twice;
#   - no console message at all (the page has no script, so any message is an error) and no
#     request: none in Resource Timing, no Content-Security-Policy violation, no URL in the HTML;
#   - what the fixture holds is escaped (a <script> in a target's reason stays text);
#   - a screenshot at 1280x800 goes to results/report-test.png (git-ignored): look at it.
# The browser checks are checked too: a broken copy of the page (an empty plot, an undecodable
# image, a request, a console error) must fail each of them.
# RESULTS=DIR checks the page of another results tree the same way (RESULTS=results: the page
# make bench wrote here; the fixture's own escaping check is then left out). KEEP=1 keeps the
# test's folder (the pages, chromium's logs) for a look.
# Needs $BUILD/bin/report (make test sets BUILD). Exit 0 = pass, 1 = fail, 77 = skipped: chromium
# is not installed (make deps installs it) -- said on stdout, and make test reports it as skipped.

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
BIN=$ROOT/${BUILD:-build}/bin
FIXTURE=$ROOT/harness/tests/report-fixture
[ -n "${RESULTS:-}" ] && FIXTURE=$(cd "$RESULTS" && pwd)
SHOT=$ROOT/results/report-test.png
T=$(mktemp -d "${TMPDIR:-/tmp}/loopholes-report.XXXXXX") || exit 1
pids=()
cleanup() {
  local p
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null; done
  rm -rf "$T"
}
trap cleanup EXIT; [ -n "${KEEP:-}" ] && trap - EXIT
failures=0
pass() { echo "ok   - $*"; }
fail() { echo "FAIL - $*"; failures=$((failures + 1)); }

[ -x "$BIN/report" ] || { echo "FAIL - $BIN/report not built (make BUILD=${BUILD:-build} all)"; exit 1; }
browser=${CHROMIUM-$(command -v chromium || command -v chromium-browser)}  # CHROMIUM= : as if missing
if [ -z "$browser" ]; then
  echo "SKIPPED - chromium is not installed, so the report page was NOT tested in a browser"
  echo "          (Debian package chromium: make deps installs it, or apt-get install chromium)"
  exit 77
fi

cd "$ROOT" || exit 1
mapfile -t labs < <(harness/scripts/manifest.sh labs)
fixture_labs=()
for d in "$FIXTURE"/*/; do [ -f "$d/summary.json" ] && fixture_labs+=("$(basename "$d")"); done
PAGE=$T/index.html

# ---- the page, built from the fixture ----
t0=$(date +%s%N)
if "$BIN/report" --results "$FIXTURE" --out "$PAGE" >"$T/report.out" 2>&1; then
  pass "report wrote the page in $(( ($(date +%s%N) - t0) / 1000000 )) ms: $(cat "$T/report.out")"
else
  fail "report exited $?: $(cat "$T/report.out")"; exit 1
fi
if grep -q "<script" "$PAGE"; then fail "the page holds a <script> (the fixture's one must be escaped)"
else pass "no <script> in the page"; fi
if [ -n "${RESULTS:-}" ]; then :
elif grep -q "&lt;script&gt;alert(&#39;not escaped&#39;)&lt;/script&gt;" "$PAGE"; then
  pass "the fixture's <script> in a target's reason is shown as text"
else fail "the fixture's <script> in a target's reason is not escaped as text"; fi
urls=$(grep -o -E '[a-zA-Z]+://[^"'"'"' <>)]*' "$PAGE" | grep -v -E '^http://www\.w3\.org/(2000/svg|1999/xlink)$' | sort -u)
if [ -z "$urls" ]; then pass "no URL in the page (but the SVG namespaces)"
else fail "URLs in the page: $(echo $urls)"; fi
if grep -q -E '<\?xml|<!DOCTYPE svg' "$PAGE"; then fail "an SVG prologue (<?xml?> or DOCTYPE) was inlined"
else pass "the SVG prologues were dropped"; fi
grep -q "Content-Security-Policy\" content=\"default-src 'none'; img-src data:; style-src 'unsafe-inline'\"" "$PAGE" \
  && pass "the page carries its Content-Security-Policy" || fail "no Content-Security-Policy meta tag"

# ---- a copy that reports what the browser sees (script allowed in the copy only), and a broken
# copy that every check must catch ----
# The checker goes right after the policy (which then allows inline scripts), so that it listens
# before anything on the page can make a request.
instrument() {  # PAGE OUT [EXTRA_HTML]: the checker first, EXTRA_HTML before </body>
  EXTRA=${3:-} awk -v js="$ROOT/harness/tests/report-check.js" '
    /<\/body>/ { print ENVIRON["EXTRA"] }
    /Content-Security-Policy/ && !done {
      sub(/style-src '"'"'unsafe-inline'"'"'"/, "style-src '"'"'unsafe-inline'"'"'; script-src '"'"'unsafe-inline'"'"'\"")
      print; print "<script>"; while ((getline line < js) > 0) print line; print "</script>"; done = 1; next }
    { print }' "$1" >"$2"
}
instrument "$PAGE" "$T/check.html"
# The broken copy: the first plot emptied, an image that does not decode, a request, a console error.
broken_extra='<img src="data:image/png;base64,AAAA" alt=""><img src="http://127.0.0.1:9/leak.png" alt=""><script>console.error("report-test: an error on purpose")</script>'
awk '
  !done && (i = index($0, "<svg ")) { printf "%s<svg viewBox=\"0 0 10 10\"></svg>", substr($0, 1, i - 1)
                                      $0 = substr($0, i); skip = 1; done = 1 }
  skip { if ((j = index($0, "</svg>"))) { print substr($0, j + 6); skip = 0 }; next }
  { print }' "$PAGE" >"$T/broken-page.html"
instrument "$T/broken-page.html" "$T/broken.html" "$broken_extra"

# Debian's chromium as root in a VM: no sandbox, no GPU, no network of its own, a fresh profile.
CHROME_FLAGS=(--headless --no-sandbox --disable-gpu --disable-quic --no-first-run
  --disable-background-networking --disable-component-update --disable-sync --hide-scrollbars
  --enable-logging=stderr --v=0 --virtual-time-budget=3000)
run_chrome() {  # NAME ARGS... : stdout NAME.out, stderr NAME.err, profile NAME.profile
  local name=$1; shift
  timeout --kill-after=3 40 "$browser" "${CHROME_FLAGS[@]}" --user-data-dir="$T/$name.profile" "$@" \
    >"$T/$name.out" 2>"$T/$name.err" </dev/null
  echo $? >"$T/$name.rc"
}
t0=$(date +%s%N)
run_chrome shot --window-size=1280,800 --screenshot="$T/shot.png" "file://$PAGE" & pids+=($!)
run_chrome check --window-size=1280,800 --dump-dom "file://$T/check.html" & pids+=($!)
run_chrome broken --window-size=1280,800 --dump-dom "file://$T/broken.html" & pids+=($!)
wait
pids=()
echo "     (three headless chromium runs side by side: $(( ($(date +%s%N) - t0) / 1000000 )) ms)"
for n in shot check broken; do
  [ "$(cat "$T/$n.rc")" = 0 ] || fail "chromium ($n) exited $(cat "$T/$n.rc"): $(grep -v -E 'dbus|Fontconfig' "$T/$n.err" | tail -n 3)"
done

# ---- what the browser saw ----
facts() { sed -n '/<pre id="report-check">/,/<\/pre>/p' "$T/$1.out" | sed -e 's/<pre id="report-check">//' -e 's,</pre>.*,,'; }
fact() { facts "$1" | awk -v k="$2" '$1 == k { print $2; exit }'; }
console() { grep -a -E ':CONSOLE[:(]' "$T/$1.err"; }
facts check >"$T/check.facts"
if [ ! -s "$T/check.facts" ]; then
  fail "the checker wrote nothing into the page (chromium --dump-dom: $(head -c 300 "$T/check.out"))"
else
  sed 's/^/     /' "$T/check.facts"
  n=$(fact check sections)
  [ "$n" = "${#labs[@]}" ] && pass "$n lab sections, one per lab of labs/manifest" \
    || fail "${n:-no} lab sections, want ${#labs[@]} (labs/manifest)"
  for lab in "${labs[@]}"; do
    row=$(grep -E "^lab $lab " "$T/check.facts")
    if [ -z "$row" ]; then fail "lab $lab: no section"; continue; fi
    set -- $row
    svg=$4 notyet=${12}
    if [[ " ${fixture_labs[*]} " == *" $lab "* ]]; then
      want=$(ls "$FIXTURE/$lab"/*.svg 2>/dev/null | wc -l)
      [ "$svg" = "$want" ] && [ "$notyet" = 0 ] && pass "lab $lab: its $want plots, rendered" \
        || fail "lab $lab: $svg plots shown (want $want), not-benched note $notyet (want 0)"
    else
      [ "$svg" = 0 ] && [ "$notyet" = 1 ] || fail "lab $lab: no results, but $svg plots and not-benched note $notyet"
    fi
  done
  for lab in "${labs[@]}"; do
    [[ " ${fixture_labs[*]} " == *" $lab "* ]] && continue
    grep -q "not benched yet: <code>make bench LAB=${lab%%-*}</code>" "$PAGE" \
      && pass "a lab without results (lab ${lab%%-*}) says: not benched yet: make bench LAB=${lab%%-*}" \
      || fail "lab $lab has no results, and no 'not benched yet: make bench LAB=${lab%%-*}' line"
    break
  done
  read -r _ images _ missing <<<"$(grep '^images ' "$T/check.facts")"
  [ "${images:-0}" -gt 0 ] && [ "$missing" = 0 ] && pass "$images images, 0 missing" \
    || fail "${images:-?} images, ${missing:-?} missing (a plot with no rendered box, or an image not decoded)"
  [ "$(fact check duplicate_ids)" = 0 ] && pass "no id used twice (each plot's ids renamed)" \
    || fail "$(fact check duplicate_ids) ids used twice"
  [ "$(fact check resources)" = 0 ] && [ "$(fact check violations)" = 0 ] \
    && pass "no request: 0 fetches, 0 policy violations" \
    || fail "requests: $(fact check resources) fetches, $(facts check | grep '^violations')"
fi
c=$(console shot | wc -l) c2=$(console check | wc -l)
[ "$c" = 0 ] && [ "$c2" = 0 ] && pass "0 console messages (the page, and its checked copy)" \
  || fail "console messages: $(console shot; console check)"

# The broken copy: each check must have caught its fault.
facts broken >"$T/broken.facts"
read -r _ _ _ bmissing <<<"$(grep '^images ' "$T/broken.facts")"
[ "${bmissing:-0}" -ge 2 ] && pass "the broken copy's empty plot and bad image are caught ($bmissing missing)" \
  || fail "the broken copy: ${bmissing:-no} images missing, want >= 2 (the checks cannot fail?)"
[ "$(fact broken violations)" -ge 1 ] 2>/dev/null && [ "$(fact broken resources)" -ge 1 ] 2>/dev/null \
  && pass "the broken copy's request is caught ($(fact broken resources) fetch, $(fact broken violations) violation)" \
  || fail "the broken copy's request to 127.0.0.1:9 was not seen"
console broken | grep -q 'an error on purpose' && pass "the broken copy's console error is caught" \
  || fail "the broken copy's console.error did not show in chromium's log"

# ---- the screenshot ----
# Taken in the test's own folder, then moved: two runs side by side never see half a file.
if [ -s "$T/shot.png" ]; then
  size=$(od -A n -t u1 -j 16 -N 8 "$T/shot.png" | awk '{ printf "%dx%d", $1*16777216+$2*65536+$3*256+$4, $5*16777216+$6*65536+$7*256+$8 }')
  mkdir -p "$(dirname "$SHOT")" && cp "$T/shot.png" "$SHOT.$$" && mv -f "$SHOT.$$" "$SHOT"
  [ "$size" = 1280x800 ] && pass "screenshot $SHOT ($size)" || fail "screenshot is $size, want 1280x800"
else
  fail "chromium took no screenshot ($(grep -a -c . "$T/shot.err") lines on its stderr)"
fi

# ---- a summary.json that does not parse: the page still written, saying which; exit 1 ----
cp -r "$FIXTURE" "$T/tree"
echo '{"schema": 1, "lab": ' >"$T/tree/${fixture_labs[0]}/summary.json"
"$BIN/report" --results "$T/tree" --out "$T/bad.html" >"$T/bad.out" 2>&1
rc=$?
[ "$rc" = 1 ] && grep -q 'summary.json: line' "$T/bad.html" \
  && pass "an unreadable summary.json: exit 1, the page says which" \
  || fail "an unreadable summary.json: exit $rc (want 1), page says: $(grep -o 'class="missed">[^<]*' "$T/bad.html" | head -n 2)"
"$BIN/report" --bogus >/dev/null 2>"$T/usage.err"; rc=$?
[ "$rc" = 2 ] && grep -q '^usage: report' "$T/usage.err" && pass "a bad option: exit 2 with the usage" \
  || fail "a bad option: exit $rc, want 2 with the usage"

[ "$failures" = 0 ] && echo "report: every check passed" || echo "report: $failures check(s) failed"
[ "$failures" = 0 ]
