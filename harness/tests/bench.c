/* tests/bench.c - the bench engine (harness/bench/bench.h) and its glue (harness/scripts/bench.sh).
 *
 * Each test runs bench_main in-process with a tiny lab of its own (slug 01-blocking-sleep, so the
 * manifest block exists) writing to a temporary --out folder, then reads what it wrote: the
 * target lines, summary.json, the exit status; one test interrupts a bench that has a process
 * running and checks that nothing is left.
 */
#include <criterion/criterion.h>
#include <errno.h>
#include <limits.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include <jansson.h>

#include "bench.h"
#include "testkit.h"

static char out_dir[PATH_MAX], root[PATH_MAX];
static int runs, pipe_fd = -1;

/* ---- fixtures ---- */

static void setup(void) {
  snprintf(out_dir, sizeof out_dir, "/tmp/loopholes-benchtest.XXXXXX");
  cr_assert_not_null(mkdtemp(out_dir), "mkdtemp");
  char path[PATH_MAX + 8];
  snprintf(path, sizeof path, "%s/../..", tk_bin_dir());
  cr_assert_not_null(realpath(path, root), "realpath %s", path);
  setenv("LOOPHOLES_ROOT", root, 1);
  setenv("LOOPHOLES_BIN", tk_bin_dir(), 1);
  runs = 0;
}

static void teardown(void) {
  char cmd[PATH_MAX + 16];
  snprintf(cmd, sizeof cmd, "rm -rf '%s'", out_dir);
  if (system(cmd) != 0) {}
}

/* Runs the bench with lab and args ("--quick" ...), --out out_dir appended. */
static int bench(const bench_lab_t *lab, const char *a1, const char *a2, const char *a3) {
  char *argv[8] = {"bench01"};
  int argc = 1;
  const char *extra[] = {a1, a2, a3};
  for (int i = 0; i < 3; i++)
    if (extra[i]) argv[argc++] = (char *)extra[i];
  argv[argc++] = "--out";
  argv[argc++] = out_dir;
  fflush(stdout);
  return bench_main(argc, argv, lab);
}

static char *slurp(const char *name) {
  char path[PATH_MAX + 64];
  snprintf(path, sizeof path, "%s/01-blocking-sleep/%s", out_dir, name);
  FILE *f = fopen(path, "r");
  cr_assert_not_null(f, "%s was not written", path);
  static char buf[65536];
  size_t n = fread(buf, 1, sizeof buf - 1, f);
  buf[n] = '\0';
  fclose(f);
  return buf;
}

/* ---- tiny labs ---- */

static int run_table(bench_t *b, const char *v) {
  runs++;
  bench_table_t *t = bench_table(b, "t.csv");
  bench_row(t);
  bench_sets(t, "variant", "%s", v);
  bench_set(t, "value", 3);
  return 0;
}

static void report_mixed(bench_t *b) {
  double v = bench_query(bench_table(b, "t.csv"), BENCH_LAST, "value", "variant=solution");
  bench_target(b, "t_met", v, ">=", 2, "r%d", 1);
  bench_target(b, "t_missed", v - 2, ">=", 2, "r%d", 2);
}

static void report_met(bench_t *b) {
  double v = bench_query(bench_table(b, "t.csv"), BENCH_LAST, "value", "variant=solution");
  bench_target(b, "t_met", v, "==", 3, "read back from the table");
  bench_check(b, "exercise", "c_missed", 1, ">", 2, "a check of the exercise");
}

/* ---- tests ---- */

TestSuite(bench, .init = setup, .fini = teardown);

