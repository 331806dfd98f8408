/*
 * The transparency log as missived serves it (kt_log.h; formats in
 * docs/transparency.md).
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <sodium.h>

#include "missive/util.h"
#include "server/keyfile.h"
#include "server/kt_log.h"
#include "server/log.h"

#define SYNC_BATCH 1024

/* ---- the log key ------------------------------------------------------------------------ */

/* A new log key: the Ed25519 secret key as libsodium holds it (64 bytes). */
static void make_log_key(uint8_t *secret, void *ctx)
{
    uint8_t pub[MSV_KT_KEY_LEN];

    (void)ctx;
    crypto_sign_keypair(pub, secret);
}

/* Reads DATA_DIR/log.key, or makes it; writes DATA_DIR/log.pub. */
static msv_err load_key(struct msv_kt_log *log, const char *dir, char *err, size_t err_len)
{
    msv_err e = msv_keyfile_load(dir, "log.key", "log key", log->secret_key, 64, make_log_key, NULL,
                                 err, err_len);

    if (e != MSV_OK)
        return e;
    crypto_sign_ed25519_sk_to_pk(log->public_key, log->secret_key);
    return msv_keyfile_write_public(dir, "log.pub", log->public_key, MSV_KT_KEY_LEN, err, err_len);
}

/* ---- the tree --------------------------------------------------------------------------- */

/*
 * Gives leaf's device ids their keys (a device id is listed with one key forever, under every
 * handle of its account); MSV_ERR_EXISTS if one was listed with another key before.
 */
static msv_err claim_devices(struct msv_kt_log *log, const uint8_t *leaf, size_t len)
{
    static _Thread_local struct msv_kt_entry e;
    uint8_t handle[MSV_KT_HASH_LEN];
    msv_err err = msv_kt_leaf_parse(leaf, len, &e);

    if (err != MSV_OK || log->trust_store)
        return log->trust_store ? MSV_OK : MSV_ERR_INVALID;
    for (size_t i = 0; err == MSV_OK && i < e.n_devices; i++) {
        uint64_t id = e.devices[i].device_id;

        crypto_hash_sha256(handle, e.devices[i].identity, e.devices[i].identity_len);
        uint8_t *owner =
            id ? msv_u64map_get(&log->owners, id) : (log->has_zero_owner ? log->zero_owner : NULL);

        if (owner != NULL) {
            if (sodium_memcmp(owner, handle, MSV_KT_HASH_LEN) != 0)
                err = MSV_ERR_EXISTS;
            continue;
        }
        if (id == 0) {
            memcpy(log->zero_owner, handle, MSV_KT_HASH_LEN);
            log->has_zero_owner = 1;
            continue;
        }
        owner = malloc(MSV_KT_HASH_LEN);
        if (owner == NULL)
            return MSV_ERR_NOMEM;
        memcpy(owner, handle, MSV_KT_HASH_LEN);
        err = msv_u64map_put(&log->owners, id, owner);
        if (err != MSV_OK)
            free(owner);
    }
    return err;
}

/*
 * A rotation entry: signed by the key in force before it (the previous
 * entry's new key; the first entry is taken as the log's start), at its own
 * index. Kept, to be served with every head.
 */
static msv_err add_rotation(struct msv_kt_log *log, const struct msv_kt_rec *rec,
                            const struct msv_kt_rotation *r)
{
    const struct msv_kt_rotation_rec *last =
        log->n_rotations ? &log->rotations[log->n_rotations - 1] : NULL;
    struct msv_kt_rotation_rec *grown;

    if (!log->trust_store &&
        ((last != NULL && sodium_memcmp(last->new_key, r->old_key, MSV_KT_KEY_LEN) != 0) ||
         r->size != rec->index + 1 ||
         msv_kt_rotation_verify(r->old_key, r->new_key, r->size, r->signature) != MSV_OK))
        return MSV_ERR_AUTH;
    grown = realloc(log->rotations, (log->n_rotations + 1) * sizeof(*grown));
    if (grown == NULL)
        return MSV_ERR_NOMEM;
    log->rotations = grown;
    grown[log->n_rotations].index = rec->index;
    memcpy(grown[log->n_rotations].leaf, rec->leaf, MSV_KT_ROTATION_LEAF_LEN);
    memcpy(grown[log->n_rotations].new_key, r->new_key, MSV_KT_KEY_LEN);
    log->n_rotations++;
    return MSV_OK;
}

static msv_err add_leaf(struct msv_kt_log *log, const struct msv_kt_rec *rec)
{
    struct msv_kt_rotation r;

    if (msv_kt_rotation_leaf_parse(rec->leaf, rec->leaf_len, &r) == MSV_OK)
        return add_rotation(log, rec, &r);
    if (msv_kt_cutover_leaf_parse(rec->leaf, rec->leaf_len) == MSV_OK) {
        if (log->cutover >= 0 && !log->trust_store)
            return MSV_ERR_INVALID; /* one cut-over: leaves never name handles again */
        if (log->cutover < 0) {
            log->cutover = (int64_t)rec->index;
            memcpy(log->cutover_leaf, rec->leaf, MSV_KT_CUTOVER_LEAF_LEN);
        }
        return MSV_OK;
    }
    /* a published leaf before the cut-over, or one that is no version-4 leaf (keydir.c) */
    if (rec->pub != NULL && log->cutover < 0 && !log->trust_store)
        return MSV_ERR_INVALID;
    return claim_devices(log, rec->leaf, rec->leaf_len);
}

/* After the cut-over: rec's device set or tombstone is published as a version-4 leaf. */
static int is_v4(const struct msv_kt_log *log, const struct msv_kt_rec *rec)
{
    return log->cutover >= 0 && rec->index > (uint64_t)log->cutover;
}

/* What the log's tree holds of rec: its published leaf, if it has one, else the leaf itself. */
static void tree_leaf(const struct msv_kt_rec *rec, const uint8_t **leaf, size_t *len)
{
    *leaf = rec->pub != NULL ? rec->pub : rec->leaf;
    *len = rec->pub != NULL ? rec->pub_len : rec->leaf_len;
}

/* Keeps rec's version-4 leaf in the store; one not kept is made again when it is read. */
static void keep_published(struct msv_store *store, const struct msv_kt_rec *rec)
{
    msv_err err = store->ops->kt_publish(store->impl, rec->index, rec->pub, rec->pub_len);

    if (err != MSV_OK)
        msv_log(MSV_LOG_ERROR, "kt_publish_failed", "index=%llu error=\"%s\"",
                (unsigned long long)rec->index, msv_strerror(err));
}

/* Adds rec to the key directory; a version-4 leaf it made for rec is kept in the store. */
static msv_err add_version(struct msv_kt_log *log, struct msv_store *store, struct msv_kt_rec *rec)
{
    int had = rec->pub != NULL;
    msv_err err = msv_keydir_add(&log->keydir, rec, is_v4(log, rec));

    if (err == MSV_OK && !had && rec->pub != NULL)
        keep_published(store, rec);
    return err;
}

/*
 * A record read from the store after the tree took it: an entry after the cut-over that the
 * store has no version-4 leaf for (read before the sync that made it, or not kept) gets it.
 */
static msv_err fill_published(struct msv_kt_log *log, struct msv_store *store,
                              struct msv_kt_rec *rec)
{
    msv_err err;

    if (rec->leaf == NULL || rec->pub != NULL || !is_v4(log, rec))
        return MSV_OK;
    if ((err = msv_keydir_publish(&log->keydir, rec)) == MSV_OK && rec->pub != NULL)
        keep_published(store, rec);
    return err;
}

