/* perfscore.c - scores a lab's performance rows from the bench's summary.json (make grade).
 *
 *   perfscore SUMMARY.json VARIANT < LINES
 *
 * LINES are the lab's `perf` and `leaderboard` rows of labs/manifest, one per line, key first:
 *   perf FIGURE OP BOUND POINTS     FIGURE: a name of figures[VARIANT]; OP: >= <= > <;
 *                                   BOUND: a number, NAME or X*NAME (NAME: a lab-level figure of
 *                                   the same run, figures[NAME], such as a limit it measured)
 *   leaderboard EXPR ORDER TITLE... EXPR: FIGURE or FIGURE/NAME; ORDER: asc or desc
 * For each it prints one tab-separated line on stdout:
 *   P  FIGURE  OP  BOUND-AS-WRITTEN  BOUND-VALUE  VALUE  MET(1|0)  POINTS
 *   B  TITLE  VALUE  ORDER
 * then every figure of the run, F NAME VALUE (the variant's first, then the lab's own). A figure
 * that is missing, not a number or not finite is "nan" and never meets a bound.
 * Exit status: 0, 1 when SUMMARY.json cannot be read, 2 on a malformed line (named on stderr).
 * The grader (harness/grader/perf.sh) calls it outside the sandbox, on the file the bench wrote.
 */
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* figures[variant][name] when variant is set, else figures[name] (a lab-level number). */
static double figure(const json_t *figs, const char *variant, const char *name) {
  const json_t *v = json_object_get(variant ? json_object_get(figs, variant) : figs, name);
  double x = json_is_number(v) ? json_number_value(v) : NAN;
  return isfinite(x) ? x : NAN;
}

/* A bound: "8000", "limit_rps", "0.5*limit_rps". NAN when a name is not a figure. */
static double bound_of(const json_t *figs, const char *variant, const char *text, int *bad) {
  char *end;
  double x = strtod(text, &end);
  if (end != text && *end == '\0') return x;
  const char *star = strchr(text, '*'), *name = star ? star + 1 : text;
  double k = 1;
  if (star) {
    k = strtod(text, &end);
    if (end != star) {
      *bad = 1;
      return NAN;
    }
  }
  double v = figure(figs, NULL, name);
  if (isnan(v)) v = figure(figs, variant, name); /* a figure of the run's variant, as a fallback */
  return k * v;
}

static int meets(double value, const char *op, double bound) {
  if (isnan(value) || isnan(bound)) return 0;
  if (!strcmp(op, ">=")) return value >= bound;
  if (!strcmp(op, "<=")) return value <= bound;
  if (!strcmp(op, ">")) return value > bound;
  return value < bound;
}

static void print_figures(const json_t *obj, int lab_level) {
  const char *key;
  const json_t *v;
  json_object_foreach((json_t *)obj, key, v) {
    if (lab_level && !json_is_number(v)) continue; /* the variants' objects */
    if (json_is_number(v)) printf("F\t%s\t%.6g\n", key, json_number_value(v));
  }
}

int main(int argc, char **argv) {
  if (argc != 3) {
    fprintf(stderr, "usage: perfscore SUMMARY.json VARIANT < perf and leaderboard lines\n");
    return 2;
  }
  json_error_t err;
  json_t *root = json_load_file(argv[1], 0, &err);
  if (!root) {
    fprintf(stderr, "perfscore: %s: %s (line %d)\n", argv[1], err.text, err.line);
    return 1;
  }
  const json_t *figs = json_object_get(root, "figures");
  const char *variant = argv[2];
  char line[1024];
  int rc = 0;
  while (fgets(line, sizeof line, stdin)) {
    char key[32], a[128], b[128], c[128], d[128];
    int n = sscanf(line, "%31s %127s %127s %127s %127s", key, a, b, c, d);
    if (n <= 0) continue;
    if (!strcmp(key, "perf")) {
      int bad = n != 5 || (strcmp(b, ">=") && strcmp(b, "<=") && strcmp(b, ">") && strcmp(b, "<"));
      double bound = bad ? NAN : bound_of(figs, variant, c, &bad);
      char *end;
      double points = strtod(d, &end);
      if (bad || *end || points < 0) {
        fprintf(stderr, "perfscore: a perf row is FIGURE OP BOUND POINTS (OP >= <= > <; BOUND a "
                "number, NAME or X*NAME), not: %s", line);
        rc = 2;
        continue;
      }
      double value = figure(figs, variant, a);
      printf("P\t%s\t%s\t%s\t%.6g\t%.6g\t%d\t%g\n", a, b, c, bound, value,
             meets(value, b, bound), points);
    } else if (!strcmp(key, "leaderboard")) {
      if (n < 4 || (strcmp(b, "asc") && strcmp(b, "desc"))) {
        fprintf(stderr, "perfscore: a leaderboard row is EXPR asc|desc TITLE, not: %s", line);
        rc = 2;
        continue;
      }
      const char *title = strstr(line, b) + strlen(b);
      title += strspn(title, " \t");
      char *slash = strchr(a, '/');
      if (slash) *slash = '\0';
      double v = figure(figs, variant, a);
      if (slash) v /= bound_of(figs, variant, slash + 1, &(int){0});
      printf("B\t%.*s\t%.6g\t%s\n", (int)strcspn(title, "\r\n"), title, isfinite(v) ? v : 0, b);
    }
  }
  print_figures(json_object_get(figs, variant), 0);
  print_figures(figs, 1);
  json_decref(root);
  return rc;
}
