/*
 * gristmill-nsjail-supervisor: the supervisor of every job, of both backends (the name is
 * the nsjail backend's, where it began).
 *
 * It holds the job's limits and reports on `report`, one JSON object a line: {"type":
 * "started", ...} once the program runs, {"type": "handed"} at a warm sandbox's hand-over,
 * {"type": "exit", ...} at the end. It kills the job on its wall-clock or CPU deadline,
 * when its forks stay refused at the pids limit, when it thrashes at its memory limit (see
 * `thrash_at_memory_limit`), when a network-on job's sockets fill its memory or its bytes
 * pass its cap, on a byte on `control` (the stop reason, or "go WALL_MS CPU_MS
 * NETWORK_BYTES": a warm sandbox's hand-over), and when `control` closes.
 *
 * Two jails, one supervision:
 * - nsjail's (the default): the fork server spawns it (vfork and exec; a forked Python
 *   supervisor cost every job ~3 ms of CPU in pages copied on write and its exit). It
 *   joins the job's cgroup, makes a mount and a pid namespace for the job's children,
 *   mounts the job's tmpfs (and copies the job's files into it, unless the sandbox is
 *   warm: the service writes a warm sandbox's files at its hand-over), spawns the job's
 *   pid 1 (`gristmill-nsjail-init`, which becomes nsjail). nsjail's log is sent as it is
 *   in the exit report ("nsjail_log"): the service reads the program's end from it
 *   (`nsjail.log_outcome`).
 * - the process backend's own (`--jail PID`): built by the fork server's child
 *   (`forkserver.py`), which then execs this in its place, the jail's pid 1 its child (or
 *   a template's), with its pidfd at 7, init's status pipe at 8 (lines: "running NS",
 *   "error TEXT", "end WAIT_STATUS USER_NS SYSTEM_NS PEAK_BYTES") and the job's tmpfs at 9.
 * A network-on job's namespace (`netns.py`) is made by the fork server's child before
 * either, which then execs this: its network helper's exit descriptor is held at 10 (the
 * helper ends with us), and its bytes are read from `tap0` in /proc/self/net/dev.
 *
 * The report goes as soon as the program has ended (nsjail's log says so, or init's
 * "end") and every other process of the job has been sent SIGKILL (the jail's pid 1's
 * exit, and its pid namespace's end, took ~0.5 to 1.5 ms of every job's latency): the
 * service reads the job's usage from its cgroup. Without a cgroup, when the job was
 * stopped, or when it asked for files back, it goes once the jail's pid 1 has gone. When
 * the job asked for files back (the request file exists), the report names the job's
 * tmpfs ("collect_from") and the supervisor keeps it until the service has taken them and
 * closed `control`.
 *
 * Compiled like gristmill-nsjail-init: static, against musl (see there why). Its parsers
 * (control commands, init's status, nsjail's log, cgroup and /proc files) are run under
 * ASan and UBSan by tests/isolation/test_supervisor_fuzz.py (`supervisor_fuzz.c`).
 *
 * Descriptors: 0 stdin, 1 stdout, 2 stderr, 3 result, 4 job (the program's, passed on to
 * pid 1 under nsjail), 5 control, 6 report; 7 to 10 as above.
 * Usage: gristmill-nsjail-supervisor [--warm] [--wall-ms N] [--cpu-ms N]
 *            [--cpu-usage FILE [--cpu-v2]] [--pids-events FILE] [--procs FILE]
 *            [--memory-usage FILE --memory-limit FILE --memory-stat FILE]
 *            [--network [--network-bytes N] [--sockets [--socket-memory FILE]]]
 *            --request FILE
 *            (nsjail: [--join FILE]... --root DIR --tmpfs OPTIONS [--copy-from DIR]
 *             --uid N --gid N -- INIT [ARG]...; INIT's argv without its --fds)
 *            (own: --jail PID [--jail-child] [--job-dir] --started-ns NS)
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <spawn.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/fsuid.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/sendfile.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define CONTROL 5
#define REPORT 6
#define JAIL_PIDFD 7   /* own jail: its pid 1 */
#define JAIL_STATUS 8  /* own jail: its init's status lines */
#define JOB_DIR 9      /* own jail: the job's tmpfs */
#define NETWORK_EXIT 10 /* network-on: the helper's exit descriptor, held */
#define STATUS_LINE 4096
#define MAX_JOINS 16
#define LOG_KEPT (64 << 10) /* bytes of nsjail's log kept from its head, and from its tail */
#define LOG_PIPE (256 << 10) /* what nsjail may log before the program runs, unread */
#define LINE_KEPT 512         /* of a log line, enough to find the program's end in it */
#define CPU_POLL_MS 20
#define CONTROL_READ 4096 /* every command the service can have written by then */
#define PIDS_GRACE_NS 500000000LL   /* forks refused this long are stopped */
#define PIDS_EPISODE_NS 3000000000LL /* refusals further apart are separate episodes */
#define MEMORY_GRACE_NS 500000000LL  /* thrashing at the memory limit this long is stopped */
#define MEMORY_EPISODE_NS 1000000000LL /* refaults further apart are separate episodes */
#define MAX_COPY_DEPTH 64

static struct {
    int warm, cpu_v2, network, sockets, own, jail_child, job_dir;
    const char *cpu_usage, *pids_events, *root, *tmpfs, *copy_from, *request, *procs;
    const char *socket_memory;
    const char *memory_usage, *memory_limit, *memory_stat;
    const char *joins[MAX_JOINS];
    int join_count;
    uid_t uid;
    gid_t gid;
    char **init;
    int init_count;
} config = {.uid = (uid_t)-1, .gid = (gid_t)-1};

/* What the job has done so far. */
static struct {
    pid_t jail;
    int jail_pidfd, job_dir, cpu_usage, pids_events, host_proc, program_mounts, net_dev;
    long long network_bytes, sent_baseline, received_baseline;
    int socket_memory;
    int ended; /* own jail: init has said how the program ended */
    long long wait_status, user_cpu_ns, system_cpu_ns, peak_memory_bytes;
    long long started_ns, running_ns, handover_ns, cpu_baseline_ns;
    long long wall_ms, cpu_ms; /* the pool's backstops until a warm sandbox's hand-over */
    int handed, ready;
    char stopped_for[65]; /* the first reason the job was stopped for; "" while it runs */
    char error[512];
    long long refused, episode_first, episode_last;
    int memory_usage, memory_limit, memory_stat;
    long long refaults, thrash_first, thrash_last;
} job = {.jail_pidfd = -1, .job_dir = -1, .cpu_usage = -1, .pids_events = -1, .host_proc = -1,
         .program_mounts = -1, .net_dev = -1, .socket_memory = -1, .memory_usage = -1,
         .memory_limit = -1, .memory_stat = -1, .refaults = -1};

