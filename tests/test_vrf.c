/*
 * The VRF (src/crypto/vrf.c): RFC 9381's own vectors for
 * ECVRF-EDWARDS25519-SHA512-TAI (tests/vectors/vrf_rfc9381.json), every
 * intermediate value included, and proofs that must be refused: any flipped
 * bit, another alpha or key, small-order keys (with proofs forged for them),
 * s not below L, encodings that are not canonical. A proof whose Gamma has a
 * torsion component is valid by the RFC and must be accepted with the same
 * beta.
 */
#include <stdarg.h>
#include <setjmp.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <jansson.h>
#include <sodium.h>

#include "crypto/internal.h"
#include "helpers.h"
#include "missive/util.h"
#include "missive/vrf.h"

#define TAI MSV_VRF_EDWARDS25519_SHA512_TAI

struct vector {
    uint8_t sk[32], pk[32], x[32], h[32], k[32], u[32], v[32], pi[80], beta[64];
    uint8_t alpha[16];
    size_t alpha_len;
};

#define N_VECTORS 3
static struct vector vectors[N_VECTORS];

/* The group order L, little-endian. */
static const uint8_t order_l[32] = {
    0xed, 0xd3, 0xf5, 0x5c, 0x1a, 0x63, 0x12, 0x58, 0xd6, 0x9c, 0xf7, 0xa2, 0xde, 0xf9, 0xde, 0x14,
    0,    0,    0,    0,    0,    0,    0,    0,    0,    0,    0,    0,    0,    0,    0,    0x10};

/* The eight points of small order, canonically encoded. */
static const char *const small_order[] = {
    "0100000000000000000000000000000000000000000000000000000000000000", /* identity */
    "ecffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f", /* order 2 */
    "0000000000000000000000000000000000000000000000000000000000000000", /* order 4 */
    "0000000000000000000000000000000000000000000000000000000000000080",
    "26e8958fc2b227b045c3f489f2ef98f0d5dfac05d3c63339b13802886d53fc05", /* order 8 */
    "26e8958fc2b227b045c3f489f2ef98f0d5dfac05d3c63339b13802886d53fc85",
    "c7176a703d4dd84fba3c0b760d10670f2a2053fa2c39ccc64ec7fd7792ac037a",
    "c7176a703d4dd84fba3c0b760d10670f2a2053fa2c39ccc64ec7fd7792ac03fa",
};

static void unhex_exact(const char *hex, uint8_t *out, size_t len)
{
    size_t n = 0;
    uint8_t *b = test_unhex(hex, &n);

    assert_int_equal(n, len);
    memcpy(out, b, len);
    free(b);
}

static void field(json_t *v, const char *key, uint8_t *out, size_t len)
{
    json_t *s = json_object_get(v, key);

    assert_true(json_is_string(s));
    unhex_exact(json_string_value(s), out, len);
}

static int load(void **state)
{
    json_error_t error;
    json_t *root = json_load_file(MSV_VECTOR_DIR "/vrf_rfc9381.json", 0, &error), *list;
    size_t n = 0;
    uint8_t *alpha;

    (void)state;
    if (root == NULL)
        return -1;
    list = json_object_get(root, "vectors");
    if (json_array_size(list) != N_VECTORS || msv_init() != MSV_OK)
        return -1;
    for (size_t i = 0; i < N_VECTORS; i++) {
        json_t *v = json_array_get(list, i);
        struct vector *t = &vectors[i];

        field(v, "sk", t->sk, 32);
        field(v, "pk", t->pk, 32);
        field(v, "x", t->x, 32);
        field(v, "h", t->h, 32);
        field(v, "k", t->k, 32);
        field(v, "u", t->u, 32);
        field(v, "v", t->v, 32);
        field(v, "pi", t->pi, 80);
        field(v, "beta", t->beta, 64);
        alpha = test_unhex(json_string_value(json_object_get(v, "alpha")), &n);
        assert_true(n <= sizeof(t->alpha));
        memcpy(t->alpha, alpha, n);
        t->alpha_len = n;
        free(alpha);
    }
    json_decref(root);
    return 0;
}

