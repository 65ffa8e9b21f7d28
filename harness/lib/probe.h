/* probe.h - measures how late the event loop runs: loop lag and idle fraction.
 *
 * A one-shot uv_timer_t re-armed every interval_ms: when it fires later than it was due, the loop
 * was busy (or blocked) for that long. That lateness is the loop lag every request waiting on the
 * loop also suffers. The probe times its own callback, so its cost is reported, not assumed.
 */
#ifndef LOOPHOLES_PROBE_H
#define LOOPHOLES_PROBE_H

#include <stdint.h>
#include <uv.h>

#define PROBE_RING 1024

typedef struct probe {
  uv_timer_t timer;
  uint64_t interval_ns;
  uint64_t due_ns;           /* when the pending tick should fire */
  uint64_t max_lag_ns;       /* since start or probe_reset */
  uint64_t ring_t[PROBE_RING];   /* tick times, for the recent window */
  uint64_t ring_lag[PROBE_RING];
  unsigned ring_next;
  uint64_t ticks;
  uint64_t cost_ns;          /* total time spent in the probe's own callback */
  uint64_t window_start_ns;  /* idle fraction, over windows of about a second */
  uint64_t window_idle_ns;
  double idle_fraction;
} probe_t;

typedef struct probe_report {
  double lag_max_ms;         /* since start or reset */
  double lag_recent_max_ms;  /* over the last second */
  double lag_recent_p99_ms;  /* over the last second */
  double idle_fraction;      /* over the last full window; -1 when idle metrics are off */
  double cost_us_per_tick;
  double cost_fraction;      /* probe callback time / wall time */
} probe_report_t;

/* The loop should have been configured with UV_METRICS_IDLE_TIME before it ran (labrt does). */
int probe_start(probe_t *p, uv_loop_t *loop, unsigned interval_ms);
void probe_read(probe_t *p, probe_report_t *out);
void probe_reset(probe_t *p);
/* Closes the timer; close_cb gets the timer handle (whose data pointer is the probe's owner). */
void probe_close(probe_t *p, uv_close_cb close_cb);

#endif
