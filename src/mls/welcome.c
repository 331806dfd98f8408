/*
 * Joining a group from a Welcome (RFC 9420 12.4.3.1):
 *
 *   Welcome = cipher_suite || EncryptedGroupSecrets secrets<V> || encrypted_group_info<V>
 *   EncryptedGroupSecrets = new_member<V> (KeyPackageRef) || kem_output<V> || ciphertext<V>
 *   GroupSecrets = joiner_secret<V> || optional<path_secret<V>> || PreSharedKeyID psks<V>
 *   GroupInfo = GroupContext || extensions<V> || confirmation_tag<V> || signer (u32)
 *               || signature<V>
 *
 * The new member's entry is found by the reference of its KeyPackage (5.2),
 * its GroupSecrets decrypted with EncryptWithLabel's inverse under the
 * label "Welcome" and the encrypted GroupInfo as context, the GroupInfo with
 * the key and nonce of the welcome secret. The GroupInfo must be signed by
 * the signer and carry the confirmation tag of the epoch it describes.
 */
#include <stdlib.h>
#include <string.h>

#include <sodium.h>

#include "missive/util.h"
#include "mls/mls.h"

struct secrets_entry {
    const uint8_t *kem, *ct, *egi;
    size_t kem_len, ct_len, egi_len;
};

/* KeyPackageRef = RefHash("MLS 1.0 KeyPackage Reference", KeyPackage) of a KeyPackage MLSMessage */
static msv_err key_package_ref(const uint8_t *msg, size_t len, uint8_t ref[MSV_MLS_NH])
{
    static const char label[] = "MLS 1.0 KeyPackage Reference";
    struct msv_reader r;
    uint16_t version, wire_format;

    msv_reader_init(&r, msg, len);
    if (msv_reader_u16be(&r, &version) != MSV_OK || msv_reader_u16be(&r, &wire_format) != MSV_OK ||
        version != 1 || wire_format != 5 || msv_mls_skip_key_package(&r) != MSV_OK ||
        !msv_mls_reader_is_done(&r))
        return MSV_ERR_PARSE;
    return msv_mls_ref_hash((const uint8_t *)label, sizeof(label) - 1, msg + 4, len - 4, ref);
}

/* Reads the Welcome MLSMessage and finds the entry for ref; MSV_ERR_NOT_FOUND if none. */
static msv_err find_entry(enum msv_mls_suite suite, const uint8_t *msg, size_t len,
                          const uint8_t ref[MSV_MLS_NH], struct secrets_entry *e)
{
    struct msv_reader r, list;
    uint16_t version, wire_format, cs;
    int found = 0;

    msv_reader_init(&r, msg, len);
    if (msv_reader_u16be(&r, &version) != MSV_OK || msv_reader_u16be(&r, &wire_format) != MSV_OK ||
        msv_reader_u16be(&r, &cs) != MSV_OK || msv_mls_get_sub(&r, &list) != MSV_OK)
        return MSV_ERR_PARSE;
    if (version != 1 || wire_format != 3)
        return MSV_ERR_PARSE;
    if (cs != suite)
        return MSV_ERR_UNSUPPORTED;
    while (!msv_mls_reader_is_done(&list)) {
        const uint8_t *member, *kem, *ct;
        size_t member_len, kem_len, ct_len;

        if (msv_mls_get_vec(&list, &member, &member_len) != MSV_OK ||
            msv_mls_get_vec(&list, &kem, &kem_len) != MSV_OK ||
            msv_mls_get_vec(&list, &ct, &ct_len) != MSV_OK)
            return MSV_ERR_PARSE;
        if (!found && member_len == MSV_MLS_NH && memcmp(member, ref, MSV_MLS_NH) == 0) {
            found = 1;
            e->kem = kem;
            e->kem_len = kem_len;
            e->ct = ct;
            e->ct_len = ct_len;
        }
    }
    if (msv_mls_get_vec(&r, &e->egi, &e->egi_len) != MSV_OK || !msv_mls_reader_is_done(&r))
        return MSV_ERR_PARSE;
    return found ? MSV_OK : MSV_ERR_NOT_FOUND;
}

