/*
 * The prefix tree's proofs on any input, against a tree of eight entries built once (and the
 * same tree with three more added, for append-only proofs). Byte 0 chooses the parser:
 *
 *   0: label (32) || path proof: accepted only as the truth (present with the entry's value,
 *      or absent when the label is not one of the tree's);
 *   1: append-only proof from the eight-entry tree to the eleven-entry tree: accepted only
 *      adding three;
 *   2: version proof (lookup) of "alice@example.org": accepted only at her version, 3;
 *   3: version proof (history) of the same;
 *   4: u8 n (1 to 4) || n labels || multi-path proof against the eight-entry tree: accepted
 *      only as the truth for every label;
 *   5: version proof (presence, one version shown to its owner) of the same: accepted only at
 *      version 3, the one alice's data is.
 */
#include <sodium.h>

#include "common.h"
#include "missive/ptree.h"

static struct msv_pt_entry entries[11];
static uint8_t root8[32], root11[32], vrf_pk[32], alice_data[4] = "set3";

static void entry_of(uint32_t i, struct msv_pt_entry *e)
{
    uint8_t in[5] = {'f', (uint8_t)(i >> 24), (uint8_t)(i >> 16), (uint8_t)(i >> 8), (uint8_t)i};

    crypto_hash_sha256(e->label, in, sizeof(in));
    in[0] = 'g';
    crypto_hash_sha256(e->value, in, sizeof(in));
}

static void setup(void)
{
    static int done;
    struct msv_ptree *t = NULL;
    uint8_t sk[32] = {7}, opening[32] = {9}, alpha[64], pi[80], beta[64];
    size_t len = 0;

    if (done)
        return;
    done = 1;
    if (msv_init() != MSV_OK || msv_ptree_new(&t) != MSV_OK ||
        msv_vrf_public_key(MSV_PT_VRF_SUITE, sk, vrf_pk) != MSV_OK)
        abort();
    for (uint32_t i = 0; i < 11; i++) {
        entry_of(i, &entries[i]);
        if (i < 3) {
            /* alice's versions 1..3 take the first three places */
            if (msv_pt_vrf_input("alice@example.org", i + 1, alpha, sizeof(alpha), &len) !=
                    MSV_OK ||
                msv_vrf_prove(MSV_PT_VRF_SUITE, sk, alpha, len, pi) != MSV_OK ||
                msv_vrf_proof_to_hash(MSV_PT_VRF_SUITE, pi, beta) != MSV_OK ||
                msv_pt_commit(opening, "alice@example.org", i + 1, alice_data, i == 2 ? 4 : 0,
                              entries[i].value) != MSV_OK)
                abort();
            msv_pt_label(beta, entries[i].label);
        }
        if (i == 8 && msv_ptree_root(t, root8) != MSV_OK)
            abort();
        if (msv_ptree_insert(t, &entries[i]) != MSV_OK)
            abort();
    }
    if (msv_ptree_root(t, root11) != MSV_OK)
        abort();
    msv_ptree_free(t);
}

static void fuzz_path(const uint8_t *data, size_t size)
{
    uint8_t value[32];
    int found = 0;

    if (size < 32 || msv_pt_verify_path(root8, data, data + 32, size - 32, &found, value) != MSV_OK)
        return;
    for (int i = 0; i < 8; i++) {
        if (memcmp(entries[i].label, data, 32) == 0) {
            if (!found || memcmp(value, entries[i].value, 32) != 0)
                abort();
            return;
        }
    }
    if (found)
        abort();
}

/* u8 n (1 to 4) || n labels || a multi-path proof: accepted only when it tells the truth. */
static void fuzz_multi(const uint8_t *data, size_t size)
{
    uint8_t labels[4][32], values[4][32];
    int found[4];
    size_t n;

    if (size < 1 || data[0] < 1 || data[0] > 4 || size - 1 < (size_t)data[0] * 32)
        return;
    n = data[0];
    memcpy(labels, data + 1, n * 32);
    if (msv_pt_verify_multi(root8, (const uint8_t(*)[32])labels, n, data + 1 + n * 32,
                            size - 1 - n * 32, found, values) != MSV_OK)
        return;
    for (size_t j = 0; j < n; j++) {
        int in_tree = 0;

        for (int i = 0; i < 8; i++) {
            if (memcmp(entries[i].label, labels[j], 32) == 0) {
                in_tree = 1;
                if (!found[j] || memcmp(values[j], entries[i].value, 32) != 0)
                    abort();
            }
        }
        if (found[j] != in_tree)
            abort();
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    size_t added = 0;
    uint32_t version = 0;

    if (size < 1)
        return 0;
    setup();
    switch (data[0]) {
    case 0:
        fuzz_path(data + 1, size - 1);
        break;
    case 1:
        if (msv_pt_verify_append(root8, root11, data + 1, size - 1, &added) == MSV_OK && added != 3)
            abort();
        break;
    case 2:
    case 3:
        if (msv_pt_verify_versions(root11, vrf_pk, data[0] == 2 ? MSV_PT_LOOKUP : MSV_PT_HISTORY,
                                   "alice@example.org", alice_data, 4, data + 1, size - 1,
                                   &version) == MSV_OK &&
            version != 3)
            abort();
        break;
    case 4:
        fuzz_multi(data + 1, size - 1);
        break;
    case 5: /* one version shown to its owner: only alice's newest holds alice_data */
        if (msv_pt_verify_versions(root11, vrf_pk, MSV_PT_PRESENCE, "alice@example.org", alice_data,
                                   4, data + 1, size - 1, &version) == MSV_OK &&
            version != 3)
            abort();
        break;
    default:
        break;
    }
    return 0;
}
