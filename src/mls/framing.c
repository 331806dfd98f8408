/*
 * Message framing (RFC 9420 6): PublicMessage (6.2), signed and carrying a
 * membership tag, and PrivateMessage (6.3), signed, encrypted with the
 * sender's ratchet key and with its sender data encrypted under a key drawn
 * from the ciphertext; and the transcript hashes a commit updates (8.2).
 * Only members send here (sender_type member); the epoch's secrets come from
 * the caller.
 *
 *   MLSMessage = version (u16 1) || wire_format (u16) || message
 *   FramedContent = group_id<V> || epoch (u64) || sender || authenticated_data<V>
 *                   || content_type (u8) || application_data<V> | Proposal | Commit
 *   FramedContentAuthData = signature<V> || confirmation_tag<V> (commits only)
 *   PublicMessage = FramedContent || FramedContentAuthData || membership_tag<V>
 *   PrivateMessage = group_id<V> || epoch || content_type || authenticated_data<V>
 *                    || encrypted_sender_data<V> || ciphertext<V>
 */
#include <stdlib.h>
#include <string.h>

#include <sodium.h>

#include "missive/util.h"
#include "mls/mls.h"

#define SENDER_DATA_LEN 12 /* leaf_index (u32) || generation (u32) || reuse_guard[4] */

/* A FramedContent as read, with the span of its bytes in the message. */
struct framed {
    const uint8_t *group_id;
    size_t group_id_len;
    uint64_t epoch;
    uint8_t sender_type;
    const uint8_t *raw;
    size_t raw_len;
    struct msv_mls_content c;
};

static int is_content_type(uint8_t t)
{
    return t >= MSV_MLS_CONTENT_APPLICATION && t <= MSV_MLS_CONTENT_COMMIT;
}

/* The content of content_type: application_data<V>, or one Proposal or Commit. */
static msv_err read_body(struct msv_reader *r, uint8_t content_type, const uint8_t **body,
                         size_t *body_len)
{
    size_t start = r->off;
    msv_err err;

    if (content_type == MSV_MLS_CONTENT_APPLICATION)
        return msv_mls_get_vec(r, body, body_len);
    if (content_type == MSV_MLS_CONTENT_PROPOSAL)
        err = msv_mls_skip_proposal(r);
    else if (content_type == MSV_MLS_CONTENT_COMMIT)
        err = msv_mls_skip_commit(r);
    else
        err = MSV_ERR_PARSE;
    if (err != MSV_OK)
        return err;
    *body = r->data + start;
    *body_len = r->off - start;
    return MSV_OK;
}

static void put_body(struct msv_buf *w, const struct msv_mls_content *c)
{
    if (c->content_type == MSV_MLS_CONTENT_APPLICATION)
        msv_mls_put_vec(w, c->body, c->body_len);
    else
        (void)msv_buf_put(w, c->body, c->body_len);
}

static msv_err read_framed(struct msv_reader *r, struct framed *f)
{
    size_t start = r->off;
    uint32_t index = 0;

    memset(f, 0, sizeof(*f));
    if (msv_mls_get_vec(r, &f->group_id, &f->group_id_len) != MSV_OK ||
        msv_mls_get_u64(r, &f->epoch) != MSV_OK || msv_reader_u8(r, &f->sender_type) != MSV_OK)
        return MSV_ERR_PARSE;
    /* Sender (6): member and external carry an index; the new-member kinds nothing */
    if (f->sender_type == 1 || f->sender_type == 2) {
        if (msv_reader_u32be(r, &index) != MSV_OK)
            return MSV_ERR_PARSE;
    } else if (f->sender_type != 3 && f->sender_type != 4) {
        return MSV_ERR_PARSE;
    }
    f->c.leaf_index = index;
    if (msv_mls_get_vec(r, &f->c.authenticated_data, &f->c.authenticated_data_len) != MSV_OK ||
        msv_reader_u8(r, &f->c.content_type) != MSV_OK)
        return MSV_ERR_PARSE;
    if (read_body(r, f->c.content_type, &f->c.body, &f->c.body_len) != MSV_OK)
        return MSV_ERR_PARSE;
    f->raw = r->data + start;
    f->raw_len = r->off - start;
    return MSV_OK;
}

