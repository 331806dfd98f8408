/* The util module and the identity element encoding: buffers, readers, hex, UTF-8, DER. */
#include <stdarg.h>
#include <setjmp.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "crypto/internal.h"
#include "missive/util.h"
#include "util/buf.h"

static void test_buf_limits(void **state)
{
    struct msv_buf b;
    uint8_t *out = NULL;
    size_t len = 0;

    (void)state;
    msv_buf_init(&b, 6);
    assert_int_equal(msv_buf_put_u32be(&b, 0x01020304), MSV_OK);
    assert_int_equal(msv_buf_put_u16be(&b, 0x0506), MSV_OK);
    assert_int_equal(msv_buf_put_u8(&b, 7), MSV_ERR_TOO_BIG);
    /* the first failure sticks: later appends fail and finish reports it */
    assert_int_equal(msv_buf_put(&b, "", 0), MSV_ERR_TOO_BIG);
    assert_int_equal(msv_buf_finish(&b, &out, &len), MSV_ERR_TOO_BIG);
    assert_null(out);

    msv_buf_init(&b, 100);
    assert_int_equal(msv_buf_finish(&b, &out, &len), MSV_OK);
    assert_non_null(out);
    assert_int_equal(len, 0);
    free(out);

    msv_buf_init(&b, 1000);
    for (int i = 0; i < 300; i++)
        assert_int_equal(msv_buf_put_u16be(&b, (uint16_t)i), MSV_OK);
    assert_int_equal(msv_buf_finish(&b, &out, &len), MSV_OK);
    assert_int_equal(len, 600);
    assert_int_equal(out[598], 1);
    assert_int_equal(out[599], 43);
    free(out);
}

static void test_reader_bounds(void **state)
{
    static const uint8_t data[] = {1, 2, 3, 4, 5, 6, 7};
    struct msv_reader r;
    uint32_t v32 = 0;
    uint16_t v16 = 0;
    uint8_t v8 = 0;
    const uint8_t *p = NULL;

    (void)state;
    msv_reader_init(&r, data, sizeof(data));
    assert_int_equal(msv_reader_u32be(&r, &v32), MSV_OK);
    assert_int_equal(v32, 0x01020304);
    assert_int_equal(msv_reader_u32be(&r, &v32), MSV_ERR_PARSE);
    assert_int_equal(msv_reader_left(&r), 3); /* a failed read consumes nothing */
    assert_int_equal(msv_reader_u16be(&r, &v16), MSV_OK);
    assert_int_equal(v16, 0x0506);
    assert_int_equal(msv_reader_bytes(&r, 2, &p), MSV_ERR_PARSE);
    assert_int_equal(msv_reader_u8(&r, &v8), MSV_OK);
    assert_int_equal(v8, 7);
    assert_int_equal(msv_reader_u8(&r, &v8), MSV_ERR_PARSE);
    assert_int_equal(msv_reader_bytes(&r, 0, &p), MSV_OK);
}

static void test_hex(void **state)
{
    static const uint8_t bytes[] = {0x00, 0xab, 0xCD, 0xff};
    char text[9];
    uint8_t out[4];
    size_t n = 0;

    (void)state;
    assert_int_equal(msv_hex_encode(bytes, 4, text, sizeof(text)), MSV_OK);
    assert_string_equal(text, "00abcdff");
    assert_int_equal(msv_hex_encode(bytes, 4, text, 8), MSV_ERR_INVALID);
    assert_int_equal(msv_hex_decode("00ABcdFF", out, sizeof(out), &n), MSV_OK);
    assert_int_equal(n, 4);
    assert_memory_equal(out, bytes, 4);
    assert_int_equal(msv_hex_decode("abc", out, sizeof(out), &n), MSV_ERR_PARSE);
    assert_int_equal(msv_hex_decode("zz", out, sizeof(out), &n), MSV_ERR_PARSE);
    assert_int_equal(msv_hex_decode("0011223344", out, sizeof(out), &n), MSV_ERR_TOO_BIG);
}

