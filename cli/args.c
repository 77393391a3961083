/* Flag parsing helpers shared by the subcommands. */
#include "args.h"

#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>

/* the "--name=value" argument being parsed: its name and its value (NULL once taken) */
static char g_flag_name[128];
static const char *g_flag_value, *g_flag_arg;

static int unused_value(const char *cmd) {
    if (!g_flag_value) return 0;
    fprintf(stderr, "mambabyte %s: %s takes no value (got '%s')\n", cmd, g_flag_name, g_flag_arg);
    g_flag_value = NULL;
    return 1;
}

const char *arg_flag(const char *cmd, char **argv, int i) {
    if (unused_value(cmd)) return NULL;
    const char *a = argv[i], *eq = strchr(a, '=');
    g_flag_arg = a;
    if (a[0] != '-' || a[1] != '-' || !eq || eq == a + 2 || (size_t)(eq - a) >= sizeof g_flag_name)
        return a;
    memcpy(g_flag_name, a, (size_t)(eq - a));
    g_flag_name[eq - a] = '\0';
    g_flag_value = eq + 1;
    return g_flag_name;
}

int arg_flags_end(const char *cmd) {
    return unused_value(cmd);
}

const char *arg_value(const char *cmd, int argc, char **argv, int *i) {
    if (g_flag_value) {
        const char *v = g_flag_value;
        g_flag_value = NULL;
        return v;
    }
    if (*i + 1 >= argc) {
        fprintf(stderr, "mambabyte %s: %s needs a value\n", cmd, argv[*i]);
        return NULL;
    }
    return argv[++*i];
}

int arg_path_check(const char *cmd, const char *what, const char *path) {
    if (path && *path) return 0;
    fprintf(stderr, "mambabyte %s: %s needs a path, not an empty string\n", cmd, what);
    return -1;
}

const char *arg_path(const char *cmd, const char *flag, int argc, char **argv, int *i) {
    const char *v = arg_value(cmd, argc, argv, i);
    return v && arg_path_check(cmd, flag, v) == 0 ? v : NULL;
}

int arg_int64(const char *cmd, const char *flag, const char *s, int64_t lo, int64_t hi,
              int64_t *out) {
    char *end;
    errno = 0;
    long long v = strtoll(s, &end, 10);
    /* (strtoll skips leading blanks, which the end check cannot see: refused here, as trailing
     * ones are) */
    if (errno || end == s || *end != '\0' || isspace((unsigned char)s[0]) || v < lo || v > hi) {
        fprintf(stderr, "mambabyte %s: %s must be an integer in [%lld, %lld], got '%s'\n", cmd,
                flag, (long long)lo, (long long)hi, s);
        return -1;
    }
    *out = v;
    return 0;
}

int arg_float(const char *cmd, const char *flag, const char *s, double lo, double hi, double *out) {
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (errno || end == s || *end != '\0' || isspace((unsigned char)s[0]) || !isfinite(v) ||
        v < lo || v > hi) {
        fprintf(stderr, "mambabyte %s: %s must be a number in [%g, %g], got '%s'\n", cmd, flag, lo,
                hi, s);
        return -1;
    }
    *out = v;
    return 0;
}

const char *fmt_bytes(double b, char *buf, int n) {
    const char *u[] = {"B", "KiB", "MiB", "GiB", "TiB"};
    int k = 0;
    while (b >= 1024.0 && k < 4)
        b /= 1024.0, k++;
    snprintf(buf, (size_t)n, k ? "%.1f %s" : "%.0f %s", b, u[k]);
    return buf;
}

const char *fmt_duration(double s, char *buf, int n) {
    if (!isfinite(s) || s < 0) s = 0;
    long t = (long)(s + 0.5);
    if (t >= 3600)
        snprintf(buf, (size_t)n, "%ldh%02ldm%02lds", t / 3600, t / 60 % 60, t % 60);
    else if (t >= 60)
        snprintf(buf, (size_t)n, "%ldm%02lds", t / 60, t % 60);
    else
        snprintf(buf, (size_t)n, "%lds", t);
    return buf;
}

double now_seconds(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

double peak_rss_bytes(void) {
    struct rusage ru;
    if (getrusage(RUSAGE_SELF, &ru)) return 0.0;
    return (double)ru.ru_maxrss * 1024.0; /* Linux reports KiB */
}