static void put_framed(struct msv_buf *w, const struct msv_mls_epoch *ep,
                       const struct msv_mls_content *c)
{
    msv_mls_put_vec(w, ep->gc.group_id, ep->gc.group_id_len);
    msv_mls_put_u64(w, ep->gc.epoch);
    if (c->sender_type == MSV_MLS_SENDER_NEW_MEMBER_COMMIT) {
        (void)msv_buf_put_u8(w, MSV_MLS_SENDER_NEW_MEMBER_COMMIT);
    } else {
        (void)msv_buf_put_u8(w, MSV_MLS_SENDER_MEMBER);
        (void)msv_buf_put_u32be(w, c->leaf_index);
    }
    msv_mls_put_vec(w, c->authenticated_data, c->authenticated_data_len);
    (void)msv_buf_put_u8(w, c->content_type);
    put_body(w, c);
}

/* FramedContentTBS (6.1): version, wire_format, FramedContent, GroupContext of a member */
static msv_err framed_tbs(const struct msv_mls_epoch *ep, uint16_t wire_format,
                          const struct msv_mls_content *c, uint8_t **out, size_t *out_len)
{
    struct msv_buf w;
    uint8_t *gc = NULL;
    size_t gc_len = 0;
    msv_err err = msv_mls_group_context_encode(&ep->gc, &gc, &gc_len);

    if (err != MSV_OK)
        return err;
    msv_buf_init(&w, MSV_MLS_MESSAGE_MAX);
    (void)msv_buf_put_u16be(&w, 1);
    (void)msv_buf_put_u16be(&w, wire_format);
    put_framed(&w, ep, c);
    (void)msv_buf_put(&w, gc, gc_len);
    free(gc);
    return msv_buf_finish(&w, out, out_len);
}

static msv_err sign_content(const struct msv_mls_epoch *ep, uint16_t wire_format,
                            const struct msv_mls_content *c, const uint8_t seed[32],
                            uint8_t sig[MSV_MLS_SIG_LEN])
{
    uint8_t *tbs = NULL;
    size_t tbs_len = 0;
    msv_err err = framed_tbs(ep, wire_format, c, &tbs, &tbs_len);

    if (err != MSV_OK)
        return err;
    err = msv_mls_sign_label(seed, "FramedContentTBS", tbs, tbs_len, sig);
    free(tbs);
    return err;
}

msv_err msv_mls_content_sign(const struct msv_mls_epoch *ep, uint16_t wire_format,
                             const struct msv_mls_content *c, const uint8_t seed[32],
                             uint8_t sig[MSV_MLS_SIG_LEN])
{
    return sign_content(ep, wire_format, c, seed, sig);
}

msv_err msv_mls_authenticated_content(const struct msv_mls_epoch *ep, uint16_t wire_format,
                                      const struct msv_mls_content *c, const uint8_t *sig,
                                      size_t sig_len, uint8_t **out, size_t *out_len)
{
    struct msv_buf w;

    msv_buf_init(&w, MSV_MLS_MESSAGE_MAX);
    (void)msv_buf_put_u16be(&w, wire_format);
    put_framed(&w, ep, c);
    msv_mls_put_vec(&w, sig, sig_len);
    if (c->content_type == MSV_MLS_CONTENT_COMMIT)
        msv_mls_put_vec(&w, c->confirmation_tag, c->confirmation_tag_len);
    return msv_buf_finish(&w, out, out_len);
}

/* The signature of c by the key of the leaf c names. */
static msv_err verify_content(const struct msv_mls_epoch *ep, uint16_t wire_format,
                              const struct msv_mls_content *c, const uint8_t *sig, size_t sig_len)
{
    const uint8_t *pk = NULL;
    uint8_t *tbs = NULL;
    size_t tbs_len = 0, pk_len = 0;
    msv_err err;

    if (c->sender_type == MSV_MLS_SENDER_NEW_MEMBER_COMMIT) {
        if (ep->new_member_key == NULL ||
            ep->new_member_key(ep->sig_key_ctx, c, &pk, &pk_len) != MSV_OK)
            return MSV_ERR_AUTH;
    } else if (ep->sig_key == NULL ||
               ep->sig_key(ep->sig_key_ctx, c->leaf_index, &pk, &pk_len) != MSV_OK) {
        return MSV_ERR_AUTH;
    }
    err = framed_tbs(ep, wire_format, c, &tbs, &tbs_len);
    if (err != MSV_OK)
        return err;
    err = msv_mls_verify_label(pk, pk_len, "FramedContentTBS", tbs, tbs_len, sig, sig_len);
    free(tbs);
    return err;
}

static int content_is_valid(const struct msv_mls_epoch *ep, const struct msv_mls_content *c)
{
    int is_commit = c->content_type == MSV_MLS_CONTENT_COMMIT;

    if (c->sender_type == MSV_MLS_SENDER_NEW_MEMBER_COMMIT)
        return is_commit && c->confirmation_tag != NULL;
    return (c->sender_type == 0 || c->sender_type == MSV_MLS_SENDER_MEMBER) &&
           is_content_type(c->content_type) && c->leaf_index < ep->n_leaves &&
           is_commit == (c->confirmation_tag != NULL);
}

