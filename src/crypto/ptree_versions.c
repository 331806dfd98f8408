/*
 * Versions in the prefix tree (docs/transparency.md, "Versions"): a handle's entries are
 * versions 1, 2, 3, ... each under its own private label, the VRF output of
 * (handle, version). A version proof (format 4) carries the VRF proof of each version's label
 * and one multi-path proof of all the labels (ptree.c), sibling hashes shared:
 *
 *   u8 48 + kind (49 lookup, 50 history, 51 presence) || u32be v || opening of version v (32; only
 * when v > 0) || for each version kind names, in order: VRF proof (80) || multi-path proof of their
 * labels, in the same order
 *
 * lookup: present msv_pt_versions_present(v), then absent v + 1 (below 2^32);
 * history: present v (when v > 0), then absent msv_pt_versions_absent(v);
 * presence: present v alone (v > 0), one of a handle's versions shown to its owner.
 */
#include <stdlib.h>
#include <string.h>

#include <sodium.h>

#include "crypto/internal.h"
#include "missive/ptree.h"

#define COMMIT_TAG "MSV-pt-commit-v1"
#define FORMAT_4 48 /* the first byte of a format-4 proof: kind + 48 */
/*
 * Every format's first byte is kind + 16 f, f its number less one: those of formats 1 to 3 (no
 * longer read) and of later ones are told apart from bytes that are no version proof
 */
#define FORMAT_STEP 16
#define HANDLE_MAX 255

msv_err msv_pt_vrf_input(const char *handle, uint32_t version, uint8_t *out, size_t cap,
                         size_t *len)
{
    size_t n = strlen(handle);

    if (n == 0 || n > HANDLE_MAX || cap < n + 5)
        return MSV_ERR_INVALID;
    out[0] = (uint8_t)n;
    memcpy(out + 1, handle, n);
    out[n + 1] = (uint8_t)(version >> 24);
    out[n + 2] = (uint8_t)(version >> 16);
    out[n + 3] = (uint8_t)(version >> 8);
    out[n + 4] = (uint8_t)version;
    *len = n + 5;
    return MSV_OK;
}

void msv_pt_label(const uint8_t beta[MSV_VRF_OUTPUT_LEN], uint8_t label[MSV_PT_LABEL_LEN])
{
    memcpy(label, beta, MSV_PT_LABEL_LEN);
}

msv_err msv_pt_commit(const uint8_t opening[MSV_PT_OPENING_LEN], const char *handle,
                      uint32_t version, const uint8_t *data, size_t data_len,
                      uint8_t value[MSV_PT_VALUE_LEN])
{
    uint8_t input[HANDLE_MAX + 5];
    size_t input_len = 0;
    const uint8_t *parts[3] = {(const uint8_t *)COMMIT_TAG, input, data};
    size_t lens[3] = {sizeof(COMMIT_TAG) - 1, 0, data_len};
    msv_err err = msv_pt_vrf_input(handle, version, input, sizeof(input), &input_len);

    if (err != MSV_OK)
        return err;
    lens[1] = input_len;
    return msv_hmac_sha256_parts(opening, MSV_PT_OPENING_LEN, parts, lens, data_len ? 3 : 2, value);
}

/*
 * The digits a version is read as, lowest first: three of four bits (bits 0 to 11), then twenty
 * of one bit (bits 12 to 31).
 */
#define DIGITS 23

static unsigned digit_shift(unsigned k)
{
    return k < 3 ? 4 * k : k + 9;
}

static uint32_t digit_mask(unsigned k)
{
    return k < 3 ? 15 : 1;
}

size_t msv_pt_versions_present(uint32_t v, uint32_t out[MSV_PT_PRESENT_MAX])
{
    size_t n = 0;

    /* v, then v with its lowest nonzero digit cleared, while a digit is left */
    for (uint32_t w = v; w != 0;) {
        unsigned k = 0;

        out[n++] = w;
        while ((w >> digit_shift(k) & digit_mask(k)) == 0)
            k++;
        w &= ~(digit_mask(k) << digit_shift(k));
    }
    return n;
}

size_t msv_pt_versions_absent(uint32_t v, uint32_t out[MSV_PT_ABSENT_MAX])
{
    size_t n = 0;

    for (unsigned k = 0; k < DIGITS; k++) {
        unsigned shift = digit_shift(k), next = digit_shift(k + 1); /* 32 past the last */
        uint64_t above = (uint64_t)v >> next << next;

        for (uint64_t j = (v >> shift & digit_mask(k)) + 1; j <= digit_mask(k); j++) {
            uint64_t w = above + (j << shift);

            if (w <= UINT32_MAX)
                out[n++] = (uint32_t)w;
        }
    }
    return n;
}

