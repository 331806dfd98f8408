/*
 * The checks of one LogRead answer by a client's monitor (msv_kt_lineage_page, src/client/
 * lineage.c) on any bytes: u64be the log size read from, the key directory's root there (32),
 * then the LogEntries answer. Refused, with a reason and the root unchanged; or accepted, and
 * then: ending at the root signed for the head when the entries reach it, accepted again with a
 * root a lookup showed for where the entries end that is the one they build, and refused with
 * one a bit off. The seed corpus holds answers missived gave the monitors of test_client's
 * lineage tests, with the root each monitor held.
 */
#include <stdio.h>

#include "common.h"
#include "client/lineage.h"
#include "client/transparency.h"
#include "util/endian.h"

static void check_accepted(const Msv__Wire__LogEntries *r, const struct msv_kt_head *head,
                           uint64_t from, int64_t cutover, const uint8_t start[32],
                           const uint8_t end[32])
{
    static struct msv_kt_seen_roots seen;
    uint8_t again[32];
    char why[400];

    if (from + r->n_entries == head->size && memcmp(end, r->head->epoch_root.data, 32) != 0)
        abort();
    seen.n = 1;
    seen.e[0].size = from + r->n_entries;
    memcpy(seen.e[0].root, end, 32);
    memcpy(again, start, 32);
    if (!msv_kt_lineage_page(r, head, from, again, cutover, &seen, why, sizeof(why)) ||
        memcmp(again, end, 32) != 0)
        abort();
    seen.e[0].root[0] ^= 1;
    memcpy(again, start, 32);
    if (msv_kt_lineage_page(r, head, from, again, cutover, &seen, why, sizeof(why)) ||
        memcmp(again, start, 32) != 0 || why[0] == '\0')
        abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static int ready;
    Msv__Wire__LogEntries *r;
    struct msv_kt_head head = {0};
    uint8_t root[32];
    char why[400] = "";
    uint64_t from;
    int64_t cutover = -1;

    if (!ready) {
        if (msv_init() != MSV_OK)
            abort();
        ready = 1;
    }
    if (size < 40)
        return 0;
    from = msv_get_u64be(data);
    r = msv__wire__log_entries__unpack(NULL, size - 40, data + 40);
    if (r == NULL)
        return 0;
    /* the head as msv_kt_check_entries gives it (its signature is that check's, not this one's);
     * a head no larger than the size read from ends the lineage's run before these checks */
    if (r->head != NULL && r->head->root.len == MSV_KT_HASH_LEN && r->head->size > from) {
        head.size = r->head->size;
        memcpy(head.root, r->head->root.data, MSV_KT_HASH_LEN);
        memcpy(root, data + 8, 32);
        /* the cut-over the answer names, when it holds, as the monitor knows it */
        if (msv_kt_check_cutover(r, &head, from, from, &cutover, why, sizeof(why)) != MSV_OK)
            cutover = -1;
        why[0] = '\0';
        if (msv_kt_lineage_page(r, &head, from, root, cutover, NULL, why, sizeof(why)))
            check_accepted(r, &head, from, cutover, data + 8, root);
        else if (memcmp(root, data + 8, 32) != 0 || why[0] == '\0')
            abort();
    }
    msv__wire__log_entries__free_unpacked(r, NULL);
    return 0;
}