/* What the joiner was given to look PSKs up in, and what the Welcome named. */
struct psk_sources {
    const struct msv_mls_external_psk *ext;
    size_t n_ext;
    const struct msv_mls_resumption_psk *res;
    size_t n_res;
    struct msv_mls_welcome_resumption named;
};

/* A resumption PreSharedKeyID's key from src, its usage noted. */
static msv_err resumption_value(const struct msv_mls_psk_id *id, struct psk_sources *src,
                                const uint8_t **psk, size_t *psk_len)
{
    size_t k = 0;

    if (id->usage < MSV_MLS_USAGE_APPLICATION || id->usage > MSV_MLS_USAGE_BRANCH ||
        id->nonce_len != MSV_MLS_NH)
        return MSV_ERR_INVALID;
    while (k < src->n_res &&
           !(src->res[k].epoch == id->epoch && src->res[k].group_id_len == id->id_len &&
             memcmp(src->res[k].group_id, id->id, id->id_len) == 0))
        k++;
    if (k == src->n_res)
        return MSV_ERR_NOT_FOUND;
    if (id->usage != MSV_MLS_USAGE_APPLICATION) {
        /* 12.4.3.1: a reinit or branch PSK is the only one of its kind */
        if (src->named.usage != 0)
            return MSV_ERR_INVALID;
        src->named.usage = id->usage;
        src->named.index = k;
    }
    *psk = src->res[k].psk;
    *psk_len = MSV_MLS_NH;
    return MSV_OK;
}

/* The PSK secret of the GroupSecrets' psks: external ones looked up by id, resumption ones by
 * group and epoch. */
static msv_err group_secrets_psks(struct msv_reader *list, struct psk_sources *src,
                                  uint8_t psk_secret[MSV_MLS_NH])
{
    struct msv_mls_psk psks[MSV_MLS_WELCOME_PSKS_MAX];
    size_t n = 0;

    while (!msv_mls_reader_is_done(list)) {
        size_t start = list->off;
        struct msv_mls_psk_id id;
        const struct msv_mls_external_psk *ext;
        msv_err err;

        if (n == MSV_MLS_WELCOME_PSKS_MAX)
            return MSV_ERR_TOO_BIG;
        /* (inside the GroupSecrets' encryption: what does not read is a forgery) */
        err = msv_mls_psk_id_read(list, &id);
        if (err != MSV_OK)
            return err == MSV_ERR_PARSE ? MSV_ERR_AUTH : err;
        if (id.type == 2) {
            err = resumption_value(&id, src, &psks[n].psk, &psks[n].psk_len);
            if (err != MSV_OK)
                return err;
        } else {
            ext = msv_mls_external_psk_find(src->ext, src->n_ext, id.id, id.id_len);
            if (ext == NULL)
                return MSV_ERR_NOT_FOUND;
            psks[n].psk = ext->psk;
            psks[n].psk_len = ext->psk_len;
        }
        psks[n].id = list->data + start;
        psks[n].id_len = list->off - start;
        n++;
    }
    return msv_mls_psk_secret(psks, n, psk_secret);
}

/* Decrypts and reads the GroupSecrets: the joiner secret and the PSK secret. */
static msv_err open_group_secrets(enum msv_mls_suite suite, const uint8_t init_sk[32],
                                  const struct secrets_entry *e, struct psk_sources *src,
                                  uint8_t joiner[MSV_MLS_NH], uint8_t psk_secret[MSV_MLS_NH],
                                  uint8_t path_secret[MSV_MLS_NH], int *has_path_secret)
{
    struct msv_reader r, psks;
    const uint8_t *j, *path;
    uint8_t *pt = NULL;
    size_t pt_len = 0, j_len, path_len;
    int present = 0;
    msv_err err;

    err = msv_mls_decrypt_label(suite, init_sk, "Welcome", e->egi, e->egi_len, e->kem, e->kem_len,
                                e->ct, e->ct_len, &pt, &pt_len);
    if (err != MSV_OK)
        return MSV_ERR_AUTH;
    msv_reader_init(&r, pt, pt_len);
    err = MSV_ERR_AUTH;
    if (msv_mls_get_vec(&r, &j, &j_len) != MSV_OK || j_len != MSV_MLS_NH ||
        msv_mls_get_optional(&r, &present) != MSV_OK ||
        (present && msv_mls_get_vec(&r, &path, &path_len) != MSV_OK) ||
        msv_mls_get_sub(&r, &psks) != MSV_OK || !msv_mls_reader_is_done(&r))
        goto out;
    if (present && path_len != MSV_MLS_NH)
        goto out;
    err = group_secrets_psks(&psks, src, psk_secret);
    if (err == MSV_OK) {
        memcpy(joiner, j, MSV_MLS_NH);
        *has_path_secret = present;
        if (present)
            memcpy(path_secret, path, MSV_MLS_NH);
    }
out:
    msv_secret_free(pt, pt_len);
    return err;
}