/* The versions a proof of kind for v speaks of: present ones first (*n_present of them). */
static msv_err versions_of(enum msv_pt_proof_kind kind, uint32_t v, uint32_t out[MSV_PT_MULTI_MAX],
                           size_t *n, size_t *n_present)
{
    if (kind == MSV_PT_LOOKUP) {
        *n_present = msv_pt_versions_present(v, out);
        *n = *n_present;
        if (v < UINT32_MAX)
            out[(*n)++] = v + 1;
        return MSV_OK;
    }
    if (kind == MSV_PT_HISTORY) {
        *n_present = v > 0;
        out[0] = v;
        *n = *n_present + msv_pt_versions_absent(v, out + *n_present);
        return MSV_OK;
    }
    if (kind == MSV_PT_PRESENCE && v > 0) {
        out[0] = v;
        *n = *n_present = 1;
        return MSV_OK;
    }
    return MSV_ERR_INVALID;
}

/* The VRF proof of (handle, version) made with the secret key ctx points to, and its label. */
static msv_err prove_with_key(void *ctx, const char *handle, uint32_t version,
                              uint8_t pi[MSV_VRF_PROOF_LEN], uint8_t label[MSV_PT_LABEL_LEN])
{
    uint8_t alpha[HANDLE_MAX + 5], beta[MSV_VRF_OUTPUT_LEN];
    size_t alpha_len = 0;
    msv_err err = msv_pt_vrf_input(handle, version, alpha, sizeof(alpha), &alpha_len);

    if (err == MSV_OK &&
        (err = msv_vrf_prove(MSV_PT_VRF_SUITE, ctx, alpha, alpha_len, pi)) == MSV_OK &&
        (err = msv_vrf_proof_to_hash(MSV_PT_VRF_SUITE, pi, beta)) == MSV_OK)
        msv_pt_label(beta, label);
    return err;
}

/* Appends len bytes to the growing buffer *buf of *used bytes. */
static msv_err append(uint8_t **buf, size_t *used, const uint8_t *p, size_t len)
{
    uint8_t *q = realloc(*buf, *used + len);

    if (q == NULL)
        return MSV_ERR_NOMEM;
    memcpy(q + *used, p, len);
    *buf = q;
    *used += len;
    return MSV_OK;
}

msv_err msv_ptree_prove_versions(struct msv_ptree *t, enum msv_pt_proof_kind kind,
                                 const uint8_t vrf_sk[MSV_VRF_SECRET_KEY_LEN], const char *handle,
                                 uint32_t v, const uint8_t opening[MSV_PT_OPENING_LEN],
                                 uint8_t **proof, size_t *proof_len)
{
    return msv_ptree_prove_versions_by(t, kind, prove_with_key, (void *)vrf_sk, handle, v, opening,
                                       proof, proof_len);
}

msv_err msv_ptree_prove_versions_by(struct msv_ptree *t, enum msv_pt_proof_kind kind,
                                    msv_pt_vrf_prover prove, void *ctx, const char *handle,
                                    uint32_t v, const uint8_t opening[MSV_PT_OPENING_LEN],
                                    uint8_t **proof, size_t *proof_len)
{
    uint32_t versions[MSV_PT_MULTI_MAX];
    size_t n = 0, n_present = 0, used = 0, multi_len = 0;
    uint8_t head[5] = {(uint8_t)(kind + FORMAT_4), (uint8_t)(v >> 24), (uint8_t)(v >> 16),
                       (uint8_t)(v >> 8), (uint8_t)v};
    uint8_t pi[MSV_VRF_PROOF_LEN], labels[MSV_PT_MULTI_MAX][MSV_PT_LABEL_LEN], *buf = NULL,
                                                                               *multi = NULL;
    msv_err err = versions_of(kind, v, versions, &n, &n_present);

    if (err != MSV_OK || (err = append(&buf, &used, head, sizeof(head))) != MSV_OK ||
        (v > 0 && (err = append(&buf, &used, opening, MSV_PT_OPENING_LEN)) != MSV_OK))
        goto out;
    for (size_t i = 0; i < n; i++) {
        if ((err = prove(ctx, handle, versions[i], pi, labels[i])) != MSV_OK ||
            (err = append(&buf, &used, pi, sizeof(pi))) != MSV_OK)
            goto out;
    }
    if ((err = msv_ptree_prove_multi(t, (const uint8_t(*)[MSV_PT_LABEL_LEN])labels, n, &multi,
                                     &multi_len)) != MSV_OK ||
        (err = append(&buf, &used, multi, multi_len)) != MSV_OK)
        goto out;
    *proof = buf;
    *proof_len = used;
    buf = NULL;
out:
    free(multi);
    free(buf);
    return err;
}

