/*
 * The key directory's entry steps (the append-only proof missive-audit reads with LogEntries)
 * on any input, against a tree of eight entries built once and the same tree with three more.
 * Byte 0 gives the entries' kinds (bit i: entry i adds), the rest is the run of steps:
 * checked from the eight-entry tree, and accepted as ending at the eleven-entry tree only when
 * every step it adds is one of the three new entries; checked with no root first too; and the
 * entries it adds matched against wanted ones (msv_pt_steps_match, the owner's monitor's).
 */
#include <sodium.h>

#include "common.h"
#include "missive/ptree.h"

static struct msv_pt_entry entries[11];
static uint8_t root8[32], root11[32];

static void setup(void)
{
    static int done;
    struct msv_ptree *t = NULL;

    if (done)
        return;
    done = 1;
    if (msv_init() != MSV_OK || msv_ptree_new(&t) != MSV_OK)
        abort();
    for (uint32_t i = 0; i < 11; i++) {
        uint8_t in[5] = {'s', (uint8_t)(i >> 24), (uint8_t)(i >> 16), (uint8_t)(i >> 8),
                         (uint8_t)i};

        crypto_hash_sha256(entries[i].label, in, sizeof(in));
        in[0] = 't';
        crypto_hash_sha256(entries[i].value, in, sizeof(in));
        if (i == 8 && msv_ptree_root(t, root8) != MSV_OK)
            abort();
        if (msv_ptree_insert(t, &entries[i]) != MSV_OK)
            abort();
    }
    if (msv_ptree_root(t, root11) != MSV_OK)
        abort();
    msv_ptree_free(t);
}

/* Whether every step of the run that adds names one of the three new entries, each once. */
static int adds_the_new_three(const uint8_t *run, size_t len, const uint8_t *adds, size_t n)
{
    size_t off = 4, seen = 0;

    for (size_t i = 0; i < n; i++) {
        int found = 0;

        if (!adds[i]) {
            off++;
            continue;
        }
        for (int k = 8; k < 11; k++) {
            if (memcmp(run + off + 1, entries[k].label, 32) == 0 &&
                memcmp(run + off + 33, entries[k].value, 32) == 0 && !(seen & (1u << k))) {
                seen |= 1u << k;
                found = 1;
            }
        }
        if (!found)
            return 0;
        off += 65 + msv_pt_path_len(run + off + 65, len - off - 65);
    }
    return seen == 0x700;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    uint8_t adds[8], root[32], has[8], want[8][64];
    enum msv_pt_step_fault fault;
    size_t n, bad = 0;
    int have = 1, held;

    if (size < 5)
        return 0;
    setup();
    n = (size_t)data[1] << 24 | (size_t)data[2] << 16 | (size_t)data[3] << 8 | data[4];
    if (n > 8)
        return 0;
    for (size_t i = 0; i < 8; i++)
        adds[i] = (data[0] >> i) & 1;
    memcpy(root, root8, 32);
    held = msv_pt_verify_steps(data + 1, size - 1, adds, n, &have, root, &bad, &fault) == MSV_OK;
    if (held && memcmp(root, root11, 32) == 0 && !adds_the_new_three(data + 1, size - 1, adds, n))
        abort();
    /* the entries the run adds against version-4 leaves (the new three in turn): a run that
     * held is n well-formed steps, never refused as bytes */
    for (size_t i = 0; i < 8; i++) {
        has[i] = adds[i];
        memcpy(want[i], entries[8 + i % 3].label, 32);
        memcpy(want[i] + 32, entries[8 + i % 3].value, 32);
    }
    if (msv_pt_steps_match(data + 1, size - 1, n, (const uint8_t(*)[64])want, has, &bad) ==
            MSV_ERR_PARSE &&
        held)
        abort();
    have = 0;
    (void)msv_pt_verify_steps(data + 1, size - 1, adds, n, &have, root, &bad, &fault);
    return 0;
}
