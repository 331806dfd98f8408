/*
 * Safety numbers (safety.h).
 *
 * A side's digits, version 2 (MSV_SAFETY_VERSION):
 *   h_0 = SHA-512(u16be version || "MSV-safety" || u8 handle length || handle || set digest)
 *   h_i = SHA-512(h_(i-1) || set digest), for i = 1 .. 5200
 * and the first 30 bytes of h_5200 as six 5-byte groups, each read as a
 * big-endian number modulo 100000. The 5,200 rounds make each attempt at a
 * device set whose digits match someone else's 5,200 hashes dearer; the
 * version in the first block means two sides on different versions never
 * show the same number.
 *
 * Version 1, a single round: SHA-256("MSV-safety-v1" || u8 handle length ||
 * handle || set digest), its first 30 bytes read the same way. Only made to
 * recognise a number from a side still on version 1.
 *
 * The set digest: SHA-256 over (u64be device id || identity hash) of every
 * device, in id order.
 */
#include <stdio.h>
#include <string.h>

#include <sodium.h>

#include "client/safety.h"
#include "missive/crypto.h"

msv_err msv_safety_set_digest(const Msv__Wire__HandleDevices *hd, uint8_t digest[32])
{
    crypto_hash_sha256_state st;
    uint64_t last = 0;

    crypto_hash_sha256_init(&st);
    for (size_t i = 0; i < hd->n_devices; i++) {
        const Msv__Wire__DeviceInfo *d = hd->devices[i];
        struct msv_public_identity *pub = NULL;
        uint8_t id[8], h[MSV_IDENTITY_HASH_LEN];

        if ((i > 0 && d->device_id <= last) ||
            msv_public_identity_parse((enum msv_suite)d->suite, d->identity.data, d->identity.len,
                                      &pub) != MSV_OK)
            return MSV_ERR_PARSE; /* lookups list devices in id order, each once */
        msv_public_identity_hash(pub, h);
        msv_public_identity_free(pub);
        for (int k = 0; k < 8; k++)
            id[k] = (uint8_t)(d->device_id >> (56 - 8 * k));
        crypto_hash_sha256_update(&st, id, sizeof(id));
        crypto_hash_sha256_update(&st, h, sizeof(h));
        last = d->device_id;
    }
    crypto_hash_sha256_final(&st, digest);
    return MSV_OK;
}

/* The 30 digits of a hash's first 30 bytes: six groups of 5 bytes, each modulo 100000. */
static void hash_digits(const uint8_t h[30], char out[31])
{
    for (int g = 0; g < 6; g++) {
        uint64_t v = 0;

        for (int k = 0; k < 5; k++)
            v = v << 8 | h[5 * g + k];
        snprintf(out + 5 * g, 6, "%05u", (unsigned)(v % 100000));
    }
}

static void digits_v1(const char *handle, uint8_t n, const uint8_t set_digest[32], uint8_t h[32])
{
    static const char label[] = "MSV-safety-v1";
    crypto_hash_sha256_state st;

    crypto_hash_sha256_init(&st);
    crypto_hash_sha256_update(&st, (const uint8_t *)label, sizeof(label) - 1);
    crypto_hash_sha256_update(&st, &n, 1);
    crypto_hash_sha256_update(&st, (const uint8_t *)handle, n);
    crypto_hash_sha256_update(&st, set_digest, 32);
    crypto_hash_sha256_final(&st, h);
}

static void digits_v2(const char *handle, uint8_t n, const uint8_t set_digest[32], uint8_t h[64])
{
    static const char label[] = "MSV-safety";
    const uint8_t version[2] = {0, 2};
    crypto_hash_sha512_state st;

    crypto_hash_sha512_init(&st);
    crypto_hash_sha512_update(&st, version, sizeof(version));
    crypto_hash_sha512_update(&st, (const uint8_t *)label, sizeof(label) - 1);
    crypto_hash_sha512_update(&st, &n, 1);
    crypto_hash_sha512_update(&st, (const uint8_t *)handle, n);
    crypto_hash_sha512_update(&st, set_digest, 32);
    crypto_hash_sha512_final(&st, h);
    for (int i = 0; i < MSV_SAFETY_ITERATIONS; i++) {
        crypto_hash_sha512_init(&st);
        crypto_hash_sha512_update(&st, h, 64);
        crypto_hash_sha512_update(&st, set_digest, 32);
        crypto_hash_sha512_final(&st, h);
    }
}

void msv_safety_digits(unsigned version, const char *handle, const uint8_t set_digest[32],
                       char out[31])
{
    size_t len = strlen(handle);
    uint8_t h[64], n = (uint8_t)(len > 255 ? 255 : len);

    if (version == 1)
        digits_v1(handle, n, set_digest, h);
    else
        digits_v2(handle, n, set_digest, h);
    hash_digits(h, out);
}

void msv_safety_number(unsigned version, const char *a, const uint8_t a_digest[32], const char *b,
                       const uint8_t b_digest[32], char out[MSV_SAFETY_DIGITS + 1])
{
    int a_first = strcmp(a, b) <= 0;

    msv_safety_digits(version, a_first ? a : b, a_first ? a_digest : b_digest, out);
    msv_safety_digits(version, a_first ? b : a, a_first ? b_digest : a_digest, out + 30);
}
