/*
 * gristmill-nsjail-init: pid 1 of a job's pid namespace under the nsjail backend, for the
 * moment between its spawn by the supervisor and its exec of nsjail.
 *
 * It does what `nsjail.launch` needs done inside the new pid namespace and nsjail cannot
 * do itself, the same as a forked Python child did, at a fraction of the cost (that child
 * took ~1.3 ms of CPU, mostly its copy-on-write page faults, and ~2 ms of a cold job's
 * wall time): puts the job's descriptors at 0..N-1 and closes the rest, mounts the
 * namespace's /proc with `--proc-options` (hidepid: the job never sees nsjail) and covers
 * each `--mask` path in it, sets the OOM score the job inherits, RLIMIT_SIGPENDING, and the
 * seccomp filter of other ABIs (`--seccomp`, hex of a BPF program), then execs nsjail with
 * an empty environment. The service compiles it at `make install`, static against musl: no
 * loader, and none of glibc's start-up, whose CPU probing (cpuid, which traps to the
 * hypervisor on a VM) cost ~0.3 ms a start here.
 *
 * Usage: gristmill-nsjail-init --fds A,B,... --proc-options OPTS [--mask PATH]...
 *            --oom N --sigpending N [--seccomp HEX] -- NSJAIL [ARG]...
 * Anything that fails is written to fd 2 (by then nsjail's log) as "[F] cannot start
 * nsjail: ...", which the supervisor reports, and the exit status is 127.
 *
 * The same binary, bind-mounted into the jail, is also what nsjail starts there (`nsjail.SHIM`):
 *        gristmill-nsjail-init --shim PROGRAM [ARG]...
 * puts the job's stderr (nsjail's fd 5) at 2, says "running" with a byte on fd 6, closes
 * both and execs PROGRAM (searched in PATH, as `sh -c 'exec "$@"'` did, at a third of the
 * cost: a dynamic /bin/sh took ~0.7 ms of every job's CPU).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

/* The kernel's seccomp filter ABI (linux/filter.h, linux/seccomp.h), which musl's headers
 * do not carry. */
struct sock_filter {
    unsigned short code;
    unsigned char jt, jf;
    unsigned int k;
};
struct sock_fprog {
    unsigned short len;
    struct sock_filter *filter;
};
#define SECCOMP_MODE_FILTER 2

#define MAX_FDS 16
#define MAX_MASKS 64
#define MAX_FILTER 4096

static void fail(const char *format, ...) {
    char message[512];
    va_list args;
    va_start(args, format);
    vsnprintf(message, sizeof message, format, args);
    va_end(args);
    dprintf(2, "[F] cannot start nsjail: %s\n", message);
    _exit(127);
}

static long number(const char *text, const char *what) {
    char *end;
    errno = 0;
    long value = strtol(text, &end, 10);
    if (errno || end == text || *end) fail("bad %s: %s", what, text);
    return value;
}

static int parse_fds(const char *text, int *fds) {
    int count = 0;
    const char *at = text;
    while (*at) {
        if (count == MAX_FDS) fail("more than %d descriptors", MAX_FDS);
        char *end;
        errno = 0;
        long fd = strtol(at, &end, 10);
        if (errno || end == at || fd < 0 || (*end && *end != ',')) fail("bad --fds: %s", text);
        fds[count++] = (int)fd;
        at = *end ? end + 1 : end;
    }
    return count;
}

/* Each wanted descriptor at 0, 1, 2, ... (through copies above them all, so that no
 * source is overwritten before it is moved), every other one closed. */
static void place_fds(const int *fds, int count) {
    int high[MAX_FDS];
    for (int i = 0; i < count; i++) {
        high[i] = fcntl(fds[i], F_DUPFD_CLOEXEC, MAX_FDS);
        if (high[i] < 0) fail("descriptor %d: %s", fds[i], strerror(errno));
    }
    for (int i = 0; i < count; i++)
        if (dup2(high[i], i) < 0) fail("dup2 to %d: %s", i, strerror(errno));
    if (syscall(SYS_close_range, (unsigned)count, ~0U, 0) < 0) fail("close_range: %s", strerror(errno));
}

/* A file goes under /dev/null, a directory under an empty read-only tmpfs; an entry this
 * kernel does not have is skipped. */
static void mask(const char *path) {
    struct stat st;
    if (stat(path, &st) < 0) {
        if (errno == ENOENT) return;
        fail("stat %s: %s", path, strerror(errno));
    }
    int done = S_ISDIR(st.st_mode)
        ? mount("tmpfs", path, "tmpfs", MS_RDONLY | MS_NOSUID | MS_NODEV, "size=4k,mode=0555")
        : mount("/dev/null", path, NULL, MS_BIND, NULL);
    if (done < 0 && errno != ENOENT) fail("mask %s: %s", path, strerror(errno));
}

static size_t unhex(const char *text, unsigned char *out, size_t room) {
    size_t length = strlen(text);
    if (length % 2 || length / 2 > room) fail("bad --seccomp");
    for (size_t i = 0; i < length / 2; i++) {
        unsigned int byte;
        if (sscanf(text + 2 * i, "%2x", &byte) != 1) fail("bad --seccomp");
        out[i] = (unsigned char)byte;
    }
    return length / 2;
}

