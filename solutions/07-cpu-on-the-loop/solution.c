/* Lab 07, solution: the CPU work on libuv's thread pool, with a bound on queued jobs.
 *
 * The pitfall in one line: a hash computed in the handler holds the loop for its whole CPU time,
 * so every other request - /health included - waits, and the service uses one core at most.
 * What it does: GET /hash?cost=C&input=S answers the digest of hash_job(S, C) (hashjob.h: C rounds
 * of SHA-256, standing for a password hash or a big serialisation); GET /health answers "ok".
 * The handler hands the job to uv_queue_work() and returns: a pool thread computes it, and the
 * after-work callback answers, back on the loop. The loop stays free, and up to min(cores, pool)
 * jobs run at once (UV_THREADPOOL_SIZE, 4 by default). That does not make a hash faster: CPU
 * throughput stays <= cores / T, whatever the design. So the queue in front of the pool is
 * bounded: beyond --max-jobs jobs accepted and unanswered, a request gets 503 + Retry-After at
 * once instead of a place at the back of a queue that only grows.
 * See it:  build/bin/lab07-solution --port 8080 &
 *          build/bin/loadgen 'http://127.0.0.1:8080/hash?cost=35000' -r 100 -c 20 -d 3 &
 *          curl -s -w '%{time_total}\n' http://127.0.0.1:8080/health    (answers at once)
 *          or make bench LAB=07.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "hashjob.h"
#include "lab.h"

struct lab {
  const lab_config_t *cfg;
  unsigned jobs, jobs_peak; /* accepted and not answered: queued for the pool or running */
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

/* One accepted /hash: computed on a pool thread, answered on the loop. */
typedef struct hash_job_req {
  uv_work_t work;
  lab_t *lab;
  shell_request_t *req;
  char input[66];
  long cost;
  hash_result_t res;
} hash_job_req_t;

static void hash_answer(shell_request_t *req, const char *input, long cost,
                        const hash_result_t *res) {
  shell_respondf(req, 200, "application/json",
                 "{\"input\":\"%s\",\"cost\":%ld,\"digest\":\"%s\",\"cpu_ms\":%.3f}\n", input, cost,
                 res->hex, res->cpu_ms);
}

/* Who calls it: a libuv pool thread. It may take its time; it touches only its own job. */
static void hash_work(uv_work_t *work) {
  hash_job_req_t *job = work->data;
  hash_job(job->input, job->cost, &job->res);
}

/* Who calls it: libuv, on the loop, once hash_work has returned (status 0). */
static void hash_after_work(uv_work_t *work, int status) {
  hash_job_req_t *job = work->data;
  lab_t *lab = job->lab;

  lab->jobs--;
  if (status != 0) {
    shell_respondf(job->req, 500, "application/json", "{\"error\":\"job: %s\"}\n",
                   uv_strerror(status));
  } else {
    lab->done++;
    lab->cpu_ms += job->res.cpu_ms;
    hash_answer(job->req, job->input, job->cost, &job->res);
  }
  free(job);
}

/* GET /hash?cost=C&input=S */
static void hash_handle(shell_request_t *req, void *data) {
  lab_t *lab = data;
  hash_job_req_t *job;
  char input[66];
  long cost;
  int rc;

  if (parse_hash_request(req, lab->cfg->max_cost, &cost, input) != 0) return;
  /* SOLUTION: the pool can only go as fast as the cores; beyond max_jobs, say "not now". */
  if (lab->jobs >= (unsigned long)lab->cfg->max_jobs) {
    char busy[96];
    int n = snprintf(busy, sizeof busy, "{\"error\":\"busy: %u jobs (--max-jobs)\"}\n", lab->jobs);
    lab->refused++;
    shell_respond_ex(req, 503, "Retry-After: 1\r\n", "application/json", busy, (size_t)n);
    return;
  }
  job = calloc(1, sizeof *job);
  if (job == NULL) {
    shell_respondf(req, 500, "application/json", "{\"error\":\"out of memory\"}\n");
    return;
  }
  job->lab = lab;
  job->req = req;
  job->cost = cost;
  memcpy(job->input, input, sizeof job->input);
  job->work.data = job;
  /* SOLUTION: the CPU work goes to a pool thread; hash_after_work answers on the loop. */
  rc = uv_queue_work(shell_request_loop(req), &job->work, hash_work, hash_after_work);
  if (rc != 0) {
    fprintf(stderr, "lab07: uv_queue_work: %s\n", uv_strerror(rc));
    shell_respondf(req, 500, "application/json", "{\"error\":\"uv_queue_work: %s\"}\n",
                   uv_strerror(rc));
    free(job);
    return;
  }
  lab->jobs++;
  if (lab->jobs > lab->jobs_peak) lab->jobs_peak = lab->jobs;
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

/* The shell has drained: every accepted job was answered, so no pool thread holds a job. */
void lab_destroy(lab_t *lab) { free(lab); }
