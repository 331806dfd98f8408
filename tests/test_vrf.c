/*
 * The VRF (src/crypto/vrf.c, h2c.c): RFC 9381's own vectors for
 * ECVRF-EDWARDS25519-SHA512-TAI and -ELL2 and RFC 9380's for its hash to the
 * curve (tests/vectors/vrf_rfc9381.json), every intermediate value included,
 * and, in both suites, proofs that must be refused: any flipped
 * bit, another alpha or key, small-order keys (with proofs forged for them),
 * s not below L, encodings that are not canonical. A proof whose Gamma has a
 * torsion component is valid by the RFC and must be accepted with the same
 * beta. The variable-time arithmetic verification runs on (ed25519_vt.c) is
 * checked against libsodium's on random points and scalars, torsion included.
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

#define N_SUITES 2
static const enum msv_vrf_suite suites[N_SUITES] = {MSV_VRF_EDWARDS25519_SHA512_TAI,
                                                    MSV_VRF_EDWARDS25519_SHA512_ELL2};
static const char *const suite_keys[N_SUITES] = {"tai", "ell2"};

struct vector {
    uint8_t sk[32], pk[32], x[32], h[32], k[32], u[32], v[32], pi[80], beta[64];
    uint8_t alpha[16];
    size_t alpha_len;
};

#define N_VECTORS 3
static struct vector all_vectors[N_SUITES][N_VECTORS];
static json_t *h2c_vectors; /* the "h2c" object */

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
    if (msv_init() != MSV_OK)
        return -1;
    for (size_t k = 0; k < N_SUITES * N_VECTORS; k++) {
        json_t *v;
        struct vector *t = &all_vectors[k / N_VECTORS][k % N_VECTORS];

        list = json_object_get(root, suite_keys[k / N_VECTORS]);
        if (json_array_size(list) != N_VECTORS)
            return -1;
        v = json_array_get(list, k % N_VECTORS);

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
    h2c_vectors = json_incref(json_object_get(root, "h2c"));
    json_decref(root);
    return h2c_vectors == NULL ? -1 : 0;
}

static int unload(void **state)
{
    (void)state;
    json_decref(h2c_vectors);
    return 0;
}

static void rfc_vectors(enum msv_vrf_suite suite, const struct vector *vectors)
{
    for (size_t i = 0; i < N_VECTORS; i++) {
        const struct vector *t = &vectors[i];
        struct msv_vrf_trace trace;
        uint8_t pk[32], pi[80], beta[64], beta2[64];

        assert_int_equal(msv_vrf_public_key(suite, t->sk, pk), MSV_OK);
        assert_memory_equal(pk, t->pk, 32);
        assert_int_equal(msv_vrf_prove_trace(suite, t->sk, t->alpha, t->alpha_len, pi, &trace),
                         MSV_OK);
        assert_memory_equal(trace.x, t->x, 32);
        assert_memory_equal(trace.h, t->h, 32);
        assert_memory_equal(trace.k, t->k, 32);
        assert_memory_equal(trace.u, t->u, 32);
        assert_memory_equal(trace.v, t->v, 32);
        assert_memory_equal(pi, t->pi, 80);
        assert_int_equal(msv_vrf_prove(suite, t->sk, t->alpha, t->alpha_len, pi), MSV_OK);
        assert_memory_equal(pi, t->pi, 80);
        assert_int_equal(msv_vrf_proof_to_hash(suite, pi, beta), MSV_OK);
        assert_memory_equal(beta, t->beta, 64);
        assert_int_equal(msv_vrf_verify(suite, t->pk, t->alpha, t->alpha_len, t->pi, beta2),
                         MSV_OK);
        assert_memory_equal(beta2, t->beta, 64);
    }
}

static void test_rfc_vectors(void **state)
{
    (void)state;
    for (size_t i = 0; i < N_SUITES; i++)
        rfc_vectors(suites[i], all_vectors[i]);
}

