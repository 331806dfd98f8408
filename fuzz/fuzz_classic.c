/* The classic envelope parser and opener: any bytes, from a known sender to a known device. */
#include "common.h"
#include "fixtures.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static struct msv_identity *sender, *recipient;
    uint8_t *pt = NULL;
    size_t pt_len = 0;
    msv_err err;

    if (sender == NULL) {
        sender = fuzz_identity(fixture_classic_sender);
        recipient = fuzz_identity(fixture_classic_recipient);
    }
    err = msv_verify_outer(msv_identity_public(sender), data, size);
    if (err != MSV_OK && err != MSV_ERR_AUTH)
        abort();
    err = msv_open(recipient, msv_identity_public(sender), data, size, NULL, &pt, &pt_len);
    if (err == MSV_OK)
        msv_secret_free(pt, pt_len);
    else if (err != MSV_ERR_AUTH || pt != NULL)
        abort(); /* every failure must be the one uniform error */
    return 0;
}
