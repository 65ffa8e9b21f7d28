/* Lab 07, another right answer: the CPU work on a pool of the lab's own threads, not libuv's.
 *
 * The pitfall in one line: a hash computed in the handler holds the loop for its whole CPU time,
 * so every other request - /health included - waits, and the service uses one core at most.
 * solution.c hands each job to uv_queue_work. That pool is the process's only one: every uv_fs_*
 * and uv_getaddrinfo waits behind the hashes in it. A service whose main work is CPU work gives
 * it threads of its own: here lab_create starts them (uv_thread_create), they take accepted jobs
 * from a FIFO under a mutex, and a uv_async_t tells the loop that finished ones are waiting to
 * be answered. Owning the threads also means setting them up once: each lowers its own CPU
 * priority at start, so the loop thread wins a core whenever it has something to do. As many
 * threads as libuv's pool would have (UV_THREADPOOL_SIZE, 4 when unset), and the same bound:
 * beyond --max-jobs accepted and unanswered, 503 + Retry-After at once.
 * See it:  build/bin/lab07-own_pool --port 8080 &
 *          build/bin/loadgen 'http://127.0.0.1:8080/hash?cost=35000' -r 50 -c 20 -d 3 &
 *          curl -s -w '%{time_total}\n' -o /dev/null http://127.0.0.1:8080/health
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>

#include "hashjob.h"
#include "lab.h"

#define MAX_THREADS 128 /* libuv's own cap on UV_THREADPOOL_SIZE is 1024; 128 is plenty here */
#define WORKER_NICE 10  /* the workers' nice value (the loop's is 0): see worker_main */

/* One accepted /hash, from the handler to a worker and back. */
typedef struct job {
  struct job *next;
  shell_request_t *req;
  long cost;
  char input[66];
  hash_result_t res;
} job_t;

typedef struct job_list {
  job_t *head, *tail;
} job_list_t;

struct lab {
  const lab_config_t *cfg;
  uv_mutex_t lock;    /* guards todo, done and stopping: the workers share them with the loop */
  uv_cond_t has_work; /* signalled when a job is added to todo, broadcast when stopping */
  job_list_t todo;    /* accepted, waiting for a worker */
  job_list_t done;    /* computed, waiting for the loop to answer */
  int stopping;
  uv_async_t done_async; /* a worker's "done is not empty", on the loop */
  uv_thread_t threads[MAX_THREADS];
  int n_threads;
  unsigned jobs, jobs_peak; /* accepted and not answered: waiting, running or computed */
  uint64_t done_count, refused;
  double cpu_ms; /* CPU time of the answered jobs, summed */
};

static void list_push(job_list_t *l, job_t *job) {
  job->next = NULL;
  if (l->tail) l->tail->next = job;
  else l->head = job;
  l->tail = job;
}

static job_t *list_take_all(job_list_t *l) {
  job_t *all = l->head;
  l->head = l->tail = NULL;
  return all;
}

/* A decimal integer from lo to hi, digits only (strtol alone takes " 5", "+5" and "5abc"). */
static int parse_count(const char *text, long lo, long hi, long *out) {
  char *end;
  if (text[0] < '0' || text[0] > '9') return -1;
  *out = strtol(text, &end, 10);
  return *end == '\0' && *out >= lo && *out <= hi ? 0 : -1;
}

/* Who runs it: each worker thread, from lab_create until lab_destroy says stop. */
static void worker_main(void *arg) {
  lab_t *lab = arg;
  job_t *job;

  /* On Linux the nice value belongs to the thread, and who = 0 is the calling thread: only this
   * worker drops to nice 10, the loop stays at 0. The worker still gets every core nobody else
   * wants; but when the loop wakes up to answer a /health, the scheduler gives it a core at
   * once instead of sharing it with the hashes (4 workers on 2 cores would otherwise make the
   * loop queue for its turn). Failing is not fatal: the jobs run at normal priority. */
  if (setpriority(PRIO_PROCESS, 0, WORKER_NICE) != 0) perror("lab07: setpriority");
  for (;;) {
    uv_mutex_lock(&lab->lock);
    while (lab->todo.head == NULL && !lab->stopping) uv_cond_wait(&lab->has_work, &lab->lock);
    job = lab->todo.head;
    if (job == NULL) { /* stopping, and nothing left to compute */
      uv_mutex_unlock(&lab->lock);
      return;
    }
    lab->todo.head = job->next;
    if (lab->todo.head == NULL) lab->todo.tail = NULL;
    uv_mutex_unlock(&lab->lock);

    hash_job(job->input, job->cost, &job->res); /* the CPU work, off the loop, no lock held */

    uv_mutex_lock(&lab->lock);
    list_push(&lab->done, job);
    uv_mutex_unlock(&lab->lock);
    uv_async_send(&lab->done_async); /* several sends may become one callback: it takes all */
  }
}

/* Who calls it: libuv, on the loop, after one or more uv_async_send. Answers every computed job. */
static void on_jobs_done(uv_async_t *async) {
  lab_t *lab = async->data;
  job_t *job, *next;

  uv_mutex_lock(&lab->lock);
  job = list_take_all(&lab->done);
  uv_mutex_unlock(&lab->lock);
  for (; job != NULL; job = next) {
    next = job->next;
    lab->jobs--;
    lab->done_count++;
    lab->cpu_ms += job->res.cpu_ms;
    shell_respondf(job->req, 200, "application/json",
                   "{\"input\":\"%s\",\"cost\":%ld,\"digest\":\"%s\",\"cpu_ms\":%.3f}\n",
                   job->input, job->cost, job->res.hex, job->res.cpu_ms);
    free(job);
  }
}

