/* bench.c - the bench engine (bench.h, docs/bench.md): options, manifest, processes, load,
 * sampling, tables, targets, summaries and plots, so that a lab's bench.c holds only its lesson.
 */
#include "bench.h"

#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <math.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/utsname.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <curl/curl.h>

#include "lg.h"
#include "proc.h"

/* Paths and names here are bounded by PATH_MAX and checked where it matters (access, fopen);
 * a name cut short by snprintf fails loudly at its first use, so the warning adds nothing. */
#pragma GCC diagnostic ignored "-Wformat-truncation"

#define BENCH_MAX_PROCS 16
#define BENCH_MAX_TABLES 32
#define BENCH_MAX_VARIANTS 16
#define BENCH_MAX_CFG 128

struct bench_table {
  char name[128];
  char path[PATH_MAX];
  pthread_mutex_t mu;
  char **cols;
  int ncols;
  char ***rows;     /* rows[i][j]: cell of column j, NULL when empty */
  int *rowcols;     /* how many cells rows[i] has room for */
  int nrows, cap;
};

struct bench_sampler {
  bench_t *b;
  bench_table_t *into;
  char url[512];
  char tags[256];
  bench_proc_t proc;  /* bench_sample_proc: pid > 0 */
  long every_ms;
  int stop, samples;
  pthread_mutex_t mu;
  pthread_cond_t cv;
  pthread_t thread;
};

struct bench_bg {
  char url[512];
  long timeout_ms;
  volatile int *done;
  bench_http_t res;
  int rc;
  pthread_t thread;
};

struct bench {
  const bench_lab_t *lab;
  char slug[96], num[8], title[256];
  char root[PATH_MAX], bin[PATH_MAX], dir[PATH_MAX], rel_dir[PATH_MAX], tmp[PATH_MAX];
  char variants[512];
  char *variant_list[BENCH_MAX_VARIANTS];
  int nvariants;
  int quick, replot, failed, progress_open;
  const char *current;  /* the variant being run ("ceiling" etc. in setup) */
  char cfg_key[BENCH_MAX_CFG][32];
  char *cfg_val[BENCH_MAX_CFG];
  int ncfg;
  bench_proc_t *procs[BENCH_MAX_PROCS];
  bench_table_t *tables[BENCH_MAX_TABLES];
  int ntables;
  double t0_ms, start_ms;
  char *summary;
  size_t summary_len;
  FILE *summary_f;
  json_t *targets, *checks, *figures;
  int met, missed;
  char png_term[128];
};

/* ---- the one piece of global state: what a signal handler must stop ---- */
static volatile sig_atomic_t bench_pids[BENCH_MAX_PROCS];

static void bench_on_signal(int sig) {
  static const char msg[] = "\nbench: interrupted; stopping what it started\n";
  ssize_t w = write(STDERR_FILENO, msg, sizeof msg - 1);
  (void)w;
  for (int i = 0; i < BENCH_MAX_PROCS; i++)
    if (bench_pids[i] > 0) kill((pid_t)bench_pids[i], SIGTERM);
  for (int tries = 0; tries < 300; tries++) { /* up to 3 s for a clean exit, then SIGKILL */
    int left = 0;
    for (int i = 0; i < BENCH_MAX_PROCS; i++) {
      if (bench_pids[i] <= 0) continue;
      if (waitpid((pid_t)bench_pids[i], NULL, WNOHANG) != 0) bench_pids[i] = 0;
      else left++;
    }
    if (!left) break;
    struct timespec ts = {0, 10 * 1000 * 1000};
    nanosleep(&ts, NULL);
  }
  for (int i = 0; i < BENCH_MAX_PROCS; i++) {
    if (bench_pids[i] <= 0) continue;
    kill((pid_t)bench_pids[i], SIGKILL);
    waitpid((pid_t)bench_pids[i], NULL, 0);
  }
  _exit(sig == SIGINT ? 130 : 143);
}

static double now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

static void *xcalloc(size_t n, size_t size) {
  void *p = calloc(n ? n : 1, size);
  if (!p) {
    fputs("bench: out of memory\n", stderr);
    exit(1);
  }
  return p;
}

static char *xstrdup(const char *s) {
  char *d = strdup(s ? s : "");
  if (!d) {
    fputs("bench: out of memory\n", stderr);
    exit(1);
  }
  return d;
}

static char *vfmt(const char *fmt, va_list ap) {
  char *s = NULL;
  if (!fmt) return xstrdup("");
  if (vasprintf(&s, fmt, ap) < 0) {
    fputs("bench: out of memory\n", stderr);
    exit(1);
  }
  return s;
}

static void eol(bench_t *b) {
  if (b->progress_open) fputc('\n', stderr);
  b->progress_open = 0;
}

const char *bench_fmt(double v) {
  static char buf[8][32];
  static int slot;
  char *s = buf[slot++ % 8];
  double a = fabs(v);
  if (isnan(v)) snprintf(s, 32, "n/a");
  else if (a >= 100 || a == floor(a)) snprintf(s, 32, "%.0f", v);
  else if (a >= 10) snprintf(s, 32, "%.1f", v);
  else snprintf(s, 32, "%.2f", v);
  return s;
}

/* ---- the run ---- */

int bench_quick(const bench_t *b) { return b->quick; }
const char *bench_variants(const bench_t *b) { return b->variants; }
const char *bench_lab_num(const bench_t *b) { return b->num; }
const char *bench_dir(const bench_t *b) { return b->dir; }
double bench_elapsed_s(const bench_t *b) { return (now_ms() - b->t0_ms) / 1000.0; }

void bench_sleep_ms(double ms) {
  struct timespec ts = {(time_t)(ms / 1000), (long)(fmod(ms, 1000) * 1e6)};
  while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {}
}

const char *bench_variant(const bench_t *b, int i) {
  return i >= 0 && i < b->nvariants ? b->variant_list[i] : NULL;
}

const char *bench_each(bench_t *b, const char *fmt) {
  static char buf[8][1024];
  static int slot;
  char *out = buf[slot++ % 8];
  size_t len = 0;
  out[0] = '\0';
  for (int i = 0; i < b->nvariants && len < sizeof buf[0]; i++) {
    if (i) out[len++] = ' ';
    char item[256];
    snprintf(item, sizeof item, fmt, b->variant_list[i]);
    len += (size_t)snprintf(out + len, sizeof buf[0] - len, "%s", item);
  }
  return out;
}

int bench_has(const bench_t *b, const char *variant) {
  for (int i = 0; i < b->nvariants; i++)
    if (strcmp(b->variant_list[i], variant) == 0) return 1;
  return 0;
}

void bench_log(bench_t *b, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  char *s = vfmt(fmt, ap);
  va_end(ap);
  eol(b);
  fprintf(stderr, "[lab %s] %s\n", b->num, s);
  free(s);
}

void bench_say(bench_t *b, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  char *s = vfmt(fmt, ap);
  va_end(ap);
  eol(b);
  printf("%s\n", s);
  fflush(stdout);
  if (b->summary_f) fprintf(b->summary_f, "%s\n", s);
  free(s);
}

void bench_figure(bench_t *b, const char *variant, const char *name, double value) {
  json_t *into = b->figures;
  if (variant) {
    into = json_object_get(b->figures, variant);
    if (!into) {
      into = json_object();
      json_object_set_new(b->figures, variant, into);
    }
  }
  json_object_set_new(into, name, isfinite(value) ? json_real(value) : json_null());
}

static int target(bench_t *b, const char *variant, const char *name, double value, const char *op,
                  double bound, char *reason);

int bench_target(bench_t *b, const char *name, double value, const char *op, double bound,
                 const char *reason_fmt, ...) {
  va_list ap;
  va_start(ap, reason_fmt);
  char *reason = vfmt(reason_fmt, ap);
  va_end(ap);
  return target(b, NULL, name, value, op, bound, reason);
}

int bench_check(bench_t *b, const char *variant, const char *name, double value, const char *op,
                double bound, const char *reason_fmt, ...) {
  va_list ap;
  va_start(ap, reason_fmt);
  char *reason = vfmt(reason_fmt, ap);
  va_end(ap);
  int kit = !strcmp(variant, "pitfall") || !strcmp(variant, "solution");
  char full[256];
  snprintf(full, sizeof full, "%s %s", variant, name);
  return target(b, kit ? NULL : variant, full, value, op, bound, reason);
}

