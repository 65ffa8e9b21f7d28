/* labrt.c - runs one lab variant as a service (lab_main) or inside a test (labrun_*).
 * See labrt.h. The runtime owns the loop, the shell, signals and shutdown; the lab only
 * registers handlers. */
#include "labrt.h"

#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#if defined(__SANITIZE_ADDRESS__)
#include <sanitizer/lsan_interface.h>
#define LEAK_CHECK() __lsan_do_recoverable_leak_check()
#else
#define LEAK_CHECK() 0
#endif

/* ---------------------------------------------------------------- options */

static void lab_usage(const lab_def_t *def, const char *prog, FILE *out) {
  fprintf(out,
          "usage: %s [--port N] [--host ADDR] [options]\n"
          "Lab %s, %s variant: an HTTP service on libuv (see labs/%s/README.md).\n\n"
          "  --port N        port to listen on; 0 picks a free one (default 8080)\n"
          "  --host ADDR     address to bind (default 127.0.0.1)\n"
          "  --reuseport     set SO_REUSEPORT: another instance may listen on the same port\n"
          "                  (a rolling restart; the kernel spreads connections over both)\n"
          "  --header-timeout-ms N  a request's headers must arrive within N ms of its\n"
          "                  first byte (or of the connection's accept), else 408 and close\n"
          "                  (default 10000)\n"
          "  --idle-timeout-ms N    an idle keep-alive connection is closed after N ms\n"
          "                  (default 60000)\n"
          "  --stall-ms N    the stall detector: name every callback that blocks the loop\n"
          "                  longer than N ms, on stderr and at /debug/stalls (default off;\n"
          "                  or LOOPHOLES_STALL_MS=N; see docs/stalls.md)\n",
          prog, def->slug, def->variant, def->slug);
  for (size_t i = 0; i < def->n_opts; i++) {
    const lab_opt_t *o = &def->opts[i];
    char flag[64];
    const char *cfg = def->defaults;
    snprintf(flag, sizeof flag, "--%s %s", o->flag, o->type == LAB_OPT_INT ? "N" : "S");
    if (o->type == LAB_OPT_INT)
      fprintf(out, "  %-15s %s (default %ld)\n", flag, o->help, *(const long *)(cfg + o->offset));
    else
      fprintf(out, "  %-15s %s (default %s)\n", flag, o->help,
              *(const char *const *)(cfg + o->offset));
  }
  fprintf(out,
          "  -h, --help      this text\n\n"
          "It prints \"listening on http://ADDR:PORT\" once it listens, serves GET /debug/stats\n"
          "(loop lag, in flight, RSS, fds as JSON), and exits cleanly on SIGINT or SIGTERM.\n");
}

