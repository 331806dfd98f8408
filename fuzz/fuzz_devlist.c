/*
 * Signed device lists from the network (docs/transparency.md, "Signed device lists"): a
 * version-6 leaf, the data a key directory entry commits to, with every device's approval
 * record and the chain records of removed approvers. What parses must encode back to the same
 * bytes, and its chains check (signed, unsigned or unapproved; the set refused as a whole)
 * without a crash whatever the records say.
 */
#include "common.h"
#include "missive/kt.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static struct msv_kt_entry e;
    struct msv_kt_devlist r;
    uint8_t *again = NULL;
    size_t len = 0;

    if (msv_init() != MSV_OK)
        abort();
    if (msv_kt_leaf_parse(data, size, &e) != MSV_OK)
        return 0;
    if (msv_kt_leaf_encode(&e, &again, &len) != MSV_OK || len != size ||
        memcmp(again, data, size) != 0)
        abort();
    free(again);
    if (msv_kt_devlist_check(&e, &r) == MSV_OK &&
        (r.n_signed + r.n_unsigned + r.n_unapproved != e.n_devices ||
         (r.n_signed > 0) != (r.has_root != 0)))
        abort();
    return 0;
}
