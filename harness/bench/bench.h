/* bench.h - the bench engine. A lab's bench is labs/NN-slug/bench.c, built into build/bin/benchNN
 * and run by `make bench LAB=NN`; it says only what its lesson needs:
 *
 *   #include "bench.h"
 *   static int run(bench_t *b, const char *variant) { ...start, load, sample, record rows... }
 *   static void report(bench_t *b) { ...figures, targets and plots, from the tables... }
 *   BENCH_MAIN(NULL, run, report)     (main: bench_main with this lab; NULL: no setup)
 *
 * The engine owns everything else: the options (--variants, --quick, --replot, --out, --help),
 * the lab's block of labs/manifest, the processes (every one it started is stopped when a variant
 * ends and on any exit, Ctrl-C included), open-loop load phases (loadgen's engine, in-process),
 * sampling JSON endpoints into tables, tables as CSV, targets, summary.txt and summary.json
 * (docs/bench.md documents its schema), and gnuplot.
 *
 * The bench runs with its soft fd limit raised to the hard one (the load generator and a pitfall
 * may hold thousands of sockets); the processes it starts inherit that unless bench_spawn_t.nofile
 * says otherwise.
 *
 * Order: bench_main parses the options, calls lab->setup (once, if set), then lab->run for each
 * variant (a fresh clock, the variant's processes stopped afterwards), writes every table, then
 * calls lab->report. With --replot it loads the tables from results/NN-slug/ (its CSVs) instead of
 * running, and calls lab->report only: so report must read the tables, never run's locals.
 * Exit status: 0 when every target was met, 1 when one was missed or a run failed, 2 on a usage
 * error, 130 on Ctrl-C.
 *
 * Errors: every function that can fail prints what failed on stderr (naming the call or the
 * command) and returns -1 or NULL; run returns -1 to stop the bench (exit 1).
 */
#ifndef LOOPHOLES_BENCH_H
#define LOOPHOLES_BENCH_H

#include <stdint.h>

#include <jansson.h>

#ifndef BENCH_SLUG
#define BENCH_SLUG NULL /* the Makefile passes -DBENCH_SLUG='"NN-slug"' */
#endif

typedef struct bench bench_t;
typedef struct bench_table bench_table_t;
typedef struct bench_proc bench_proc_t;
typedef struct bench_sampler bench_sampler_t;
typedef struct bench_bg bench_bg_t;

typedef struct bench_lab {
  const char *slug;                                  /* "01-blocking-sleep": BENCH_SLUG */
  int (*setup)(bench_t *b);                          /* optional: once, before the variants */
  int (*run)(bench_t *b, const char *variant);       /* 0, or -1 to stop */
  void (*report)(bench_t *b);                        /* figures, targets, plots */
} bench_lab_t;

int bench_main(int argc, char **argv, const bench_lab_t *lab);
/* A lab's main: BENCH_MAIN(setup, run, report), setup and report may be NULL. */
#define BENCH_MAIN(setup_fn, run_fn, report_fn)                                                   \
  int main(int argc, char **argv) {                                                               \
    static const bench_lab_t lab = {BENCH_SLUG, setup_fn, run_fn, report_fn};                     \
    return bench_main(argc, argv, &lab);                                                          \
  }

/* ---- the run ---- */
int bench_quick(const bench_t *b);                /* --quick: a smoke run, short steps */
int bench_has(const bench_t *b,
              const char *variant);               /* variant was asked for (or is in the tables) */
const char *bench_variants(const bench_t *b);     /* "pitfall solution exercise": the ones asked */
const char *bench_variant(const bench_t *b, int i); /* the i-th of them; NULL past the end */
/* Each variant put into FMT, space separated: bench_each(b, "stats-%s.csv") ->
 * "stats-pitfall.csv stats-solution.csv" (a buffer of b's, 8 rotating slots). */
const char *bench_each(bench_t *b, const char *fmt);
const char *bench_lab_num(const bench_t *b);      /* "01" */
const char *bench_dir(const bench_t *b);          /* results/NN-slug, where tables and plots go */
double bench_elapsed_s(const bench_t *b);         /* seconds since the variant (or setup) began */
void bench_sleep_ms(double ms);

