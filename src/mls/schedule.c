/*
 * The key schedule (RFC 9420 8), pre-shared keys (8.4), the exporter (8.5),
 * the secret tree and its ratchets (9, 9.1), the sender data keys (6.3.2)
 * and the transcript hashes (8.2).
 */
#include <stdlib.h>
#include <string.h>

#include <sodium.h>

#include "missive/util.h"
#include "mls/mls.h"

static const uint8_t zero_secret[MSV_MLS_NH];

msv_err msv_mls_group_context_encode(const struct msv_mls_group_context *gc, uint8_t **out,
                                     size_t *out_len)
{
    struct msv_buf w;

    /* GroupContext (8.1): version mls10 = 1, cipher_suite, group_id<V>, epoch, tree_hash<V>,
     * confirmed_transcript_hash<V>, extensions<V> */
    msv_buf_init(&w, MSV_MLS_MESSAGE_MAX);
    (void)msv_buf_put_u16be(&w, 1);
    (void)msv_buf_put_u16be(&w, (uint16_t)gc->suite);
    msv_mls_put_vec(&w, gc->group_id, gc->group_id_len);
    msv_mls_put_u64(&w, gc->epoch);
    msv_mls_put_vec(&w, gc->tree_hash, gc->tree_hash_len);
    msv_mls_put_vec(&w, gc->confirmed_transcript_hash, gc->confirmed_transcript_hash_len);
    msv_mls_put_vec(&w, gc->extensions, gc->extensions_len);
    return msv_buf_finish(&w, out, out_len);
}

static msv_err expand_label_str(const uint8_t secret[MSV_MLS_NH], const char *label,
                                const uint8_t *context, size_t context_len, uint8_t out[MSV_MLS_NH])
{
    return msv_mls_expand_label(secret, MSV_MLS_NH, (const uint8_t *)label, strlen(label), context,
                                context_len, out, MSV_MLS_NH);
}

/* The secrets derived from epoch_secret with DeriveSecret (8, table of 8.5-8.7). */
static msv_err derive_epoch(const uint8_t epoch[MSV_MLS_NH], struct msv_mls_epoch_secrets *s)
{
    const struct {
        const char *label;
        uint8_t *out;
    } d[] = {
        {"sender data", s->sender_data},
        {"encryption", s->encryption},
        {"exporter", s->exporter},
        {"external", s->external},
        {"confirm", s->confirmation_key},
        {"membership", s->membership_key},
        {"resumption", s->resumption_psk},
        {"authentication", s->epoch_authenticator},
        {"init", s->init},
    };

    for (size_t i = 0; i < sizeof(d) / sizeof(d[0]); i++) {
        msv_err err = msv_mls_derive_secret(epoch, MSV_MLS_NH, d[i].label, d[i].out);

        if (err != MSV_OK)
            return err;
    }
    return MSV_OK;
}

msv_err msv_mls_key_schedule_joiner(const uint8_t joiner[MSV_MLS_NH],
                                    const uint8_t psk_secret[MSV_MLS_NH],
                                    const uint8_t *group_context, size_t gc_len,
                                    struct msv_mls_epoch_secrets *out)
{
    struct msv_mls_epoch_secrets s;
    uint8_t member[MSV_MLS_NH], epoch[MSV_MLS_NH];
    msv_err err;

    memset(&s, 0, sizeof(s));
    memcpy(s.joiner, joiner, MSV_MLS_NH);
    err = msv_mls_extract(s.joiner, MSV_MLS_NH, psk_secret, MSV_MLS_NH, member);
    if (err == MSV_OK)
        err = msv_mls_derive_secret(member, MSV_MLS_NH, "welcome", s.welcome);
    if (err == MSV_OK)
        err = expand_label_str(member, "epoch", group_context, gc_len, epoch);
    if (err == MSV_OK)
        err = derive_epoch(epoch, &s);
    if (err == MSV_OK)
        memcpy(out, &s, sizeof(s));
    sodium_memzero(&s, sizeof(s));
    sodium_memzero(member, sizeof(member));
    sodium_memzero(epoch, sizeof(epoch));
    return err;
}

msv_err msv_mls_key_schedule(const uint8_t init_prev[MSV_MLS_NH],
                             const uint8_t commit_secret[MSV_MLS_NH],
                             const uint8_t psk_secret[MSV_MLS_NH], const uint8_t *group_context,
                             size_t gc_len, struct msv_mls_epoch_secrets *out)
{
    uint8_t prk[MSV_MLS_NH], joiner[MSV_MLS_NH];
    msv_err err;

    /* joiner_secret = ExpandWithLabel(Extract(init_secret, commit_secret), "joiner", GroupContext)
     */
    err = msv_mls_extract(init_prev, MSV_MLS_NH, commit_secret, MSV_MLS_NH, prk);
    if (err == MSV_OK)
        err = expand_label_str(prk, "joiner", group_context, gc_len, joiner);
    if (err == MSV_OK)
        err = msv_mls_key_schedule_joiner(joiner, psk_secret, group_context, gc_len, out);
    sodium_memzero(prk, sizeof(prk));
    sodium_memzero(joiner, sizeof(joiner));
    return err;
}

