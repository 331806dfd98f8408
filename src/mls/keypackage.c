/*
 * KeyPackages and LeafNodes as a member makes and validates them (RFC 9420
 * 7.2, 7.3, 10, 10.1):
 *
 *   KeyPackage = version (1) || cipher_suite || init_key<V> || LeafNode
 *                || extensions<V> || signature<V>     (SignWithLabel "KeyPackageTBS")
 *   LeafNode = encryption_key<V> || signature_key<V> || Credential || Capabilities
 *              || leaf_node_source || (Lifetime | parent_hash<V> | nothing)
 *              || extensions<V> || signature<V>       (SignWithLabel "LeafNodeTBS")
 *   Credential (basic) = 1 (u16) || identity<V>
 *   Capabilities = versions<V> || cipher_suites<V> || extensions<V> || proposals<V>
 *                  || credentials<V>, each a list of u16
 *   Lifetime = not_before (u64) || not_after (u64), seconds since the epoch
 *
 * We make KeyPackages with a basic credential holding the device's identity,
 * capabilities of version 1, suites 1 and 3, the basic credential and the
 * GroupContext extension MSV_MLS_EXT_GROUP, and no extensions of their own.
 * Validation refuses with MSV_ERR_AUTH (a signature) or MSV_ERR_INVALID
 * (anything else) and names the reason.
 */
#include <stdlib.h>
#include <string.h>

#include <sodium.h>

#include "missive/util.h"
#include "mls/mls.h"

/* What validation needs of a LeafNode beyond struct msv_mls_leaf. */
struct leaf_fields {
    uint16_t credential_type;
    struct msv_reader versions, suites, extensions, proposals, credentials;
    uint8_t source;
    uint64_t not_before, not_after;
    struct msv_reader leaf_extensions;
};

static msv_err read_fields(const struct msv_mls_leaf *leaf, struct leaf_fields *f)
{
    struct msv_reader r;
    const uint8_t *p;
    size_t n;

    memset(f, 0, sizeof(*f));
    msv_reader_init(&r, leaf->raw, leaf->raw_len);
    if (msv_mls_get_vec(&r, &p, &n) != MSV_OK || msv_mls_get_vec(&r, &p, &n) != MSV_OK ||
        msv_reader_u16be(&r, &f->credential_type) != MSV_OK ||
        msv_mls_get_vec(&r, &p, &n) != MSV_OK || msv_mls_get_sub(&r, &f->versions) != MSV_OK ||
        msv_mls_get_sub(&r, &f->suites) != MSV_OK ||
        msv_mls_get_sub(&r, &f->extensions) != MSV_OK ||
        msv_mls_get_sub(&r, &f->proposals) != MSV_OK ||
        msv_mls_get_sub(&r, &f->credentials) != MSV_OK || msv_reader_u8(&r, &f->source) != MSV_OK)
        return MSV_ERR_PARSE;
    if (f->source == 1 && (msv_mls_get_u64(&r, &f->not_before) != MSV_OK ||
                           msv_mls_get_u64(&r, &f->not_after) != MSV_OK))
        return MSV_ERR_PARSE;
    if (f->source == 3 && msv_mls_get_vec(&r, &p, &n) != MSV_OK)
        return MSV_ERR_PARSE;
    return msv_mls_get_sub(&r, &f->leaf_extensions);
}

/* 1 if the u16 list holds v; -1 if it is not a list of u16. */
static int list_has(struct msv_reader list, uint16_t v)
{
    int found = 0;

    if (list.len % 2 != 0)
        return -1;
    while (!msv_mls_reader_is_done(&list)) {
        uint16_t x = 0;

        if (msv_reader_u16be(&list, &x) != MSV_OK)
            return -1;
        found |= x == v;
    }
    return found;
}

/* Every extension of the leaf is one its capabilities list (7.3). */
static int extensions_listed(const struct leaf_fields *f)
{
    struct msv_reader ext = f->leaf_extensions;

    while (!msv_mls_reader_is_done(&ext)) {
        uint16_t type;
        const uint8_t *p;
        size_t n;

        if (msv_reader_u16be(&ext, &type) != MSV_OK || msv_mls_get_vec(&ext, &p, &n) != MSV_OK ||
            list_has(f->extensions, type) != 1)
            return 0;
    }
    return 1;
}

int msv_mls_leaf_lists_extension(const struct msv_mls_leaf *leaf, uint16_t type)
{
    struct leaf_fields f;

    return read_fields(leaf, &f) == MSV_OK && list_has(f.extensions, type) == 1;
}

