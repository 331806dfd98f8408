/*
 * The key directory beside the transparency log (keydir.h; docs/transparency.md, "The prefix
 * tree").
 */
#include <stdatomic.h>
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
/*
 * The most VRF proofs kept (80 bytes each with their labels' 32, and the map's 16: about
 * 130 MB). Kept are the proofs
 * a lookup of each handle's newest version v gives: v, v with its lowest nonzero digits
 * cleared one by one, and v + 1; a version leaving that set is dropped. Past the bound a proof is
 * made when a lookup asks for it and not kept.
 */
#define KEYDIR_PROOFS_MAX 1000000
/* A kept proof: the VRF proof, then the label it proves (keydir.h). */
#define KEPT_LEN (MSV_VRF_PROOF_LEN + MSV_PT_LABEL_LEN)

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
    kd->steps_max = UINT64_MAX;
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
    for (size_t i = 0; i < kd->n_pending; i++)
        free(kd->pending[i]);
    free(kd->pending);
    if (kd->secret != NULL)
        sodium_free(kd->secret);
    msv_ptree_free(kd->tree);
    msv_kt_recs_free(kd->stored, kd->n_stored);
    msv_kt_recs_free(kd->fresh, kd->n_fresh);
    for (size_t i = kd->steps_from; i < kd->n_versions; i++)
        free(kd->steps[i]);
    free(kd->steps);
    free(kd->step_lens);
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

/* The map key of (handle, version)'s VRF proof (64 bits of SHA-256 of its VRF input, never 0);
 * alpha gets the VRF input. */
static msv_err proof_key(const char *handle, uint32_t version, uint8_t alpha[300],
                         size_t *alpha_len, uint64_t *key)
{
    uint8_t h[32];
    msv_err err = msv_pt_vrf_input(handle, version, alpha, 300, alpha_len);

    if (err != MSV_OK)
        return err;
    crypto_hash_sha256(h, alpha, *alpha_len);
    *key = msv_get_u64be(h) | 1;
    return MSV_OK;
}

/* Keeps proof (pi and label) under key, unless the cache holds max proofs. */
static void keep_proof(struct msv_keydir *kd, uint64_t key, const uint8_t proof[KEPT_LEN],
                       size_t max)
{
    uint8_t *kept = msv_u64map_get(&kd->proofs, key);

    if (kept == NULL) {
        if (kd->proofs.count >= max || (kept = malloc(KEPT_LEN)) == NULL)
            return; /* made again when a lookup asks for it */
        if (msv_u64map_put(&kd->proofs, key, kept) != MSV_OK) {
            free(kept);
            return;
        }
        atomic_store(&kd->proofs_kept, kd->proofs.count);
    }
    memcpy(kept, proof, KEPT_LEN);
}

/* The versions a lookup of version v proves (docs/transparency.md, "Versions"). */
static size_t lookup_versions(uint32_t v, uint32_t out[MSV_PT_PRESENT_MAX + 1])
{
    size_t n = msv_pt_versions_present(v, out);

    if (v != UINT32_MAX)
        out[n++] = v + 1;
    return n;
}

/* Drops the proofs of the versions a lookup of v - 1 gave and one of v does not. */
static void drop_old_proofs(struct msv_keydir *kd, const char *handle, uint32_t v)
{
    uint32_t old[MSV_PT_PRESENT_MAX + 1], now[MSV_PT_PRESENT_MAX + 1];
    size_t n_old = lookup_versions(v - 1, old), n_now = lookup_versions(v, now);
    uint8_t alpha[300];
    size_t alpha_len = 0;
    uint64_t key;

    for (size_t i = 0; i < n_old; i++) {
        int still = 0;

        for (size_t j = 0; j < n_now; j++)
            still |= old[i] == now[j];
        if (!still && proof_key(handle, old[i], alpha, &alpha_len, &key) == MSV_OK)
            free(msv_u64map_del(&kd->proofs, key));
    }
    atomic_store(&kd->proofs_kept, kd->proofs.count);
}

