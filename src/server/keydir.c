/*
 * The key directory beside the transparency log (keydir.h; docs/transparency.md, "The prefix
 * tree").
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <sodium.h>

#include "missive/kt.h"
#include "missive/util.h"
#include "server/keydir.h"
#include "server/keyfile.h"
#include "util/endian.h"

#define OPENING_TAG "MSV-pt-opening-key-v1"
/* The most VRF proofs kept for lookups (80 bytes each, and the map's 16). */
#define KEYDIR_PROOFS_MAX 100000

static void make_vrf_key(uint8_t *secret, void *ctx)
{
    (void)ctx;
    randombytes_buf(secret, MSV_VRF_SECRET_KEY_LEN);
}

/* Reads DATA_DIR/vrf.key into kd->secret, or makes it; writes DATA_DIR/vrf.pub. */
static msv_err load_vrf_key(struct msv_keydir *kd, const char *dir, char *err, size_t err_len)
{
    msv_err e = msv_keyfile_load(dir, "vrf.key", "VRF key", kd->secret, MSV_VRF_SECRET_KEY_LEN,
                                 make_vrf_key, NULL, err, err_len);

    if (e == MSV_OK && msv_vrf_public_key(MSV_PT_VRF_SUITE, kd->secret, kd->vrf_key) != MSV_OK)
        e = MSV_ERR_CRYPTO;
    return e == MSV_OK ? msv_keyfile_write_public(dir, "vrf.pub", kd->vrf_key,
                                                  MSV_VRF_PUBLIC_KEY_LEN, err, err_len)
                       : e;
}

msv_err msv_keydir_open(struct msv_keydir *kd, const char *data_dir, char *err, size_t err_len)
{
    crypto_hash_sha256_state st;
    msv_err e;

    memset(kd, 0, sizeof(*kd));
    msv_u64map_init(&kd->counts);
    msv_u64map_init(&kd->proofs);
    kd->secret = sodium_malloc(2 * 32);
    if (kd->secret == NULL || msv_ptree_new(&kd->tree) != MSV_OK) {
        snprintf(err, err_len, "out of memory");
        return MSV_ERR_NOMEM;
    }
    if ((e = load_vrf_key(kd, data_dir, err, err_len)) != MSV_OK)
        return e;
    /* the openings' key: SHA-256 of a tag and the VRF secret key, so nothing more to keep */
    crypto_hash_sha256_init(&st);
    crypto_hash_sha256_update(&st, (const uint8_t *)OPENING_TAG, sizeof(OPENING_TAG) - 1);
    crypto_hash_sha256_update(&st, kd->secret, MSV_VRF_SECRET_KEY_LEN);
    crypto_hash_sha256_final(&st, kd->secret + 32);
    sodium_memzero(&st, sizeof(st));
    return MSV_OK;
}

/* Empties the cache of VRF proofs. */
static void forget_proofs(struct msv_keydir *kd)
{
    for (size_t i = 0; i < kd->proofs.cap; i++) {
        if (kd->proofs.keys[i] != 0)
            free(kd->proofs.values[i]);
    }
    msv_u64map_clear(&kd->proofs);
}

void msv_keydir_close(struct msv_keydir *kd)
{
    forget_proofs(kd);
    if (kd->secret != NULL)
        sodium_free(kd->secret);
    msv_ptree_free(kd->tree);
    free(kd->versions);
    msv_u64map_clear(&kd->counts);
    memset(kd, 0, sizeof(*kd));
}

/* The map key of a handle: 64 bits of its SHA-256, never 0. */
static uint64_t handle_key(const char *handle)
{
    uint8_t h[32];

    crypto_hash_sha256(h, (const uint8_t *)handle, strlen(handle));
    return msv_get_u64be(h) | 1;
}

/* The opening of (handle, version): an HMAC under the openings' key, so it need not be kept. */
static msv_err opening_of(const struct msv_keydir *kd, const char *handle, uint32_t version,
                          uint8_t out[MSV_PT_OPENING_LEN])
{
    uint8_t input[300];
    size_t len = 0;
    msv_err err = msv_pt_vrf_input(handle, version, input, sizeof(input), &len);

    if (err == MSV_OK)
        crypto_auth_hmacsha256(out, input, len, kd->secret + 32);
    return err;
}

