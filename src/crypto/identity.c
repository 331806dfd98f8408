/*
 * Device identities. The public encoding of each suite is a SEQUENCE of
 * tagged elements (der.c): classic [1][2] exactly as iMessage publishes it,
 * ecies [1][3][4], modern [5][6][7]. The secret export is
 *   "MSVK" || u8 version 1 || u8 suite || u32be len || public encoding || SEQUENCE of secrets
 * and import checks that every secret key matches its public key.
 */
#include <stdlib.h>
#include <string.h>

#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/x509.h>
#include <sodium.h>

#include "crypto/internal.h"
#include "missive/util.h"
#include "util/buf.h"

static const char ecies_prekey_context[] = "MSV-ecies-prekey-v1";
static const char modern_idkey_context[] = "MSV-modern-idkey-v1";
static const uint8_t export_magic[4] = {'M', 'S', 'V', 'K'};
#define EXPORT_VERSION 1
#define RSA_E 65537

const char *msv_suite_name(enum msv_suite suite)
{
    switch (suite) {
    case MSV_SUITE_CLASSIC:
        return "classic";
    case MSV_SUITE_ECIES:
        return "ecies";
    case MSV_SUITE_MODERN:
        return "modern";
    default:
        return "unknown";
    }
}

msv_err msv_suite_from_name(const char *name, enum msv_suite *out)
{
    for (int s = MSV_SUITE_CLASSIC; s <= MSV_SUITE_MODERN; s++) {
        if (strcmp(name, msv_suite_name((enum msv_suite)s)) == 0) {
            *out = (enum msv_suite)s;
            return MSV_OK;
        }
    }
    return MSV_ERR_UNSUPPORTED;
}

static int rsa_bits_allowed(int bits)
{
    return bits == 1280 || bits == 2048 || bits == 3072;
}

void msv_public_identity_free(struct msv_public_identity *pub)
{
    if (pub == NULL)
        return;
    EVP_PKEY_free(pub->sign_pk);
    EVP_PKEY_free(pub->rsa_pk);
    EVP_PKEY_free(pub->prekey_pk);
    free(pub->enc);
    free(pub);
}

/* PKCS#1 RSAPublicKey, canonical DER, e = 65537, an allowed size. */
static msv_err parse_rsa_public(const struct msv_elem *e, EVP_PKEY **out)
{
    const unsigned char *p = e->value;
    unsigned char *again = NULL;
    EVP_PKEY *pk = d2i_PublicKey(EVP_PKEY_RSA, NULL, &p, (long)e->value_len);
    BIGNUM *exp = NULL;
    msv_err err = MSV_ERR_PARSE;
    int len;

    if (pk == NULL)
        return MSV_ERR_PARSE;
    if (p != e->value + e->value_len || !rsa_bits_allowed(EVP_PKEY_get_bits(pk)))
        goto out;
    if (EVP_PKEY_get_bn_param(pk, OSSL_PKEY_PARAM_RSA_E, &exp) != 1 || !BN_is_word(exp, RSA_E))
        goto out;
    /* The identity hash covers these bytes: accept only the one encoding OpenSSL writes. */
    len = i2d_PublicKey(pk, &again);
    if (len < 0 || (size_t)len != e->value_len || memcmp(again, e->value, e->value_len) != 0)
        goto out;
    *out = pk;
    pk = NULL;
    err = MSV_OK;
out:
    OPENSSL_free(again);
    BN_free(exp);
    EVP_PKEY_free(pk);
    return err;
}

static msv_err parse_p256_elem(const struct msv_elem *e, EVP_PKEY **pk, uint8_t *point)
{
    msv_err err = msv_p256_from_point(e->value, e->value_len, pk);

    if (err == MSV_OK)
        memcpy(point, e->value, MSV_P256_POINT_LEN);
    return err;
}

/* The element of each tag (NULL if absent), indexed by tag. */
typedef const struct msv_elem *elems_by_tag[MSV_TAG_MODERN_PQ + 1];

/* The P-256 signing key is shared by classic and ecies: parsed once. */
static msv_err build_sign(struct msv_public_identity *pub, const elems_by_tag e)
{
    if (pub->sign_pk != NULL)
        return MSV_OK;
    return parse_p256_elem(e[MSV_TAG_SIGN_P256], &pub->sign_pk, pub->sign_point);
}