/* Takes reason over. variant NULL: a target (counted); else a check of that variant. */
static int target(bench_t *b, const char *variant, const char *name, double value, const char *op,
                  double bound, char *reason) {
  int met = 0;
  if (!isnan(value)) {
    if (strcmp(op, ">=") == 0) met = value >= bound;
    else if (strcmp(op, "<=") == 0) met = value <= bound;
    else if (strcmp(op, ">") == 0) met = value > bound;
    else if (strcmp(op, "<") == 0) met = value < bound;
    else if (strcmp(op, "==") == 0) met = value == bound;
    else if (strcmp(op, "!=") == 0) met = value != bound;
    else fprintf(stderr, "bench: target '%s': unknown operator '%s'\n", name, op);
  }
  bench_say(b, "%s %-7s %s: %s %s %s  (%s)", variant ? "check " : "target", met ? "met" : "MISSED",
            name, isnan(value) ? "no data" : bench_fmt(value), op, bench_fmt(bound), reason);
  json_t *t = json_pack("{s:s, s:o, s:s, s:f, s:b, s:s}", "name", name, "value",
                        isfinite(value) ? json_real(value) : json_null(), "op", op, "bound", bound,
                        "met", met, "reason", reason);
  if (t && variant) json_object_set_new(t, "variant", json_string(variant));
  if (t) json_array_append_new(variant ? b->checks : b->targets, t);
  if (!variant && met) b->met++;
  else if (!variant) b->missed++;
  free(reason);
  return met;
}

/* ---- the manifest ---- */

static int cfg_load(bench_t *b) {
  char path[PATH_MAX + 32], line[2048];
  snprintf(path, sizeof path, "%s/labs/manifest", b->root);
  FILE *f = fopen(path, "r");
  if (!f) {
    fprintf(stderr, "bench: fopen %s: %s\n", path, strerror(errno));
    return -1;
  }
  int in = 0, found = 0;
  while (fgets(line, sizeof line, f)) {
    line[strcspn(line, "\r\n")] = '\0';
    char *k = line;
    while (isspace((unsigned char)*k)) k++;
    if (*k == '#' || *k == '\0') continue;
    char *v = k + strcspn(k, " \t");
    if (*v) *v++ = '\0';
    while (isspace((unsigned char)*v)) v++;
    if (strcmp(k, "lab") == 0) {
      in = strcmp(v, b->slug) == 0;
      found |= in;
      continue;
    }
    if (!in || b->ncfg == BENCH_MAX_CFG || strlen(k) >= sizeof b->cfg_key[0]) continue;
    snprintf(b->cfg_key[b->ncfg], sizeof b->cfg_key[0], "%s", k);
    b->cfg_val[b->ncfg++] = xstrdup(v);
  }
  fclose(f);
  if (!found) fprintf(stderr, "bench: no lab '%s' in %s\n", b->slug, path);
  return found ? 0 : -1;
}

const char *bench_cfg(const bench_t *b, const char *key, const char *def) {
  for (int i = 0; i < b->ncfg; i++)
    if (strcmp(b->cfg_key[i], key) == 0) return b->cfg_val[i];
  return def;
}

double bench_cfg_num(const bench_t *b, const char *key, double def) {
  const char *v = bench_cfg(b, key, NULL);
  char *end;
  double d = v ? strtod(v, &end) : def;
  return v && end != v ? d : def;
}

int bench_cfg_list(const bench_t *b, const char *key, const char *def, double *out, int max) {
  const char *s = bench_cfg(b, key, def);
  int n = 0;
  while (s && *s && n < max) {
    char *end;
    double d = strtod(s, &end);
    if (end == s) break;
    out[n++] = d;
    s = end;
  }
  return n;
}

double bench_cfg_opt(const bench_t *b, const char *key, const char *name, double def) {
  const char *s = bench_cfg(b, key, "");
  size_t n = strlen(name);
  for (const char *at = strstr(s, name); at; at = strstr(at + 1, name)) {
    if ((at == s || at[-1] == ' ') && (at[n] == ' ' || at[n] == '=')) {
      char *end;
      double d = strtod(at + n + 1, &end);
      if (end != at + n + 1) return d;
    }
  }
  return def;
}

/* ---- processes ---- */

bench_proc_t *bench_start(bench_t *b, const bench_spawn_t *s) {
  int slot = 0;
  while (slot < BENCH_MAX_PROCS && b->procs[slot]) slot++;
  if (slot == BENCH_MAX_PROCS) {
    fprintf(stderr, "bench: more than %d processes at once\n", BENCH_MAX_PROCS);
    return NULL;
  }
  bench_proc_t *p = xcalloc(1, sizeof *p);
  snprintf(p->name, sizeof p->name, "%s", s->name ? s->name : s->bin);
  snprintf(p->err_path, sizeof p->err_path, "%s/%s-%d.err", b->tmp, p->name, slot);
  char path[PATH_MAX + 64], *args = xstrdup(s->args);
  const char *argv[96];
  int argc = 0;
  snprintf(path, sizeof path, "%s/%s", b->bin, s->bin);
  for (char *tok = strtok(args, " "); tok && argc < 95; tok = strtok(NULL, " ")) argv[argc++] = tok;
  argv[argc] = NULL;
  proc_t pr;
  proc_opts_t o = {
      .err_path = p->err_path, .nofile = s->nofile, .timeout_ms = 10000, .who = "bench"};
  eol(b);
  /* Block the signals while the child is created, so the handler always knows its pid. */
  sigset_t block, old;
  sigemptyset(&block);
  sigaddset(&block, SIGINT);
  sigaddset(&block, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &block, &old);
  int rc = proc_spawn(&pr, path, argv, &o);
  if (rc == 0) bench_pids[slot] = pr.pid;
  pthread_sigmask(SIG_SETMASK, &old, NULL);
  if (rc != 0) {
    fprintf(stderr, "bench: could not start %s %s\n", s->bin, s->args ? s->args : "");
    char cmd[PATH_MAX + 64];
    snprintf(cmd, sizeof cmd, "test -s '%s' && tail -n 15 '%s' | sed 's/^/  | /' >&2", p->err_path,
             p->err_path);
    if (system(cmd) != 0) {}
    unlink(p->err_path);
    free(args);
    free(p);
    return NULL;
  }
  free(args);
  if (pr.out_fd >= 0) fcntl(pr.out_fd, F_SETFD, FD_CLOEXEC);
  p->pid = pr.pid;
  p->port = pr.port;
  snprintf(p->url, sizeof p->url, "%s", pr.url);
  p->out_fd = pr.out_fd; /* kept open until it stops, so its writes to stdout never fail */
  b->procs[slot] = p;
  return p;
}

static bench_proc_t *start_with(bench_t *b, const char *name, const char *bin, const char *base,
                                long nofile, const char *extra, va_list ap) {
  char *x = vfmt(extra, ap);
  char *args = NULL;
  if (asprintf(&args, "%s %s", base ? base : "", x) < 0) exit(1);
  bench_proc_t *p = bench_start(b, &(bench_spawn_t){.name = name, .bin = bin, .args = args,
                                                    .nofile = nofile});
  free(x);
  free(args);
  return p;
}

bench_proc_t *bench_upstream(bench_t *b, const char *extra, ...) {
  va_list ap;
  va_start(ap, extra);
  const char *base = bench_cfg(b, "upstream", "");
  bench_proc_t *p =
      start_with(b, "upstream", "upstream", strcmp(base, "none") ? base : "", 0, extra, ap);
  va_end(ap);
  return p;
}

bench_proc_t *bench_service(bench_t *b, const char *variant, const char *extra, ...) {
  char bin[64];
  snprintf(bin, sizeof bin, "lab%s-%s", b->num, variant);
  va_list ap;
  va_start(ap, extra);
  bench_proc_t *p = start_with(b, variant, bin, bench_cfg(b, "args", ""),
                               (long)bench_cfg_num(b, "nofile", 0), extra, ap);
  va_end(ap);
  return p;
}