static void test_utf8(void **state)
{
    static const struct {
        const char *s;
        int valid;
    } cases[] = {
        {"", 1},
        {"plain ascii", 1},
        {"gr\xc3\xbc\xc3\x9f"
         "e",
         1},                     /* grüße */
        {"\xe2\x82\xac", 1},     /* euro sign */
        {"\xf0\x9f\x98\x80", 1}, /* emoji */
        {"\xf4\x8f\xbf\xbf", 1}, /* U+10FFFF */
        {"\xc0\xaf", 0},         /* overlong '/' */
        {"\xe0\x80\xaf", 0},     /* overlong */
        {"\xed\xa0\x80", 0},     /* surrogate */
        {"\xf4\x90\x80\x80", 0}, /* above U+10FFFF */
        {"\xf5\x80\x80\x80", 0},
        {"\x80", 0}, /* lone continuation */
        {"\xc3", 0}, /* truncated */
        {"\xe2\x82", 0},
        {"\xff", 0},
    };

    (void)state;
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        if (msv_utf8_is_valid((const uint8_t *)cases[i].s, strlen(cases[i].s)) != cases[i].valid)
            fail_msg("case %zu", i);
    }
}

static void test_host_port(void **state)
{
    static const char *const bad[] = {
        "",        "host",     ":80",      "host:",   "host:0",     "host:65536",
        "host:8o", "host: 80", "host:+80", "host:-1", "host:123456"};
    char host[8];
    uint16_t port = 0;

    (void)state;
    assert_int_equal(msv_host_port("relay:7443", 10, host, sizeof(host), &port), MSV_OK);
    assert_string_equal(host, "relay");
    assert_int_equal(port, 7443);
    /* the last colon splits: an IPv6 address in brackets keeps its own */
    assert_int_equal(msv_host_port("[::1]:1", 7, host, sizeof(host), &port), MSV_OK);
    assert_string_equal(host, "[::1]");
    assert_int_equal(port, 1);
    /* only len bytes count: the first address of a list */
    assert_int_equal(msv_host_port("a:65535,b:2", 7, host, sizeof(host), &port), MSV_OK);
    assert_string_equal(host, "a");
    assert_int_equal(port, 65535);
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        assert_int_equal(msv_host_port(bad[i], strlen(bad[i]), host, sizeof(host), &port),
                         MSV_ERR_PARSE);
    /* a host that does not fit (with its NUL) */
    assert_int_equal(msv_host_port("abcdefgh:1", 10, host, sizeof(host), &port), MSV_ERR_PARSE);
    assert_int_equal(msv_host_port("abcdefg:1", 9, host, sizeof(host), &port), MSV_OK);
}

static void test_elems_round_trip(void **state)
{
    uint8_t big[300];
    struct msv_elem in[3] = {
        {.tag = 1, .value = (const uint8_t *)"ab", .value_len = 2},
        {.tag = 2, .value = big, .value_len = sizeof(big)},
        {.tag = 20, .value = NULL, .value_len = 0},
    };
    struct msv_elem out[4];
    uint8_t *enc = NULL;
    size_t len = 0, n = 0;

    (void)state;
    memset(big, 0x5a, sizeof(big));
    assert_int_equal(msv_elems_encode(in, 3, &enc, &len), MSV_OK);
    /* SEQUENCE, long-form length; [1] short form with u16 2 */
    assert_int_equal(enc[0], 0x30);
    assert_int_equal(enc[1], 0x82);
    assert_memory_equal(enc + 4,
                        "\x81\x04\x00\x02"
                        "ab",
                        6);
    assert_int_equal(msv_elems_parse(enc, len, out, 4, &n), MSV_OK);
    assert_int_equal(n, 3);
    assert_int_equal(out[1].tag, 2);
    assert_int_equal(out[1].value_len, 300);
    assert_memory_equal(out[1].value, big, 300);
    assert_int_equal(out[1].contents_len, 302);
    assert_int_equal(out[2].value_len, 0);
    assert_ptr_equal(msv_elems_find(out, n, 20), &out[2]);
    assert_null(msv_elems_find(out, n, 3));
    /* too many elements for the caller's array */
    assert_int_equal(msv_elems_parse(enc, len, out, 2, &n), MSV_ERR_PARSE);
    for (size_t cut = 0; cut < len; cut++)
        assert_int_equal(msv_elems_parse(enc, cut, out, 4, &n), MSV_ERR_PARSE);
    free(enc);
    /* tags out of order cannot be encoded */
    in[2].tag = 1;
    assert_int_equal(msv_elems_encode(in, 3, &enc, &len), MSV_ERR_INVALID);
}