static void put_auth(struct msv_buf *w, const uint8_t sig[MSV_MLS_SIG_LEN],
                     const struct msv_mls_content *c)
{
    msv_mls_put_vec(w, sig, MSV_MLS_SIG_LEN);
    if (c->content_type == MSV_MLS_CONTENT_COMMIT)
        msv_mls_put_vec(w, c->confirmation_tag, c->confirmation_tag_len);
}

msv_err msv_mls_public_protect(const struct msv_mls_epoch *ep, const struct msv_mls_content *c,
                               const uint8_t seed[32], uint8_t **out, size_t *out_len)
{
    struct msv_buf w;
    uint8_t sig[MSV_MLS_SIG_LEN], tag[MSV_MLS_NH], *tbm = NULL;
    size_t tbm_len = 0;
    msv_err err;

    if (!content_is_valid(ep, c) || c->content_type == MSV_MLS_CONTENT_APPLICATION)
        return MSV_ERR_INVALID; /* 6.2: application data is never sent in the clear */
    err = sign_content(ep, MSV_MLS_WIRE_PUBLIC, c, seed, sig);
    if (err != MSV_OK)
        return err;
    if (c->sender_type == MSV_MLS_SENDER_NEW_MEMBER_COMMIT) {
        /* 6.2: only a member's message carries a membership tag */
        msv_buf_init(&w, MSV_MLS_MESSAGE_MAX);
        (void)msv_buf_put_u16be(&w, 1);
        (void)msv_buf_put_u16be(&w, MSV_MLS_WIRE_PUBLIC);
        put_framed(&w, ep, c);
        put_auth(&w, sig, c);
        return msv_buf_finish(&w, out, out_len);
    }
    /* AuthenticatedContentTBM (6.2): FramedContentTBS || FramedContentAuthData */
    err = framed_tbs(ep, MSV_MLS_WIRE_PUBLIC, c, &tbm, &tbm_len);
    if (err != MSV_OK)
        return err;
    msv_buf_init(&w, MSV_MLS_MESSAGE_MAX);
    (void)msv_buf_put(&w, tbm, tbm_len);
    put_auth(&w, sig, c);
    free(tbm);
    err = msv_buf_finish(&w, &tbm, &tbm_len);
    if (err != MSV_OK)
        return err;
    err = msv_mls_mac(ep->membership_key, MSV_MLS_NH, tbm, tbm_len, tag);
    free(tbm);
    if (err != MSV_OK)
        return err;
    msv_buf_init(&w, MSV_MLS_MESSAGE_MAX);
    (void)msv_buf_put_u16be(&w, 1);
    (void)msv_buf_put_u16be(&w, MSV_MLS_WIRE_PUBLIC);
    put_framed(&w, ep, c);
    put_auth(&w, sig, c);
    msv_mls_put_vec(&w, tag, sizeof(tag));
    return msv_buf_finish(&w, out, out_len);
}

/* 1 if the message's group and epoch are ep's. */
static int is_this_epoch(const struct msv_mls_epoch *ep, const uint8_t *group_id, size_t len,
                         uint64_t epoch)
{
    return len == ep->gc.group_id_len && epoch == ep->gc.epoch &&
           (len == 0 || memcmp(group_id, ep->gc.group_id, len) == 0);
}

static msv_err read_header(struct msv_reader *r, uint16_t wire_format)
{
    uint16_t version, wf;

    if (msv_reader_u16be(r, &version) != MSV_OK || msv_reader_u16be(r, &wf) != MSV_OK)
        return MSV_ERR_PARSE;
    if (version != 1)
        return MSV_ERR_UNSUPPORTED;
    return wf == wire_format ? MSV_OK : MSV_ERR_PARSE;
}

/* The membership tag over the bytes of the TBS and the auth data as they were received. */
static msv_err check_membership(const struct msv_mls_epoch *ep, const struct framed *f,
                                const uint8_t *auth, size_t auth_len, const uint8_t *tag,
                                size_t tag_len)
{
    struct msv_buf w;
    uint8_t *gc = NULL, *tbm = NULL, mac[MSV_MLS_NH];
    size_t gc_len = 0, tbm_len = 0;
    msv_err err = msv_mls_group_context_encode(&ep->gc, &gc, &gc_len);

    if (err != MSV_OK)
        return err;
    msv_buf_init(&w, MSV_MLS_MESSAGE_MAX * 2);
    (void)msv_buf_put_u16be(&w, 1);
    (void)msv_buf_put_u16be(&w, MSV_MLS_WIRE_PUBLIC);
    (void)msv_buf_put(&w, f->raw, f->raw_len);
    (void)msv_buf_put(&w, gc, gc_len);
    (void)msv_buf_put(&w, auth, auth_len);
    free(gc);
    err = msv_buf_finish(&w, &tbm, &tbm_len);
    if (err != MSV_OK)
        return err;
    err = msv_mls_mac(ep->membership_key, MSV_MLS_NH, tbm, tbm_len, mac);
    free(tbm);
    if (err == MSV_OK && (tag_len != MSV_MLS_NH || sodium_memcmp(mac, tag, MSV_MLS_NH) != 0))
        err = MSV_ERR_AUTH;
    return err;
}

