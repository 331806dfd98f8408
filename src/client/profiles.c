/*
 * Profiles: a display name and an avatar, kept in the attachment store
 * encrypted under a key derived from the account's profile key, and found by
 * the pointer every message carries (docs/crypto.md, "Profiles").
 *
 * The plaintext: "MSVP" || u8 version (1) || u8 name length || name || avatar.
 * The key of one upload: HKDF-SHA256(ikm profile key, salt, "MSV-profile-v1"),
 * the salt 32 random bytes of that upload, carried in the pointer.
 */
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <sodium.h>

#include "client/internal.h"
#include "client/sessions.h"
#include "crypto/internal.h"
#include "missive/util.h"
#include "util/endian.h"

#define PROFILE_MAGIC "MSVP"
#define PROFILE_HEAD 6
#define OWN_POINTER "sync:profile"

static const char profile_info[] = "MSV-profile-v1";

int msv_client_profile_name_is_valid(const char *name)
{
    const uint8_t *s = (const uint8_t *)name;
    size_t n = name != NULL ? strlen(name) : 0;

    if (n == 0 || n > MSV_PROFILE_NAME_MAX || !msv_utf8_is_valid(s, n))
        return 0;
    for (size_t i = 0; i < n; i++) {
        /* C0 and DEL; C1 (C2 80..9F); the bidi controls U+200E/F, U+202A..E, U+2066..9, U+061C */
        if (s[i] < 0x20 || s[i] == 0x7f || (s[i] == 0xc2 && i + 1 < n && s[i + 1] < 0xa0))
            return 0;
        if (s[i] == 0xe2 && i + 2 < n && s[i + 1] == 0x80 &&
            (s[i + 2] == 0x8e || s[i + 2] == 0x8f || (s[i + 2] >= 0xaa && s[i + 2] <= 0xae)))
            return 0;
        if (s[i] == 0xe2 && i + 2 < n && s[i + 1] == 0x81 && s[i + 2] >= 0xa6 && s[i + 2] <= 0xa9)
            return 0;
        if (s[i] == 0xd8 && i + 1 < n && s[i + 1] == 0x9c)
            return 0;
    }
    return 1;
}

void msv_profile_free(struct msv_profile *p)
{
    if (p == NULL)
        return;
    free(p->name);
    free(p->avatar);
    free(p);
}

static msv_err profile_key(const uint8_t pk[MSV_PROFILE_KEY_LEN],
                           const uint8_t salt[MSV_PROFILE_SALT_LEN],
                           uint8_t key[MSV_ATTACHMENT_KEY_LEN])
{
    return msv_hkdf_sha256(pk, MSV_PROFILE_KEY_LEN, salt, MSV_PROFILE_SALT_LEN,
                           (const uint8_t *)profile_info, sizeof(profile_info) - 1, key,
                           MSV_ATTACHMENT_KEY_LEN);
}

/* The plaintext of a profile; MSV_ERR_INVALID for a name or avatar out of the rules. */
static msv_err profile_encode(const struct msv_profile *p, uint8_t **out, size_t *len)
{
    size_t name_len = p->name ? strlen(p->name) : 0;
    uint8_t *b;

    if (!msv_client_profile_name_is_valid(p->name) || p->avatar_len > MSV_PROFILE_AVATAR_MAX)
        return MSV_ERR_INVALID;
    *len = PROFILE_HEAD + name_len + p->avatar_len;
    if ((b = malloc(*len)) == NULL)
        return MSV_ERR_NOMEM;
    memcpy(b, PROFILE_MAGIC, 4);
    b[4] = 1;
    b[5] = (uint8_t)name_len;
    memcpy(b + PROFILE_HEAD, p->name, name_len);
    if (p->avatar_len > 0)
        memcpy(b + PROFILE_HEAD + name_len, p->avatar, p->avatar_len);
    *out = b;
    return MSV_OK;
}