static void test_elems_strict(void **state)
{
    static const struct {
        const char *name;
        const uint8_t *der;
        size_t len;
        msv_err want;
    } cases[] = {
        {"minimal", (const uint8_t *)"\x30\x04\x81\x02\x00\x00", 6, MSV_OK},
        {"non-minimal long form", (const uint8_t *)"\x30\x81\x04\x81\x02\x00\x00", 7,
         MSV_ERR_PARSE},
        {"indefinite length", (const uint8_t *)"\x30\x80\x81\x02\x00\x00\x00\x00", 8,
         MSV_ERR_PARSE},
        {"not a SEQUENCE", (const uint8_t *)"\x31\x04\x81\x02\x00\x00", 6, MSV_ERR_PARSE},
        {"constructed element", (const uint8_t *)"\x30\x04\xa1\x02\x00\x00", 6, MSV_ERR_PARSE},
        {"universal element", (const uint8_t *)"\x30\x04\x04\x02\x00\x00", 6, MSV_ERR_PARSE},
        {"repeated tag", (const uint8_t *)"\x30\x08\x81\x02\x00\x00\x81\x02\x00\x00", 10,
         MSV_ERR_PARSE},
        {"inner length too long", (const uint8_t *)"\x30\x04\x81\x02\x00\x01", 6, MSV_ERR_PARSE},
        {"inner length too short", (const uint8_t *)"\x30\x05\x81\x03\x00\x00\x00", 7,
         MSV_ERR_PARSE},
        {"trailing byte", (const uint8_t *)"\x30\x04\x81\x02\x00\x00\x00", 7, MSV_ERR_PARSE},
        {"high tag number form", (const uint8_t *)"\x30\x05\x9f\x1f\x02\x00\x00", 7, MSV_ERR_PARSE},
    };
    struct msv_elem e[4];
    size_t n;

    (void)state;
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        if (msv_elems_parse(cases[i].der, cases[i].len, e, 4, &n) != cases[i].want)
            fail_msg("%s", cases[i].name);
    }
}

static void test_equal_ct_and_wipe(void **state)
{
    uint8_t a[8] = {1, 2, 3, 4, 5, 6, 7, 8}, b[8];

    (void)state;
    memcpy(b, a, 8);
    assert_true(msv_equal_ct(a, b, 8));
    b[7] ^= 1;
    assert_false(msv_equal_ct(a, b, 8));
    msv_wipe(a, sizeof(a));
    for (int i = 0; i < 8; i++)
        assert_int_equal(a[i], 0);
    msv_secret_free(NULL, 10);
}

/* Handles fold as the directory keeps them: a username checked, other handles' ASCII letters
 * lowered, anything empty, too long or not a username refused. */
static void test_handle_fold(void **state)
{
    char out[40];

    (void)state;
    assert_int_equal(msv_handle_fold((const uint8_t *)"Alice@Example.ORG", 17, 39, out), 1);
    assert_string_equal(out, "alice@example.org");
    assert_int_equal(msv_handle_fold((const uint8_t *)"+15551234567", 12, 39, out), 1);
    assert_string_equal(out, "+15551234567");
    assert_int_equal(msv_handle_fold((const uint8_t *)"Bob.42", 6, 39, out), 1);
    assert_string_equal(out, "bob.42");
    assert_int_equal(msv_handle_fold((const uint8_t *)"bob", 3, 39, out), 0); /* no digits */
    assert_int_equal(msv_handle_fold((const uint8_t *)"1bob.42", 7, 39, out), 0);
    assert_int_equal(msv_handle_fold((const uint8_t *)"a@b", 0, 39, out), 0);    /* empty */
    assert_int_equal(msv_handle_fold((const uint8_t *)"A@bcdef", 7, 6, out), 0); /* too long */
    assert_int_equal(msv_handle_fold((const uint8_t *)"A@bcdef", 7, 7, out), 1);
    assert_string_equal(out, "a@bcdef");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_buf_limits),   cmocka_unit_test(test_reader_bounds),
        cmocka_unit_test(test_hex),          cmocka_unit_test(test_utf8),
        cmocka_unit_test(test_host_port),    cmocka_unit_test(test_elems_round_trip),
        cmocka_unit_test(test_elems_strict), cmocka_unit_test(test_equal_ct_and_wipe),
        cmocka_unit_test(test_handle_fold),
    };

    return cmocka_run_group_tests_name("util", tests, NULL, NULL);
}
