/*
 * Groups: creating, changing and accepting them, and announcing each change to the members.
 */
#include "client/internal.h"
#include "client/sessions.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <sodium.h>

#include "client/safety.h"
#include "client/transparency.h"
#include "missive/payload.h"
#include "missive/sealed.h"
#include "missive/util.h"
#include "util/endian.h"
#include "util/buf.h"
#include "util/privdir.h"

/* Splits a member list (one handle per line) in place into members[]. */
size_t client_split_members(char *list, char **members)
{
    size_t n = 0;

    for (char *line = strtok_r(list, "\n", &list); line != NULL && n < MEMBERS_MAX;
         line = strtok_r(NULL, "\n", &list))
        members[n++] = line;
    return n;
}

msv_err client_members_of(const char *list, char ***members, size_t *n)
{
    size_t len = strlen(list) + 1;
    char **block = malloc(MEMBERS_MAX * sizeof(char *) + len);

    if (block == NULL)
        return MSV_ERR_NOMEM;
    memcpy(block + MEMBERS_MAX, list, len);
    *n = client_split_members((char *)(block + MEMBERS_MAX), block);
    *members = block;
    return MSV_OK;
}

msv_err client_join_members(char *const *members, size_t n, char **out)
{
    struct msv_buf b;
    uint8_t *bytes = NULL;
    size_t len = 0;
    msv_err err;

    msv_buf_init(&b, MEMBERS_MAX * (MSV_HANDLE_MAX + 1) + 1);
    for (size_t i = 0; i < n; i++) {
        msv_buf_put(&b, members[i], strlen(members[i]));
        msv_buf_put_u8(&b, '\n');
    }
    msv_buf_put_u8(&b, 0);
    err = msv_buf_finish(&b, &bytes, &len);
    if (err == MSV_OK)
        *out = (char *)bytes;
    return err;
}

void msv_client_group_conversation(const uint8_t group_id[16], char out[40])
{
    char hex[33];

    if (msv_hex_encode(group_id, 16, hex, sizeof(hex)) != MSV_OK)
        hex[0] = '\0';
    snprintf(out, 40, "group:%s", hex);
}

msv_err msv_client_group_find(struct msv_client *c, const char *which, struct msv_group_rec *g)
{
    uint8_t id[16];
    size_t len = 0;

    if (strncmp(which, "group:", 6) == 0) {
        if (msv_hex_decode(which + 6, id, sizeof(id), &len) != MSV_OK || len != 16)
            return MSV_ERR_NOT_FOUND;
        return msv_client_db_group_get(c->db, id, NULL, g);
    }
    return msv_client_db_group_get(c->db, NULL, which, g);
}

msv_err msv_client_group_accept(struct msv_client *c, const char *which)
{
    struct msv_group_rec g = {0};
    msv_err err =
        strncmp(which, "group:", 6) == 0 ? msv_client_group_find(c, which, &g) : MSV_ERR_NOT_FOUND;

    if (err == MSV_OK)
        err = msv_client_db_group_accept(c->db, g.group_id);
    msv_group_clear(&g);
    return err;
}

/* A group this account is in, by name or id; an invitation is MSV_ERR_NOT_FOUND until accepted. */
static msv_err joined_group(struct msv_client *c, const char *which, struct msv_group_rec *g)
{
    msv_err err = msv_client_group_find(c, which, g);

    if (err == MSV_OK && !g->accepted) {
        msv_group_clear(g);
        err = MSV_ERR_NOT_FOUND;
    }
    return err;
}

msv_err client_joined_group(struct msv_client *c, const char *which, struct msv_group_rec *g)
{
    return joined_group(c, which, g);
}

/* MSV_OK if no accepted group is named name, MSV_ERR_EXISTS if one is: names stay unambiguous. */
static msv_err name_is_free(struct msv_client *c, const char *name)
{
    struct msv_group_rec g = {0};
    msv_err err = msv_client_db_group_get(c->db, NULL, name, &g);

    msv_group_clear(&g);
    if (err == MSV_OK)
        return MSV_ERR_EXISTS;
    return err == MSV_ERR_NOT_FOUND ? MSV_OK : err;
}

/*
 * The signed state of a group (docs/groups.md): its epoch, name, members and
 * admins, encoded as
 *   "MSV-group-state-v1" || group id || u64be epoch || str name
 *   || u32be n || str member... || u32be n || str admin...   (str: u16be length || bytes)
 * and hashed with SHA-256; a change signs
 *   "MSV-group-change-v1" || group id || u64be epoch || previous hash || new hash.
 * Each device keeps the state it holds and the one before it (for the rule on
 * two changes of the same epoch) under the settings "group-state:<hex>" and
 * "group-prev:<hex>".
 */
#define STATE_MAGIC "MSV-group-state-v1"
#define CHANGE_MAGIC "MSV-group-change-v1"
#define CHANGE_MSG_LEN (19 + 16 + 8 + 32 + 32)
#define STATE_MAX (64 + MSV_GROUP_NAME_MAX + 2 * MEMBERS_MAX * (MSV_HANDLE_MAX + 2))
#define GROUP_STATE_MIME "application/x-missive-group-state"

/* The lists hold up to MEMBERS_MAX handles each, on the heap (list_add() makes them). */
struct group_state {
    uint64_t epoch;
    char *name;
    char **members;
    size_t n_members;
    char **admins;
    size_t n_admins;
    uint8_t hash[32];
};

static void state_clear(struct group_state *s)
{
    free(s->name);
    for (size_t i = 0; i < s->n_members; i++)
        free(s->members[i]);
    for (size_t i = 0; i < s->n_admins; i++)
        free(s->admins[i]);
    free(s->members);
    free(s->admins);
    memset(s, 0, sizeof(*s));
}

static int listed(char *const *list, size_t n, const char *handle)
{
    for (size_t i = 0; i < n; i++)
        if (strcmp(list[i], handle) == 0)
            return 1;
    return 0;
}

/* Adds a copy of handle to a list unless it is there; MSV_ERR_TOO_BIG past MEMBERS_MAX. */
static msv_err list_add(char ***listp, size_t *n, const char *handle, size_t len)
{
    char *copy, **list;

    /* handle may be bytes read from a stored state, not a C string: only its len bytes count */
    if (memchr(handle, '\0', len) != NULL)
        return MSV_ERR_PARSE;
    if (*listp == NULL && (*listp = calloc(MEMBERS_MAX, sizeof(char *))) == NULL)
        return MSV_ERR_NOMEM;
    list = *listp;
    for (size_t i = 0; i < *n; i++)
        if (strlen(list[i]) == len && memcmp(list[i], handle, len) == 0)
            return MSV_OK;
    if (*n >= MEMBERS_MAX)
        return MSV_ERR_TOO_BIG;
    copy = strndup(handle, len);
    if (copy == NULL)
        return MSV_ERR_NOMEM;
    list[(*n)++] = copy;
    return MSV_OK;
}

static void list_drop(char **list, size_t *n, const char *handle)
{
    for (size_t i = 0; i < *n; i++) {
        if (strcmp(list[i], handle) == 0) {
            free(list[i]);
            memmove(list + i, list + i + 1, (*n - i - 1) * sizeof(*list));
            (*n)--;
            return;
        }
    }
}

static void put_str(struct msv_buf *b, const char *s)
{
    size_t n = strlen(s);

    msv_buf_put_u16be(b, (uint16_t)(n > UINT16_MAX ? UINT16_MAX : n));
    msv_buf_put(b, s, n > UINT16_MAX ? UINT16_MAX : n);
}

static msv_err state_encode(const uint8_t gid[16], const struct group_state *s, uint8_t **out,
                            size_t *len)
{
    struct msv_buf b;
    uint8_t epoch[8];

    msv_put_u64be(epoch, s->epoch);
    msv_buf_init(&b, STATE_MAX);
    msv_buf_put(&b, STATE_MAGIC, strlen(STATE_MAGIC));
    msv_buf_put(&b, gid, 16);
    msv_buf_put(&b, epoch, 8);
    put_str(&b, s->name);
    msv_buf_put_u32be(&b, (uint32_t)s->n_members);
    for (size_t i = 0; i < s->n_members; i++)
        put_str(&b, s->members[i]);
    msv_buf_put_u32be(&b, (uint32_t)s->n_admins);
    for (size_t i = 0; i < s->n_admins; i++)
        put_str(&b, s->admins[i]);
    return msv_buf_finish(&b, out, len);
}

/* Sets s->hash from the state's encoding. */
static msv_err state_hash(const uint8_t gid[16], struct group_state *s)
{
    uint8_t *bytes = NULL;
    size_t len = 0;
    msv_err err = state_encode(gid, s, &bytes, &len);

    if (err == MSV_OK)
        crypto_hash_sha256(s->hash, bytes, len);
    free(bytes);
    return err;
}

static msv_err read_str(struct msv_reader *r, char ***list, size_t *n)
{
    const uint8_t *p = NULL;
    uint16_t len = 0;
    msv_err err = msv_reader_u16be(r, &len);

    if (err == MSV_OK)
        err = msv_reader_bytes(r, len, &p);
    if (err == MSV_OK && (len == 0 || memchr(p, '\0', len) != NULL))
        err = MSV_ERR_PARSE;
    return err == MSV_OK ? list_add(list, n, (const char *)p, len) : err;
}

