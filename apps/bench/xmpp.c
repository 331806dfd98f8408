/*
 * The load generator's XMPP stanza reader (xmpp.h): a small state machine
 * over the bytes of one item at a time, and a reader of one element's name,
 * a few attributes and its <body> text.
 */
#include "xmpp.h"

#include <string.h>

enum {
    L_START,     /* at an item's first byte */
    L_WS,        /* whitespace between items */
    L_LT,        /* after '<' */
    L_PI,        /* in <?...?> */
    L_PI_Q,      /* in <?...?>, after '?' */
    L_STAG_NAME, /* a start tag's name */
    L_STAG,      /* a start tag's attributes */
    L_STAG_END,  /* after '/' in a start tag: '>' must follow */
    L_ETAG,      /* an end tag */
    L_TEXT,      /* character data inside an element */
};

static int is_ws(uint8_t c)
{
    return c == ' ' || c == '\t' || c == '\r' || c == '\n';
}

void xmpp_reader_reset(struct xmpp_reader *r)
{
    memset(r, 0, sizeof(*r));
    r->state = L_START;
}

static int fail(const char **why, const char *text)
{
    *why = text;
    return -1;
}

/* The current item is complete after the byte at i. */
static int done(struct xmpp_reader *r, size_t i, int *kind, size_t *item_len)
{
    *kind = r->kind;
    *item_len = i + 1;
    r->pos = 0;
    r->started = 0;
    r->state = L_START;
    r->name_len = 0;
    return 1;
}

int xmpp_next(struct xmpp_reader *r, const uint8_t *buf, size_t len, int *kind, size_t *item_len,
              const char **why)
{
    size_t i;

    *why = "";
    for (i = r->pos; i < len; i++) {
        uint8_t c = buf[i];

        if (i >= XMPP_ITEM_MAX)
            return fail(why, "an element longer than the reader's limit");
        switch (r->state) {
        case L_START:
            r->kind = XK_SKIP;
            if (is_ws(c)) {
                r->state = L_WS;
                break;
            }
            if (c != '<')
                return fail(why, "text outside an element");
            r->state = L_LT;
            break;
        case L_WS:
            if (!is_ws(c)) {
                /* the whitespace before this byte is an item of its own */
                r->pos = 0;
                r->state = L_START;
                *kind = XK_SKIP;
                *item_len = i;
                return 1;
            }
            break;
        case L_LT:
            if (c == '?' && !r->started) {
                r->state = L_PI;
            } else if (c == '!' || c == '?') {
                return fail(why, "a comment, DTD, CDATA section or processing instruction");
            } else if (c == '/') {
                if (!r->started) {
                    if (r->depth != 1)
                        return fail(why, "an end tag with nothing open");
                    r->kind = XK_CLOSE;
                    r->started = 1;
                }
                r->name_len = 0;
                r->state = L_ETAG;
            } else if (is_ws(c) || c == '>' || c == '<' || c == '=' || c == '"' || c == '\'') {
                return fail(why, "a tag without a name");
            } else {
                if (!r->started) {
                    r->kind = r->depth == 0 ? XK_OPEN : XK_ELEM;
                    r->base = r->depth;
                    r->started = 1;
                }
                r->name_len = 1;
                r->state = L_STAG_NAME;
            }
            break;
        case L_PI:
            if (c == '?')
                r->state = L_PI_Q;
            break;
        case L_PI_Q:
            if (c == '>')
                return done(r, i, kind, item_len);
            r->state = c == '?' ? L_PI_Q : L_PI;
            break;
        case L_STAG_NAME:
            if (is_ws(c) || c == '/' || c == '>') {
                r->state = L_STAG;
                i--; /* the same byte again, as an attribute byte */
                break;
            }
            if (c == '<' || c == '"' || c == '\'' || c == '=')
                return fail(why, "a bad character in a tag name");
            if (++r->name_len > XMPP_NAME_MAX)
                return fail(why, "a tag name longer than the reader's limit");
            break;
        case L_STAG:
            if (r->quote != 0) {
                if (c == (uint8_t)r->quote)
                    r->quote = 0;
                else if (c == '<')
                    return fail(why, "'<' in an attribute value");
                break;
            }
            if (c == '"' || c == '\'') {
                r->quote = (char)c;
            } else if (c == '<') {
                return fail(why, "'<' in a start tag");
            } else if (c == '/') {
                r->state = L_STAG_END;
            } else if (c == '>') {
                if (++r->depth > XMPP_DEPTH_MAX)
                    return fail(why, "elements nested deeper than the reader's limit");
                if (r->kind == XK_OPEN)
                    return done(r, i, kind, item_len);
                r->state = L_TEXT;
            }
            break;
        case L_STAG_END:
            if (c != '>')
                return fail(why, "'/' not followed by '>' in a start tag");
            if (r->kind == XK_OPEN)
                return fail(why, "an empty stream header");
            if (r->depth == r->base)
                return done(r, i, kind, item_len);
            r->state = L_TEXT;
            break;
        case L_ETAG:
            if (c == '>') {
                if (r->name_len == 0)
                    return fail(why, "an end tag without a name");
                r->depth--;
                if (r->kind == XK_CLOSE || r->depth == r->base)
                    return done(r, i, kind, item_len);
                r->state = L_TEXT;
            } else if (c == '<' || c == '/') {
                return fail(why, "a bad character in an end tag");
            } else if (!is_ws(c) && ++r->name_len > XMPP_NAME_MAX) {
                return fail(why, "a tag name longer than the reader's limit");
            }
            break;
        case L_TEXT:
            if (c == '<')
                r->state = L_LT;
            break;
        default:
            return fail(why, "the reader's state is corrupt");
        }
    }
    if (r->state == L_WS && i > 0) {
        /* all the whitespace there is so far: drop it now */
        r->pos = 0;
        r->state = L_START;
        *kind = XK_SKIP;
        *item_len = i;
        return 1;
    }
    r->pos = i;
    return 0;
}

