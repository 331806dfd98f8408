/*
 * Groups on MLS (RFC 9420; docs/crypto.md, "Groups on MLS in the client"): a group whose every
 * device has a KeyPackage bound to it moves to MLS, each device a leaf; missived is the
 * delivery service (docs/wire.md, "MLS delivery").
 *
 * The member state of a group is the setting "mls-group:<hex of the group id>":
 *   u32be roster length || roster || msv_mls_member_save() bytes
 * the roster naming, for each device in the tree, its handle (u64be device id || u16be length ||
 * handle), as the verified directory listed it when its leaf was checked: an application
 * message names its sender by its leaf's credential and this roster, never by what the server
 * says. Every change of a state happens under the account's MLS lock ("mls.lock", flock), from
 * its load to its save, so two processes of one account never fork or lose it.
 */
#include "client/internal.h"

#include <stdio.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <sodium.h>

#include "client/requests.h"
#include "missive/payload.h"
#include "missive/util.h"
#include "mls/member.h"
#include "mls/mls.h"
#include "util/buf.h"
#include "util/endian.h"
#include "wire/frame.h"

#define PREFIX "mls-group:"
#define SUITE MSV_MLS_SUITE_X25519_AES128GCM
#define TIMEOUT_MS 15000
#define LEAF_LIFETIME_S (60 * 86400)
#define SKEW_S 3600
#define COMMIT_TRIES 3 /* a commit refused as stale: the queue read and the commit made again */
#define STALE_WAIT_MS 500
/*
 * What is queued for this device read within a change or send (another member's commit came
 * first), told to the receive under way (within which this send runs) or else to the
 * account's owner (on_incoming); with nobody to tell, the messages it stores stay to be shown
 * by the next receive.
 */
static msv_err receive_within(struct msv_client *c)
{
    void (*tell)(void *, const struct msv_incoming *) =
        c->receive_tells != NULL ? c->receive_tells : c->on_incoming;
    void *ctx = c->receive_tells != NULL ? c->receive_ctx : c->incoming_ctx;
    size_t count = 0;
    msv_err err;

    /* another program of the device takes its deliveries (client_deliveries_taken): what is
     * queued is that one's to read, and the delivery service's commit log serves the rest */
    if (c->deliveries_taken != NULL)
        return MSV_OK;
    c->receiving_within += tell == NULL;
    c->mls_within++;
    err = msv_client_receive(c, STALE_WAIT_MS, tell, ctx, &count);
    c->mls_within--;
    c->receiving_within -= tell == NULL;
    return err;
}

static int64_t held_generation(struct msv_client *c, const uint8_t gid[16], uint64_t *epoch);
static msv_err founded_now(struct msv_client *c, const uint8_t gid[16]);
static int ask_again_later(const struct msv_client *c, msv_err asked);
static msv_err catch_up(struct msv_client *c, const uint8_t gid[16], uint32_t gen, uint64_t target,
                        int force, uint64_t *moved);

/* what one MlsSend carries at most: the server's default payload limit (docs/wire.md); a
 * larger commit or Welcome goes by reference */
#define MLS_MESSAGE_MAX (16u * 1024u)
#define DEVICES_MAX 10000 /* devices in one group (the delivery service's limit) */
#define CHANGES_MAX 1000  /* devices one commit adds and removes (the delivery service's limit) */
/*
 * A commit or Welcome by reference (docs/crypto.md, "Large commits and Welcomes"): 0xff (no
 * MLSMessage starts so: its version is 1) || 1 || u32be size || blob id || attachment key ||
 * SHA-256 of the blob; what a reference may name at most (a Welcome to 1,000 devices, its
 * ratchet tree of 10,000 inside, is about 4.5 MB)
 */
#define BY_REF_MARK 0xffu
#define BY_REF_VERSION 1u
#define BY_REF_LEN (2u + 4u + 32u + MSV_ATTACHMENT_KEY_LEN + 32u)
#define BY_REF_MAX ((size_t)8 << 20)
#define LOOKUP_BATCH 256
#define MLS_ID_LEN 20 /* the group's id || u32be generation */
#define REFOUND "mls-refound:"
/* "mls-lost:<hex of the group id>" = u32be: the generation to found past (lost_seen, below) */
#define LOST "mls-lost:"
/* "mls-founded:<hex of the group id>" = u64be wall ms this device last founded the group again;
 * what a send or a receive brings about (not a change of the user's) does so at most hourly */
#define FOUNDED "mls-founded:"
/* "mls-behind:<hex of the group id>": this device behind the group for good (behind_still) */
#define BEHIND "mls-behind:"
/* u64be counters: foundings again held back by the hourly limit; waits given up (a device's
 * joining, a removal to commit) */
#define REFOUNDINGS_HELD "refoundings-held"
#define WAITS_GIVEN_UP "waits-given-up"

uint64_t msv_client_mls_refoundings_held(struct msv_client *c)
{
    return client_counter(c, REFOUNDINGS_HELD);
}

uint64_t msv_client_mls_waits_given_up(struct msv_client *c)
{
    return client_counter(c, WAITS_GIVEN_UP);
}

/* "mls-by-ref:<device>" = u64be wall ms its hour began || u64be bytes fetched for it since;
 * BY_REF_HELD counts what was not fetched past the limit */
#define BY_REF_SPENT "mls-by-ref:"
#define BY_REF_HELD "mls-by-ref-held"
#define BY_REF_HOUR_MS (3600LL * 1000)

uint64_t msv_client_mls_by_ref_held(struct msv_client *c)
{
    return client_counter(c, BY_REF_HELD);
}

/*
 * Forgets the hours that ended, in one statement (so a record another process of the account
 * has just begun is not taken for an ended one): what is kept is the devices that sent by
 * reference within the hour, not every device that ever did. Run when a device's hour begins.
 */
static void by_ref_prune(struct msv_client *c, int64_t now)
{
    /* one begun up to an hour ahead is another process's, on a clock a little ahead: kept */
    if (msv_client_db_unset_prefix_outside(c->db, BY_REF_SPENT,
                                           (uint64_t)(now - BY_REF_HOUR_MS) + 1,
                                           (uint64_t)(now + BY_REF_HOUR_MS)) != MSV_OK)
        return; /* kept until the next pass: only space */
}

/*
 * Whether size more bytes by reference from device fit its hourly allowance (then counted):
 * a member sending commit after commit by reference, each up to BY_REF_MAX, has them fetched
 * up to MSV_MLS_BY_REF_HOURLY an hour, no more (MSV_ERR_TOO_BIG, counted).
 */
static msv_err by_ref_spend(struct msv_client *c, uint64_t device, uint32_t size)
{
    char key[sizeof(BY_REF_SPENT) + 24];
    uint8_t *v = NULL, now_v[16];
    size_t len = 0;
    int64_t now = msv_wall_ms(), start = 0;
    uint64_t spent = 0;

    snprintf(key, sizeof(key), BY_REF_SPENT "%llu", (unsigned long long)device);
    if (msv_client_db_get(c->db, key, &v, &len) == MSV_OK && len == 16) {
        start = (int64_t)msv_get_u64be(v);
        spent = msv_get_u64be(v + 8);
    }
    free(v);
    if (start <= 0 || now < start || now - start >= BY_REF_HOUR_MS) { /* its hour begins */
        start = now;
        spent = 0;
        by_ref_prune(c, now);
    }
    if (spent + size > MSV_MLS_BY_REF_HOURLY) {
        (void)client_counter_bump(c, BY_REF_HELD); /* a count: the limit holds anyway */
        return MSV_ERR_TOO_BIG;
    }
    msv_put_u64be(now_v, (uint64_t)start);
    msv_put_u64be(now_v + 8, spent + size);
    return msv_client_db_set(c->db, key, now_v, sizeof(now_v));
}
#define REFOUND_MIN_MS (3600LL * 1000)

/* The MLS group id (and the delivery service's) of generation gen of group gid. */
static void mls_id(const uint8_t gid[16], uint32_t gen, uint8_t out[MLS_ID_LEN])
{
    memcpy(out, gid, 16);
    msv_put_u32be(out + 16, gen);
}

static uint32_t generation_of(const struct msv_mls_member *m)
{
    return m->group_id_len == MLS_ID_LEN ? msv_get_u32be(m->group_id + 16) : 0;
}

/* ---- the lock and the stored state --------------------------------------------------------- */

static msv_err mls_lock(struct msv_client *c)
{
    return client_lock_nested(c, "mls.lock", &c->mls_lock_fd, &c->mls_lock_depth);
}

static void mls_unlock(struct msv_client *c)
{
    client_unlock_nested(&c->mls_lock_fd, &c->mls_lock_depth);
}

static void state_key(const uint8_t gid[16], char key[sizeof(PREFIX) + 32])
{
    char hex[33];

    if (msv_hex_encode(gid, 16, hex, sizeof(hex)) != MSV_OK)
        hex[0] = '\0';
    snprintf(key, sizeof(PREFIX) + 32, PREFIX "%s", hex);
}

/* The setting prefix || hex of gid; key holds KEY_MAX bytes. */
#define KEY_MAX 64
static const char *group_key(const char *prefix, const uint8_t gid[16], char key[KEY_MAX])
{
    char hex[33];

    if (msv_hex_encode(gid, 16, hex, sizeof(hex)) != MSV_OK)
        hex[0] = '\0';
    snprintf(key, KEY_MAX, "%s%s", prefix, hex);
    return key;
}

static const char *flag_key(const uint8_t gid[16], char key[KEY_MAX])
{
    return group_key(REFOUND, gid, key);
}

/* This device's last commit to the group (its leaf updated then), and its messages since. */
#define UPDATED "mls-updated:"
#define SENT "mls-sent:"

/*
 * A commit of this device's owed from the end of a receive (keys_flush): "mls-key-by:<hex of
 * the group id>" = u64be wall ms from which it is due || u8 why (KEY_PATH: a node of this
 * device's direct path has a resolution of more than one node, blank above two members or
 * listing unmerged leaves, so that every commit encrypts to each of them; KEY_RENEW: its leaf
 * is due for its regular update and this device sends nothing; KEY_PATH_AGAIN + n - 1: such a
 * keying counted again n times, n at most KEY_AGAIN_MAX, by commits that made the tree wider)
 * || u8 tries that failed. Any commit of this device's ends it (committed_now).
 */
#define KEY_BY "mls-key-by:"
#define KEY_BY_VALUE 10
#define KEY_PATH 0
#define KEY_RENEW 1
#define KEY_PATH_AGAIN 2
/* a founding of the most devices a group holds (DEVICES_MAX, 10,000) widens the tree its
 * first commit of CHANGES_MAX (1,000) adds made (1,024 leaves) four times */
#define KEY_AGAIN_MAX 4

/* Commits owed from a receive: at most KEYS_TRIED a receive (each reads the directory for
 * every member), at most KEYS_SCAN groups looked at; one that failed (no answer, refused as
 * stale: the next receive reads that commit, or nothing to commit, as when a non-admin waits
 * for an admin's removal) is tried again after 15 minutes, doubling up to a day. */
#define KEYS_TRIED 2
#define KEYS_SCAN 4096
#define KEY_RETRY_MS (15 * 60 * 1000LL)
#define KEY_RETRY_MAX_MS (86400 * 1000LL)
#define KEYINGS_MADE "mls-keyings-made"
#define KEYINGS_PUT_OFF "mls-keyings-put-off"

static msv_err updated_now(struct msv_client *c, const uint8_t gid[16])
{
    char key[KEY_MAX];
    uint8_t now[8];
    msv_err err;

    msv_put_u64be(now, (uint64_t)(msv_wall_ms() / 1000));
    c->mls_keys_changed++;
    err = msv_client_db_set(c->db, group_key(UPDATED, gid, key), now, sizeof(now));
    return err == MSV_OK ? msv_client_db_unset(c->db, group_key(SENT, gid, key)) : err;
}

/* A commit of this device's taken: its leaf and path are new, and no commit is owed. */
static msv_err committed_now(struct msv_client *c, const uint8_t gid[16])
{
    char key[KEY_MAX];
    msv_err err = updated_now(c, gid);

    return err == MSV_OK ? msv_client_db_unset(c->db, group_key(KEY_BY, gid, key)) : err;
}

/*
 * Whether this device's leaf is due for an update (post-compromise security): c->mls_update_s
 * (default MSV_MLS_UPDATE_S) since its last commit, or c->mls_update_messages (default
 * MSV_MLS_UPDATE_MESSAGES) messages sent since.
 */
static uint64_t update_period(const struct msv_client *c)
{
    return c->mls_update_s ? c->mls_update_s : MSV_MLS_UPDATE_S;
}

static int update_due(struct msv_client *c, const uint8_t gid[16])
{
    char key[KEY_MAX];
    uint64_t period = update_period(c);
    uint64_t most = c->mls_update_messages ? c->mls_update_messages : MSV_MLS_UPDATE_MESSAGES;
    uint64_t at = client_counter(c, group_key(UPDATED, gid, key));
    uint64_t now = (uint64_t)(msv_wall_ms() / 1000);

    if (at == 0) /* a state from before the count: counted from now */
        return updated_now(c, gid) != MSV_OK;
    return now >= at + period || client_counter(c, group_key(SENT, gid, key)) >= most;
}

/* How long after period a leaf of this device's is renewed from a receive: the same for each
 * group, and different from device to device, within a seventh of the period (at most a day),
 * so that the devices of a group founded at once do not all commit at once a week later. */
static uint64_t renew_offset_s(const struct msv_client *c, const uint8_t gid[16], uint64_t period)
{
    uint8_t in[24], h[32];
    uint64_t spread = period / 7 < 86400 ? period / 7 : 86400;

    if (spread == 0)
        return 0;
    msv_put_u64be(in, c->device_id);
    memcpy(in + 8, gid, 16);
    crypto_hash_sha256(h, in, sizeof(in));
    return msv_get_u64be(h) % spread;
}

/* When (wall seconds) this device's leaf falls due for its regular update from a receive, its
 * last commit to the group made at at: the period and this device's offset after it. */
static uint64_t renew_at(const struct msv_client *c, const uint8_t gid[16], uint64_t at)
{
    uint64_t period = update_period(c);

    return at + period + renew_offset_s(c, gid, period);
}

/*
 * Whether this device's leaf is due for its regular update from a receive, its last commit to
 * the group made at at (wall seconds; one recorded ahead of the clock counts as made now). The
 * offset's hash is left until the period has passed.
 */
static int renew_due_at(const struct msv_client *c, const uint8_t gid[16], uint64_t at)
{
    uint64_t now = (uint64_t)(msv_wall_ms() / 1000);

    if (at == 0 || at > now || now < at + update_period(c))
        return 0;
    return now >= renew_at(c, gid, at);
}

static int renew_due(struct msv_client *c, const uint8_t gid[16])
{
    char key[KEY_MAX];

    return renew_due_at(c, gid, client_counter(c, group_key(UPDATED, gid, key)));
}

int client_mls_is_on(struct msv_client *c, const uint8_t gid[16])
{
    char key[sizeof(PREFIX) + 32];
    uint8_t *v = NULL;
    size_t len = 0;
    int on;

    state_key(gid, key);
    on = msv_client_db_get(c->db, key, &v, &len) == MSV_OK;
    msv_secret_free(v, len);
    return on;
}

int msv_client_group_on_mls(struct msv_client *c, const uint8_t group_id[16])
{
    return client_mls_is_on(c, group_id);
}

/* A device of the group as the verified directory lists it. */
struct dir_device {
    uint64_t device_id;
    char handle[257];
    struct msv_public_identity *pub;
};

struct dir {
    struct dir_device *d;
    size_t n;
};

static void dir_free(struct dir *dir)
{
    for (size_t i = 0; i < dir->n; i++)
        msv_public_identity_free(dir->d[i].pub);
    free(dir->d);
    memset(dir, 0, sizeof(*dir));
}

static struct dir_device *dir_find(const struct dir *dir, uint64_t device_id)
{
    for (size_t i = 0; i < dir->n; i++)
        if (dir->d[i].device_id == device_id)
            return &dir->d[i];
    return NULL;
}

/* Whether leaf i of m's tree is in use with the credential of a device (*device). */
static int leaf_device(const struct msv_mls_member *m, uint32_t i, uint64_t *device)
{
    const struct msv_mls_node *x = &m->tree.nodes[2 * i];
    const uint8_t *identity;
    size_t identity_len;

    *device = 0;
    return x->type == 1 && msv_mlskeys_leaf_credential(x->leaf.raw, x->leaf.raw_len, &identity,
                                                       &identity_len, device) == MSV_OK;
}

/* The leaf of device in m's tree (UINT32_MAX: none). */
static uint32_t leaf_of(const struct msv_mls_member *m, uint64_t device)
{
    for (uint32_t i = 0; i < m->tree.n_leaves; i++) {
        uint64_t d;

        if (leaf_device(m, i, &d) && d == device)
            return i;
    }
    return UINT32_MAX;
}

/* Whether a leaf of m's tree names device. */
static int has_device(const struct msv_mls_member *m, uint64_t device)
{
    return leaf_of(m, device) != UINT32_MAX;
}

/*
 * Whether a node of the direct path of m's own leaf resolves to more than one node: blank above
 * more than one member, or keyed but listing unmerged leaves (devices added below it since it
 * got its key, by any commit whose committer's path it is not on). Every commit then encrypts its
 * path secrets to each of them (a group built by its founder's adds leaves every parent off the
 * founder's path blank, so that a removal at 1,000 devices encrypts to about every leaf); this
 * device's own commit keys them all.
 */
static int path_unkeyed(const struct msv_mls_member *m)
{
    return msv_mls_tree_path_unkeyed(&m->tree, m->me);
}

static int is_set(struct msv_client *c, const char *key);

/* A keying commit is made within the spread from when it became owed, so that the members of a
 * group founded at once do not all commit at once (one commit is taken per epoch, and each one
 * keys the paths of others): 20 seconds a member device, from 10 minutes to a day
 * (c->mls_key_spread_ms when set, up to a day). The first KEY_FIRST_MS of it (at most half) are
 * left to the founder's further adds and the members' joining; the rest is one slot for each place
 * of the tree's leaves in the order that keys it from the top (msv_mls_tree_key_order), the commit
 * made at a random time within its leaf's slot. */
#define KEY_SPREAD_LEAF_MS (20 * 1000LL)
#define KEY_SPREAD_MIN_MS (10 * 60 * 1000LL)
#define KEY_SPREAD_MAX_MS (86400 * 1000LL)
#define KEY_FIRST_MS (5 * 60 * 1000LL)

static int64_t key_spread(const struct msv_client *c, const struct msv_mls_member *m)
{
    int64_t spread = 0;

    if (c->mls_key_spread_ms > 0)
        return c->mls_key_spread_ms < KEY_SPREAD_MAX_MS ? c->mls_key_spread_ms : KEY_SPREAD_MAX_MS;
    for (uint32_t i = 0; i < m->tree.n_leaves; i++) /* the members' leaves */
        spread += m->tree.nodes[2 * i].type != 0 ? KEY_SPREAD_LEAF_MS : 0;
    return spread < KEY_SPREAD_MIN_MS   ? KEY_SPREAD_MIN_MS
           : spread > KEY_SPREAD_MAX_MS ? KEY_SPREAD_MAX_MS
                                        : spread;
}

/* A record's due time as read at now (wall ms): one further off than any wait is due now (the
 * clock went back). */
static int64_t key_by_due(int64_t due, int64_t now)
{
    return due > now && due - now > KEY_SPREAD_MAX_MS + KEY_RETRY_MAX_MS ? now : due;
}

/* A wait of base ms doubled times times, at most max ms. */
static int64_t doubled(int64_t base, unsigned times, int64_t max)
{
    while (times-- > 0 && base < max)
        base *= 2;
    return base < max ? base : max;
}

static msv_err key_by_set(struct msv_client *c, const uint8_t gid[16], int64_t due, uint8_t why,
                          uint8_t tries)
{
    char key[KEY_MAX];
    uint8_t v[KEY_BY_VALUE];

    msv_put_u64be(v, (uint64_t)due);
    v[8] = why;
    v[9] = tries;
    c->mls_keys_changed++;
    return msv_client_db_set(c->db, group_key(KEY_BY, gid, key), v, sizeof(v));
}

/*
 * After this device joined, or took a commit, under the MLS lock: a keying commit owed (in its
 * leaf's slot of the spread) when the path of its leaf is not keyed and none is owed yet,
 * and not within KEY_GAP_MS of this device's last commit to the group (at a join, last_s, wall
 * seconds, 0 for none, as when it first joins; after a commit taken, read here): whatever
 * removals, adds or foundings again a member makes, this device keys its path at most once a
 * day. After a commit taken (KEY_TAKEN), only by the one device named to key a node the commit
 * blanked, its first leaf that is not blank (a removal in a keyed tree blanks the removed leaf's
 * path, which every leaf beneath it would find); a device added since a node got its key keys
 * its own path once it joins. After a commit taken that made the tree wider (KEY_TAKEN_WIDER: a
 * founder's next commit of adds, in a group of more than the devices one commit adds), a keying
 * owed, not yet due, not yet tried and counted again fewer than KEY_AGAIN_MAX times is counted
 * again from now in the wider tree's slots (never sooner than it was to be), so that the
 * founder's adds go first and the devices of its commits up to the last that widened the tree
 * key it in one order (those of a later commit, in a tree as wide, count from their join with
 * the spread of their own count of members); a member that widens the tree again and again so
 * puts it off by at most KEY_AGAIN_MAX spreads. Best effort: a failure to record it leaves the
 * path for the next commit taken, or its regular update.
 */
#define KEY_GAP_MS (86400 * 1000LL)

enum key_cue { KEY_JOINED, KEY_TAKEN, KEY_TAKEN_WIDER };

/* Whether the keying owed in the record named key is not yet due (at now), nor tried, nor
 * counted again KEY_AGAIN_MAX times; when it is due (wall ms) in *due, how many times it was
 * counted again in *again. */
static int keying_untried(struct msv_client *c, const char *key, int64_t now, int64_t *due,
                          uint8_t *again)
{
    uint8_t *v = NULL;
    size_t len = 0;
    int untried;

    if (msv_client_db_get(c->db, key, &v, &len) != MSV_OK)
        return 0;
    untried = len == KEY_BY_VALUE && v[9] == 0 &&
              (v[8] == KEY_PATH ||
               (v[8] >= KEY_PATH_AGAIN && v[8] - KEY_PATH_AGAIN + 1 < KEY_AGAIN_MAX)) &&
              key_by_due((int64_t)msv_get_u64be(v), now) > now;
    *due = untried ? (int64_t)msv_get_u64be(v) : 0;
    *again = untried && v[8] != KEY_PATH ? (uint8_t)(v[8] - KEY_PATH_AGAIN + 1) : 0;
    free(v);
    return untried;
}

static void key_schedule(struct msv_client *c, const uint8_t gid[16],
                         const struct msv_mls_member *m, uint64_t last_s, enum key_cue cue)
{
    char key[KEY_MAX];
    int64_t spread, first, slot, due, now = msv_wall_ms(), last, was = 0;
    uint8_t times = 0;
    int again;
    msv_err err;

    group_key(KEY_BY, gid, key);
    again = cue == KEY_TAKEN_WIDER && keying_untried(c, key, now, &was, &times);
    if (again ? !path_unkeyed(m)
              : !(cue != KEY_JOINED ? msv_mls_tree_path_blank_first(&m->tree, m->me)
                                    : path_unkeyed(m)) ||
                    is_set(c, key))
        return;
    if (cue != KEY_JOINED)
        last_s = client_counter(c, group_key(UPDATED, gid, key));
    last = (int64_t)last_s * 1000;
    spread = key_spread(c, m);
    first = spread / 2 < KEY_FIRST_MS ? spread / 2 : KEY_FIRST_MS;
    slot = (spread - first) / (m->tree.n_leaves > 0 ? m->tree.n_leaves : 1);
    due = now + first + (int64_t)msv_mls_tree_key_order(m->me, m->tree.n_leaves) * slot +
          (slot > 1 ? (int64_t)randombytes_uniform((uint32_t)slot) : 0);
    /* (a last commit ahead of the clock counts as now); a keying counted again is owed already,
     * and never made sooner than it was to be */
    if (!again && last_s > 0 && (last < now ? last : now) + KEY_GAP_MS > due)
        due = (last < now ? last : now) + KEY_GAP_MS;
    if (again && was > due)
        due = was;
    err = key_by_set(c, gid, due, again ? (uint8_t)(KEY_PATH_AGAIN + times) : KEY_PATH, 0);
    (void)err;
}

/* The roster: the handle of each device of dir that has a leaf in m's tree. */
static msv_err roster_encode(const struct msv_mls_member *m, const struct dir *dir,
                             struct msv_buf *b)
{
    for (uint32_t i = 0; i < m->tree.n_leaves; i++) {
        const struct msv_mls_node *x = &m->tree.nodes[2 * i];
        const uint8_t *identity;
        size_t identity_len, hl;
        uint64_t device = 0;
        const struct dir_device *d;
        uint8_t be[8];

        if (x->type != 1 || msv_mlskeys_leaf_credential(x->leaf.raw, x->leaf.raw_len, &identity,
                                                        &identity_len, &device) != MSV_OK)
            continue;
        if ((d = dir_find(dir, device)) == NULL)
            return MSV_ERR_AUTH;
        hl = strlen(d->handle);
        msv_put_u64be(be, device);
        msv_buf_put(b, be, sizeof(be));
        msv_buf_put_u16be(b, (uint16_t)hl);
        msv_buf_put(b, d->handle, hl);
    }
    return MSV_OK;
}

/* Saves m with its roster (from dir, or copied from the stored one if dir is NULL). */
static msv_err state_save_with(struct msv_client *c, const uint8_t gid[16],
                               const struct msv_mls_member *m, const struct dir *dir,
                               const uint8_t *roster, size_t roster_len, const char *key2,
                               const uint8_t *value2, size_t len2);

static msv_err state_save(struct msv_client *c, const uint8_t gid[16],
                          const struct msv_mls_member *m, const struct dir *dir,
                          const uint8_t *roster, size_t roster_len)
{
    return state_save_with(c, gid, m, dir, roster, roster_len, NULL, NULL, 0);
}

/* m with its roster as stored (state_save_with), after what b holds. */
static msv_err state_put(const struct msv_mls_member *m, const struct dir *dir,
                         const uint8_t *roster, size_t roster_len, struct msv_buf *b)
{
    uint8_t *saved = NULL;
    size_t saved_len = 0, at;
    const char *why = NULL;
    msv_err err = msv_mls_member_save(m, &saved, &saved_len, &why);

    if (err != MSV_OK)
        return err;
    msv_buf_put_u32be(b, 0);
    at = b->len;
    err = dir != NULL ? roster_encode(m, dir, b) : MSV_OK;
    if (dir == NULL)
        msv_buf_put(b, roster, roster_len);
    if (err == MSV_OK && b->failed == MSV_OK) {
        msv_put_u32be(b->data + at - 4, (uint32_t)(b->len - at));
        msv_buf_put(b, saved, saved_len);
    }
    msv_secret_free(saved, saved_len);
    return err;
}

/* state_save, and the setting key2 in the same transaction (key2 NULL: none). */
static msv_err state_save_with(struct msv_client *c, const uint8_t gid[16],
                               const struct msv_mls_member *m, const struct dir *dir,
                               const uint8_t *roster, size_t roster_len, const char *key2,
                               const uint8_t *value2, size_t len2)
{
    struct msv_buf b;
    uint8_t *out = NULL;
    size_t out_len = 0;
    char key[sizeof(PREFIX) + 32];
    msv_err err;

    msv_buf_init(&b, MSV_MLS_STATE_MAX);
    err = state_put(m, dir, roster, roster_len, &b);
    if (err == MSV_OK)
        err = msv_buf_finish(&b, &out, &out_len);
    else
        msv_buf_clear(&b);
    state_key(gid, key);
    if (err == MSV_OK)
        err = key2 == NULL ? msv_client_db_set(c->db, key, out, out_len)
                           : msv_client_db_set2(c->db, key, out, out_len, key2, value2, len2);
    msv_secret_free(out, out_len);
    return err;
}

/* The stored state: the member, and a copy of the roster (caller frees *roster). */
static msv_err state_load(struct msv_client *c, const uint8_t gid[16], struct msv_mls_member **m,
                          uint8_t **roster, size_t *roster_len)
{
    char key[sizeof(PREFIX) + 32];
    uint8_t *v = NULL;
    size_t len = 0, rl;
    const char *why = NULL;
    msv_err err;

    *m = NULL;
    *roster = NULL;
    state_key(gid, key);
    err = msv_client_db_get(c->db, key, &v, &len);
    if (err != MSV_OK)
        return err;
    rl = len >= 4 ? msv_get_u32be(v) : 0;
    if (len < 4 || rl > len - 4)
        err = MSV_ERR_PARSE;
    if (err == MSV_OK && (*roster = malloc(rl + 1)) == NULL)
        err = MSV_ERR_NOMEM;
    if (err == MSV_OK) {
        memcpy(*roster, v + 4, rl);
        *roster_len = rl;
        err = msv_mls_member_load(v + 4 + rl, len - 4 - rl, NULL, 0, m, &why);
    }
    if (err != MSV_OK) {
        free(*roster);
        *roster = NULL;
    }
    msv_secret_free(v, len);
    return err;
}

/*
 * "mls-leave:<hex of a generation's 20-byte MLS group id>" = u64be first wanted (ms) || u64be
 * next try (ms) || u64be the epoch this device held of it || its own Remove proposal there (a
 * PublicMessage): a generation this device moved on from (it joined a later one from a
 * Welcome, or founded one), which it leaves at the delivery service a day later (leaves_flush),
 * so that foundings again do not leave its memberships behind (a device is in at most 1,000
 * groups there). Written with the later generation's state, in one transaction; at most
 * LEAVES_MAX (past that the membership stays, counted as a wait given up).
 */
#define LEAVE "mls-leave:"
#define LEAVES_MAX 256
#define LEAVE_HEAD 24
/* how long a generation moved on from is kept before it is left: a device that has not read
 * its queue since the founding may still write there meanwhile, and those that moved on are
 * then told of what they cannot read rather than missing it unseen */
#define LEAVE_AFTER_MS (86400 * 1000LL)

/* The leave record of the generation old holds (its key in key, its value in *v; *v NULL when
 * none is kept: LEAVES_MAX of them waiting, or old cannot sign). */