/* Format 4: the VRF proofs of every version, then one multi-path proof of their labels. */
static msv_err verify_format_4(const uint8_t root[MSV_PT_HASH_LEN],
                               const uint8_t vrf_pk[MSV_VRF_PUBLIC_KEY_LEN],
                               enum msv_pt_proof_kind kind, const char *handle, const uint8_t *data,
                               size_t data_len, const uint8_t *proof, size_t len, uint32_t *version)
{
    uint32_t versions[MSV_PT_MULTI_MAX], v;
    size_t n = 0, n_present = 0, off = 5, alpha_len = 0;
    uint8_t labels[MSV_PT_MULTI_MAX][MSV_PT_LABEL_LEN], values[MSV_PT_MULTI_MAX][MSV_PT_VALUE_LEN],
        want[MSV_PT_VALUE_LEN];
    uint8_t alpha[HANDLE_MAX + 5], beta[MSV_VRF_OUTPUT_LEN];
    const uint8_t *opening = NULL;
    int found[MSV_PT_MULTI_MAX];
    struct msv_vrf_key vrf_key;
    msv_err err;

    v = (uint32_t)proof[1] << 24 | (uint32_t)proof[2] << 16 | (uint32_t)proof[3] << 8 | proof[4];
    if ((err = versions_of(kind, v, versions, &n, &n_present)) != MSV_OK)
        return err == MSV_ERR_INVALID ? MSV_ERR_PARSE : err;
    if (v > 0) {
        opening = proof + off;
        off += MSV_PT_OPENING_LEN;
    }
    if (len < off || (len - off) / MSV_VRF_PROOF_LEN < n)
        return MSV_ERR_PARSE;
    /* the key is checked once for all the versions' proofs */
    if (msv_vrf_key_prepare(&vrf_key, vrf_pk) != MSV_OK)
        return MSV_ERR_AUTH;
    for (size_t i = 0; i < n; i++, off += MSV_VRF_PROOF_LEN) {
        if ((err = msv_pt_vrf_input(handle, versions[i], alpha, sizeof(alpha), &alpha_len)) !=
                MSV_OK ||
            (err = msv_vrf_verify_prepared(MSV_PT_VRF_SUITE, &vrf_key, alpha, alpha_len,
                                           proof + off, beta)) != MSV_OK)
            return err;
        msv_pt_label(beta, labels[i]);
    }
    if ((err = msv_pt_verify_multi(root, (const uint8_t(*)[MSV_PT_LABEL_LEN])labels, n, proof + off,
                                   len - off, found, values)) != MSV_OK)
        return err;
    for (size_t i = 0; i < n; i++) {
        if (found[i] != (i < n_present))
            return MSV_ERR_AUTH;
    }
    /* version v itself holds the commitment to data */
    if (v > 0 && ((err = msv_pt_commit(opening, handle, v, data, data_len, want)) != MSV_OK ||
                  sodium_memcmp(values[0], want, MSV_PT_VALUE_LEN) != 0))
        return err != MSV_OK ? err : MSV_ERR_AUTH;
    *version = v;
    return MSV_OK;
}

msv_err msv_pt_verify_versions(const uint8_t root[MSV_PT_HASH_LEN],
                               const uint8_t vrf_pk[MSV_VRF_PUBLIC_KEY_LEN],
                               enum msv_pt_proof_kind kind, const char *handle, const uint8_t *data,
                               size_t data_len, const uint8_t *proof, size_t len, uint32_t *version)
{
    /*
     * formats 1 (the first byte the kind alone, a path proof per version), 2 (kind + 16: the
     * versions of base-2 digits) and 3 (kind + 32: of base-4 digits) are no longer read, and a
     * later release's (kind + 64, ...) not yet
     */
    if (len >= 1 && proof[0] % FORMAT_STEP == (uint8_t)kind &&
        proof[0] != (uint8_t)(kind + FORMAT_4))
        return MSV_ERR_UNSUPPORTED; /* another release's format, told apart from tampering */
    if (len < 5 || proof[0] != (uint8_t)(kind + FORMAT_4))
        return MSV_ERR_PARSE;
    return verify_format_4(root, vrf_pk, kind, handle, data, data_len, proof, len, version);
}

#define EPOCH_TAG "MSV-kt-epoch-v1"

static void epoch_statement(uint64_t size, const uint8_t root[MSV_PT_HASH_LEN],
                            uint8_t out[sizeof(EPOCH_TAG) - 1 + 8 + MSV_PT_HASH_LEN])
{
    memcpy(out, EPOCH_TAG, sizeof(EPOCH_TAG) - 1);
    for (int i = 0; i < 8; i++)
        out[sizeof(EPOCH_TAG) - 1 + i] = (uint8_t)(size >> (56 - 8 * i));
    memcpy(out + sizeof(EPOCH_TAG) - 1 + 8, root, MSV_PT_HASH_LEN);
}

msv_err msv_pt_epoch_sign(const uint8_t secret_key[64], uint64_t size,
                          const uint8_t root[MSV_PT_HASH_LEN], uint8_t signature[MSV_PT_SIG_LEN])
{
    uint8_t m[sizeof(EPOCH_TAG) - 1 + 8 + MSV_PT_HASH_LEN];

    epoch_statement(size, root, m);
    return crypto_sign_detached(signature, NULL, m, sizeof(m), secret_key) == 0 ? MSV_OK
                                                                                : MSV_ERR_CRYPTO;
}

msv_err msv_pt_epoch_verify(const uint8_t public_key[32], uint64_t size,
                            const uint8_t root[MSV_PT_HASH_LEN],
                            const uint8_t signature[MSV_PT_SIG_LEN])
{
    uint8_t m[sizeof(EPOCH_TAG) - 1 + 8 + MSV_PT_HASH_LEN];

    epoch_statement(size, root, m);
    return crypto_sign_verify_detached(signature, m, sizeof(m), public_key) == 0 ? MSV_OK
                                                                                 : MSV_ERR_AUTH;
}
