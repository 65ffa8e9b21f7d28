/* probe.c - loop lag and idle fraction. See probe.h. */
#include "probe.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "hist.h"

#define NS_PER_MS 1000000ull
#define RECENT_NS (1000ull * NS_PER_MS)

/* Called by libuv when the tick is due (or as soon after as the loop gets to it). */
static void probe_tick(uv_timer_t *timer) {
  probe_t *p = (probe_t *)((char *)timer - offsetof(probe_t, timer));
  uint64_t now = uv_hrtime();
  uint64_t lag = now > p->due_ns ? now - p->due_ns : 0;

  if (lag > p->max_lag_ns) p->max_lag_ns = lag;
  p->ring_t[p->ring_next] = now;
  p->ring_lag[p->ring_next] = lag;
  p->ring_next = (p->ring_next + 1) % PROBE_RING;
  p->ticks++;

  if (now - p->window_start_ns >= RECENT_NS) {
    uint64_t idle = uv_metrics_idle_time(timer->loop);
    p->idle_fraction = (double)(idle - p->window_idle_ns) / (double)(now - p->window_start_ns);
    p->window_start_ns = now;
    p->window_idle_ns = idle;
  }

  uv_update_time(timer->loop);
  p->due_ns = uv_hrtime() + p->interval_ns;
  uv_timer_start(timer, probe_tick, p->interval_ns / NS_PER_MS, 0);
  if (p->on_tick) p->on_tick(p->on_tick_arg, now, lag);
  p->cost_ns += uv_hrtime() - now;
}

int probe_start(probe_t *p, uv_loop_t *loop, unsigned interval_ms) {
  int rc;

  memset(p, 0, sizeof *p);
  rc = uv_timer_init(loop, &p->timer);
  if (rc != 0) return rc;
  /* probe_tick finds the probe from the timer's address, so timer.data is the owner's. */
  p->interval_ns = (uint64_t)(interval_ms ? interval_ms : 5) * NS_PER_MS;
  p->window_start_ns = uv_hrtime();
  p->window_idle_ns = uv_metrics_idle_time(loop);
  p->idle_fraction = -1;
  uv_update_time(loop);
  p->due_ns = uv_hrtime() + p->interval_ns;
  rc = uv_timer_start(&p->timer, probe_tick, p->interval_ns / NS_PER_MS, 0);
  if (rc != 0) return rc;
  /* Don't let the probe alone keep the loop alive. */
  uv_unref((uv_handle_t *)&p->timer);
  return 0;
}

static int cmp_u64(const void *a, const void *b) {
  uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
  return x < y ? -1 : x > y;
}

void probe_read(probe_t *p, probe_report_t *out) {
  uint64_t now = uv_hrtime();
  uint64_t recent[PROBE_RING];
  unsigned n = 0;
  uint64_t recent_max = 0;
  /* A tick that is overdue right now counts too: a loop blocked for 2 s has no late tick yet,
   * but whoever reads this (on the same loop) ran after the block, so its tick is pending. */
  uint64_t pending = now > p->due_ns ? now - p->due_ns : 0;

  for (unsigned i = 0; i < PROBE_RING; i++) {
    if (p->ring_t[i] != 0 && now - p->ring_t[i] <= RECENT_NS) {
      recent[n++] = p->ring_lag[i];
      if (p->ring_lag[i] > recent_max) recent_max = p->ring_lag[i];
    }
  }
  if (pending > recent_max) recent_max = pending;
  out->lag_max_ms = (double)(p->max_lag_ns > pending ? p->max_lag_ns : pending) / 1e6;
  out->lag_recent_max_ms = (double)recent_max / 1e6;
  if (n > 0) {
    qsort(recent, n, sizeof recent[0], cmp_u64);
    unsigned idx = (unsigned)((n * 99 + 99) / 100);
    if (idx > 0) idx--;
    out->lag_recent_p99_ms = (double)recent[idx] / 1e6;
  } else {
    out->lag_recent_p99_ms = (double)pending / 1e6;
  }
  out->idle_fraction = p->idle_fraction;
  out->cost_us_per_tick = p->ticks ? (double)p->cost_ns / (double)p->ticks / 1e3 : 0;
  {
    uint64_t wall = p->ticks ? p->ticks * p->interval_ns : 1;
    out->cost_fraction = (double)p->cost_ns / (double)wall;
  }
}

void probe_reset(probe_t *p) {
  p->max_lag_ns = 0;
  memset(p->ring_t, 0, sizeof p->ring_t);
  memset(p->ring_lag, 0, sizeof p->ring_lag);
}