static msv_err leave_value(struct msv_client *c, struct msv_mls_member *old, char key[KEY_MAX],
                           uint8_t **v, size_t *len)
{
    struct msv_setting *s = NULL;
    uint8_t *msg = NULL;
    size_t n = 0, msg_len = 0;
    char hex[2 * MLS_ID_LEN + 1];
    uint64_t now = (uint64_t)msv_wall_ms();
    msv_err err = msv_client_db_settings(c->db, LEAVE, LEAVES_MAX, &s, &n);

    *v = NULL;
    msv_settings_free(s, n);
    if (err != MSV_OK || old->group_id_len != MLS_ID_LEN)
        return err;
    if (n >= LEAVES_MAX) /* a count: the membership stays, as it did before leaves */
        return client_counter_bump(c, WAITS_GIVEN_UP);
    err = msv_mls_member_propose_leave(old, &msg, &msg_len);
    if (err == MSV_ERR_INVALID) /* it cannot sign (it never could send): nothing to leave with */
        return MSV_OK;
    if (err == MSV_OK && (*v = malloc(LEAVE_HEAD + msg_len)) == NULL)
        err = MSV_ERR_NOMEM;
    if (err == MSV_OK) {
        msv_put_u64be(*v, now);
        msv_put_u64be(*v + 8, now);
        msv_put_u64be(*v + 16, old->epoch);
        memcpy(*v + LEAVE_HEAD, msg, msg_len);
        *len = LEAVE_HEAD + msg_len;
        err = msv_hex_encode(old->group_id, MLS_ID_LEN, hex, sizeof(hex));
        snprintf(key, KEY_MAX, LEAVE "%s", hex);
    }
    if (err != MSV_OK) {
        free(*v);
        *v = NULL;
    }
    free(msg);
    return err;
}

/* state_save_with, and the leave record (leave_value; lv NULL: none) in the same transaction. */
static msv_err state_save_leaving(struct msv_client *c, const uint8_t gid[16],
                                  const struct msv_mls_member *m, const struct dir *dir,
                                  const char *key2, const uint8_t *value2, size_t len2,
                                  const char *lkey, const uint8_t *lv, size_t lv_len)
{
    msv_err err;

    if (lv == NULL)
        return state_save_with(c, gid, m, dir, NULL, 0, key2, value2, len2);
    err = msv_client_db_begin(c->db);
    if (err != MSV_OK) /* (no transaction to end) */
        return err;
    err = msv_client_db_set(c->db, lkey, lv, lv_len);
    if (err == MSV_OK)
        err = state_save_with(c, gid, m, dir, NULL, 0, key2, value2, len2);
    return msv_client_db_end(c->db, err);
}

/* leave_value of the generation this device holds of the group. */
static msv_err leave_held(struct msv_client *c, const uint8_t gid[16], char key[KEY_MAX],
                          uint8_t **v, size_t *len)
{
    struct msv_mls_member *old = NULL;
    uint8_t *roster = NULL;
    size_t roster_len = 0;
    msv_err err = state_load(c, gid, &old, &roster, &roster_len);

    *v = NULL;
    if (err == MSV_OK)
        err = leave_value(c, old, key, v, len);
    msv_mls_member_free(old);
    free(roster);
    return err;
}

#define CODE_MAGIC "MSV-group-code-v1"

msv_err msv_client_group_code(struct msv_client *c, const uint8_t group_id[16],
                              uint32_t *generation, uint64_t *epoch,
                              char code[MSV_GROUP_CODE_LEN + 1])
{
    struct msv_mls_member *m = NULL;
    crypto_hash_sha512_state h;
    uint8_t *roster = NULL, e[8], digest[64];
    size_t roster_len = 0, at = 0;
    msv_err err = state_load(c, group_id, &m, &roster, &roster_len);

    if (err != MSV_OK)
        return err;
    *generation = generation_of(m);
    *epoch = m->epoch;
    msv_put_u64be(e, m->epoch);
    crypto_hash_sha512_init(&h);
    crypto_hash_sha512_update(&h, (const uint8_t *)CODE_MAGIC, strlen(CODE_MAGIC));
    crypto_hash_sha512_update(&h, m->group_id, m->group_id_len);
    crypto_hash_sha512_update(&h, e, sizeof(e));
    crypto_hash_sha512_update(&h, m->s.epoch_authenticator, MSV_MLS_NH);
    crypto_hash_sha512_final(&h, digest);
    /* each group of five digits from five bytes (2^40 mod 10^5: a bias of under 10^-7) */
    for (size_t i = 0; i < 12; i++) {
        uint64_t v = 0;

        for (size_t j = 0; j < 5; j++)
            v = v << 8 | digest[5 * i + j];
        at += (size_t)snprintf(code + at, MSV_GROUP_CODE_LEN + 1 - at, "%s%05u", i ? " " : "",
                               (unsigned)(v % 100000));
    }
    sodium_memzero(digest, sizeof(digest));
    msv_mls_member_free(m);
    free(roster);
    return MSV_OK;
}

msv_err client_mls_group_ctx(struct msv_client *c, const uint8_t gid[16],
                             struct client_group_ctx *g)
{
    struct msv_mls_member *m = NULL;
    uint8_t *roster = NULL;
    size_t roster_len = 0;
    msv_err err = state_load(c, gid, &m, &roster, &roster_len);

    memset(g, 0, sizeof(*g));
    if (err == MSV_OK)
        err = client_group_ctx_parse(m->ext, m->ext_len, g);
    msv_mls_member_free(m);
    free(roster);
    return err == MSV_ERR_NOT_FOUND ? MSV_OK : err;
}

/* The roster's next entry read from r: a device and its handle; 0 at its end. */
static int roster_next(struct msv_reader *r, uint64_t *device, char handle[MSV_HANDLE_MAX + 1])
{
    const uint8_t *d, *h;
    uint16_t hl;

    if (msv_reader_bytes(r, 8, &d) != MSV_OK || msv_reader_u16be(r, &hl) != MSV_OK ||
        hl > MSV_HANDLE_MAX || msv_reader_bytes(r, hl, &h) != MSV_OK)
        return 0;
    *device = msv_get_u64be(d);
    memcpy(handle, h, hl);
    handle[hl] = '\0';
    return 1;
}

/* The handle the roster gives device (MSV_ERR_NOT_FOUND if none). */
static msv_err roster_handle(const uint8_t *roster, size_t len, uint64_t device, char out[257])
{
    struct msv_reader r;
    char handle[MSV_HANDLE_MAX + 1];
    uint64_t d;

    msv_reader_init(&r, roster, len);
    while (roster_next(&r, &d, handle))
        if (d == device) {
            memcpy(out, handle, strlen(handle) + 1);
            return MSV_OK;
        }
    return MSV_ERR_NOT_FOUND;
}

/* ---- the group's devices, from the verified directory -------------------------------------- */

/*
 * The devices of handles (n of them), from verified lookups, into dir, each with its identity;
 * with verified, each answer is first held to this device's verified marks
 * (client_check_verified).
 */
static msv_err dir_lookup(struct msv_client *c, char *const *handles, size_t n, int verified,
                          struct dir *dir)
{
    msv_err err = MSV_OK;

    memset(dir, 0, sizeof(*dir));
    for (size_t at = 0; err == MSV_OK && at < n; at += LOOKUP_BATCH) {
        size_t k = n - at < LOOKUP_BATCH ? n - at : LOOKUP_BATCH;
        msv_frame *f = NULL;

        err = client_verified_lookup(c, (const char *const *)handles + at, k, &f);
        /* a lookup that failed (refused for now, rate limited, out of reach) is tried again
         * later: what needs it stays unacknowledged */
        if (err != MSV_OK && err != MSV_ERR_NOMEM)
            err = MSV_ERR_IO;
        /* a handle listing no device (deleted, say) has no leaf to hold to its mark: its
         * leaves, none of the devices verified, send per-device copies (verified_check) */
        for (size_t i = 0; err == MSV_OK && verified && i < f->lookup_result->n_results; i++)
            if (f->lookup_result->results[i]->n_devices > 0)
                err = client_check_verified(c, &f->lookup_result->results[i], 1);
        for (size_t i = 0; err == MSV_OK && i < f->lookup_result->n_results; i++) {
            const Msv__Wire__HandleDevices *hd = f->lookup_result->results[i];
            struct dir_device *grown;

            if (dir->n + hd->n_devices > DEVICES_MAX) {
                err = MSV_ERR_TOO_BIG;
                break;
            }
            grown = realloc(dir->d, (dir->n + hd->n_devices + 1) * sizeof(*grown));
            if (grown == NULL) {
                err = MSV_ERR_NOMEM;
                break;
            }
            dir->d = grown;
            for (size_t j = 0; err == MSV_OK && j < hd->n_devices; j++) {
                struct dir_device *d = &dir->d[dir->n];

                memset(d, 0, sizeof(*d));
                d->device_id = hd->devices[j]->device_id;
                snprintf(d->handle, sizeof(d->handle), "%.*s", (int)hd->handle.len,
                         (const char *)hd->handle.data);
                if (dir_find(dir, d->device_id) != NULL)
                    continue; /* listed under two handles of one account */
                err = msv_public_identity_parse((enum msv_suite)hd->devices[j]->suite,
                                                hd->devices[j]->identity.data,
                                                hd->devices[j]->identity.len, &d->pub);
                if (err == MSV_OK)
                    dir->n++;
            }
        }
        msv_frame_free(f);
    }
    if (err != MSV_OK)
        dir_free(dir);
    return err;
}

/* The devices of the group's members (its record), each with its identity. */
static msv_err dir_load(struct msv_client *c, const uint8_t gid[16], struct dir *dir)
{
    struct msv_group_rec g = {0};
    char **members = NULL;
    size_t n = 0;
    msv_err err = msv_client_db_group_get(c->db, gid, NULL, &g);

    memset(dir, 0, sizeof(*dir));
    if (err == MSV_OK)
        err = client_members_of(g.members, &members, &n);
    if (err == MSV_OK)
        err = dir_lookup(c, members, n, 0, dir);
    free(members);
    msv_group_clear(&g);
    return err;
}

/*
 * Every leaf of m's tree checked against the verified directory: its credential names a
 * device of a member, once, and that device's identity signed its signature key. *why names
 * what failed (text holds it).
 */
static msv_err tree_check(const struct msv_mls_member *m, const struct dir *dir, char *why,
                          size_t why_len)
{
    uint64_t *seen = calloc(m->tree.n_leaves + 1, sizeof(*seen));
    size_t n_seen = 0;
    msv_err err = seen != NULL ? MSV_OK : MSV_ERR_NOMEM;

    for (uint32_t i = 0; err == MSV_OK && i < m->tree.n_leaves; i++) {
        const struct msv_mls_node *x = &m->tree.nodes[2 * i];
        const uint8_t *identity;
        size_t identity_len;
        uint64_t device = 0;
        const struct dir_device *d;
        const char *reason = NULL;

        if (x->type != 1)
            continue;
        if (msv_mlskeys_leaf_credential(x->leaf.raw, x->leaf.raw_len, &identity, &identity_len,
                                        &device) != MSV_OK) {
            snprintf(why, why_len, "leaf %u has no credential of a device", i);
            err = MSV_ERR_AUTH;
        } else if ((d = dir_find(dir, device)) == NULL) {
            snprintf(why, why_len, "leaf %u names device %llu, which no member has", i,
                     (unsigned long long)device);
            err = MSV_ERR_AUTH;
        } else if (msv_mlskeys_leaf_check(d->pub, device, &x->leaf, &reason) != MSV_OK) {
            snprintf(why, why_len, "leaf %u of %s's device %llu: %s", i, d->handle,
                     (unsigned long long)device, reason);
            err = MSV_ERR_AUTH;
        }
        for (size_t k = 0; err == MSV_OK && k < n_seen; k++)
            if (seen[k] == device) {
                snprintf(why, why_len, "device %llu holds two leaves", (unsigned long long)device);
                err = MSV_ERR_AUTH;
            }
        if (err == MSV_OK)
            seen[n_seen++] = device;
    }
    free(seen);
    return err;
}

/*
 * How many devices of dir have no leaf in m's tree; why names the first of them (text holds
 * it).
 */
static size_t uncovered(const struct msv_mls_member *m, const struct dir *dir, char *why,
                        size_t why_len)
{
    size_t missing = 0;

    for (size_t k = 0; k < dir->n; k++) {
        if (!has_device(m, dir->d[k].device_id) && missing++ == 0)
            snprintf(why, why_len, "%.257s's device %llu", dir->d[k].handle,
                     (unsigned long long)dir->d[k].device_id);
    }
    if (missing > 1) {
        size_t at = strlen(why);

        snprintf(why + at, why_len - at, " and %zu more", missing - 1);
    }
    return missing;
}

/* ---- telling ------------------------------------------------------------------------------- */

/* A notice kept in the group's history and told through on_mls_notice. */
static msv_err notice(struct msv_client *c, const uint8_t gid[16], const char *text)
{
    char conversation[40];
    msv_err err;

    msv_client_group_conversation(gid, conversation);
    err = client_notice_keep(c, conversation, text);
    if (c->on_mls_notice != NULL)
        c->on_mls_notice(c->ctx, conversation, text);
    return err;
}

msv_err client_group_notice(struct msv_client *c, const uint8_t gid[16], const char *text)
{
    return notice(c, gid, text);
}

/*
 * Tells that what this device sent (what: "a message", say) was not queued for the member
 * devices sent->full counts: the delivery service left them out, their queues full, and their
 * accounts are told by the server. The first is named by its handle in the roster (NULL: by
 * its device id alone); then ends the text.
 */
static msv_err full_notice(struct msv_client *c, const uint8_t gid[16], const uint8_t *roster,
                           size_t roster_len, const struct msv_mls_sent *sent, const char *what,
                           const char *then)
{
    char first[300] = "", handle[257], text[900];

    if (sent->full == 0)
        return MSV_OK;
    if (sent->n_full_devices > 0 &&
        roster_handle(roster, roster_len, sent->full_devices[0], handle) == MSV_OK)
        snprintf(first, sizeof(first), " (%s's device %llu first)", handle,
                 (unsigned long long)sent->full_devices[0]);
    else if (sent->n_full_devices > 0)
        snprintf(first, sizeof(first), " (device %llu first)",
                 (unsigned long long)sent->full_devices[0]);
    snprintf(text, sizeof(text),
             "%s did not reach %u of the group's devices%s: their queues on the server are full "
             "(their accounts are told)%s",
             what, sent->full, first, then);
    return notice(c, gid, text);
}

/* ---- changing the group -------------------------------------------------------------------- */

/* A KeyPackage for each device of want[] (claimed per handle, each checked), in kps[]. */
struct adds {
    uint64_t *device; /* the devices to add */
    uint8_t **kp;
    size_t *kp_len;
    size_t n;
};

static void adds_free(struct adds *a)
{
    for (size_t i = 0; i < a->n; i++)
        free(a->kp[i]);
    free(a->device);
    free(a->kp);
    free(a->kp_len);
    memset(a, 0, sizeof(*a));
}

/* Whether a KeyPackage's leaf lists the group context's extension in its capabilities. */
static int kp_carries_ctx(const uint8_t *kp, size_t len)
{
    struct msv_mls_leaf leaf;

    return msv_mls_key_package_check(SUITE, kp, len, 0, &leaf, NULL) == MSV_OK &&
           msv_mls_leaf_lists_extension(&leaf, MSV_MLS_EXT_GROUP);
}

/*
 * Claims KeyPackages of the devices of dir that want[] marks and keeps those that pass
 * msv_mlskeys_credential_check() for exactly that device; *missing counts the others, the
 * first of them described in why.
 */
static msv_err claim_adds(struct msv_client *c, const struct dir *dir, const uint8_t *want,
                          int need_ctx, struct adds *a, size_t *missing, char *why, size_t why_len)
{
    uint64_t now_s = (uint64_t)(msv_wall_ms() / 1000);
    msv_err err = MSV_OK;

    *missing = 0;
    a->device = calloc(dir->n + 1, sizeof(*a->device));
    a->kp = calloc(dir->n + 1, sizeof(*a->kp));
    a->kp_len = calloc(dir->n + 1, sizeof(*a->kp_len));
    if (a->device == NULL || a->kp == NULL || a->kp_len == NULL)
        return MSV_ERR_NOMEM;
    for (size_t i = 0; err == MSV_OK && i < dir->n; i++) {
        msv_frame *f = NULL;
        int first = 1;

        for (size_t k = 0; k < i; k++) /* one claim per handle */
            if (want[k] && strcmp(dir->d[k].handle, dir->d[i].handle) == 0)
                first = 0;
        if (!want[i] || !first)
            continue;
        err = msv_request_mls_claim(c->conn, dir->d[i].handle, TIMEOUT_MS, &f, &c->why);
        for (size_t j = i; err == MSV_OK && j < dir->n; j++) {
            const char *reason = "it has no KeyPackage";
            size_t k;

            if (!want[j] || strcmp(dir->d[j].handle, dir->d[i].handle) != 0)
                continue;
            for (k = 0; k < f->mls_key_packages->n_key_packages; k++) {
                const Msv__Wire__MlsKeyPackage *kp = f->mls_key_packages->key_packages[k];

                if (kp->device_id != dir->d[j].device_id)
                    continue;
                if (msv_mlskeys_credential_check(dir->d[j].pub, dir->d[j].device_id,
                                                 kp->key_package.data, kp->key_package.len, now_s,
                                                 &reason) != MSV_OK)
                    break;
                if (need_ctx && !kp_carries_ctx(kp->key_package.data, kp->key_package.len)) {
                    reason = "its KeyPackage cannot carry the group context (made before it: "
                             "the device replaces its KeyPackages when it next connects)";
                    break;
                }
                if ((a->kp[a->n] = malloc(kp->key_package.len)) == NULL) {
                    err = MSV_ERR_NOMEM;
                    break;
                }
                memcpy(a->kp[a->n], kp->key_package.data, kp->key_package.len);
                a->kp_len[a->n] = kp->key_package.len;
                a->device[a->n++] = dir->d[j].device_id;
                reason = NULL;
                break;
            }
            if (err == MSV_OK && reason != NULL && (*missing)++ == 0)
                snprintf(why, why_len, "%s's device %llu: %s", dir->d[j].handle,
                         (unsigned long long)dir->d[j].device_id, reason);
        }
        msv_frame_free(f);
    }
    return err;
}

/* A fresh group of one: this device's leaf, with a signature key bound to it. */
static msv_err member_new(struct msv_client *c, const uint8_t gid[16], uint32_t gen,
                          struct msv_mls_member **m)
{
    uint8_t id[MLS_ID_LEN];
    uint8_t seed[32], identity[MSV_MLSKEYS_IDENTITY_MAX];
    size_t identity_len = 0;
    uint64_t now_s = (uint64_t)(msv_wall_ms() / 1000);
    msv_err err = msv_mlskeys_credential_make(c, seed, identity, &identity_len);

    if (err == MSV_OK)
        mls_id(gid, gen, id);
    if (err == MSV_OK)
        err = msv_mls_member_create(SUITE, id, sizeof(id), seed, identity, identity_len,
                                    now_s - SKEW_S, now_s + LEAF_LIFETIME_S, m);
    sodium_memzero(seed, sizeof(seed));
    return err;
}

/* The leaves of m whose device dir does not list (never our own): removed by the commit. */
static size_t removals(const struct msv_mls_member *m, const struct dir *dir, uint32_t *leaves,
                       uint64_t *devices, uint8_t *present)
{
    size_t n = 0;

    for (uint32_t i = 0; i < m->tree.n_leaves; i++) {
        const struct msv_mls_node *x = &m->tree.nodes[2 * i];
        const uint8_t *identity;
        size_t identity_len;
        uint64_t device = 0;
        const struct dir_device *d;

        if (x->type != 1 || i == m->me)
            continue;
        if (msv_mlskeys_leaf_credential(x->leaf.raw, x->leaf.raw_len, &identity, &identity_len,
                                        &device) == MSV_OK &&
            (d = dir_find(dir, device)) != NULL) {
            present[d - dir->d] = 1;
            continue;
        }
        leaves[n] = i;
        devices[n++] = device;
    }
    return n;
}

/* Whether each of the n devices gone is one the roster names under own's handle (this account's).
 */
static int own_gone(const uint8_t *roster, size_t roster_len, const struct dir_device *own,
                    const uint64_t *gone, size_t n)
{
    char handle[MSV_HANDLE_MAX + 1];

    for (size_t i = 0; i < n; i++)
        if (own == NULL || roster_handle(roster, roster_len, gone[i], handle) != MSV_OK ||
            strcmp(handle, own->handle) != 0)
            return 0;
    return 1;
}

/* The Welcome to the n devices added, once their commit was taken. */
static msv_err send_welcome(struct msv_client *c, const struct msv_mls_member *m,
                            const uint8_t *welcome, size_t welcome_len, const uint64_t *devices,
                            size_t n, struct msv_mls_sent *sent)
{
    struct msv_mls_send s = {.group_id = m->group_id,
                             .group_id_len = m->group_id_len,
                             .kind = MSV__WIRE__MLS_KIND__MLS_KIND_WELCOME,
                             .epoch = m->epoch,
                             .message = welcome,
                             .message_len = welcome_len,
                             .recipients = devices,
                             .n_recipients = n};
    msv_err err = msv_client_connect(c);

    memset(sent, 0, sizeof(*sent));
    return err == MSV_OK ? msv_request_mls_send(c->conn, &s, TIMEOUT_MS, sent, &c->why) : err;
}

/*
 * A Welcome is kept from before its commit goes until it was sent, so that neither a crash nor
 * a failed send between the two leaves devices in the tree that never joined, unseen:
 * "mls-welcome:<hex of the group id>" = u32be generation || u64be epoch it is for || u32be n ||
 * n x u64be device || the Welcome (or its reference).
 */
#define WELCOME_KEPT "mls-welcome:"
#define WELCOME_HEAD 16u

static msv_err welcome_record(uint32_t gen, uint64_t epoch, const struct adds *a, const uint8_t *w,
                              size_t w_len, uint8_t **out, size_t *out_len)
{
    struct msv_buf b;
    uint8_t head[WELCOME_HEAD], be[8];

    msv_buf_init(&b, WELCOME_HEAD + 8 * (size_t)DEVICES_MAX + BY_REF_MAX);
    msv_put_u32be(head, gen);
    msv_put_u64be(head + 4, epoch);
    msv_put_u32be(head + 12, (uint32_t)a->n);
    msv_buf_put(&b, head, sizeof(head));
    for (size_t i = 0; i < a->n; i++) {
        msv_put_u64be(be, a->device[i]);
        msv_buf_put(&b, be, sizeof(be));
    }
    msv_buf_put(&b, w, w_len);
    return msv_buf_finish(&b, out, out_len);
}

/*
 * Under the lock, m the state held: the Welcome kept for the group (stored with the state its
 * commit made, in one transaction) sent if m is at the epoch it is for, then forgotten; kept if
 * the server is out of reach, for the next try; forgotten and told if the server refuses it or
 * the group moved past it unsent (its devices have leaves but never joined); forgotten if it is
 * malformed or of another generation. *waiting: it is kept still.
 */
static msv_err welcome_flush(struct msv_client *c, const uint8_t gid[16],
                             const struct msv_mls_member *m, int *waiting)
{
    char key[KEY_MAX], text[400];
    uint8_t *v = NULL;
    size_t len = 0, n;
    uint64_t epoch;
    uint64_t *devices = NULL;
    struct msv_mls_sent sent = {0};
    msv_err err = msv_client_db_get(c->db, group_key(WELCOME_KEPT, gid, key), &v, &len);

    *waiting = 0;
    if (err == MSV_ERR_NOT_FOUND)
        return MSV_OK;
    if (err != MSV_OK)
        return err;
    n = len >= WELCOME_HEAD ? msv_get_u32be(v + 12) : 0;
    if (len < WELCOME_HEAD || n == 0 || n > (len - WELCOME_HEAD) / 8 ||
        len - WELCOME_HEAD - 8 * n == 0 || msv_get_u32be(v) != generation_of(m) ||
        (epoch = msv_get_u64be(v + 4)) > m->epoch)
        goto forget; /* malformed, or its commit never took */
    if (epoch < m->epoch) {
        snprintf(text, sizeof(text),
                 "%zu device%s added to this MLS group at epoch %llu (device %llu first) did not "
                 "get the Welcome before the group moved on: %s not read the group's messages "
                 "until an admin removes and adds %s again",
                 n, n == 1 ? "" : "s", (unsigned long long)epoch,
                 (unsigned long long)msv_get_u64be(v + WELCOME_HEAD),
                 n == 1 ? "it does" : "they do", n == 1 ? "it" : "them");
        err = notice(c, gid, text);
        goto forget;
    }
    if ((devices = calloc(n, sizeof(*devices))) == NULL) {
        free(v);
        return MSV_ERR_NOMEM;
    }
    for (size_t i = 0; i < n; i++)
        devices[i] = msv_get_u64be(v + WELCOME_HEAD + 8 * i);
    err =
        send_welcome(c, m, v + WELCOME_HEAD + 8 * n, len - WELCOME_HEAD - 8 * n, devices, n, &sent);
    if (err == MSV_ERR_IO) {
        *waiting = 1; /* out of reach: the next sync or receive sends it again */
        free(devices);
        free(v);
        return MSV_OK;
    }
    if (err != MSV_OK) {
        snprintf(text, sizeof(text),
                 "the Welcome to %zu device%s added to this MLS group (device %llu first) was "
                 "refused by the server (%.150s): %s not read the group's messages until an admin "
                 "removes and adds %s again",
                 n, n == 1 ? "" : "s", (unsigned long long)devices[0], c->why.message,
                 n == 1 ? "it does" : "they do", n == 1 ? "it" : "them");
        err = notice(c, gid, text);
    } else if (sent.full > 0) {
        snprintf(text, sizeof(text), "the Welcome to %zu device%s added to this MLS group", n,
                 n == 1 ? "" : "s");
        full_notice(c, gid, NULL, 0, &sent, text,
                    "; those do not read the group's messages until an admin's device adds them "
                    "again, which their next message to the group asks for");
    }
forget:
    free(devices);
    free(v);
    return err == MSV_OK ? msv_client_db_unset(c->db, key) : err;
}

/*
 * A commit of this device's is kept from before it goes to the delivery service until its
 * answer came, with the state it makes and its Welcome, so that a crash or a lost answer in
 * between does not leave the device behind the group its own commit moved on (and the devices
 * it added without their Welcome): "mls-own-commit:<hex of the group id>" = u32be generation ||
 * u64be epoch it was made at || SHA-256 of the commit as sent (or of its reference) || u32be
 * length of the Welcome record (welcome_record's, for the epoch after; 0: none) || that record
 * || the state the commit makes, as stored (state_put). The group's commit log settles it
 * (own_commit_settle): the same commit there, from this device, at the epoch of the state this
 * device holds, makes that state the one held, its Welcome kept to be sent; anything else
 * forgets it.
 */
#define OWN_COMMIT "mls-own-commit:"
#define OWN_HEAD 48u

/* Under the lock, before commit goes: the record of it (m holds it as its pending epoch). */
static msv_err own_commit_keep(struct msv_client *c, const uint8_t gid[16],
                               const struct msv_mls_member *m, const struct dir *dir,
                               const uint8_t *commit, size_t commit_len, const uint8_t *kept,
                               size_t kept_len)
{
    struct msv_buf b;
    uint8_t head[OWN_HEAD], *out = NULL;
    size_t out_len = 0;
    char key[KEY_MAX];
    msv_err err;

    msv_put_u32be(head, generation_of(m));
    msv_put_u64be(head + 4, m->epoch);
    crypto_hash_sha256(head + 12, commit, commit_len);
    msv_put_u32be(head + 44, (uint32_t)kept_len);
    msv_buf_init(&b, OWN_HEAD + kept_len + MSV_MLS_STATE_MAX);
    msv_buf_put(&b, head, sizeof(head));
    msv_buf_put(&b, kept, kept_len);
    err = state_put(m->pending, dir, NULL, 0, &b);
    if (err == MSV_OK)
        err = msv_buf_finish(&b, &out, &out_len);
    else
        msv_buf_clear(&b);
    if (err == MSV_OK)
        err = msv_client_db_set(c->db, group_key(OWN_COMMIT, gid, key), out, out_len);
    msv_secret_free(out, out_len);
    return err;
}

/* Whether d (unpacked from the log's entry l) is a commit of group id at epoch. */
static int logged_commit(const Msv__Wire__MlsDelivery *d, const Msv__Wire__MlsLogged *l,
                         const uint8_t id[MLS_ID_LEN], uint64_t epoch)
{
    return d != NULL && d->kind == MSV__WIRE__MLS_KIND__MLS_KIND_COMMIT && d->epoch == epoch &&
           l->epoch == epoch && d->group_id.len == MLS_ID_LEN &&
           memcmp(d->group_id.data, id, MLS_ID_LEN) == 0;
}

/* Under the lock: the record forgotten (its answer came). */
static msv_err own_commit_forget(struct msv_client *c, const uint8_t gid[16])
{
    char key[KEY_MAX];

    return msv_client_db_unset(c->db, group_key(OWN_COMMIT, gid, key));
}

/* Under the lock: a founding again of this device's done: its marks gone, its time stamped. */
static msv_err own_commit_founded(struct msv_client *c, const uint8_t gid[16])
{
    char key[KEY_MAX];
    msv_err err = msv_client_db_unset(c->db, flag_key(gid, key));

    if (err == MSV_OK)
        err = msv_client_db_unset(c->db, group_key(LOST, gid, key));
    return err == MSV_OK ? founded_now(c, gid) : err;
}

/* Under the lock: whether this device holds no state of group gid (not: one it cannot read). */
static int state_absent(struct msv_client *c, const uint8_t gid[16])
{
    char key[sizeof(PREFIX) + 32];
    uint8_t *v = NULL;
    size_t len = 0;
    msv_err err;

    state_key(gid, key);
    err = msv_client_db_get(c->db, key, &v, &len);
    msv_secret_free(v, len);
    return err == MSV_ERR_NOT_FOUND;
}

/*
 * Under the lock: the state a kept commit of generation gen was made at epoch from is the one
 * held (of that generation at that epoch; for a founding, epoch 0, none of that generation or
 * later, and none that could not be read).
 */
static int own_commit_from_held(struct msv_client *c, const uint8_t gid[16], uint32_t gen,
                                uint64_t epoch)
{
    uint64_t held_epoch = 0;
    int64_t held = held_generation(c, gid, &held_epoch);

    if (held == (int64_t)gen && held_epoch == epoch)
        return 1;
    return epoch == 0 && (held >= 0 ? held < (int64_t)gen : state_absent(c, gid));
}