static msv_err build_classic(struct msv_public_identity *pub, const elems_by_tag e)
{
    msv_err err = build_sign(pub, e);

    if (err != MSV_OK)
        return err;
    return parse_rsa_public(e[MSV_TAG_RSA_PUB], &pub->rsa_pk);
}

static msv_err build_ecies(struct msv_public_identity *pub, const elems_by_tag e)
{
    const struct msv_elem *pre = e[MSV_TAG_PREKEY], *sig = e[MSV_TAG_PREKEY_SIG];
    const uint8_t *parts[2] = {(const uint8_t *)ecies_prekey_context, pre->value};
    size_t lens[2] = {sizeof(ecies_prekey_context) - 1, pre->value_len};
    msv_err err;

    err = build_sign(pub, e);
    if (err == MSV_OK)
        err = parse_p256_elem(pre, &pub->prekey_pk, pub->prekey_point);
    if (err != MSV_OK)
        return err;
    err = msv_ecdsa_verify(pub->sign_pk, EVP_sha256(), parts, lens, 2, sig->value, sig->value_len);
    return err == MSV_OK ? MSV_OK : MSV_ERR_PARSE;
}

static msv_err build_modern(struct msv_public_identity *pub, const elems_by_tag e)
{
    const struct msv_elem *ed = e[MSV_TAG_ED25519], *x = e[MSV_TAG_X25519],
                          *sig = e[MSV_TAG_X25519_SIG];
    uint8_t msg[sizeof(modern_idkey_context) - 1 + 32];

    if (ed->value_len != 32 || x->value_len != 32 || sig->value_len != 64)
        return MSV_ERR_PARSE;
    memcpy(pub->ed_pk, ed->value, 32);
    memcpy(pub->x_pk, x->value, 32);
    memcpy(msg, modern_idkey_context, sizeof(modern_idkey_context) - 1);
    memcpy(msg + sizeof(modern_idkey_context) - 1, pub->x_pk, 32);
    /* libsodium rejects small-order and non-canonical public keys here. */
    if (crypto_sign_verify_detached(sig->value, msg, sizeof(msg), pub->ed_pk) != 0)
        return MSV_ERR_PARSE;
    /* the capability is covered by the identity hash: by the fingerprint, the safety number
     * and the transparency log; one encoding only */
    if (e[MSV_TAG_MODERN_PQ] != NULL) {
        if (e[MSV_TAG_MODERN_PQ]->value_len != 1 || e[MSV_TAG_MODERN_PQ]->value[0] != 1)
            return MSV_ERR_PARSE;
        pub->pq = 1;
    }
    return MSV_OK;
}

struct suite_layout {
    enum msv_suite suite;
    unsigned tags; /* a bit per element tag */
    msv_err (*build)(struct msv_public_identity *pub, const elems_by_tag e);
};

#define TAG(t) (1u << (t))

/* In the order their keys are built: classic and ecies share the signing key. */
static const struct suite_layout layouts[] = {
    {MSV_SUITE_CLASSIC, TAG(MSV_TAG_SIGN_P256) | TAG(MSV_TAG_RSA_PUB), build_classic},
    {MSV_SUITE_ECIES, TAG(MSV_TAG_SIGN_P256) | TAG(MSV_TAG_PREKEY) | TAG(MSV_TAG_PREKEY_SIG),
     build_ecies},
    {MSV_SUITE_MODERN, TAG(MSV_TAG_ED25519) | TAG(MSV_TAG_X25519) | TAG(MSV_TAG_X25519_SIG),
     build_modern},
};
#define N_LAYOUTS (sizeof(layouts) / sizeof(layouts[0]))

/*
 * The suites whose elements are all present; 0 unless every element belongs
 * to one of them (an identity is the union of whole suite layouts).
 */
static unsigned suites_of_elems(const struct msv_elem *e, size_t n, elems_by_tag by_tag)
{
    unsigned present = 0, covered = 0, suites = 0;

    for (size_t i = 0; i < n; i++) {
        if (e[i].tag > MSV_TAG_MODERN_PQ)
            return 0;
        present |= TAG(e[i].tag);
        if (by_tag != NULL)
            by_tag[e[i].tag] = &e[i];
    }
    for (size_t i = 0; i < N_LAYOUTS; i++) {
        if ((present & layouts[i].tags) == layouts[i].tags) {
            suites |= MSV_SUITE_BIT(layouts[i].suite);
            covered |= layouts[i].tags;
        }
    }
    /* the post-quantum capability is an optional element of the modern layout */
    if (suites & MSV_SUITE_BIT(MSV_SUITE_MODERN))
        covered |= TAG(MSV_TAG_MODERN_PQ);
    return (present & ~covered) == 0 ? suites : 0;
}