static msv_err read_list(struct msv_reader *r, char ***list, size_t *n)
{
    uint32_t count = 0;
    msv_err err = msv_reader_u32be(r, &count);

    if (err == MSV_OK && count > MEMBERS_MAX)
        err = MSV_ERR_TOO_BIG;
    for (uint32_t i = 0; err == MSV_OK && i < count; i++)
        err = read_str(r, list, n);
    return err;
}

/* A state as state_encode() wrote it, for group gid; clear s with state_clear(). */
static msv_err state_decode(const uint8_t gid[16], const uint8_t *in, size_t len,
                            struct group_state *s)
{
    struct msv_reader r;
    const uint8_t *p = NULL;
    char **name = NULL;
    size_t one = 0;
    msv_err err;

    memset(s, 0, sizeof(*s));
    msv_reader_init(&r, in, len);
    err = msv_reader_bytes(&r, strlen(STATE_MAGIC) + 16 + 8, &p);
    if (err == MSV_OK && (memcmp(p, STATE_MAGIC, strlen(STATE_MAGIC)) != 0 ||
                          memcmp(p + strlen(STATE_MAGIC), gid, 16) != 0))
        err = MSV_ERR_PARSE;
    if (err == MSV_OK) {
        s->epoch = msv_get_u64be(p + strlen(STATE_MAGIC) + 16);
        err = read_str(&r, &name, &one);
        s->name = one ? name[0] : NULL;
        free(name);
    }
    if (err == MSV_OK)
        err = read_list(&r, &s->members, &s->n_members);
    if (err == MSV_OK)
        err = read_list(&r, &s->admins, &s->n_admins);
    if (err == MSV_OK && msv_reader_left(&r) != 0)
        err = MSV_ERR_PARSE;
    if (err == MSV_OK)
        crypto_hash_sha256(s->hash, in, len);
    if (err != MSV_OK)
        state_clear(s);
    return err;
}

static void state_key(const char *what, const uint8_t gid[16], char key[64])
{
    char hex[33];

    if (msv_hex_encode(gid, 16, hex, sizeof(hex)) != MSV_OK)
        hex[0] = '\0';
    snprintf(key, 64, "%s:%s", what, hex);
}

/* A state_key: the group's state came by a copy (client_take_group_copy), maybe behind; u64be
 * wall ms it came. */
#define COPIED "group-copied"
/* A copy's week: how long a copied mark lasts, and how long a copy is owed (docs/groups.md) */
#define COPY_WEEK_MS (7LL * 24 * 3600 * 1000)

/* Whether the mark key (COPIED) was made less than COPY_WEEK_MS ago. */
static int copied_lately(struct msv_client *c, const char *key)
{
    uint8_t *v = NULL;
    size_t len = 0;
    int64_t now = msv_wall_ms(), at;
    msv_err err = msv_client_db_get(c->db, key, &v, &len);

    at = err == MSV_OK && len == 8 ? (int64_t)msv_get_u64be(v) : 0;
    free(v);
    return at > 0 && at <= now && now - at < COPY_WEEK_MS;
}

/* The state this device holds ("group-state") or the one before it ("group-prev"). */
static msv_err state_load(struct msv_client *c, const char *what, const uint8_t gid[16],
                          struct group_state *s)
{
    char key[64];
    uint8_t *v = NULL;
    size_t len = 0;
    msv_err err;

    state_key(what, gid, key);
    err = msv_client_db_get(c->db, key, &v, &len);
    if (err == MSV_OK)
        err = state_decode(gid, v, len, s);
    free(v);
    return err;
}

static msv_err state_save(struct msv_client *c, const char *what, const uint8_t gid[16],
                          const struct group_state *s)
{
    char key[64];
    uint8_t *v = NULL;
    size_t len = 0;
    msv_err err;

    state_key(what, gid, key);
    if (s == NULL)
        return msv_client_db_unset(c->db, key);
    err = state_encode(gid, s, &v, &len);
    if (err == MSV_OK)
        err = msv_client_db_set(c->db, key, v, len);
    free(v);
    return err;
}

/*
 * Holds now (prev before it, or none): the signed state, then the group's name and members, in
 * one transaction (a crash between them would leave a state whose record, or the one before,
 * is another's).
 */
static msv_err state_apply(struct msv_client *c, const uint8_t gid[16],
                           const struct group_state *now, const struct group_state *prev,
                           int accepted)
{
    char *list = NULL;
    msv_err err = client_join_members(now->members, now->n_members, &list);

    if (err == MSV_OK && (err = msv_client_db_begin(c->db)) == MSV_OK) {
        err = state_save(c, "group-prev", gid, prev);
        if (err == MSV_OK)
            err = state_save(c, "group-state", gid, now);
        if (err == MSV_OK)
            err = msv_client_db_group_put(c->db, gid, now->name, list, accepted, msv_wall_ms());
        err = msv_client_db_end(c->db, err);
    }
    free(list);
    return err;
}

msv_err client_group_forget(struct msv_client *c, const uint8_t gid[16], int *dropped)
{
    static const char *const what[] = {"group-state", "group-prev", "mls-group"};
    char key[64];
    msv_err err = msv_client_db_begin(c->db);

    *dropped = 0;
    if (err != MSV_OK)
        return err;
    err = msv_client_db_invitation_drop(c->db, gid);
    /* accepted meanwhile, or gone: nothing of it is touched */
    *dropped = err == MSV_OK;
    if (err == MSV_ERR_NOT_FOUND)
        err = MSV_OK;
    for (size_t i = 0; err == MSV_OK && *dropped && i < sizeof(what) / sizeof(what[0]); i++) {
        state_key(what[i], gid, key);
        err = msv_client_db_unset(c->db, key);
    }
    err = msv_client_db_end(c->db, err);
    if (err != MSV_OK)
        *dropped = 0;
    return err;
}

/* The state a group had before signed changes, from its record: the members, this account admin. */
static msv_err state_of_record(struct msv_client *c, const struct msv_group_rec *g,
                               struct group_state *s)
{
    char **members = NULL;
    size_t n = 0;
    msv_err err = client_members_of(g->members, &members, &n);

    memset(s, 0, sizeof(*s));
    s->name = strdup(g->name);
    if (err == MSV_OK && s->name == NULL)
        err = MSV_ERR_NOMEM;
    for (size_t i = 0; err == MSV_OK && i < n; i++)
        err = list_add(&s->members, &s->n_members, members[i], strlen(members[i]));
    if (err == MSV_OK)
        err = list_add(&s->admins, &s->n_admins, c->handle, strlen(c->handle));
    if (err == MSV_OK)
        err = state_hash(g->group_id, s);
    free(members);
    if (err != MSV_OK)
        state_clear(s);
    return err;
}

static size_t change_message(const uint8_t gid[16], uint64_t epoch, const uint8_t prev[32],
                             const uint8_t hash[32], uint8_t out[CHANGE_MSG_LEN])
{
    memcpy(out, CHANGE_MAGIC, 19);
    memcpy(out + 19, gid, 16);
    msv_put_u64be(out + 35, epoch);
    memcpy(out + 43, prev, 32);
    memcpy(out + 75, hash, 32);
    return CHANGE_MSG_LEN;
}

/* Whether now is then with only author gone (from the members, and the admins if there). */
static int is_leaving(const struct group_state *then, const struct group_state *now,
                      const char *author)
{
    size_t admin = listed(then->admins, then->n_admins, author);

    if (strcmp(then->name, now->name) != 0 || listed(now->members, now->n_members, author) ||
        !listed(then->members, then->n_members, author) || now->n_members + 1 != then->n_members ||
        now->n_admins + admin != then->n_admins)
        return 0;
    for (size_t i = 0; i < now->n_members; i++)
        if (!listed(then->members, then->n_members, now->members[i]))
            return 0;
    for (size_t i = 0; i < now->n_admins; i++)
        if (!listed(then->admins, then->n_admins, now->admins[i]))
            return 0;
    return 1;
}

/* Whether list b (nb) is list a (na) in its order with handle left out (if there). */
static int same_but(char *const *a, size_t na, char *const *b, size_t nb, const char *handle)
{
    size_t j = 0;

    for (size_t i = 0; i < na; i++) {
        if (strcmp(a[i], handle) == 0)
            continue;
        if (j == nb || strcmp(a[i], b[j]) != 0)
            return 0;
        j++;
    }
    return j == nb;
}

/*
 * Whether now, a winner of its epoch over held (both after prev), is author's own leave that
 * undoes nothing of held but what held added: now is prev without author, in prev's order (so
 * that its hash is not the author's to choose), and held took nobody out of prev's members or
 * admins but author. Such a leave is judged on prev alone; any other winner on held too.
 */
static int leave_alone(const struct group_state *prev, const struct group_state *held,
                       const struct group_state *now, const char *author)
{
    if (!is_leaving(prev, now, author) ||
        !same_but(prev->members, prev->n_members, now->members, now->n_members, author) ||
        !same_but(prev->admins, prev->n_admins, now->admins, now->n_admins, author))
        return 0;
    for (size_t i = 0; i < prev->n_members; i++)
        if (strcmp(prev->members[i], author) != 0 &&
            !listed(held->members, held->n_members, prev->members[i]))
            return 0;
    for (size_t i = 0; i < prev->n_admins; i++)
        if (strcmp(prev->admins[i], author) != 0 &&
            !listed(held->admins, held->n_admins, prev->admins[i]))
            return 0;
    return 1;
}