/* Parses a decrypted profile; MSV_ERR_AUTH for anything its owner could not have made. */
static msv_err profile_decode(const uint8_t *b, size_t len, struct msv_profile **out)
{
    struct msv_profile *p;
    size_t name_len;

    if (len < PROFILE_HEAD || memcmp(b, PROFILE_MAGIC, 4) != 0 || b[4] != 1)
        return MSV_ERR_AUTH;
    name_len = b[5];
    if (PROFILE_HEAD + name_len > len || len - PROFILE_HEAD - name_len > MSV_PROFILE_AVATAR_MAX)
        return MSV_ERR_AUTH;
    if ((p = calloc(1, sizeof(*p))) == NULL || (p->name = malloc(name_len + 1)) == NULL ||
        (p->avatar = malloc(len - PROFILE_HEAD - name_len + 1)) == NULL) {
        msv_profile_free(p);
        return MSV_ERR_NOMEM;
    }
    memcpy(p->name, b + PROFILE_HEAD, name_len);
    p->name[name_len] = '\0';
    p->avatar_len = len - PROFILE_HEAD - name_len;
    memcpy(p->avatar, b + PROFILE_HEAD + name_len, p->avatar_len);
    if (!msv_client_profile_name_is_valid(p->name)) {
        msv_profile_free(p);
        return MSV_ERR_AUTH;
    }
    *out = p;
    return MSV_OK;
}

/* The pointer as a setting: u64be size || sha256 || salt || uri. */
static msv_err ref_store(struct msv_client *c, const char *key, const struct msv_profile_ref *r)
{
    uint8_t v[8 + 32 + MSV_PROFILE_SALT_LEN + 80];
    size_t uri_len = strlen(r->uri);

    if (uri_len > 80)
        return MSV_ERR_INVALID;
    msv_put_u64be(v, r->size);
    memcpy(v + 8, r->sha256, 32);
    memcpy(v + 40, r->salt, MSV_PROFILE_SALT_LEN);
    memcpy(v + 40 + MSV_PROFILE_SALT_LEN, r->uri, uri_len);
    return msv_client_db_set(c->db, key, v, 40 + MSV_PROFILE_SALT_LEN + uri_len);
}

/* Reads a pointer ref_store() kept; r->uri points into uri (81 bytes). */
static msv_err ref_load(struct msv_client *c, const char *key, struct msv_profile_ref *r,
                        char uri[81])
{
    uint8_t *v = NULL;
    size_t len = 0, head = 40 + MSV_PROFILE_SALT_LEN;
    msv_err err = msv_client_db_get(c->db, key, &v, &len);

    if (err == MSV_OK && (len <= head || len > head + 80))
        err = MSV_ERR_NOT_FOUND;
    if (err == MSV_OK) {
        r->size = msv_get_u64be(v);
        memcpy(r->sha256, v + 8, 32);
        memcpy(r->salt, v + 40, MSV_PROFILE_SALT_LEN);
        memcpy(uri, v + head, len - head);
        uri[len - head] = '\0';
        r->uri = uri;
    }
    free(v);
    return err;
}

msv_err client_profile_ref(struct msv_client *c, struct msv_profile_ref *r, char uri[81])
{
    return ref_load(c, OWN_POINTER, r, uri);
}

/* Fetches and opens the profile r points at under profile key pk. */
static msv_err profile_fetch(struct msv_client *c, const struct msv_profile_ref *r,
                             const uint8_t pk[MSV_PROFILE_KEY_LEN], struct msv_profile **out)
{
    struct msv_attachment_ref a = {.uri = r->uri, .size = r->size};
    uint8_t *pt = NULL;
    size_t len = 0;
    msv_err err = profile_key(pk, r->salt, a.key);

    memcpy(a.sha256, r->sha256, 32);
    if (err == MSV_OK && r->size > MSV_PROFILE_BLOB_MAX)
        err = MSV_ERR_TOO_BIG;
    if (err == MSV_OK)
        err = msv_client_connect(c);
    if (err == MSV_OK)
        err = client_fetch_blob(c, &a, MSV_PROFILE_BLOB_MAX, &pt, &len);
    if (err == MSV_OK)
        err = profile_decode(pt, len, out);
    if (pt != NULL)
        msv_secret_free(pt, len);
    sodium_memzero(a.key, sizeof(a.key));
    return err;
}

msv_err msv_client_profile(struct msv_client *c, struct msv_profile **out)
{
    struct msv_profile_ref r;
    uint8_t pk[MSV_PROFILE_KEY_LEN];
    char uri[81];
    msv_err err = ref_load(c, OWN_POINTER, &r, uri);

    if (err == MSV_OK)
        err = msv_sessions_profile_key(c, pk);
    if (err == MSV_OK)
        err = profile_fetch(c, &r, pk, out);
    sodium_memzero(pk, sizeof(pk));
    return err;
}

