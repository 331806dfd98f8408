/*
 * ML-KEM-768 (FIPS 203, August 2024): parameter set k = 3, eta1 = eta2 = 2,
 * du = 10, dv = 4 (section 8), over Z_q[X]/(X^256 + 1) with q = 3329.
 *
 *   (rho, sigma) = G(d || k)                              K-PKE.KeyGen, Alg. 13
 *   A^[i][j]     = SampleNTT(rho || j || i)
 *   s, e         = SamplePolyCBD2(PRF(sigma, N)), N = 0, 1, ...
 *   t^           = A^ o NTT(s) + NTT(e)
 *   ek           = ByteEncode12(t^) || rho                     1184 bytes
 *   dk           = ByteEncode12(NTT(s)) || ek || H(ek) || z    2400 bytes
 *
 *   (K, r) = G(m || H(ek))                                ML-KEM.Encaps, Alg. 17
 *   y, e1, e2 = SamplePolyCBD2(PRF(r, N))                 K-PKE.Encrypt, Alg. 14
 *   u  = NTT^-1(A^T o NTT(y)) + e1
 *   v  = NTT^-1(t^T o NTT(y)) + e2 + Decompress1(m)
 *   c  = ByteEncode10(Compress10(u)) || ByteEncode4(Compress4(v))   1088 bytes
 *
 *   m' = ByteEncode1(Compress1(v' - NTT^-1(s^T o NTT(u'))))   K-PKE.Decrypt, Alg. 15
 *   (K', r') = G(m' || H(ek)); K = K' if K-PKE.Encrypt(ek, m', r') = c,
 *   else J(z || c)                                        ML-KEM.Decaps, Alg. 18
 *
 * H = SHA3-256, G = SHA3-512, J = SHAKE256 to 32 bytes, PRF = SHAKE256 to
 * 128 bytes, XOF = SHAKE128 (section 4.1), all from OpenSSL.
 *
 * Constant time. Everything derived from d, z, m, sigma, r or a ciphertext
 * being decapsulated is computed without a branch or a table index that
 * depends on it: coefficients stay in [0, q) by Barrett reduction (a 64-bit
 * multiplication by floor(2^32 / q) and a shift) and by conditional
 * subtractions made of masks; Compress divides by q the same way, never
 * with a division instruction; the ciphertexts are compared by OR-ing their
 * differences and the implicit rejection selects its key with a mask.
 * Branches and table indices depend only on loop counters and on public
 * data: rho and the encapsulation key (SampleNTT's rejection), lengths.
 * tests/test_mlkem_ct.c checks this under valgrind.
 */
#include <stdlib.h>
#include <string.h>

#include <sodium.h>

#include "crypto/internal.h"
#include "missive/mlkem.h"

#ifdef MSV_HAVE_MEMCHECK
#include <valgrind/memcheck.h>
/*
 * A value computed from secrets but public by design (rho, which ek
 * publishes): tells memcheck, for tests/test_mlkem_ct.c, that branching on
 * it is no leak. Outside valgrind the client request does nothing.
 */
#define DECLASSIFY(p, n) ((void)VALGRIND_MAKE_MEM_DEFINED((p), (n)))
#else
#define DECLASSIFY(p, n) ((void)(p), (void)(n))
#endif

#define N 256
#define Q 3329
#define K 3
#define DU 10
#define DV 4
#define POLY12_BYTES 384                /* ByteEncode12 of one polynomial */
#define PKE_DK_BYTES (K * POLY12_BYTES) /* 1152 */
#define C1_BYTES (K * 32 * DU)          /* 960 */
#define PRF_BYTES (64 * 2)              /* eta = 2 */
#define BARRETT_M 1290167u              /* floor(2^32 / q) */
#define INV128 3303u                    /* 128^-1 mod q, the scale of NTT^-1 */
#define XOF_BLOCK 168                   /* SHAKE128's rate */
#define SAMPLE_FIRST (4 * XOF_BLOCK)    /* ~448 candidates for 256 values */
#define SAMPLE_MAX (64 * 1024)          /* an rho that needs more is refused */
#define DK_H_OFFSET (PKE_DK_BYTES + MSV_MLKEM768_EK_LEN)
#define DK_Z_OFFSET (DK_H_OFFSET + 32)