/* The best of the suites in mask: modern, then ecies, then classic. */
static enum msv_suite best_suite(unsigned mask)
{
    for (int s = MSV_SUITE_MODERN; s >= MSV_SUITE_CLASSIC; s--) {
        if (mask & MSV_SUITE_BIT(s))
            return (enum msv_suite)s;
    }
    return MSV_SUITE_ANY;
}

enum msv_suite msv_suite_common(unsigned a, unsigned b)
{
    return best_suite(a & b);
}

unsigned msv_identity_suites_of(const uint8_t *in, size_t len)
{
    struct msv_elem elems[MSV_ELEM_MAX];
    size_t n;

    if (msv_elems_parse(in, len, elems, MSV_ELEM_MAX, &n) != MSV_OK)
        return 0;
    return suites_of_elems(elems, n, NULL);
}

msv_err msv_public_identity_parse(enum msv_suite suite, const uint8_t *in, size_t len,
                                  struct msv_public_identity **out)
{
    struct msv_elem elems[MSV_ELEM_MAX];
    elems_by_tag by_tag = {0};
    const uint8_t *parts[MSV_ELEM_MAX];
    size_t lens[MSV_ELEM_MAX], n;
    struct msv_public_identity *pub = NULL;
    unsigned suites;
    msv_err err;

    err = msv_elems_parse(in, len, elems, MSV_ELEM_MAX, &n);
    if (err != MSV_OK)
        return err;
    suites = suites_of_elems(elems, n, by_tag);
    /* suite may come from untrusted bytes (a device set's record): no shift past the bits */
    if (suites == 0 || (unsigned)suite > MSV_SUITE_MODERN ||
        (suite != MSV_SUITE_ANY && !(suites & MSV_SUITE_BIT(suite))))
        return MSV_ERR_PARSE;
    pub = calloc(1, sizeof(*pub));
    if (pub == NULL)
        return MSV_ERR_NOMEM;
    pub->suite = suite != MSV_SUITE_ANY ? suite : best_suite(suites);
    pub->suites = suites;
    for (size_t i = 0; i < N_LAYOUTS && err == MSV_OK; i++) {
        if (suites & MSV_SUITE_BIT(layouts[i].suite))
            err = layouts[i].build(pub, by_tag);
    }
    if (err != MSV_OK)
        goto out;
    for (size_t i = 0; i < n; i++) {
        parts[i] = elems[i].contents;
        lens[i] = elems[i].contents_len;
    }
    err = msv_sha256_parts(parts, lens, n, pub->hash);
    if (err != MSV_OK)
        goto out;
    err = MSV_ERR_NOMEM;
    pub->enc = malloc(len);
    if (pub->enc == NULL)
        goto out;
    memcpy(pub->enc, in, len);
    pub->enc_len = len;
    *out = pub;
    pub = NULL;
    err = MSV_OK;
out:
    msv_public_identity_free(pub);
    return err;
}

msv_err msv_public_identity_dup(const struct msv_public_identity *pub,
                                struct msv_public_identity **out)
{
    return msv_public_identity_parse(pub->suite, pub->enc, pub->enc_len, out);
}

enum msv_suite msv_public_identity_suite(const struct msv_public_identity *pub)
{
    return pub->suite;
}

unsigned msv_public_identity_suites(const struct msv_public_identity *pub)
{
    return pub->suites;
}

int msv_public_identity_is_pq(const struct msv_public_identity *pub)
{
    return pub->pq;
}

const uint8_t *msv_public_identity_bytes(const struct msv_public_identity *pub, size_t *len)
{
    *len = pub->enc_len;
    return pub->enc;
}

void msv_public_identity_hash(const struct msv_public_identity *pub,
                              uint8_t out[MSV_IDENTITY_HASH_LEN])
{
    memcpy(out, pub->hash, MSV_IDENTITY_HASH_LEN);
}

void msv_fingerprint_text(const uint8_t hash[MSV_IDENTITY_HASH_LEN],
                          char out[MSV_FINGERPRINT_TEXT_LEN])
{
    static const char digits[] = "0123456789abcdef";
    size_t o = 0;

    for (size_t i = 0; i < MSV_IDENTITY_HASH_LEN; i++) {
        if (i > 0 && i % 2 == 0)
            out[o++] = ' ';
        out[o++] = digits[hash[i] >> 4];
        out[o++] = digits[hash[i] & 15];
    }
    out[o] = '\0';
}