/* ---- the lab's block of labs/manifest ---- */
const char *bench_cfg(const bench_t *b, const char *key, const char *def); /* first value */
double bench_cfg_num(const bench_t *b, const char *key, double def);
/* A list of numbers ("200 500 1000"): up to max into out; returns how many. */
int bench_cfg_list(const bench_t *b, const char *key, const char *def, double *out, int max);
/* The value of option NAME (e.g. "--delay-ms") in the manifest key KEY ("args", "upstream"). */
double bench_cfg_opt(const bench_t *b, const char *key, const char *name, double def);

/* ---- processes: BIN --port 0 ARGS, up once it prints "listening on http://..." ---- */
typedef struct bench_spawn {
  const char *name;  /* for messages: "upstream", "svc" */
  const char *bin;   /* a program in build/bin: "upstream", "hello", "lab03-pitfall" */
  const char *args;  /* options, split on spaces (no quoting) */
  long nofile;       /* soft RLIMIT_NOFILE of the child; 0 = as ours */
} bench_spawn_t;

struct bench_proc {
  char name[32];
  int pid;
  int port;
  char url[64];      /* "http://127.0.0.1:PORT", no trailing slash */
  char err_path[256];/* its stderr, shown when it fails */
  int out_fd;        /* its stdout (a pipe kept open while it runs) */
};

bench_proc_t *bench_start(bench_t *b, const bench_spawn_t *s);
/* build/bin/upstream with the manifest's `upstream` options, then extra (printf format; NULL ok) */
bench_proc_t *bench_upstream(bench_t *b, const char *extra, ...)
    __attribute__((format(printf, 2, 3)));
/* build/bin/labNN-VARIANT with the manifest's `args`, then extra (printf format; NULL ok), under
 * the soft fd limit of the manifest's `nofile` when the lab's block has one */
bench_proc_t *bench_service(bench_t *b, const char *variant, const char *extra, ...)
    __attribute__((format(printf, 3, 4)));
/* SIGTERM, wait, SIGKILL after 5 s. Returns its exit status (a warning when not 0), -1 if killed.
 */
int bench_stop(bench_t *b, bench_proc_t *p);
/* /proc/PID/status field in kB ("VmRSS", "VmHWM"), or the number of open fds ("fds"); -1 if gone.
 */
long bench_proc_kb(const bench_proc_t *p, const char *field);

/* TCP sockets that `ss -Htan FILTER` lists, e.g. "state time-wait ( dport = :8080 )"; -1 when ss
 * is missing (iproute2). */
long bench_sockets(const char *filter_fmt, ...) __attribute__((format(printf, 1, 2)));

/* ---- HTTP (libcurl) and JSON (jansson) ---- */
typedef struct bench_http {
  long status;       /* 0 when no HTTP response */
  double total_ms;
  char *body;        /* NUL-terminated, malloc'ed; free() it (bench_http_free) */
  size_t len;
} bench_http_t;
/* One request (method "GET", "POST"; body may be NULL). 0 when an HTTP response arrived. */
int bench_http(const char *method, const char *url, const char *body, long timeout_ms,
               bench_http_t *out);
void bench_http_free(bench_http_t *r);
/* GET url, parse the body as JSON. NULL on failure (printed). json_decref() the result. */
json_t *bench_get_json(const char *url_fmt, ...) __attribute__((format(printf, 1, 2)));
/* A number of a JSON object (integer, real or true/false); NAN when absent or not a number.
 * key may be a path with dots: "dashboard.ok". */
double bench_num(const json_t *obj, const char *key);
/* GET P->url + path (e.g. "/debug/stats", "/stats") and return key; NAN on failure. */
double bench_stat(const bench_proc_t *p, const char *path, const char *key);
/* POST url with an empty body; returns the HTTP status (0 when none). */
int bench_post(const char *url_fmt, ...) __attribute__((format(printf, 1, 2)));
/* A request on a background thread: start, then wait for it (which also frees bg). done is set
 * to 1 when the answer is in, for bench_load_t.until. */
