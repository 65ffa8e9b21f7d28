/* testkit.c - see testkit.h. */
#include "testkit.h"
#include "proc.h"

#include <criterion/criterion.h>
#include <jansson.h>
#include <curl/curl.h>
#include <dirent.h>
#include <errno.h>
#include <libgen.h>
#include <limits.h>
#include <malloc.h>
#include <math.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#if defined(__SANITIZE_ADDRESS__)
#define TK_UNDER_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define TK_UNDER_ASAN 1
#endif
#endif

#ifdef TK_UNDER_ASAN
/* Criterion 2.4.1's runner (the parent process, never a test) leaks a 48-byte block of its own
 * under --jobs 2 when a test with a .timeout ends after one started later, and LeakSanitizer
 * would then fail a suite whose tests all passed. Every suite links this file: skip the leak
 * check in the runner only. Test processes (where the lab and the code under test run) are
 * still checked, and labrun_stop() runs a leak check of its own before a test ends. */
int __lsan_is_turned_off(void);
int __lsan_is_turned_off(void) { return criterion_current_test == NULL; }
#endif

const char *tk_bin_dir(void) {
  static char dir[PATH_MAX];
  const char *env = getenv("LOOPHOLES_BIN");
  if (env && *env) return env;
  if (dir[0]) return dir;
  char exe[PATH_MAX];
  ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
  if (n <= 0) return "build/bin";
  exe[n] = '\0';
  snprintf(dir, sizeof dir, "%s/../bin", dirname(exe));
  return dir;
}

double tk_now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

int tk_spawn(tk_proc_t *p, const char *tool, const char *const *args) {
  /* One spawn implementation for the suites and the bench: harness/lib/proc.c. */
  char path[PATH_MAX];
  proc_t pr;
  memset(p, 0, sizeof *p);
  p->out_fd = -1;
  snprintf(path, sizeof path, "%s/%s", tk_bin_dir(), tool);
  if (proc_spawn(&pr, path, args, &(proc_opts_t){.timeout_ms = 5000, .who = "testkit"}) != 0)
    return -1;
  p->pid = pr.pid;
  p->port = pr.port;
  p->out_fd = pr.out_fd;
  snprintf(p->url, sizeof p->url, "%s", pr.url);
  return 0;
}

int tk_stop(tk_proc_t *p) {
  proc_t pr = {.pid = p->pid, .port = p->port, .out_fd = p->out_fd};
  int status = proc_stop(&pr, 3000);
  p->pid = 0;
  p->out_fd = -1;
  return status;
}

/* ---------------------------------------------------------------- HTTP with libcurl */

/* Called by libcurl with response body bytes. */
static size_t on_body(char *ptr, size_t size, size_t nmemb, void *userdata) {
  tk_resp_t *r = userdata;
  size_t n = size * nmemb, room = sizeof r->body - 1 - r->body_len;
  size_t take = n < room ? n : room;
  memcpy(r->body + r->body_len, ptr, take);
  r->body_len += take;
  r->body[r->body_len] = '\0';
  return n;
}

/* Called by libcurl with each response header line. */
static size_t on_header(char *buf, size_t size, size_t nitems, void *userdata) {
  tk_resp_t *r = userdata;
  size_t n = size * nitems;
  if (n > 12 && strncasecmp(buf, "Retry-After:", 12) == 0) {
    size_t i = 12, k = 0;
    while (i < n && buf[i] == ' ') i++;
    while (i < n && buf[i] != '\r' && buf[i] != '\n' && k < sizeof r->retry_after - 1)
      r->retry_after[k++] = buf[i++];
    r->retry_after[k] = '\0';
  }
  if (n > 13 && strncasecmp(buf, "Content-Type:", 13) == 0) {
    size_t i = 13, k = 0;
    while (i < n && buf[i] == ' ') i++;
    while (i < n && buf[i] != '\r' && buf[i] != '\n' && k < sizeof r->content_type - 1)
      r->content_type[k++] = buf[i++];
    r->content_type[k] = '\0';
  }
  return n;
}

/* curl_global_init is not thread-safe: every entry point calls this first, on the test's thread. */
static void curl_once(void) {
  static int inited;
  if (!inited) {
    curl_global_init(CURL_GLOBAL_DEFAULT);
    inited = 1;
  }
}

