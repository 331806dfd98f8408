/*
 * Untrusted text on a terminal: what another person or the server wrote
 * (texts, names, group and file names, handles, notices, server messages)
 * reaches the terminal only as characters that print (docs/missive.md,
 * "What the terminal shows").
 */
#ifndef MSV_APPS_TERM_H
#define MSV_APPS_TERM_H

#include <stdio.h>

/* How a line break in the text is written. */
enum term_lines {
    TERM_ONE_LINE, /* a field on a line of its own: a line break is shown as \n */
    TERM_LINES,    /* a text: it breaks the line, and the next one is indented */
};

/*
 * Writes s to f with every C0 and C1 control, DEL, bidirectional control
 * (U+202A-U+202E, U+2066-U+2069, U+200E, U+200F, U+061C) and byte that is
 * not UTF-8 shown as a visible escape (\x1b, \u202e) instead of acting.
 */
void term_put(FILE *f, const char *s, enum term_lines lines);
/* The same as a new string (caller frees with free); NULL if out of memory. */
char *term_safe(const char *s, enum term_lines lines);

#endif
