/* Shared by the fuzz targets: fixed identities decoded once per process. */
#ifndef MSV_FUZZ_COMMON_H
#define MSV_FUZZ_COMMON_H

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "missive/crypto.h"
#include "missive/util.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static inline struct msv_identity *fuzz_identity(const char *hex)
{
    size_t cap = strlen(hex) / 2, len = 0;
    uint8_t *bytes = malloc(cap);
    struct msv_identity *id = NULL;

    if (bytes == NULL || msv_init() != MSV_OK || msv_hex_decode(hex, bytes, cap, &len) != MSV_OK ||
        msv_identity_import(bytes, len, &id) != MSV_OK)
        abort();
    free(bytes);
    return id;
}

#endif