struct poly {
    uint16_t c[N]; /* in [0, q) */
};

/* zeta^BitRev7(i) mod q for zeta = 17 (section 4.3, the NTT's roots). */
static const uint16_t zetas[128] = {
    1,    1729, 2580, 3289, 2642, 630,  1897, 848,  1062, 1919, 193,  797,  2786, 3260, 569,  1746,
    296,  2447, 1339, 1476, 3046, 56,   2240, 1333, 1426, 2094, 535,  2882, 2393, 2879, 1974, 821,
    289,  331,  3253, 1756, 1197, 2304, 2277, 2055, 650,  1977, 2513, 632,  2865, 33,   1320, 1915,
    2319, 1435, 807,  452,  1438, 2868, 1534, 2402, 2647, 2617, 1481, 648,  2474, 3110, 1227, 910,
    17,   2761, 583,  2649, 1637, 723,  2288, 1100, 1409, 2662, 3281, 233,  756,  2156, 3015, 3050,
    1703, 1651, 2789, 1789, 1847, 952,  1461, 2687, 939,  2308, 2437, 2388, 733,  2337, 268,  641,
    1584, 2298, 2037, 3220, 375,  2549, 2090, 1645, 1063, 319,  2773, 757,  2099, 561,  2466, 2594,
    2804, 1092, 403,  1026, 1143, 2150, 2775, 886,  1722, 1212, 1874, 1029, 2110, 2935, 885,  2154};

/* zeta^(2 BitRev7(i) + 1) mod q: the moduli X^2 - gamma of MultiplyNTTs (Alg. 11). */
static const uint16_t gammas[128] = {
    17,   3312, 2761, 568,  583,  2746, 2649, 680,  1637, 1692, 723,  2606, 2288, 1041, 1100, 2229,
    1409, 1920, 2662, 667,  3281, 48,   233,  3096, 756,  2573, 2156, 1173, 3015, 314,  3050, 279,
    1703, 1626, 1651, 1678, 2789, 540,  1789, 1540, 1847, 1482, 952,  2377, 1461, 1868, 2687, 642,
    939,  2390, 2308, 1021, 2437, 892,  2388, 941,  733,  2596, 2337, 992,  268,  3061, 641,  2688,
    1584, 1745, 2298, 1031, 2037, 1292, 3220, 109,  375,  2954, 2549, 780,  2090, 1239, 1645, 1684,
    1063, 2266, 319,  3010, 2773, 556,  757,  2572, 2099, 1230, 561,  2768, 2466, 863,  2594, 735,
    2804, 525,  1092, 2237, 403,  2926, 1026, 2303, 1143, 2186, 2150, 1179, 2775, 554,  886,  2443,
    1722, 1607, 1212, 2117, 1874, 1455, 1029, 2300, 2110, 1219, 2935, 394,  885,  2444, 2154, 1175};

/* Hides a value from the optimiser, so that mask arithmetic is not turned into a branch. */
static uint32_t value_barrier(uint32_t x)
{
#if defined(__GNUC__) || defined(__clang__)
    __asm__("" : "+r"(x));
#endif
    return x;
}

/* ---- arithmetic modulo q ---- */

/* x mod q for x < 2q: subtracts q, adds it back under the borrow's mask. */
static uint16_t reduce_once(uint32_t x)
{
    x -= Q;
    x += value_barrier(0u - (x >> 31)) & Q;
    return (uint16_t)x;
}

/* x mod q for any 32-bit x: the Barrett quotient is floor(x / q) or one less. */
static uint16_t reduce(uint32_t x)
{
    uint32_t t = (uint32_t)(((uint64_t)x * BARRETT_M) >> 32);

    return reduce_once(x - t * Q);
}

static uint16_t fq_mul(uint16_t a, uint16_t b)
{
    return reduce((uint32_t)a * b);
}

static void poly_add(struct poly *r, const struct poly *a)
{
    for (size_t i = 0; i < N; i++)
        r->c[i] = reduce_once((uint32_t)r->c[i] + a->c[i]);
}

static void poly_sub(struct poly *r, const struct poly *a)
{
    for (size_t i = 0; i < N; i++)
        r->c[i] = reduce_once((uint32_t)r->c[i] + Q - a->c[i]);
}