/* Every signal at its default and none blocked, as a program started by a fresh shell has
 * them (and the process backend's jobs do). What the service's Python ignores (SIGPIPE,
 * SIGXFSZ) and glibc's posix_spawn ignores in its child (its internal signals 32 and 33)
 * would otherwise pass through the spawns, nsjail and exec: a write past RLIMIT_FSIZE got
 * EFBIG instead of SIGXFSZ. By the system call: musl refuses its own internal signals. */
static void default_signals(void) {
    struct {
        void (*handler)(int);
        unsigned long flags;
        void (*restorer)(void);
        unsigned long mask;
    } by_default = {SIG_DFL, 0, NULL, 0};
    for (int sig = 1; sig <= 64; sig++)
        if (sig != SIGKILL && sig != SIGSTOP)
            syscall(SYS_rt_sigaction, sig, &by_default, NULL, sizeof by_default.mask);
    sigset_t none;
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, NULL);
}

/* Inside the jail: the job's stderr into place, "running" said, then the program. What
 * fails after fd 2 is the job's stderr goes there, as a shell's would (126 or 127). */
static int shim(int argc, char **program) {
    if (dup2(5, 2) < 0 || close(5) < 0 || write(6, "r", 1) != 1 || close(6) < 0) return 127;
    if (!program[0]) return 127;
    default_signals();
    execvp(program[0], program);
    int failed = errno;
    if (failed == ENOEXEC) {
        /* A script without "#!": run by the shell, as `exec "$@"` in sh ran it. */
        char **shell = calloc((size_t)argc + 2, sizeof *shell);
        if (shell) {
            shell[0] = "/bin/sh";
            memcpy(shell + 1, program, ((size_t)argc + 1) * sizeof *shell);
            execv(shell[0], shell);
        }
    }
    dprintf(2, "gristmill-jail: exec %s: %s\n", program[0], strerror(failed));
    return failed == ENOENT ? 127 : 126;
}

int main(int argc, char **argv) {
    if (argc > 1 && !strcmp(argv[1], "--shim")) return shim(argc - 2, argv + 2);
    int fds[MAX_FDS], fd_count = -1;
    const char *masks[MAX_MASKS], *proc_options = NULL, *seccomp = NULL;
    int mask_count = 0;
    long oom = 0, sigpending = -1;
    int i = 1;
    for (; i < argc && strcmp(argv[i], "--") != 0; i += 2) {
        if (i + 1 >= argc) fail("%s needs a value", argv[i]);
        const char *flag = argv[i], *value = argv[i + 1];
        if (!strcmp(flag, "--fds")) fd_count = parse_fds(value, fds);
        else if (!strcmp(flag, "--proc-options")) proc_options = value;
        else if (!strcmp(flag, "--mask")) {
            if (mask_count == MAX_MASKS) fail("more than %d masks", MAX_MASKS);
            masks[mask_count++] = value;
        } else if (!strcmp(flag, "--oom")) oom = number(value, "--oom");
        else if (!strcmp(flag, "--sigpending")) sigpending = number(value, "--sigpending");
        else if (!strcmp(flag, "--seccomp")) seccomp = value;
        else fail("unknown flag %s", flag);
    }
    if (i + 1 >= argc || fd_count < 0 || !proc_options || sigpending < 0)
        fail("usage: --fds A,B,... --proc-options OPTS --oom N --sigpending N -- NSJAIL ...");
    char **nsjail = argv + i + 1;

    place_fds(fds, fd_count);
    if (mount("proc", "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, proc_options) < 0)
        fail("mount /proc: %s", strerror(errno));
    for (int m = 0; m < mask_count; m++) mask(masks[m]);
    /* The OOM killer must pick the job, never its supervisor; written by root, it is also
     * the floor the job cannot go below. */
    int oom_file = open("/proc/self/oom_score_adj", O_WRONLY | O_CLOEXEC);
    if (oom_file < 0 || dprintf(oom_file, "%ld", oom) < 0 || close(oom_file) < 0)
        fail("oom_score_adj: %s", strerror(errno));
    struct rlimit pending = {(rlim_t)sigpending, (rlim_t)sigpending};
    if (setrlimit(RLIMIT_SIGPENDING, &pending) < 0) fail("RLIMIT_SIGPENDING: %s", strerror(errno));
    if (seccomp && *seccomp) {
        /* Inherited by nsjail (which makes x86_64 calls only) and so by the job. */
        static struct sock_filter program[MAX_FILTER / sizeof(struct sock_filter)];
        size_t size = unhex(seccomp, (unsigned char *)program, sizeof program);
        if (size % sizeof(struct sock_filter)) fail("bad --seccomp length");
        struct sock_fprog filter = {
            .len = (unsigned short)(size / sizeof(struct sock_filter)),
            .filter = program,
        };
        if (prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &filter, 0, 0) < 0)
            fail("seccomp: %s", strerror(errno));
    }
    char *no_environment[] = {NULL};
    execve(nsjail[0], nsjail, no_environment);
    fail("exec %s: %s", nsjail[0], strerror(errno));
}
