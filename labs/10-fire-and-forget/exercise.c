/* Lab 10, exercise: give the background work an owner.
 *
 * POST /signup answers 201 at once and starts a background job: one upstream call standing for
 * "send the welcome e-mail". Right now the job is started and forgotten: its failures are never
 * counted or logged (it counts as sent when it starts), a burst starts unbounded work, and at
 * stop whatever is still running is dropped without a trace. Keep the 201 at once; make a small
 * supervisor own the jobs: registered, bounded (max-jobs in flight, max-waiting waiting, then
 * dropped on purpose), every outcome counted, failures logged with the job's id, drained with a
 * deadline (drain-ms) at stop, and one account line on stdout at the end. lab.h has every rule.
 *
 *   make check LAB=10    runs the suite against this file and says what it saw
 *   make hint LAB=10     one more hint each time
 *   make bench LAB=10    the plots, this variant next to the pitfall and the solution
 *   make reset LAB=10    start over (keeps a backup of your file)
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "client.h"
#include "lab.h"

#define USER_CHARS "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._-"

/* One background job: what its call needs, freed when the call ends. */
typedef struct job job_t;
struct job {
  lab_t *lab;
  unsigned long id;
  char user[64];
};

struct lab {
  shell_t *shell;
  client_t *client;
  lab_config_t cfg;
  unsigned long next_id;
  uint64_t started, succeeded;
  /* TODO 1: the supervisor's state: the jobs in flight (a list, to cancel them at the drain
   * deadline), the jobs waiting for a slot (a FIFO), their counts and peaks, the other outcome
   * counters (failed, dropped), a uv_timer_t for the drain deadline and a flag for "stopping". */
};

/* ---- the background job ---- */

/* Who calls it: the client, on the loop, once the welcome call has ended. PITFALL: nobody is
 * listening. A 500, a timeout or a refused connection ends here, unseen: the job is freed, and
 * that is all.
 * TODO 2: count the job's outcome here: 2xx = succeeded; anything else = failed, with one stderr
 * line naming "job-N" and "failed"; res->cancelled (your drain deadline) = dropped, logged too.
 * Then free the job and start the next waiting one; during a stop, finish once nothing is
 * pending. */
static void on_job_done(client_transfer_t *t, const client_result_t *res, void *data) {
  (void)t;
  (void)res;
  free(data);
}

/* PITFALL: started and forgotten - no handle kept, no limit, no record of it.
 * TODO 3: keep the client_transfer_t (client_start's last argument) in the job, and the job on a
 * list, so the drain deadline can client_cancel() it; a call that cannot start is a failed job. */
static void job_start(lab_t *lab, job_t *job) {
  char url[512];
  snprintf(url, sizeof url, "%s/welcome?id=job-%lu&user=%s", lab->cfg.upstream, job->id,
           job->user);
  client_req_t req = {.method = "POST", .url = url, .timeout_ms = lab->cfg.job_timeout_ms,
                      .done = on_job_done, .data = job};
  int rc = client_start(lab->client, &req, NULL);
  if (rc != 0) {
    fprintf(stderr, "lab10: client_start: %s\n", uv_strerror(rc));
    free(job);
  }
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
  /* TODO 4: hand the job to the supervisor instead: start it if fewer than max-jobs are in
   * flight, else queue it if fewer than max-waiting wait, else drop it (count, log, and answer
   * "welcome":"dropped"). The signup still answers 201 at once. */
  job_start(lab, job);
  lab->succeeded++; /* PITFALL: counted as sent the moment it starts */
  shell_respondf(req, 201, "application/json",
                 "{\"user\":\"%s\",\"job\":\"job-%lu\",\"welcome\":\"scheduled\"}\n", user, id);
}

/* Called by the shell while it writes /debug/stats. */
static void on_stats(shell_t *shell, void *data) {
  lab_t *lab = data;
  client_stats_t cs;
  client_get_stats(lab->client, &cs);
  shell_stats_add(shell, "started", (double)lab->started);
  shell_stats_add(shell, "succeeded", (double)lab->succeeded);
  /* TODO 5: report the real counts; at every moment
   * started = succeeded + failed + pending + dropped, pending = in flight + waiting. */
  shell_stats_add(shell, "failed", 0);  /* PITFALL: nobody counts them */
  shell_stats_add(shell, "dropped", 0);
  shell_stats_add(shell, "pending", 0); /* PITFALL: nobody knows */
  shell_stats_add(shell, "jobs_inflight", (double)cs.inflight);
  shell_stats_add(shell, "jobs_inflight_peak", (double)cs.peak_inflight);
  shell_stats_add(shell, "jobs_waiting", 0);
  shell_stats_add(shell, "jobs_waiting_peak", 0);
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
  int rc = client_create(&lab->client, shell_loop(shell), NULL);
  if (rc != 0) {
    fprintf(stderr, "lab10: client_create: %s\n", uv_strerror(rc));
    free(lab);
    return rc;
  }
  rc = shell_route(shell, "POST", "/signup", handle_signup, lab);
  if (rc != 0) {
    fprintf(stderr, "lab10: shell_route: %s\n", uv_strerror(rc));
    client_destroy(lab->client);
    free(lab);
    return rc;
  }
  shell_set_stats_hook(shell, on_stats, lab);
  *out = lab;
  return 0;
}

/* The shell has drained: every signup is answered. PITFALL: the jobs still running are not the
 * shell's business, and not ours either - client_destroy drops them (their done callbacks never
 * run, so even their memory is never freed), and the report says they were all sent. */
/* TODO 6: drain instead: set stopping, start the drain timer (drain-ms) and keep starting waiting
 * jobs as slots free. At the deadline drop the waiting ones and client_cancel() the ones in
 * flight (their done callback reports the cancel on a later loop turn). When nothing is pending,
 * print the account line with the real counts, destroy the client, close the timer, free. */
void lab_destroy(lab_t *lab) {
  printf("{\"stopped\":1,\"started\":%llu,\"succeeded\":%llu,\"failed\":0,\"dropped\":0,"
         "\"pending\":0}\n",
         (unsigned long long)lab->started, (unsigned long long)lab->succeeded);
  fflush(stdout);
  client_destroy(lab->client);
  free(lab);
}
