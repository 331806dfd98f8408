/*
 * ML-KEM-768 (src/crypto/mlkem.c): every case of the vendored Wycheproof
 * files — key generation from seeds, encapsulation with fixed randomness and
 * the keys it must refuse, decapsulation of valid and malformed ciphertexts
 * (implicit rejection), expanded decapsulation keys and the ones to refuse —
 * and the properties the vectors do not show: SampleNTT's restarts, round
 * trips with fresh randomness, and the implicit-rejection key itself.
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

#include "crypto/internal.h"
#include "helpers.h"
#include "missive/mlkem.h"
#include "missive/util.h"
#include "wycheproof.h"

#define EK_LEN MSV_MLKEM768_EK_LEN
#define DK_LEN MSV_MLKEM768_DK_LEN
#define CT_LEN MSV_MLKEM768_CT_LEN
#define SS_LEN MSV_MLKEM768_SS_LEN

static int has_flag(json_t *test, const char *flag)
{
    json_t *flags = json_object_get(test, "flags");

    for (size_t i = 0; i < json_array_size(flags); i++) {
        if (strcmp(json_string_value(json_array_get(flags, i)), flag) == 0)
            return 1;
    }
    return 0;
}

static void assert_bytes(const uint8_t *got, const uint8_t *want, size_t want_len, size_t got_len)
{
    assert_int_equal(got_len, want_len);
    assert_memory_equal(got, want, want_len);
}

static void test_wycheproof_keygen_seed(void **state)
{
    json_t *root = wp_load("wycheproof/mlkem_768_keygen_seed_test.json");
    struct wp_tally t = {0};

    (void)state;
    WP_FOR_EACH(root, group, test)
    {
        size_t seed_len, ek_len, dk_len;
        uint8_t *seed = wp_hex(test, "seed", &seed_len), *ek = wp_hex(test, "ek", &ek_len);
        uint8_t *dk = wp_hex(test, "dk", &dk_len), got_ek[EK_LEN], got_dk[DK_LEN];
        int want = wp_expected(test, &t);

        assert_int_equal(msv_mlkem768_keygen_seed(seed, seed_len, got_ek, got_dk), MSV_OK);
        wp_check(test, want,
                 ek_len == EK_LEN && dk_len == DK_LEN && memcmp(got_ek, ek, EK_LEN) == 0 &&
                     memcmp(got_dk, dk, DK_LEN) == 0);
        assert_int_equal(msv_mlkem768_check_ek(got_ek, EK_LEN), MSV_OK);
        assert_int_equal(msv_mlkem768_check_dk(got_dk, DK_LEN), MSV_OK);
        free(seed);
        free(ek);
        free(dk);
    }
    wp_report("ML-KEM-768 keygen from seeds", &t, 100);
    json_decref(root);
}

/* A field that refused cases leave out: NULL and length 0 then. */
static uint8_t *optional_hex(json_t *test, const char *key, size_t *len)
{
    *len = 0;
    return json_object_get(test, key) == NULL ? NULL : wp_hex(test, key, len);
}

/*
 * Keys from the seed, then decapsulation: valid cases give K; the invalid
 * ones have a seed (the private key) or a ciphertext of the wrong length.
 */
static void test_wycheproof_decaps(void **state)
{
    json_t *root = wp_load("wycheproof/mlkem_768_test.json");
    struct wp_tally t = {0};

    (void)state;
    WP_FOR_EACH(root, group, test)
    {
        size_t seed_len, ek_len, c_len, k_len;
        uint8_t *seed = wp_hex(test, "seed", &seed_len), *ek = optional_hex(test, "ek", &ek_len);
        uint8_t *c = wp_hex(test, "c", &c_len), *k = wp_hex(test, "K", &k_len);
        uint8_t got_ek[EK_LEN], dk[DK_LEN], ss[SS_LEN];
        int want = wp_expected(test, &t);
        msv_err err = msv_mlkem768_keygen_seed(seed, seed_len, got_ek, dk);

        if (seed_len != MSV_MLKEM768_SEED_LEN) {
            assert_int_equal(err, MSV_ERR_PARSE);
        } else {
            assert_int_equal(err, MSV_OK);
            assert_bytes(got_ek, ek, ek_len, EK_LEN);
            err = msv_mlkem768_decaps(dk, DK_LEN, c, c_len, ss);
            if (c_len != CT_LEN)
                assert_int_equal(err, MSV_ERR_AUTH);
        }
        wp_check(test, want, err == MSV_OK && k_len == SS_LEN && memcmp(ss, k, SS_LEN) == 0);
        free(seed);
        free(ek);
        free(c);
        free(k);
    }
    wp_report("ML-KEM-768 decapsulation", &t, 193);
    json_decref(root);
}

