/* report.c - the workshop page: results/index.html, one self-contained file built from each lab's
 * results/NN-slug/summary.json (docs/bench.md has its schema), its SVG plots and its README.
 *
 *   build/bin/report                       results/ -> results/index.html (what make report runs)
 *   build/bin/report --results DIR --out FILE
 *
 * The page works offline, from a file or on a projector: the plots are inlined (gnuplot's SVG,
 * its <?xml?> prologue dropped and its ids made unique per plot), the style is inline, there is
 * no script and no URL, and a Content-Security-Policy meta tag makes any request a violation
 * (harness/tests/report.sh checks all of that in headless Chromium). Every lab of labs/manifest
 * gets a section, benched or not. Exit status: 0 when the page is written, 1 when it could not
 * be, or when a summary.json was unreadable (the page is written and says which), 2 on a usage
 * error.
 */
#include <dirent.h>
#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include <jansson.h>

#define REPORT_MAX_LABS 100
#define REPORT_MAX_PLOTS 64

typedef struct buf {
  char *data;
  size_t len, cap;
  int failed; /* an allocation failed: the page is not written */
} buf_t;

typedef struct lab {
  char slug[128];
  char title[512];
  char err[PATH_MAX + 256]; /* why its summary.json could not be read ("" when it could) */
} lab_t;

typedef struct plot {
  char name[256]; /* file name, e.g. throughput.svg */
  size_t readme_pos; /* first mention of its stem in the README: plots come in the lesson's order */
} plot_t;

typedef struct report {
  const char *results_dir, *manifest, *labs_dir, *out;
  char readme_href[PATH_MAX]; /* from the page's folder to labs_dir */
  lab_t labs[REPORT_MAX_LABS];
  int nlabs;
  int plot_seq;   /* numbers every inlined plot: its ids get the prefix pN- */
  int unreadable; /* summary.json files that did not parse */
} report_t;

/* ---- a growing string ---- */

static void buf_add(buf_t *b, const char *s, size_t n) {
  if (b->failed) return;
  if (b->len + n + 1 > b->cap) {
    size_t cap = b->cap ? b->cap : 65536;
    while (b->len + n + 1 > cap) cap *= 2;
    char *p = realloc(b->data, cap);
    if (!p) {
      fprintf(stderr, "report: realloc(%zu): out of memory\n", cap);
      b->failed = 1;
      return;
    }
    b->data = p;
    b->cap = cap;
  }
  memcpy(b->data + b->len, s, n);
  b->len += n;
  b->data[b->len] = '\0';
}

static void buf_puts(buf_t *b, const char *s) { buf_add(b, s, strlen(s)); }