int bench_stop(bench_t *b, bench_proc_t *p) {
  if (!p) return -1;
  int slot = 0;
  while (slot < BENCH_MAX_PROCS && b->procs[slot] != p) slot++;
  proc_t pr = {.pid = p->pid, .port = p->port, .out_fd = p->out_fd};
  double t = now_ms();
  int status = proc_stop(&pr, 5000);
  if (slot < BENCH_MAX_PROCS) {
    bench_pids[slot] = 0;
    b->procs[slot] = NULL;
  }
  if (status != 0) {
    eol(b);
    fprintf(
        stderr,
        "bench: warning: %s (pid %d) %s after SIGTERM (a clean shutdown exits 0); its stderr:\n",
        p->name, p->pid, now_ms() - t >= 5000 ? "was killed 5 s" : "exited with an error");
    char cmd[PATH_MAX + 64];
    snprintf(cmd, sizeof cmd, "tail -n 10 '%s' | sed 's/^/  | /' >&2", p->err_path);
    if (system(cmd) != 0) {}
  }
  unlink(p->err_path);
  free(p);
  return status;
}

long bench_proc_kb(const bench_proc_t *p, const char *field) {
  char path[64], line[256];
  if (strcmp(field, "fds") == 0) {
    snprintf(path, sizeof path, "/proc/%d/fd", p->pid);
    DIR *d = opendir(path);
    if (!d) return -1;
    long n = 0;
    for (struct dirent *e; (e = readdir(d));) n += e->d_name[0] != '.';
    closedir(d);
    return n;
  }
  snprintf(path, sizeof path, "/proc/%d/status", p->pid);
  FILE *f = fopen(path, "r");
  if (!f) return -1;
  long v = -1;
  size_t n = strlen(field);
  while (fgets(line, sizeof line, f))
    if (strncmp(line, field, n) == 0 && line[n] == ':') v = strtol(line + n + 1, NULL, 10);
  fclose(f);
  return v;
}

long bench_sockets(const char *filter_fmt, ...) {
  va_list ap;
  va_start(ap, filter_fmt);
  char *filter = vfmt(filter_fmt, ap);
  va_end(ap);
  char *cmd = NULL, line[512];
  if (asprintf(&cmd, "ss -Htan %s 2>/dev/null", filter) < 0) exit(1);
  FILE *f = popen(cmd, "r");
  long n = 0;
  while (f && fgets(line, sizeof line, f)) n++;
  int status = f ? pclose(f) : -1;
  free(cmd);
  free(filter);
  return status == 0 ? n : -1;
}

/* ---- HTTP and JSON ---- */

/* Called by libcurl with body bytes. */
static size_t on_body(char *ptr, size_t size, size_t nmemb, void *ud) {
  bench_http_t *r = ud;
  size_t n = size * nmemb;
  char *grown = realloc(r->body, r->len + n + 1);
  if (!grown) return 0;
  r->body = grown;
  memcpy(r->body + r->len, ptr, n);
  r->len += n;
  r->body[r->len] = '\0';
  return n;
}

/* Called by libcurl during a transfer: a non-zero return aborts it (a sampler told to stop). */
static int on_progress(void *ud, curl_off_t a, curl_off_t b, curl_off_t c, curl_off_t d) {
  (void)a, (void)b, (void)c, (void)d;
  const int *stop = ud;
  return stop && __atomic_load_n(stop, __ATOMIC_RELAXED);
}

static int http_on(CURL *h, const char *method, const char *url, const char *body, long timeout_ms,
                   bench_http_t *out, int *stop) {
  memset(out, 0, sizeof *out);
  curl_easy_setopt(h, CURLOPT_URL, url);
  curl_easy_setopt(h, CURLOPT_TIMEOUT_MS, timeout_ms);
  curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
  curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, on_body);
  curl_easy_setopt(h, CURLOPT_WRITEDATA, out);
  curl_easy_setopt(h, CURLOPT_CUSTOMREQUEST, strcmp(method, "GET") ? method : NULL);
  if (body || strcmp(method, "POST") == 0)
    curl_easy_setopt(h, CURLOPT_POSTFIELDS, body ? body : "");
  else curl_easy_setopt(h, CURLOPT_HTTPGET, 1L);
  curl_easy_setopt(h, CURLOPT_NOPROGRESS, stop ? 0L : 1L);
  curl_easy_setopt(h, CURLOPT_XFERINFOFUNCTION, on_progress);
  curl_easy_setopt(h, CURLOPT_XFERINFODATA, stop);
  CURLcode rc = curl_easy_perform(h);
  curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &out->status);
  double t = 0;
  curl_easy_getinfo(h, CURLINFO_TOTAL_TIME, &t);
  out->total_ms = t * 1000;
  if (!out->body) out->body = xstrdup("");
  return rc == CURLE_OK && out->status > 0 ? 0 : -1;
}

int bench_http(const char *method, const char *url, const char *body, long timeout_ms,
               bench_http_t *out) {
  CURL *h = curl_easy_init();
  if (!h) {
    fprintf(stderr, "bench: curl_easy_init failed\n");
    memset(out, 0, sizeof *out);
    return -1;
  }
  int rc = http_on(h, method, url, body, timeout_ms, out, NULL);
  curl_easy_cleanup(h);
  return rc;
}

void bench_http_free(bench_http_t *r) {
  free(r->body);
  r->body = NULL;
}

json_t *bench_get_json(const char *url_fmt, ...) {
  va_list ap;
  va_start(ap, url_fmt);
  char *url = vfmt(url_fmt, ap);
  va_end(ap);
  bench_http_t r;
  json_t *j = NULL;
  if (bench_http("GET", url, NULL, 5000, &r) == 0 && r.status == 200) {
    json_error_t err;
    j = json_loads(r.body, 0, &err);
    if (!j) fprintf(stderr, "bench: GET %s: not JSON (%s)\n", url, err.text);
  } else {
    fprintf(stderr, "bench: GET %s failed (HTTP %ld)\n", url, r.status);
  }
  bench_http_free(&r);
  free(url);
  return j;
}

double bench_num(const json_t *obj, const char *key) {
  char part[128];
  const json_t *v = obj;
  while (v && *key) {
    size_t n = strcspn(key, ".");
    snprintf(part, sizeof part, "%.*s", (int)n, key);
    v = json_is_object(v) ? json_object_get(v, part) : NULL;
    key += n + (key[n] == '.');
  }
  if (json_is_number(v)) return json_number_value(v);
  if (json_is_boolean(v)) return json_is_true(v);
  return NAN;
}

double bench_stat(const bench_proc_t *p, const char *path, const char *key) {
  json_t *j = bench_get_json("%s%s", p->url, path);
  double v = bench_num(j, key);
  json_decref(j);
  return v;
}

int bench_post(const char *url_fmt, ...) {
  va_list ap;
  va_start(ap, url_fmt);
  char *url = vfmt(url_fmt, ap);
  va_end(ap);
  bench_http_t r;
  bench_http("POST", url, NULL, 5000, &r);
  if (r.status == 0) fprintf(stderr, "bench: POST %s: no answer\n", url);
  bench_http_free(&r);
  free(url);
  return (int)r.status;
}

static void *bg_main(void *arg) {
  bench_bg_t *bg = arg;
  bg->rc = bench_http("GET", bg->url, NULL, bg->timeout_ms, &bg->res);
  if (bg->done) __atomic_store_n(bg->done, 1, __ATOMIC_RELEASE);
  return NULL;
}

bench_bg_t *bench_http_bg(const char *url, long timeout_ms, volatile int *done) {
  bench_bg_t *bg = xcalloc(1, sizeof *bg);
  snprintf(bg->url, sizeof bg->url, "%s", url);
  bg->timeout_ms = timeout_ms;
  bg->done = done;
  if (done) *done = 0;
  int rc = pthread_create(&bg->thread, NULL, bg_main, bg);
  if (rc != 0) {
    fprintf(stderr, "bench: pthread_create: %s\n", strerror(rc));
    free(bg);
    return NULL;
  }
  return bg;
}

int bench_http_wait(bench_bg_t *bg, bench_http_t *out) {
  if (!bg) return -1;
  pthread_join(bg->thread, NULL);
  *out = bg->res;
  int rc = bg->rc;
  free(bg);
  return rc;
}

/* ---- load ---- */

