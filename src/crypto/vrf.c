/*
 * ECVRF-EDWARDS25519-SHA512-TAI and -ELL2 (RFC 9381, suite_string S = 0x03 and
 * 0x04) on libsodium's edwards25519 arithmetic. Integers are little-endian;
 * points travel as RFC 8032 encodings (5.1.2) and are decoded strictly (5.1.3: no y >= p, no x = 0
 * with the sign bit set, nothing off the curve). L is the prime group order,
 * B the base point, 8 the cofactor.
 *
 *   h     = SHA-512(SK)                                            RFC 8032 5.1.5
 *   x     = h[0:32] with bits 0, 1, 2 and 255 cleared and bit 254 set
 *   Y     = x*B, PK = encode(Y)
 *   H     = TAI: 8*P for the first ctr = 0, 1, ..., 255 where     RFC 9381 5.4.1.1
 *           P = decode(SHA-512(S || 0x01 || PK || alpha || u8 ctr || 0x00)[0:32])
 *           is a point and 8*P is not the identity;
 *           ELL2: RFC 9380 edwards25519_XMD:SHA-512_ELL2_NU_ of      5.4.1.2
 *           PK || alpha, tag "ECVRF_edwards25519_XMD:SHA-512_ELL2_NU_" || S (h2c.c)
 *   Gamma = x*H
 *   k     = SHA-512(h[32:64] || encode(H)) mod L                   5.4.2.2
 *   c     = SHA-512(S || 0x02 || PK || encode(H) || encode(Gamma)
 *                   || encode(k*B) || encode(k*H) || 0x00)[0:16]   5.4.3
 *   s     = (k + c*x) mod L
 *   pi    = encode(Gamma) || c (16 bytes) || s (32 bytes)          5.1
 *   beta  = SHA-512(S || 0x03 || encode(8*Gamma) || 0x00)          5.2
 *
 * Verify (5.3): PK decodes and 8*Y is not the identity (5.4.5), Gamma decodes,
 * s < L; U = s*B - c*Y, V = s*H - c*Gamma; the proof holds when c is the
 * challenge of (Y, H, Gamma, U, V). Every failure is MSV_ERR_AUTH.
 *
 * Proving multiplies the secret x and k with libsodium's constant-time
 * functions. Everything verification computes is public, so it uses the
 * variable-time arithmetic of ed25519_vt.c: U and V as one double-scalar
 * multiplication each (B's multiples tabulated once), and the strict decoding
 * and 8*P there too, on any point of the curve.
 */
#include <string.h>

#include <sodium.h>

#include "crypto/internal.h"
#include "missive/util.h"
#include "missive/vrf.h"

#define POINT_LEN 32
#define SCALAR_LEN 32
#define C_LEN 16
#define TAI_TRIES 256 /* ctr is one byte */

enum {
    DOMAIN_END = 0x00,
    DOMAIN_ENCODE = 0x01,
    DOMAIN_CHALLENGE = 0x02,
    DOMAIN_PROOF_TO_HASH = 0x03,
};

static const uint8_t identity[POINT_LEN] = {1};

static int suite_is_known(enum msv_vrf_suite suite)
{
    return suite == MSV_VRF_EDWARDS25519_SHA512_TAI || suite == MSV_VRF_EDWARDS25519_SHA512_ELL2;
}

static int is_identity(const uint8_t p[POINT_LEN])
{
    return memcmp(p, identity, POINT_LEN) == 0;
}

/* Whether s is an integer below L: reducing it changes nothing. */
static int scalar_is_canonical(const uint8_t s[SCALAR_LEN])
{
    uint8_t wide[2 * SCALAR_LEN] = {0}, reduced[SCALAR_LEN];

    memcpy(wide, s, SCALAR_LEN);
    crypto_core_ed25519_scalar_reduce(reduced, wide);
    return memcmp(reduced, s, SCALAR_LEN) == 0;
}