/* ---- secret identities ---------------------------------------------------------------- */

void msv_identity_free(struct msv_identity *id)
{
    if (id == NULL)
        return;
    msv_public_identity_free(id->pub);
    EVP_PKEY_free(id->sign_sk);
    EVP_PKEY_free(id->rsa_sk);
    EVP_PKEY_free(id->prekey_sk);
    if (id->modern != NULL)
        sodium_free(id->modern);
    free(id);
}

const struct msv_public_identity *msv_identity_public(const struct msv_identity *id)
{
    return id->pub;
}

enum msv_suite msv_identity_suite(const struct msv_identity *id)
{
    return id->pub->suite;
}

unsigned msv_identity_suites(const struct msv_identity *id)
{
    return id->pub->suites;
}

/* A P-256 secret scalar whose point must equal the published one. */
static msv_err load_p256_secret(const struct msv_elem *e, const uint8_t *want_point, EVP_PKEY **out)
{
    uint8_t point[MSV_P256_POINT_LEN];

    if (e == NULL || e->value_len != MSV_P256_SCALAR_LEN)
        return MSV_ERR_PARSE;
    if (msv_p256_from_scalar(e->value, out, point) != MSV_OK)
        return MSV_ERR_PARSE;
    if (memcmp(point, want_point, sizeof(point)) != 0)
        return MSV_ERR_PARSE;
    return MSV_OK;
}

static msv_err load_rsa_secret(const struct msv_elem *e, const EVP_PKEY *want, EVP_PKEY **out)
{
    const unsigned char *p;
    EVP_PKEY_CTX *ctx;
    int consistent;

    if (e == NULL)
        return MSV_ERR_PARSE;
    p = e->value;
    *out = d2i_PrivateKey(EVP_PKEY_RSA, NULL, &p, (long)e->value_len);
    if (*out == NULL || p != e->value + e->value_len || EVP_PKEY_eq(*out, want) != 1)
        return MSV_ERR_PARSE;
    /* EVP_PKEY_eq compares public parts only; a damaged private exponent or CRT value
     * would otherwise import and fail (or leak through faults) at the first decryption. */
    ctx = EVP_PKEY_CTX_new_from_pkey(NULL, *out, NULL);
    if (ctx == NULL)
        return MSV_ERR_NOMEM;
    consistent = EVP_PKEY_check(ctx) == 1;
    EVP_PKEY_CTX_free(ctx);
    return consistent ? MSV_OK : MSV_ERR_PARSE;
}

static msv_err load_modern_secret(const struct msv_elem *ed, const struct msv_elem *x,
                                  const struct msv_public_identity *pub,
                                  struct msv_modern_secret **out)
{
    uint8_t ed_pk[32], x_pk[32];
    struct msv_modern_secret *s;

    if (ed == NULL || x == NULL || ed->value_len != 32 || x->value_len != 32)
        return MSV_ERR_PARSE;
    s = sodium_malloc(sizeof(*s));
    if (s == NULL)
        return MSV_ERR_NOMEM;
    *out = s;
    if (crypto_sign_seed_keypair(ed_pk, s->ed_sk, ed->value) != 0)
        return MSV_ERR_CRYPTO;
    memcpy(s->x_sk, x->value, 32);
    if (crypto_scalarmult_base(x_pk, s->x_sk) != 0)
        return MSV_ERR_PARSE;
    if (memcmp(ed_pk, pub->ed_pk, 32) != 0 || memcmp(x_pk, pub->x_pk, 32) != 0)
        return MSV_ERR_PARSE;
    return MSV_OK;
}

