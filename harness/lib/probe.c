/* probe.c - loop lag and idle fraction. See probe.h. */
#include "probe.h"

#include <stddef.h>
#include <stdlib.h>
#include <string.h>

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
