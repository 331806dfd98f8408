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
static const uint8_t base_point[POINT_LEN] = {
    0x58, 0x66, 0x66, 0x66, 0x66, 0x66, 0x66, 0x66, 0x66, 0x66, 0x66, 0x66, 0x66, 0x66, 0x66, 0x66,
    0x66, 0x66, 0x66, 0x66, 0x66, 0x66, 0x66, 0x66, 0x66, 0x66, 0x66, 0x66, 0x66, 0x66, 0x66, 0x66};

static int suite_is_known(enum msv_vrf_suite suite)
{
    return suite == MSV_VRF_EDWARDS25519_SHA512_TAI || suite == MSV_VRF_EDWARDS25519_SHA512_ELL2;
}

static int is_identity(const uint8_t p[POINT_LEN])
{
    return memcmp(p, identity, POINT_LEN) == 0;
}

/*
 * Whether p is the RFC 8032 encoding of a point. libsodium decodes leniently
 * (y >= p reduced, the sign of x = 0 ignored), so the point must also encode
 * back to the very same bytes.
 */
static int point_is_canonical(const uint8_t p[POINT_LEN])
{
    uint8_t again[POINT_LEN];

    return crypto_core_ed25519_add(again, p, identity) == 0 && memcmp(again, p, POINT_LEN) == 0;
}

/* Whether s is an integer below L: reducing it changes nothing. */
static int scalar_is_canonical(const uint8_t s[SCALAR_LEN])
{
    uint8_t wide[2 * SCALAR_LEN] = {0}, reduced[SCALAR_LEN];

    memcpy(wide, s, SCALAR_LEN);
    crypto_core_ed25519_scalar_reduce(reduced, wide);
    return memcmp(reduced, s, SCALAR_LEN) == 0;
}

/* 8*p by three doublings; any point of the curve, small or mixed order too. */
static msv_err times_cofactor(uint8_t out[POINT_LEN], const uint8_t p[POINT_LEN])
{
    if (crypto_core_ed25519_add(out, p, p) != 0 || crypto_core_ed25519_add(out, out, out) != 0 ||
        crypto_core_ed25519_add(out, out, out) != 0)
        return MSV_ERR_AUTH;
    return MSV_OK;
}

/*
 * n*p for any point p of the curve and any 256-bit n, public values only.
 * libsodium multiplies points of the prime-order subgroup alone, which covers
 * honest proofs; for others p is split into its prime-order part q =
 * (8^-1 mod L)*(8*p) and its torsion part t = p - q, and n*p = (n mod L)*q +
 * (n mod 8)*t. Verification must compute exactly what RFC 9381 says for such
 * points too, or a proof could be accepted here and refused elsewhere.
 */
static msv_err point_mul_public(uint8_t out[POINT_LEN], const uint8_t n[SCALAR_LEN],
                                const uint8_t p[POINT_LEN])
{
    uint8_t wide[2 * SCALAR_LEN] = {0}, n_l[SCALAR_LEN], eight[SCALAR_LEN] = {8};
    uint8_t inv8[SCALAR_LEN], p8[POINT_LEN], prime[POINT_LEN], torsion[POINT_LEN];
    uint8_t acc[POINT_LEN];
    int n_l_zero;

    memcpy(wide, n, SCALAR_LEN);
    crypto_core_ed25519_scalar_reduce(n_l, wide);
    n_l_zero = sodium_is_zero(n_l, SCALAR_LEN);
    /* B has its own tables, several times faster than a multiplication of any point */
    if (!n_l_zero && memcmp(p, base_point, POINT_LEN) == 0)
        return crypto_scalarmult_ed25519_base_noclamp(out, n_l) == 0 ? MSV_OK : MSV_ERR_CRYPTO;
    if (!n_l_zero && crypto_scalarmult_ed25519_noclamp(out, n_l, p) == 0)
        return MSV_OK;
    if (times_cofactor(p8, p) != MSV_OK)
        return MSV_ERR_AUTH;
    memcpy(prime, identity, POINT_LEN);
    if (!is_identity(p8) && (crypto_core_ed25519_scalar_invert(inv8, eight) != 0 ||
                             crypto_scalarmult_ed25519_noclamp(prime, inv8, p8) != 0))
        return MSV_ERR_CRYPTO;
    if (crypto_core_ed25519_sub(torsion, p, prime) != 0)
        return MSV_ERR_AUTH;
    memcpy(acc, identity, POINT_LEN);
    if (!n_l_zero && !is_identity(prime) && crypto_scalarmult_ed25519_noclamp(acc, n_l, prime) != 0)
        return MSV_ERR_CRYPTO;
    for (unsigned i = 0; i < (n[0] & 7u); i++) {
        if (crypto_core_ed25519_add(acc, acc, torsion) != 0)
            return MSV_ERR_CRYPTO;
    }
    memcpy(out, acc, POINT_LEN);
    return MSV_OK;
}

