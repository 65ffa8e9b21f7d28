/* Lab 10 suite: does background work have an owner - bounded, counted, logged, drained?
 *
 * Built once per variant (build/test/lab10-pitfall, -solution, -exercise, -wrong-*). Each test
 * starts the upstream as a child process (its latency, failure rate and exact counters stand for
 * the e-mail provider), runs the variant in-process on its own loop thread, and drives POST
 * /signup over real HTTP, in bursts and in steady open-loop streams. What is asserted are
 * counters compared with the upstream's own (failures, calls, abandoned calls), peaks against
 * the configured bounds, an invariant read from one /debug/stats snapshot at a time, and the
 * lines the lab writes on stderr (failures, drops) and stdout (its account at stop). Times are
 * only used as ratios with wide margins (an answer 4x faster than the job, a stop within 10x
 * its drain deadline), so a right answer passes on a loaded 2-core machine.
 */
#include <criterion/criterion.h>
#include <fcntl.h>
#include <errno.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "labrt.h"
#include "testkit.h"

/* ---- fixtures ---- */

typedef struct env {
  tk_proc_t up;
  tk_lab_t lab;
  char signup[160];  /* the lab's /signup?user=... */
} env_t;

/* Starts the upstream with up_args, then the lab with --upstream and lab_args. */
static void env_start(env_t *e, const char *const *up_args, const char *const *lab_args) {
  const char *argv[32] = {"--upstream", NULL};
  int n = 2;
  memset(e, 0, sizeof *e);
  tk_upstream_start(&e->up, up_args);
  argv[1] = e->up.url;
  /* The test's first HTTP request sets up libcurl's one-time state (kept for good): let it
   * happen before the lab's heap baseline is taken. */
  tk_upstream_stat(&e->up, "requests_total");
  for (int i = 0; lab_args && lab_args[i] != NULL && n < 31; i++) argv[n++] = lab_args[i];
  argv[n] = NULL;
  tk_lab_start(&e->lab, &LAB_DEF, argv);
  tk_lab_url(&e->lab, "/signup?user=u", e->signup, sizeof e->signup);
}

/* Fields that must be back to 0 once every job has ended. */
static const char *const idle_fields[] = {"pending", "jobs_inflight", "jobs_waiting", NULL};

static void env_stop(env_t *e) {
  tk_lab_stop(&e->lab, idle_fields);
  tk_upstream_stop(&e->up);
}

typedef struct snap {
  double started, succeeded, failed, dropped, pending, inflight, waiting;
} snap_t;

/* One /debug/stats answer, so every field comes from the same moment. 0, or -1 when a field
 * is missing. */
static int snapshot(const env_t *e, snap_t *s) {
  char url[160];
  tk_resp_t *r = malloc(sizeof *r);
  cr_assert(r != NULL, "out of memory");
  int got = tk_get(tk_lab_url(&e->lab, "/debug/stats", url, sizeof url), 5000, r);
  s->started = tk_json_number(r->body, "started");
  s->succeeded = tk_json_number(r->body, "succeeded");
  s->failed = tk_json_number(r->body, "failed");
  s->dropped = tk_json_number(r->body, "dropped");
  s->pending = tk_json_number(r->body, "pending");
  s->inflight = tk_json_number(r->body, "jobs_inflight");
  s->waiting = tk_json_number(r->body, "jobs_waiting");
  free(r);
  if (got != 0) return -1;
  double *f = &s->started;
  for (int i = 0; i < 7; i++)
    if (isnan(f[i])) return -1;
  return 0;
}

/* Polls until no job is pending and `started` reached want (at most within_ms); 1 if it did. */
static int wait_idle(const env_t *e, double want_started, double within_ms) {
  double end = tk_now_ms() + within_ms;
  snap_t s;
  for (;;) {
    if (snapshot(e, &s) == 0 && s.pending == 0 && s.started >= want_started) return 1;
    if (tk_now_ms() >= end) return 0;
    usleep(20 * 1000);
  }
}

/* n signups at rate_per_s (open loop), each POST /signup?user=u with an empty body. */
static tk_resp_t *signups(const env_t *e, int n, double rate_per_s, long timeout_ms, int *ok) {
  tk_resp_t *r = calloc((size_t)n, sizeof *r);
  cr_assert(r != NULL, "out of memory");
  *ok = tk_stream(e->signup, "", n, rate_per_s, timeout_ms, r);
  return r;
}

static int count_status(const tk_resp_t *r, int n, int status, const char *body_part) {
  int k = 0;
  for (int i = 0; i < n; i++)
    if (r[i].status == status && (body_part == NULL || strstr(r[i].body, body_part))) k++;
  return k;
}