msv_err msv_mls_public_unprotect(const struct msv_mls_epoch *ep, const uint8_t *msg, size_t len,
                                 struct msv_mls_content *c)
{
    struct msv_reader r;
    struct framed f;
    const uint8_t *sig, *tag, *auth;
    size_t sig_len, tag_len, auth_start, auth_len;
    msv_err err;

    if (len > MSV_MLS_MESSAGE_MAX)
        return MSV_ERR_TOO_BIG;
    msv_reader_init(&r, msg, len);
    err = read_header(&r, MSV_MLS_WIRE_PUBLIC);
    if (err != MSV_OK)
        return err;
    if (read_framed(&r, &f) != MSV_OK)
        return MSV_ERR_PARSE;
    auth_start = r.off;
    if (msv_mls_get_vec(&r, &sig, &sig_len) != MSV_OK)
        return MSV_ERR_PARSE;
    if (f.c.content_type == MSV_MLS_CONTENT_COMMIT &&
        msv_mls_get_vec(&r, &f.c.confirmation_tag, &f.c.confirmation_tag_len) != MSV_OK)
        return MSV_ERR_PARSE;
    auth = msg + auth_start;
    auth_len = r.off - auth_start;
    f.c.sender_type = f.sender_type;
    /* a member's message carries a membership tag (6.2); an external commit none; we take
     * nothing else */
    if (f.sender_type == MSV_MLS_SENDER_NEW_MEMBER_COMMIT) {
        if (!msv_mls_reader_is_done(&r))
            return MSV_ERR_PARSE;
    } else if (f.sender_type != MSV_MLS_SENDER_MEMBER) {
        return MSV_ERR_UNSUPPORTED;
    } else if (msv_mls_get_vec(&r, &tag, &tag_len) != MSV_OK || !msv_mls_reader_is_done(&r)) {
        return MSV_ERR_PARSE;
    }
    if (!is_this_epoch(ep, f.group_id, f.group_id_len, f.epoch) ||
        f.c.content_type == MSV_MLS_CONTENT_APPLICATION || !content_is_valid(ep, &f.c))
        return MSV_ERR_AUTH;
    if (f.sender_type == MSV_MLS_SENDER_MEMBER) {
        err = check_membership(ep, &f, auth, auth_len, tag, tag_len);
        if (err != MSV_OK)
            return err;
    }
    err = verify_content(ep, MSV_MLS_WIRE_PUBLIC, &f.c, sig, sig_len);
    if (err != MSV_OK)
        return err;
    f.c.signature = sig;
    f.c.signature_len = sig_len;
    *c = f.c;
    return MSV_OK;
}

/* PrivateContentAAD (6.3.2 of the content): group_id<V>, epoch, content_type, authenticated_data<V>
 */
static msv_err content_aad(const struct msv_mls_epoch *ep, uint8_t content_type, const uint8_t *ad,
                           size_t ad_len, uint8_t **out, size_t *out_len)
{
    struct msv_buf w;

    msv_buf_init(&w, MSV_MLS_MESSAGE_MAX);
    msv_mls_put_vec(&w, ep->gc.group_id, ep->gc.group_id_len);
    msv_mls_put_u64(&w, ep->gc.epoch);
    (void)msv_buf_put_u8(&w, content_type);
    msv_mls_put_vec(&w, ad, ad_len);
    return msv_buf_finish(&w, out, out_len);
}

/* SenderDataAAD (6.3.2): group_id<V>, epoch, content_type */
static msv_err sender_data_aad(const struct msv_mls_epoch *ep, uint8_t content_type, uint8_t **out,
                               size_t *out_len)
{
    struct msv_buf w;

    msv_buf_init(&w, MSV_MLS_MESSAGE_MAX);
    msv_mls_put_vec(&w, ep->gc.group_id, ep->gc.group_id_len);
    msv_mls_put_u64(&w, ep->gc.epoch);
    (void)msv_buf_put_u8(&w, content_type);
    return msv_buf_finish(&w, out, out_len);
}

