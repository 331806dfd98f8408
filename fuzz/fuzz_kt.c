/*
 * Transparency log input from the network: leaves (what parses must encode
 * back to the same bytes: one encoding per device set, per rotation entry, per
 * version-4 leaf and per cut-over entry), a version-4 leaf opened with the data,
 * version, opening and VRF proof a lookup carries beside it (any bytes: refused,
 * never a crash), and proofs (any bytes as an inclusion or consistency path:
 * refused or accepted, never a crash).
 */
#include "common.h"
#include "missive/kt.h"
#include "util/endian.h"

static void check_leaf(const uint8_t *data, size_t size)
{
    struct msv_kt_entry e;
    uint8_t *again = NULL;
    size_t len = 0;

    if (msv_kt_leaf_parse(data, size, &e) != MSV_OK)
        return;
    if (msv_kt_leaf_encode(&e, &again, &len) != MSV_OK || len != size ||
        memcmp(again, data, size) != 0)
        abort();
    free(again);
}

static void check_rotation(const uint8_t *data, size_t size)
{
    struct msv_kt_rotation r;
    uint8_t *again = NULL;
    size_t len = 0;

    if (msv_kt_rotation_leaf_parse(data, size, &r) != MSV_OK)
        return;
    if (msv_kt_rotation_leaf_encode(&r, &again, &len) != MSV_OK || len != size ||
        memcmp(again, data, size) != 0)
        abort();
    free(again);
}

static void check_v4(const uint8_t *data, size_t size)
{
    static struct msv_kt_entry e;
    struct msv_kt_v4_leaf l;
    uint8_t again[MSV_KT_V4_LEAF_LEN > MSV_KT_CUTOVER_LEAF_LEN ? MSV_KT_V4_LEAF_LEN
                                                               : MSV_KT_CUTOVER_LEAF_LEN];

    if (msv_kt_v4_leaf_parse(data, size, &l) == MSV_OK) {
        msv_kt_v4_leaf_encode(&l, again);
        if (memcmp(again, data, size) != 0)
            abort();
    }
    if (msv_kt_cutover_leaf_parse(data, size) == MSV_OK) {
        msv_kt_cutover_leaf_encode((int64_t)msv_get_u64be(data + 1), again);
        if (memcmp(again, data, size) != 0)
            abort();
    }
    /* key (32) || leaf (73) || version (4) || opening (32) || VRF proof (80) || data: whatever
     * the bytes, no key made here signed them, so nothing opens */
    if (size >= 32 + MSV_KT_V4_LEAF_LEN + 4 + 32 + 80 &&
        msv_kt_v4_open(data, data + 32, MSV_KT_V4_LEAF_LEN, data + 221, size - 221,
                       msv_get_u32be(data + 105), data + 109, data + 141, &e) == MSV_OK &&
        msv_kt_v4_leaf_parse(data + 32, MSV_KT_V4_LEAF_LEN, &l) != MSV_OK)
        abort();
}

/* The first 16 bytes: index and size; then a root and the path, 32 bytes each. */
static void check_proofs(const uint8_t *data, size_t size)
{
    uint64_t a = 0, b = 0;
    size_t n;

    if (size < 48)
        return;
    memcpy(&a, data, 8);
    memcpy(&b, data + 8, 8);
    n = (size - 48) / MSV_KT_HASH_LEN;
    if (n > MSV_KT_PROOF_MAX)
        n = MSV_KT_PROOF_MAX;
    (void)msv_merkle_verify_inclusion(data + 16, a, b,
                                      (const uint8_t(*)[MSV_KT_HASH_LEN])(data + 48), n, data + 16);
    (void)msv_merkle_verify_consistency(a % 1000, b % 1000, data + 16, data + 16,
                                        (const uint8_t(*)[MSV_KT_HASH_LEN])(data + 48), n);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (msv_init() != MSV_OK)
        abort();
    check_leaf(data, size);
    check_rotation(data, size);
    check_v4(data, size);
    check_proofs(data, size);
    return 0;
}
