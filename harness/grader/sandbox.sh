# shellcheck shell=bash
# sandbox.sh - where the grader compiles and runs a submission (sourced by grade.sh).
#
# bubblewrap (Debian's `bwrap`, the sandbox Flatpak is built on) in every namespace it has:
# a mount namespace that holds only /usr, /etc, the kit pieces a step needs (read-only) and a
# throwaway area (/grade); a PID namespace whose init is bwrap, so that when the suite's runner
# ends, everything it left (daemons, fork bombs) is killed by the kernel; a network namespace
# with only loopback; no capabilities. Around it: prlimit's memory, CPU-time, file-size and
# process-count limits; and inside it, the code runs as an unprivileged uid of its own per
# grading job (uid and limits are what make the process count hold; as root it would not apply). docs/instructor.md says
# why bwrap and what each limit is.
#
#   gr_box_setup               once per grade.sh: picks the mode and claims a uid
#   gr_box PROFILE ARGS -- CMD  runs CMD in a sandbox (PROFILE: build | run | run-san | perf); ARGS are
#                              more bwrap arguments (binds, --setenv)
#   gr_box_dir DIR             makes DIR a throwaway area the sandbox's uid can write
#
# GR_SANDBOX=auto (default: bwrap when it works here, else a warning and rlimits only),
# bwrap (refuse to grade without it) or none. Limits, per process unless said:
# GR_MEM_MB (address space, 2048; the sanitizer run uses ASan's hard_rss_limit_mb instead, since
# ASan reserves terabytes of address space), GR_CPU_S (300), GR_FILE_MB (256), GR_PROCS (256
# tasks, threads included, for the whole sandbox). A lab's manifest block may set limit_mem_mb,
# limit_cpu_s, limit_file_mb, limit_procs.

GR_SANDBOX=${GR_SANDBOX:-auto}
GR_BOX_MODE=""      # bwrap | none, set by gr_box_setup
GR_BOX_UID=""       # the uid sandboxed code runs as
GR_BOX_NOTE=""      # why there is no sandbox, when there is none

# Limits for one lab (its manifest rows override the defaults).
gr_box_limits() {  # SLUG
  GR_LIM_MEM=$(manifest_get "$1" limit_mem_mb "${GR_MEM_MB:-2048}")
  GR_LIM_CPU=$(manifest_get "$1" limit_cpu_s "${GR_CPU_S:-300}")
  GR_LIM_FILE=$(manifest_get "$1" limit_file_mb "${GR_FILE_MB:-256}")
  GR_LIM_PROCS=$(manifest_get "$1" limit_procs "${GR_PROCS:-256}")
}

gr_box_base_args() {
  # Every namespace; a user namespace only when not root (as root the uid switch inside needs
  # the real uids, and bwrap can mount without one).
  GR_BOX_ARGS=(--unshare-ipc --unshare-pid --unshare-net --unshare-uts --unshare-cgroup-try
    --die-with-parent --new-session --clearenv
    --setenv PATH /usr/bin:/bin --setenv HOME /grade --setenv TMPDIR /tmp --setenv LC_ALL C
    --ro-bind /usr /usr --ro-bind /etc /etc --proc /proc --dev /dev --perms 1777 --size $((128 << 20)) --tmpfs /dev/shm --perms 1777 --size $((256 << 20)) --tmpfs /tmp
    --perms 0755 --dir /kit --perms 0755 --dir /kit/include --perms 0755 --dir /kit/lab)
  [ "$(id -u)" = 0 ] || GR_BOX_ARGS+=(--unshare-user)
  local l
  for l in bin sbin lib lib32 lib64 libx32; do
    if [ -L "/$l" ]; then GR_BOX_ARGS+=(--symlink "$(readlink "/$l")" "/$l")
    elif [ -d "/$l" ]; then GR_BOX_ARGS+=(--ro-bind "/$l" "/$l"); fi
  done
}

