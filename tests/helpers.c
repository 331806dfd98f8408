#include "helpers.h"

#include <stdarg.h>
#include <setjmp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

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