/* Joins a parsed public identity with its secret elements; takes ownership of pub. */
static msv_err identity_assemble(struct msv_public_identity *pub, const struct msv_elem *sec,
                                 size_t n, struct msv_identity **out)
{
    struct msv_identity *id = calloc(1, sizeof(*id));
    msv_err err;

    if (id == NULL) {
        msv_public_identity_free(pub);
        return MSV_ERR_NOMEM;
    }
    id->pub = pub;
    err = MSV_OK;
    if (pub->suites & (MSV_SUITE_BIT(MSV_SUITE_CLASSIC) | MSV_SUITE_BIT(MSV_SUITE_ECIES)))
        err = load_p256_secret(msv_elems_find(sec, n, MSV_TAG_SEC_P256), pub->sign_point,
                               &id->sign_sk);
    if (err == MSV_OK && (pub->suites & MSV_SUITE_BIT(MSV_SUITE_CLASSIC)))
        err = load_rsa_secret(msv_elems_find(sec, n, MSV_TAG_SEC_RSA), pub->rsa_pk, &id->rsa_sk);
    if (err == MSV_OK && (pub->suites & MSV_SUITE_BIT(MSV_SUITE_ECIES)))
        err = load_p256_secret(msv_elems_find(sec, n, MSV_TAG_SEC_PREKEY), pub->prekey_point,
                               &id->prekey_sk);
    if (err == MSV_OK && (pub->suites & MSV_SUITE_BIT(MSV_SUITE_MODERN)))
        err = load_modern_secret(msv_elems_find(sec, n, MSV_TAG_SEC_ED25519),
                                 msv_elems_find(sec, n, MSV_TAG_SEC_X25519), pub, &id->modern);
    if (err != MSV_OK) {
        msv_identity_free(id);
        return err;
    }
    *out = id;
    return MSV_OK;
}

/* Parses the secret SEQUENCE and joins it with pub (taken over). */
static msv_err identity_from_secret_der(struct msv_public_identity *pub, const uint8_t *sec,
                                        size_t sec_len, struct msv_identity **out)
{
    struct msv_elem elems[MSV_ELEM_MAX];
    size_t n;

    if (msv_elems_parse(sec, sec_len, elems, MSV_ELEM_MAX, &n) != MSV_OK) {
        msv_public_identity_free(pub);
        return MSV_ERR_PARSE;
    }
    return identity_assemble(pub, elems, n, out);
}

msv_err msv_identity_import(const uint8_t *in, size_t len, struct msv_identity **out)
{
    struct msv_reader r;
    struct msv_public_identity *pub = NULL;
    const uint8_t *magic, *pub_enc;
    uint8_t version, suite;
    uint32_t pub_len;
    msv_err err;

    msv_reader_init(&r, in, len);
    if (msv_reader_bytes(&r, 4, &magic) != MSV_OK || memcmp(magic, export_magic, 4) != 0)
        return MSV_ERR_PARSE;
    if (msv_reader_u8(&r, &version) != MSV_OK || msv_reader_u8(&r, &suite) != MSV_OK)
        return MSV_ERR_PARSE;
    if (version != EXPORT_VERSION)
        return MSV_ERR_UNSUPPORTED;
    if (suite < MSV_SUITE_CLASSIC || suite > MSV_SUITE_MODERN)
        return MSV_ERR_PARSE;
    if (msv_reader_u32be(&r, &pub_len) != MSV_OK ||
        msv_reader_bytes(&r, pub_len, &pub_enc) != MSV_OK)
        return MSV_ERR_PARSE;
    err = msv_public_identity_parse((enum msv_suite)suite, pub_enc, pub_len, &pub);
    if (err != MSV_OK)
        return err;
    return identity_from_secret_der(pub, in + r.off, msv_reader_left(&r), out);
}

/* The secret elements of id, in ascending tag order. values must be wiped by the caller. */
static msv_err secret_elems(const struct msv_identity *id, struct msv_elem *e, size_t *n,
                            uint8_t scalars[2][32], uint8_t **rsa_der, int *rsa_len)
{
    unsigned suites = id->pub->suites;
    msv_err err = MSV_OK;

    *n = 0;
    if (suites & (MSV_SUITE_BIT(MSV_SUITE_CLASSIC) | MSV_SUITE_BIT(MSV_SUITE_ECIES))) {
        err = msv_p256_scalar(id->sign_sk, scalars[0]);
        e[(*n)++] =
            (struct msv_elem){.tag = MSV_TAG_SEC_P256, .value = scalars[0], .value_len = 32};
    }
    if (err == MSV_OK && (suites & MSV_SUITE_BIT(MSV_SUITE_CLASSIC))) {
        *rsa_len = i2d_PrivateKey(id->rsa_sk, rsa_der);
        if (*rsa_len <= 0)
            return MSV_ERR_CRYPTO;
        e[(*n)++] = (struct msv_elem){
            .tag = MSV_TAG_SEC_RSA, .value = *rsa_der, .value_len = (size_t)*rsa_len};
    }
    if (err == MSV_OK && (suites & MSV_SUITE_BIT(MSV_SUITE_ECIES))) {
        err = msv_p256_scalar(id->prekey_sk, scalars[1]);
        e[(*n)++] =
            (struct msv_elem){.tag = MSV_TAG_SEC_PREKEY, .value = scalars[1], .value_len = 32};
    }
    if (err == MSV_OK && (suites & MSV_SUITE_BIT(MSV_SUITE_MODERN))) {
        /* libsodium's Ed25519 secret key starts with the 32-byte seed. */
        e[(*n)++] = (struct msv_elem){
            .tag = MSV_TAG_SEC_ED25519, .value = id->modern->ed_sk, .value_len = 32};
        e[(*n)++] = (struct msv_elem){
            .tag = MSV_TAG_SEC_X25519, .value = id->modern->x_sk, .value_len = 32};
    }
    return err;
}