# A uid of this job's own, held by a lock for as long as this shell lives: parallel grading
# jobs must not share a process count. Only root can switch uids; anyone else stays themselves.
gr_box_claim_uid() {
  if [ "$(id -u)" != 0 ]; then GR_BOX_UID=$(id -u); return 0; fi
  local dir=${GR_LOCK_DIR:-/tmp/loopholes-sandbox-uids} u
  mkdir -p "$dir" && chmod 700 "$dir" || return 1
  for ((u = 61000; u < 61512; u++)); do
    exec {GR_BOX_LOCK_FD}>"$dir/$u" || continue
    if flock -n "$GR_BOX_LOCK_FD"; then GR_BOX_UID=$u; return 0; fi
    exec {GR_BOX_LOCK_FD}>&-
  done
  return 1
}

# The command that runs CMD as the sandbox's uid with the limits of PROFILE (the caller sets
# GR_LIM_*), into the array GR_CMD.
gr_box_limit_cmd() {  # PROFILE
  local lim=(--cpu="$GR_LIM_CPU" --fsize=$((GR_LIM_FILE * 1024 * 1024)) --core=0)
  # perf: the bench's threads need more address space than one service; the wrapper that starts
  # the code under test gives it the limit (harness/grader/perf.sh).
  [ "$1" = run-san ] || [ "$1" = perf ] || lim+=(--as=$((GR_LIM_MEM * 1024 * 1024)))
  if [ "$(id -u)" = 0 ]; then
    GR_CMD=(prlimit "${lim[@]}" --nproc="$GR_LIM_PROCS" --)
  else
    # Not root: the count is this user's, their other processes included.
    GR_CMD=(prlimit "${lim[@]}" --nproc=$(( $(ps -u "$(id -u)" -L --no-headers 2>/dev/null | wc -l) + GR_LIM_PROCS )) --)
  fi
}

# As root, the uid switch: the last step before the command, inside the sandbox (bwrap itself
# runs as root then, so it can bind folders the sandbox's uid could not even cross, and its
# init, which the code under test cannot signal, stays root).
gr_box_drop() {  # PROFILE
  GR_DROP=()
  [ "$(id -u)" = 0 ] || return 0
  # perf: the bench stays root in its sandbox; it starts the code under test through a wrapper
  # that drops to the uid (harness/grader/perf.sh).
  [ "$1" != perf ] || [ "$GR_BOX_MODE" != bwrap ] || return 0
  GR_DROP=(setpriv --reuid "$GR_BOX_UID" --regid "$GR_BOX_UID" --clear-groups --inh-caps=-all --bounding-set=-all --)
}

gr_box_cmd() {  # PROFILE BWRAP-ARGS... -- CMD...
  local profile=$1; shift
  local extra=()
  while [ $# -gt 0 ] && [ "$1" != -- ]; do extra+=("$1"); shift; done
  shift
  gr_box_limit_cmd "$profile"
  gr_box_drop "$profile"
  if [ "$GR_BOX_MODE" = bwrap ]; then
    gr_box_base_args
    GR_CMD+=(bwrap "${GR_BOX_ARGS[@]}" "${extra[@]}" -- "${GR_DROP[@]}" "$@")
  else
    # No sandbox: the same command with the limits and the uid; of bwrap's arguments only the
    # environment and the working folder apply (the caller passes real paths in this mode).
    local envs=() dir=/ i=0
    while [ $i -lt ${#extra[@]} ]; do
      case "${extra[$i]}" in
        --setenv) envs+=("${extra[$((i + 1))]}=${extra[$((i + 2))]}"); i=$((i + 3)) ;;
        --chdir) dir=${extra[$((i + 1))]}; i=$((i + 2)) ;;
        --size) i=$((i + 2)) ;;
        --tmpfs) i=$((i + 2)) ;;
        --ro-bind|--bind|--symlink) i=$((i + 3)) ;;
        *) i=$((i + 1)) ;;
      esac
    done
    GR_CMD+=("${GR_DROP[@]}" env -i -C "$dir" PATH=/usr/bin:/bin HOME="$dir" TMPDIR=/tmp LC_ALL=C "${envs[@]}" "$@")
  fi
}