/* After a rotation entry, heads are the new key's: log.key is read again if it is not that key. */
static msv_err key_in_force(struct msv_kt_log *log)
{
    const uint8_t *want;
    char ignored[1400];

    if (log->n_rotations == 0 || log->trust_store)
        return MSV_OK; /* a dishonest server (tests) signs with the key it has */
    want = log->rotations[log->n_rotations - 1].new_key;
    if (sodium_memcmp(want, log->public_key, MSV_KT_KEY_LEN) == 0)
        return MSV_OK;
    if (load_key(log, log->data_dir, ignored, sizeof(ignored)) != MSV_OK ||
        sodium_memcmp(want, log->public_key, MSV_KT_KEY_LEN) != 0)
        return MSV_ERR_AUTH;
    return MSV_OK;
}

/*
 * Writes the labels the key directory computed at start, those the store lacked, to the store
 * (kt_labels), a batch at a time; while serving the store labels each entry in the transaction
 * that appends it (msv_keydir_label). A failure loses nothing: the next start computes what the
 * store lacks.
 */
static void keep_labels(struct msv_kt_log *log, struct msv_store *store)
{
    struct msv_kt_rec *fresh = NULL;
    size_t n = 0;
    msv_err err;

    msv_keydir_take_fresh(&log->keydir, &fresh, &n);
    if (n > 0 && (err = store->ops->kt_labels_put(store->impl, fresh, n)) != MSV_OK)
        msv_log(MSV_LOG_ERROR, "kt_labels_write_failed", "labels=%zu error=\"%s\"", n,
                msv_strerror(err));
    msv_kt_recs_free(fresh, n);
}

/* Reads the labels the store keeps (kt_labels) into the key directory, for the start. */
static msv_err read_labels(struct msv_kt_log *log, struct msv_store *store)
{
    struct msv_keydir *kd = &log->keydir;

    for (;;) {
        struct msv_kt_rec *recs = NULL, *grown;
        uint64_t from = kd->n_stored ? kd->stored[kd->n_stored - 1].index + 1 : 0;
        size_t n = 0;
        msv_err err = store->ops->kt_labels_read(store->impl, from, SYNC_BATCH, &recs, &n);

        if (err != MSV_OK || n == 0) {
            free(recs);
            return err;
        }
        grown = realloc(kd->stored, (kd->n_stored + n) * sizeof(*grown));
        if (grown == NULL) {
            msv_kt_recs_free(recs, n);
            return MSV_ERR_NOMEM;
        }
        kd->stored = grown;
        memcpy(kd->stored + kd->n_stored, recs, n * sizeof(*recs));
        kd->n_stored += n;
        free(recs); /* the labels are the key directory's now */
        if (n < SYNC_BATCH)
            return MSV_OK;
    }
}

/* Appends the store's leaves the tree does not have yet. */
static msv_err sync_locked(struct msv_kt_log *log, struct msv_store *store)
{
    for (;;) {
        struct msv_kt_rec *recs = NULL;
        size_t n = 0;
        msv_err err =
            store->ops->kt_read(store->impl, msv_merkle_size(log->tree), SYNC_BATCH, &recs, &n);

        for (size_t i = 0; err == MSV_OK && i < n; i++) {
            uint8_t h[MSV_KT_HASH_LEN];
            const uint8_t *leaf;
            size_t len;

            if (recs[i].index != msv_merkle_size(log->tree)) {
                err = MSV_ERR_INVALID; /* a gap in the store's log */
                break;
            }
            err = add_leaf(log, &recs[i]);
            if (err != MSV_OK)
                break; /* a device id under a second handle, a rotation not signed: no head */
            /* the key directory first: after the cut-over it makes the leaf the tree holds */
            err = add_version(log, store, &recs[i]);
            if (err != MSV_OK)
                break;
            tree_leaf(&recs[i], &leaf, &len);
            msv_kt_leaf_hash(leaf, len, h);
            err = msv_merkle_append(log->tree, h);
        }
        msv_kt_recs_free(recs, n);
        keep_labels(log, store);
        /* the one fill after the store began keeping labels: a VRF output per entry */
        if (!log->keydir.prove_next && log->keydir.labels_computed > 0 && n == SYNC_BATCH)
            msv_log(MSV_LOG_INFO, "kt_labels_filling",
                    "entries=%llu computed=%llu (read from the store: the rest)",
                    (unsigned long long)msv_merkle_size(log->tree),
                    (unsigned long long)log->keydir.labels_computed);
        if (err != MSV_OK || n < SYNC_BATCH)
            return err;
    }
}

void msv_kt_log_grown(struct msv_kt_log *log)
{
    atomic_store(&log->grown, 1);
}

static msv_err head_locked(struct msv_kt_log *log, struct msv_store *store, int64_t now_ms)
{
    msv_err err = MSV_OK;

    /*
     * taken before reading, so a change committed meanwhile is read next time;
     * a head due for re-signing reads the store too (other nodes append to it)
     */
    if (atomic_exchange(&log->grown, 0) || now_ms - log->head.time_ms >= MSV_KT_HEAD_INTERVAL_MS)
        err = sync_locked(log, store);
    if (err != MSV_OK)
        atomic_store(&log->grown, 1);

    if (err == MSV_OK)
        err = key_in_force(log);
    if (err != MSV_OK)
        return err;
    /* a new head when the log grew, and at least every minute, so heads show they are fresh */
    if (log->head.time_ms != 0 && log->head.size == msv_merkle_size(log->tree) &&
        now_ms - log->head.time_ms < MSV_KT_HEAD_INTERVAL_MS)
        return MSV_OK;
    log->head.size = msv_merkle_size(log->tree);
    log->head.time_ms = now_ms > 0 ? now_ms : 1;
    err = msv_merkle_root(log->tree, log->head.size, log->head.root);
    if (err == MSV_OK)
        err = msv_kt_head_sign(&log->head, log->secret_key);
    /* the key directory's root at the same size, signed alike */
    return err == MSV_OK ? msv_keydir_sign(&log->keydir, log->head.size, log->secret_key) : err;
}

static void *prove_pending(void *arg)
{
    struct msv_kt_log *log = arg;

    msv_keydir_prove_pending(&log->keydir, &log->lock, &log->stop_prover);
    return NULL;
}