/* ECVRF_encode_to_curve_try_and_increment (RFC 9381 5.4.1.1), salt = PK. */
static msv_err encode_to_curve_tai(const uint8_t pk[POINT_LEN], const uint8_t *alpha,
                                   size_t alpha_len, uint8_t h[POINT_LEN])
{
    static const uint8_t head[2] = {MSV_VRF_EDWARDS25519_SHA512_TAI, DOMAIN_ENCODE};
    uint8_t digest[crypto_hash_sha512_BYTES], tail[2];
    crypto_hash_sha512_state st;

    for (unsigned ctr = 0; ctr < TAI_TRIES; ctr++) {
        tail[0] = (uint8_t)ctr;
        tail[1] = DOMAIN_END;
        crypto_hash_sha512_init(&st);
        crypto_hash_sha512_update(&st, head, sizeof(head));
        crypto_hash_sha512_update(&st, pk, POINT_LEN);
        if (alpha_len > 0)
            crypto_hash_sha512_update(&st, alpha, alpha_len);
        crypto_hash_sha512_update(&st, tail, sizeof(tail));
        crypto_hash_sha512_final(&st, digest);
        if (msv_ed25519_times8_vartime(h, digest) == MSV_OK && !is_identity(h))
            return MSV_OK;
    }
    return MSV_ERR_AUTH;
}

/*
 * ECVRF_encode_to_curve_h2c_suite (RFC 9381 5.4.1.2): RFC 9380's
 * edwards25519_XMD:SHA-512_ELL2_NU_ on PK || alpha with the tag
 * "ECVRF_edwards25519_XMD:SHA-512_ELL2_NU_" || 0x04; q before the cofactor is cleared.
 */
static msv_err ell2_map(const uint8_t pk[POINT_LEN], const uint8_t *alpha, size_t alpha_len,
                        uint8_t q[POINT_LEN])
{
    static const uint8_t dst[] = "ECVRF_edwards25519_XMD:SHA-512_ELL2_NU_\x04";
    const uint8_t *parts[2] = {pk, alpha};
    size_t lens[2] = {POINT_LEN, alpha_len};

    return msv_h2c_edwards25519_nu_map(parts, lens, 2, dst, sizeof(dst) - 1, q);
}

/* ell2_map with the cofactor cleared: H = 8*q. */
static msv_err encode_to_curve_ell2(const uint8_t pk[POINT_LEN], const uint8_t *alpha,
                                    size_t alpha_len, uint8_t h[POINT_LEN])
{
    uint8_t q[POINT_LEN];
    msv_err err = ell2_map(pk, alpha, alpha_len, q);

    if (err == MSV_OK && msv_ed25519_times8_vartime(h, q) != MSV_OK)
        err = MSV_ERR_CRYPTO;
    return err;
}

msv_err msv_vrf_encode_to_curve(enum msv_vrf_suite suite, const uint8_t pk[POINT_LEN],
                                const uint8_t *alpha, size_t alpha_len, uint8_t h[POINT_LEN])
{
    if (suite == MSV_VRF_EDWARDS25519_SHA512_TAI)
        return encode_to_curve_tai(pk, alpha, alpha_len, h);
    if (suite == MSV_VRF_EDWARDS25519_SHA512_ELL2)
        return encode_to_curve_ell2(pk, alpha, alpha_len, h);
    return MSV_ERR_UNSUPPORTED;
}

/* ECVRF_challenge_generation (RFC 9381 5.4.3) of Y, H, Gamma, U, V: c as a 32-byte scalar. */
static void challenge(enum msv_vrf_suite suite, const uint8_t *const points[5],
                      uint8_t c[SCALAR_LEN])
{
    const uint8_t head[2] = {(uint8_t)suite, DOMAIN_CHALLENGE};
    static const uint8_t tail = DOMAIN_END;
    uint8_t digest[crypto_hash_sha512_BYTES];
    crypto_hash_sha512_state st;

    crypto_hash_sha512_init(&st);
    crypto_hash_sha512_update(&st, head, sizeof(head));
    for (size_t i = 0; i < 5; i++)
        crypto_hash_sha512_update(&st, points[i], POINT_LEN);
    crypto_hash_sha512_update(&st, &tail, 1);
    crypto_hash_sha512_final(&st, digest);
    memset(c, 0, SCALAR_LEN);
    memcpy(c, digest, C_LEN);
}