int bench_load(bench_t *b, const bench_load_t *l, bench_result_t *r) {
  lg_opts_t o;
  lg_opts_init(&o);
  o.url = l->url;
  o.rate = l->rate;
  o.conns = l->conns > 0 ? l->conns : 50;
  o.duration_s = l->duration_s;
  o.warmup_s = l->warmup_s;
  if (l->timeout_ms > 0) o.timeout_ms = l->timeout_ms;
  if (l->method) o.method = l->method;
  o.body = l->body;
  if (l->header) o.headers[o.n_headers++] = l->header;
  o.quiet = 1;
  o.until = l->until;
  eol(b);
  char what[64];
  if (l->steps > 0) snprintf(what, sizeof what, "step %d/%d", l->step, l->steps);
  else snprintf(what, sizeof what, "%s", l->progress ? l->progress : "");
  int show = l->progress || l->steps > 0;
  if (show) {
    char load[32];
    if (l->rate > 0) snprintf(load, sizeof load, "%s req/s", bench_fmt(l->rate));
    else snprintf(load, sizeof load, "peak (closed loop)");
    fprintf(stderr, "[lab %s] %-9s %17s  %s ... ", b->num, b->current, load, what);
    b->progress_open = 1;
  }
  lg_result_t lr;
  int rc = lg_run(&o, &lr);
  memset(r, 0, sizeof *r);
  snprintf(r->label, sizeof r->label, "%s", l->label ? l->label : "");
  if (rc != 0) {
    eol(b);
    fprintf(stderr, "bench: the load on %s could not run (loadgen engine: %d)\n", l->url, rc);
    return -1;
  }
  r->offered_rps = lr.offered_rps;
  r->achieved_rps = lr.achieved_rps;
  r->ok_rps = lr.ok_rps;
  r->sent = lr.sent;
  r->responses = lr.responses;
  r->ok = lr.ok;
  r->err_connect = lr.err_connect;
  r->err_timeout = lr.err_timeout;
  r->err_http = lr.err_http;
  r->err_other = lr.err_other;
  r->p50_ms = lr.p50_ms;
  r->p90_ms = lr.p90_ms;
  r->p99_ms = lr.p99_ms;
  r->p999_ms = lr.p999_ms;
  r->max_ms = lr.max_ms;
  r->mean_ms = lr.mean_ms;
  r->duration_s = lr.duration_s;
  r->conns_opened = lr.conns_opened;
  if (show) {
    uint64_t e = r->err_connect + r->err_timeout + r->err_other;
    fprintf(stderr, "achieved %s, p99 %s ms", bench_fmt(r->achieved_rps), bench_fmt(r->p99_ms));
    if (e) fprintf(stderr, ", %llu errors", (unsigned long long)e);
    if (r->err_http) fprintf(stderr, ", %llu non-2xx answers", (unsigned long long)r->err_http);
  }
  return 0;
}

void bench_progress_done(bench_t *b, const char *extra, ...) {
  if (!b->progress_open) return;
  if (extra) {
    va_list ap;
    va_start(ap, extra);
    char *s = vfmt(extra, ap);
    va_end(ap);
    fprintf(stderr, ", %s", s);
    free(s);
  }
  eol(b);
}

/* ---- tables ---- */

static int col_index(bench_table_t *t, const char *col, int add) {
  for (int j = 0; j < t->ncols; j++)
    if (strcmp(t->cols[j], col) == 0) return j;
  if (!add) return -1;
  char **grown = realloc(t->cols, (size_t)(t->ncols + 1) * sizeof *grown);
  if (!grown) exit(1);
  t->cols = grown;
  t->cols[t->ncols] = xstrdup(col);
  return t->ncols++;
}

static void row_add(bench_table_t *t) {
  if (t->nrows == t->cap) {
    t->cap = t->cap ? t->cap * 2 : 64;
    t->rows = realloc(t->rows, (size_t)t->cap * sizeof *t->rows);
    t->rowcols = realloc(t->rowcols, (size_t)t->cap * sizeof *t->rowcols);
    if (!t->rows || !t->rowcols) exit(1);
  }
  t->rows[t->nrows] = NULL;
  t->rowcols[t->nrows] = 0;
  t->nrows++;
}

/* Sets cell (last row, col) to s (taken over). Called with t->mu held. */
static void cell_set(bench_table_t *t, const char *col, char *s) {
  if (t->nrows == 0) row_add(t);
  int j = col_index(t, col, 1), i = t->nrows - 1;
  if (j >= t->rowcols[i]) {
    int n = t->ncols + 8;
    char **grown = realloc(t->rows[i], (size_t)n * sizeof *grown);
    if (!grown) exit(1);
    for (int k = t->rowcols[i]; k < n; k++) grown[k] = NULL;
    t->rows[i] = grown;
    t->rowcols[i] = n;
  }
  free(t->rows[i][j]);
  t->rows[i][j] = s;
}

static const char *cell(const bench_table_t *t, int i, int j) {
  if (i < 0 || i >= t->nrows || j < 0 || j >= t->rowcols[i]) return NULL;
  return t->rows[i][j];
}

void bench_clear(bench_table_t *t) {
  pthread_mutex_lock(&t->mu);
  for (int i = 0; i < t->nrows; i++) {
    for (int j = 0; j < t->rowcols[i]; j++) free(t->rows[i][j]);
    free(t->rows[i]);
  }
  t->nrows = 0;
  pthread_mutex_unlock(&t->mu);
}

void bench_row(bench_table_t *t) {
  pthread_mutex_lock(&t->mu);
  row_add(t);
  pthread_mutex_unlock(&t->mu);
}

void bench_row_of(bench_table_t *t, const char *variant) {
  bench_row(t);
  bench_sets(t, "variant", "%s", variant);
}

void bench_set(bench_table_t *t, const char *col, double v) {
  char *s = NULL;
  if (isnan(v)) s = NULL;
  else if (asprintf(&s, "%.10g", v) < 0) exit(1);
  pthread_mutex_lock(&t->mu);
  cell_set(t, col, s);
  pthread_mutex_unlock(&t->mu);
}

void bench_sets(bench_table_t *t, const char *col, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  char *s = vfmt(fmt, ap);
  va_end(ap);
  pthread_mutex_lock(&t->mu);
  cell_set(t, col, s);
  pthread_mutex_unlock(&t->mu);
}

void bench_set_result(bench_table_t *t, const bench_result_t *r) {
  lg_result_t lr = {r->offered_rps, r->achieved_rps, r->ok_rps, r->sent, r->responses, r->ok,
                    r->err_connect, r->err_timeout, r->err_http, r->err_other, r->p50_ms,
                    r->p90_ms, r->p99_ms, r->p999_ms, r->max_ms, r->mean_ms, r->duration_s,
                    r->conns_opened};
  double v[LG_NCOLS];
  lg_result_values(&lr, v);
  bench_sets(t, "label", "%s", r->label);
  for (int i = 0; i < LG_NCOLS; i++)
    bench_sets(t, lg_col_names[i], "%.*f", lg_col_decimals[i], v[i]);
}

void bench_set_json(bench_table_t *t, const char *prefix, const json_t *obj) {
  const char *key;
  json_t *v;
  char col[256];
  json_object_foreach((json_t *)obj, key, v) {
    snprintf(col, sizeof col, "%s%s", prefix ? prefix : "", key);
    if (json_is_number(v)) bench_set(t, col, json_number_value(v));
    else if (json_is_boolean(v)) bench_set(t, col, json_is_true(v));
  }
}

bench_table_t *bench_kv(bench_t *b, const char *file, const json_t *obj) {
  bench_table_t *t = bench_table(b, "%s", file);
  const char *key;
  json_t *v;
  json_object_foreach((json_t *)obj, key, v) {
    if (!json_is_number(v)) continue;
    bench_row(t);
    bench_sets(t, "key", "%s", key);
    bench_set(t, "value", json_number_value(v));
  }
  return t;
}

int bench_rows(const bench_table_t *t) { return t->nrows; }

double bench_at(const bench_table_t *t, int row, const char *col) {
  const char *s = bench_at_s(t, row, col);
  char *end;
  double v = strtod(s, &end);
  return *s && end != s ? v : NAN;
}

const char *bench_at_s(const bench_table_t *t, int row, const char *col) {
  const char *s = cell(t, row, col_index((bench_table_t *)t, col, 0));
  return s ? s : "";
}

typedef struct cond {
  char col[64], op[3], val[128];
} cond_t;

static int parse_where(const char *w, cond_t *c, int max) {
  int n = 0;
  while (w && *w && n < max) {
    while (*w == ' ' || *w == ',') w++;
    if (!*w) break;
    size_t len = strcspn(w, " ,");
    char term[256];
    snprintf(term, sizeof term, "%.*s", (int)len, w);
    w += len;
    size_t k = strcspn(term, "=!<>");
    if (!term[k]) {
      fprintf(stderr, "bench: bad condition '%s' (want COL=V, COL!=V, COL<V, COL>=V, ...)\n", term);
      continue;
    }
    snprintf(c[n].col, sizeof c[n].col, "%.*s", (int)k, term);
    size_t ol = (term[k + 1] == '=') ? 2 : 1;
    snprintf(c[n].op, sizeof c[n].op, "%.*s", (int)ol, term + k);
    snprintf(c[n].val, sizeof c[n].val, "%s", term + k + ol);
    n++;
  }
  return n;
}

