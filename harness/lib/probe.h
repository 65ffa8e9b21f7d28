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
  /* Called after every tick with its lag (the stall detector's heartbeat), or NULL. */
  void (*on_tick)(void *arg, uint64_t now_ns, uint64_t lag_ns);
  void *on_tick_arg;
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

/* ---- the stall detector ----
 * Notices when the loop has not turned for more than threshold_ms (the probe's tick, every few
 * ms even when the loop is idle, is the turn it watches for), and names the callback that was
 * running: the named callback (stall_enter, what the shell does around each route handler and
 * shell_callback_begin for the lab's own) that ran longest in the gap; "(unnamed)" when none
 * did. The loop thread files each stall when it turns again, so none depends on when another
 * thread looks; it pays two clock reads (the coarse clock, a few ns, at thresholds of 16 ms
 * and more) and two plain stores per named callback, and a schedstat read per tick (200 a s). A watchdog thread prints each one on stderr, off the
 * loop, and while the loop stays stuck, a line a second naming what is running.
 * A stall whose own time (its length less what the loop's thread waited for a CPU) is under the
 * threshold is the machine's, not the code's: filed under its name as "starved", not counted in
 * slow_callbacks. */
typedef struct stall stall_t;

typedef struct stall_offender {
  const char *name;
  uint64_t count;    /* its slow callbacks: stalls it caused */
  double max_ms;     /* of those */
  double total_ms;
  uint64_t starved;  /* stalls it was running in that were the machine's (not in count) */
} stall_offender_t;

#define STALL_WORST 5

typedef struct stall_report {
  unsigned threshold_ms;
  uint64_t slow_callbacks;   /* stalls since start or reset */
  double slow_max_ms;
  uint64_t cpu_starved;      /* stalls that were the machine's (not counted above) */
  unsigned n_worst;
  stall_offender_t worst[STALL_WORST]; /* by max_ms, largest first, then by starved */
  double lag_p50_ms, lag_p99_ms, lag_max_ms; /* every probe tick's lag since start or reset */
} stall_report_t;

/* Starts the watchdog for a probe already started; the probe's on_tick becomes its. */
int stall_start(stall_t **out, probe_t *probe, unsigned threshold_ms);
/* On the loop thread, around a callback: names it (a string that outlives the detector);
 * returns the name it replaces, for stall_leave. Calls nest. */
const char *stall_enter(stall_t *st, const char *name);
void stall_leave(stall_t *st, const char *previous);
/* On the loop thread (a request handler): files a stall that just ended first, then reads. */
void stall_read(stall_t *st, stall_report_t *out);
void stall_reset(stall_t *st);
/* On the loop thread: stops and joins the watchdog (it prints what was filed first), then
 * frees. The probe's on_tick is cleared. */
void stall_stop(stall_t *st);

#endif