static CURL *easy_for(const char *url, long timeout_ms, tk_resp_t *out) {
  curl_once();
  CURL *e = curl_easy_init();
  if (e == NULL) return NULL;
  memset(out, 0, sizeof *out);
  curl_easy_setopt(e, CURLOPT_URL, url);
  curl_easy_setopt(e, CURLOPT_TIMEOUT_MS, timeout_ms);
  curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
  curl_easy_setopt(e, CURLOPT_PROXY, "");
  curl_easy_setopt(e, CURLOPT_FRESH_CONNECT, 1L);
  curl_easy_setopt(e, CURLOPT_FORBID_REUSE, 1L);
  curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, on_body);
  curl_easy_setopt(e, CURLOPT_WRITEDATA, out);
  curl_easy_setopt(e, CURLOPT_HEADERFUNCTION, on_header);
  curl_easy_setopt(e, CURLOPT_HEADERDATA, out);
  return e;
}

static void finish(CURL *e, CURLcode code, tk_resp_t *out) {
  long status = 0;
  curl_off_t total_us = 0;
  curl_easy_getinfo(e, CURLINFO_RESPONSE_CODE, &status);
  curl_easy_getinfo(e, CURLINFO_TOTAL_TIME_T, &total_us);
  out->status = (int)status;
  out->curl_code = (int)code;
  out->total_ms = (double)total_us / 1e3;
  out->end_ms = out->start_ms + out->total_ms;
}

static int one_request(const char *url, const char *post_body, long timeout_ms, tk_resp_t *out) {
  CURL *e = easy_for(url, timeout_ms, out);
  if (e == NULL) return -1;
  if (post_body) curl_easy_setopt(e, CURLOPT_POSTFIELDS, post_body);
  out->start_ms = tk_now_ms();
  CURLcode code = curl_easy_perform(e);
  finish(e, code, out);
  curl_easy_cleanup(e);
  return out->status > 0 ? 0 : -1;
}

int tk_get(const char *url, long timeout_ms, tk_resp_t *out) {
  return one_request(url, NULL, timeout_ms, out);
}

int tk_post(const char *url, const char *body, long timeout_ms, tk_resp_t *out) {
  return one_request(url, body ? body : "", timeout_ms, out);
}

int tk_post_empty(const char *url) {
  tk_resp_t *r = malloc(sizeof *r);
  if (r == NULL) return 0;
  one_request(url, "", 5000, r);
  int status = r->status;
  free(r);
  return status;
}

int tk_get_many(const char *url, int n, long timeout_ms, tk_resp_t *out) {
  CURLM *m = curl_multi_init();
  CURL **easies = calloc((size_t)n, sizeof *easies);
  int running = 0, ok = 0;
  if (m == NULL || easies == NULL) {
    free(easies);
    if (m) curl_multi_cleanup(m);
    return 0;
  }
  double start = tk_now_ms();
  for (int i = 0; i < n; i++) {
    easies[i] = easy_for(url, timeout_ms, &out[i]);
    if (easies[i] == NULL) continue;
    curl_easy_setopt(easies[i], CURLOPT_PRIVATE, &out[i]);
    out[i].start_ms = start;
    curl_multi_add_handle(m, easies[i]);
  }
  do {
    CURLMcode mc = curl_multi_perform(m, &running);
    if (mc != CURLM_OK) break;
    CURLMsg *msg;
    int left;
    while ((msg = curl_multi_info_read(m, &left)) != NULL) {
      if (msg->msg != CURLMSG_DONE) continue;
      tk_resp_t *r;
      curl_easy_getinfo(msg->easy_handle, CURLINFO_PRIVATE, (char **)&r);
      finish(msg->easy_handle, msg->data.result, r);
      r->end_ms = tk_now_ms(); /* when the test saw it: all measured on one clock */
      r->total_ms = r->end_ms - r->start_ms;
      if (r->status > 0) ok++;
    }
    if (running) curl_multi_poll(m, NULL, 0, 50, NULL);
  } while (running);
  for (int i = 0; i < n; i++) {
    if (easies[i] == NULL) continue;
    curl_multi_remove_handle(m, easies[i]);
    curl_easy_cleanup(easies[i]);
  }
  free(easies);
  curl_multi_cleanup(m);
  return ok;
}

/* ---------------------------------------------------------------- open-loop stream */

struct tk_stream {
  pthread_t thread;
  const char *url, *body;
  int n;
  double rate_per_s;
  long timeout_ms;
  tk_resp_t *out;
  int answered;
};

