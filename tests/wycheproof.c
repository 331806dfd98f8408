#include "wycheproof.h"

#include <stdarg.h>
#include <setjmp.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "helpers.h"

json_t *wp_load(const char *name)
{
    char path[512];
    json_error_t error;
    json_t *root;

    snprintf(path, sizeof(path), "%s/%s", MSV_VECTOR_DIR, name);
    root = json_load_file(path, 0, &error);
    if (root == NULL)
        fail_msg("cannot load %s: %s (line %d)", path, error.text, error.line);
    return root;
}

const char *wp_str(json_t *obj, const char *key)
{
    json_t *v = json_object_get(obj, key);

    if (!json_is_string(v))
        fail_msg("vector field %s missing", key);
    return json_string_value(v);
}

uint8_t *wp_hex(json_t *obj, const char *key, size_t *len)
{
    return test_unhex(wp_str(obj, key), len);
}

int wp_expected(json_t *test, struct wp_tally *t)
{
    const char *r = wp_str(test, "result");

    if (strcmp(r, "valid") == 0) {
        t->valid++;
        return 1;
    }
    if (strcmp(r, "invalid") == 0) {
        t->invalid++;
        return 0;
    }
    t->acceptable++;
    return -1;
}

void wp_check(json_t *test, int want, int got)
{
    json_t *comment = json_object_get(test, "comment");

    if (want >= 0 && want != got)
        fail_msg("tcId %lld (%s): expected %s",
                 (long long)json_integer_value(json_object_get(test, "tcId")),
                 json_is_string(comment) ? json_string_value(comment) : "",
                 want ? "valid" : "invalid");
}

void wp_report(const char *name, const struct wp_tally *t, int minimum)
{
    printf("# %s: %d valid, %d invalid, %d acceptable cases\n", name, t->valid, t->invalid,
           t->acceptable);
    assert_true(t->valid + t->invalid + t->acceptable >= minimum);
}