/* Makes the VRF proof of alpha and the label it proves (out: pi ‖ label). */
static msv_err make_proof(const struct msv_keydir *kd, const uint8_t *alpha, size_t alpha_len,
                          uint8_t out[KEPT_LEN])
{
    uint8_t beta[MSV_VRF_OUTPUT_LEN];
    msv_err err = msv_vrf_prove(MSV_PT_VRF_SUITE, kd->secret, alpha, alpha_len, out);

    if (err == MSV_OK && (err = msv_vrf_proof_to_hash(MSV_PT_VRF_SUITE, out, beta)) == MSV_OK)
        msv_pt_label(beta, out + MSV_VRF_PROOF_LEN);
    return err;
}

/* The VRF proof and label of (handle, version) (out: pi ‖ label): the kept ones, or made (and
 * kept while the cache holds fewer than keep_max). */
static msv_err proof_of(struct msv_keydir *kd, const char *handle, uint32_t version,
                        size_t keep_max, uint8_t out[KEPT_LEN])
{
    uint8_t alpha[300], *kept;
    size_t alpha_len = 0;
    uint64_t key;
    msv_err err = proof_key(handle, version, alpha, &alpha_len, &key);

    if (err != MSV_OK)
        return err;
    kept = msv_u64map_get(&kd->proofs, key);
    if (kept != NULL) {
        memcpy(out, kept, KEPT_LEN);
        return MSV_OK;
    }
    if ((err = make_proof(kd, alpha, alpha_len, out)) != MSV_OK)
        return err;
    kd->proofs_made++;
    keep_proof(kd, key, out, keep_max);
    return MSV_OK;
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

/*
 * The label of (handle, version): from its VRF proof, made and kept, once missived serves; from
 * the VRF output alone (half the work) for the log read at start, whose lookups' proofs are
 * made afterwards, in the background (msv_keydir_prove_pending).
 */
static msv_err label_of(struct msv_keydir *kd, const char *handle, uint32_t version,
                        uint8_t label[MSV_PT_LABEL_LEN])
{
    uint8_t proof[KEPT_LEN], alpha[300], beta[MSV_VRF_OUTPUT_LEN];
    size_t alpha_len = 0;
    msv_err err;

    if (kd->prove_next) {
        if ((err = proof_of(kd, handle, version, KEYDIR_PROOFS_MAX, proof)) == MSV_OK)
            memcpy(label, proof + MSV_VRF_PROOF_LEN, MSV_PT_LABEL_LEN);
        return err;
    }
    if ((err = msv_pt_vrf_input(handle, version, alpha, sizeof(alpha), &alpha_len)) == MSV_OK &&
        (err = msv_vrf_output(MSV_PT_VRF_SUITE, kd->secret, alpha, alpha_len, beta)) == MSV_OK)
        msv_pt_label(beta, label);
    return err;
}

msv_err msv_keydir_label(void *ctx, const char *handle, uint32_t version,
                         uint8_t label[MSV_PT_LABEL_LEN])
{
    const struct msv_keydir *kd = ctx;
    uint8_t alpha[300], beta[MSV_VRF_OUTPUT_LEN];
    size_t alpha_len = 0;
    msv_err err = msv_pt_vrf_input(handle, version, alpha, sizeof(alpha), &alpha_len);

    if (err == MSV_OK &&
        (err = msv_vrf_output(MSV_PT_VRF_SUITE, kd->secret, alpha, alpha_len, beta)) == MSV_OK)
        msv_pt_label(beta, label);
    return err;
}

/* The label the store keeps for log entry index, or NULL. */
static const uint8_t *stored_label(struct msv_keydir *kd, uint64_t index)
{
    while (kd->stored_at < kd->n_stored && kd->stored[kd->stored_at].index < index)
        kd->stored_at++;
    if (kd->stored_bad || kd->stored_at == kd->n_stored ||
        kd->stored[kd->stored_at].index != index ||
        kd->stored[kd->stored_at].leaf_len != MSV_PT_LABEL_LEN)
        return NULL;
    return kd->stored[kd->stored_at].leaf;
}

/* Keeps label, log entry index's, for the store. */
static msv_err keep_fresh(struct msv_keydir *kd, uint64_t index, const uint8_t *label)
{
    uint8_t *copy;

    if (kd->n_fresh == kd->cap_fresh) {
        size_t cap = kd->cap_fresh ? kd->cap_fresh * 2 : 256;
        struct msv_kt_rec *p = realloc(kd->fresh, cap * sizeof(*p));

        if (p == NULL)
            return MSV_ERR_NOMEM;
        kd->fresh = p;
        kd->cap_fresh = cap;
    }
    if ((copy = malloc(MSV_PT_LABEL_LEN)) == NULL)
        return MSV_ERR_NOMEM;
    memcpy(copy, label, MSV_PT_LABEL_LEN);
    kd->fresh[kd->n_fresh++] =
        (struct msv_kt_rec){.index = index, .leaf = copy, .leaf_len = MSV_PT_LABEL_LEN};
    return MSV_OK;
}

void msv_keydir_take_fresh(struct msv_keydir *kd, struct msv_kt_rec **out, size_t *n)
{
    *out = kd->fresh;
    *n = kd->n_fresh;
    kd->fresh = NULL;
    kd->n_fresh = kd->cap_fresh = 0;
}

/*
 * The entry of log entry index, version of handle, committing to leaf: its label the store's
 * when it keeps one (the first checked against the VRF key), else computed and kept for it.
 */
static msv_err entry_at(struct msv_keydir *kd, uint64_t index, const char *handle, uint32_t version,
                        const uint8_t *leaf, size_t len, struct msv_pt_entry *e)
{
    const uint8_t *stored = stored_label(kd, index);
    uint8_t opening[32];
    msv_err err;

    if (stored == NULL || !kd->stored_checked) {
        if ((err = label_of(kd, handle, version, e->label)) != MSV_OK)
            return err;
        if (stored != NULL) {
            /* labels kept under another VRF key (a new vrf.key) are all computed again */
            kd->stored_checked = 1;
            kd->stored_bad = sodium_memcmp(stored, e->label, MSV_PT_LABEL_LEN) != 0;
        }
        /* counted: the labels not taken from the store (the one checked is) */
        if (!kd->prove_next && (stored == NULL || kd->stored_bad))
            kd->labels_computed++;
        /* at start; while serving the store labels what it appends (msv_keydir_label) */
        if ((stored == NULL || kd->stored_bad) && !kd->prove_next &&
            (err = keep_fresh(kd, index, e->label)) != MSV_OK)
            return err;
    } else {
        memcpy(e->label, stored, MSV_PT_LABEL_LEN);
    }
    if ((err = opening_of(kd, handle, version, opening)) != MSV_OK)
        goto out;
    err = msv_pt_commit(opening, handle, version, leaf, len, e->value);
out:
    sodium_memzero(opening, sizeof(opening));
    return err;
}

/* Adds handle to the handles whose next version's proof is still to be made. */
static msv_err add_pending(struct msv_keydir *kd, const char *handle)
{
    char *copy;

    if (kd->n_pending == kd->cap_pending) {
        size_t cap = kd->cap_pending ? kd->cap_pending * 2 : 256;
        char **p = realloc(kd->pending, cap * sizeof(*p));

        if (p == NULL)
            return MSV_ERR_NOMEM;
        kd->pending = p;
        kd->cap_pending = cap;
    }
    if ((copy = strdup(handle)) == NULL)
        return MSV_ERR_NOMEM;
    kd->pending[kd->n_pending++] = copy;
    return MSV_OK;
}

/* Whether the proof under key is kept (taking lock). */
static int proof_kept(struct msv_keydir *kd, pthread_mutex_t *lock, uint64_t key)
{
    int kept;

    pthread_mutex_lock(lock);
    kept = msv_u64map_get(&kd->proofs, key) != NULL;
    pthread_mutex_unlock(lock);
    return kept;
}

/*
 * Makes the proofs a lookup of handle's version v gives that are not kept yet, keeping each
 * unless a version appended meanwhile (which proved its own) made it useless.
 */
static void prove_lookup_set(struct msv_keydir *kd, pthread_mutex_t *lock, const char *handle,
                             uint32_t v)
{
    uint8_t alpha[300], proof[KEPT_LEN];
    uint32_t versions[MSV_PT_PRESENT_MAX + 1];
    size_t n = lookup_versions(v, versions), alpha_len = 0;
    uint64_t key;

    for (size_t i = 0; i < n; i++) {
        /* the VRF key never changes after open: the proof is made without the lock */
        if (proof_key(handle, versions[i], alpha, &alpha_len, &key) != MSV_OK ||
            proof_kept(kd, lock, key) || make_proof(kd, alpha, alpha_len, proof) != MSV_OK)
            continue;
        pthread_mutex_lock(lock);
        if ((uint32_t)(uintptr_t)msv_u64map_get(&kd->counts, handle_key(handle)) == v)
            keep_proof(kd, key, proof, KEYDIR_PROOFS_MAX);
        pthread_mutex_unlock(lock);
    }
}

void msv_keydir_prove_pending(struct msv_keydir *kd, pthread_mutex_t *lock, const atomic_int *stop)
{
    uint32_t v;
    char *handle;

    while (!atomic_load(stop)) {
        pthread_mutex_lock(lock);
        handle = kd->n_pending > 0 ? kd->pending[--kd->n_pending] : NULL;
        v = handle != NULL ? (uint32_t)(uintptr_t)msv_u64map_get(&kd->counts, handle_key(handle))
                           : 0;
        pthread_mutex_unlock(lock);
        if (handle == NULL)
            break;
        prove_lookup_set(kd, lock, handle, v);
        free(handle);
    }
    pthread_mutex_lock(lock);
    if (kd->n_pending == 0) {
        free(kd->pending);
        kd->pending = NULL;
        kd->cap_pending = 0;
    }
    pthread_mutex_unlock(lock);
}

/* Inserts e, the version of log entry index, keeping its step; drops the oldest steps past the
 * bound. */
static msv_err add_step(struct msv_keydir *kd, uint64_t index, const struct msv_pt_entry *e)
{
    uint8_t *step = NULL;
    size_t len = 0;
    msv_err err = msv_ptree_insert_step(kd->tree, e, &step, &len);

    if (err != MSV_OK)
        return err;
    kd->steps[index] = step;
    kd->step_lens[index] = (uint32_t)len;
    kd->steps_bytes += len;
    /* the oldest go past the bound ([directory] append_proof_kib), and a read of them is
     * refused (msv_keydir_steps) */
    while (kd->steps_bytes > kd->steps_max && kd->steps_from < index) {
        kd->steps_bytes -= kd->step_lens[kd->steps_from];
        free(kd->steps[kd->steps_from]);
        kd->steps[kd->steps_from++] = NULL;
    }
    atomic_store(&kd->steps_kept_from, kd->steps_from);
    return MSV_OK;
}

/* The entry a version-4 leaf publishes (its time must be its data's). */
static msv_err published_entry(const struct msv_kt_rec *rec, const struct msv_kt_entry *data,
                               struct msv_pt_entry *e)
{
    struct msv_kt_v4_leaf l;

    if (msv_kt_v4_leaf_parse(rec->pub, rec->pub_len, &l) != MSV_OK || l.time_ms != data->time_ms)
        return MSV_ERR_INVALID;
    memcpy(e->label, l.label, MSV_PT_LABEL_LEN);
    memcpy(e->value, l.value, MSV_PT_VALUE_LEN);
    return MSV_OK;
}

/* rec->pub (malloc'd): the version-4 leaf of entry e, at its data's time. */
static msv_err publish(struct msv_kt_rec *rec, const struct msv_kt_entry *data,
                       const struct msv_pt_entry *e)
{
    struct msv_kt_v4_leaf l = {.time_ms = data->time_ms};

    if ((rec->pub = malloc(MSV_KT_V4_LEAF_LEN)) == NULL)
        return MSV_ERR_NOMEM;
    memcpy(l.label, e->label, MSV_PT_LABEL_LEN);
    memcpy(l.value, e->value, MSV_PT_VALUE_LEN);
    msv_kt_v4_leaf_encode(&l, rec->pub);
    rec->pub_len = MSV_KT_V4_LEAF_LEN;
    return MSV_OK;
}

/*
 * The tree entry of rec, version of handle: a version-4 leaf's own (v4 and published: no VRF
 * output at start), or made from the data (and published when v4).
 */
static msv_err entry_of(struct msv_keydir *kd, struct msv_kt_rec *rec, int v4,
                        const struct msv_kt_entry *data, uint32_t version, struct msv_pt_entry *e)
{
    msv_err err;

    if (v4 && rec->pub != NULL)
        err = published_entry(rec, data, e);
    else if ((err = entry_at(kd, rec->index, data->handle, version, rec->leaf, rec->leaf_len, e)) ==
                 MSV_OK &&
             v4)
        err = publish(rec, data, e);
    if (err == MSV_OK && v4 && kd->v4_mismatch != 0 && rec->index == kd->v4_mismatch)
        e->value[0] ^= 1; /* tests only: the tree's entry is not the one the log publishes */
    return err;
}

msv_err msv_keydir_add(struct msv_keydir *kd, struct msv_kt_rec *rec, int v4)
{
    static _Thread_local struct msv_kt_entry parsed;
    uint64_t index = rec->index;
    uint8_t proof[KEPT_LEN];
    struct msv_pt_entry e;
    uint32_t version = 0;
    uint64_t key;
    msv_err err;

    if (index != kd->n_versions)
        return MSV_ERR_INVALID;
    if (kd->n_versions == kd->cap_versions) {
        size_t cap = kd->cap_versions ? kd->cap_versions * 2 : 256;
        uint32_t *p = realloc(kd->versions, cap * sizeof(*p)), *l;
        uint8_t **st;

        if (p == NULL)
            return MSV_ERR_NOMEM;
        kd->versions = p;
        if ((st = realloc(kd->steps, cap * sizeof(*st))) == NULL)
            return MSV_ERR_NOMEM;
        kd->steps = st;
        if ((l = realloc(kd->step_lens, cap * sizeof(*l))) == NULL)
            return MSV_ERR_NOMEM;
        kd->step_lens = l;
        kd->cap_versions = cap;
    }
    kd->steps[index] = NULL;
    kd->step_lens[index] = 0;
    /* a rotation or cut-over entry is no handle's version */
    if (msv_kt_leaf_parse(rec->leaf, rec->leaf_len, &parsed) == MSV_OK) {
        key = handle_key(parsed.handle);
        version = (uint32_t)(uintptr_t)msv_u64map_get(&kd->counts, key) + 1;
        if (kd->skip_version == version && version < UINT32_MAX - 2 &&
            strcmp(parsed.handle, kd->skip_handle) == 0)
            version += 2; /* tests only: a dishonest directory skips two versions */
        if ((err = entry_of(kd, rec, v4, &parsed, version, &e)) != MSV_OK ||
            (err = add_step(kd, index, &e)) != MSV_OK ||
            (err = msv_u64map_put(&kd->counts, key, (void *)(uintptr_t)version)) != MSV_OK)
            return err;
        drop_old_proofs(kd, parsed.handle, version);
        if (!kd->prove_next && version == 1 && (err = add_pending(kd, parsed.handle)) != MSV_OK)
            return err;
        /* the absence a lookup of the new version proves: made now, not by the lookups */
        if (kd->prove_next && version != UINT32_MAX &&
            (err = proof_of(kd, parsed.handle, version + 1, KEYDIR_PROOFS_MAX, proof)) != MSV_OK)
            return err;
    }
    kd->versions[kd->n_versions++] = version;
    return MSV_OK;
}

size_t msv_keydir_step_len(const struct msv_keydir *kd, uint64_t index)
{
    if (index < kd->steps_from || index >= kd->n_versions)
        return 0;
    return kd->steps[index] != NULL ? kd->step_lens[index] : 1;
}

msv_err msv_keydir_steps(const struct msv_keydir *kd, uint64_t start, size_t n, uint8_t **out,
                         size_t *len)
{
    size_t size = 4, off = 4;
    uint8_t *buf;

    if (n > 0 && start < kd->steps_from)
        return MSV_ERR_NOT_FOUND;
    if (n > 0 && (start > kd->n_versions || n > kd->n_versions - start || n > MSV_PT_STEPS_MAX))
        return MSV_ERR_INVALID;
    for (size_t i = 0; i < n; i++)
        size += msv_keydir_step_len(kd, start + i);
    if ((buf = malloc(size)) == NULL)
        return MSV_ERR_NOMEM;
    msv_put_u32be(buf, (uint32_t)n);
    for (size_t i = 0; i < n; i++) {
        const uint8_t *step = kd->steps[start + i];

        if (step == NULL) {
            buf[off++] = 0; /* a rotation entry adds nothing */
            continue;
        }
        memcpy(buf + off, step, kd->step_lens[start + i]);
        off += kd->step_lens[start + i];
    }
    *out = buf;
    *len = size;
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

/*
 * The VRF proof of (handle, version) for a lookup (msv_pt_vrf_prover): the kept one, made by
 * the entry's append; missing only for a handle without entries, one the bound left out, or
 * one read from the log at start (made now and kept; a handle without entries only while the
 * cache is less than half full, so lookups of made-up handles cannot crowd out the entries').
 */
static msv_err lookup_proof(void *ctx, const char *handle, uint32_t version,
                            uint8_t pi[MSV_VRF_PROOF_LEN], uint8_t label[MSV_PT_LABEL_LEN])
{
    struct msv_keydir *kd = ctx;
    uint32_t newest = (uint32_t)(uintptr_t)msv_u64map_get(&kd->counts, handle_key(handle));
    uint64_t made = kd->proofs_made;
    uint8_t proof[KEPT_LEN];
    msv_err err = proof_of(kd, handle, version,
                           newest > 0 ? KEYDIR_PROOFS_MAX : KEYDIR_PROOFS_MAX / 2, proof);

    if (kd->proofs_made != made)
        atomic_fetch_add(&kd->lookup_misses, 1);
    memcpy(pi, proof, MSV_VRF_PROOF_LEN);
    memcpy(label, proof + MSV_VRF_PROOF_LEN, MSV_PT_LABEL_LEN);
    return err;
}

msv_err msv_keydir_publish(struct msv_keydir *kd, struct msv_kt_rec *rec)
{
    static _Thread_local struct msv_kt_entry parsed;
    struct msv_pt_entry e;
    uint8_t opening[MSV_PT_OPENING_LEN];
    uint32_t version;
    msv_err err;

    if (msv_kt_leaf_parse(rec->leaf, rec->leaf_len, &parsed) != MSV_OK)
        return MSV_OK; /* a rotation or cut-over entry is published as it is */
    if (rec->index >= kd->n_versions || (version = kd->versions[rec->index]) == 0)
        return MSV_ERR_INVALID;
    if ((err = label_of(kd, parsed.handle, version, e.label)) == MSV_OK &&
        (err = opening_of(kd, parsed.handle, version, opening)) == MSV_OK &&
        (err = msv_pt_commit(opening, parsed.handle, version, rec->leaf, rec->leaf_len, e.value)) ==
            MSV_OK)
        err = publish(rec, &parsed, &e);
    sodium_memzero(opening, sizeof(opening));
    return err;
}

msv_err msv_keydir_open_entry(struct msv_keydir *kd, const char *handle, uint64_t index,
                              uint32_t *version, uint8_t opening[MSV_PT_OPENING_LEN],
                              uint8_t pi[MSV_VRF_PROOF_LEN])
{
    uint8_t proof[KEPT_LEN];
    msv_err err;

    if (index >= kd->n_versions || kd->versions[index] == 0)
        return MSV_ERR_INVALID;
    *version = kd->versions[index];
    if ((err = proof_of(kd, handle, *version, KEYDIR_PROOFS_MAX / 2, proof)) == MSV_OK)
        err = opening_of(kd, handle, *version, opening);
    if (err == MSV_OK)
        memcpy(pi, proof, MSV_VRF_PROOF_LEN);
    return err;
}

msv_err msv_keydir_prove(struct msv_keydir *kd, enum msv_pt_proof_kind kind, const char *handle,
                         int64_t index, uint8_t **proof, size_t *len)
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
    /* history and presence proofs are asked for by the handle's owner alone, and rarely: their
     * VRF proofs (of marker versions and old versions no lookup needs) are made, not kept */
    if (err == MSV_OK && kind != MSV_PT_LOOKUP)
        err = msv_ptree_prove_versions(kd->tree, kind, kd->secret, handle, version, opening, proof,
                                       len);
    else if (err == MSV_OK)
        err = msv_ptree_prove_versions_by(kd->tree, kind, lookup_proof, kd, handle, version,
                                          opening, proof, len);
    sodium_memzero(opening, sizeof(opening));
    return err;
}

/* Reads "HANDLE VERSION" (a [testing] option) into handle and *version; 0 if it is not one. */
static int test_option(const char *option, char handle[256], uint32_t *version)
{
    const char *space = strchr(option, ' ');
    char *end = NULL;
    unsigned long v;

    if (space == NULL || space == option || (size_t)(space - option) >= 256)
        return 0;
    v = strtoul(space + 1, &end, 10);
    if (end == space + 1 || *end != '\0' || v == 0 || v > UINT32_MAX)
        return 0;
    memcpy(handle, option, (size_t)(space - option));
    handle[space - option] = '\0';
    *version = (uint32_t)v;
    return 1;
}

msv_err msv_keydir_test_dishonest(struct msv_keydir *kd, const char *forge, const char *skip)
{
    struct msv_pt_entry e;
    uint8_t opening[MSV_PT_OPENING_LEN];
    char handle[256];
    uint32_t version = 0;
    msv_err err = MSV_OK;

    if (skip[0] != '\0' && !test_option(skip, kd->skip_handle, &kd->skip_version))
        return MSV_ERR_INVALID;
    if (forge[0] == '\0')
        return MSV_OK;
    if (!test_option(forge, handle, &version))
        return MSV_ERR_INVALID;
    /* a version in the tree that no log entry is: committing to no device set */
    if ((err = label_of(kd, handle, version, e.label)) == MSV_OK &&
        (err = opening_of(kd, handle, version, opening)) == MSV_OK &&
        (err = msv_pt_commit(opening, handle, version, NULL, 0, e.value)) == MSV_OK)
        err = msv_ptree_insert(kd->tree, &e);
    sodium_memzero(opening, sizeof(opening));
    return err;
}

msv_err msv_keydir_test_rewrite(struct msv_keydir *kd, const char *rewrite)
{
    uint8_t value[MSV_PT_VALUE_LEN];
    const uint8_t *step;
    char *end = NULL;
    unsigned long long index;
    int remove = strncmp(rewrite, "remove ", 7) == 0;

    if (rewrite[0] == '\0')
        return MSV_OK;
    if (!remove && strncmp(rewrite, "change ", 7) != 0)
        return MSV_ERR_INVALID;
    index = strtoull(rewrite + 7, &end, 10);
    if (end == rewrite + 7 || *end != '\0' || index < kd->steps_from || index >= kd->n_versions ||
        (step = kd->steps[index]) == NULL)
        return MSV_ERR_INVALID;
    /* the step holds the entry: kind, label, value */
    memcpy(value, step + 1 + MSV_PT_LABEL_LEN, MSV_PT_VALUE_LEN);
    value[0] ^= 1;
    return msv_ptree_test_rewrite(&kd->tree, step + 1, remove ? NULL : value);
}