static void test_unknown_suite(void **state)
{
    const struct vector *t = &all_vectors[0][0];
    uint8_t pk[32], pi[80], beta[64];

    (void)state;
    assert_int_equal(msv_vrf_public_key((enum msv_vrf_suite)0x01, t->sk, pk), MSV_ERR_UNSUPPORTED);
    assert_int_equal(msv_vrf_prove((enum msv_vrf_suite)0x02, t->sk, NULL, 0, pi),
                     MSV_ERR_UNSUPPORTED);
    assert_int_equal(msv_vrf_verify((enum msv_vrf_suite)0x05, t->pk, NULL, 0, t->pi, beta),
                     MSV_ERR_UNSUPPORTED);
    /* a proof of one suite is no proof in the other */
    assert_int_equal(msv_vrf_verify(MSV_VRF_EDWARDS25519_SHA512_ELL2, t->pk, t->alpha, t->alpha_len,
                                    t->pi, beta),
                     MSV_ERR_AUTH);
}

static void round_trip(enum msv_vrf_suite suite, const struct vector *vectors)
{
    (void)vectors;
    uint8_t sk[32], pk[32], pk2[32], pi[80], pi2[80], beta[64], beta_other[64];
    const uint8_t alice[] = "alice@example.org", bob[] = "bob@example.org";

    assert_int_equal(msv_vrf_keygen(suite, sk, pk), MSV_OK);
    assert_int_equal(msv_vrf_public_key(suite, sk, pk2), MSV_OK);
    assert_memory_equal(pk, pk2, 32);
    assert_int_equal(msv_vrf_prove(suite, sk, alice, sizeof(alice) - 1, pi), MSV_OK);
    assert_int_equal(msv_vrf_prove(suite, sk, alice, sizeof(alice) - 1, pi2), MSV_OK);
    assert_memory_equal(pi, pi2, 80); /* deterministic */
    assert_int_equal(msv_vrf_verify(suite, pk, alice, sizeof(alice) - 1, pi, beta), MSV_OK);
    assert_int_equal(msv_vrf_prove(suite, sk, bob, sizeof(bob) - 1, pi2), MSV_OK);
    assert_int_equal(msv_vrf_verify(suite, pk, bob, sizeof(bob) - 1, pi2, beta_other), MSV_OK);
    assert_memory_not_equal(beta, beta_other, 64);
}

static void test_round_trip(void **state)
{
    (void)state;
    for (size_t i = 0; i < N_SUITES; i++)
        round_trip(suites[i], all_vectors[i]);
}

/* Every single-bit change of pi is refused, and beta is left as it was. */
static void flipped_bits(enum msv_vrf_suite suite, const struct vector *vectors)
{
    for (size_t i = 0; i < N_VECTORS; i++) {
        const struct vector *t = &vectors[i];

        for (size_t bit = 0; bit < 80 * 8; bit++) {
            uint8_t pi[80], beta[64] = {0}, zero[64] = {0};

            memcpy(pi, t->pi, 80);
            pi[bit / 8] ^= (uint8_t)(1u << (bit % 8));
            if (msv_vrf_verify(suite, t->pk, t->alpha, t->alpha_len, pi, beta) != MSV_ERR_AUTH)
                fail_msg("vector %zu: pi with bit %zu flipped verified", i, bit);
            assert_memory_equal(beta, zero, 64);
        }
    }
}

/* The output alone is the output of the proof, for both suites and many inputs. */
static void test_output_without_proof(void **state)
{
    const enum msv_vrf_suite both[2] = {MSV_VRF_EDWARDS25519_SHA512_TAI,
                                        MSV_VRF_EDWARDS25519_SHA512_ELL2};
    uint8_t sk[MSV_VRF_SECRET_KEY_LEN], pi[MSV_VRF_PROOF_LEN], alpha[40];
    uint8_t beta[MSV_VRF_OUTPUT_LEN], out[MSV_VRF_OUTPUT_LEN];

    (void)state;
    for (int k = 0; k < 2; k++) {
        for (size_t n = 0; n < 20; n++) {
            randombytes_buf(sk, sizeof(sk));
            randombytes_buf(alpha, sizeof(alpha));
            assert_int_equal(msv_vrf_prove(both[k], sk, alpha, n, pi), MSV_OK);
            assert_int_equal(msv_vrf_proof_to_hash(both[k], pi, beta), MSV_OK);
            assert_int_equal(msv_vrf_output(both[k], sk, alpha, n, out), MSV_OK);
            assert_memory_equal(out, beta, sizeof(beta));
        }
    }
    assert_int_equal(msv_vrf_output((enum msv_vrf_suite)7, sk, alpha, 1, out), MSV_ERR_UNSUPPORTED);
}

