/* WRONG: waiting jobs start newest first: the waiting room is a stack, not a FIFO -- caught by: lab10::waiting_jobs_start_oldest_first */
/* A student's waiting room: the simplest list there is - push at the head, pop from the head.
 * Every bound and counter holds; but under a steady overload the oldest jobs wait forever while
 * the newest ones jump the queue.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "client.h"
#include "lab.h"

#define USER_CHARS "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._-"

/* One background job: on the waiting FIFO or on the in-flight list, never both. */
typedef struct job job_t;
struct job {
  job_t *prev, *next;
  lab_t *lab;
  client_transfer_t *transfer; /* while in flight: what a drain deadline cancels */
  unsigned long id;
  char user[64];
};

struct lab {
  shell_t *shell;
  client_t *client;
  lab_config_t cfg;
  unsigned long next_id;
  uint64_t started, succeeded, failed, dropped;
  job_t *running;                 /* in flight */
  job_t *wait_head, *wait_tail;   /* waiting for a slot, oldest first */
  unsigned inflight, inflight_peak, waiting, waiting_peak;
  uv_timer_t drain_timer;         /* the stop's deadline */
  int stopping, drain_expired, finished;
};

static void supervisor_pump(lab_t *lab);

/* ---- the background job ---- */

static void job_drop(lab_t *lab, job_t *job, const char *why) {
  lab->dropped++;
  fprintf(stderr, "lab10: job job-%lu (user %s) dropped: %s\n", job->id, job->user, why);
  free(job);
}

/* Who calls it: the client, on the loop, once the welcome call has ended (a cancel from the drain
 * deadline included). Every outcome is counted here, and a failure is logged with the job's id. */
static void on_job_done(client_transfer_t *t, const client_result_t *res, void *data) {
  job_t *job = data;
  lab_t *lab = job->lab;
  (void)t;
  if (job->prev) job->prev->next = job->next;
  else lab->running = job->next;
  if (job->next) job->next->prev = job->prev;
  lab->inflight--;
  if (res->cancelled) {
    job_drop(lab, job, "still running at the drain deadline");
  } else if (res->error == NULL && res->status >= 200 && res->status <= 299) {
    lab->succeeded++;
    free(job);
  } else {
    lab->failed++;
    fprintf(stderr, "lab10: job job-%lu (user %s) failed: %s (status %d)\n", job->id, job->user,
            res->error ? res->error : "upstream error", res->status);
    free(job);
  }
  supervisor_pump(lab);
}

/* Puts job in flight. A call that cannot start is a failed job, counted and logged. */
static void job_start(lab_t *lab, job_t *job) {
  char url[512];
  snprintf(url, sizeof url, "%s/welcome?id=job-%lu&user=%s", lab->cfg.upstream, job->id,
           job->user);
  client_req_t req = {.method = "POST", .url = url, .timeout_ms = lab->cfg.job_timeout_ms,
                      .done = on_job_done, .data = job};
  int rc = client_start(lab->client, &req, &job->transfer);
  if (rc != 0) {
    lab->failed++;
    fprintf(stderr, "lab10: job job-%lu (user %s) failed: client_start: %s\n", job->id,
            job->user, uv_strerror(rc));
    free(job);
    return;
  }
  job->prev = NULL;
  job->next = lab->running;
  if (lab->running) lab->running->prev = job;
  lab->running = job;
  if (++lab->inflight > lab->inflight_peak) lab->inflight_peak = lab->inflight;
}

/* ---- the supervisor ---- */

/* SOLUTION: every job is registered and bounded: in flight if a slot is free, else waiting if
 * there is room, else dropped on purpose (counted, logged). Returns 0, or -1 when dropped. */
static int supervisor_submit(lab_t *lab, job_t *job) {
  if (lab->inflight < (unsigned)lab->cfg.max_jobs) {
    job_start(lab, job);
    return 0;
  }
  if (lab->waiting >= (unsigned)lab->cfg.max_waiting) {
    job_drop(lab, job, "max-waiting jobs are already waiting");
    return -1;
  }
  job->next = lab->wait_head; /* the newest on top */
  lab->wait_head = job;
  if (lab->wait_tail == NULL) lab->wait_tail = job;
  if (++lab->waiting > lab->waiting_peak) lab->waiting_peak = lab->waiting;
  return 0;
}

static void on_drain_timer_closed(uv_handle_t *h) { free(h->data); }

/* The last job has ended during a stop: account for every job, then free everything. */
static void supervisor_finish(lab_t *lab) {
  lab->finished = 1;
  printf("{\"stopped\":1,\"started\":%llu,\"succeeded\":%llu,\"failed\":%llu,\"dropped\":%llu,"
         "\"pending\":%u}\n",
         (unsigned long long)lab->started, (unsigned long long)lab->succeeded,
         (unsigned long long)lab->failed, (unsigned long long)lab->dropped,
         lab->inflight + lab->waiting);
  fflush(stdout);
  client_destroy(lab->client); /* nothing left in it; allowed from inside its done callback */
  uv_close((uv_handle_t *)&lab->drain_timer, on_drain_timer_closed);
}

