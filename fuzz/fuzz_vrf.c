/*
 * VRF verification on any input: byte 0 chooses the suite (bit 1: ELL2, else
 * TAI) and how the rest is read (bit 0):
 *
 *   clear: public key (32) || proof (80) || alpha, verified as it comes; when
 *          it verifies, beta must be the proof's hash;
 *   set:   secret key (32) || mask (80) || alpha: a proof made with that key,
 *          XORed with the mask, must verify exactly when the mask is zero.
 */
#include "common.h"
#include "missive/vrf.h"

#define KEY MSV_VRF_PUBLIC_KEY_LEN
#define PROOF MSV_VRF_PROOF_LEN

static void check_verified(enum msv_vrf_suite suite, const uint8_t *pk, const uint8_t *alpha,
                           size_t alpha_len, const uint8_t *pi, int must_verify)
{
    uint8_t beta[MSV_VRF_OUTPUT_LEN], again[MSV_VRF_OUTPUT_LEN];
    msv_err err = msv_vrf_verify(suite, pk, alpha, alpha_len, pi, beta);

    if (err != MSV_OK && err != MSV_ERR_AUTH)
        abort();
    if (must_verify >= 0 && (err == MSV_OK) != must_verify)
        abort();
    if (err == MSV_OK && (msv_vrf_proof_to_hash(suite, pi, again) != MSV_OK ||
                          memcmp(beta, again, sizeof(beta)) != 0))
        abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    uint8_t pk[KEY], pi[PROOF];
    const uint8_t *alpha = data + 1 + KEY + PROOF;
    size_t alpha_len;
    int masked = 0;
    enum msv_vrf_suite suite;

    if (size < 1 + KEY + PROOF || msv_init() != MSV_OK)
        return 0;
    alpha_len = size - (1 + KEY + PROOF);
    suite = (data[0] & 2) != 0 ? MSV_VRF_EDWARDS25519_SHA512_ELL2 : MSV_VRF_EDWARDS25519_SHA512_TAI;
    if ((data[0] & 1) == 0) {
        check_verified(suite, data + 1, alpha, alpha_len, data + 1 + KEY, -1);
        return 0;
    }
    if (msv_vrf_public_key(suite, data + 1, pk) != MSV_OK ||
        msv_vrf_prove(suite, data + 1, alpha, alpha_len, pi) != MSV_OK)
        abort();
    for (size_t i = 0; i < PROOF; i++) {
        pi[i] ^= data[1 + KEY + i];
        masked |= data[1 + KEY + i];
    }
    check_verified(suite, pk, alpha, alpha_len, pi, masked == 0);
    return 0;
}