/* Encrypts p under the profile key held now, uploads it and points the account at it. */
static msv_err profile_publish(struct msv_client *c, const struct msv_profile *p)
{
    struct msv_profile_ref r;
    struct msv_attachment_digest d;
    uint8_t pk[MSV_PROFILE_KEY_LEN], key[MSV_ATTACHMENT_KEY_LEN], *pt = NULL;
    size_t len = 0;
    char uri[81];
    msv_err err = profile_encode(p, &pt, &len);

    msv_random_bytes(r.salt, sizeof(r.salt));
    if (err == MSV_OK)
        err = msv_sessions_profile_key(c, pk);
    if (err == MSV_OK)
        err = profile_key(pk, r.salt, key);
    if (err == MSV_OK)
        err = client_upload_blob(c, key, pt, len, NULL, &d, uri, sizeof(uri));
    if (err == MSV_OK) {
        r.uri = uri;
        r.size = len;
        memcpy(r.sha256, d.sha256, 32);
        err = ref_store(c, OWN_POINTER, &r);
    }
    if (pt != NULL)
        msv_secret_free(pt, len);
    sodium_memzero(pk, sizeof(pk));
    sodium_memzero(key, sizeof(key));
    return err;
}

msv_err msv_client_profile_set(struct msv_client *c, const char *name, const uint8_t *avatar,
                               size_t avatar_len, int keep_avatar)
{
    struct msv_profile *old = NULL, p = {.name = (char *)name};
    msv_err err = MSV_OK;

    if (!msv_client_profile_name_is_valid(name))
        return MSV_ERR_INVALID;
    if (avatar_len > MSV_PROFILE_AVATAR_MAX)
        return MSV_ERR_TOO_BIG;
    p.avatar = (uint8_t *)avatar;
    p.avatar_len = avatar_len;
    if (keep_avatar) {
        err = msv_client_profile(c, &old);
        if (err == MSV_ERR_NOT_FOUND)
            err = MSV_OK;
        if (old != NULL) {
            p.avatar = old->avatar;
            p.avatar_len = old->avatar_len;
        }
    }
    if (err == MSV_OK)
        err = profile_publish(c, &p);
    msv_profile_free(old);
    return err;
}

msv_err client_profile_before_rotation(struct msv_client *c, struct msv_profile **out)
{
    msv_err err = msv_client_profile(c, out);

    return err == MSV_ERR_NOT_FOUND ? MSV_OK : err;
}

msv_err client_profile_after_rotation(struct msv_client *c, const struct msv_profile *p)
{
    return p != NULL ? profile_publish(c, p) : MSV_OK;
}

/* ---- contacts' profiles ---------------------------------------------------------------- */

static void contact_key(const char *what, const char *handle, char *key, size_t len)
{
    snprintf(key, len, "profile-%s:%s", what, handle);
}

/* The avatar's file: profiles/ and the hex of SHA-256 of the handle (no name from the network). */
static msv_err avatar_path(struct msv_client *c, const char *handle, char *path, size_t len)
{
    uint8_t h[32];
    char hex[65];
    msv_err err = msv_sha256((const uint8_t *)handle, strlen(handle), h);

    if (err == MSV_OK)
        err = msv_hex_encode(h, 32, hex, sizeof(hex));
    if (err == MSV_OK)
        snprintf(path, len, "%s/profiles/%s", c->dir, hex);
    return err;
}

/* Writes the avatar beside the others, whole or not at all (a new file renamed over the old). */
static msv_err keep_avatar(struct msv_client *c, const char *handle, const struct msv_profile *p)
{
    char path[1200], tmp[1210], dir[1100];
    int fd;
    msv_err err = avatar_path(c, handle, path, sizeof(path));

    snprintf(dir, sizeof(dir), "%s/profiles", c->dir);
    if (err != MSV_OK || (mkdir(dir, 0700) != 0 && access(dir, W_OK) != 0))
        return err != MSV_OK ? err : MSV_ERR_IO;
    if (p->avatar_len == 0)
        return unlink(path) == 0 || access(path, F_OK) != 0 ? MSV_OK : MSV_ERR_IO;
    snprintf(tmp, sizeof(tmp), "%s.new", path);
    fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_NOFOLLOW | O_CLOEXEC, 0600);
    err = fd >= 0 ? msv_write_all(fd, p->avatar, p->avatar_len) : MSV_ERR_IO;
    if (fd >= 0 && close(fd) != 0 && err == MSV_OK)
        err = MSV_ERR_IO;
    if (err == MSV_OK && rename(tmp, path) != 0)
        err = MSV_ERR_IO;
    if (err != MSV_OK)
        unlink(tmp);
    return err;
}