bench_bg_t *bench_http_bg(const char *url, long timeout_ms, volatile int *done);
int bench_http_wait(bench_bg_t *bg, bench_http_t *out);

/* ---- open-loop load (loadgen's engine, docs/loadgen.md) ---- */
typedef struct bench_load {
  const char *url;        /* full URL: service URL + path */
  double rate;            /* requests/s offered, on schedule; 0 = closed loop (peak) */
  int conns;              /* keep-alive connections, one request at a time each */
  double duration_s;      /* measured seconds */
  double warmup_s;        /* seconds of load before measuring */
  long timeout_ms;        /* a request unanswered this long after its due time: 0 = 2000 */
  const char *method;     /* NULL = GET */
  const char *body;       /* NULL = none */
  const char *header;     /* one extra "Name: value" header, or NULL */
  const char *label;      /* the label column of the result ("open", "closed", a phase) */
  const char *progress;   /* a progress line on stderr ("caller"); NULL and steps 0: quiet */
  int step, steps;        /* steps > 0: the progress line says "step STEP/STEPS" */
  volatile int *until;    /* when set, the load stops early once *until != 0 */
} bench_load_t;

typedef struct bench_result {
  char label[64];
  double offered_rps, achieved_rps, ok_rps;
  uint64_t sent, responses, ok, err_connect, err_timeout, err_http, err_other;
  double p50_ms, p90_ms, p99_ms, p999_ms, max_ms, mean_ms, duration_s;
  uint64_t conns_opened;  /* TCP connections loadgen opened (stays at conns without a storm) */
} bench_result_t;

/* Runs one phase; 0, or -1 when it could not run (printed). */
int bench_load(bench_t *b, const bench_load_t *l, bench_result_t *r);
/* Ends the progress line bench_load left open with ", EXTRA" (printf format; NULL: nothing). */
void bench_progress_done(bench_t *b, const char *extra, ...) __attribute__((format(printf, 2, 3)));

/* ---- tables: one CSV each in results/NN-slug/ ---- */
/* The table written to results/NN-slug/FILE (created on first use; on --replot, loaded); FILE
 * is a printf format: bench_table(b, "stats-%s.csv", variant). */
bench_table_t *bench_table(bench_t *b, const char *file_fmt, ...)
    __attribute__((format(printf, 2, 3)));
