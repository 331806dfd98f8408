/*
 * ML-KEM-768, the key-encapsulation mechanism of FIPS 203, in its byte
 * formats: an encapsulation key (ek, public), a decapsulation key (dk,
 * secret, the "expanded" form of FIPS 203 section 7.1 that holds ek, H(ek)
 * and the implicit-rejection secret z), a ciphertext and a 32-byte shared key.
 *
 * Every secret is handled in constant time (docs/crypto.md, "ML-KEM-768").
 * A decapsulation key should live in guarded memory (sodium_malloc) for as
 * long as it is kept, and be wiped after use.
 */
#ifndef MISSIVE_MLKEM_H
#define MISSIVE_MLKEM_H

#include <stddef.h>
#include <stdint.h>

#include "missive/error.h"

#define MSV_MLKEM768_EK_LEN 1184  /* 384 k + 32 */
#define MSV_MLKEM768_DK_LEN 2400  /* 768 k + 96 */
#define MSV_MLKEM768_CT_LEN 1088  /* 32 (du k + dv) */
#define MSV_MLKEM768_SS_LEN 32    /* the shared key */
#define MSV_MLKEM768_SEED_LEN 64  /* d || z of ML-KEM.KeyGen_internal */
#define MSV_MLKEM768_COINS_LEN 32 /* m of ML-KEM.Encaps_internal */

/*
 * ML-KEM.KeyGen_internal (FIPS 203 Algorithm 16) from the seed d || z of
 * seed_len = MSV_MLKEM768_SEED_LEN bytes (MSV_ERR_PARSE otherwise): writes
 * ek and dk. The same seed always gives the same keys, so the seed is as
 * secret as dk.
 */
MSV_MUST_CHECK msv_err msv_mlkem768_keygen_seed(const uint8_t *seed, size_t seed_len,
                                                uint8_t ek[MSV_MLKEM768_EK_LEN],
                                                uint8_t dk[MSV_MLKEM768_DK_LEN]);
/* ML-KEM.KeyGen (Algorithm 19): keygen from a fresh random seed. */
MSV_MUST_CHECK msv_err msv_mlkem768_keygen(uint8_t ek[MSV_MLKEM768_EK_LEN],
                                           uint8_t dk[MSV_MLKEM768_DK_LEN]);

/*
 * The encapsulation-key check of FIPS 203 section 7.2: ek_len is
 * MSV_MLKEM768_EK_LEN and every 12-bit coefficient is below q = 3329 (what
 * ByteEncode12(ByteDecode12(ek)) = ek amounts to). MSV_ERR_PARSE otherwise.
 */
MSV_MUST_CHECK msv_err msv_mlkem768_check_ek(const uint8_t *ek, size_t ek_len);
/*
 * The decapsulation-key check of section 7.3: dk_len is MSV_MLKEM768_DK_LEN
 * and the H(ek) that dk holds is SHA3-256 of the ek it holds.
 * MSV_ERR_PARSE otherwise.
 */
MSV_MUST_CHECK msv_err msv_mlkem768_check_dk(const uint8_t *dk, size_t dk_len);

/*
 * ML-KEM.Encaps_internal (Algorithm 17) with the 32 bytes of randomness m
 * given, after the encapsulation-key check: writes the ciphertext and the
 * shared key. Only for known-answer tests: m must never repeat.
 * MSV_ERR_PARSE for a key that fails the check (nothing is written).
 */
MSV_MUST_CHECK msv_err msv_mlkem768_encaps_coins(const uint8_t *ek, size_t ek_len,
                                                 const uint8_t m[MSV_MLKEM768_COINS_LEN],
                                                 uint8_t ct[MSV_MLKEM768_CT_LEN],
                                                 uint8_t ss[MSV_MLKEM768_SS_LEN]);
/* ML-KEM.Encaps (Algorithm 20): encapsulation with fresh randomness. */
MSV_MUST_CHECK msv_err msv_mlkem768_encaps(const uint8_t *ek, size_t ek_len,
                                           uint8_t ct[MSV_MLKEM768_CT_LEN],
                                           uint8_t ss[MSV_MLKEM768_SS_LEN]);

/*
 * ML-KEM.Decaps (Algorithm 21) after the decapsulation-key check
 * (MSV_ERR_PARSE) and the ciphertext's length check (MSV_ERR_AUTH). A
 * ciphertext of the right length always gives a shared key: one that does
 * not re-encrypt to itself gives the implicit-rejection key J(z || ct),
 * which differs from the sender's, so the failure shows only later, where
 * the key is used.
 */
MSV_MUST_CHECK msv_err msv_mlkem768_decaps(const uint8_t *dk, size_t dk_len, const uint8_t *ct,
                                           size_t ct_len, uint8_t ss[MSV_MLKEM768_SS_LEN]);

#endif
