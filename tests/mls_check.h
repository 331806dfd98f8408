/*
 * What the MLS test programs (tests/test_mls_group.c, tests/test_mls_resume.c) check with:
 * a failed check is counted and named with its line, and the program goes on; a step a test
 * cannot go on without ends it. Each program includes this once and exits non-zero when
 * failures > 0.
 */
#ifndef MSV_TESTS_MLS_CHECK_H
#define MSV_TESTS_MLS_CHECK_H

#include <stdio.h>
#include <stdlib.h>

static int failures;

#define CHECK(cond, what)                                             \
    do {                                                              \
        if (!(cond)) {                                                \
            fprintf(stderr, "%s:%d: %s\n", __FILE__, __LINE__, what); \
            failures++;                                               \
        }                                                             \
    } while (0)

static void fatal(const char *what)
{
    fprintf(stderr, "fatal: %s\n", what);
    exit(1);
}

#endif
