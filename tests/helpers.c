#include "helpers.h"

#include <errno.h>
#include <stdarg.h>
#include <setjmp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "client/internal.h"
#include "missive/util.h"

static void rng_fill(void *ctx, uint8_t *out, size_t n)
{
    struct test_rng_state *s = ctx;

    while (n > 0) {
        if (s->used == sizeof(s->block)) {
            uint8_t ctr[4] = {(uint8_t)(s->counter >> 24), (uint8_t)(s->counter >> 16),
                              (uint8_t)(s->counter >> 8), (uint8_t)s->counter};
            const uint8_t *parts[2] = {(const uint8_t *)s->label, ctr};
            size_t lens[2] = {strlen(s->label), 4};

            assert_int_equal(msv_sha256_parts(parts, lens, 2, s->block), MSV_OK);
            s->counter++;
            s->used = 0;
        }
        *out++ = s->block[s->used++];
        n--;
    }
}

void test_rng_init(struct test_rng_state *s, struct msv_rng *rng, const char *label)
{
    memset(s, 0, sizeof(*s));
    snprintf(s->label, sizeof(s->label), "%s", label);
    s->used = sizeof(s->block);
    rng->fill = rng_fill;
    rng->ctx = s;
}

void test_fill_pattern(uint8_t *p, size_t n, unsigned seed)
{
    uint32_t x = seed * 2654435761u + 1;

    for (size_t i = 0; i < n; i++) {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        p[i] = (uint8_t)x;
    }
}

uint8_t *test_unhex(const char *hex, size_t *len)
{
    size_t cap = strlen(hex) / 2 + 1;
    uint8_t *out = malloc(cap);

    assert_non_null(out);
    assert_int_equal(msv_hex_decode(hex, out, cap, len), MSV_OK);
    return out;
}

uint8_t *test_read_file(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    uint8_t *buf = NULL;
    long n;

    if (f == NULL)
        return NULL;
    if (fseek(f, 0, SEEK_END) == 0 && (n = ftell(f)) >= 0 && fseek(f, 0, SEEK_SET) == 0) {
        buf = malloc((size_t)n + 1);
        if (buf != NULL && fread(buf, 1, (size_t)n, f) != (size_t)n) {
            free(buf);
            buf = NULL;
        } else if (buf != NULL) {
            buf[n] = 0;
            *len = (size_t)n;
        }
    }
    fclose(f);
    return buf;
}

/* "K/N" with 1 <= K <= N: sets *k (from 0) and *parts */
static int parse_part(const char *spec, size_t *k, size_t *parts)
{
    char *end = NULL;
    unsigned long a, b;

    errno = 0;
    a = strtoul(spec, &end, 10);
    if (errno != 0 || end == spec || *end != '/')
        return 0;
    spec = end + 1;
    b = strtoul(spec, &end, 10);
    if (errno != 0 || end == spec || *end != '\0' || a < 1 || a > b || b > 1000)
        return 0;
    *k = a - 1;
    *parts = b;
    return 1;
}

int test_run_group(const char *group, struct CMUnitTest *tests, size_t n)
{
    const char *part = getenv("MSV_TEST_PART");
    size_t k = 0, parts = 1, kept = 0;

    if (part != NULL && !parse_part(part, &k, &parts)) {
        fprintf(stderr, "MSV_TEST_PART must be K/N with 1 <= K <= N, not \"%s\"\n", part);
        return 1;
    }
    for (size_t i = k; i < n; i += parts)
        tests[kept++] = tests[i]; /* i >= kept: nothing picked later is overwritten */
    if (getenv("MSV_TEST") != NULL)
        cmocka_set_test_filter(getenv("MSV_TEST"));
    if (getenv("MSV_TEST_SKIP") != NULL)
        cmocka_set_skip_filter(getenv("MSV_TEST_SKIP"));
    int failed = _cmocka_run_group_tests(group, tests, kept, NULL, NULL);

    /* the account's locks in one order, whatever the tests did (src/client/sessions.c) */
    if (client_lock_order_breaks() > 0) {
        fprintf(stderr, "%s: the session lock was taken under the MLS lock %lu times\n", group,
                client_lock_order_breaks());
        failed++;
    }
    return failed;
}