/* ---- capturing what the lab writes on stderr (its log) and stdout (its account at stop) ---- */

typedef struct capture {
  int fd;     /* 1 or 2 */
  int saved;  /* the original, to put back */
  int file;
  char path[64];
} capture_t;

static void capture_begin(capture_t *c, int fd) {
  c->fd = fd;
  snprintf(c->path, sizeof c->path, "/tmp/lab10-capture-XXXXXX");
  c->file = mkstemp(c->path);
  cr_assert(c->file >= 0, "mkstemp failed");
  unlink(c->path);
  fflush(fd == 1 ? stdout : stderr);
  c->saved = dup(fd);
  cr_assert(c->saved >= 0 && dup2(c->file, fd) == fd, "dup/dup2 failed");
}

/* Puts the stream back and returns what was written meanwhile (malloc'ed, NUL-terminated). A
 * copy goes to the original stream too, so a sanitizer report still reaches the suite's log. */
static char *capture_end(capture_t *c) {
  fflush(c->fd == 1 ? stdout : stderr);
  dup2(c->saved, c->fd);
  close(c->saved);
  off_t len = lseek(c->file, 0, SEEK_END);
  char *text = malloc((size_t)(len > 0 ? len : 0) + 1);
  cr_assert(text != NULL, "out of memory");
  ssize_t got = len > 0 ? pread(c->file, text, (size_t)len, 0) : 0;
  text[got > 0 ? got : 0] = '\0';
  close(c->file);
  if (got > 0 && write(c->fd, text, (size_t)got) < 0) { /* best effort */ }
  return text;
}

/* Lines of log that contain both "job-ID" (ID not followed by another digit) and word. */
static int log_lines(const char *log, unsigned long id, const char *word) {
  char key[32];
  int n = 0;
  snprintf(key, sizeof key, "job-%lu", id);
  for (const char *line = log; *line;) {
    const char *end = strchr(line, '\n');
    size_t len = end ? (size_t)(end - line) : strlen(line);
    char buf[512];
    snprintf(buf, sizeof buf, "%.*s", (int)(len < sizeof buf ? len : sizeof buf - 1), line);
    for (const char *at = strstr(buf, key); at; at = strstr(at + 1, key)) {
      char next = at[strlen(key)];
      if ((next < '0' || next > '9') && strstr(buf, word)) {
        n++;
        break;
      }
    }
    line += len + (end ? 1 : 0);
  }
  return n;
}

/* Stops the lab with stdout captured; returns the account line's text (malloc'ed, "" when
 * none), how long the stop took, and asserts a clean end. */
static char *stop_with_account(env_t *e, unsigned timeout_ms, double *stop_ms, int *stopped) {
  capture_t out;
  labrun_report_t rep;
  memset(&rep, 0, sizeof rep);
  capture_begin(&out, 1);
  double t0 = tk_now_ms();
  int rc = labrun_stop(e->lab.run, timeout_ms, &rep);
  *stop_ms = tk_now_ms() - t0;
  e->lab.run = NULL;
  char *text = capture_end(&out);
  *stopped = rc == 0;
  if (rc == 0) {
    cr_expect(rep.loop_close_rc == 0 && rep.handles_left == 0,
              "uv_loop_close() = %d with %u handle(s) open after the stop: close the drain timer "
              "and destroy the client once the last job has ended", rep.loop_close_rc,
              rep.handles_left);
    cr_expect_eq(rep.leaks, 0, "LeakSanitizer found memory never freed (report on stderr)");
  }
  char *line = strstr(text, "{\"stopped\":");
  char *account = strdup(line ? line : "");
  cr_assert(account != NULL, "out of memory");
  char *nl = strchr(account, '\n');
  if (nl) *nl = '\0';
  free(text);
  return account;
}

/* ---- the answer ---- */

Test(lab10, answers_at_once, .timeout = 30) {
  env_t e;
  tk_resp_t *r = calloc(5, sizeof *r);
  char url[160], want[64];
  cr_assert(r != NULL, "out of memory");
  env_start(&e, (const char *[]){"--latency-ms", "2000", NULL},
            (const char *[]){"--job-timeout-ms", "10000", "--drain-ms", "50", NULL});
  tk_lab_url(&e.lab, "/signup?user=alice", url, sizeof url);
  for (int i = 0; i < 5; i++) tk_post(url, "", 8000, &r[i]);
  double inflight = tk_lab_stat(&e.lab, "jobs_inflight");
  double worst = 0;
  for (int i = 0; i < 5; i++) {
    snprintf(want, sizeof want, "\"job\":\"job-%d\"", i + 1);
    cr_assert(r[i].status == 201 && strstr(r[i].body, "\"user\":\"alice\"") &&
                  strstr(r[i].body, want) && strstr(r[i].body, "\"welcome\":\"scheduled\""),
              "signup %d answered %d %s; want 201 {\"user\":\"alice\",\"job\":\"job-%d\","
              "\"welcome\":\"scheduled\"} (jobs numbered from 1 in arrival order)",
              i + 1, r[i].status, r[i].body, i + 1);
    if (r[i].total_ms > worst) worst = r[i].total_ms;
  }
  free(r);
  tk_lab_stop(&e.lab, NULL);
  tk_upstream_stop(&e.up);
  cr_assert_lt(worst, 500.0,
               "a signup took %.0f ms to answer while its welcome e-mail takes 2000 ms: the "
               "answer waited for the background job. Answer 201 at once; the job runs after",
               worst);
  cr_assert_eq(inflight, 5, "after 5 signups answered at once, jobs_inflight is %.0f, want 5: "
               "each signup starts its job in the background", inflight);
}