/* What identifies the profile a pointer and key open: SHA-256(key || size || sha256 || salt). */
static msv_err seen_digest(const struct msv_payload *p, uint8_t out[32])
{
    uint8_t size[8];
    const uint8_t *parts[4] = {p->profile_key, size, p->profile.sha256, p->profile.salt};
    size_t lens[4] = {MSV_PROFILE_KEY_LEN, 8, 32, MSV_PROFILE_SALT_LEN};

    msv_put_u64be(size, p->profile.size);
    return msv_sha256_parts(parts, lens, 4, out);
}

static void notify(struct msv_client *c, const char *sender, const char *notice,
                   void (*on_message)(void *, const struct msv_incoming *), void *ctx)
{
    struct msv_incoming in = {.kind = MSV_INCOMING_PROFILE, .notice = notice, .from = sender};

    (void)c;
    if (on_message != NULL)
        on_message(ctx, &in);
}

msv_err client_take_profile(struct msv_client *c, const char *sender, const struct msv_payload *p,
                            void (*on_message)(void *, const struct msv_incoming *), void *ctx)
{
    struct msv_profile *got = NULL;
    uint8_t digest[32], *old = NULL;
    size_t old_len = 0;
    char key[300], notice[400];
    msv_err err;

    if (!p->has_profile || !p->has_profile_key || strcmp(sender, c->handle) == 0)
        return MSV_OK;
    contact_key("seen", sender, key, sizeof(key));
    err = seen_digest(p, digest);
    if (err == MSV_OK && msv_client_db_get(c->db, key, &old, &old_len) == MSV_OK && old_len == 32 &&
        memcmp(old, digest, 32) == 0)
        err = MSV_ERR_EXISTS; /* the profile it has already */
    free(old);
    if (err != MSV_OK)
        return err == MSV_ERR_EXISTS ? MSV_OK : err;
    err = profile_fetch(c, &p->profile, p->profile_key, &got);
    if (err == MSV_ERR_IO || err == MSV_ERR_NOMEM || err == MSV_ERR_AGAIN)
        return MSV_OK; /* tried again with the next message */
    if (err == MSV_OK)
        err = keep_avatar(c, sender, got);
    if (err == MSV_OK) {
        contact_key("name", sender, key, sizeof(key));
        err = msv_client_db_set(c->db, key, got->name, strlen(got->name));
    }
    if (err == MSV_ERR_IO || err == MSV_ERR_NOMEM) {
        msv_profile_free(got);
        return err;
    }
    if (err == MSV_OK)
        snprintf(notice, sizeof(notice), "%s's profile changed: %s", sender, got->name);
    else
        snprintf(notice, sizeof(notice), "%s's profile could not be used (%s); it is ignored",
                 sender, msv_strerror(err));
    msv_profile_free(got);
    contact_key("seen", sender, key, sizeof(key));
    err = msv_client_db_set(c->db, key, digest, sizeof(digest));
    if (err == MSV_OK)
        notify(c, sender, notice, on_message, ctx);
    return err;
}

msv_err msv_client_contact_profile(struct msv_client *c, const char *handle, char **name,
                                   char *avatar, size_t avatar_len)
{
    char key[300];
    uint8_t *v = NULL;
    size_t len = 0;
    msv_err err;

    contact_key("name", handle, key, sizeof(key));
    err = msv_client_db_get(c->db, key, &v, &len);
    if (err == MSV_OK && (*name = malloc(len + 1)) == NULL)
        err = MSV_ERR_NOMEM;
    if (err == MSV_OK) {
        memcpy(*name, v, len);
        (*name)[len] = '\0';
    }
    free(v);
    if (err == MSV_OK && avatar != NULL &&
        (avatar_path(c, handle, avatar, avatar_len) != MSV_OK || access(avatar, F_OK) != 0))
        avatar[0] = '\0';
    return err;
}

msv_err msv_client_sender_name(struct msv_client *c, const char *handle, char *out, size_t len)
{
    struct msv_contact *list = NULL;
    size_t n = 0;
    char *name = NULL;
    msv_err err = msv_client_db_contacts(c->db, NULL, &list, &n);

    for (size_t i = 0; err == MSV_OK && i < n; i++) {
        /* the user's own name for it wins; a contact named by its handle names it no more */
        if (strcmp(list[i].handle, handle) == 0 && strcmp(list[i].name, handle) != 0) {
            snprintf(out, len, "%s", list[i].name);
            msv_contacts_free(list, n);
            return MSV_OK;
        }
    }
    msv_contacts_free(list, n);
    if (err == MSV_OK)
        err = msv_client_contact_profile(c, handle, &name, NULL, 0);
    if (err == MSV_OK)
        snprintf(out, len, "%s", name);
    free(name);
    return err;
}