static void buf_printf(buf_t *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void buf_printf(buf_t *b, const char *fmt, ...) {
  char tmp[1024];
  va_list ap;
  va_start(ap, fmt);
  int n = vsnprintf(tmp, sizeof tmp, fmt, ap);
  va_end(ap);
  if (n < 0) return;
  if ((size_t)n >= sizeof tmp) n = sizeof tmp - 1; /* callers format short pieces only */
  buf_add(b, tmp, (size_t)n);
}

/* Text from a summary, the manifest or a README, escaped for HTML text and attribute values. */
static void buf_esc_n(buf_t *b, const char *s, size_t n) {
  for (size_t i = 0; i < n && s[i]; i++) {
    switch (s[i]) {
    case '&': buf_puts(b, "&amp;"); break;
    case '<': buf_puts(b, "&lt;"); break;
    case '>': buf_puts(b, "&gt;"); break;
    case '"': buf_puts(b, "&quot;"); break;
    case '\'': buf_puts(b, "&#39;"); break;
    default: buf_add(b, s + i, 1);
    }
  }
}

static void buf_esc(buf_t *b, const char *s) { buf_esc_n(b, s ? s : "", s ? strlen(s) : 0); }

/* ---- files ---- */

/* SRC into DST of SIZE bytes, cut at SIZE - 1. */
static void str_copy(char *dst, size_t size, const char *src) {
  size_t n = strlen(src);
  if (n >= size) n = size - 1;
  memcpy(dst, src, n);
  dst[n] = '\0';
}

static char *read_file(const char *path, size_t *len_out) {
  FILE *f = fopen(path, "rb");
  if (!f) return NULL;
  buf_t b = {0};
  char chunk[65536];
  size_t n;
  while ((n = fread(chunk, 1, sizeof chunk, f)) > 0) buf_add(&b, chunk, n);
  int err = ferror(f);
  fclose(f);
  if (err || b.failed) {
    free(b.data);
    return NULL;
  }
  if (!b.data) buf_add(&b, "", 0);
  if (len_out) *len_out = b.len;
  return b.data;
}

static int is_dir(const char *path) {
  DIR *d = opendir(path);
  if (!d) return 0;
  closedir(d);
  return 1;
}

/* labs/manifest: every `lab NN-slug` and its `title`. */
static int manifest_read(report_t *r) {
  FILE *f = fopen(r->manifest, "r");
  if (!f) {
    fprintf(stderr, "report: fopen(%s): %s\n", r->manifest, strerror(errno));
    return -1;
  }
  char line[1024];
  lab_t *cur = NULL;
  while (fgets(line, sizeof line, f)) {
    line[strcspn(line, "\r\n")] = '\0';
    char key[32], val[sizeof line];
    if (line[0] == '#' || sscanf(line, "%31s %1023[^\n]", key, val) != 2) continue;
    if (strcmp(key, "lab") == 0) {
      if (r->nlabs == REPORT_MAX_LABS) {
        fprintf(stderr, "report: more than %d labs in %s\n", REPORT_MAX_LABS, r->manifest);
        break;
      }
      cur = &r->labs[r->nlabs++];
      val[strcspn(val, " \t")] = '\0';
      str_copy(cur->slug, sizeof cur->slug, val);
      cur->title[0] = '\0';
    } else if (strcmp(key, "title") == 0 && cur && !cur->title[0]) {
      str_copy(cur->title, sizeof cur->title, val);
    }
  }
  fclose(f);
  if (r->nlabs == 0) {
    fprintf(stderr, "report: no `lab` line in %s\n", r->manifest);
    return -1;
  }
  return 0;
}

static int lab_cmp(const void *a, const void *b) {
  return strcmp(((const lab_t *)a)->slug, ((const lab_t *)b)->slug);
}

/* The README link: a path from the page's folder to labs_dir (both must exist). */
static void readme_href_init(report_t *r) {
  char outdir[PATH_MAX], from[PATH_MAX], to[PATH_MAX];
  snprintf(outdir, sizeof outdir, "%s", r->out);
  char *slash = strrchr(outdir, '/');
  if (slash) *slash = '\0';
  else snprintf(outdir, sizeof outdir, ".");
  if (!realpath(outdir[0] ? outdir : "/", from) || !realpath(r->labs_dir, to)) {
    snprintf(r->readme_href, sizeof r->readme_href, "%s", r->labs_dir);
    return;
  }
  /* the longest common folder, then one ../ per folder left in `from` */
  size_t common = 0, i = 0;
  while (from[i] && from[i] == to[i]) {
    if (from[i] == '/') common = i;
    i++;
  }
  if (!from[i] && (to[i] == '/' || !to[i])) common = i;
  char *p = r->readme_href, *end = r->readme_href + sizeof r->readme_href;
  *p = '\0';
  for (const char *s = from + common; *s; s++)
    if (*s == '/' && p + 4 < end) p += snprintf(p, (size_t)(end - p), "../");
  const char *rest = to + common + (to[common] == '/');
  if (!*rest) rest = ".";
  snprintf(p, (size_t)(end - p), "%s", rest);
}

/* ---- numbers and names ---- */

/* As many decimals as a figure deserves (1234, 12.3, 1.23): the same as summary.txt. */
static const char *fmt_num(double v, char *s, size_t n) {
  double a = fabs(v);
  if (isnan(v)) snprintf(s, n, "n/a");
  else if (a >= 100 || a == floor(a)) snprintf(s, n, "%.0f", v);
  else if (a >= 10) snprintf(s, n, "%.1f", v);
  else snprintf(s, n, "%.2f", v);
  return s;
}

static void buf_num(buf_t *b, const json_t *v) {
  char s[64];
  if (json_is_number(v)) buf_puts(b, fmt_num(json_number_value(v), s, sizeof s));
  else buf_puts(b, "<span class=\"nodata\">no data</span>");
}

/* A figure's key as a reader says it: peak_rps -> "peak (req/s)", lag_max_ms -> "lag max (ms)". */
static void buf_figure_name(buf_t *b, const char *key) {
  static const struct { const char *tok, *unit; } units[] = {
      {"rps", "req/s"}, {"ms", "ms"}, {"s", "s"}, {"kb", "KB"}, {"mb", "MB"}};
  const char *last = strrchr(key, '_');
  const char *unit = NULL;
  if (last)
    for (size_t i = 0; i < sizeof units / sizeof units[0]; i++)
      if (strcmp(last + 1, units[i].tok) == 0) unit = units[i].unit;
  size_t n = unit ? (size_t)(last - key) : strlen(key);
  for (size_t i = 0; i < n; i++) {
    if (key[i] == '_') buf_puts(b, " ");
    else if (strncmp(key + i, "rps", 3) == 0 && (i == 0 || key[i - 1] == '_') &&
             (key[i + 3] == '_' || !key[i + 3])) {
      buf_puts(b, "req/s");
      i += 2;
    } else buf_esc_n(b, key + i, 1);
  }
  if (unit) buf_printf(b, " (%s)", unit);
}

static const char *op_html(const char *op) {
  if (!op) return "?";
  if (strcmp(op, ">=") == 0) return "&ge;";
  if (strcmp(op, "<=") == 0) return "&le;";
  if (strcmp(op, "==") == 0) return "=";
  if (strcmp(op, "!=") == 0) return "&ne;";
  if (strcmp(op, ">") == 0) return "&gt;";
  if (strcmp(op, "<") == 0) return "&lt;";
  return "?";
}

/* A CSS class for a variant name: the plots' colours (pitfall red, solution green, exercise blue). */
static const char *variant_class(const char *v) {
  if (strcmp(v, "pitfall") == 0) return "pitfall";
  if (strncmp(v, "solution", 8) == 0) return "solution";
  if (strcmp(v, "exercise") == 0) return "exercise";
  return "other";
}

/* ---- the README: its symptom line, and where it mentions each plot ---- */

/* The blockquote under the README's title (markdown: `code` and **bold** kept); nothing when none. */
static void buf_symptom(buf_t *b, const char *readme) {
  const char *p = readme;
  while (*p && *p != '>') {
    if (*p == '#' || *p == '\n') p = strchr(p, '\n') ? strchr(p, '\n') + 1 : p + strlen(p);
    else return; /* text before any quote: no symptom line */
  }
  int code = 0, strong = 0;
  while (*p == '>') {
    p++;
    if (*p == ' ') p++;
    const char *eol = strchr(p, '\n');
    size_t n = eol ? (size_t)(eol - p) : strlen(p);
    for (size_t i = 0; i < n; i++) {
      if (p[i] == '`') {
        buf_puts(b, code ? "</code>" : "<code>");
        code = !code;
      } else if (!code && p[i] == '*' && i + 1 < n && p[i + 1] == '*') {
        buf_puts(b, strong ? "</strong>" : "<strong>");
        strong = !strong;
        i++;
      } else {
        buf_esc_n(b, p + i, 1);
      }
    }
    buf_puts(b, " ");
    p = eol ? eol + 1 : p + n;
  }
  if (code) buf_puts(b, "</code>");
  if (strong) buf_puts(b, "</strong>");
}

/* Where STEM.png or STEM.svg first appears in README as a whole name (so "latency" does not match
 * "conncost-latency.png"); SIZE_MAX when it does not. */
static size_t readme_mention(const char *readme, const char *stem) {
  size_t n = strlen(stem);
  for (const char *p = readme ? strstr(readme, stem) : NULL; p; p = strstr(p + 1, stem)) {
    char before = p == readme ? ' ' : p[-1];
    int word = (before >= 'a' && before <= 'z') || (before >= '0' && before <= '9') ||
               before == '-' || before == '_';
    if (!word && (strncmp(p + n, ".png", 4) == 0 || strncmp(p + n, ".svg", 4) == 0))
      return (size_t)(p - readme);
  }
  return SIZE_MAX;
}

static int plot_cmp(const void *a, const void *b) {
  const plot_t *x = a, *y = b;
  if (x->readme_pos != y->readme_pos) return x->readme_pos < y->readme_pos ? -1 : 1;
  return strcmp(x->name, y->name);
}

/* The SVGs of DIR, in the order the README shows them (then by name). */
static int plots_list(const char *dir, const char *readme, plot_t *plots, int max) {
  DIR *d = opendir(dir);
  if (!d) return 0;
  int n = 0;
  struct dirent *e;
  while ((e = readdir(d)) && n < max) {
    size_t len = strlen(e->d_name);
    if (len < 5 || len >= sizeof plots[n].name || strcmp(e->d_name + len - 4, ".svg") != 0) continue;
    snprintf(plots[n].name, sizeof plots[n].name, "%s", e->d_name);
    char stem[256];
    snprintf(stem, sizeof stem, "%.*s", (int)(len - 4), e->d_name);
    plots[n].readme_pos = readme_mention(readme, stem);
    n++;
  }
  closedir(d);
  qsort(plots, (size_t)n, sizeof plots[0], plot_cmp);
  return n;
}

/* ---- inlining a plot ---- */

/* Copies gnuplot's SVG into the page: from <svg to </svg> (the <?xml?> prologue, a DOCTYPE or
 * comments before it dropped), every id="X" / href="#X" / url(#X) renamed pN-X, since several
 * plots on one page all define gpPt0, gnuplot_canvas, ... and an id must be unique. Our plots are
 * trusted files, but one holding a script or foreign content is refused rather than inlined.
 * Returns 0, or -1 with WHY set. */
static int buf_inline_svg(buf_t *b, const char *svg, int seq, const char **why) {
  const char *start = strstr(svg, "<svg");
  const char *end = NULL;
  for (const char *p = start ? strstr(start, "</svg>") : NULL; p; p = strstr(p + 1, "</svg>")) end = p;
  if (!start || !end) {
    *why = "no <svg>...</svg> in it";
    return -1;
  }
  end += strlen("</svg>");
  static const char *refused[] = {"<script", "<foreignObject", "javascript:", "<iframe"};
  for (size_t i = 0; i < sizeof refused / sizeof refused[0]; i++) {
    size_t n = strlen(refused[i]);
    for (const char *p = start; p + n <= end; p++)
      if (strncasecmp(p, refused[i], n) == 0) {
        *why = "it holds a script or foreign content";
        return -1;
      }
  }
  static const char *refs[] = {" id='", " id=\"", "href='#", "href=\"#", "url(#"};
  const char *run = start;
  for (const char *p = start; p < end; p++) {
    for (size_t i = 0; i < sizeof refs / sizeof refs[0]; i++) {
      size_t n = strlen(refs[i]);
      if ((size_t)(end - p) >= n && memcmp(p, refs[i], n) == 0) {
        buf_add(b, run, (size_t)(p - run) + n);
        buf_printf(b, "p%d-", seq);
        p += n - 1;
        run = p + 1;
        break;
      }
    }
  }
  buf_add(b, run, (size_t)(end - run));
  return 0;
}

/* ---- the page ---- */

static const char *PAGE_STYLE =
    ":root{--pit:#d62728;--sol:#2ca02c;--ex:#1f77b4;--grey:#555}\n"
    "body{font:22px/1.45 \"DejaVu Sans\",\"Liberation Sans\",Arial,sans-serif;color:#111;"
    "background:#fff;margin:0 auto;max-width:1880px;padding:8px 32px 64px}\n"
    "h1{font-size:40px;margin:8px 0 2px}h2{font-size:34px;margin:0 0 8px}"
    "h3{font-size:26px;margin:24px 0 8px}\n"
    ".sub{color:var(--grey);margin:0 0 4px;font-size:20px}\n"
    "table{border-collapse:collapse;margin:8px 0}th,td{padding:5px 14px;text-align:left;"
    "border-bottom:1px solid #ccc;vertical-align:top}th{border-bottom:3px solid #888}\n"
    "td.num{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}\n"
    "table.summary td,table.summary th{font-size:21px;padding:4px 10px}table.summary a{color:#111}\n"
    "table.summary td{white-space:nowrap}table.summary td.title{white-space:normal}\n"
    ".pitfall{color:var(--pit);font-weight:700}.solution{color:var(--sol);font-weight:700}"
    ".exercise{color:var(--ex);font-weight:700}.other{color:var(--grey);font-weight:700}\n"
    ".met{color:var(--sol);font-weight:700}.missed{color:var(--pit);font-weight:700}\n"
    ".nodata,.notyet{color:var(--grey)}.warn{color:#b35900;font-weight:700}\n"
    ".legend{margin:0 0 4px;font-size:20px;color:var(--grey)}.legend span{margin-right:24px}\n"
    "section.lab{border-top:5px solid #ddd;margin-top:40px;padding-top:20px}\n"
    "blockquote{font-size:27px;margin:8px 0 16px;padding:4px 20px;border-left:8px solid var(--pit);"
    "background:#fbf3f3}\n"
    "code{font-family:\"DejaVu Sans Mono\",\"Liberation Mono\",monospace;font-size:.9em}\n"
    ".meta{color:var(--grey);font-size:20px}\n"
    ".plots{display:grid;grid-template-columns:repeat(auto-fill,minmax(min(100%,860px),1fr));"
    "gap:20px}\n"
    "figure{margin:0;border:1px solid #ddd;padding:6px}figure svg{display:block;width:100%;"
    "height:auto}figcaption{font-size:18px;color:var(--grey)}\n";

static void page_head(buf_t *b, const report_t *r, int benched, long met, long missed) {
  char when[64];
  time_t now = time(NULL);
  struct tm tm;
  strftime(when, sizeof when, "%Y-%m-%d %H:%M UTC", gmtime_r(&now, &tm));
  buf_puts(b, "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n");
  /* Nothing on this page may be fetched: a plot or a style that needs the network would be
   * missing on the projector. The policy makes any such request a visible violation. */
  buf_puts(b, "<meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; "
              "img-src data:; style-src 'unsafe-inline'\">\n");
  buf_puts(b, "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n");
  buf_puts(b, "<title>Loopholes: what the bench measured</title>\n<style>\n");
  buf_puts(b, PAGE_STYLE);
  buf_puts(b, "</style>\n</head>\n<body>\n<h1>Loopholes: what the bench measured</h1>\n");
  buf_printf(b, "<p class=\"sub\">%d of %d labs benched &middot; targets: ", benched, r->nlabs);
  buf_printf(b, "<span class=\"met\">%ld met</span>, <span class=\"%s\">%ld missed</span>", met,
             missed ? "missed" : "met", missed);
  buf_printf(b, " &middot; page written %s from <code>", when);
  buf_esc(b, r->results_dir);
  buf_puts(b, "/</code></p>\n");
  buf_puts(b, "<p class=\"legend\"><span class=\"pitfall\">&#9632; pitfall</span>"
              "<span class=\"solution\">&#9632; solution</span>"
              "<span class=\"exercise\">&#9632; exercise</span>"
              "ratio: the larger headline figure over the smaller</p>\n");
}

static json_t *lab_summary(report_t *r, lab_t *lab) {
  char path[PATH_MAX];
  snprintf(path, sizeof path, "%s/%s/summary.json", r->results_dir, lab->slug);
  FILE *f = fopen(path, "r");
  lab->err[0] = '\0';
  if (!f) return NULL;
  fclose(f);
  json_error_t je;
  json_t *s = json_load_file(path, 0, &je);
  if (!s || !json_is_object(s)) {
    if (s) snprintf(lab->err, sizeof lab->err, "%s: not a JSON object", path);
    else snprintf(lab->err, sizeof lab->err, "%s: line %d: %s", path, je.line, je.text);
    fprintf(stderr, "report: %s\n", lab->err);
    json_decref(s);
    r->unreadable++;
    return NULL;
  }
  return s;
}

/* The headline figure: the first one pitfall and solution both report (else the solution's first). */
static const char *headline_key(json_t *figures) {
  json_t *pit = json_object_get(figures, "pitfall"), *sol = json_object_get(figures, "solution");
  const char *key;
  json_t *v;
  json_object_foreach(sol, key, v) if (json_is_number(json_object_get(pit, key))) return key;
  json_object_foreach(pit, key, v) if (json_is_number(json_object_get(sol, key))) return key;
  json_object_foreach(sol, key, v) if (json_is_number(v)) return key;
  json_object_foreach(pit, key, v) if (json_is_number(v)) return key;
  return NULL;
}

static void summary_row(buf_t *b, const lab_t *lab, json_t *s) {
  const char *err = lab->err;
  const char *num = lab->slug;
  buf_puts(b, "<tr><td><a href=\"#lab-");
  buf_esc_n(b, num, 2);
  buf_puts(b, "\">");
  buf_esc_n(b, num, 2);
  /* the pitfall's name: the title up to ": " or " versus " (the section has the whole title) */
  size_t cut = strlen(lab->title);
  const char *colon = strstr(lab->title, ": "), *versus = strstr(lab->title, " versus ");
  if (colon && (size_t)(colon - lab->title) < cut) cut = (size_t)(colon - lab->title);
  if (versus && (size_t)(versus - lab->title) < cut) cut = (size_t)(versus - lab->title);
  buf_puts(b, "</a></td><td class=\"title\">");
  buf_esc_n(b, lab->title, cut);
  buf_puts(b, "</td>");
  if (!s && err[0]) {
    buf_puts(b, "<td colspan=\"5\" class=\"missed\">summary.json unreadable</td></tr>\n");
    return;
  }
  if (!s) {
    buf_puts(b, "<td colspan=\"5\" class=\"notyet\">not benched yet: <code>make bench LAB=");
    buf_esc_n(b, num, 2);
    buf_puts(b, "</code></td></tr>\n");
    return;
  }
  json_t *figures = json_object_get(s, "figures");
  const char *key = headline_key(figures);
  json_t *pv = key ? json_object_get(json_object_get(figures, "pitfall"), key) : NULL;
  json_t *sv = key ? json_object_get(json_object_get(figures, "solution"), key) : NULL;
  buf_puts(b, "<td>");
  if (key) buf_figure_name(b, key);
  buf_printf(b, "</td><td class=\"num%s\">", pv ? " pitfall" : "");
  if (pv) buf_num(b, pv);
  else buf_puts(b, "&mdash;");
  buf_printf(b, "</td><td class=\"num%s\">", sv ? " solution" : "");
  if (sv) buf_num(b, sv);
  else buf_puts(b, "&mdash;");
  buf_puts(b, "</td><td class=\"num\">");
  double p = json_number_value(pv), q = json_number_value(sv);
  char f[64];
  if (json_is_number(pv) && json_is_number(sv) && p != 0 && q != 0 && (p > 0) == (q > 0))
    buf_printf(b, "%s&times;", fmt_num(fabs(p) > fabs(q) ? p / q : q / p, f, sizeof f));
  else buf_puts(b, "&mdash;");
  long met = (long)json_integer_value(json_object_get(s, "targets_met"));
  long missed = (long)json_integer_value(json_object_get(s, "targets_missed"));
  buf_printf(b, "</td><td class=\"num %s\">%ld of %ld", missed ? "missed" : "met", met, met + missed);
  if (json_is_true(json_object_get(s, "quick"))) buf_puts(b, " <span class=\"warn\">(quick)</span>");
  buf_puts(b, "</td></tr>\n");
}

/* "measured 2026-12-01 09:36 UTC in 35 s on 2 x Intel Xeon, x86_64, Linux 6.1, load 22.7 at the end" */
static void lab_meta(buf_t *b, json_t *s) {
  json_t *m = json_object_get(s, "machine");
  char f[64];
  const char *ts = json_string_value(json_object_get(s, "timestamp"));
  int y, mo, d, h, mi;
  buf_puts(b, "<p class=\"meta\">measured ");
  if (ts && sscanf(ts, "%4d-%2d-%2dT%2d:%2d", &y, &mo, &d, &h, &mi) == 5)
    buf_printf(b, "%04d-%02d-%02d %02d:%02d UTC", y, mo, d, h, mi);
  else buf_esc(b, ts);
  buf_printf(b, " in %s s", fmt_num(json_number_value(json_object_get(s, "duration_s")), f, sizeof f));
  if (json_is_object(m)) {
    long cpus = (long)json_integer_value(json_object_get(m, "cpus"));
    double load = json_number_value(json_object_get(m, "loadavg_1m"));
    buf_printf(b, " on %ld &times; ", cpus);
    buf_esc(b, json_string_value(json_object_get(m, "cpu_model")));
    buf_puts(b, ", ");
    buf_esc(b, json_string_value(json_object_get(m, "machine")));
    buf_puts(b, ", Linux ");
    buf_esc(b, json_string_value(json_object_get(m, "kernel")));
    buf_printf(b, ", load average %s at the end", fmt_num(load, f, sizeof f));
    if (cpus > 0 && load > 1.5 * (double)cpus)
      buf_printf(b, " <span class=\"warn\">(a busy machine: %s&times; its CPUs)</span>",
                 fmt_num(load / (double)cpus, f, sizeof f));
  }
  if (json_is_true(json_object_get(s, "quick")))
    buf_puts(b, " &middot; <span class=\"warn\">a quick run: a smoke test, not a measurement</span>");
  if (json_is_true(json_object_get(s, "replot")))
    buf_puts(b, " &middot; redrawn from the CSVs (<code>REPLOT=1</code>)");
  json_int_t schema = json_integer_value(json_object_get(s, "schema"));
  if (schema != 1)
    buf_printf(b, " &middot; <span class=\"warn\">summary.json schema %lld: this page reads schema 1"
                  "</span>", (long long)schema);
  buf_puts(b, "</p>\n");
}

/* Targets (the kit's pitfall and solution: they count) or checks (other variants: they do not). */
static void lab_targets(buf_t *b, json_t *list, const char *heading, int with_variant) {
  if (!json_is_array(list) || json_array_size(list) == 0) return;
  buf_printf(b, "<h3>%s</h3>\n<table>\n<tr>%s<th>what</th><th>measured</th><th>bound</th>"
                "<th></th><th>why that bound</th></tr>\n",
             heading, with_variant ? "<th>variant</th>" : "");
  size_t i;
  json_t *t;
  json_array_foreach(list, i, t) {
    const char *name = json_string_value(json_object_get(t, "name"));
    int met = json_is_true(json_object_get(t, "met"));
    buf_puts(b, "<tr>");
    if (with_variant) {
      const char *v = json_string_value(json_object_get(t, "variant"));
      buf_printf(b, "<td class=\"%s\">", variant_class(v ? v : ""));
      buf_esc(b, v);
      buf_puts(b, "</td>");
    }
    const char *vc = name && strncmp(name, "pitfall", 7) == 0    ? " class=\"pitfall\""
                     : name && strncmp(name, "solution", 8) == 0 ? " class=\"solution\""
                                                                 : "";
    buf_printf(b, "<td%s>", vc);
    buf_esc(b, name);
    buf_puts(b, "</td><td class=\"num\">");
    buf_num(b, json_object_get(t, "value"));
    buf_printf(b, "</td><td class=\"num\">%s ", op_html(json_string_value(json_object_get(t, "op"))));
    buf_num(b, json_object_get(t, "bound"));
    buf_printf(b, "</td><td class=\"%s\">%s</td><td>", met ? "met" : "missed", met ? "met" : "MISSED");
    buf_esc(b, json_string_value(json_object_get(t, "reason")));
    buf_puts(b, "</td></tr>\n");
  }
  buf_puts(b, "</table>\n");
}

/* figures: a row per variant, a column per figure (in the order they first appear). */
static void lab_figures(buf_t *b, json_t *figures) {
  const char *cols[64];
  int ncols = 0, rows = 0;
  const char *v, *k;
  json_t *per, *x;
  json_object_foreach(figures, v, per) {
    if (!json_is_object(per)) continue;
    rows++;
    json_object_foreach(per, k, x) {
      int seen = 0;
      for (int i = 0; i < ncols; i++) seen |= strcmp(cols[i], k) == 0;
      if (!seen && ncols < 64) cols[ncols++] = k;
    }
  }
  if (rows == 0 || ncols == 0) return;
  buf_puts(b, "<h3>Figures</h3>\n");
  int own = 0; /* top-level numbers: the lab's own figures, not a variant's */
  json_object_foreach(figures, k, x) {
    if (!json_is_number(x)) continue;
    buf_puts(b, own++ ? ", " : "<p>this lab: ");
    buf_figure_name(b, k);
    buf_puts(b, " ");
    buf_num(b, x);
  }
  if (own) buf_puts(b, "</p>\n");
  buf_puts(b, "<table>\n<tr><th>variant</th>");
  for (int i = 0; i < ncols; i++) {
    buf_puts(b, "<th>");
    buf_figure_name(b, cols[i]);
    buf_puts(b, "</th>");
  }
  buf_puts(b, "</tr>\n");
  json_object_foreach(figures, v, per) {
    if (!json_is_object(per)) continue;
    buf_printf(b, "<tr><td class=\"%s\">", variant_class(v));
    buf_esc(b, v);
    buf_puts(b, "</td>");
    for (int i = 0; i < ncols; i++) {
      json_t *fv = json_object_get(per, cols[i]);
      buf_puts(b, "<td class=\"num\">");
      if (fv) buf_num(b, fv);
      else buf_puts(b, "&mdash;");
      buf_puts(b, "</td>");
    }
    buf_puts(b, "</tr>\n");
  }
  buf_puts(b, "</table>\n");
}

static void lab_plots(buf_t *b, report_t *r, const lab_t *lab, const char *readme) {
  char dir[PATH_MAX];
  snprintf(dir, sizeof dir, "%s/%s", r->results_dir, lab->slug);
  plot_t *plots = calloc(REPORT_MAX_PLOTS, sizeof *plots);
  if (!plots) {
    fprintf(stderr, "report: calloc: out of memory\n");
    b->failed = 1;
    return;
  }
  int n = plots_list(dir, readme, plots, REPORT_MAX_PLOTS);
  if (n == 0) buf_puts(b, "<p class=\"notyet\">no plots in this lab's results folder</p>\n");
  else buf_puts(b, "<h3>Plots</h3>\n<div class=\"plots\">\n");
  for (int i = 0; i < n; i++) {
    char path[PATH_MAX + 256];
    snprintf(path, sizeof path, "%s/%s", dir, plots[i].name);
    const char *why = "it could not be read";
    char *svg = read_file(path, NULL);
    buf_puts(b, "<figure>");
    if (!svg || buf_inline_svg(b, svg, ++r->plot_seq, &why) != 0) {
      fprintf(stderr, "report: %s not inlined: %s\n", path, why);
      buf_printf(b, "<p class=\"missed\">not inlined: %s</p>", why);
    }
    free(svg);
    buf_puts(b, "<figcaption>");
    buf_esc(b, plots[i].name);
    buf_puts(b, "</figcaption></figure>\n");
  }
  if (n > 0) buf_puts(b, "</div>\n");
  free(plots);
}

static void lab_section(buf_t *b, report_t *r, const lab_t *lab, json_t *s) {
  const char *err = lab->err;
  char path[PATH_MAX];
  snprintf(path, sizeof path, "%s/%s/README.md", r->labs_dir, lab->slug);
  char *readme = read_file(path, NULL);
  buf_puts(b, "<section class=\"lab\" id=\"lab-");
  buf_esc_n(b, lab->slug, 2);
  buf_puts(b, "\" data-lab=\"");
  buf_esc(b, lab->slug);
  buf_puts(b, "\">\n<h2>Lab ");
  buf_esc_n(b, lab->slug, 2);
  buf_puts(b, " &mdash; ");
  buf_esc(b, lab->title);
  buf_puts(b, "</h2>\n");
  if (readme) {
    buf_t q = {0};
    buf_symptom(&q, readme);
    if (q.len) {
      buf_puts(b, "<blockquote>");
      buf_puts(b, q.data);
      buf_puts(b, "</blockquote>\n");
    }
    free(q.data);
    buf_puts(b, "<p class=\"meta\">The lesson: <a href=\"");
    buf_esc(b, r->readme_href);
    buf_puts(b, "/");
    buf_esc(b, lab->slug);
    buf_puts(b, "/README.md\">labs/");
    buf_esc(b, lab->slug);
    buf_puts(b, "/README.md</a></p>\n");
  }
  if (!s) {
    char dir[PATH_MAX];
    snprintf(dir, sizeof dir, "%s/%s", r->results_dir, lab->slug);
    if (err[0]) {
      buf_puts(b, "<p class=\"missed\">");
      buf_esc(b, err);
      buf_puts(b, "</p>\n");
    } else {
      buf_puts(b, "<p class=\"notyet\">not benched yet: <code>make bench LAB=");
      buf_esc_n(b, lab->slug, 2);
      buf_puts(b, "</code></p>\n");
      if (is_dir(dir))
        buf_puts(b, "<p class=\"warn\">its results folder has files but no summary.json: the last "
                    "bench run of this lab did not finish</p>\n");
    }
  } else {
    lab_meta(b, s);
    lab_targets(b, json_object_get(s, "targets"), "Targets", 0);
    lab_figures(b, json_object_get(s, "figures"));
    lab_plots(b, r, lab, readme);
    lab_targets(b, json_object_get(s, "checks"), "Checks on other variants (not counted)", 1);
  }
  buf_puts(b, "</section>\n");
  free(readme);
}

/* Written to FILE.tmp, then renamed: a projector reloading the page never sees half of it. */
static int page_write(const report_t *r, const buf_t *b) {
  char tmp[PATH_MAX];
  snprintf(tmp, sizeof tmp, "%s.tmp", r->out);
  FILE *f = fopen(tmp, "w");
  if (!f) {
    fprintf(stderr, "report: fopen(%s): %s\n", tmp, strerror(errno));
    return -1;
  }
  size_t n = fwrite(b->data, 1, b->len, f);
  if (n != b->len || fclose(f) != 0) {
    fprintf(stderr, "report: writing %s: %s\n", tmp, strerror(errno));
    remove(tmp);
    return -1;
  }
  if (rename(tmp, r->out) != 0) {
    fprintf(stderr, "report: rename(%s, %s): %s\n", tmp, r->out, strerror(errno));
    remove(tmp);
    return -1;
  }
  return 0;
}

static int report_build(report_t *r) {
  json_t *sums[REPORT_MAX_LABS] = {0};
  int benched = 0;
  long met = 0, missed = 0;
  for (int i = 0; i < r->nlabs; i++) {
    sums[i] = lab_summary(r, &r->labs[i]);
    if (!sums[i]) continue;
    benched++;
    met += (long)json_integer_value(json_object_get(sums[i], "targets_met"));
    missed += (long)json_integer_value(json_object_get(sums[i], "targets_missed"));
  }
  buf_t b = {0};
  page_head(&b, r, benched, met, missed);
  buf_puts(&b, "<table class=\"summary\">\n<tr><th>lab</th><th>pitfall</th><th>headline figure</th>"
               "<th class=\"pitfall\">pitfall</th><th class=\"solution\">solution</th>"
               "<th>ratio</th><th>targets met</th></tr>\n");
  for (int i = 0; i < r->nlabs; i++) summary_row(&b, &r->labs[i], sums[i]);
  buf_puts(&b, "</table>\n");
  for (int i = 0; i < r->nlabs; i++) lab_section(&b, r, &r->labs[i], sums[i]);
  buf_puts(&b, "</body>\n</html>\n");
  for (int i = 0; i < r->nlabs; i++) json_decref(sums[i]);
  int rc = b.failed ? -1 : page_write(r, &b);
  if (rc == 0)
    printf("report: wrote %s: %d of %d labs benched, %d plots, %zu KB\n", r->out, benched,
           r->nlabs, r->plot_seq, b.len / 1024);
  free(b.data);
  return rc;
}

static void usage(FILE *out) {
  fprintf(out,
          "usage: report [--results DIR] [--out FILE] [--manifest FILE] [--labs DIR]\n"
          "The workshop page: one self-contained HTML file (plots inline, no script, no URL)\n"
          "with a summary table and a section per lab of the manifest, from each lab's\n"
          "DIR/NN-slug/summary.json and SVG plots (make bench writes them; docs/bench.md).\n"
          "  --results DIR    the results folder (default results)\n"
          "  --out FILE       the page (default DIR/index.html)\n"
          "  --manifest FILE  the list of labs (default labs/manifest)\n"
          "  --labs DIR       where each lab's README.md is (default labs)\n"
          "  -h, --help       this text\n"
          "Exit status: 0 written; 1 not written, or a summary.json was unreadable; 2 usage.\n");
}

int main(int argc, char **argv) {
  static report_t r; /* large (the lab table): not on the stack */
  r.results_dir = "results";
  r.manifest = "labs/manifest";
  r.labs_dir = "labs";
  char out[PATH_MAX] = "";
  for (int i = 1; i < argc; i++) {
    const char **dst = NULL;
    if (strcmp(argv[i], "-h") == 0 || strcmp(argv[i], "--help") == 0) {
      usage(stdout);
      return 0;
    }
    if (strcmp(argv[i], "--results") == 0) dst = &r.results_dir;
    else if (strcmp(argv[i], "--out") == 0) dst = &r.out;
    else if (strcmp(argv[i], "--manifest") == 0) dst = &r.manifest;
    else if (strcmp(argv[i], "--labs") == 0) dst = &r.labs_dir;
    if (!dst) {
      fprintf(stderr, "report: unknown option '%s'\n", argv[i]);
      usage(stderr);
      return 2;
    }
    if (i + 1 >= argc || !argv[i + 1][0]) {
      fprintf(stderr, "report: option %s needs a value\n", argv[i]);
      usage(stderr);
      return 2;
    }
    *dst = argv[++i];
  }
  if (!r.out) {
    snprintf(out, sizeof out, "%s/index.html", r.results_dir);
    r.out = out;
  }
  if (!is_dir(r.results_dir)) {
    fprintf(stderr, "report: %s is not a folder (make bench writes it)\n", r.results_dir);
    return 1;
  }
  if (manifest_read(&r) != 0) return 1;
  qsort(r.labs, (size_t)r.nlabs, sizeof r.labs[0], lab_cmp);
  readme_href_init(&r);
  if (report_build(&r) != 0) return 1;
  if (r.unreadable) {
    fprintf(stderr, "report: %d summary.json file(s) unreadable (the page says which)\n", r.unreadable);
    return 1;
  }
  return 0;
}