/* "VERB A, B" for the handles of a that other lacks, after "; " if something came before. */
static void describe_list(struct msv_buf *b, const char *verb, char *const *a, size_t na,
                          char *const *other, size_t no, int *any)
{
    int first = 1;

    for (size_t i = 0; i < na; i++) {
        if (listed(other, no, a[i]))
            continue;
        if (first) {
            msv_buf_put(b, *any ? "; " : " ", *any ? 2 : 1);
            msv_buf_put(b, verb, strlen(verb));
        } else {
            msv_buf_put(b, ", ", 2);
        }
        msv_buf_put(b, a[i], strlen(a[i]));
        first = 0;
        *any = 1;
    }
}

/*
 * What a change from then (NULL: the creation, or a state this device did not
 * hold) to now does, for people: "AUTHOR created|changed the group", "AUTHOR left", or "AUTHOR
 * changed|tried to change the group: added X, Y; removed Z; promoted W; demoted V; renamed it", and
 * then, for an applied change, the group's name and members; refused: why instead.
 */
static msv_err describe(const char *author, const struct group_state *then,
                        const struct group_state *now, const char *refused, char **text)
{
    static const struct group_state none = {0};
    const struct group_state *t = then ? then : &none;
    struct msv_buf b;
    uint8_t *out = NULL;
    size_t len = 0;
    int any = 0;
    const char *how = refused ? " tried to change the group:" : " changed the group:";
    msv_err err;

    msv_buf_init(&b, 2 * STATE_MAX + 512);
    msv_buf_put(&b, author, strlen(author));
    if (then == NULL && refused == NULL) {
        /* a group this device held no state of: the change is all it knows */
        how = now->epoch == 1 ? " created the group" : " changed the group";
        msv_buf_put(&b, how, strlen(how));
    } else if (then != NULL && is_leaving(then, now, author)) {
        msv_buf_put(&b, refused ? " tried to leave" : " left", refused ? 15 : 5);
    } else {
        msv_buf_put(&b, how, strlen(how));
        describe_list(&b, "added ", now->members, now->n_members, t->members, t->n_members, &any);
        describe_list(&b, "removed ", t->members, t->n_members, now->members, now->n_members, &any);
        describe_list(&b, "promoted ", now->admins, now->n_admins, t->admins, t->n_admins, &any);
        describe_list(&b, "demoted ", t->admins, t->n_admins, now->admins, now->n_admins, &any);
        if (then != NULL && strcmp(then->name, now->name) != 0) {
            msv_buf_put(&b, any ? "; renamed it" : " renamed it", any ? 12 : 11);
            any = 1;
        }
        if (!any)
            msv_buf_put(&b, " nothing", 8);
    }
    if (refused != NULL) {
        msv_buf_put(&b, ": refused, ", 11);
        msv_buf_put(&b, refused, strlen(refused));
    } else {
        msv_buf_put(&b, "; group \"", 9);
        msv_buf_put(&b, now->name, strlen(now->name));
        msv_buf_put(&b, "\": members", 10);
        for (size_t i = 0; i < now->n_members; i++) {
            msv_buf_put(&b, i ? ", " : " ", i ? 2 : 1);
            msv_buf_put(&b, now->members[i], strlen(now->members[i]));
        }
    }
    msv_buf_put_u8(&b, 0);
    err = msv_buf_finish(&b, &out, &len);
    if (err == MSV_OK)
        *text = (char *)out;
    return err;
}

/* The handles of a that b lacks, into out (MSV_GROUP_DELTA_MAX at most: MSV_ERR_TOO_BIG). */
static msv_err list_minus(char *const *a, size_t na, char *const *b, size_t nb, char **out,
                          size_t *n)
{
    *n = 0;
    for (size_t i = 0; i < na; i++) {
        if (listed(b, nb, a[i]))
            continue;
        if (*n == MSV_GROUP_DELTA_MAX)
            return MSV_ERR_TOO_BIG;
        out[(*n)++] = a[i];
    }
    return MSV_OK;
}

/*
 * Uploads an encoded group state too long to go inline (docs/groups.md) under a fresh key;
 * ref names it, its uri in uri. The caller wipes ref's key once the payload is sent.
 */
static msv_err state_by_reference(struct msv_client *c, const uint8_t *state, size_t len,
                                  struct msv_attachment_ref *ref, char uri[80])
{
    struct msv_attachment_digest d;
    msv_err err;

    msv_attachment_key_generate(ref->key);
    err = client_upload_blob(c, ref->key, state, len, NULL, &d, uri, 80);
    if (err != MSV_OK)
        return err;
    ref->uri = uri;
    memcpy(ref->sha256, d.sha256, 32);
    memcpy(ref->sha1, d.sha1, 20);
    ref->size = len;
    ref->mime = (char *)GROUP_STATE_MIME;
    return MSV_OK;
}

/*
 * The delta form of the change then -> now into p (docs/groups.md): what
 * changed, and the whole new state (inline, or uploaded as an attachment when
 * longer) for the devices that hold none. delta: MSV_DELTA_LISTS *
 * MSV_GROUP_DELTA_MAX slots; *state (caller frees) holds the inline bytes.
 */
static msv_err change_delta(struct msv_client *c, const uint8_t gid[16],
                            const struct group_state *then, const struct group_state *now,
                            struct msv_payload *p, char **delta, uint8_t **state, char uri[80])
{
    static const struct group_state none = {0};
    const struct group_state *t = then ? then : &none;
    size_t len = 0;
    msv_err err = MSV_OK;

    for (int l = 0; l < MSV_DELTA_LISTS; l++)
        p->group_delta[l] = delta + (size_t)l * MSV_GROUP_DELTA_MAX;
    /* the creation is whole: nobody holds a state to apply it to */
    if (then != NULL) {
        err = list_minus(now->members, now->n_members, t->members, t->n_members,
                         p->group_delta[MSV_DELTA_ADDED], &p->group_delta_count[MSV_DELTA_ADDED]);
        if (err == MSV_OK)
            err = list_minus(t->members, t->n_members, now->members, now->n_members,
                             p->group_delta[MSV_DELTA_REMOVED],
                             &p->group_delta_count[MSV_DELTA_REMOVED]);
        if (err == MSV_OK)
            err = list_minus(now->admins, now->n_admins, t->admins, t->n_admins,
                             p->group_delta[MSV_DELTA_PROMOTED],
                             &p->group_delta_count[MSV_DELTA_PROMOTED]);
        if (err == MSV_OK)
            err = list_minus(t->admins, t->n_admins, now->admins, now->n_admins,
                             p->group_delta[MSV_DELTA_DEMOTED],
                             &p->group_delta_count[MSV_DELTA_DEMOTED]);
    }
    if (err == MSV_ERR_TOO_BIG)
        snprintf(c->why.message, sizeof(c->why.message),
                 "a change adds, removes, promotes or demotes at most %u people of each",
                 MSV_GROUP_DELTA_MAX);
    if (err == MSV_OK)
        err = state_encode(gid, now, state, &len);
    p->has_group_state_hash = true;
    memcpy(p->group_state_hash, now->hash, 32);
    if (err != MSV_OK || len <= MSV_GROUP_STATE_INLINE_MAX) {
        p->group_state = *state;
        p->group_state_len = err == MSV_OK ? len : 0;
        return err;
    }
    err = state_by_reference(c, *state, len, &p->group_state_ref, uri);
    p->has_group_state_ref = err == MSV_OK;
    return err;
}

/*
 * "join-removed:<hex>": the handles taken out of the group by another since they were last
 * in it (a line each; at most JOIN_REMOVED_MAX, the oldest dropped first). A request of theirs
 * by the group's link waits for an admin, whatever its approval setting (invites.c): a member
 * removed would otherwise come straight back with the link it was given.
 */
#define JOIN_REMOVED "join-removed"
#define JOIN_REMOVED_MAX 1024

/* Whether handle was taken out of group gid by another since it was last in it. */
int client_group_was_removed(struct msv_client *c, const uint8_t gid[16], const char *handle)
{
    char key[64];

    state_key(JOIN_REMOVED, gid, key);
    return client_setting_names(c, key, handle);
}

/* Whether the line of len bytes at v names a member of s. */
static int line_listed(const struct group_state *s, const uint8_t *v, size_t len)
{
    char h[MSV_HANDLE_MAX + 1];

    if (len > MSV_HANDLE_MAX)
        return 0;
    memcpy(h, v, len);
    h[len] = '\0';
    return listed(s->members, s->n_members, h);
}