msv_err msv_kt_log_open(struct msv_kt_log *log, const char *data_dir, struct msv_store *store,
                        int trust_store, uint64_t steps_max, char *err, size_t err_len)
{
    msv_err e;

    memset(log, 0, sizeof(*log));
    log->cutover = -1;
    pthread_mutex_init(&log->lock, NULL);
    msv_u64map_init(&log->owners);
    log->trust_store = trust_store;
    log->secret_key = sodium_malloc(64);
    log->data_dir = strdup(data_dir);
    if (log->secret_key == NULL || log->data_dir == NULL || msv_merkle_new(&log->tree) != MSV_OK) {
        snprintf(err, err_len, "out of memory");
        return MSV_ERR_NOMEM;
    }
    e = load_key(log, data_dir, err, err_len);
    if (e == MSV_OK)
        e = msv_keydir_open(&log->keydir, data_dir, err, err_len);
    if (e != MSV_OK)
        return e;
    log->keydir.steps_max = steps_max;
    if ((e = read_labels(log, store)) != MSV_OK) {
        snprintf(err, err_len, "cannot read the key directory's labels: %s", msv_strerror(e));
        return e;
    }
    e = sync_locked(log, store);
    log->keydir.prove_next = 1; /* from now on each append proves the absence lookups show */
    msv_log(MSV_LOG_INFO, "kt_tree_built", "entries=%llu labels_stored=%zu labels_computed=%llu%s",
            (unsigned long long)msv_merkle_size(log->tree), log->keydir.n_stored,
            (unsigned long long)log->keydir.labels_computed,
            log->keydir.stored_bad ? " (the stored labels are not the VRF key's: computed again)"
                                   : "");
    /* the labels read are not needed any more */
    msv_kt_recs_free(log->keydir.stored, log->keydir.n_stored);
    log->keydir.stored = NULL;
    log->keydir.n_stored = log->keydir.stored_at = 0;
    if (e == MSV_ERR_EXISTS)
        snprintf(err, err_len,
                 "the transparency log's entry %llu lists a device id with another key than "
                 "an earlier entry gave it (a device id has one key forever): the log is not "
                 "served",
                 (unsigned long long)msv_merkle_size(log->tree));
    else if (e == MSV_ERR_AUTH)
        snprintf(err, err_len,
                 "the transparency log's entry %llu is a log key rotation not signed by the "
                 "key in force before it: the log is not served",
                 (unsigned long long)msv_merkle_size(log->tree));
    else if (e == MSV_OK && key_in_force(log) != MSV_OK) {
        snprintf(err, err_len,
                 "%s/log.key is not the key the transparency log's last rotation (entry %llu) "
                 "names: heads cannot be signed",
                 data_dir, (unsigned long long)log->rotations[log->n_rotations - 1].index);
        e = MSV_ERR_AUTH;
    } else if (e != MSV_OK)
        snprintf(err, err_len, "cannot read the transparency log: %s", msv_strerror(e));
    /* the lookups' proofs of the handles read now are made while missived serves */
    if (e == MSV_OK && log->keydir.n_pending > 0 &&
        pthread_create(&log->prover, NULL, prove_pending, log) == 0)
        log->has_prover = 1;
    return e;
}

msv_err msv_kt_log_cut_over(struct msv_kt_log *log, struct msv_store *store, int64_t now_ms,
                            char *err, size_t err_len)
{
    uint8_t leaf[MSV_KT_CUTOVER_LEAF_LEN];
    msv_err e = MSV_OK;
    int had = log->cutover >= 0;

    msv_kt_cutover_leaf_encode(now_ms > 0 ? now_ms : 1, leaf);
    pthread_mutex_lock(&log->lock);
    /* where the log ends; another node may append meanwhile: read on and try again */
    for (int tries = 0; e == MSV_OK && log->cutover < 0 && tries < 8; tries++) {
        e = store->ops->kt_append(store->impl, msv_merkle_size(log->tree), leaf, sizeof(leaf));
        if (e == MSV_OK || e == MSV_ERR_EXISTS)
            e = sync_locked(log, store);
    }
    pthread_mutex_unlock(&log->lock);
    if (e == MSV_OK && log->cutover < 0)
        e = MSV_ERR_AGAIN;
    if (e != MSV_OK)
        snprintf(err, err_len, "cannot append the transparency log's cut-over entry: %s",
                 msv_strerror(e));
    else if (!had)
        msv_log(MSV_LOG_INFO, "kt_cutover", "index=%lld (leaves from here on name no handle)",
                (long long)log->cutover);
    return e;
}

void msv_kt_log_close(struct msv_kt_log *log)
{
    for (size_t i = 0; i < log->owners.cap; i++) {
        if (log->owners.keys[i] != 0)
            free(log->owners.values[i]);
    }
    msv_u64map_clear(&log->owners);
    if (log->has_prover) {
        atomic_store(&log->stop_prover, 1);
        pthread_join(log->prover, NULL);
    }
    if (log->secret_key != NULL)
        sodium_free(log->secret_key);
    msv_merkle_free(log->tree);
    msv_keydir_close(&log->keydir);
    free(log->rotations);
    free(log->data_dir);
    pthread_mutex_destroy(&log->lock);
    memset(log, 0, sizeof(*log));
}

msv_err msv_kt_log_head(struct msv_kt_log *log, struct msv_store *store, int64_t now_ms,
                        struct msv_kt_head *out)
{
    msv_err err;

    pthread_mutex_lock(&log->lock);
    err = head_locked(log, store, now_ms);
    if (err == MSV_OK)
        *out = log->head;
    pthread_mutex_unlock(&log->lock);
    return err;
}

/* ---- answers ---------------------------------------------------------------------------- */

struct msv_kt_answer {
    void **p;
    size_t n, cap;
};

/* Hands p (from malloc) to the answer, which frees it; on failure frees it now, NULL. */
static void *adopt(struct msv_kt_answer *a, void *p)
{
    if (p != NULL && a->n == a->cap) {
        size_t cap = a->cap ? a->cap * 2 : 16;
        void **np = realloc(a->p, cap * sizeof(*np));

        if (np == NULL) {
            free(p);
            return NULL;
        }
        a->p = np;
        a->cap = cap;
    }
    if (p != NULL)
        a->p[a->n++] = p;
    return p;
}

/* Zeroed memory that lives as long as the answer. */
static void *keep(struct msv_kt_answer *a, size_t size)
{
    return adopt(a, calloc(1, size ? size : 1));
}

void msv_kt_answer_free(struct msv_kt_answer *a)
{
    if (a == NULL)
        return;
    for (size_t i = 0; i < a->n; i++)
        free(a->p[i]);
    free(a->p);
    free(a);
}

/* Proof hashes as protobuf bytes fields, kept in a. */
static msv_err proof_fields(struct msv_kt_answer *a, uint8_t (*hashes)[MSV_KT_HASH_LEN], size_t n,
                            ProtobufCBinaryData **out, size_t *n_out)
{
    uint8_t(*copy)[MSV_KT_HASH_LEN] = keep(a, n * MSV_KT_HASH_LEN);
    ProtobufCBinaryData *f = keep(a, n * sizeof(*f));

    if (copy == NULL || f == NULL)
        return MSV_ERR_NOMEM;
    memcpy(copy, hashes, n * MSV_KT_HASH_LEN);
    for (size_t i = 0; i < n; i++) {
        f[i].data = copy[i];
        f[i].len = MSV_KT_HASH_LEN;
    }
    *out = f;
    *n_out = n;
    return MSV_OK;
}

