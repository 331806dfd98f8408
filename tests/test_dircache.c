/* The relay's directory cache: hits, drops, the generation guard, its bound. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include <cmocka.h>

#include "server/dircache.h"

static const struct msv_dir_device two[2] = {{.id = 5, .suite = 3}, {.id = 9, .suite = 1}};

static void test_hit_and_drop(void **state)
{
    struct msv_dircache c;
    struct msv_dir_device out[4];
    uint64_t account = 0, gen = 0;
    size_t n = 0;
    (void)state;

    msv_dircache_init(&c, 100);
    assert_false(msv_dircache_get(&c, "a@x", &account, out, 4, &n, &gen));
    msv_dircache_put(&c, "a@x", 77, two, 2, gen);
    assert_true(msv_dircache_get(&c, "a@x", &account, out, 4, &n, &gen));
    assert_int_equal(account, 77);
    assert_int_equal(n, 2);
    assert_int_equal(out[1].id, 9);
    assert_int_equal(out[1].suite, 1);
    /* too small a buffer is a miss, not a short answer */
    assert_false(msv_dircache_get(&c, "a@x", &account, out, 1, &n, &gen));
    /* another handle is not this one */
    assert_false(msv_dircache_get(&c, "b@x", &account, out, 4, &n, &gen));
    /* a change of the device set drops it */
    msv_dircache_drop(&c, "a@x");
    assert_false(msv_dircache_get(&c, "a@x", &account, out, 4, &n, &gen));
    /* replacing keeps one entry, the newest */
    msv_dircache_put(&c, "a@x", 77, two, 2, gen);
    msv_dircache_put(&c, "a@x", 77, two, 1, gen);
    assert_true(msv_dircache_get(&c, "a@x", &account, out, 4, &n, &gen));
    assert_int_equal(n, 1);
    msv_dircache_free(&c);
}

/* A lookup that read the store before a change must not put the old list back after it. */
static void test_generation_guard(void **state)
{
    struct msv_dircache c;
    struct msv_dir_device out[4];
    uint64_t account = 0, before = 0, gen = 0;
    size_t n = 0;
    (void)state;

    msv_dircache_init(&c, 100);
    assert_false(msv_dircache_get(&c, "a@x", &account, out, 4, &n, &before));
    msv_dircache_drop(&c, "a@x"); /* the change lands meanwhile */
    msv_dircache_put(&c, "a@x", 77, two, 2, before);
    assert_false(msv_dircache_get(&c, "a@x", &account, out, 4, &n, &gen));
    /* read again after the change: cached */
    msv_dircache_put(&c, "a@x", 77, two, 1, gen);
    assert_true(msv_dircache_get(&c, "a@x", &account, out, 4, &n, &gen));
    msv_dircache_free(&c);
}

static void test_bounded(void **state)
{
    struct msv_dircache c;
    struct msv_dir_device out[4];
    uint64_t account = 0, gen = 0;
    size_t n = 0;
    char handle[32];
    (void)state;

    msv_dircache_init(&c, 10);
    for (int i = 0; i < 25; i++) {
        snprintf(handle, sizeof(handle), "u%d@x", i);
        (void)msv_dircache_get(&c, handle, &account, out, 4, &n, &gen);
        msv_dircache_put(&c, handle, (uint64_t)i + 1, two, 2, gen);
        assert_true(c.map.count <= 10);
    }
    assert_true(msv_dircache_get(&c, "u24@x", &account, out, 4, &n, &gen));
    assert_int_equal(account, 25);
    msv_dircache_free(&c);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_hit_and_drop),
        cmocka_unit_test(test_generation_guard),
        cmocka_unit_test(test_bounded),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