static int match(const bench_table_t *t, int i, const cond_t *c, int n) {
  for (int k = 0; k < n; k++) {
    const char *s = cell(t, i, col_index((bench_table_t *)t, c[k].col, 0));
    if (!s) s = "";
    char *e1, *e2;
    double a = strtod(s, &e1), v = strtod(c[k].val, &e2);
    int cmp;
    if (*s && !*e1 && *c[k].val && !*e2) cmp = a < v ? -1 : a > v;
    else cmp = strcmp(s, c[k].val);
    const char *op = c[k].op;
    int ok = strcmp(op, "=") == 0 || strcmp(op, "==") == 0 ? cmp == 0
           : strcmp(op, "!=") == 0 ? cmp != 0
           : strcmp(op, "<") == 0  ? cmp < 0
           : strcmp(op, "<=") == 0 ? cmp <= 0
           : strcmp(op, ">") == 0  ? cmp > 0
           : strcmp(op, ">=") == 0 ? cmp >= 0 : 0;
    if (!ok) return 0;
  }
  return 1;
}

double bench_query(const bench_table_t *t, bench_agg_t agg, const char *col, const char *where_fmt,
                   ...) {
  cond_t c[16];
  int nc = 0;
  if (where_fmt) {
    va_list ap;
    va_start(ap, where_fmt);
    char *w = vfmt(where_fmt, ap);
    va_end(ap);
    nc = parse_where(w, c, 16);
    free(w);
  }
  pthread_mutex_lock((pthread_mutex_t *)&t->mu);
  double acc = NAN, n = 0, st = 0, sy = 0, stt = 0, sty = 0;
  for (int i = 0; i < t->nrows; i++) {
    if (!match(t, i, c, nc)) continue;
    double v = bench_at(t, i, col);
    if (agg == BENCH_COUNT) {
      n++;
      continue;
    }
    if (isnan(v)) continue;
    if (agg == BENCH_SLOPE) {
      double x = bench_at(t, i, "t_s");
      if (isnan(x)) continue;
      n++, st += x, sy += v, stt += x * x, sty += x * v;
      continue;
    }
    n++;
    if (isnan(acc) || agg == BENCH_LAST) acc = agg == BENCH_SUM || agg == BENCH_MEAN ? 0 : v;
    if (agg == BENCH_FIRST && n > 1) continue;
    if (agg == BENCH_MAX && v > acc) acc = v;
    if (agg == BENCH_MIN && v < acc) acc = v;
    if (agg == BENCH_SUM || agg == BENCH_MEAN) acc += v;
  }
  pthread_mutex_unlock((pthread_mutex_t *)&t->mu);
  if (agg == BENCH_COUNT) return n;
  if (agg == BENCH_MEAN) return n > 0 ? acc / n : NAN;
  if (agg == BENCH_SLOPE) {
    double d = n * stt - st * st;
    return n >= 2 && d > 0 ? (n * sty - st * sy) / d : NAN;
  }
  return acc;
}

static void csv_field(FILE *f, const char *s) {
  if (!strpbrk(s, ",\"\n")) {
    fputs(s, f);
    return;
  }
  fputc('"', f);
  for (; *s; s++) {
    if (*s == '"') fputc('"', f);
    fputc(*s, f);
  }
  fputc('"', f);
}

static int table_write(bench_table_t *t) {
  pthread_mutex_lock(&t->mu);
  int rc = 0;
  if (t->nrows == 0) goto out;
  char tmp[PATH_MAX + 8];
  snprintf(tmp, sizeof tmp, "%s.tmp", t->path);
  FILE *f = fopen(tmp, "w");
  if (!f) {
    fprintf(stderr, "bench: fopen %s: %s\n", tmp, strerror(errno));
    rc = -1;
    goto out;
  }
  for (int j = 0; j < t->ncols; j++) {
    if (j) fputc(',', f);
    csv_field(f, t->cols[j]);
  }
  fputc('\n', f);
  for (int i = 0; i < t->nrows; i++) {
    for (int j = 0; j < t->ncols; j++) {
      if (j) fputc(',', f);
      const char *s = cell(t, i, j);
      if (s) csv_field(f, s);
    }
    fputc('\n', f);
  }
  if (fclose(f) != 0 || rename(tmp, t->path) != 0) {
    fprintf(stderr, "bench: writing %s: %s\n", t->path, strerror(errno));
    rc = -1;
  }
out:
  pthread_mutex_unlock(&t->mu);
  return rc;
}

/* Splits one CSV line into fields (quotes handled); returns how many. */
static int csv_split(char *line, char **out, int max) {
  int n = 0;
  char *r = line, *w = line;
  while (n < max) {
    out[n++] = w;
    int quoted = *r == '"';
    if (quoted) r++;
    for (;;) {
      if (quoted && *r == '"' && r[1] == '"') { *w++ = '"'; r += 2; continue; }
      if (quoted && *r == '"') { quoted = 0; r++; continue; }
      if (!*r || (!quoted && *r == ',')) break;
      *w++ = *r++;
    }
    int more = *r == ',';
    *w++ = '\0';
    if (!more) break;
    r++;
  }
  return n;
}

static void table_load(bench_table_t *t) {
  FILE *f = fopen(t->path, "r");
  if (!f) return;
  char *line = NULL, *fields[512], *header[512];
  size_t cap = 0;
  int nh = 0;
  while (getline(&line, &cap, f) > 0) {
    line[strcspn(line, "\r\n")] = '\0';
    if (nh == 0) {
      nh = csv_split(line, fields, 512);
      for (int j = 0; j < nh; j++) header[j] = xstrdup(fields[j]);
      continue;
    }
    int n = csv_split(line, fields, 512);
    row_add(t);
    for (int j = 0; j < n && j < nh; j++)
      if (*fields[j]) cell_set(t, header[j], xstrdup(fields[j]));
      else col_index(t, header[j], 1);
  }
  for (int j = 0; j < nh; j++) free(header[j]);
  free(line);
  fclose(f);
}

bench_table_t *bench_table(bench_t *b, const char *file_fmt, ...) {
  char file[128];
  va_list ap;
  va_start(ap, file_fmt);
  vsnprintf(file, sizeof file, file_fmt, ap);
  va_end(ap);
  for (int i = 0; i < b->ntables; i++)
    if (strcmp(b->tables[i]->name, file) == 0) return b->tables[i];
  if (b->ntables == BENCH_MAX_TABLES) {
    fprintf(stderr, "bench: more than %d tables\n", BENCH_MAX_TABLES);
    exit(1);
  }
  bench_table_t *t = xcalloc(1, sizeof *t);
  snprintf(t->name, sizeof t->name, "%s", file);
  snprintf(t->path, sizeof t->path, "%s/%s", b->dir, file);
  pthread_mutex_init(&t->mu, NULL);
  if (b->replot) table_load(t);
  b->tables[b->ntables++] = t;
  return t;
}

static void table_free(bench_table_t *t) {
  for (int i = 0; i < t->nrows; i++) {
    for (int j = 0; j < t->rowcols[i]; j++) free(t->rows[i][j]);
    free(t->rows[i]);
  }
  for (int j = 0; j < t->ncols; j++) free(t->cols[j]);
  free(t->cols);
  free(t->rows);
  free(t->rowcols);
  pthread_mutex_destroy(&t->mu);
  free(t);
}