/* The GroupInfo, decrypted with the welcome key and nonce (8, 12.4.3.1). */
static msv_err open_group_info(enum msv_mls_suite suite, const uint8_t joiner[MSV_MLS_NH],
                               const uint8_t psk_secret[MSV_MLS_NH], const struct secrets_entry *e,
                               uint8_t **out, size_t *out_len)
{
    uint8_t member[MSV_MLS_NH], welcome[MSV_MLS_NH], key[MSV_MLS_KEY_MAX], nonce[MSV_MLS_NN];
    uint8_t *gi = NULL;
    msv_err err;

    if (e->egi_len < MSV_MLS_TAG_LEN)
        return MSV_ERR_AUTH;
    err = msv_mls_extract(joiner, MSV_MLS_NH, psk_secret, MSV_MLS_NH, member);
    if (err == MSV_OK)
        err = msv_mls_derive_secret(member, MSV_MLS_NH, "welcome", welcome);
    if (err == MSV_OK)
        err = msv_mls_expand_label(welcome, MSV_MLS_NH, (const uint8_t *)"key", 3, NULL, 0, key,
                                   msv_mls_suite_nk(suite));
    if (err == MSV_OK)
        err = msv_mls_expand_label(welcome, MSV_MLS_NH, (const uint8_t *)"nonce", 5, NULL, 0, nonce,
                                   MSV_MLS_NN);
    if (err == MSV_OK && (gi = malloc(e->egi_len - MSV_MLS_TAG_LEN + 1)) == NULL)
        err = MSV_ERR_NOMEM;
    if (err == MSV_OK)
        err = msv_mls_aead_open(suite, key, nonce, NULL, 0, e->egi, e->egi_len, gi);
    if (err == MSV_OK) {
        *out = gi;
        *out_len = e->egi_len - MSV_MLS_TAG_LEN;
        gi = NULL;
    }
    free(gi);
    sodium_memzero(member, sizeof(member));
    sodium_memzero(welcome, sizeof(welcome));
    sodium_memzero(key, sizeof(key));
    return err;
}

/* The confirmed transcript hash a GroupContext holds, and its suite. */
static msv_err read_group_context(const uint8_t *gc, size_t len, uint16_t *suite,
                                  const uint8_t **cth, size_t *cth_len)
{
    struct msv_reader r;
    const uint8_t *p;
    size_t n;
    uint16_t version;
    uint64_t epoch;

    msv_reader_init(&r, gc, len);
    if (msv_reader_u16be(&r, &version) != MSV_OK || msv_reader_u16be(&r, suite) != MSV_OK ||
        msv_mls_get_vec(&r, &p, &n) != MSV_OK || msv_mls_get_u64(&r, &epoch) != MSV_OK ||
        msv_mls_get_vec(&r, &p, &n) != MSV_OK || msv_mls_get_vec(&r, cth, cth_len) != MSV_OK)
        return MSV_ERR_PARSE;
    return version == 1 ? MSV_OK : MSV_ERR_UNSUPPORTED;
}

