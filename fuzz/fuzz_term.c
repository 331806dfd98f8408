/*
 * What others wrote, made safe for a terminal (apps/term.c), on any bytes:
 * the output is UTF-8 and holds no C0 control but the tab and line feed
 * that a text keeps, no DEL, no C1 control and no bidirectional control; a
 * one-line field holds no line feed or tab at all; and every line feed in a
 * text is followed by the indentation.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "../apps/term.h"
#include "missive/util.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static int forbidden(const unsigned char *p, size_t left)
{
    if (p[0] < 0x20 || p[0] == 0x7f)
        return 1;
    if (left >= 2 && p[0] == 0xc2 && p[1] >= 0x80 && p[1] <= 0x9f)
        return 1; /* U+0080-U+009F */
    if (left >= 2 && p[0] == 0xd8 && p[1] == 0x9c)
        return 1; /* U+061C */
    if (left >= 3 && p[0] == 0xe2 && p[1] == 0x80 &&
        (p[2] == 0x8e || p[2] == 0x8f || (p[2] >= 0xaa && p[2] <= 0xae)))
        return 1; /* U+200E, U+200F, U+202A-U+202E */
    return left >= 3 && p[0] == 0xe2 && p[1] == 0x81 && p[2] >= 0xa6 && p[2] <= 0xa9;
}

static void check(const char *out, enum term_lines lines)
{
    const unsigned char *p = (const unsigned char *)out;
    size_t len = strlen(out);

    if (!msv_utf8_is_valid(p, len))
        abort();
    for (size_t i = 0; i < len; i++) {
        int kept = lines == TERM_LINES && (p[i] == '\t' || p[i] == '\n');

        if (!kept && forbidden(p + i, len - i))
            abort();
        if (kept && p[i] == '\n' && strncmp(out + i + 1, "    ", 4) != 0)
            abort();
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *s = malloc(size + 1), *out;

    if (s == NULL)
        return 0;
    memcpy(s, data, size);
    s[size] = '\0'; /* the strings are C strings: the text up to the first NUL */
    for (int lines = TERM_ONE_LINE; lines <= TERM_LINES; lines++) {
        out = term_safe(s, (enum term_lines)lines);
        if (out != NULL)
            check(out, (enum term_lines)lines);
        free(out);
    }
    free(s);
    return 0;
}