/* ---- one element ----------------------------------------------------------------------- */

/* Copies at most max bytes of p[0..n) into out (NUL-terminated). */
static void copy_cut(char *out, size_t max, const uint8_t *p, size_t n)
{
    if (n > max)
        n = max;
    memcpy(out, p, n);
    out[n] = '\0';
}

/*
 * Reads the tag at buf[*i] (which is '<'): its name, and for the element's
 * own tag its attributes into e. Sets *kind to 1 for a start tag, 2 for an
 * empty element, 3 for an end tag. -1 if it does not end within len.
 */
static int read_tag(const uint8_t *buf, size_t len, size_t *i, struct xmpp_elem *e, char *name,
                    int *kind)
{
    size_t p = *i + 1, start;

    if (p < len && buf[p] == '/') {
        while (p < len && buf[p] != '>')
            p++;
        if (p >= len)
            return -1;
        *kind = 3;
        *i = p + 1;
        return 0;
    }
    start = p;
    while (p < len && !is_ws(buf[p]) && buf[p] != '/' && buf[p] != '>')
        p++;
    if (p == start || p >= len || p - start > XMPP_NAME_MAX)
        return -1;
    copy_cut(name, XMPP_NAME_MAX, buf + start, p - start);
    for (;;) {
        size_t an, an_len, v;
        uint8_t q;

        while (p < len && is_ws(buf[p]))
            p++;
        if (p >= len)
            return -1;
        if (buf[p] == '>') {
            *kind = 1;
            *i = p + 1;
            return 0;
        }
        if (buf[p] == '/') {
            if (p + 1 >= len || buf[p + 1] != '>')
                return -1;
            *kind = 2;
            *i = p + 2;
            return 0;
        }
        an = p;
        while (p < len && !is_ws(buf[p]) && buf[p] != '=' && buf[p] != '>' && buf[p] != '/')
            p++;
        an_len = p - an;
        while (p < len && is_ws(buf[p]))
            p++;
        if (an_len == 0 || p >= len || buf[p] != '=')
            return -1;
        p++;
        while (p < len && is_ws(buf[p]))
            p++;
        if (p >= len || (buf[p] != '"' && buf[p] != '\''))
            return -1;
        q = buf[p++];
        v = p;
        while (p < len && buf[p] != q)
            p++;
        if (p >= len)
            return -1;
        if (e != NULL) {
            if (an_len == 4 && memcmp(buf + an, "type", 4) == 0)
                copy_cut(e->type, XMPP_ATTR_MAX, buf + v, p - v);
            else if (an_len == 2 && memcmp(buf + an, "id", 2) == 0)
                copy_cut(e->id, XMPP_ATTR_MAX, buf + v, p - v);
            else if (an_len == 1 && buf[an] == 'h')
                copy_cut(e->h, XMPP_ATTR_MAX, buf + v, p - v);
        }
        p++;
    }
}

int xmpp_elem_read(const uint8_t *buf, size_t len, struct xmpp_elem *e)
{
    char name[XMPP_NAME_MAX + 1];
    size_t i = 0;
    int kind, depth = 1;

    memset(e, 0, sizeof(*e));
    if (len > XMPP_ITEM_MAX || len == 0 || buf[0] != '<')
        return -1;
    if (read_tag(buf, len, &i, e, e->name, &kind) != 0 || kind == 3)
        return -1;
    if (kind == 2)
        return 0;
    while (i < len && depth > 0) {
        while (i < len && buf[i] != '<')
            i++;
        if (i >= len)
            break;
        if (read_tag(buf, len, &i, NULL, name, &kind) != 0)
            return -1;
        if (kind == 3) {
            depth--;
            continue;
        }
        if (depth == 1 && !e->has_child) {
            e->has_child = 1;
            memcpy(e->child, name, sizeof(e->child));
        }
        if (depth == 1 && e->body == NULL && strcmp(name, "body") == 0) {
            size_t t = i;

            if (kind == 2) {
                e->body = buf + i;
                e->body_len = 0;
                continue;
            }
            while (t < len && buf[t] != '<')
                t++;
            e->body = buf + i;
            e->body_len = t - i;
        }
        if (kind == 1 && ++depth > XMPP_DEPTH_MAX)
            return -1;
    }
    return depth == 0 ? 0 : -1;
}