/* Parses "--name VALUE" / "--name=VALUE" pairs into cfg. Returns 0, or -1 with a message. */
static int parse_lab_args(const lab_def_t *def, void *cfg, int argc, const char *const *argv,
                          int *port, const char **host, int *help, shell_config_t *shell_cfg) {
  for (int i = 0; i < argc; i++) {
    const char *arg = argv[i];
    const char *value = NULL;
    char name[64];
    if (strcmp(arg, "-h") == 0 || strcmp(arg, "--help") == 0) {
      *help = 1;
      continue;
    }
    if (strcmp(arg, "--reuseport") == 0) { /* a flag: no value */
      shell_cfg->reuse_port = 1;
      continue;
    }
    if (strncmp(arg, "--", 2) != 0) {
      fprintf(stderr, "unexpected argument '%s'\n", arg);
      return -1;
    }
    const char *eq = strchr(arg, '=');
    size_t nlen = eq ? (size_t)(eq - arg - 2) : strlen(arg) - 2;
    if (nlen >= sizeof name) nlen = sizeof name - 1;
    memcpy(name, arg + 2, nlen);
    name[nlen] = '\0';
    /* Known first: "needs a value" would mislead about an option that does not exist. */
    const lab_opt_t *o = NULL;
    for (size_t k = 0; k < def->n_opts; k++)
      if (strcmp(def->opts[k].flag, name) == 0) o = &def->opts[k];
    /* The shell's own options, for every lab. */
    unsigned *shell_ms = strcmp(name, "header-timeout-ms") == 0 ? &shell_cfg->header_timeout_ms
                         : strcmp(name, "idle-timeout-ms") == 0 ? &shell_cfg->idle_timeout_ms
                         : strcmp(name, "stall-ms") == 0        ? &shell_cfg->stall_ms
                                                                : NULL;
    if (o == NULL && shell_ms == NULL && strcmp(name, "port") != 0 && strcmp(name, "host") != 0) {
      fprintf(stderr, "unknown option '--%s'\n", name);
      return -1;
    }
    if (eq) {
      value = eq + 1;
    } else if (i + 1 < argc) {
      value = argv[++i];
    } else {
      fprintf(stderr, "option --%s needs a value\n", name);
      return -1;
    }
    char *end;
    if (shell_ms != NULL) {
      errno = 0;
      long ms = strtol(value, &end, 10);
      if (*value == '\0' || *end != '\0' || errno != 0 || ms < 1 || ms > 3600000) {
        fprintf(stderr, "--%s wants a number of ms from 1 to 3600000, not '%s'\n", name, value);
        return -1;
      }
      *shell_ms = (unsigned)ms;
      continue;
    }
    if (strcmp(name, "port") == 0 || strcmp(name, "host") == 0) {
      if (name[0] == 'h') {
        *host = value;
        continue;
      }
      long p = strtol(value, &end, 10);
      if (*value == '\0' || *end != '\0' || p < 0 || p > 65535) {
        fprintf(stderr, "--port wants a number from 0 to 65535, not '%s'\n", value);
        return -1;
      }
      *port = (int)p;
      continue;
    }
    if (o->type == LAB_OPT_INT) {
      errno = 0;
      long x = strtol(value, &end, 10);
      if (*value == '\0' || *end != '\0' || errno != 0 || x < 0) {
        fprintf(stderr, "--%s wants a number >= 0, not '%s'\n", name, value);
        return -1;
      }
      *(long *)((char *)cfg + o->offset) = x;
    } else {
      *(const char **)((char *)cfg + o->offset) = value;
    }
  }
  return 0;
}

/* ---------------------------------------------------------------- one running lab */

typedef struct lab_instance {
  const lab_def_t *def;
  uv_loop_t loop;
  shell_t *shell;
  void *lab;
  void *cfg;
  uv_signal_t sigint, sigterm;
  uv_async_t stop_async;
  int use_signals;
  int use_async;
  int stopping;
  int signals_unrefd;      /* the shell has closed: the signal handles only wait for a second one */
  int usage_error;         /* lab_create said UV_EINVAL: the options do not fit together */
  shell_config_t shell_cfg; /* the shell's options (--header-timeout-ms, ...); 0 = default */
} lab_instance_t;

static void on_handle_closed_noop(uv_handle_t *h) { (void)h; }

/* Called by the shell once it has drained: the lab goes next, then our own handles. */
static void on_shell_closed(shell_t *shell, void *data) {
  lab_instance_t *li = data;
  (void)shell;
  li->shell = NULL;
  if (li->lab) li->def->destroy(li->lab);
  li->lab = NULL;
  /* The lab may still be draining (lab 10 finishes its background jobs after lab_destroy): the
   * signal handles keep watching, so that a second SIGTERM still forces the exit and says so,
   * but unref'd, so they do not keep the loop alive. lab_main closes them once uv_run returns. */
  if (li->use_signals) {
    uv_unref((uv_handle_t *)&li->sigint);
    uv_unref((uv_handle_t *)&li->sigterm);
    li->signals_unrefd = 1;
  }
  if (li->use_async) uv_close((uv_handle_t *)&li->stop_async, on_handle_closed_noop);
}

static void instance_stop(lab_instance_t *li, int signum) {
  if (li->stopping) return;
  li->stopping = 1;
  /* A lab that set a shutdown hook (shell_set_shutdown_hook) owns what the signal does; it ends
   * with shell_shutdown_finish, which comes back here through on_shell_closed. */
  if (shell_shutdown_begin(li->shell, signum, on_shell_closed, li)) return;
  shell_close(li->shell, on_shell_closed, li);
}

/* Called by libuv on SIGINT/SIGTERM: the first one drains, the second one gives up. */
static void on_signal(uv_signal_t *sig, int signum) {
  lab_instance_t *li = sig->data;
  if (li->stopping) {
    fprintf(stderr, "%s again: exiting without draining\n", strsignal(signum));
    exit(1);
  }
  fprintf(stderr, "%s: draining %u request(s) in flight, then exiting\n", strsignal(signum),
          li->shell ? shell_inflight(li->shell) : 0);
  instance_stop(li, signum);
}