void probe_close(probe_t *p, uv_close_cb close_cb) {
  uv_timer_stop(&p->timer);
  uv_close((uv_handle_t *)&p->timer, close_cb);
}

/* ---------------------------------------------------------------- the stall detector */

#define STALL_TABLE 32
#define STALL_UNNAMED "(unnamed: a callback the lab registered; name it with shell_callback_begin)"

struct stall {
  probe_t *probe;
  uint64_t threshold_ns;
  uint64_t interval_ns;
  pthread_t thread;
  /* written by the loop thread, read by the watchdog */
  _Atomic uint64_t beat_ns;            /* when the probe last ticked */
  _Atomic(const char *) name;          /* the named callback running now, or NULL */
  atomic_int loop_tid;                 /* the loop's thread, from its first tick */
  atomic_int stop;
  /* the offenders: written by the watchdog, read by the loop thread, under mu */
  pthread_mutex_t mu;
  stall_offender_t table[STALL_TABLE];
  unsigned n_table;
  uint64_t slow_callbacks;
  double slow_max_ms;
  uint64_t starved;                    /* stalls where the loop waited for a CPU, not for code */
  /* loop thread only */
  hist_t lag_us;
};

/* The loop thread's heartbeat: called by probe_tick. */
static void stall_on_tick(void *arg, uint64_t now_ns, uint64_t lag_ns) {
  stall_t *st = arg;
  if (atomic_load(&st->loop_tid) == 0) atomic_store(&st->loop_tid, (int)gettid());
  atomic_store(&st->beat_ns, now_ns);
  hist_record(&st->lag_us, lag_ns / 1000);
}

/* How long the loop's thread has waited on a run queue (runnable, no CPU), in ns; 0 if unknown.
 * A loop that stops turning because the machine gave it no CPU is not blocked by its code. */
static uint64_t stall_run_delay_ns(stall_t *st) {
  char path[64];
  unsigned long long cpu = 0, wait = 0;
  int tid = atomic_load(&st->loop_tid);
  FILE *f;
  if (tid == 0) return 0;
  snprintf(path, sizeof path, "/proc/self/task/%d/schedstat", tid);
  if ((f = fopen(path, "r")) == NULL) return 0;
  if (fscanf(f, "%llu %llu", &cpu, &wait) != 2) wait = 0;
  fclose(f);
  return wait;
}

/* Watchdog thread: records one stall of name, ms long. */
static void stall_record(stall_t *st, const char *name, double ms) {
  stall_offender_t *o = NULL;
  pthread_mutex_lock(&st->mu);
  for (unsigned i = 0; i < st->n_table; i++)
    if (st->table[i].name == name) o = &st->table[i];
  if (o == NULL && st->n_table < STALL_TABLE) {
    o = &st->table[st->n_table++];
    memset(o, 0, sizeof *o);
    o->name = name;
  }
  if (o != NULL) {
    o->count++;
    o->total_ms += ms;
    if (ms > o->max_ms) o->max_ms = ms;
  }
  st->slow_callbacks++;
  if (ms > st->slow_max_ms) st->slow_max_ms = ms;
  uint64_t count = o ? o->count : 0;
  pthread_mutex_unlock(&st->mu);
  fprintf(stderr, "stall: %s blocked the loop for %.1f ms (threshold %.0f ms; %llu time%s)\n",
          name, ms, (double)st->threshold_ns / 1e6, (unsigned long long)count,
          count == 1 ? "" : "s");
}