/* Checks the GroupInfo's signature (GroupInfoTBS) and confirmation tag; the epoch's secrets. */
msv_err msv_mls_group_info_check(enum msv_mls_suite suite, const uint8_t *gi, size_t len,
                                 const uint8_t *signer_pk, size_t signer_pk_len,
                                 const uint8_t joiner[MSV_MLS_NH],
                                 const uint8_t psk_secret[MSV_MLS_NH],
                                 struct msv_mls_epoch_secrets *out)
{
    struct msv_reader r;
    const uint8_t *ext, *tag, *sig, *cth;
    size_t gc_len, ext_len, tag_len, sig_len, tbs_len, cth_len;
    uint8_t mac[MSV_MLS_NH];
    uint32_t signer;
    uint16_t cs = 0;
    msv_err err;

    msv_reader_init(&r, gi, len);
    if (msv_mls_skip_group_context(&r) != MSV_OK)
        return MSV_ERR_AUTH;
    gc_len = r.off;
    if (msv_mls_get_vec(&r, &ext, &ext_len) != MSV_OK ||
        msv_mls_get_vec(&r, &tag, &tag_len) != MSV_OK || msv_reader_u32be(&r, &signer) != MSV_OK)
        return MSV_ERR_AUTH;
    tbs_len = r.off;
    if (msv_mls_get_vec(&r, &sig, &sig_len) != MSV_OK || !msv_mls_reader_is_done(&r) ||
        read_group_context(gi, gc_len, &cs, &cth, &cth_len) != MSV_OK || cs != suite)
        return MSV_ERR_AUTH;
    err = msv_mls_verify_label(signer_pk, signer_pk_len, "GroupInfoTBS", gi, tbs_len, sig, sig_len);
    if (err != MSV_OK)
        return MSV_ERR_AUTH;
    err = msv_mls_key_schedule_joiner(joiner, psk_secret, gi, gc_len, out);
    if (err == MSV_OK)
        err = msv_mls_mac(out->confirmation_key, MSV_MLS_NH, cth, cth_len, mac);
    if (err == MSV_OK && (tag_len != MSV_MLS_NH || sodium_memcmp(mac, tag, MSV_MLS_NH) != 0))
        err = MSV_ERR_AUTH;
    if (err != MSV_OK)
        sodium_memzero(out, sizeof(*out));
    return err;
}

msv_err msv_mls_welcome_decrypt_resuming(enum msv_mls_suite suite, const uint8_t *welcome,
                                         size_t welcome_len, const uint8_t *key_package,
                                         size_t key_package_len, const uint8_t init_sk[32],
                                         const struct msv_mls_external_psk *psks, size_t n_psks,
                                         const struct msv_mls_resumption_psk *res, size_t n_res,
                                         struct msv_mls_welcome_resumption *named,
                                         uint8_t joiner[MSV_MLS_NH], uint8_t psk_secret[MSV_MLS_NH],
                                         uint8_t path_secret[MSV_MLS_NH], int *has_path_secret,
                                         uint8_t **group_info, size_t *group_info_len)
{
    struct psk_sources src = {psks, n_psks, res, n_res, {0, 0}};
    struct secrets_entry e;
    uint8_t ref[MSV_MLS_NH], j[MSV_MLS_NH], ps[MSV_MLS_NH], path[MSV_MLS_NH];
    int has_path = 0;
    msv_err err;

    if (welcome_len > MSV_MLS_MESSAGE_MAX || key_package_len > MSV_MLS_MESSAGE_MAX)
        return MSV_ERR_TOO_BIG;
    memset(&e, 0, sizeof(e));
    err = key_package_ref(key_package, key_package_len, ref);
    if (err == MSV_OK)
        err = find_entry(suite, welcome, welcome_len, ref, &e);
    if (err == MSV_OK)
        err = open_group_secrets(suite, init_sk, &e, &src, j, ps, path, &has_path);
    if (err == MSV_OK)
        err = open_group_info(suite, j, ps, &e, group_info, group_info_len);
    if (err == MSV_OK) {
        memcpy(joiner, j, MSV_MLS_NH);
        memcpy(psk_secret, ps, MSV_MLS_NH);
        memcpy(path_secret, path, MSV_MLS_NH);
        *has_path_secret = has_path;
        if (named != NULL)
            *named = src.named;
    }
    sodium_memzero(j, sizeof(j));
    sodium_memzero(ps, sizeof(ps));
    sodium_memzero(path, sizeof(path));
    return err;
}

