/*
 * missive-bench's XMPP stanza reader (apps/bench/xmpp.c): what a server's
 * stream is cut into, in one piece and a byte at a time, and what it refuses
 * (docs/bad-input.md X1-X6): every limit, and the XML that XMPP forbids.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "../apps/bench/xmpp.h"

/*
 * Feeds s to a fresh reader, step bytes at a time (0: all at once), dropping
 * each item as the load generator does. Returns the items' kinds (skips left
 * out) as letters: o open, e element, c close; '!' and the reason on refusal.
 */
static const char *scan(const char *s, size_t step, char *out, size_t out_len)
{
    struct xmpp_reader r;
    size_t len = strlen(s), start = 0, have = step ? 0 : len, n = 0;

    xmpp_reader_reset(&r);
    out[0] = '\0';
    for (;;) {
        const char *why = "";
        size_t item = 0;
        int kind = 0, rc;

        if (have > len)
            have = len;
        rc = start < have
                 ? xmpp_next(&r, (const uint8_t *)s + start, have - start, &kind, &item, &why)
                 : 0;
        if (rc < 0) {
            snprintf(out + n, out_len - n, "!%s", why);
            return out;
        }
        if (rc == 0) {
            if (have == len)
                return out;
            have += step;
            continue;
        }
        assert_true(item > 0 && item <= have - start);
        if (kind != XK_SKIP && n + 1 < out_len) {
            out[n++] = kind == XK_OPEN ? 'o' : kind == XK_ELEM ? 'e' : 'c';
            out[n] = '\0';
        }
        start += item;
    }
}

static void expect_items(const char *s, const char *want)
{
    char out[256];

    assert_string_equal(scan(s, 0, out, sizeof(out)), want);
    assert_string_equal(scan(s, 1, out, sizeof(out)), want);
    assert_string_equal(scan(s, 7, out, sizeof(out)), want);
}

static void test_a_stream(void **state)
{
    (void)state;
    expect_items("<?xml version='1.0'?><stream:stream xmlns='jabber:client' version='1.0'>"
                 "<stream:features><mechanisms><mechanism>PLAIN</mechanism></mechanisms>"
                 "</stream:features> \n <r xmlns='urn:xmpp:sm:3'/><message to='a@b'>"
                 "<body>x &amp; y > z</body></message></stream:stream>",
                 "oeeec");
}

static void test_elements_read(void **state)
{
    static const char m[] = "<message type=\"chat\" id='m7' to='u1@bench'><active/>"
                            "<body>0011</body><x><body>no</body></x></message>";
    static const char a[] = "<a xmlns='urn:xmpp:sm:3' h='42'/>";
    struct xmpp_elem e;

    (void)state;
    assert_int_equal(xmpp_elem_read((const uint8_t *)m, strlen(m), &e), 0);
    assert_string_equal(e.name, "message");
    assert_string_equal(e.type, "chat");
    assert_string_equal(e.id, "m7");
    assert_string_equal(e.child, "active");
    assert_int_equal(e.body_len, 4);
    assert_memory_equal(e.body, "0011", 4);
    assert_int_equal(xmpp_elem_read((const uint8_t *)a, strlen(a), &e), 0);
    assert_string_equal(e.name, "a");
    assert_string_equal(e.h, "42");
    assert_null(e.body);
    /* X6: cut anywhere, an element is not read */
    for (size_t i = 0; i < strlen(m); i++)
        assert_int_equal(xmpp_elem_read((const uint8_t *)m, i, &e), -1);
}

static void expect_refused(const char *s, const char *why)
{
    char out[256];

    assert_non_null(strstr(scan(s, 0, out, sizeof(out)), why));
    assert_non_null(strstr(scan(s, 1, out, sizeof(out)), why));
}

static void test_refused(void **state)
{
    char *big, *deep, *name;
    size_t n = 0;

    (void)state;
    /* X1: XML that XMPP forbids */
    expect_refused("<stream:stream><!-- hi --></stream:stream>", "comment");
    expect_refused("<!DOCTYPE x><stream:stream>", "comment");
    expect_refused("<stream:stream><m><![CDATA[x]]></m>", "comment");
    expect_refused("<stream:stream><m><?pi?></m>", "processing instruction");
    /* X2: text outside an element; an end tag with nothing open; an empty stream header */
    expect_refused("hello", "text outside");
    expect_refused("<stream:stream>hello", "text outside");
    expect_refused("</stream:stream>", "nothing open");
    expect_refused("<stream:stream/>", "empty stream header");
    /* X3: malformed tags */
    expect_refused("<stream:stream>< a/>", "without a name");
    expect_refused("<stream:stream><a b='<'/>", "attribute value");
    expect_refused("<stream:stream><a/ >", "'/' not followed");
    expect_refused("<stream:stream><a></>", "end tag without a name");
    /* X4: an element longer than XMPP_ITEM_MAX */
    big = malloc(XMPP_ITEM_MAX + 64);
    assert_non_null(big);
    n = strlen("<stream:stream><m>");
    memcpy(big, "<stream:stream><m>", n);
    memset(big + n, 'x', XMPP_ITEM_MAX);
    big[n + XMPP_ITEM_MAX] = '\0';
    expect_refused(big, "longer than the reader's limit");
    /* X5: nested deeper than XMPP_DEPTH_MAX; a name longer than XMPP_NAME_MAX */
    deep = calloc(1, 16 + 3 * (XMPP_DEPTH_MAX + 1));
    name = calloc(1, XMPP_NAME_MAX + 32);
    assert_true(deep != NULL && name != NULL);
    n = (size_t)snprintf(deep, 16, "<stream:stream>");
    for (int i = 0; i < XMPP_DEPTH_MAX; i++, n += 3)
        memcpy(deep + n, "<a>", 4);
    expect_refused(deep, "nested deeper");
    n = (size_t)snprintf(name, 17, "<stream:stream><");
    memset(name + n, 'n', XMPP_NAME_MAX + 1);
    expect_refused(name, "tag name longer");
    free(big);
    free(deep);
    free(name);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_a_stream),
        cmocka_unit_test(test_elements_read),
        cmocka_unit_test(test_refused),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