static void *stall_thread(void *arg) {
  stall_t *st = arg;
  uint64_t poll_ns = st->threshold_ns / 4;
  struct timespec nap;
  int in_stall = 0;
  uint64_t from = 0, next_live = 0;
  const char *name = NULL;
  uint64_t wait0 = 0;

  if (poll_ns < 1000000) poll_ns = 1000000;
  if (poll_ns > 50000000) poll_ns = 50000000;
  nap.tv_sec = 0;
  nap.tv_nsec = (long)poll_ns;
  while (!atomic_load(&st->stop)) {
    nanosleep(&nap, NULL);
    uint64_t beat = atomic_load(&st->beat_ns), now = uv_hrtime();
    if (!in_stall) {
      if (now > beat + st->interval_ns + st->threshold_ns) {
        in_stall = 1;
        from = beat;
        name = atomic_load(&st->name);
        wait0 = stall_run_delay_ns(st);
        next_live = from + 1000000000ull;
      }
      continue;
    }
    if (beat != from) {
      /* The late tick: it was due interval_ns after the last one, and fired at beat. */
      uint64_t blocked = beat - from > st->interval_ns ? beat - from - st->interval_ns : 0;
      uint64_t waited = stall_run_delay_ns(st) - wait0;
      if (wait0 != 0 && waited > blocked / 2) {
        /* Runnable most of the time but not running: the machine is overloaded. */
        pthread_mutex_lock(&st->mu);
        st->starved++;
        pthread_mutex_unlock(&st->mu);
        fprintf(stderr, "stall: the loop did not turn for %.1f ms, but it waited %.1f ms of "
                "that for a CPU: the machine is overloaded, not blocked by %s\n",
                (double)blocked / 1e6, (double)waited / 1e6, name ? name : "a callback");
      } else {
        stall_record(st, name ? name : STALL_UNNAMED, (double)blocked / 1e6);
      }
      in_stall = 0;
      name = NULL;
    } else {
      if (name == NULL) name = atomic_load(&st->name); /* the first name seen while stuck */
      if (now < next_live) continue;
      fprintf(stderr, "stall: %s has blocked the loop for %.0f ms and counting\n",
              name ? name : STALL_UNNAMED, (double)(now - from) / 1e6);
      next_live += 1000000000ull;
    }
  }
  return NULL;
}

int stall_start(stall_t **out, probe_t *probe, unsigned threshold_ms) {
  stall_t *st = calloc(1, sizeof *st);
  int rc;
  if (st == NULL) return UV_ENOMEM;
  st->probe = probe;
  st->threshold_ns = (uint64_t)threshold_ms * NS_PER_MS;
  st->interval_ns = probe->interval_ns;
  atomic_store(&st->beat_ns, uv_hrtime());
  atomic_store(&st->name, NULL);
  atomic_store(&st->stop, 0);
  atomic_store(&st->loop_tid, 0);
  hist_init(&st->lag_us);
  pthread_mutex_init(&st->mu, NULL);
  probe->on_tick = stall_on_tick;
  probe->on_tick_arg = st;
  rc = pthread_create(&st->thread, NULL, stall_thread, st);
  if (rc != 0) {
    probe->on_tick = NULL;
    pthread_mutex_destroy(&st->mu);
    free(st);
    return UV_EAGAIN;
  }
  *out = st;
  return 0;
}

const char *stall_enter(stall_t *st, const char *name) {
  return atomic_exchange(&st->name, name);
}

void stall_leave(stall_t *st, const char *previous) { atomic_store(&st->name, previous); }

static int offender_cmp(const void *a, const void *b) {
  const stall_offender_t *x = a, *y = b;
  return x->max_ms < y->max_ms ? 1 : x->max_ms > y->max_ms ? -1 : 0;
}

void stall_read(stall_t *st, stall_report_t *out) {
  stall_offender_t sorted[STALL_TABLE];
  unsigned n;
  memset(out, 0, sizeof *out);
  out->threshold_ms = (unsigned)(st->threshold_ns / NS_PER_MS);
  pthread_mutex_lock(&st->mu);
  n = st->n_table;
  memcpy(sorted, st->table, n * sizeof sorted[0]);
  out->slow_callbacks = st->slow_callbacks;
  out->slow_max_ms = st->slow_max_ms;
  out->cpu_starved = st->starved;
  pthread_mutex_unlock(&st->mu);
  qsort(sorted, n, sizeof sorted[0], offender_cmp);
  out->n_worst = n < STALL_WORST ? n : STALL_WORST;
  memcpy(out->worst, sorted, out->n_worst * sizeof sorted[0]);
  out->lag_p50_ms = (double)hist_percentile(&st->lag_us, 50) / 1e3;
  out->lag_p99_ms = (double)hist_percentile(&st->lag_us, 99) / 1e3;
  out->lag_max_ms = (double)hist_max(&st->lag_us) / 1e3;
}

void stall_reset(stall_t *st) {
  pthread_mutex_lock(&st->mu);
  st->n_table = 0;
  st->slow_callbacks = 0;
  st->slow_max_ms = 0;
  st->starved = 0;
  pthread_mutex_unlock(&st->mu);
  hist_reset(&st->lag_us);
}

void stall_stop(stall_t *st) {
  atomic_store(&st->stop, 1);
  pthread_join(st->thread, NULL);
  st->probe->on_tick = NULL;
  pthread_mutex_destroy(&st->mu);
  free(st);
}