/* Request i is due at t0 + i/rate whatever happened to the ones before it: the sender never
 * waits for an answer, so a service that stalls cannot slow the arrivals down (open loop). */
static int stream_run(tk_stream_t *s) {
  CURLM *m = curl_multi_init();
  CURL **easies = calloc((size_t)(s->n > 0 ? s->n : 1), sizeof *easies);
  int running = 0, added = 0, done = 0, ok = 0;
  if (m == NULL || easies == NULL) {
    fprintf(stderr, "testkit: tk_stream: %s failed\n", m == NULL ? "curl_multi_init" : "calloc");
    free(easies);
    if (m) curl_multi_cleanup(m);
    return 0;
  }
  double t0 = tk_now_ms(), interval_ms = 1000.0 / s->rate_per_s;
  while (done < s->n) {
    double now = tk_now_ms();
    while (added < s->n && t0 + added * interval_ms <= now) {
      tk_resp_t *r = &s->out[added];
      CURL *e = easy_for(s->url, s->timeout_ms, r);
      r->start_ms = t0 + added * interval_ms; /* its due time, not when we got round to it */
      if (e == NULL || (s->body && curl_easy_setopt(e, CURLOPT_POSTFIELDS, s->body) != CURLE_OK) ||
          curl_easy_setopt(e, CURLOPT_PRIVATE, r) != CURLE_OK ||
          curl_multi_add_handle(m, e) != CURLM_OK) {
        fprintf(stderr, "testkit: tk_stream: could not start request %d\n", added);
        if (e) curl_easy_cleanup(e);
        r->curl_code = CURLE_FAILED_INIT;
        r->end_ms = tk_now_ms();
        r->total_ms = r->end_ms - r->start_ms;
        done++;
      } else {
        easies[added] = e;
      }
      added++;
    }
    if (curl_multi_perform(m, &running) != CURLM_OK) break;
    CURLMsg *msg;
    int left;
    while ((msg = curl_multi_info_read(m, &left)) != NULL) {
      if (msg->msg != CURLMSG_DONE) continue;
      tk_resp_t *r;
      curl_easy_getinfo(msg->easy_handle, CURLINFO_PRIVATE, (char **)&r);
      double due = r->start_ms;
      finish(msg->easy_handle, msg->data.result, r);
      r->start_ms = due;
      r->end_ms = tk_now_ms(); /* latency from the intended send time, on one clock */
      r->total_ms = r->end_ms - r->start_ms;
      if (r->status > 0) ok++;
      done++;
    }
    if (done >= s->n) break;
    /* Sleep in the multi until a socket is ready or the next request is due. */
    int wait_ms = 50;
    if (added < s->n) {
      double until = t0 + added * interval_ms - tk_now_ms();
      wait_ms = until <= 0 ? 0 : (until < 50 ? (int)ceil(until) : 50);
    }
    if (wait_ms > 0) curl_multi_poll(m, NULL, 0, wait_ms, NULL);
  }
  for (int i = 0; i < s->n; i++) {
    if (easies[i] == NULL) continue;
    curl_multi_remove_handle(m, easies[i]);
    curl_easy_cleanup(easies[i]);
  }
  free(easies);
  curl_multi_cleanup(m);
  return ok;
}

static void *stream_thread(void *arg) {
  tk_stream_t *s = arg;
  s->answered = stream_run(s);
  return NULL;
}

static tk_stream_t *stream_new(const char *url, const char *body, int n, double rate_per_s,
                               long timeout_ms, tk_resp_t *out) {
  if (n < 0 || !(rate_per_s > 0)) {
    fprintf(stderr, "testkit: tk_stream: n %d and rate %g/s: want n >= 0 and a rate > 0\n", n,
            rate_per_s);
    return NULL;
  }
  tk_stream_t *s = calloc(1, sizeof *s);
  if (s == NULL) return NULL;
  *s = (tk_stream_t){.url = url, .body = body, .n = n, .rate_per_s = rate_per_s,
                     .timeout_ms = timeout_ms, .out = out};
  for (int i = 0; i < n; i++) memset(&out[i], 0, sizeof out[i]);
  curl_once();
  return s;
}

int tk_stream(const char *url, const char *body, int n, double rate_per_s, long timeout_ms,
              tk_resp_t *out) {
  tk_stream_t *s = stream_new(url, body, n, rate_per_s, timeout_ms, out);
  if (s == NULL) return 0;
  int ok = stream_run(s);
  free(s);
  return ok;
}

