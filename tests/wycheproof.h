/*
 * Reading the vendored Wycheproof files (tests/vectors/wycheproof/): each has
 * "testGroups", each group its parameters and "tests", each test a "tcId",
 * its inputs and a "result" of "valid", "invalid" or "acceptable".
 */
#ifndef MSV_TEST_WYCHEPROOF_H
#define MSV_TEST_WYCHEPROOF_H

#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

/* How many cases of each result a test ran. */
struct wp_tally {
    int valid, invalid, acceptable;
};

/* Loads NAME under the vector directory; fails the test if it cannot. */
json_t *wp_load(const char *name);
/* The string field key of obj; fails the test if it is missing. */
const char *wp_str(json_t *obj, const char *key);
/* The hex field key of obj, decoded into a fresh buffer (caller frees). */
uint8_t *wp_hex(json_t *obj, const char *key, size_t *len);
/* 1 valid, 0 invalid, -1 acceptable (either outcome is allowed); counted in t. */
int wp_expected(json_t *test, struct wp_tally *t);
/* Fails the test, naming the case, when got (1 valid, 0 invalid) is not want. */
void wp_check(json_t *test, int want, int got);
/* Prints the tally and fails the test when fewer than minimum cases ran. */
void wp_report(const char *name, const struct wp_tally *t, int minimum);

/* Runs the statement after it once per test of every group of root. */
#define WP_FOR_EACH(root, group, test)                                                          \
    for (size_t gi_ = 0; gi_ < json_array_size(json_object_get(root, "testGroups")); gi_++)     \
        for (json_t *group = json_array_get(json_object_get(root, "testGroups"), gi_),          \
                    *once_ = group;                                                             \
             once_ != NULL; once_ = NULL)                                                       \
            for (size_t ti_ = 0; ti_ < json_array_size(json_object_get(group, "tests")); ti_++) \
                for (json_t *test = json_array_get(json_object_get(group, "tests"), ti_),       \
                            *once2_ = test;                                                     \
                     once2_ != NULL; once2_ = NULL)

#endif