/*
 * Under the lock: this device's commit kept (OWN_COMMIT, its record v as stored), if it was made
 * at epoch at_epoch of generation at_gen (else nothing changes), against the commit the group's
 * log holds there
 * (logged, as sent; NULL: none there; mine: this device sent it). The same one, while this
 * device still holds the state it was made from, makes the state it made the one held and
 * keeps its Welcome to be sent, in one transaction (*adopted then), and sends that Welcome at
 * once (welcome_flush: the group may move on before the receive ends). Anything else forgets
 * the record: the delivery service never took it (another member's commit, or none, at that
 * epoch), or the state moved on.
 */
static msv_err own_commit_settle(struct msv_client *c, const uint8_t gid[16], const uint8_t *v,
                                 size_t len, uint32_t at_gen, uint64_t at_epoch,
                                 const uint8_t *logged, size_t logged_len, int mine, int *adopted)
{
    char skey[sizeof(PREFIX) + 32], wkey[KEY_MAX];
    uint8_t digest[32];
    size_t kept_len = len >= OWN_HEAD ? msv_get_u32be(v + 44) : 0;
    int whole = len >= OWN_HEAD && kept_len < len - OWN_HEAD; /* a record of this version's */
    msv_err err = MSV_OK;

    *adopted = 0;
    if (whole && (msv_get_u32be(v) != at_gen || msv_get_u64be(v + 4) != at_epoch))
        return MSV_OK; /* the log's word on another commit of ours */
    if (whole && logged != NULL && mine && own_commit_from_held(c, gid, at_gen, at_epoch)) {
        crypto_hash_sha256(digest, logged, logged_len);
        if (sodium_memcmp(digest, v + 12, 32) == 0) {
            state_key(gid, skey);
            err = kept_len > 0 ? msv_client_db_set2(c->db, skey, v + OWN_HEAD + kept_len,
                                                    len - OWN_HEAD - kept_len,
                                                    group_key(WELCOME_KEPT, gid, wkey),
                                                    v + OWN_HEAD, kept_len)
                               : msv_client_db_set(c->db, skey, v + OWN_HEAD + kept_len,
                                                   len - OWN_HEAD - kept_len);
            *adopted = err == MSV_OK;
            if (err == MSV_OK) /* every commit of ours updates our leaf */
                err = committed_now(c, gid);
            /* a founding again done (generation 0 is the group's first founding) */
            if (err == MSV_OK && at_epoch == 0 && at_gen > 0)
                err = own_commit_founded(c, gid);
        }
    }
    if (err == MSV_OK)
        err = own_commit_forget(c, gid);
    /* its Welcome at once, while the group is at the epoch it is for */
    if (err == MSV_OK && *adopted && kept_len > 0) {
        struct msv_mls_member *m = NULL;
        uint8_t *roster = NULL;
        size_t roster_len = 0;
        int waiting = 0;

        err = state_load(c, gid, &m, &roster, &roster_len);
        if (err == MSV_OK)
            err = welcome_flush(c, gid, m, &waiting);
        msv_mls_member_free(m);
        free(roster);
    }
    return err;
}

/*
 * Under the lock: a commit of this device's kept (OWN_COMMIT) settled against the group's log
 * before anything else is committed (a new commit would take its record's place); one whose
 * state the device holds no longer (moved on) is forgotten without asking. A log that cannot
 * be read now (no answer, or refused for the rate) leaves it kept: MSV_ERR_IO, said in c->why.
 */
static msv_err own_commit_resolve(struct msv_client *c, const uint8_t gid[16])
{
    char key[KEY_MAX];
    uint8_t *v = NULL, id[MLS_ID_LEN];
    size_t len = 0;
    msv_frame *r = NULL;
    const uint8_t *logged = NULL;
    size_t logged_len = 0;
    Msv__Wire__MlsDelivery *d = NULL;
    uint64_t epoch, held_epoch = 0;
    uint32_t gen;
    int64_t held;
    int mine = 0, adopted = 0;
    msv_err err = msv_client_db_get(c->db, group_key(OWN_COMMIT, gid, key), &v, &len), asked;

    if (err == MSV_ERR_NOT_FOUND)
        return MSV_OK;
    if (err != MSV_OK)
        return err;
    if (len < OWN_HEAD) {
        msv_secret_free(v, len);
        return own_commit_forget(c, gid);
    }
    gen = msv_get_u32be(v);
    epoch = msv_get_u64be(v + 4);
    held = held_generation(c, gid, &held_epoch);
    if (held > (int64_t)gen || (held == (int64_t)gen && held_epoch > epoch)) {
        msv_secret_free(v, len);
        /* a founding again whose state is held: what a crash left of its end finished */
        if (held == (int64_t)gen && epoch == 0 && gen > 0)
            err = own_commit_founded(c, gid);
        return err == MSV_OK ? own_commit_forget(c, gid) : err;
    }
    mls_id(gid, gen, id);
    memset(&c->why, 0, sizeof(c->why));
    asked = c->conn != NULL ? MSV_OK : msv_client_connect(c);
    if (asked == MSV_OK)
        asked = msv_request_mls_commits(c->conn, id, sizeof(id), epoch, TIMEOUT_MS, &r, &c->why);
    if (ask_again_later(c, asked)) {
        msv_frame_free(r);
        msv_secret_free(v, len);
        snprintf(c->why.message, sizeof(c->why.message),
                 "a commit of this device's to the group waits for the server's log to say "
                 "whether it was taken, and no other is made meanwhile");
        return MSV_ERR_IO;
    }
    /* the log's commit at that epoch, if it holds one (none, not a member: never taken) */
    for (size_t i = 0; asked == MSV_OK && i < r->mls_commits->n_commits && logged == NULL; i++) {
        const Msv__Wire__MlsLogged *l = r->mls_commits->commits[i];

        if (l->epoch != epoch)
            continue;
        d = msv__wire__mls_delivery__unpack(NULL, l->delivery.len, l->delivery.data);
        if (!logged_commit(d, l, id, epoch))
            break;
        logged = d->message.data;
        logged_len = d->message.len;
        mine = l->sender_device == c->device_id;
    }
    err = own_commit_settle(c, gid, v, len, gen, epoch, logged, logged_len, mine, &adopted);
    msv_secret_free(v, len);
    msv__wire__mls_delivery__free_unpacked(d, NULL);
    msv_frame_free(r);
    return err;
}

/*
 * msg as it goes to the delivery service: itself if it fits one send (c->mls_inline_max, else
 * MLS_MESSAGE_MAX), else replaced by a reference to it in the attachment store, encrypted there
 * under a fresh key.
 */
static msv_err by_reference(struct msv_client *c, uint8_t **msg, size_t *len)
{
    size_t inline_max = c->mls_inline_max > 0 ? c->mls_inline_max : MLS_MESSAGE_MAX;
    uint8_t key[MSV_ATTACHMENT_KEY_LEN], *ref;
    struct msv_attachment_digest d;
    char uri[81];
    size_t n = 0;
    msv_err err;

    if (*msg == NULL || *len <= inline_max)
        return MSV_OK;
    if (*len > BY_REF_MAX) {
        snprintf(c->why.message, sizeof(c->why.message),
                 "it would be %zu bytes, more than the %zu MiB a member fetches", *len,
                 BY_REF_MAX >> 20);
        return MSV_ERR_TOO_BIG;
    }
    if ((ref = malloc(BY_REF_LEN)) == NULL)
        return MSV_ERR_NOMEM;
    msv_attachment_key_generate(key);
    err = client_upload_blob(c, key, *msg, *len, NULL, &d, uri, sizeof(uri));
    ref[0] = BY_REF_MARK;
    ref[1] = BY_REF_VERSION;
    msv_put_u32be(ref + 2, (uint32_t)*len);
    if (err == MSV_OK && (strncmp(uri, "blob:", 5) != 0 ||
                          msv_hex_decode(uri + 5, ref + 6, 32, &n) != MSV_OK || n != 32))
        err = MSV_ERR_UNSUPPORTED;
    memcpy(ref + 38, key, MSV_ATTACHMENT_KEY_LEN);
    memcpy(ref + 38 + MSV_ATTACHMENT_KEY_LEN, d.sha256, 32);
    sodium_memzero(key, sizeof(key));
    if (err != MSV_OK) {
        free(ref);
        return err;
    }
    free(*msg);
    *msg = ref;
    *len = BY_REF_LEN;
    return MSV_OK;
}

/*
 * The commit or Welcome a delivery's message names by reference, fetched and checked (*out
 * NULL: msg is the MLSMessage itself). MSV_ERR_IO for what may work on the next receive (the
 * network, the store), MSV_ERR_PARSE for a malformed reference, else why the fetch failed.
 */
msv_err msv_mls_ref_parse(const uint8_t *msg, size_t len, struct msv_mls_ref *ref)
{
    memset(ref, 0, sizeof(*ref));
    if (len == 0 || msg[0] != BY_REF_MARK)
        return MSV_ERR_NOT_FOUND;
    if (len != BY_REF_LEN || msg[1] != BY_REF_VERSION || msv_get_u32be(msg + 2) == 0 ||
        msv_get_u32be(msg + 2) > BY_REF_MAX)
        return MSV_ERR_PARSE;
    memcpy(ref->uri, "blob:", 5);
    if (msv_hex_encode(msg + 6, 32, ref->uri + 5, sizeof(ref->uri) - 5) != MSV_OK)
        return MSV_ERR_PARSE;
    ref->size = msv_get_u32be(msg + 2);
    memcpy(ref->key, msg + 38, MSV_ATTACHMENT_KEY_LEN);
    memcpy(ref->sha256, msg + 38 + MSV_ATTACHMENT_KEY_LEN, 32);
    return MSV_OK;
}

static msv_err resolve(struct msv_client *c, uint64_t sender_device, const uint8_t *msg, size_t len,
                       uint8_t **out, size_t *out_len)
{
    struct msv_attachment_ref a = {0};
    struct msv_mls_ref ref;
    msv_err err = msv_mls_ref_parse(msg, len, &ref);

    *out = NULL;
    if (err == MSV_ERR_NOT_FOUND)
        return MSV_OK; /* the MLSMessage itself */
    if (err == MSV_OK)
        err = by_ref_spend(c, sender_device, ref.size);
    if (err != MSV_OK) {
        sodium_memzero(ref.key, sizeof(ref.key));
        return err;
    }
    a.uri = ref.uri;
    memcpy(a.key, ref.key, MSV_ATTACHMENT_KEY_LEN);
    memcpy(a.sha256, ref.sha256, 32);
    sodium_memzero(ref.key, sizeof(ref.key));
    err = msv_client_connect(c);
    if (err == MSV_OK)
        err = client_fetch_blob(c, &a, ref.size, out, out_len);
    sodium_memzero(a.key, sizeof(a.key));
    /* one larger than it said is not it (MSV_ERR_TOO_BIG says the allowance alone) */
    if ((err == MSV_OK && *out_len != ref.size) || err == MSV_ERR_TOO_BIG)
        err = MSV_ERR_AUTH;
    if (err != MSV_OK) {
        free(*out);
        *out = NULL;
    }
    return err == MSV_ERR_NOMEM ? MSV_ERR_IO : err;
}

/*
 * One attempt at making the MLS group follow the group's members, under the lock: the state
 * loaded (or a new group of one if start), devices no member has removed, the members' devices
 * without a leaf added, the commit sent and, once taken, merged and saved, then the Welcome
 * sent. MSV_ERR_REPLAY: the delivery service had a newer epoch (nothing changed).
 */
static int self_is_admin(struct msv_client *c, const uint8_t gid[16]);
static int join_waiting(struct msv_client *c, uint64_t device);

/* The setting prefix || hex of the group id set to u64be wall ms now. */
static msv_err stamp_now(struct msv_client *c, const char *prefix, const uint8_t gid[16])
{
    char key[KEY_MAX];
    uint8_t now[8];

    msv_put_u64be(now, (uint64_t)msv_wall_ms());
    return msv_client_db_set(c->db, group_key(prefix, gid, key), now, sizeof(now));
}

/* The wall ms stamp_now last recorded under prefix for the group; -1 if none. */
static int64_t stamp_of(struct msv_client *c, const char *prefix, const uint8_t gid[16])
{
    char key[KEY_MAX];
    uint8_t *v = NULL;
    size_t len = 0;
    int64_t at = -1;

    if (msv_client_db_get(c->db, group_key(prefix, gid, key), &v, &len) == MSV_OK && len == 8)
        at = (int64_t)msv_get_u64be(v);
    free(v);
    return at;
}

static msv_err founded_now(struct msv_client *c, const uint8_t gid[16])
{
    return stamp_now(c, FOUNDED, gid);
}

/* The minutes since this device last founded the group again, if that is under
 * REFOUND_MIN_MS (a time ahead of the clock counts as now); -1 otherwise. */
static int64_t founded_lately(struct msv_client *c, const uint8_t gid[16])
{
    int64_t now = msv_wall_ms(), at = stamp_of(c, FOUNDED, gid);

    if (at < 0)
        return -1;
    /* a time ahead of the clock (it went back since) counts as now, and is recorded so */
    if (at > now) {
        at = now;
        if (founded_now(c, gid) != MSV_OK)
            c->why.message[0] = '\0'; /* counted from now all the same */
    }
    return now - at < REFOUND_MIN_MS ? (now - at) / 60000 : -1;
}

/*
 * A member's device that holds no usable state of the group's MLS group (none, restored from a
 * backup, or behind for good) says so on its per-device copies (mls_outside): an admin's device
 * then replaces its leaf, removing it and adding the device again from a fresh KeyPackage in one
 * commit, whose Welcome brings it to the group's epoch (docs/crypto.md, "Joining again").
 * "mls-rejoin:<hex of the group id><hex of the device>" = u64be wall ms asked || u64be wall ms
 * of the last try or of when it was done (0: none yet) || u8 done || the hash of the leaf the
 * device said it cannot use (leaf_hash), all zero for a device with no leaf. Waiting while
 * not done: after a try whose KeyPackage could not be claimed, tried again at a later sync of
 * the group (the device's next ask brings one about) no sooner than REJOIN_RETRY_MS; given up
 * after MSV_MLS_JOIN_DAYS. Done once replaced, or once its leaf changed otherwise
 * (another admin's device replaced it, or the device updated it itself): then no replacement of
 * it within REJOIN_EVERY_MS. At most REJOIN_MAX records in all.
 */
#define REJOIN "mls-rejoin:"
#define REJOIN_VALUE 49
#define REJOIN_MAX 256
#define REJOIN_EVERY_MS (3600LL * 1000)
#define REJOIN_RETRY_MS (15LL * 60 * 1000)
#define REJOINS_HELD "mls-rejoins-held"

uint64_t msv_client_mls_rejoins_held(struct msv_client *c)
{
    return client_counter(c, REJOINS_HELD);
}

static const char *rejoin_key(const uint8_t gid[16], uint64_t device, char key[KEY_MAX])
{
    size_t at = strlen(group_key(REJOIN, gid, key));

    snprintf(key + at, KEY_MAX - at, "%016llx", (unsigned long long)device);
    return key;
}

static void leaf_hash(const struct msv_mls_member *m, uint32_t i, uint8_t hash[32])
{
    const struct msv_mls_node *x = &m->tree.nodes[2 * i];

    crypto_generichash(hash, 32, x->leaf.raw, x->leaf.raw_len, NULL, 0);
}

/* Whether wall ms at is within span before now (a time ahead of the clock counts as long ago). */
static int within(int64_t at, int64_t now, int64_t span)
{
    return at != 0 && at <= now && now - at < span;
}

/* Sets device's record: asked at asked, last at last, done or waiting for the leaf hash. */
static msv_err rejoin_set(struct msv_client *c, const uint8_t gid[16], uint64_t device,
                          int64_t asked, int64_t last, int done, const uint8_t hash[32])
{
    char key[KEY_MAX];
    uint8_t v[REJOIN_VALUE] = {0};

    msv_put_u64be(v, (uint64_t)asked);
    msv_put_u64be(v + 8, (uint64_t)last);
    v[16] = (uint8_t)done;
    if (hash != NULL)
        memcpy(v + 17, hash, 32);
    return msv_client_db_set(c->db, rejoin_key(gid, device, key), v, sizeof(v));
}

/*
 * The devices of dir whose leaf in m waits to be replaced and is due: want[k] set and leaf[k]
 * its leaf, at most room of them (*more if others wait). A record whose leaf changed or went
 * is done now; one of another generation's tree, too.
 */
static size_t rejoins_due(struct msv_client *c, const uint8_t gid[16],
                          const struct msv_mls_member *m, const struct dir *dir, uint8_t *want,
                          uint32_t *leaf, size_t room, int *more)
{
    struct msv_setting *s = NULL;
    char prefix[KEY_MAX];
    size_t n = 0, due = 0;
    int64_t now = msv_wall_ms();

    if (msv_client_db_settings(c->db, group_key(REJOIN, gid, prefix), REJOIN_MAX, &s, &n) != MSV_OK)
        return 0;
    for (size_t i = 0; i < n; i++) {
        unsigned long long device = 0;
        const struct dir_device *d = NULL;
        uint32_t at = UINT32_MAX;
        uint8_t hash[32];

        if (s[i].len != REJOIN_VALUE || s[i].value[16] != 0 ||
            sscanf(s[i].key + strlen(prefix), "%16llx", &device) != 1)
            continue;
        /* given up after days (the device asks again if it still needs to) */
        if (!within((int64_t)msv_get_u64be(s[i].value), now,
                    (int64_t)MSV_MLS_JOIN_DAYS * 86400 * 1000)) {
            if (msv_client_db_unset(c->db, s[i].key) != MSV_OK)
                c->why.message[0] = '\0';
            continue;
        }
        if ((d = dir_find(dir, device)) != NULL && (at = leaf_of(m, device)) != UINT32_MAX)
            leaf_hash(m, at, hash);
        if (d == NULL || at == UINT32_MAX || at == m->me ||
            memcmp(hash, s[i].value + 17, 32) != 0) {
            /* its leaf changed (replaced by another, updated by the device itself) or went */
            if (rejoin_set(c, gid, device, (int64_t)msv_get_u64be(s[i].value), now, 1, NULL) !=
                MSV_OK)
                c->why.message[0] = '\0'; /* looked at again at the next sync */
            continue;
        }
        if (within((int64_t)msv_get_u64be(s[i].value + 8), now, REJOIN_RETRY_MS))
            continue; /* its KeyPackage could not be claimed lately */
        if (due == room) {
            *more = 1;
            continue;
        }
        want[d - dir->d] = 1;
        leaf[d - dir->d] = at;
        due++;
    }
    msv_settings_free(s, n);
    return due;
}

/*
 * The records of the devices of dir that want[] marks, once their KeyPackages were claimed (r
 * holds those claimed): with done, those claimed are done now (their commit was taken);
 * without, those not claimed were tried now (the time asked kept).
 */
static void rejoins_mark(struct msv_client *c, const uint8_t gid[16],
                         const struct msv_mls_member *m, const struct dir *dir, const uint8_t *want,
                         const struct adds *r, int done)
{
    int64_t now = msv_wall_ms();

    for (size_t k = 0; k < dir->n; k++) {
        uint64_t device = dir->d[k].device_id;
        int claimed = 0;
        int64_t asked = now;
        uint8_t hash[32], *v = NULL;
        size_t len = 0;
        char key[KEY_MAX];

        for (size_t j = 0; want[k] && j < r->n && !claimed; j++)
            claimed = r->device[j] == device;
        if (!want[k] || claimed != done)
            continue;
        if (msv_client_db_get(c->db, rejoin_key(gid, device, key), &v, &len) == MSV_OK &&
            len == REJOIN_VALUE)
            asked = (int64_t)msv_get_u64be(v);
        free(v);
        if (!done)
            leaf_hash(m, leaf_of(m, device), hash);
        /* a failure to record: a replaced leaf changed, so the next sync makes it done; one not
         * claimed is tried again at once */
        if (rejoin_set(c, gid, device, asked, now, done, done ? NULL : hash) != MSV_OK)
            c->why.message[0] = '\0';
    }
}

/* Whether a device waits for its leaf to be replaced in the group. */
static int rejoin_waiting(struct msv_client *c, const uint8_t gid[16])
{
    struct msv_setting *s = NULL;
    char prefix[KEY_MAX];
    size_t n = 0;
    int waiting = 0;

    if (msv_client_db_settings(c->db, group_key(REJOIN, gid, prefix), REJOIN_MAX, &s, &n) != MSV_OK)
        return 0;
    for (size_t i = 0; i < n && !waiting; i++)
        waiting = s[i].len == REJOIN_VALUE && s[i].value[16] == 0;
    msv_settings_free(s, n);
    return waiting;
}

/*
 * "mls-lost:<hex of the group id>" = u32be the highest generation of the group's MLS group that
 * a delivery named while this device held none of it, on a device of the group's only admin
 * account (restored from a backup, say): nobody else can add it again, so it founds the group
 * again past that generation at the end of the receive (at most hourly), every device added
 * anew (docs/crypto.md, "Joining again"). Forgotten once founded.
 */
#define LOST_GEN_MAX 0x7fffffffu

static int64_t lost_generation(struct msv_client *c, const uint8_t gid[16])
{
    char key[KEY_MAX];
    uint8_t *v = NULL;
    size_t len = 0;
    int64_t gen = -1;

    if (msv_client_db_get(c->db, group_key(LOST, gid, key), &v, &len) == MSV_OK && len == 4)
        gen = msv_get_u32be(v);
    free(v);
    return gen;
}

/*
 * "mls-gen-taken:<hex of the group id>" = u32be generation || u8 how (1: this device is no
 * member of it; 0: refused as stale) || u64be wall ms: a generation of the group's MLS group
 * that this device's founding found held at the delivery service by a group it did not make:
 * someone who knows the group's id (a member, or one removed) made it first, or another admin's
 * device founded it at the same moment (whose Welcome a receive brings). The next founding goes
 * past it, by a distance nobody can guess (GEN_JUMP), once that other founding could not be an
 * admin's (this device is no member of it) or its Welcome had a minute to come (a device that
 * joined it since founds past it anyway). Forgotten once this device founds the group.
 */
#define GEN_TAKEN "mls-gen-taken:"
#define GEN_TAKEN_VALUE 13
#define GEN_JUMP (1u << 16)
#define GEN_TAKEN_WAIT_MS 60000

static uint32_t past_taken(struct msv_client *c, const uint8_t gid[16], uint32_t gen, int *waits)
{
    char key[KEY_MAX];
    uint8_t *v = NULL;
    size_t len = 0;
    uint32_t taken = 0, span = 0;
    int64_t since = 0;

    *waits = 0;
    if (msv_client_db_get(c->db, group_key(GEN_TAKEN, gid, key), &v, &len) == MSV_OK &&
        len == GEN_TAKEN_VALUE && (taken = msv_get_u32be(v)) >= gen && taken < LOST_GEN_MAX) {
        since = msv_wall_ms() - (int64_t)msv_get_u64be(v + 5);
        /* (a clock moved back since ends the wait rather than making it last) */
        *waits = v[4] == 0 && since >= 0 && since < GEN_TAKEN_WAIT_MS;
        span = LOST_GEN_MAX - 1 - taken < GEN_JUMP ? LOST_GEN_MAX - 1 - taken : GEN_JUMP;
    }
    free(v);
    return span > 0 && !*waits ? taken + 1 + randombytes_uniform(span) : gen;
}

/* The founding of generation gen refused (how: as past_taken's): recorded, unless one refused
 * before is recorded for it (its time stands). */
static msv_err taken_record(struct msv_client *c, const uint8_t gid[16], uint32_t gen, int how)
{
    char key[KEY_MAX];
    uint8_t *v = NULL, next[GEN_TAKEN_VALUE];
    size_t len = 0;
    int same = msv_client_db_get(c->db, group_key(GEN_TAKEN, gid, key), &v, &len) == MSV_OK &&
               len == GEN_TAKEN_VALUE && msv_get_u32be(v) == gen && v[4] >= how;

    free(v);
    if (same)
        return MSV_OK;
    msv_put_u32be(next, gen);
    next[4] = (uint8_t)how;
    msv_put_u64be(next + 5, (uint64_t)msv_wall_ms());
    return msv_client_db_set(c->db, key, next, sizeof(next));
}

/* ---- the group context's authority (docs/crypto.md, "The group context") ---------------- */

/* How far past the signed state this device holds a group context may name one: the change on
 * its way to it (a context further on is refused: no member could check it, and a made-up one
 * would keep the other admins out for as many changes). */
#define CTX_AHEAD_MAX 1

/*
 * Whether the group context g names a signed state newer than this device's copy, or that very
 * state, or the device holds none: then it has a say in who the admins are. (Of the same epoch
 * and another hash, the copy, which the device checked, stands alone.)
 */
static int ctx_governs(struct msv_client *c, const uint8_t gid[16],
                       const struct client_group_ctx *g)
{
    uint64_t epoch = 0;
    uint8_t hash[32];

    if (!g->present)
        return 0;
    if (client_group_state_digest(c, gid, &epoch, hash, NULL) != MSV_OK)
        return 1;
    return g->state_epoch > epoch ||
           (g->state_epoch == epoch && memcmp(g->state_hash, hash, 32) == 0);
}

/* Whether handle is an admin of the signed state this device holds of the group. */
static int signed_admin(struct msv_client *c, const uint8_t gid[16], const char *handle)
{
    char *admins = NULL, **list = NULL;
    size_t n = 0;
    int admin = 0;

    if (msv_client_group_admins(c, gid, &admins) != MSV_OK)
        return 0;
    if (client_members_of(admins, &list, &n) == MSV_OK)
        for (size_t i = 0; i < n && !admin; i++)
            admin = strcmp(list[i], handle) == 0;
    free(list);
    free(admins);
    return admin;
}

/*
 * Whether handle is an admin of the group: by the signed state this device holds, and, when the
 * context names one as new or newer (ctx_governs), by the context too. A context ahead of the
 * copy carries removals of admins the copy has not seen (a change withheld); it never makes an
 * admin the copy does not name, and one an admin made up keeps another admin out only until
 * that admin's next signed change (its copy then reaches the epoch named, with another hash).
 */
static int handle_admin(struct msv_client *c, const uint8_t gid[16],
                        const struct client_group_ctx *g, const char *handle)
{
    if (ctx_governs(c, gid, g) && !client_group_ctx_admin(g, handle))
        return 0;
    return signed_admin(c, gid, handle);
}

/* Whether every leaf of m's tree lists the group context's extension in its capabilities. */
static int leaves_carry_ctx(const struct msv_mls_member *m)
{
    for (uint32_t i = 0; i < m->tree.n_leaves; i++)
        if (m->tree.nodes[2 * i].type == 1 &&
            !msv_mls_leaf_lists_extension(&m->tree.nodes[2 * i].leaf, MSV_MLS_EXT_GROUP))
            return 0;
    return 1;
}

/*
 * Why the group context m holds now (after a commit, or joined from a Welcome) is refused, or
 * NULL; after is set to it. It must parse, and, after a commit (before: the context until
 * then), keep the extension once carried, and take neither the signed state nor the invite
 * link back to an earlier version. It may not name a signed state more than CTX_AHEAD_MAX past
 * the one this device holds, nor, for the one it holds, other admins than it names; and while
 * a context is carried, every leaf must be able to carry it (so that no member can freeze it).
 */
static const char *context_refused(struct msv_client *c, const uint8_t gid[16],
                                   const struct msv_mls_member *m, struct client_group_ctx *after,
                                   const struct client_group_ctx *before)
{
    uint64_t epoch = 0;
    uint8_t hash[32];
    char *admins = NULL;
    const char *why = NULL;
    int held;

    if (client_group_ctx_parse(m->ext, m->ext_len, after) != MSV_OK)
        return "its group context does not parse";
    if (after->others > 0)
        return "its group context carries extensions a Missive group does not use";
    held = client_group_state_digest(c, gid, &epoch, hash, &admins) == MSV_OK;
    if (before != NULL && before->present && !after->present)
        why = "it drops the group context's admins and invite link";
    else if (before != NULL && before->present &&
             (after->state_epoch < before->state_epoch ||
              after->link_version < before->link_version))
        why = "it takes the group context's admins or invite link back to an earlier version";
    else if (before != NULL && before->present &&
             after->link_version > before->link_version + CLIENT_LINK_STEP_MAX)
        why = "it moves the invite link's version further on than any admin's changes do";
    else if (after->present && held && after->state_epoch > epoch + CTX_AHEAD_MAX)
        why = "its group context names a signed state of the group far past the one this "
              "device holds";
    else if (after->present && held && after->state_epoch == epoch &&
             memcmp(after->state_hash, hash, 32) == 0 &&
             strcmp(after->admins, admins != NULL ? admins : "") != 0)
        why = "its group context names other admins than the signed state it names";
    else if (after->present && !leaves_carry_ctx(m))
        why = "it leaves a device in the group whose leaf cannot carry the group context";
    free(admins);
    return why;
}

/*
 * Whether every leaf a commit leaves (m's but the n_removes leaves removes names, and those of
 * the KeyPackages a adds) lists the group context extension in its capabilities, as a
 * GroupContextExtensions proposal needs (leaves made before the extension did not).
 */
static int ext_supported(const struct msv_mls_member *m, const uint32_t *removes, size_t n_removes,
                         const struct adds *a)
{
    for (uint32_t i = 0; i < m->tree.n_leaves; i++) {
        int removed = 0;

        for (size_t j = 0; j < n_removes && !removed; j++)
            removed = removes[j] == i;
        if (!removed && m->tree.nodes[2 * i].type == 1 &&
            !msv_mls_leaf_lists_extension(&m->tree.nodes[2 * i].leaf, MSV_MLS_EXT_GROUP))
            return 0;
    }
    for (size_t i = 0; i < a->n; i++)
        if (!kp_carries_ctx(a->kp[i], a->kp_len[i]))
            return 0;
    return 1;
}

/* Whether this account is in the group's signed member list (1), not (0), or the list could not
 * be read (-1). */
static int self_member(struct msv_client *c, const uint8_t gid[16])
{
    struct msv_group_rec g = {0};
    char **members = NULL;
    size_t n = 0;
    int member = -1; /* the list unread */
    msv_err err = msv_client_db_group_get(c->db, gid, NULL, &g);

    if (err == MSV_ERR_NOT_FOUND)
        member = 0;
    if (err == MSV_OK && client_members_of(g.members, &members, &n) == MSV_OK) {
        member = 0;
        for (size_t i = 0; i < n && !member; i++)
            member = client_is_own_handle(c, members[i]);
    }
    free(members);
    msv_group_clear(&g);
    return member;
}

