/* proc.h - start a kit tool as a child process and stop it: the one spawn implementation, used by
 * the test kit (tk_spawn) and the bench engine (bench_start).
 *
 * A tool started with --port 0 prints "listening on http://127.0.0.1:PORT" on stdout once it
 * accepts connections; proc_spawn waits for that line. The child's stdout stays a pipe we keep
 * open (so its later writes never fail), and the child gets SIGTERM when its parent dies.
 */
#ifndef LOOPHOLES_PROC_H
#define LOOPHOLES_PROC_H

typedef struct proc {
  int pid;          /* 0 when not running */
  int port;
  int out_fd;       /* the child's stdout, or -1 */
  char url[64];     /* "http://127.0.0.1:PORT" */
} proc_t;

typedef struct proc_opts {
  const char *err_path; /* the child's stderr goes to this file (truncated); NULL = ours */
  long nofile;          /* soft RLIMIT_NOFILE for the child; 0 = unchanged */
  long timeout_ms;      /* wait this long for "listening on"; 0 = 5000 */
  const char *who;      /* prefix of our messages ("testkit", "bench"); NULL = "proc" */
} proc_opts_t;

/* Runs PATH --port 0 ARGS... (args NULL-terminated, may be NULL). Returns 0, or -1 with a message
 * on stderr (not executable, exited early, no "listening on" in time); the child is then gone. */
int proc_spawn(proc_t *p, const char *path, const char *const *args, const proc_opts_t *o);
/* SIGTERM, wait up to grace_ms, then SIGKILL. Returns the exit status, -1 when killed by a
 * signal or not running. */
int proc_stop(proc_t *p, long grace_ms);
/* 1 while the child runs (not yet reaped and not a zombie). */
int proc_alive(const proc_t *p);

#endif