Test(lab10, rejects_bad_user, .timeout = 30) {
  env_t e;
  tk_resp_t *r = calloc(1, sizeof *r);
  char url[256], long_name[80];
  cr_assert(r != NULL, "out of memory");
  env_start(&e, NULL, NULL);
  const char *bad[] = {"/signup", "/signup?user=", "/signup?user=a%20b", "/signup?user=a/b", NULL};
  for (int i = 0; bad[i]; i++) {
    tk_post(tk_lab_url(&e.lab, bad[i], url, sizeof url), "", 5000, r);
    cr_assert(r->status == 400 && strstr(r->body, "\"error\"") && strstr(r->body, "user"),
              "POST %s answered %d %s; want 400 {\"error\":\"user must be ...\"} naming user",
              bad[i], r->status, r->body);
  }
  memset(long_name, 'a', 63);
  long_name[63] = '\0';
  snprintf(url, sizeof url, "%s/signup?user=%s", e.lab.url, long_name);
  tk_post(url, "", 5000, r);
  cr_assert_eq(r->status, 400, "a 63-character user answered %d %s, want 400 (1-62)", r->status,
               r->body);
  long_name[62] = '\0';
  snprintf(url, sizeof url, "%s/signup?user=%s", e.lab.url, long_name);
  tk_post(url, "", 5000, r);
  cr_assert_eq(r->status, 201, "a 62-character user answered %d %s, want 201 (1-62 is fine)",
               r->status, r->body);
  cr_assert(wait_idle(&e, 1, 3000), "the one job did not end within 3 s");
  double started = tk_lab_stat(&e.lab, "started");
  double calls = tk_upstream_stat(&e.up, "requests_total");
  free(r);
  env_stop(&e);
  cr_assert(started == 1 && calls == 1,
            "after 5 rejected signups and 1 good one: started %.0f, upstream calls %.0f; want 1 "
            "and 1 (a rejected signup starts no job)", started, calls);
}

Test(lab10, rejects_bad_options, .timeout = 30) {
  labrun_t *run = NULL;
  int rc = labrun_start(&run, &LAB_DEF, (const char *[]){"--max-jobs", "0", NULL});
  if (rc == 0) labrun_stop(run, 5000, NULL);
  cr_assert_eq(rc, UV_EINVAL, "--max-jobs 0 started the lab (labrun_start %d): a supervisor "
               "that may run no job is a usage error; lab_create returns UV_EINVAL", rc);
  rc = labrun_start(&run, &LAB_DEF, (const char *[]){"--job-timeout-ms", "0", NULL});
  if (rc == 0) labrun_stop(run, 5000, NULL);
  cr_assert_eq(rc, UV_EINVAL, "--job-timeout-ms 0 started the lab (labrun_start %d): want "
               "UV_EINVAL", rc);
  rc = labrun_start(&run, &LAB_DEF,
                    (const char *[]){"--max-jobs", "1", "--max-waiting", "0", "--drain-ms", "0",
                                     NULL});
  cr_assert_eq(rc, 0, "--max-jobs 1 --max-waiting 0 --drain-ms 0 is valid, but labrun_start "
               "returned %d", rc);
  labrun_stop(run, 5000, NULL);
}

/* ---- every outcome counted ---- */

