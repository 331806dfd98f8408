/* Shared by the tests: a deterministic random source and small file helpers. */
#ifndef MSV_TEST_HELPERS_H
#define MSV_TEST_HELPERS_H

#include <stddef.h>
#include <stdint.h>

#include "crypto/internal.h"

/*
 * Deterministic stream: block i is SHA-256(label || u32be i). Simple enough to
 * reproduce in any language, which the known-answer vectors rely on.
 */
struct test_rng_state {
    char label[64];
    uint32_t counter;
    uint8_t block[32];
    size_t used;
};

void test_rng_init(struct test_rng_state *s, struct msv_rng *rng, const char *label);

/* Fills n bytes from a fixed pattern that depends on seed. */
void test_fill_pattern(uint8_t *p, size_t n, unsigned seed);

/* Decodes hex into a fresh buffer (caller frees); aborts the test on bad hex. */
uint8_t *test_unhex(const char *hex, size_t *len);

/* Reads a whole file; NULL if it cannot. */
uint8_t *test_read_file(const char *path, size_t *len);

struct CMUnitTest;
/*
 * Runs the n tests as cmocka group `group`, or those the environment picks: MSV_TEST, a
 * name or pattern to run; MSV_TEST_SKIP, a pattern to leave out; MSV_TEST_PART "K/N" (K
 * from 1 to N), every Nth test from the Kth, so that ctest runs the parts of a long group
 * side by side. Reorders tests. Returns cmocka's result (1 on a malformed MSV_TEST_PART).
 */
int test_run_group(const char *group, struct CMUnitTest *tests, size_t n);

#endif