/* After author's change from before to now: those it took out noted, those in now forgotten. */
static msv_err removed_note(struct msv_client *c, const uint8_t gid[16],
                            const struct group_state *before, const struct group_state *now,
                            const char *author)
{
    char key[64];
    uint8_t *v = NULL;
    size_t len = 0, lines = 0, from = 0;
    struct msv_buf out;
    msv_err err;

    state_key(JOIN_REMOVED, gid, key);
    err = msv_client_db_get(c->db, key, &v, &len);
    if (err == MSV_ERR_NOT_FOUND)
        err = MSV_OK;
    if (err != MSV_OK)
        return err;
    /* the old lines of those not back in the group, then the ones it took out */
    msv_buf_init(&out, len + 256);
    for (size_t at = 0; err == MSV_OK && at < len;) {
        const uint8_t *end = memchr(v + at, '\n', len - at);
        size_t line = end != NULL ? (size_t)(end - (v + at)) : len - at;

        if (!line_listed(now, v + at, line)) {
            err = msv_buf_put(&out, v + at, line);
            if (err == MSV_OK)
                err = msv_buf_put(&out, (const uint8_t *)"\n", 1);
        }
        at += line + 1;
    }
    for (size_t i = 0; err == MSV_OK && before != NULL && i < before->n_members; i++) {
        const char *h = before->members[i];

        if (strcmp(h, author) == 0 || listed(now->members, now->n_members, h))
            continue;
        err = msv_buf_put(&out, (const uint8_t *)h, strlen(h));
        if (err == MSV_OK)
            err = msv_buf_put(&out, (const uint8_t *)"\n", 1);
    }
    free(v);
    v = NULL;
    if (err == MSV_OK)
        err = msv_buf_finish(&out, &v, &len);
    msv_buf_clear(&out);
    /* the oldest go past JOIN_REMOVED_MAX */
    for (size_t i = 0; err == MSV_OK && i < len; i++)
        lines += v[i] == '\n';
    for (; err == MSV_OK && lines > JOIN_REMOVED_MAX; lines--)
        from += (size_t)((uint8_t *)memchr(v + from, '\n', len - from) - (v + from)) + 1;
    if (err == MSV_OK)
        err = len > from ? msv_client_db_set(c->db, key, v + from, len - from)
                         : msv_client_db_unset(c->db, key);
    free(v);
    return err == MSV_ERR_NOT_FOUND ? MSV_OK : err;
}

/* Sends what waits in the outbox, if no lock forbids it now (msv_client_connect says why). */
static void flush_outbox(struct msv_client *c)
{
    if (c->conn == NULL) {
        if (msv_client_connect(c) != MSV_OK) {
            msv_conn_close(c->conn);
            c->conn = NULL;
        }
        return;
    }
    c->outbox_deferred = 1;
    client_outbox_later(c);
}

struct change_held {
    const uint8_t *gid;
    const struct group_state *then, *now;
    int written;
};

/* A change's new state, held in the transaction that queues the change (client_send_payload). */
static msv_err change_hold(struct msv_client *c, void *arg)
{
    struct change_held *h = arg;
    msv_err err = state_apply(c, h->gid, h->now, h->then, 1);

    if (err == MSV_OK)
        err = removed_note(c, h->gid, h->then, h->now, c->handle);
    h->written = err == MSV_OK;
    return err;
}

/*
 * Signs now as the change that follows then (NULL: the creation), holds it and
 * sends it to the members of both: removed members hear of it too. The state is held if and
 * only if the change is queued to go, both in one transaction: a failure, or a crash, between
 * the two would leave this device on a state no other member is told of.
 */
static msv_err commit_change(struct msv_client *c, const uint8_t gid[16],
                             const struct group_state *then, struct group_state *now, int behind,
                             uint8_t id[16])
{
    static const uint8_t zero[32];
    const char **targets = calloc(2 * MEMBERS_MAX, sizeof(*targets));
    char **delta = calloc(MSV_DELTA_LISTS * MSV_GROUP_DELTA_MAX, sizeof(*delta));
    struct msv_payload p = {.kind = MSV_KIND_GROUP_CHANGE,
                            .has_group = true,
                            .has_group_signature = true,
                            .group_name = now->name};
    uint8_t msg[CHANGE_MSG_LEN], *state = NULL;
    char conversation[40], *text = NULL, uri[80];
    struct change_held held = {gid, then, now, 0};
    const struct client_outbox_with with = {change_hold, &held, behind};
    size_t t = 0;
    msv_err err = targets && delta ? MSV_OK : MSV_ERR_NOMEM;

    now->epoch = then ? then->epoch + 1 : 1;
    memcpy(p.group_id, gid, 16);
    memcpy(p.group_prev_hash, then ? then->hash : zero, 32);
    p.group_epoch = now->epoch;
    if (err == MSV_OK)
        err = state_hash(gid, now);
    if (err == MSV_OK)
        err = msv_identity_sign(c->id, msg,
                                change_message(gid, now->epoch, p.group_prev_hash, now->hash, msg),
                                p.group_signature, &p.group_signature_len);
    if (err == MSV_OK)
        err = change_delta(c, gid, then, now, &p, delta, &state, uri);
    if (err == MSV_OK)
        err = describe(c->handle, then, now, NULL, &text);
    for (size_t i = 0; err == MSV_OK && then != NULL && i < then->n_members; i++)
        targets[t++] = then->members[i];
    for (size_t i = 0; err == MSV_OK && i < now->n_members; i++)
        if (then == NULL || !listed(then->members, then->n_members, now->members[i]))
            targets[t++] = now->members[i];
    msv_client_group_conversation(gid, conversation);
    if (err == MSV_OK) {
        c->outbox_with = &with;
        err = client_send_payload(c, targets, t, &p, text, conversation, NULL, 0, NULL, id);
        c->outbox_with = NULL;
    }
    if (err == MSV_OK && !held.written)
        err = MSV_ERR_IO; /* not queued (nothing sent), so not held either */
    sodium_memzero(p.group_state_ref.key, sizeof(p.group_state_ref.key));
    free(text);
    free(state);
    free(delta);
    free(targets);
    return err;
}

/*
 * After a change: the group's MLS group made to follow its members (a group of per-device
 * copies moved to MLS if every device can; mlsgroups.c). The change itself stands either way;
 * a failure is told, and for a group on MLS returned, since removed devices keep reading until
 * a commit removes them.
 */
static msv_err mls_follow(struct msv_client *c, const uint8_t gid[16])
{
    int on = client_mls_is_on(c, gid);
    msv_err err = client_mls_sync(c, gid, 1);

    if (err == MSV_OK)
        return MSV_OK;
    if (c->on_mls_notice != NULL) {
        char conversation[40], text[400];

        msv_client_group_conversation(gid, conversation);
        snprintf(text, sizeof(text), "%s (%s%s%.200s)",
                 on ? "the group changed, but its MLS group did not follow: change it again"
                    : "this group stays on per-device encryption: moving it to MLS failed",
                 msv_strerror(err), c->why.message[0] ? ": " : "", c->why.message);
        c->on_mls_notice(c->ctx, conversation, text);
    }
    return on ? err : MSV_OK;
}

msv_err msv_client_group_create(struct msv_client *c, const char *name, const char *const *members,
                                size_t n, uint8_t group_id[16])
{
    struct group_state s = {0};
    uint8_t id[16];
    msv_err err;

    if (n == 0 || n >= MEMBERS_MAX || name == NULL || name[0] == '\0')
        return MSV_ERR_INVALID;
    msv_random_bytes(group_id, 16);
    /* the name checked free and taken under the lock, as a change's state is (edit_group) */
    if ((err = client_sessions_hold(c)) != MSV_OK)
        return err;
    err = name_is_free(c, name);
    if (err == MSV_OK && (s.name = strdup(name)) == NULL)
        err = MSV_ERR_NOMEM;
    if (err == MSV_OK)
        err = list_add(&s.members, &s.n_members, c->handle, strlen(c->handle));
    for (size_t i = 0; err == MSV_OK && i < n; i++)
        err = list_add(&s.members, &s.n_members, members[i], strlen(members[i]));
    if (err == MSV_OK)
        err = list_add(&s.admins, &s.n_admins, c->handle, strlen(c->handle));
    if (err == MSV_OK)
        err = commit_change(c, group_id, NULL, &s, 0, id);
    client_sessions_release(c);
    if (err == MSV_OK)
        err = mls_follow(c, group_id);
    state_clear(&s);
    return err;
}

/* The state this device holds for an accepted group (built from its record if it has none). */
static msv_err held_state(struct msv_client *c, const char *which, struct group_state *s)
{
    struct msv_group_rec g;
    msv_err err = joined_group(c, which, &g);

    if (err != MSV_OK)
        return err;
    err = state_load(c, "group-state", g.group_id, s);
    if (err == MSV_ERR_NOT_FOUND)
        err = state_of_record(c, &g, s);
    msv_group_clear(&g);
    return err;
}

static msv_err copy_state(const struct group_state *from, struct group_state *to)
{
    msv_err err = MSV_OK;

    memset(to, 0, sizeof(*to));
    to->epoch = from->epoch;
    if ((to->name = strdup(from->name)) == NULL)
        err = MSV_ERR_NOMEM;
    for (size_t i = 0; err == MSV_OK && i < from->n_members; i++)
        err = list_add(&to->members, &to->n_members, from->members[i], strlen(from->members[i]));
    for (size_t i = 0; err == MSV_OK && i < from->n_admins; i++)
        err = list_add(&to->admins, &to->n_admins, from->admins[i], strlen(from->admins[i]));
    return err;
}

struct group_edit {
    const char *new_name;
    const char *const *add, *const *remove;
    size_t n_add, n_remove;
    const char *promote, *demote;
    int leave;
};

