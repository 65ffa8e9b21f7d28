/* Lab 07, exercise: get the CPU work off the loop, and bound what waits for it.
 *
 * GET /hash?cost=C&input=S answers the digest of hash_job(S, C) (hashjob.h: C rounds of SHA-256,
 * standing for a password hash or a big serialisation); GET /health answers "ok". Right now the
 * hash runs in the handler, on the loop thread: while it runs, nothing else is served, /health
 * included, and only one core ever works. Move the job to libuv's thread pool and answer from
 * its after-work callback; and refuse (503 + Retry-After) beyond --max-jobs jobs waiting.
 *
 *   make check LAB=07    runs the suite against this file and says what it saw
 *   make hint LAB=07     one more hint each time
 *   make bench LAB=07    the plots, this variant next to the pitfall and the solution
 *   make reset LAB=07    start over (keeps a backup of your file)
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "hashjob.h"
#include "lab.h"

struct lab {
  const lab_config_t *cfg;
  unsigned jobs, jobs_peak; /* accepted and not answered (the pitfall has one at most) */
  uint64_t done, refused;
  double cpu_ms;            /* CPU time of the answered jobs, summed */
};

/* cost: a decimal integer from 1 to max_cost; input: 1 to 64 of [A-Za-z0-9_-], "loopholes" when
 * absent. Returns 0, or answers the 400 itself and returns -1. */
static int parse_hash_request(shell_request_t *req, long max_cost, long *cost, char input[66]) {
  char text[24], *end;
  size_t i, n;
  int ok = 0;

  /* Digits only: strtol alone would take " 5", "+5" and "5abc". */
  if (shell_query_str(req, "cost", text, sizeof text) == 0 && text[0] >= '0' && text[0] <= '9') {
    *cost = strtol(text, &end, 10);
    ok = *end == '\0' && *cost >= 1 && *cost <= max_cost;
  }
  if (!ok) {
    shell_respondf(req, 400, "application/json",
                   "{\"error\":\"cost: want ?cost= and an integer from 1 to %ld\"}\n", max_cost);
    return -1;
  }
  if (shell_query_str(req, "input", input, 66) != 0) strcpy(input, "loopholes");
  n = strlen(input);
  for (i = 0; i < n; i++)
    if (!((input[i] >= 'a' && input[i] <= 'z') || (input[i] >= 'A' && input[i] <= 'Z') ||
          (input[i] >= '0' && input[i] <= '9') || input[i] == '-' || input[i] == '_'))
      break;
  if (n == 0 || n > 64 || i < n) {
    shell_respondf(req, 400, "application/json",
                   "{\"error\":\"input: want 1 to 64 of [A-Za-z0-9_-]\"}\n");
    return -1;
  }
  return 0;
}

/* TODO 1: a job that waits for a pool thread needs somewhere to live meanwhile: a struct with
 * a uv_work_t, the lab, the request, the input and cost, and the hash_result_t it fills in. */

static void hash_answer(shell_request_t *req, const char *input, long cost,
                        const hash_result_t *res) {
  shell_respondf(req, 200, "application/json",
                 "{\"input\":\"%s\",\"cost\":%ld,\"digest\":\"%s\",\"cpu_ms\":%.3f}\n", input, cost,
                 res->hex, res->cpu_ms);
}

/* GET /hash?cost=C&input=S */
static void hash_handle(shell_request_t *req, void *data) {
  lab_t *lab = data;
  char input[66];
  hash_result_t res;
  long cost;

  if (parse_hash_request(req, lab->cfg->max_cost, &cost, input) != 0) return;
  /* TODO 3: once jobs queue for the pool, bound them: with cfg->max_jobs accepted and not
   * answered, answer 503 with "Retry-After: 1\r\n" (shell_respond_ex) and count it in refused. */
  lab->jobs++;
  if (lab->jobs > lab->jobs_peak) lab->jobs_peak = lab->jobs;
  /* TODO 2: T ms of CPU on the loop thread. Nothing else runs until it returns. Hand the job
   * to uv_queue_work(loop, &job->work, work_cb, after_work_cb) instead and return: work_cb runs
   * hash_job on a pool thread (touching nothing but its job), after_work_cb runs on the loop,
   * where it answers, updates the counters and frees the job. */
  hash_job(input, cost, &res);
  lab->jobs--;
  lab->done++;
  lab->cpu_ms += res.cpu_ms;
  hash_answer(req, input, cost, &res);
}

/* GET /health: nothing to compute. */
static void health_handle(shell_request_t *req, void *data) {
  (void)data;
  shell_respond(req, 200, "text/plain", "ok\n", 3);
}

/* Adds the lab's counters to /debug/stats. */
static void lab_on_stats(shell_t *shell, void *data) {
  lab_t *lab = data;

  shell_stats_add(shell, "hash_jobs", (double)lab->jobs);
  shell_stats_add(shell, "hash_jobs_peak", (double)lab->jobs_peak);
  shell_stats_add(shell, "hash_done", (double)lab->done);
  shell_stats_add(shell, "hash_refused", (double)lab->refused);
  shell_stats_add(shell, "hash_cpu_ms", lab->cpu_ms);
}

int lab_create(lab_t **out, shell_t *shell, const lab_config_t *cfg) {
  lab_t *lab;
  int rc;

  if (cfg->max_jobs < 1 || cfg->max_cost < 1) {
    fprintf(stderr, "lab07: --max-jobs and --max-cost must be at least 1\n");
    return UV_EINVAL;
  }
  lab = calloc(1, sizeof *lab);
  if (lab == NULL) return UV_ENOMEM;
  lab->cfg = cfg;
  rc = shell_route(shell, "GET", "/hash", hash_handle, lab);
  if (rc == 0) rc = shell_route(shell, "GET", "/health", health_handle, lab);
  if (rc != 0) {
    fprintf(stderr, "lab07: shell_route: %s\n", uv_strerror(rc));
    free(lab);
    return rc;
  }
  shell_set_stats_hook(shell, lab_on_stats, lab);
  *out = lab;
  return 0;
}

/* Every job ended inside its handler: nothing is left to wait for. */
void lab_destroy(lab_t *lab) { free(lab); }
