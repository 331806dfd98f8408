/*
 * missive-bench's XMPP stanza reader (apps/bench/xmpp.c) on any bytes: the
 * first byte sets how the rest arrives (the size of each read, and whether a
 * stream restart follows an element, as after SASL success). Items are never
 * longer than the bytes given, always make progress, stay within the reader's
 * limits, and are the same whether the bytes come at once or in pieces; an
 * element read has its <body> inside its bytes.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "../apps/bench/xmpp.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define ITEMS_MAX 512

struct seen {
    size_t n, off[ITEMS_MAX], len[ITEMS_MAX];
    int kind[ITEMS_MAX];
    int error;
    size_t error_at;
};

static void check_elem(const uint8_t *p, size_t len)
{
    struct xmpp_elem e;

    if (xmpp_elem_read(p, len, &e) != 0)
        return;
    if (strlen(e.name) > XMPP_NAME_MAX || strlen(e.type) > XMPP_ATTR_MAX ||
        strlen(e.id) > XMPP_ATTR_MAX || strlen(e.h) > XMPP_ATTR_MAX)
        abort();
    if (e.body != NULL && (e.body < p || e.body + e.body_len > p + len))
        abort();
}

/* Reads data[0..size) arriving step bytes at a time (all at once if step is 0). */
static void run(const uint8_t *data, size_t size, size_t step, int restart, struct seen *s)
{
    struct xmpp_reader r;
    size_t start = 0, have = step == 0 ? size : 0;

    memset(s, 0, sizeof(*s));
    xmpp_reader_reset(&r);
    for (;;) {
        const char *why = NULL;
        size_t len = 0, avail;
        int kind = -1, rc;

        if (have > size)
            have = size;
        avail = have - start;
        if (avail == 0) {
            if (have == size)
                return;
            have += step;
            continue;
        }
        rc = xmpp_next(&r, data + start, avail, &kind, &len, &why);
        if (why == NULL)
            abort();
        if (rc < 0) {
            s->error = 1;
            s->error_at = start;
            return;
        }
        if (rc == 0) {
            if (r.pos > avail || r.pos > XMPP_ITEM_MAX || r.depth > XMPP_DEPTH_MAX)
                abort();
            if (have == size)
                return;
            have += step;
            continue;
        }
        if (len == 0 || len > avail || len > XMPP_ITEM_MAX)
            abort();
        if (kind != XK_SKIP && s->n < ITEMS_MAX) {
            s->off[s->n] = start;
            s->len[s->n] = len;
            s->kind[s->n++] = kind;
        }
        if (kind == XK_ELEM)
            check_elem(data + start, len);
        start += len;
        if (kind == XK_ELEM && restart)
            xmpp_reader_reset(&r);
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static struct seen whole, pieces;
    size_t step;
    int restart;

    if (size < 1)
        return 0;
    step = (size_t)(data[0] & 0x3f) + 1;
    restart = (data[0] & 0x40) != 0;
    data++;
    size--;
    run(data, size, 0, restart, &whole);
    run(data, size, step, restart, &pieces);
    if (whole.n != pieces.n || whole.error != pieces.error ||
        (whole.error && whole.error_at != pieces.error_at))
        abort();
    for (size_t i = 0; i < whole.n; i++) {
        if (whole.off[i] != pieces.off[i] || whole.len[i] != pieces.len[i] ||
            whole.kind[i] != pieces.kind[i])
            abort();
    }
    /* and the element reader on the bytes as they are */
    check_elem(data, size);
    return 0;
}