/* The head, the log key and the consistency proof from known_size (when 0 < known_size < size). */
static msv_err head_fields(struct msv_kt_log *log, struct msv_kt_answer *a, uint64_t known_size,
                           Msv__Wire__TreeHead **head, ProtobufCBinaryData *key,
                           ProtobufCBinaryData **consistency, size_t *n_consistency)
{
    static _Thread_local uint8_t proof[MSV_KT_PROOF_MAX][MSV_KT_HASH_LEN];
    Msv__Wire__TreeHead *h = keep(a, sizeof(*h));
    uint8_t *copy = keep(a, MSV_KT_HASH_LEN + MSV_KT_SIG_LEN + MSV_KT_KEY_LEN);
    size_t n = 0;
    msv_err err;

    if (h == NULL || copy == NULL)
        return MSV_ERR_NOMEM;
    msv__wire__tree_head__init(h);
    memcpy(copy, log->head.root, MSV_KT_HASH_LEN);
    memcpy(copy + MSV_KT_HASH_LEN, log->head.signature, MSV_KT_SIG_LEN);
    memcpy(copy + MSV_KT_HASH_LEN + MSV_KT_SIG_LEN, log->public_key, MSV_KT_KEY_LEN);
    h->size = log->head.size;
    h->time_ms = (uint64_t)log->head.time_ms;
    h->root = (ProtobufCBinaryData){MSV_KT_HASH_LEN, copy};
    h->signature = (ProtobufCBinaryData){MSV_KT_SIG_LEN, copy + MSV_KT_HASH_LEN};
    *key = (ProtobufCBinaryData){MSV_KT_KEY_LEN, copy + MSV_KT_HASH_LEN + MSV_KT_SIG_LEN};
    if (log->keydir.epoch_size == log->head.size) {
        uint8_t *epoch = keep(a, MSV_PT_HASH_LEN + MSV_PT_SIG_LEN);

        if (epoch == NULL)
            return MSV_ERR_NOMEM;
        memcpy(epoch, log->keydir.epoch_root, MSV_PT_HASH_LEN);
        memcpy(epoch + MSV_PT_HASH_LEN, log->keydir.epoch_signature, MSV_PT_SIG_LEN);
        h->epoch_root = (ProtobufCBinaryData){MSV_PT_HASH_LEN, epoch};
        h->epoch_signature = (ProtobufCBinaryData){MSV_PT_SIG_LEN, epoch + MSV_PT_HASH_LEN};
    }
    *head = h;
    *n_consistency = 0;
    if (known_size == 0 || known_size >= log->head.size)
        return MSV_OK;
    err = msv_merkle_consistency(log->tree, known_size, log->head.size, proof, &n);
    return err == MSV_OK ? proof_fields(a, proof, n, consistency, n_consistency) : err;
}

/* A LogProof of leaf rec (kept by the caller in a) against the current head. */
static msv_err log_proof(struct msv_kt_log *log, struct msv_kt_answer *a,
                         const struct msv_kt_rec *rec, Msv__Wire__LogProof **out)
{
    static _Thread_local uint8_t path[MSV_KT_PROOF_MAX][MSV_KT_HASH_LEN];
    Msv__Wire__LogProof *p = keep(a, sizeof(*p));
    size_t n = 0;
    msv_err err;

    if (p == NULL)
        return MSV_ERR_NOMEM;
    msv__wire__log_proof__init(p);
    p->index = rec->index;
    p->leaf = rec->pub != NULL ? (ProtobufCBinaryData){rec->pub_len, rec->pub}
                               : (ProtobufCBinaryData){rec->leaf_len, rec->leaf};
    err = msv_merkle_inclusion(log->tree, rec->index, log->head.size, path, &n);
    if (err == MSV_OK)
        err = proof_fields(a, path, n, &p->path, &p->n_path);
    *out = p;
    return err;
}

/*
 * A reader without an account reads no handle: a device set or tombstone (it names its handle,
 * its devices and their keys) is given as its leaf hash, enough to check the tree; a rotation
 * entry names no one and is given whole (docs/transparency.md, "What a reader without an account
 * sees", says what a hash still lets a guesser test). An account reads its own handles' entries
 * from own_from on (each handle's newest tombstone: what came before it was a previous account's,
 * or this one's before it removed the handle).
 */
static msv_err hide_handle(struct msv_kt_answer *a, Msv__Wire__LogProof *p, enum msv_kt_hide hide,
                           char *const *own, const uint64_t *own_from, size_t n_own)
{
    static _Thread_local struct msv_kt_entry e;
    struct msv_kt_rotation r;
    struct msv_kt_v4_leaf v4;
    uint8_t *h;

    /* a rotation, the cut-over and a version-4 leaf name no one: given whole */
    if (msv_kt_rotation_leaf_parse(p->leaf.data, p->leaf.len, &r) == MSV_OK ||
        msv_kt_cutover_leaf_parse(p->leaf.data, p->leaf.len) == MSV_OK ||
        (hide != MSV_KT_HIDE_FAULT_V4 &&
         msv_kt_v4_leaf_parse(p->leaf.data, p->leaf.len, &v4) == MSV_OK))
        return MSV_OK;
    /* an account reads its own handles' entries, and nobody else's (docs/transparency.md, "A log
     * that names no handle") */
    if (hide == MSV_KT_HIDE_OTHERS && msv_kt_leaf_parse(p->leaf.data, p->leaf.len, &e) == MSV_OK) {
        for (size_t i = 0; i < n_own; i++)
            if (strcmp(own[i], e.handle) == 0 && p->index >= own_from[i])
                return MSV_OK;
    }
    if ((h = keep(a, MSV_KT_HASH_LEN)) == NULL)
        return MSV_ERR_NOMEM;
    msv_kt_leaf_hash(p->leaf.data, p->leaf.len, h);
    p->leaf_hash = (ProtobufCBinaryData){MSV_KT_HASH_LEN - (hide == MSV_KT_HIDE_FAULT_SHORT), h};
    if (hide != MSV_KT_HIDE_FAULT_BOTH)
        p->leaf = (ProtobufCBinaryData){0, NULL};
    return MSV_OK;
}

/*
 * The log's cut-over entry, when head holds one, with its proof (kept in a): a reader that
 * starts after it, or is given it as a leaf hash, knows where leaves stop naming handles.
 */
static msv_err cutover_field(struct msv_kt_log *log, struct msv_kt_answer *a,
                             Msv__Wire__LogProof **out)
{
    struct msv_kt_rec rec = {.index = (uint64_t)log->cutover, .leaf_len = MSV_KT_CUTOVER_LEAF_LEN};

    if (log->cutover < 0 || rec.index >= log->head.size)
        return MSV_OK;
    if (log->cutover_fault && rec.index + 1 < log->head.size)
        rec.index++; /* tests only: a dishonest server names another entry as its cut-over */
    if ((rec.leaf = keep(a, MSV_KT_CUTOVER_LEAF_LEN)) == NULL)
        return MSV_ERR_NOMEM;
    memcpy(rec.leaf, log->cutover_leaf, MSV_KT_CUTOVER_LEAF_LEN);
    return log_proof(log, a, &rec, out);
}

/* The log's rotation entries that head holds, each with its proof (kept in a). */
static msv_err rotation_fields(struct msv_kt_log *log, struct msv_kt_answer *a,
                               Msv__Wire__LogProof ***out, size_t *n_out)
{
    Msv__Wire__LogProof **proofs = keep(a, log->n_rotations * sizeof(*proofs));
    size_t n = 0;
    msv_err err = proofs != NULL ? MSV_OK : MSV_ERR_NOMEM;

    for (size_t i = 0; err == MSV_OK && i < log->n_rotations; i++) {
        struct msv_kt_rec rec = {.index = log->rotations[i].index,
                                 .leaf_len = MSV_KT_ROTATION_LEAF_LEN};

        if (rec.index >= log->head.size)
            break;
        rec.leaf = keep(a, MSV_KT_ROTATION_LEAF_LEN);
        if (rec.leaf == NULL)
            return MSV_ERR_NOMEM;
        memcpy(rec.leaf, log->rotations[i].leaf, MSV_KT_ROTATION_LEAF_LEN);
        err = log_proof(log, a, &rec, &proofs[n++]);
    }
    *out = proofs;
    *n_out = err == MSV_OK ? n : 0;
    return err;
}

/* A leaf a store read gave (MSV_ERR_NOT_FOUND: none, leaf NULL), kept in a. */
static msv_err kept_leaf(struct msv_kt_answer *a, msv_err err, struct msv_kt_rec *rec)
{
    if (err == MSV_ERR_NOT_FOUND)
        return MSV_OK;
    if (err == MSV_OK && adopt(a, rec->leaf) == NULL) {
        rec->leaf = NULL; /* freed by adopt */
        free(rec->pub);
        rec->pub = NULL;
        err = MSV_ERR_NOMEM;
    }
    if (err == MSV_OK && rec->pub != NULL && adopt(a, rec->pub) == NULL) {
        rec->pub = NULL;
        err = MSV_ERR_NOMEM;
    }
    return err;
}