/* sync_once's update: a commit made only if the one owed from a receive still is (key_due) */
#define UPDATE_IF_DUE 2
/* sync_with's update alone: an admin's hourly look from a receive (members_flush), a commit only
 * if something changed, and never a founding again (as UPDATE_IF_DUE) */
#define UPDATE_LOOK 3

/*
 * Under the MLS lock, m the held state: whether the commit owed from a receive still is, as read
 * now (another process of this account made one, or failed and put it off; a commit taken since
 * keyed the path, or a commit of this device's renewed its leaf: one no longer owed is
 * forgotten).
 */
static int key_due(struct msv_client *c, const uint8_t gid[16], const struct msv_mls_member *m)
{
    char key[KEY_MAX];
    uint8_t *v = NULL;
    size_t len = 0;
    int due, owed;
    int64_t now = msv_wall_ms(), at;
    msv_err err;

    if (msv_client_db_get(c->db, group_key(KEY_BY, gid, key), &v, &len) != MSV_OK)
        return 0;
    /* any commit keys the path: a record of any kind is owed while it is not keyed */
    owed = len == KEY_BY_VALUE && (path_unkeyed(m) || (v[8] == KEY_RENEW && renew_due(c, gid)));
    at = len == KEY_BY_VALUE ? (int64_t)msv_get_u64be(v) : 0;
    due = owed && key_by_due(at, now) <= now;
    free(v);
    if (!owed) {
        err = msv_client_db_unset(c->db, key); /* else tried again, and forgotten then */
        (void)err;
    }
    return due;
}

static msv_err sync_once(struct msv_client *c, const uint8_t gid[16], int start, int refound,
                         int update, int quiet, int *changed, int *more)
{
    struct msv_mls_member *m = NULL, *old = NULL;
    struct dir dir = {0};
    struct adds a = {0}, r = {0};
    uint8_t *roster = NULL, *present = NULL, *want = NULL, *commit = NULL, *welcome = NULL,
            *kept = NULL, *again = NULL, *ext = NULL;
    uint32_t *leaves = NULL, *again_leaf = NULL;
    uint64_t *gone = NULL;
    struct msv_mls_sent sent = {0};
    size_t roster_len = 0, n_gone = 0, missing = 0, commit_len = 0, welcome_len = 0, n_want = 0,
           kept_len = 0, n_again = 0, n_replaced = 0, again_missing = 0, ext_len = 0;
    int set_ext = 0, waits = 0;
    char why[300] = "", text[600], kept_key[KEY_MAX], lkey[KEY_MAX];
    uint8_t *lv = NULL;
    size_t lv_len = 0;
    const char *made_why = NULL;
    msv_err err = state_load(c, gid, &m, &roster, &roster_len);
    int creating = err == MSV_ERR_NOT_FOUND;
    /* founded again by the only admin's device that lost its state: past the generation seen
     * (lost_seen records none past LOST_GEN_MAX) */
    int64_t lost = creating ? lost_generation(c, gid) : -1;
    uint32_t gen = lost >= 0 ? (uint32_t)lost + 1 : 0;
    /* an admin's hourly look is from a receive too, but owes nothing (key_due), commits only a
     * change, and counts no keying */
    int look = update == UPDATE_LOOK, admin = self_is_admin(c, gid),
        from_receive = update == UPDATE_IF_DUE || look, is = 0;
    const struct dir_device *own = NULL;
    struct client_group_ctx ctx = {0};

    *changed = *more = 0;
    if (look)
        update = 0;
    /* an admin as every member judges its commit (handle_admin: by the signed state this device
     * holds, and by the context while it names that state or a newer one; a context that does
     * not parse, which no member's commit sets, as none) */
    if (err == MSV_OK && client_group_ctx_parse(m->ext, m->ext_len, &ctx) != MSV_OK)
        memset(&ctx, 0, sizeof(ctx));
    if (err == MSV_OK)
        admin = handle_admin(c, gid, &ctx, c->handle);
    if (creating && !start)
        return MSV_OK; /* a group of per-device copies stays so */
    /* owed from a receive: nothing else is done from there (a sync reads every member's
     * directory entry) when it no longer is */
    if (err == MSV_OK && from_receive && !look && !(update = key_due(c, gid, m))) {
        msv_mls_member_free(m);
        free(roster);
        client_group_ctx_clear(&ctx);
        return MSV_OK;
    }
    /* only an admin founds the group's MLS group (its members refuse any other founder) */
    if (creating && !refound && !admin) {
        snprintf(c->why.message, sizeof(c->why.message),
                 "only an admin of the group founds its MLS group");
        return MSV_ERR_AUTH;
    }
    /* a Welcome kept from an earlier commit goes first; while it cannot, no commit is made
     * (one would move the group past it) */
    if (err == MSV_OK && !refound) {
        int waiting = 0;

        err = welcome_flush(c, gid, m, &waiting);
        if (err == MSV_OK && waiting) {
            snprintf(c->why.message, sizeof(c->why.message),
                     "the Welcome of this group's last change waits to be sent: the server is "
                     "out of reach");
            msv_mls_member_free(m);
            free(roster);
            client_group_ctx_clear(&ctx);
            return MSV_ERR_IO;
        }
    }
    /* founded again: a new group of the next generation, every device added anew */
    if (err == MSV_OK && refound) {
        gen = generation_of(m) + 1;
        old = m; /* the generation it moves on from, left at the delivery service once founded */
        m = NULL;
        creating = 1;
        client_group_ctx_clear(&ctx); /* a new group, with a context of its own */
        admin = self_is_admin(c, gid);
    }
    /* owed from a receive by a device whose account is gone from the group's signed member
     * list (it left, or was removed): no commit of its own, and none owed any more (its last
     * commit's time stays, for the day it is a member again); the list unread: later */
    if (err == MSV_OK && from_receive && (is = self_member(c, gid)) <= 0) {
        err = is < 0 ? MSV_ERR_IO : msv_client_db_unset(c->db, group_key(KEY_BY, gid, kept_key));
        goto out;
    }
    if (creating || err == MSV_OK)
        err = msv_client_connect(c);
    if (err == MSV_OK)
        err = dir_load(c, gid, &dir);
    /* past a generation someone else's group holds; held by one that has this device in it, as
     * another admin's founding at the same moment would, not within a minute of its refusal
     * (its Welcome comes meanwhile): tried again later, nothing claimed or sent */
    if (err == MSV_OK && creating)
        gen = past_taken(c, gid, gen, &waits);
    if (err == MSV_OK && waits) {
        snprintf(c->why.message, sizeof(c->why.message),
                 "the MLS group's next generation is held by a group this device did not "
                 "found, perhaps another admin's founding at the same moment: this device "
                 "waits a minute for its Welcome before founding past it");
        err = MSV_ERR_AGAIN;
        goto out;
    }
    if (err == MSV_OK && creating)
        err = member_new(c, gid, gen, &m);
    if (err == MSV_OK &&
        ((present = calloc(dir.n + 1, 1)) == NULL || (want = calloc(dir.n + 1, 1)) == NULL ||
         (leaves = calloc(m->tree.n_leaves + 1, sizeof(*leaves))) == NULL ||
         (gone = calloc(m->tree.n_leaves + 1, sizeof(*gone))) == NULL ||
         (again = calloc(dir.n + 1, 1)) == NULL ||
         (again_leaf = calloc(dir.n + 1, sizeof(*again_leaf))) == NULL))
        err = MSV_ERR_NOMEM;
    if (err == MSV_OK)
        n_gone = removals(m, &dir, leaves, gone, present);
    /* an admin's commit adds and removes any member's devices; any other member's only adds
     * its own account's devices that this device approved (never one the directory lists again
     * after its removal) and removes those its account no longer lists, and makes none while
     * the tree holds another account's device to remove (its commit would be refused by every
     * member): an admin's commit removes it */
    own = err == MSV_OK ? dir_find(&dir, c->device_id) : NULL;
    /* a member whose device the directory does not list now (an approval it could not check,
     * say): tried again later, nothing forgotten */
    if (err == MSV_OK && from_receive && own == NULL) {
        snprintf(c->why.message, sizeof(c->why.message),
                 "the directory does not list this device among the group's");
        err = MSV_ERR_IO;
        goto out;
    }
    if (err == MSV_OK && !admin && n_gone > 0 && !own_gone(roster, roster_len, own, gone, n_gone))
        goto out;
    for (size_t i = 0; err == MSV_OK && i < dir.n; i++)
        n_want += want[i] = !present[i] && dir.d[i].device_id != c->device_id &&
                            (admin || (own != NULL && strcmp(dir.d[i].handle, own->handle) == 0 &&
                                       join_waiting(c, dir.d[i].device_id)));
    /* a commit adds and removes at most CHANGES_MAX devices (the delivery service's limit, and
     * a Welcome's recipients): the rest in the next (*more) */
    if (err == MSV_OK && n_gone > CHANGES_MAX) {
        n_gone = CHANGES_MAX;
        *more = 1;
    }
    for (size_t i = 0, room = CHANGES_MAX - n_gone; err == MSV_OK && i < dir.n; i++)
        if (want[i] && room == 0) {
            want[i] = 0;
            n_want--;
            *more = 1;
        } else if (want[i]) {
            room--;
        }
    /* an admin's device replaces the leaves their devices said they cannot use (each a removal
     * and an add) in what room is left; one whose KeyPackage cannot be claimed keeps its leaf */
    if (err == MSV_OK && admin && !creating)
        n_again = rejoins_due(c, gid, m, &dir, again, again_leaf,
                              (CHANGES_MAX - n_gone - n_want) / 2, more);
    if (err == MSV_OK)
        err = claim_adds(c, &dir, want, ctx.present || (creating && !refound), &a, &missing, why,
                         sizeof(why));
    if (err == MSV_OK && n_again > 0) {
        char again_why[300];

        err = claim_adds(c, &dir, again, ctx.present || (creating && !refound), &r, &again_missing,
                         again_why, sizeof(again_why));
    }
    if (err == MSV_OK && n_again > 0)
        rejoins_mark(c, gid, m, &dir, again, &r, 0);
    for (size_t j = 0; err == MSV_OK && j < r.n; j++) {
        const struct dir_device *d = dir_find(&dir, r.device[j]);

        leaves[n_gone + n_replaced++] = again_leaf[d - dir.d];
        a.device[a.n] = r.device[j];
        a.kp[a.n] = r.kp[j];
        a.kp_len[a.n++] = r.kp_len[j];
        r.kp[j] = NULL;
    }
    /* a founding again that cannot be made counts as one (each try claims every device's
     * KeyPackage): tried again at most hourly too */
    if (err == MSV_OK && creating && missing > 0 && refound)
        err = founded_now(c, gid);
    if (err == MSV_OK && creating && missing > 0) {
        snprintf(text, sizeof(text), "%s: %zu device%s cannot join it (%s)",
                 gen > 0 ? "the MLS group could not be founded again, and stays as it was"
                         : "this group stays on per-device encryption, not MLS",
                 missing, missing == 1 ? "" : "s", why);
        err = notice(c, gid, text);
        goto out;
    }
    if (look) /* (over each commit of the look: members_flush starts it from 0) */
        c->mls_look_missing += missing;
    if (err == MSV_OK && missing > 0 && !quiet) {
        snprintf(text, sizeof(text),
                 "%zu device%s could not be added to this MLS group, which stays on MLS without "
                 "them (%s)",
                 missing, missing == 1 ? "" : "s", why);
        err = notice(c, gid, text);
    }
    /* an admin's device carries the admins of the signed state it holds and the invite link
     * into the group context when they are newer than the context's, if every leaf the commit
     * leaves supports it (docs/crypto.md, "The group context") */
    if (err == MSV_OK && admin) {
        /* no context made (it could not be read) changes nothing else the commit does */
        msv_err made = client_group_ctx_make(c, gid, m->ext, m->ext_len, &ext, &ext_len);

        if (made == MSV_ERR_PARSE) /* a context no member takes (never committed so) */
            made = client_group_ctx_make(c, gid, NULL, 0, &ext, &ext_len);
        set_ext = made == MSV_OK && (ext_len != m->ext_len || memcmp(ext, m->ext, ext_len) != 0) &&
                  ext_supported(m, leaves, n_gone + n_replaced, &a);
    }
    if (err != MSV_OK || (a.n == 0 && n_gone == 0 && !creating && !update && !set_ext))
        goto out;
    {
        /* the DS keeps a replaced device a member: only the devices gone are removed there */
        struct msv_mls_commit_spec spec = {.key_packages = (const uint8_t *const *)a.kp,
                                           .key_package_lens = a.kp_len,
                                           .n_adds = a.n,
                                           .removes = leaves,
                                           .n_removes = n_gone + n_replaced,
                                           .extensions = ext,
                                           .extensions_len = ext_len,
                                           .set_extensions = set_ext,
                                           .now = (uint64_t)(msv_wall_ms() / 1000)};

        err = msv_mls_member_commit_make(m, &spec, &commit, &commit_len, &welcome, &welcome_len,
                                         &made_why);
    }
    /* what does not fit one send goes by reference, both uploaded before the commit goes (a
     * failure there changes nothing) */
    if (err == MSV_OK && (err = by_reference(c, &commit, &commit_len)) == MSV_OK)
        err = by_reference(c, &welcome, &welcome_len);
    if (err != MSV_OK && commit != NULL) {
        msv_mls_member_commit_discard(m);
        /* too large, or refused by the attachment store (its quota, say): said, and why
         * (not by an hourly look, which tries again later, backing off) */
        if (err != MSV_ERR_IO && err != MSV_ERR_NOMEM && !look) {
            snprintf(text, sizeof(text), "%s: its %s could not go by reference (%.300s)",
                     creating ? "this group stays on per-device encryption, not MLS"
                              : "the MLS group could not follow this change",
                     commit_len > MLS_MESSAGE_MAX ? "commit" : "Welcome", c->why.message);
            err = notice(c, gid, text);
        }
        goto out;
    }
    /* the Welcome's record, and the commit's with the state it makes, kept before it goes */
    if (err == MSV_OK && welcome != NULL)
        err = welcome_record(generation_of(m->pending), m->pending->epoch, &a, welcome, welcome_len,
                             &kept, &kept_len);
    if (err == MSV_OK)
        err = own_commit_keep(c, gid, m, &dir, commit, commit_len, kept, kept_len);
    if (err != MSV_OK && commit != NULL)
        msv_mls_member_commit_discard(m);
    if (err == MSV_OK) {
        struct msv_mls_send s = {.group_id = m->group_id,
                                 .group_id_len = m->group_id_len,
                                 .kind = MSV__WIRE__MLS_KIND__MLS_KIND_COMMIT,
                                 .epoch = m->epoch,
                                 .message = commit,
                                 .message_len = commit_len,
                                 .added = a.device,
                                 .n_added = a.n,
                                 .removed = gone,
                                 .n_removed = n_gone};

        memset(&c->why, 0, sizeof(c->why));
        err = msv_request_mls_send(c->conn, &s, TIMEOUT_MS, &sent, &c->why);
        if (err == MSV_ERR_REPLAY) /* the group's epoch, for sync_with's catch-up */
            c->mls_ds_epoch = sent.epoch;
        if (err != MSV_OK)
            msv_mls_member_commit_discard(m);
        /* refused by the server: never taken, so forgotten; no answer, or one that could not
         * be read: kept, for the log to settle */
        if (err != MSV_OK && err != MSV_ERR_IO && c->why.code != 0) {
            msv_err forgot = own_commit_forget(c, gid);

            err = forgot != MSV_OK ? forgot : err;
        }
        /* a founding whose generation a group this device did not make holds: recorded, and
         * tried again (sync_with) past it when that group cannot be another admin's founding */
        if (creating && (err == MSV_ERR_REPLAY ||
                         (err == MSV_ERR_INVALID &&
                          c->why.code == MSV__WIRE__ERROR_CODE__ERROR_MLS_NOT_MEMBER))) {
            msv_err noted = taken_record(c, gid, gen, err == MSV_ERR_INVALID);

            c->mls_ds_epoch = 0; /* that group's epoch, not this one's */
            err = noted != MSV_OK ? noted : MSV_ERR_REPLAY;
        }
    }
    if (err == MSV_OK)
        err = msv_mls_member_commit_merge(m);
    /* (its founding taken, a failure here leaves the old generation's membership, as before
     * leaves, rather than the new state unsaved) */
    if (err == MSV_OK && old != NULL && leave_value(c, old, lkey, &lv, &lv_len) != MSV_OK)
        lv = NULL;
    /* the Welcome kept with the state its commit made: both or neither */
    if (err == MSV_OK)
        err = state_save_leaving(c, gid, m, &dir,
                                 welcome != NULL ? group_key(WELCOME_KEPT, gid, kept_key) : NULL,
                                 kept, kept_len, lkey, lv, lv_len);
    if (err == MSV_OK && refound)
        err = msv_client_db_unset(c->db, flag_key(gid, text));
    if (err == MSV_OK && refound)
        err = founded_now(c, gid);
    if (err == MSV_OK && lost >= 0)
        err = msv_client_db_unset(c->db, group_key(LOST, gid, text));
    if (err == MSV_OK && creating)
        err = msv_client_db_unset(c->db, group_key(GEN_TAKEN, gid, text));
    if (err == MSV_OK) /* every commit of ours updates our leaf (its UpdatePath) */
        err = committed_now(c, gid);
    /* one owed from a receive, counted under the lock (a count lost to a crash here is all a
     * crash costs) */
    if (err == MSV_OK && from_receive && !look) {
        msv_err counted = client_counter_bump(c, KEYINGS_MADE);

        c->mls_keyings_taken++;
        (void)counted;
    }
    /* last: a crash before this leaves the record of a state held already, whose settling
     * finishes what is above (own_commit_resolve) */
    if (err == MSV_OK)
        err = own_commit_forget(c, gid);
    /* the Welcome kept: a send that fails is tried again (welcome_flush), the commit done */
    if (err == MSV_OK && welcome != NULL) {
        int waiting = 0;

        err = welcome_flush(c, gid, m, &waiting);
    }
    /* each replaced: not again within the hour */
    if (err == MSV_OK && r.n > 0)
        rejoins_mark(c, gid, m, &dir, again, &r, 1);
    *changed = err == MSV_OK;
out:
    msv_mls_member_free(m);
    dir_free(&dir);
    adds_free(&a);
    adds_free(&r);
    free(again);
    free(again_leaf);
    free(roster);
    free(present);
    free(want);
    free(leaves);
    free(gone);
    free(commit);
    free(welcome);
    free(kept);
    free(ext);
    free(lv);
    msv_mls_member_free(old);
    client_group_ctx_clear(&ctx);
    return err;
}

/* Whether this account is an admin of the group (its signed state); *n_admins (unless NULL):
 * how many admins it has. */
static int self_is_admin_of(struct msv_client *c, const uint8_t gid[16], size_t *n_admins)
{
    char *admins = NULL, **list = NULL;
    size_t n = 0;
    int admin = 0;

    if (n_admins != NULL)
        *n_admins = 0;
    if (msv_client_group_admins(c, gid, &admins) != MSV_OK)
        return 0;
    if (client_members_of(admins, &list, &n) == MSV_OK)
        for (size_t i = 0; i < n && !admin; i++)
            admin = strcmp(list[i], c->handle) == 0;
    if (n_admins != NULL)
        *n_admins = list != NULL ? n : 0;
    free(list);
    free(admins);
    return admin;
}

static int self_is_admin(struct msv_client *c, const uint8_t gid[16])
{
    return self_is_admin_of(c, gid, NULL);
}

/* Whether the setting key is there. */
static int is_set(struct msv_client *c, const char *key)
{
    uint8_t *v = NULL;
    size_t len = 0;
    int set = msv_client_db_get(c->db, key, &v, &len) == MSV_OK;

    free(v);
    return set;
}

/* Whether a refused commit left the delivery service ahead of this device (the flag is set). */
static int refound_due(struct msv_client *c, const uint8_t gid[16])
{
    char key[KEY_MAX];

    return is_set(c, flag_key(gid, key));
}

/*
 * The group's MLS group made to follow its members (start: founded if it is not on MLS yet;
 * update: a commit made even with nothing to change; quiet: devices that cannot be added not
 * told). hourly: founded again at most once per REFOUND_MIN_MS (MSV_ERR_AGAIN, said, before
 * then), as when a send or a receive brings it about rather than the user's change: neither a
 * delivery service saying the group moved on nor a member's refused commits make an admin's
 * device found it again at every message.
 */
static msv_err sync_with(struct msv_client *c, const uint8_t gid[16], int start, int update,
                         int quiet, int hourly)
{
    msv_err err = MSV_OK;
    int changed = 0, more = 0, admin = self_is_admin(c, gid),
        from_receive = update == UPDATE_IF_DUE || update == UPDATE_LOOK;

again:
    for (int tries = 0; tries <= COMMIT_TRIES; tries++) {
        /* a commit this device refused moved the delivery service's epoch on, for good: an
         * admin founds the group again; so after commits refused as stale again and again */
        int refound = admin && tries == COMMIT_TRIES;
        int64_t lately = -1;
        uint64_t ds_epoch = 0;

        if (tries == COMMIT_TRIES && !admin)
            break;
        err = mls_lock(c);
        if (err != MSV_OK)
            return err;
        /* a commit of ours whose answer never came first: the log says whether it was taken
         * (a founding again taken so founds nothing more) */
        err = own_commit_resolve(c, gid);
        if (err != MSV_OK) {
            mls_unlock(c);
            break;
        }
        /* read under the lock: another process of this account may have founded it again */
        refound = admin && (refound || refound_due(c, gid));
        /* a commit owed from a receive never founds the group again (its next send or change
         * does) */
        if (refound && from_receive) {
            mls_unlock(c);
            err = MSV_ERR_AGAIN;
            break;
        }
        lately = refound && hourly ? founded_lately(c, gid) : -1;
        c->mls_ds_epoch = 0;
        if (lately < 0)
            err = sync_once(c, gid, start, refound, update, quiet, &changed, &more);
        /* the group's epoch the server gave, kept before any other group's sync can change it */
        ds_epoch = c->mls_ds_epoch;
        mls_unlock(c);
        if (lately >= 0) {
            (void)client_counter_bump(c, REFOUNDINGS_HELD); /* a count: the limit holds anyway */
            snprintf(c->why.message, sizeof(c->why.message),
                     "the delivery service keeps saying the MLS group moved on without this "
                     "device, which founded it again %lld minute%s ago and does so at most "
                     "hourly",
                     (long long)lately, lately == 1 ? "" : "s");
            err = MSV_ERR_AGAIN;
            break;
        }
        /* MSV_ERR_AGAIN is the limit's alone (a server's "stale devices" is no reason) */
        if (err == MSV_ERR_AGAIN)
            err = MSV_ERR_IO;
        /* another member's commit came first: read it (and what else is queued), then again;
         * not from the end of a receive (client_mls_joins), whose next receive reads it */
        if (err != MSV_ERR_REPLAY || c->mls_joining)
            break;
        err = receive_within(c);
        /* what the queue did not bring, from the delivery service's commit log */
        if (err == MSV_OK) {
            uint64_t epoch = 0, moved = 0;
            int64_t gen = held_generation(c, gid, &epoch);

            err = gen >= 0 ? catch_up(c, gid, (uint32_t)gen, ds_epoch, 1, &moved) : MSV_OK;
        }
        if (err != MSV_OK)
            break;
        err = MSV_ERR_REPLAY;
    }
    if (err == MSV_ERR_REPLAY)
        snprintf(c->why.message, sizeof(c->why.message),
                 "the group's epoch kept moving on: the change was refused %d times", COMMIT_TRIES);
    /* more than one commit takes: the next (bounded: DEVICES_MAX / CHANGES_MAX of them) */
    if (err == MSV_OK && more && changed) {
        start = 0;
        update = update == UPDATE_LOOK ? UPDATE_LOOK : 0; /* a look's, checked as one */
        goto again;
    }
    return err;
}

msv_err client_mls_sync(struct msv_client *c, const uint8_t gid[16], int start)
{
    return sync_with(c, gid, start, 0, 0, 0);
}

/* ---- devices of this account joining ------------------------------------------------------- */

/*
 * A try again record (mls-join:, mls-follow:): u64be first wanted || u64be next try, wall ms.
 * Whether it is due at now (a next try further off than any wait, after the clock went back,
 * is due), and the next try after one that failed: every retry_ms (c->mls_join_retry_ms when
 * set), or a quarter of the time waited up to hourly.
 */
#define RETRY_VALUE 16
#define RETRY_WAIT_MAX_MS (3600 * 1000)

static int retry_due(const uint8_t v[RETRY_VALUE], int64_t now)
{
    int64_t next = (int64_t)msv_get_u64be(v + 8);

    return now >= next || next - now > RETRY_WAIT_MAX_MS;
}

static void retry_later(struct msv_client *c, uint8_t v[RETRY_VALUE], int64_t now)
{
    int64_t retry = c->mls_join_retry_ms > 0 ? c->mls_join_retry_ms : MSV_MLS_JOIN_RETRY_MS;
    int64_t wait = (now - (int64_t)msv_get_u64be(v)) / 4;

    wait = c->mls_join_retry_ms > 0 || wait < retry ? retry
           : wait > RETRY_WAIT_MAX_MS               ? RETRY_WAIT_MAX_MS
                                                    : wait;
    msv_put_u64be(v + 8, (uint64_t)(now + wait));
}

/* Whether a record first wanted at first is past MSV_MLS_JOIN_DAYS (or dated over a day ahead
 * of the clock). */
static int retry_expired(const uint8_t v[RETRY_VALUE], int64_t now)
{
    int64_t first = (int64_t)msv_get_u64be(v);

    return now - first > MSV_MLS_JOIN_DAYS * 86400000LL || first > now + 86400000LL;
}

/* "mls-join:<16 hex digits of the device id>" = u64be first wanted (ms) || u64be next try (ms) */
#define JOIN "mls-join:"

static const char *join_key(uint64_t device, char key[KEY_MAX])
{
    snprintf(key, KEY_MAX, JOIN "%016llx", (unsigned long long)device);
    return key;
}

/* Whether this device holds the group's state and a leaf of it names device. */
static int has_leaf(struct msv_client *c, const uint8_t gid[16], uint64_t device)
{
    struct msv_mls_member *m = NULL;
    uint8_t *roster = NULL;
    size_t roster_len = 0;
    int found = 0;

    if (state_load(c, gid, &m, &roster, &roster_len) == MSV_OK)
        found = has_device(m, device);
    msv_mls_member_free(m);
    free(roster);
    return found;
}

/* Whether this device approved device and waits for it to join (a record of it is kept). */
static int join_waiting(struct msv_client *c, uint64_t device)
{
    char key[KEY_MAX];

    return is_set(c, join_key(device, key));
}

/* Whether a Welcome of the group waits to be sent again (welcome_flush). */
static int welcome_kept(struct msv_client *c, const uint8_t gid[16])
{
    char key[KEY_MAX];

    return is_set(c, group_key(WELCOME_KEPT, gid, key));
}

/* The reason a waiting device is given up, told in each group on MLS it is not in. */
static void join_given_up(struct msv_client *c, const uint8_t gid[16], uint64_t device,
                          const char *reason)
{
    char text[500];

    snprintf(text, sizeof(text),
             "this account's device %llu was not added to this MLS group (%s): it does not read "
             "the group's messages until an admin's next change adds it",
             (unsigned long long)device, reason);
    if (notice(c, gid, text) != MSV_OK)
        c->why.message[0] = '\0'; /* the notice is shown all the same */
}

/*
 * One device waiting to join: added to each group on MLS this device is in (quietly: a device
 * without a KeyPackage yet is tried again later). *done: it is in every one of them, its
 * Welcome sent. give_up (a reason): the groups it is not in are told. MSV_ERR_IO if the
 * directory or the server cannot be reached or refuses for now (the pass stops there).
 */
static msv_err join_groups(struct msv_client *c, const struct msv_group_rec *g, size_t n,
                           uint64_t device, const char *give_up, int *done)
{
    *done = 1;
    for (size_t i = 0; i < n; i++) {
        msv_err err = MSV_OK;

        if (!client_mls_is_on(c, g[i].group_id))
            continue;
        if (!has_leaf(c, g[i].group_id, device))
            err = sync_with(c, g[i].group_id, 0, 0, 1, 1);
        if (err == MSV_ERR_IO && give_up == NULL) {
            *done = 0;
            return err;
        }
        /* a device behind the group (a commit it missed) adds nobody until it catches up */
        if (has_leaf(c, g[i].group_id, device) && !welcome_kept(c, g[i].group_id))
            continue;
        *done = 0;
        if (give_up != NULL)
            join_given_up(c, g[i].group_id, device, give_up);
    }
    return MSV_OK;
}

/* A try again record under key, wanted from now and due at once. */
static msv_err record_now(struct msv_client *c, const char *key)
{
    uint8_t v[RETRY_VALUE];

    msv_put_u64be(v, (uint64_t)msv_wall_ms());
    msv_put_u64be(v + 8, 0);
    return msv_client_db_set(c->db, key, v, sizeof(v));
}

msv_err client_mls_join_due(struct msv_client *c, uint64_t device_id)
{
    struct msv_setting *s = NULL;
    size_t n = 0, oldest = 0;
    char key[KEY_MAX];
    msv_err err = msv_client_db_settings(c->db, JOIN, SIZE_MAX, &s, &n);

    /* bounded: past MSV_MLS_JOINS_MAX waiting, the one waiting longest is given up, and told */
    for (size_t i = 1; err == MSV_OK && i < n; i++)
        if (s[i].len == RETRY_VALUE && s[oldest].len == RETRY_VALUE &&
            msv_get_u64be(s[i].value) < msv_get_u64be(s[oldest].value))
            oldest = i;
    if (err == MSV_OK && n >= MSV_MLS_JOINS_MAX) {
        unsigned long long gone = 0;
        struct msv_group_rec *g = NULL;
        size_t n_groups = 0;
        int done = 0;

        if (sscanf(s[oldest].key + strlen(JOIN), "%16llx", &gone) == 1 &&
            msv_client_db_groups(c->db, &g, &n_groups) == MSV_OK) {
            c->mls_joining++;
            err = join_groups(c, g, n_groups, gone, "more devices of this account wait to join",
                              &done);
            c->mls_joining--;
        }
        if (!done)
            (void)client_counter_bump(c, WAITS_GIVEN_UP); /* a count: told in its groups */
        msv_groups_free(g, n_groups);
        err = msv_client_db_unset(c->db, s[oldest].key);
    }
    msv_settings_free(s, n);
    return err == MSV_OK ? record_now(c, join_key(device_id, key)) : err;
}