/*
 * Makes the change e to the group which, checked as every member will check it, and sends it.
 * The account's session lock is held from reading the state until its change is sent (or
 * queued, if it cannot go): a receive applies a member's change under it, and another
 * process's change waits for it, so that none is made from a state another has replaced
 * meanwhile (and lost). The MLS group follows after; a receive that holds the session lock
 * (a request to join by a link, approved at once) makes it follow under it: the session lock
 * comes before the MLS lock (sessions.c).
 */
static msv_err edit_group(struct msv_client *c, const char *which, const struct group_edit *e)
{
    struct group_state then = {0}, now = {0};
    struct msv_group_rec g = {0};
    uint8_t id[16];
    int behind = 0;
    msv_err err;

    /* what older changes of the group wait in the outbox go first, as a send's connection
     * sends them (not under the lock: their sends take it) */
    if (msv_client_group_find(c, which, &g) == MSV_OK && client_outbox_holds(c, NULL, g.group_id))
        flush_outbox(c);
    msv_group_clear(&g);
    if ((err = client_sessions_hold(c)) != MSV_OK)
        return err;
    err = held_state(c, which, &then);
    if (err == MSV_OK && c->test_group_read != NULL)
        c->test_group_read(c->test_group_arg);
    if (err == MSV_OK)
        err = msv_client_group_find(c, which, &g);
    /* those that could not go (the server out of reach): this one goes after them */
    behind = err == MSV_OK && client_outbox_holds(c, NULL, g.group_id);
    if (err == MSV_OK && !listed(then.members, then.n_members, c->handle))
        err = MSV_ERR_NOT_FOUND; /* no longer a member: nothing to change */
    if (err == MSV_OK && !e->leave && !listed(then.admins, then.n_admins, c->handle))
        err = MSV_ERR_AUTH; /* members only leave; the rest is for admins */
    if (err == MSV_OK && e->new_name != NULL && strcmp(e->new_name, then.name) != 0)
        err = name_is_free(c, e->new_name);
    if (err == MSV_OK)
        err = copy_state(&then, &now);
    if (err == MSV_OK && e->new_name != NULL) {
        free(now.name);
        if ((now.name = strdup(e->new_name)) == NULL)
            err = MSV_ERR_NOMEM;
    }
    for (size_t i = 0; err == MSV_OK && i < e->n_add; i++)
        err = list_add(&now.members, &now.n_members, e->add[i], strlen(e->add[i]));
    if (err == MSV_ERR_TOO_BIG)
        snprintf(c->why.message, sizeof(c->why.message), "a group holds at most %d people",
                 MEMBERS_MAX);
    for (size_t i = 0; err == MSV_OK && i < e->n_remove; i++) {
        list_drop(now.members, &now.n_members, e->remove[i]);
        list_drop(now.admins, &now.n_admins, e->remove[i]);
    }
    if (err == MSV_OK && (e->promote || e->demote) &&
        !listed(now.members, now.n_members, e->promote ? e->promote : e->demote))
        err = MSV_ERR_NOT_FOUND;
    if (err == MSV_OK && e->promote != NULL)
        err = list_add(&now.admins, &now.n_admins, e->promote, strlen(e->promote));
    if (err == MSV_OK && e->demote != NULL)
        list_drop(now.admins, &now.n_admins, e->demote);
    if (err == MSV_OK && e->leave) {
        list_drop(now.members, &now.n_members, c->handle);
        list_drop(now.admins, &now.n_admins, c->handle);
        /* the last admin to leave hands the group to the first member left */
        if (now.n_admins == 0 && now.n_members > 0)
            err = list_add(&now.admins, &now.n_admins, now.members[0], strlen(now.members[0]));
    }
    if (err == MSV_OK && (now.n_members == 0 || now.n_admins == 0) && !e->leave)
        err = MSV_ERR_INVALID; /* a group keeps a member and an admin */
    if (err == MSV_OK)
        err = commit_change(c, g.group_id, &then, &now, behind, id);
    client_sessions_release(c);
    if (err == MSV_OK && behind) {
        flush_outbox(c);
        if (client_outbox_holds(c, id, NULL)) {
            err = MSV_ERR_IO;
            snprintf(c->why.message, sizeof(c->why.message),
                     "the change is queued behind the group's earlier changes that could not be "
                     "sent yet, and goes after them");
        }
    }
    /* a member who left commits nothing more: the next admin's change removes its leaves */
    if (err == MSV_OK && !e->leave)
        err = mls_follow(c, g.group_id);
    msv_group_clear(&g);
    state_clear(&then);
    state_clear(&now);
    return err;
}

msv_err msv_client_group_change(struct msv_client *c, const char *name, const char *new_name,
                                const char *const *add, size_t n_add, const char *const *remove,
                                size_t n_remove)
{
    struct group_edit e = {
        .new_name = new_name, .add = add, .n_add = n_add, .remove = remove, .n_remove = n_remove};

    return edit_group(c, name, &e);
}

msv_err msv_client_group_admin(struct msv_client *c, const char *which, const char *member,
                               int admin)
{
    struct group_edit e = {.promote = admin ? member : NULL, .demote = admin ? NULL : member};

    return edit_group(c, which, &e);
}

msv_err msv_client_group_leave(struct msv_client *c, const char *which)
{
    struct group_edit e = {.leave = 1};

    return edit_group(c, which, &e);
}

msv_err msv_client_group_admins(struct msv_client *c, const uint8_t group_id[16], char **admins)
{
    struct group_state s = {0};
    msv_err err = state_load(c, "group-state", group_id, &s);

    if (err == MSV_OK)
        err = client_join_members(s.admins, s.n_admins, admins);
    state_clear(&s);
    return err;
}

msv_err client_group_state_digest(struct msv_client *c, const uint8_t gid[16], uint64_t *epoch,
                                  uint8_t hash[32], char **admins)
{
    struct group_state s = {0};
    msv_err err = state_load(c, "group-state", gid, &s);

    if (err == MSV_OK && admins != NULL)
        err = client_join_members(s.admins, s.n_admins, admins);
    if (err == MSV_OK) {
        *epoch = s.epoch;
        memcpy(hash, s.hash, 32);
    }
    state_clear(&s);
    return err;
}

/* The state a group change of the whole-state form proposes, its hash set. */
static msv_err proposed_state(const struct msv_payload *p, const char *held_name,
                              struct group_state *s)
{
    const char *name = p->group_name ? p->group_name : (held_name ? held_name : "group");
    msv_err err = MSV_OK;

    memset(s, 0, sizeof(*s));
    s->epoch = p->group_epoch;
    if ((s->name = strdup(name)) == NULL)
        err = MSV_ERR_NOMEM;
    for (size_t i = 0; err == MSV_OK && i < p->participant_count; i++)
        err = list_add(&s->members, &s->n_members, p->participants[i], strlen(p->participants[i]));
    for (size_t i = 0; err == MSV_OK && i < p->group_admin_count; i++)
        err = list_add(&s->admins, &s->n_admins, p->group_admins[i], strlen(p->group_admins[i]));
    if (err == MSV_OK)
        err = state_hash(p->group_id, s);
    return err;
}

/* Adds each of add to a list; MSV_ERR_INVALID if one is there, or (need not NULL) not in need. */
static msv_err delta_in(char ***list, size_t *n, char *const *add, size_t n_add, char *const *need,
                        size_t n_need)
{
    msv_err err = MSV_OK;

    for (size_t i = 0; err == MSV_OK && i < n_add; i++) {
        if ((*list != NULL && listed(*list, *n, add[i])) ||
            (need != NULL && !listed(need, n_need, add[i])))
            return MSV_ERR_INVALID;
        err = list_add(list, n, add[i], strlen(add[i]));
    }
    return err == MSV_ERR_TOO_BIG ? MSV_ERR_INVALID : err;
}

/* Drops each of drop from a list; MSV_ERR_INVALID if one is not there. */
static msv_err delta_out(char **list, size_t *n, char *const *drop, size_t n_drop)
{
    for (size_t i = 0; i < n_drop; i++) {
        if (!listed(list, *n, drop[i]))
            return MSV_ERR_INVALID;
        list_drop(list, n, drop[i]);
    }
    return MSV_OK;
}

/*
 * Applies the delta of p to base into s (docs/groups.md): added people must
 * not be members, removed ones must be, promoted ones members and not admins,
 * demoted ones admins; MSV_ERR_INVALID if not, or (if check) if the result is
 * not the state whose hash p carries. Clear s with state_clear().
 */
static msv_err applied_delta(const struct msv_payload *p, const struct group_state *base, int check,
                             struct group_state *s)
{
    char *const *const *d = (char *const *const *)p->group_delta;
    const size_t *n = p->group_delta_count;
    msv_err err = copy_state(base, s);

    if (err == MSV_OK)
        err = delta_in(&s->members, &s->n_members, d[MSV_DELTA_ADDED], n[MSV_DELTA_ADDED], NULL, 0);
    if (err == MSV_OK)
        err = delta_out(s->members, &s->n_members, d[MSV_DELTA_REMOVED], n[MSV_DELTA_REMOVED]);
    if (err == MSV_OK)
        err = delta_in(&s->admins, &s->n_admins, d[MSV_DELTA_PROMOTED], n[MSV_DELTA_PROMOTED],
                       s->members, s->n_members);
    if (err == MSV_OK)
        err = delta_out(s->admins, &s->n_admins, d[MSV_DELTA_DEMOTED], n[MSV_DELTA_DEMOTED]);
    if (err == MSV_OK) {
        free(s->name);
        s->epoch = p->group_epoch;
        if ((s->name = strdup(p->group_name)) == NULL)
            err = MSV_ERR_NOMEM;
    }
    if (err == MSV_OK)
        err = state_hash(p->group_id, s);
    if (err == MSV_OK && check && memcmp(s->hash, p->group_state_hash, 32) != 0)
        err = MSV_ERR_INVALID;
    if (err == MSV_ERR_TOO_BIG)
        err = MSV_ERR_INVALID;
    return err;
}

