/* testkit.c - see testkit.h. */
#include "testkit.h"

#include <criterion/criterion.h>
#include <curl/curl.h>
#include <dirent.h>
#include <errno.h>
#include <libgen.h>
#include <limits.h>
#include <math.h>
#include <poll.h>
#include <signal.h>
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
  char path[PATH_MAX];
  const char *argv[64];
  int pipefd[2], argc = 0;
  pid_t parent = getpid();

  memset(p, 0, sizeof *p);
  p->out_fd = -1;
  snprintf(path, sizeof path, "%s/%s", tk_bin_dir(), tool);
  if (access(path, X_OK) != 0) {
    fprintf(stderr, "testkit: %s is not built (run make)\n", path);
    return -1;
  }
  argv[argc++] = path;
  argv[argc++] = "--port";
  argv[argc++] = "0";
  for (int i = 0; args && args[i] && argc < 62; i++) argv[argc++] = args[i];
  argv[argc] = NULL;
  if (pipe(pipefd) != 0) return -1;
  pid_t pid = fork();
  if (pid < 0) return -1;
  if (pid == 0) {
    prctl(PR_SET_PDEATHSIG, SIGTERM);
    if (getppid() != parent) _exit(1);
    dup2(pipefd[1], STDOUT_FILENO);
    close(pipefd[0]);
    close(pipefd[1]);
    execv(path, (char *const *)argv);
    _exit(127);
  }
  close(pipefd[1]);
  p->pid = pid;
  p->out_fd = pipefd[0];

  char line[256];
  size_t len = 0;
  double deadline = tk_now_ms() + 5000;
  while (tk_now_ms() < deadline && len < sizeof line - 1) {
    struct pollfd pfd = {.fd = p->out_fd, .events = POLLIN};
    if (poll(&pfd, 1, 100) <= 0) continue;
    ssize_t n = read(p->out_fd, line + len, sizeof line - 1 - len);
    if (n <= 0) break;
    len += (size_t)n;
    line[len] = '\0';
    char *at = strstr(line, "listening on ");
    if (at && strchr(at, '\n')) {
      char *colon = strrchr(at, ':');
      p->port = colon ? atoi(colon + 1) : 0;
      snprintf(p->url, sizeof p->url, "http://127.0.0.1:%d", p->port);
      if (p->port > 0) return 0;
    }
  }
  fprintf(stderr, "testkit: %s did not say \"listening on\" within 5 s\n", path);
  tk_stop(p);
  return -1;
}

int tk_stop(tk_proc_t *p) {
  int status = 0;
  if (p->pid <= 0) return -1;
  kill(p->pid, SIGTERM);
  for (int i = 0; i < 300; i++) {
    pid_t r = waitpid(p->pid, &status, WNOHANG);
    if (r == p->pid) break;
    if (i == 299) {
      kill(p->pid, SIGKILL);
      waitpid(p->pid, &status, 0);
    }
    usleep(10000);
  }
  if (p->out_fd >= 0) close(p->out_fd);
  p->pid = 0;
  p->out_fd = -1;
  return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
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
  return n;
}

static CURL *easy_for(const char *url, long timeout_ms, tk_resp_t *out) {
  static int inited;
  if (!inited) {
    curl_global_init(CURL_GLOBAL_DEFAULT);
    inited = 1;
  }
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

/* ---------------------------------------------------------------- stats */

double tk_json_number(const char *json, const char *field) {
  char key[128];
  snprintf(key, sizeof key, "\"%s\":", field);
  const char *at = json ? strstr(json, key) : NULL;
  if (at == NULL) return NAN;
  char *end;
  double v = strtod(at + strlen(key), &end);
  return end == at + strlen(key) ? NAN : v;
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