static void test_flipped_bits(void **state)
{
    (void)state;
    for (size_t i = 0; i < N_SUITES; i++)
        flipped_bits(suites[i], all_vectors[i]);
}

static void wrong_alpha_and_key(enum msv_vrf_suite suite, const struct vector *vectors)
{
    uint8_t beta[64], alpha[17], pk[32];

    for (size_t i = 0; i < N_VECTORS; i++) {
        const struct vector *t = &vectors[i], *other = &vectors[(i + 1) % N_VECTORS];

        /* another alpha: one byte more, one byte changed, the empty one */
        memcpy(alpha, t->alpha, t->alpha_len);
        alpha[t->alpha_len] = 0;
        assert_int_equal(msv_vrf_verify(suite, t->pk, alpha, t->alpha_len + 1, t->pi, beta),
                         MSV_ERR_AUTH);
        if (t->alpha_len > 0) {
            alpha[0] ^= 1;
            assert_int_equal(msv_vrf_verify(suite, t->pk, alpha, t->alpha_len, t->pi, beta),
                             MSV_ERR_AUTH);
            assert_int_equal(msv_vrf_verify(suite, t->pk, NULL, 0, t->pi, beta), MSV_ERR_AUTH);
        }
        /* another key, and the key with any bit flipped */
        assert_int_equal(msv_vrf_verify(suite, other->pk, t->alpha, t->alpha_len, t->pi, beta),
                         MSV_ERR_AUTH);
        for (size_t bit = 0; bit < 256; bit++) {
            memcpy(pk, t->pk, 32);
            pk[bit / 8] ^= (uint8_t)(1u << (bit % 8));
            assert_int_equal(msv_vrf_verify(suite, pk, t->alpha, t->alpha_len, t->pi, beta),
                             MSV_ERR_AUTH);
        }
    }
}

static void test_wrong_alpha_and_key(void **state)
{
    (void)state;
    for (size_t i = 0; i < N_SUITES; i++)
        wrong_alpha_and_key(suites[i], all_vectors[i]);
}

