/*
 * Public identity and secret key file parsers. What parses must serialise back
 * to the same bytes (one encoding per identity), and a secret key file's keys
 * must seal and open with each other.
 */
#include "common.h"

static void check_public(const uint8_t *data, size_t size)
{
    struct msv_public_identity *pub = NULL, *copy = NULL;
    const uint8_t *enc;
    size_t len;

    if (msv_public_identity_parse(MSV_SUITE_ANY, data, size, &pub) != MSV_OK)
        return;
    enc = msv_public_identity_bytes(pub, &len);
    if (len != size || memcmp(enc, data, size) != 0)
        abort();
    /* the quick look at the tags agrees with the whole parse */
    if (msv_identity_suites_of(data, size) != msv_public_identity_suites(pub))
        abort();
    if (msv_public_identity_dup(pub, &copy) != MSV_OK)
        abort();
    msv_public_identity_free(copy);
    msv_public_identity_free(pub);
}

static void check_secret(const uint8_t *data, size_t size)
{
    static const uint8_t msg[] = "fuzz";
    struct msv_identity *id = NULL;
    uint8_t *wire = NULL, *pt = NULL;
    size_t wire_len = 0, pt_len = 0;

    if (msv_identity_import(data, size, &id) != MSV_OK)
        return;
    if (msv_seal(id, msv_identity_public(id), msg, sizeof(msg), &wire, &wire_len) != MSV_OK ||
        msv_open(id, msv_identity_public(id), wire, wire_len, NULL, &pt, &pt_len) != MSV_OK ||
        pt_len != sizeof(msg) || memcmp(pt, msg, sizeof(msg)) != 0)
        abort();
    msv_secret_free(pt, pt_len);
    free(wire);
    msv_identity_free(id);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (msv_init() != MSV_OK)
        abort();
    check_public(data, size);
    check_secret(data, size);
    return 0;
}