/* Reads the newest leaf of each handle (kept in a; leaf NULL for a handle never logged). */
static msv_err latest_leaves(struct msv_store *store, struct msv_kt_answer *a,
                             const char *const *handles, size_t n, struct msv_kt_rec **out)
{
    struct msv_kt_rec *recs = keep(a, n * sizeof(*recs));
    msv_err err = recs != NULL ? MSV_OK : MSV_ERR_NOMEM;

    for (size_t i = 0; err == MSV_OK && i < n; i++) {
        err = kept_leaf(a, store->ops->kt_latest(store->impl, handles[i], &recs[i]), &recs[i]);
    }
    *out = recs;
    return err;
}

/* The newest tombstone of each handle whose newest leaf is a later one (kept in a; leaf NULL for
 * none): a contact's client tells an account registered again from the one it knew. */
static msv_err tombstones(struct msv_store *store, struct msv_kt_answer *a,
                          const char *const *handles, const struct msv_kt_rec *latest, size_t n,
                          struct msv_kt_rec **out)
{
    struct msv_kt_rec *recs = keep(a, n * sizeof(*recs));
    msv_err err = recs != NULL ? MSV_OK : MSV_ERR_NOMEM;

    for (size_t i = 0; err == MSV_OK && i < n; i++) {
        /* never logged, or the newest leaf is the tombstone itself (version 3) */
        if (latest[i].leaf == NULL || latest[i].leaf_len < 1 || latest[i].leaf[0] == 3)
            continue;
        err = kept_leaf(a, store->ops->kt_tombstone_latest(store->impl, handles[i], &recs[i]),
                        &recs[i]);
    }
    *out = recs;
    return err;
}

/*
 * Beside a version-4 leaf (p, of rec: handle's), what opens it: the device set or tombstone it
 * commits to, its version, the opening and the VRF proof of its label (kept in a).
 */
static msv_err open_fields(struct msv_kt_log *log, struct msv_kt_answer *a, const char *handle,
                           const struct msv_kt_rec *rec, Msv__Wire__LogProof *p)
{
    uint8_t *kept;
    msv_err err;

    if (rec->pub == NULL)
        return MSV_OK;
    if ((kept = keep(a, MSV_PT_OPENING_LEN + MSV_VRF_PROOF_LEN)) == NULL)
        return MSV_ERR_NOMEM;
    err = msv_keydir_open_entry(&log->keydir, handle, rec->index, &p->version, kept,
                                kept + MSV_PT_OPENING_LEN);
    p->data = (ProtobufCBinaryData){rec->leaf_len, rec->leaf};
    p->opening = (ProtobufCBinaryData){MSV_PT_OPENING_LEN, kept};
    p->vrf_proof = (ProtobufCBinaryData){MSV_VRF_PROOF_LEN, kept + MSV_PT_OPENING_LEN};
    return err;
}

/*
 * Tests only ([testing] kt_v4_leaf_fault): a dishonest directory shows the log entry before
 * *out's in its place, opened as *out's.
 */
static msv_err show_entry_before(struct msv_kt_log *log, struct msv_store *store,
                                 struct msv_kt_answer *a, Msv__Wire__LogProof *opened)
{
    struct msv_kt_rec *before = NULL;
    Msv__Wire__LogProof *shown = NULL;
    size_t n = 0;
    msv_err err = store->ops->kt_read(store->impl, opened->index - 1, 1, &before, &n);

    if (err == MSV_OK && n == 1 && (err = fill_published(log, store, &before[0])) == MSV_OK &&
        (err = log_proof(log, a, &before[0], &shown)) == MSV_OK) {
        uint8_t *leaf = keep(a, shown->leaf.len);

        err = leaf != NULL ? MSV_OK : MSV_ERR_NOMEM;
        if (leaf != NULL) {
            memcpy(leaf, shown->leaf.data, shown->leaf.len);
            opened->index = shown->index;
            opened->leaf = (ProtobufCBinaryData){shown->leaf.len, leaf};
            opened->path = shown->path;
            opened->n_path = shown->n_path;
        }
    }
    msv_kt_recs_free(before, n);
    return err;
}

/*
 * rec's version-4 leaf when the log publishes one (kept in a): a record read before the tree took
 * its entry (the lookup's reads come before its head) has none yet, and its data is not what the
 * tree holds.
 */
static msv_err published_kept(struct msv_kt_log *log, struct msv_store *store,
                              struct msv_kt_answer *a, struct msv_kt_rec *rec)
{
    int had = rec->pub != NULL;
    msv_err err = fill_published(log, store, rec);

    if (err == MSV_OK && !had && rec->pub != NULL && adopt(a, rec->pub) == NULL) {
        rec->pub = NULL; /* freed by adopt */
        err = MSV_ERR_NOMEM;
    }
    return err;
}

/* The proof of handle's entry rec, opened when it is a version-4 leaf (kept in a). */
static msv_err entry_proof(struct msv_kt_log *log, struct msv_store *store, struct msv_kt_answer *a,
                           const char *handle, struct msv_kt_rec *rec, Msv__Wire__LogProof **out)
{
    msv_err err = published_kept(log, store, a, rec);

    if (err == MSV_OK)
        err = log_proof(log, a, rec, out);
    if (err == MSV_OK)
        err = open_fields(log, a, handle, rec, *out);
    if (err == MSV_OK && log->v4_leaf_fault && rec->pub != NULL && rec->index > 0)
        err = show_entry_before(log, store, a, *out);
    return err;
}

/* Fills hd with handle's devices from its leaf (borrowing from the leaf bytes). */
static msv_err devices_from_leaf(struct msv_kt_answer *a, const struct msv_kt_rec *rec,
                                 Msv__Wire__HandleDevices *hd)
{
    struct msv_kt_entry *e = keep(a, sizeof(*e));
    Msv__Wire__DeviceInfo *infos, **ptrs;

    if (e == NULL)
        return MSV_ERR_NOMEM;
    if (msv_kt_leaf_parse(rec->leaf, rec->leaf_len, e) != MSV_OK)
        return MSV_ERR_INVALID; /* the store holds what this server wrote */
    infos = keep(a, e->n_devices * sizeof(*infos));
    ptrs = keep(a, e->n_devices * sizeof(*ptrs));
    if (infos == NULL || ptrs == NULL)
        return MSV_ERR_NOMEM;
    for (size_t i = 0; i < e->n_devices; i++) {
        msv__wire__device_info__init(&infos[i]);
        infos[i].device_id = e->devices[i].device_id;
        infos[i].suite = e->devices[i].suite;
        infos[i].identity =
            (ProtobufCBinaryData){e->devices[i].identity_len, (uint8_t *)e->devices[i].identity};
        ptrs[i] = &infos[i];
    }
    hd->devices = ptrs;
    hd->n_devices = e->n_devices;
    return MSV_OK;
}

/* The key directory's proof of kind that rec (leaf NULL: none) is handle's newest version
 * (kept in a). */
static msv_err version_proof(struct msv_kt_log *log, struct msv_kt_answer *a,
                             enum msv_pt_proof_kind kind, const char *handle,
                             const struct msv_kt_rec *rec, ProtobufCBinaryData *out)
{
    uint8_t *proof = NULL;
    size_t len = 0;
    msv_err err = msv_keydir_prove(&log->keydir, kind, handle,
                                   rec->leaf != NULL ? (int64_t)rec->index : -1, &proof, &len);

    if (err != MSV_OK)
        return err;
    if (adopt(a, proof) == NULL)
        return MSV_ERR_NOMEM;
    *out = (ProtobufCBinaryData){len, proof};
    return MSV_OK;
}