/* The group id a setting key prefix || hex names (0 if it names none). */
static int gid_of_key(const char *key, const char *prefix, uint8_t gid[16])
{
    size_t got = 0;

    return msv_hex_decode(key + strlen(prefix), gid, 16, &got) == MSV_OK && got == 16;
}

/* The Welcomes kept (welcome_flush) sent, each under the lock. */
static void welcomes_flush(struct msv_client *c)
{
    struct msv_setting *s = NULL;
    size_t n = 0;

    if (msv_client_db_settings(c->db, WELCOME_KEPT, SIZE_MAX, &s, &n) != MSV_OK)
        return;
    for (size_t i = 0; i < n; i++) {
        uint8_t gid[16], *roster = NULL;
        size_t roster_len = 0;
        struct msv_mls_member *m = NULL;
        int waiting = 0;
        msv_err err;

        if (!gid_of_key(s[i].key, WELCOME_KEPT, gid) || mls_lock(c) != MSV_OK)
            continue;
        err = state_load(c, gid, &m, &roster, &roster_len);
        if (err == MSV_OK && welcome_flush(c, gid, m, &waiting) != MSV_OK)
            c->why.message[0] = '\0'; /* kept: the next receive tries again */
        /* of a group this device holds no state of (gone, or never founded) */
        if (err == MSV_ERR_NOT_FOUND && msv_client_db_unset(c->db, s[i].key) != MSV_OK)
            c->why.message[0] = '\0';
        mls_unlock(c);
        msv_mls_member_free(m);
        free(roster);
    }
    msv_settings_free(s, n);
}

/* "mls-follow:<hex of the group id>": an admin's device follows another's change (a try again
 * record) */
#define FOLLOW "mls-follow:"

static int stale_now(struct msv_client *c, const uint8_t gid[16]);

msv_err client_mls_follow_due(struct msv_client *c, const uint8_t gid[16])
{
    char key[KEY_MAX];

    return record_now(c, group_key(FOLLOW, gid, key));
}

/*
 * The groups whose MLS group must follow another's change, under this device's admin: a tree
 * holding a device of no member committed away; forgotten once done, or no longer needed (no
 * admin here, nothing to remove). If the server is out of reach, or the group moved on
 * meanwhile, tried again at a later receive, backing off as a joining device is
 * (retry_later); given up after MSV_MLS_JOIN_DAYS, told (the next send of this device commits
 * the removal first all the same).
 */
static void follows_flush(struct msv_client *c)
{
    struct msv_setting *s = NULL;
    size_t n = 0;
    int64_t now = msv_wall_ms();

    if (msv_client_db_settings(c->db, FOLLOW, SIZE_MAX, &s, &n) != MSV_OK)
        return;
    for (size_t i = 0; i < n; i++) {
        uint8_t gid[16], v[RETRY_VALUE];
        msv_err err = MSV_OK;
        int lost = 0, admin;
        /* (an empty one, of an earlier version: wanted from now) */
        int valid = gid_of_key(s[i].key, FOLLOW, gid) && (s[i].len == RETRY_VALUE || s[i].len == 0);

        if (!valid) {
            if (msv_client_db_unset(c->db, s[i].key) != MSV_OK)
                break;
            continue;
        }
        if (s[i].len == 0) {
            msv_put_u64be(v, (uint64_t)now);
            msv_put_u64be(v + 8, 0);
        } else {
            memcpy(v, s[i].value, RETRY_VALUE);
        }
        if (!retry_due(v, now))
            continue;
        admin = self_is_admin(c, gid);
        /* (the small record first: client_mls_is_on reads the state) */
        lost = admin && lost_generation(c, gid) >= 0 && !client_mls_is_on(c, gid);
        if (admin && (lost || stale_now(c, gid) || rejoin_waiting(c, gid)))
            err = sync_with(c, gid, lost, 0, 0, 1);
        /* a founding again that could not be made (a device without a KeyPackage) waits too */
        if (err == MSV_OK && lost && !client_mls_is_on(c, gid))
            err = MSV_ERR_AGAIN;
        if (err != MSV_OK && retry_expired(v, now))
            (void)client_counter_bump(c, WAITS_GIVEN_UP); /* a count: told below all the same */
        if (err != MSV_OK && retry_expired(v, now) &&
            notice(c, gid,
                   lost ? "this device, of the group's only admin, could not found the group's "
                          "MLS group again for days; it reads the group's messages on MLS once "
                          "it does (at a later delivery of it, or the group's next change)"
                   : stale_now(c, gid)
                       ? "this device could not commit the removal of a device that left the "
                         "group for days; the group's members cannot send on MLS until an "
                         "admin's next message or change commits it"
                       : "this device could not add a member's device to the group's MLS "
                         "group again for days; it waits for its next message") != MSV_OK)
            c->why.message[0] = '\0'; /* shown all the same */
        if (err != MSV_OK && !retry_expired(v, now)) {
            retry_later(c, v, now);
            if (msv_client_db_set(c->db, s[i].key, v, sizeof(v)) != MSV_OK)
                break;
        } else if (msv_client_db_unset(c->db, s[i].key) != MSV_OK) {
            break;
        }
    }
    msv_settings_free(s, n);
}

/* "mls-out": a device of this account was removed (by this device, or the server told of one):
 * the leaves of this account's devices that the verified directory no longer lists are
 * committed out of each group on MLS (a try again record), followed by the u64be ids of the
 * devices this device removed itself (at most OUT_IDS_MAX): the record holds while the
 * directory still lists one of them (it has not caught up) */
#define OUT "mls-out"
#define OUT_IDS_MAX 16

static int out_valid(size_t len)
{
    return len >= RETRY_VALUE && (len - RETRY_VALUE) % 8 == 0 &&
           (len - RETRY_VALUE) / 8 <= OUT_IDS_MAX;
}

/* The record's change (client_mls_out_due, client_mls_out_forget), in next (n ids): read and
 * written in one transaction, so that two processes of this device lose neither's. */
static msv_err out_change(struct msv_client *c, uint64_t removed, int forget)
{
    uint8_t *v = NULL, next[RETRY_VALUE + 8 * OUT_IDS_MAX];
    size_t len = 0, n = 0, kept = 0;
    msv_err err = msv_client_db_begin(c->db);
    int found;

    if (err != MSV_OK) /* (no transaction to end) */
        return err;
    found = (err = msv_client_db_get(c->db, OUT, &v, &len)) == MSV_OK && out_valid(len);
    if (found) {
        memcpy(next, v, len);
        n = (len - RETRY_VALUE) / 8;
    }
    free(v);
    if (err == MSV_ERR_NOT_FOUND)
        err = MSV_OK;
    /* kept: every id but removed's (when forgotten), and whether removed was one */
    for (size_t i = 0; err == MSV_OK && i < n; i++) {
        uint64_t id = msv_get_u64be(next + RETRY_VALUE + 8 * i);

        if (id == removed && !forget)
            found = 2;
        if (id != removed || !forget)
            msv_put_u64be(next + RETRY_VALUE + 8 * kept++, id);
    }
    n = kept;
    if (err != MSV_OK || forget || (found && removed == 0)) {
        /* forgotten: the ids written back (a record left without any is settled by the next
         * flush); a notice told again keeps the record's times: it changes nothing */
        if (err == MSV_OK && forget && found)
            err = msv_client_db_set(c->db, OUT, next, RETRY_VALUE + 8 * n);
        return msv_client_db_end(c->db, err);
    }
    /* a removal of this device's own starts the times again (and is kept until the directory
     * lists it no more) */
    if (removed != 0 && found != 2) {
        if (n == OUT_IDS_MAX) { /* the oldest goes: its removal is long made */
            memmove(next + RETRY_VALUE, next + RETRY_VALUE + 8, 8 * (n - 1));
            n--;
        }
        msv_put_u64be(next + RETRY_VALUE + 8 * n++, removed);
    }
    msv_put_u64be(next, (uint64_t)msv_wall_ms());
    msv_put_u64be(next + 8, 0);
    return msv_client_db_end(c->db, msv_client_db_set(c->db, OUT, next, RETRY_VALUE + 8 * n));
}

msv_err client_mls_out_due(struct msv_client *c, uint64_t removed)
{
    return out_change(c, removed, 0);
}

msv_err client_mls_out_forget(struct msv_client *c, uint64_t removed)
{
    return out_change(c, removed, 1);
}

/*
 * The record settled after a pass that read it as v (len bytes): dropped (drop), or kept as
 * next; neither if another process changed it meanwhile (its change stands, for the next pass).
 */
static msv_err out_settle(struct msv_client *c, const uint8_t *v, size_t len, int drop,
                          const uint8_t *next)
{
    uint8_t *now = NULL;
    size_t now_len = 0;
    msv_err err = msv_client_db_begin(c->db);
    int same;

    if (err != MSV_OK) /* (no transaction to end) */
        return err;
    same = (err = msv_client_db_get(c->db, OUT, &now, &now_len)) == MSV_OK && now_len == len &&
           memcmp(now, v, len) == 0;
    free(now);
    if (err == MSV_ERR_NOT_FOUND)
        err = MSV_OK;
    if (err == MSV_OK && same)
        err = drop ? msv_client_db_unset(c->db, OUT) : msv_client_db_set(c->db, OUT, next, len);
    return msv_client_db_end(c->db, err);
}

/* Whether own (this account's devices, as the directory lists them) still lists a device this
 * device removed (the record v, len bytes); *which names it. */
static int out_listed(const uint8_t *v, size_t len, const struct dir *own, uint64_t *which)
{
    for (size_t i = RETRY_VALUE; i + 8 <= len; i += 8)
        if (dir_find(own, (*which = msv_get_u64be(v + i))) != NULL)
            return 1;
    return 0;
}

/* This account's devices as the verified directory lists them. */
static msv_err own_devices(struct msv_client *c, struct dir *own)
{
    char *handle = c->handle;

    return dir_lookup(c, &handle, 1, 0, own);
}

/* Whether the group's tree holds a leaf of this account's (by its roster) that own, the
 * account's devices, no longer lists. */
static int own_gone_in(struct msv_client *c, const uint8_t gid[16], const struct dir *own)
{
    struct msv_mls_member *m = NULL;
    uint8_t *roster = NULL;
    size_t roster_len = 0;
    char handle[MSV_HANDLE_MAX + 1];
    int gone = 0;

    if (state_load(c, gid, &m, &roster, &roster_len) != MSV_OK)
        return 0;
    for (uint32_t i = 0; i < m->tree.n_leaves && !gone; i++) {
        uint64_t device = 0;

        gone = i != m->me && leaf_device(m, i, &device) && dir_find(own, device) == NULL &&
               roster_handle(roster, roster_len, device, handle) == MSV_OK &&
               client_is_own_handle(c, handle);
    }
    msv_mls_member_free(m);
    free(roster);
    return gone;
}

/* Whether the group's tree still holds such a leaf (own_gone_in) once this device tried to
 * commit it out; *synced: that try's result (MSV_OK when none was needed). */
static int own_gone_after(struct msv_client *c, const uint8_t gid[16], const struct dir *own,
                          msv_err *synced)
{
    *synced = MSV_OK;
    if (!own_gone_in(c, gid, own))
        return 0;
    *synced = sync_with(c, gid, 0, 0, 1, 1);
    return own_gone_in(c, gid, own);
}

/*
 * The groups on MLS whose trees hold a device removed from this account (own_gone_in) have it
 * committed out (any of the account's devices may, admin or not); forgotten once none does.
 * Due at its time unless forced (the removing device, at once). A pass that fails (the
 * directory or the server out of reach, another account's device in a tree to remove first,
 * which only an admin's commit does) is tried again at a later receive, backing off as a joining
 * device is, and given up after MSV_MLS_JOIN_DAYS, told in each group still holding one.
 */
static void outs_flush(struct msv_client *c, int force)
{
    struct msv_group_rec *g = NULL;
    struct dir own = {0};
    uint8_t *v = NULL;
    size_t len = 0, n_groups = 0, held = 0;
    int64_t now = msv_wall_ms();
    uint64_t listed = 0;
    int lags = 0;
    msv_err err = msv_client_db_get(c->db, OUT, &v, &len);

    if (err != MSV_OK || !out_valid(len) || (!force && !retry_due(v, now))) {
        if (err == MSV_OK && !out_valid(len) && msv_client_db_unset(c->db, OUT) != MSV_OK)
            c->why.message[0] = '\0'; /* not one of ours: dropped at the next try */
        free(v);
        return;
    }
    err = own_devices(c, &own);
    if (err == MSV_OK)
        err = msv_client_db_groups(c->db, &g, &n_groups);
    /* a device this device removed that the directory still lists: it has not caught up (or
     * the server answers from before the removal), and nothing can be judged gone yet */
    lags = err == MSV_OK && out_listed(v, len, &own, &listed);
    for (size_t k = 0; err == MSV_OK && k < n_groups; k++) {
        msv_err synced = MSV_OK;

        if (client_mls_is_on(c, g[k].group_id))
            held += own_gone_after(c, g[k].group_id, &own, &synced);
        if (synced == MSV_ERR_IO)
            err = MSV_ERR_IO; /* the rest at the next try */
    }
    /* given up only once the directory was read (a server failing it for days does not end
     * the record untold): told in each group still holding such a device, or its leaf */
    if (err == MSV_OK && held == 0 && !lags) {
        err = out_settle(c, v, len, 1, NULL);
    } else if (err == MSV_OK && retry_expired(v, now)) {
        for (size_t k = 0; k < n_groups; k++) {
            char text[400];

            if (!client_mls_is_on(c, g[k].group_id) ||
                !(own_gone_in(c, g[k].group_id, &own) ||
                  (lags && has_leaf(c, g[k].group_id, listed))))
                continue;
            if (lags)
                snprintf(text, sizeof(text),
                         "the directory still lists device %llu days after this device removed "
                         "it from this account; it stays in the group's MLS group until an "
                         "admin's next change",
                         (unsigned long long)listed);
            else
                snprintf(text, sizeof(text),
                         "this device could not commit for days the removal of a device "
                         "removed from this account; it stays in the group's MLS group until "
                         "an admin's next change");
            if (notice(c, g[k].group_id, text) != MSV_OK)
                c->why.message[0] = '\0'; /* shown all the same */
        }
        (void)client_counter_bump(c, WAITS_GIVEN_UP); /* a count: told above */
        err = out_settle(c, v, len, 1, NULL);
    } else {
        uint8_t *next = malloc(len);

        err = next != NULL ? MSV_OK : MSV_ERR_NOMEM;
        if (err == MSV_OK) {
            memcpy(next, v, len);
            retry_later(c, next, now);
            err = out_settle(c, v, len, 0, next);
        }
        free(next);
    }
    if (err != MSV_OK) /* the record as it was: tried again at the next receive */
        c->why.message[0] = '\0';
    msv_groups_free(g, n_groups);
    dir_free(&own);
    free(v);
}

/*
 * Whether a message to the group goes as per-device copies for a device removed from this
 * account that its tree still holds (while a removal is recorded: its commit made first if
 * this device can); per-device copies reach only the devices the directory lists. A directory
 * that cannot be read holds it too (a per-device send then waits for it).
 */
static int out_held(struct msv_client *c, const uint8_t gid[16])
{
    struct dir own = {0};
    uint8_t *v = NULL;
    size_t len = 0;
    int held = 0;
    msv_err synced;

    if (msv_client_db_get(c->db, OUT, &v, &len) != MSV_OK)
        return 0;
    free(v);
    if (own_devices(c, &own) != MSV_OK)
        return 1;
    held = own_gone_after(c, gid, &own, &synced);
    if (synced != MSV_OK)
        c->why.message[0] = '\0';
    dir_free(&own);
    return held;
}

/*
 * The generations this device moved on from (LEAVE records) left at the delivery service a day
 * later, each by its own Remove proposal there, then at its time: taken, or refused (the group
 * gone, this device no member of it: a crash before the record went; or anything else the
 * server will not take), the record goes; no answer or refused for the rate, it is tried again
 * at a later receive, backing off as a joining device is (the first such failure ends the
 * pass), and given up after MSV_MLS_JOIN_DAYS, counted.
 */
static void leaves_flush(struct msv_client *c)
{
    struct msv_setting *s = NULL;
    size_t n = 0;
    int64_t now = msv_wall_ms();
    msv_err err = msv_client_db_settings(c->db, LEAVE, LEAVES_MAX, &s, &n);

    for (size_t i = 0; err == MSV_OK && i < n; i++) {
        uint8_t id[MLS_ID_LEN], *v = s[i].value;
        size_t got = 0;
        int parsed = s[i].len > LEAVE_HEAD &&
                     msv_hex_decode(s[i].key + strlen(LEAVE), id, sizeof(id), &got) == MSV_OK &&
                     got == MLS_ID_LEN;
        int done = !parsed;

        /* a first time over a day ahead (the clock went back): dated now, so that it is left a
         * day on rather than given up */
        if (parsed && (int64_t)msv_get_u64be(v) > now + LEAVE_AFTER_MS) {
            msv_put_u64be(v, (uint64_t)now);
            msv_put_u64be(v + 8, (uint64_t)now);
            if (msv_client_db_set(c->db, s[i].key, v, s[i].len) != MSV_OK)
                break;
            continue;
        }
        /* a day after it was moved on from, then at its time */
        if (parsed && (now - (int64_t)msv_get_u64be(v) < LEAVE_AFTER_MS || !retry_due(v, now)))
            continue;
        if (parsed && retry_expired(v, now)) {
            (void)client_counter_bump(c, WAITS_GIVEN_UP); /* a count: the membership stays */
            done = 1;
        } else if (parsed) {
            uint64_t self = c->device_id;
            struct msv_mls_sent sent = {0};
            struct msv_mls_send q = {.group_id = id,
                                     .group_id_len = MLS_ID_LEN,
                                     .kind = MSV__WIRE__MLS_KIND__MLS_KIND_PROPOSAL,
                                     .epoch = msv_get_u64be(v + 16),
                                     .message = v + LEAVE_HEAD,
                                     .message_len = s[i].len - LEAVE_HEAD,
                                     .removed = &self,
                                     .n_removed = 1};

            memset(&c->why, 0, sizeof(c->why));
            err = msv_client_connect(c);
            if (err == MSV_OK)
                err = msv_request_mls_send(c->conn, &q, TIMEOUT_MS, &sent, &c->why);
            done = err == MSV_OK || !ask_again_later(c, err);
        }
        if (done) {
            err = msv_client_db_unset(c->db, s[i].key);
            continue;
        }
        retry_later(c, v, now);
        if (msv_client_db_set(c->db, s[i].key, v, s[i].len) != MSV_OK)
            break;
    }
    if (err != MSV_OK) /* the rest at a later receive */
        memset(&c->why, 0, sizeof(c->why));
    msv_settings_free(s, n);
}

/*
 * At the end of a receive, by an admin's device: the group's MLS group made to follow its members
 * at most hourly even when no admin changes it (sync_with with UPDATE_LOOK, quiet: a device that
 * cannot be added is not told again each hour), so that a member's device with no leaf (linked by
 * a device of its account that is in no such group, added before it had a KeyPackage) joins, and
 * a leaf whose device no member has any more goes. "mls-members-at:<hex of the group id>" = u64be
 * wall ms of this device's last look at the group || u8 looks in a row that left a device out
 * or failed (each claims a KeyPackage of every device of the accounts concerned: the next look
 * waits an hour doubled that many times, at most a day), for each group of mls-updated: (the first
 * KEYS_SCAN), written before the look, so that one that fails waits too; a group seen first is
 * looked at an hour later. At most MEMBERS_LOOKS looks a receive (the rest at the next), none past
 * a failure to reach the server. Not a group whose account is no longer a member, to be founded
 * again or behind for good (left to the next send or change, as keys_flush leaves them; sync_once
 * checks again under the lock).
 */
#define MEMBERS_AT "mls-members-at:"
#define MEMBERS_VALUE 9
#define MEMBERS_EVERY_MS (3600 * 1000LL)
#define MEMBERS_WAIT_MAX_MS (86400 * 1000LL)
#define MEMBERS_LOOKS 4

static int behind_still(struct msv_client *c, const uint8_t gid[16], uint64_t *ahead);

/* Writes the look's record (at, misses). */
static msv_err members_at_set(struct msv_client *c, const char *key, int64_t at, uint8_t misses)
{
    uint8_t v[MEMBERS_VALUE];

    msv_put_u64be(v, (uint64_t)at);
    v[8] = misses;
    return msv_client_db_set(c->db, key, v, sizeof(v));
}

/* s: the mls-updated: records keys_flush read (those it removed of length 0). */
static void members_flush(struct msv_client *c, int64_t now, const struct msv_setting *s, size_t n)
{
    int looks = 0;
    msv_err err = MSV_OK;

    for (size_t i = 0; err == MSV_OK && i < n && looks < MEMBERS_LOOKS; i++) {
        char key[KEY_MAX];
        uint8_t gid[16], *v = NULL, misses = 0;
        size_t len = 0;
        uint64_t marked = 0;
        int64_t at = 0, wait;

        if (!gid_of_key(s[i].key, UPDATED, gid) || s[i].len != 8)
            continue;
        group_key(MEMBERS_AT, gid, key);
        if (msv_client_db_get(c->db, key, &v, &len) == MSV_OK && len == MEMBERS_VALUE) {
            at = (int64_t)msv_get_u64be(v);
            misses = v[8];
        }
        free(v);
        wait = doubled(MEMBERS_EVERY_MS, misses, MEMBERS_WAIT_MAX_MS);
        /* (a look recorded ahead of the clock by more than the wait: the clock went back) */
        if (at > 0 && at <= now + wait && now - at < wait)
            continue;
        err = members_at_set(c, key, now, misses);
        if (err != MSV_OK || at == 0 || !client_mls_is_on(c, gid) || !self_is_admin(c, gid) ||
            self_member(c, gid) <= 0 || refound_due(c, gid) || behind_still(c, gid, &marked))
            continue;
        looks++;
        memset(&c->why, 0, sizeof(c->why));
        c->mls_look_missing = 0;
        err = sync_with(c, gid, 0, UPDATE_LOOK, 1, 1);
        memset(&c->why, 0, sizeof(c->why)); /* told nowhere: the receive went well */
        /* the server out of reach: the other groups' looks at the next receive */
        if (err == MSV_ERR_IO || err == MSV_ERR_NOMEM)
            break;
        /* a look that left a device out, or failed (a claim refused, a commit too large), waits
         * longer; one that left nobody out starts again from an hour */
        if (err == MSV_OK && c->mls_look_missing == 0)
            misses = 0;
        else if (misses < UINT8_MAX)
            misses++;
        err = members_at_set(c, key, now, misses);
    }
}

/*
 * At the end of a receive: a leaf due for its regular update is renewed even by a device that
 * sends nothing to its group (a send renews it before it goes: update_due), and a path not
 * keyed (key_schedule) is keyed, each by a commit of its own (sync_with, UPDATE_IF_DUE, which
 * looks again under the lock; a group an admin's device is to found again is left to its next
 * send or change).
 */
static void keys_flush(struct msv_client *c)
{
    struct msv_setting *s = NULL, *upd = NULL;
    size_t n = 0, n_upd = 0;
    int64_t now = msv_wall_ms();
    char key[KEY_MAX];
    int tried = 0;
    msv_err err = msv_client_db_settings(c->db, UPDATED, KEYS_SCAN, &upd, &n_upd);

    /* (read once: the admin's looks go through the same records, members_flush) */
    s = upd;
    n = n_upd;
    for (size_t i = 0; err == MSV_OK && i < n; i++) {
        uint8_t gid[16];
        uint64_t at;

        if (!gid_of_key(s[i].key, UPDATED, gid) || s[i].len != 8)
            continue;
        at = msv_get_u64be(s[i].value);
        /* a last commit recorded over a day ahead (the clock went back): counted from now */
        if (at > (uint64_t)(now / 1000) + 86400) {
            err = updated_now(c, gid);
            continue;
        }
        if (!renew_due_at(c, gid, at) || is_set(c, group_key(KEY_BY, gid, key)))
            continue;
        /* under the lock: a join another process of this account is saving makes the group's
         * state and this record anew */
        err = mls_lock(c);
        if (err != MSV_OK)
            break;
        /* looked at again: another process of this account may have made or put off that
         * commit meanwhile. The record of a group this device is no longer in on MLS goes; one
         * of a group its account left waits (every member would refuse a commit of its) */
        if (is_set(c, group_key(KEY_BY, gid, key)) || !renew_due(c, gid))
            err = MSV_OK;
        else if (!client_mls_is_on(c, gid)) {
            err = msv_client_db_unset(c->db, s[i].key);
            if (err == MSV_OK) /* (the admin's look at it goes with it) */
                err = msv_client_db_unset(c->db, group_key(MEMBERS_AT, gid, key));
            s[i].len = 0; /* gone: no look at it */
        } else if (self_member(c, gid) != 0)
            err = key_by_set(c, gid, now, KEY_RENEW, 0);
        mls_unlock(c);
    }
    s = NULL;
    n = 0;
    if (err == MSV_OK)
        err = msv_client_db_settings(c->db, KEY_BY, KEYS_SCAN, &s, &n);
    for (size_t i = 0; err == MSV_OK && i < n && tried < KEYS_TRIED; i++) {
        uint8_t gid[16], *v = s[i].value, *now_v = NULL;
        size_t now_len = 0;
        int64_t due, wait;
        uint8_t tries;
        int on;

        if (!gid_of_key(s[i].key, KEY_BY, gid) || s[i].len != KEY_BY_VALUE) {
            err = msv_client_db_unset(c->db, s[i].key);
            continue;
        }
        due = (int64_t)msv_get_u64be(v);
        if (key_by_due(due, now) > now)
            continue;
        err = mls_lock(c);
        if (err != MSV_OK)
            break;
        on = client_mls_is_on(c, gid);
        if (!on)
            err = msv_client_db_unset(c->db, s[i].key);
        mls_unlock(c);
        if (!on)
            continue;
        tried++;
        memset(&c->why, 0, sizeof(c->why));
        err = sync_with(c, gid, 0, UPDATE_IF_DUE, 1, 1);
        /* committed (committed_now, counted by sync_once) or no longer owed (key_due): the
         * record is gone */
        if (err == MSV_OK && !is_set(c, s[i].key))
            continue;
        /* put off, from the record as it is under the lock: one another process of this
         * account put off or ended meanwhile stays as it is */
        err = mls_lock(c);
        if (err != MSV_OK)
            break;
        if (msv_client_db_get(c->db, s[i].key, &now_v, &now_len) == MSV_OK &&
            now_len == KEY_BY_VALUE && memcmp(now_v, v, KEY_BY_VALUE) == 0) {
            tries = v[9] < UINT8_MAX ? (uint8_t)(v[9] + 1) : v[9];
            wait = doubled(KEY_RETRY_MS, tries - 1u, KEY_RETRY_MAX_MS);
            /* a quarter more at random: devices that failed together try again apart */
            wait += (int64_t)randombytes_uniform((uint32_t)(wait / 4));
            err = key_by_set(c, gid, now + wait, v[8], tries);
            if (err == MSV_OK)
                err = client_counter_bump(c, KEYINGS_PUT_OFF);
        }
        free(now_v);
        mls_unlock(c);
        memset(&c->why, 0, sizeof(c->why)); /* told nowhere: the receive went well */
    }
    if (err != MSV_OK) /* the rest at a later receive */
        memset(&c->why, 0, sizeof(c->why));
    msv_settings_free(s, n);
    if (err == MSV_OK) /* (looks have their own bound) */
        members_flush(c, now, upd, n_upd);
    msv_settings_free(upd, n_upd);
}

/*
 * A device the server says was added to this account (a cue alone): recorded to be added to
 * this device's groups on MLS as one it approved is (client_mls_join_due), if the directory
 * lists it under this account, so that a device linked by another of the account's devices
 * (one not in a group, say) joins that group too without waiting for an admin's change. A
 * notice never pushes out another wait (none is recorded while MSV_MLS_JOINS_MAX do), nor
 * starts again one recorded already.
 */
msv_err client_mls_join_noticed(struct msv_client *c, uint64_t device_id)
{
    struct msv_setting *s = NULL;
    struct dir own = {0};
    size_t n = 0;
    char key[KEY_MAX];
    msv_err err;

    if (device_id == c->device_id || is_set(c, join_key(device_id, key)))
        return MSV_OK;
    err = msv_client_db_settings(c->db, JOIN, MSV_MLS_JOINS_MAX, &s, &n);
    msv_settings_free(s, n);
    if (err != MSV_OK || n >= MSV_MLS_JOINS_MAX)
        return err;
    err = own_devices(c, &own);
    if (err == MSV_OK && dir_find(&own, device_id) != NULL)
        err = record_now(c, join_key(device_id, key));
    dir_free(&own);
    return err;
}

void client_mls_outs(struct msv_client *c)
{
    if (c->mls_joining)
        return;
    c->mls_joining = 1;
    outs_flush(c, 1);
    c->mls_joining = 0;
}