static void test_rfc_vectors(void **state)
{
    (void)state;
    for (size_t i = 0; i < N_VECTORS; i++) {
        const struct vector *t = &vectors[i];
        struct msv_vrf_trace trace;
        uint8_t pk[32], pi[80], beta[64], beta2[64];

        assert_int_equal(msv_vrf_public_key(TAI, t->sk, pk), MSV_OK);
        assert_memory_equal(pk, t->pk, 32);
        assert_int_equal(msv_vrf_prove_trace(TAI, t->sk, t->alpha, t->alpha_len, pi, &trace),
                         MSV_OK);
        assert_memory_equal(trace.x, t->x, 32);
        assert_memory_equal(trace.h, t->h, 32);
        assert_memory_equal(trace.k, t->k, 32);
        assert_memory_equal(trace.u, t->u, 32);
        assert_memory_equal(trace.v, t->v, 32);
        assert_memory_equal(pi, t->pi, 80);
        assert_int_equal(msv_vrf_prove(TAI, t->sk, t->alpha, t->alpha_len, pi), MSV_OK);
        assert_memory_equal(pi, t->pi, 80);
        assert_int_equal(msv_vrf_proof_to_hash(TAI, pi, beta), MSV_OK);
        assert_memory_equal(beta, t->beta, 64);
        assert_int_equal(msv_vrf_verify(TAI, t->pk, t->alpha, t->alpha_len, t->pi, beta2), MSV_OK);
        assert_memory_equal(beta2, t->beta, 64);
    }
}

static void test_unknown_suite(void **state)
{
    const struct vector *t = &vectors[0];
    uint8_t pk[32], pi[80], beta[64];

    (void)state;
    assert_int_equal(msv_vrf_public_key((enum msv_vrf_suite)0x04, t->sk, pk), MSV_ERR_UNSUPPORTED);
    assert_int_equal(msv_vrf_prove((enum msv_vrf_suite)0x01, t->sk, NULL, 0, pi),
                     MSV_ERR_UNSUPPORTED);
    assert_int_equal(msv_vrf_verify((enum msv_vrf_suite)0x04, t->pk, NULL, 0, t->pi, beta),
                     MSV_ERR_UNSUPPORTED);
}

static void test_round_trip(void **state)
{
    uint8_t sk[32], pk[32], pk2[32], pi[80], pi2[80], beta[64], beta_other[64];
    const uint8_t alice[] = "alice@example.org", bob[] = "bob@example.org";

    (void)state;
    assert_int_equal(msv_vrf_keygen(TAI, sk, pk), MSV_OK);
    assert_int_equal(msv_vrf_public_key(TAI, sk, pk2), MSV_OK);
    assert_memory_equal(pk, pk2, 32);
    assert_int_equal(msv_vrf_prove(TAI, sk, alice, sizeof(alice) - 1, pi), MSV_OK);
    assert_int_equal(msv_vrf_prove(TAI, sk, alice, sizeof(alice) - 1, pi2), MSV_OK);
    assert_memory_equal(pi, pi2, 80); /* deterministic */
    assert_int_equal(msv_vrf_verify(TAI, pk, alice, sizeof(alice) - 1, pi, beta), MSV_OK);
    assert_int_equal(msv_vrf_prove(TAI, sk, bob, sizeof(bob) - 1, pi2), MSV_OK);
    assert_int_equal(msv_vrf_verify(TAI, pk, bob, sizeof(bob) - 1, pi2, beta_other), MSV_OK);
    assert_memory_not_equal(beta, beta_other, 64);
}

/* Every single-bit change of pi is refused, and beta is left as it was. */
static void test_flipped_bits(void **state)
{
    (void)state;
    for (size_t i = 0; i < N_VECTORS; i++) {
        const struct vector *t = &vectors[i];

        for (size_t bit = 0; bit < 80 * 8; bit++) {
            uint8_t pi[80], beta[64] = {0}, zero[64] = {0};

            memcpy(pi, t->pi, 80);
            pi[bit / 8] ^= (uint8_t)(1u << (bit % 8));
            if (msv_vrf_verify(TAI, t->pk, t->alpha, t->alpha_len, pi, beta) != MSV_ERR_AUTH)
                fail_msg("vector %zu: pi with bit %zu flipped verified", i, bit);
            assert_memory_equal(beta, zero, 64);
        }
    }
}

static void test_wrong_alpha_and_key(void **state)
{
    uint8_t beta[64], alpha[17], pk[32];

    (void)state;
    for (size_t i = 0; i < N_VECTORS; i++) {
        const struct vector *t = &vectors[i], *other = &vectors[(i + 1) % N_VECTORS];

        /* another alpha: one byte more, one byte changed, the empty one */
        memcpy(alpha, t->alpha, t->alpha_len);
        alpha[t->alpha_len] = 0;
        assert_int_equal(msv_vrf_verify(TAI, t->pk, alpha, t->alpha_len + 1, t->pi, beta),
                         MSV_ERR_AUTH);
        if (t->alpha_len > 0) {
            alpha[0] ^= 1;
            assert_int_equal(msv_vrf_verify(TAI, t->pk, alpha, t->alpha_len, t->pi, beta),
                             MSV_ERR_AUTH);
            assert_int_equal(msv_vrf_verify(TAI, t->pk, NULL, 0, t->pi, beta), MSV_ERR_AUTH);
        }
        /* another key, and the key with any bit flipped */
        assert_int_equal(msv_vrf_verify(TAI, other->pk, t->alpha, t->alpha_len, t->pi, beta),
                         MSV_ERR_AUTH);
        for (size_t bit = 0; bit < 256; bit++) {
            memcpy(pk, t->pk, 32);
            pk[bit / 8] ^= (uint8_t)(1u << (bit % 8));
            assert_int_equal(msv_vrf_verify(TAI, pk, t->alpha, t->alpha_len, t->pi, beta),
                             MSV_ERR_AUTH);
        }
    }
}