/*
 * Where the versions of handle given to its owner start: at the index asked (1 asks for the whole
 * history: 0 names none, so index 0 is read with it), but never before
 * the handle's newest tombstone, which is given (docs/transparency.md, "The owner's versions"):
 * what was logged before it was a previous account's (a handle deleted and registered again),
 * or this account's before it removed the handle, and its device sets are not the asker's to
 * read.
 */
static msv_err versions_start(struct msv_store *store, const char *handle, uint64_t asked,
                              uint64_t *from)
{
    struct msv_kt_rec t = {0};
    msv_err err = store->ops->kt_tombstone_latest(store->impl, handle, &t);

    *from = asked == 1 ? 0 : asked;
    if (err == MSV_OK && t.index >= *from)
        *from = t.index;
    free(t.leaf);
    free(t.pub);
    return err == MSV_ERR_NOT_FOUND ? MSV_OK : err;
}

msv_err msv_kt_owned_from(struct msv_store *store, const char *handle, uint64_t *index)
{
    return versions_start(store, handle, 0, index);
}

/* The versions of one handle an answer holds, at most. */
static size_t handle_max(const struct msv_kt_owner_ask *ask)
{
    return ask->handle_max != 0 ? ask->handle_max : MSV_KT_VERSIONS_MAX;
}

/* 1 if the device set at rec lists a device of account_id (a device removed since counts not). */
static int lists_account(struct msv_store *store, const struct msv_kt_rec *rec, uint64_t account_id)
{
    static _Thread_local struct msv_kt_entry e;
    int found = 0;

    if (msv_kt_leaf_parse(rec->leaf, rec->leaf_len, &e) != MSV_OK || e.deleted)
        return 0;
    for (size_t i = 0; !found && i < e.n_devices; i++) {
        struct msv_device_rec d = {0};

        found = store->ops->device_get(store->impl, e.devices[i].device_id, &d) == MSV_OK &&
                d.account_id == account_id;
        msv_device_rec_clear(&d);
    }
    return found;
}

/*
 * The versions of handle from asked on, for its owner's monitor, when the handle's newest tombstone
 * (at newest, past asked) would otherwise start them: if the version before asked (the one the
 * monitor checked last) lists a device of the asking account, the handle was the account's then,
 * and so were its versions after it up to the next tombstone, the account's own removal of it:
 * they are given (*recs, *n; *more: the answer stops at that tombstone, older than newest, and
 * more follow). Else *recs stays NULL, and the versions start at newest. A device's monitor that
 * had not read them when its account removed the handle and added it again so still judges them.
 */
static msv_err own_versions_before(struct msv_store *store, const char *handle, uint64_t asked,
                                   uint64_t newest, uint64_t account_id, size_t max,
                                   struct msv_kt_rec **recs, size_t *n, uint8_t *more)
{
    static _Thread_local struct msv_kt_entry e;
    struct msv_kt_rec *r = NULL;
    size_t got = 0, keep = 0;
    msv_err err = store->ops->kt_handle_read(store->impl, handle, asked - 1, max + 2, &r, &got);

    if (err != MSV_OK || got < 2 || r[0].index != asked - 1 ||
        !lists_account(store, &r[0], account_id)) {
        msv_kt_recs_free(r, got);
        return err;
    }
    /* from asked, up to the first tombstone: past one older than newest, another account may have
     * held the handle (the next answer asks from after it, and this is decided again) */
    while (++keep < got) {
        if (msv_kt_leaf_parse(r[keep].leaf, r[keep].leaf_len, &e) == MSV_OK && e.deleted &&
            r[keep].index < newest) {
            *more = 1;
            keep++;
            break;
        }
    }
    free(r[0].leaf);
    free(r[0].pub);
    for (size_t i = keep; i < got; i++) {
        free(r[i].leaf);
        free(r[i].pub);
    }
    memmove(&r[0], &r[1], (keep - 1) * sizeof(*r));
    *recs = r;
    *n = keep - 1;
    return MSV_OK;
}

/* The leaves of the handles whose versions the owner asked for (kept in a; per handle up to one
 * past MSV_KT_VERSIONS_MAX, so that the answer can say more follow). */
static msv_err owner_leaves(struct msv_store *store, struct msv_kt_answer *a,
                            const char *const *handles, size_t n,
                            const struct msv_kt_owner_ask *ask, struct msv_kt_rec ***out,
                            size_t **counts, uint8_t **more)
{
    struct msv_kt_rec **recs = keep(a, n * sizeof(*recs));
    size_t *ns = keep(a, n * sizeof(*ns));
    uint8_t *mores = keep(a, n);
    msv_err err = recs != NULL && ns != NULL && mores != NULL ? MSV_OK : MSV_ERR_NOMEM;

    for (size_t i = 0; err == MSV_OK && ask != NULL && ask->versions_from != NULL && i < n; i++) {
        uint64_t from;

        if (ask->versions_from[i] == 0)
            continue;
        err = versions_start(store, handles[i], ask->versions_from[i], &from);
        if (err == MSV_OK && ask->versions_from[i] > 1 && from > ask->versions_from[i] &&
            ask->account_id != 0)
            err =
                own_versions_before(store, handles[i], ask->versions_from[i], from, ask->account_id,
                                    handle_max(ask), &recs[i], &ns[i], &mores[i]);
        if (err == MSV_OK && recs[i] == NULL)
            err = store->ops->kt_handle_read(store->impl, handles[i], from, handle_max(ask) + 1,
                                             &recs[i], &ns[i]);
        if (err != MSV_OK)
            break;
        /* the leaves go with the answer (kept_leaf frees what it cannot keep) */
        for (size_t k = 0; err == MSV_OK && k < ns[i]; k++) {
            if ((err = kept_leaf(a, MSV_OK, &recs[i][k])) != MSV_OK) {
                for (size_t j = k + 1; j < ns[i]; j++) {
                    free(recs[i][j].leaf);
                    free(recs[i][j].pub);
                }
            }
        }
        if (adopt(a, recs[i]) == NULL || err != MSV_OK) {
            recs[i] = NULL;
            ns[i] = 0;
            err = MSV_ERR_NOMEM;
        }
    }
    *out = recs;
    *counts = ns;
    *more = mores;
    return err;
}

/*
 * The versions of one handle its owner asked for, from its leaves recs (read before the head
 * was made, so it holds them): each with its entry's proof and its presence proof, at most
 * max_versions, and past the first at most max_bytes (*bytes: the bytes given).
 */