Test(bench, targets_print_count_and_go_to_summary_json, .timeout = 30) {
  int rc = bench(&(bench_lab_t){.slug = "01-blocking-sleep", .run = run_table,
                                .report = report_mixed}, "--quick", "--variants", "solution");
  cr_assert_eq(rc, 1, "exit status %d with one target missed: a missed target must fail the run",
               rc);
  const char *txt = slurp("summary.txt");
  cr_assert(strstr(txt, "target met     t_met: 3 >= 2  (r1)\n"),
            "the met target's line is not in the one format:\n%s", txt);
  cr_assert(strstr(txt, "target MISSED  t_missed: 1 >= 2  (r2)\n"),
            "the missed target's line is not in the one format:\n%s", txt);
  json_error_t err;
  json_t *j = json_loads(slurp("summary.json"), 0, &err);
  cr_assert_not_null(j, "summary.json is not JSON: %s (line %d)", err.text, err.line);
  cr_assert_str_eq(json_string_value(json_object_get(j, "lab")), "01-blocking-sleep");
  cr_assert(json_is_true(json_object_get(j, "quick")), "summary.json: quick is not true");
  cr_assert(json_is_string(json_object_get(j, "timestamp")), "summary.json: no timestamp");
  cr_assert(json_integer_value(json_object_get(json_object_get(j, "machine"), "cpus")) >= 1,
            "summary.json: machine.cpus missing");
  json_t *t = json_object_get(j, "targets");
  cr_assert_eq(json_array_size(t), 2, "summary.json has %zu targets, want 2", json_array_size(t));
  json_t *t1 = json_array_get(t, 1);
  cr_assert_str_eq(json_string_value(json_object_get(t1, "name")), "t_missed");
  cr_assert_str_eq(json_string_value(json_object_get(t1, "op")), ">=");
  cr_assert_eq(json_number_value(json_object_get(t1, "value")), 1);
  cr_assert_eq(json_number_value(json_object_get(t1, "bound")), 2);
  cr_assert(json_is_false(json_object_get(t1, "met")), "t_missed: met is not false");
  cr_assert_str_eq(json_string_value(json_object_get(t1, "reason")), "r2");
  cr_assert(json_is_true(json_object_get(json_array_get(t, 0), "met")), "t_met: met not true");
  cr_assert_eq(json_integer_value(json_object_get(j, "targets_missed")), 1);
  json_decref(j);
}

Test(bench, met_targets_exit_0_and_replot_reads_the_tables, .timeout = 30) {
  const bench_lab_t lab = {.slug = "01-blocking-sleep", .run = run_table, .report = report_met};
  cr_assert_eq(bench(&lab, "--variants", "solution", NULL), 0, "every target met: exit 0");
  cr_assert_eq(runs, 1, "run was called %d times for one variant", runs);
  cr_assert(strstr(slurp("t.csv"), "variant,value\nsolution,3\n"), "t.csv: %s", slurp("t.csv"));
  cr_assert_eq(bench(&lab, "--replot", NULL, NULL), 0, "--replot: the target from the CSV");
  cr_assert_eq(runs, 1, "--replot must not run the variants again");
  json_t *j = json_loads(slurp("summary.json"), 0, NULL);
  json_t *c = json_array_get(json_object_get(j, "checks"), 0);
  cr_assert_str_eq(json_string_value(json_object_get(c, "variant")), "exercise",
                   "a check of the exercise goes to checks, not counted");
  cr_assert(json_is_true(json_object_get(j, "replot")), "summary.json: replot is not true");
  json_decref(j);
}

static int run_load(bench_t *b, const char *v) {
  (void)v;
  bench_proc_t *hello = bench_start(b, &(bench_spawn_t){.bin = "hello"});
  if (!hello) return -1;
  char url[96];
  snprintf(url, sizeof url, "%s/", hello->url);
  bench_result_t r;
  bench_table_t *t = bench_table(b, "load.csv"), *s = bench_table(b, "samples.csv");
  bench_sampler_t *sm = bench_sample(b, url, 50, s, "step=1");
  bench_load_t l = {.url = url, .rate = 200, .conns = 5, .duration_s = 0.5};
  int rc = bench_load(b, &l, &r);
  bench_sample_stop(sm);
  bench_row(t);
  bench_set_result(t, &r);
  bench_set(t, "conns_opened", (double)r.conns_opened);
  bench_set(t, "pid", hello->pid);
  return rc;
}