/*
 * The whole state a change of the delta form carries, for a device that holds
 * none: inline or fetched from the attachment store, its hash checked against
 * the one signed. MSV_ERR_INVALID for a state that does not match; other
 * errors (network, memory) are worth trying again.
 */
static msv_err carried_state(struct msv_client *c, const struct msv_payload *p,
                             struct group_state *s)
{
    uint8_t *bytes = p->group_state;
    size_t len = p->group_state_len;
    msv_err err = MSV_OK;

    if (p->has_group_state_ref) {
        err = client_fetch_blob(c, &p->group_state_ref, MSV_GROUP_STATE_MAX, &bytes, &len);
        if (err == MSV_ERR_AUTH || err == MSV_ERR_TOO_BIG || err == MSV_ERR_NOT_FOUND)
            err = MSV_ERR_INVALID;
    }
    if (err == MSV_OK && state_decode(p->group_id, bytes, len, s) != MSV_OK)
        err = MSV_ERR_INVALID;
    if (err == MSV_OK &&
        (s->epoch != p->group_epoch || memcmp(s->hash, p->group_state_hash, 32) != 0)) {
        state_clear(s);
        err = MSV_ERR_INVALID;
    }
    if (bytes != p->group_state)
        free(bytes);
    return err;
}

/* MSV_OK if the author's device signed the change p proposes (now). */
static msv_err change_signed(struct msv_client *c, const char *author, uint64_t device,
                             const struct msv_payload *p, const struct group_state *now)
{
    struct msv_public_identity *pub = NULL;
    uint8_t msg[CHANGE_MSG_LEN];
    msv_err err = client_sender_identity(c, author, device, &pub);

    if (err == MSV_OK)
        err = msv_public_identity_verify(
            pub, msg, change_message(p->group_id, now->epoch, p->group_prev_hash, now->hash, msg),
            p->group_signature, p->group_signature_len);
    msv_public_identity_free(pub);
    return err == MSV_OK || err == MSV_ERR_NOMEM ? err : MSV_ERR_AUTH;
}

/* Why author may not make the change then -> now, or NULL if they may. */
static const char *not_allowed(const struct group_state *then, const struct group_state *now,
                               const char *author)
{
    if (!listed(then->members, then->n_members, author))
        return "not a member";
    if (!listed(then->admins, then->n_admins, author) && !is_leaving(then, now, author))
        return "not an admin";
    return NULL;
}

/*
 * Which state a checked change follows: the one held (the next epoch), or the
 * one before it when the change and the held state are two changes of the
 * same epoch and this one has the lower hash, or is the one held
 * (docs/groups.md). NULL: none.
 */
static const struct group_state *base_of(const struct group_state *held,
                                         const struct group_state *prev, int has_prev,
                                         const struct msv_payload *p, const struct group_state *now)
{
    if (now->epoch == held->epoch + 1 && memcmp(p->group_prev_hash, held->hash, 32) == 0)
        return held;
    /* a lower hash wins; the very change held (stored, then a crash before the message was
     * acknowledged) is taken again, which changes nothing but finishes what it began */
    if (has_prev && now->epoch == held->epoch && memcmp(p->group_prev_hash, prev->hash, 32) == 0 &&
        memcmp(now->hash, held->hash, 32) <= 0)
        return prev;
    return NULL;
}

/* "AUTHOR sent a group change: refused, WHY", naming nobody else. */
static msv_err refusal(const char *author, const char *why, char **text)
{
    size_t n = strlen(author) + strlen(why) + 64;
    char *t = malloc(n);

    if (t == NULL)
        return MSV_ERR_NOMEM;
    snprintf(t, n, "%s sent a group change: refused, %s", author, why);
    *text = t;
    return MSV_OK;
}

/* What p proposes: the whole state it names, its hash set; the delta form has only the hash. */
static msv_err claimed_state(const struct msv_payload *p, const struct group_state *held,
                             struct group_state *s)
{
    if (!p->has_group_state_hash)
        return proposed_state(p, held ? held->name : NULL, s);
    memset(s, 0, sizeof(*s));
    s->epoch = p->group_epoch;
    memcpy(s->hash, p->group_state_hash, 32);
    return MSV_OK;
}

/*
 * For a change of the delta form, the state it makes: the delta applied to
 * the state it follows (base), or carried whole when this device holds none
 * (held NULL). *why set if it does not match. A change that follows no state
 * held is what its author says it does to the state held: who may make it is
 * judged on that, and it is refused anyway.
 */
static msv_err made_state(struct msv_client *c, const struct msv_payload *p,
                          const struct group_state *held, const struct group_state *base,
                          struct group_state *now, const char **why)
{
    struct group_state made = {0};
    msv_err err;

    if (!p->has_group_state_hash)
        return MSV_OK;
    if (held != NULL && base == NULL)
        err = applied_delta(p, held, 0, &made);
    else
        err = base != NULL ? applied_delta(p, base, 1, &made) : carried_state(c, p, &made);
    if (err == MSV_ERR_INVALID) {
        *why = held != NULL && base == NULL ? "out of order" : "its state does not match";
        state_clear(&made);
        return MSV_OK;
    }
    if (err == MSV_OK) {
        state_clear(now);
        *now = made;
    }
    return err;
}

/* Whether this device accepted group gid (an unknown group: no). */
static int group_accepted(struct msv_client *c, const uint8_t gid[16])
{
    struct msv_group_rec g = {0};
    int accepted = msv_client_db_group_get(c->db, gid, NULL, &g) == MSV_OK && g.accepted;

    msv_group_clear(&g);
    return accepted;
}

msv_err client_group_take(struct msv_client *c, const char *author, uint64_t device,
                          const struct msv_payload *p, int *applied, char **text)
{
    struct group_state held = {0}, prev = {0}, now = {0};
    const struct group_state *base = NULL;
    const char *why = NULL;
    int has_held, has_prev, leave_wins, joined_whole = 0;
    char copied[64];
    msv_err err = state_load(c, "group-state", p->group_id, &held);

    *applied = 0;
    has_held = err == MSV_OK;
    if (err == MSV_ERR_NOT_FOUND || err == MSV_ERR_PARSE)
        err = MSV_OK;
    /* a state that came by a copy may be behind (changes made before this device was approved
     * never came to it): for a week, a later signed change that does not follow it is taken
     * whole, as by a device that holds none, if its author is an admin of the copy (and, as
     * always then, of the state it makes) */
    state_key(COPIED, p->group_id, copied);
    if (has_held && p->has_group_signature && p->group_epoch > held.epoch &&
        !(p->group_epoch == held.epoch + 1 && memcmp(p->group_prev_hash, held.hash, 32) == 0) &&
        listed(held.admins, held.n_admins, author) && copied_lately(c, copied)) {
        state_clear(&held);
        has_held = 0;
    }
    /* a group this account asked to join by a link and holds unaccepted: a signed change by
     * an admin the link named that does not follow the state held is taken whole, as by a
     * device that holds none (another who held the link may have started a group under its
     * id first, to take the joiner in) */
    if (has_held && p->has_group_signature && !group_accepted(c, p->group_id) &&
        !(p->group_epoch == held.epoch + 1 && memcmp(p->group_prev_hash, held.hash, 32) == 0) &&
        client_join_invited_by(c, p->group_id, author)) {
        state_clear(&held);
        has_held = 0;
        joined_whole = 1;
    }
    has_prev = has_held && state_load(c, "group-prev", p->group_id, &prev) == MSV_OK;
    if (err == MSV_OK && !p->has_group_signature)
        why = "it is not signed";
    if (err == MSV_OK && why == NULL) {
        err = claimed_state(p, has_held ? &held : NULL, &now);
        if (err == MSV_OK && change_signed(c, author, device, p, &now) != MSV_OK)
            why = "its signature does not verify";
    }
    if (err == MSV_OK && why == NULL && has_held)
        base = base_of(&held, &prev, has_prev, p, &now);
    if (err == MSV_OK && why == NULL)
        err = made_state(c, p, has_held ? &held : NULL, base, &now, &why);
    /* a member's leave that wins its epoch from the state held (base prev) is judged on the
     * state before both, not on the one it displaces: a leave crossing an admin's rename is a
     * leave, not a rename undone by a member (leave_alone: one that would bring back someone
     * held took out is not). Any other winner is judged on both, so that an admin the held
     * state removed or demoted cannot take the group back by a change on the state before,
     * made after (the lower hash is the author's to choose) */
    leave_wins = base == &prev && leave_alone(&prev, &held, &now, author);
    if (err == MSV_OK && why == NULL && has_held && !leave_wins &&
        (why = not_allowed(&held, &now, author)) == NULL && base == NULL)
        why = "out of order";
    if (err == MSV_OK && why == NULL && base == &prev && (why = not_allowed(&prev, &now, author)))
        base = NULL;
    /* a group this device does not hold: its admin's word, as an invitation names it */
    if (err == MSV_OK && why == NULL && !has_held &&
        (!listed(now.admins, now.n_admins, author) || !listed(now.members, now.n_members, author)))
        why = "not an admin";
    if (err == MSV_OK && why == NULL) {
        err = state_apply(c, p->group_id, &now, base, strcmp(author, c->handle) == 0);
        if (err == MSV_OK)
            err = removed_note(c, p->group_id, base, &now, author);
        /* a state taken whole in place of another may be behind the group (a later change
         * came first, and this older one put it back): marked as a copy is, so that a later
         * signed change by an admin of it is taken whole for a week */
        if (err == MSV_OK && joined_whole) {
            uint8_t mark[8];
            int64_t wall = msv_wall_ms();

            /* from when it was made, as a copy's: one the server held back gets no longer */
            msv_put_u64be(mark, p->sent_at_ms > 0 && (int64_t)p->sent_at_ms < wall
                                    ? p->sent_at_ms
                                    : (uint64_t)wall);
            err = msv_client_db_set(c->db, copied, mark, sizeof(mark));
        } else if (err == MSV_OK)
            err = msv_client_db_unset(c->db, copied);
        *applied = err == MSV_OK;
    }
    /* another's change (a member leaving, say) of a group on MLS this account administers:
     * this device makes its MLS group follow, at the end of the receive (should recording that
     * fail, its next send to the group does) */
    if (*applied && has_held && strcmp(author, c->handle) != 0 &&
        listed(now.admins, now.n_admins, c->handle) && client_mls_is_on(c, p->group_id) &&
        client_mls_follow_due(c, p->group_id) != MSV_OK)
        c->why.message[0] = '\0';
    if (err == MSV_OK && why != NULL && strcmp(why, "not an admin") != 0 &&
        strcmp(why, "not a member") != 0)
        /* what does not authenticate, or no longer applies, names nobody */
        err = refusal(author, why, text);
    else if (err == MSV_OK)
        err = describe(author, has_held ? (base ? base : &held) : NULL, &now, why, text);
    state_clear(&held);
    state_clear(&prev);
    state_clear(&now);
    return err;
}

