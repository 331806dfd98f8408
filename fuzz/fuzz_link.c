/*
 * Linking by QR code (client/link.h): what a new device reads from others.
 * The first input byte picks the parser: 0, the code's text (as typed or
 * read from a QR code); 1, a sealed provisioning message, opened with a
 * fixed code and key; otherwise, a Provision's plaintext. Whatever the
 * input, each answers or refuses; a code it accepts formats back to itself.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "client/link.h"
#include "common.h"

static const uint8_t sk[32] = {7,  1,  2,  3,  4,  5,  6,  7,  8,  9,  10, 11, 12, 13, 14, 15,
                               16, 17, 18, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28, 29, 30, 31};

static void code_text(const uint8_t *data, size_t size)
{
    struct msv_link_code code;
    char *text = malloc(size + 1), again[MSV_LINK_CODE_LEN + 1];

    if (text == NULL)
        abort();
    memcpy(text, data, size);
    text[size] = '\0';
    if (msv_link_code_parse(text, &code) == MSV_OK) {
        struct msv_link_code back;

        msv_link_code_format(&code, again);
        if (msv_link_code_parse(again, &back) != MSV_OK || memcmp(&code, &back, sizeof(code)))
            abort();
    }
    free(text);
}

static void sealed(const uint8_t *data, size_t size)
{
    struct msv_link_code code;
    uint8_t *pt = NULL;
    size_t pt_len = 0;

    if (msv_init() != MSV_OK)
        abort();
    memset(&code, 0, sizeof(code));
    memset(code.address, 0xa5, sizeof(code.address));
    memset(code.fingerprint, 0x5a, sizeof(code.fingerprint));
    if (msv_link_open(&code, sk, data, size, &pt, &pt_len) == MSV_OK)
        msv_secret_free(pt, pt_len);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    Msv__Wire__Provision *p = NULL;

    if (size < 1)
        return 0;
    if (data[0] == 0)
        code_text(data + 1, size - 1);
    else if (data[0] == 1)
        sealed(data + 1, size - 1);
    else if (msv_link_provision_parse(data + 1, size - 1, &p) == MSV_OK)
        msv__wire__provision__free_unpacked(p, NULL);
    return 0;
}
