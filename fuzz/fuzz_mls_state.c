/*
 * A member's state file (src/mls/state.c) on any bytes: msv_mls_member_load()
 * either refuses them or gives a member whose state saves and loads back to
 * the same bytes (a loaded state is one the loader would write). The seed
 * corpus (fuzz/corpus/mls_state/) holds states missive-crypto mls wrote: a
 * group of one, of two, of three in suite 3, and one after messages were
 * read out of order, and one closed by a ReInit it committed (version 2).
 */
#include <stdlib.h>
#include <string.h>

#include "common.h"
#include "mls/member.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static int ready;
    struct msv_mls_member *m = NULL, *again = NULL;
    uint8_t *first = NULL, *second = NULL;
    size_t first_len = 0, second_len = 0;
    const char *why = NULL;

    if (!ready) {
        if (msv_init() != MSV_OK)
            abort();
        ready = 1;
    }
    if (msv_mls_member_load(data, size, NULL, 0, &m, &why) != MSV_OK) {
        if (m != NULL || why == NULL)
            abort(); /* nothing half-loaded, and a reason */
        return 0;
    }
    if (msv_mls_member_save(m, &first, &first_len, &why) != MSV_OK ||
        msv_mls_member_load(first, first_len, NULL, 0, &again, &why) != MSV_OK ||
        msv_mls_member_save(again, &second, &second_len, &why) != MSV_OK ||
        first_len != second_len || memcmp(first, second, first_len) != 0)
        abort();
    msv_secret_free(first, first_len);
    msv_secret_free(second, second_len);
    msv_mls_member_free(m);
    msv_mls_member_free(again);
    return 0;
}
