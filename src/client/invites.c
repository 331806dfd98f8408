/*
 * Invite links (docs/groups.md, "Invite links"): an admin makes a link that
 * carries a group's id, a secret and the admins to ask; whoever holds it asks
 * to join with a GROUP_JOIN payload proving the secret, and an admin's device
 * adds them (approval off) or keeps the request until an admin decides.
 *
 * The URI:  "missive:join?g=" HEX(group id) "&s=" BASE64URL(secret, no padding)
 *           "&a=" ADMIN ("," ADMIN)...   (handles percent-encoded)
 * The proof: HMAC-SHA256(secret, "MSV-group-join-v1" || group id || u16be len || handle).
 * Each device keeps, per group, the link's settings under "group-link:<hex>"
 * (u64be version || u8 flags || secret), the waiting requests under
 * "join-pending:<hex>" (a handle a line), and, on the joiner's side,
 * "join-asked:<hex>" until the group arrives (u64be ms asked || the link's admins, a handle a
 * line; "1" from before it named them: any admin); "join-refused" counts the requests refused
 * (u64be), naming nobody.
 */
#include "client/internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <sodium.h>

#include "missive/payload.h"
#include "missive/util.h"
#include "util/endian.h"

#define JOIN_MAGIC "MSV-group-join-v1"
#define LINK_HASH_MAGIC "MSV-group-link-v1"
#define URI_PREFIX "missive:join?"
#define LINK_ON 1
#define LINK_APPROVAL 2
#define LINK_LEN (8 + 1 + MSV_JOIN_KEY_LEN)
#define SECRET_B64_LEN 43 /* 32 bytes, base64url without padding */

struct link {
    uint64_t version;
    uint8_t flags;
    uint8_t secret[MSV_JOIN_KEY_LEN];
};

static void group_key(const char *what, const uint8_t gid[16], char key[64])
{
    char hex[33];

    if (msv_hex_encode(gid, 16, hex, sizeof(hex)) != MSV_OK)
        hex[0] = '\0';
    snprintf(key, 64, "%s:%s", what, hex);
}

/* The link's settings this device holds; all zero (version 0, off) if none. */
static msv_err link_load(struct msv_client *c, const uint8_t gid[16], struct link *l)
{
    char key[64];
    uint8_t *v = NULL;
    size_t len = 0;
    msv_err err;

    memset(l, 0, sizeof(*l));
    group_key("group-link", gid, key);
    err = msv_client_db_get(c->db, key, &v, &len);
    if (err == MSV_OK && len == LINK_LEN) {
        l->version = msv_get_u64be(v);
        l->flags = v[8];
        memcpy(l->secret, v + 9, MSV_JOIN_KEY_LEN);
    }
    msv_secret_free(v, len);
    return err == MSV_ERR_NOT_FOUND ? MSV_OK : err;
}

static msv_err link_save(struct msv_client *c, const uint8_t gid[16], const struct link *l)
{
    char key[64];
    uint8_t v[LINK_LEN];
    msv_err err;

    group_key("group-link", gid, key);
    msv_put_u64be(v, l->version);
    v[8] = l->flags;
    memcpy(v + 9, l->secret, MSV_JOIN_KEY_LEN);
    err = msv_client_db_set(c->db, key, v, sizeof(v));
    msv_wipe(v, sizeof(v));
    return err;
}

void client_group_link_hash(const uint8_t gid[16], const uint8_t secret[MSV_JOIN_KEY_LEN],
                            uint8_t out[32])
{
    crypto_hash_sha256_state h;

    crypto_hash_sha256_init(&h);
    crypto_hash_sha256_update(&h, (const uint8_t *)LINK_HASH_MAGIC, strlen(LINK_HASH_MAGIC));
    crypto_hash_sha256_update(&h, gid, 16);
    crypto_hash_sha256_update(&h, secret, MSV_JOIN_KEY_LEN);
    crypto_hash_sha256_final(&h, out);
}

msv_err client_group_link_digest(struct msv_client *c, const uint8_t gid[16], uint64_t *version,
                                 uint8_t *flags, uint8_t hash[32])
{
    struct link l;
    msv_err err = link_load(c, gid, &l);

    memset(hash, 0, 32);
    *version = err == MSV_OK ? l.version : 0;
    *flags = err == MSV_OK ? l.flags : 0;
    if (err == MSV_OK && (l.flags & LINK_ON))
        client_group_link_hash(gid, l.secret, hash);
    sodium_memzero(&l, sizeof(l));
    return err;
}

/* Whether a list of one handle a line holds handle. */
static int in_lines(const char *lines, const char *handle)
{
    size_t n = strlen(handle);

    for (const char *l = lines; l != NULL && *l != '\0';
         l = strchr(l, '\n') ? strchr(l, '\n') + 1 : NULL)
        if (strncmp(l, handle, n) == 0 && (l[n] == '\n' || l[n] == '\0'))
            return 1;
    return 0;
}