Test(lab10, outcomes_match_upstream, .timeout = 30) {
  env_t e;
  int ok;
  env_start(&e, (const char *[]){"--latency-ms", "20", "--fail-rate", "0.25", NULL},
            (const char *[]){"--max-jobs", "8", NULL});
  /* A steady stream well under capacity (8 / 20 ms = 400/s): nothing waits long, nothing drops. */
  tk_resp_t *r = signups(&e, 40, 100, 5000, &ok);
  int created = count_status(r, 40, 201, NULL);
  cr_assert(wait_idle(&e, 40, 5000), "40 jobs of 20 ms were still pending 5 s after the stream");
  double succeeded = tk_lab_stat(&e.lab, "succeeded"), failed = tk_lab_stat(&e.lab, "failed");
  double up_ok = tk_upstream_stat(&e.up, "responses_2xx");
  double up_fail = tk_upstream_stat(&e.up, "responses_5xx");
  free(r);
  env_stop(&e);
  cr_assert_eq(created, 40, "%d of 40 signups answered 201", created);
  cr_assert(up_fail >= 1, "the upstream failed no call (--fail-rate 0.25): the test's setup");
  cr_assert(succeeded == up_ok && failed == up_fail,
            "the lab says %.0f e-mails succeeded and %.0f failed; the upstream answered %.0f "
            "with 2xx and %.0f with 5xx. Count each job's outcome in its done callback (a "
            "started job is not a sent e-mail)", succeeded, failed, up_ok, up_fail);
}

Test(lab10, failures_logged_with_id, .timeout = 30) {
  env_t e;
  capture_t err;
  int ok, missing = 0;
  char seen[256] = "";
  env_start(&e, (const char *[]){"--latency-ms", "10", "--status", "503", NULL},
            (const char *[]){"--max-jobs", "4", NULL});
  capture_begin(&err, 2);
  tk_resp_t *r = signups(&e, 10, 200, 5000, &ok);
  int idle = wait_idle(&e, 10, 5000);
  char *log = capture_end(&err);
  double failed = tk_lab_stat(&e.lab, "failed");
  for (unsigned long id = 1; id <= 10; id++) {
    if (log_lines(log, id, "failed") == 1) continue;
    missing++;
    size_t len = strlen(seen);
    snprintf(seen + len, sizeof seen - len, "%sjob-%lu", len ? ", " : "", id);
  }
  free(log);
  free(r);
  env_stop(&e);
  cr_assert(idle, "10 jobs of 10 ms were still pending 5 s later");
  cr_assert_eq(failed, 10, "every call answered 503, but the lab counts %.0f of 10 jobs failed",
               failed);
  cr_assert_eq(missing, 0,
               "%d failed job(s) without exactly one stderr line naming the job and saying "
               "\"failed\": %s. An operator must be able to find which e-mail failed",
               missing, seen);
}

Test(lab10, timeout_is_a_failure, .timeout = 30) {
  env_t e;
  int ok;
  env_start(&e, (const char *[]){"--latency-ms", "30000", NULL},
            (const char *[]){"--job-timeout-ms", "200", NULL});
  tk_resp_t *r = signups(&e, 3, 100, 5000, &ok);
  int idle = wait_idle(&e, 3, 3000);
  double failed = tk_lab_stat(&e.lab, "failed"), pending = tk_lab_stat(&e.lab, "pending");
  double abandoned = tk_upstream_stat(&e.up, "abandoned");
  free(r);
  env_stop(&e);
  cr_assert(idle && failed == 3,
            "3 jobs whose call takes 30 s, --job-timeout-ms 200: after 3 s %.0f failed, %.0f "
            "pending (upstream abandoned %.0f). A job's call needs its timeout, and running out "
            "of it is a failure", failed, pending, abandoned);
}

Test(lab10, unreachable_upstream_fails, .timeout = 30) {
  tk_lab_t lab;
  tk_resp_t *r = calloc(5, sizeof *r);
  char url[160];
  cr_assert(r != NULL, "out of memory");
  /* Port 1: nothing listens there, every connect is refused at once. */
  tk_lab_start(&lab, &LAB_DEF, (const char *[]){"--upstream", "http://127.0.0.1:1", NULL});
  tk_stream(tk_lab_url(&lab, "/signup?user=u", url, sizeof url), "", 5, 100, 5000, r);
  double end = tk_now_ms() + 3000, failed = 0, pending = 1;
  while (tk_now_ms() < end && (failed < 5 || pending > 0)) {
    failed = tk_lab_stat(&lab, "failed");
    pending = tk_lab_stat(&lab, "pending");
    usleep(20 * 1000);
  }
  double succeeded = tk_lab_stat(&lab, "succeeded");
  int created = count_status(r, 5, 201, NULL);
  free(r);
  tk_lab_stop(&lab, idle_fields);
  cr_assert_eq(created, 5, "%d of 5 signups answered 201 with the e-mail provider down: the "
               "signup itself does not depend on it", created);
  cr_assert(failed == 5 && succeeded == 0,
            "with the upstream unreachable: %.0f failed, %.0f succeeded, %.0f pending of 5 jobs; "
            "want 5 failed (a refused connection is a failure)", failed, succeeded, pending);
}