static void test_wycheproof_encaps(void **state)
{
    json_t *root = wp_load("wycheproof/mlkem_768_encaps_test.json");
    struct wp_tally t = {0};

    (void)state;
    WP_FOR_EACH(root, group, test)
    {
        size_t m_len, ek_len, c_len, k_len;
        uint8_t *m = wp_hex(test, "m", &m_len), *ek = wp_hex(test, "ek", &ek_len);
        uint8_t *c = wp_hex(test, "c", &c_len), *k = wp_hex(test, "K", &k_len);
        uint8_t ct[CT_LEN], ss[SS_LEN];
        int want = wp_expected(test, &t);
        msv_err err;

        assert_int_equal(m_len, MSV_MLKEM768_COINS_LEN);
        memset(ct, 0xAA, sizeof(ct));
        err = msv_mlkem768_encaps_coins(ek, ek_len, m, ct, ss);
        if (want == 0) {
            /* too long, or a coefficient at or above q (ModulusOverflow, "not reduced") */
            assert_int_equal(err, MSV_ERR_PARSE);
            assert_int_equal(msv_mlkem768_check_ek(ek, ek_len), MSV_ERR_PARSE);
            assert_int_equal(ct[0], 0xAA); /* nothing written */
        } else {
            assert_false(has_flag(test, "ModulusOverflow"));
        }
        wp_check(test, want,
                 err == MSV_OK && c_len == CT_LEN && memcmp(ct, c, CT_LEN) == 0 &&
                     k_len == SS_LEN && memcmp(ss, k, SS_LEN) == 0);
        free(m);
        free(ek);
        free(c);
        free(k);
    }
    wp_report("ML-KEM-768 encapsulation", &t, 265);
    json_decref(root);
}

/* The error each refused case's flag calls for. */
static msv_err decaps_refusal(json_t *test)
{
    if (has_flag(test, "IncorrectCiphertextLength"))
        return MSV_ERR_AUTH;
    if (has_flag(test, "IncorrectDecapsulationKeyLength") ||
        has_flag(test, "InvalidDecapsulationKey"))
        return MSV_ERR_PARSE;
    fail_msg("an invalid case without a known flag");
    return MSV_OK;
}

static void test_wycheproof_expanded_decaps(void **state)
{
    json_t *root = wp_load("wycheproof/mlkem_768_semi_expanded_decaps_test.json");
    struct wp_tally t = {0};

    (void)state;
    WP_FOR_EACH(root, group, test)
    {
        size_t dk_len, c_len, k_len, ek_len;
        uint8_t *dk = wp_hex(test, "dk", &dk_len), *c = wp_hex(test, "c", &c_len);
        uint8_t *k = optional_hex(test, "K", &k_len), *ek = wp_hex(test, "ek", &ek_len), ss[SS_LEN];
        int want = wp_expected(test, &t);
        msv_err err = msv_mlkem768_decaps(dk, dk_len, c, c_len, ss);

        if (want == 0) {
            assert_int_equal(err, decaps_refusal(test));
        } else {
            assert_int_equal(msv_mlkem768_check_dk(dk, dk_len), MSV_OK);
            assert_int_equal(ek_len, EK_LEN); /* the key holds its ek */
            assert_memory_equal(dk + 1152, ek, EK_LEN);
        }
        wp_check(test, want, err == MSV_OK && k_len == SS_LEN && memcmp(ss, k, SS_LEN) == 0);
        free(dk);
        free(c);
        free(k);
        free(ek);
    }
    wp_report("ML-KEM-768 expanded decapsulation keys", &t, 9);
    json_decref(root);
}