/* RFC 8032 5.1.5: h = SHA-512(SK), x = the clamped first half of h. */
static void secret_scalar(const uint8_t sk[MSV_VRF_SECRET_KEY_LEN],
                          uint8_t h[crypto_hash_sha512_BYTES], uint8_t x[SCALAR_LEN])
{
    crypto_hash_sha512(h, sk, MSV_VRF_SECRET_KEY_LEN);
    memcpy(x, h, SCALAR_LEN);
    x[0] &= 248;
    x[31] &= 127;
    x[31] |= 64;
}

msv_err msv_vrf_public_key(enum msv_vrf_suite suite, const uint8_t sk[MSV_VRF_SECRET_KEY_LEN],
                           uint8_t pk[MSV_VRF_PUBLIC_KEY_LEN])
{
    uint8_t h[crypto_hash_sha512_BYTES], x[SCALAR_LEN];
    msv_err err = MSV_OK;

    if (!suite_is_known(suite))
        return MSV_ERR_UNSUPPORTED;
    secret_scalar(sk, h, x);
    if (crypto_scalarmult_ed25519_base_noclamp(pk, x) != 0)
        err = MSV_ERR_CRYPTO;
    sodium_memzero(h, sizeof(h));
    sodium_memzero(x, sizeof(x));
    return err;
}

msv_err msv_vrf_keygen(enum msv_vrf_suite suite, uint8_t sk[MSV_VRF_SECRET_KEY_LEN],
                       uint8_t pk[MSV_VRF_PUBLIC_KEY_LEN])
{
    uint8_t fresh[MSV_VRF_SECRET_KEY_LEN];
    msv_err err;

    if (!suite_is_known(suite))
        return MSV_ERR_UNSUPPORTED;
    if (msv_init() != MSV_OK)
        return MSV_ERR_CRYPTO;
    randombytes_buf(fresh, sizeof(fresh));
    err = msv_vrf_public_key(suite, fresh, pk);
    if (err == MSV_OK)
        memcpy(sk, fresh, sizeof(fresh));
    sodium_memzero(fresh, sizeof(fresh));
    return err;
}

/* k = SHA-512(h[32:64] || encode(H)) mod L (RFC 9381 5.4.2.2). */
static void nonce(const uint8_t h[crypto_hash_sha512_BYTES], const uint8_t hp[POINT_LEN],
                  uint8_t k[SCALAR_LEN])
{
    uint8_t digest[crypto_hash_sha512_BYTES];
    crypto_hash_sha512_state st;

    crypto_hash_sha512_init(&st);
    crypto_hash_sha512_update(&st, h + 32, 32);
    crypto_hash_sha512_update(&st, hp, POINT_LEN);
    crypto_hash_sha512_final(&st, digest);
    crypto_core_ed25519_scalar_reduce(k, digest);
    sodium_memzero(digest, sizeof(digest));
    sodium_memzero(&st, sizeof(st));
}

msv_err msv_vrf_prove_trace(enum msv_vrf_suite suite, const uint8_t sk[MSV_VRF_SECRET_KEY_LEN],
                            const uint8_t *alpha, size_t alpha_len, uint8_t pi[MSV_VRF_PROOF_LEN],
                            struct msv_vrf_trace *trace)
{
    struct msv_vrf_trace t; /* x, H, k, U = k*B, V = k*H */
    struct {
        uint8_t h[crypto_hash_sha512_BYTES], wide[2 * SCALAR_LEN], x_l[SCALAR_LEN], cx[SCALAR_LEN];
    } sec = {0};
    uint8_t y[POINT_LEN], gamma[POINT_LEN], c[SCALAR_LEN], s[SCALAR_LEN];
    const uint8_t *points[5] = {y, t.h, gamma, t.u, t.v};
    msv_err err = MSV_ERR_CRYPTO;