msv_err msv_mls_exporter(const uint8_t exporter_secret[MSV_MLS_NH], const uint8_t *label,
                         size_t label_len, const uint8_t *context, size_t context_len, uint8_t *out,
                         size_t out_len)
{
    uint8_t derived[MSV_MLS_NH], hash[MSV_MLS_NH];
    msv_err err;

    /* ExpandWithLabel(DeriveSecret(exporter_secret, label), "exported", Hash(context), length) */
    err = msv_mls_expand_label(exporter_secret, MSV_MLS_NH, label, label_len, NULL, 0, derived,
                               MSV_MLS_NH);
    if (err == MSV_OK)
        err = msv_mls_hash(context, context_len, hash);
    if (err == MSV_OK)
        err = msv_mls_expand_label(derived, MSV_MLS_NH, (const uint8_t *)"exported", 8, hash,
                                   sizeof(hash), out, out_len);
    sodium_memzero(derived, sizeof(derived));
    return err;
}

msv_err msv_mls_psk_id_read(struct msv_reader *r, struct msv_mls_psk_id *out)
{
    memset(out, 0, sizeof(*out));
    if (msv_reader_u8(r, &out->type) != MSV_OK)
        return MSV_ERR_PARSE;
    if (out->type != 1 && out->type != 2)
        return MSV_ERR_UNSUPPORTED;
    if (out->type == 2 && msv_reader_u8(r, &out->usage) != MSV_OK)
        return MSV_ERR_PARSE;
    if (msv_mls_get_vec(r, &out->id, &out->id_len) != MSV_OK ||
        (out->type == 2 && msv_mls_get_u64(r, &out->epoch) != MSV_OK) ||
        msv_mls_get_vec(r, &out->nonce, &out->nonce_len) != MSV_OK)
        return MSV_ERR_PARSE;
    return MSV_OK;
}

const struct msv_mls_external_psk *
msv_mls_external_psk_find(const struct msv_mls_external_psk *list, size_t n, const uint8_t *id,
                          size_t id_len)
{
    for (size_t k = 0; k < n; k++)
        if (list[k].id_len == id_len && memcmp(list[k].id, id, id_len) == 0)
            return &list[k];
    return NULL;
}

msv_err msv_mls_psk_id_external(const uint8_t *psk_id, size_t psk_id_len, const uint8_t *nonce,
                                size_t nonce_len, uint8_t **out, size_t *out_len)
{
    struct msv_buf w;

    /* PreSharedKeyID: psktype external (1), psk_id<V>, psk_nonce<V> */
    msv_buf_init(&w, MSV_MLS_MESSAGE_MAX);
    (void)msv_buf_put_u8(&w, 1);
    msv_mls_put_vec(&w, psk_id, psk_id_len);
    msv_mls_put_vec(&w, nonce, nonce_len);
    return msv_buf_finish(&w, out, out_len);
}

/* psk_input = ExpandWithLabel(Extract(0, psk), "derived psk", PSKLabel, Nh) */
static msv_err psk_input(const struct msv_mls_psk *p, uint16_t index, uint16_t count,
                         uint8_t out[MSV_MLS_NH])
{
    struct msv_buf w;
    uint8_t extracted[MSV_MLS_NH], *label = NULL;
    size_t label_len = 0;
    msv_err err;

    /* PSKLabel: PreSharedKeyID id; uint16 index; uint16 count */
    msv_buf_init(&w, MSV_MLS_MESSAGE_MAX);
    (void)msv_buf_put(&w, p->id, p->id_len);
    (void)msv_buf_put_u16be(&w, index);
    (void)msv_buf_put_u16be(&w, count);
    err = msv_buf_finish(&w, &label, &label_len);
    if (err != MSV_OK)
        return err;
    err = msv_mls_extract(zero_secret, MSV_MLS_NH, p->psk, p->psk_len, extracted);
    if (err == MSV_OK)
        err = msv_mls_expand_label(extracted, MSV_MLS_NH, (const uint8_t *)"derived psk", 11, label,
                                   label_len, out, MSV_MLS_NH);
    sodium_memzero(extracted, sizeof(extracted));
    free(label);
    return err;
}