/* NTT, Algorithm 9. */
static void ntt(struct poly *f)
{
    size_t k = 1;

    for (size_t len = 128; len >= 2; len /= 2) {
        for (size_t start = 0; start < N; start += 2 * len) {
            uint16_t zeta = zetas[k++];

            for (size_t j = start; j < start + len; j++) {
                uint16_t t = fq_mul(zeta, f->c[j + len]);

                f->c[j + len] = reduce_once((uint32_t)f->c[j] + Q - t);
                f->c[j] = reduce_once((uint32_t)f->c[j] + t);
            }
        }
    }
}

/* NTT^-1, Algorithm 10. */
static void ntt_inverse(struct poly *f)
{
    size_t k = 127;

    for (size_t len = 2; len <= 128; len *= 2) {
        for (size_t start = 0; start < N; start += 2 * len) {
            uint16_t zeta = zetas[k--];

            for (size_t j = start; j < start + len; j++) {
                uint16_t t = f->c[j];

                f->c[j] = reduce_once((uint32_t)t + f->c[j + len]);
                f->c[j + len] = fq_mul(zeta, reduce_once((uint32_t)f->c[j + len] + Q - t));
            }
        }
    }
    for (size_t j = 0; j < N; j++)
        f->c[j] = fq_mul(f->c[j], INV128);
}

/* acc += a o b, MultiplyNTTs and BaseCaseMultiply (Algorithms 11 and 12). */
static void poly_mul_acc(struct poly *acc, const struct poly *a, const struct poly *b)
{
    for (size_t i = 0; i < N / 2; i++) {
        uint32_t a0 = a->c[2 * i], a1 = a->c[2 * i + 1];
        uint32_t b0 = b->c[2 * i], b1 = b->c[2 * i + 1];
        uint16_t c0 = reduce(a0 * b0 + (uint32_t)fq_mul((uint16_t)a1, (uint16_t)b1) * gammas[i]);
        uint16_t c1 = reduce(a0 * b1 + a1 * b0);

        acc->c[2 * i] = reduce_once((uint32_t)acc->c[2 * i] + c0);
        acc->c[2 * i + 1] = reduce_once((uint32_t)acc->c[2 * i + 1] + c1);
    }
}

/* ---- encodings (section 4.2.1) ---- */

/* Compress_d (4.7): round(2^d x / q) mod 2^d, the quotient by Barrett and a mask. */
static uint16_t compress(uint16_t x, unsigned d)
{
    uint32_t num = ((uint32_t)x << d) + Q / 2;
    uint32_t t = (uint32_t)(((uint64_t)num * BARRETT_M) >> 32);
    uint32_t r = num - t * Q;

    t += value_barrier((uint32_t)(Q - 1 - r) >> 31); /* r >= q: one more */
    return (uint16_t)(t & ((1u << d) - 1));
}

/* Decompress_d (4.8): round(q y / 2^d), halves rounded up. */
static uint16_t decompress(uint16_t y, unsigned d)
{
    return (uint16_t)(((uint32_t)y * Q + (1u << (d - 1))) >> d);
}

/* ByteEncode_d (Algorithm 5): 256 d-bit values, least significant bit first; 32 d bytes. */
static void byte_encode(const struct poly *f, unsigned d, uint8_t *out)
{
    uint32_t acc = 0;
    unsigned bits = 0;

    for (size_t i = 0; i < N; i++) {
        acc |= (uint32_t)f->c[i] << bits;
        bits += d;
        while (bits >= 8) {
            *out++ = (uint8_t)acc;
            acc >>= 8;
            bits -= 8;
        }
    }
}

/* ByteDecode_d (Algorithm 6) without the reduction modulo q that d = 12 asks for. */
static void byte_decode_raw(const uint8_t *in, unsigned d, struct poly *f)
{
    uint32_t acc = 0;
    unsigned bits = 0;
    size_t j = 0;

    for (size_t i = 0; j < N; i++) {
        acc |= (uint32_t)in[i] << bits;
        bits += 8;
        while (bits >= d && j < N) {
            f->c[j++] = (uint16_t)(acc & ((1u << d) - 1));
            acc >>= d;
            bits -= d;
        }
    }
}