tk_stream_t *tk_stream_start(const char *url, const char *body, int n, double rate_per_s,
                             long timeout_ms, tk_resp_t *out) {
  tk_stream_t *s = stream_new(url, body, n, rate_per_s, timeout_ms, out);
  if (s == NULL) return NULL;
  int rc = pthread_create(&s->thread, NULL, stream_thread, s);
  if (rc != 0) {
    fprintf(stderr, "testkit: pthread_create: %s\n", strerror(rc));
    free(s);
    return NULL;
  }
  return s;
}

int tk_stream_wait(tk_stream_t *s) {
  if (s == NULL) return 0;
  pthread_join(s->thread, NULL);
  int ok = s->answered;
  free(s);
  return ok;
}

/* ---------------------------------------------------------------- stats */

double tk_json_number(const char *json, const char *field) {
  /* jansson: the one JSON reader of the kit's C side. A field of a nested object counts too. */
  json_error_t err;
  json_t *root = json ? json_loads(json, 0, &err) : NULL, *stack[16];
  int depth = 0;
  double v = NAN;
  if (root) stack[depth++] = root;
  while (depth > 0 && isnan(v)) {
    json_t *obj = stack[--depth], *x;
    const char *key;
    json_object_foreach(obj, key, x) {
      if (strcmp(key, field) == 0 && (json_is_number(x) || json_is_boolean(x))) {
        v = json_is_number(x) ? json_number_value(x) : json_is_true(x);
        break;
      }
      if (json_is_object(x) && depth < 16) stack[depth++] = x;
    }
  }
  json_decref(root);
  return v;
}

double tk_stat(const char *url, const char *field) {
  tk_resp_t *r = malloc(sizeof *r);
  double v = NAN;
  if (r == NULL) return NAN;
  if (tk_get(url, 5000, r) == 0 && r->status == 200) v = tk_json_number(r->body, field);
  free(r);
  return v;
}

int tk_fd_count(void) {
  int n = 0;
  DIR *d = opendir("/proc/self/fd");
  if (d == NULL) return -1;
  for (struct dirent *e; (e = readdir(d)) != NULL;)
    if (e->d_name[0] != '.') n++;
  closedir(d);
  return n - 1;
}

enum { TK_RUNNABLE_MAX = 100000 };

struct tk_runnable {
  pthread_t thread;
  int period_ms;
  atomic_int stop;
  int n;
  unsigned char *count; /* runnable threads in each sample */
};

/* Threads of this process in state R, this one left out. */
static int runnable_now(pid_t self) {
  int n = 0;
  DIR *d = opendir("/proc/self/task");
  if (d == NULL) return 0;
  for (struct dirent *e; (e = readdir(d)) != NULL;) {
    if (e->d_name[0] == '.' || atoi(e->d_name) == self) continue;
    char path[300], buf[512];
    snprintf(path, sizeof path, "/proc/self/task/%s/stat", e->d_name);
    FILE *f = fopen(path, "r");
    if (f == NULL) continue; /* the thread ended meanwhile */
    size_t len = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[len] = '\0';
    const char *paren = strrchr(buf, ')'); /* "tid (comm) S ...": comm may hold anything */
    if (paren != NULL && paren[1] == ' ' && paren[2] == 'R') n++;
  }
  closedir(d);
  return n;
}

static void *runnable_main(void *arg) {
  tk_runnable_t *s = arg;
  pid_t self = (pid_t)gettid();
  while (!atomic_load(&s->stop) && s->n < TK_RUNNABLE_MAX) {
    int r = runnable_now(self);
    s->count[s->n++] = (unsigned char)(r > 255 ? 255 : r);
    usleep((useconds_t)s->period_ms * 1000);
  }
  return NULL;
}

tk_runnable_t *tk_runnable_start(int period_ms) {
  tk_runnable_t *s = calloc(1, sizeof *s);
  if (s == NULL || (s->count = malloc(TK_RUNNABLE_MAX)) == NULL) {
    free(s);
    return NULL;
  }
  s->period_ms = period_ms > 0 ? period_ms : 1;
  if (pthread_create(&s->thread, NULL, runnable_main, s) != 0) {
    free(s->count);
    free(s);
    return NULL;
  }
  return s;
}

