/*
 * The check that a KeyPackage the server hands out is a device's (src/client/mlskeys.c,
 * msv_mlskeys_credential_check): any bytes are refused with a reason, without reading past
 * them, unless they are the one KeyPackage made here for the device, bound by its identity;
 * the credential of a LeafNode of a group's tree (msv_mlskeys_leaf_credential); and a commit or
 * Welcome's reference to the attachment store (msv_mls_ref_parse): taken only as 102 bytes of
 * its version naming a size from 1 byte to 8 MiB; and a GroupContext's extensions as a member
 * reads the group context from them (client_group_ctx_parse): read within their bytes, the
 * admins taken only as one to MEMBERS_MAX distinct handles, one a line.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <sodium.h>

#include "client/client.h"
#include "client/internal.h"
#include "common.h"
#include "mls/mls.h"
#include "util/endian.h"

#define DEVICE 7
#define NOW 1800000000u

static struct msv_identity *id;
static uint8_t *honest;
static size_t honest_len;

/* The device's one honest KeyPackage, bound as mlskeys.c binds them. */
static void setup(void)
{
    uint8_t seed[32], pk[32], sk[64], msg[15 + 8 + 32], identity[8 + MSV_SIGNATURE_MAX];
    uint8_t init_sk[32], leaf_sk[32];
    size_t sig_len = 0;
    const char *why = NULL;

    if (msv_init() != MSV_OK || msv_identity_generate(MSV_SUITE_MODERN, 0, &id) != MSV_OK)
        abort();
    randombytes_buf(seed, sizeof(seed));
    crypto_sign_seed_keypair(pk, sk, seed);
    memcpy(msg, "MSV-mls-leaf-v1", 15);
    msv_put_u64be(msg + 15, DEVICE);
    memcpy(msg + 23, pk, 32);
    msv_put_u64be(identity, DEVICE);
    if (msv_identity_sign(id, msg, sizeof(msg), identity + 8, &sig_len) != MSV_OK ||
        msv_mls_key_package_make(MSV_MLS_SUITE_X25519_AES128GCM, seed, identity, 8 + sig_len,
                                 NOW - 3600, NOW + 86400, init_sk, leaf_sk, &honest,
                                 &honest_len) != MSV_OK ||
        msv_mlskeys_credential_check(msv_identity_public(id), DEVICE, honest, honest_len, NOW,
                                     &why) != MSV_OK)
        abort();
}

/* The group context read from any extension list: its admins well formed when it parses. */
static void group_context(const uint8_t *data, size_t size)
{
    struct client_group_ctx g;
    size_t lines = 0;

    if (client_group_ctx_parse(data, size, &g) != MSV_OK) {
        if (g.present || g.admins != NULL)
            abort(); /* cleared */
        return;
    }
    for (const char *l = g.admins; g.present && *l != '\0'; l = strchr(l, '\n') + 1) {
        const char *end = strchr(l, '\n');
        char handle[MSV_HANDLE_MAX + 1];

        if (end == NULL || end == l || end - l > MSV_HANDLE_MAX)
            abort();
        memcpy(handle, l, (size_t)(end - l));
        handle[end - l] = '\0';
        if (!client_group_ctx_admin(&g, handle))
            abort(); /* each admin listed is found */
        lines++;
    }
    if (g.present != (g.admins != NULL) || lines != g.n_admins || (g.present && lines == 0) ||
        g.link_flags > 3)
        abort();
    client_group_ctx_clear(&g);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *why = NULL;
    const uint8_t *named = NULL;
    size_t named_len = 0;
    uint64_t device = 0;
    struct msv_mls_ref ref;
    msv_err err;

    if (id == NULL)
        setup();
    err = msv_mls_ref_parse(data, size, &ref);
    if (err == MSV_OK && (size != 102 || data[0] != 0xff || data[1] != 1 || ref.size == 0 ||
                          ref.size > (8u << 20) || strlen(ref.uri) != 5 + 64))
        abort();
    if (err == MSV_ERR_NOT_FOUND && size > 0 && data[0] == 0xff)
        abort(); /* the marker is always read as a reference */
    /* a group's leaf as its tree holds it: its credential read within its bytes */
    if (msv_mlskeys_leaf_credential(data, size, &named, &named_len, &device) == MSV_OK &&
        (named < data || named + named_len > data + size || named_len <= 8))
        abort();
    err = msv_mlskeys_credential_check(msv_identity_public(id), DEVICE, data, size, NOW, &why);
    if (err == MSV_OK && (size != honest_len || memcmp(data, honest, size) != 0))
        abort();
    if (err != MSV_OK && why == NULL)
        abort(); /* every refusal says why */
    group_context(data, size);
    return 0;
}
