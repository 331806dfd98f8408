/*
 * Hashing to edwards25519 as RFC 9380 defines it for the suite
 * edwards25519_XMD:SHA-512_ELL2_NU_ (section 8.5), up to the cofactor
 * clearing, which the caller does:
 *
 *   uniform = expand_message_xmd(msg, DST, 48) with SHA-512      5.3.1
 *   u       = uniform as a big-endian integer, mod p              5.2
 *   (s, t)  = Elligator 2 on curve25519 (J = 486662, K = 1, Z = 2) 6.7.1
 *   (v, w)  = (c1 * s / t, (s - 1) / (s + 1)), c1 = sqrt(-486664)
 *             with sgn0(c1) = 0; the identity when t = 0 or s = -1  6.8.2, Appendix D
 *   Q       = w, little-endian, with the top bit = v mod 2 (RFC 8032 5.1.2)
 *
 * The map itself is ed25519_vt.c's, on its own field arithmetic (libsodium
 * does not export one). It is not constant time: the input of a hash to the
 * curve is not secret key material (for the VRF it is the public key and alpha).
 */
#include <string.h>

#include <sodium.h>

#include "crypto/internal.h"

#define XMD_LEN 48 /* L = ceil((ceil(log2(p)) + k) / 8), k = 128 */
#define SHA512_BLOCK 128

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

msv_err msv_h2c_edwards25519_nu_map(const uint8_t *const *parts, const size_t *lens, size_t n,
                                    const uint8_t *dst, size_t dst_len, uint8_t q[32])
{
    uint8_t uniform[XMD_LEN];

    if (dst_len == 0 || dst_len > 255)
        return MSV_ERR_INVALID;
    expand_message_xmd(parts, lens, n, dst, (uint8_t)dst_len, uniform);
    return msv_ed25519_elligator2_vartime(q, uniform);
}
