/* Errors and the random number generator shared by the whole library. */
#include "mambabyte.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>

static _Thread_local char g_err[8192]; /* room for a path of PATH_MAX and the text around it */

const char *mb_last_error(void) {
    return g_err;
}

int mb_fail(int code, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(g_err, sizeof g_err, fmt, ap);
    va_end(ap);
    return code;
}

/* xoshiro256** (Blackman & Vigna), seeded through splitmix64. */
static uint64_t splitmix64(uint64_t *x) {
    uint64_t z = (*x += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

void mb_rng_seed(mb_rng *r, uint64_t seed) {
    uint64_t x = seed;
    for (int i = 0; i < 4; i++)
        r->s[i] = splitmix64(&x);
}

static inline uint64_t rotl(uint64_t x, int k) {
    return (x << k) | (x >> (64 - k));
}

uint64_t mb_rng_u64(mb_rng *r) {
    uint64_t *s = r->s;
    uint64_t result = rotl(s[1] * 5, 7) * 9;
    uint64_t t = s[1] << 17;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = rotl(s[3], 45);
    return result;
}

float mb_rng_float(mb_rng *r) {
    return (float)(mb_rng_u64(r) >> 40) * (1.0f / 16777216.0f);
}

double mb_rng_double(mb_rng *r) {
    return (double)(mb_rng_u64(r) >> 11) * (1.0 / 9007199254740992.0);
}

uint64_t mb_rng_below(mb_rng *r, uint64_t n) {
    /* rejection sampling on the top of the range: unbiased */
    uint64_t limit = UINT64_MAX - UINT64_MAX % n;
    uint64_t v;
    do {
        v = mb_rng_u64(r);
    } while (v >= limit);
    return v % n;
}

double mb_rng_normal(mb_rng *r) {
    double u1 = mb_rng_double(r), u2 = mb_rng_double(r);
    if (u1 < 1e-300) u1 = 1e-300;
    return sqrt(-2.0 * log(u1)) * cos(6.283185307179586 * u2);
}
