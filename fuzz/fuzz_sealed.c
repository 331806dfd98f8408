/*
 * Sealed sender's readers (docs/crypto.md, "Sealed sender" and "Hybrid sealed
 * sender"). The first input byte picks what the rest meets:
 *   0  a post-quantum recipient (identity with [8]) and its last-resort KEM
 *      prekey: the KEM id, the first layer, the second under the sender
 *   1  a recipient of an earlier version: the same with the classical readers
 *   2  the rest XORed over a valid hybrid envelope (as long as the rest, at most
 *      the envelope): anything but the envelope itself must be refused
 * Whatever opens must have the length the format says; whatever fails leaves
 * no output behind. The keys are made once per process.
 */
#include "common.h"
#include "missive/ratchet.h"
#include "missive/sealed.h"

#define PQ_OVERHEAD (1 + 32 + 4 + 1088 + 280 + 16)
#define CLASSIC_OVERHEAD (1 + 32 + 280 + 16)

static struct msv_identity *sender, *pq_recipient, *recipient;
static struct msv_kem_prekey *kem;
static uint8_t *valid;
static size_t valid_len;
static const uint8_t inner[] = "an inner envelope";

static void setup(void)
{
    struct msv_sealing_key key;
    uint8_t sig[64];

    kem = calloc(1, sizeof(*kem));
    if (kem == NULL || msv_init() != MSV_OK ||
        msv_identity_generate_suites(MSV_SUITE_MODERN, MSV_IDENTITY_PQ, 0, &sender) != MSV_OK ||
        msv_identity_generate_suites(MSV_SUITE_MODERN, MSV_IDENTITY_PQ, 0, &pq_recipient) !=
            MSV_OK ||
        msv_identity_generate_suites(MSV_SUITE_MODERN, 0, 0, &recipient) != MSV_OK ||
        msv_kem_prekey_generate(pq_recipient, 3, 1, kem, sig) != MSV_OK)
        abort();
    key.id = kem->id;
    memcpy(key.ek, kem->ek, sizeof(key.ek));
    if (msv_sealed_wrap_pq(sender, msv_identity_public(pq_recipient), &key, "alice@example.org", 7,
                           inner, sizeof(inner), &valid, &valid_len) != MSV_OK)
        abort();
}

/* Both layers as to, a post-quantum recipient if pq; 1 if they opened. */
static int read_as(int pq, const uint8_t *wire, size_t len)
{
    struct msv_identity *to = pq ? pq_recipient : recipient;
    char handle[256];
    uint64_t device = 0;
    uint32_t id = 0;
    uint8_t *env = NULL, ss[32];
    size_t env_len = 0;
    msv_err err;

    if (msv_sealed_kem_id(wire, len, &id) == MSV_OK && (id == 0 || wire[0] != MSV_WIRE_SEALED_PQ))
        abort();
    err = pq ? msv_sealed_sender_pq(to, kem->dk, wire, len, handle, &device, ss)
             : msv_sealed_sender(to, wire, len, handle, &device);
    if (err == MSV_OK && (strlen(handle) == 0 || strlen(handle) > 255))
        abort();
    err = pq ? msv_sealed_unwrap_pq(to, kem->dk, err == MSV_OK ? ss : NULL,
                                    msv_identity_public(sender), wire, len, &env, &env_len)
             : msv_sealed_unwrap(to, msv_identity_public(sender), wire, len, &env, &env_len);
    if (err != MSV_OK) {
        if (env != NULL)
            abort();
        return 0;
    }
    if (env_len + (pq ? PQ_OVERHEAD : CLASSIC_OVERHEAD) != len)
        abort();
    free(env);
    return 1;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    uint8_t *copy;
    size_t n;
    int changed = 0;

    if (valid == NULL)
        setup();
    if (size < 1)
        return 0;
    switch (data[0] % 3) {
    case 0:
    case 1:
        (void)read_as(data[0] % 3 == 0, data + 1, size - 1);
        break;
    default:
        n = size - 1 < valid_len ? size - 1 : valid_len;
        copy = malloc(n + 1);
        if (copy == NULL)
            abort();
        for (size_t i = 0; i < n; i++) {
            copy[i] = valid[i] ^ data[1 + i];
            changed |= data[1 + i];
        }
        /* only the untouched whole envelope opens, and only as the post-quantum recipient */
        if (read_as(1, copy, n) != (n == valid_len && !changed) || read_as(0, copy, n))
            abort();
        free(copy);
        break;
    }
    return 0;
}