/* ByteDecode12: 12-bit values (below 2q) reduced modulo q. */
static void byte_decode12(const uint8_t *in, struct poly *f)
{
    byte_decode_raw(in, 12, f);
    for (size_t i = 0; i < N; i++)
        f->c[i] = reduce_once(f->c[i]);
}

static void compress_encode(struct poly *f, unsigned d, uint8_t *out)
{
    for (size_t i = 0; i < N; i++)
        f->c[i] = compress(f->c[i], d);
    byte_encode(f, d, out);
}

static void decode_decompress(const uint8_t *in, unsigned d, struct poly *f)
{
    byte_decode_raw(in, d, f);
    for (size_t i = 0; i < N; i++)
        f->c[i] = decompress(f->c[i], d);
}

/* ---- hashing and sampling (sections 4.1, 4.2.2) ---- */

static msv_err hash2(const EVP_MD *md, const uint8_t *a, size_t a_len, const uint8_t *b,
                     size_t b_len, uint8_t *out, size_t out_len)
{
    const uint8_t *parts[2] = {a, b};
    size_t lens[2] = {a_len, b_len};

    return msv_digest_parts(md, parts, lens, b == NULL ? 1 : 2, out, out_len);
}

/*
 * OpenSSL 3.0 squeezes a SHAKE context only once, so the sampler asks for
 * first_len bytes and, if they hold fewer than 256 accepted values, starts
 * over with twice as many. A longer SHAKE128 output begins with the shorter
 * one (FIPS 202: the XOF's output is one stream), so the values read are
 * those an incremental squeeze gives: the result is Algorithm 7's.
 */
msv_err msv_mlkem_sample_ntt(const uint8_t seed[34], size_t first_len, uint16_t out[256])
{
    size_t len = first_len - first_len % 3;
    uint8_t *buf = NULL;
    msv_err err = MSV_ERR_CRYPTO;

    for (; len >= 3 && len <= SAMPLE_MAX; len = 2 * len - (2 * len) % 3) {
        size_t j = 0;

        free(buf);
        buf = malloc(len);
        if (buf == NULL) {
            err = MSV_ERR_NOMEM;
            goto out;
        }
        err = hash2(EVP_shake128(), seed, 34, NULL, 0, buf, len);
        if (err != MSV_OK)
            goto out;
        for (size_t i = 0; i + 3 <= len && j < N; i += 3) {
            uint16_t d1 = (uint16_t)(buf[i] | ((buf[i + 1] & 0x0F) << 8));
            uint16_t d2 = (uint16_t)((buf[i + 1] >> 4) | (buf[i + 2] << 4));

            if (d1 < Q)
                out[j++] = d1;
            if (d2 < Q && j < N)
                out[j++] = d2;
        }
        if (j == N)
            goto out;
        err = MSV_ERR_CRYPTO;
    }
out:
    free(buf);
    return err;
}

/* SamplePolyCBD_2 (Algorithm 8): each nibble gives (b0 + b1) - (b2 + b3). */
static void sample_cbd2(const uint8_t b[PRF_BYTES], struct poly *f)
{
    for (size_t i = 0; i < PRF_BYTES; i++) {
        for (unsigned half = 0; half < 2; half++) {
            uint32_t v = (uint32_t)b[i] >> (4 * half);
            uint32_t x = (v & 1) + ((v >> 1) & 1), y = ((v >> 2) & 1) + ((v >> 3) & 1);

            f->c[2 * i + half] = reduce_once(x + Q - y);
        }
    }
}

/* SamplePolyCBD_2(PRF_2(seed, nonce)), the nonce counting up. */
static msv_err sample_noise(const uint8_t seed[32], uint8_t *nonce, struct poly *f)
{
    uint8_t b[PRF_BYTES];
    msv_err err = hash2(EVP_shake256(), seed, 32, nonce, 1, b, sizeof(b));

    (*nonce)++;
    if (err == MSV_OK)
        sample_cbd2(b, f);
    sodium_memzero(b, sizeof(b));
    return err;
}

