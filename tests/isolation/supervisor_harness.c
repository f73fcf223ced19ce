/*
 * The compiled supervisor's parsers and rules, driven without a job: built with
 * -fsanitize=address,undefined by test_supervisor.py, which runs it.
 *
 *   supervisor_harness fuzz SEED ROUNDS FILE...
 *       Feeds each FILE (the corpus), then ROUNDS inputs mutated from them by a generator
 *       seeded with SEED (the same every run), to every parser of what a job or its cgroup
 *       can write: control commands, init's status lines, nsjail's log, cgroup "key value"
 *       files, /proc/net/dev, and the JSON string escaping of the report. Prints a line per
 *       input that broke an invariant; the sanitizers abort on memory or undefined errors.
 *   supervisor_harness thrash USAGE LIMIT STAT
 *       For each line NOW (ns) on stdin, one poll of the thrash rule over those memory
 *       files: "1" if the job would be stopped, else "0".
 */
#define main supervisor_main
#include "../../gristmill/isolation/nsjail_supervisor.c"
#undef main

#define INPUT_ROOM (1 << 14)

static unsigned long long state;

static unsigned long long next_random(void) {
    /* xorshift64*: deterministic, so a failing input is found again by its round. */
    state ^= state >> 12;
    state ^= state << 25;
    state ^= state >> 27;
    return state * 2685821657736338717ULL;
}

/* Whether `t` is valid JSON string syntax whose characters are all valid UTF-8. */
static int valid_json_string(const struct text *t) {
    const unsigned char *at = (const unsigned char *)t->data;
    size_t length = t->length;
    if (length < 2 || at[0] != '"' || at[length - 1] != '"') return 0;
    for (size_t i = 1; i + 1 < length; i++) {
        if (at[i] < 0x20 || at[i] == '"') return 0;
        if (at[i] == '\\') {
            i++;
            if (i + 1 >= length) return 0;
            if (at[i] == 'u') {
                if (i + 4 >= length) return 0;
                i += 4;
            } else if (at[i] != '"' && at[i] != '\\') {
                return 0;
            }
        } else if (at[i] >= 0x80) {
            size_t character = utf8_length(at + i, length - 1 - i);
            if (!character) return 0;
            i += character - 1;
        }
    }
    return 1;
}

/* One input through every parser; 0 if an invariant broke. */
static int feed(const char *input, size_t length) {
    char *copy = malloc(length + 1);
    if (!copy) return 0;
    memcpy(copy, input, length);
    copy[length] = 0; /* the parsers of whole files and commands take NUL-ended text */
    int ok = 1;

    struct text t = {0};
    add_string(&t, input, length);
    ok &= valid_json_string(&t);
    free(t.data);

    run_commands(copy);
    ok &= strlen(job.stopped_for) < sizeof job.stopped_for;
    job.stopped_for[0] = 0;
    job.handed = 0;

    memcpy(copy, input, length);
    keep_status(copy, length);
    ok &= strlen(job.error) < sizeof job.error && status.length < STATUS_LINE;

    keep_log(copy, length);
    ok &= nsjail_log.line_length < LINE_KEPT;
    t = (struct text){0};
    add_log(&t);
    ok &= valid_json_string(&t);
    free(t.data);

    long long sent, received;
    parse_net_dev(copy, &sent, &received);
    keyed(copy, "usage_usec");
    keyed(copy, "workingset_refault_file");
    free(copy);
    return ok;
}

static size_t read_input(const char *path, char *into) {
    FILE *file = fopen(path, "rb");
    if (!file) {
        perror(path);
        exit(2);
    }
    size_t length = fread(into, 1, INPUT_ROOM, file);
    fclose(file);
    return length;
}

static int fuzz(unsigned long long seed, long rounds, int count, char **paths) {
    static char corpus[16][INPUT_ROOM];
    static size_t lengths[16];
    static char input[INPUT_ROOM];
    int broken = 0;
    if (count > 16) count = 16;
    for (int i = 0; i < count; i++) {
        lengths[i] = read_input(paths[i], corpus[i]);
        if (!feed(corpus[i], lengths[i])) printf("broken: %s\n", paths[i]), broken++;
    }
    state = seed | 1;
    for (long round = 0; round < rounds && count; round++) {
        int from = (int)(next_random() % (unsigned)count);
        size_t length = lengths[from];
        memcpy(input, corpus[from], length);
        for (int edits = 1 + (int)(next_random() % 8); edits--;) {
            size_t at = length ? next_random() % length : 0;
            switch (next_random() % 4) {
            case 0: /* a byte changed */
                if (length) input[at] = (char)next_random();
                break;
            case 1: /* a byte inserted */
                if (length < INPUT_ROOM) {
                    memmove(input + at + 1, input + at, length - at);
                    input[at] = (char)next_random();
                    length++;
                }
                break;
            case 2: /* cut short */
                length = at;
                break;
            default: /* a run repeated: long lines, many lines */
                if (length && length * 2 <= INPUT_ROOM) {
                    memcpy(input + length, input, length);
                    length *= 2;
                }
            }
        }
        if (!feed(input, length)) printf("broken: round %ld\n", round), broken++;
    }
    printf("fed %ld inputs, %d broken\n", rounds + count, broken);
    return broken ? 1 : 0;
}

static int thrash(char **paths) {
    config.memory_usage = paths[0];
    config.memory_limit = paths[1];
    config.memory_stat = paths[2];
    char line[64];
    while (fgets(line, sizeof line, stdin)) {
        printf("%d\n", thrashing_at_memory_limit(strtoll(line, NULL, 10)));
        fflush(stdout);
    }
    return 0;
}

int main(int argc, char **argv) {
    /* The report goes nowhere: what is checked here is what parses it. */
    int null = open("/dev/null", O_WRONLY);
    dup2(null, REPORT);
    if (argc >= 4 && !strcmp(argv[1], "fuzz"))
        return fuzz(strtoull(argv[2], NULL, 10), strtol(argv[3], NULL, 10), argc - 4, argv + 4);
    if (argc == 5 && !strcmp(argv[1], "thrash")) return thrash(argv + 2);
    fprintf(stderr, "usage: supervisor_harness fuzz SEED ROUNDS FILE... | thrash USAGE LIMIT STAT\n");
    return 2;
}