msv_err client_mls_rejoin_asked(struct msv_client *c, const uint8_t gid[16], const char *sender,
                                uint64_t device, uint64_t sent_at_ms)
{
    struct msv_mls_member *m = NULL;
    struct msv_setting *s = NULL;
    uint8_t *roster = NULL, *v = NULL, hash[32];
    size_t roster_len = 0, len = 0, n = 0, kept = 0;
    char key[KEY_MAX], handle[257];
    int64_t now = msv_wall_ms();
    uint32_t at = UINT32_MAX;
    int loaded = 0, named = 0;
    msv_err err;

    /* an ask written over an hour ago (held back, or sent again from an outbox) is stale: the
     * device may have joined again since */
    if (device == c->device_id || (int64_t)sent_at_ms < now - REJOIN_EVERY_MS ||
        !self_is_admin(c, gid) || !client_mls_is_on(c, gid))
        return MSV_OK;
    /* the device's leaf, which the roster must name as sender's; a device with none (linked,
     * and not added by the device that approved it) asks to be added: the sync adds it if the
     * verified directory lists it for a member (its record's hash is all zero) */
    err = mls_lock(c);
    if (err != MSV_OK)
        return err;
    if (state_load(c, gid, &m, &roster, &roster_len) == MSV_OK) {
        loaded = 1;
        named = roster_handle(roster, roster_len, device, handle) == MSV_OK &&
                strcmp(handle, sender) == 0;
        at = leaf_of(m, device);
    }
    memset(hash, 0, sizeof(hash));
    if (at != UINT32_MAX)
        leaf_hash(m, at, hash);
    mls_unlock(c);
    msv_mls_member_free(m);
    free(roster);
    if (!loaded || (at != UINT32_MAX && !named))
        return MSV_OK;
    /* asked before: replaced (or its leaf changed) within the hour, or still waiting for that
     * leaf (tried again at the end of this receive, unless its KeyPackage was missing lately) */
    if (msv_client_db_get(c->db, rejoin_key(gid, device, key), &v, &len) == MSV_OK &&
        len == REJOIN_VALUE) {
        int64_t last = (int64_t)msv_get_u64be(v + 8);
        int done = v[16] != 0, same = !done && memcmp(v + 17, hash, 32) == 0;

        free(v);
        if ((done && within(last, now, REJOIN_EVERY_MS)) ||
            (same && within(last, now, REJOIN_RETRY_MS)))
            return MSV_OK;
        if (same)
            return client_mls_follow_due(c, gid);
    } else {
        free(v);
    }
    /* bounded: those done over an hour ago and those waiting for days forgotten, then at most
     * REJOIN_MAX kept */
    err = msv_client_db_settings(c->db, REJOIN, SIZE_MAX, &s, &n);
    for (size_t i = 0; err == MSV_OK && i < n; i++) {
        int keep = s[i].len == REJOIN_VALUE &&
                   (s[i].value[16] != 0
                        ? within((int64_t)msv_get_u64be(s[i].value + 8), now, REJOIN_EVERY_MS)
                        : within((int64_t)msv_get_u64be(s[i].value), now,
                                 (int64_t)MSV_MLS_JOIN_DAYS * 86400 * 1000));

        if (keep)
            kept++;
        else
            err = msv_client_db_unset(c->db, s[i].key);
    }
    msv_settings_free(s, n);
    if (err == MSV_OK && kept >= REJOIN_MAX)
        return client_counter_bump(c, REJOINS_HELD);
    if (err == MSV_OK)
        err = rejoin_set(c, gid, device, now, 0, 0, hash);
    return err == MSV_OK ? client_mls_follow_due(c, gid) : err;
}

int client_mls_unusable(struct msv_client *c, const uint8_t gid[16])
{
    char key[KEY_MAX];
    uint64_t ahead = 0;

    /* the mark looked for first: behind_still reads the state */
    return !client_mls_is_on(c, gid) || (is_set(c, group_key(BEHIND, gid, key)) &&
                                         !self_is_admin(c, gid) && behind_still(c, gid, &ahead));
}

uint64_t msv_client_mls_keyings_made(struct msv_client *c)
{
    return client_counter(c, KEYINGS_MADE);
}

uint64_t msv_client_mls_keyings_put_off(struct msv_client *c)
{
    return client_counter(c, KEYINGS_PUT_OFF);
}

/*
 * The first of: each record's due time (one further off than any wait counts as due now, as
 * keys_flush reads it), and the regular renewal (renew_due_at) of each group with none, at
 * most KEYS_SCAN of each, as keys_flush looks at them; not a renewal due of a group this
 * account is no longer in, which keys_flush leaves.
 */
int64_t msv_client_mls_keys_next(struct msv_client *c)
{
    struct msv_setting *s = NULL;
    size_t n = 0;
    int64_t now = msv_wall_ms(), first = INT64_MAX;
    char key[KEY_MAX];

    if (msv_client_db_settings(c->db, KEY_BY, KEYS_SCAN, &s, &n) != MSV_OK)
        n = 0;
    for (size_t i = 0; i < n; i++) {
        int64_t due =
            s[i].len == KEY_BY_VALUE ? key_by_due((int64_t)msv_get_u64be(s[i].value), now) : now;

        first = due < first ? due : first;
    }
    msv_settings_free(s, n);
    s = NULL;
    n = 0;
    if (msv_client_db_settings(c->db, UPDATED, KEYS_SCAN, &s, &n) != MSV_OK)
        n = 0;
    for (size_t i = 0; i < n; i++) {
        uint8_t gid[16];
        uint64_t at;
        int64_t due;

        if (!gid_of_key(s[i].key, UPDATED, gid) || s[i].len != 8)
            continue;
        at = msv_get_u64be(s[i].value);
        if (at == 0)
            continue;
        if (at > (uint64_t)(now / 1000) + 86400) /* keys_flush counts it from now */
            due = now;
        else
            due = (int64_t)renew_at(c, gid, at) * 1000;
        /* one due that keys_flush leaves (its account is no longer in the group) is not */
        if (due < first && !is_set(c, group_key(KEY_BY, gid, key)) &&
            (due > now || self_member(c, gid) != 0))
            first = due;
    }
    msv_settings_free(s, n);
    return first;
}

void client_mls_joins(struct msv_client *c)
{
    struct msv_setting *s = NULL;
    struct msv_group_rec *g = NULL;
    size_t n = 0, n_groups = 0;
    int64_t now = msv_wall_ms();

    /* a sync reached from here reads no queue of its own (a commit refused as stale waits for
     * the next receive) */
    if (c->mls_joining)
        return;
    c->mls_joining = 1;
    welcomes_flush(c);
    follows_flush(c);
    outs_flush(c, 0);
    leaves_flush(c);
    /* not from a receive within a send (its commit would race the send's own) */
    if (c->mls_within == 0)
        keys_flush(c);
    if (msv_client_db_settings(c->db, JOIN, MSV_MLS_JOINS_MAX, &s, &n) != MSV_OK)
        n = 0;
    if (n > 0 && msv_client_db_groups(c->db, &g, &n_groups) != MSV_OK)
        n = 0;
    for (size_t i = 0; i < n; i++) {
        unsigned long long device = 0;
        char key[KEY_MAX];
        int done = 0, parsed;
        const char *give_up = NULL;
        char reason[120];
        uint8_t v[RETRY_VALUE];
        msv_err err = MSV_OK;

        parsed = s[i].len == RETRY_VALUE &&
                 sscanf(s[i].key + strlen(JOIN), "%16llx", &device) == 1 && device != 0;
        if (parsed)
            memcpy(v, s[i].value, RETRY_VALUE);
        if (parsed && !retry_due(v, now))
            continue;
        if (parsed && retry_expired(v, now)) {
            snprintf(reason, sizeof(reason),
                     "in %d days it published no KeyPackage, was removed, or the group could "
                     "not take it",
                     MSV_MLS_JOIN_DAYS);
            give_up = reason;
        }
        if (parsed)
            err = join_groups(c, g, n_groups, device, give_up, &done);
        if (err == MSV_ERR_IO)
            break; /* out of reach or refused for now: all of them at the next receive */
        if (parsed && give_up != NULL && !done)
            (void)client_counter_bump(c, WAITS_GIVEN_UP); /* a count: told in its groups */
        if (!parsed || done || give_up != NULL) {
            if (msv_client_db_unset(c->db, s[i].key) != MSV_OK)
                break;
            continue;
        }
        /* backing off (each try looks up every member of each group) */
        retry_later(c, v, now);
        if (msv_client_db_set(c->db, join_key(device, key), v, sizeof(v)) != MSV_OK)
            break;
    }
    msv_groups_free(g, n_groups);
    msv_settings_free(s, n);
    c->mls_joining = 0;
}

/* ---- messages ------------------------------------------------------------------------------ */

/*
 * Whether a leaf of m's tree holds a device of no current member (the roster's handle for it is
 * gone from the group's signed member list): a removal not committed yet, or a commit withheld.
 * why names the first such device.
 */
static int stale_leaf(struct msv_client *c, const uint8_t gid[16], const struct msv_mls_member *m,
                      const uint8_t *roster, size_t roster_len, char *why, size_t why_len)
{
    struct msv_group_rec g = {0};
    char **members = NULL, handle[257];
    size_t n = 0;
    int stale = 0;

    if (msv_client_db_group_get(c->db, gid, NULL, &g) != MSV_OK ||
        client_members_of(g.members, &members, &n) != MSV_OK) {
        msv_group_clear(&g);
        snprintf(why, why_len, "the group's member list could not be read");
        return 1;
    }
    for (uint32_t i = 0; i < m->tree.n_leaves && !stale; i++) {
        const struct msv_mls_node *x = &m->tree.nodes[2 * i];
        const uint8_t *identity;
        size_t identity_len;
        uint64_t device = 0;
        int member = 0;

        if (x->type != 1)
            continue;
        if (msv_mlskeys_leaf_credential(x->leaf.raw, x->leaf.raw_len, &identity, &identity_len,
                                        &device) != MSV_OK ||
            roster_handle(roster, roster_len, device, handle) != MSV_OK) {
            snprintf(why, why_len, "leaf %u names no device of the roster", i);
            stale = 1;
            break;
        }
        for (size_t k = 0; k < n && !member; k++)
            member = strcmp(members[k], handle) == 0;
        if (!member) {
            snprintf(why, why_len, "leaf %u still holds device %llu of %.200s, no member any more",
                     i, (unsigned long long)device, handle);
            stale = 1;
        }
    }
    free(members);
    msv_group_clear(&g);
    return stale;
}

/*
 * Whether the roster names a handle that this device learnt is a new account after the message
 * being sent was written (client_renewed_since): its tree may hold the new account's devices,
 * which the message was not written to.
 */
static int roster_renewed(struct msv_client *c, const uint8_t *roster, size_t len)
{
    struct msv_reader r;
    char handle[MSV_HANDLE_MAX + 1];
    uint64_t device;

    if (c->written_ms == 0 || !client_renewed_any(c))
        return 0; /* the common case: no handle ever was */
    msv_reader_init(&r, roster, len);
    while (roster_next(&r, &device, handle))
        if (!client_is_own_handle(c, handle) && client_renewed_since(c, handle, c->written_ms))
            return 1;
    return 0;
}

#define UNVERIFIED_TOLD "mls-unverified:" /* + hex of the group id: the leaf device told of */

/*
 * The members this device verified (missive verify), held to the devices verified before a
 * message goes on MLS, as a per-device send holds them: their devices changed since refuses
 * it (MSV_ERR_AUTH, why.code MSV_REFUSAL_KEY_CHANGE). A leaf of theirs in the tree that is
 * none of those devices (one removed since, which only an admin's commit takes out of the
 * tree) sends it as per-device copies (*elsewhere), which reach the verified devices alone;
 * told in the group once for each such device.
 */
static msv_err verified_check(struct msv_client *c, const uint8_t gid[16],
                              const struct msv_mls_member *m, const uint8_t *roster,
                              size_t roster_len, int *elsewhere)
{
    struct msv_reader r;
    struct dir dir = {0};
    struct msv_setting *marks = NULL;
    char handle[MSV_HANDLE_MAX + 1], **verified = NULL, key[KEY_MAX], text[500];
    size_t n = 0, n_marks = 0;
    uint64_t device, odd = 0;
    /* the marks read once (most devices have none: then nothing more is done), not once for
     * each of the roster's devices */
    msv_err err = msv_client_db_settings(c->db, MSV_VERIFIED_PREFIX, SIZE_MAX, &marks, &n_marks);

    msv_reader_init(&r, roster, roster_len);
    while (err == MSV_OK && n_marks > 0 && roster_next(&r, &device, handle)) {
        int listed = 0, marked = 0;
        char **grown;

        for (size_t i = 0; i < n && !listed; i++)
            listed = strcmp(verified[i], handle) == 0;
        for (size_t i = 0; i < n_marks && !listed && !marked; i++)
            marked = strcmp(marks[i].key + strlen(MSV_VERIFIED_PREFIX), handle) == 0;
        if (listed || !marked || client_is_own_handle(c, handle))
            continue;
        grown = realloc(verified, (n + 1) * sizeof(*grown));
        if (grown == NULL || (grown[n] = strdup(handle)) == NULL)
            err = MSV_ERR_NOMEM;
        if (grown != NULL)
            verified = grown;
        if (err == MSV_OK)
            n++;
    }
    if (err == MSV_OK && n > 0)
        err = dir_lookup(c, verified, n, 1, &dir);
    for (uint32_t i = 0; err == MSV_OK && n > 0 && odd == 0 && i < m->tree.n_leaves; i++) {
        const struct msv_mls_node *x = &m->tree.nodes[2 * i];
        const struct dir_device *d;
        const uint8_t *identity;
        size_t identity_len;
        const char *reason = NULL;
        int listed = 0;

        if (x->type != 1 ||
            msv_mlskeys_leaf_credential(x->leaf.raw, x->leaf.raw_len, &identity, &identity_len,
                                        &device) != MSV_OK ||
            roster_handle(roster, roster_len, device, handle) != MSV_OK)
            continue; /* every leaf names a device of the roster (stale_leaf) */
        for (size_t k = 0; k < n && !listed; k++)
            listed = strcmp(verified[k], handle) == 0;
        /* the device listed under that very handle (a lookup may answer for others too) */
        if (listed && ((d = dir_find(&dir, device)) == NULL || strcmp(d->handle, handle) != 0 ||
                       msv_mlskeys_leaf_check(d->pub, device, &x->leaf, &reason) != MSV_OK))
            odd = device;
    }
    if (err == MSV_OK && odd != 0) {
        uint8_t *told = NULL, v[8];
        size_t told_len = 0;

        *elsewhere = 1;
        msv_put_u64be(v, odd);
        group_key(UNVERIFIED_TOLD, gid, key);
        if (msv_client_db_get(c->db, key, &told, &told_len) != MSV_OK || told_len != 8 ||
            memcmp(told, v, 8) != 0) {
            snprintf(text, sizeof(text),
                     "device %llu of %.256s is in the group's MLS tree but is not one of the "
                     "devices you verified of them (removed since, until an admin's commit "
                     "takes it out): messages go as per-device copies to the devices you "
                     "verified",
                     (unsigned long long)odd, handle);
            err = notice(c, gid, text);
            if (err == MSV_OK)
                err = msv_client_db_set(c->db, key, v, sizeof(v));
        }
        free(told);
    }
    dir_free(&dir);
    for (size_t i = 0; i < n; i++)
        free(verified[i]);
    free(verified);
    msv_settings_free(marks, n_marks);
    return err;
}

/* "mls-full-said:<hex of the group id>" = u64be wall ms this device last told that a message
 * missed devices whose queue was full (send_once) */
#define FULL_SAID "mls-full-said:"
#define FULL_SAID_EVERY_MS (3600LL * 1000)

/* Whether a full queue's leaving out devices is told now (not within the hour; a time ahead
 * of the clock counts as now), recorded so if it is. */
static int full_said_due(struct msv_client *c, const uint8_t gid[16])
{
    if (within(stamp_of(c, FULL_SAID, gid), msv_wall_ms(), FULL_SAID_EVERY_MS))
        return 0;
    return stamp_now(c, FULL_SAID, gid) == MSV_OK;
}

/* Whether payload pt is one the user wrote and sees (a message), not a typing notice or the
 * like. */
static int is_shown(const uint8_t *pt, size_t pt_len)
{
    struct msv_payload *p = NULL;
    int shown = msv_payload_parse(pt, pt_len, &p) == MSV_OK && p->kind == MSV_KIND_MESSAGE;

    msv_payload_free(p);
    return shown;
}

/*
 * One application message of pt at this device's epoch, of the generation it holds (*gen);
 * *behind: the delivery service's epoch for that generation was past it (a commit this device
 * has not read yet crossed it). *renewed, and nothing sent, when the tree names a member that
 * is a new account since the message was written (roster_renewed), or a device of a verified
 * member that is not one of those verified (verified_check): it goes as per-device copies
 * instead.
 */
static msv_err send_once(struct msv_client *c, const uint8_t gid[16], const uint8_t *pt,
                         size_t pt_len, uint64_t *behind, uint32_t *gen, int *renewed)
{
    struct msv_mls_member *m = NULL;
    uint8_t *roster = NULL, *msg = NULL, id[MLS_ID_LEN];
    size_t roster_len = 0, msg_len = 0, others = 0;
    uint64_t epoch = 0, now = 0;
    struct msv_mls_sent sent = {0};
    msv_err err = mls_lock(c);

    *behind = 0;
    if (err != MSV_OK)
        return err;
    err = state_load(c, gid, &m, &roster, &roster_len);
    /* never sealed for a tree that still holds a removed member's device */
    if (err == MSV_OK &&
        stale_leaf(c, gid, m, roster, roster_len, c->why.message, sizeof(c->why.message)))
        err = MSV_ERR_AUTH;
    *renewed = err == MSV_OK && roster_renewed(c, roster, roster_len);
    if (err == MSV_OK && !*renewed)
        err = verified_check(c, gid, m, roster, roster_len, renewed);
    if (err == MSV_OK && !*renewed)
        err = msv_mls_member_protect(m, pt, pt_len, &msg, &msg_len);
    if (err == MSV_OK && msg_len > MLS_MESSAGE_MAX)
        err = MSV_ERR_TOO_BIG;
    /* the key used is gone from the state before its message exists anywhere else */
    if (err == MSV_OK && !*renewed)
        err = state_save(c, gid, m, NULL, roster, roster_len);
    if (err == MSV_OK && !*renewed) {
        epoch = m->epoch;
        *gen = generation_of(m);
        mls_id(gid, *gen, id);
        for (uint32_t i = 0; i < m->tree.n_leaves; i++) {
            uint64_t device = 0;

            others += i != m->me && leaf_device(m, i, &device);
        }
    }
    mls_unlock(c);
    if (err == MSV_OK && !*renewed) {
        struct msv_mls_send s = {.group_id = id,
                                 .group_id_len = sizeof(id),
                                 .kind = MSV__WIRE__MLS_KIND__MLS_KIND_APPLICATION,
                                 .epoch = epoch,
                                 .message = msg,
                                 .message_len = msg_len};

        err = msv_request_mls_send(c->conn, &s, TIMEOUT_MS, &sent, &c->why);
        if (err == MSV_ERR_AGAIN) /* a server's "stale devices": no reason to send otherwise */
            err = MSV_ERR_IO;
        now = sent.epoch;
    }
    /* every other device of the group left out: nobody has it, and it fails as a send whose
     * every recipient's queue is full does (the outbox tries it once more) */
    if (err == MSV_OK && sent.queued == 0 && sent.full > 0) {
        c->why.code = MSV__WIRE__ERROR_CODE__ERROR_TOO_BIG;
        snprintf(c->why.message, sizeof(c->why.message),
                 "the queue%s on the server of the group's %u other device%s %s full; nothing "
                 "was sent, try again later",
                 sent.full == 1 ? "" : "s", sent.full, sent.full == 1 ? "" : "s",
                 sent.full == 1 ? "is" : "are");
        err = MSV_ERR_TOO_BIG;
    }
    /* the devices a full queue left out miss this message alone: told (a message the user
     * wrote, at most hourly in a group), not sent again; the message went all the same */
    if (err == MSV_OK && !*renewed && now <= epoch && sent.full > 0 && is_shown(pt, pt_len) &&
        full_said_due(c, gid))
        full_notice(c, gid, roster, roster_len, &sent, "a message", "; told at most hourly");
    /* a message nobody at the delivery service took, while the tree holds other devices: they
     * all moved on to a later generation (a founding again this device has not read yet) and
     * left this one, or were removed: taken as behind the group, so that the queue is read and
     * the message goes again where they are, or as per-device copies, told */
    c->mls_sent_nobody = err == MSV_OK && !*renewed && sent.queued == 0 && sent.full == 0 &&
                         others > 0 && now <= epoch && is_shown(pt, pt_len);
    if (c->mls_sent_nobody)
        now = epoch + 1;
    *behind = err == MSV_OK && now > epoch ? now : 0; /* the delivery service's epoch */
    msv_mls_member_free(m);
    free(roster);
    free(msg);
    return err;
}

/* Whether the stored tree holds a device of no current member. */
static int stale_now(struct msv_client *c, const uint8_t gid[16])
{
    struct msv_mls_member *m = NULL;
    uint8_t *roster = NULL;
    size_t roster_len = 0;
    char why[300];
    int stale = 0;

    if (mls_lock(c) != MSV_OK)
        return 0;
    if (state_load(c, gid, &m, &roster, &roster_len) == MSV_OK)
        stale = stale_leaf(c, gid, m, roster, roster_len, why, sizeof(why));
    mls_unlock(c);
    msv_mls_member_free(m);
    free(roster);
    return stale;
}

/* The generation of the group this device holds (-1: none), and its epoch in *epoch. */
static int64_t held_generation(struct msv_client *c, const uint8_t gid[16], uint64_t *epoch)
{
    struct msv_mls_member *m = NULL;
    uint8_t *roster = NULL;
    size_t roster_len = 0;
    int64_t gen = -1;

    *epoch = 0;
    if (state_load(c, gid, &m, &roster, &roster_len) == MSV_OK) {
        gen = generation_of(m);
        *epoch = m->epoch;
    }
    msv_mls_member_free(m);
    free(roster);
    return gen;
}

/*
 * "mls-refused:<hex of the group id>" = u32be generation || u64be epoch || SHA-256 of the
 * commit as delivered (MlsDelivery.message: the commit, or its reference): the last commit
 * whose refusal (or failed fetch, or removal of this device's leaf) was told. The same one
 * given again, by the queue or the delivery service's log (catch_up), is looked at again (what
 * refused it may have changed: a signed change come since) but not told again. A refusal is
 * kept in the client (refusal_due) for its teller, which takes it (client_mls_refusal_take)
 * as soon as client_mls_take returns: client_mls_refusal_repeat says whether it was told
 * already, and client_mls_refusal_told records it once the notice is stored.
 */
#define REFUSED "mls-refused:"
#define REFUSED_VALUE 44

static void refused_value(uint32_t gen, uint64_t epoch, const uint8_t digest[32],
                          uint8_t v[REFUSED_VALUE])
{
    msv_put_u32be(v, gen);
    msv_put_u64be(v + 4, epoch);
    memcpy(v + 12, digest, 32);
}

static void refusal_due(struct msv_client *c, const uint8_t gid[16], const uint8_t v[REFUSED_VALUE])
{
    memcpy(c->mls_refusal.gid, gid, 16);
    memcpy(c->mls_refusal.seen, v, REFUSED_VALUE);
    c->mls_refusal.due = 1;
}

static int refused_before(struct msv_client *c, const uint8_t gid[16],
                          const uint8_t v[REFUSED_VALUE])
{
    char key[KEY_MAX];
    uint8_t *was = NULL;
    size_t len = 0;
    int same = msv_client_db_get(c->db, group_key(REFUSED, gid, key), &was, &len) == MSV_OK &&
               len == REFUSED_VALUE && memcmp(was, v, REFUSED_VALUE) == 0;

    free(was);
    return same;
}

void client_mls_refusal_take(struct msv_client *c, struct client_mls_refusal *r)
{
    *r = c->mls_refusal;
    c->mls_refusal.due = 0;
}

int client_mls_refusal_repeat(struct msv_client *c, const struct client_mls_refusal *r)
{
    return r->due && refused_before(c, r->gid, r->seen);
}

msv_err client_mls_refusal_told(struct msv_client *c, const struct client_mls_refusal *r)
{
    char key[KEY_MAX];

    return r->due
               ? msv_client_db_set(c->db, group_key(REFUSED, r->gid, key), r->seen, sizeof(r->seen))
               : MSV_OK;
}

/*
 * The commits this device missed (left out of them for a full queue), read from the delivery
 * service's commit log (docs/wire.md, "MLS delivery"), up to epoch target. Each is taken as one
 * from the queue is (take_commit: verified, checked against the directory and the group's
 * admins; one refused changes nothing), in epoch order from the one this device holds; the
 * first that does not move it on ends the catch-up. What the log gives is the delivery
 * service's word alone until it verifies: a delivery that is no commit of this group at the
 * epoch looked for, or this device's own (which it cannot take: a commit whose answer it lost),
 * is left untaken. A read that brought nothing, or was refused for anything but the rate, is
 * not made again for the same group and epoch within MLS_CATCH_UP_QUIET_MS by this process,
 * unless force (a send the delivery service said the group is past). A read with no answer
 * (the connection failed) or refused for the rate, and a failure of storage, are returned as
 * MSV_ERR_IO (the delivery that asked stays unacknowledged); *moved: the epochs gained.
 */
#define CATCH_UP_READS 16 /* reads of the log one catch-up makes (64 commits, 256 KiB each) */
#define MLS_CATCH_UP_QUIET_MS 60000

#define WELCOME_ASKED UINT64_MAX     /* the quiet table's epoch of an ask for a Welcome kept */
#define QUEUE_FIRST (UINT64_MAX - 1) /* its epoch of a queue read before a send (no state) */

/* Which of the quiet table's three kinds of entry epoch names: a log read, an ask for a
 * Welcome kept, a queue read before a send. */
static int quiet_kind(uint64_t epoch)
{
    return epoch == WELCOME_ASKED ? 1 : epoch == QUEUE_FIRST ? 2 : 0;
}

/* Whether a read of what the delivery service keeps (asked: how the request ended, c->why its
 * refusal) is to be made again with the delivery that asked: it got no answer (the connection
 * failed), or was refused for the rate (the bucket refills at 2 a second). */
static int ask_again_later(const struct msv_client *c, msv_err asked)
{
    return asked != MSV_OK && (c->why.code == 0 || asked == MSV_ERR_IO ||
                               c->why.code == MSV__WIRE__ERROR_CODE__ERROR_RATE_LIMITED);
}

/* Whether this device was told of group gid (it holds the group's record). */
static int group_known(struct msv_client *c, const uint8_t gid[16])
{
    struct msv_group_rec g = {0};
    int known = msv_client_db_group_get(c->db, gid, NULL, &g) == MSV_OK;

    msv_group_clear(&g);
    return known;
}

/* The slot of group gid in the table of reads that brought nothing (the oldest if none): a
 * read of its log, an ask for its Welcome kept (epoch WELCOME_ASKED), or a queue read before a
 * send (QUEUE_FIRST), each its own. */
static struct client_mls_quiet *quiet_slot(struct msv_client *c, const uint8_t gid[16],
                                           uint64_t epoch)
{
    struct client_mls_quiet *oldest = &c->mls_quiet[0];

    for (size_t i = 0; i < MSV_CLIENT_MLS_QUIET; i++) {
        if (memcmp(c->mls_quiet[i].gid, gid, 16) == 0 &&
            quiet_kind(c->mls_quiet[i].epoch) == quiet_kind(epoch))
            return &c->mls_quiet[i];
        if (c->mls_quiet[i].ms < oldest->ms)
            oldest = &c->mls_quiet[i];
    }
    return oldest;
}

static int catch_up_quiet(struct msv_client *c, const uint8_t gid[16], uint32_t gen, uint64_t epoch)
{
    const struct client_mls_quiet *q = quiet_slot(c, gid, epoch);
    int64_t now = msv_mono_ms();

    return q->ms != 0 && memcmp(q->gid, gid, 16) == 0 && q->gen == gen && q->epoch == epoch &&
           now - q->ms < MLS_CATCH_UP_QUIET_MS && now >= q->ms;
}

static void catch_up_quiet_set(struct msv_client *c, const uint8_t gid[16], uint32_t gen,
                               uint64_t epoch)
{
    struct client_mls_quiet *q = quiet_slot(c, gid, epoch);

    memcpy(q->gid, gid, 16);
    q->gen = gen;
    q->epoch = epoch;
    q->ms = msv_mono_ms();
    if (q->ms == 0)
        q->ms = 1;
}

/*
 * "mls-taken:<hex of the group id>" = u32be generation || up to TAKEN_KEPT times (u64be epoch
 * || SHA-256 of the commit as delivered): the newest commits this device took, from the queue
 * or the log, saved with the state that took each (one transaction). The same commit given
 * again for an epoch past (the queue's copy of one the log gave, or the log's of one the queue
 * gave, by another process of the account meanwhile) is not told of; another one for that
 * epoch is (a fork).
 */
#define TAKEN "mls-taken:"
#define TAKEN_KEPT 256 /* the commits a group's log keeps */
#define TAKEN_ENTRY 40

/*
 * "mls-joined:<hex of the group id>" = u32be generation || u64be epoch held before (0: none of
 * that generation) || u64be epoch joined at: the epochs this device last skipped by joining a
 * generation of the group from a Welcome, saved with the state it made. A commit of that
 * generation for one of those epochs is one it never held a state for (one its queue still
 * held when it joined from a Welcome the server kept for it): not told. One for an epoch it
 * held before is told as ever (a replay, or a fork).
 */
#define JOINED "mls-joined:"
#define JOINED_VALUE 20

static int before_joined(struct msv_client *c, const uint8_t gid[16], uint32_t gen, uint64_t epoch)
{
    char key[KEY_MAX];
    uint8_t *v = NULL;
    size_t len = 0;
    int before = msv_client_db_get(c->db, group_key(JOINED, gid, key), &v, &len) == MSV_OK &&
                 len == JOINED_VALUE && msv_get_u32be(v) == gen && epoch >= msv_get_u64be(v + 4) &&
                 epoch < msv_get_u64be(v + 12);

    free(v);
    return before;
}

/* 1 if it was taken, 0 if not, -1 if the record could not be read. */
static int taken_before(struct msv_client *c, const uint8_t gid[16], uint32_t gen, uint64_t epoch,
                        const uint8_t digest[32])
{
    char key[KEY_MAX];
    uint8_t *v = NULL;
    size_t len = 0;
    int taken = 0;
    msv_err err = msv_client_db_get(c->db, group_key(TAKEN, gid, key), &v, &len);

    if (err != MSV_OK && err != MSV_ERR_NOT_FOUND)
        return -1;
    if (err == MSV_OK && len >= 4 && (len - 4) % TAKEN_ENTRY == 0 && msv_get_u32be(v) == gen) {
        for (size_t at = 4; at < len && !taken; at += TAKEN_ENTRY)
            taken = msv_get_u64be(v + at) == epoch && memcmp(v + at + 8, digest, 32) == 0;
    }
    free(v);
    return taken;
}

/* The "mls-taken:" value with the commit of epoch (digest) added, the oldest past TAKEN_KEPT
 * dropped (*out: caller frees). */
