/*
 * STATE.pending of missive-crypto mls (apps/crypto_mls.c, "outputs staged
 * while the state is saved"), read back: the magic line, the hex of the
 * state's SHA-256, then pairs of lines "N STAGED" or "R STAGED" and NAME,
 * both absolute, STAGED being NAME.stagedXXXXXX. The file may have been
 * changed by anyone who can write beside the state: whatever is not exactly
 * that is refused before anything is done.
 */
#include <string.h>

#include "crypto_mls.h"

#define PENDING_MAGIC_LINE MSV_MLS_PENDING_MAGIC "\n"
#define STAGED ".staged"
#define STAGED_LEN 13 /* ".staged" and mkstemp's six characters */

/* What one pending output's two lines say; -1 if they are not such lines. */
static int pending_entry(char **cursor, int *replace, char **tmp, char **name)
{
    char *a = *cursor, *nl = strchr(a, '\n'), *b, *nl2;
    size_t n;

    if (nl == NULL || (a[0] != 'N' && a[0] != 'R') || a[1] != ' ' || a[2] != '/')
        return -1;
    b = nl + 1;
    nl2 = strchr(b, '\n');
    if (nl2 == NULL || b[0] != '/')
        return -1;
    *nl = *nl2 = '\0';
    *replace = a[0] == 'R';
    *tmp = a + 2;
    *name = b;
    n = strlen(b);
    /* the staged file is NAME.stagedXXXXXX: nothing else is ever removed */
    if (strncmp(*tmp, b, n) != 0 || strncmp(*tmp + n, STAGED, strlen(STAGED)) != 0 ||
        strlen(*tmp + n) != STAGED_LEN || strchr(*tmp + n, '/') != NULL)
        return -1;
    *cursor = nl2 + 1;
    return 0;
}

int msv_mls_pending_parse(char *text, size_t len, struct msv_mls_pending *p)
{
    size_t magic = strlen(PENDING_MAGIC_LINE);
    char *cursor = text;

    memset(p, 0, sizeof(*p));
    if (strlen(text) != len || strncmp(text, PENDING_MAGIC_LINE, magic) != 0 ||
        strlen(text + magic) < 65 || text[magic + 64] != '\n')
        return -1;
    p->state_hash = text + magic;
    text[magic + 64] = '\0';
    cursor = text + magic + 65;
    while (*cursor != '\0') {
        if (p->n == MSV_MLS_PENDING_ENTRIES ||
            pending_entry(&cursor, &p->replace[p->n], &p->tmp[p->n], &p->name[p->n]) != 0)
            return -1;
        p->n++;
    }
    return 0;
}
