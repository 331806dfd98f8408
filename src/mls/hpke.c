/*
 * HPKE (RFC 9180) in base mode for DHKEM(X25519, HKDF-SHA256), HKDF-SHA256
 * and the suite's AEAD (AES-128-GCM, id 0x0001, or ChaCha20-Poly1305, id
 * 0x0003), single-shot and with a context for several messages and the
 * secret export (5.3); and MLS's EncryptWithLabel on top (RFC 9420 5.1.3).
 */
#include <stdlib.h>
#include <string.h>

#include <sodium.h>

#include "missive/util.h"
#include "mls/mls.h"

#define KEM_SUITE_ID_LEN 5   /* "KEM" || kem_id */
#define HPKE_SUITE_ID_LEN 10 /* "HPKE" || kem_id || kdf_id || aead_id */
#define LABEL_MAX 32
/* MLS puts a whole encrypted GroupInfo in the info of a Welcome's encryption (EncryptContext) */
#define INFO_MAX (MSV_MLS_MESSAGE_MAX + 64)

struct suite_id {
    uint8_t b[HPKE_SUITE_ID_LEN];
    size_t len;
};

static struct suite_id kem_suite_id(void)
{
    struct suite_id s = {{'K', 'E', 'M', 0x00, 0x20}, KEM_SUITE_ID_LEN};

    return s;
}

static struct suite_id hpke_suite_id(enum msv_mls_suite suite)
{
    uint8_t aead = suite == MSV_MLS_SUITE_X25519_AES128GCM ? 0x01 : 0x03;
    struct suite_id s = {{'H', 'P', 'K', 'E', 0x00, 0x20, 0x00, 0x01, 0x00, aead},
                         HPKE_SUITE_ID_LEN};

    return s;
}

/*
 * The labelled input of RFC 9180 4: [I2OSP(L, 2)] || "HPKE-v1" || suite_id ||
 * label || data, the length only for LabeledExpand (out_len > 0).
 */
static msv_err labeled_input(const struct suite_id *sid, size_t out_len, const char *label,
                             const uint8_t *data, size_t data_len, uint8_t **in, size_t *in_len)
{
    struct msv_buf w;

    if (out_len > UINT16_MAX)
        return MSV_ERR_INVALID;
    msv_buf_init(&w, 9 + sid->len + LABEL_MAX + INFO_MAX);
    if (out_len > 0)
        (void)msv_buf_put_u16be(&w, (uint16_t)out_len);
    (void)msv_buf_put(&w, (const uint8_t *)"HPKE-v1", 7);
    (void)msv_buf_put(&w, sid->b, sid->len);
    (void)msv_buf_put(&w, (const uint8_t *)label, strlen(label));
    (void)msv_buf_put(&w, data, data_len);
    return msv_buf_finish(&w, in, in_len);
}

/* LabeledExtract(salt, label, ikm) */
static msv_err labeled_extract(const struct suite_id *sid, const uint8_t *salt, size_t salt_len,
                               const char *label, const uint8_t *ikm, size_t ikm_len,
                               uint8_t out[MSV_MLS_NH])
{
    uint8_t *in = NULL;
    size_t in_len = 0;
    msv_err err = labeled_input(sid, 0, label, ikm, ikm_len, &in, &in_len);

    if (err == MSV_OK)
        err = msv_mls_extract(salt, salt_len, in, in_len, out);
    msv_secret_free(in, in_len);
    return err;
}

/* LabeledExpand(prk, label, info, L) */
static msv_err labeled_expand(const struct suite_id *sid, const uint8_t prk[MSV_MLS_NH],
                              const char *label, const uint8_t *info, size_t info_len, uint8_t *out,
                              size_t out_len)
{
    uint8_t *in = NULL;
    size_t in_len = 0;
    msv_err err;

    if (out_len == 0)
        return MSV_ERR_INVALID;
    err = labeled_input(sid, out_len, label, info, info_len, &in, &in_len);
    if (err == MSV_OK)
        err = msv_mls_expand(prk, MSV_MLS_NH, in, in_len, out, out_len);
    msv_secret_free(in, in_len);
    return err;
}

