/* probe.c - loop lag and idle fraction. See probe.h. */
#include "probe.h"

#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
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
#define STALL_DEPTH 16                    /* nested named callbacks timed; deeper are not */
#define STALL_LINES 64                    /* stalls filed, waiting for the watchdog to print */
#define STALL_NAP_NS (100 * NS_PER_MS)    /* the watchdog's nap between two looks */
#define STALL_LIVE_NS (1000 * NS_PER_MS)  /* while stuck: a line a second */
#define STALL_UNNAMED "(unnamed: a callback the lab registered; name it with shell_callback_begin)"

/* A named callback running on the loop thread: since when, and how much of that went to the
 * named callbacks it called itself (so each is charged its own time only). */
typedef struct stall_frame {
  const char *name;
  uint64_t start_ns;
  uint64_t child_ns;
} stall_frame_t;

/* One stall, filed by the loop thread, printed on stderr by the watchdog. */
typedef struct stall_line {
  const char *name; /* NULL: no named callback ran during it */
  double ms, waited_ms;
  uint64_t count;   /* stalls of this kind under this name so far */
  int starved;
} stall_line_t;

/* Who does what. The LOOP THREAD measures and files every stall: at each turn of the loop (the
 * probe's tick) it knows how long the loop did not turn, which named callback ran longest in
 * that gap (stall_enter/stall_leave time each one), and how long its thread waited for a CPU
 * (schedstat). Nothing depends on when another thread happens to look, so a short stall, or one
 * during which the watchdog itself got no CPU, is filed with its name like any other. The
 * WATCHDOG, a thread of its own, prints what was filed (stderr writes stay off the loop) and,
 * since it runs while the loop is stuck, says so once a second until it turns again. */
struct stall {
  probe_t *probe;
  uint64_t threshold_ns;
  uint64_t interval_ns;
  int coarse;                  /* callbacks are timed with CLOCK_MONOTONIC_COARSE (see below) */
  pthread_t thread;
  /* written by the loop thread, read by the watchdog for its "and counting" lines */
  _Atomic uint64_t beat_ns;    /* when the loop last turned */
  _Atomic(const char *) name;  /* the innermost named callback running now, or NULL */
  /* under mu */
  pthread_mutex_t mu;
  pthread_cond_t wake;         /* the loop thread filed a line, or stall_stop */
  int stop;
  stall_offender_t table[STALL_TABLE];
  unsigned n_table;
  uint64_t slow_callbacks, starved, lines_dropped;
  double slow_max_ms;
  stall_line_t lines[STALL_LINES];
  unsigned n_lines;
  /* loop thread only */
  stall_frame_t frames[STALL_DEPTH];
  unsigned depth;
  const char *gap_name;        /* of the named callbacks since the last turn, the longest */
  uint64_t gap_self_ns;        /* its own time */
  uint64_t turn_ns;            /* the last turn; 0 before the first */
  uint64_t wait_ns;            /* the loop thread's run-queue wait so far, at turn_ns */
  int schedstat_fd;            /* the loop thread's /proc/thread-self/schedstat, or -1 */
  hist_t lag_us;
};

/* The clock a named callback's start and end are read with. The precise one (uv_hrtime) costs
 * about 35 ns a read here, two per callback: 2% of what hello's trivial handler costs in all. The
 * coarse one (the kernel's last timer tick, a few ns: 4 ms steps at HZ=250) is plenty to tell
 * which callback held a loop for tens of ms; it is used when the threshold is at least 4 of its
 * steps. Both are CLOCK_MONOTONIC, so their readings compare. */