msv_err msv_identity_export(const struct msv_identity *id, uint8_t **out, size_t *out_len)
{
    struct msv_elem e[5];
    uint8_t scalars[2][32], *rsa_der = NULL, *sec = NULL;
    size_t n = 0, sec_len = 0;
    int rsa_len = 0;
    struct msv_buf b;
    msv_err err;

    msv_buf_init(&b, (size_t)1 << 20);
    err = secret_elems(id, e, &n, scalars, &rsa_der, &rsa_len);
    if (err == MSV_OK)
        err = msv_elems_encode(e, n, &sec, &sec_len);
    if (err != MSV_OK)
        goto out;
    msv_buf_put(&b, export_magic, sizeof(export_magic));
    msv_buf_put_u8(&b, EXPORT_VERSION);
    msv_buf_put_u8(&b, (uint8_t)id->pub->suite);
    msv_buf_put_u32be(&b, (uint32_t)id->pub->enc_len);
    msv_buf_put(&b, id->pub->enc, id->pub->enc_len);
    msv_buf_put(&b, sec, sec_len);
    err = msv_buf_finish(&b, out, out_len);
out:
    msv_buf_clear(&b);
    sodium_memzero(scalars, sizeof(scalars));
    if (rsa_der != NULL)
        OPENSSL_clear_free(rsa_der, (size_t)rsa_len);
    msv_secret_free(sec, sec_len);
    return err;
}

/* ---- generation ----------------------------------------------------------------------- */

/* Encodes public and secret elements, then assembles through the import path's checks. */
static msv_err assemble_generated(enum msv_suite primary, const struct msv_elem *pub_e,
                                  size_t pub_n, const struct msv_elem *sec_e, size_t sec_n,
                                  struct msv_identity **out)
{
    struct msv_public_identity *pub = NULL;
    uint8_t *enc = NULL;
    size_t enc_len = 0;
    msv_err err;

    err = msv_elems_encode(pub_e, pub_n, &enc, &enc_len);
    if (err == MSV_OK)
        err = msv_public_identity_parse(primary, enc, enc_len, &pub);
    free(enc);
    if (err != MSV_OK)
        return err == MSV_ERR_PARSE ? MSV_ERR_CRYPTO : err;
    return identity_assemble(pub, sec_e, sec_n, out);
}

/* What generating keys for several suites holds until they are assembled. */
struct generated {
    struct msv_elem pub[8], sec[5];
    size_t n_pub, n_sec;
    uint8_t sign_sk[32], sign_point[MSV_P256_POINT_LEN];
    uint8_t prekey_sk[32], prekey_point[MSV_P256_POINT_LEN], prekey_sig[72];
    size_t prekey_sig_len;
    uint8_t *rsa_pub, *rsa_sec;
    int rsa_pub_len, rsa_sec_len;
    uint8_t seed[32], ed_pk[32], x_pk[32], x_sig[64];
    struct msv_modern_secret *modern;
    EVP_PKEY *sign, *prekey, *rsa;
};

static void generated_clear(struct generated *g)
{
    OPENSSL_free(g->rsa_pub);
    if (g->rsa_sec != NULL)
        OPENSSL_clear_free(g->rsa_sec, (size_t)g->rsa_sec_len);
    if (g->modern != NULL)
        sodium_free(g->modern);
    EVP_PKEY_free(g->sign);
    EVP_PKEY_free(g->prekey);
    EVP_PKEY_free(g->rsa);
    sodium_memzero(g, sizeof(*g));
}

static void add(struct msv_elem *e, size_t *n, unsigned tag, const uint8_t *value, size_t len)
{
    e[(*n)++] = (struct msv_elem){.tag = tag, .value = value, .value_len = len};
}