msv_err client_group_send(struct msv_client *c, const char *name, struct msv_payload *p,
                          const struct msv_file *files, size_t n_files,
                          void (*progress)(uint64_t done, uint64_t total), uint8_t message_id[16])
{
    struct msv_group_rec g;
    struct msv_mention mentions[MSV_MENTIONS_MAX];
    char **members = NULL, conversation[40];
    size_t n = 0;
    msv_err err = joined_group(c, name, &g);

    /* a device that holds no state of the group's MLS group reads its queue first, where the
     * Welcome adding it may wait; the group as that left it */
    if (err == MSV_OK && p->kind == MSV_KIND_MESSAGE && client_mls_queue_first(c, g.group_id)) {
        msv_client_group_conversation(g.group_id, conversation);
        msv_group_clear(&g);
        err = joined_group(c, conversation, &g);
    }
    if (err != MSV_OK)
        return err;
    if ((err = client_members_of(g.members, &members, &n)) != MSV_OK) {
        msv_group_clear(&g);
        return err;
    }
    p->has_group = true;
    memcpy(p->group_id, g.group_id, 16);
    p->group_name = g.name;
    /* a big group's members resolve the others from the state they hold (docs/groups.md) */
    p->participants = n <= GROUP_LIST_MAX ? members : NULL;
    p->participant_count = n <= GROUP_LIST_MAX ? n : 0;
    msv_client_group_conversation(g.group_id, conversation);
    p->mentions = mentions;
    p->mention_count = client_find_mentions(c, p->text, members, n, mentions);
    err = client_send_payload(c, (const char *const *)members, n, p, p->text, conversation, files,
                              n_files, progress, message_id);
    /* kept with the message, queued or sent */
    if (p->mention_count > 0 && msv_client_db_message_known(c->db, p->message_id) == MSV_OK) {
        msv_err kept = client_keep_mentions(c, p->message_id, conversation, p);

        err = err == MSV_OK ? kept : err;
    }
    free(members);
    msv_group_clear(&g);
    return err;
}

msv_err msv_client_group_send(struct msv_client *c, const char *name, const char *text,
                              const struct msv_file *files, size_t n_files,
                              void (*progress)(uint64_t done, uint64_t total),
                              uint8_t message_id[16])
{
    struct msv_payload p = {.kind = MSV_KIND_MESSAGE, .text = (char *)text};

    return client_group_send(c, name, &p, files, n_files, progress, message_id);
}

/* ---- a new device's copy (link_state.c) ------------------------------------------------- */

msv_err client_group_export(struct msv_client *c, const struct msv_group_rec *g, uint8_t **state,
                            size_t *state_len, uint8_t **prev, size_t *prev_len, int *signed_state)
{
    struct group_state s;
    char key[64];
    msv_err err;

    *signed_state = 1;
    state_key("group-state", g->group_id, key);
    err = msv_client_db_get(c->db, key, state, state_len);
    if (err == MSV_ERR_NOT_FOUND) { /* a group from before signed states: its record */
        *signed_state = 0;
        err = state_of_record(c, g, &s);
        if (err == MSV_OK) {
            err = state_encode(g->group_id, &s, state, state_len);
            state_clear(&s);
        }
    }
    if (err != MSV_OK)
        return err;
    state_key("group-prev", g->group_id, key);
    err = msv_client_db_get(c->db, key, prev, prev_len);
    if (err == MSV_ERR_NOT_FOUND) {
        *prev = NULL;
        *prev_len = 0;
        err = MSV_OK;
    }
    if (err != MSV_OK) {
        free(*state);
        *state = NULL;
    }
    return err;
}

msv_err client_group_install(struct msv_client *c, const uint8_t gid[16], const uint8_t *state,
                             size_t state_len, const uint8_t *prev, size_t prev_len,
                             int signed_state, int accepted)
{
    struct group_state now, before;
    char *list = NULL;
    int has_prev = prev_len > 0;
    msv_err err = state_decode(gid, state, state_len, &now);

    if (err != MSV_OK)
        return err;
    if (has_prev && (err = state_decode(gid, prev, prev_len, &before)) != MSV_OK) {
        state_clear(&now);
        return err;
    }
    if (signed_state)
        err = state_apply(c, gid, &now, has_prev ? &before : NULL, accepted);
    else if ((err = client_join_members(now.members, now.n_members, &list)) == MSV_OK)
        err = msv_client_db_group_put(c->db, gid, now.name, list, accepted, msv_wall_ms());
    free(list);
    state_clear(&now);
    if (has_prev)
        state_clear(&before);
    return err;
}

/* ---- a new device's groups, from the device that approved it (docs/groups.md) ----------- */

/*
 * What this device owes its account's devices (docs/groups.md, "A new device's groups"):
 * COPY_ALL (u64be wall ms) a copy of every group, set before an approval goes; COPY_DUE and
 * the group id's hex (u64be wall ms owed from || u64be wall ms last tried) the copy of one
 * group that could not be made.
 */
#define COPY_ALL "group-copy-all"
#define COPY_DUE "group-copy-due"
#define COPY_RETRY_MS (3600LL * 1000)
#define COPY_DUE_PER_ROUND 64 /* tries after one command */
#define COPY_DUE_READ 4096    /* owed copies read (each a group held) */

static int names_own_handle(struct msv_client *c, const struct group_state *s)
{
    for (size_t i = 0; i < s->n_members; i++)
        if (client_is_own_handle(c, s->members[i]))
            return 1;
    return 0;
}

/*
 * The GROUP_COPY of group gid (accepted or not) to this account's devices; *nothing for a
 * group of no signed state, or one this account is no longer in (nothing to copy).
 */
static msv_err copy_send(struct msv_client *c, const uint8_t gid[16], int accepted, int *nothing)
{
    struct msv_payload p = {
        .kind = MSV_KIND_GROUP_COPY, .has_group = true, .group_accepted = accepted != 0};
    struct group_state s;
    const char *self = c->handle;
    uint8_t *state = NULL, id[MSV_ID_LEN];
    size_t len = 0;
    char key[64], uri[80];
    msv_err err;

    memcpy(p.group_id, gid, 16);
    state_key("group-state", gid, key);
    err = msv_client_db_get(c->db, key, &state, &len);
    if (err == MSV_OK && (err = state_decode(gid, state, len, &s)) == MSV_OK) {
        *nothing = !names_own_handle(c, &s);
        state_clear(&s);
    }
    if (err == MSV_ERR_NOT_FOUND)
        *nothing = 1;
    if (err != MSV_OK || *nothing) {
        free(state);
        return err == MSV_ERR_NOT_FOUND ? MSV_OK : err;
    }
    if (len <= MSV_GROUP_STATE_INLINE_MAX) {
        p.group_state = state;
        p.group_state_len = len;
    } else {
        err = state_by_reference(c, state, len, &p.group_state_ref, uri);
        p.has_group_state_ref = err == MSV_OK;
    }
    /* any failure counts, a relay out of reach too (the copy then also waits in the outbox:
     * a second one is ignored by the devices that hold the group) */
    if (err == MSV_OK)
        err = client_send_payload(c, &self, 1, &p, NULL, NULL, NULL, 0, NULL, id);
    sodium_memzero(p.group_state_ref.key, sizeof(p.group_state_ref.key));
    free(state);
    return err;
}

