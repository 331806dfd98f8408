/*
 * Hashing to edwards25519 as RFC 9380 defines it for the suite
 * edwards25519_XMD:SHA-512_ELL2_NU_ (section 8.5), up to the cofactor
 * clearing, which the caller does with libsodium's point arithmetic:
 *
 *   uniform = expand_message_xmd(msg, DST, 48) with SHA-512      5.3.1
 *   u       = uniform as a big-endian integer, mod p              5.2
 *   (s, t)  = Elligator 2 on curve25519 (J = 486662, K = 1, Z = 2) 6.7.1
 *   (v, w)  = (c1 * s / t, (s - 1) / (s + 1)), c1 = sqrt(-486664)
 *             with sgn0(c1) = 0; the identity when t = 0 or s = -1  6.8.2, Appendix D
 *   Q       = w, little-endian, with the top bit = v mod 2 (RFC 8032 5.1.2)
 *
 * The field arithmetic is OpenSSL's BIGNUM, which libsodium does not export.
 * It is not constant time: the input of a hash to the curve is not secret
 * key material (for the VRF it is the public key and alpha).
 */
#include <string.h>

#include <openssl/bn.h>
#include <sodium.h>

#include "crypto/internal.h"

#define XMD_LEN 48 /* L = ceil((ceil(log2(p)) + k) / 8), k = 128 */
#define SHA512_BLOCK 128
#define MONT_J 486662

/* expand_message_xmd (RFC 9380 5.3.1) with SHA-512, for one 48-byte output (ell = 1). */
static void expand_message_xmd(const uint8_t *const *parts, const size_t *lens, size_t n,
                               const uint8_t *dst, uint8_t dst_len, uint8_t out[XMD_LEN])
{
    static const uint8_t z_pad[SHA512_BLOCK] = {0};
    const uint8_t lib_str[3] = {0, XMD_LEN, 0}; /* I2OSP(48, 2) || I2OSP(0, 1) */
    const uint8_t one = 1;
    uint8_t b0[crypto_hash_sha512_BYTES], b1[crypto_hash_sha512_BYTES];
    crypto_hash_sha512_state st;

    crypto_hash_sha512_init(&st);
    crypto_hash_sha512_update(&st, z_pad, sizeof(z_pad));
    for (size_t i = 0; i < n; i++) {
        if (lens[i] > 0)
            crypto_hash_sha512_update(&st, parts[i], lens[i]);
    }
    crypto_hash_sha512_update(&st, lib_str, sizeof(lib_str));
    crypto_hash_sha512_update(&st, dst, dst_len);
    crypto_hash_sha512_update(&st, &dst_len, 1);
    crypto_hash_sha512_final(&st, b0);
    crypto_hash_sha512_init(&st);
    crypto_hash_sha512_update(&st, b0, sizeof(b0));
    crypto_hash_sha512_update(&st, &one, 1);
    crypto_hash_sha512_update(&st, dst, dst_len);
    crypto_hash_sha512_update(&st, &dst_len, 1);
    crypto_hash_sha512_final(&st, b1);
    memcpy(out, b1, XMD_LEN);
}

struct field {
    BN_CTX *ctx;
    BIGNUM *p, *half; /* p = 2^255 - 19, (p - 1) / 2 */
};

/* is_square (RFC 9380 4): a^((p-1)/2) is 0 or 1. */
static int is_square(struct field *f, const BIGNUM *a, int *ok)
{
    BIGNUM *e = BN_CTX_get(f->ctx);

    *ok = *ok && e != NULL && BN_mod_exp(e, a, f->half, f->p, f->ctx);
    return *ok && (BN_is_zero(e) || BN_is_one(e));
}

/* out = the square root of a whose sgn0 (parity) is sign; a must be a square. */
static void sqrt_with_sign(struct field *f, BIGNUM *out, const BIGNUM *a, int sign, int *ok)
{
    *ok = *ok && BN_mod_sqrt(out, a, f->p, f->ctx) != NULL;
    if (*ok && !BN_is_zero(out) && BN_is_odd(out) != sign)
        *ok = BN_sub(out, f->p, out);
}

/* g(x) = x^3 + J x^2 + x, curve25519's right-hand side (K = 1). */
static void curve_rhs(struct field *f, BIGNUM *out, const BIGNUM *x, int *ok)
{
    BIGNUM *t = BN_CTX_get(f->ctx);

    /* ((x + J) x + 1) x */
    *ok = *ok && t != NULL && BN_copy(t, x) != NULL && BN_add_word(t, MONT_J) &&
          BN_mod_mul(t, t, x, f->p, f->ctx) && BN_add_word(t, 1) &&
          BN_mod_mul(out, t, x, f->p, f->ctx);
}