static void report_load(bench_t *b) {
  bench_table_t *t = bench_table(b, "load.csv");
  bench_target(b, "responses/s", bench_at(t, 0, "ok_rps"), ">=", 180, "200 offered");
  bench_target(b, "connections", bench_at(t, 0, "conns_opened"), "==", 5, "-c 5");
}

Test(bench, load_and_processes, .timeout = 30) {
  int rc = bench(&(bench_lab_t){.slug = "01-blocking-sleep", .run = run_load,
                                .report = report_load}, "--variants", "solution", NULL);
  cr_assert_eq(rc, 0, "200 req/s against build/bin/hello on 5 connections: %s",
               slurp("summary.txt"));
  const char *csv = slurp("load.csv");
  cr_assert(strstr(csv, "label,offered_rps,achieved_rps,ok_rps,sent,responses,ok,err_connect,"
                        "err_timeout,err_http,err_other,p50_ms,p90_ms,p99_ms,p999_ms,max_ms,"
                        "mean_ms,duration_s,"), "load.csv has not loadgen's columns: %s", csv);
  const char *pid = strrchr(csv, ',') + 1;
  char path[64];
  snprintf(path, sizeof path, "/proc/%d", atoi(pid));
  cr_assert(access(path, F_OK) != 0, "hello (pid %d) still runs after its variant ended",
            atoi(pid));
}

static int run_forever(bench_t *b, const char *v) {
  (void)v;
  bench_proc_t *hello = bench_start(b, &(bench_spawn_t){.bin = "hello"});
  if (!hello) return -1;
  if (write(pipe_fd, &hello->pid, sizeof hello->pid) != sizeof hello->pid) return -1;
  bench_sleep_ms(20000);
  return 0;
}

Test(bench, interrupt_leaves_no_process, .timeout = 30) {
  int fds[2];
  cr_assert_eq(pipe(fds), 0);
  pid_t child = fork();
  cr_assert(child >= 0, "fork");
  if (child == 0) {
    close(fds[0]);
    pipe_fd = fds[1];
    _exit(bench(&(bench_lab_t){.slug = "01-blocking-sleep", .run = run_forever},
                "--variants", "solution", NULL));
  }
  close(fds[1]);
  int hello = 0;
  cr_assert_eq(read(fds[0], &hello, sizeof hello), (ssize_t)sizeof hello, "no pid from the bench");
  kill(child, SIGINT);
  int status = 0;
  waitpid(child, &status, 0);
  cr_assert(WIFEXITED(status) && WEXITSTATUS(status) == 130,
            "Ctrl-C: the bench must exit 130 (status %d)", status);
  char path[64];
  snprintf(path, sizeof path, "/proc/%d", hello);
  cr_assert(access(path, F_OK) != 0, "hello (pid %d) outlived the interrupted bench", hello);
}

Test(bench, usage_errors_exit_2, .timeout = 30) {
  const bench_lab_t lab = {.slug = "01-blocking-sleep", .run = run_table};
  cr_assert_eq(bench(&lab, "--bogus", NULL, NULL), 2, "an unknown option");
  cr_assert_eq(bench(&lab, "--variants", "nosuch", NULL), 2, "a variant that is not built");
  cr_assert_eq(bench(&lab, "--help", NULL, NULL), 0, "--help");
  char cmd[PATH_MAX + 128];
  snprintf(cmd, sizeof cmd, "cd '%s' && harness/scripts/bench.sh --bogus >/dev/null 2>&1", root);
  int st = system(cmd);
  cr_assert(WIFEXITED(st) && WEXITSTATUS(st) == 2, "bench.sh --bogus: exit %d", WEXITSTATUS(st));
  snprintf(cmd, sizeof cmd, "cd '%s' && harness/scripts/bench.sh --lab 99 >/dev/null 2>&1", root);
  st = system(cmd);
  cr_assert(WIFEXITED(st) && WEXITSTATUS(st) == 2, "bench.sh --lab 99: exit %d", WEXITSTATUS(st));
}