int tk_runnable_stop(tk_runnable_t *s, int atleast, int *samples) {
  int hits = 0;
  if (s == NULL) {
    if (samples) *samples = 0;
    return 0;
  }
  atomic_store(&s->stop, 1);
  pthread_join(s->thread, NULL);
  for (int i = 0; i < s->n; i++) hits += s->count[i] >= atleast;
  if (samples) *samples = s->n;
  free(s->count);
  free(s);
  return hits;
}

long tk_rss_kb(void) {
  long total = 0, rss = 0;
  FILE *f = fopen("/proc/self/statm", "r");
  if (f == NULL) return -1;
  if (fscanf(f, "%ld %ld", &total, &rss) != 2) rss = -1;
  fclose(f);
  return rss < 0 ? -1 : rss * (sysconf(_SC_PAGESIZE) / 1024);
}

static int cmp_double(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return x < y ? -1 : x > y;
}

double tk_percentile(double *v, int n, double p) {
  if (n <= 0) return NAN;
  qsort(v, (size_t)n, sizeof *v, cmp_double);
  int idx = (int)ceil(p / 100.0 * n) - 1;
  if (idx < 0) idx = 0;
  if (idx >= n) idx = n - 1;
  return v[idx];
}

/* ---------------------------------------------------------------- fixtures */

void tk_upstream_start(tk_proc_t *up, const char *const *args) {
  cr_assert_eq(tk_spawn(up, "upstream", args), 0,
               "could not start %s/upstream --port 0 (the message above says why): is it built? "
               "make builds it", tk_bin_dir());
}

/* The loop of tk_lab_stat_wait and tk_upstream_stat_wait, with the reader of each. */
static double stat_wait(double (*get)(const void *, const char *), const void *from,
                        const char *field, double at_least, long within_ms) {
  double end = tk_now_ms() + (double)within_ms, v;
  while ((v = get(from, field)) < at_least && tk_now_ms() < end) usleep(10 * 1000);
  return v;
}

static double read_upstream(const void *up, const char *field) { return tk_upstream_stat(up, field); }

double tk_upstream_stat_wait(const tk_proc_t *up, const char *field, double at_least,
                             long within_ms) {
  return stat_wait(read_upstream, up, field, at_least, within_ms);
}

double tk_upstream_stat(const tk_proc_t *up, const char *field) {
  char url[96];
  snprintf(url, sizeof url, "%s/stats", up->url);
  double v = tk_stat(url, field);
  cr_assert(!isnan(v), "the upstream's GET /stats has no number \"%s\" (is it still running?)",
            field);
  return v;
}

void tk_upstream_reset(const tk_proc_t *up) {
  char url[96];
  snprintf(url, sizeof url, "%s/stats/reset", up->url);
  int status = tk_post_empty(url);
  cr_assert_eq(status, 200, "POST %s answered %d, want 200", url, status);
}

void tk_upstream_stop(tk_proc_t *up) {
  if (up->pid > 0) tk_stop(up);
}

/* What the process keeps open for good once it has run one loop and used libcurl (libuv's
 * signal pipe, curl's one-time setup): opened before the baseline, so it is not counted. */
static void warm_up_once(void) {
  static int warmed;
  uv_loop_t loop;
  if (warmed) return;
  warmed = 1;
  /* One malloc arena for every thread, so mallinfo2() (which reads the main arena) sees what the
   * lab's loop thread allocates too. Before the first thread the lab starts. */
  mallopt(M_ARENA_MAX, 1);
  curl_once();
  if (uv_loop_init(&loop) == 0) uv_loop_close(&loop);
}

#define TK_NO_TCACHE "glibc.malloc.tcache_count=0"

#ifndef TK_UNDER_ASAN
/* mallinfo2() counts the chunks glibc keeps in its per-thread caches (tcache) as in use, so with
 * them on the heap looks as if it grew by up to ~200 KiB after any burst, leak or not. A suite
 * binary therefore runs with the tcache off: this runs before main() (Criterion's runner, whose
 * test processes inherit the setting) and, if the tunable is not set yet, sets it and executes
 * the binary again. Not under valgrind (it checks leaks itself and would lose the child). */