Test(lab10, one_call_per_job, .timeout = 30) {
  env_t e;
  int ok;
  env_start(&e, (const char *[]){"--latency-ms", "10", "--fail-rate", "0.5", NULL},
            (const char *[]){"--max-jobs", "4", NULL});
  tk_resp_t *r = signups(&e, 20, 100, 5000, &ok);
  int idle = wait_idle(&e, 20, 5000);
  usleep(200 * 1000); /* a retry, if any, reaches the upstream within a few ms */
  double calls = tk_upstream_stat(&e.up, "requests_total");
  double seen = tk_upstream_stat(&e.up, "ids_seen"), dup = tk_upstream_stat(&e.up, "ids_duplicate");
  free(r);
  env_stop(&e);
  cr_assert(idle, "20 jobs of 10 ms were still pending 5 s later");
  cr_assert(calls == 20 && seen == 20 && dup == 0,
            "20 jobs, half of them failing: the upstream got %.0f calls, %.0f distinct job ids, "
            "%.0f repeats; want 20, 20, 0. Each job calls once with id=job-N and is never "
            "retried (a retried e-mail may arrive twice)", calls, seen, dup);
}

/* ---- bounds, both sides ---- */

Test(lab10, inflight_bounded, .timeout = 30) {
  env_t e;
  int ok;
  env_start(&e, (const char *[]){"--latency-ms", "200", NULL},
            (const char *[]){"--max-jobs", "4", "--max-waiting", "100", NULL});
  tk_resp_t *r = signups(&e, 40, 1000, 5000, &ok); /* a 10x burst */
  double peak = tk_lab_stat(&e.lab, "jobs_inflight_peak");
  double waiting_peak = tk_lab_stat(&e.lab, "jobs_waiting_peak");
  int idle = wait_idle(&e, 40, 8000);
  double up_peak = tk_upstream_stat(&e.up, "inflight_peak");
  double succeeded = tk_lab_stat(&e.lab, "succeeded");
  free(r);
  env_stop(&e);
  cr_assert(up_peak <= 4 && peak <= 4,
            "a burst of 40 signups with --max-jobs 4: the upstream had %.0f calls in flight at "
            "once, the lab says %.0f. Background work needs a bound, or a burst becomes a storm "
            "on the e-mail provider", up_peak, peak);
  cr_assert(idle && succeeded == 40,
            "of 40 jobs (4 at a time, 200 ms each, 100 may wait; waiting peak %.0f) %.0f "
            "succeeded within 8 s: waiting jobs must start as slots free", waiting_peak, succeeded);
}

Test(lab10, waits_only_when_full, .timeout = 30) {
  env_t e;
  int ok;
  env_start(&e, (const char *[]){"--latency-ms", "1000", NULL},
            (const char *[]){"--max-jobs", "4", "--max-waiting", "10", "--job-timeout-ms",
                             "5000", NULL});
  tk_resp_t *r = signups(&e, 4, 1000, 5000, &ok);
  /* The 4 calls are read once they reached the 1 s upstream (at the latest 700 ms in). */
  double up_inflight = tk_upstream_stat_wait(&e.up, "inflight", 4, 700);
  double waiting_peak = tk_lab_stat(&e.lab, "jobs_waiting_peak");
  free(r);
  r = signups(&e, 10, 1000, 5000, &ok); /* now every slot is taken */
  double up_peak = tk_upstream_stat(&e.up, "inflight_peak");
  double waiting = tk_lab_stat(&e.lab, "jobs_waiting");
  int idle = wait_idle(&e, 14, 10000);
  free(r);
  env_stop(&e);
  cr_assert(up_inflight == 4 && waiting_peak == 0,
            "4 signups with --max-jobs 4: %.0f calls reached the upstream, %.0f jobs waited; "
            "want 4 and 0 (a job waits only while max-jobs are in flight)", up_inflight,
            waiting_peak);
  cr_assert(up_peak == 4 && waiting >= 9,
            "with 4 in flight, 10 more signups: upstream in-flight peak %.0f (want exactly 4), "
            "%.0f waiting (want 10, or 9 if one slot freed): use the slots, queue the rest",
            up_peak, waiting);
  cr_assert(idle, "14 jobs of 1 s, 4 at a time, were still pending 10 s later");
}

