/*
 * The load generator's XMPP stanza reader: splits what a server sends into
 * its stream header, top-level elements (stanzas, stream features, SASL and
 * stream management elements) and the stream's end, incrementally (a partial
 * element is resumed where it stopped when more bytes arrive), and reads the
 * few parts of an element the load generator acts on. Everything is bounded:
 * an element longer than XMPP_ITEM_MAX, nested deeper than XMPP_DEPTH_MAX or
 * with a name longer than XMPP_NAME_MAX is an error. It is no general XML
 * parser: comments, DTDs and CDATA (which XMPP forbids) are errors, and
 * entities are left as they are.
 */
#ifndef MSV_BENCH_XMPP_H
#define MSV_BENCH_XMPP_H

#include <stddef.h>
#include <stdint.h>

#define XMPP_ITEM_MAX 65536
#define XMPP_DEPTH_MAX 32
#define XMPP_NAME_MAX 64
#define XMPP_ATTR_MAX 64

enum xmpp_kind {
    XK_SKIP,  /* whitespace or the XML declaration between elements: drop it */
    XK_OPEN,  /* the stream header <stream:stream ...> */
    XK_ELEM,  /* a complete top-level element */
    XK_CLOSE, /* </stream:stream> */
};

/* Where the scan of the current item is: kept between calls. */
struct xmpp_reader {
    size_t pos;      /* bytes of the current item scanned */
    unsigned depth;  /* elements open (the stream header counts 1) */
    unsigned base;   /* depth at which the current item started */
    int state;       /* lexer state */
    char quote;      /* in an attribute value: its quote */
    size_t name_len; /* length of the tag name being read */
    int started;     /* the current item has begun (not only whitespace) */
    int kind;        /* what the current item is, once known */
};

/* Starts a new stream (at connection and after SASL success): nothing open. */
void xmpp_reader_reset(struct xmpp_reader *r);

/*
 * Scans buf[0..len), the current item from its first byte (earlier calls
 * scanned buf[0..r->pos) of the same bytes). Returns 1 when an item is
 * complete: its kind in *kind and its length in *item_len (the caller drops
 * those bytes before the next call); 0 when more bytes are needed; -1 when the
 * bytes are no XMPP stream this reader accepts (why in *why).
 */
int xmpp_next(struct xmpp_reader *r, const uint8_t *buf, size_t len, int *kind, size_t *item_len,
              const char **why);

/* The parts of one top-level element the load generator reads. */
struct xmpp_elem {
    char name[XMPP_NAME_MAX + 1]; /* as written, prefix included */
    char type[XMPP_ATTR_MAX + 1], id[XMPP_ATTR_MAX + 1], h[XMPP_ATTR_MAX + 1];
    const uint8_t *body; /* text of the first <body> child (NULL if none), entities as sent */
    size_t body_len;
    int has_child;                 /* whether it has a child element */
    char child[XMPP_NAME_MAX + 1]; /* the first child's name */
};

/*
 * Reads an element that xmpp_next() returned as XK_ELEM: 0, or -1
 * if it is not well formed enough to read. Attribute values longer than
 * XMPP_ATTR_MAX are cut to that length.
 */
int xmpp_elem_read(const uint8_t *buf, size_t len, struct xmpp_elem *e);

#endif
