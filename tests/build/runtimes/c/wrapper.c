/* The C test language's wrapper, per runtimes/PROTOCOL.md: reads the job's arguments
 * (a JSON object) on fd 4, calls the entry point that the plugin's generated
 * gristmill_entry.c binds, and writes {"result": <the JSON it returned>} on fd 3. */
#define _POSIX_C_SOURCE 200809L /* fdopen */
#include <stdio.h>
#include <unistd.h>

const char *gristmill_entry(const char *args_json);

int main(void) {
    static char args[1 << 16];
    size_t used = 0;
    ssize_t got;
    while (used < sizeof args - 1 && (got = read(4, args + used, sizeof args - 1 - used)) > 0) {
        used += (size_t)got;
    }
    args[used] = '\0';
    close(4);

    const char *result = gristmill_entry(args);
    FILE *channel = fdopen(3, "w");
    if (channel == NULL) {
        return 2;
    }
    if (result == NULL) {
        fputs("{\"error\": {\"name\": \"NullResult\", \"message\": \"the entry point returned NULL\"},"
              " \"verdict\": \"ERROR\"}", channel);
    } else {
        fprintf(channel, "{\"result\": %s}", result);
    }
    return fclose(channel) == 0 ? 0 : 2;
}