/* The entry of (handle, version) committing to leaf. */
static msv_err entry_of(const struct msv_keydir *kd, const char *handle, uint32_t version,
                        const uint8_t *leaf, size_t len, struct msv_pt_entry *e)
{
    uint8_t alpha[300], pi[MSV_VRF_PROOF_LEN], beta[MSV_VRF_OUTPUT_LEN], opening[32];
    size_t alpha_len = 0;
    msv_err err;

    if ((err = msv_pt_vrf_input(handle, version, alpha, sizeof(alpha), &alpha_len)) != MSV_OK ||
        (err = msv_vrf_prove(MSV_PT_VRF_SUITE, kd->secret, alpha, alpha_len, pi)) != MSV_OK ||
        (err = msv_vrf_proof_to_hash(MSV_PT_VRF_SUITE, pi, beta)) != MSV_OK ||
        (err = opening_of(kd, handle, version, opening)) != MSV_OK)
        goto out;
    msv_pt_label(beta, e->label);
    err = msv_pt_commit(opening, handle, version, leaf, len, e->value);
out:
    sodium_memzero(opening, sizeof(opening));
    return err;
}

msv_err msv_keydir_add(struct msv_keydir *kd, uint64_t index, const uint8_t *leaf, size_t len)
{
    static _Thread_local struct msv_kt_entry parsed;
    struct msv_pt_entry e;
    uint32_t version = 0;
    uint64_t key;
    msv_err err;

    if (index != kd->n_versions)
        return MSV_ERR_INVALID;
    if (kd->n_versions == kd->cap_versions) {
        size_t cap = kd->cap_versions ? kd->cap_versions * 2 : 256;
        uint32_t *p = realloc(kd->versions, cap * sizeof(*p));

        if (p == NULL)
            return MSV_ERR_NOMEM;
        kd->versions = p;
        kd->cap_versions = cap;
    }
    /* a rotation entry is no handle's version */
    if (msv_kt_leaf_parse(leaf, len, &parsed) == MSV_OK) {
        key = handle_key(parsed.handle);
        version = (uint32_t)(uintptr_t)msv_u64map_get(&kd->counts, key) + 1;
        if ((err = entry_of(kd, parsed.handle, version, leaf, len, &e)) != MSV_OK ||
            (err = msv_ptree_insert(kd->tree, &e)) != MSV_OK ||
            (err = msv_u64map_put(&kd->counts, key, (void *)(uintptr_t)version)) != MSV_OK)
            return err;
    }
    kd->versions[kd->n_versions++] = version;
    return MSV_OK;
}

msv_err msv_keydir_sign(struct msv_keydir *kd, uint64_t size, const uint8_t log_secret_key[64])
{
    msv_err err = msv_ptree_root(kd->tree, kd->epoch_root);

    if (err == MSV_OK)
        err = msv_pt_epoch_sign(log_secret_key, size, kd->epoch_root, kd->epoch_signature);
    if (err == MSV_OK)
        kd->epoch_size = size;
    return err;
}

/* The VRF proof of (handle, version), from the cache or made and kept (msv_pt_vrf_prover). */
static msv_err cached_proof(void *ctx, const char *handle, uint32_t version,
                            uint8_t pi[MSV_VRF_PROOF_LEN])
{
    struct msv_keydir *kd = ctx;
    uint8_t alpha[300], h[32], *kept;
    size_t alpha_len = 0;
    uint64_t key;
    msv_err err = msv_pt_vrf_input(handle, version, alpha, sizeof(alpha), &alpha_len);

    if (err != MSV_OK)
        return err;
    crypto_hash_sha256(h, alpha, alpha_len);
    key = msv_get_u64be(h) | 1;
    kept = msv_u64map_get(&kd->proofs, key);
    if (kept != NULL) {
        memcpy(pi, kept, MSV_VRF_PROOF_LEN);
        return MSV_OK;
    }
    if ((err = msv_vrf_prove(MSV_PT_VRF_SUITE, kd->secret, alpha, alpha_len, pi)) != MSV_OK)
        return err;
    if (kd->proofs.count >= KEYDIR_PROOFS_MAX)
        forget_proofs(kd); /* bounded: start again rather than grow */
    if ((kept = malloc(MSV_VRF_PROOF_LEN)) == NULL)
        return MSV_OK; /* not kept: made again next time */
    memcpy(kept, pi, MSV_VRF_PROOF_LEN);
    if (msv_u64map_put(&kd->proofs, key, kept) != MSV_OK)
        free(kept);
    return MSV_OK;
}

msv_err msv_keydir_prove(struct msv_keydir *kd, const char *handle, int64_t index, uint8_t **proof,
                         size_t *len)
{
    uint8_t opening[MSV_PT_OPENING_LEN] = {0};
    uint32_t version = 0;
    msv_err err = MSV_OK;

    if (index >= 0) {
        if ((uint64_t)index >= kd->n_versions || kd->versions[index] == 0)
            return MSV_ERR_INVALID;
        version = kd->versions[index];
        err = opening_of(kd, handle, version, opening);
    }
    if (err == MSV_OK)
        err = msv_ptree_prove_versions_by(kd->tree, MSV_PT_LOOKUP, cached_proof, kd, handle,
                                          version, opening, proof, len);
    sodium_memzero(opening, sizeof(opening));
    return err;
}