static uint64_t stall_clock(const stall_t *st) {
  struct timespec ts;
  if (!st->coarse) return uv_hrtime();
  clock_gettime(CLOCK_MONOTONIC_COARSE, &ts);
  return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* How long the loop's thread has waited on a run queue (runnable, no CPU) since it started, in
 * ns; 0 if the kernel does not say. Loop thread only: about a microsecond (one pread). */
static uint64_t stall_run_wait_ns(const stall_t *st) {
  char buf[96], *end;
  ssize_t n;
  if (st->schedstat_fd < 0) return 0;
  n = pread(st->schedstat_fd, buf, sizeof buf - 1, 0); /* "cpu_ns wait_ns slices\n" */
  if (n <= 0) return 0;
  buf[n] = '\0';
  (void)strtoull(buf, &end, 10);
  return strtoull(end, NULL, 10);
}

/* Loop thread: files a stall of ms (name NULL: no named callback ran in it), and hands its line
 * to the watchdog. */
static void stall_file(stall_t *st, const char *name, double ms, double waited_ms, int starved) {
  const char *key = name ? name : STALL_UNNAMED;
  stall_offender_t *o = NULL;
  pthread_mutex_lock(&st->mu);
  for (unsigned i = 0; i < st->n_table && o == NULL; i++)
    if (st->table[i].name == key || strcmp(st->table[i].name, key) == 0) o = &st->table[i];
  if (o == NULL && st->n_table < STALL_TABLE) {
    o = &st->table[st->n_table++];
    memset(o, 0, sizeof *o);
    o->name = key;
  }
  if (starved) {
    st->starved++;
    if (o) o->starved++;
  } else {
    st->slow_callbacks++;
    if (ms > st->slow_max_ms) st->slow_max_ms = ms;
    if (o) {
      o->count++;
      o->total_ms += ms;
      if (ms > o->max_ms) o->max_ms = ms;
    }
  }
  if (st->n_lines < STALL_LINES)
    st->lines[st->n_lines++] = (stall_line_t){
        name, ms, waited_ms, o ? (starved ? o->starved : o->count) : 0, starved};
  else
    st->lines_dropped++;
  pthread_cond_signal(&st->wake);
  pthread_mutex_unlock(&st->mu);
}

/* Loop thread, the first time the detector hears from it (a tick, or a named callback that
 * starts before the first tick): the loop runs from here on, on this thread, whose schedstat
 * this opens. (Whatever ran before, setting up, is no stall of the loop.) */
static void stall_first_contact(stall_t *st, uint64_t now) {
  st->schedstat_fd = open("/proc/thread-self/schedstat", O_RDONLY | O_CLOEXEC);
  st->wait_ns = stall_run_wait_ns(st);
  st->turn_ns = now;
}

/* Loop thread: the loop turned, at now (a probe tick, or a read of the report). A gap since the
 * last turn longer than the tick interval plus the threshold was a stall. It is filed under the
 * named callback that ran longest in it, when that one took at least half of it (or the
 * threshold on its own); under "(unnamed)" otherwise. Its own part is the gap less what the
 * loop's thread waited for a CPU: under the threshold, the code did not block the loop, the
 * machine did (a stall "cpu starved", still filed under the callback that ran). */
static void stall_turn(stall_t *st, uint64_t now) {
  uint64_t wait;
  if (st->turn_ns == 0) {
    stall_first_contact(st, now);
  } else {
    uint64_t gap = now > st->turn_ns ? now - st->turn_ns : 0;
    wait = stall_run_wait_ns(st);
    if (gap > st->interval_ns + st->threshold_ns) {
      uint64_t block = gap - st->interval_ns; /* the next tick was due interval_ns after a turn */
      uint64_t waited = wait > st->wait_ns ? wait - st->wait_ns : 0, own;
      const char *name = NULL;
      if (st->gap_name != NULL &&
          (2 * st->gap_self_ns >= block || st->gap_self_ns >= st->threshold_ns)) {
        name = st->gap_name;
        if (!st->coarse && st->gap_self_ns > block) block = st->gap_self_ns; /* timed to the ns */
      }
      own = block > waited ? block - waited : 0;
      stall_file(st, name, (double)block / 1e6, (double)waited / 1e6, own < st->threshold_ns);
    }
    st->wait_ns = wait;
  }
  st->turn_ns = now;
  st->gap_name = NULL;
  st->gap_self_ns = 0;
  atomic_store_explicit(&st->beat_ns, now, memory_order_release);
}

/* The loop thread's heartbeat: called by probe_tick. */
static void stall_on_tick(void *arg, uint64_t now_ns, uint64_t lag_ns) {
  stall_t *st = arg;
  hist_record(&st->lag_us, lag_ns / 1000);
  stall_turn(st, now_ns);
}

/* Watchdog thread: one filed stall on stderr. */
static void stall_print(const stall_t *st, const stall_line_t *l) {
  const char *times = l->count == 1 ? "" : "s";
  if (!l->starved) {
    char waited[64] = "";
    if (l->waited_ms >= 1)
      snprintf(waited, sizeof waited, "; %.1f ms of it waiting for a CPU", l->waited_ms);
    fprintf(stderr, "stall: %s blocked the loop for %.1f ms (threshold %.0f ms; %llu time%s%s)\n",
            l->name ? l->name : STALL_UNNAMED, l->ms, (double)st->threshold_ns / 1e6,
            (unsigned long long)l->count, times, waited);
  } else if (l->name != NULL) {
    fprintf(stderr, "stall: %s ran while the loop did not turn for %.1f ms, but the loop waited "
            "%.1f ms of that for a CPU: the machine is overloaded, not blocked by %s (%llu "
            "time%s)\n", l->name, l->ms, l->waited_ms, l->name, (unsigned long long)l->count,
            times);
  } else {
    fprintf(stderr, "stall: the loop did not turn for %.1f ms, but it waited %.1f ms of that for "
            "a CPU: the machine is overloaded (no named callback was running)\n", l->ms,
            l->waited_ms);
  }
}

static void *stall_thread(void *arg) {
  stall_t *st = arg;
  stall_line_t lines[STALL_LINES];
  uint64_t live_beat = 0, next_live = 0;
  sigset_t all;

  sigfillset(&all); /* signals are the loop's (uv_signal_t): never this thread's */
  pthread_sigmask(SIG_BLOCK, &all, NULL);
  pthread_mutex_lock(&st->mu);
  for (;;) {
    unsigned n = st->n_lines;
    uint64_t dropped = st->lines_dropped;
    int stop = st->stop;
    memcpy(lines, st->lines, n * sizeof lines[0]);
    st->n_lines = 0;
    st->lines_dropped = 0;
    pthread_mutex_unlock(&st->mu);

    for (unsigned i = 0; i < n; i++) stall_print(st, &lines[i]);
    if (dropped > 0)
      fprintf(stderr, "stall: %llu more stalls filed but not printed (GET /debug/stalls)\n",
              (unsigned long long)dropped);
    if (stop) return NULL; /* everything filed before stall_stop is printed */

    uint64_t beat = atomic_load_explicit(&st->beat_ns, memory_order_acquire), now = uv_hrtime();
    if (beat != live_beat) {
      live_beat = beat;
      next_live = beat + STALL_LIVE_NS;
    }
    if (now >= next_live) { /* still stuck: an infinite loop shows up too */
      const char *name = atomic_load_explicit(&st->name, memory_order_acquire);
      fprintf(stderr, "stall: %s has blocked the loop for %.0f ms and counting\n",
              name ? name : STALL_UNNAMED, (double)(now - beat) / 1e6);
      while (next_live <= now) next_live += STALL_LIVE_NS;
    }

    struct timespec until;
    clock_gettime(CLOCK_MONOTONIC, &until);
    until.tv_nsec += (long)STALL_NAP_NS;
    if (until.tv_nsec >= 1000000000L) {
      until.tv_sec++;
      until.tv_nsec -= 1000000000L;
    }
    pthread_mutex_lock(&st->mu);
    if (!st->stop && st->n_lines == 0 && st->lines_dropped == 0)
      pthread_cond_timedwait(&st->wake, &st->mu, &until);
  }
}

int stall_start(stall_t **out, probe_t *probe, unsigned threshold_ms) {
  stall_t *st = calloc(1, sizeof *st);
  pthread_condattr_t attr;
  int rc;
  if (st == NULL) return UV_ENOMEM;
  st->probe = probe;
  st->threshold_ns = (uint64_t)threshold_ms * NS_PER_MS;
  st->interval_ns = probe->interval_ns;
  {
    struct timespec res;
    st->coarse = clock_getres(CLOCK_MONOTONIC_COARSE, &res) == 0 && res.tv_sec == 0 &&
                 4 * (uint64_t)res.tv_nsec <= st->threshold_ns;
  }
  st->schedstat_fd = -1;
  atomic_init(&st->beat_ns, uv_hrtime());
  atomic_init(&st->name, NULL);
  hist_init(&st->lag_us);
  if ((rc = pthread_mutex_init(&st->mu, NULL)) != 0) goto fail_mutex;
  if ((rc = pthread_condattr_init(&attr)) != 0) goto fail_cond;
  rc = pthread_condattr_setclock(&attr, CLOCK_MONOTONIC); /* the nap ignores wall-clock jumps */
  if (rc == 0) rc = pthread_cond_init(&st->wake, &attr);
  pthread_condattr_destroy(&attr);
  if (rc != 0) goto fail_cond;
  if ((rc = pthread_create(&st->thread, NULL, stall_thread, st)) != 0) goto fail_thread;
  probe->on_tick = stall_on_tick;
  probe->on_tick_arg = st;
  *out = st;
  return 0;

fail_thread:
  pthread_cond_destroy(&st->wake);
fail_cond:
  pthread_mutex_destroy(&st->mu);
fail_mutex:
  free(st);
  return -rc; /* libuv's error codes are negative errnos */
}

const char *stall_enter(stall_t *st, const char *name) {
  const char *previous = atomic_load_explicit(&st->name, memory_order_relaxed);
  uint64_t now = stall_clock(st);
  atomic_store_explicit(&st->name, name, memory_order_release);
  if (st->turn_ns == 0) stall_first_contact(st, uv_hrtime());
  if (st->depth < STALL_DEPTH) st->frames[st->depth] = (stall_frame_t){name, now, 0};
  st->depth++;
  return previous;
}

void stall_leave(stall_t *st, const char *previous) {
  atomic_store_explicit(&st->name, previous, memory_order_release);
  if (st->depth == 0 || --st->depth >= STALL_DEPTH) return; /* unbalanced, or too deep to time */
  const stall_frame_t *f = &st->frames[st->depth];
  uint64_t end = stall_clock(st), ran = end > f->start_ns ? end - f->start_ns : 0;
  uint64_t self = ran > f->child_ns ? ran - f->child_ns : 0;
  if (st->depth > 0) st->frames[st->depth - 1].child_ns += ran;
  if (self > st->gap_self_ns) {
    st->gap_self_ns = self;
    st->gap_name = f->name;
  }
}

static int offender_cmp(const void *a, const void *b) {
  const stall_offender_t *x = a, *y = b;
  if (x->max_ms != y->max_ms) return x->max_ms < y->max_ms ? 1 : -1;
  return (x->starved < y->starved) - (x->starved > y->starved);
}

void stall_read(stall_t *st, stall_report_t *out) {
  stall_offender_t sorted[STALL_TABLE];
  unsigned n;
  stall_turn(st, uv_hrtime()); /* the reader runs on the loop: a stall that just ended is filed */
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
  stall_turn(st, uv_hrtime()); /* a stall that ended before the reset belongs before it */
  pthread_mutex_lock(&st->mu);
  st->n_table = 0;
  st->slow_callbacks = 0;
  st->slow_max_ms = 0;
  st->starved = 0;
  pthread_mutex_unlock(&st->mu);
  hist_reset(&st->lag_us);
}

void stall_stop(stall_t *st) {
  pthread_mutex_lock(&st->mu);
  st->stop = 1;
  pthread_cond_signal(&st->wake);
  pthread_mutex_unlock(&st->mu);
  pthread_join(st->thread, NULL);
  st->probe->on_tick = NULL;
  if (st->schedstat_fd >= 0) close(st->schedstat_fd);
  pthread_cond_destroy(&st->wake);
  pthread_mutex_destroy(&st->mu);
  free(st);
}