msv_err msv_mls_welcome_decrypt(enum msv_mls_suite suite, const uint8_t *welcome,
                                size_t welcome_len, const uint8_t *key_package,
                                size_t key_package_len, const uint8_t init_sk[32],
                                const struct msv_mls_external_psk *psks, size_t n_psks,
                                uint8_t joiner[MSV_MLS_NH], uint8_t psk_secret[MSV_MLS_NH],
                                uint8_t path_secret[MSV_MLS_NH], int *has_path_secret,
                                uint8_t **group_info, size_t *group_info_len)
{
    return msv_mls_welcome_decrypt_resuming(
        suite, welcome, welcome_len, key_package, key_package_len, init_sk, psks, n_psks, NULL, 0,
        NULL, joiner, psk_secret, path_secret, has_path_secret, group_info, group_info_len);
}

msv_err msv_mls_welcome_open(enum msv_mls_suite suite, const uint8_t *welcome, size_t welcome_len,
                             const uint8_t *key_package, size_t key_package_len,
                             const uint8_t init_sk[32], const uint8_t *signer_pk,
                             size_t signer_pk_len, struct msv_mls_epoch_secrets *out,
                             uint8_t **group_info, size_t *group_info_len)
{
    struct msv_mls_epoch_secrets s;
    uint8_t joiner[MSV_MLS_NH], psk_secret[MSV_MLS_NH], path[MSV_MLS_NH], *gi = NULL;
    size_t gi_len = 0;
    int has_path = 0;
    msv_err err;

    err =
        msv_mls_welcome_decrypt(suite, welcome, welcome_len, key_package, key_package_len, init_sk,
                                NULL, 0, joiner, psk_secret, path, &has_path, &gi, &gi_len);
    if (err == MSV_OK)
        err = msv_mls_group_info_check(suite, gi, gi_len, signer_pk, signer_pk_len, joiner,
                                       psk_secret, &s);
    if (err == MSV_OK) {
        memcpy(out, &s, sizeof(s));
        *group_info = gi;
        *group_info_len = gi_len;
        gi = NULL;
    }
    free(gi);
    sodium_memzero(&s, sizeof(s));
    sodium_memzero(joiner, sizeof(joiner));
    sodium_memzero(psk_secret, sizeof(psk_secret));
    sodium_memzero(path, sizeof(path));
    return err;
}

msv_err msv_mls_group_info_read(const uint8_t *gi, size_t len, struct msv_mls_group_info *info)
{
    struct msv_reader r, ext;
    uint16_t version, suite;
    const uint8_t *p;
    size_t n;

    memset(info, 0, sizeof(*info));
    msv_reader_init(&r, gi, len);
    if (msv_reader_u16be(&r, &version) != MSV_OK || msv_reader_u16be(&r, &suite) != MSV_OK ||
        msv_mls_get_vec(&r, &info->group_id, &info->group_id_len) != MSV_OK ||
        msv_mls_get_u64(&r, &info->epoch) != MSV_OK ||
        msv_mls_get_vec(&r, &info->tree_hash, &info->tree_hash_len) != MSV_OK ||
        msv_mls_get_vec(&r, &p, &n) != MSV_OK || msv_mls_get_vec(&r, &p, &n) != MSV_OK ||
        msv_mls_get_sub(&r, &ext) != MSV_OK || msv_mls_get_vec(&r, &p, &n) != MSV_OK ||
        msv_reader_u32be(&r, &info->signer) != MSV_OK || msv_mls_get_vec(&r, &p, &n) != MSV_OK ||
        !msv_mls_reader_is_done(&r))
        return MSV_ERR_PARSE;
    /* Extension = extension_type (u16) || extension_data<V>; ratchet_tree is type 2 */
    while (!msv_mls_reader_is_done(&ext)) {
        uint16_t type;

        if (msv_reader_u16be(&ext, &type) != MSV_OK || msv_mls_get_vec(&ext, &p, &n) != MSV_OK)
            return MSV_ERR_PARSE;
        if (type == 2) {
            info->ratchet_tree = p;
            info->ratchet_tree_len = n;
        }
    }
    return MSV_OK;
}