/* The random bytes come in this order: signing scalar, prekey scalar, Ed25519 seed, X25519. */
static msv_err generate_keys(struct generated *g, unsigned suites, unsigned bits,
                             const struct msv_rng *rng)
{
    static const uint8_t pq_flag = 1;
    int classic = (suites & MSV_SUITE_BIT(MSV_SUITE_CLASSIC)) != 0,
        ecies = (suites & MSV_SUITE_BIT(MSV_SUITE_ECIES)) != 0,
        modern = (suites & MSV_SUITE_BIT(MSV_SUITE_MODERN)) != 0;
    msv_err err = MSV_OK;

    if (classic || ecies) {
        err = msv_p256_random_scalar(rng, g->sign_sk);
        if (err == MSV_OK)
            err = msv_p256_from_scalar(g->sign_sk, &g->sign, g->sign_point);
    }
    if (err == MSV_OK && ecies) {
        const uint8_t *parts[2] = {(const uint8_t *)ecies_prekey_context, g->prekey_point};
        size_t lens[2] = {sizeof(ecies_prekey_context) - 1, MSV_P256_POINT_LEN};

        err = msv_p256_random_scalar(rng, g->prekey_sk);
        if (err == MSV_OK)
            err = msv_p256_from_scalar(g->prekey_sk, &g->prekey, g->prekey_point);
        if (err == MSV_OK)
            err = msv_ecdsa_sign(g->sign, EVP_sha256(), parts, lens, 2, g->prekey_sig,
                                 &g->prekey_sig_len);
    }
    if (err == MSV_OK && modern) {
        uint8_t msg[sizeof(modern_idkey_context) - 1 + 32];

        g->modern = sodium_malloc(sizeof(*g->modern));
        if (g->modern == NULL)
            return MSV_ERR_NOMEM;
        rng->fill(rng->ctx, g->seed, sizeof(g->seed));
        rng->fill(rng->ctx, g->modern->x_sk, sizeof(g->modern->x_sk));
        if (crypto_sign_seed_keypair(g->ed_pk, g->modern->ed_sk, g->seed) != 0 ||
            crypto_scalarmult_base(g->x_pk, g->modern->x_sk) != 0)
            return MSV_ERR_CRYPTO;
        memcpy(msg, modern_idkey_context, sizeof(modern_idkey_context) - 1);
        memcpy(msg + sizeof(modern_idkey_context) - 1, g->x_pk, 32);
        if (crypto_sign_detached(g->x_sig, NULL, msg, sizeof(msg), g->modern->ed_sk) != 0)
            return MSV_ERR_CRYPTO;
    }
    if (err == MSV_OK && classic) {
        g->rsa = EVP_PKEY_Q_keygen(NULL, NULL, "RSA", (size_t)bits);
        if (g->rsa == NULL)
            return MSV_ERR_CRYPTO;
        g->rsa_pub_len = i2d_PublicKey(g->rsa, &g->rsa_pub);
        g->rsa_sec_len = i2d_PrivateKey(g->rsa, &g->rsa_sec);
        if (g->rsa_pub_len <= 0 || g->rsa_sec_len <= 0)
            return MSV_ERR_CRYPTO;
    }
    if (err != MSV_OK)
        return err;
    /* both lists in ascending tag order */
    if (classic || ecies) {
        add(g->pub, &g->n_pub, MSV_TAG_SIGN_P256, g->sign_point, MSV_P256_POINT_LEN);
        add(g->sec, &g->n_sec, MSV_TAG_SEC_P256, g->sign_sk, 32);
    }
    if (classic) {
        add(g->pub, &g->n_pub, MSV_TAG_RSA_PUB, g->rsa_pub, (size_t)g->rsa_pub_len);
        add(g->sec, &g->n_sec, MSV_TAG_SEC_RSA, g->rsa_sec, (size_t)g->rsa_sec_len);
    }
    if (ecies) {
        add(g->pub, &g->n_pub, MSV_TAG_PREKEY, g->prekey_point, MSV_P256_POINT_LEN);
        add(g->pub, &g->n_pub, MSV_TAG_PREKEY_SIG, g->prekey_sig, g->prekey_sig_len);
        add(g->sec, &g->n_sec, MSV_TAG_SEC_PREKEY, g->prekey_sk, 32);
    }
    if (modern) {
        add(g->pub, &g->n_pub, MSV_TAG_ED25519, g->ed_pk, 32);
        add(g->pub, &g->n_pub, MSV_TAG_X25519, g->x_pk, 32);
        add(g->pub, &g->n_pub, MSV_TAG_X25519_SIG, g->x_sig, 64);
        if (suites & MSV_IDENTITY_PQ)
            add(g->pub, &g->n_pub, MSV_TAG_MODERN_PQ, &pq_flag, 1);
        add(g->sec, &g->n_sec, MSV_TAG_SEC_ED25519, g->seed, 32);
        add(g->sec, &g->n_sec, MSV_TAG_SEC_X25519, g->modern->x_sk, 32);
    }
    return MSV_OK;
}