    if (!suite_is_known(suite))
        return MSV_ERR_UNSUPPORTED;
    secret_scalar(sk, sec.h, t.x);
    /* H is 8 times a point and not the identity: of order L, as libsodium requires. */
    if (crypto_scalarmult_ed25519_base_noclamp(y, t.x) != 0 ||
        msv_vrf_encode_to_curve(suite, y, alpha, alpha_len, t.h) != MSV_OK ||
        crypto_scalarmult_ed25519_noclamp(gamma, t.x, t.h) != 0)
        goto out;
    nonce(sec.h, t.h, t.k);
    /* k = 0 happens with probability 2^-252; libsodium refuses it, and so do we */
    if (crypto_scalarmult_ed25519_base_noclamp(t.u, t.k) != 0 ||
        crypto_scalarmult_ed25519_noclamp(t.v, t.k, t.h) != 0)
        goto out;
    challenge(suite, points, c);
    memcpy(sec.wide, t.x, SCALAR_LEN);
    crypto_core_ed25519_scalar_reduce(sec.x_l, sec.wide);
    crypto_core_ed25519_scalar_mul(sec.cx, c, sec.x_l);
    crypto_core_ed25519_scalar_add(s, t.k, sec.cx);
    memcpy(pi, gamma, POINT_LEN);
    memcpy(pi + POINT_LEN, c, C_LEN);
    memcpy(pi + POINT_LEN + C_LEN, s, SCALAR_LEN);
    if (trace != NULL)
        *trace = t;
    err = MSV_OK;
out:
    sodium_memzero(&t, sizeof(t));
    sodium_memzero(&sec, sizeof(sec));
    return err;
}

msv_err msv_vrf_prove(enum msv_vrf_suite suite, const uint8_t sk[MSV_VRF_SECRET_KEY_LEN],
                      const uint8_t *alpha, size_t alpha_len, uint8_t pi[MSV_VRF_PROOF_LEN])
{
    return msv_vrf_prove_trace(suite, sk, alpha, alpha_len, pi, NULL);
}

msv_err msv_vrf_output(enum msv_vrf_suite suite, const uint8_t sk[MSV_VRF_SECRET_KEY_LEN],
                       const uint8_t *alpha, size_t alpha_len, uint8_t beta[MSV_VRF_OUTPUT_LEN])
{
    uint8_t h[crypto_hash_sha512_BYTES], x[SCALAR_LEN], y[POINT_LEN], hp[POINT_LEN];
    uint8_t pi[MSV_VRF_PROOF_LEN] = {0}; /* Gamma only: the hash reads nothing else */
    msv_err err = MSV_ERR_CRYPTO;

    if (!suite_is_known(suite))
        return MSV_ERR_UNSUPPORTED;
    secret_scalar(sk, h, x);
    if (crypto_scalarmult_ed25519_base_noclamp(y, x) == 0 &&
        msv_vrf_encode_to_curve(suite, y, alpha, alpha_len, hp) == MSV_OK &&
        crypto_scalarmult_ed25519_noclamp(pi, x, hp) == 0)
        err = msv_vrf_proof_to_hash(suite, pi, beta);
    sodium_memzero(h, sizeof(h));
    sodium_memzero(x, sizeof(x));
    return err;
}

static void beta_of(enum msv_vrf_suite suite, const uint8_t gamma8[POINT_LEN],
                    uint8_t beta[MSV_VRF_OUTPUT_LEN]);

msv_err msv_vrf_proof_to_hash(enum msv_vrf_suite suite, const uint8_t pi[MSV_VRF_PROOF_LEN],
                              uint8_t beta[MSV_VRF_OUTPUT_LEN])
{
    uint8_t gamma8[POINT_LEN];

    if (!suite_is_known(suite))
        return MSV_ERR_UNSUPPORTED;
    if (msv_ed25519_times8_vartime(gamma8, pi) != MSV_OK)
        return MSV_ERR_AUTH;
    beta_of(suite, gamma8, beta);
    return MSV_OK;
}

