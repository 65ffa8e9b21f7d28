/* gscheck.c - checks a results.json against Gradescope's autograder specification
 * (https://gradescope-autograders.readthedocs.io/en/latest/specs/), without jq or python3.
 *
 *   gscheck results.json     exit 0 and "ok: N tests, score S of M" when it is valid JSON with
 *                            the documented fields and types; exit 1 with what is wrong otherwise
 *
 * Checked: strict JSON (RFC 8259: strings, escapes, numbers, nesting); a top-level object; "score"
 * a number (required here, since the grader always writes it); "tests" an array of objects; in
 * each test "score" and "max_score" numbers, "name", "output", "number" strings, "status" one of
 * passed/failed, "visibility" one of hidden/after_due_date/after_published/visible, "tags" an
 * array of strings; "execution_time" a number; the tests' scores add up to "score".
 */
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef enum { J_NULL, J_BOOL, J_NUM, J_STR, J_ARR, J_OBJ } jtype_t;

typedef struct jval {
  jtype_t type;
  double num;
  char *str;              /* J_STR: decoded bytes (NUL-terminated; \u0000 not supported) */
  struct jval **items;    /* J_ARR, J_OBJ values */
  char **keys;            /* J_OBJ */
  size_t n;
} jval_t;

typedef struct parser {
  const char *s;
  size_t pos, len;
  const char *err;
  size_t err_pos;
} parser_t;

static jval_t *parse_value(parser_t *p, int depth);

static void fail(parser_t *p, const char *msg) {
  if (p->err == NULL) {
    p->err = msg;
    p->err_pos = p->pos;
  }
}

static void skip_ws(parser_t *p) {
  while (p->pos < p->len && strchr(" \t\r\n", p->s[p->pos]) != NULL) p->pos++;
}

static void jfree(jval_t *v) {
  if (v == NULL) return;
  for (size_t i = 0; i < v->n; i++) {
    jfree(v->items[i]);
    if (v->keys != NULL) free(v->keys[i]);
  }
  free(v->items);
  free(v->keys);
  free(v->str);
  free(v);
}

static jval_t *jnew(parser_t *p, jtype_t t) {
  jval_t *v = calloc(1, sizeof *v);
  if (v == NULL) fail(p, "out of memory");
  else v->type = t;
  return v;
}

static char *parse_string(parser_t *p) {
  if (p->pos >= p->len || p->s[p->pos] != '"') {
    fail(p, "expected a string");
    return NULL;
  }
  p->pos++;
  char *out = malloc(p->len - p->pos + 1);
  size_t o = 0;
  if (out == NULL) {
    fail(p, "out of memory");
    return NULL;
  }
  while (p->pos < p->len) {
    unsigned char c = (unsigned char)p->s[p->pos++];
    if (c == '"') {
      out[o] = '\0';
      return out;
    }
    if (c < 0x20) {
      p->pos--;
      fail(p, "raw control character inside a string (must be escaped)");
      break;
    }
    if (c != '\\') {
      out[o++] = (char)c;
      continue;
    }
    if (p->pos >= p->len) break;
    c = (unsigned char)p->s[p->pos++];
    const char *simple = strchr("\"\\/bfnrt", c);
    if (simple != NULL && c != '\0') {
      out[o++] = (char)("\"\\/\b\f\n\r\t"[simple - "\"\\/bfnrt"]);
    } else if (c == 'u') {
      if (p->pos + 4 > p->len) break;
      for (int i = 0; i < 4; i++) {
        if (!isxdigit((unsigned char)p->s[p->pos + i])) {
          fail(p, "bad \\u escape");
          free(out);
          return NULL;
        }
      }
      p->pos += 4;
      out[o++] = '?'; /* the value itself does not matter for these checks */
    } else {
      p->pos--;
      fail(p, "bad escape in a string");
      break;
    }
  }
  fail(p, "unterminated string");
  free(out);
  return NULL;
}

static jval_t *parse_number(parser_t *p) {
  size_t start = p->pos;
  if (p->s[p->pos] == '-') p->pos++;
  if (p->pos < p->len && p->s[p->pos] == '0') {
    p->pos++;
  } else if (p->pos < p->len && isdigit((unsigned char)p->s[p->pos])) {
    while (p->pos < p->len && isdigit((unsigned char)p->s[p->pos])) p->pos++;
  } else {
    fail(p, "bad number");
    return NULL;
  }
  if (p->pos < p->len && p->s[p->pos] == '.') {
    p->pos++;
    if (p->pos >= p->len || !isdigit((unsigned char)p->s[p->pos])) {
      fail(p, "bad number: digits must follow '.'");
      return NULL;
    }
    while (p->pos < p->len && isdigit((unsigned char)p->s[p->pos])) p->pos++;
  }
  if (p->pos < p->len && (p->s[p->pos] == 'e' || p->s[p->pos] == 'E')) {
    p->pos++;
    if (p->pos < p->len && (p->s[p->pos] == '+' || p->s[p->pos] == '-')) p->pos++;
    if (p->pos >= p->len || !isdigit((unsigned char)p->s[p->pos])) {
      fail(p, "bad number exponent");
      return NULL;
    }
    while (p->pos < p->len && isdigit((unsigned char)p->s[p->pos])) p->pos++;
  }
  jval_t *v = jnew(p, J_NUM);
  if (v != NULL) v->num = strtod(p->s + start, NULL);
  return v;
}