static msv_err owner_versions(struct msv_kt_log *log, struct msv_store *store,
                              struct msv_kt_answer *a, const char *handle, struct msv_kt_rec *recs,
                              size_t n, size_t max_versions, size_t max_bytes, size_t *bytes,
                              Msv__Wire__HandleDevices *hd)
{
    Msv__Wire__HandleVersion *vs = keep(a, n * sizeof(*vs)), **ptrs = keep(a, n * sizeof(*ptrs));
    size_t given = 0;
    msv_err err = vs != NULL && ptrs != NULL ? MSV_OK : MSV_ERR_NOMEM;

    for (size_t i = 0; err == MSV_OK && i < n; i++) {
        uint8_t *proof = NULL;
        size_t len = 0, size;

        if (given == max_versions || recs[i].index >= log->keydir.n_versions ||
            log->keydir.versions[recs[i].index] == 0)
            break;
        msv__wire__handle_version__init(&vs[given]);
        vs[given].version = log->keydir.versions[recs[i].index];
        err = published_kept(log, store, a, &recs[i]);
        if (err == MSV_OK)
            err = log_proof(log, a, &recs[i], &vs[given].entry);
        if (err == MSV_OK) /* a version-4 leaf: what opens it beside it */
            err = open_fields(log, a, handle, &recs[i], vs[given].entry);
        if (err == MSV_OK)
            err = msv_keydir_prove(&log->keydir, MSV_PT_PRESENCE, handle, (int64_t)recs[i].index,
                                   &proof, &len);
        if (err == MSV_OK && adopt(a, proof) == NULL)
            err = MSV_ERR_NOMEM;
        if (err != MSV_OK)
            break;
        vs[given].proof = (ProtobufCBinaryData){len, proof};
        /* the version, its field tag and length (at most 1 + 2 + 4 bytes) */
        size = msv__wire__handle_version__get_packed_size(&vs[given]) + 7;
        if (given > 0 && *bytes + size > max_bytes)
            break;
        *bytes += size;
        ptrs[given] = &vs[given];
        given++;
    }
    hd->versions = ptrs;
    hd->n_versions = given;
    hd->versions_more = given < n;
    return err;
}

/*
 * The versions the owner asked for, of each handle in turn: each gets an equal share of what
 * ask allows that the handles before it left, and its first version whatever its size, so that
 * every handle with versions left gets one (the monitor then moves on in log order).
 */
static msv_err all_owner_versions(struct msv_kt_log *log, struct msv_store *store,
                                  struct msv_kt_answer *a, const char *const *handles, size_t n,
                                  struct msv_kt_rec **owned, const size_t *n_owned,
                                  const uint8_t *more, struct msv_kt_owner_ask *ask,
                                  Msv__Wire__HandleDevices *hds)
{
    size_t left = 0, bytes = 0;
    msv_err err = MSV_OK;

    for (size_t i = 0; i < n; i++)
        left += ask->versions_from[i] != 0;
    for (size_t i = 0; err == MSV_OK && i < n; i++) {
        size_t versions, used = 0;

        if (ask->versions_from[i] == 0)
            continue;
        versions = (ask->versions_max - ask->versions_given) / left;
        if (versions == 0 && ask->versions_given < ask->versions_max)
            versions = 1;
        if (versions > handle_max(ask))
            versions = handle_max(ask);
        err = owner_versions(log, store, a, handles[i], owned[i], n_owned[i], versions,
                             bytes < ask->bytes_max ? (ask->bytes_max - bytes) / left : 0, &used,
                             &hds[i]);
        hds[i].versions_more |= more[i]; /* stopped at the account's own removal */
        bytes += used;
        ask->versions_given += hds[i].n_versions;
        left--;
    }
    return err;
}

/* Tests only ([testing] log_read_gate, lookup_gate): holds a read while the gate file exists (10 s
 * at most), so that a test can change the store's log meanwhile, as another node would. */
static void gate_wait(struct msv_kt_log *log, const char *gate)
{
    char reached[340];
    int fd;

    if (gate == NULL || gate[0] == '\0' || access(gate, F_OK) != 0)
        return;
    snprintf(reached, sizeof(reached), "%s.reached", gate);
    fd = open(reached, O_WRONLY | O_CREAT | O_CLOEXEC, 0600);
    if (fd >= 0)
        close(fd);
    for (int i = 0; i < 1000 && access(gate, F_OK) == 0; i++)
        nanosleep(&(struct timespec){0, 10 * 1000 * 1000}, NULL);
    msv_kt_log_grown(log); /* what the test appended is read with the head */
}

msv_err msv_kt_lookup(struct msv_kt_log *log, struct msv_store *store, int64_t now_ms,
                      const char *const *handles, size_t n, struct msv_kt_owner_ask *ask,
                      uint64_t known_size, Msv__Wire__LookupResponse *resp,
                      struct msv_kt_answer **owner)
{
    struct msv_kt_answer *a = calloc(1, sizeof(*a));
    Msv__Wire__HandleDevices *hds, **ptrs;
    struct msv_kt_rec *recs = NULL, *tombs = NULL, **owned = NULL;
    const uint8_t *history = ask != NULL ? ask->history : NULL;
    size_t *n_owned = NULL;
    uint8_t *owned_more = NULL;
    msv_err err;

    *owner = a;
    if (a == NULL)
        return MSV_ERR_NOMEM;
    hds = keep(a, n * sizeof(*hds));
    ptrs = keep(a, n * sizeof(*ptrs));
    if (hds == NULL || ptrs == NULL)
        return MSV_ERR_NOMEM;
    if (ask != NULL && ask->account_id != 0 && (history != NULL || ask->versions_from != NULL))
        gate_wait(log, log->lookup_gate);
    /* the leaves first: the head made after them includes them */
    err = latest_leaves(store, a, handles, n, &recs);
    if (err == MSV_OK)
        err = tombstones(store, a, handles, recs, n, &tombs);
    if (err == MSV_OK)
        err = owner_leaves(store, a, handles, n, ask, &owned, &n_owned, &owned_more);
    if (err != MSV_OK)
        return err;
    pthread_mutex_lock(&log->lock);
    /* a leaf committed before the change was announced (msv_kt_log_grown) is read now */
    for (size_t i = 0; i < n; i++) {
        if (recs[i].leaf != NULL && recs[i].index >= msv_merkle_size(log->tree))
            atomic_store(&log->grown, 1);
        if (n_owned[i] > 0 && owned[i][n_owned[i] - 1].index >= msv_merkle_size(log->tree))
            atomic_store(&log->grown, 1);
    }
    err = head_locked(log, store, now_ms);
    for (size_t i = 0; err == MSV_OK && i < n; i++) {
        msv__wire__handle_devices__init(&hds[i]);
        hds[i].handle = (ProtobufCBinaryData){strlen(handles[i]), (uint8_t *)handles[i]};
        ptrs[i] = &hds[i];
        if (recs[i].leaf == NULL)
            continue;
        err = devices_from_leaf(a, &recs[i], &hds[i]);
        if (err == MSV_OK)
            err = entry_proof(log, store, a, handles[i], &recs[i], &hds[i].proof);
        if (err == MSV_OK && tombs[i].leaf != NULL)
            err = entry_proof(log, store, a, handles[i], &tombs[i], &hds[i].tombstone);
    }
    for (size_t i = 0; err == MSV_OK && i < n; i++)
        err = version_proof(log, a, MSV_PT_LOOKUP, handles[i], &recs[i], &hds[i].version_proof);
    for (size_t i = 0; err == MSV_OK && history != NULL && i < n; i++) {
        if (history[i])
            err =
                version_proof(log, a, MSV_PT_HISTORY, handles[i], &recs[i], &hds[i].history_proof);
    }
    if (err == MSV_OK && ask != NULL && ask->versions_from != NULL)
        err = all_owner_versions(log, store, a, handles, n, owned, n_owned, owned_more, ask, hds);
    if (err == MSV_OK) {
        uint8_t *key = keep(a, MSV_VRF_PUBLIC_KEY_LEN);

        err = key != NULL ? MSV_OK : MSV_ERR_NOMEM;
        if (key != NULL)
            memcpy(key, log->keydir.vrf_key, MSV_VRF_PUBLIC_KEY_LEN);
        resp->vrf_key = (ProtobufCBinaryData){MSV_VRF_PUBLIC_KEY_LEN, key};
    }
    if (err == MSV_OK)
        err = head_fields(log, a, known_size, &resp->head, &resp->log_key, &resp->consistency,
                          &resp->n_consistency);
    if (err == MSV_OK)
        err = rotation_fields(log, a, &resp->rotations, &resp->n_rotations);
    pthread_mutex_unlock(&log->lock);
    resp->results = ptrs;
    resp->n_results = n;
    return err;
}