/* Whether handle is an admin of the signed state this device holds of group gid. */
static int is_admin(struct msv_client *c, const uint8_t gid[16], const char *handle)
{
    char *admins = NULL;
    int yes = msv_client_group_admins(c, gid, &admins) == MSV_OK && in_lines(admins, handle);

    free(admins);
    return yes;
}

/* The proof a request carries: HMAC-SHA256(secret, magic || group id || u16be len || handle). */
static void join_proof(const uint8_t secret[MSV_JOIN_KEY_LEN], const uint8_t gid[16],
                       const char *handle, uint8_t out[MSV_JOIN_KEY_LEN])
{
    crypto_auth_hmacsha256_state st;
    uint8_t len[2];
    size_t n = strlen(handle);

    len[0] = (uint8_t)(n >> 8);
    len[1] = (uint8_t)n;
    crypto_auth_hmacsha256_init(&st, secret, MSV_JOIN_KEY_LEN);
    crypto_auth_hmacsha256_update(&st, (const uint8_t *)JOIN_MAGIC, strlen(JOIN_MAGIC));
    crypto_auth_hmacsha256_update(&st, gid, 16);
    crypto_auth_hmacsha256_update(&st, len, 2);
    crypto_auth_hmacsha256_update(&st, (const uint8_t *)handle, n);
    crypto_auth_hmacsha256_final(&st, out);
    sodium_memzero(&st, sizeof(st));
}

/* ---- the URI ------------------------------------------------------------------------- */