/* The content key and nonce of leaf at generation, the nonce XORed with the reuse guard (6.3.1). */
static msv_err content_key(const struct msv_mls_epoch *ep, uint32_t leaf, uint8_t content_type,
                           uint32_t generation, const uint8_t reuse_guard[4],
                           uint8_t key[MSV_MLS_KEY_MAX], uint8_t nonce[MSV_MLS_NN])
{
    uint8_t leaf_secret[MSV_MLS_NH];
    enum msv_mls_ratchet which = content_type == MSV_MLS_CONTENT_APPLICATION
                                     ? MSV_MLS_RATCHET_APPLICATION
                                     : MSV_MLS_RATCHET_HANDSHAKE;
    msv_err err;

    if (ep->content_key != NULL) {
        err = ep->content_key(ep->content_key_ctx, leaf, which, generation, key, nonce);
    } else {
        err = msv_mls_secret_tree_leaf(ep->encryption_secret, ep->n_leaves, leaf, leaf_secret);
        if (err == MSV_OK)
            err = msv_mls_ratchet_key(ep->gc.suite, leaf_secret, which, generation, key, nonce);
    }
    for (int i = 0; err == MSV_OK && i < 4; i++)
        nonce[i] ^= reuse_guard[i];
    sodium_memzero(leaf_secret, sizeof(leaf_secret));
    return err;
}

/* Encrypts SenderData under the key drawn from the content ciphertext ct. */
static msv_err seal_sender_data(const struct msv_mls_epoch *ep, const struct msv_mls_content *c,
                                uint32_t generation, const uint8_t reuse_guard[4],
                                const uint8_t *ct, size_t ct_len,
                                uint8_t out[SENDER_DATA_LEN + MSV_MLS_TAG_LEN])
{
    uint8_t sd[SENDER_DATA_LEN], key[MSV_MLS_KEY_MAX], nonce[MSV_MLS_NN], *aad = NULL;
    size_t aad_len = 0;
    msv_err err;

    for (int i = 0; i < 4; i++) {
        sd[i] = (uint8_t)(c->leaf_index >> (24 - 8 * i));
        sd[4 + i] = (uint8_t)(generation >> (24 - 8 * i));
    }
    memcpy(sd + 8, reuse_guard, 4);
    err = msv_mls_sender_data_key(ep->gc.suite, ep->sender_data_secret, ct, ct_len, key, nonce);
    if (err == MSV_OK)
        err = sender_data_aad(ep, c->content_type, &aad, &aad_len);
    if (err == MSV_OK)
        err = msv_mls_aead_seal(ep->gc.suite, key, nonce, aad, aad_len, sd, sizeof(sd), out);
    free(aad);
    sodium_memzero(key, sizeof(key));
    return err;
}

/* PrivateMessageContent (6.3.1): the content, FramedContentAuthData, padding zeros */
static msv_err private_plaintext(const struct msv_mls_content *c,
                                 const uint8_t sig[MSV_MLS_SIG_LEN], size_t padding, uint8_t **out,
                                 size_t *out_len)
{
    struct msv_buf w;
    static const uint8_t zeros[256];

    msv_buf_init(&w, MSV_MLS_MESSAGE_MAX);
    put_body(&w, c);
    put_auth(&w, sig, c);
    while (padding > 0 && !w.failed) {
        size_t n = padding < sizeof(zeros) ? padding : sizeof(zeros);

        (void)msv_buf_put(&w, zeros, n);
        padding -= n;
    }
    return msv_buf_finish(&w, out, out_len);
}