/* c = SHA-512(0x03 || 0x02 || Y || H || Gamma || U || V || 0x00)[0:16], written out anew. */
static void challenge(const uint8_t y[32], const uint8_t h[32], const uint8_t gamma[32],
                      const uint8_t u[32], const uint8_t v[32], uint8_t c[32])
{
    uint8_t buf[2 + 5 * 32 + 1], digest[64];

    buf[0] = 0x03;
    buf[1] = 0x02;
    memcpy(buf + 2, y, 32);
    memcpy(buf + 34, h, 32);
    memcpy(buf + 66, gamma, 32);
    memcpy(buf + 98, u, 32);
    memcpy(buf + 130, v, 32);
    buf[162] = 0x00;
    crypto_hash_sha512(digest, buf, sizeof(buf));
    memset(c, 0, 32);
    memcpy(c, digest, 16);
}

/*
 * The challenge of a proof whose U and V are u0 - c*tu and v0 - c*tv, with
 * tu and tv each the identity or of order 2 (so c*t depends on c's parity
 * only): tries both parities. 0 if neither is consistent (try other values).
 */
static int forge_challenge(const uint8_t y[32], const uint8_t h[32], const uint8_t gamma[32],
                           const uint8_t u0[32], const uint8_t tu[32], const uint8_t v0[32],
                           const uint8_t tv[32], uint8_t c[32])
{
    for (unsigned parity = 0; parity < 2; parity++) {
        uint8_t u[32], v[32];

        memcpy(u, u0, 32);
        memcpy(v, v0, 32);
        if (parity == 1) {
            assert_int_equal(crypto_core_ed25519_sub(u, u0, tu), 0);
            assert_int_equal(crypto_core_ed25519_sub(v, v0, tv), 0);
        }
        challenge(y, h, gamma, u, v, c);
        if ((c[0] & 1u) == parity)
            return 1;
    }
    return 0;
}

static void proof(uint8_t pi[80], const uint8_t gamma[32], const uint8_t c[32], const uint8_t s[32])
{
    memcpy(pi, gamma, 32);
    memcpy(pi + 32, c, 16);
    memcpy(pi + 48, s, 32);
}

/*
 * A small-order public key lets anyone prove anything: with Gamma the
 * identity, U = s*B - c*Y and V = s*H for any s. The key check (RFC 9381
 * 5.4.5) is what refuses these proofs; every small-order key is refused.
 */
static void test_small_order_keys(void **state)
{
    const uint8_t alpha[] = "mallory@example.org";
    uint8_t id[32], y[32], h[32], s[32], sb[32], sh[32], c[32], pi[80], beta[64];

    (void)state;
    unhex_exact(small_order[0], id, 32);
    for (size_t i = 0; i < 2; i++) { /* the identity and the point of order 2 */
        unhex_exact(small_order[i], y, 32);
        assert_int_equal(msv_vrf_encode_to_curve(y, alpha, sizeof(alpha) - 1, h), MSV_OK);
        do {
            crypto_core_ed25519_scalar_random(s);
            assert_int_equal(crypto_scalarmult_ed25519_base_noclamp(sb, s), 0);
            assert_int_equal(crypto_scalarmult_ed25519_noclamp(sh, s, h), 0);
        } while (!forge_challenge(y, h, id, sb, y, sh, id, c));
        proof(pi, id, c, s);
        assert_int_equal(msv_vrf_verify(TAI, y, alpha, sizeof(alpha) - 1, pi, beta), MSV_ERR_AUTH);
    }
    for (size_t i = 0; i < sizeof(small_order) / sizeof(small_order[0]); i++) {
        unhex_exact(small_order[i], y, 32);
        assert_int_equal(
            msv_vrf_verify(TAI, y, vectors[0].alpha, vectors[0].alpha_len, vectors[0].pi, beta),
            MSV_ERR_AUTH);
    }
}

/* Adds L to s (s < L, so no carry out of 256 bits). */
static void add_order(uint8_t s[32])
{
    unsigned carry = 0;

    for (size_t i = 0; i < 32; i++) {
        carry += (unsigned)s[i] + order_l[i];
        s[i] = (uint8_t)carry;
        carry >>= 8;
    }
    assert_int_equal(carry, 0);
}