__attribute__((constructor)) static void tk_no_tcache(int argc, char **argv) {
  const char *tun = getenv("GLIBC_TUNABLES"), *pre = getenv("LD_PRELOAD");
  char buf[1024];
  (void)argc;
  if ((tun && strstr(tun, TK_NO_TCACHE)) || (pre && strstr(pre, "vgpreload"))) return;
  char old[960];   /* with room in buf for ":" and the tunable */
  snprintf(old, sizeof old, "%s", tun ? tun : "");
  snprintf(buf, sizeof buf, "%s%s%s", old, old[0] ? ":" : "", TK_NO_TCACHE);
  if (setenv("GLIBC_TUNABLES", buf, 1) != 0) return;
  execv("/proc/self/exe", argv);
  /* exec failed (no /proc in a sandbox?): run on with the tcache, and say so in the environment
   * too, so that heap_in_use() knows it cannot tell. */
  if (tun) setenv("GLIBC_TUNABLES", old, 1); else unsetenv("GLIBC_TUNABLES");
}
#endif

/* Bytes handed out by malloc and not yet freed, or -1 when that cannot be known. */
static long long heap_in_use(void) {
#ifdef TK_UNDER_ASAN
  return -1; /* ASan's allocator: LeakSanitizer checks leaks instead */
#else
  const char *tun = getenv("GLIBC_TUNABLES");
  if (tun == NULL || strstr(tun, TK_NO_TCACHE) == NULL) return -1;
  struct mallinfo2 mi = mallinfo2();
  return (long long)mi.uordblks;
#endif
}

void tk_lab_start(tk_lab_t *lab, const lab_def_t *def, const char *const *args) {
  size_t used = 0;
  int argc = 0;
  memset(lab, 0, sizeof *lab);
  for (; args && args[argc]; argc++) {
    size_t len = strlen(args[argc]) + 1;
    cr_assert(argc < 32 && used + len <= sizeof lab->argbuf,
              "tk_lab_start: too many or too long lab options (the suite's bug)");
    memcpy(lab->argbuf + used, args[argc], len);
    lab->argv[argc] = lab->argbuf + used;
    used += len;
  }
  lab->argv[argc] = NULL;
  warm_up_once();
  lab->fds_baseline = tk_fd_count();
  lab->heap_baseline = heap_in_use();
  int rc = labrun_start(&lab->run, def, lab->argv);
  cr_assert_eq(rc, 0, "the lab did not start: labrun_start returned %d (%s); lab_create failed "
               "or rejected its options (see stderr)", rc, uv_strerror(rc));
  snprintf(lab->url, sizeof lab->url, "%s", labrun_url(lab->run));
}

const char *tk_lab_url(const tk_lab_t *lab, const char *path, char *out, size_t len) {
  snprintf(out, len, "%s%s", lab->url, path);
  return out;
}

double tk_lab_stat(const tk_lab_t *lab, const char *field) {
  char url[128];
  double v = tk_stat(tk_lab_url(lab, "/debug/stats", url, sizeof url), field);
  cr_assert(!isnan(v), "GET /debug/stats has no number \"%s\": the lab's contract (lab.h) "
            "promises it; add it in the stats hook (shell_stats_add)", field);
  return v;
}

static double read_lab(const void *lab, const char *field) { return tk_lab_stat(lab, field); }

double tk_lab_stat_wait(const tk_lab_t *lab, const char *field, double at_least, long within_ms) {
  return stat_wait(read_lab, lab, field, at_least, within_ms);
}

