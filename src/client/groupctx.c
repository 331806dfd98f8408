/*
 * The group context extension (docs/crypto.md, "The group context"): what a group's MLS group
 * carries, in every epoch's GroupContext, of the signed state its admins made and of its invite
 * link, so that every member of an epoch holds the same admins and link, bound by the key
 * schedule, whatever copies of the signed state the server gave each of them.
 *
 *   Extension = u16 MSV_MLS_EXT_GROUP || extension_data<V>
 *   extension_data = u8 version (1) || u64 state epoch || state hash[32]
 *                    || admins<V> (each handle<V>, in the signed state's order)
 *                    || u64 link version || u8 link flags || link hash[32]
 *
 * The state hash is the SHA-256 of the signed state's encoding (groups.c); the link hash is
 * client_group_link_hash() of its secret, all zero while the link is off (the secret itself is
 * the admins' alone).
 */
#include <stdlib.h>
#include <string.h>

#include "client/internal.h"
#include "mls/mls.h"
#include "missive/payload.h"
#include "util/buf.h"

#define VERSION 1
#define EXT_MAX (64 + MEMBERS_MAX * (MSV_HANDLE_MAX + 2))

void client_group_ctx_clear(struct client_group_ctx *g)
{
    free(g->admins);
    memset(g, 0, sizeof(*g));
}

int client_group_ctx_admin(const struct client_group_ctx *g, const char *handle)
{
    size_t n = strlen(handle);

    for (const char *l = g->admins; l != NULL && *l != '\0';) {
        const char *end = strchr(l, '\n');
        size_t k = end != NULL ? (size_t)(end - l) : strlen(l);

        if (k == n && strncmp(l, handle, n) == 0)
            return 1;
        l += k + (end != NULL);
    }
    return 0;
}

/* Whether the lines in bytes (each ended by '\n') hold the n bytes of h as one. */
static int lines_hold(const struct msv_buf *lines, const uint8_t *h, size_t n)
{
    for (size_t at = 0; at < lines->len;) {
        const uint8_t *end = memchr(lines->data + at, '\n', lines->len - at);
        size_t k = (size_t)(end - (lines->data + at));

        if (k == n && memcmp(lines->data + at, h, n) == 0)
            return 1;
        at += k + 1;
    }
    return 0;
}

/* One handle of the admins<V>: 1 to MSV_HANDLE_MAX bytes, no NUL nor line break, listed once. */
static msv_err read_admin(struct msv_reader *r, struct msv_buf *lines, struct client_group_ctx *g)
{
    const uint8_t *h;
    size_t n;

    if (msv_mls_get_vec(r, &h, &n) != MSV_OK || n == 0 || n > MSV_HANDLE_MAX ||
        memchr(h, '\0', n) != NULL || memchr(h, '\n', n) != NULL || g->n_admins == MEMBERS_MAX ||
        lines_hold(lines, h, n))
        return MSV_ERR_PARSE;
    if (msv_buf_put(lines, h, n) != MSV_OK || msv_buf_put_u8(lines, '\n') != MSV_OK)
        return MSV_ERR_NOMEM;
    g->n_admins++;
    return MSV_OK;
}

static msv_err read_data(const uint8_t *data, size_t len, struct client_group_ctx *g)
{
    struct msv_reader r, admins;
    struct msv_buf lines;
    const uint8_t *hash;
    uint8_t version = 0;
    msv_err err;

    msv_reader_init(&r, data, len);
    if (msv_reader_u8(&r, &version) != MSV_OK || version != VERSION ||
        msv_mls_get_u64(&r, &g->state_epoch) != MSV_OK ||
        msv_reader_bytes(&r, 32, &hash) != MSV_OK || msv_mls_get_sub(&r, &admins) != MSV_OK)
        return MSV_ERR_PARSE;
    memcpy(g->state_hash, hash, 32);
    msv_buf_init(&lines, EXT_MAX);
    err = MSV_OK;
    while (err == MSV_OK && !msv_mls_reader_is_done(&admins))
        err = read_admin(&admins, &lines, g);
    if (err == MSV_OK && g->n_admins == 0)
        err = MSV_ERR_PARSE; /* a group has an admin */
    if (err == MSV_OK)
        err = msv_buf_put_u8(&lines, 0);
    if (err == MSV_OK) {
        g->admins = (char *)lines.data;
        lines.data = NULL;
    }
    msv_buf_clear(&lines);
    if (err == MSV_OK && (msv_mls_get_u64(&r, &g->link_version) != MSV_OK ||
                          g->link_version > UINT32_MAX || /* as a link's settings (invites.c) */
                          msv_reader_u8(&r, &g->link_flags) != MSV_OK || g->link_flags > 3 ||
                          msv_reader_bytes(&r, 32, &hash) != MSV_OK || !msv_mls_reader_is_done(&r)))
        err = MSV_ERR_PARSE;
    if (err == MSV_OK)
        memcpy(g->link_hash, hash, 32);
    return err;
}