Test(lab10, waiting_bounded, .timeout = 30) {
  env_t e;
  capture_t err;
  int ok, unlogged = 0;
  env_start(&e, (const char *[]){"--latency-ms", "1000", NULL},
            (const char *[]){"--max-jobs", "2", "--max-waiting", "6", "--job-timeout-ms", "5000",
                             NULL});
  capture_begin(&err, 2);
  tk_resp_t *r = signups(&e, 30, 1000, 5000, &ok); /* 15x what fits */
  char *log = capture_end(&err);
  snap_t s;
  cr_assert_eq(snapshot(&e, &s), 0, "/debug/stats lacks one of the contract's fields");
  double waiting_peak = tk_lab_stat(&e.lab, "jobs_waiting_peak");
  int said_dropped = count_status(r, 30, 201, "\"welcome\":\"dropped\"");
  for (int i = 0; i < 30; i++) {
    const char *at = strstr(r[i].body, "\"job\":\"job-");
    if (r[i].status != 201 || !strstr(r[i].body, "\"welcome\":\"dropped\"") || at == NULL) continue;
    if (log_lines(log, strtoul(at + 11, NULL, 10), "dropped") < 1) unlogged++;
  }
  int idle = wait_idle(&e, 30, 10000);
  free(log);
  free(r);
  env_stop(&e);
  cr_assert(waiting_peak <= 6 && s.dropped >= 15,
            "30 signups at once, --max-jobs 2, --max-waiting 6: waiting peak %.0f (want <= 6), "
            "%.0f dropped (want about 22). Bound the waiting room too, and drop on purpose "
            "when it is full", waiting_peak, s.dropped);
  cr_assert(said_dropped == (int)s.dropped && unlogged == 0,
            "%.0f jobs counted dropped, %d signups answered \"welcome\":\"dropped\", %d dropped "
            "jobs have no stderr line naming them and saying \"dropped\": a drop is told to "
            "the caller, counted and logged", s.dropped, said_dropped, unlogged);
  cr_assert(idle, "the jobs that were kept did not end within 10 s");
}

Test(lab10, waiting_room_used, .timeout = 30) {
  env_t e;
  int ok;
  env_start(&e, (const char *[]){"--latency-ms", "1000", NULL},
            (const char *[]){"--max-jobs", "2", "--max-waiting", "6", "--job-timeout-ms", "5000",
                             NULL});
  tk_resp_t *r = signups(&e, 8, 1000, 5000, &ok); /* exactly what fits */
  double dropped = tk_lab_stat(&e.lab, "dropped");
  double waiting_peak = tk_lab_stat(&e.lab, "jobs_waiting_peak");
  int said_dropped = count_status(r, 8, 201, "\"welcome\":\"dropped\"");
  int idle = wait_idle(&e, 8, 10000);
  double succeeded = tk_lab_stat(&e.lab, "succeeded");
  free(r);
  env_stop(&e);
  cr_assert(dropped == 0 && said_dropped == 0 && waiting_peak == 6,
            "8 signups at once with --max-jobs 2 --max-waiting 6 (exactly what fits): %.0f "
            "dropped, %d told \"dropped\", waiting peak %.0f; want 0, 0, 6. Drop only when "
            "max-waiting jobs are already waiting", dropped, said_dropped, waiting_peak);
  cr_assert(idle && succeeded == 8, "of 8 kept jobs %.0f succeeded within 10 s", succeeded);
}

Test(lab10, waiting_jobs_start_oldest_first, .timeout = 30) {
  env_t e;
  capture_t err;
  int ok;
  char order[128] = "";
  /* One slot, every e-mail fails (so each job's end is a stderr line, in the order they ran). */
  env_start(&e, (const char *[]){"--latency-ms", "300", "--status", "503", NULL},
            (const char *[]){"--max-jobs", "1", "--max-waiting", "10", NULL});
  capture_begin(&err, 2);
  tk_resp_t *r = signups(&e, 6, 1000, 5000, &ok); /* all 6 in while job 1 runs */
  int idle = wait_idle(&e, 6, 8000);
  char *log = capture_end(&err);
  int in_order = 1;
  unsigned long expect = 1;
  for (const char *at = strstr(log, "job-"); at; at = strstr(at + 4, "job-")) {
    unsigned long id = strtoul(at + 4, NULL, 10);
    size_t len = strlen(order);
    snprintf(order + len, sizeof order - len, "%s%lu", len ? " " : "", id);
    if (id != expect) in_order = 0;
    expect = id + 1;
  }
  free(log);
  free(r);
  env_stop(&e);
  cr_assert(idle, "6 jobs of 300 ms, one at a time, were still pending 8 s later");
  cr_assert(in_order && expect == 7,
            "with --max-jobs 1 the jobs ended in the order %s; want 1 2 3 4 5 6: waiting jobs "
            "start oldest first (a FIFO, not a stack)", order[0] ? order : "(no log lines)");
}