/* A^ from rho, entry [i][j] = SampleNTT(rho || j || i); or A^T, entry [i][j] = A^[j][i]. */
static msv_err sample_matrix(const uint8_t rho[32], int transposed, struct poly a[K][K])
{
    uint8_t seed[34];
    msv_err err = MSV_OK;

    memcpy(seed, rho, 32);
    for (uint8_t i = 0; i < K && err == MSV_OK; i++) {
        for (uint8_t j = 0; j < K && err == MSV_OK; j++) {
            seed[32] = transposed ? i : j;
            seed[33] = transposed ? j : i;
            err = msv_mlkem_sample_ntt(seed, SAMPLE_FIRST, a[i][j].c);
        }
    }
    return err;
}

/* ---- K-PKE (section 5) ---- */

/* The working state of K-PKE: secrets, wiped by the caller after each use. */
struct pke {
    struct poly a[K][K];
    struct poly s[K]; /* s^ or y^ */
    struct poly e[K]; /* e^, e1 or u' */
    struct poly t[K]; /* t^ or u */
    struct poly v;
    uint8_t seeds[64]; /* rho || sigma */
};

/* K-PKE.KeyGen (Algorithm 13): ek and ByteEncode12(s^). */
static msv_err pke_keygen(struct pke *w, const uint8_t d[32], uint8_t ek[MSV_MLKEM768_EK_LEN],
                          uint8_t dk_pke[PKE_DK_BYTES])
{
    uint8_t k = K, nonce = 0;
    msv_err err = hash2(EVP_sha3_512(), d, 32, &k, 1, w->seeds, 64);

    DECLASSIFY(w->seeds, 32); /* rho */
    if (err == MSV_OK)
        err = sample_matrix(w->seeds, 0, w->a);
    for (size_t i = 0; i < K && err == MSV_OK; i++)
        err = sample_noise(w->seeds + 32, &nonce, &w->s[i]);
    for (size_t i = 0; i < K && err == MSV_OK; i++)
        err = sample_noise(w->seeds + 32, &nonce, &w->e[i]);
    if (err != MSV_OK)
        return err;
    for (size_t i = 0; i < K; i++) {
        ntt(&w->s[i]);
        ntt(&w->e[i]);
    }
    for (size_t i = 0; i < K; i++) {
        w->t[i] = w->e[i];
        for (size_t j = 0; j < K; j++)
            poly_mul_acc(&w->t[i], &w->a[i][j], &w->s[j]);
        byte_encode(&w->t[i], 12, ek + i * POLY12_BYTES);
        byte_encode(&w->s[i], 12, dk_pke + i * POLY12_BYTES);
    }
    memcpy(ek + PKE_DK_BYTES, w->seeds, 32);
    return MSV_OK;
}

/* K-PKE.Encrypt (Algorithm 14) under an encapsulation key that passed the modulus check. */
static msv_err pke_encrypt(struct pke *w, const uint8_t ek[MSV_MLKEM768_EK_LEN],
                           const uint8_t m[32], const uint8_t r[32],
                           uint8_t ct[MSV_MLKEM768_CT_LEN])
{
    uint8_t nonce = 0;
    struct poly e2;
    msv_err err = sample_matrix(ek + PKE_DK_BYTES, 1, w->a);

    for (size_t i = 0; i < K && err == MSV_OK; i++)
        err = sample_noise(r, &nonce, &w->s[i]);
    for (size_t i = 0; i < K && err == MSV_OK; i++)
        err = sample_noise(r, &nonce, &w->e[i]);
    if (err == MSV_OK)
        err = sample_noise(r, &nonce, &e2);
    if (err != MSV_OK)
        goto out;
    for (size_t i = 0; i < K; i++)
        ntt(&w->s[i]);
    memset(&w->v, 0, sizeof(w->v));
    for (size_t i = 0; i < K; i++) {
        memset(&w->t[i], 0, sizeof(w->t[i]));
        for (size_t j = 0; j < K; j++)
            poly_mul_acc(&w->t[i], &w->a[i][j], &w->s[j]);
        ntt_inverse(&w->t[i]);
        poly_add(&w->t[i], &w->e[i]);
        compress_encode(&w->t[i], DU, ct + i * 32 * DU);
        byte_decode12(ek + i * POLY12_BYTES, &w->e[i]); /* t^[i], e1[i] is spent */
        poly_mul_acc(&w->v, &w->e[i], &w->s[i]);
    }
    ntt_inverse(&w->v);
    poly_add(&w->v, &e2);
    decode_decompress(m, 1, &e2); /* mu */
    poly_add(&w->v, &e2);
    compress_encode(&w->v, DV, ct + C1_BYTES);
out:
    sodium_memzero(&e2, sizeof(e2));
    return err;
}