/* Called on the lab's loop when labrun_stop asks for a shutdown. */
static void on_stop_async(uv_async_t *a) { instance_stop(a->data, SIGTERM); }

static int instance_start(lab_instance_t *li, const lab_def_t *def, const char *host, int port) {
  int rc;
  li->def = def;
  rc = uv_loop_init(&li->loop);
  if (rc != 0) {
    fprintf(stderr, "uv_loop_init: %s\n", uv_strerror(rc));
    return rc;
  }
  rc = uv_loop_configure(&li->loop, UV_METRICS_IDLE_TIME);
  if (rc != 0) fprintf(stderr, "uv_loop_configure(UV_METRICS_IDLE_TIME): %s\n", uv_strerror(rc));
  rc = shell_create(&li->shell, &li->loop, &li->shell_cfg);
  if (rc != 0) goto fail_shell;
  rc = def->create(&li->lab, li->shell, li->cfg);
  if (rc != 0) {
    fprintf(stderr, "lab %s (%s): lab_create: %s\n", def->slug, def->variant, uv_strerror(rc));
    li->usage_error = rc == UV_EINVAL;
    goto fail_lab;
  }
  rc = shell_listen(li->shell, host, port);
  if (rc != 0) goto fail_lab;
  return 0;

fail_lab:
  /* Nothing is in flight yet: closing the shell destroys the lab (if any) and its handles. */
  li->use_signals = li->use_async = 0;
  li->stopping = 1;
  shell_close(li->shell, on_shell_closed, li);
  uv_run(&li->loop, UV_RUN_DEFAULT);
fail_shell:
  uv_loop_close(&li->loop);
  return rc;
}

static void print_handle(uv_handle_t *h, void *arg) {
  (void)arg;
  if (!uv_is_closing(h)) fprintf(stderr, "  still open: %s handle %p\n", uv_handle_type_name(h->type), (void *)h);
}

static void count_open(uv_handle_t *h, void *arg) {
  if (!uv_is_closing(h)) (*(unsigned *)arg)++;
}

/* ---------------------------------------------------------------- lab_main */

int lab_main(const lab_def_t *def, int argc, char **argv) {
  lab_instance_t li;
  const char *host = "127.0.0.1";
  int port = 8080, help = 0, rc;
  const char *prog = strrchr(argv[0], '/') ? strrchr(argv[0], '/') + 1 : argv[0];

  memset(&li, 0, sizeof li);
  li.cfg = malloc(def->config_size);
  if (li.cfg == NULL) return 1;
  memcpy(li.cfg, def->defaults, def->config_size);
  if (parse_lab_args(def, li.cfg, argc - 1, (const char *const *)argv + 1, &port, &host, &help,
                     &li.shell_cfg) != 0) {
    lab_usage(def, prog, stderr);
    free(li.cfg);
    return 2;
  }
  if (help) {
    lab_usage(def, prog, stdout);
    free(li.cfg);
    return 0;
  }
  signal(SIGPIPE, SIG_IGN);
  rc = instance_start(&li, def, host, port);
  if (rc != 0) {
    /* UV_EINVAL from lab_create is a usage error (exit 2), like a bad value for one option. */
    if (li.usage_error) lab_usage(def, prog, stderr);
    free(li.cfg);
    return li.usage_error ? 2 : 1;
  }
  li.use_signals = 1;
  uv_signal_init(&li.loop, &li.sigint);
  uv_signal_init(&li.loop, &li.sigterm);
  li.sigint.data = li.sigterm.data = &li;
  uv_signal_start(&li.sigint, on_signal, SIGINT);
  uv_signal_start(&li.sigterm, on_signal, SIGTERM);

  printf("listening on http://%s:%d\n", host, shell_port(li.shell));
  fflush(stdout);
  uv_run(&li.loop, UV_RUN_DEFAULT);
  if (li.signals_unrefd) { /* everything else has ended: now the signal handles go too */
    uv_close((uv_handle_t *)&li.sigint, on_handle_closed_noop);
    uv_close((uv_handle_t *)&li.sigterm, on_handle_closed_noop);
    uv_run(&li.loop, UV_RUN_DEFAULT);
  }

  rc = uv_loop_close(&li.loop);
  if (rc != 0) {
    fprintf(stderr, "uv_loop_close: %s: the lab left handles open:\n", uv_strerror(rc));
    uv_walk(&li.loop, print_handle, NULL);
    free(li.cfg);
    return 1;
  }
  free(li.cfg);
  return 0;
}