/* Init's status lines (own jail), as they come: the start of the line being read. */
static struct {
    char line[STATUS_LINE];
    size_t length;
} status;

/* nsjail's log, read from its pipe once the program runs (before that it only sets up,
 * ~30 lines, each of which would wake us): its head (the set-up, and what failed there)
 * and its tail (the program's end), LOG_KEPT bytes of each, as `NsjailJail._log` keeps it. */
static struct {
    int fd;
    char head[LOG_KEPT], tail[LOG_KEPT]; /* tail: a ring, `tail_total` bytes written to it */
    size_t head_length, tail_total;
    char line[LINE_KEPT]; /* the start of the line being read */
    size_t line_length;
    int program_ended; /* nsjail has said how the program ended */
} nsjail_log = {.fd = -1};

/* SIGKILL to the jail's pid 1, by its pidfd once there is one: a pid 1 that is not our
 * child (a template's) could have freed its pid for another. */
static void kill_jail(void) {
    if (job.jail_pidfd >= 0) syscall(SYS_pidfd_send_signal, job.jail_pidfd, SIGKILL, NULL, 0);
    else if (job.jail > 0) kill(job.jail, SIGKILL);
}

static long long now_ns(void) {
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    return now.tv_sec * 1000000000LL + now.tv_nsec;
}

/* A growing buffer for one JSON report. */
struct text {
    char *data;
    size_t length, room;
};

static void add(struct text *t, const char *bytes, size_t length) {
    if (t->length + length + 1 > t->room) {
        size_t room = (t->room ? t->room : 1024);
        while (room < t->length + length + 1) room *= 2;
        char *grown = realloc(t->data, room);
        if (!grown) {
            kill_jail(); /* nothing would stop it now */
            _exit(1);
        }
        t->data = grown;
        t->room = room;
    }
    memcpy(t->data + t->length, bytes, length);
    t->length += length;
    t->data[t->length] = 0;
}

static void addf(struct text *t, const char *format, ...) {
    char chunk[256];
    va_list args;
    va_start(args, format);
    int length = vsnprintf(chunk, sizeof chunk, format, args);
    va_end(args);
    add(t, chunk, length < (int)sizeof chunk ? (size_t)length : sizeof chunk - 1);
}

/* The length of the valid UTF-8 character at `bytes` (at most `left` bytes), else 0. */
static size_t utf8_length(const unsigned char *bytes, size_t left) {
    size_t length = bytes[0] >= 0xf0 && bytes[0] <= 0xf4 ? 4
        : bytes[0] >= 0xe0 && bytes[0] <= 0xef ? 3
        : bytes[0] >= 0xc2 && bytes[0] <= 0xdf ? 2
        : 0;
    if (!length || length > left) return 0;
    for (size_t i = 1; i < length; i++)
        if ((bytes[i] & 0xc0) != 0x80) return 0;
    if ((length == 3 && bytes[0] == 0xe0 && bytes[1] < 0xa0) ||
        (length == 3 && bytes[0] == 0xed && bytes[1] >= 0xa0) ||
        (length == 4 && bytes[0] == 0xf0 && bytes[1] < 0x90) ||
        (length == 4 && bytes[0] == 0xf4 && bytes[1] >= 0x90))
        return 0; /* overlong, a surrogate, or past U+10FFFF */
    return length;
}

/* `bytes` as a JSON string, each byte that is not part of a UTF-8 character as U+FFFD
 * (as Python's errors="replace" would have it): the report must be valid JSON. */
static void add_string(struct text *t, const char *bytes, size_t length) {
    add(t, "\"", 1);
    for (size_t i = 0; i < length; i++) {
        unsigned char c = (unsigned char)bytes[i];
        if (c == '"' || c == '\\') {
            char escaped[2] = {'\\', (char)c};
            add(t, escaped, 2);
        } else if (c < 0x20 || c == 0x7f) {
            addf(t, "\\u%04x", c);
        } else if (c < 0x80) {
            add(t, &bytes[i], 1);
        } else {
            size_t character = utf8_length((const unsigned char *)bytes + i, length - i);
            if (character) {
                add(t, &bytes[i], character);
                i += character - 1;
            } else {
                add(t, "\\ufffd", 6);
            }
        }
    }
    add(t, "\"", 1);
}

static void send_report(struct text *t) {
    add(t, "\n", 1);
    size_t done = 0;
    while (done < t->length) {
        ssize_t written = write(REPORT, t->data + done, t->length - done);
        if (written < 0 && errno == EINTR) continue;
        if (written <= 0) break; /* the service is gone: nobody to tell */
        done += (size_t)written;
    }
    free(t->data);
    *t = (struct text){0};
}

static void fail_setup(const char *format, ...) {
    char message[512];
    size_t used = (size_t)snprintf(message, sizeof message, "sandbox setup: ");
    va_list args;
    va_start(args, format);
    vsnprintf(message + used, sizeof message - used, format, args);
    va_end(args);
    struct text t = {0};
    addf(&t, "{\"type\": \"exit\", \"pid\": %d, \"setup_error\": ", getpid());
    add_string(&t, message, strlen(message));
    add(&t, "}", 1);
    send_report(&t);
    _exit(0);
}

static long long number(const char *text, const char *what) {
    char *end;
    errno = 0;
    long long value = strtoll(text, &end, 10);
    if (errno || end == text || *end) fail_setup("bad %s: %s", what, text);
    return value;
}

