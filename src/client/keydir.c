/*
 * Checking the key directory's version proofs in lookup answers (transparency.h;
 * docs/transparency.md, "The prefix tree"): the device set a lookup shows is its handle's
 * newest version in the prefix tree whose root the log key signed for the answer's head.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <sodium.h>

#include "client/transparency.h"
#include "missive/ptree.h"
#include "util/endian.h"

#define VRF_PIN "kt_vrf_key"

/* The epoch root of the answer, signed by its log key for its head's size. */
static msv_err check_epoch(struct msv_client_db *db, const Msv__Wire__LookupResponse *r,
                           const struct msv_kt_head *head, int *pin, char *why, size_t len)
{
    const Msv__Wire__TreeHead *w = r->head;
    uint8_t *pinned = NULL, kept[MSV_LOG_EPOCH_LEN];
    size_t pinned_len = 0;
    msv_err err = msv_client_db_get(db, VRF_PIN, &pinned, &pinned_len);

    if (err != MSV_OK && err != MSV_ERR_NOT_FOUND)
        return err;
    *pin = err == MSV_ERR_NOT_FOUND;
    err = MSV_ERR_AUTH;
    if (w->epoch_root.len == 0 && w->epoch_signature.len == 0 && r->vrf_key.len == 0 && *pin)
        err = MSV_ERR_NOT_FOUND; /* a directory without a prefix tree, never seen with one */
    else if (w->epoch_root.len != MSV_PT_HASH_LEN || w->epoch_signature.len != MSV_PT_SIG_LEN ||
             r->vrf_key.len != MSV_VRF_PUBLIC_KEY_LEN)
        snprintf(why, len,
                 "the directory no longer proves that the device sets it shows are "
                 "the newest (its answer has no key directory root)");
    else if (msv_pt_epoch_verify(r->log_key.data, head->size, w->epoch_root.data,
                                 w->epoch_signature.data) != MSV_OK)
        snprintf(why, len, "the key directory's root is not signed by the transparency log key");
    else if (!*pin && (pinned_len != MSV_VRF_PUBLIC_KEY_LEN ||
                       sodium_memcmp(pinned, r->vrf_key.data, MSV_VRF_PUBLIC_KEY_LEN) != 0))
        snprintf(why, len,
                 "the key directory's VRF key is not the one this device pinned; its "
                 "answers cannot be trusted");
    else if (msv_kt_known_epoch(db, head->size, kept) == MSV_OK &&
             sodium_memcmp(kept, w->epoch_root.data, MSV_PT_HASH_LEN) != 0)
        snprintf(why, len,
                 "the directory signed two different key directory roots for one log size "
                 "(%llu entries): it shows you different directories",
                 (unsigned long long)head->size);
    else
        err = MSV_OK;
    free(pinned);
    return err;
}

/* The result's version proof: its devices' leaf is the handle's newest version (none: 0). */
static msv_err check_version(const Msv__Wire__LookupResponse *r, const Msv__Wire__HandleDevices *hd,
                             char *why, size_t len)
{
    char handle[256];
    ProtobufCBinaryData data =
        hd->proof != NULL ? msv_kt_proof_entry(hd->proof) : (ProtobufCBinaryData){0, NULL};
    const uint8_t *leaf = data.data;
    size_t leaf_len = data.len;
    uint32_t version = 0;

    if (hd->handle.len == 0 || hd->handle.len >= sizeof(handle) ||
        memchr(hd->handle.data, 0, hd->handle.len) != NULL)
        return MSV_ERR_AUTH; /* check_result refuses it first */
    memcpy(handle, hd->handle.data, hd->handle.len);
    handle[hd->handle.len] = '\0';
    msv_err err = msv_pt_verify_versions(r->head->epoch_root.data, r->vrf_key.data, MSV_PT_LOOKUP,
                                         handle, leaf, leaf_len, hd->version_proof.data,
                                         hd->version_proof.len, &version);

    if (err == MSV_ERR_UNSUPPORTED) {
        snprintf(why, len,
                 "the directory proves the devices of %s in a format this version of Missive "
                 "does not read (another release's): upgrade Missive or the server; nothing is "
                 "sent until the proof can be checked",
                 handle);
        return MSV_ERR_UNSUPPORTED;
    }
    if (err != MSV_OK || (version > 0) != (hd->proof != NULL) ||
        (hd->proof != NULL && data.data != hd->proof->leaf.data && version != hd->proof->version)) {
        snprintf(why, len,
                 "the directory does not prove that the device set of %s it shows is the "
                 "newest one in its key directory: it may be showing an older one",
                 handle);
        return MSV_ERR_AUTH;
    }
    return MSV_OK;
}

