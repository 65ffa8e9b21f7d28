/* hello.c - the trivial handler: GET / answers 200 "ok" at once, on the same service shell every
 * lab uses. Its throughput is the ceiling a lab's solution is compared with ("the best this
 * shell can do on this machine"), and the target the load generator is checked against wrk on.
 *
 *   build/bin/hello --port 0      prints "listening on http://127.0.0.1:PORT"
 */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "shell.h"

typedef struct hello {
  uv_loop_t loop;
  shell_t *shell;
  uv_signal_t sigint, sigterm;
} hello_t;

static void usage(FILE *out) {
  fprintf(out,
          "usage: hello [--port N] [--host ADDR] [--header-timeout-ms N] [--idle-timeout-ms N]\n"
          "A trivial HTTP service: GET / answers 200 \"ok\" at once. Used to measure the\n"
          "ceiling of the service shell and to compare build/bin/loadgen with wrk.\n"
          "GET /sleep?ms=N blocks the loop for N ms on purpose (the stall detector's tests;\n"
          "run with LOOPHOLES_STALL_MS=100 to see it named on stderr and at /debug/stalls);\n"
          "GET /spin?ms=N does the same computing: a busy loop until it used N ms of CPU.\n"
          "  --port N     port (default 8080; 0 picks a free one)\n"
          "  --host ADDR  address (default 127.0.0.1)\n"
          "  --header-timeout-ms N  a request's headers must arrive within N ms of its first\n"
          "               byte (or of the accept), else 408 and close (default 10000)\n"
          "  --idle-timeout-ms N    close a keep-alive connection idle for N ms (default 60000)\n"
          "  -h, --help   this text\n");
}

static void handle_root(shell_request_t *req, void *data) {
  (void)data;
  shell_respond(req, 200, "text/plain", "ok\n", 3);
}

/* GET /sleep?ms=N blocks the loop for N ms (at most 10 s) on purpose, and says how long it
 * really slept: what the stall detector's tests measure it against. */
static void handle_sleep(shell_request_t *req, void *data) {
  long ms = shell_query_long(req, "ms", 100);
  uint64_t t0 = uv_hrtime();
  (void)data;
  if (ms < 0 || ms > 10000) {
    shell_respondf(req, 400, "text/plain", "ms must be 0..10000\n");
    return;
  }
  uv_sleep((unsigned)ms);
  shell_respondf(req, 200, "text/plain", "slept %.3f ms\n", (double)(uv_hrtime() - t0) / 1e6);
}

/* Thread CPU time in ns: what a CPU-bound callback spends, however long the machine makes it wait. */
static uint64_t thread_cpu_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
  return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* GET /spin?ms=N holds the loop computing, not sleeping, until its thread has used N ms of CPU
 * (at most 10 s): a CPU-bound callback with a fixed amount of work, which a busy machine
 * stretches in wall time as it would a real one. Says how long it really held the loop. */
static void handle_spin(shell_request_t *req, void *data) {
  long ms = shell_query_long(req, "ms", 100);
  uint64_t t0 = uv_hrtime(), cpu0 = thread_cpu_ns(), cpu = cpu0;
  (void)data;
  if (ms < 0 || ms > 10000) {
    shell_respondf(req, 400, "text/plain", "ms must be 0..10000\n");
    return;
  }
  while (cpu - cpu0 < (uint64_t)ms * 1000000u) cpu = thread_cpu_ns();
  shell_respondf(req, 200, "text/plain", "spun %.3f ms (%.3f ms of CPU)\n",
                 (double)(uv_hrtime() - t0) / 1e6, (double)(cpu - cpu0) / 1e6);
}

static void on_closed_noop(uv_handle_t *h) { (void)h; }

static void on_shell_closed(shell_t *shell, void *data) {
  hello_t *h = data;
  (void)shell;
  uv_close((uv_handle_t *)&h->sigint, on_closed_noop);
  uv_close((uv_handle_t *)&h->sigterm, on_closed_noop);
}

/* Called by libuv on SIGINT/SIGTERM. */
static void on_signal(uv_signal_t *sig, int signum) {
  hello_t *h = sig->data;
  (void)signum;
  uv_signal_stop(&h->sigint);
  uv_signal_stop(&h->sigterm);
  shell_close(h->shell, on_shell_closed, h);
}

int main(int argc, char **argv) {
  hello_t h;
  const char *host = "127.0.0.1";
  long port = 8080;
  shell_config_t cfg;
  int rc;

  memset(&cfg, 0, sizeof cfg);
  for (int i = 1; i < argc; i++) {
    if (strcmp(argv[i], "-h") == 0 || strcmp(argv[i], "--help") == 0) {
      usage(stdout);
      return 0;
    } else if (strcmp(argv[i], "--port") == 0 && i + 1 < argc) {
      char *end;
      port = strtol(argv[++i], &end, 10);
      if (*end != '\0' || port < 0 || port > 65535) {
        fprintf(stderr, "hello: --port wants 0..65535, not '%s'\n", argv[i]);
        usage(stderr);
        return 2;
      }
    } else if (strcmp(argv[i], "--host") == 0 && i + 1 < argc) {
      host = argv[++i];
    } else if ((strcmp(argv[i], "--header-timeout-ms") == 0 ||
                strcmp(argv[i], "--idle-timeout-ms") == 0) && i + 1 < argc) {
      char *end;
      const char *flag = argv[i];
      long ms = strtol(argv[++i], &end, 10);
      if (*end != '\0' || ms < 1 || ms > 3600000) {
        fprintf(stderr, "hello: %s wants 1..3600000 ms, not '%s'\n", flag, argv[i]);
        usage(stderr);
        return 2;
      }
      if (flag[2] == 'h') cfg.header_timeout_ms = (unsigned)ms;
      else cfg.idle_timeout_ms = (unsigned)ms;
    } else {
      fprintf(stderr, "hello: unknown or incomplete option '%s'\n", argv[i]);
      usage(stderr);
      return 2;
    }
  }
  signal(SIGPIPE, SIG_IGN);
  memset(&h, 0, sizeof h);
  rc = uv_loop_init(&h.loop);
  if (rc != 0) {
    fprintf(stderr, "hello: uv_loop_init: %s\n", uv_strerror(rc));
    return 1;
  }
  uv_loop_configure(&h.loop, UV_METRICS_IDLE_TIME);
  rc = shell_create(&h.shell, &h.loop, &cfg);
  if (rc != 0) return 1;
  shell_route(h.shell, "GET", "/", handle_root, NULL);
  shell_route(h.shell, "GET", "/sleep", handle_sleep, NULL);
  shell_route(h.shell, "GET", "/spin", handle_spin, NULL);
  rc = shell_listen(h.shell, host, (int)port);
  if (rc != 0) return 1;
  uv_signal_init(&h.loop, &h.sigint);
  uv_signal_init(&h.loop, &h.sigterm);
  h.sigint.data = h.sigterm.data = &h;
  uv_signal_start(&h.sigint, on_signal, SIGINT);
  uv_signal_start(&h.sigterm, on_signal, SIGTERM);
  printf("listening on http://%s:%d\n", host, shell_port(h.shell));
  fflush(stdout);
  uv_run(&h.loop, UV_RUN_DEFAULT);
  rc = uv_loop_close(&h.loop);
  if (rc != 0) {
    fprintf(stderr, "hello: uv_loop_close: %s\n", uv_strerror(rc));
    return 1;
  }
  return 0;
}
