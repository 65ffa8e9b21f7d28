/* tsan/stall.c - the stall detector's watchdog thread under ThreadSanitizer (a plain program, not
 * a Criterion suite: Criterion itself is not built for TSan). harness/tests/stall-tsan.sh builds
 * it with -fsanitize=thread together with harness/lib/probe.c and hist.c and runs it.
 *
 * What it exercises, each on a fresh loop, detector and watchdog: a start and stop with no tick
 * at all; stalls named, unnamed and nested, read and reset while the watchdog prints; a stop
 * right after a stall is filed (its line still printed); a block of 1.2 s (the watchdog's "and
 * counting" line reads the running name while the loop thread writes it); and a detector started
 * on one thread for a loop that runs on another (as the suites run a lab). Exit 0 when every
 * count is right; TSan reports (and exits 66) on any data race or a thread not joined.
 */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "probe.h"

#define CYCLES 12
#define THRESHOLD_MS 20

typedef struct run {
  uv_loop_t loop;
  probe_t probe;
  stall_t *stall;
  uv_timer_t timer;
  int step, steps;
  unsigned block_ms;  /* CPU ms of each block (the last step blocks for long_ms instead) */
  unsigned long_ms;
} run_t;

static uint64_t thread_cpu_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
  return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static void spin_cpu_ms(unsigned ms) {
  uint64_t c0 = thread_cpu_ns();
  while (thread_cpu_ns() - c0 < (uint64_t)ms * 1000000u) continue;
}

/* Called by libuv every 60 ms: step i blocks named, unnamed or nested (i % 3), reads or resets
 * the report now and then, and the last step closes everything. */
static void on_step(uv_timer_t *t) {
  run_t *r = t->data;
  stall_report_t sr;
  if (r->step == r->steps) {
    uv_timer_stop(t);
    uv_close((uv_handle_t *)t, NULL);
    probe_close(&r->probe, NULL);
    return;
  }
  unsigned ms = r->long_ms && r->step == r->steps - 1 ? r->long_ms : r->block_ms;
  if (r->step % 3 == 0) {
    const char *prev = stall_enter(r->stall, "tsan named");
    spin_cpu_ms(ms);
    stall_leave(r->stall, prev);
  } else if (r->step % 3 == 1) {
    spin_cpu_ms(ms);
  } else {
    const char *outer = stall_enter(r->stall, "tsan outer");
    const char *inner = stall_enter(r->stall, "tsan inner");
    spin_cpu_ms(ms);
    stall_leave(r->stall, inner);
    stall_leave(r->stall, outer);
  }
  if (r->step % 2) stall_read(r->stall, &sr);
  r->step++;
}

static int run_setup(run_t *r, int steps, unsigned block_ms, unsigned long_ms) {
  memset(r, 0, sizeof *r);
  r->steps = steps;
  r->block_ms = block_ms;
  r->long_ms = long_ms;
  if (uv_loop_init(&r->loop) != 0 || probe_start(&r->probe, &r->loop, 5) != 0 ||
      stall_start(&r->stall, &r->probe, THRESHOLD_MS) != 0 ||
      uv_timer_init(&r->loop, &r->timer) != 0) {
    fprintf(stderr, "tsan/stall: setting up a loop with the detector failed\n");
    return -1;
  }
  r->timer.data = r;
  return uv_timer_start(&r->timer, on_step, 10, 60);
}

/* Runs the loop to its end; returns the slow callbacks filed, or -1. (Each block is 30 ms of CPU
 * or more, over the threshold on its own: a slow callback however loaded the machine; a pause
 * the machine adds is filed apart, as starved, and not counted here.) */
static long run_finish(run_t *r) {
  stall_report_t sr;
  uv_run(&r->loop, UV_RUN_DEFAULT);
  stall_read(r->stall, &sr);
  stall_stop(r->stall);
  if (uv_loop_close(&r->loop) != 0) {
    fprintf(stderr, "tsan/stall: uv_loop_close: handles left\n");
    return -1;
  }
  return (long)sr.slow_callbacks;
}

static void *loop_thread(void *arg) {
  run_t *r = arg;
  return (void *)run_finish(r);
}

static int expect(const char *what, long got, long want) {
  if (got == want) return 0;
  fprintf(stderr, "tsan/stall: %s: %ld slow callbacks filed, want %ld\n", what, got, want);
  return 1;
}

int main(void) {
  run_t r;
  int bad = 0;
  pthread_t th;
  void *got;

  /* start and stop, no tick in between */
  for (int i = 0; i < CYCLES; i++) {
    probe_t p;
    stall_t *st;
    uv_loop_t loop;
    if (uv_loop_init(&loop) != 0 || probe_start(&p, &loop, 5) != 0 ||
        stall_start(&st, &p, THRESHOLD_MS) != 0)
      return 1;
    stall_stop(st);
    probe_close(&p, NULL);
    uv_run(&loop, UV_RUN_DEFAULT);
    if (uv_loop_close(&loop) != 0) return 1;
  }
  /* stalls of every kind, read, and a stop right after the last one */
  for (int i = 0; i < CYCLES; i++) {
    if (run_setup(&r, 4, 30, 0) != 0) return 1;
    bad += expect("4 blocks of 30 ms", run_finish(&r), 4);
  }
  /* a block the watchdog reports while it lasts */
  if (run_setup(&r, 1, 30, 1200) != 0) return 1;
  bad += expect("a named block of 1.2 s", run_finish(&r), 1);
  /* started here, the loop on another thread */
  if (run_setup(&r, 3, 30, 0) != 0) return 1;
  if (pthread_create(&th, NULL, loop_thread, &r) != 0 || pthread_join(th, &got) != 0) return 1;
  bad += expect("3 blocks on a loop of another thread", (long)got, 3);
  if (bad == 0) printf("tsan/stall: %d start/stop cycles, %d runs with stalls: all filed\n",
                       CYCLES, CYCLES + 2);
  return bad ? 1 : 0;
}