/* c = SHA-512(suite || 0x02 || Y || H || Gamma || U || V || 0x00)[0:16], written out anew. */
static void challenge(enum msv_vrf_suite suite, const uint8_t y[32], const uint8_t h[32],
                      const uint8_t gamma[32], const uint8_t u[32], const uint8_t v[32],
                      uint8_t c[32])
{
    uint8_t buf[2 + 5 * 32 + 1], digest[64];

    buf[0] = (uint8_t)suite;
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
static int forge_challenge(enum msv_vrf_suite suite, const uint8_t y[32], const uint8_t h[32],
                           const uint8_t gamma[32], const uint8_t u0[32], const uint8_t tu[32],
                           const uint8_t v0[32], const uint8_t tv[32], uint8_t c[32])
{
    for (unsigned parity = 0; parity < 2; parity++) {
        uint8_t u[32], v[32];

        memcpy(u, u0, 32);
        memcpy(v, v0, 32);
        if (parity == 1) {
            assert_int_equal(crypto_core_ed25519_sub(u, u0, tu), 0);
            assert_int_equal(crypto_core_ed25519_sub(v, v0, tv), 0);
        }
        challenge(suite, y, h, gamma, u, v, c);
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
static void small_order_keys(enum msv_vrf_suite suite, const struct vector *vectors)
{
    const uint8_t alpha[] = "mallory@example.org";
    uint8_t id[32], y[32], h[32], s[32], sb[32], sh[32], c[32], pi[80], beta[64];

    unhex_exact(small_order[0], id, 32);
    for (size_t i = 0; i < 2; i++) { /* the identity and the point of order 2 */
        unhex_exact(small_order[i], y, 32);
        assert_int_equal(msv_vrf_encode_to_curve(suite, y, alpha, sizeof(alpha) - 1, h), MSV_OK);
        do {
            crypto_core_ed25519_scalar_random(s);
            assert_int_equal(crypto_scalarmult_ed25519_base_noclamp(sb, s), 0);
            assert_int_equal(crypto_scalarmult_ed25519_noclamp(sh, s, h), 0);
        } while (!forge_challenge(suite, y, h, id, sb, y, sh, id, c));
        proof(pi, id, c, s);
        assert_int_equal(msv_vrf_verify(suite, y, alpha, sizeof(alpha) - 1, pi, beta),
                         MSV_ERR_AUTH);
    }
    for (size_t i = 0; i < sizeof(small_order) / sizeof(small_order[0]); i++) {
        unhex_exact(small_order[i], y, 32);
        assert_int_equal(
            msv_vrf_verify(suite, y, vectors[0].alpha, vectors[0].alpha_len, vectors[0].pi, beta),
            MSV_ERR_AUTH);
    }
}

static void test_small_order_keys(void **state)
{
    (void)state;
    for (size_t i = 0; i < N_SUITES; i++)
        small_order_keys(suites[i], all_vectors[i]);
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
static void s_not_below_order(enum msv_vrf_suite suite, const struct vector *vectors)
{
    uint8_t pi[80], beta[64];

    for (size_t i = 0; i < N_VECTORS; i++) {
        const struct vector *t = &vectors[i];

        memcpy(pi, t->pi, 80);
        add_order(pi + 48);
        assert_int_equal(msv_vrf_verify(suite, t->pk, t->alpha, t->alpha_len, pi, beta),
                         MSV_ERR_AUTH);
        memcpy(pi + 48, order_l, 32); /* s = L itself */
        assert_int_equal(msv_vrf_verify(suite, t->pk, t->alpha, t->alpha_len, pi, beta),
                         MSV_ERR_AUTH);
    }
}

static void test_s_not_below_order(void **state)
{
    (void)state;
    for (size_t i = 0; i < N_SUITES; i++)
        s_not_below_order(suites[i], all_vectors[i]);
}

/*
 * Encodings RFC 8032 5.1.3 does not decode: y >= p (here p + 1, which libsodium
 * would read as y = 1), x = 0 with the sign bit set, and a y with no x.
 */
static void non_canonical_points(enum msv_vrf_suite suite, const struct vector *vectors)
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

    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        unhex_exact(bad[i], p, 32);
        assert_int_equal(msv_vrf_verify(suite, p, t->alpha, t->alpha_len, t->pi, beta),
                         MSV_ERR_AUTH);
        memcpy(pi, t->pi, 80);
        memcpy(pi, p, 32);
        assert_int_equal(msv_vrf_verify(suite, t->pk, t->alpha, t->alpha_len, pi, beta),
                         MSV_ERR_AUTH);
        assert_int_equal(msv_vrf_proof_to_hash(suite, pi, beta), MSV_ERR_AUTH);
    }
}

static void test_non_canonical_points(void **state)
{
    (void)state;
    for (size_t i = 0; i < N_SUITES; i++)
        non_canonical_points(suites[i], all_vectors[i]);
}

/*
 * Gamma' = x*H + T with T of order 2 is a point, and RFC 9381 verifies it like
 * any other: V = s*H - c*Gamma' = k*H - c*T. The key holder can make such a
 * proof; it must verify, and beta (from 8*Gamma') is the honest one.
 */
static void gamma_with_torsion(enum msv_vrf_suite suite, const struct vector *vectors)
{
    const struct vector *t = &vectors[2];
    struct msv_vrf_trace trace;
    uint8_t gamma[32], torsion[32], k[32], kb[32], kh[32], c[32], x[32], cx[32], s[32];
    uint8_t wide[64] = {0}, pi[80], beta[64], id[32];

    unhex_exact(small_order[0], id, 32);
    unhex_exact(small_order[1], torsion, 32);
    assert_int_equal(msv_vrf_prove_trace(suite, t->sk, t->alpha, t->alpha_len, pi, &trace), MSV_OK);
    assert_int_equal(crypto_core_ed25519_add(gamma, pi, torsion), 0);
    assert_int_equal(crypto_core_ed25519_is_valid_point(gamma), 0); /* not in the subgroup */
    do {
        crypto_core_ed25519_scalar_random(k);
        assert_int_equal(crypto_scalarmult_ed25519_base_noclamp(kb, k), 0);
        assert_int_equal(crypto_scalarmult_ed25519_noclamp(kh, k, trace.h), 0);
    } while (!forge_challenge(suite, t->pk, trace.h, gamma, kb, id, kh, torsion, c));
    memcpy(wide, trace.x, 32);
    crypto_core_ed25519_scalar_reduce(x, wide);
    crypto_core_ed25519_scalar_mul(cx, c, x);
    crypto_core_ed25519_scalar_add(s, k, cx);
    proof(pi, gamma, c, s);
    assert_int_equal(msv_vrf_verify(suite, t->pk, t->alpha, t->alpha_len, pi, beta), MSV_OK);
    assert_memory_equal(beta, t->beta, 64);
    sodium_memzero(&trace, sizeof(trace));
}

static void test_gamma_with_torsion(void **state)
{
    (void)state;
    for (size_t i = 0; i < N_SUITES; i++)
        gamma_with_torsion(suites[i], all_vectors[i]);
}

/* The RFC 8032 encoding of the point RFC 9380 prints as big-endian x and y. */
static void encode_xy(json_t *v, const char *x_key, const char *y_key, uint8_t out[32])
{
    uint8_t x[32], y[32];

    field(v, x_key, x, 32);
    field(v, y_key, y, 32);
    for (size_t i = 0; i < 32; i++)
        out[i] = y[31 - i];
    out[31] |= (uint8_t)((x[31] & 1u) << 7);
}

/* RFC 9380 J.5.2: the map's point Q and, the cofactor cleared, P. */
static void test_h2c_vectors(void **state)
{
    const char *dst = json_string_value(json_object_get(h2c_vectors, "dst"));
    json_t *list = json_object_get(h2c_vectors, "vectors");

    (void)state;
    assert_non_null(dst);
    assert_true(json_array_size(list) >= 2);
    for (size_t i = 0; i < json_array_size(list); i++) {
        json_t *v = json_array_get(list, i);
        const char *msg = json_string_value(json_object_get(v, "msg"));
        const uint8_t *parts[1] = {(const uint8_t *)msg};
        size_t lens[1] = {strlen(msg)};
        uint8_t q[32], p[32], want_q[32], want_p[32];

        encode_xy(v, "q_x", "q_y", want_q);
        encode_xy(v, "p_x", "p_y", want_p);
        assert_int_equal(
            msv_h2c_edwards25519_nu_map(parts, lens, 1, (const uint8_t *)dst, strlen(dst), q),
            MSV_OK);
        assert_memory_equal(q, want_q, 32);
        assert_int_equal(crypto_core_ed25519_add(p, q, q), 0);
        assert_int_equal(crypto_core_ed25519_add(p, p, p), 0);
        assert_int_equal(crypto_core_ed25519_add(p, p, p), 0);
        assert_memory_equal(p, want_p, 32);
    }
}

/*
 * What docs/crypto.md says of libsodium 1.0.18's from_uniform: given RFC
 * 9380's u (little-endian), it returns P with one value of the top bit and -P
 * with the other, the sign of x being read from that bit.
 */
static void test_libsodium_from_uniform(void **state)
{
    json_t *list = json_object_get(h2c_vectors, "vectors");

    (void)state;
    for (size_t i = 0; i < json_array_size(list); i++) {
        json_t *v = json_array_get(list, i);
        uint8_t u[32], r[32], want_p[32], neg_p[32], got[2][32];

        field(v, "u", u, 32);
        encode_xy(v, "p_x", "p_y", want_p);
        memcpy(neg_p, want_p, 32);
        neg_p[31] ^= 0x80;
        for (unsigned bit = 0; bit < 2; bit++) {
            for (size_t j = 0; j < 32; j++)
                r[j] = u[31 - j];
            r[31] |= (uint8_t)(bit << 7);
            assert_int_equal(crypto_core_ed25519_from_uniform(got[bit], r), 0);
        }
        assert_true((memcmp(got[0], want_p, 32) == 0 && memcmp(got[1], neg_p, 32) == 0) ||
                    (memcmp(got[1], want_p, 32) == 0 && memcmp(got[0], neg_p, 32) == 0));
    }
}

/* n*X by libsodium for X = prime + torsion (torsion of order dividing 8): (n mod L)*prime +
 * (n mod 8)*torsion, n any 256-bit integer. */
static void reference_mul(uint8_t out[32], const uint8_t n[32], const uint8_t prime[32],
                          const uint8_t torsion[32])
{
    uint8_t wide[64] = {0}, n_l[32];

    memcpy(wide, n, 32);
    crypto_core_ed25519_scalar_reduce(n_l, wide);
    assert_int_equal(crypto_scalarmult_ed25519_noclamp(out, n_l, prime), 0);
    for (unsigned i = 0; i < (n[0] & 7u); i++)
        assert_int_equal(crypto_core_ed25519_add(out, out, torsion), 0);
}

/*
 * The variable-time arithmetic (ed25519_vt.c) against libsodium: a*P - b*Q for random
 * 256-bit a and b (not reduced) and points of the prime-order subgroup, of small order
 * added, and B itself (its own tables); 8*P.
 */
static void test_vartime_against_libsodium(void **state)
{
    static const uint8_t base[32] = {0x58, 0x66, 0x66, 0x66, 0x66, 0x66, 0x66, 0x66,
                                     0x66, 0x66, 0x66, 0x66, 0x66, 0x66, 0x66, 0x66,
                                     0x66, 0x66, 0x66, 0x66, 0x66, 0x66, 0x66, 0x66,
                                     0x66, 0x66, 0x66, 0x66, 0x66, 0x66, 0x66, 0x66};
    uint8_t id[32];

    (void)state;
    unhex_exact(small_order[0], id, 32);
    for (int i = 0; i < 200; i++) {
        uint8_t a[32], b[32], r[32], prime[2][32], torsion[2][32], point[2][32];
        uint8_t ap[32], bq[32], want[32], got[32], eight[32];

        randombytes_buf(a, 32);
        randombytes_buf(b, 32);
        if (i % 4 == 1)
            memset(b + 16, 0, 16); /* c is 128 bits */
        for (int j = 0; j < 2; j++) {
            crypto_core_ed25519_scalar_random(r);
            assert_int_equal(crypto_scalarmult_ed25519_base_noclamp(prime[j], r), 0);
            unhex_exact(small_order[(i + j) % 8], torsion[j], 32);
            assert_int_equal(crypto_core_ed25519_add(point[j], prime[j], torsion[j]), 0);
        }
        if (i % 3 == 0) { /* a*B - b*Q */
            memcpy(prime[0], base, 32);
            memcpy(torsion[0], id, 32);
            memcpy(point[0], base, 32);
        }
        reference_mul(ap, a, prime[0], torsion[0]);
        reference_mul(bq, b, prime[1], torsion[1]);
        assert_int_equal(crypto_core_ed25519_sub(want, ap, bq), 0);
        assert_int_equal(msv_ed25519_mul_sub_vartime(got, a, point[0], b, point[1]), MSV_OK);
        assert_memory_equal(got, want, 32);
        assert_int_equal(msv_ed25519_times8_vartime(got, point[1]), MSV_OK);
        assert_int_equal(crypto_core_ed25519_add(eight, point[1], point[1]), 0);
        assert_int_equal(crypto_core_ed25519_add(eight, eight, eight), 0);
        assert_int_equal(crypto_core_ed25519_add(eight, eight, eight), 0);
        assert_memory_equal(got, eight, 32);
    }
}

/* Whether libsodium takes p as a point and encodes it back to the same bytes. */
static int sodium_canonical(const uint8_t p[32])
{
    static const uint8_t identity[32] = {1};
    uint8_t again[32];

    return crypto_core_ed25519_add(again, p, identity) == 0 && memcmp(again, p, 32) == 0;
}

/* The strict decoding (RFC 8032 5.1.3) refuses exactly what libsodium does not give back. */
static void test_vartime_decoding(void **state)
{
    static const char *const edges[] = {
        "edffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f", /* y = p */
        "eeffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f", /* y = p + 1 */
        "ffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff",
        "0100000000000000000000000000000000000000000000000000000000000080", /* x = 0, sign 1 */
        "ecffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff",
        "0200000000000000000000000000000000000000000000000000000000000000", /* y = 2: no x */
    };
    uint8_t p[32], out[32];

    (void)state;
    for (size_t i = 0; i < sizeof(edges) / sizeof(edges[0]); i++) {
        unhex_exact(edges[i], p, 32);
        assert_int_equal(msv_ed25519_times8_vartime(out, p) == MSV_OK, sodium_canonical(p));
    }
    for (size_t i = 0; i < sizeof(small_order) / sizeof(small_order[0]); i++) {
        unhex_exact(small_order[i], p, 32);
        assert_int_equal(msv_ed25519_times8_vartime(out, p), MSV_OK);
        assert_memory_equal(out, (const uint8_t[32]){1}, 32);
    }
    for (int i = 0; i < 4000; i++) {
        randombytes_buf(p, 32);
        if (i % 2)
            p[31] |= 0x7f; /* near p: y >= p for some */
        assert_int_equal(msv_ed25519_times8_vartime(out, p) == MSV_OK, sodium_canonical(p));
    }
}

/* A prepared key verifies as msv_vrf_verify does; a small-order key is refused. */
static void test_prepared_key(void **state)
{
    (void)state;
    for (size_t i = 0; i < N_SUITES; i++) {
        for (size_t j = 0; j < N_VECTORS; j++) {
            const struct vector *t = &all_vectors[i][j];
            struct msv_vrf_key key;
            uint8_t beta[64], pi[80];

            assert_int_equal(msv_vrf_key_prepare(&key, t->pk), MSV_OK);
            assert_int_equal(
                msv_vrf_verify_prepared(suites[i], &key, t->alpha, t->alpha_len, t->pi, beta),
                MSV_OK);
            assert_memory_equal(beta, t->beta, 64);
            memcpy(pi, t->pi, 80);
            pi[40] ^= 1;
            assert_int_equal(
                msv_vrf_verify_prepared(suites[i], &key, t->alpha, t->alpha_len, pi, beta),
                MSV_ERR_AUTH);
        }
    }
    for (size_t i = 0; i < sizeof(small_order) / sizeof(small_order[0]); i++) {
        struct msv_vrf_key key;
        uint8_t pk[32];

        unhex_exact(small_order[i], pk, 32);
        assert_int_equal(msv_vrf_key_prepare(&key, pk), MSV_ERR_AUTH);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_rfc_vectors),
        cmocka_unit_test(test_unknown_suite),
        cmocka_unit_test(test_round_trip),
        cmocka_unit_test(test_output_without_proof),
        cmocka_unit_test(test_flipped_bits),
        cmocka_unit_test(test_wrong_alpha_and_key),
        cmocka_unit_test(test_small_order_keys),
        cmocka_unit_test(test_s_not_below_order),
        cmocka_unit_test(test_non_canonical_points),
        cmocka_unit_test(test_gamma_with_torsion),
        cmocka_unit_test(test_h2c_vectors),
        cmocka_unit_test(test_libsodium_from_uniform),
        cmocka_unit_test(test_vartime_against_libsodium),
        cmocka_unit_test(test_vartime_decoding),
        cmocka_unit_test(test_prepared_key),
    };

    return cmocka_run_group_tests(tests, load, unload);
}
