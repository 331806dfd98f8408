/*
 * STATE.pending of missive-crypto mls (apps/crypto_mls_pending.c) on any
 * bytes: refused, or read as at most four outputs, each a staged file that is
 * its name and ".staged" and six more characters (no other file is ever
 * removed or published), all absolute, and written back line by line to
 * exactly the bytes read.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../apps/crypto_mls.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void check(const struct msv_mls_pending *p, const uint8_t *data, size_t size)
{
    size_t cap = size + 1, len;
    char *again = malloc(cap);

    if (again == NULL || p->n > MSV_MLS_PENDING_ENTRIES || strlen(p->state_hash) != 64)
        abort();
    len = (size_t)snprintf(again, cap, "%s\n%s\n", MSV_MLS_PENDING_MAGIC, p->state_hash);
    for (size_t i = 0; i < p->n; i++) {
        size_t n = strlen(p->name[i]);

        if (p->name[i][0] != '/' || strncmp(p->tmp[i], p->name[i], n) != 0 ||
            strncmp(p->tmp[i] + n, ".staged", 7) != 0 || strlen(p->tmp[i] + n) != 13 ||
            strchr(p->tmp[i] + n, '/') != NULL || len >= cap)
            abort();
        len += (size_t)snprintf(again + len, cap - len, "%c %s\n%s\n", p->replace[i] ? 'R' : 'N',
                                p->tmp[i], p->name[i]);
    }
    if (len != size || memcmp(again, data, size) != 0)
        abort();
    free(again);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct msv_mls_pending p;
    char *text = malloc(size + 1);

    if (text == NULL)
        abort();
    memcpy(text, data, size);
    text[size] = '\0';
    if (msv_mls_pending_parse(text, size, &p) == 0)
        check(&p, data, size);
    free(text);
    return 0;
}