static msv_err refuse(msv_err err, const char *reason, const char **why)
{
    if (why != NULL)
        *why = reason;
    return err;
}

/* LeafNodeTBS (7.2): the LeafNode before its signature, then group_id<V> and the leaf index for
 * update and commit leaves. Caller frees *out. */
static msv_err leaf_tbs(const struct msv_mls_leaf *leaf, const uint8_t *group_id,
                        size_t group_id_len, uint32_t index, uint8_t **out, size_t *out_len)
{
    struct msv_buf w;

    msv_buf_init(&w, MSV_MLS_MESSAGE_MAX);
    (void)msv_buf_put(&w, leaf->raw, leaf->tbs_len);
    if (leaf->source != 1) {
        msv_mls_put_vec(&w, group_id, group_id_len);
        (void)msv_buf_put_u32be(&w, index);
    }
    return msv_buf_finish(&w, out, out_len);
}

msv_err msv_mls_leaf_check(enum msv_mls_suite suite, const struct msv_mls_leaf *leaf,
                           const uint8_t *group_id, size_t group_id_len, uint32_t index,
                           uint64_t now, const char **why)
{
    struct leaf_fields f;
    uint8_t *tbs = NULL;
    size_t tbs_len = 0;
    msv_err err;

    if (read_fields(leaf, &f) != MSV_OK)
        return refuse(MSV_ERR_PARSE, "leaf node malformed", why);
    if (leaf->encryption_key_len != 32 || leaf->signature_key_len != 32)
        return refuse(MSV_ERR_INVALID, "leaf key of the wrong size", why);
    if (f.credential_type != 1)
        return refuse(MSV_ERR_INVALID, "credential type not supported", why);
    if (list_has(f.versions, 1) != 1)
        return refuse(MSV_ERR_INVALID, "capabilities lack MLS 1.0", why);
    if (list_has(f.suites, (uint16_t)suite) != 1)
        return refuse(MSV_ERR_INVALID, "capabilities lack the group's cipher suite", why);
    if (list_has(f.credentials, f.credential_type) != 1)
        return refuse(MSV_ERR_INVALID, "capabilities lack its own credential type", why);
    if (list_has(f.extensions, 0) < 0 || list_has(f.proposals, 0) < 0 || !extensions_listed(&f))
        return refuse(MSV_ERR_INVALID, "leaf extension not in its capabilities", why);
    if (f.source == 1 &&
        (f.not_before > f.not_after || (now != 0 && (now < f.not_before || now > f.not_after))))
        return refuse(MSV_ERR_INVALID, "outside its lifetime", why);
    err = leaf_tbs(leaf, group_id, group_id_len, index, &tbs, &tbs_len);
    if (err != MSV_OK)
        return err;
    err = msv_mls_verify_label(leaf->signature_key, leaf->signature_key_len, "LeafNodeTBS", tbs,
                               tbs_len, leaf->signature, leaf->signature_len);
    free(tbs);
    return err == MSV_OK ? MSV_OK : refuse(MSV_ERR_AUTH, "leaf node signature invalid", why);
}

msv_err msv_mls_key_package_body_check(enum msv_mls_suite suite, const uint8_t *kp, size_t len,
                                       uint64_t now, struct msv_mls_leaf *leaf, const char **why)
{
    struct msv_reader r;
    struct msv_mls_leaf l;
    struct leaf_fields f;
    const uint8_t *init, *p, *sig;
    size_t init_len, n, tbs_len, sig_len;
    uint16_t version, cs;
    msv_err err;

    if (len > MSV_MLS_MESSAGE_MAX)
        return refuse(MSV_ERR_TOO_BIG, "key package too big", why);
    msv_reader_init(&r, kp, len);
    if (msv_reader_u16be(&r, &version) != MSV_OK || msv_reader_u16be(&r, &cs) != MSV_OK ||
        msv_mls_get_vec(&r, &init, &init_len) != MSV_OK ||
        msv_mls_read_leaf_node(&r, &l) != MSV_OK || msv_mls_get_vec(&r, &p, &n) != MSV_OK)
        return refuse(MSV_ERR_PARSE, "key package malformed", why);
    tbs_len = r.off;
    if (msv_mls_get_vec(&r, &sig, &sig_len) != MSV_OK || !msv_mls_reader_is_done(&r))
        return refuse(MSV_ERR_PARSE, "key package malformed", why);
    if (version != 1)
        return refuse(MSV_ERR_INVALID, "protocol version not MLS 1.0", why);
    if (cs != (uint16_t)suite)
        return refuse(MSV_ERR_INVALID, "cipher suite not the group's", why);
    if (l.source != 1)
        return refuse(MSV_ERR_INVALID, "leaf node source not key_package", why);
    if (init_len != 32 || (l.encryption_key_len == 32 && memcmp(init, l.encryption_key, 32) == 0))
        return refuse(MSV_ERR_INVALID, "init key missing or equal to the encryption key", why);
    err = msv_mls_leaf_check(suite, &l, NULL, 0, 0, now, why);
    if (err != MSV_OK)
        return err;
    /* 7.2, where the lifetime is checked (now given): a commit we make, not one we follow */
    if (now != 0 && (read_fields(&l, &f) != MSV_OK ||
                     f.not_after - f.not_before > MSV_MLS_KEY_PACKAGE_LIFETIME_MAX))
        return refuse(MSV_ERR_INVALID, "lifetime longer than 84 days and an hour", why);
    if (msv_mls_verify_label(l.signature_key, l.signature_key_len, "KeyPackageTBS", kp, tbs_len,
                             sig, sig_len) != MSV_OK)
        return refuse(MSV_ERR_AUTH, "key package signature invalid", why);
    if (leaf != NULL)
        *leaf = l;
    return MSV_OK;
}