/* K-PKE.Decrypt (Algorithm 15): arithmetic only, it cannot fail. */
static void pke_decrypt(struct pke *w, const uint8_t dk_pke[PKE_DK_BYTES],
                        const uint8_t ct[MSV_MLKEM768_CT_LEN], uint8_t m[32])
{
    memset(&w->v, 0, sizeof(w->v));
    for (size_t i = 0; i < K; i++) {
        decode_decompress(ct + i * 32 * DU, DU, &w->e[i]);
        ntt(&w->e[i]);
        byte_decode12(dk_pke + i * POLY12_BYTES, &w->s[i]);
        poly_mul_acc(&w->v, &w->s[i], &w->e[i]);
    }
    ntt_inverse(&w->v);
    decode_decompress(ct + C1_BYTES, DV, &w->t[0]); /* v' */
    poly_sub(&w->t[0], &w->v);
    compress_encode(&w->t[0], 1, m);
}

/* ---- ML-KEM (sections 6 and 7) ---- */

/* The state is short-lived: plain memory, wiped before it is freed. */
static struct pke *pke_new(void)
{
    return malloc(sizeof(struct pke));
}

static void pke_free(struct pke *w)
{
    if (w == NULL)
        return;
    sodium_memzero(w, sizeof(*w));
    free(w);
}

msv_err msv_mlkem768_keygen_seed(const uint8_t *seed, size_t seed_len,
                                 uint8_t ek[MSV_MLKEM768_EK_LEN], uint8_t dk[MSV_MLKEM768_DK_LEN])
{
    struct pke *w = NULL;
    msv_err err;

    if (seed == NULL || seed_len != MSV_MLKEM768_SEED_LEN)
        return MSV_ERR_PARSE;
    w = pke_new();
    if (w == NULL)
        return MSV_ERR_NOMEM;
    err = pke_keygen(w, seed, ek, dk);
    if (err == MSV_OK) {
        memcpy(dk + PKE_DK_BYTES, ek, MSV_MLKEM768_EK_LEN);
        err = hash2(EVP_sha3_256(), ek, MSV_MLKEM768_EK_LEN, NULL, 0, dk + DK_H_OFFSET, 32);
    }
    if (err == MSV_OK)
        memcpy(dk + DK_Z_OFFSET, seed + 32, 32);
    else
        sodium_memzero(dk, MSV_MLKEM768_DK_LEN);
    pke_free(w);
    return err;
}

msv_err msv_mlkem768_keygen(uint8_t ek[MSV_MLKEM768_EK_LEN], uint8_t dk[MSV_MLKEM768_DK_LEN])
{
    uint8_t seed[MSV_MLKEM768_SEED_LEN];
    msv_err err;

    msv_rng_system.fill(msv_rng_system.ctx, seed, sizeof(seed));
    err = msv_mlkem768_keygen_seed(seed, sizeof(seed), ek, dk);
    sodium_memzero(seed, sizeof(seed));
    return err;
}

msv_err msv_mlkem768_check_ek(const uint8_t *ek, size_t ek_len)
{
    struct poly t;

    if (ek == NULL || ek_len != MSV_MLKEM768_EK_LEN)
        return MSV_ERR_PARSE;
    for (size_t i = 0; i < K; i++) {
        byte_decode_raw(ek + i * POLY12_BYTES, 12, &t);
        for (size_t j = 0; j < N; j++) {
            if (t.c[j] >= Q)
                return MSV_ERR_PARSE;
        }
    }
    return MSV_OK;
}

msv_err msv_mlkem768_check_dk(const uint8_t *dk, size_t dk_len)
{
    uint8_t h[32];
    msv_err err;

    if (dk == NULL || dk_len != MSV_MLKEM768_DK_LEN)
        return MSV_ERR_PARSE;
    err = hash2(EVP_sha3_256(), dk + PKE_DK_BYTES, MSV_MLKEM768_EK_LEN, NULL, 0, h, sizeof(h));
    if (err != MSV_OK)
        return err;
    return memcmp(h, dk + DK_H_OFFSET, sizeof(h)) == 0 ? MSV_OK : MSV_ERR_PARSE;
}