/* beta = SHA-512(S || 0x03 || encode(8*Gamma) || 0x00) (RFC 9381 5.2). */
static void beta_of(enum msv_vrf_suite suite, const uint8_t gamma8[POINT_LEN],
                    uint8_t beta[MSV_VRF_OUTPUT_LEN])
{
    const uint8_t head[2] = {(uint8_t)suite, DOMAIN_PROOF_TO_HASH};
    static const uint8_t tail = DOMAIN_END;
    crypto_hash_sha512_state st;

    crypto_hash_sha512_init(&st);
    crypto_hash_sha512_update(&st, head, sizeof(head));
    crypto_hash_sha512_update(&st, gamma8, POINT_LEN);
    crypto_hash_sha512_update(&st, &tail, 1);
    crypto_hash_sha512_final(&st, beta);
}

msv_err msv_vrf_key_prepare(struct msv_vrf_key *key, const uint8_t pk[MSV_VRF_PUBLIC_KEY_LEN])
{
    uint8_t y8[POINT_LEN];

    /* 5.4.5: the key must be a point, and not one of small order */
    if (msv_ed25519_times8_vartime(y8, pk) != MSV_OK || is_identity(y8) ||
        msv_ed25519_table_of(&key->y, pk) != MSV_OK)
        return MSV_ERR_AUTH;
    memcpy(key->pk, pk, POINT_LEN);
    return MSV_OK;
}

msv_err msv_vrf_verify_prepared(enum msv_vrf_suite suite, const struct msv_vrf_key *key,
                                const uint8_t *alpha, size_t alpha_len,
                                const uint8_t pi[MSV_VRF_PROOF_LEN],
                                uint8_t beta[MSV_VRF_OUTPUT_LEN])
{
    const uint8_t *gamma = pi, *s = pi + POINT_LEN + C_LEN;
    uint8_t q[POINT_LEN], hp[POINT_LEN], u[POINT_LEN], v[POINT_LEN], gamma8[POINT_LEN];
    uint8_t c[SCALAR_LEN] = {0}, expected[SCALAR_LEN];
    const uint8_t *points[5] = {key->pk, hp, gamma, u, v};
    msv_err err;

    if (!suite_is_known(suite))
        return MSV_ERR_UNSUPPORTED;
    /* 5.4.4: s < L; Gamma must be a point, which msv_ed25519_vrf_points decodes strictly */
    if (!scalar_is_canonical(s))
        return MSV_ERR_AUTH;
    memcpy(c, pi + POINT_LEN, C_LEN);
    /* H: TAI's whole, or ELL2's map_to_curve output with the cofactor still to clear */
    if (suite == MSV_VRF_EDWARDS25519_SHA512_TAI)
        err = encode_to_curve_tai(key->pk, alpha, alpha_len, q);
    else
        err = ell2_map(key->pk, alpha, alpha_len, q);
    /* a failure of the machinery (memory) is not a verdict on the proof */
    if (err != MSV_OK)
        return err == MSV_ERR_CRYPTO || err == MSV_ERR_NOMEM ? err : MSV_ERR_AUTH;
    if (msv_ed25519_vrf_points(&key->y, q, suite == MSV_VRF_EDWARDS25519_SHA512_ELL2, gamma, s, c,
                               hp, u, v, gamma8) != MSV_OK)
        return MSV_ERR_AUTH;
    challenge(suite, points, expected);
    if (sodium_memcmp(expected, c, C_LEN) != 0)
        return MSV_ERR_AUTH;
    beta_of(suite, gamma8, beta);
    return MSV_OK;
}

msv_err msv_vrf_verify(enum msv_vrf_suite suite, const uint8_t pk[MSV_VRF_PUBLIC_KEY_LEN],
                       const uint8_t *alpha, size_t alpha_len, const uint8_t pi[MSV_VRF_PROOF_LEN],
                       uint8_t beta[MSV_VRF_OUTPUT_LEN])
{
    struct msv_vrf_key key;

    if (!suite_is_known(suite))
        return MSV_ERR_UNSUPPORTED;
    if (msv_vrf_key_prepare(&key, pk) != MSV_OK)
        return MSV_ERR_AUTH;
    return msv_vrf_verify_prepared(suite, &key, alpha, alpha_len, pi, beta);
}