/* The account's handles, each with where its entries are the account's: its newest tombstone. */
static msv_err own_handles(struct msv_store *store, struct msv_kt_answer *a, uint64_t account_id,
                           char ***own, uint64_t **own_from, size_t *n_own)
{
    msv_err err = store->ops->handles_of_account(store->impl, account_id, own, n_own);

    /* the strings, then the list, go with the answer (adopt frees what it cannot keep) */
    for (size_t i = 0; err == MSV_OK && i < *n_own; i++) {
        if (adopt(a, (*own)[i]) == NULL) {
            for (size_t k = i + 1; k < *n_own; k++)
                free((*own)[k]);
            err = MSV_ERR_NOMEM;
        }
    }
    if (*own != NULL && (err != MSV_OK || adopt(a, *own) == NULL)) {
        if (err == MSV_OK)
            err = MSV_ERR_NOMEM; /* the list freed by adopt */
        else
            free(*own);
        *own = NULL;
        *n_own = 0;
    }
    if (err == MSV_OK && (*own_from = keep(a, (*n_own + 1) * sizeof(**own_from))) == NULL)
        err = MSV_ERR_NOMEM;
    for (size_t i = 0; err == MSV_OK && i < *n_own; i++)
        err = versions_start(store, (*own)[i], 0, &(*own_from)[i]);
    return err;
}

/*
 * The account's handles and their newest tombstones read again once the entries read are fixed
 * (their head made under the log's lock, and released): the same, or MSV_ERR_AGAIN. A handle
 * removed meanwhile, perhaps taken by another account whose first entries the read holds, is no
 * longer listed, or has a newer tombstone; the handles are read before the tombstones, so a handle
 * taken back between the two reads shows the tombstone of its taking away.
 */
static msv_err own_handles_same(struct msv_store *store, uint64_t account_id, char *const *own,
                                const uint64_t *own_from, size_t n_own)
{
    char **now = NULL;
    size_t n_now = 0;
    msv_err err = store->ops->handles_of_account(store->impl, account_id, &now, &n_now);

    if (err == MSV_OK && n_now != n_own)
        err = MSV_ERR_AGAIN;
    for (size_t i = 0; err == MSV_OK && i < n_own; i++)
        if (strcmp(now[i], own[i]) != 0)
            err = MSV_ERR_AGAIN;
    for (size_t i = 0; err == MSV_OK && i < n_own; i++) {
        uint64_t from = 0;

        err = versions_start(store, own[i], 0, &from);
        if (err == MSV_OK && from != own_from[i])
            err = MSV_ERR_AGAIN;
    }
    for (size_t i = 0; now != NULL && i < n_now; i++)
        free(now[i]);
    free(now);
    return err;
}

msv_err msv_kt_read(struct msv_kt_log *log, struct msv_store *store, int64_t now_ms,
                    const Msv__Wire__LogRead *q, enum msv_kt_hide hide, uint64_t account_id,
                    size_t max_bytes, Msv__Wire__LogEntries *resp, struct msv_kt_answer **owner,
                    uint64_t *proofs_from)
{
    struct msv_kt_answer *a = calloc(1, sizeof(*a));
    struct msv_kt_rec *recs = NULL;
    Msv__Wire__LogProof **entries;
    uint64_t *own_from = NULL;
    char **own = NULL;
    size_t n = 0, kept = 0, bytes = 0, n_own = 0;
    size_t count = q->count < MSV_KT_READ_MAX ? q->count : MSV_KT_READ_MAX;
    msv_err err;

    *owner = a;
    if (a == NULL || (entries = keep(a, count * sizeof(*entries))) == NULL)
        return MSV_ERR_NOMEM;
    /* an account reads its own handles' entries whole, from each one's newest tombstone on */
    if (hide == MSV_KT_HIDE_OTHERS &&
        (err = own_handles(store, a, account_id, &own, &own_from, &n_own)) != MSV_OK)
        return err;
    gate_wait(log, log->read_gate);
    pthread_mutex_lock(&log->lock);
    err = head_locked(log, store, now_ms);
    if (err == MSV_OK && q->start < log->head.size) {
        if (count > log->head.size - q->start)
            count = (size_t)(log->head.size - q->start);
        err = store->ops->kt_read(store->impl, q->start, count, &recs, &n);
    }
    for (size_t i = 0; err == MSV_OK && i < n; i++) {
        /* the leaf goes to the answer, which frees it */
        uint8_t *leaf = adopt(a, recs[i].leaf), *pub;
        size_t size;

        recs[i].leaf = NULL;
        if (leaf == NULL) {
            err = MSV_ERR_NOMEM;
            break;
        }
        recs[i].leaf = leaf;
        /* after the cut-over the entry is its version-4 leaf (made again if the store lacks it) */
        err = fill_published(log, store, &recs[i]);
        pub = recs[i].pub;
        recs[i].pub = NULL;
        if (err == MSV_OK && pub != NULL && adopt(a, pub) == NULL)
            err = MSV_ERR_NOMEM;
        recs[i].pub = err == MSV_OK ? pub : NULL;
        if (err == MSV_OK)
            err = log_proof(log, a, &recs[i], &entries[i]);
        if (err == MSV_OK && hide != MSV_KT_SHOW_LEAVES)
            err = hide_handle(a, entries[i], hide, own, own_from, n_own);
        recs[i].leaf = NULL;
        recs[i].pub = NULL;
        /* the entry, its field tag and length (at most 1 + 4 bytes), and its step if asked */
        size = err == MSV_OK ? msv__wire__log_proof__get_packed_size(entries[i]) + 5 : 0;
        if (q->append_proof)
            size += msv_keydir_step_len(&log->keydir, recs[i].index);
        if (err != MSV_OK || (kept > 0 && bytes + size > max_bytes))
            break;
        bytes += size;
        kept++;
    }
    if (err == MSV_OK && q->append_proof) {
        uint8_t *steps = NULL;
        size_t len = 0;

        /* the steps of the entries given: gone (MSV_ERR_NOT_FOUND) once the oldest are dropped */
        err = msv_keydir_steps(&log->keydir, q->start, kept, &steps, &len);
        if (err == MSV_OK && adopt(a, steps) == NULL)
            err = MSV_ERR_NOMEM;
        if (err == MSV_OK)
            resp->append_proof = (ProtobufCBinaryData){len, steps};
    }
    if (err == MSV_OK)
        err = head_fields(log, a, q->known_size, &resp->head, &resp->log_key, &resp->consistency,
                          &resp->n_consistency);
    if (err == MSV_OK)
        err = rotation_fields(log, a, &resp->rotations, &resp->n_rotations);
    if (err == MSV_OK)
        err = cutover_field(log, a, &resp->cutover);
    *proofs_from = log->keydir.steps_from;
    pthread_mutex_unlock(&log->lock);
    msv_kt_recs_free(recs, n);
    if (err == MSV_OK && hide == MSV_KT_HIDE_OTHERS)
        err = own_handles_same(store, account_id, own, own_from, n_own);
    resp->entries = entries;
    resp->n_entries = err == MSV_OK ? kept : 0;
    return err;
}