Test(lab10, nothing_unaccounted, .timeout = 30) {
  env_t e;
  int samples = 0, bad = 0, kinds = 0;
  char first_bad[256] = "";
  snap_t s, last;
  tk_resp_t *r = calloc(80, sizeof *r);
  cr_assert(r != NULL, "out of memory");
  env_start(&e, (const char *[]){"--latency-ms", "40", "--jitter-ms", "80", "--fail-rate", "0.3",
                                 NULL},
            (const char *[]){"--max-jobs", "3", "--max-waiting", "10", NULL});
  tk_stream_t *st = tk_stream_start(e.signup, "", 80, 200, 5000, r);
  cr_assert(st != NULL, "could not start the stream");
  memset(&last, 0, sizeof last);
  double end = tk_now_ms() + 10000;
  do { /* sample while jobs succeed, fail, wait and drop */
    if (snapshot(&e, &s) != 0) continue;
    samples++;
    int holds = s.started == s.succeeded + s.failed + s.pending + s.dropped &&
                s.pending == s.inflight + s.waiting;
    if (!holds && bad++ == 0)
      snprintf(first_bad, sizeof first_bad,
               "started %.0f, succeeded %.0f, failed %.0f, pending %.0f (in flight %.0f + "
               "waiting %.0f), dropped %.0f", s.started, s.succeeded, s.failed, s.pending,
               s.inflight, s.waiting, s.dropped);
    last = s;
    usleep(5 * 1000);
  } while (tk_now_ms() < end && !(last.started >= 80 && last.pending == 0));
  tk_stream_wait(st);
  double up_ok = tk_upstream_stat(&e.up, "responses_2xx");
  double up_fail = tk_upstream_stat(&e.up, "responses_5xx");
  free(r);
  env_stop(&e);
  kinds = (last.succeeded > 0) + (last.failed > 0) + (last.dropped > 0);
  cr_assert(kinds == 3, "the stream should have made jobs succeed, fail and drop: succeeded "
            "%.0f, failed %.0f, dropped %.0f (started %.0f)", last.succeeded, last.failed,
            last.dropped, last.started);
  cr_assert_eq(bad, 0,
               "%d of %d /debug/stats samples broke started = succeeded + failed + pending + "
               "dropped (or pending = jobs_inflight + jobs_waiting); the first: %s. Every job "
               "must be somewhere: in flight, waiting, or ended with a counted outcome",
               bad, samples, first_bad);
  cr_assert(last.succeeded == up_ok && last.failed == up_fail,
            "at the end the lab counts %.0f succeeded / %.0f failed, the upstream answered %.0f "
            "2xx / %.0f 5xx", last.succeeded, last.failed, up_ok, up_fail);
}

/* ---- the stop ---- */

Test(lab10, stop_drains_pending, .timeout = 30) {
  env_t e;
  int ok, stopped;
  double stop_ms;
  env_start(&e, (const char *[]){"--latency-ms", "200", NULL},
            (const char *[]){"--max-jobs", "4", "--max-waiting", "100", "--drain-ms", "8000",
                             NULL});
  tk_resp_t *r = signups(&e, 24, 1000, 5000, &ok);
  int created = count_status(r, 24, 201, "\"welcome\":\"scheduled\"");
  double pending = tk_lab_stat(&e.lab, "pending");
  /* Stop mid-burst: most of the 24 jobs (6 waves of 200 ms) are still pending. */
  char *account = stop_with_account(&e, 10000, &stop_ms, &stopped);
  double abandoned = tk_upstream_stat(&e.up, "abandoned");
  double up_ok = tk_upstream_stat(&e.up, "responses_2xx");
  tk_upstream_stop(&e.up);
  free(r);
  cr_assert(stopped, "the lab did not stop within 10 s (24 jobs of 200 ms, 4 at a time, need "
            "about 1.2 s; --drain-ms 8000)");
  cr_assert_eq(created, 24, "%d of 24 signups answered 201 scheduled", created);
  cr_assert(abandoned == 0 && up_ok == 24,
            "stopped mid-burst (the lab said %.0f jobs pending): the upstream then saw %.0f "
            "calls abandoned and answered %.0f of 24; the lab's account: %s. Jobs pending at a "
            "stop were lost - "
            "drain them (let them finish, start the waiting ones) before destroying the client",
            pending, abandoned, up_ok, account[0] ? account : "(no {\"stopped\":...} line)");
  cr_assert(tk_json_number(account, "started") == 24 &&
                tk_json_number(account, "succeeded") == 24 &&
                tk_json_number(account, "dropped") == 0 && tk_json_number(account, "failed") == 0,
            "the account at stop is \"%s\"; want {\"stopped\":1,\"started\":24,\"succeeded\":24,"
            "\"failed\":0,\"dropped\":0,\"pending\":0} on stdout", account);
  free(account);
}