msv_err client_group_ctx_parse(const uint8_t *ext, size_t len, struct client_group_ctx *g)
{
    struct msv_reader r;
    msv_err err = MSV_OK;

    memset(g, 0, sizeof(*g));
    msv_reader_init(&r, ext, len);
    while (err == MSV_OK && !msv_mls_reader_is_done(&r)) {
        uint16_t type = 0;
        const uint8_t *data;
        size_t n;

        if (msv_reader_u16be(&r, &type) != MSV_OK || msv_mls_get_vec(&r, &data, &n) != MSV_OK)
            err = MSV_ERR_PARSE;
        else if (type == MSV_MLS_EXT_GROUP && g->present)
            err = MSV_ERR_PARSE; /* once */
        else if (type == MSV_MLS_EXT_GROUP && (err = read_data(data, n, g)) == MSV_OK)
            g->present = 1;
        else if (type != MSV_MLS_EXT_GROUP)
            g->others++;
    }
    if (err != MSV_OK)
        client_group_ctx_clear(g);
    return err;
}

/* The extension list of ours alone for g (members refuse a context with others). */
static msv_err encode(const struct client_group_ctx *g, uint8_t **ext, size_t *len)
{
    struct msv_buf w;
    size_t data, list;

    msv_buf_init(&w, EXT_MAX);
    msv_buf_put_u16be(&w, MSV_MLS_EXT_GROUP);
    data = msv_mls_vec_begin(&w);
    msv_buf_put_u8(&w, VERSION);
    msv_mls_put_u64(&w, g->state_epoch);
    msv_buf_put(&w, g->state_hash, 32);
    list = msv_mls_vec_begin(&w);
    for (const char *l = g->admins; l != NULL && *l != '\0';) {
        const char *end = strchr(l, '\n');
        size_t n = end != NULL ? (size_t)(end - l) : strlen(l);

        msv_mls_put_vec(&w, (const uint8_t *)l, n);
        l = end != NULL ? end + 1 : l + n;
    }
    msv_mls_vec_end(&w, list);
    msv_mls_put_u64(&w, g->link_version);
    msv_buf_put_u8(&w, g->link_flags & 3);
    msv_buf_put(&w, g->link_hash, 32);
    msv_mls_vec_end(&w, data);
    return msv_buf_finish(&w, ext, len);
}

/* Whether link settings a come first of two of one version (or are the same as b). */
static int link_first(uint8_t flags_a, const uint8_t hash_a[32], uint8_t flags_b,
                      const uint8_t hash_b[32])
{
    return flags_a != flags_b ? flags_a < flags_b : memcmp(hash_a, hash_b, 32) <= 0;
}

msv_err client_group_ctx_make(struct msv_client *c, const uint8_t gid[16], const uint8_t *cur,
                              size_t cur_len, uint8_t **ext, size_t *len)
{
    struct client_group_ctx want = {0}, held = {0};
    msv_err err = client_group_ctx_parse(cur, cur_len, &held);

    if (err == MSV_OK)
        err = client_group_state_digest(c, gid, &want.state_epoch, want.state_hash, &want.admins);
    if (err == MSV_OK)
        err =
            client_group_link_digest(c, gid, &want.link_version, &want.link_flags, want.link_hash);
    /* what the group holds is newer, or of the same version and first by the rule all devices
     * follow for two of one version (the lower hash; for a link, the lower flags and hash of
     * its secret): kept, so that two admins' devices holding different copies never undo each
     * other's commits */
    if (err == MSV_OK && held.present &&
        (held.state_epoch > want.state_epoch ||
         (held.state_epoch == want.state_epoch &&
          memcmp(held.state_hash, want.state_hash, 32) < 0))) {
        free(want.admins);
        want.admins = held.admins;
        held.admins = NULL;
        want.state_epoch = held.state_epoch;
        memcpy(want.state_hash, held.state_hash, 32);
    }
    if (err == MSV_OK && held.present &&
        (held.link_version > want.link_version ||
         (held.link_version == want.link_version &&
          link_first(held.link_flags, held.link_hash, want.link_flags, want.link_hash)))) {
        want.link_version = held.link_version;
        want.link_flags = held.link_flags;
        memcpy(want.link_hash, held.link_hash, 32);
    }
    if (err == MSV_OK)
        err = encode(&want, ext, len);
    client_group_ctx_clear(&want);
    client_group_ctx_clear(&held);
    return err;
}