/* ---------------------------------------------------------------- labrun: tests */

struct labrun {
  lab_instance_t li;
  pthread_t thread;
  pthread_mutex_t mu;
  pthread_cond_t cv;
  int finished;
  labrun_report_t report;
  char url[64];
};

static void *labrun_thread(void *arg) {
  labrun_t *run = arg;
  unsigned open = 0;
  uv_run(&run->li.loop, UV_RUN_DEFAULT);
  uv_walk(&run->li.loop, count_open, &open);
  pthread_mutex_lock(&run->mu);
  run->report.handles_left = open;
  run->report.loop_close_rc = uv_loop_close(&run->li.loop);
  run->report.drained = 1;
  run->finished = 1;
  pthread_cond_signal(&run->cv);
  pthread_mutex_unlock(&run->mu);
  return NULL;
}

int labrun_start(labrun_t **out, const lab_def_t *def, const char *const *args) {
  labrun_t *run = calloc(1, sizeof *run);
  int port = 0, help = 0, argc = 0, rc;
  const char *host = "127.0.0.1";
  if (run == NULL) return UV_ENOMEM;
  run->li.cfg = malloc(def->config_size);
  if (run->li.cfg == NULL) {
    free(run);
    return UV_ENOMEM;
  }
  memcpy(run->li.cfg, def->defaults, def->config_size);
  while (args && args[argc]) argc++;
  if (parse_lab_args(def, run->li.cfg, argc, args, &port, &host, &help, &run->li.shell_cfg) != 0) {
    free(run->li.cfg);
    free(run);
    return UV_EINVAL;
  }
  signal(SIGPIPE, SIG_IGN);
  rc = instance_start(&run->li, def, host, port);
  if (rc != 0) {
    free(run->li.cfg);
    free(run);
    return rc;
  }
  run->li.use_async = 1;
  rc = uv_async_init(&run->li.loop, &run->li.stop_async, on_stop_async);
  if (rc != 0) {
    fprintf(stderr, "uv_async_init: %s\n", uv_strerror(rc));
    return rc; /* the loop is left behind: this only happens when the process is in trouble */
  }
  run->li.stop_async.data = &run->li;
  snprintf(run->url, sizeof run->url, "http://%s:%d", host, shell_port(run->li.shell));
  pthread_mutex_init(&run->mu, NULL);
  pthread_cond_init(&run->cv, NULL);
  rc = pthread_create(&run->thread, NULL, labrun_thread, run);
  if (rc != 0) {
    fprintf(stderr, "pthread_create: %s\n", strerror(rc));
    return UV_EAGAIN;
  }
  *out = run;
  return 0;
}

int labrun_port(const labrun_t *run) { return atoi(strrchr(run->url, ':') + 1); }
const char *labrun_url(const labrun_t *run) { return run->url; }

int labrun_stop(labrun_t *run, unsigned timeout_ms, labrun_report_t *report) {
  struct timespec deadline;
  int rc = 0;
  uv_async_send(&run->li.stop_async);
  clock_gettime(CLOCK_REALTIME, &deadline);
  deadline.tv_sec += timeout_ms / 1000;
  deadline.tv_nsec += (long)(timeout_ms % 1000) * 1000000L;
  if (deadline.tv_nsec >= 1000000000L) {
    deadline.tv_sec++;
    deadline.tv_nsec -= 1000000000L;
  }
  pthread_mutex_lock(&run->mu);
  while (!run->finished && rc == 0) rc = pthread_cond_timedwait(&run->cv, &run->mu, &deadline);
  int finished = run->finished;
  if (finished && report) *report = run->report;
  pthread_mutex_unlock(&run->mu);
  if (!finished) {
    /* The lab's loop never ended: something still holds it (an open handle, a request never
     * answered). The thread is left running; the test process reports and exits. */
    if (report) {
      report->loop_close_rc = UV_EBUSY;
      report->handles_left = 1;
      report->drained = 0;
    }
    return UV_ETIMEDOUT;
  }
  pthread_join(run->thread, NULL);
  pthread_mutex_destroy(&run->mu);
  pthread_cond_destroy(&run->cv);
  free(run->li.cfg);
  free(run);
  /* Everything the lab allocated should be gone now: ask LeakSanitizer (when built with it). */
  if (report) report->leaks = LEAK_CHECK() ? 1 : 0;
  return 0;
}