void tk_lab_stop(tk_lab_t *lab, const char *const *zero_fields) {
  labrun_report_t rep;
  char url[128];
  tk_lab_url(lab, "/debug/stats", url, sizeof url);
  for (int i = 0; zero_fields && zero_fields[i]; i++) {
    double v = NAN, deadline = tk_now_ms() + 2000;
    do {
      v = tk_stat(url, zero_fields[i]);
      if (v == 0) break;
      usleep(20 * 1000);
    } while (tk_now_ms() < deadline);
    cr_expect(v == 0, "/debug/stats says %s = %g with every request answered, want 0: the lab's "
              "own count never came back down (a slot, a call or a queue entry is never given "
              "back, so it leaks, and a long-running service runs out)", zero_fields[i], v);
  }
  memset(&rep, 0, sizeof rep);
  int rc = labrun_stop(lab->run, 5000, &rep);
  lab->run = NULL;
  cr_assert_eq(rc, 0, "the lab did not shut down within 5 s (labrun_stop %d): a request was "
               "never answered, or a handle keeps its loop alive", rc);
  cr_expect(rep.drained, "a request was still unanswered when the lab shut down");
  cr_expect(rep.loop_close_rc == 0 && rep.handles_left == 0,
            "uv_loop_close() = %d with %u handle(s) still open after lab_destroy: every handle "
            "(timer, client) the lab opens needs its uv_close / client_destroy",
            rep.loop_close_rc, rep.handles_left);
  cr_expect_eq(rep.leaks, 0, "LeakSanitizer found memory the lab never freed (its report is on "
               "stderr): every malloc needs its free, every create its destroy");
  int fds = tk_fd_count();
  cr_expect(fds <= lab->fds_baseline, "this process has %d fds open after the lab stopped, %d "
            "before it started: the lab left %d socket(s) or pipe(s) open (a client never "
            "destroyed, a connection never closed)", fds, lab->fds_baseline,
            fds - lab->fds_baseline);
  long long heap = heap_in_use();
  if (heap >= 0 && lab->heap_baseline >= 0)
    cr_expect(heap - lab->heap_baseline <= TK_HEAP_SLACK_BYTES,
              "%lld bytes more are malloc'd after the lab stopped than before it started (slack "
              "%d): memory the lab allocated is never freed (a struct per request whose free is "
              "missing, a close callback that does not free)", heap - lab->heap_baseline,
              TK_HEAP_SLACK_BYTES);
}

/* ---- the variant as a process of its own ---- */

void tk_child_start(tk_child_t *c, const char *name, const char *upstream,
                    const char *const *args) {
  char *argv[24] = {(char *)name, "--port", "0", "--upstream", (char *)upstream};
  int n = 5, out[2], status;
  for (int i = 0; args[i] != NULL && n < 23; i++) argv[n++] = (char *)args[i];
  argv[n] = NULL;
  snprintf(c->err_path, sizeof c->err_path, "/tmp/tk-child-stderr-XXXXXX");
  int err = mkstemp(c->err_path);
  cr_assert(err >= 0 && pipe(out) == 0, "mkstemp/pipe: %s", strerror(errno));
  setenv("LOOPHOLES_LAB_PROCESS", "1", 1); /* before fork: the child only dup2s and execs */
  fflush(NULL);
  c->pid = fork();
  cr_assert(c->pid >= 0, "fork: %s", strerror(errno));
  if (c->pid == 0) {
    sigset_t all;
    sigemptyset(&all);
    sigprocmask(SIG_SETMASK, &all, NULL);
    prctl(PR_SET_PDEATHSIG, SIGKILL); /* never outlive the test */
    dup2(out[1], 1);
    dup2(err, 2);
    execv("/proc/self/exe", argv);
    _exit(127);
  }
  unsetenv("LOOPHOLES_LAB_PROCESS");
  close(out[1]);
  close(err);
  c->out = out[0];
  char line[256];
  size_t len = 0;
  while (len + 1 < sizeof line && !memchr(line, '\n', len)) {
    struct pollfd p = {.fd = c->out, .events = POLLIN};
    if (poll(&p, 1, 5000) <= 0) break;
    ssize_t r = read(c->out, line + len, sizeof line - 1 - len);
    if (r <= 0) break;
    len += (size_t)r;
  }
  line[len] = '\0';
  const char *colon = strrchr(line, ':');
  c->port = strstr(line, "listening on") && colon ? atoi(colon + 1) : 0;
  if (c->port <= 0) {
    kill(c->pid, SIGKILL);
    waitpid(c->pid, &status, 0);
    cr_assert_fail("the variant run as a process printed no \"listening on\" line: %s", line);
  }
}

int tk_child_wait(tk_child_t *c, int timeout_ms, int *status) {
  double end = tk_now_ms() + timeout_ms;
  do {
    if (waitpid(c->pid, status, WNOHANG) == c->pid) return 1;
    usleep(5000);
  } while (tk_now_ms() < end);
  return 0;
}

void tk_child_end(tk_child_t *c, char *err, size_t cap) {
  int status;
  if (waitpid(c->pid, &status, WNOHANG) == 0) {
    kill(c->pid, SIGKILL);
    waitpid(c->pid, &status, 0);
  }
  close(c->out);
  FILE *f = fopen(c->err_path, "r");
  size_t n = f ? fread(err, 1, cap - 1, f) : 0;
  err[n] = '\0';
  if (f) fclose(f);
  unlink(c->err_path);
}