msv_err msv_mls_private_protect(const struct msv_mls_epoch *ep, const struct msv_mls_content *c,
                                const uint8_t seed[32], uint32_t generation,
                                const uint8_t reuse_guard[4], size_t padding, uint8_t **out,
                                size_t *out_len)
{
    struct msv_buf w;
    uint8_t sig[MSV_MLS_SIG_LEN], key[MSV_MLS_KEY_MAX], nonce[MSV_MLS_NN];
    uint8_t esd[SENDER_DATA_LEN + MSV_MLS_TAG_LEN];
    uint8_t *pt = NULL, *aad = NULL, *ct = NULL;
    size_t pt_len = 0, aad_len = 0;
    msv_err err;

    if (!content_is_valid(ep, c) || c->sender_type == MSV_MLS_SENDER_NEW_MEMBER_COMMIT ||
        padding > MSV_MLS_MESSAGE_MAX)
        return MSV_ERR_INVALID;
    err = sign_content(ep, MSV_MLS_WIRE_PRIVATE, c, seed, sig);
    if (err == MSV_OK)
        err = private_plaintext(c, sig, padding, &pt, &pt_len);
    if (err == MSV_OK)
        err = content_aad(ep, c->content_type, c->authenticated_data, c->authenticated_data_len,
                          &aad, &aad_len);
    if (err == MSV_OK)
        err = content_key(ep, c->leaf_index, c->content_type, generation, reuse_guard, key, nonce);
    if (err == MSV_OK && (ct = malloc(pt_len + MSV_MLS_TAG_LEN)) == NULL)
        err = MSV_ERR_NOMEM;
    if (err == MSV_OK)
        err = msv_mls_aead_seal(ep->gc.suite, key, nonce, aad, aad_len, pt, pt_len, ct);
    if (err == MSV_OK)
        err = seal_sender_data(ep, c, generation, reuse_guard, ct, pt_len + MSV_MLS_TAG_LEN, esd);
    if (err == MSV_OK) {
        msv_buf_init(&w, MSV_MLS_MESSAGE_MAX);
        (void)msv_buf_put_u16be(&w, 1);
        (void)msv_buf_put_u16be(&w, MSV_MLS_WIRE_PRIVATE);
        msv_mls_put_vec(&w, ep->gc.group_id, ep->gc.group_id_len);
        msv_mls_put_u64(&w, ep->gc.epoch);
        (void)msv_buf_put_u8(&w, c->content_type);
        msv_mls_put_vec(&w, c->authenticated_data, c->authenticated_data_len);
        msv_mls_put_vec(&w, esd, sizeof(esd));
        msv_mls_put_vec(&w, ct, pt_len + MSV_MLS_TAG_LEN);
        err = msv_buf_finish(&w, out, out_len);
    }
    msv_secret_free(pt, pt_len);
    free(aad);
    free(ct);
    sodium_memzero(key, sizeof(key));
    return err;
}

struct private_msg {
    const uint8_t *group_id;
    size_t group_id_len;
    uint64_t epoch;
    uint8_t content_type;
    const uint8_t *ad, *esd, *ct;
    size_t ad_len, esd_len, ct_len;
};

static msv_err read_private(const uint8_t *msg, size_t len, struct private_msg *m)
{
    struct msv_reader r;
    msv_err err;

    msv_reader_init(&r, msg, len);
    err = read_header(&r, MSV_MLS_WIRE_PRIVATE);
    if (err != MSV_OK)
        return err;
    if (msv_mls_get_vec(&r, &m->group_id, &m->group_id_len) != MSV_OK ||
        msv_mls_get_u64(&r, &m->epoch) != MSV_OK || msv_reader_u8(&r, &m->content_type) != MSV_OK ||
        msv_mls_get_vec(&r, &m->ad, &m->ad_len) != MSV_OK ||
        msv_mls_get_vec(&r, &m->esd, &m->esd_len) != MSV_OK ||
        msv_mls_get_vec(&r, &m->ct, &m->ct_len) != MSV_OK || !msv_mls_reader_is_done(&r) ||
        !is_content_type(m->content_type))
        return MSV_ERR_PARSE;
    return MSV_OK;
}

/* Decrypts SenderData: leaf index, generation, reuse guard. */
static msv_err open_sender_data(const struct msv_mls_epoch *ep, const struct private_msg *m,
                                uint32_t *leaf, uint32_t *generation, uint8_t reuse_guard[4])
{
    uint8_t sd[SENDER_DATA_LEN], key[MSV_MLS_KEY_MAX], nonce[MSV_MLS_NN], *aad = NULL;
    size_t aad_len = 0;
    msv_err err;

    if (m->esd_len != SENDER_DATA_LEN + MSV_MLS_TAG_LEN)
        return MSV_ERR_AUTH;
    err =
        msv_mls_sender_data_key(ep->gc.suite, ep->sender_data_secret, m->ct, m->ct_len, key, nonce);
    if (err == MSV_OK)
        err = sender_data_aad(ep, m->content_type, &aad, &aad_len);
    if (err == MSV_OK)
        err = msv_mls_aead_open(ep->gc.suite, key, nonce, aad, aad_len, m->esd, m->esd_len, sd);
    if (err == MSV_OK) {
        *leaf = (uint32_t)sd[0] << 24 | (uint32_t)sd[1] << 16 | (uint32_t)sd[2] << 8 | sd[3];
        *generation = (uint32_t)sd[4] << 24 | (uint32_t)sd[5] << 16 | (uint32_t)sd[6] << 8 | sd[7];
        memcpy(reuse_guard, sd + 8, 4);
        if (*leaf >= ep->n_leaves || *generation > MSV_MLS_GENERATION_MAX)
            err = MSV_ERR_AUTH;
    }
    free(aad);
    sodium_memzero(key, sizeof(key));
    return err;
}