static msv_err taken_add(struct msv_client *c, const uint8_t gid[16], uint32_t gen, uint64_t epoch,
                         const uint8_t digest[32], uint8_t **out, size_t *out_len)
{
    char key[KEY_MAX];
    uint8_t *v = NULL, *o = malloc(4 + TAKEN_KEPT * TAKEN_ENTRY);
    size_t len = 0, kept = 0, skip = 0;
    msv_err err =
        o == NULL ? MSV_ERR_NOMEM : msv_client_db_get(c->db, group_key(TAKEN, gid, key), &v, &len);

    if (err == MSV_ERR_NOT_FOUND)
        err = MSV_OK;
    if (err != MSV_OK) { /* a record unread is not written over with less */
        free(o);
        free(v);
        return err;
    }
    msv_put_u32be(o, gen);
    if (v != NULL && len >= 4 && (len - 4) % TAKEN_ENTRY == 0 && msv_get_u32be(v) == gen) {
        kept = (len - 4) / TAKEN_ENTRY;
        skip = kept >= TAKEN_KEPT ? kept - TAKEN_KEPT + 1 : 0;
        memcpy(o + 4, v + 4 + skip * TAKEN_ENTRY, (kept - skip) * TAKEN_ENTRY);
        kept -= skip;
    }
    free(v);
    msv_put_u64be(o + 4 + kept * TAKEN_ENTRY, epoch);
    memcpy(o + 4 + kept * TAKEN_ENTRY + 8, digest, 32);
    *out = o;
    *out_len = 4 + (kept + 1) * TAKEN_ENTRY;
    return MSV_OK;
}

/* One logged delivery taken if it is another device's commit of group id at epoch; 1 if it
 * moved this device to epoch + 1. A refusal is recorded (mls-refused:) once it is told. */
static int take_logged(struct msv_client *c, const uint8_t gid[16], const uint8_t id[MLS_ID_LEN],
                       uint32_t gen, uint64_t epoch, const Msv__Wire__MlsLogged *l, msv_err *err)
{
    Msv__Wire__MlsDelivery *d =
        msv__wire__mls_delivery__unpack(NULL, l->delivery.len, l->delivery.data);
    int fits = logged_commit(d, l, id, epoch);
    struct client_mls_in in;
    struct client_mls_refusal r;
    uint8_t digest[32] = {0}; /* an application message's alone: none here */
    uint64_t now = 0;
    int adopted = 0;

    /* this device's own commit, whose answer it never had: the state it made, if kept */
    if (fits && l->sender_device == c->device_id) {
        *err = mls_lock(c);
        if (*err == MSV_OK) {
            uint8_t *v = NULL;
            size_t len = 0;
            char key[KEY_MAX];

            *err = msv_client_db_get(c->db, group_key(OWN_COMMIT, gid, key), &v, &len);
            if (*err == MSV_OK)
                *err = own_commit_settle(c, gid, v, len, gen, epoch, d->message.data,
                                         d->message.len, 1, &adopted);
            else if (*err == MSV_ERR_NOT_FOUND)
                *err = MSV_OK; /* none kept: it cannot be taken, as before */
            msv_secret_free(v, len);
            mls_unlock(c);
        }
        msv__wire__mls_delivery__free_unpacked(d, NULL);
        return *err == MSV_OK && adopted && held_generation(c, gid, &now) == (int64_t)gen &&
               now == epoch + 1;
    }
    msv__wire__mls_delivery__free_unpacked(d, NULL);
    if (!fits)
        return 0;
    *err = client_mls_take(c, l->delivery.data, l->delivery.len, "", l->sender_device, digest, &in);
    client_mls_refusal_take(c, &r); /* before anything told can take another */
    msv_secret_free(in.pt, in.pt_len);
    if (*err == MSV_OK && in.notice[0] != '\0' && !client_mls_refusal_repeat(c, &r))
        *err = notice(c, gid, in.notice);
    if (*err == MSV_OK)
        *err = client_mls_refusal_told(c, &r);
    return *err == MSV_OK && held_generation(c, gid, &now) == (int64_t)gen && now == epoch + 1;
}

static msv_err catch_up(struct msv_client *c, const uint8_t gid[16], uint32_t gen, uint64_t target,
                        int force, uint64_t *moved)
{
    uint8_t id[MLS_ID_LEN];
    uint64_t start = 0, epoch;
    int more = 1;
    msv_err err = MSV_OK, asked = MSV_OK;

    *moved = 0;
    if (held_generation(c, gid, &start) != (int64_t)gen || start >= target ||
        (!force && catch_up_quiet(c, gid, gen, start)))
        return MSV_OK;
    epoch = start;
    mls_id(gid, gen, id);
    for (int reads = 0; err == MSV_OK && more && epoch < target && reads < CATCH_UP_READS;
         reads++) {
        msv_frame *r = NULL;

        memset(&c->why, 0, sizeof(c->why)); /* this read's refusal, if any, alone */
        asked = c->conn != NULL ? MSV_OK : msv_client_connect(c);
        if (asked == MSV_OK)
            asked =
                msv_request_mls_commits(c->conn, id, sizeof(id), epoch, TIMEOUT_MS, &r, &c->why);
        more = asked == MSV_OK && r->mls_commits->more;
        for (size_t i = 0; asked == MSV_OK && err == MSV_OK && i < r->mls_commits->n_commits &&
                           more >= 0 && epoch < target;
             i++) {
            if (take_logged(c, gid, id, gen, epoch, r->mls_commits->commits[i], &err))
                epoch++;
            else
                more = -1; /* a gap, or a commit not taken: the rest cannot be */
        }
        more = more > 0;
        msv_frame_free(r);
        if (asked != MSV_OK)
            break;
    }
    *moved = epoch - start;
    if (err != MSV_OK) /* storage: the delivery that asked comes again */
        return err;
    /* no answer (the connection failed), or refused for the rate: nothing learnt; the
     * delivery that asked stays unacknowledged, to be read again (a receive cannot go on
     * without the connection; the rate refills at 2 reads a second) */
    if (ask_again_later(c, asked))
        return MSV_ERR_IO;
    if (*moved == 0)
        catch_up_quiet_set(c, gid, gen, start);
    return MSV_OK; /* not a member, no such group, or anything else the server said: as it was */
}

int client_mls_queue_first(struct msv_client *c, const uint8_t gid[16])
{
    int synced = c->receive_until_synced, waits = c->deliveries_wait_ms;
    struct msv_refusal why = c->why; /* the send's, whatever the read says */

    if (c->receiving || c->takes_deliveries || client_mls_is_on(c, gid) ||
        catch_up_quiet(c, gid, 0, QUEUE_FIRST))
        return 0;
    catch_up_quiet_set(c, gid, 0, QUEUE_FIRST);
    /* what is queued now, no waiting for more (one round trip when nothing is); a failure (no
     * connection, another program of the device receiving) leaves the message as it was:
     * queued, or sent asking */
    c->receive_until_synced = 1;
    c->deliveries_wait_ms = -1; /* that program's receive takes the Welcome */
    (void)receive_within(c);
    c->receive_until_synced = synced;
    c->deliveries_wait_ms = waits;
    c->why = why;
    return 1;
}

/*
 * The Welcome the delivery service kept for this device in generation gen of group gid (its
 * queue was full when the device whose commit added it sent it: docs/wire.md, "Kept
 * Welcomes"), asked for when a commit or message of that generation comes that this device
 * holds no state of (held: the generation it holds, -1 for none), or whose epoch it cannot
 * reach from the log (held at `epoch`: its leaf replaced, or behind for good), in a group it
 * was told of. Taken as a queued one is (take_welcome: every check of a Welcome; one the
 * server made up, or kept from before, changes nothing); *joined set if this device holds a
 * later state of the group after it (this process's join, or another's meanwhile); one
 * joined from, or of a state held already, the server is told to drop (by its SHA-256). Not
 * asked again for the same generation within MLS_CATCH_UP_QUIET_MS by this process once it
 * brought nothing or was refused (the delivery is then taken as it is). A refusal is told once
 * for the same Welcome: "mls-kept-welcome:<hex of the group id>" = SHA-256 of the last one
 * told. No answer, refused for the rate, or a failure of storage: MSV_ERR_IO (the delivery
 * that asked comes again).
 */
#define KEPT_WELCOME "mls-kept-welcome:"

static msv_err welcome_asked(struct msv_client *c, const uint8_t gid[16], uint32_t gen,
                             int64_t held, uint64_t epoch, int *joined)
{
    struct client_mls_in in;
    struct client_mls_refusal r;
    Msv__Wire__MlsDelivery *d = NULL;
    msv_frame *a = NULL;
    uint8_t id[MLS_ID_LEN], digest[32], none[32] = {0}, *told = NULL;
    uint64_t now_epoch = 0;
    int64_t now_held;
    size_t told_len = 0;
    char key[KEY_MAX];
    msv_err err = MSV_OK, asked;

    *joined = 0;
    if (!group_known(c, gid) || catch_up_quiet(c, gid, gen, WELCOME_ASKED))
        return MSV_OK;
    mls_id(gid, gen, id);
    memset(&c->why, 0, sizeof(c->why));
    asked = c->conn != NULL ? MSV_OK : msv_client_connect(c);
    if (asked == MSV_OK)
        asked = msv_request_mls_welcome(c->conn, id, sizeof(id), NULL, TIMEOUT_MS, &a, &c->why);
    if (asked != MSV_OK) {
        msv_frame_free(a); /* an answer of another kind comes back too */
        if (ask_again_later(c, asked))
            return MSV_ERR_IO;
        catch_up_quiet_set(c, gid, gen, WELCOME_ASKED); /* none kept, or no member */
        return MSV_OK;
    }
    /* what the server says is a Welcome of this group: anything else is not taken */
    d = msv__wire__mls_delivery__unpack(NULL, a->mls_welcome_kept->delivery.len,
                                        a->mls_welcome_kept->delivery.data);
    crypto_hash_sha256(digest, a->mls_welcome_kept->delivery.data,
                       a->mls_welcome_kept->delivery.len);
    memset(&in, 0, sizeof(in));
    if (d == NULL || d->kind != MSV__WIRE__MLS_KIND__MLS_KIND_WELCOME ||
        d->group_id.len != MLS_ID_LEN || memcmp(d->group_id.data, id, MLS_ID_LEN) != 0)
        snprintf(in.notice, sizeof(in.notice),
                 "the server gave a Welcome kept for this device that is none of this group's: "
                 "refused");
    else
        err = client_mls_take(c, a->mls_welcome_kept->delivery.data,
                              a->mls_welcome_kept->delivery.len, "",
                              a->mls_welcome_kept->sender_device, none, &in);
    client_mls_refusal_take(c, &r); /* a Welcome's take records no refusal: the slot kept clean */
    msv_secret_free(in.pt, in.pt_len);
    msv__wire__mls_delivery__free_unpacked(d, NULL);
    msv_frame_free(a);
    if (err != MSV_OK)
        return err;
    /* joined from it, or it is of a state this device holds already: the server drops that
     * one (should that fail, it expires with the queue) */
    if ((in.joined || in.stale) && c->conn != NULL &&
        msv_request_mls_welcome(c->conn, id, sizeof(id), digest, TIMEOUT_MS, &a, &c->why) != MSV_OK)
        memset(&c->why, 0, sizeof(c->why));
    if (in.joined) { /* told what the join said */
        *joined = 1;
        return in.notice[0] != '\0' ? notice(c, gid, in.notice) : MSV_OK;
    }
    /* another process of the account joined meanwhile: nothing refused */
    now_held = held_generation(c, gid, &now_epoch);
    if (held < (int64_t)gen ? now_held >= (int64_t)gen
                            : now_held > held || (now_held == held && now_epoch > epoch)) {
        *joined = 1;
        return MSV_OK;
    }
    catch_up_quiet_set(c, gid, gen, WELCOME_ASKED);
    if (in.stale) /* one from before, nothing to tell */
        return MSV_OK;
    err = msv_client_db_get(c->db, group_key(KEPT_WELCOME, gid, key), &told, &told_len);
    if (err == MSV_OK && told_len == 32 && memcmp(told, digest, 32) == 0) {
        free(told);
        return MSV_OK; /* told of this one before */
    }
    free(told);
    if (err != MSV_OK && err != MSV_ERR_NOT_FOUND)
        return err;
    err = notice(c, gid,
                 in.notice[0] != '\0' ? in.notice
                                      : "a Welcome the server kept for this device was not taken");
    return err == MSV_OK ? msv_client_db_set(c->db, key, digest, sizeof(digest)) : err;
}

/*
 * A device behind the group for good (a send found the delivery service at a later epoch, and
 * reading the queue did not bring the commits between): "mls-behind:<hex of the group id>" =
 * u32be generation || u64be the delivery service's epoch || u64be wall ms marked. Whether it
 * is so still: forgotten once the state held reached that epoch or another generation, and
 * after BEHIND_RECHECK_MS (the next send tries MLS again: the commits may have come, or the
 * group moved on to a generation this device was not told of yet).
 */
#define BEHIND_VALUE 20
#define BEHIND_RECHECK_MS (86400LL * 1000)

static int behind_still(struct msv_client *c, const uint8_t gid[16], uint64_t *ahead)
{
    char key[KEY_MAX];
    uint8_t *v = NULL;
    size_t len = 0;
    uint64_t epoch = 0;
    int64_t gen = held_generation(c, gid, &epoch), now = msv_wall_ms(), at = 0;
    int found = msv_client_db_get(c->db, group_key(BEHIND, gid, key), &v, &len) == MSV_OK;
    int still = found && len == BEHIND_VALUE && (int64_t)msv_get_u32be(v) == gen &&
                epoch < msv_get_u64be(v + 4);

    if (still) {
        at = (int64_t)msv_get_u64be(v + 12);
        /* a time ahead of the clock (it went back since) counts as now, and is recorded so */
        if (at > now) {
            at = now;
            msv_put_u64be(v + 12, (uint64_t)now);
            if (msv_client_db_set(c->db, key, v, len) != MSV_OK)
                c->why.message[0] = '\0'; /* counted from now all the same */
        }
        still = at > now - BEHIND_RECHECK_MS;
    }
    *ahead = still ? msv_get_u64be(v + 4) : 0;
    free(v);
    if (found && !still && msv_client_db_unset(c->db, key) != MSV_OK)
        c->why.message[0] = '\0'; /* forgotten at the next look */
    return still;
}

/* Marked behind in generation gen (the one its last message went in), the group at ahead. */
static msv_err behind_mark(struct msv_client *c, const uint8_t gid[16], uint32_t gen,
                           uint64_t ahead)
{
    char key[KEY_MAX];
    uint8_t v[BEHIND_VALUE];

    msv_put_u32be(v, gen);
    msv_put_u64be(v + 4, ahead);
    msv_put_u64be(v + 12, (uint64_t)msv_wall_ms());
    return msv_client_db_set(c->db, group_key(BEHIND, gid, key), v, sizeof(v));
}

/*
 * An admin's device behind the group: its own update commit at the epoch it holds first. The
 * delivery service refuses it as stale if the group did move on (the commits read again, then
 * the group founded again: sync_with, at most hourly); if it takes it, what it said before does
 * not hold, and nothing is founded again. The message then goes again; *behind and *gen say how
 * that went.
 */
static msv_err admin_catch_up(struct msv_client *c, const uint8_t gid[16], const uint8_t *pt,
                              size_t pt_len, uint64_t *behind, uint32_t *gen, int *renewed)
{
    uint64_t epoch = 0, said = *behind, after = 0;
    int64_t before = held_generation(c, gid, &epoch), now_gen;
    char text[500];
    msv_err err = sync_with(c, gid, 0, 1, 0, 1);

    now_gen = held_generation(c, gid, &after);
    if (err == MSV_OK)
        err = send_once(c, gid, pt, pt_len, behind, gen, renewed);
    /* only if this device's commit was taken at its own epoch (none made: nothing said) */
    if (err == MSV_OK && *behind != 0 && now_gen == before && (int64_t)*gen == before &&
        after > epoch) {
        snprintf(text, sizeof(text),
                 "the delivery service said this MLS group was at epoch %llu, past this "
                 "device's %llu, yet took this device's commit at its own: what it says of the "
                 "group does not hold, and it was not founded again for it",
                 (unsigned long long)said, (unsigned long long)epoch);
        err = notice(c, gid, text);
    }
    return err;
}

msv_err client_mls_send(struct msv_client *c, const uint8_t gid[16], const uint8_t *pt,
                        size_t pt_len, int *per_device)
{
    char key[KEY_MAX], text[600];
    uint64_t behind = 0, epoch = 0, marked = 0;
    uint32_t gen = 0;
    int admin, unread = 1, renewed = 0;
    msv_err err = msv_client_connect(c);

    *per_device = 0;
    c->mls_sent_nobody = 0; /* (send_once's word, for this message alone) */
    if (err != MSV_OK)
        return err;
    admin = self_is_admin(c, gid);
    /* behind for good (told when marked): an admin founds the group again (at most hourly);
     * anyone else's message goes as per-device copies, which every member reads */
    if (behind_still(c, gid, &marked)) {
        if (!admin) {
            *per_device = 1;
            return MSV_OK;
        }
        err = msv_client_db_set(c->db, flag_key(gid, key), (const uint8_t *)"", 0);
    }
    if (err == MSV_OK && admin && refound_due(c, gid))
        err = sync_with(c, gid, 0, 0, 0, 1);
    /* a removal whose commit failed is committed again first (only an admin commits one) */
    if (err == MSV_OK && admin && stale_now(c, gid))
        err = sync_with(c, gid, 0, 0, 0, 1);
    /* a device removed from this account is committed out first; should that fail, the
     * message goes as per-device copies, which it cannot read (the next receive tries again) */
    if (err == MSV_OK && out_held(c, gid)) {
        *per_device = 1;
        return MSV_OK;
    }
    /* a leaf due for an update commits one first; should that fail, the message still goes,
     * and the next one tries again */
    if (err == MSV_OK && update_due(c, gid) && sync_with(c, gid, 0, 1, 0, 1) != MSV_OK &&
        c->on_mls_notice != NULL) {
        char conversation[40];

        msv_client_group_conversation(gid, conversation);
        c->on_mls_notice(c->ctx, conversation,
                         "this device's update of its MLS leaf failed; the next message tries "
                         "again");
    }
    if (err == MSV_OK)
        err = send_once(c, gid, pt, pt_len, &behind, &gen, &renewed);
    /* members past that commit cannot read it: the commit read, the message goes again at the
     * new epoch (those that read the first copy know the second by its id) */
    for (int tries = 0; err == MSV_OK && behind && !renewed && tries < COMMIT_TRIES; tries++) {
        int64_t held;

        err = receive_within(c);
        held = err == MSV_OK ? held_generation(c, gid, &epoch) : -1;
        /* the commits the queue did not bring (left out of them for a full queue, or expired
         * from it), from the delivery service's log */
        if (held >= 0 && (uint32_t)held == gen && epoch < behind) {
            uint64_t moved = 0;

            err = catch_up(c, gid, gen, behind, 1, &moved);
            held = err == MSV_OK ? held_generation(c, gid, &epoch) : -1;
        }
        /* sent again once the commits read brought this device to the group's epoch (a copy no
         * member can read is not sent twice), or to the group's next generation (an admin
         * founded it again meanwhile: the epoch said was of the one before) */
        if (held >= 0 && ((uint32_t)held != gen || epoch >= behind))
            err = send_once(c, gid, pt, pt_len, &behind, &gen, &renewed);
    }
    /* still behind: the commits between never came (withheld, or expired from the queue), and
     * what was sent cannot be read by the members past them */
    if (err == MSV_OK && behind != 0 && admin && !renewed)
        err = admin_catch_up(c, gid, pt, pt_len, &behind, &gen, &renewed);
    /* a member is a new account since the message was written: per-device copies, which leave
     * it out and say so (send.c, refuse_renewed); or a verified member's leaf is none of the
     * devices verified: per-device copies, to those alone */
    if (err == MSV_OK && renewed) {
        *per_device = 1;
        return MSV_OK;
    }
    /* an admin's founding again held back by the hourly limit: per-device copies too, told
     * once (it was if it was marked behind; else the delivery service took a commit this
     * device refused, and is a step past it) */
    if (err == MSV_ERR_AGAIN && marked != 0) {
        *per_device = 1;
        return MSV_OK;
    }
    if (err == MSV_ERR_AGAIN && behind == 0) {
        int64_t held = held_generation(c, gid, &epoch);

        gen = held < 0 ? 0 : (uint32_t)held;
        behind = epoch + 1;
        unread = 0; /* nothing went on MLS */
    }
    if ((err == MSV_OK || err == MSV_ERR_AGAIN) && behind != 0) {
        char why[sizeof(c->why.message)];

        snprintf(why, sizeof(why), "%s", err == MSV_ERR_AGAIN ? c->why.message : "");
        held_generation(c, gid, &epoch);
        err = behind_mark(c, gid, gen, behind);
        if (c->mls_sent_nobody && unread)
            snprintf(text, sizeof(text),
                     "no device took this device's message in the group's MLS group (they all "
                     "left it for a later one this device has not joined, or were removed); its "
                     "messages go as per-device copies until it catches up or an admin founds "
                     "the group again");
        else
            snprintf(text, sizeof(text),
                     "%sthis device is behind its MLS group (at epoch %llu, the group at %llu: "
                     "commits it never received)%s%.300s; its messages go as per-device copies "
                     "until it catches up or an admin founds the group again",
                     unread ? "a message could not be read by the group: " : "",
                     (unsigned long long)epoch, (unsigned long long)behind, why[0] ? ": " : "",
                     why);
        if (err == MSV_OK && notice(c, gid, text) != MSV_OK)
            c->why.message[0] = '\0';
        *per_device = err == MSV_OK;
        return err;
    }
    if (err == MSV_ERR_AUTH && c->why.code != MSV_REFUSAL_KEY_CHANGE) {
        snprintf(text, sizeof(text),
                 "a message was not sent: the MLS group still holds a removed member (%.300s); "
                 "it stays queued until an admin's commit removes that device",
                 c->why.message);
        notice(c, gid, text);
    }
    if (err == MSV_OK)
        err = client_counter_bump(c, group_key(SENT, gid, key));
    return err;
}

/* Whether the roster lists a device of handle. */
static int roster_has(const uint8_t *roster, size_t len, const char *handle)
{
    struct msv_reader r;
    char listed[MSV_HANDLE_MAX + 1];
    uint64_t device;

    msv_reader_init(&r, roster, len);
    while (roster_next(&r, &device, listed))
        if (strcmp(listed, handle) == 0)
            return 1;
    return 0;
}

msv_err client_mls_outside(struct msv_client *c, const uint8_t gid[16], char **out)
{
    struct msv_mls_member *m = NULL;
    struct msv_group_rec g = {0};
    struct msv_buf b;
    uint8_t *roster = NULL, *joined = NULL;
    char **members = NULL;
    size_t roster_len = 0, n = 0, joined_len = 0;
    msv_err err = mls_lock(c);

    *out = NULL;
    if (err != MSV_OK)
        return err;
    err = state_load(c, gid, &m, &roster, &roster_len);
    mls_unlock(c);
    if (err == MSV_OK)
        err = msv_client_db_group_get(c->db, gid, NULL, &g);
    if (err == MSV_OK)
        err = client_members_of(g.members, &members, &n);
    msv_buf_init(&b, (size_t)MEMBERS_MAX * (MSV_HANDLE_MAX + 2));
    for (size_t i = 0; err == MSV_OK && i < n; i++)
        if (!client_is_own_handle(c, members[i]) && !roster_has(roster, roster_len, members[i])) {
            msv_buf_put(&b, members[i], strlen(members[i]));
            msv_buf_put(&b, "\n", 1);
        }
    if (err == MSV_OK && b.len > 0) {
        msv_buf_put(&b, "", 1);
        err = msv_buf_finish(&b, &joined, &joined_len);
        *out = (char *)joined;
    } else {
        msv_buf_clear(&b);
    }
    free(members);
    msv_group_clear(&g);
    msv_mls_member_free(m);
    free(roster);
    return err;
}

/* ---- receiving ----------------------------------------------------------------------------- */

static int is_admin_device(struct msv_client *c, const uint8_t gid[16], const struct dir *dir,
                           uint64_t device);
static int admin_by(struct msv_client *c, const uint8_t gid[16], const struct client_group_ctx *g,
                    const struct dir *dir, uint64_t device);

/*
 * Whether the leaf that signed the GroupInfo of the Welcome m joined from (the commit that added
 * this device) is an admin's device, or a device of this account (which adds its own account's
 * devices only), as the verified directory lists them.
 */
static int signer_may_add(struct msv_client *c, const uint8_t gid[16], const struct dir *dir,
                          const struct msv_mls_member *m, const struct client_group_ctx *g)
{
    const struct msv_mls_node *x;
    const struct dir_device *signer, *self = dir_find(dir, c->device_id);
    const uint8_t *identity;
    size_t identity_len;
    uint64_t device = 0;

    if (m->welcome_signer >= m->tree.n_leaves)
        return 0;
    x = &m->tree.nodes[2 * m->welcome_signer];
    if (x->type != 1 || msv_mlskeys_leaf_credential(x->leaf.raw, x->leaf.raw_len, &identity,
                                                    &identity_len, &device) != MSV_OK)
        return 0;
    signer = dir_find(dir, device);
    return (is_admin_device(c, gid, dir, device) && admin_by(c, gid, g, dir, device)) ||
           (signer != NULL && self != NULL && strcmp(signer->handle, self->handle) == 0);
}

/*
 * A Welcome: joined only for a group this device was told of, every leaf checked, from an
 * admin's device; a Welcome to a later generation of a group this device is in (founded again)
 * only from the group's founder (leaf 0) at its first epoch; devices of members the tree leaves
 * out are told.
 */
static msv_err take_welcome(struct msv_client *c, const uint8_t gid[16], uint32_t gen,
                            const uint8_t *w, size_t w_len, struct client_mls_in *in)
{
    struct msv_mlskeys_private k = {0};
    struct msv_mls_member *m = NULL;
    struct msv_group_rec g = {0};
    struct dir dir = {0};
    struct client_group_ctx ctx = {0};
    const char *ctx_why = NULL;
    char why[300] = "";
    int64_t held = -1;
    uint64_t held_epoch = 0;
    msv_err err = msv_client_db_group_get(c->db, gid, NULL, &g);

    msv_group_clear(&g);
    if (err == MSV_ERR_NOT_FOUND) {
        snprintf(in->notice, sizeof(in->notice),
                 "a Welcome to an MLS group this device was never told of was refused");
        return MSV_OK;
    }
    if (err == MSV_OK && (held = held_generation(c, gid, &held_epoch)) > (int64_t)gen) {
        snprintf(in->notice, sizeof(in->notice),
                 "a Welcome to an MLS group this device is in already was ignored");
        in->stale = 1;
        return MSV_OK;
    }
    if (err == MSV_OK && (err = msv_mlskeys_for_welcome(c, w, w_len, &k)) == MSV_ERR_NOT_FOUND) {
        /* at the generation held, the one this device joined from (its KeyPackage used) */
        snprintf(in->notice, sizeof(in->notice),
                 held == (int64_t)gen
                     ? "a Welcome to an MLS group this device is in already was ignored"
                     : "a Welcome to an MLS group names none of this device's KeyPackages: "
                       "refused");
        in->stale = held == (int64_t)gen;
        return MSV_OK;
    }
    if (err == MSV_OK &&
        (msv_mls_member_join(SUITE, w, w_len, k.key_package, k.key_package_len, k.init_sk,
                             k.leaf_sk, NULL, 0, NULL, 0, &m) != MSV_OK ||
         m->group_id_len != MLS_ID_LEN || memcmp(m->group_id, gid, 16) != 0 ||
         generation_of(m) != gen)) {
        snprintf(in->notice, sizeof(in->notice),
                 "a Welcome to an MLS group did not open, or is for another group: refused");
        goto out;
    }
    /* at the generation held, only a later epoch: this device was removed and added again */
    if (err == MSV_OK && held == (int64_t)gen && m->epoch <= held_epoch) {
        snprintf(in->notice, sizeof(in->notice),
                 "a Welcome to an MLS group this device is in already was ignored");
        in->stale = 1;
        goto out;
    }
    if (err == MSV_OK)
        err = msv_mls_member_set_signer(m, k.sig_seed);
    if (err == MSV_OK)
        err = dir_load(c, gid, &dir);
    if (err == MSV_OK && tree_check(m, &dir, why, sizeof(why)) != MSV_OK) {
        snprintf(in->notice, sizeof(in->notice), "a Welcome to an MLS group was refused: %.300s",
                 why);
        goto out;
    }
    if (err == MSV_OK)
        ctx_why = context_refused(c, gid, m, &ctx, NULL);
    if (err == MSV_OK && ctx_why != NULL) {
        snprintf(in->notice, sizeof(in->notice), "a Welcome to an MLS group was refused: %s",
                 ctx_why);
        goto out;
    }
    /* a Welcome only from an admin's device or this account's (its GroupInfo's signer made
     * the commit that added this device: only an admin adds, and a member its own devices), an
     * admin by the group context too when it names them; a later generation only from its
     * founder */
    if (err == MSV_OK && !signer_may_add(c, gid, &dir, m, &ctx)) {
        snprintf(in->notice, sizeof(in->notice),
                 "a Welcome to an MLS group was refused: the commit that added this device is "
                 "no admin's, nor this account's");
        goto out;
    }
    if (err == MSV_OK && held >= 0 && held < (int64_t)gen) {
        const struct msv_mls_node *x = &m->tree.nodes[0];
        const uint8_t *identity;
        size_t identity_len;
        uint64_t founder = 0;

        if (m->epoch != 1 || x->type != 1 ||
            msv_mlskeys_leaf_credential(x->leaf.raw, x->leaf.raw_len, &identity, &identity_len,
                                        &founder) != MSV_OK ||
            !is_admin_device(c, gid, &dir, founder) || !admin_by(c, gid, &ctx, &dir, founder)) {
            snprintf(in->notice, sizeof(in->notice),
                     "a Welcome to the MLS group founded again was refused: its founder is no "
                     "admin of the group");
            goto out;
        }
    }
    if (err == MSV_OK && uncovered(m, &dir, why, sizeof(why)) > 0)
        snprintf(in->notice, sizeof(in->notice),
                 "this device joined the group's MLS group, but it leaves out %.300s", why);
    if (err == MSV_OK)
        err = mls_lock(c);
    if (err == MSV_OK) {
        char key[KEY_MAX];
        int saving;

        held = held_generation(c, gid, &held_epoch);
        saving = held < (int64_t)gen || (held == (int64_t)gen && held_epoch < m->epoch);
        if (saving) { /* with the epochs it skipped (before_joined) */
            uint8_t at[JOINED_VALUE], *lv = NULL;
            size_t lv_len = 0;
            char lkey[KEY_MAX];

            msv_put_u32be(at, gen);
            msv_put_u64be(at + 4, held == (int64_t)gen ? held_epoch : 0);
            msv_put_u64be(at + 12, m->epoch);
            /* the generation it moves on from, left at the delivery service */
            if (held >= 0 && held < (int64_t)gen)
                err = leave_held(c, gid, lkey, &lv, &lv_len);
            if (err == MSV_OK)
                err = state_save_leaving(c, gid, m, &dir, group_key(JOINED, gid, key), at,
                                         sizeof(at), lkey, lv, lv_len);
            free(lv);
        }
        in->joined = saving && err == MSV_OK;
        /* joined at the group's epoch: a founding again this device meant to make (it held no
         * state, or a commit it refused left it behind) is moot */
        if (err == MSV_OK && saving)
            err = msv_client_db_unset(c->db, group_key(LOST, gid, key));
        if (err == MSV_OK && saving)
            err = msv_client_db_unset(c->db, flag_key(gid, key));
        /* its leaf is new; its path keyed (a day after its last commit to a generation it
         * held: no founding again makes it commit more often) */
        if (err == MSV_OK && saving) {
            uint64_t last = held >= 0 ? client_counter(c, group_key(UPDATED, gid, key)) : 0;

            err = updated_now(c, gid);
            if (err == MSV_OK)
                key_schedule(c, gid, m, last, KEY_JOINED);
        }
        mls_unlock(c);
    }
    /* its init key would open the Welcome again: gone once joined (a last-resort one serves
     * other Welcomes until replaced) */
    if (err == MSV_OK && !k.last_resort)
        err = msv_client_db_unset(c->db, k.name);
out:
    msv_mls_member_free(m);
    msv_mlskeys_private_clear(&k);
    dir_free(&dir);
    client_group_ctx_clear(&ctx);
    return err;
}

