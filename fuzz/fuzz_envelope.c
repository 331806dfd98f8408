/*
 * The ecies and modern envelope openers. The first input byte picks the suite
 * (odd: ecies, even: modern); the rest is the envelope.
 */
#include "common.h"
#include "fixtures.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static struct msv_identity *ids[2][2];
    uint8_t *pt = NULL;
    size_t pt_len = 0;
    int s;
    msv_err err;

    if (ids[0][0] == NULL) {
        ids[0][0] = fuzz_identity(fixture_ecies_sender);
        ids[0][1] = fuzz_identity(fixture_ecies_recipient);
        ids[1][0] = fuzz_identity(fixture_modern_sender);
        ids[1][1] = fuzz_identity(fixture_modern_recipient);
    }
    if (size < 1)
        return 0;
    s = data[0] & 1 ? 0 : 1;
    err =
        msv_open(ids[s][1], msv_identity_public(ids[s][0]), data + 1, size - 1, NULL, &pt, &pt_len);
    if (err == MSV_OK)
        msv_secret_free(pt, pt_len);
    else if (err != MSV_ERR_AUTH || pt != NULL)
        abort();
    return 0;
}