static int unreserved(unsigned char ch)
{
    return (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
           strchr("-._~@+", ch) != NULL;
}

/* Writes h percent-encoded to f (if not NULL); returns the length written. */
static size_t put_handle(FILE *f, const char *h)
{
    size_t n = 0;

    for (const unsigned char *p = (const unsigned char *)h; *p; p++) {
        n += unreserved(*p) ? 1 : 3;
        if (f != NULL && unreserved(*p))
            fputc(*p, f);
        else if (f != NULL)
            fprintf(f, "%%%02X", *p);
    }
    return n;
}

static msv_err make_uri(const uint8_t gid[16], const uint8_t secret[MSV_JOIN_KEY_LEN],
                        const char *self, const char *admins, char **uri)
{
    char hex[33], b64[SECRET_B64_LEN + 1], *out = NULL;
    size_t len = 0, n = 1, at;
    FILE *f = open_memstream(&out, &len);

    if (f == NULL)
        return MSV_ERR_NOMEM;
    if (msv_hex_encode(gid, 16, hex, sizeof(hex)) != MSV_OK)
        hex[0] = '\0';
    sodium_bin2base64(b64, sizeof(b64), secret, MSV_JOIN_KEY_LEN,
                      sodium_base64_VARIANT_URLSAFE_NO_PADDING);
    fprintf(f, "%sg=%s&s=%s&a=", URI_PREFIX, hex, b64);
    /* this admin first, then the others the link may ask, as many as the link holds */
    at = strlen(URI_PREFIX) + 2 + 32 + 3 + SECRET_B64_LEN + 3 + put_handle(f, self);
    for (const char *l = admins; l != NULL && *l != '\0' && n < MSV_INVITE_ADMINS_MAX;) {
        const char *end = strchr(l, '\n');
        size_t k = end ? (size_t)(end - l) : strlen(l);
        char h[MSV_HANDLE_MAX + 1];

        if (k > 0 && k <= MSV_HANDLE_MAX) {
            memcpy(h, l, k);
            h[k] = '\0';
            if (strcmp(h, self) != 0 && at + 1 + put_handle(NULL, h) <= MSV_INVITE_URI_MAX) {
                fputc(',', f);
                at += 1 + put_handle(f, h);
                n++;
            }
        }
        l = end ? end + 1 : NULL;
    }
    sodium_memzero(b64, sizeof(b64));
    if (fclose(f) != 0) {
        free(out);
        return MSV_ERR_NOMEM;
    }
    *uri = out;
    return MSV_OK;
}

/* One percent-encoded handle of [s, s + n): printable, with '@', 1 to 255 bytes. */
static msv_err parse_handle(const char *s, size_t n, char **out)
{
    char h[MSV_HANDLE_MAX + 1];
    size_t k = 0;

    for (size_t i = 0; i < n; i++) {
        int ch = (unsigned char)s[i];

        if (ch == '%') {
            char pair[3] = {0};
            uint8_t byte = 0;
            size_t one = 0;

            if (i + 2 >= n)
                return MSV_ERR_PARSE;
            memcpy(pair, s + i + 1, 2);
            if (msv_hex_decode(pair, &byte, 1, &one) != MSV_OK || one != 1)
                return MSV_ERR_PARSE;
            ch = byte;
            i += 2;
        }
        if (ch <= ' ' || ch == 0x7f || k >= 255)
            return MSV_ERR_PARSE;
        h[k++] = (char)ch;
    }
    h[k] = '\0';
    if (k == 0 || strchr(h, '@') == NULL)
        return MSV_ERR_PARSE;
    *out = strdup(h);
    return *out ? MSV_OK : MSV_ERR_NOMEM;
}

static msv_err parse_admins(const char *s, size_t n, struct msv_invite *inv)
{
    msv_err err = MSV_OK;

    for (size_t at = 0; err == MSV_OK && at <= n;) {
        const char *comma = memchr(s + at, ',', n - at);
        size_t k = comma ? (size_t)(comma - (s + at)) : n - at;

        if (inv->n_admins >= MSV_INVITE_ADMINS_MAX)
            return MSV_ERR_TOO_BIG;
        err = parse_handle(s + at, k, &inv->admins[inv->n_admins]);
        if (err == MSV_OK)
            inv->n_admins++;
        at += k + 1;
    }
    return err;
}

static msv_err parse_field(char name, const char *v, size_t n, struct msv_invite *inv, int *seen)
{
    size_t len = 0;
    int bit = name == 'g' ? 1 : name == 's' ? 2 : name == 'a' ? 4 : 0;

    if (bit == 0 || (*seen & bit) != 0)
        return MSV_ERR_PARSE; /* an unknown or repeated field */
    *seen |= bit;
    if (name == 'g') {
        char hex[33];

        if (n != 32)
            return MSV_ERR_PARSE;
        memcpy(hex, v, 32);
        hex[32] = '\0';
        return msv_hex_decode(hex, inv->group_id, 16, &len) == MSV_OK && len == 16 ? MSV_OK
                                                                                   : MSV_ERR_PARSE;
    }
    if (name == 's') {
        if (n != SECRET_B64_LEN)
            return MSV_ERR_PARSE;
        for (size_t i = 0; i < n; i++)
            if (!((v[i] >= 'a' && v[i] <= 'z') || (v[i] >= 'A' && v[i] <= 'Z') ||
                  (v[i] >= '0' && v[i] <= '9') || v[i] == '-' || v[i] == '_'))
                return MSV_ERR_PARSE;
        return sodium_base642bin(inv->secret, MSV_JOIN_KEY_LEN, v, n, NULL, &len, NULL,
                                 sodium_base64_VARIANT_URLSAFE_NO_PADDING) == 0 &&
                       len == MSV_JOIN_KEY_LEN
                   ? MSV_OK
                   : MSV_ERR_PARSE;
    }
    return parse_admins(v, n, inv);
}

void msv_invite_clear(struct msv_invite *inv)
{
    for (size_t i = 0; i < inv->n_admins; i++)
        free(inv->admins[i]);
    sodium_memzero(inv, sizeof(*inv));
}

msv_err msv_invite_parse(const char *uri, struct msv_invite *inv)
{
    size_t n = uri != NULL ? strlen(uri) : 0;
    int seen = 0;
    msv_err err = MSV_OK;

    memset(inv, 0, sizeof(*inv));
    if (n == 0 || n > MSV_INVITE_URI_MAX)
        return n == 0 ? MSV_ERR_PARSE : MSV_ERR_TOO_BIG;
    for (size_t i = 0; i < n; i++)
        if ((unsigned char)uri[i] <= ' ' || (unsigned char)uri[i] >= 0x7f)
            return MSV_ERR_PARSE;
    if (strncmp(uri, URI_PREFIX, strlen(URI_PREFIX)) != 0)
        return MSV_ERR_PARSE;
    for (const char *f = uri + strlen(URI_PREFIX); err == MSV_OK && f != NULL;) {
        const char *amp = strchr(f, '&');
        size_t k = amp ? (size_t)(amp - f) : strlen(f);

        if (k < 2 || f[1] != '=')
            err = MSV_ERR_PARSE;
        else
            err = parse_field(f[0], f + 2, k - 2, inv, &seen);
        f = amp ? amp + 1 : NULL;
    }
    if (err == MSV_OK && seen != 7)
        err = MSV_ERR_PARSE;
    if (err != MSV_OK)
        msv_invite_clear(inv);
    return err;
}

/* ---- an admin's link ----------------------------------------------------------------- */

/* The link's settings to the group's admins (this account's other devices get a copy). */
static msv_err link_share(struct msv_client *c, const uint8_t gid[16], const struct link *l,
                          char *admins)
{
    char *list[MEMBERS_MAX];
    size_t n = client_split_members(admins, list);
    uint8_t id[16];
    struct msv_payload p = {.kind = MSV_KIND_GROUP_JOIN,
                            .has_group = true,
                            .join_link_version = l->version,
                            .has_join_link_secret = (l->flags & LINK_ON) != 0,
                            .join_link_approval = (l->flags & LINK_APPROVAL) != 0};
    msv_err err;

    memcpy(p.group_id, gid, 16);
    memcpy(p.join_link_secret, l->secret, MSV_JOIN_KEY_LEN);
    err = client_send_payload(c, (const char *const *)list, n, &p, NULL, NULL, NULL, 0, NULL, id);
    msv_wipe(p.join_link_secret, sizeof(p.join_link_secret));
    return err;
}

/*
 * After an admin changed the link of a group on MLS: the change committed into the group
 * context; a failure is told (the admins' devices refuse requests under the new link until it
 * is, and the admin's next change of the group or of the link commits it).
 */
static msv_err context_follow(struct msv_client *c, const uint8_t gid[16])
{
    char text[400];
    msv_err err = client_mls_sync(c, gid, 0);

    if (err == MSV_OK)
        return MSV_OK;
    snprintf(text, sizeof(text),
             "the invite link changed, but the group's MLS group does not carry it yet, so "
             "requests under it are refused until it does (%s%s%.200s): show the link again",
             msv_strerror(err), c->why.message[0] ? ": " : "", c->why.message);
    return client_group_notice(c, gid, text); /* the link stands either way */
}

/* Whether the group context of group gid names a link other than l (one a failed or cut
 * short commit did not carry yet). */
static int context_differs(struct msv_client *c, const uint8_t gid[16], const struct link *l)
{
    struct client_group_ctx g;
    uint8_t hash[32] = {0};
    int differs;

    if (client_mls_group_ctx(c, gid, &g) != MSV_OK || !g.present)
        return 0;
    if (l->flags & LINK_ON)
        client_group_link_hash(gid, l->secret, hash);
    differs = g.link_version < l->version ||
              (g.link_version == l->version &&
               (g.link_flags != l->flags || sodium_memcmp(g.link_hash, hash, 32) != 0));
    client_group_ctx_clear(&g);
    return differs;
}

msv_err msv_client_group_invite(struct msv_client *c, const char *which, enum msv_invite_action act,
                                int approval, char **uri)
{
    struct msv_group_rec g = {0};
    struct link was, now;
    char *admins = NULL;
    msv_err err = client_joined_group(c, which, &g);

    if (err == MSV_OK)
        err = msv_client_group_admins(c, g.group_id, &admins);
    if (err == MSV_OK && !in_lines(admins, c->handle))
        err = MSV_ERR_AUTH; /* links are the admins' */
    if (err == MSV_OK)
        err = link_load(c, g.group_id, &was);
    if (err == MSV_OK) {
        now = was;
        if (act == MSV_INVITE_RESET || (act == MSV_INVITE_SHOW && !(now.flags & LINK_ON))) {
            msv_random_bytes(now.secret, MSV_JOIN_KEY_LEN);
            now.flags |= LINK_ON;
        }
        if (act == MSV_INVITE_OFF) {
            sodium_memzero(now.secret, MSV_JOIN_KEY_LEN);
            now.flags &= (uint8_t)~LINK_ON;
        }
        if (approval >= 0)
            now.flags = (uint8_t)((now.flags & ~LINK_APPROVAL) | (approval ? LINK_APPROVAL : 0));
        if (now.flags != was.flags || sodium_memcmp(now.secret, was.secret, MSV_JOIN_KEY_LEN) != 0)
            now.version = was.version + 1;
        err = link_save(c, g.group_id, &now);
    }
    /* told again each time, for admins promoted since */
    if (err == MSV_OK)
        err = link_share(c, g.group_id, &now, admins);
    /* a group on MLS carries the link in its context, which decides for every admin's device */
    if (err == MSV_OK && client_mls_is_on(c, g.group_id) &&
        (now.version != was.version || context_differs(c, g.group_id, &now)))
        err = context_follow(c, g.group_id);
    if (err == MSV_OK && (now.flags & LINK_ON)) {
        free(admins);
        admins = NULL;
        err = msv_client_group_admins(c, g.group_id, &admins);
        if (err == MSV_OK)
            err = make_uri(g.group_id, now.secret, c->handle, admins, uri);
    }
    sodium_memzero(&was, sizeof(was));
    sodium_memzero(&now, sizeof(now));
    free(admins);
    msv_group_clear(&g);
    return err;
}

/* ---- what arrives -------------------------------------------------------------------- */

/*
 * An admin's settings: taken only from an admin of the state this device
 * holds, and only if newer (a greater version; of two of one version, the
 * lower flags and secret); anything else changes nothing.
 */
static msv_err take_link(struct msv_client *c, const char *sender, const struct msv_payload *p)
{
    struct link held, got = {.version = p->join_link_version};
    uint8_t a[1 + 32], b[1 + 32];
    msv_err err;

    /* no admin's device counts that far: such a version would stop every later change */
    if (!is_admin(c, p->group_id, sender) || p->join_link_version > UINT32_MAX)
        return MSV_OK;
    got.flags = (uint8_t)((p->has_join_link_secret ? LINK_ON : 0) |
                          (p->join_link_approval ? LINK_APPROVAL : 0));
    if (p->has_join_link_secret)
        memcpy(got.secret, p->join_link_secret, MSV_JOIN_KEY_LEN);
    err = link_load(c, p->group_id, &held);
    /* of two of one version, the lower flags and hash of the secret (as the group context's
     * rule: groupctx.c), the hash of none (off) all zero */
    a[0] = got.flags;
    b[0] = held.flags;
    memset(a + 1, 0, 32);
    memset(b + 1, 0, 32);
    if (got.flags & LINK_ON)
        client_group_link_hash(p->group_id, got.secret, a + 1);
    if (held.flags & LINK_ON)
        client_group_link_hash(p->group_id, held.secret, b + 1);
    if (err == MSV_OK && got.version <= held.version + CLIENT_LINK_STEP_MAX &&
        (got.version > held.version ||
         (got.version == held.version && memcmp(a, b, sizeof(a)) < 0)))
        err = link_save(c, p->group_id, &got);
    sodium_memzero(&held, sizeof(held));
    sodium_memzero(&got, sizeof(got));
    sodium_memzero(a, sizeof(a));
    sodium_memzero(b, sizeof(b));
    return err;
}

/* A refused request: counted here, and told without a name or a group. */
static msv_err refuse_request(struct msv_client *c,
                              void (*on_message)(void *, const struct msv_incoming *), void *ctx)
{
    uint8_t *v = NULL, count[8];
    size_t len = 0;
    msv_err err = msv_client_db_get(c->db, "join-refused", &v, &len);
    struct msv_incoming in = {.kind = MSV_INCOMING_JOIN_REQUEST,
                              .status = "refused",
                              .notice = "a request to join a group was refused"};

    msv_put_u64be(count, (err == MSV_OK && len == 8 ? msv_get_u64be(v) : 0) + 1);
    free(v);
    err = err == MSV_OK || err == MSV_ERR_NOT_FOUND
              ? msv_client_db_set(c->db, "join-refused", count, sizeof(count))
              : err;
    if (err == MSV_OK && on_message != NULL)
        on_message(ctx, &in);
    return err;
}

/* Adds handle to the group's waiting requests; MSV_ERR_TOO_BIG when MSV_JOIN_PENDING_MAX wait. */
static msv_err pending_add(struct msv_client *c, const uint8_t gid[16], const char *handle)
{
    char key[64], *lines = NULL;
    uint8_t *v = NULL;
    size_t len = 0, n = 0;
    msv_err err;

    group_key("join-pending", gid, key);
    err = msv_client_db_get(c->db, key, &v, &len);
    if (err == MSV_ERR_NOT_FOUND)
        err = MSV_OK;
    if (err == MSV_OK && (lines = calloc(1, len + strlen(handle) + 2)) == NULL)
        err = MSV_ERR_NOMEM;
    if (err == MSV_OK && len > 0)
        memcpy(lines, v, len);
    for (size_t i = 0; err == MSV_OK && i < len; i++)
        n += lines[i] == '\n';
    if (err == MSV_OK && !in_lines(lines, handle)) {
        if (n >= MSV_JOIN_PENDING_MAX)
            err = MSV_ERR_TOO_BIG;
        else {
            memcpy(lines + len, handle, strlen(handle));
            lines[len + strlen(handle)] = '\n';
            err = msv_client_db_set(c->db, key, lines, len + strlen(handle) + 1);
        }
    }
    free(lines);
    free(v);
    return err;
}

/* Takes handle off the group's waiting requests; MSV_ERR_NOT_FOUND if it did not wait. */
static msv_err pending_drop(struct msv_client *c, const uint8_t gid[16], const char *handle)
{
    char key[64], *lines = NULL;
    uint8_t *v = NULL;
    size_t len = 0, k = 0, n = strlen(handle);
    msv_err err;

    group_key("join-pending", gid, key);
    err = msv_client_db_get(c->db, key, &v, &len);
    if (err == MSV_OK && (lines = calloc(1, len + 1)) == NULL)
        err = MSV_ERR_NOMEM;
    for (size_t at = 0; err == MSV_OK && at < len;) {
        const uint8_t *nl = memchr(v + at, '\n', len - at);
        size_t line = nl ? (size_t)(nl - (v + at)) + 1 : len - at;

        if (!(line == n + 1 && memcmp(v + at, handle, n) == 0)) {
            memcpy(lines + k, v + at, line);
            k += line;
        }
        at += line;
    }
    if (err == MSV_OK && k == len)
        err = MSV_ERR_NOT_FOUND;
    if (err == MSV_OK)
        err = k == 0 ? msv_client_db_unset(c->db, key) : msv_client_db_set(c->db, key, lines, k);
    free(lines);
    free(v);
    return err;
}

/* The group's members include handle. */
static int is_member(const struct msv_group_rec *g, const char *handle)
{
    return in_lines(g->members, handle);
}

/* Adds handle to the group with a signed change. */
static msv_err add_member(struct msv_client *c, const uint8_t gid[16], const char *handle)
{
    char which[40];
    const char *add[1] = {handle};

    msv_client_group_conversation(gid, which);
    return msv_client_group_change(c, which, NULL, add, 1, NULL, 0);
}

/*
 * The link l a request's proof verified under, held to the group context of the group's MLS
 * group when it names one: on there, with the same version and secret (*valid cleared
 * otherwise), its approval setting the context's.
 */
static msv_err context_link(struct msv_client *c, const uint8_t gid[16], const struct link *l,
                            int *valid, int *approval)
{
    struct client_group_ctx g;
    uint8_t hash[32];
    msv_err err = client_mls_group_ctx(c, gid, &g);

    if (err == MSV_ERR_PARSE) { /* no member takes such a context: no link it names */
        *valid = 0;
        return MSV_OK;
    }
    if (err != MSV_OK || !g.present)
        return err;
    client_group_link_hash(gid, l->secret, hash);
    if (!(g.link_flags & LINK_ON) || g.link_version != l->version ||
        sodium_memcmp(hash, g.link_hash, 32) != 0)
        *valid = 0;
    *approval = (g.link_flags & LINK_APPROVAL) != 0;
    client_group_ctx_clear(&g);
    return MSV_OK;
}

/*
 * A request from sender: only for an accepted group of which this account is
 * an admin, with links on and a proof that verifies under their secret; the
 * sender, whom the envelope authenticates, is the one the proof names. With
 * approval off it is granted at once (a signed add), else it waits.
 */
static msv_err take_request(struct msv_client *c, const char *sender, const struct msv_payload *p,
                            void (*on_message)(void *, const struct msv_incoming *), void *ctx)
{
    struct msv_group_rec g = {0};
    struct link l = {0};
    uint8_t want[MSV_JOIN_KEY_LEN];
    char conversation[40], notice[MSV_HANDLE_MAX + MSV_GROUP_NAME_MAX + 160];
    struct msv_incoming in = {.kind = MSV_INCOMING_JOIN_REQUEST,
                              .from = sender,
                              .conversation = conversation,
                              .notice = notice};
    msv_err err = msv_client_db_group_get(c->db, p->group_id, NULL, &g);
    int valid = 0, approval = 0;

    if (err == MSV_OK && g.accepted && is_admin(c, p->group_id, c->handle) &&
        (err = link_load(c, p->group_id, &l)) == MSV_OK && (l.flags & LINK_ON)) {
        join_proof(l.secret, p->group_id, sender, want);
        valid = sodium_memcmp(want, p->join_proof, MSV_JOIN_KEY_LEN) == 0;
        approval = (l.flags & LINK_APPROVAL) != 0;
    }
    /* a group on MLS: the link its context names, which every member of the epoch holds alike
     * (an admin's device holding a link another admin changed since refuses its requests) */
    if (err == MSV_OK && valid)
        err = context_link(c, p->group_id, &l, &valid, &approval);
    sodium_memzero(&l, sizeof(l));
    sodium_memzero(want, sizeof(want));
    if (err == MSV_ERR_NOT_FOUND || (err == MSV_OK && !valid))
        err = refuse_request(c, on_message, ctx);
    else if (err == MSV_OK && !is_member(&g, sender)) { /* else an admin added them first */
        /* one taken out of the group by another since waits for an admin all the same: the
         * link it was given would otherwise bring it straight back */
        approval = approval || client_group_was_removed(c, p->group_id, sender);
        msv_client_group_conversation(p->group_id, conversation);
        err = approval ? pending_add(c, p->group_id, sender) : add_member(c, p->group_id, sender);
        in.status = err == MSV_OK ? (approval ? "pending" : "added") : "full";
        if (err == MSV_OK && approval)
            snprintf(notice, sizeof(notice),
                     "%s asks to join the group %s (missive groups approve|deny %s %s)", sender,
                     g.name, conversation, sender);
        else if (err == MSV_OK)
            snprintf(notice, sizeof(notice), "%s joined the group %s by its link", sender, g.name);
        else
            snprintf(notice, sizeof(notice),
                     "a request to join the group %s was dropped: the group or its %d waiting "
                     "requests are full",
                     g.name, MSV_JOIN_PENDING_MAX);
        if (err == MSV_ERR_TOO_BIG)
            err = MSV_OK; /* told, and not asked again */
        if (err == MSV_OK && on_message != NULL)
            on_message(ctx, &in);
    }
    msv_group_clear(&g);
    return err;
}

msv_err client_take_join(struct msv_client *c, const char *sender, const struct msv_payload *p,
                         void (*on_message)(void *, const struct msv_incoming *), void *ctx)
{
    if (p->join_link_version != 0)
        return take_link(c, sender, p);
    if (strcmp(sender, c->handle) == 0)
        return MSV_OK; /* the copy of this account's own request */
    return take_request(c, sender, p, on_message, ctx);
}

#define JOIN_ASKED_MS (30LL * 24 * 3600 * 1000) /* how long an ask waits for its group */

#define INVITES_SAID "invites-said:" /* + handle: when the last dropped invitation was told */
#define INVITES_SAY_MS (24LL * 3600 * 1000)
#define INVITES_DROPPED "invitations-dropped"

uint64_t msv_client_invitations_dropped(struct msv_client *c)
{
    return client_counter(c, INVITES_DROPPED);
}

/*
 * Tells, at most once a day for each key (an inviter's handle, or "" for invitations dropped
 * because the room in all was taken), that invitations were dropped: on stderr
 * (on_mls_notice), and, for an inviter's, as a notice in the conversation with it. The records of
 * what was told over a day ago are dropped then, so that they stay as few as the inviters told
 * within the day.
 */
static msv_err invitations_told(struct msv_client *c, const char *inviter, const char *text)
{
    char key[sizeof(INVITES_SAID) + MSV_HANDLE_MAX + 1];
    uint8_t *v = NULL, at[8];
    size_t len = 0;
    int64_t now = msv_wall_ms(), said = 0;
    msv_err err;

    snprintf(key, sizeof(key), INVITES_SAID "%s", inviter);
    if (msv_client_db_get(c->db, key, &v, &len) == MSV_OK && len == 8)
        said = (int64_t)msv_get_u64be(v);
    free(v);
    if (said > 0 && said <= now && now - said < INVITES_SAY_MS)
        return MSV_OK;
    err = msv_client_db_unset_prefix_outside(c->db, INVITES_SAID, (uint64_t)(now - INVITES_SAY_MS),
                                             (uint64_t)now);
    msv_put_u64be(at, (uint64_t)now);
    if (err == MSV_OK)
        err = msv_client_db_set(c->db, key, at, sizeof(at));
    if (c->on_mls_notice != NULL)
        c->on_mls_notice(c->ctx, inviter[0] ? inviter : "groups", text);
    if (err != MSV_OK || inviter[0] == '\0')
        return err;
    return client_notice_keep(c, inviter, text);
}

msv_err client_invitations_forget(struct msv_client *c, const char *inviter)
{
    uint8_t(*ids)[16] = NULL;
    size_t n = 0;
    /* under the session lock, as a receive makes an invitation: none made meanwhile is missed */
    msv_err err = client_sessions_hold(c);

    if (err != MSV_OK)
        return err;
    err = msv_client_db_invitations_by(c->db, inviter, &ids, &n);
    for (size_t i = 0; err == MSV_OK && i < n; i++) {
        char conversation[40];
        int dropped = 0;

        /* the record first: an invitation accepted meanwhile is kept, with its messages */
        err = client_group_forget(c, ids[i], &dropped);
        msv_client_group_conversation(ids[i], conversation);
        if (err == MSV_OK && dropped)
            err = client_delete_conversation(c, conversation);
    }
    free(ids);
    client_sessions_release(c);
    return err;
}

msv_err client_invitation_check(struct msv_client *c, const uint8_t gid[16], const char *inviter,
                                int *taken)
{
    size_t from = 0, all = 0, most = c->invites_max > 0 ? c->invites_max : CLIENT_INVITES_MAX;
    char text[600];
    msv_err err;

    *taken = 1;
    /* a group asked for by its link (this account's own groups are no invitations: take_payload
     * asks only for another's) */
    if (client_join_invited_by(c, gid, inviter))
        return MSV_OK;
    err = msv_client_db_invitations(c->db, inviter, &from, &all);
    if (err != MSV_OK || (from < CLIENT_INVITES_FROM_ONE && all < most))
        return err;
    *taken = 0;
    (void)client_counter_bump(c, INVITES_DROPPED);
    if (from >= CLIENT_INVITES_FROM_ONE) {
        snprintf(text, sizeof(text),
                 "a group invitation from %s was dropped: %zu of theirs wait to be accepted "
                 "already (at most %d); accept them (missive groups), or block %s",
                 inviter, from, CLIENT_INVITES_FROM_ONE, inviter);
        return invitations_told(c, inviter, text);
    }
    /* all the room taken (by many inviters): told once a day in all, naming none of them */
    snprintf(text, sizeof(text),
             "group invitations are being dropped: %zu wait to be accepted already; accept "
             "them (missive groups), or block who sends them",
             all);
    return invitations_told(c, "", text);
}

int client_join_invited_by(struct msv_client *c, const uint8_t gid[16], const char *author)
{
    char key[64];
    uint8_t *v = NULL;
    size_t len = 0;
    int by = 0;

    group_key("join-asked", gid, key);
    if (msv_client_db_get(c->db, key, &v, &len) != MSV_OK)
        return 0;
    if (len == 1 && v[0] == '1') {
        by = 1; /* asked before the link's admins were kept */
    } else if (len >= 8 && msv_wall_ms() - (int64_t)msv_get_u64be(v) < JOIN_ASKED_MS) {
        by = client_lines_name(v + 8, len - 8, author);
    }
    free(v);
    return by;
}

msv_err client_join_arrived(struct msv_client *c, const uint8_t gid[16], const char *author)
{
    struct msv_group_rec g = {0};
    char key[64];
    msv_err err = MSV_OK;

    /* only from an admin the link named: a group started under its id by another who holds the
     * link is not the one this account asked to join */
    if (!client_join_invited_by(c, gid, author))
        return MSV_OK;
    group_key("join-asked", gid, key);
    if (err == MSV_OK)
        err = msv_client_db_group_get(c->db, gid, NULL, &g);
    if (err == MSV_OK && is_member(&g, c->handle)) {
        err = g.accepted ? MSV_OK : msv_client_db_group_accept(c->db, gid);
        if (err == MSV_OK)
            err = msv_client_db_unset(c->db, key);
    }
    msv_group_clear(&g);
    return err == MSV_ERR_NOT_FOUND ? MSV_OK : err;
}

/* ---- the joiner ---------------------------------------------------------------------- */

msv_err msv_client_group_join(struct msv_client *c, const char *uri)
{
    struct msv_invite inv;
    struct msv_group_rec g = {0};
    struct msv_payload p = {.kind = MSV_KIND_GROUP_JOIN, .has_group = true, .has_join_proof = true};
    char key[64];
    uint8_t id[16];
    msv_err err = msv_invite_parse(uri, &inv);

    if (err != MSV_OK)
        return err;
    err = msv_client_db_group_get(c->db, inv.group_id, NULL, &g);
    if (err == MSV_OK && g.accepted && is_member(&g, c->handle))
        err = MSV_ERR_EXISTS;
    else if (err == MSV_OK || err == MSV_ERR_NOT_FOUND)
        err = MSV_OK;
    memcpy(p.group_id, inv.group_id, 16);
    join_proof(inv.secret, inv.group_id, c->handle, p.join_proof);
    group_key("join-asked", inv.group_id, key);
    /* asked before it is sent: the group that answers, from an admin the link names, is then
     * taken as this account's */
    if (err == MSV_OK) {
        uint8_t asked[8 + MSV_INVITE_ADMINS_MAX * (MSV_HANDLE_MAX + 1)];
        size_t len = 8;

        msv_put_u64be(asked, (uint64_t)msv_wall_ms());
        for (size_t i = 0; i < inv.n_admins; i++) {
            size_t n = strlen(inv.admins[i]);

            memcpy(asked + len, inv.admins[i], n);
            len += n;
            asked[len++] = '\n';
        }
        err = msv_client_db_set(c->db, key, asked, len);
    }
    if (err == MSV_OK)
        err = client_send_payload(c, (const char *const *)inv.admins, inv.n_admins, &p, NULL, NULL,
                                  NULL, 0, NULL, id);
    msv_group_clear(&g);
    msv_invite_clear(&inv);
    return err;
}

/* ---- an admin's decisions ------------------------------------------------------------ */

msv_err msv_client_group_requests(struct msv_client *c, const char *which, char **handles,
                                  uint64_t *refused)
{
    struct msv_group_rec g = {0};
    char key[64];
    uint8_t *v = NULL, *count = NULL;
    size_t len = 0, k = 0, count_len = 0;
    char *out = NULL;
    msv_err err = client_joined_group(c, which, &g);

    if (err == MSV_OK) {
        group_key("join-pending", g.group_id, key);
        err = msv_client_db_get(c->db, key, &v, &len);
        err = err == MSV_ERR_NOT_FOUND ? MSV_OK : err;
    }
    if (err == MSV_OK && (out = calloc(1, len + 1)) == NULL)
        err = MSV_ERR_NOMEM;
    /* those an admin added meanwhile wait no longer */
    for (size_t at = 0; err == MSV_OK && at < len;) {
        const uint8_t *nl = memchr(v + at, '\n', len - at);
        size_t line = nl ? (size_t)(nl - (v + at)) + 1 : len - at;
        char h[MSV_HANDLE_MAX + 2] = "";

        if (line <= MSV_HANDLE_MAX + 1)
            memcpy(h, v + at, line - 1);
        if (h[0] != '\0' && !is_member(&g, h)) {
            memcpy(out + k, v + at, line);
            k += line;
        }
        at += line;
    }
    if (err == MSV_OK && msv_client_db_get(c->db, "join-refused", &count, &count_len) == MSV_OK &&
        count_len == 8)
        *refused = msv_get_u64be(count);
    else if (err == MSV_OK)
        *refused = 0;
    if (err == MSV_OK)
        *handles = out;
    else
        free(out);
    free(count);
    free(v);
    msv_group_clear(&g);
    return err;
}

msv_err msv_client_group_decide(struct msv_client *c, const char *which, const char *handle,
                                int approve)
{
    struct msv_group_rec g = {0};
    msv_err err = client_joined_group(c, which, &g);

    if (err == MSV_OK && !is_admin(c, g.group_id, c->handle))
        err = MSV_ERR_AUTH;
    if (err == MSV_OK && approve && is_member(&g, handle))
        err = pending_drop(c, g.group_id, handle) == MSV_OK ? MSV_ERR_EXISTS : MSV_ERR_NOT_FOUND;
    else if (err == MSV_OK && approve) {
        char *list = NULL;
        uint64_t refused = 0;

        /* only a request that waits: an admin approves no one the link did not bring */
        err = msv_client_group_requests(c, which, &list, &refused);
        if (err == MSV_OK && !in_lines(list, handle))
            err = MSV_ERR_NOT_FOUND;
        free(list);
        if (err == MSV_OK)
            err = add_member(c, g.group_id, handle);
        if (err == MSV_OK)
            err = pending_drop(c, g.group_id, handle);
    } else if (err == MSV_OK) {
        err = pending_drop(c, g.group_id, handle);
    }
    msv_group_clear(&g);
    return err;
}