msv_err msv_identity_generate_suites_rng(enum msv_suite primary, unsigned also, unsigned rsa_bits,
                                         const struct msv_rng *rng, struct msv_identity **out)
{
    unsigned all = MSV_SUITE_BIT(MSV_SUITE_CLASSIC) | MSV_SUITE_BIT(MSV_SUITE_ECIES) |
                   MSV_SUITE_BIT(MSV_SUITE_MODERN);
    unsigned suites;
    struct generated *g;
    msv_err err;

    if (msv_init() != MSV_OK)
        return MSV_ERR_CRYPTO;
    if (primary < MSV_SUITE_CLASSIC || primary > MSV_SUITE_MODERN ||
        (also & ~(all | MSV_IDENTITY_PQ)) != 0)
        return MSV_ERR_INVALID;
    suites = also | MSV_SUITE_BIT(primary);
    if ((suites & MSV_IDENTITY_PQ) && !(suites & MSV_SUITE_BIT(MSV_SUITE_MODERN)))
        return MSV_ERR_INVALID;
    if (suites & MSV_SUITE_BIT(MSV_SUITE_CLASSIC)) {
        if (rsa_bits == 0)
            rsa_bits = MSV_CLASSIC_RSA_BITS_DEFAULT;
        if (!rsa_bits_allowed((int)rsa_bits))
            return MSV_ERR_INVALID;
    } else if (rsa_bits != 0) {
        return MSV_ERR_INVALID;
    }
    if ((g = calloc(1, sizeof(*g))) == NULL)
        return MSV_ERR_NOMEM;
    err = generate_keys(g, suites, rsa_bits, rng);
    if (err == MSV_OK)
        err = assemble_generated(primary, g->pub, g->n_pub, g->sec, g->n_sec, out);
    generated_clear(g);
    free(g);
    return err;
}

msv_err msv_identity_generate_rng(enum msv_suite suite, unsigned rsa_bits,
                                  const struct msv_rng *rng, struct msv_identity **out)
{
    return msv_identity_generate_suites_rng(suite, 0, rsa_bits, rng, out);
}

msv_err msv_identity_generate_suites(enum msv_suite primary, unsigned also, unsigned rsa_bits,
                                     struct msv_identity **out)
{
    return msv_identity_generate_suites_rng(primary, also, rsa_bits, &msv_rng_system, out);
}

msv_err msv_identity_generate(enum msv_suite suite, unsigned rsa_bits, struct msv_identity **out)
{
    return msv_identity_generate_rng(suite, rsa_bits, &msv_rng_system, out);
}

/* ---- device signatures ---------------------------------------------------------------- */

msv_err msv_identity_sign(const struct msv_identity *id, const uint8_t *msg, size_t len,
                          uint8_t sig[MSV_SIGNATURE_MAX], size_t *sig_len)
{
    if (id->pub->suite == MSV_SUITE_MODERN) {
        if (crypto_sign_detached(sig, NULL, msg, len, id->modern->ed_sk) != 0)
            return MSV_ERR_CRYPTO;
        *sig_len = crypto_sign_BYTES;
        return MSV_OK;
    }
    return msv_ecdsa_sign(id->sign_sk, EVP_sha256(), &msg, &len, 1, sig, sig_len);
}

msv_err msv_public_identity_verify(const struct msv_public_identity *pub, const uint8_t *msg,
                                   size_t len, const uint8_t *sig, size_t sig_len)
{
    if (pub->suite == MSV_SUITE_MODERN) {
        if (sig_len != crypto_sign_BYTES ||
            crypto_sign_verify_detached(sig, msg, len, pub->ed_pk) != 0)
            return MSV_ERR_AUTH;
        return MSV_OK;
    }
    return msv_ecdsa_verify(pub->sign_pk, EVP_sha256(), &msg, &len, 1, sig, sig_len) == MSV_OK
               ? MSV_OK
               : MSV_ERR_AUTH;
}