msv_err msv_kt_check_epoch(struct msv_client_db *db, const Msv__Wire__LookupResponse *r,
                           const struct msv_kt_head *head, int *pin, int *keydir, char *why,
                           size_t len)
{
    msv_err err = check_epoch(db, r, head, pin, why, len);

    *keydir = err == MSV_OK;
    if (err == MSV_ERR_NOT_FOUND) {
        *pin = 0;
        return MSV_OK;
    }
    return err;
}

msv_err msv_kt_check_versions_at(const Msv__Wire__LookupResponse *r, size_t *bad, char *why,
                                 size_t len)
{
    msv_err err = MSV_OK;

    for (size_t i = 0; err == MSV_OK && i < r->n_results; i++) {
        err = check_version(r, r->results[i], why, len);
        if (err != MSV_OK)
            *bad = i;
    }
    return err;
}

msv_err msv_kt_check_versions(const Msv__Wire__LookupResponse *r, char *why, size_t len)
{
    size_t bad = 0;

    return msv_kt_check_versions_at(r, &bad, why, len);
}

msv_err msv_kt_pin_vrf_key(struct msv_client_db *db, const Msv__Wire__LookupResponse *r)
{
    return msv_client_db_set(db, VRF_PIN, r->vrf_key.data, MSV_VRF_PUBLIC_KEY_LEN);
}

#define EPOCH_KEPT "kt_epoch"

msv_err msv_kt_keep_epoch(struct msv_client_db *db, const Msv__Wire__LookupResponse *r,
                          const struct msv_kt_head *head)
{
    uint8_t v[8 + MSV_LOG_EPOCH_LEN];
    msv_err err;

    if (r->head->epoch_root.len != MSV_PT_HASH_LEN ||
        r->head->epoch_signature.len != MSV_PT_SIG_LEN)
        return MSV_OK; /* a directory without a prefix tree (msv_kt_check_epoch let it) */
    msv_put_u64be(v, head->size);
    memcpy(v + 8, r->head->epoch_root.data, MSV_PT_HASH_LEN);
    memcpy(v + 8 + MSV_PT_HASH_LEN, r->head->epoch_signature.data, MSV_PT_SIG_LEN);
    /* kept for the lineage first: a crash between the two loses no root unchecked */
    err = msv_kt_seen_add(db, head->size, r->head->epoch_root.data);
    return err == MSV_OK ? msv_client_db_set(db, EPOCH_KEPT, v, sizeof(v)) : err;
}

msv_err msv_kt_kept_epoch(struct msv_client_db *db, uint64_t *size,
                          uint8_t epoch[MSV_LOG_EPOCH_LEN])
{
    uint8_t *v = NULL;
    size_t len = 0;
    msv_err err = msv_client_db_get(db, EPOCH_KEPT, &v, &len);

    if (err == MSV_OK && len != 8 + MSV_LOG_EPOCH_LEN)
        err = MSV_ERR_PARSE;
    if (err == MSV_OK) {
        *size = msv_get_u64be(v);
        memcpy(epoch, v + 8, MSV_LOG_EPOCH_LEN);
    }
    free(v);
    return err;
}

msv_err msv_kt_known_epoch(struct msv_client_db *db, uint64_t size,
                           uint8_t epoch[MSV_LOG_EPOCH_LEN])
{
    uint8_t got[MSV_LOG_EPOCH_LEN];
    uint64_t kept_size = 0;
    msv_err err = msv_kt_kept_epoch(db, &kept_size, got);

    if (err == MSV_OK && kept_size != size)
        err = MSV_ERR_NOT_FOUND;
    if (err == MSV_OK)
        memcpy(epoch, got, MSV_LOG_EPOCH_LEN);
    return err;
}

msv_err msv_kt_check_gossip_epoch(struct msv_client_db *db, uint64_t size,
                                  const uint8_t epoch[MSV_LOG_EPOCH_LEN], int *fits)
{
    uint8_t mine[MSV_LOG_EPOCH_LEN], *key = NULL;
    size_t key_len = 0;
    msv_err err = msv_kt_known_epoch(db, size, mine);

    *fits = 1;
    if (err == MSV_OK)
        err = msv_client_db_get(db, "kt_log_key", &key, &key_len);
    /* a root not signed by the pinned log key is no evidence */
    if (err == MSV_OK && key_len == 32 &&
        msv_pt_epoch_verify(key, size, epoch, epoch + MSV_PT_HASH_LEN) == MSV_OK)
        *fits = sodium_memcmp(mine, epoch, MSV_PT_HASH_LEN) == 0;
    free(key);
    return err == MSV_ERR_NOT_FOUND ? MSV_OK : err;
}