/* s + L names the same scalar; the RFC requires s < L, so that a proof has one encoding. */
static void test_s_not_below_order(void **state)
{
    uint8_t pi[80], beta[64];

    (void)state;
    for (size_t i = 0; i < N_VECTORS; i++) {
        const struct vector *t = &vectors[i];

        memcpy(pi, t->pi, 80);
        add_order(pi + 48);
        assert_int_equal(msv_vrf_verify(TAI, t->pk, t->alpha, t->alpha_len, pi, beta),
                         MSV_ERR_AUTH);
        memcpy(pi + 48, order_l, 32); /* s = L itself */
        assert_int_equal(msv_vrf_verify(TAI, t->pk, t->alpha, t->alpha_len, pi, beta),
                         MSV_ERR_AUTH);
    }
}

/*
 * Encodings RFC 8032 5.1.3 does not decode: y >= p (here p + 1, which libsodium
 * would read as y = 1), x = 0 with the sign bit set, and a y with no x.
 */
static void test_non_canonical_points(void **state)
{
    static const char *const bad[] = {
        "eeffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f", /* y = p + 1 */
        "edffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f", /* y = p */
        "ffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff", /* y = 2^255 - 1 */
        "0100000000000000000000000000000000000000000000000000000000000080", /* -0, y = 1 */
        "ecffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff", /* -0, y = -1 */
        "0200000000000000000000000000000000000000000000000000000000000000", /* y = 2: off the curve
                                                                             */
    };
    const struct vector *t = &vectors[0];
    uint8_t p[32], pi[80], beta[64];

    (void)state;
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        unhex_exact(bad[i], p, 32);
        assert_int_equal(msv_vrf_verify(TAI, p, t->alpha, t->alpha_len, t->pi, beta), MSV_ERR_AUTH);
        memcpy(pi, t->pi, 80);
        memcpy(pi, p, 32);
        assert_int_equal(msv_vrf_verify(TAI, t->pk, t->alpha, t->alpha_len, pi, beta),
                         MSV_ERR_AUTH);
        assert_int_equal(msv_vrf_proof_to_hash(TAI, pi, beta), MSV_ERR_AUTH);
    }
}

/*
 * Gamma' = x*H + T with T of order 2 is a point, and RFC 9381 verifies it like
 * any other: V = s*H - c*Gamma' = k*H - c*T. The key holder can make such a
 * proof; it must verify, and beta (from 8*Gamma') is the honest one.
 */
static void test_gamma_with_torsion(void **state)
{
    const struct vector *t = &vectors[2];
    struct msv_vrf_trace trace;
    uint8_t gamma[32], torsion[32], k[32], kb[32], kh[32], c[32], x[32], cx[32], s[32];
    uint8_t wide[64] = {0}, pi[80], beta[64], id[32];

    (void)state;
    unhex_exact(small_order[0], id, 32);
    unhex_exact(small_order[1], torsion, 32);
    assert_int_equal(msv_vrf_prove_trace(TAI, t->sk, t->alpha, t->alpha_len, pi, &trace), MSV_OK);
    assert_int_equal(crypto_core_ed25519_add(gamma, pi, torsion), 0);
    assert_int_equal(crypto_core_ed25519_is_valid_point(gamma), 0); /* not in the subgroup */
    do {
        crypto_core_ed25519_scalar_random(k);
        assert_int_equal(crypto_scalarmult_ed25519_base_noclamp(kb, k), 0);
        assert_int_equal(crypto_scalarmult_ed25519_noclamp(kh, k, trace.h), 0);
    } while (!forge_challenge(t->pk, trace.h, gamma, kb, id, kh, torsion, c));
    memcpy(wide, trace.x, 32);
    crypto_core_ed25519_scalar_reduce(x, wide);
    crypto_core_ed25519_scalar_mul(cx, c, x);
    crypto_core_ed25519_scalar_add(s, k, cx);
    proof(pi, gamma, c, s);
    assert_int_equal(msv_vrf_verify(TAI, t->pk, t->alpha, t->alpha_len, pi, beta), MSV_OK);
    assert_memory_equal(beta, t->beta, 64);
    sodium_memzero(&trace, sizeof(trace));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_rfc_vectors),         cmocka_unit_test(test_unknown_suite),
        cmocka_unit_test(test_round_trip),          cmocka_unit_test(test_flipped_bits),
        cmocka_unit_test(test_wrong_alpha_and_key), cmocka_unit_test(test_small_order_keys),
        cmocka_unit_test(test_s_not_below_order),   cmocka_unit_test(test_non_canonical_points),
        cmocka_unit_test(test_gamma_with_torsion),
    };

    return cmocka_run_group_tests(tests, load, NULL);
}