/* Squeezing too little at first and starting over gives what one long squeeze gives. */
static void test_sample_ntt_restarts(void **state)
{
    uint8_t seed[34];
    uint16_t once[256], restarted[256];

    (void)state;
    for (unsigned i = 0; i < 50; i++) {
        test_fill_pattern(seed, sizeof(seed), i);
        assert_int_equal(msv_mlkem_sample_ntt(seed, 16 * 168, once), MSV_OK);
        for (size_t first = 3; first <= 504; first += 167) {
            memset(restarted, 0xFF, sizeof(restarted));
            assert_int_equal(msv_mlkem_sample_ntt(seed, first, restarted), MSV_OK);
            assert_memory_equal(once, restarted, sizeof(once));
        }
        for (size_t j = 0; j < 256; j++)
            assert_true(once[j] < 3329);
    }
}

/* J(z || c), computed apart from the library's code path. */
static void rejection_key(const uint8_t dk[DK_LEN], const uint8_t *ct, uint8_t out[SS_LEN])
{
    const uint8_t *parts[2] = {dk + DK_LEN - 32, ct};
    size_t lens[2] = {32, CT_LEN};

    assert_int_equal(msv_digest_parts(EVP_shake256(), parts, lens, 2, out, SS_LEN), MSV_OK);
}

static void test_round_trip_and_rejection(void **state)
{
    uint8_t ek[EK_LEN], dk[DK_LEN], ct[CT_LEN], ss[SS_LEN], got[SS_LEN], other[SS_LEN];

    (void)state;
    for (int round = 0; round < 20; round++) {
        assert_int_equal(msv_mlkem768_keygen(ek, dk), MSV_OK);
        assert_int_equal(msv_mlkem768_encaps(ek, EK_LEN, ct, ss), MSV_OK);
        assert_int_equal(msv_mlkem768_decaps(dk, DK_LEN, ct, CT_LEN, got), MSV_OK);
        assert_memory_equal(ss, got, SS_LEN);
        /* one changed bit anywhere: the rejection key J(z || c), never the sender's */
        ct[(size_t)round * 53 % CT_LEN] ^= (uint8_t)(1u << (round % 8));
        assert_int_equal(msv_mlkem768_decaps(dk, DK_LEN, ct, CT_LEN, got), MSV_OK);
        rejection_key(dk, ct, other);
        assert_memory_equal(got, other, SS_LEN);
        assert_memory_not_equal(got, ss, SS_LEN);
    }
    /* refused inputs */
    assert_int_equal(msv_mlkem768_decaps(dk, DK_LEN, ct, CT_LEN - 1, got), MSV_ERR_AUTH);
    assert_int_equal(msv_mlkem768_decaps(dk, DK_LEN, NULL, CT_LEN, got), MSV_ERR_AUTH);
    assert_int_equal(msv_mlkem768_decaps(dk, DK_LEN - 1, ct, CT_LEN, got), MSV_ERR_PARSE);
    assert_int_equal(msv_mlkem768_encaps(ek, EK_LEN - 1, ct, ss), MSV_ERR_PARSE);
    assert_int_equal(msv_mlkem768_check_ek(NULL, EK_LEN), MSV_ERR_PARSE);
    dk[1152 + 5] ^= 1; /* the ek inside no longer matches H(ek) */
    assert_int_equal(msv_mlkem768_decaps(dk, DK_LEN, ct, CT_LEN, got), MSV_ERR_PARSE);
    /* the largest coefficient, q - 1 = 0xD00, is accepted; q = 0xD01 is not */
    ek[0] = 0x00;
    ek[1] = (uint8_t)((ek[1] & 0xF0) | 0x0D);
    assert_int_equal(msv_mlkem768_check_ek(ek, EK_LEN), MSV_OK);
    ek[0] = 0x01;
    assert_int_equal(msv_mlkem768_check_ek(ek, EK_LEN), MSV_ERR_PARSE);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_wycheproof_keygen_seed),
        cmocka_unit_test(test_wycheproof_decaps),
        cmocka_unit_test(test_wycheproof_encaps),
        cmocka_unit_test(test_wycheproof_expanded_decaps),
        cmocka_unit_test(test_sample_ntt_restarts),
        cmocka_unit_test(test_round_trip_and_rejection),
    };

    if (msv_init() != MSV_OK)
        return 1;
    return cmocka_run_group_tests(tests, NULL, NULL);
}