/* a*p - b*q, public values only. */
static msv_err mul_sub_public(uint8_t out[POINT_LEN], const uint8_t a[SCALAR_LEN],
                              const uint8_t p[POINT_LEN], const uint8_t b[SCALAR_LEN],
                              const uint8_t q[POINT_LEN])
{
    uint8_t ap[POINT_LEN], bq[POINT_LEN];

    if (point_mul_public(ap, a, p) != MSV_OK || point_mul_public(bq, b, q) != MSV_OK ||
        crypto_core_ed25519_sub(out, ap, bq) != 0)
        return MSV_ERR_AUTH;
    return MSV_OK;
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
        if (point_is_canonical(digest) && times_cofactor(h, digest) == MSV_OK && !is_identity(h))
            return MSV_OK;
    }
    return MSV_ERR_AUTH;
}

/*
 * ECVRF_encode_to_curve_h2c_suite (RFC 9381 5.4.1.2): RFC 9380's
 * edwards25519_XMD:SHA-512_ELL2_NU_ on PK || alpha with the tag
 * "ECVRF_edwards25519_XMD:SHA-512_ELL2_NU_" || 0x04, the cofactor cleared.
 */
static msv_err encode_to_curve_ell2(const uint8_t pk[POINT_LEN], const uint8_t *alpha,
                                    size_t alpha_len, uint8_t h[POINT_LEN])
{
    static const uint8_t dst[] = "ECVRF_edwards25519_XMD:SHA-512_ELL2_NU_\x04";
    const uint8_t *parts[2] = {pk, alpha};
    size_t lens[2] = {POINT_LEN, alpha_len};
    uint8_t q[POINT_LEN];
    msv_err err = msv_h2c_edwards25519_nu_map(parts, lens, 2, dst, sizeof(dst) - 1, q);

    if (err == MSV_OK && times_cofactor(h, q) != MSV_OK)
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

msv_err msv_vrf_proof_to_hash(enum msv_vrf_suite suite, const uint8_t pi[MSV_VRF_PROOF_LEN],
                              uint8_t beta[MSV_VRF_OUTPUT_LEN])
{
    const uint8_t head[2] = {(uint8_t)suite, DOMAIN_PROOF_TO_HASH};
    static const uint8_t tail = DOMAIN_END;
    uint8_t gamma8[POINT_LEN];
    crypto_hash_sha512_state st;

    if (!suite_is_known(suite))
        return MSV_ERR_UNSUPPORTED;
    if (!point_is_canonical(pi) || times_cofactor(gamma8, pi) != MSV_OK)
        return MSV_ERR_AUTH;
    crypto_hash_sha512_init(&st);
    crypto_hash_sha512_update(&st, head, sizeof(head));
    crypto_hash_sha512_update(&st, gamma8, POINT_LEN);
    crypto_hash_sha512_update(&st, &tail, 1);
    crypto_hash_sha512_final(&st, beta);
    return MSV_OK;
}

msv_err msv_vrf_verify(enum msv_vrf_suite suite, const uint8_t pk[MSV_VRF_PUBLIC_KEY_LEN],
                       const uint8_t *alpha, size_t alpha_len, const uint8_t pi[MSV_VRF_PROOF_LEN],
                       uint8_t beta[MSV_VRF_OUTPUT_LEN])
{
    const uint8_t *gamma = pi, *s = pi + POINT_LEN + C_LEN;
    uint8_t y8[POINT_LEN], hp[POINT_LEN], u[POINT_LEN], v[POINT_LEN];
    uint8_t c[SCALAR_LEN] = {0}, expected[SCALAR_LEN];
    const uint8_t *points[5] = {pk, hp, gamma, u, v};
    msv_err err;

    if (!suite_is_known(suite))
        return MSV_ERR_UNSUPPORTED;
    /* 5.4.5: the key must be a point, and not one of small order */
    if (!point_is_canonical(pk) || times_cofactor(y8, pk) != MSV_OK || is_identity(y8))
        return MSV_ERR_AUTH;
    /* 5.4.4: Gamma a point, s < L */
    if (!point_is_canonical(gamma) || !scalar_is_canonical(s))
        return MSV_ERR_AUTH;
    memcpy(c, pi + POINT_LEN, C_LEN);
    /* a failure of the machinery (memory) is not a verdict on the proof */
    err = msv_vrf_encode_to_curve(suite, pk, alpha, alpha_len, hp);
    if (err != MSV_OK)
        return err == MSV_ERR_CRYPTO || err == MSV_ERR_NOMEM ? err : MSV_ERR_AUTH;
    if (mul_sub_public(u, s, base_point, c, pk) != MSV_OK ||
        mul_sub_public(v, s, hp, c, gamma) != MSV_OK)
        return MSV_ERR_AUTH;
    challenge(suite, points, expected);
    if (sodium_memcmp(expected, c, C_LEN) != 0)
        return MSV_ERR_AUTH;
    return msv_vrf_proof_to_hash(suite, pi, beta);
}
