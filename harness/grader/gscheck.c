/* gscheck.c - checks a results.json against Gradescope's autograder specification
 * (https://gradescope-autograders.readthedocs.io/en/latest/specs/), with the kit's JSON library
 * (jansson), so that the grader's self-test needs no jq or python3.
 *
 *   gscheck results.json     exit 0 and "ok: N tests, score S of M" when it is valid JSON with
 *                            the documented fields and types; exit 1 with what is wrong otherwise
 *
 * Checked: strict JSON (jansson's decoder: RFC 8259, no trailing text, no duplicate keys); a
 * top-level object; "score" a number (required here, since the grader always writes it); "tests"
 * an array of objects; in each test "score" and "max_score" numbers, "name", "output", "number"
 * strings, "status" one of passed/failed, "visibility" one of hidden/after_due_date/
 * after_published/visible, "tags" an array of strings; "execution_time" a number; the tests'
 * scores add up to "score".
 */
#include <jansson.h>
#include <stdio.h>
#include <string.h>

static int problems;

static void problem(const char *where, const char *what) {
  fprintf(stderr, "gscheck: %s: %s\n", where, what);
  problems++;
}

typedef int (*is_type_fn)(const json_t *v);
static int is_number(const json_t *v) { return json_is_number(v); }
static int is_string(const json_t *v) { return json_is_string(v); }
static int is_array(const json_t *v) { return json_is_array(v); }
static int is_object(const json_t *v) { return json_is_object(v); }

static const struct {
  is_type_fn is;
  const char *name;
} types[] = {{is_number, "a number"}, {is_string, "a string"}, {is_array, "an array"}, {is_object, "an object"}};
enum { T_NUM, T_STR, T_ARR, T_OBJ };

static void want(const json_t *obj, const char *key, int type, int required, const char *where) {
  const json_t *v = json_object_get(obj, key);
  char msg[160];
  if (v == NULL) {
    if (required) {
      snprintf(msg, sizeof msg, "\"%s\" is missing", key);
      problem(where, msg);
    }
    return;
  }
  if (!types[type].is(v)) {
    snprintf(msg, sizeof msg, "\"%s\" must be %s", key, types[type].name);
    problem(where, msg);
  }
}

static void want_enum(const json_t *obj, const char *key, const char *const *allowed, const char *where) {
  const char *s = json_string_value(json_object_get(obj, key));
  if (s == NULL) return;
  for (size_t i = 0; allowed[i] != NULL; i++)
    if (strcmp(s, allowed[i]) == 0) return;
  char msg[200];
  snprintf(msg, sizeof msg, "\"%s\" is \"%.60s\", not one of Gradescope's values", key, s);
  problem(where, msg);
}

int main(int argc, char **argv) {
  if (argc != 2 || strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0) {
    fprintf(argc == 2 ? stdout : stderr, "usage: gscheck results.json\n");
    return argc == 2 ? 0 : 2;
  }
  json_error_t err;
  json_t *root = json_load_file(argv[1], JSON_REJECT_DUPLICATES, &err);
  if (root == NULL) {
    fprintf(stderr, "gscheck: %s: not valid JSON: %s (line %d, byte %d)\n", argv[1], err.text, err.line,
            err.position);
    return 1;
  }
  static const char *const statuses[] = {"passed", "failed", NULL};
  static const char *const visibilities[] = {"hidden", "after_due_date", "after_published", "visible", NULL};
  static const char *const formats[] = {"text", "html", "simple_format", "md", "ansi", NULL};
  double sum = 0, max = 0;
  size_t ntests = 0;
  if (!json_is_object(root)) {
    problem("top level", "must be an object");
  } else {
    want(root, "score", T_NUM, 1, "top level");
    want(root, "execution_time", T_NUM, 0, "top level");
    want(root, "output", T_STR, 0, "top level");
    want(root, "visibility", T_STR, 0, "top level");
    want(root, "stdout_visibility", T_STR, 0, "top level");
    want(root, "extra_data", T_OBJ, 0, "top level");
    want(root, "tests", T_ARR, 1, "top level");
    want_enum(root, "visibility", visibilities, "top level");
    want_enum(root, "stdout_visibility", visibilities, "top level");
    want_enum(root, "output_format", formats, "top level");
    want_enum(root, "test_output_format", formats, "top level");
    const json_t *tests = json_object_get(root, "tests"), *t;
    size_t i;
    json_array_foreach(tests, i, t) {
      char where[32];
      snprintf(where, sizeof where, "tests[%zu]", i);
      ntests++;
      if (!json_is_object(t)) {
        problem(where, "must be an object");
        continue;
      }
      want(t, "score", T_NUM, 1, where);
      want(t, "max_score", T_NUM, 1, where);
      want(t, "name", T_STR, 1, where);
      want(t, "status", T_STR, 0, where);
      want(t, "output", T_STR, 0, where);
      want(t, "number", T_STR, 0, where);
      want(t, "visibility", T_STR, 0, where);
      want(t, "tags", T_ARR, 0, where);
      want(t, "extra_data", T_OBJ, 0, where);
      want_enum(t, "status", statuses, where);
      want_enum(t, "visibility", visibilities, where);
      want_enum(t, "output_format", formats, where);
      const json_t *tag;
      size_t k;
      json_array_foreach(json_object_get(t, "tags"), k, tag) {
        if (!json_is_string(tag)) problem(where, "\"tags\" must hold strings");
      }
      const json_t *sc = json_object_get(t, "score"), *mx = json_object_get(t, "max_score");
      if (json_is_number(sc)) sum += json_number_value(sc);
      if (json_is_number(mx)) max += json_number_value(mx);
      if (json_is_number(sc) && json_is_number(mx) &&
          (json_number_value(sc) < 0 || json_number_value(sc) > json_number_value(mx)))
        problem(where, "\"score\" must lie between 0 and \"max_score\"");
    }
    const json_t *score = json_object_get(root, "score");
    double s = json_number_value(score);
    if (json_is_number(score) && ntests > 0 && (s - sum > 1e-9 || sum - s > 1e-9))
      problem("top level", "\"score\" is not the sum of the tests' scores");
  }
  if (problems == 0)
    printf("ok: %zu tests, score %g of %g\n", ntests, json_number_value(json_object_get(root, "score")), max);
  json_decref(root);
  return problems == 0 ? 0 : 1;
}