static void parse(int argc, char **argv) {
    int i = 1;
    for (; i < argc && strcmp(argv[i], "--") != 0; i++) {
        const char *flag = argv[i];
        if (!strcmp(flag, "--warm")) {
            config.warm = 1;
            continue;
        }
        if (!strcmp(flag, "--cpu-v2") || !strcmp(flag, "--network") || !strcmp(flag, "--sockets") ||
            !strcmp(flag, "--jail-child") || !strcmp(flag, "--job-dir")) {
            int *set = flag[2] == 'c' ? &config.cpu_v2 : flag[2] == 'n' ? &config.network
                : flag[2] == 's' ? &config.sockets : flag[6] == 'c' ? &config.jail_child
                : &config.job_dir;
            *set = 1;
            continue;
        }
        if (i + 1 >= argc) fail_setup("%s needs a value", flag);
        const char *value = argv[++i];
        if (!strcmp(flag, "--wall-ms")) job.wall_ms = number(value, flag);
        else if (!strcmp(flag, "--cpu-ms")) job.cpu_ms = number(value, flag);
        else if (!strcmp(flag, "--cpu-usage")) config.cpu_usage = value;
        else if (!strcmp(flag, "--pids-events")) config.pids_events = value;
        else if (!strcmp(flag, "--memory-usage")) config.memory_usage = value;
        else if (!strcmp(flag, "--memory-limit")) config.memory_limit = value;
        else if (!strcmp(flag, "--memory-stat")) config.memory_stat = value;
        else if (!strcmp(flag, "--join")) {
            if (config.join_count == MAX_JOINS) fail_setup("more than %d --join", MAX_JOINS);
            config.joins[config.join_count++] = value;
        } else if (!strcmp(flag, "--root")) config.root = value;
        else if (!strcmp(flag, "--tmpfs")) config.tmpfs = value;
        else if (!strcmp(flag, "--copy-from")) config.copy_from = value;
        else if (!strcmp(flag, "--uid")) config.uid = (uid_t)number(value, flag);
        else if (!strcmp(flag, "--gid")) config.gid = (gid_t)number(value, flag);
        else if (!strcmp(flag, "--request")) config.request = value;
        else if (!strcmp(flag, "--procs")) config.procs = value;
        else if (!strcmp(flag, "--network-bytes")) job.network_bytes = number(value, flag);
        else if (!strcmp(flag, "--socket-memory")) config.socket_memory = value;
        else if (!strcmp(flag, "--started-ns")) job.started_ns = number(value, flag);
        else if (!strcmp(flag, "--jail")) {
            config.own = 1;
            job.jail = (pid_t)number(value, flag);
        }
        else fail_setup("unknown flag %s", flag);
    }
    if (!config.request) fail_setup("usage: --request FILE is needed");
    if (config.own) return;
    if (i + 1 >= argc || !config.root || !config.tmpfs || config.uid == (uid_t)-1 ||
        config.gid == (gid_t)-1)
        fail_setup("usage: --root DIR --tmpfs OPTIONS --uid N --gid N --request FILE -- INIT");
    config.init = argv + i + 1;
    config.init_count = argc - i - 1;
}

static void write_file(const char *path, const char *text) {
    int fd = open(path, O_WRONLY | O_CLOEXEC);
    if (fd < 0 || write(fd, text, strlen(text)) < 0) fail_setup("%s: %s", path, strerror(errno));
    close(fd);
}

static void make_dirs(const char *path) {
    char partial[4096];
    if (snprintf(partial, sizeof partial, "%s", path) >= (int)sizeof partial)
        fail_setup("path too long: %s", path);
    for (char *at = partial + 1; *at; at++) {
        if (*at != '/') continue;
        *at = 0;
        if (mkdir(partial, 0755) < 0 && errno != EEXIST) fail_setup("mkdir %s: %s", partial, strerror(errno));
        *at = '/';
    }
    if (mkdir(partial, 0755) < 0 && errno != EEXIST) fail_setup("mkdir %s: %s", partial, strerror(errno));
}

/* The job's regular files and directories from `from` into `into` (both open directories),
 * as `jail.copy_job_files` does: created by the jail's user (the caller has set its file
 * system ids), owned by it, modes kept but for set-id and group and other write bits. */