gr_box() { gr_box_cmd "$@" && "${GR_CMD[@]}"; }

# Waits until nothing of this job's uid runs any more (bwrap returns as soon as the suite's
# runner is gone; the kernel may still be ending the rest of its PID namespace), at most 10 s,
# then ends what is left (that uid is this job's alone while it holds its lock). Zombies are
# already dead and are not counted.
GR_BOX_OUTLIVED=0   # processes that outlived their sandbox by 10 s and had to be killed here
gr_box_alive() { ps -eo uid=,stat= | awk -v u="$GR_BOX_UID" '$1 == u && $2 !~ /^Z/' | wc -l; }
gr_box_wait_gone() {
  [ "$(id -u)" = 0 ] && [ -n "$GR_BOX_UID" ] || return 0
  local i n
  for ((i = 0; i < 100; i++)); do
    [ "$(gr_box_alive)" = 0 ] && return 0
    sleep 0.1
  done
  n=$(gr_box_alive)
  GR_BOX_OUTLIVED=$((GR_BOX_OUTLIVED + n))
  pkill -KILL -U "$GR_BOX_UID" 2>/dev/null
  return 0
}

# Without a PID namespace, what the sandbox's uid left running is ended here (that uid is this
# job's alone while it holds the lock, so nothing else is touched). Prints how many there were.
gr_box_reap() {
  [ "$(id -u)" = 0 ] && [ -n "$GR_BOX_UID" ] || { echo 0; return; }
  local n; n=$(pgrep -c -U "$GR_BOX_UID" 2>/dev/null || true)
  [ "${n:-0}" = 0 ] || pkill -KILL -U "$GR_BOX_UID" 2>/dev/null
  echo "${n:-0}"
}

# bwrap works here (installed, user namespaces allowed, the uid can run it)?
gr_box_probe() {
  command -v bwrap >/dev/null 2>&1 || { GR_BOX_NOTE="bwrap is not installed (make deps installs bubblewrap)"; return 1; }
  GR_LIM_MEM=256 GR_LIM_CPU=10 GR_LIM_FILE=1 GR_LIM_PROCS=32
  local out
  out=$(GR_BOX_MODE=bwrap gr_box build -- /bin/sh -c 'echo $$' 2>&1)
  if [ "$out" != 2 ] && [ "$out" != 1 ]; then
    GR_BOX_NOTE="bwrap cannot create its namespaces here ($(printf '%s' "$out" | head -n 1)); in a container, run the container with user namespaces allowed, or grade in a VM"
    return 1
  fi
}

gr_box_setup() {
  command -v prlimit >/dev/null 2>&1 || gr_die "prlimit (util-linux) is missing: the grader cannot limit a submission"
  gr_box_claim_uid || gr_die "no free sandbox uid (locks in ${GR_LOCK_DIR:-/tmp/loopholes-sandbox-uids})"
  case "$GR_SANDBOX" in
    none) GR_BOX_MODE=none GR_BOX_NOTE="GR_SANDBOX=none" ;;
    bwrap) gr_box_probe || gr_die "GR_SANDBOX=bwrap but $GR_BOX_NOTE"; GR_BOX_MODE=bwrap ;;
    auto) if gr_box_probe; then GR_BOX_MODE=bwrap; else GR_BOX_MODE=none; fi ;;
    *) gr_die "GR_SANDBOX wants auto, bwrap or none, not '$GR_SANDBOX'" ;;
  esac
  if [ "$GR_BOX_MODE" = none ]; then
    echo "$(basename "$0"): warning: grading WITHOUT a sandbox: $GR_BOX_NOTE. The limits, the end-of-test check and the own uid (which cannot write the kit or open the reports) still apply; but the code under test sees the whole machine, its network and its processes." >&2
  fi
}

# DIR: a fresh folder the sandbox's uid owns (the only place code under test may write).
gr_box_dir() {
  rm -rf "$1" && mkdir -p "$1" || return 1
  [ "$(id -u)" != 0 ] || chown "$GR_BOX_UID:$GR_BOX_UID" "$1"
}