msv_err msv_mls_key_package_check(enum msv_mls_suite suite, const uint8_t *msg, size_t len,
                                  uint64_t now, struct msv_mls_leaf *leaf, const char **why)
{
    /* MLSMessage: version mls10 (1), wire_format mls_key_package (5) */
    if (len < 4 || msg[0] != 0 || msg[1] != 1 || msg[2] != 0 || msg[3] != 5)
        return refuse(MSV_ERR_PARSE, "not a KeyPackage message", why);
    return msv_mls_key_package_body_check(suite, msg + 4, len - 4, now, leaf, why);
}

/* Capabilities: MLS 1.0, suites 1 and 3, the extension MSV_MLS_EXT_GROUP beyond the defaults
 * (plain: none), no proposals beyond them, the basic credential. */
static void put_capabilities(struct msv_buf *w, int plain)
{
    static const uint8_t defaults[] = {2, 0, 1, 4, 0, 1, 0, 3, 0, 0, 2, 0, 1};

    static const uint8_t caps[] = {
        2, 0, 1, 4, 0, 1, 0, 3, 2, MSV_MLS_EXT_GROUP >> 8, MSV_MLS_EXT_GROUP & 0xff, 0, 2, 0, 1};

    if (plain)
        (void)msv_buf_put(w, defaults, sizeof(defaults));
    else
        (void)msv_buf_put(w, caps, sizeof(caps));
}

msv_err msv_mls_leaf_make(const struct msv_mls_leaf_spec *spec, uint8_t **out, size_t *out_len)
{
    struct msv_buf w;
    uint8_t pk[32], sk[64], sig[MSV_MLS_SIG_LEN], *tbs = NULL, *tbs_ext = NULL;
    size_t tbs_len = 0, tbs_ext_len = 0;
    struct msv_mls_leaf leaf;
    msv_err err;

    if (crypto_sign_seed_keypair(pk, sk, spec->sig_seed) != 0)
        return MSV_ERR_CRYPTO;
    sodium_memzero(sk, sizeof(sk));
    msv_buf_init(&w, MSV_MLS_MESSAGE_MAX);
    msv_mls_put_vec(&w, spec->encryption_key, 32);
    msv_mls_put_vec(&w, pk, sizeof(pk));
    (void)msv_buf_put_u16be(&w, 1);
    msv_mls_put_vec(&w, spec->identity, spec->identity_len);
    put_capabilities(&w, spec->plain_capabilities);
    (void)msv_buf_put_u8(&w, spec->source);
    if (spec->source == 1) {
        msv_mls_put_u64(&w, spec->not_before);
        msv_mls_put_u64(&w, spec->not_after);
    } else if (spec->source == 3) {
        msv_mls_put_vec(&w, spec->parent_hash, spec->parent_hash_len);
    }
    msv_mls_put_vec(&w, NULL, 0);
    err = msv_buf_finish(&w, &tbs, &tbs_len);
    memset(&leaf, 0, sizeof(leaf));
    leaf.raw = tbs;
    leaf.tbs_len = tbs_len;
    leaf.source = spec->source;
    if (err == MSV_OK)
        err = leaf_tbs(&leaf, spec->group_id, spec->group_id_len, spec->index, &tbs_ext,
                       &tbs_ext_len);
    if (err == MSV_OK)
        err = msv_mls_sign_label(spec->sig_seed, "LeafNodeTBS", tbs_ext, tbs_ext_len, sig);
    if (err == MSV_OK) {
        msv_buf_init(&w, MSV_MLS_MESSAGE_MAX);
        (void)msv_buf_put(&w, tbs, tbs_len);
        msv_mls_put_vec(&w, sig, sizeof(sig));
        err = msv_buf_finish(&w, out, out_len);
    }
    free(tbs);
    free(tbs_ext);
    return err;
}