Test(lab10, drain_has_deadline, .timeout = 30) {
  env_t e;
  capture_t err;
  int ok, stopped, unlogged = 0;
  double stop_ms;
  env_start(&e, (const char *[]){"--latency-ms", "20000", NULL},
            (const char *[]){"--max-jobs", "2", "--max-waiting", "10", "--job-timeout-ms",
                             "60000", "--drain-ms", "300", NULL});
  tk_resp_t *r = signups(&e, 6, 1000, 5000, &ok); /* 2 in flight for 20 s, 4 waiting */
  usleep(100 * 1000);
  capture_begin(&err, 2);
  char *account = stop_with_account(&e, 6000, &stop_ms, &stopped);
  char *log = capture_end(&err);
  for (unsigned long id = 1; id <= 6; id++) unlogged += log_lines(log, id, "dropped") != 1;
  double calls = tk_upstream_stat(&e.up, "requests_total");
  double abandoned = tk_upstream_stat(&e.up, "abandoned");
  tk_upstream_stop(&e.up);
  free(log);
  free(r);
  cr_assert(stopped && stop_ms < 3000,
            "with --drain-ms 300 and jobs that take 20 s, the stop took %s%.0f ms: the drain "
            "needs a deadline, after which pending jobs are dropped (and said so)",
            stopped ? "" : "more than ", stop_ms);
  cr_assert_geq(stop_ms, 250, "the stop took %.0f ms, less than --drain-ms 300: pending jobs "
                "get drain-ms to finish before they are dropped", stop_ms);
  cr_assert(tk_json_number(account, "started") == 6 && tk_json_number(account, "dropped") == 6 &&
                tk_json_number(account, "pending") == 0,
            "the account at stop is \"%s\"; want started 6, dropped 6, pending 0 (every job "
            "that did not end is reported dropped)", account[0] ? account : "(none on stdout)");
  cr_assert_eq(unlogged, 0, "%d of the 6 dropped jobs have no stderr line naming them and "
               "saying \"dropped\"", unlogged);
  cr_assert(calls == 2 && abandoned == 2,
            "the upstream saw %.0f calls and %.0f abandoned; want 2 and 2: the 2 in flight are "
            "cancelled at the deadline, the 4 waiting never start", calls, abandoned);
  free(account);
}

/* ---- the variant as a process: real signals, a real exit ---- */

TK_LAB_PROCESS(&LAB_DEF)

/* A second SIGTERM while the stop drains a job (after every signup was answered, so the shell
 * has closed already) gives up on it: the process exits at once, not after the 8 s call or the
 * 20 s drain, by itself with an error status, and the runtime says so on stderr. */
Test(lab10, second_sigterm_exits_at_once, .timeout = 40) {
  tk_proc_t up;
  tk_child_t c;
  tk_resp_t *r = malloc(sizeof *r);
  char url[128], err[8192];
  int status = 0;
  cr_assert(r != NULL, "out of memory");
  tk_upstream_start(&up, (const char *[]){"--latency-ms", "8000", NULL});
  tk_child_start(&c, "lab10", up.url,
              (const char *[]){"--job-timeout-ms", "30000", "--drain-ms", "20000", NULL});
  snprintf(url, sizeof url, "http://127.0.0.1:%d/signup?user=u", c.port);
  cr_assert_eq(tk_post(url, "", 5000, r), 0, "POST /signup");
  cr_assert_eq(r->status, 201, "POST /signup answered %d", r->status);
  free(r);
  tk_upstream_stat_wait(&up, "requests_total", 1, 4000);
  kill(c.pid, SIGTERM);
  int early = tk_child_wait(&c, 500, &status);
  double t0 = tk_now_ms();
  if (!early) kill(c.pid, SIGTERM);
  int exited = !early && tk_child_wait(&c, 3000, &status);
  double took = tk_now_ms() - t0;
  tk_child_end(&c, err, sizeof err);
  tk_upstream_stop(&up);
  cr_assert(!early, "the process exited within 500 ms of the first SIGTERM with an 8 s job in "
            "flight: it did not drain it (stderr: %s)", err);
  cr_assert(exited, "a second SIGTERM during the drain did not end the process within 3 s (the "
            "job takes 8 s, the drain 20 s): it must force the exit");
  cr_assert(WIFEXITED(status) && WEXITSTATUS(status) != 0, "after a second SIGTERM the process "
            "must exit by itself with an error status (it gave up on work), not %s %d",
            WIFSIGNALED(status) ? "be killed by signal" : "exit with", WIFSIGNALED(status) ?
            WTERMSIG(status) : WEXITSTATUS(status));
  cr_assert(strstr(err, "without draining") != NULL, "the forced exit must say so on stderr "
            "(\"... again: exiting without draining\"); stderr was: %s", err);
  cr_assert(took < 2000, "the forced exit took %.0f ms", took);
}