msv_err msv_mls_private_sender(const struct msv_mls_epoch *ep, const uint8_t *msg, size_t len,
                               uint32_t *leaf, uint8_t *content_type)
{
    struct private_msg m;
    uint32_t generation = 0;
    uint8_t guard[4];
    msv_err err = len > MSV_MLS_MESSAGE_MAX ? MSV_ERR_TOO_BIG : read_private(msg, len, &m);

    if (err != MSV_OK)
        return err;
    if (!is_this_epoch(ep, m.group_id, m.group_id_len, m.epoch))
        return MSV_ERR_AUTH;
    err = open_sender_data(ep, &m, leaf, &generation, guard);
    if (err == MSV_OK)
        *content_type = m.content_type;
    return err;
}

/* Reads PrivateMessageContent of content_type into c; the padding must be all zeros. */
static msv_err read_private_content(const uint8_t *pt, size_t len, struct msv_mls_content *c,
                                    const uint8_t **sig, size_t *sig_len)
{
    struct msv_reader r;
    uint8_t nonzero = 0;

    msv_reader_init(&r, pt, len);
    if (read_body(&r, c->content_type, &c->body, &c->body_len) != MSV_OK ||
        msv_mls_get_vec(&r, sig, sig_len) != MSV_OK)
        return MSV_ERR_AUTH;
    if (c->content_type == MSV_MLS_CONTENT_COMMIT &&
        msv_mls_get_vec(&r, &c->confirmation_tag, &c->confirmation_tag_len) != MSV_OK)
        return MSV_ERR_AUTH;
    for (size_t i = r.off; i < len; i++)
        nonzero |= pt[i];
    return nonzero == 0 ? MSV_OK : MSV_ERR_AUTH;
}

msv_err msv_mls_private_unprotect(const struct msv_mls_epoch *ep, const uint8_t *msg, size_t len,
                                  struct msv_mls_content *c, uint8_t **plain, size_t *plain_len,
                                  uint32_t *generation)
{
    struct private_msg m;
    struct msv_mls_content got;
    uint8_t key[MSV_MLS_KEY_MAX], nonce[MSV_MLS_NN], guard[4], *aad = NULL, *pt = NULL;
    const uint8_t *sig = NULL;
    size_t aad_len = 0, pt_len = 0, sig_len = 0;
    uint32_t gen = 0;
    msv_err err;

    if (len > MSV_MLS_MESSAGE_MAX)
        return MSV_ERR_TOO_BIG;
    err = read_private(msg, len, &m);
    if (err != MSV_OK)
        return err;
    if (!is_this_epoch(ep, m.group_id, m.group_id_len, m.epoch) || m.ct_len < MSV_MLS_TAG_LEN)
        return MSV_ERR_AUTH;
    memset(&got, 0, sizeof(got));
    got.content_type = m.content_type;
    got.authenticated_data = m.ad;
    got.authenticated_data_len = m.ad_len;
    err = open_sender_data(ep, &m, &got.leaf_index, &gen, guard);
    if (err == MSV_OK)
        err = content_key(ep, got.leaf_index, m.content_type, gen, guard, key, nonce);
    if (err == MSV_OK)
        err = content_aad(ep, m.content_type, m.ad, m.ad_len, &aad, &aad_len);
    pt_len = m.ct_len - MSV_MLS_TAG_LEN;
    if (err == MSV_OK && (pt = malloc(pt_len + 1)) == NULL)
        err = MSV_ERR_NOMEM;
    if (err == MSV_OK)
        err = msv_mls_aead_open(ep->gc.suite, key, nonce, aad, aad_len, m.ct, m.ct_len, pt);
    if (err == MSV_OK)
        err = read_private_content(pt, pt_len, &got, &sig, &sig_len);
    if (err == MSV_OK)
        err = verify_content(ep, MSV_MLS_WIRE_PRIVATE, &got, sig, sig_len);
    if (err == MSV_OK) {
        got.signature = sig;
        got.signature_len = sig_len;
        *c = got;
        *plain = pt;
        *plain_len = pt_len;
        *generation = gen;
        pt = NULL;
    }
    msv_secret_free(pt, pt_len + 1);
    free(aad);
    sodium_memzero(key, sizeof(key));
    return err;
}