msv_err msv_mls_hpke_derive_keypair(const uint8_t *ikm, size_t ikm_len, uint8_t sk[32],
                                    uint8_t pk[32])
{
    struct suite_id sid = kem_suite_id();
    uint8_t prk[MSV_MLS_NH], s[32];
    msv_err err;

    /* RFC 9180 7.1.3: for X25519 the expanded bytes are the private key as they are */
    err = labeled_extract(&sid, NULL, 0, "dkp_prk", ikm, ikm_len, prk);
    if (err == MSV_OK)
        err = labeled_expand(&sid, prk, "sk", NULL, 0, s, sizeof(s));
    if (err == MSV_OK && crypto_scalarmult_base(pk, s) != 0)
        err = MSV_ERR_CRYPTO;
    if (err == MSV_OK)
        memcpy(sk, s, 32);
    sodium_memzero(prk, sizeof(prk));
    sodium_memzero(s, sizeof(s));
    return err;
}

/* ExtractAndExpand(dh, enc || pkR) of DHKEM (RFC 9180 4.1) */
static msv_err kem_shared_secret(const uint8_t dh[32], const uint8_t enc[32],
                                 const uint8_t pk_r[32], uint8_t shared[MSV_MLS_NH])
{
    struct suite_id sid = kem_suite_id();
    uint8_t prk[MSV_MLS_NH], kem_context[64];
    msv_err err;

    memcpy(kem_context, enc, 32);
    memcpy(kem_context + 32, pk_r, 32);
    err = labeled_extract(&sid, NULL, 0, "eae_prk", dh, 32, prk);
    if (err == MSV_OK)
        err = labeled_expand(&sid, prk, "shared_secret", kem_context, sizeof(kem_context), shared,
                             MSV_MLS_NH);
    sodium_memzero(prk, sizeof(prk));
    return err;
}

/* KeySchedule of RFC 9180 5.1 in mode_base, without a PSK */
static msv_err key_schedule(enum msv_mls_suite suite, const uint8_t shared[MSV_MLS_NH],
                            const uint8_t *info, size_t info_len, struct msv_mls_hpke_ctx *ctx)
{
    struct suite_id sid = hpke_suite_id(suite);
    uint8_t ksc[1 + 2 * MSV_MLS_NH], secret[MSV_MLS_NH];
    msv_err err;

    if (info_len > INFO_MAX)
        return MSV_ERR_TOO_BIG;
    memset(ctx, 0, sizeof(*ctx));
    ctx->suite = suite;
    ksc[0] = 0x00; /* mode_base */
    err = labeled_extract(&sid, NULL, 0, "psk_id_hash", NULL, 0, ksc + 1);
    if (err == MSV_OK)
        err = labeled_extract(&sid, NULL, 0, "info_hash", info, info_len, ksc + 1 + MSV_MLS_NH);
    if (err == MSV_OK)
        err = labeled_extract(&sid, shared, MSV_MLS_NH, "secret", NULL, 0, secret);
    if (err == MSV_OK)
        err = labeled_expand(&sid, secret, "key", ksc, sizeof(ksc), ctx->key,
                             msv_mls_suite_nk(suite));
    if (err == MSV_OK)
        err = labeled_expand(&sid, secret, "base_nonce", ksc, sizeof(ksc), ctx->base_nonce,
                             MSV_MLS_NN);
    if (err == MSV_OK)
        err =
            labeled_expand(&sid, secret, "exp", ksc, sizeof(ksc), ctx->exporter_secret, MSV_MLS_NH);
    sodium_memzero(secret, sizeof(secret));
    if (err != MSV_OK)
        msv_mls_hpke_ctx_wipe(ctx);
    return err;
}

void msv_mls_hpke_ctx_wipe(struct msv_mls_hpke_ctx *ctx)
{
    sodium_memzero(ctx, sizeof(*ctx));
}