void bench_clear(bench_table_t *t);  /* no rows: for a table report builds (--replot loads it) */
void bench_row(bench_table_t *t);                                 /* starts a new row */
void bench_row_of(bench_table_t *t, const char *variant);  /* a new row, its "variant" set */
void bench_set(bench_table_t *t, const char *col, double v);      /* NAN: an empty cell */
void bench_sets(bench_table_t *t, const char *col, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* loadgen's summary columns (label, offered_rps, ..., duration_s), with loadgen's decimals */
void bench_set_result(bench_table_t *t, const bench_result_t *r);
/* Every number of a flat JSON object as a column, named PREFIX + key. */
void bench_set_json(bench_table_t *t, const char *prefix, const json_t *obj);
/* A two-column table FILE (key,value) holding every number of a flat JSON object, e.g. a
 * service's final /debug/stats; read it back with bench_query(t, BENCH_LAST, "value", "key=K"). */
bench_table_t *bench_kv(bench_t *b, const char *file, const json_t *obj);
int bench_rows(const bench_table_t *t);
double bench_at(const bench_table_t *t, int row, const char *col);        /* NAN when empty */
const char *bench_at_s(const bench_table_t *t, int row, const char *col); /* "" when absent */

/* Queries over the rows that match WHERE: conditions separated by spaces, each COL=V, COL!=V,
 * COL<V, COL<=V, COL>V, COL>=V (numbers compare as numbers, text as text); NULL = every row.
 *   bench_query(t, BENCH_MAX, "achieved_rps", "variant=solution")   NAN when no row matches */
typedef enum { BENCH_LAST, BENCH_FIRST, BENCH_MAX, BENCH_MIN, BENCH_SUM, BENCH_MEAN, BENCH_COUNT,
               BENCH_SLOPE /* least squares d(col)/d(t_s) */ } bench_agg_t;
double bench_query(const bench_table_t *t, bench_agg_t agg, const char *col, const char *where_fmt,
                   ...) __attribute__((format(printf, 4, 5)));

/* ---- sampling: GET a JSON endpoint every every_ms on a background thread ---- */
/* Each sample is a row of INTO: t_s (bench_elapsed_s at the answer), then TAGS ("step=3
 * offered_rps=200": constant columns), then every number of the JSON object. */
bench_sampler_t *bench_sample(bench_t *b, const char *url, long every_ms, bench_table_t *into,
                              const char *tags_fmt, ...) __attribute__((format(printf, 5, 6)));
/* The same for a process's resources, read from /proc (no HTTP: it works while the process
 * is out of fds): rows of t_s, TAGS, fds, rss_kb. */
bench_sampler_t *bench_sample_proc(bench_t *b, const bench_proc_t *p, long every_ms,
                                   bench_table_t *into, const char *tags_fmt, ...)
    __attribute__((format(printf, 5, 6)));
int bench_sample_stop(bench_sampler_t *s); /* returns how many samples it took */

/* ---- what the run found ---- */
/* The rows of T matching WHERE (NULL: all) as an aligned table in the summary: COLS names the
 * columns, space separated ("variant label offered_rps p99_ms"); numbers print with bench_fmt. */
void bench_print(bench_t *b, const bench_table_t *t, const char *cols, const char *where_fmt, ...)
    __attribute__((format(printf, 4, 5)));
/* A line of the summary: stdout and summary.txt. */
void bench_say(bench_t *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Progress and notes: stderr only. */
void bench_log(bench_t *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* A figure in summary.json: figures[variant][name] (variant NULL: the lab's own figures). */
void bench_figure(bench_t *b, const char *variant, const char *name, double value);
/* A target: NAME, the measured VALUE, OP (">=", "<=", ">", "<", "==", "!="), the BOUND, and why
 * that bound. Printed as one line of the summary:
 *   target met     solution peak (req/s): 9482 >= 8000  (80% of the limit min(N/D, ceiling))
 *   target MISSED  solution loop lag max (ms): 6.21 < 5  (a loop that never blocks ...)
 * counted in the exit status, and written to summary.json. A NAN value is missed ("no data").
 * Returns 1 when met. */
int bench_target(bench_t *b, const char *name, double value, const char *op, double bound,
                 const char *reason_fmt, ...) __attribute__((format(printf, 6, 7)));

/* The same check about one VARIANT: a target when VARIANT is the kit's pitfall or solution (their
 * claims); for any other (the exercise, an extra variant) it prints as "check met/MISSED ...",
 * goes to summary.json's "checks" and is not counted in the exit status: a learner's exercise
 * that still equals the pitfall must not fail `make bench`. Returns 1 when met. */
int bench_check(bench_t *b, const char *variant, const char *name, double value, const char *op,
                double bound, const char *reason_fmt, ...) __attribute__((format(printf, 7, 8)));

/* ---- plots ---- */
/* Renders OUT.png and OUT.svg in bench_dir with gnuplot script GP ("throughput": a shared
 * template, harness/plot/throughput.gp; "labs/03-unbounded-fanout/fanout.gp": a lab's own).
 * vars: gnuplot assignments separated by ';' ("csv='x.csv'; variants='pitfall solution'");
 * csv and file names in them are relative to bench_dir. The engine adds plotdir, term and out.
 * 0, or -1 (printed; the bench goes on). */
int bench_plot(bench_t *b, const char *gp, const char *out, const char *vars_fmt, ...)
    __attribute__((format(printf, 4, 5)));
/* The same picture as text (gnuplot's dumb terminal), appended to summary.txt. */
int bench_plot_text(bench_t *b, const char *gp, const char *vars_fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* fmt: a figure with as many decimals as it deserves (1234, 12.3, 1.23), in a static buffer
 * of 8 rotating slots (several in one printf are fine). */
const char *bench_fmt(double v);

#endif