static int push(parser_t *p, jval_t *v, char *key, jval_t *item) {
  jval_t **items = realloc(v->items, (v->n + 1) * sizeof *items);
  if (items == NULL) {
    fail(p, "out of memory");
    return -1;
  }
  v->items = items;
  if (v->type == J_OBJ) {
    char **keys = realloc(v->keys, (v->n + 1) * sizeof *keys);
    if (keys == NULL) {
      fail(p, "out of memory");
      return -1;
    }
    v->keys = keys;
    v->keys[v->n] = key;
  }
  v->items[v->n++] = item;
  return 0;
}

static jval_t *parse_container(parser_t *p, int depth, int is_obj) {
  jval_t *v = jnew(p, is_obj ? J_OBJ : J_ARR);
  if (v == NULL) return NULL;
  p->pos++;
  skip_ws(p);
  if (p->pos < p->len && p->s[p->pos] == (is_obj ? '}' : ']')) {
    p->pos++;
    return v;
  }
  for (;;) {
    char *key = NULL;
    skip_ws(p);
    if (is_obj) {
      key = parse_string(p);
      if (key == NULL) break;
      skip_ws(p);
      if (p->pos >= p->len || p->s[p->pos] != ':') {
        fail(p, "expected ':' after a key");
        free(key);
        break;
      }
      p->pos++;
    }
    jval_t *item = parse_value(p, depth + 1);
    if (item == NULL || push(p, v, key, item) != 0) {
      free(key);
      jfree(item);
      break;
    }
    skip_ws(p);
    if (p->pos < p->len && p->s[p->pos] == ',') {
      p->pos++;
      continue;
    }
    if (p->pos < p->len && p->s[p->pos] == (is_obj ? '}' : ']')) {
      p->pos++;
      return v;
    }
    fail(p, is_obj ? "expected ',' or '}'" : "expected ',' or ']'");
    break;
  }
  jfree(v);
  return NULL;
}

static jval_t *parse_value(parser_t *p, int depth) {
  if (depth > 64) {
    fail(p, "nested too deeply");
    return NULL;
  }
  skip_ws(p);
  if (p->pos >= p->len) {
    fail(p, "unexpected end of input");
    return NULL;
  }
  char c = p->s[p->pos];
  if (c == '{' || c == '[') return parse_container(p, depth, c == '{');
  if (c == '"') {
    char *s = parse_string(p);
    if (s == NULL) return NULL;
    jval_t *v = jnew(p, J_STR);
    if (v == NULL) free(s);
    else v->str = s;
    return v;
  }
  if (c == '-' || isdigit((unsigned char)c)) return parse_number(p);
  static const struct { const char *word; jtype_t type; } words[] = {
      {"true", J_BOOL}, {"false", J_BOOL}, {"null", J_NULL}};
  for (size_t i = 0; i < 3; i++) {
    size_t n = strlen(words[i].word);
    if (p->len - p->pos >= n && strncmp(p->s + p->pos, words[i].word, n) == 0) {
      p->pos += n;
      return jnew(p, words[i].type);
    }
  }
  fail(p, "unexpected character");
  return NULL;
}

static const jval_t *get(const jval_t *obj, const char *key) {
  for (size_t i = 0; obj != NULL && obj->type == J_OBJ && i < obj->n; i++)
    if (strcmp(obj->keys[i], key) == 0) return obj->items[i];
  return NULL;
}

static int problems;

static void problem(const char *where, const char *what) {
  fprintf(stderr, "gscheck: %s: %s\n", where, what);
  problems++;
}

static void want(const jval_t *obj, const char *key, jtype_t type, int required, const char *where) {
  static const char *names[] = {"null", "a boolean", "a number", "a string", "an array", "an object"};
  const jval_t *v = get(obj, key);
  char msg[160];
  if (v == NULL) {
    if (required) {
      snprintf(msg, sizeof msg, "\"%s\" is missing", key);
      problem(where, msg);
    }
    return;
  }
  if (v->type != type) {
    snprintf(msg, sizeof msg, "\"%s\" must be %s", key, names[type]);
    problem(where, msg);
  }
}

static void want_enum(const jval_t *obj, const char *key, const char *const *allowed, const char *where) {
  const jval_t *v = get(obj, key);
  if (v == NULL || v->type != J_STR) return;
  for (size_t i = 0; allowed[i] != NULL; i++)
    if (strcmp(v->str, allowed[i]) == 0) return;
  char msg[200];
  snprintf(msg, sizeof msg, "\"%s\" is \"%.60s\", not one of Gradescope's values", key, v->str);
  problem(where, msg);
}

