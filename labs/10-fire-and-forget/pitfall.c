/* Lab 10, pitfall: fire and forget - background work that nobody owns.
 *
 * POST /signup answers 201 at once and starts a background job: one upstream call standing for
 * "send the welcome e-mail". This variant starts the call and forgets it, the C shape of
 * asyncio.create_task() without keeping the task or awaiting it:
 *   - the outcome goes nowhere: a failed e-mail is neither counted nor logged (the job is
 *     counted as sent the moment it starts), so /debug/stats says all is well;
 *   - nothing bounds it: a burst of N signups starts N calls (and N connections) at once;
 *   - at stop, client_destroy drops whatever is still running, without a trace.
 *
 * See it (1 e-mail in 4 fails, each takes 300 ms):
 *   build/bin/upstream --port 8081 --latency-ms 300 --fail-rate 0.25 &
 *   build/bin/lab10-pitfall --port 8080 &
 *   for i in $(seq 40); do curl -s -XPOST "localhost:8080/signup?user=u$i" & done; wait
 *   curl -s localhost:8080/debug/stats   # succeeded 40, failed 0, jobs_inflight_peak 40
 *   curl -s localhost:8081/stats         # responses_5xx 10: the failures nobody heard of
 * or: make bench LAB=10
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
};

/* ---- the background job ---- */

/* Who calls it: the client, on the loop, once the welcome call has ended. PITFALL: nobody is
 * listening. A 500, a timeout or a refused connection ends here, unseen: the job is freed, and
 * that is all. */
static void on_job_done(client_transfer_t *t, const client_result_t *res, void *data) {
  (void)t;
  (void)res;
  free(data);
}

/* PITFALL: started and forgotten - no handle kept, no limit, no record of it. */
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
void lab_destroy(lab_t *lab) {
  printf("{\"stopped\":1,\"started\":%llu,\"succeeded\":%llu,\"failed\":0,\"dropped\":0,"
         "\"pending\":0}\n",
         (unsigned long long)lab->started, (unsigned long long)lab->succeeded);
  fflush(stdout);
  client_destroy(lab->client);
  free(lab);
}