msv_err msv_mls_psk_secret(const struct msv_mls_psk *psks, size_t n, uint8_t out[MSV_MLS_NH])
{
    uint8_t secret[MSV_MLS_NH] = {0}, input[MSV_MLS_NH], next[MSV_MLS_NH] = {0};
    msv_err err = MSV_OK;

    if (n > UINT16_MAX)
        return MSV_ERR_TOO_BIG;
    /* psk_secret_[i] = Extract(psk_input_[i-1], psk_secret_[i-1]) */
    for (size_t i = 0; i < n && err == MSV_OK; i++) {
        err = psk_input(&psks[i], (uint16_t)i, (uint16_t)n, input);
        if (err == MSV_OK)
            err = msv_mls_extract(input, MSV_MLS_NH, secret, MSV_MLS_NH, next);
        memcpy(secret, next, MSV_MLS_NH);
    }
    if (err == MSV_OK)
        memcpy(out, secret, MSV_MLS_NH);
    sodium_memzero(secret, sizeof(secret));
    sodium_memzero(input, sizeof(input));
    sodium_memzero(next, sizeof(next));
    return err;
}

msv_err msv_mls_secret_tree_leaf(const uint8_t encryption_secret[MSV_MLS_NH], uint32_t n_leaves,
                                 uint32_t leaf, uint8_t out[MSV_MLS_NH])
{
    uint8_t s[MSV_MLS_NH];
    uint32_t x, target;
    msv_err err = MSV_OK;

    /* a tree of RFC 9420 has a power of two leaves (7.8) */
    if (n_leaves == 0 || (n_leaves & (n_leaves - 1)) != 0 || n_leaves > (1u << 30) ||
        leaf >= n_leaves)
        return MSV_ERR_INVALID;
    target = 2 * leaf;
    x = msv_mls_tree_root(n_leaves);
    memcpy(s, encryption_secret, MSV_MLS_NH);
    /* 9: left = ExpandWithLabel(s, "tree", "left", Nh), right likewise */
    while (x != target && err == MSV_OK) {
        int left = target < x;

        err = expand_label_str(s, "tree", (const uint8_t *)(left ? "left" : "right"), left ? 4 : 5,
                               s);
        x = left ? msv_mls_tree_left(x) : msv_mls_tree_right(x);
    }
    if (err == MSV_OK)
        memcpy(out, s, MSV_MLS_NH);
    sodium_memzero(s, sizeof(s));
    return err;
}

msv_err msv_mls_ratchet_key(enum msv_mls_suite suite, const uint8_t leaf_secret[MSV_MLS_NH],
                            enum msv_mls_ratchet which, uint32_t generation, uint8_t *key,
                            uint8_t nonce[MSV_MLS_NN])
{
    uint8_t s[MSV_MLS_NH];
    msv_err err;

    if (generation > MSV_MLS_GENERATION_MAX)
        return MSV_ERR_TOO_BIG;
    err = expand_label_str(
        leaf_secret, which == MSV_MLS_RATCHET_HANDSHAKE ? "handshake" : "application", NULL, 0, s);
    if (err == MSV_OK)
        err = msv_mls_ratchet_key_from(suite, s, 0, generation, key, nonce);
    sodium_memzero(s, sizeof(s));
    return err;
}

msv_err msv_mls_ratchet_key_from(enum msv_mls_suite suite, const uint8_t secret[MSV_MLS_NH],
                                 uint32_t from, uint32_t generation, uint8_t *key,
                                 uint8_t nonce[MSV_MLS_NN])
{
    uint8_t s[MSV_MLS_NH];
    msv_err err = MSV_OK;

    if (generation < from)
        return MSV_ERR_INVALID;
    memcpy(s, secret, MSV_MLS_NH);
    /* 9.1: secret_[j+1] = DeriveTreeSecret(secret_[j], "secret", j, Nh) */
    for (uint32_t j = from; j < generation && err == MSV_OK; j++)
        err = msv_mls_derive_tree_secret(s, MSV_MLS_NH, "secret", j, s, MSV_MLS_NH);
    if (err == MSV_OK)
        err = msv_mls_derive_tree_secret(s, MSV_MLS_NH, "key", generation, key,
                                         msv_mls_suite_nk(suite));
    if (err == MSV_OK)
        err = msv_mls_derive_tree_secret(s, MSV_MLS_NH, "nonce", generation, nonce, MSV_MLS_NN);
    sodium_memzero(s, sizeof(s));
    return err;
}

msv_err msv_mls_sender_data_key(enum msv_mls_suite suite,
                                const uint8_t sender_data_secret[MSV_MLS_NH], const uint8_t *ct,
                                size_t ct_len, uint8_t *key, uint8_t nonce[MSV_MLS_NN])
{
    /* 6.3.2: the sample is the first Nh bytes of the ciphertext, or all of a shorter one */
    size_t sample = ct_len < MSV_MLS_NH ? ct_len : MSV_MLS_NH;
    msv_err err;

    err = msv_mls_expand_label(sender_data_secret, MSV_MLS_NH, (const uint8_t *)"key", 3, ct,
                               sample, key, msv_mls_suite_nk(suite));
    if (err == MSV_OK)
        err = msv_mls_expand_label(sender_data_secret, MSV_MLS_NH, (const uint8_t *)"nonce", 5, ct,
                                   sample, nonce, MSV_MLS_NN);
    return err;
}