void bench_print(bench_t *b, const bench_table_t *t, const char *cols, const char *where_fmt, ...) {
  cond_t c[16];
  int nc = 0, ncol = 0, width[32];
  char names[32][64], line[2048];
  if (where_fmt) {
    va_list ap;
    va_start(ap, where_fmt);
    char *w = vfmt(where_fmt, ap);
    va_end(ap);
    nc = parse_where(w, c, 16);
    free(w);
  }
  for (const char *p = cols; *p && ncol < 32;) {
    size_t n = strcspn(p, " ");
    if (n) snprintf(names[ncol], sizeof names[0], "%.*s", (int)n, p), ncol++;
    p += n + (p[n] == ' ');
  }
  /* Two passes: the widths, then the lines. */
  for (int pass = 0; pass < 2; pass++) {
    for (int k = 0; !pass && k < ncol; k++) width[k] = (int)strlen(names[k]);
    if (pass) {
      size_t len = 0;
      for (int k = 0; k < ncol; k++)
        len += (size_t)snprintf(line + len, sizeof line - len, "%s%-*s", k ? "  " : "", width[k],
                                names[k]);
      bench_say(b, "%s", line);
    }
    for (int i = 0; i < t->nrows; i++) {
      if (!match(t, i, c, nc)) continue;
      size_t len = 0;
      for (int k = 0; k < ncol; k++) {
        const char *s = bench_at_s(t, i, names[k]);
        char *end;
        double v = strtod(s, &end);
        const char *cellv = *s && !*end ? bench_fmt(v) : *s ? s : "-";
        if (!pass && (int)strlen(cellv) > width[k]) width[k] = (int)strlen(cellv);
        if (pass)
          len += (size_t)snprintf(line + len, sizeof line - len, "%s%-*s", k ? "  " : "", width[k],
                                  cellv);
      }
      if (pass) bench_say(b, "%s", line);
    }
  }
}

/* ---- sampling ---- */

static void sample_row(bench_sampler_t *s, const char *body) {
  json_error_t err;
  json_t *j = body ? json_loads(body, 0, &err) : NULL;
  if (!body && s->proc.pid > 0) /* /proc, not HTTP */
    j = json_pack("{s:I, s:I}", "fds", (json_int_t)bench_proc_kb(&s->proc, "fds"), "rss_kb",
                  (json_int_t)bench_proc_kb(&s->proc, "VmRSS"));
  if (!json_is_object(j)) {
    json_decref(j);
    return;
  }
  bench_table_t *t = s->into;
  char tags[256];
  snprintf(tags, sizeof tags, "%s", s->tags);
  bench_row(t);
  bench_set(t, "t_s", round(bench_elapsed_s(s->b) * 1000) / 1000);
  for (char *save, *tok = strtok_r(tags, " ", &save); tok; tok = strtok_r(NULL, " ", &save)) {
    char *eq = strchr(tok, '=');
    if (!eq) continue;
    *eq = '\0';
    bench_sets(t, tok, "%s", eq + 1);
  }
  bench_set_json(t, NULL, j);
  json_decref(j);
  s->samples++;
}

static void *sampler_main(void *arg) {
  bench_sampler_t *s = arg;
  CURL *h = curl_easy_init();
  if (!h) {
    fprintf(stderr, "bench: curl_easy_init failed: no samples of %s\n", s->url);
    return NULL;
  }
  double next = now_ms();
  for (;;) {
    pthread_mutex_lock(&s->mu);
    int stop = s->stop;
    pthread_mutex_unlock(&s->mu);
    if (stop) break;
    bench_http_t r = {0};
    if (s->proc.pid > 0) sample_row(s, NULL);
    else if (http_on(h, "GET", s->url, NULL, 5000, &r, &s->stop) == 0 && r.status >= 200 &&
             r.status < 300)
      sample_row(s, r.body);
    bench_http_free(&r);
    next += (double)s->every_ms;
    double now = now_ms();
    if (next < now) next = now; /* a late answer: the next sample goes at once, not in a burst */
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    double wait = next - now;
    ts.tv_sec += (time_t)(wait / 1000);
    ts.tv_nsec += (long)(fmod(wait, 1000) * 1e6);
    if (ts.tv_nsec >= 1000000000L) ts.tv_sec++, ts.tv_nsec -= 1000000000L;
    pthread_mutex_lock(&s->mu);
    while (!s->stop && pthread_cond_timedwait(&s->cv, &s->mu, &ts) == 0) {}
    pthread_mutex_unlock(&s->mu);
  }
  curl_easy_cleanup(h);
  return NULL;
}

static bench_sampler_t *sampler_start(bench_sampler_t *s);

bench_sampler_t *bench_sample_proc(bench_t *b, const bench_proc_t *p, long every_ms,
                                   bench_table_t *into, const char *tags_fmt, ...) {
  bench_sampler_t *s = xcalloc(1, sizeof *s);
  s->b = b;
  s->into = into;
  s->every_ms = every_ms > 0 ? every_ms : 100;
  s->proc = *p;
  if (tags_fmt) {
    va_list ap;
    va_start(ap, tags_fmt);
    vsnprintf(s->tags, sizeof s->tags, tags_fmt, ap);
    va_end(ap);
  }
  return sampler_start(s);
}

bench_sampler_t *bench_sample(bench_t *b, const char *url, long every_ms, bench_table_t *into,
                              const char *tags_fmt, ...) {
  bench_sampler_t *s = xcalloc(1, sizeof *s);
  s->b = b;
  s->into = into;
  s->every_ms = every_ms > 0 ? every_ms : 100;
  snprintf(s->url, sizeof s->url, "%s", url);
  if (tags_fmt) {
    va_list ap;
    va_start(ap, tags_fmt);
    vsnprintf(s->tags, sizeof s->tags, tags_fmt, ap);
    va_end(ap);
  }
  return sampler_start(s);
}

static bench_sampler_t *sampler_start(bench_sampler_t *s) {
  pthread_mutex_init(&s->mu, NULL);
  pthread_cond_init(&s->cv, NULL);
  int rc = pthread_create(&s->thread, NULL, sampler_main, s);
  if (rc != 0) {
    fprintf(stderr, "bench: pthread_create: %s\n", strerror(rc));
    free(s);
    return NULL;
  }
  return s;
}

int bench_sample_stop(bench_sampler_t *s) {
  if (!s) return 0;
  pthread_mutex_lock(&s->mu);
  __atomic_store_n(&s->stop, 1, __ATOMIC_RELAXED);
  pthread_cond_signal(&s->cv);
  pthread_mutex_unlock(&s->mu);
  pthread_join(s->thread, NULL);
  int n = s->samples;
  pthread_mutex_destroy(&s->mu);
  pthread_cond_destroy(&s->cv);
  free(s);
  return n;
}

/* ---- plots ---- */

static int table_write(bench_table_t *t);