static msv_err key_package_make(enum msv_mls_suite suite, const uint8_t sig_seed[32],
                                const uint8_t *identity, size_t identity_len, uint64_t not_before,
                                uint64_t not_after, int plain, uint8_t init_sk[32],
                                uint8_t leaf_sk[32], uint8_t **out, size_t *out_len)
{
    struct msv_mls_leaf_spec spec;
    struct msv_buf w;
    uint8_t init_pk[32], enc_pk[32], isk[32], lsk[32], sig[MSV_MLS_SIG_LEN];
    uint8_t *leaf = NULL, *tbs = NULL;
    size_t leaf_len = 0, tbs_len = 0;
    msv_err err;

    if (!msv_mls_suite_is_supported((uint16_t)suite) || not_before > not_after)
        return MSV_ERR_INVALID;
    randombytes_buf(isk, sizeof(isk));
    randombytes_buf(lsk, sizeof(lsk));
    if (crypto_scalarmult_base(init_pk, isk) != 0 || crypto_scalarmult_base(enc_pk, lsk) != 0) {
        err = MSV_ERR_CRYPTO;
        goto out;
    }
    memset(&spec, 0, sizeof(spec));
    spec.sig_seed = sig_seed;
    spec.encryption_key = enc_pk;
    spec.identity = identity;
    spec.identity_len = identity_len;
    spec.source = 1;
    spec.not_before = not_before;
    spec.not_after = not_after;
    spec.plain_capabilities = plain;
    err = msv_mls_leaf_make(&spec, &leaf, &leaf_len);
    if (err != MSV_OK)
        goto out;
    /* KeyPackageTBS: everything before the signature, without the MLSMessage header */
    msv_buf_init(&w, MSV_MLS_MESSAGE_MAX);
    (void)msv_buf_put_u16be(&w, 1);
    (void)msv_buf_put_u16be(&w, (uint16_t)suite);
    msv_mls_put_vec(&w, init_pk, sizeof(init_pk));
    (void)msv_buf_put(&w, leaf, leaf_len);
    msv_mls_put_vec(&w, NULL, 0);
    err = msv_buf_finish(&w, &tbs, &tbs_len);
    if (err == MSV_OK)
        err = msv_mls_sign_label(sig_seed, "KeyPackageTBS", tbs, tbs_len, sig);
    if (err == MSV_OK) {
        msv_buf_init(&w, MSV_MLS_MESSAGE_MAX);
        (void)msv_buf_put_u16be(&w, 1);
        (void)msv_buf_put_u16be(&w, 5);
        (void)msv_buf_put(&w, tbs, tbs_len);
        msv_mls_put_vec(&w, sig, sizeof(sig));
        err = msv_buf_finish(&w, out, out_len);
    }
    if (err == MSV_OK) {
        memcpy(init_sk, isk, 32);
        memcpy(leaf_sk, lsk, 32);
    }
out:
    free(leaf);
    free(tbs);
    sodium_memzero(isk, sizeof(isk));
    sodium_memzero(lsk, sizeof(lsk));
    return err;
}

msv_err msv_mls_key_package_make(enum msv_mls_suite suite, const uint8_t sig_seed[32],
                                 const uint8_t *identity, size_t identity_len, uint64_t not_before,
                                 uint64_t not_after, uint8_t init_sk[32], uint8_t leaf_sk[32],
                                 uint8_t **out, size_t *out_len)
{
    return key_package_make(suite, sig_seed, identity, identity_len, not_before, not_after, 0,
                            init_sk, leaf_sk, out, out_len);
}

msv_err msv_mls_key_package_make_plain(enum msv_mls_suite suite, const uint8_t sig_seed[32],
                                       const uint8_t *identity, size_t identity_len,
                                       uint64_t not_before, uint64_t not_after, uint8_t init_sk[32],
                                       uint8_t leaf_sk[32], uint8_t **out, size_t *out_len)
{
    return key_package_make(suite, sig_seed, identity, identity_len, not_before, not_after, 1,
                            init_sk, leaf_sk, out, out_len);
}