msv_err msv_mls_transcript_update(const uint8_t interim_before[MSV_MLS_NH],
                                  const uint8_t *auth_content, size_t len,
                                  const uint8_t confirmation_key[MSV_MLS_NH],
                                  uint8_t confirmed[MSV_MLS_NH], uint8_t interim_after[MSV_MLS_NH])
{
    struct msv_reader r;
    struct msv_buf w;
    struct framed f;
    const uint8_t *sig, *tag;
    size_t sig_len, tag_len, input_len, buf_len = 0;
    uint16_t wire_format;
    uint8_t conf[MSV_MLS_NH], mac[MSV_MLS_NH], *buf = NULL;
    msv_err err;

    /* AuthenticatedContent: wire_format, FramedContent, FramedContentAuthData of a commit */
    msv_reader_init(&r, auth_content, len);
    if (msv_reader_u16be(&r, &wire_format) != MSV_OK || read_framed(&r, &f) != MSV_OK ||
        f.c.content_type != MSV_MLS_CONTENT_COMMIT || msv_mls_get_vec(&r, &sig, &sig_len) != MSV_OK)
        return MSV_ERR_PARSE;
    input_len = r.off; /* ConfirmedTranscriptHashInput: everything before the tag */
    if (msv_mls_get_vec(&r, &tag, &tag_len) != MSV_OK || !msv_mls_reader_is_done(&r))
        return MSV_ERR_PARSE;
    /* confirmed = Hash(interim_before || ConfirmedTranscriptHashInput) */
    msv_buf_init(&w, MSV_MLS_MESSAGE_MAX + MSV_MLS_NH);
    (void)msv_buf_put(&w, interim_before, MSV_MLS_NH);
    (void)msv_buf_put(&w, auth_content, input_len);
    err = msv_buf_finish(&w, &buf, &buf_len);
    if (err == MSV_OK)
        err = msv_mls_hash(buf, buf_len, conf);
    free(buf);
    buf = NULL;
    /* confirmation_tag = MAC(confirmation_key, confirmed_transcript_hash) (8.1) */
    if (err == MSV_OK)
        err = msv_mls_mac(confirmation_key, MSV_MLS_NH, conf, MSV_MLS_NH, mac);
    if (err == MSV_OK && (tag_len != MSV_MLS_NH || sodium_memcmp(mac, tag, MSV_MLS_NH) != 0))
        err = MSV_ERR_AUTH;
    if (err != MSV_OK)
        return err;
    /* interim = Hash(confirmed || InterimTranscriptHashInput {confirmation_tag<V>}) */
    msv_buf_init(&w, 2 * MSV_MLS_NH + 4);
    (void)msv_buf_put(&w, conf, MSV_MLS_NH);
    msv_mls_put_vec(&w, tag, tag_len);
    err = msv_buf_finish(&w, &buf, &buf_len);
    if (err == MSV_OK)
        err = msv_mls_hash(buf, buf_len, interim_after);
    free(buf);
    if (err == MSV_OK)
        memcpy(confirmed, conf, MSV_MLS_NH);
    return err;
}

/* A PublicMessage: FramedContent, auth data, and a member's membership tag (6.2). */
static msv_err skip_public(struct msv_reader *r)
{
    struct framed f;
    const uint8_t *p;
    size_t n;

    if (read_framed(r, &f) != MSV_OK || msv_mls_get_vec(r, &p, &n) != MSV_OK)
        return MSV_ERR_PARSE;
    if (f.c.content_type == MSV_MLS_CONTENT_COMMIT && msv_mls_get_vec(r, &p, &n) != MSV_OK)
        return MSV_ERR_PARSE;
    if (f.sender_type == MSV_MLS_SENDER_MEMBER && msv_mls_get_vec(r, &p, &n) != MSV_OK)
        return MSV_ERR_PARSE;
    return MSV_OK;
}

msv_err msv_mls_skip_message(struct msv_reader *r)
{
    struct private_msg m;
    uint16_t version, wire_format;
    size_t start = r->off;

    if (msv_reader_u16be(r, &version) != MSV_OK || msv_reader_u16be(r, &wire_format) != MSV_OK)
        return MSV_ERR_PARSE;
    if (version != 1)
        return MSV_ERR_UNSUPPORTED;
    switch (wire_format) {
    case MSV_MLS_WIRE_PUBLIC:
        return skip_public(r);
    case MSV_MLS_WIRE_PRIVATE:
        /* read_private wants the whole message: give it the rest */
        if (read_private(r->data + start, r->len - start, &m) != MSV_OK)
            return MSV_ERR_PARSE;
        r->off = r->len;
        return MSV_OK;
    case 3:
        return msv_mls_skip_welcome(r);
    case 4:
        return msv_mls_skip_group_info(r);
    case 5:
        return msv_mls_skip_key_package(r);
    default:
        return MSV_ERR_PARSE;
    }
}