/* Starts waiting jobs while slots are free; during a stop, finishes once nothing is pending. */
static void supervisor_pump(lab_t *lab) {
  while (!lab->drain_expired && lab->wait_head != NULL &&
         lab->inflight < (unsigned)lab->cfg.max_jobs) {
    job_t *job = lab->wait_head;
    lab->wait_head = job->next;
    if (lab->wait_head == NULL) lab->wait_tail = NULL;
    lab->waiting--;
    job_start(lab, job);
  }
  if (lab->stopping && !lab->finished && lab->inflight == 0 && lab->waiting == 0)
    supervisor_finish(lab);
}

/* Who calls it: libuv, drain-ms after the stop began. What is still waiting is dropped now; what
 * is in flight is cancelled, and dropped when its done callback reports the cancel. */
static void on_drain_deadline(uv_timer_t *timer) {
  lab_t *lab = timer->data;
  lab->drain_expired = 1;
  while (lab->wait_head != NULL) {
    job_t *job = lab->wait_head;
    lab->wait_head = job->next;
    lab->waiting--;
    job_drop(lab, job, "never started before the drain deadline");
  }
  lab->wait_tail = NULL;
  for (job_t *job = lab->running; job != NULL; job = job->next) client_cancel(job->transfer);
  supervisor_pump(lab);
}

/* ---- the signup ---- */

static int user_valid(const char *user) {
  size_t n = strlen(user);
  return n >= 1 && n <= 62 && strspn(user, USER_CHARS) == n;
}

/* Called by the shell for each POST /signup, on the loop thread. */
static void handle_signup(shell_request_t *req, void *data) {
  lab_t *lab = data;
  char user[128];
  if (shell_query_str(req, "user", user, sizeof user) != 0 || !user_valid(user)) {
    shell_respondf(req, 400, "application/json",
                   "{\"error\":\"user must be 1-62 letters, digits, '.', '_' or '-'\"}\n");
    return;
  }
  job_t *job = calloc(1, sizeof *job);
  if (job == NULL) {
    shell_respondf(req, 500, "application/json", "{\"error\":\"out of memory\"}\n");
    return;
  }
  job->lab = lab;
  job->id = ++lab->next_id;
  memcpy(job->user, user, strlen(user) + 1); /* user_valid: at most 62 characters */
  lab->started++;
  unsigned long id = job->id;
  const char *welcome = supervisor_submit(lab, job) == 0 ? "scheduled" : "dropped";
  shell_respondf(req, 201, "application/json",
                 "{\"user\":\"%s\",\"job\":\"job-%lu\",\"welcome\":\"%s\"}\n", user, id, welcome);
}

/* Called by the shell while it writes /debug/stats. */
static void on_stats(shell_t *shell, void *data) {
  lab_t *lab = data;
  shell_stats_add(shell, "started", (double)lab->started);
  shell_stats_add(shell, "succeeded", (double)lab->succeeded);
  shell_stats_add(shell, "failed", (double)lab->failed);
  shell_stats_add(shell, "dropped", (double)lab->dropped);
  shell_stats_add(shell, "pending", (double)(lab->inflight + lab->waiting));
  shell_stats_add(shell, "jobs_inflight", (double)lab->inflight);
  shell_stats_add(shell, "jobs_inflight_peak", (double)lab->inflight_peak);
  shell_stats_add(shell, "jobs_waiting", (double)lab->waiting);
  shell_stats_add(shell, "jobs_waiting_peak", (double)lab->waiting_peak);
}

/* ---- lifetime ---- */

int lab_create(lab_t **out, shell_t *shell, const lab_config_t *cfg) {
  if (cfg->max_jobs < 1 || cfg->job_timeout_ms < 1) {
    fprintf(stderr, "lab10: --max-jobs and --job-timeout-ms must be >= 1\n");
    return UV_EINVAL;
  }
  lab_t *lab = calloc(1, sizeof *lab);
  if (lab == NULL) return UV_ENOMEM;
  lab->shell = shell;
  lab->cfg = *cfg;
  int rc = uv_timer_init(shell_loop(shell), &lab->drain_timer);
  if (rc != 0) {
    fprintf(stderr, "lab10: uv_timer_init: %s\n", uv_strerror(rc));
    free(lab);
    return rc;
  }
  lab->drain_timer.data = lab;
  rc = client_create(&lab->client, shell_loop(shell), NULL);
  if (rc != 0) {
    fprintf(stderr, "lab10: client_create: %s\n", uv_strerror(rc));
    uv_close((uv_handle_t *)&lab->drain_timer, on_drain_timer_closed);
    return rc;
  }
  rc = shell_route(shell, "POST", "/signup", handle_signup, lab);
  if (rc != 0) {
    fprintf(stderr, "lab10: shell_route: %s\n", uv_strerror(rc));
    client_destroy(lab->client);
    uv_close((uv_handle_t *)&lab->drain_timer, on_drain_timer_closed);
    return rc;
  }
  shell_set_stats_hook(shell, on_stats, lab);
  *out = lab;
  return 0;
}

/* The shell has drained: every signup is answered. SOLUTION: the jobs are ours to finish - let
 * them run (waiting ones start as slots free) until they end or drain-ms passes. */
void lab_destroy(lab_t *lab) {
  lab->stopping = 1;
  int rc = uv_timer_start(&lab->drain_timer, on_drain_deadline, (uint64_t)lab->cfg.drain_ms, 0);
  if (rc != 0) {
    fprintf(stderr, "lab10: uv_timer_start: %s (draining without a deadline)\n", uv_strerror(rc));
  }
  supervisor_pump(lab); /* finishes at once when nothing is pending */
}