/* ML-KEM.Encaps_internal (Algorithm 17) with H(ek) computed or given. */
static msv_err encaps_internal(struct pke *w, const uint8_t *ek, const uint8_t h[32],
                               const uint8_t m[32], uint8_t ct[MSV_MLKEM768_CT_LEN],
                               uint8_t k_r[64])
{
    msv_err err = hash2(EVP_sha3_512(), m, 32, h, 32, k_r, 64);

    if (err == MSV_OK)
        err = pke_encrypt(w, ek, m, k_r + 32, ct);
    return err;
}

msv_err msv_mlkem768_encaps_coins(const uint8_t *ek, size_t ek_len,
                                  const uint8_t m[MSV_MLKEM768_COINS_LEN],
                                  uint8_t ct[MSV_MLKEM768_CT_LEN], uint8_t ss[MSV_MLKEM768_SS_LEN])
{
    struct pke *w = NULL;
    uint8_t h[32], k_r[64];
    msv_err err = msv_mlkem768_check_ek(ek, ek_len);

    if (err != MSV_OK)
        return err;
    w = pke_new();
    if (w == NULL)
        return MSV_ERR_NOMEM;
    err = hash2(EVP_sha3_256(), ek, ek_len, NULL, 0, h, sizeof(h));
    if (err == MSV_OK)
        err = encaps_internal(w, ek, h, m, ct, k_r);
    if (err == MSV_OK)
        memcpy(ss, k_r, MSV_MLKEM768_SS_LEN);
    sodium_memzero(k_r, sizeof(k_r));
    pke_free(w);
    return err;
}

msv_err msv_mlkem768_encaps(const uint8_t *ek, size_t ek_len, uint8_t ct[MSV_MLKEM768_CT_LEN],
                            uint8_t ss[MSV_MLKEM768_SS_LEN])
{
    uint8_t m[MSV_MLKEM768_COINS_LEN];
    msv_err err;

    msv_rng_system.fill(msv_rng_system.ctx, m, sizeof(m));
    err = msv_mlkem768_encaps_coins(ek, ek_len, m, ct, ss);
    sodium_memzero(m, sizeof(m));
    return err;
}

/* ss = equal ? k : rejection, by masks: nothing here depends on equal but the data. */
static void select_key(uint8_t ss[32], const uint8_t k[32], const uint8_t rejection[32],
                       const uint8_t *a, const uint8_t *b, size_t len)
{
    uint32_t diff = 0, keep;

    for (size_t i = 0; i < len; i++)
        diff |= (uint32_t)(a[i] ^ b[i]);
    keep = value_barrier(0u - ((diff - 1) >> 31)); /* all ones iff diff == 0 */
    for (size_t i = 0; i < 32; i++)
        ss[i] = (uint8_t)((k[i] & keep) | (rejection[i] & ~keep));
}

msv_err msv_mlkem768_decaps(const uint8_t *dk, size_t dk_len, const uint8_t *ct, size_t ct_len,
                            uint8_t ss[MSV_MLKEM768_SS_LEN])
{
    struct pke *w = NULL;
    uint8_t m[32], k_r[64], rejection[32], again[MSV_MLKEM768_CT_LEN];
    msv_err err = msv_mlkem768_check_dk(dk, dk_len);

    if (err != MSV_OK)
        return err;
    if (ct == NULL || ct_len != MSV_MLKEM768_CT_LEN)
        return MSV_ERR_AUTH;
    w = pke_new();
    if (w == NULL)
        return MSV_ERR_NOMEM;
    pke_decrypt(w, dk, ct, m);
    err = hash2(EVP_shake256(), dk + DK_Z_OFFSET, 32, ct, ct_len, rejection, sizeof(rejection));
    if (err == MSV_OK)
        err = encaps_internal(w, dk + PKE_DK_BYTES, dk + DK_H_OFFSET, m, again, k_r);
    if (err == MSV_OK)
        select_key(ss, k_r, rejection, ct, again, sizeof(again));
    sodium_memzero(m, sizeof(m));
    sodium_memzero(k_r, sizeof(k_r));
    sodium_memzero(rejection, sizeof(rejection));
    sodium_memzero(again, sizeof(again));
    pke_free(w);
    return err;
}