static void copy_tree(int from, int into, int depth, const char *where) {
    if (depth > MAX_COPY_DEPTH) fail_setup("job files deeper than %d under %s", MAX_COPY_DEPTH, where);
    int listed = dup(from);
    DIR *dir = listed < 0 ? NULL : fdopendir(listed);
    if (!dir) fail_setup("read %s: %s", where, strerror(errno));
    struct dirent *entry;
    while ((errno = 0, entry = readdir(dir))) {
        const char *name = entry->d_name;
        if (!strcmp(name, ".") || !strcmp(name, "..")) continue;
        int source = openat(from, name, O_RDONLY | O_NOFOLLOW | O_CLOEXEC | O_NONBLOCK);
        struct stat st;
        if (source < 0 || fstat(source, &st) < 0) fail_setup("open %s/%s: %s", where, name, strerror(errno));
        if (S_ISDIR(st.st_mode)) {
            if (mkdirat(into, name, 0755) < 0) fail_setup("mkdir %s: %s", name, strerror(errno));
            int target = openat(into, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
            if (target < 0) fail_setup("open %s: %s", name, strerror(errno));
            if (geteuid() == 0 && fchown(target, config.uid, config.gid) < 0)
                fail_setup("chown %s: %s", name, strerror(errno));
            copy_tree(source, target, depth + 1, name);
            close(target);
        } else if (S_ISREG(st.st_mode)) {
            int target = openat(into, name, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC,
                                st.st_mode & 0755);
            if (target < 0) fail_setup("create %s: %s", name, strerror(errno));
            ssize_t sent;
            while ((sent = sendfile(target, source, NULL, 1 << 20)) > 0) {}
            if (sent < 0) fail_setup("copy %s: %s", name, strerror(errno));
            if (geteuid() == 0 && fchown(target, config.uid, config.gid) < 0)
                fail_setup("chown %s: %s", name, strerror(errno));
            close(target);
        } else {
            fail_setup("%s/%s is not a regular file or directory", where, name);
        }
        close(source);
    }
    if (errno) fail_setup("read %s: %s", where, strerror(errno));
    closedir(dir);
}

static void copy_job_files(int target) {
    int from = open(config.copy_from, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (from < 0) fail_setup("open %s: %s", config.copy_from, strerror(errno));
    /* Per thread, and this process has one: the files are the jail user's from birth (the
     * tmpfs may belong to its user namespace, where root cannot create them). Changing
     * the fsuid makes a process undumpable, which would close our /proc/<pid>/fd (the
     * job's tmpfs, for its files out) to a service without CAP_SYS_PTRACE: restored. */
    int dumpable = prctl(PR_GET_DUMPABLE, 0, 0, 0, 0);
    setfsgid(config.gid);
    setfsuid(config.uid);
    copy_tree(from, target, 0, config.copy_from);
    setfsuid(0);
    setfsgid(0);
    if (dumpable > 0 && prctl(PR_SET_DUMPABLE, dumpable, 0, 0, 0) < 0)
        fail_setup("prctl: %s", strerror(errno));
    if (geteuid() == 0 && fchown(target, config.uid, config.gid) < 0)
        fail_setup("chown %s: %s", config.root, strerror(errno));
    close(from);
}

static int open_file(const char *path) {
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) fail_setup("%s: %s", path, strerror(errno));
    return fd;
}

/* A descriptor moved above the ones passed on to pid 1, close-on-exec. */
static int high(int fd) {
    int moved = fcntl(fd, F_DUPFD_CLOEXEC, 16);
    if (moved < 0) fail_setup("fcntl: %s", strerror(errno));
    close(fd);
    return moved;
}

/* Builds what nsjail cannot (the pid namespace, the job's tmpfs) and spawns pid 1, as
 * `nsjail.launch` does; returns the read end of nsjail's ready pipe. */
static int launch(void) {
    for (int i = 0; i < config.join_count; i++) write_file(config.joins[i], "0");
    if (unshare(CLONE_NEWNS | CLONE_NEWPID) < 0) fail_setup("unshare: %s", strerror(errno));
    if (mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) < 0) fail_setup("mount /: %s", strerror(errno));
    make_dirs(config.root);
    if (mount("tmpfs", config.root, "tmpfs", MS_NOSUID | MS_NODEV, config.tmpfs) < 0)
        fail_setup("mount the job's tmpfs at %s: %s", config.root, strerror(errno));
    int job_dir = open(config.root, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (job_dir < 0) fail_setup("open %s: %s", config.root, strerror(errno));
    if (config.copy_from) copy_job_files(job_dir);
    job.job_dir = high(job_dir);
    /* Room for all nsjail logs before the program runs, when we start reading it (a
     * smaller pipe, should the kernel refuse, still holds the ~5 KiB it takes). */
    int log_pipe[2], ready[2];
    if (pipe2(log_pipe, O_CLOEXEC | O_NONBLOCK) < 0 || pipe2(ready, O_CLOEXEC) < 0)
        fail_setup("pipe: %s", strerror(errno));
    fcntl(log_pipe[0], F_SETPIPE_SZ, LOG_PIPE);
    nsjail_log.fd = high(log_pipe[0]);
    int log_w = high(log_pipe[1]);
    /* nsjail blocks on a full log, as it would on a slow terminal, rather than losing it. */
    fcntl(log_w, F_SETFL, 0);
    int ready_r = high(ready[0]), ready_w = high(ready[1]);
    /* nsjail's 0 and 1 become the program's; its 2 is its log; the rest it passes on. */
    if (dup2(log_w, 7) < 0 || dup2(ready_w, 8) < 0) fail_setup("dup2: %s", strerror(errno));
    close(log_w);
    close(ready_w);
    char **argv = calloc((size_t)config.init_count + 3, sizeof *argv);
    if (!argv) fail_setup("out of memory");
    argv[0] = config.init[0];
    argv[1] = "--fds";
    argv[2] = "0,1,7,3,4,2,8";
    memcpy(argv + 3, config.init + 1, (size_t)(config.init_count - 1) * sizeof *argv);
    char *no_environment[] = {NULL};
    int failed = posix_spawn(&job.jail, argv[0], NULL, NULL, argv, no_environment);
    if (failed) fail_setup("spawn %s: %s", argv[0], strerror(failed));
    free(argv);
    for (int fd = 0; fd <= 4; fd++) close(fd);
    close(7);
    close(8);
    return ready_r;
}

static void report_started(void) {
    struct text t = {0};
    addf(&t, "{\"type\": \"started\", \"pid\": %d, \"setup_ns\": %lld, \"job_dir\": ", job.jail,
         job.running_ns - job.started_ns);
    char job_dir[64] = "";
    if (config.warm && job.job_dir >= 0) snprintf(job_dir, sizeof job_dir, "/proc/%d/fd/%d", getpid(), job.job_dir);
    add_string(&t, job_dir, strlen(job_dir));
    add(&t, "}", 1);
    send_report(&t);
}

/* The mount namespace nsjail made for the program, held open from its start: tearing it
 * down waits for an RCU grace period (0.1 to 4 ms here, a VM's CPUs answering slowly),
 * which the program's exit, and so the job's end, would wait for. We let it go after the
 * report. -1 if it cannot be had (no /proc/PID/task/TID/children, no CAP_SYS_PTRACE, the
 * program gone): the program's exit then pays for it. */
static int hold_program_mounts(void) {
    char path[64], text[32];
    snprintf(path, sizeof path, "%d/task/%d/children", job.jail, job.jail);
    int fd = openat(job.host_proc, path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return -1;
    ssize_t length = read(fd, text, sizeof text - 1);
    close(fd);
    if (length <= 0) return -1;
    text[length] = 0;
    /* nsjail's one child: the program, which the shim that said it runs has become. */
    snprintf(path, sizeof path, "%ld/ns/mnt", strtol(text, NULL, 10));
    return openat(job.host_proc, path, O_RDONLY | O_CLOEXEC);
}

/* What a cgroup file holds, read from its start into `text`; 0 if nothing. */
static ssize_t read_whole(int fd, char *text, size_t room) {
    ssize_t length = fd < 0 ? -1 : pread(fd, text, room - 1, 0);
    if (length <= 0) return 0;
    text[length] = 0;
    return length;
}

/* The value of `key` in a "key value" a line text (cpu.stat, pids.events, memory.stat);
 * -1 if absent. */
static long long keyed(const char *text, const char *key) {
    size_t length = strlen(key);
    for (const char *line = text; line; line = strchr(line, '\n') ? strchr(line, '\n') + 1 : NULL)
        if (!strncmp(line, key, length) && line[length] == ' ')
            return strtoll(line + length + 1, NULL, 10);
    return -1;
}

static long long cpu_used_ns(void) {
    char text[4096];
    if (!read_whole(job.cpu_usage, text, sizeof text)) return 0;
    if (!config.cpu_v2) return strtoll(text, NULL, 10);
    long long usec = keyed(text, "usage_usec");
    return usec < 0 ? 0 : usec * 1000;
}

static int limits_apply(void) { return job.running_ns && job.handed; }

/* Whether forks have kept failing at the pids limit for longer than the grace. */
static int stuck_at_process_limit(long long now) {
    char text[4096];
    long long refused = read_whole(job.pids_events, text, sizeof text) ? keyed(text, "max") : -1;
    if (refused < 0 || refused == job.refused) return 0;
    job.refused = refused;
    if (!job.episode_first || now - job.episode_last > PIDS_EPISODE_NS) job.episode_first = now;
    job.episode_last = now;
    return now - job.episode_first >= PIDS_GRACE_NS;
}

/* Whether the job has thrashed at its memory limit for longer than the grace.
 *
 * A job whose anonymous memory fills its cgroup's limit is OOM-killed, unless the group
 * also holds file pages: its program, libraries, the files it reads. Reclaim then evicts
 * those, the job reads them again at once, and to the kernel that is progress, so its OOM
 * killer never comes: the job runs on at a crawl, its CPU time spent in reclaim (a Go
 * goroutine bomb whose binary had left the page cache spent 9 s of system time at its
 * 128 MiB limit, then met its CPU limit). Thrashing is told by three things, for longer
 * than the grace: the group within a sixteenth of its limit; its anonymous and tmpfs
 * memory (nothing reclaims those without swap) too; its evicted file pages read again
 * (`workingset_refault_file` rising). A job at its limit that streams files, with room
 * left, does not refault; one that re-reads files with a sixteenth of its limit free of
 * anonymous memory is let run. Room ends an episode at once; a poll that finds no new
 * refault does not (a poll comes late on a busy host, and a thrashing job's usage
 * wavers): only a second without one does. Tested by tests/isolation/test_thrash.py. */
static int thrashing_at_memory_limit(long long now) {
    char text[8192];
    if (job.memory_stat < 0) {
        /* Opened at the first poll: most jobs end before one, and need not pay for it. */
        job.memory_usage = open(config.memory_usage, O_RDONLY | O_CLOEXEC);
        job.memory_limit = open(config.memory_limit, O_RDONLY | O_CLOEXEC);
        job.memory_stat = open(config.memory_stat, O_RDONLY | O_CLOEXEC);
    }
    long long usage = read_whole(job.memory_usage, text, sizeof text) ? strtoll(text, NULL, 10) : 0;
    long long limit = read_whole(job.memory_limit, text, sizeof text) ? strtoll(text, NULL, 10) : 0;
    long long full = limit - limit / 16, unreclaimable = 0;
    int read = limit > 0 && usage >= full && read_whole(job.memory_stat, text, sizeof text);
    if (read) {
        /* v2 says "anon", v1 "rss"; both "shmem" (tmpfs: without swap, not reclaimable). */
        long long anon = keyed(text, "anon"), rss = keyed(text, "rss"), shmem = keyed(text, "shmem");
        long long anonymous = anon > rss ? anon : rss;
        unreclaimable = (anonymous > 0 ? anonymous : 0) + (shmem > 0 ? shmem : 0);
    }
    if (!read || unreclaimable < full) {
        job.thrash_first = job.thrash_last = 0; /* room left */
        return 0;
    }
    long long refaults = keyed(text, "workingset_refault_file");
    int rising = job.refaults >= 0 && refaults > job.refaults;
    job.refaults = refaults;
    if (job.thrash_first && now - job.thrash_last > MEMORY_EPISODE_NS) job.thrash_first = 0;
    if (rising) {
        if (!job.thrash_first) job.thrash_first = now;
        job.thrash_last = now;
    }
    return job.thrash_first && now - job.thrash_first >= MEMORY_GRACE_NS;
}

static void stop(const char *reason) {
    if (!job.stopped_for[0]) snprintf(job.stopped_for, sizeof job.stopped_for, "%s", reason);
    /* The jail's pid 1: the kernel kills the rest of its pid namespace with it. */
    kill_jail();
}

/* Bytes sent and received through `tap0` ("tap0: RX_BYTES ... (8 receive fields) TX_BYTES"
 * in /proc/net/dev), frames' headers included; 0 and 0 without one. */
static void parse_net_dev(const char *text, long long *sent, long long *received) {
    *sent = *received = 0;
    for (const char *line = text; line; line = strchr(line, '\n') ? strchr(line, '\n') + 1 : NULL) {
        while (*line == ' ') line++;
        if (strncmp(line, "tap0:", 5)) continue;
        const char *at = line + 5;
        for (int field = 0; field <= 8; field++) {
            char *end;
            long long value = strtoll(at, &end, 10);
            if (end == at) return;
            if (field == 0) *received = value;
            if (field == 8) *sent = value;
            at = end;
        }
        return;
    }
}

/* The job's bytes since it was given its sandbox (a warm sandbox's wait is not its). */
static void network_used(long long *sent, long long *received) {
    char text[16384];
    *sent = *received = 0;
    if (read_whole(job.net_dev, text, sizeof text)) parse_net_dev(text, sent, received);
    *sent -= job.sent_baseline;
    *received -= job.received_baseline;
}

/* The number a cgroup file holds; 0 if unreadable or not a number ("max"). */
static long long file_number(int fd) {
    char text[64];
    return read_whole(fd, text, sizeof text) ? strtoll(text, NULL, 10) : 0;
}

/* Whether a network-on job's sockets (TCP and UDP buffers) and its memory together fill its
 * memory limit. cgroup v1 charges socket buffers apart, to a counter limited to the memory
 * limit (`cgroups._limit_sockets`), where sends wait and datagrams drop; v2 charges them to
 * the memory itself, which reclaims around them rather than OOM-kill. Either way the job
 * is stopped once its sockets hold a sixteenth of its limit or more and, with its anonymous
 * and tmpfs memory (nothing reclaims those without swap), come within a sixteenth of it. */
static int sockets_fill_memory(void) {
    char text[8192];
    if (job.memory_stat < 0) return 0; /* opened by `thrashing_at_memory_limit` */
    long long limit = file_number(job.memory_limit);
    long long sockets = job.socket_memory >= 0 ? file_number(job.socket_memory) : -1;
    if (limit <= 0 || (sockets >= 0 && sockets < limit / 16)) return 0;
    if (!read_whole(job.memory_stat, text, sizeof text)) return 0;
    if (sockets < 0) sockets = keyed(text, "sock") > 0 ? keyed(text, "sock") : 0;
    long long anon = keyed(text, "anon"), rss = keyed(text, "rss"), shmem = keyed(text, "shmem");
    long long held = (anon > rss ? (anon > 0 ? anon : 0) : (rss > 0 ? rss : 0)) + (shmem > 0 ? shmem : 0);
    return sockets >= limit / 16 && sockets + held >= limit - limit / 16;
}

static void hand_over(const char *command) {
    long long began = now_ns(), wall, cpu, network;
    int used = 0;
    if (sscanf(command, "go %lld %lld %lld%n", &wall, &cpu, &network, &used) != 3 || command[used]) {
        snprintf(job.error, sizeof job.error, "sandbox hand-over: bad command %s", command);
        stop("cancel");
        return;
    }
    job.wall_ms = wall;
    job.cpu_ms = cpu;
    job.network_bytes = network;
    job.sent_baseline = job.received_baseline = 0;
    network_used(&job.sent_baseline, &job.received_baseline);
    job.cpu_baseline_ns = cpu_used_ns();
    job.running_ns = now_ns();
    job.handover_ns = job.running_ns - began;
    job.handed = 1;
    struct text t = {0};
    add(&t, "{\"type\": \"handed\"}", 18);
    send_report(&t);
}

/* Whether a whole log line is nsjail's word on how the program ended (`nsjail._EXITED`,
 * `_SIGNALLED`): the end of the job, whatever its orphans still do. */
static int says_program_ended(const char *line) {
    return strstr(line, "([STANDALONE MODE]) exited with status: ") ||
           strstr(line, "([STANDALONE MODE]) terminated with signal: ");
}

static void keep_log(const char *bytes, size_t length) {
    for (size_t i = 0; i < length; i++) {
        if (nsjail_log.head_length < LOG_KEPT) nsjail_log.head[nsjail_log.head_length++] = bytes[i];
        else nsjail_log.tail[nsjail_log.tail_total++ % LOG_KEPT] = bytes[i];
        if (bytes[i] == '\n') {
            nsjail_log.line[nsjail_log.line_length] = 0;
            if (says_program_ended(nsjail_log.line)) nsjail_log.program_ended = 1;
            nsjail_log.line_length = 0;
        } else if (nsjail_log.line_length < LINE_KEPT - 1) {
            nsjail_log.line[nsjail_log.line_length++] = bytes[i];
        }
    }
}

/* Reads what nsjail has logged so far, without waiting; closes the log at its end. */
static void read_log(void) {
    char chunk[16 << 10];
    while (nsjail_log.fd >= 0) {
        ssize_t length = read(nsjail_log.fd, chunk, sizeof chunk);
        if (length > 0) {
            keep_log(chunk, (size_t)length);
        } else if (length == 0 || errno != EINTR) {
            if (length == 0 || errno != EAGAIN) {
                close(nsjail_log.fd);
                nsjail_log.fd = -1;
            }
            return;
        }
    }
}

static void report_started(void);

/* One of init's status lines (own jail): "running NS", "error TEXT" or "end WAIT_STATUS
 * USER_NS SYSTEM_NS PEAK_BYTES"; anything else is ignored. */
static void on_status(const char *line) {
    long long values[4];
    int used = 0;
    if (!strncmp(line, "running ", 8) && !job.ready) {
        job.ready = 1;
        job.running_ns = now_ns();
        report_started();
    } else if (!strncmp(line, "error ", 6)) {
        size_t length = strnlen(line + 6, sizeof job.error - 1);
        memcpy(job.error, line + 6, length);
        job.error[length] = 0;
    } else if (sscanf(line, "end %lld %lld %lld %lld%n", &values[0], &values[1], &values[2],
                      &values[3], &used) == 4 && !line[used]) {
        job.ended = 1;
        job.wait_status = values[0];
        job.user_cpu_ns = values[1];
        job.system_cpu_ns = values[2];
        job.peak_memory_bytes = values[3];
    }
}

/* Init's status as it comes, split into lines (a line past STATUS_LINE is cut there). */
static void keep_status(const char *bytes, size_t length) {
    for (size_t i = 0; i < length; i++) {
        if (bytes[i] == '\n') {
            status.line[status.length] = 0;
            on_status(status.line);
            status.length = 0;
        } else if (status.length < STATUS_LINE - 1) {
            status.line[status.length++] = bytes[i];
        }
    }
}

/* Reads init's status pipe; 0 once it has ended. `all`: until its end. */
static int read_status(int all) {
    char chunk[16 << 10];
    for (;;) {
        ssize_t length = read(JAIL_STATUS, chunk, sizeof chunk);
        if (length < 0 && errno == EINTR) continue;
        if (length <= 0) return 0;
        keep_status(chunk, (size_t)length);
        if (!all) return 1;
    }
}

/* The log kept: its head, a line break, then its tail in order. */
static void add_log(struct text *t) {
    struct text joined = {0};
    add(&joined, nsjail_log.head, nsjail_log.head_length);
    add(&joined, "\n", 1);
    size_t kept = nsjail_log.tail_total < LOG_KEPT ? nsjail_log.tail_total : LOG_KEPT;
    size_t oldest = (nsjail_log.tail_total - kept) % LOG_KEPT;
    size_t first = kept < LOG_KEPT - oldest ? kept : LOG_KEPT - oldest;
    add(&joined, nsjail_log.tail + oldest, first);
    add(&joined, nsjail_log.tail, kept - first);
    add_string(t, joined.data, joined.length);
    free(joined.data);
}

static void run_commands(char *commands);

/* The service's commands, one a line (two written quickly may come in one read): a stop
 * reason, or a warm sandbox's "go ..."; its end (the service gone) stops the job. */
static void read_control(struct pollfd *control) {
    char commands[CONTROL_READ + 1];
    ssize_t length = read(CONTROL, commands, CONTROL_READ);
    if (length < 0 && errno == EINTR) return;
    if (length <= 0) {
        control->fd = -1;
        stop("cancel");
        return;
    }
    commands[length] = 0;
    run_commands(commands);
}

/* Each command of `commands` (a NUL-ended buffer, changed in place), one a line. */
static void run_commands(char *commands) {
    for (char *line = strtok(commands, "\n"); line; line = strtok(NULL, "\n")) {
        while (*line == ' ' || *line == '\r' || *line == '\t') line++;
        size_t end = strlen(line);
        while (end && (line[end - 1] == ' ' || line[end - 1] == '\r' || line[end - 1] == '\t')) line[--end] = 0;
        if (!end) continue;
        if (!strncmp(line, "go ", 3) && !job.handed) hand_over(line);
        else stop(line);
    }
}

/* Every process of the job but us SIGKILLed, by the list of the cgroup we joined (its
 * threads: a kill reaches a thread's whole process), so that none of the job's code runs
 * once its end is reported; the jail's pid 1 first, whose end ends its pid namespace (and
 * catches a child forked while we read). */
static void kill_the_rest(void) {
    kill_jail();
    int fd = config.procs ? open(config.procs, O_RDONLY | O_CLOEXEC) : -1;
    if (fd < 0) return;
    char chunk[4096];
    long long pid = 0;
    ssize_t length;
    while ((length = read(fd, chunk, sizeof chunk)) > 0 || (length < 0 && errno == EINTR)) {
        for (ssize_t i = 0; i < length; i++) {
            if (chunk[i] >= '0' && chunk[i] <= '9') {
                pid = pid * 10 + (chunk[i] - '0');
                continue;
            }
            if (pid > 0 && pid != getpid()) kill((pid_t)pid, SIGKILL);
            pid = 0;
        }
    }
    if (pid > 0 && pid != getpid()) kill((pid_t)pid, SIGKILL);
    close(fd);
}

/* Whether the report may go at the program's end, before the jail is gone: the job's
 * usage is in its cgroup, it was not stopped, and no files are to be taken from it (its
 * orphans, killed with the jail, must not be writing them). */
static int reports_early(void) {
    return (config.own ? job.ended : nsjail_log.program_ended) && job.cpu_usage >= 0 && !job.stopped_for[0] &&
           access(config.request, F_OK) != 0;
}

/* Waits until the jail's pid 1 has gone: reaped (with its usage) when it is our child. */
static void wait_for_jail(int *wait_status, struct rusage *usage) {
    if (!config.own || config.jail_child) {
        while (wait4(job.jail, wait_status, 0, usage) < 0 && errno == EINTR) {}
        return;
    }
    struct pollfd gone = {job.jail_pidfd, POLLIN, 0};
    while (poll(&gone, 1, -1) < 0 && errno == EINTR) {}
}

/* The jail's descriptor that says how it goes: nsjail's ready pipe, or init's status. */
static void read_jail(struct pollfd *watched, int ready_r) {
    if (config.own) {
        if (!read_status(0)) watched[2].fd = -1;
        return;
    }
    if (watched[2].revents) {
        char chunk[64];
        ssize_t length = read(ready_r, chunk, sizeof chunk);
        if (length <= 0) {
            watched[2].fd = -1;
        } else if (!job.ready) {
            job.ready = 1;
            job.running_ns = now_ns();
            watched[3].fd = nsjail_log.fd;
            report_started();
            job.program_mounts = hold_program_mounts();
        }
    }
}

/* Every limit of the job, checked at `now`; `deadline`: its wall clock's (0: none). */
static void check_limits(long long now, long long deadline) {
    if (deadline && now >= deadline) stop("wall_time");
    if (!limits_apply()) return;
    if (job.cpu_ms && cpu_used_ns() - job.cpu_baseline_ns >= job.cpu_ms * 1000000) stop("cpu_time");
    if (stuck_at_process_limit(now)) stop("processes");
    if (config.memory_stat && thrashing_at_memory_limit(now)) stop("memory");
    if (config.sockets && sockets_fill_memory()) stop("socket_memory");
    if (config.network && job.network_bytes) {
        long long sent, received;
        network_used(&sent, &received);
        if (sent + received > job.network_bytes) stop("network");
    }
}

static void add_exit(struct text *t, long long ended_ns, const struct rusage *usage, long long sent,
                     long long received);

static void supervise(int ready_r) {
    if (!config.own) job.jail_pidfd = (int)syscall(SYS_pidfd_open, job.jail, 0);
    if (job.jail_pidfd < 0) {
        snprintf(job.error, sizeof job.error, "sandbox setup: pidfd_open: %s", strerror(errno));
        kill(job.jail, SIGKILL);
    }
    if (config.own) {
        /* The jail's mount namespace, held until the report: its teardown (an RCU grace
         * period) is then not paid by the last process to leave it. */
        char path[64];
        snprintf(path, sizeof path, "%d/ns/mnt", job.jail);
        job.program_mounts = openat(job.host_proc, path, O_RDONLY | O_CLOEXEC);
    }
    struct pollfd watched[4] = {{job.jail_pidfd, POLLIN, 0}, {CONTROL, POLLIN, 0},
                                {config.own ? JAIL_STATUS : ready_r, POLLIN, 0}, {-1, POLLIN, 0}};
    int done = job.jail_pidfd < 0, early = 0;
    while (!done && !early) {
        /* Once stopped, only the jail's end is awaited (its pid namespace's teardown may
         * take a while): no deadline, no polling. */
        int timeout = -1, running = limits_apply() && !job.stopped_for[0];
        long long deadline = running && job.wall_ms ? job.running_ns + job.wall_ms * 1000000 : 0;
        if (deadline) {
            long long left = (deadline - now_ns() + 999999) / 1000000;
            timeout = left <= 0 ? 0 : left > INT_MAX ? INT_MAX : (int)left;
        }
        int polled = job.cpu_ms || job.pids_events >= 0 || config.memory_stat || job.network_bytes;
        if (polled && running) timeout = timeout < 0 || timeout > CPU_POLL_MS ? CPU_POLL_MS : timeout;
        if (poll(watched, 4, timeout) < 0 && errno != EINTR) {
            snprintf(job.error, sizeof job.error, "sandbox supervisor: poll: %s", strerror(errno));
            stop("cancel");
            break;
        }
        if (watched[0].revents) done = 1;
        if (watched[1].revents) read_control(&watched[1]);
        if (watched[2].revents) {
            read_jail(watched, ready_r);
            early = config.own && reports_early();
        }
        if (watched[3].revents) {
            read_log();
            watched[3].fd = nsjail_log.fd;
            early = reports_early();
        }
        check_limits(now_ns(), deadline);
    }
    long long ended_ns = now_ns();
    /* Read before the rest of the job is killed: its network helper is in its group, and
     * `tap0` (with its counters) goes with the helper. */
    long long sent = 0, received = 0;
    if (config.network) network_used(&sent, &received);
    int wait_status = 0;
    struct rusage usage = {0};
    if (early) {
        /* The program is gone: what is left of its jail goes too, its teardown off the
         * job's path. */
        kill_the_rest();
    } else {
        wait_for_jail(&wait_status, &usage);
        if (config.own) read_status(1);
        else read_log();
    }

    /* (An early report has found no request already.) */
    int collect = !early && job.job_dir >= 0 && access(config.request, F_OK) == 0;
    if (job.job_dir >= 0 && !collect && !early) {
        /* The tmpfs's last reference: freed now, before the report says the job is gone. */
        close(job.job_dir);
        job.job_dir = -1;
    }
    struct text t = {0};
    add_exit(&t, ended_ns, &usage, sent, received);
    if (collect) {
        char job_dir[64];
        snprintf(job_dir, sizeof job_dir, "/proc/%d/fd/%d", getpid(), job.job_dir);
        add(&t, ", \"collect_from\": ", 18);
        add_string(&t, job_dir, strlen(job_dir));
    }
    add(&t, "}", 1);
    send_report(&t);
    if (job.program_mounts >= 0) close(job.program_mounts);
    if (early) {
        /* Gone once we exit, as the service expects of our pid: the jail first. */
        if (nsjail_log.fd >= 0) close(nsjail_log.fd);
        wait_for_jail(&wait_status, NULL);
    }
    /* The service takes the files through our descriptor, then closes `control`. */
    while (collect && watched[1].fd >= 0) {
        char ignored[64];
        ssize_t length = read(CONTROL, ignored, sizeof ignored);
        if (length == 0 || (length < 0 && errno != EINTR)) break;
    }
}

/* The exit report but its closing brace and "collect_from": how the program ended (nsjail's
 * log, or init's "end"), the clocks, the network's bytes. */
static void add_exit(struct text *t, long long ended_ns, const struct rusage *usage, long long sent,
                     long long received) {
    addf(t, "{\"type\": \"exit\", \"pid\": %d, \"setup_error\": ", getpid());
    add_string(t, job.error, strlen(job.error));
    add(t, ", \"stopped_for\": ", 17);
    if (job.stopped_for[0]) add_string(t, job.stopped_for, strlen(job.stopped_for));
    else add(t, "null", 4);
    long long setup_ns = config.warm ? job.handover_ns : (job.running_ns ? job.running_ns : ended_ns) - job.started_ns;
    addf(t, ", \"run_ns\": %lld, \"setup_ns\": %lld", limits_apply() ? ended_ns - job.running_ns : 0, setup_ns);
    addf(t, ", \"network_sent_bytes\": %lld, \"network_received_bytes\": %lld", sent, received);
    if (config.own) {
        if (job.ended)
            addf(t, ", \"wait_status\": %lld, \"user_cpu_ns\": %lld, \"system_cpu_ns\": %lld, "
                    "\"peak_memory_bytes\": %lld",
                 job.wait_status, job.user_cpu_ns, job.system_cpu_ns, job.peak_memory_bytes);
        return;
    }
    addf(t, ", \"ready\": %s, \"usage\": {\"user_cpu_ns\": %lld, \"system_cpu_ns\": %lld, ",
         job.ready ? "true" : "false",
         usage->ru_utime.tv_sec * 1000000000LL + usage->ru_utime.tv_usec * 1000LL,
         usage->ru_stime.tv_sec * 1000000000LL + usage->ru_stime.tv_usec * 1000LL);
    addf(t, "\"peak_memory_bytes\": %lld}, \"nsjail_log\": ", (long long)usage->ru_maxrss * 1024);
    add_log(t);
}

int main(int argc, char **argv) {
    job.started_ns = now_ns();
    /* Nothing but our descriptors: whatever else came with the spawn is not ours. */
    syscall(SYS_close_range, 11U, ~0U, 0);
    /* A closed pipe is an error, not a death; ^C on the service's terminal is the
     * service's to handle (it closes `control`). */
    signal(SIGPIPE, SIG_IGN);
    signal(SIGINT, SIG_IGN);
    signal(SIGCHLD, SIG_DFL);
    parse(argc, argv);
    for (int fd = CONTROL; fd <= NETWORK_EXIT; fd++) fcntl(fd, F_SETFD, FD_CLOEXEC);
    if (!config.own) syscall(SYS_close_range, (unsigned)JAIL_PIDFD, (unsigned)JOB_DIR, 0);
    if (!config.network) close(NETWORK_EXIT);
    if (config.own) {
        job.jail_pidfd = JAIL_PIDFD;
        if (config.job_dir) job.job_dir = JOB_DIR;
        else close(JOB_DIR);
    }
    job.handed = !config.warm;
    if (config.cpu_usage) job.cpu_usage = high(open_file(config.cpu_usage));
    if (config.pids_events) job.pids_events = high(open_file(config.pids_events));
    if (!config.memory_usage || !config.memory_limit) config.memory_stat = NULL;
    if (!config.memory_stat) config.sockets = 0;
    if (config.socket_memory && config.socket_memory[0])
        job.socket_memory = high(open_file(config.socket_memory));
    /* Ours, before pid 1 mounts the job's own /proc over it in the mount namespace we share. */
    job.host_proc = open("/proc", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (job.host_proc >= 0) job.host_proc = high(job.host_proc);
    if (config.network) job.net_dev = high(open_file("/proc/self/net/dev"));
    supervise(config.own ? -1 : launch());
    return 0;
}
