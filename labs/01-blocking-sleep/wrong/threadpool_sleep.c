/* WRONG: waits by sleeping in libuv's thread pool, so only 4 requests (UV_THREADPOOL_SIZE) wait at once and the rest queue -- caught by: lab01::stream_keeps_up */
/* "Blocking is fine off the loop thread": uv_queue_work runs the usleep() on a worker and the
 * answer comes back in the after-work callback. The loop stays free, and a handful of
 * concurrent requests look right. But a wait now holds a thread, and the pool has 4: the
 * service does 4/delay_ms requests per second, and every file read or DNS lookup of the
 * process queues behind the sleepers. */
#include <stdlib.h>
#include <unistd.h>

#include "lab.h"

struct lab {
  long delay_ms;
};

typedef struct job {
  uv_work_t work;
  shell_request_t *req;
  long delay_ms;
} job_t;

/* Called by libuv on a thread-pool thread: blocking here does not block the loop. */
static void do_wait(uv_work_t *work) {
  job_t *job = work->data;
  usleep((useconds_t)(job->delay_ms * 1000));
}

/* Called by libuv on the loop thread once do_wait returned. */
static void after_wait(uv_work_t *work, int status) {
  job_t *job = work->data;
  if (status == 0)
    shell_respond(job->req, 200, "text/plain", "done\n", 5);
  else
    shell_respondf(job->req, 500, "text/plain", "uv_queue_work: %s\n", uv_strerror(status));
  free(job);
}

/* Called by the shell for each GET /work, on the loop thread. */
static void handle_work(shell_request_t *req, void *data) {
  lab_t *lab = data;
  job_t *job = malloc(sizeof *job);
  if (job == NULL) {
    shell_respond(req, 503, "text/plain", "out of memory\n", 14);
    return;
  }
  job->req = req;
  job->delay_ms = lab->delay_ms;
  job->work.data = job;
  int rc = uv_queue_work(shell_request_loop(req), &job->work, do_wait, after_wait);
  if (rc != 0) {
    free(job);
    shell_respondf(req, 500, "text/plain", "uv_queue_work: %s\n", uv_strerror(rc));
  }
}

int lab_create(lab_t **out, shell_t *shell, const lab_config_t *cfg) {
  lab_t *lab = calloc(1, sizeof *lab);
  if (lab == NULL) return UV_ENOMEM;
  lab->delay_ms = cfg->delay_ms;
  int rc = shell_route(shell, "GET", "/work", handle_work, lab);
  if (rc != 0) {
    free(lab);
    return rc;
  }
  *out = lab;
  return 0;
}

void lab_destroy(lab_t *lab) { free(lab); }