msv_err msv_mls_hpke_setup_s(enum msv_mls_suite suite, const uint8_t pk_r[32], const uint8_t *info,
                             size_t info_len, const uint8_t *eph_sk, uint8_t enc[32],
                             struct msv_mls_hpke_ctx *ctx)
{
    uint8_t sk_e[32], pk_e[32], dh[32], shared[MSV_MLS_NH];
    msv_err err = MSV_ERR_AUTH;

    if (eph_sk != NULL)
        memcpy(sk_e, eph_sk, 32);
    else
        randombytes_buf(sk_e, sizeof(sk_e));
    if (crypto_scalarmult_base(pk_e, sk_e) != 0)
        goto out;
    /* libsodium refuses an all-zero result: a small-order pk_r (RFC 9180 7.1.4) */
    if (crypto_scalarmult(dh, sk_e, pk_r) != 0)
        goto out;
    err = kem_shared_secret(dh, pk_e, pk_r, shared);
    if (err == MSV_OK)
        err = key_schedule(suite, shared, info, info_len, ctx);
    if (err == MSV_OK)
        memcpy(enc, pk_e, 32);
out:
    sodium_memzero(sk_e, sizeof(sk_e));
    sodium_memzero(dh, sizeof(dh));
    sodium_memzero(shared, sizeof(shared));
    return err;
}

msv_err msv_mls_hpke_setup_r(enum msv_mls_suite suite, const uint8_t enc[32],
                             const uint8_t sk_r[32], const uint8_t *info, size_t info_len,
                             struct msv_mls_hpke_ctx *ctx)
{
    uint8_t pk_r[32], dh[32], shared[MSV_MLS_NH];
    msv_err err = MSV_ERR_AUTH;

    if (crypto_scalarmult_base(pk_r, sk_r) != 0 || crypto_scalarmult(dh, sk_r, enc) != 0)
        goto out;
    err = kem_shared_secret(dh, enc, pk_r, shared);
    if (err == MSV_OK)
        err = key_schedule(suite, shared, info, info_len, ctx);
out:
    sodium_memzero(dh, sizeof(dh));
    sodium_memzero(shared, sizeof(shared));
    return err;
}

static msv_err next_nonce(struct msv_mls_hpke_ctx *ctx, uint8_t nonce[MSV_MLS_NN])
{
    /* the sequence number is 64 bits here, below Nn = 96 bits' limit */
    if (ctx->seq == UINT64_MAX)
        return MSV_ERR_TOO_BIG;
    memcpy(nonce, ctx->base_nonce, MSV_MLS_NN);
    for (int i = 0; i < 8; i++)
        nonce[MSV_MLS_NN - 1 - i] ^= (uint8_t)(ctx->seq >> (8 * i));
    return MSV_OK;
}

msv_err msv_mls_hpke_seal(struct msv_mls_hpke_ctx *ctx, const uint8_t *aad, size_t aad_len,
                          const uint8_t *pt, size_t pt_len, uint8_t *ct)
{
    uint8_t nonce[MSV_MLS_NN];
    msv_err err = next_nonce(ctx, nonce);

    if (err == MSV_OK)
        err = msv_mls_aead_seal(ctx->suite, ctx->key, nonce, aad, aad_len, pt, pt_len, ct);
    if (err == MSV_OK)
        ctx->seq++;
    return err;
}

msv_err msv_mls_hpke_open(struct msv_mls_hpke_ctx *ctx, const uint8_t *aad, size_t aad_len,
                          const uint8_t *ct, size_t ct_len, uint8_t *pt)
{
    uint8_t nonce[MSV_MLS_NN];
    msv_err err = next_nonce(ctx, nonce);

    if (err == MSV_OK)
        err = msv_mls_aead_open(ctx->suite, ctx->key, nonce, aad, aad_len, ct, ct_len, pt);
    if (err == MSV_OK)
        ctx->seq++;
    return err;
}

