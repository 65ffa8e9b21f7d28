/* witness.c - proof that a test's body ran to its end, for the grader's builds of a suite.
 *
 * Criterion counts a test whose process exits with status 0 as passed, even when that happens
 * halfway through its body: a submission that calls exit(0) in lab_create "passes" every test.
 * The grader links its suites with -Wl,--wrap=criterion_internal_test_main, so every test body
 * (test.c's trampolines call that function) runs inside witnessed_body() below. When the body
 * returns (its last assertion held), the worker appends "TOKEN suite/name" to the file named by
 * LOOPHOLES_WITNESS_OUT. The grader counts a test as passed only when Criterion says PASSED *and*
 * that line is there with the right token: an early exit, a signal or a missing report fails.
 *
 * The token is a fresh random secret per suite run. The grader hands it to the suite's runner
 * on an inherited file descriptor (LOOPHOLES_WITNESS_FD); the runner reads it before main(),
 * closes the descriptor, makes itself non-dumpable (so no other process in the sandbox can read
 * its memory, environment or descriptors through /proc) and passes it on to the test workers it
 * spawns in their environment; each worker wipes it from its environment before any test code
 * runs. Code under test that wants to forge a line must find the token in its own process's
 * memory: nothing short of an attack written against this file. (The grader also refuses a
 * submission whose object brings constructors or touches Criterion's or this file's symbols.)
 */
#include <criterion/criterion.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <unistd.h>

#define WITNESS_TOKEN_MAX 64

static char witness_token[WITNESS_TOKEN_MAX + 1];
static void (*witness_fn)(void);

void __real_criterion_internal_test_main(void (*fn)(void));
void __wrap_criterion_internal_test_main(void (*fn)(void));

/* Keeps a copy of the token from the environment variable NAME and wipes the variable, in the
 * initial environment block too (that memory is what /proc/PID/environ shows). */
static void witness_take_env(const char *name) {
  char *tok = getenv(name);
  if (tok == NULL) return;
  snprintf(witness_token, sizeof witness_token, "%s", tok);
  memset(tok, 'x', strlen(tok));
  unsetenv(name);
}

/* Who calls it: the loader, before main() and before any default-priority constructor, in the
 * runner and in every worker. glibc passes a constructor main's arguments: Criterion's workers
 * are this binary re-executed as "boxfort-worker" (the runner re-executes itself once too). */
__attribute__((constructor(101))) static void witness_init(int argc, char **argv, char **envp) {
  (void)envp;
  if (argc > 0 && argv != NULL && argv[0] != NULL && strcmp(argv[0], "boxfort-worker") == 0) {
    witness_take_env("LOOPHOLES_WITNESS_TOKEN");
    return;
  }
  // The runner: nothing else in the sandbox may read its memory, environment or descriptors.
  if (prctl(PR_SET_DUMPABLE, 0, 0, 0, 0) != 0) perror("witness: prctl(PR_SET_DUMPABLE)");
  const char *fd_s = getenv("LOOPHOLES_WITNESS_FD");
  if (fd_s != NULL) {  // first start: the token arrives on a descriptor
    int fd = atoi(fd_s);
    ssize_t n = read(fd, witness_token, WITNESS_TOKEN_MAX);
    close(fd);
    witness_token[n > 0 ? n : 0] = '\0';
    witness_token[strcspn(witness_token, "\r\n")] = '\0';
    unsetenv("LOOPHOLES_WITNESS_FD");
  } else {  // re-executed by Criterion: the token is in the environment this process started with
    witness_take_env("LOOPHOLES_WITNESS_TOKEN");
  }
  // setenv copies into the heap: the workers' environment gets it, /proc/PID/environ does not.
  if (witness_token[0] != '\0' && setenv("LOOPHOLES_WITNESS_TOKEN", witness_token, 1) != 0)
    perror("witness: setenv");
}

/* Who calls it: Criterion's test main, in the worker, in place of the test's own body. */
static void witnessed_body(void) {
  witness_fn();
  // Reached only when the body returned: a failed assertion leaves through a longjmp, an exit()
  // or a signal never comes back here.
  const char *path = getenv("LOOPHOLES_WITNESS_OUT");
  if (path == NULL || witness_token[0] == '\0') return;
  int fd = open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0600);
  if (fd < 0) {
    perror("witness: open");
    return;
  }
  char line[512];
  int len = snprintf(line, sizeof line, "%s %s/%s\n", witness_token, criterion_current_test->category,
                     criterion_current_test->name);
  if (len > 0 && (size_t)len < sizeof line && write(fd, line, (size_t)len) != len) perror("witness: write");
  close(fd);
}

void __wrap_criterion_internal_test_main(void (*fn)(void)) {
  witness_fn = fn;
  __real_criterion_internal_test_main(witnessed_body);
}