/*
 * A delivery of generation gen of the group's MLS group, which this device holds none of: on a
 * device of the group's only admin account, recorded (LOST), the group marked to be founded
 * again, and its founding due at the end of the receive; said in the notice.
 */
static void lost_seen(struct msv_client *c, const uint8_t gid[16], uint32_t gen,
                      struct client_mls_in *in)
{
    char key[KEY_MAX];
    uint8_t v[4];
    size_t n_admins = 0;
    int sole = self_is_admin_of(c, gid, &n_admins) && n_admins == 1;

    /* a generation named past LOST_GEN_MAX (made up by a server) is founded past by nobody */
    if (!sole || gen >= LOST_GEN_MAX)
        return;
    msv_put_u32be(v, gen);
    /* each delivery marks it again (a founding that could not be made, or a record lost, is
     * tried again: at most hourly all the same) */
    if ((lost_generation(c, gid) < (int64_t)gen &&
         msv_client_db_set(c->db, group_key(LOST, gid, key), v, sizeof(v)) != MSV_OK) ||
        msv_client_db_set(c->db, flag_key(gid, key), (const uint8_t *)"", 0) != MSV_OK ||
        client_mls_follow_due(c, gid) != MSV_OK)
        return; /* the next delivery of it tries again */
    snprintf(in->notice + strlen(in->notice), sizeof(in->notice) - strlen(in->notice),
             "; this device, of the group's only admin, founds it again (at most hourly)");
}

/*
 * The state a delivery of generation gen (a "commit" or a "message") is for, under the lock;
 * *m stays NULL, with in->notice saying why, if this device holds none of that generation.
 */
static msv_err held_state(struct msv_client *c, const uint8_t gid[16], uint32_t gen,
                          const char *what, struct msv_mls_member **m, uint8_t **roster,
                          size_t *roster_len, struct client_mls_in *in)
{
    msv_err err = state_load(c, gid, m, roster, roster_len);
    uint32_t held = err == MSV_OK ? generation_of(*m) : 0;

    if (err == MSV_ERR_NOT_FOUND) {
        char base[sizeof(in->notice)];

        snprintf(base, sizeof(base), "a %s of an MLS group this device is not in could not be read",
                 what);
        memcpy(in->notice, base, sizeof(base));
        lost_seen(c, gid, gen, in);
        /* a commit alone is not told (the group's messages are, and a device that asked to be
         * added again is sent the commit that replaces its leaf before its Welcome) */
        if (strcmp(what, "commit") == 0 && strcmp(in->notice, base) == 0)
            in->notice[0] = '\0';
        return MSV_OK;
    }
    if (err == MSV_OK && held != gen) {
        snprintf(in->notice, sizeof(in->notice), "a %s of an MLS group founded %s was not read",
                 what, gen < held ? "before the one this device is in" : "again");
        msv_mls_member_free(*m);
        *m = NULL;
        free(*roster);
        *roster = NULL;
    }
    return err;
}

/* What a leaf was before a commit: its device, and a hash of its LeafNode. */
struct leaf_was {
    uint64_t device;
    uint8_t hash[32];
    int used;
};

static msv_err leaves_before(const struct msv_mls_member *m, struct leaf_was **out, uint32_t *n)
{
    struct leaf_was *w = calloc(m->tree.n_leaves + 1, sizeof(*w));

    if (w == NULL)
        return MSV_ERR_NOMEM;
    for (uint32_t i = 0; i < m->tree.n_leaves; i++) {
        const struct msv_mls_node *x = &m->tree.nodes[2 * i];
        const uint8_t *identity;
        size_t identity_len;

        if (x->type != 1 || msv_mlskeys_leaf_credential(x->leaf.raw, x->leaf.raw_len, &identity,
                                                        &identity_len, &w[i].device) != MSV_OK)
            continue;
        w[i].used = 1;
        leaf_hash(m, i, w[i].hash);
    }
    *out = w;
    *n = m->tree.n_leaves;
    return MSV_OK;
}

/*
 * Who made a commit m has just applied, from the tree before it: the device of the commit's
 * sender's leaf (m->committer), kept with a new LeafNode (its UpdatePath's). *changed: whether
 * the commit added, removed or replaced any other device's leaf (a commit here carries no
 * Update of others: another leaf with a new LeafNode was removed and added again). MSV_ERR_AUTH
 * if the committer's leaf is not one kept so.
 */
static msv_err committer(const struct msv_mls_member *m, const struct leaf_was *w, uint32_t n,
                         uint64_t *device, int *changed)
{
    int found = 0;

    *changed = 0;
    for (uint32_t i = 0; i < m->tree.n_leaves || i < n; i++) {
        const struct msv_mls_node *x = i < m->tree.n_leaves ? &m->tree.nodes[2 * i] : NULL;
        const uint8_t *identity;
        size_t identity_len;
        uint64_t now_device = 0;
        uint8_t hash[32];
        int now_used = x != NULL && x->type == 1 &&
                       msv_mlskeys_leaf_credential(x->leaf.raw, x->leaf.raw_len, &identity,
                                                   &identity_len, &now_device) == MSV_OK;
        int was_used = i < n && w[i].used;

        if (now_used != was_used || (now_used && now_device != w[i].device)) {
            *changed = 1;
            continue;
        }
        if (!now_used)
            continue;
        leaf_hash(m, i, hash);
        if (memcmp(hash, w[i].hash, 32) == 0)
            continue;
        if (i == m->committer) {
            *device = now_device;
            found = 1;
        } else {
            *changed = 1;
        }
    }
    return found ? MSV_OK : MSV_ERR_AUTH;
}

/*
 * Whether every change a commit made (m now, w before it) is one of the committer's (device by)
 * own account: a device added that the verified directory lists under the committer's handle,
 * or a leaf removed whose device the roster (before the commit) names under that handle and the
 * directory no longer lists (removed from the account). No leaf of another device is replaced,
 * nor removed and put back (every Remove the commit carries is one of those removals).
 */
static int own_changes_only(const struct msv_mls_member *m, const struct leaf_was *w, uint32_t n,
                            const struct dir *dir, const uint8_t *roster, size_t roster_len,
                            uint64_t by)
{
    const struct dir_device *committer_d = dir_find(dir, by);
    uint32_t gone = 0;
    char handle[MSV_HANDLE_MAX + 1];

    if (committer_d == NULL)
        return 0;
    for (uint32_t i = 0; i < m->tree.n_leaves || i < n; i++) {
        uint64_t now_device = 0;
        const struct dir_device *d;
        int now_used = i < m->tree.n_leaves && leaf_device(m, i, &now_device);
        int was_used = i < n && w[i].used;
        uint8_t hash[32];

        if (was_used && (!now_used || now_device != w[i].device)) {
            /* removed: only this account's device that its account no longer lists */
            if (dir_find(dir, w[i].device) != NULL ||
                roster_handle(roster, roster_len, w[i].device, handle) != MSV_OK ||
                strcmp(handle, committer_d->handle) != 0)
                return 0;
            gone++;
        } else if (was_used && i != m->committer) {
            leaf_hash(m, i, hash);
            if (memcmp(hash, w[i].hash, 32) != 0)
                return 0; /* removed and added again in its place */
        }
        if (now_used && (!was_used || now_device != w[i].device) &&
            ((d = dir_find(dir, now_device)) == NULL ||
             strcmp(d->handle, committer_d->handle) != 0))
            return 0;
    }
    /* a Remove whose leaf was put back unchanged is one more than the leaves seen gone */
    return gone == m->removed_leaves;
}

/* Whether device is, by the roster, an admin's in the group's signed state. */
static int is_admin_device(struct msv_client *c, const uint8_t gid[16], const struct dir *dir,
                           uint64_t device)
{
    const struct dir_device *d = dir_find(dir, device);

    return d != NULL && signed_admin(c, gid, d->handle);
}

static int admin_by(struct msv_client *c, const uint8_t gid[16], const struct client_group_ctx *g,
                    const struct dir *dir, uint64_t device)
{
    const struct dir_device *d = dir_find(dir, device);

    return d != NULL && handle_admin(c, gid, g, d->handle);
}

/* A commit of another member: applied, and kept only if every leaf then checks. */
static msv_err take_commit(struct msv_client *c, const uint8_t gid[16], uint32_t gen,
                           uint64_t epoch, const uint8_t *msg, size_t len, const uint8_t digest[32],
                           uint64_t sender, struct client_mls_in *in)
{
    struct msv_mls_member *m = NULL;
    struct dir dir = {0};
    uint8_t *roster = NULL;
    struct leaf_was *was = NULL;
    struct client_group_ctx before = {0}, after = {0};
    uint32_t n_was = 0;
    uint64_t by = sender;
    uint8_t *ext_before = NULL, seen[REFUSED_VALUE];
    size_t roster_len = 0, ext_before_len = 0;
    int changed = 0, refused = 0, removed = 0, ext_changed = 0, taken = 0;
    const char *ctx_why = NULL;
    char why[300] = "", key[KEY_MAX];
    msv_err err = mls_lock(c);

    if (err != MSV_OK)
        return err;
    err = held_state(c, gid, gen, "commit", &m, &roster, &roster_len, in);
    if (err != MSV_OK || m == NULL)
        goto out;
    /* taken already (from the queue or the log): the same commit again is not told of
     * (another for that epoch is: a fork) */
    refused_value(gen, epoch, digest, seen);
    if (err == MSV_OK && epoch < m->epoch && (taken = taken_before(c, gid, gen, epoch, digest)))
        goto out;
    /* of before this device joined from a Welcome (a kept one, asked for while its queue
     * still held this): nothing it could judge */
    if (err == MSV_OK && epoch < m->epoch && before_joined(c, gid, gen, epoch))
        goto out;
    if (err == MSV_OK && epoch != m->epoch) {
        snprintf(in->notice, sizeof(in->notice),
                 "a commit of an MLS group for epoch %llu (from device %llu) was not applied: "
                 "this device is at epoch %llu (%s)",
                 (unsigned long long)epoch, (unsigned long long)sender,
                 (unsigned long long)m->epoch,
                 epoch < m->epoch ? "a replay, or a fork of the group"
                                  : "earlier commits were withheld");
        goto out;
    }
    if (err == MSV_OK)
        err = leaves_before(m, &was, &n_was);
    /* the context until this commit: whose admins decide who may make it (a malformed one,
     * which no member's commit sets, counts as none) */
    if (err == MSV_OK && (ext_before = malloc(m->ext_len + 1)) == NULL)
        err = MSV_ERR_NOMEM;
    if (err == MSV_OK) {
        memcpy(ext_before, m->ext, m->ext_len);
        ext_before_len = m->ext_len;
        if (client_group_ctx_parse(m->ext, m->ext_len, &before) != MSV_OK)
            memset(&before, 0, sizeof(before));
    }
    if (err == MSV_OK && msv_mls_member_commit(m, NULL, NULL, 0, msg, len) != MSV_OK) {
        uint64_t admin_device = 0;

        /* this device's leaf removed by an admin's device (replaced, or the device taken out of
         * the group): nothing to found again; a Welcome follows if it was replaced */
        if (m->removed_us && m->committer < m->tree.n_leaves &&
            leaf_device(m, m->committer, &admin_device) &&
            (err = dir_load(c, gid, &dir)) == MSV_OK &&
            admin_by(c, gid, &before, &dir, admin_device)) {
            snprintf(in->notice, sizeof(in->notice),
                     "an admin's device (%llu) removed this device's leaf from the group's MLS "
                     "group: its later messages cannot be read here unless a Welcome adds this "
                     "device again",
                     (unsigned long long)admin_device);
            removed = 1;
            goto out;
        }
        if (err == MSV_OK)
            snprintf(in->notice, sizeof(in->notice),
                     "a commit of an MLS group (from device %llu) did not verify and was not "
                     "applied; if it removed this device, the group's later messages cannot be "
                     "read here",
                     (unsigned long long)sender);
        refused = err == MSV_OK;
        goto out;
    }
    /* a ReInit would close the group for every member: groups here keep their suite and go on
     * (a member that lost its state joins again), so one is refused like any commit that does
     * not apply */
    if (err == MSV_OK && m->reinit) {
        snprintf(in->notice, sizeof(in->notice),
                 "a commit of an MLS group (from device %llu) was refused, nothing changed: it "
                 "reinitializes the group, which groups here never do",
                 (unsigned long long)sender);
        refused = 1;
        goto out;
    }
    if (err == MSV_OK)
        err = dir_load(c, gid, &dir);
    if (err == MSV_OK && tree_check(m, &dir, why, sizeof(why)) != MSV_OK) {
        snprintf(in->notice, sizeof(in->notice),
                 "a commit of an MLS group (from device %llu) was refused, nothing changed: %.250s",
                 (unsigned long long)sender, why);
        refused = 1;
        goto out;
    }
    if (err == MSV_OK) {
        ext_changed = m->ext_len != ext_before_len || memcmp(m->ext, ext_before, m->ext_len) != 0;
        ctx_why = context_refused(c, gid, m, &after, &before);
    }
    if (err == MSV_OK && ctx_why != NULL) {
        snprintf(in->notice, sizeof(in->notice),
                 "a commit of an MLS group (from device %llu) was refused, nothing changed: %s",
                 (unsigned long long)sender, ctx_why);
        refused = 1;
        goto out;
    }
    /* adding and removing devices and changing the group context are for the group's admins
     * (handle_admin: by the signed state this device holds, and by the context until this
     * commit while that names the same state or a newer one); any other member only adds
     * devices of its own account and removes those its account no longer lists */
    /* a leaf removed and added again unchanged (its KeyPackage's LeafNode put back) leaves the
     * tree as it was, but cut that device out: a removal, as its Remove says */
    if (err == MSV_OK &&
        (committer(m, was, n_was, &by, &changed) != MSV_OK ||
         ((changed || ext_changed || m->removed_leaves > 0) &&
          !admin_by(c, gid, &before, &dir, by) &&
          (ext_changed || !own_changes_only(m, was, n_was, &dir, roster, roster_len, by))))) {
        snprintf(in->notice, sizeof(in->notice),
                 "a commit of an MLS group (from device %llu) was refused, nothing changed: it "
                 "%s, and its committer is no admin of the group nor changes only its own "
                 "account's devices",
                 (unsigned long long)by,
                 ext_changed ? "changes the group context" : "adds or removes devices");
        refused = 1;
        goto out;
    }
    /* recorded with the state it made, so that a copy of it given again is known
     * (taken_before) */
    if (err == MSV_OK) {
        uint8_t *list = NULL;
        size_t list_len = 0;

        err = taken_add(c, gid, gen, epoch, digest, &list, &list_len);
        if (err == MSV_OK)
            err = state_save_with(c, gid, m, &dir, NULL, 0, group_key(TAKEN, gid, key), list,
                                  list_len);
        free(list);
        /* a removal blanks the path of the leaf it removes: keyed again by one under it; a
         * wider tree counts the keyings owed again */
        if (err == MSV_OK)
            key_schedule(c, gid, m, 0, m->tree.n_leaves > n_was ? KEY_TAKEN_WIDER : KEY_TAKEN);
    }
out:
    /* the delivery service took it, so its epoch moved on without this device: an admin
     * founds the group again (client_mls_sync) */
    if (err == MSV_OK && refused)
        err = msv_client_db_set(c->db, flag_key(gid, key), (const uint8_t *)"", 0);
    /* a record unread: the delivery stays unacknowledged (a false fork told otherwise) */
    if (err == MSV_OK && taken < 0)
        err = MSV_ERR_IO;
    /* recorded by its teller once the notice is stored, so that a copy given again is not
     * told again (client_mls_refusal_told) */
    if (err == MSV_OK && (refused || removed))
        refusal_due(c, gid, seen);
    mls_unlock(c);
    msv_mls_member_free(m);
    dir_free(&dir);
    free(roster);
    free(was);
    free(ext_before);
    client_group_ctx_clear(&before);
    client_group_ctx_clear(&after);
    return err;
}

/*
 * What an application message gave, kept from the moment its key leaves the state (in the same
 * transaction) until the payload is stored and the delivery recorded (client_mls_forget):
 * "mls-in:<hex of the delivery's digest>" = u64be sender's device || u16be length || sender's
 * handle || the payload.
 */
#define GAVE MSV_MLS_GAVE_PREFIX
#define GAVE_KEY_LEN (sizeof(GAVE) + 64)

static void gave_key(const uint8_t digest[32], char key[GAVE_KEY_LEN])
{
    char hex[65];

    if (msv_hex_encode(digest, 32, hex, sizeof(hex)) != MSV_OK)
        hex[0] = '\0';
    snprintf(key, GAVE_KEY_LEN, GAVE "%s", hex);
}

msv_err client_mls_gave_parse(const uint8_t *v, size_t len, struct client_mls_in *in)
{
    size_t n = len >= 10 ? (size_t)v[8] << 8 | v[9] : 0;

    memset(in, 0, sizeof(*in));
    if (len < 10 || n == 0 || n >= sizeof(in->sender) || len - 10 < n ||
        memchr(v + 10, '\0', n) != NULL)
        return MSV_ERR_PARSE;
    in->device = msv_get_u64be(v);
    memcpy(in->sender, v + 10, n);
    in->sender[n] = '\0';
    in->pt_len = len - 10 - n;
    in->pt = malloc(in->pt_len + 1);
    if (in->pt == NULL)
        return MSV_ERR_NOMEM;
    memcpy(in->pt, v + 10 + n, in->pt_len);
    return MSV_OK;
}

/* What was kept for digest, parsed into in (NULL: only whether something is kept). */
static msv_err gave_load(struct msv_client *c, const uint8_t digest[32], struct client_mls_in *in)
{
    char key[GAVE_KEY_LEN];
    uint8_t *v = NULL;
    size_t len = 0;
    msv_err err;

    gave_key(digest, key);
    err = msv_client_db_get(c->db, key, &v, &len);
    if (err == MSV_OK && in != NULL)
        err = client_mls_gave_parse(v, len, in);
    msv_secret_free(v, len);
    return err;
}

msv_err client_mls_kept(struct msv_client *c, const uint8_t digest[32])
{
    return gave_load(c, digest, NULL);
}

msv_err client_mls_forget(struct msv_client *c, const uint8_t digest[32])
{
    char key[GAVE_KEY_LEN];

    gave_key(digest, key);
    return msv_client_db_unset(c->db, key);
}

/* An application message: its payload, its sender named by its leaf and the roster. */
static msv_err take_application(struct msv_client *c, const uint8_t gid[16], uint32_t gen,
                                uint64_t epoch, const uint8_t *msg, size_t len,
                                const uint8_t digest[32], struct client_mls_in *in)
{
    struct msv_mls_member *m = NULL;
    uint8_t *roster = NULL, *pt = NULL, *gave = NULL;
    size_t roster_len = 0, pt_len = 0, gave_len = 0, n;
    uint32_t leaf = 0;
    char key[GAVE_KEY_LEN];
    msv_err err = mls_lock(c);

    if (err != MSV_OK)
        return err;
    /* under the lock: another process of this account may have read it meanwhile; what it
     * gave is kept until the delivery is recorded (so looked for first: found neither kept
     * nor recorded, it was not read) */
    err = gave_load(c, digest, in);
    if (err != MSV_ERR_NOT_FOUND)
        goto out;
    err = msv_client_db_envelope_seen(c->db, digest);
    if (err != MSV_ERR_NOT_FOUND)
        goto out;
    err = held_state(c, gid, gen, "message", &m, &roster, &roster_len, in);
    if (err != MSV_OK || m == NULL)
        goto out;
    if (err == MSV_OK && msv_mls_member_unprotect(m, msg, len, &pt, &pt_len, &leaf) != MSV_OK) {
        snprintf(in->notice, sizeof(in->notice),
                 "a message of an MLS group could not be read (its epoch %llu, this device's "
                 "%llu); ask for it again",
                 (unsigned long long)epoch, (unsigned long long)m->epoch);
        goto out;
    }
    if (err == MSV_OK) {
        const struct msv_mls_node *x = leaf < m->tree.n_leaves ? &m->tree.nodes[2 * leaf] : NULL;
        const uint8_t *identity;
        size_t identity_len;

        if (x == NULL || x->type != 1 ||
            msv_mlskeys_leaf_credential(x->leaf.raw, x->leaf.raw_len, &identity, &identity_len,
                                        &in->device) != MSV_OK ||
            roster_handle(roster, roster_len, in->device, in->sender) != MSV_OK)
            err = MSV_ERR_AUTH; /* every leaf was checked as it came in: not reached */
    }
    /* its key gone from the state and what it gave kept, in one transaction: a crash after it
     * leaves the payload to take again (client_mls_take, at the redelivery or the next
     * receive), never a message whose key is gone unstored */
    n = strlen(in->sender);
    gave_len = 10 + n + pt_len;
    if (err == MSV_OK && (gave = malloc(gave_len)) == NULL)
        err = MSV_ERR_NOMEM;
    if (err == MSV_OK) {
        msv_put_u64be(gave, in->device);
        gave[8] = (uint8_t)(n >> 8);
        gave[9] = (uint8_t)n;
        memcpy(gave + 10, in->sender, n);
        memcpy(gave + 10 + n, pt, pt_len);
        gave_key(digest, key);
        err = state_save_with(c, gid, m, NULL, roster, roster_len, key, gave, gave_len);
    }
    if (err == MSV_OK) {
        in->pt = pt;
        in->pt_len = pt_len;
        pt = NULL;
    }
out:
    mls_unlock(c);
    msv_secret_free(gave, gave_len);
    msv_secret_free(pt, pt_len);
    msv_mls_member_free(m);
    free(roster);
    return err;
}

/*
 * Whether a commit or Welcome of generation gen could be taken here, judged before anything is
 * fetched for it: a commit at the epoch this device holds of that generation; a Welcome to a
 * group this device was told of, of that generation or a later one than it holds.
 */
static int worth_fetching(struct msv_client *c, const Msv__Wire__MlsDelivery *d, uint32_t gen)
{
    uint64_t epoch = 0;
    int64_t held = held_generation(c, d->group_id.data, &epoch);

    if (d->kind == MSV__WIRE__MLS_KIND__MLS_KIND_COMMIT)
        return held == (int64_t)gen && epoch == d->epoch;
    return group_known(c, d->group_id.data) && held <= (int64_t)gen;
}

msv_err client_mls_take(struct msv_client *c, const uint8_t *delivery, size_t len,
                        const char *sender_handle, uint64_t sender_device, const uint8_t digest[32],
                        struct client_mls_in *in)
{
    Msv__Wire__MlsDelivery *d = msv__wire__mls_delivery__unpack(NULL, len, delivery);
    msv_err err = MSV_OK;
    uint32_t gen = 0;
    uint8_t *fetched = NULL, digest_in[32];
    const uint8_t *msg;
    size_t fetched_len = 0, msg_len;
    int64_t held = -1;
    uint64_t held_epoch = 0;
    int joined = 0;

    memset(in, 0, sizeof(*in));
    c->mls_refusal.due = 0;
    if (d != NULL && d->group_id.len == MLS_ID_LEN)
        gen = msv_get_u32be(d->group_id.data + 16);
    if (d == NULL || d->group_id.len != MLS_ID_LEN) {
        snprintf(in->notice, sizeof(in->notice),
                 "a group message from %.256s (device %llu) in a format this version cannot "
                 "read yet",
                 sender_handle, (unsigned long long)sender_device);
        goto out;
    }
    /* a commit or message of a group this device was added to while its queue was full (the
     * Welcome left out of it), of a generation it holds no state of: the Welcome the delivery
     * service kept for it first */
    if (d->kind == MSV__WIRE__MLS_KIND__MLS_KIND_COMMIT ||
        d->kind == MSV__WIRE__MLS_KIND__MLS_KIND_APPLICATION) {
        held = held_generation(c, d->group_id.data, &held_epoch);
        if (held < (int64_t)gen)
            err = welcome_asked(c, d->group_id.data, gen, held, held_epoch, &joined);
        if (err != MSV_OK)
            goto out;
        if (joined)
            held = held_generation(c, d->group_id.data, &held_epoch);
    }
    /* a commit or message of a later epoch than this device holds: the commits between, which
     * it missed, are read from the delivery service's log first, up to that epoch (a message's
     * as far as the group had reached when the server took it: a member's claim goes no
     * further); a read the server refused leaves it as it was; one with no answer or refused
     * for the rate, or a storage failure, leaves the delivery unacknowledged, to come again */
    if ((d->kind == MSV__WIRE__MLS_KIND__MLS_KIND_COMMIT ||
         d->kind == MSV__WIRE__MLS_KIND__MLS_KIND_APPLICATION) &&
        held == (int64_t)gen && d->epoch > held_epoch) {
        uint64_t moved = 0, target = d->kind == MSV__WIRE__MLS_KIND__MLS_KIND_COMMIT ||
                                             d->group_epoch > d->epoch
                                         ? d->epoch
                                         : d->group_epoch;

        err = catch_up(c, d->group_id.data, gen, target, 0, &moved);
        if (err == MSV_OK)
            held = held_generation(c, d->group_id.data, &held_epoch);
        /* short of it (a commit gone from the log, or one that removed this device's leaf to
         * add it again, whose Welcome its full queue left out): a Welcome kept, if any, then
         * the rest of the log from where it joined */
        if (err == MSV_OK && held == (int64_t)gen && held_epoch < target) {
            joined = 0;
            err = welcome_asked(c, d->group_id.data, gen, held, held_epoch, &joined);
            if (err == MSV_OK && joined)
                err = catch_up(c, d->group_id.data, gen, target, 0, &moved);
        }
        if (err != MSV_OK)
            goto out;
    }
    crypto_hash_sha256(digest_in, d->message.data, d->message.len);
    /* a commit or Welcome too large for one send comes by reference, fetched only if it could
     * be taken (else it is told as any other such delivery, unfetched) */
    if ((d->kind == MSV__WIRE__MLS_KIND__MLS_KIND_WELCOME ||
         d->kind == MSV__WIRE__MLS_KIND__MLS_KIND_COMMIT) &&
        worth_fetching(c, d, gen)) {
        err = resolve(c, sender_device, d->message.data, d->message.len, &fetched, &fetched_len);
        if (err != MSV_OK && err != MSV_ERR_IO) {
            snprintf(in->notice, sizeof(in->notice),
                     "a%s MLS %s from device %llu, too large for one message, could not be "
                     "fetched (%s): not taken",
                     err == MSV_ERR_PARSE ? " malformed reference to an" : "n",
                     d->kind == MSV__WIRE__MLS_KIND__MLS_KIND_WELCOME ? "Welcome" : "commit",
                     (unsigned long long)sender_device,
                     err == MSV_ERR_AUTH        ? "it failed its integrity check"
                     : err == MSV_ERR_NOT_FOUND ? "the server does not have it"
                     : err == MSV_ERR_TOO_BIG   ? "that device sent more than 64 MiB by "
                                                  "reference within the hour"
                                                : msv_strerror(err));
            if (d->kind == MSV__WIRE__MLS_KIND__MLS_KIND_COMMIT) { /* told once */
                uint8_t v[REFUSED_VALUE];

                refused_value(gen, d->epoch, digest_in, v);
                refusal_due(c, d->group_id.data, v);
            }
            err = MSV_OK;
            goto told;
        }
        if (err != MSV_OK)
            goto told;
    }
    msg = fetched != NULL ? fetched : d->message.data;
    msg_len = fetched != NULL ? fetched_len : d->message.len;
    switch (d->kind) {
    case MSV__WIRE__MLS_KIND__MLS_KIND_WELCOME:
        err = take_welcome(c, d->group_id.data, gen, msg, msg_len, in);
        break;
    case MSV__WIRE__MLS_KIND__MLS_KIND_COMMIT:
        err = take_commit(c, d->group_id.data, gen, d->epoch, msg, msg_len, digest_in,
                          sender_device, in);
        break;
    case MSV__WIRE__MLS_KIND__MLS_KIND_APPLICATION:
        err = take_application(c, d->group_id.data, gen, d->epoch, d->message.data, d->message.len,
                               digest, in);
        break;
    default:
        /* of a generation this device moved on from: its members leaving it, nothing to take */
        if (held_generation(c, d->group_id.data, &held_epoch) > (int64_t)gen)
            break;
        snprintf(in->notice, sizeof(in->notice),
                 "an MLS proposal from device %llu was not taken: this version commits only "
                 "its own changes",
                 (unsigned long long)sender_device);
    }
told:
    /* an error of the group's crypto names nobody; a storage failure is not acknowledged */
    if (err != MSV_OK && err != MSV_ERR_IO && err != MSV_ERR_NOMEM) {
        if (in->notice[0] == '\0')
            snprintf(in->notice, sizeof(in->notice),
                     "a group message from device %llu could not be taken (%s)",
                     (unsigned long long)sender_device, msv_strerror(err));
        err = MSV_OK;
    }
    /* told in the group's conversation, if this device knows it */
    if (in->notice[0] != '\0' && d != NULL && d->group_id.len == MLS_ID_LEN &&
        group_known(c, d->group_id.data))
        msv_client_group_conversation(d->group_id.data, in->conversation);
out:
    msv__wire__mls_delivery__free_unpacked(d, NULL);
    free(fetched);
    return err;
}