int main(int argc, char **argv) {
  if (argc != 2 || strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0) {
    fprintf(argc == 2 ? stdout : stderr, "usage: gscheck results.json\n");
    return argc == 2 ? 0 : 2;
  }
  FILE *f = fopen(argv[1], "rb");
  if (f == NULL) {
    perror(argv[1]);
    return 1;
  }
  size_t cap = 1 << 16, len = 0, got;
  char *buf = malloc(cap);
  while (buf != NULL && (got = fread(buf + len, 1, cap - len, f)) > 0) {
    len += got;
    if (len == cap) {
      char *grown = realloc(buf, cap *= 2);
      if (grown == NULL) free(buf);
      buf = grown;
    }
  }
  fclose(f);
  if (buf == NULL) {
    fprintf(stderr, "gscheck: out of memory\n");
    return 1;
  }
  parser_t p = {buf, 0, len, NULL, 0};
  jval_t *root = parse_value(&p, 0);
  skip_ws(&p);
  if (root != NULL && p.err == NULL && p.pos != len) fail(&p, "text after the JSON value");
  if (p.err != NULL) {
    size_t line = 1;
    for (size_t i = 0; i < p.err_pos && i < len; i++) line += buf[i] == '\n';
    fprintf(stderr, "gscheck: %s: not valid JSON: %s (line %zu, byte %zu)\n", argv[1], p.err, line, p.err_pos);
    jfree(root);
    free(buf);
    return 1;
  }
  static const char *const statuses[] = {"passed", "failed", NULL};
  static const char *const visibilities[] = {"hidden", "after_due_date", "after_published", "visible", NULL};
  static const char *const formats[] = {"text", "html", "simple_format", "md", "ansi", NULL};
  double sum = 0;
  size_t ntests = 0;
  if (root->type != J_OBJ) {
    problem("top level", "must be an object");
  } else {
    want(root, "score", J_NUM, 1, "top level");
    want(root, "execution_time", J_NUM, 0, "top level");
    want(root, "output", J_STR, 0, "top level");
    want(root, "visibility", J_STR, 0, "top level");
    want(root, "stdout_visibility", J_STR, 0, "top level");
    want(root, "extra_data", J_OBJ, 0, "top level");
    want(root, "tests", J_ARR, 1, "top level");
    want_enum(root, "visibility", visibilities, "top level");
    want_enum(root, "stdout_visibility", visibilities, "top level");
    want_enum(root, "output_format", formats, "top level");
    want_enum(root, "test_output_format", formats, "top level");
    const jval_t *tests = get(root, "tests");
    for (size_t i = 0; tests != NULL && tests->type == J_ARR && i < tests->n; i++) {
      const jval_t *t = tests->items[i];
      char where[32];
      snprintf(where, sizeof where, "tests[%zu]", i);
      ntests++;
      if (t->type != J_OBJ) {
        problem(where, "must be an object");
        continue;
      }
      want(t, "score", J_NUM, 1, where);
      want(t, "max_score", J_NUM, 1, where);
      want(t, "name", J_STR, 1, where);
      want(t, "status", J_STR, 0, where);
      want(t, "output", J_STR, 0, where);
      want(t, "number", J_STR, 0, where);
      want(t, "visibility", J_STR, 0, where);
      want(t, "tags", J_ARR, 0, where);
      want(t, "extra_data", J_OBJ, 0, where);
      want_enum(t, "status", statuses, where);
      want_enum(t, "visibility", visibilities, where);
      want_enum(t, "output_format", formats, where);
      const jval_t *tags = get(t, "tags");
      for (size_t k = 0; tags != NULL && tags->type == J_ARR && k < tags->n; k++)
        if (tags->items[k]->type != J_STR) problem(where, "\"tags\" must hold strings");
      const jval_t *sc = get(t, "score"), *mx = get(t, "max_score");
      if (sc != NULL && sc->type == J_NUM) sum += sc->num;
      if (sc != NULL && mx != NULL && sc->type == J_NUM && mx->type == J_NUM && (sc->num < 0 || sc->num > mx->num))
        problem(where, "\"score\" must lie between 0 and \"max_score\"");
    }
    const jval_t *score = get(root, "score");
    if (score != NULL && score->type == J_NUM && ntests > 0 && (score->num - sum > 1e-9 || sum - score->num > 1e-9))
      problem("top level", "\"score\" is not the sum of the tests' scores");
  }
  if (problems == 0) {
    double max = 0;
    const jval_t *tests = get(root, "tests");
    for (size_t i = 0; tests != NULL && i < tests->n; i++) {
      const jval_t *mx = get(tests->items[i], "max_score");
      if (mx != NULL && mx->type == J_NUM) max += mx->num;
    }
    printf("ok: %zu tests, score %g of %g\n", ntests, get(root, "score")->num, max);
  }
  jfree(root);
  free(buf);
  return problems == 0 ? 0 : 1;
}
