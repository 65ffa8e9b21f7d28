/* proc.c - see proc.h. */
#include "proc.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static double proc_now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

/* In the child, between fork and exec: only async-signal-safe calls. */
static void proc_child(const char *path, char *const *argv, int out_fd, const proc_opts_t *o,
                       pid_t parent) {
  prctl(PR_SET_PDEATHSIG, SIGTERM);
  if (getppid() != parent) _exit(1); /* the parent died before prctl: nobody will stop us */
  /* Our parent may ignore or block these (a bench's handlers); the tool wants the defaults. */
  signal(SIGINT, SIG_DFL);
  signal(SIGTERM, SIG_DFL);
  sigset_t none;
  sigemptyset(&none);
  sigprocmask(SIG_SETMASK, &none, NULL);
  if (dup2(out_fd, STDOUT_FILENO) < 0) _exit(126);
  close(out_fd);
  if (o->err_path) {
    int fd = open(o->err_path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd >= 0) dup2(fd, STDERR_FILENO);
  }
  if (o->nofile > 0) {
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0) {
      rl.rlim_cur = (rlim_t)o->nofile;
      if (rl.rlim_max != RLIM_INFINITY && rl.rlim_cur > rl.rlim_max) rl.rlim_cur = rl.rlim_max;
      setrlimit(RLIMIT_NOFILE, &rl);
    }
  }
  execv(path, argv);
  _exit(127);
}

int proc_spawn(proc_t *p, const char *path, const char *const *args, const proc_opts_t *opts) {
  static const proc_opts_t defaults = {0};
  const proc_opts_t *o = opts ? opts : &defaults;
  const char *who = o->who ? o->who : "proc";
  const char *argv[128];
  int argc = 0, pipefd[2];

  memset(p, 0, sizeof *p);
  p->out_fd = -1;
  if (access(path, X_OK) != 0) {
    fprintf(stderr, "%s: %s is not built (run make)\n", who, path);
    return -1;
  }
  argv[argc++] = path;
  argv[argc++] = "--port";
  argv[argc++] = "0";
  for (int i = 0; args && args[i]; i++) {
    if (argc == 127) {
      fprintf(stderr, "%s: too many arguments for %s\n", who, path);
      return -1;
    }
    argv[argc++] = args[i];
  }
  argv[argc] = NULL;
  if (pipe2(pipefd, O_CLOEXEC) != 0) {
    fprintf(stderr, "%s: pipe: %s\n", who, strerror(errno));
    return -1;
  }
  pid_t parent = getpid();
  pid_t pid = fork();
  if (pid < 0) {
    fprintf(stderr, "%s: fork: %s\n", who, strerror(errno));
    close(pipefd[0]);
    close(pipefd[1]);
    return -1;
  }
  if (pid == 0) {
    close(pipefd[0]);
    proc_child(path, (char *const *)argv, pipefd[1], o, parent);
  }
  close(pipefd[1]);
  p->pid = pid;
  p->out_fd = pipefd[0];

  char line[512];
  size_t len = 0;
  long timeout_ms = o->timeout_ms > 0 ? o->timeout_ms : 5000;
  double deadline = proc_now_ms() + (double)timeout_ms;
  const char *why = "printed no \"listening on http://...\" line";
  while (proc_now_ms() < deadline) {
    struct pollfd pfd = {.fd = p->out_fd, .events = POLLIN};
    int n = poll(&pfd, 1, 50);
    if (n < 0 && errno != EINTR) break;
    if (n <= 0) continue;
    ssize_t got = read(p->out_fd, line + len, sizeof line - 1 - len);
    if (got < 0 && errno == EINTR) continue;
    if (got <= 0) {
      why = "exited before it printed \"listening on http://...\"";
      break;
    }
    len += (size_t)got;
    line[len] = '\0';
    char *at = strstr(line, "listening on http://");
    if (at && strchr(at, '\n')) {
      char *colon = strchr(at + strlen("listening on http://"), ':');
      p->port = colon ? atoi(colon + 1) : 0;
      if (p->port > 0) {
        snprintf(p->url, sizeof p->url, "http://127.0.0.1:%d", p->port);
        return 0;
      }
    }
    if (len == sizeof line - 1) { /* keep the tail: the line may come after other output */
      memmove(line, line + len / 2, len - len / 2);
      len -= len / 2;
    }
  }
  int status = proc_stop(p, 1000);
  fprintf(stderr, "%s: %s %s within %ld ms (exit status %d)\n", who, path, why, timeout_ms, status);
  return -1;
}

int proc_alive(const proc_t *p) {
  if (p->pid <= 0) return 0;
  char path[64], stat[512];
  snprintf(path, sizeof path, "/proc/%d/stat", p->pid);
  FILE *f = fopen(path, "r");
  if (!f) return 0;
  size_t n = fread(stat, 1, sizeof stat - 1, f);
  fclose(f);
  stat[n] = '\0';
  const char *close_paren = strrchr(stat, ')');
  return close_paren && close_paren[1] == ' ' && close_paren[2] != 'Z' && close_paren[2] != 'X';
}

int proc_stop(proc_t *p, long grace_ms) {
  int status = 0, reaped = 0;
  if (p->pid <= 0) return -1;
  kill(p->pid, SIGTERM);
  double deadline = proc_now_ms() + (double)grace_ms;
  for (;;) {
    pid_t r = waitpid(p->pid, &status, WNOHANG);
    if (r == p->pid || (r < 0 && errno == ECHILD)) {
      reaped = r == p->pid;
      break;
    }
    if (proc_now_ms() >= deadline) {
      kill(p->pid, SIGKILL);
      while ((r = waitpid(p->pid, &status, 0)) < 0 && errno == EINTR) {}
      reaped = r == p->pid;
      break;
    }
    struct timespec ts = {0, 10 * 1000 * 1000};
    nanosleep(&ts, NULL);
  }
  if (p->out_fd >= 0) close(p->out_fd);
  p->pid = 0;
  p->out_fd = -1;
  return reaped && WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}
