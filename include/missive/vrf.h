/*
 * A verifiable random function: ECVRF-EDWARDS25519-SHA512-TAI and -ELL2 of RFC 9381.
 *
 * The holder of a secret key maps an input alpha to an output beta that looks
 * random to everyone else, and proves with pi that beta is the one output of
 * alpha under the public key. Without the secret key nobody can compute beta
 * or tell which alpha a beta belongs to; with the public key anyone can check
 * a (alpha, pi) pair and learn beta. The key directory uses it to give each
 * handle a private label. Byte layouts: docs/crypto.md, "VRF".
 */
#ifndef MISSIVE_VRF_H
#define MISSIVE_VRF_H

#include <stddef.h>
#include <stdint.h>

#include "missive/error.h"

/*
 * The suite_string of RFC 9381 section 5.5. The two differ only in how alpha
 * becomes a point (try and increment, or RFC 9380's Elligator 2 hash to the
 * curve), so a key serves both, and their outputs differ.
 */
enum msv_vrf_suite {
    MSV_VRF_EDWARDS25519_SHA512_TAI = 0x03,
    MSV_VRF_EDWARDS25519_SHA512_ELL2 = 0x04,
};

#define MSV_VRF_SECRET_KEY_LEN 32 /* the RFC 8032 secret key (seed) */
#define MSV_VRF_PUBLIC_KEY_LEN 32 /* the Ed25519 encoding of Y = x*B */
#define MSV_VRF_PROOF_LEN 80      /* Gamma (32) || c (16) || s (32) */
#define MSV_VRF_OUTPUT_LEN 64     /* beta, a SHA-512 output */

/*
 * Makes a fresh secret key from the system's random source and its public
 * key. MSV_ERR_UNSUPPORTED for an unknown suite.
 */
MSV_MUST_CHECK msv_err msv_vrf_keygen(enum msv_vrf_suite suite, uint8_t sk[MSV_VRF_SECRET_KEY_LEN],
                                      uint8_t pk[MSV_VRF_PUBLIC_KEY_LEN]);

/* The public key of a secret key (the same as its Ed25519 public key). */
MSV_MUST_CHECK msv_err msv_vrf_public_key(enum msv_vrf_suite suite,
                                          const uint8_t sk[MSV_VRF_SECRET_KEY_LEN],
                                          uint8_t pk[MSV_VRF_PUBLIC_KEY_LEN]);

/*
 * ECVRF_prove (RFC 9381 5.1): the proof pi for alpha (alpha_len bytes; alpha
 * may be NULL when alpha_len is 0). Deterministic: the same key and alpha
 * always give the same pi. The secret scalar is used in constant time; the
 * hashing of alpha to the curve is not (docs/crypto.md, "VRF").
 */
MSV_MUST_CHECK msv_err msv_vrf_prove(enum msv_vrf_suite suite,
                                     const uint8_t sk[MSV_VRF_SECRET_KEY_LEN], const uint8_t *alpha,
                                     size_t alpha_len, uint8_t pi[MSV_VRF_PROOF_LEN]);

/*
 * ECVRF_proof_to_hash (RFC 9381 5.2): the output beta of a proof. Meant for
 * proofs made by msv_vrf_prove or accepted by msv_vrf_verify: it checks only
 * that Gamma is a point (MSV_ERR_AUTH if not), not that the proof holds.
 */
MSV_MUST_CHECK msv_err msv_vrf_proof_to_hash(enum msv_vrf_suite suite,
                                             const uint8_t pi[MSV_VRF_PROOF_LEN],
                                             uint8_t beta[MSV_VRF_OUTPUT_LEN]);

/*
 * The output beta msv_vrf_prove's proof of alpha gives, without the proof: Gamma = x * H and
 * its hash, about half the work of a proof (for a prover that needs only outputs now and
 * proofs later).
 */
MSV_MUST_CHECK msv_err msv_vrf_output(enum msv_vrf_suite suite,
                                      const uint8_t sk[MSV_VRF_SECRET_KEY_LEN],
                                      const uint8_t *alpha, size_t alpha_len,
                                      uint8_t beta[MSV_VRF_OUTPUT_LEN]);

/*
 * ECVRF_verify (RFC 9381 5.3, with the public key validated as in 5.4.5):
 * MSV_OK and beta when pi proves alpha under pk; MSV_ERR_AUTH otherwise (a
 * public key or Gamma that is no canonical point, a small-order public key,
 * s not below the group order, a challenge that does not match), beta
 * untouched; MSV_ERR_NOMEM or MSV_ERR_CRYPTO when it could not decide. alpha
 * may be NULL when alpha_len is 0. Public inputs only, so not constant time.
 */
MSV_MUST_CHECK msv_err msv_vrf_verify(enum msv_vrf_suite suite,
                                      const uint8_t pk[MSV_VRF_PUBLIC_KEY_LEN],
                                      const uint8_t *alpha, size_t alpha_len,
                                      const uint8_t pi[MSV_VRF_PROOF_LEN],
                                      uint8_t beta[MSV_VRF_OUTPUT_LEN]);

#endif