static int gnuplot(bench_t *b, const char *gp, const char *term, const char *out, const char *vars,
                   FILE *text) {
  for (int k = 0; k < b->ntables; k++) table_write(b->tables[k]); /* what the plot reads */
  char script[PATH_MAX + 64], expr[8192], errf[PATH_MAX + 32];
  if (strchr(gp, '/')) snprintf(script, sizeof script, "%s/%s", b->root, gp);
  else snprintf(script, sizeof script, "%s/harness/plot/%s.gp", b->root, gp);
  snprintf(expr, sizeof expr, "plotdir='%s/harness/plot'; term=\"%s\"; out='%s'; %s", b->root,
           term, out, vars);
  snprintf(errf, sizeof errf, "%s/gnuplot.err", b->tmp);
  int pipefd[2] = {-1, -1};
  if (text && pipe(pipefd) != 0) return -1;
  pid_t pid = fork();
  if (pid < 0) return -1;
  if (pid == 0) {
    if (chdir(b->dir) != 0) _exit(126);
    int fd = open(errf, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (fd >= 0) dup2(fd, STDERR_FILENO);
    if (text) {
      dup2(pipefd[1], STDOUT_FILENO);
      close(pipefd[0]);
      close(pipefd[1]);
    }
    execlp("gnuplot", "gnuplot", "-e", expr, script, (char *)NULL);
    _exit(127);
  }
  if (text) {
    close(pipefd[1]);
    char buf[4096];
    ssize_t n;
    while ((n = read(pipefd[0], buf, sizeof buf)) > 0) fwrite(buf, 1, (size_t)n, text);
    close(pipefd[0]);
  }
  int status = 0;
  while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {}
  if (WIFEXITED(status) && WEXITSTATUS(status) == 0) return 0;
  eol(b);
  fprintf(stderr, "bench: gnuplot %s failed%s:\n", gp,
          WIFEXITED(status) && WEXITSTATUS(status) == 127 ? " (is it installed? make deps)" : "");
  char cmd[PATH_MAX + 64];
  snprintf(cmd, sizeof cmd, "tail -n 10 '%s' | sed 's/^/  | /' >&2", errf);
  if (system(cmd) != 0) {}
  return -1;
}

int bench_plot(bench_t *b, const char *gp, const char *out, const char *vars_fmt, ...) {
  va_list ap;
  va_start(ap, vars_fmt);
  char *vars = vfmt(vars_fmt, ap);
  va_end(ap);
  if (!b->png_term[0]) {
    int cairo = system("gnuplot -e 'set terminal pngcairo' </dev/null >/dev/null 2>&1") == 0;
    snprintf(b->png_term, sizeof b->png_term, "%s",
             cairo ? "pngcairo size 1000,600 font 'DejaVu Sans,11' linewidth 1.5"
                   : "png size 1000,600 font 'DejaVuSans,10'");
  }
  char png[512], svg[512];
  snprintf(png, sizeof png, "%s.png", out);
  snprintf(svg, sizeof svg, "%s.svg", out);
  int rc = gnuplot(b, gp, b->png_term, png, vars, NULL);
  if (rc == 0) rc = gnuplot(b, gp, "svg size 1000,600 dynamic font 'sans,12'", svg, vars, NULL);
  free(vars);
  return rc;
}

int bench_plot_text(bench_t *b, const char *gp, const char *vars_fmt, ...) {
  va_list ap;
  va_start(ap, vars_fmt);
  char *vars = vfmt(vars_fmt, ap);
  va_end(ap);
  if (b->summary_f) fflush(b->summary_f);
  int rc = b->summary_f ? gnuplot(b, gp, "dumb size 100,26", "", vars, b->summary_f) : -1;
  free(vars);
  return rc;
}

/* ---- main ---- */

static const char usage_fmt[] =
    "usage: %s [--variants \"pitfall solution exercise\"] [--quick] [--out DIR]\n"
    "       %s --replot [--out DIR]\n"
    "  Lab %s's bench (labs/%s/bench.c): starts the upstream and each variant, drives them with\n"
    "  open-loop HTTP load, writes CSVs, plots, summary.txt and summary.json to DIR/%s/\n"
    "  (DIR: results), and checks the lab's targets.\n"
    "  --variants LIST  which variants, in this order (build/bin/lab%s-VARIANT; default\n"
    "                   pitfall solution exercise)\n"
    "  --quick          short steps: a smoke run, not a measurement\n"
    "  --replot         figures, targets and plots again from the CSVs, without measuring\n"
    "  --out DIR        results go to DIR/%s/\n"
    "  -h, --help       this text\n"
    "Exit status: 0 every target met, 1 a target missed or the run failed, 2 usage, 130 Ctrl-C.\n"
    "See docs/bench.md.\n";

static void usage(const bench_t *b, FILE *f) {
  char me[16];
  snprintf(me, sizeof me, "bench%s", b->num);
  fprintf(f, usage_fmt, me, me, b->num, b->slug, b->slug, b->num, b->slug);
}

static int find_root(bench_t *b) {
  const char *env = getenv("LOOPHOLES_ROOT");
  char exe[PATH_MAX], probe[PATH_MAX + 32];
  ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
  if (n <= 0) return -1;
  exe[n] = '\0';
  *strrchr(exe, '/') = '\0';
  const char *bin = getenv("LOOPHOLES_BIN");         /* build/bin: where the tools are */
  snprintf(b->bin, sizeof b->bin, "%s", bin && *bin ? bin : exe);
  if (env && *env) snprintf(b->root, sizeof b->root, "%s", env);
  else if (getcwd(b->root, sizeof b->root) == NULL) return -1;
  snprintf(probe, sizeof probe, "%s/labs/manifest", b->root);
  if (access(probe, R_OK) == 0) return 0;
  snprintf(b->root, sizeof b->root, "%s/../..", exe); /* build/bin/.. /.. */
  snprintf(probe, sizeof probe, "%s/labs/manifest", b->root);
  if (realpath(b->root, exe)) snprintf(b->root, sizeof b->root, "%s", exe);
  return access(probe, R_OK) == 0 ? 0 : -1;
}

static void add_variant(bench_t *b, const char *v) {
  if (bench_has(b, v) || b->nvariants == BENCH_MAX_VARIANTS) return;
  b->variant_list[b->nvariants++] = xstrdup(v);
  size_t len = strlen(b->variants);
  snprintf(b->variants + len, sizeof b->variants - len, "%s%s", len ? " " : "", v);
}

/* --replot without --variants: the variants the tables name, pitfall solution exercise first. */
static void variants_from_tables(bench_t *b) {
  static const char *const order[] = {"pitfall", "solution", "exercise"};
  DIR *d = opendir(b->dir);
  for (struct dirent *e; d && (e = readdir(d));) {
    size_t n = strlen(e->d_name);
    if (n > 4 && strcmp(e->d_name + n - 4, ".csv") == 0) bench_table(b, "%s", e->d_name);
  }
  if (d) closedir(d);
  char *seen[64];
  int ns = 0;
  for (int i = 0; i < b->ntables; i++)
    for (int r = 0; r < b->tables[i]->nrows && ns < 64; r++) {
      const char *v = bench_at_s(b->tables[i], r, "variant");
      char bin[PATH_MAX + 80];
      snprintf(bin, sizeof bin, "%s/lab%s-%s", b->bin, b->num, v);
      int known = 0;
      for (int k = 0; k < ns; k++) known |= strcmp(seen[k], v) == 0;
      if (*v && !known && (access(bin, F_OK) == 0 || !strcmp(v, "pitfall") ||
                           !strcmp(v, "solution") || !strcmp(v, "exercise")))
        seen[ns++] = xstrdup(v);
    }
  for (int k = 0; k < 3; k++)
    for (int i = 0; i < ns; i++)
      if (strcmp(seen[i], order[k]) == 0) add_variant(b, seen[i]);
  for (int i = 0; i < ns; i++) {
    add_variant(b, seen[i]);
    free(seen[i]);
  }
}

static void clear_dir(const bench_t *b) {
  static const char *const exts[] = {".csv", ".png", ".svg", ".txt", ".json"};
  DIR *d = opendir(b->dir);
  char path[PATH_MAX + 300];
  for (struct dirent *e; d && (e = readdir(d));) {
    size_t n = strlen(e->d_name);
    for (size_t k = 0; k < sizeof exts / sizeof exts[0]; k++) {
      size_t m = strlen(exts[k]);
      if (n > m && strcmp(e->d_name + n - m, exts[k]) == 0) {
        snprintf(path, sizeof path, "%s/%s", b->dir, e->d_name);
        unlink(path);
      }
    }
  }
  if (d) closedir(d);
}

static json_t *machine_info(void) {
  struct utsname u;
  double load[3] = {NAN, NAN, NAN};
  char model[256] = "", line[512];
  FILE *f = fopen("/proc/cpuinfo", "r");
  while (f && fgets(line, sizeof line, f))
    if (!model[0] && strncmp(line, "model name", 10) == 0 && strchr(line, ':')) {
      snprintf(model, sizeof model, "%s", strchr(line, ':') + 2);
      model[strcspn(model, "\n")] = '\0';
    }
  if (f) fclose(f);
  if (getloadavg(load, 3) < 3) load[0] = NAN;
  uname(&u);
  return json_pack("{s:i, s:s, s:s, s:s, s:o}", "cpus", (int)sysconf(_SC_NPROCESSORS_ONLN),
                   "cpu_model", model, "kernel", u.release, "machine", u.machine, "loadavg_1m",
                   isfinite(load[0]) ? json_real(load[0]) : json_null());
}

static int write_summary(bench_t *b, double took_s) {
  char path[PATH_MAX + 32], stamp[32];
  time_t now = time(NULL);
  strftime(stamp, sizeof stamp, "%Y-%m-%dT%H:%M:%SZ", gmtime(&now));
  json_t *vs = json_array();
  for (int i = 0; i < b->nvariants; i++) json_array_append_new(vs, json_string(b->variant_list[i]));
  json_t *files = json_array();
  DIR *d = opendir(b->dir);
  for (struct dirent *e; d && (e = readdir(d));)
    if (e->d_name[0] != '.' && !strstr(e->d_name, ".tmp"))
      json_array_append_new(files, json_string(e->d_name));
  if (d) closedir(d);
  json_array_append_new(files, json_string("summary.txt"));
  json_array_append_new(files, json_string("summary.json"));
  json_t *s = json_pack(
      "{s:i, s:s, s:s, s:s, s:o, s:b, s:b, s:s, s:f, s:o, s:O, s:O, s:i, s:i, s:o}", "schema", 1,
      "lab", b->slug, "num", b->num, "title", b->title, "variants", vs, "quick", b->quick, "replot",
      b->replot, "timestamp", stamp, "duration_s", round(took_s * 10) / 10, "machine",
      machine_info(), "figures", b->figures, "targets", b->targets, "targets_met", b->met,
      "targets_missed", b->missed, "files", files);
  if (s) json_object_set(s, "checks", b->checks);
  snprintf(path, sizeof path, "%s/summary.json", b->dir);
  int rc = s ? json_dump_file(s, path, JSON_INDENT(2) | JSON_REAL_PRECISION(10)) : -1;
  if (rc != 0) fprintf(stderr, "bench: writing %s failed\n", path);
  json_decref(s);
  snprintf(path, sizeof path, "%s/summary.txt", b->dir);
  FILE *f = fopen(path, "w");
  if (!f || fwrite(b->summary, 1, b->summary_len, f) != b->summary_len || fclose(f) != 0) {
    fprintf(stderr, "bench: writing %s: %s\n", path, strerror(errno));
    rc = -1;
  }
  return rc;
}

/* Everything bench_main allocated; returns rc, so that every way out can be `return done(b, rc)`. */
static int done(bench_t *b, int rc) {
  for (int i = 0; i < b->ntables; i++) table_free(b->tables[i]);
  for (int i = 0; i < b->nvariants; i++) free(b->variant_list[i]);
  for (int i = 0; i < b->ncfg; i++) free(b->cfg_val[i]);
  json_decref(b->targets);
  json_decref(b->checks);
  json_decref(b->figures);
  if (b->summary_f) fclose(b->summary_f);
  free(b->summary);
  free(b);
  return rc;
}

int bench_main(int argc, char **argv, const bench_lab_t *lab) {
  bench_t *b = xcalloc(1, sizeof *b);
  b->lab = lab;
  snprintf(b->slug, sizeof b->slug, "%s", lab->slug ? lab->slug : "");
  snprintf(b->num, sizeof b->num, "%.2s", b->slug);
  const char *out = "results", *variants = NULL;
  for (int i = 1; i < argc; i++) {
    const char *a = argv[i];
    if (strcmp(a, "-h") == 0 || strcmp(a, "--help") == 0) {
      usage(b, stdout);
      return done(b, 0);
    } else if (strcmp(a, "--quick") == 0) {
      b->quick = 1;
    } else if (strcmp(a, "--replot") == 0) {
      b->replot = 1;
    } else if ((strcmp(a, "--variants") == 0 || strcmp(a, "--out") == 0) && i + 1 < argc &&
               argv[i + 1][0]) {
      if (a[2] == 'v') variants = argv[++i];
      else out = argv[++i];
    } else {
      fprintf(stderr, "bench%s: %s '%s'\n", b->num,
              strcmp(a, "--variants") == 0 || strcmp(a, "--out") == 0 ? "a value is needed after"
                                                                       : "unknown argument", a);
      usage(b, stderr);
      return done(b, 2);
    }
  }
  if (find_root(b) != 0 || cfg_load(b) != 0) {
    fprintf(stderr, "bench: cannot find the kit (labs/manifest): run it from the kit's folder\n");
    return done(b, 1);
  }
  snprintf(b->title, sizeof b->title, "%s", bench_cfg(b, "title", ""));
  char base[PATH_MAX];
  snprintf(base, sizeof base, "%s%s%s", out[0] == '/' ? "" : b->root, out[0] == '/' ? "" : "/",
           out);
  snprintf(b->dir, sizeof b->dir, "%.2000s/%.500s", base, b->slug);
  snprintf(b->rel_dir, sizeof b->rel_dir, "%.2000s/%.500s", out, b->slug);
  char *list = variants ? xstrdup(variants) : NULL, *save = NULL;
  for (char *tok = list ? strtok_r(list, " ,", &save) : NULL; tok; tok = strtok_r(NULL, " ,", &save)) {
    char bin[PATH_MAX + 80];
    snprintf(bin, sizeof bin, "%s/lab%s-%s", b->bin, b->num, tok);
    if (!b->replot && access(bin, X_OK) != 0) {
      fprintf(stderr, "bench%s: no variant '%s': %s is not built (make; a variant is a file of "
              "labs/%s or solutions/%s)\n", b->num, tok, bin, b->slug, b->slug);
      free(list);
      return done(b, 2);
    }
    add_variant(b, tok);
  }
  free(list);
  if (mkdir(base, 0755) != 0 && errno != EEXIST) {}
  if (mkdir(b->dir, 0755) != 0 && errno != EEXIST) {
    fprintf(stderr, "bench: mkdir %s: %s\n", b->dir, strerror(errno));
    return done(b, 1);
  }
  if (b->replot && !variants) variants_from_tables(b);
  for (int i = 0; !b->replot && !variants && i < 3; i++) { /* the default: those built */
    static const char *const defaults[] = {"pitfall", "solution", "exercise"};
    char bin[PATH_MAX + 80];
    snprintf(bin, sizeof bin, "%s/lab%s-%s", b->bin, b->num, defaults[i]);
    if (access(bin, X_OK) == 0) add_variant(b, defaults[i]);
    else fprintf(stderr, "bench%s: %s is not built: skipped\n", b->num, bin);
  }
  if (!b->nvariants) {
    fprintf(stderr, "bench%s: no variant to run (make builds them)\n", b->num);
    return done(b, 1);
  }
  snprintf(b->tmp, sizeof b->tmp, "%s/loopholes-bench.XXXXXX",
           getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp");
  if (!mkdtemp(b->tmp)) {
    fprintf(stderr, "bench: mkdtemp: %s\n", strerror(errno));
    return done(b, 1);
  }
  struct rlimit rl;
  if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
    rl.rlim_cur = rl.rlim_max;
    setrlimit(RLIMIT_NOFILE, &rl);
  }
  struct sigaction sa;
  memset(&sa, 0, sizeof sa);
  sa.sa_handler = bench_on_signal;
  sigemptyset(&sa.sa_mask);
  sigaction(SIGINT, &sa, NULL);
  sigaction(SIGTERM, &sa, NULL);
  signal(SIGPIPE, SIG_IGN);
  if (curl_global_init(CURL_GLOBAL_DEFAULT) != 0) {
    fprintf(stderr, "bench: curl_global_init failed\n");
    return done(b, 1);
  }
  b->targets = json_array();
  b->checks = json_array();
  b->figures = json_object();
  b->summary_f = open_memstream(&b->summary, &b->summary_len);
  b->start_ms = b->t0_ms = now_ms();

  if (!b->replot) {
    clear_dir(b);
    bench_log(b, "%s: %s; variants: %s%s", b->slug, b->title, b->variants,
              b->quick ? " (quick)" : "");
    b->current = "setup";
    if (lab->setup && lab->setup(b) != 0) b->failed = 1;
    for (int i = 0; i < b->nvariants && !b->failed; i++) {
      b->t0_ms = now_ms();
      b->current = b->variant_list[i];
      if (lab->run(b, b->variant_list[i]) != 0) {
        bench_log(b, "%s: the run stopped (see above)", b->variant_list[i]);
        b->failed = 1;
      }
      for (int k = 0; k < BENCH_MAX_PROCS; k++)
        if (b->procs[k]) bench_stop(b, b->procs[k]);
      for (int k = 0; k < b->ntables; k++) table_write(b->tables[k]);
    }
  }
  double took = (now_ms() - b->start_ms) / 1000;
  bench_say(b, "Lab %s (%s): %s", b->num, b->slug, b->title);
  if (!b->failed && lab->report) lab->report(b);
  for (int k = 0; k < b->ntables; k++) table_write(b->tables[k]);
  bench_say(b, "targets: %d met, %d missed%s%s", b->met, b->missed,
            json_array_size(b->checks) ? " (checks of other variants: not counted)" : "",
            b->failed ? "; the run FAILED before the end" : "");
  if (!b->replot)
    bench_say(b, "bench took %.0f s%s", took, b->quick ? " (quick: a smoke run)" : "");
  bench_say(b, "files: %s/ (summary.txt, summary.json, the CSVs and plots: docs/bench.md)",
            b->rel_dir);
  fclose(b->summary_f);
  b->summary_f = NULL;
  int rc = write_summary(b, took);
  rmdir(b->tmp);

  int status = b->failed || b->missed || rc ? 1 : 0;
  curl_global_cleanup();
  return done(b, status);
}
