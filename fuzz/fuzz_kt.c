/*
 * Transparency log input from the network: leaves (what parses must encode
 * back to the same bytes: one encoding per device set, and per rotation entry)
 * and proofs (any bytes as an inclusion or consistency path: refused or
 * accepted, never a crash).
 */
#include "common.h"
#include "missive/kt.h"

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
    check_proofs(data, size);
    return 0;
}