msv_err msv_mls_hpke_export(const struct msv_mls_hpke_ctx *ctx, const uint8_t *context,
                            size_t context_len, uint8_t *out, size_t out_len)
{
    struct suite_id sid = hpke_suite_id(ctx->suite);

    if (context_len > INFO_MAX || out_len > 255 * MSV_MLS_NH)
        return MSV_ERR_TOO_BIG;
    return labeled_expand(&sid, ctx->exporter_secret, "sec", context, context_len, out, out_len);
}

/* EncryptContext: opaque label<V> = "MLS 1.0 " || label; opaque context<V> */
static msv_err encrypt_context(const char *label, const uint8_t *context, size_t context_len,
                               uint8_t **out, size_t *out_len)
{
    struct msv_buf w;
    size_t n = strlen(label);

    msv_buf_init(&w, INFO_MAX);
    msv_mls_put_varint(&w, 8 + n);
    (void)msv_buf_put(&w, (const uint8_t *)"MLS 1.0 ", 8);
    (void)msv_buf_put(&w, (const uint8_t *)label, n);
    msv_mls_put_vec(&w, context, context_len);
    return msv_buf_finish(&w, out, out_len);
}

msv_err msv_mls_encrypt_label(enum msv_mls_suite suite, const uint8_t pk[32], const char *label,
                              const uint8_t *context, size_t context_len, const uint8_t *pt,
                              size_t pt_len, uint8_t kem_output[32], uint8_t **ct)
{
    struct msv_mls_hpke_ctx ctx;
    uint8_t *info = NULL, *c = NULL;
    size_t info_len = 0;
    msv_err err;

    if (pt_len > MSV_MLS_MESSAGE_MAX)
        return MSV_ERR_TOO_BIG;
    err = encrypt_context(label, context, context_len, &info, &info_len);
    if (err != MSV_OK)
        return err;
    err = msv_mls_hpke_setup_s(suite, pk, info, info_len, NULL, kem_output, &ctx);
    if (err != MSV_OK)
        goto out;
    c = malloc(pt_len + MSV_MLS_TAG_LEN);
    err = c == NULL ? MSV_ERR_NOMEM : msv_mls_hpke_seal(&ctx, NULL, 0, pt, pt_len, c);
    if (err == MSV_OK) {
        *ct = c;
        c = NULL;
    }
out:
    free(c);
    msv_mls_hpke_ctx_wipe(&ctx);
    free(info);
    return err;
}

msv_err msv_mls_decrypt_label(enum msv_mls_suite suite, const uint8_t sk[32], const char *label,
                              const uint8_t *context, size_t context_len, const uint8_t *kem_output,
                              size_t kem_output_len, const uint8_t *ct, size_t ct_len, uint8_t **pt,
                              size_t *pt_len)
{
    struct msv_mls_hpke_ctx ctx;
    uint8_t *info = NULL, *p = NULL;
    size_t info_len = 0;
    msv_err err;

    if (kem_output_len != 32 || ct_len < MSV_MLS_TAG_LEN)
        return MSV_ERR_AUTH;
    err = encrypt_context(label, context, context_len, &info, &info_len);
    if (err != MSV_OK)
        return err;
    memset(&ctx, 0, sizeof(ctx));
    err = msv_mls_hpke_setup_r(suite, kem_output, sk, info, info_len, &ctx);
    if (err != MSV_OK)
        goto out;
    /* one byte more so that an empty plaintext still has an allocation */
    p = malloc(ct_len - MSV_MLS_TAG_LEN + 1);
    err = p == NULL ? MSV_ERR_NOMEM : msv_mls_hpke_open(&ctx, NULL, 0, ct, ct_len, p);
    if (err == MSV_OK) {
        *pt = p;
        *pt_len = ct_len - MSV_MLS_TAG_LEN;
        p = NULL;
    }
out:
    free(p);
    msv_mls_hpke_ctx_wipe(&ctx);
    free(info);
    return err;
}