/* Records a try of gid's copy that failed (owed from the first), or forgets it (done). */
static msv_err copy_due_set(struct msv_client *c, const uint8_t gid[16], int failed)
{
    uint8_t v[16], *held = NULL;
    size_t len = 0;
    char key[64];
    msv_err err;

    state_key(COPY_DUE, gid, key);
    if (!failed)
        return msv_client_db_unset(c->db, key);
    err = msv_client_db_get(c->db, key, &held, &len);
    if (err != MSV_OK && err != MSV_ERR_NOT_FOUND)
        return err;
    msv_put_u64be(v, err == MSV_OK && len == sizeof(v) ? msv_get_u64be(held)
                                                       : (uint64_t)msv_wall_ms());
    msv_put_u64be(v + 8, (uint64_t)msv_wall_ms());
    free(held);
    return msv_client_db_set(c->db, key, v, sizeof(v));
}

/*
 * One group's copy: tried, and recorded as owed if it failed (the first failure's why kept).
 * Once the connection is gone, the rest are owed untried: no wait for each.
 */
static msv_err copy_one(struct msv_client *c, const uint8_t gid[16], int accepted, size_t *failed,
                        char why[200])
{
    int nothing = 0;
    msv_err e = MSV_ERR_IO;

    c->why.message[0] = '\0';
    if (c->conn != NULL)
        e = copy_send(c, gid, accepted, &nothing);
    else
        snprintf(c->why.message, sizeof(c->why.message), "the server is out of reach");
    if (e == MSV_ERR_NOMEM)
        return e;
    if (e != MSV_OK && (*failed)++ == 0)
        snprintf(why, 200, "%.40s%s%.150s", msv_strerror(e), c->why.message[0] ? ": " : "",
                 c->why.message);
    return copy_due_set(c, gid, e != MSV_OK);
}

msv_err client_groups_copy(struct msv_client *c, size_t *failed)
{
    struct msv_group_rec *g = NULL;
    size_t n = 0;
    char why[200] = "";
    msv_err err = msv_client_db_groups(c->db, &g, &n);

    *failed = 0;
    for (size_t i = 0; err == MSV_OK && i < n; i++)
        err = copy_one(c, g[i].group_id, g[i].accepted, failed, why);
    msv_groups_free(g, n);
    if (err == MSV_OK)
        err = msv_client_db_unset(c->db, COPY_ALL);
    snprintf(c->why.message, sizeof(c->why.message), "%s", why);
    return err;
}

/* Whether a copy of every group is owed (COPY_ALL there): MSV_OK, MSV_ERR_NOT_FOUND, or an
 * error reading. */
static msv_err copies_all_owed(struct msv_client *c)
{
    uint8_t *held = NULL;
    size_t len = 0;
    msv_err err = msv_client_db_get(c->db, COPY_ALL, &held, &len);

    free(held);
    return err;
}

msv_err client_groups_copy_owe(struct msv_client *c, int *created)
{
    uint8_t v[8];
    msv_err err = copies_all_owed(c);

    *created = err == MSV_ERR_NOT_FOUND;
    if (err != MSV_ERR_NOT_FOUND)
        return err;
    msv_put_u64be(v, (uint64_t)msv_wall_ms());
    return msv_client_db_set(c->db, COPY_ALL, v, sizeof(v));
}

msv_err client_groups_copy_unowe(struct msv_client *c)
{
    return msv_client_db_unset(c->db, COPY_ALL);
}

msv_err client_groups_copy_due(struct msv_client *c)
{
    struct msv_setting *s = NULL;
    struct msv_group_rec g = {0};
    size_t n = 0, failed = 0, prefix = strlen(COPY_DUE) + 1, w = 0;
    int64_t now = msv_wall_ms();
    uint8_t gid[16];
    char why[200] = "";
    msv_err err = copies_all_owed(c);

    /* a process stopped after an approval (or before its copies were all made) */
    if (err == MSV_OK)
        return client_groups_copy(c, &failed);
    if (err != MSV_ERR_NOT_FOUND)
        return err;
    err = msv_client_db_settings(c->db, COPY_DUE ":", COPY_DUE_READ, &s, &n);
    for (size_t i = 0, tries = 0; err == MSV_OK && i < n && tries < COPY_DUE_PER_ROUND; i++) {
        int64_t since = s[i].len == 16 ? (int64_t)msv_get_u64be(s[i].value) : 0,
                tried = s[i].len == 16 ? (int64_t)msv_get_u64be(s[i].value + 8) : 0;

        if (strlen(s[i].key) != prefix + 32 ||
            msv_hex_decode(s[i].key + prefix, gid, sizeof(gid), &w) != MSV_OK || w != 16 ||
            now - since > COPY_WEEK_MS) { /* given up: its approval told it failed */
            err = msv_client_db_unset(c->db, s[i].key);
            continue;
        }
        if (tried <= now && now - tried < COPY_RETRY_MS)
            continue; /* at most hourly */
        err = msv_client_db_group_get(c->db, gid, NULL, &g);
        tries++;
        if (err == MSV_OK)
            err = copy_one(c, gid, g.accepted, &failed, why);
        else if (err == MSV_ERR_NOT_FOUND)
            err = msv_client_db_unset(c->db, s[i].key);
        msv_group_clear(&g);
    }
    msv_settings_free(s, n);
    return err;
}

/* Tells of a GROUP_COPY of gid from device that was not taken (in the group's history). */
static msv_err copy_refused(struct msv_client *c, const uint8_t gid[16], uint64_t device,
                            const char *why)
{
    char text[300];

    snprintf(text, sizeof(text), "a copy of this group from device %llu was refused: %s",
             (unsigned long long)device, why);
    return client_group_notice(c, gid, text);
}

/* Whether this device holds group gid: its signed state and its record (without both, a copy
 * is taken). */
static msv_err holds_signed(struct msv_client *c, const uint8_t gid[16], int *held)
{
    struct group_state s;
    struct msv_group_rec g = {0};
    msv_err err = state_load(c, "group-state", gid, &s);

    *held = err == MSV_OK;
    if (err == MSV_OK)
        state_clear(&s);
    if (err == MSV_ERR_NOT_FOUND)
        return MSV_OK;
    if (err == MSV_OK && (err = msv_client_db_group_get(c->db, gid, NULL, &g)) == MSV_ERR_NOT_FOUND)
        *held = 0; /* a process stopped between the two writes */
    msv_group_clear(&g);
    return err == MSV_ERR_NOT_FOUND ? MSV_OK : err;
}

msv_err client_take_group_copy(struct msv_client *c, const char *sender, uint64_t device,
                               const struct msv_payload *p)
{
    struct group_state now;
    uint8_t *bytes = p->group_state;
    size_t len = p->group_state_len;
    uint8_t mark[8];
    char key[64];
    int held = 0;
    int64_t wall = msv_wall_ms();
    msv_err err;

    /* only this account's own devices vouch for a state they hold, and only where this device
     * holds none: a copy never takes a signed state back */
    if (!client_is_own_handle(c, sender))
        return MSV_OK;
    err = holds_signed(c, p->group_id, &held);
    /* held (a change came first, say): only the account's word that it took the group */
    if (err == MSV_OK && held && p->group_accepted)
        err = msv_client_db_group_accept(c->db, p->group_id);
    if (err != MSV_OK || held)
        return err == MSV_ERR_PARSE ? MSV_OK : err;
    if (p->has_group_state_ref) {
        err = client_fetch_blob(c, &p->group_state_ref, MSV_GROUP_STATE_MAX, &bytes, &len);
        if (err == MSV_ERR_AUTH || err == MSV_ERR_TOO_BIG || err == MSV_ERR_NOT_FOUND)
            return copy_refused(c, p->group_id, device, "its state could not be fetched");
        if (err != MSV_OK)
            return err; /* the network: the delivery stays, to be taken again */
    }
    err = state_decode(p->group_id, bytes, len, &now);
    if (bytes != p->group_state)
        free(bytes);
    if (err != MSV_OK)
        return err == MSV_ERR_NOMEM
                   ? err
                   : copy_refused(c, p->group_id, device, "its state is malformed");
    if (!names_own_handle(c, &now) || now.n_admins == 0) {
        err = names_own_handle(c, &now) ? MSV_ERR_INVALID : MSV_ERR_AUTH;
        state_clear(&now);
        return copy_refused(c, p->group_id, device,
                            err == MSV_ERR_INVALID ? "it names no admin"
                                                   : "it does not name this account a member");
    }
    /* marked as copied first (the copy may be behind: client_group_take), from when it was
     * made: a copy the server held back gets no longer */
    state_key(COPIED, p->group_id, key);
    msv_put_u64be(mark, p->sent_at_ms > 0 && (int64_t)p->sent_at_ms < wall ? p->sent_at_ms
                                                                           : (uint64_t)wall);
    err = msv_client_db_set(c->db, key, mark, sizeof(mark));
    if (err == MSV_OK)
        err = state_apply(c, p->group_id, &now, NULL, p->group_accepted);
    /* a record made earlier, from a member's message, keeps its own acceptance otherwise */
    if (err == MSV_OK && p->group_accepted)
        err = msv_client_db_group_accept(c->db, p->group_id);
    state_clear(&now);
    return err;
}