/* map_to_curve_elligator2 (RFC 9380 6.7.1): (s, t) on curve25519. */
static void elligator2(struct field *f, const BIGNUM *u, BIGNUM *s, BIGNUM *t, int *ok)
{
    BIGNUM *tv = BN_CTX_get(f->ctx), *x1 = BN_CTX_get(f->ctx), *gx = BN_CTX_get(f->ctx);

    *ok = *ok && gx != NULL && BN_mod_sqr(tv, u, f->p, f->ctx) && BN_lshift1(tv, tv) &&
          BN_add_word(tv, 1) && BN_mod(tv, tv, f->p, f->ctx); /* 1 + Z u^2 */
    /* x1 = -J * inv0(1 + Z u^2); 1 + 2u^2 is never 0 (-1/2 is not a square) */
    *ok = *ok && BN_mod_inverse(x1, tv, f->p, f->ctx) != NULL;
    *ok = *ok && BN_mul_word(x1, MONT_J) && BN_mod(x1, x1, f->p, f->ctx) && BN_sub(x1, f->p, x1);
    curve_rhs(f, gx, x1, ok);
    if (is_square(f, gx, ok)) {
        *ok = *ok && BN_copy(s, x1) != NULL;
        sqrt_with_sign(f, t, gx, 1, ok);
        return;
    }
    /* x2 = -x1 - J */
    *ok = *ok && BN_add_word(x1, MONT_J) && BN_mod_sub(s, f->p, x1, f->p, f->ctx);
    curve_rhs(f, gx, s, ok);
    sqrt_with_sign(f, t, gx, 0, ok);
}

/* The rational map to edwards25519 and its encoding (RFC 9380 6.8.2, Appendix D). */
static void to_edwards(struct field *f, const BIGNUM *s, const BIGNUM *t, uint8_t out[32], int *ok)
{
    BIGNUM *c1 = BN_CTX_get(f->ctx), *v = BN_CTX_get(f->ctx), *w = BN_CTX_get(f->ctx);
    BIGNUM *den = BN_CTX_get(f->ctx);

    *ok = *ok && den != NULL && BN_set_word(den, 486664) && BN_sub(den, f->p, den);
    sqrt_with_sign(f, c1, den, 0, ok);
    *ok = *ok && BN_copy(den, s) != NULL && BN_add_word(den, 1) && BN_mod(den, den, f->p, f->ctx);
    if (!*ok || BN_is_zero(t) || BN_is_zero(den)) {
        memset(out, 0, 32);
        out[0] = 1; /* the identity (0, 1) */
        return;
    }
    *ok = *ok && BN_mod_inverse(den, den, f->p, f->ctx) != NULL && BN_copy(w, s) != NULL &&
          BN_mod_sub(w, w, BN_value_one(), f->p, f->ctx) && BN_mod_mul(w, w, den, f->p, f->ctx);
    *ok = *ok && BN_mod_inverse(v, t, f->p, f->ctx) != NULL && BN_mod_mul(v, v, s, f->p, f->ctx) &&
          BN_mod_mul(v, v, c1, f->p, f->ctx);
    *ok = *ok && BN_bn2lebinpad(w, out, 32) == 32;
    if (*ok && BN_is_odd(v))
        out[31] |= 0x80;
}

msv_err msv_h2c_edwards25519_nu_map(const uint8_t *const *parts, const size_t *lens, size_t n,
                                    const uint8_t *dst, size_t dst_len, uint8_t q[32])
{
    uint8_t uniform[XMD_LEN];
    struct field f = {0};
    BIGNUM *u, *s, *t;
    int ok = 1;

    if (dst_len == 0 || dst_len > 255)
        return MSV_ERR_INVALID;
    expand_message_xmd(parts, lens, n, dst, (uint8_t)dst_len, uniform);
    f.ctx = BN_CTX_new();
    if (f.ctx == NULL)
        return MSV_ERR_NOMEM;
    BN_CTX_start(f.ctx);
    f.p = BN_CTX_get(f.ctx);
    f.half = BN_CTX_get(f.ctx);
    u = BN_CTX_get(f.ctx);
    s = BN_CTX_get(f.ctx);
    t = BN_CTX_get(f.ctx);
    ok = t != NULL && BN_set_bit(f.p, 255) && BN_sub_word(f.p, 19) && BN_rshift1(f.half, f.p) &&
         BN_bin2bn(uniform, XMD_LEN, u) != NULL && BN_mod(u, u, f.p, f.ctx);
    if (ok)
        elligator2(&f, u, s, t, &ok);
    if (ok)
        to_edwards(&f, s, t, q, &ok);
    BN_CTX_end(f.ctx);
    BN_CTX_free(f.ctx);
    return ok ? MSV_OK : MSV_ERR_CRYPTO;
}
