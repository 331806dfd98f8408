/*
 * Untrusted text on a terminal (term.h).
 *
 * A terminal acts on some of what it is given: C0 controls and escape
 * sequences (ESC [ 2 J clears the screen, ESC ] 0 ; ... BEL retitles the
 * window, cursor movements overwrite lines already shown), the same
 * sequences introduced by C1 controls (U+009B is CSI), and bidirectional
 * controls, which reorder what follows them (a file name that ends in
 * "U+202E gpj.exe" reads as "exe.jpg"). A line break is safe in itself, but
 * at the start of a line a text could pass for a line of its own (another
 * sender's message, a notice), so the lines after the first are indented.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "missive/util.h"
#include "term.h"

#define TERM_INDENT "    "

/* The length of the UTF-8 character at s (at most left bytes), and its code point; 0 if none. */
static size_t utf8_char(const unsigned char *s, size_t left, uint32_t *cp)
{
    size_t n = s[0] < 0x80 ? 1 : s[0] < 0xc2 ? 0 : s[0] < 0xe0 ? 2 : s[0] < 0xf0 ? 3 : 4;

    if (n == 0 || n > left || !msv_utf8_is_valid(s, n))
        return 0;
    *cp = n == 1 ? s[0] : s[0] & (0x7f >> n);
    for (size_t i = 1; i < n; i++)
        *cp = *cp << 6 | (s[i] & 0x3f);
    return n;
}

static int is_bidi_control(uint32_t cp)
{
    return (cp >= 0x202a && cp <= 0x202e) || (cp >= 0x2066 && cp <= 0x2069) || cp == 0x200e ||
           cp == 0x200f || cp == 0x061c;
}

void term_put(FILE *f, const char *s, enum term_lines lines)
{
    const unsigned char *p = (const unsigned char *)s;
    size_t left = s != NULL ? strlen(s) : 0;

    while (left > 0) {
        uint32_t cp = 0;
        size_t n = utf8_char(p, left, &cp);

        if (n == 0)
            fprintf(f, "\\x%02x", p[0]); /* not UTF-8: one byte at a time */
        else if (cp == '\n' && lines == TERM_LINES)
            fputs("\n" TERM_INDENT, f);
        else if (cp == '\t' && lines == TERM_LINES)
            fputc('\t', f);
        else if (cp < 0x20 || cp == 0x7f)
            fprintf(f, cp == '\n' ? "\\n" : "\\x%02x", (unsigned)cp);
        else if ((cp >= 0x80 && cp <= 0x9f) || is_bidi_control(cp))
            fprintf(f, "\\u%04x", (unsigned)cp);
        else
            fwrite(p, 1, n, f);
        n = n == 0 ? 1 : n;
        p += n;
        left -= n;
    }
}

char *term_safe(const char *s, enum term_lines lines)
{
    char *out = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&out, &len);

    if (f == NULL)
        return NULL;
    term_put(f, s, lines);
    if (fclose(f) != 0) {
        free(out);
        return NULL;
    }
    return out;
}