/* GET /hash?cost=C&input=S */
static void hash_handle(shell_request_t *req, void *data) {
  lab_t *lab = data;
  char text[24], input[66];
  long cost;
  size_t n;
  job_t *job;

  if (shell_query_str(req, "cost", text, sizeof text) != 0 ||
      parse_count(text, 1, lab->cfg->max_cost, &cost) != 0) {
    shell_respondf(req, 400, "application/json",
                   "{\"error\":\"cost: want ?cost= and an integer from 1 to %ld\"}\n",
                   lab->cfg->max_cost);
    return;
  }
  /* A 66-byte copy sees a 65th character: a longer input is refused, not cut short. */
  if (shell_query_str(req, "input", input, sizeof input) != 0) strcpy(input, "loopholes");
  n = strlen(input);
  if (n == 0 || n > 64 ||
      strspn(input, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_") != n) {
    shell_respondf(req, 400, "application/json",
                   "{\"error\":\"input: want 1 to 64 of [A-Za-z0-9_-]\"}\n");
    return;
  }
  if (lab->jobs >= (unsigned long)lab->cfg->max_jobs) {
    char busy[96];
    int len = snprintf(busy, sizeof busy, "{\"error\":\"busy: %u jobs (--max-jobs)\"}\n", lab->jobs);
    lab->refused++;
    shell_respond_ex(req, 503, "Retry-After: 1\r\n", "application/json", busy, (size_t)len);
    return;
  }
  job = calloc(1, sizeof *job);
  if (job == NULL) {
    shell_respondf(req, 500, "application/json", "{\"error\":\"out of memory\"}\n");
    return;
  }
  job->req = req;
  job->cost = cost;
  memcpy(job->input, input, n + 1);
  lab->jobs++;
  if (lab->jobs > lab->jobs_peak) lab->jobs_peak = lab->jobs;
  uv_mutex_lock(&lab->lock);
  list_push(&lab->todo, job);
  uv_cond_signal(&lab->has_work);
  uv_mutex_unlock(&lab->lock);
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
  shell_stats_add(shell, "hash_done", (double)lab->done_count);
  shell_stats_add(shell, "hash_refused", (double)lab->refused);
  shell_stats_add(shell, "hash_cpu_ms", lab->cpu_ms);
}

/* Tells the workers to stop and joins them: each one leaves once todo is empty. */
static void workers_stop(lab_t *lab) {
  uv_mutex_lock(&lab->lock);
  lab->stopping = 1;
  uv_cond_broadcast(&lab->has_work);
  uv_mutex_unlock(&lab->lock);
  while (lab->n_threads > 0) uv_thread_join(&lab->threads[--lab->n_threads]);
}

/* The same rule as libuv's pool: UV_THREADPOOL_SIZE threads, 4 when unset or not a number. */
static int pool_size(void) {
  const char *env = getenv("UV_THREADPOOL_SIZE");
  long n = 4;
  if (env != NULL && parse_count(env, 1, MAX_THREADS, &n) != 0) n = 4;
  return (int)n;
}

static void on_async_closed(uv_handle_t *handle) {
  lab_t *lab = handle->data;
  uv_cond_destroy(&lab->has_work);
  uv_mutex_destroy(&lab->lock);
  free(lab);
}

int lab_create(lab_t **out, shell_t *shell, const lab_config_t *cfg) {
  lab_t *lab;
  int rc, want;

  if (cfg->max_jobs < 1 || cfg->max_cost < 1) {
    fprintf(stderr, "lab07: --max-jobs and --max-cost must be at least 1\n");
    return UV_EINVAL;
  }
  lab = calloc(1, sizeof *lab);
  if (lab == NULL) return UV_ENOMEM;
  lab->cfg = cfg;
  if ((rc = uv_mutex_init(&lab->lock)) != 0) {
    fprintf(stderr, "lab07: uv_mutex_init: %s\n", uv_strerror(rc));
    goto fail_mutex;
  }
  if ((rc = uv_cond_init(&lab->has_work)) != 0) {
    fprintf(stderr, "lab07: uv_cond_init: %s\n", uv_strerror(rc));
    goto fail_cond;
  }
  if ((rc = uv_async_init(shell_loop(shell), &lab->done_async, on_jobs_done)) != 0) {
    fprintf(stderr, "lab07: uv_async_init: %s\n", uv_strerror(rc));
    goto fail_async;
  }
  lab->done_async.data = lab;
  for (want = pool_size(); lab->n_threads < want; lab->n_threads++) {
    rc = uv_thread_create(&lab->threads[lab->n_threads], worker_main, lab);
    if (rc != 0) {
      fprintf(stderr, "lab07: uv_thread_create: %s\n", uv_strerror(rc));
      goto fail_threads;
    }
  }
  rc = shell_route(shell, "GET", "/hash", hash_handle, lab);
  if (rc == 0) rc = shell_route(shell, "GET", "/health", health_handle, lab);
  if (rc != 0) {
    fprintf(stderr, "lab07: shell_route: %s\n", uv_strerror(rc));
    goto fail_threads;
  }
  shell_set_stats_hook(shell, lab_on_stats, lab);
  *out = lab;
  return 0;

fail_threads:
  workers_stop(lab);
  uv_close((uv_handle_t *)&lab->done_async, on_async_closed); /* frees the lab */
  return rc;
fail_async:
  uv_cond_destroy(&lab->has_work);
fail_cond:
  uv_mutex_destroy(&lab->lock);
fail_mutex:
  free(lab);
  return rc;
}

/* The shell has drained: every accepted job was answered, so todo and done are empty and the
 * workers are waiting. Stop and join them, then close the async handle (its callback frees). */
void lab_destroy(lab_t *lab) {
  workers_stop(lab);
  uv_close((uv_handle_t *)&lab->done_async, on_async_closed);
}
