/*
 * The sending side of MLS (src/mls/group.c, keypackage.c, secret_state.c)
 * against the receiving side (member.c), for cipher suites 1 and 3:
 *
 *   - KeyPackages made and validated, and each kind of bad one refused with
 *     its reason (RFC 9420 10.1, 7.3);
 *   - a group created, grown to 5 by a commit with a Welcome, then 24 more
 *     epochs of adds, removes, updates proposed by others (as PublicMessages
 *     and PrivateMessages) and committed by reference, and commits with
 *     nothing but a path: every member reaches
 *     the same epoch authenticator and tree each epoch, those added follow;
 *   - refusals that change nothing: a bit changed anywhere in a commit, a
 *     Welcome for someone else, a commit of a past epoch, a removed member's
 *     commit;
 *   - application messages as PrivateMessages read by every other member;
 *     within an epoch a key is used once, out of order ones are kept, and the
 *     keys and secret tree nodes used are gone from the state.
 *
 * Exits non-zero if anything fails.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <sodium.h>

#include "missive/util.h"
#include "mls/member.h"
#include "mls/mls.h"

#include "mls_check.h"

#define NOW 1800000000u
#define DEVICES 64

struct device {
    uint8_t seed[32];
    char id[24];
    uint8_t init_sk[32], leaf_sk[32];
    uint8_t *kp;
    size_t kp_len;
    struct msv_mls_member *m; /* NULL while not in the group */
};

static struct device devs[DEVICES];
static size_t n_devs;
static enum msv_mls_suite suite;

static size_t new_device(void)
{
    struct device *d;

    if (n_devs == DEVICES)
        fatal("out of devices");
    d = &devs[n_devs];
    memset(d, 0, sizeof(*d));
    randombytes_buf(d->seed, sizeof(d->seed));
    snprintf(d->id, sizeof(d->id), "device-%zu", n_devs);
    if (msv_mls_key_package_make(suite, d->seed, (const uint8_t *)d->id, strlen(d->id), NOW - 60,
                                 NOW + 86400, d->init_sk, d->leaf_sk, &d->kp, &d->kp_len) != MSV_OK)
        fatal("key package");
    return n_devs++;
}

static void free_devices(void)
{
    for (size_t i = 0; i < n_devs; i++) {
        msv_mls_member_free(devs[i].m);
        free(devs[i].kp);
        devs[i].m = NULL;
        devs[i].kp = NULL;
    }
    n_devs = 0;
}

/* What must not change when a member refuses something. */
struct snapshot {
    uint64_t epoch;
    uint8_t auth[MSV_MLS_NH], tree[MSV_MLS_NH];
    uint32_t n_leaves;
};

static struct snapshot snap(const struct msv_mls_member *m)
{
    struct snapshot s;

    memset(&s, 0, sizeof(s));
    s.epoch = m->epoch;
    memcpy(s.auth, m->s.epoch_authenticator, MSV_MLS_NH);
    if (msv_mls_tree_hash(&m->tree, msv_mls_tree_root(m->tree.n_leaves), s.tree) != MSV_OK)
        fatal("tree hash");
    s.n_leaves = m->tree.n_leaves;
    return s;
}

static int same_snap(const struct snapshot *a, const struct snapshot *b)
{
    return a->epoch == b->epoch && memcmp(a->auth, b->auth, MSV_MLS_NH) == 0 &&
           memcmp(a->tree, b->tree, MSV_MLS_NH) == 0 && a->n_leaves == b->n_leaves;
}

/* ---- KeyPackages ---- */

/* The KeyPackage MLSMessage signed again after a change (KeyPackageTBS is all but the header
 * and the signature). */
static void resign(uint8_t *kp, size_t len, const uint8_t seed[32])
{
    uint8_t sig[MSV_MLS_SIG_LEN];

    if (msv_mls_sign_label(seed, "KeyPackageTBS", kp + 4, len - 4 - 65, sig) != MSV_OK)
        fatal("sign");
    memcpy(kp + len - 64, sig, 64);
}

static void expect_refusal(const uint8_t *kp, size_t len, enum msv_mls_suite s, uint64_t now,
                           const char *reason)
{
    const char *why = NULL;
    msv_err err = msv_mls_key_package_check(s, kp, len, now, NULL, &why);

    CHECK(err != MSV_OK, reason);
    CHECK(why != NULL && strstr(why, reason) != NULL, reason);
    if (why != NULL && strstr(why, reason) == NULL)
        fprintf(stderr, "  said: %s\n", why);
}

static void test_key_packages(void)
{
    size_t d = new_device();
    const uint8_t *kp = devs[d].kp;
    size_t len = devs[d].kp_len;
    uint8_t *copy = malloc(len);
    struct msv_mls_leaf leaf;
    const char *why = NULL;
    size_t caps;

    CHECK(msv_mls_key_package_check(suite, kp, len, NOW, &leaf, &why) == MSV_OK, "own KP valid");
    CHECK(leaf.source == 1 && leaf.encryption_key_len == 32, "KP leaf read");
    CHECK(msv_mls_key_package_check(suite, kp, len, 0, NULL, NULL) == MSV_OK, "no time: valid");
    expect_refusal(kp, len, suite == 1 ? 3 : 1, NOW, "cipher suite");
    expect_refusal(kp, len, suite, NOW + 2 * 86400, "outside its lifetime");
    expect_refusal(kp, len, suite, NOW - 3600, "outside its lifetime");
    /* RFC 9420 7.2: lifetimes up to 84 days and an hour, the client's 61 days and an hour among
     * them */
    {
        static const uint64_t lifetimes[] = {61 * 86400 + 3600, MSV_MLS_KEY_PACKAGE_LIFETIME_MAX,
                                             MSV_MLS_KEY_PACKAGE_LIFETIME_MAX + 1, 3650ull * 86400};

        for (size_t i = 0; i < 4; i++) {
            uint8_t seed[32] = {7}, init_sk[32], leaf_sk[32], *long_kp = NULL;
            size_t long_len = 0;

            CHECK(msv_mls_key_package_make(suite, seed, (const uint8_t *)"x", 1, NOW - 60,
                                           NOW - 60 + lifetimes[i], init_sk, leaf_sk, &long_kp,
                                           &long_len) == MSV_OK,
                  "a KeyPackage of a given lifetime made");
            if (i < 2)
                CHECK(msv_mls_key_package_check(suite, long_kp, long_len, NOW, NULL, NULL) ==
                          MSV_OK,
                      "a lifetime up to the longest taken");
            else
                expect_refusal(long_kp, long_len, suite, NOW, "lifetime longer than 84 days");
            free(long_kp);
        }
    }
    /* any bit of it changed: refused */
    for (size_t i = 0; i < len; i++) {
        memcpy(copy, kp, len);
        copy[i] ^= (uint8_t)(1u << (i % 8));
        CHECK(msv_mls_key_package_check(suite, copy, len, NOW, NULL, NULL) != MSV_OK,
              "changed KP refused");
    }
    CHECK(msv_mls_key_package_check(suite, kp, len - 1, NOW, NULL, NULL) != MSV_OK, "short KP");
    /* init key = encryption key, signed as such: init key at 9, encryption key at 42 */
    memcpy(copy, kp, len);
    memcpy(copy + 9, copy + 42, 32);
    resign(copy, len, devs[d].seed);
    expect_refusal(copy, len, suite, NOW, "equal to the encryption key");
    /* an X.509 credential (type 2): not supported; the credential type sits after both keys */
    memcpy(copy, kp, len);
    copy[42 + 32 + 1 + 32 + 1] = 2;
    resign(copy, len, devs[d].seed);
    expect_refusal(copy, len, suite, NOW, "credential type not supported");
    /* capabilities: versions<V> after the identity; the suites list follows */
    caps = 42 + 32 + 1 + 32 + 2 + 1 + strlen(devs[d].id);
    memcpy(copy, kp, len);
    copy[caps + 2] = 9; /* MLS 1.0 -> version 9 */
    resign(copy, len, devs[d].seed);
    expect_refusal(copy, len, suite, NOW, "MLS 1.0");
    memcpy(copy, kp, len);
    copy[caps + 5] = 7; /* suite 1 -> 7 */
    copy[caps + 7] = 7; /* suite 3 -> 7 */
    resign(copy, len, devs[d].seed);
    expect_refusal(copy, len, suite, NOW, "group's cipher suite");
    /* the leaf node changed and the KeyPackage signed again: the leaf's signature fails */
    memcpy(copy, kp, len);
    copy[60] ^= 1;
    resign(copy, len, devs[d].seed);
    expect_refusal(copy, len, suite, NOW, "leaf node signature");
    free(copy);
    free_devices();
}

/* ---- a group ---- */

static int in_group(size_t i)
{
    return devs[i].m != NULL;
}

/* Every member at one epoch with one authenticator and tree. */
static void check_agreement(const char *when)
{
    struct snapshot first;
    int have = 0;

    for (size_t i = 0; i < n_devs; i++) {
        struct snapshot s;

        if (!in_group(i))
            continue;
        s = snap(devs[i].m);
        if (!have) {
            first = s;
            have = 1;
            continue;
        }
        CHECK(same_snap(&first, &s), when);
    }
}

struct round {
    size_t committer;
    size_t adds[4], n_adds;
    size_t removes[4], n_removes; /* devices */
    const uint8_t *proposals[4];
    size_t proposal_lens[4], n_proposals;
    int private_message;
    int no_path;
};

/* The committer commits; the others process it (the removed ones are refused and leave), the
 * added ones join from the Welcome. */
static void play(struct round *r)
{
    const uint8_t *kps[4];
    size_t kp_lens[4];
    uint32_t removes[4];
    struct msv_mls_commit_spec spec;
    uint8_t *commit = NULL, *welcome = NULL;
    size_t commit_len = 0, welcome_len = 0;
    const char *why = NULL;
    msv_err err;

    for (size_t i = 0; i < r->n_adds; i++) {
        kps[i] = devs[r->adds[i]].kp;
        kp_lens[i] = devs[r->adds[i]].kp_len;
    }
    for (size_t i = 0; i < r->n_removes; i++)
        removes[i] = devs[r->removes[i]].m->me;
    memset(&spec, 0, sizeof(spec));
    spec.key_packages = kps;
    spec.key_package_lens = kp_lens;
    spec.n_adds = r->n_adds;
    spec.removes = removes;
    spec.n_removes = r->n_removes;
    spec.proposals = r->proposals;
    spec.proposal_lens = r->proposal_lens;
    spec.n_proposals = r->n_proposals;
    spec.now = NOW;
    spec.private_message = r->private_message;
    spec.no_path = r->no_path;
    err = msv_mls_member_commit_make(devs[r->committer].m, &spec, &commit, &commit_len, &welcome,
                                     &welcome_len, &why);
    if (err != MSV_OK) {
        fprintf(stderr, "commit_make: %s (%s)\n", msv_strerror(err), why ? why : "");
        fatal("commit");
    }
    CHECK((welcome != NULL) == (r->n_adds > 0), "a Welcome exactly when adding");
    for (size_t i = 0; i < n_devs; i++) {
        int removed = 0;

        if (!in_group(i) || i == r->committer)
            continue;
        for (size_t k = 0; k < r->n_removes; k++)
            removed |= r->removes[k] == i;
        err = msv_mls_member_commit(devs[i].m, r->proposals, r->proposal_lens, r->n_proposals,
                                    commit, commit_len);
        if (removed) {
            CHECK(err != MSV_OK, "a removed member does not follow");
            msv_mls_member_free(devs[i].m);
            devs[i].m = NULL;
        } else {
            CHECK(err == MSV_OK, "a member follows the commit");
            if (err != MSV_OK)
                fprintf(stderr, "  device %zu: %s\n", i, msv_strerror(err));
        }
    }
    CHECK(msv_mls_member_commit_merge(devs[r->committer].m) == MSV_OK, "merge");
    for (size_t i = 0; i < r->n_adds; i++) {
        struct device *d = &devs[r->adds[i]];

        err = msv_mls_member_join(suite, welcome, welcome_len, d->kp, d->kp_len, d->init_sk,
                                  d->leaf_sk, NULL, 0, NULL, 0, &d->m);
        CHECK(err == MSV_OK, "joined from the Welcome");
        if (err != MSV_OK) {
            fprintf(stderr, "  join: %s\n", msv_strerror(err));
            continue;
        }
        CHECK(msv_mls_member_set_signer(d->m, d->seed) == MSV_OK, "signer");
    }
    free(commit);
    free(welcome);
    check_agreement("members agree after a commit");
}

/* Every member sends one message; every other member reads it. */
static void talk(void)
{
    for (size_t i = 0; i < n_devs; i++) {
        char text[64];
        uint8_t *msg = NULL;
        size_t len = 0;

        if (!in_group(i))
            continue;
        snprintf(text, sizeof(text), "hello from %s at %llu", devs[i].id,
                 (unsigned long long)devs[i].m->epoch);
        if (msv_mls_member_protect(devs[i].m, (const uint8_t *)text, strlen(text), &msg, &len) !=
            MSV_OK)
            fatal("protect");
        for (size_t k = 0; k < n_devs; k++) {
            uint8_t *pt = NULL;
            size_t pt_len = 0;
            uint32_t sender = 0;

            if (!in_group(k) || k == i)
                continue;
            CHECK(msv_mls_member_unprotect(devs[k].m, msg, len, &pt, &pt_len, &sender) == MSV_OK,
                  "message read");
            CHECK(pt != NULL && pt_len == strlen(text) && memcmp(pt, text, pt_len) == 0 &&
                      sender == devs[i].m->me,
                  "message as sent");
            msv_secret_free(pt, pt_len);
        }
        free(msg);
    }
}

static size_t members(void)
{
    size_t n = 0;

    for (size_t i = 0; i < n_devs; i++)
        n += in_group(i);
    return n;
}

/* The k-th member (wrapping). */
static size_t nth_member(size_t k)
{
    size_t n = members(), want = k % n;

    for (size_t i = 0; i < n_devs; i++) {
        if (in_group(i) && want-- == 0)
            return i;
    }
    fatal("no member");
    return 0;
}

/* One epoch of the schedule: what it does turns with e. */
static void epoch_step(unsigned e)
{
    struct round r;
    uint8_t *update = NULL;

    memset(&r, 0, sizeof(r));
    r.committer = nth_member(e * 3 + 1);
    r.private_message = (e / 4) % 2; /* every kind of commit both ways */
    switch (e % 4) {
    case 0: /* a path only */
        break;
    case 1: /* remove one, add one */
        r.removes[r.n_removes++] =
            nth_member(e * 3 + 2) == r.committer ? nth_member(e * 3 + 3) : nth_member(e * 3 + 2);
        r.adds[r.n_adds++] = new_device();
        break;
    case 2: { /* another member's update, by reference */
        size_t u =
            nth_member(e * 3 + 2) == r.committer ? nth_member(e * 3 + 3) : nth_member(e * 3 + 2);

        /* the proposal as a PublicMessage or a PrivateMessage, under either kind of commit */
        if (msv_mls_member_propose_update(devs[u].m, (e / 8) % 2, &update, &r.proposal_lens[0]) !=
            MSV_OK)
            fatal("propose update");
        CHECK(r.proposal_lens[0] > 4 &&
                  update[3] == ((e / 8) % 2 ? MSV_MLS_WIRE_PRIVATE : MSV_MLS_WIRE_PUBLIC),
              "the proposal goes as asked");
        r.proposals[r.n_proposals++] = update;
        break;
    }
    default: /* grow or shrink around 5 */
        if (members() < 5)
            r.adds[r.n_adds++] = new_device();
        else
            r.removes[r.n_removes++] = nth_member(e * 3 + 2) == r.committer ? nth_member(e * 3 + 3)
                                                                            : nth_member(e * 3 + 2);
        if (members() < 6)
            r.adds[r.n_adds++] = new_device();
        break;
    }
    play(&r);
    free(update);
}

/*
 * The group of five its creator made by one commit: eight leaves, the creator's path keyed by
 * it, the parent of leaves 2 and 3 blank above both (so every commit encrypts to each), leaf 4
 * alone in its half. Leaf 2's commit keys it: then no path has a node that resolves to more
 * than one.
 */
static void test_path_unkeyed(size_t creator)
{
    const struct msv_mls_tree *t = &devs[creator].m->tree;
    struct round r;

    CHECK(t->n_leaves == 8, "eight leaves");
    for (uint32_t leaf = 0; leaf < 5; leaf++)
        CHECK(msv_mls_tree_path_unkeyed(t, leaf) == (leaf == 2 || leaf == 3),
              "the paths of leaves 2 and 3 alone are not keyed");
    CHECK(!msv_mls_tree_path_unkeyed(t, 8), "no such leaf");
    for (uint32_t leaf = 0; leaf < 5; leaf++)
        CHECK(msv_mls_tree_path_blank_first(t, leaf) == (leaf == 2),
              "leaf 2 alone is named to key the blank parent of leaves 2 and 3");
    memset(&r, 0, sizeof(r));
    for (size_t i = 0; i < n_devs; i++)
        if (in_group(i) && devs[i].m->me == 2)
            r.committer = i;
    play(&r);
    for (size_t i = 0; i < n_devs; i++)
        for (uint32_t leaf = 0; in_group(i) && leaf < 5; leaf++)
            CHECK(!msv_mls_tree_path_unkeyed(&devs[i].m->tree, leaf),
                  "after leaf 2's commit every path is keyed, for every member");
}

/* How many path secrets a commit of leaf would encrypt: the resolution of each node of its
 * copath, counted. */
static size_t path_secrets(const struct msv_mls_tree *t, uint32_t leaf)
{
    uint32_t x = 2 * leaf, res[64];
    size_t all = 0;

    while (msv_mls_tree_parent(x, t->n_leaves) != MSV_MLS_NONE) {
        size_t n = 0;

        if (msv_mls_tree_resolution(t, msv_mls_tree_sibling(x, t->n_leaves), res, 64, &n) != MSV_OK)
            fatal("resolution");
        all += n;
        x = msv_mls_tree_parent(x, t->n_leaves);
    }
    return all;
}

/*
 * The order that keys a tree from the top (msv_mls_tree_key_order): a leaf's index with its bits
 * reversed, the same place over the width in every tree wide enough. A group of 32 made by its
 * creator's one commit has keys on the creator's path alone; once the leaves at places 1 to 7
 * commit, every node of the third level and above holds a key, and no member's commit encrypts to
 * more than 6 nodes (1 + 2 below that level, 1 each at the three above). Seven commits of the
 * first even leaves by index leave the right half blank: a leaf of the left encrypts to its 16
 * leaves and 4 nodes more.
 */
static void test_key_order(void)
{
    static const uint32_t of8[8] = {0, 4, 2, 6, 1, 5, 3, 7};
    enum { N = 32 };
    struct device d[N];
    const uint8_t *kps[N];
    size_t kp_lens[N];
    struct msv_mls_member *m[N];

    for (uint32_t leaf = 0; leaf < 8; leaf++) {
        CHECK(msv_mls_tree_key_order(leaf, 8) == of8[leaf], "the bits reversed");
        CHECK(msv_mls_tree_key_order(leaf, 16) == 2 * of8[leaf],
              "the same place over the width in a wider tree");
    }
    CHECK(msv_mls_tree_key_order(0, 1) == 0 && msv_mls_tree_key_order(3, 5) == 6,
          "a width not a power of two counts as the next one");
    for (int by_order = 0; by_order < 2; by_order++) {
        struct msv_mls_commit_spec spec;
        uint8_t *commit = NULL, *welcome = NULL;
        size_t commit_len = 0, welcome_len = 0, most = 0;
        const char *why = NULL;

        memset(d, 0, sizeof(d));
        for (size_t i = 0; i < N; i++) {
            randombytes_buf(d[i].seed, sizeof(d[i].seed));
            snprintf(d[i].id, sizeof(d[i].id), "keyer-%zu", i);
            if (msv_mls_key_package_make(suite, d[i].seed, (const uint8_t *)d[i].id,
                                         strlen(d[i].id), NOW - 60, NOW + 86400, d[i].init_sk,
                                         d[i].leaf_sk, &d[i].kp, &d[i].kp_len) != MSV_OK)
                fatal("key package");
            kps[i] = d[i].kp;
            kp_lens[i] = d[i].kp_len;
        }
        if (msv_mls_member_create(suite, (const uint8_t *)"thirty-two", 10, d[0].seed,
                                  (const uint8_t *)d[0].id, strlen(d[0].id), NOW - 60, NOW + 86400,
                                  &m[0]) != MSV_OK)
            fatal("create");
        memset(&spec, 0, sizeof(spec));
        spec.key_packages = kps + 1;
        spec.key_package_lens = kp_lens + 1;
        spec.n_adds = N - 1;
        spec.now = NOW;
        if (msv_mls_member_commit_make(m[0], &spec, &commit, &commit_len, &welcome, &welcome_len,
                                       &why) != MSV_OK ||
            msv_mls_member_commit_merge(m[0]) != MSV_OK)
            fatal("founding");
        for (size_t i = 1; i < N; i++)
            if (msv_mls_member_join(suite, welcome, welcome_len, d[i].kp, d[i].kp_len, d[i].init_sk,
                                    d[i].leaf_sk, NULL, 0, NULL, 0, &m[i]) != MSV_OK ||
                msv_mls_member_set_signer(m[i], d[i].seed) != MSV_OK || m[i]->me != i)
                fatal("join");
        free(commit);
        free(welcome);
        for (uint32_t k = 1; k <= 7; k++) {
            uint32_t who = 2 * k; /* by index: leaves 2, 4, ..., 14 */

            for (uint32_t leaf = 0; by_order && leaf < N; leaf++)
                if (msv_mls_tree_key_order(leaf, N) == k)
                    who = leaf;
            CHECK(msv_mls_tree_path_unkeyed(&m[who]->tree, who), "each commits to key its path");
            memset(&spec, 0, sizeof(spec));
            spec.now = NOW;
            if (msv_mls_member_commit_make(m[who], &spec, &commit, &commit_len, &welcome,
                                           &welcome_len, &why) != MSV_OK ||
                msv_mls_member_commit_merge(m[who]) != MSV_OK)
                fatal("keying commit");
            for (size_t i = 0; i < N; i++)
                if (i != who &&
                    msv_mls_member_commit(m[i], NULL, NULL, 0, commit, commit_len) != MSV_OK)
                    fatal("follow");
            free(commit);
        }
        for (uint32_t leaf = 0; leaf < N; leaf++) {
            size_t n = path_secrets(&m[0]->tree, leaf);

            most = n > most ? n : most;
        }
        if (by_order)
            CHECK(most == 6, "after seven commits in the order, at most 6 path secrets a commit");
        else
            CHECK(most == 4 + 16, "after seven by index, the right half is blank to the left");
        for (size_t i = 0; i < N; i++) {
            msv_mls_member_free(m[i]);
            free(d[i].kp);
        }
        sodium_memzero(d, sizeof(d));
    }
}

/*
 * Commits without a path (12.4): adds alone are made without one, smaller, and followed by
 * every member and joined from their Welcome (which then carries no path secret); a removal or
 * nothing at all without a path is refused by the committer, nothing changed (and by every
 * member: test_hostile_committer).
 */
static void test_no_path(void)
{
    struct msv_mls_commit_spec spec;
    struct round r;
    uint8_t *commit = NULL, *welcome = NULL;
    size_t commit_len = 0, welcome_len = 0, c = nth_member(1);
    uint32_t remove = devs[nth_member(2)].m->me;
    struct snapshot before;
    const char *why = NULL;

    for (int private_message = 0; private_message < 2; private_message++) {
        memset(&r, 0, sizeof(r));
        r.committer = nth_member(private_message);
        r.adds[r.n_adds++] = new_device();
        r.adds[r.n_adds++] = new_device();
        r.no_path = 1;
        r.private_message = private_message;
        play(&r);
        {
            const struct msv_mls_tree *t = &devs[c].m->tree;
            uint32_t me = devs[r.adds[0]].m->me, x = 2 * me;
            int unmerged = 0;

            while ((x = msv_mls_tree_parent(x, t->n_leaves)) != MSV_MLS_NONE)
                for (size_t u = 0; t->nodes[x].type == 2 && u < t->nodes[x].n_unmerged; u++)
                    unmerged |= t->nodes[x].unmerged[u] == me;
            CHECK(unmerged && msv_mls_tree_path_unkeyed(t, me),
                  "a leaf added without a path is unmerged where its path is keyed, so its path "
                  "is not keyed");
        }
        talk();
    }
    before = snap(devs[c].m);
    memset(&spec, 0, sizeof(spec));
    spec.removes = &remove;
    spec.n_removes = 1;
    spec.now = NOW;
    spec.no_path = 1;
    CHECK(msv_mls_member_commit_make(devs[c].m, &spec, &commit, &commit_len, &welcome, &welcome_len,
                                     &why) == MSV_ERR_INVALID,
          "a removal without a path refused by its committer");
    CHECK(why != NULL && strstr(why, "without a path") != NULL, "and it says why");
    spec.n_removes = 0;
    CHECK(msv_mls_member_commit_make(devs[c].m, &spec, &commit, &commit_len, &welcome, &welcome_len,
                                     &why) == MSV_ERR_INVALID,
          "an empty commit without a path refused");
    {
        struct snapshot after = snap(devs[c].m);

        CHECK(same_snap(&before, &after) && devs[c].m->pending == NULL && commit == NULL,
              "nothing changed");
    }
    /* a commit with a path after them renews the tree's keys and everyone follows */
    memset(&r, 0, sizeof(r));
    r.committer = c;
    play(&r);
    talk();
}

/*
 * Beside a commit, a proposal that does not open is refused by every member, the one with an
 * Update of its own pending as a PrivateMessage too (whose own proposal, its key erased, stands in
 * only for a message whose SenderData names it): nothing changed; the commit alone then goes.
 */
static void test_garbage_beside_own_proposal(void)
{
    size_t committer = nth_member(0), u = nth_member(1), x = nth_member(2);
    uint8_t *update = NULL, *commit = NULL, *welcome = NULL, garbage[200];
    size_t update_len = 0, commit_len = 0, welcome_len = 0, garbage_len = sizeof(garbage);
    const uint8_t *props[1] = {garbage};
    struct msv_mls_commit_spec spec;
    const char *why = NULL;

    if (msv_mls_member_propose_update(devs[u].m, 1, &update, &update_len) != MSV_OK)
        fatal("propose update");
    randombytes_buf(garbage, sizeof(garbage));
    garbage[0] = 0; /* mls10 */
    garbage[1] = 1;
    garbage[2] = 0;
    garbage[3] = MSV_MLS_WIRE_PRIVATE;
    memset(&spec, 0, sizeof(spec));
    spec.now = NOW;
    if (msv_mls_member_commit_make(devs[committer].m, &spec, &commit, &commit_len, &welcome,
                                   &welcome_len, &why) != MSV_OK)
        fatal("commit");
    for (size_t k = 0; k < 2; k++) {
        size_t i = k == 0 ? x : u;
        struct snapshot before = snap(devs[i].m), after;

        CHECK(msv_mls_member_commit(devs[i].m, props, &garbage_len, 1, commit, commit_len) !=
                  MSV_OK,
              k == 0 ? "garbage beside a commit refused" : "and by a member with its own pending");
        after = snap(devs[i].m);
        CHECK(same_snap(&before, &after), "nothing changed");
    }
    for (size_t i = 0; i < n_devs; i++) {
        if (in_group(i) && i != committer)
            CHECK(msv_mls_member_commit(devs[i].m, NULL, NULL, 0, commit, commit_len) == MSV_OK,
                  "the commit alone is followed");
    }
    CHECK(msv_mls_member_commit_merge(devs[committer].m) == MSV_OK, "merge");
    check_agreement("members agree after the commit alone");
    free(update);
    free(commit);
    free(welcome);
}

/*
 * A member's own Remove proposal (how it leaves): a PublicMessage, which another member commits
 * by reference; every member follows, the leaver's leaf is gone from the tree, and the rest talk.
 */
static void test_leave_proposal(void)
{
    size_t committer = nth_member(0), u = nth_member(1), before = members();
    uint32_t leaf = devs[u].m->me;
    uint8_t *leave = NULL, *commit = NULL, *welcome = NULL;
    size_t leave_len = 0, commit_len = 0, welcome_len = 0;
    const uint8_t *props[1];
    struct msv_mls_commit_spec spec;
    const char *why = NULL;

    if (msv_mls_member_propose_leave(devs[u].m, &leave, &leave_len) != MSV_OK)
        fatal("propose leave");
    CHECK(leave_len > 4 && leave[3] == MSV_MLS_WIRE_PUBLIC, "a leave goes as a PublicMessage");
    props[0] = leave;
    memset(&spec, 0, sizeof(spec));
    spec.proposals = props;
    spec.proposal_lens = &leave_len;
    spec.n_proposals = 1;
    spec.now = NOW;
    if (msv_mls_member_commit_make(devs[committer].m, &spec, &commit, &commit_len, &welcome,
                                   &welcome_len, &why) != MSV_OK)
        fatal("commit of a leave");
    for (size_t i = 0; i < n_devs; i++) {
        msv_err err;

        if (!in_group(i) || i == committer)
            continue;
        err = msv_mls_member_commit(devs[i].m, props, &leave_len, 1, commit, commit_len);
        CHECK(i == u ? err != MSV_OK : err == MSV_OK,
              i == u ? "the leaver is out" : "a member follows the leave's commit");
    }
    CHECK(msv_mls_member_commit_merge(devs[committer].m) == MSV_OK, "merge");
    CHECK(leaf >= devs[committer].m->tree.n_leaves ||
              devs[committer].m->tree.nodes[2 * leaf].type == 0,
          "the leaver's leaf is blank (or the tree truncated past it)");
    msv_mls_member_free(devs[u].m);
    devs[u].m = NULL;
    CHECK(members() == before - 1, "one member fewer");
    check_agreement("members agree after a leave");
    talk();
    free(leave);
    free(commit);
    free(welcome);
}

/* ---- refusals that change nothing ---- */

static void expect_unchanged_commit(size_t member, const uint8_t *commit, size_t len,
                                    const char *what)
{
    struct snapshot before = snap(devs[member].m);
    msv_err err = msv_mls_member_commit(devs[member].m, NULL, NULL, 0, commit, len);
    struct snapshot after = snap(devs[member].m);

    CHECK(err != MSV_OK, what);
    CHECK(same_snap(&before, &after), what);
}

static void test_refusals(void)
{
    size_t a = nth_member(0), b = nth_member(1), c = nth_member(2), outsider = new_device();
    size_t joiner = new_device();
    const uint8_t *kps[1] = {devs[joiner].kp};
    size_t kp_lens[1] = {devs[joiner].kp_len};
    struct msv_mls_commit_spec spec;
    struct msv_mls_member *m = NULL;
    uint8_t *commit = NULL, *welcome = NULL, *copy;
    size_t commit_len = 0, welcome_len = 0, flips = 0;
    const char *why = NULL;

    memset(&spec, 0, sizeof(spec));
    spec.key_packages = kps;
    spec.key_package_lens = kp_lens;
    spec.n_adds = 1;
    spec.now = NOW;
    if (msv_mls_member_commit_make(devs[a].m, &spec, &commit, &commit_len, &welcome, &welcome_len,
                                   &why) != MSV_OK)
        fatal("commit for refusals");
    /* a bit changed anywhere in the commit: refused, nothing changed */
    copy = malloc(commit_len);
    for (size_t i = 0; i < commit_len; i += (i < 200 ? 1 : 7)) {
        memcpy(copy, commit, commit_len);
        copy[i] ^= (uint8_t)(1u << (i % 8));
        expect_unchanged_commit(b, copy, commit_len, "a changed commit refused");
        flips++;
    }
    CHECK(flips > 100, "enough changed commits tried");
    expect_unchanged_commit(b, commit, commit_len - 1, "a short commit refused");
    free(copy);
    /* the same for a commit sent as a PrivateMessage */
    {
        struct msv_mls_commit_spec priv;
        uint8_t *pc = NULL, *pw = NULL;
        size_t pc_len = 0, pw_len = 0, n = 0;

        memset(&priv, 0, sizeof(priv));
        priv.private_message = 1;
        if (msv_mls_member_commit_make(devs[c].m, &priv, &pc, &pc_len, &pw, &pw_len, &why) !=
            MSV_OK)
            fatal("private commit");
        CHECK(pc_len > 4 && pc[3] == MSV_MLS_WIRE_PRIVATE, "a PrivateMessage");
        copy = malloc(pc_len);
        for (size_t i = 0; i < pc_len; i += 5, n++) {
            memcpy(copy, pc, pc_len);
            copy[i] ^= (uint8_t)(0x80u >> (i % 8));
            expect_unchanged_commit(b, copy, pc_len, "a changed private commit refused");
        }
        CHECK(n > 50, "enough changed private commits tried");
        free(copy);
        free(pc);
        msv_mls_member_commit_discard(devs[c].m);
    }
    copy = NULL;
    /* the Welcome is for joiner alone */
    CHECK(msv_mls_member_join(suite, welcome, welcome_len, devs[outsider].kp, devs[outsider].kp_len,
                              devs[outsider].init_sk, devs[outsider].leaf_sk, NULL, 0, NULL, 0,
                              &m) != MSV_OK &&
              m == NULL,
          "a Welcome for someone else refused");
    free(copy);
    copy = malloc(welcome_len);
    memcpy(copy, welcome, welcome_len);
    copy[welcome_len - 20] ^= 1;
    CHECK(msv_mls_member_join(suite, copy, welcome_len, devs[joiner].kp, devs[joiner].kp_len,
                              devs[joiner].init_sk, devs[joiner].leaf_sk, NULL, 0, NULL, 0,
                              &m) != MSV_OK &&
              m == NULL,
          "a changed Welcome refused");
    free(copy);
    /* the true commit goes through for everyone */
    for (size_t i = 0; i < n_devs; i++) {
        if (in_group(i) && i != a)
            CHECK(msv_mls_member_commit(devs[i].m, NULL, NULL, 0, commit, commit_len) == MSV_OK,
                  "the commit itself");
    }
    CHECK(msv_mls_member_commit_merge(devs[a].m) == MSV_OK, "merge");
    CHECK(msv_mls_member_join(suite, welcome, welcome_len, devs[joiner].kp, devs[joiner].kp_len,
                              devs[joiner].init_sk, devs[joiner].leaf_sk, NULL, 0, NULL, 0,
                              &devs[joiner].m) == MSV_OK,
          "the joiner joins");
    if (devs[joiner].m != NULL)
        CHECK(msv_mls_member_set_signer(devs[joiner].m, devs[joiner].seed) == MSV_OK, "signer");
    check_agreement("agree after the refusals");
    /* a commit of the past epoch, replayed: refused */
    expect_unchanged_commit(b, commit, commit_len, "a commit of a past epoch refused");
    free(commit);
    free(welcome);
    /* a removed member's commit: c is removed, then commits from where it stands */
    {
        struct round r;
        struct msv_mls_member *removed = NULL;
        struct msv_mls_commit_spec empty;

        memset(&r, 0, sizeof(r));
        r.committer = a;
        r.removes[r.n_removes++] = c;
        /* keep c's state by taking it out of the group before the round */
        removed = devs[c].m;
        devs[c].m = NULL;
        {
            uint32_t leaf = removed->me;
            uint32_t rem[1] = {leaf};

            memset(&spec, 0, sizeof(spec));
            spec.removes = rem;
            spec.n_removes = 1;
            spec.now = NOW;
            if (msv_mls_member_commit_make(devs[a].m, &spec, &commit, &commit_len, &welcome,
                                           &welcome_len, &why) != MSV_OK)
                fatal("remove");
            for (size_t i = 0; i < n_devs; i++) {
                if (in_group(i) && i != a)
                    CHECK(msv_mls_member_commit(devs[i].m, NULL, NULL, 0, commit, commit_len) ==
                              MSV_OK,
                          "removal followed");
            }
            CHECK(msv_mls_member_commit_merge(devs[a].m) == MSV_OK, "merge");
            CHECK(msv_mls_member_commit(removed, NULL, NULL, 0, commit, commit_len) != MSV_OK,
                  "the removed member cannot follow");
            free(commit);
        }
        memset(&empty, 0, sizeof(empty));
        empty.now = NOW;
        if (msv_mls_member_commit_make(removed, &empty, &commit, &commit_len, &welcome,
                                       &welcome_len, &why) != MSV_OK)
            fatal("removed member's commit");
        for (size_t i = 0; i < n_devs; i++) {
            if (in_group(i) && i != a)
                expect_unchanged_commit(i, commit, commit_len, "a removed member's commit refused");
        }
        free(commit);
        msv_mls_member_free(removed);
        (void)r;
    }
    /* KeyPackages that do not validate: the maker refuses and names why, nothing waits */
    {
        size_t d = new_device();
        uint8_t *bad_kp = malloc(devs[d].kp_len);
        const uint8_t *bad[1] = {bad_kp};
        size_t bad_lens[1] = {devs[d].kp_len};
        struct snapshot before = snap(devs[a].m);

        memcpy(bad_kp, devs[d].kp, devs[d].kp_len);
        bad_kp[devs[d].kp_len - 1] ^= 1;
        memset(&spec, 0, sizeof(spec));
        spec.key_packages = bad;
        spec.key_package_lens = bad_lens;
        spec.n_adds = 1;
        spec.now = NOW;
        why = NULL;
        CHECK(msv_mls_member_commit_make(devs[a].m, &spec, &commit, &commit_len, &welcome,
                                         &welcome_len, &why) == MSV_ERR_AUTH &&
                  why != NULL && strstr(why, "key package signature") != NULL,
              "a KeyPackage with a bad signature refused");
        bad[0] = devs[d].kp;
        spec.now = NOW + 30 * 86400;
        why = NULL;
        CHECK(msv_mls_member_commit_make(devs[a].m, &spec, &commit, &commit_len, &welcome,
                                         &welcome_len, &why) == MSV_ERR_INVALID &&
                  why != NULL && strstr(why, "lifetime") != NULL,
              "an expired KeyPackage refused");
        CHECK(devs[a].m->pending == NULL, "nothing pending after refused adds");
        {
            struct snapshot after = snap(devs[a].m);

            CHECK(same_snap(&before, &after), "refused adds change nothing");
        }
        free(bad_kp);
    }
    /* a commit that removes its own committer, or an empty leaf: refused by the maker */
    {
        uint32_t rem[1] = {devs[a].m->me};

        memset(&spec, 0, sizeof(spec));
        spec.removes = rem;
        spec.n_removes = 1;
        why = NULL;
        CHECK(msv_mls_member_commit_make(devs[a].m, &spec, &commit, &commit_len, &welcome,
                                         &welcome_len, &why) == MSV_ERR_INVALID &&
                  why != NULL && strstr(why, "itself") != NULL,
              "a committer cannot remove itself");
        CHECK(devs[a].m->pending == NULL, "nothing pending after a refusal");
    }
    check_agreement("agree at the end of the refusals");
}

/* ---- application messages: forward secrecy within the epoch ---- */

static int contains(const void *hay, size_t hay_len, const uint8_t *needle, size_t n)
{
    const uint8_t *h = hay;

    for (size_t i = 0; i + n <= hay_len; i++) {
        if (memcmp(h + i, needle, n) == 0)
            return 1;
    }
    return 0;
}

/* 1 if any of the state b keeps holds the bytes. */
static int state_holds(const struct msv_mls_member *m, const uint8_t *secret, size_t n)
{
    const struct msv_mls_secret_state *st = &m->st;

    return contains(m, sizeof(*m), secret, n) ||
           contains(st->node, (size_t)msv_mls_tree_width(st->n_leaves) * MSV_MLS_NH, secret, n) ||
           contains(st->ratchet, 2 * (size_t)st->n_leaves * sizeof(*st->ratchet), secret, n) ||
           contains(st->skipped, MSV_MLS_SKIPPED_MAX * sizeof(*st->skipped), secret, n);
}

static void test_forward_secrecy(void)
{
    /* a fresh epoch, so that the receiver's secret tree still holds its root */
    struct round r;
    size_t a, b;
    uint8_t enc[MSV_MLS_NH], leaf[MSV_MLS_NH], key[MSV_MLS_KEY_MAX], nonce[MSV_MLS_NN];
    uint8_t *m1 = NULL, *m2 = NULL, *m3 = NULL, *pt = NULL, *bad;
    size_t l1 = 0, l2 = 0, l3 = 0, pt_len = 0;
    uint32_t sender = 0, root;
    size_t nk = msv_mls_suite_nk(suite);

    memset(&r, 0, sizeof(r));
    r.committer = nth_member(0);
    play(&r);
    a = nth_member(1);
    b = nth_member(2);
    root = msv_mls_tree_root(devs[b].m->st.n_leaves);
    CHECK(devs[b].m->st.has[root], "a new epoch's tree holds its root");
    memcpy(enc, devs[b].m->st.node[root], MSV_MLS_NH);
    CHECK(!contains(&devs[b].m->s, sizeof(devs[b].m->s), enc, MSV_MLS_NH),
          "the encryption secret is only in the secret tree");
    {
        static const uint8_t zero[MSV_MLS_NH];

        /* the joiner secret would give the encryption secret back */
        CHECK(memcmp(devs[b].m->s.joiner, zero, MSV_MLS_NH) == 0 &&
                  memcmp(devs[r.committer].m->s.joiner, zero, MSV_MLS_NH) == 0,
              "no member keeps the joiner secret");
    }
    if (msv_mls_member_protect(devs[a].m, (const uint8_t *)"one", 3, &m1, &l1) != MSV_OK ||
        msv_mls_member_protect(devs[a].m, (const uint8_t *)"two", 3, &m2, &l2) != MSV_OK ||
        msv_mls_member_protect(devs[a].m, (const uint8_t *)"three", 5, &m3, &l3) != MSV_OK)
        fatal("protect");
    /* a forged message (a bit changed) erases nothing */
    bad = malloc(l1);
    for (size_t i = 0; i < l1; i += 3) {
        memcpy(bad, m1, l1);
        bad[i] ^= 0x10;
        CHECK(msv_mls_member_unprotect(devs[b].m, bad, l1, &pt, &pt_len, &sender) != MSV_OK,
              "a changed message refused");
    }
    free(bad);
    CHECK(msv_mls_member_unprotect(devs[b].m, m1, l1, &pt, &pt_len, &sender) == MSV_OK &&
              pt_len == 3 && memcmp(pt, "one", 3) == 0,
          "first message");
    msv_secret_free(pt, pt_len);
    pt = NULL;
    CHECK(msv_mls_member_unprotect(devs[b].m, m1, l1, &pt, &pt_len, &sender) == MSV_ERR_AUTH,
          "a message decrypts once");
    /* the key of generation 0, the leaf's secret and the root are gone */
    if (msv_mls_secret_tree_leaf(enc, devs[b].m->st.n_leaves, devs[a].m->me, leaf) != MSV_OK ||
        msv_mls_ratchet_key(suite, leaf, MSV_MLS_RATCHET_APPLICATION, 0, key, nonce) != MSV_OK)
        fatal("derive");
    CHECK(!state_holds(devs[b].m, key, nk), "the used message key is erased");
    CHECK(!state_holds(devs[b].m, leaf, MSV_MLS_NH), "the sender's leaf secret is erased");
    CHECK(!state_holds(devs[b].m, enc, MSV_MLS_NH), "the tree's root secret is erased");
    CHECK(!devs[b].m->st.has[root], "the root node holds nothing");
    /* out of order: three before two, then two once */
    CHECK(msv_mls_member_unprotect(devs[b].m, m3, l3, &pt, &pt_len, &sender) == MSV_OK &&
              pt_len == 5 && memcmp(pt, "three", 5) == 0,
          "third message before the second");
    msv_secret_free(pt, pt_len);
    if (msv_mls_ratchet_key(suite, leaf, MSV_MLS_RATCHET_APPLICATION, 1, key, nonce) != MSV_OK)
        fatal("derive");
    CHECK(state_holds(devs[b].m, key, nk), "a skipped key is kept");
    CHECK(msv_mls_member_unprotect(devs[b].m, m2, l2, &pt, &pt_len, &sender) == MSV_OK &&
              pt_len == 3 && memcmp(pt, "two", 3) == 0,
          "the second, late");
    msv_secret_free(pt, pt_len);
    CHECK(!state_holds(devs[b].m, key, nk), "the skipped key is erased once used");
    CHECK(msv_mls_member_unprotect(devs[b].m, m2, l2, &pt, &pt_len, &sender) == MSV_ERR_AUTH,
          "the late one decrypts once");
    if (msv_mls_ratchet_key(suite, leaf, MSV_MLS_RATCHET_APPLICATION, 2, key, nonce) != MSV_OK)
        fatal("derive");
    CHECK(!state_holds(devs[b].m, key, nk), "the third key is erased");
    /* the sender keeps none of its own used keys either */
    CHECK(!state_holds(devs[a].m, key, nk), "the sender's used key is erased");
    /* a message more than MSV_MLS_FORWARD_MAX generations ahead: refused, and the ones before
     * it still read (a sender cannot make a reader hash without bound) */
    {
        uint8_t *far = NULL, *next = NULL;
        size_t far_len = 0, next_len = 0;

        for (unsigned i = 0; i <= MSV_MLS_FORWARD_MAX + 1; i++) {
            uint8_t *msg = NULL;
            size_t len = 0;

            if (msv_mls_member_protect(devs[a].m, (const uint8_t *)"x", 1, &msg, &len) != MSV_OK)
                fatal("protect");
            if (i == 0) {
                next = msg;
                next_len = len;
            } else {
                free(far);
                far = msg;
                far_len = len;
            }
        }
        CHECK(msv_mls_member_unprotect(devs[b].m, far, far_len, &pt, &pt_len, &sender) ==
                  MSV_ERR_AUTH,
              "a message too far ahead refused");
        CHECK(msv_mls_member_unprotect(devs[b].m, next, next_len, &pt, &pt_len, &sender) == MSV_OK,
              "the next message still read");
        msv_secret_free(pt, pt_len);
        free(far);
        free(next);
    }
    /* a member cannot read its own message back, nor one of another epoch */
    CHECK(msv_mls_member_unprotect(devs[a].m, m1, l1, &pt, &pt_len, &sender) != MSV_OK,
          "own message refused");
    sodium_memzero(enc, sizeof(enc));
    sodium_memzero(leaf, sizeof(leaf));
    free(m1);
    free(m2);
    free(m3);
    /* the others are now too far behind a's ratchet for this epoch: a new one */
    memset(&r, 0, sizeof(r));
    r.committer = a;
    play(&r);
}

/* A Welcome to a group of 60: its GroupInfo, and so the context its secrets are encrypted
 * under, is far larger than a few members' (it failed with a 4 KiB bound on HPKE's info). */
static void test_large_welcome(void)
{
    struct round r;
    size_t creator = new_device();

    if (msv_mls_member_create(suite, (const uint8_t *)"sixty", 5, devs[creator].seed,
                              (const uint8_t *)devs[creator].id, strlen(devs[creator].id), NOW - 60,
                              NOW + 86400, &devs[creator].m) != MSV_OK)
        fatal("create");
    memset(&r, 0, sizeof(r));
    r.committer = creator;
    /* play() takes 4 adds at most per round: 59 in rounds, then everyone talks */
    while (members() < 60) {
        memset(&r, 0, sizeof(r));
        r.committer = creator;
        for (size_t i = 0; i < 4 && members() + r.n_adds < 60; i++)
            r.adds[r.n_adds++] = new_device();
        play(&r);
    }
    CHECK(members() == 60, "a group of sixty");
    talk();
    free_devices();
}

/* A device joins by an external commit from a GroupInfo: taken only by members that accept
 * external commits; then everyone agrees and talks. */
static void test_external_join(void)
{
    size_t a = nth_member(0), b = nth_member(1), d = new_device(), before = members();
    uint8_t *gi = NULL, *commit = NULL, *bad;
    size_t gi_len = 0, commit_len = 0;
    struct msv_mls_member *m = NULL;

    if (msv_mls_member_group_info(devs[a].m, &gi, &gi_len) != MSV_OK)
        fatal("group info");
    /* a GroupInfo changed anywhere: no join */
    bad = malloc(gi_len);
    for (size_t i = 0; i < gi_len; i += 13) {
        memcpy(bad, gi, gi_len);
        bad[i] ^= 0x04;
        CHECK(msv_mls_member_join_external(suite, bad, gi_len, devs[d].seed,
                                           (const uint8_t *)devs[d].id, strlen(devs[d].id), &commit,
                                           &commit_len, &m) != MSV_OK &&
                  m == NULL,
              "a changed GroupInfo refused");
    }
    free(bad);
    if (msv_mls_member_join_external(suite, gi, gi_len, devs[d].seed, (const uint8_t *)devs[d].id,
                                     strlen(devs[d].id), &commit, &commit_len,
                                     &devs[d].m) != MSV_OK)
        fatal("external join");
    /* refused by a member that does not take external commits, with nothing changed */
    expect_unchanged_commit(b, commit, commit_len, "an external commit needs consent");
    for (size_t i = 0; i < n_devs; i++) {
        if (!in_group(i) || i == d)
            continue;
        msv_mls_member_accept_external(devs[i].m, 1);
        CHECK(msv_mls_member_commit(devs[i].m, NULL, NULL, 0, commit, commit_len) == MSV_OK,
              "an external commit followed");
    }
    check_agreement("agree after an external join");
    CHECK(members() == before + 1 && devs[d].m->epoch == devs[a].m->epoch,
          "the new member is one of the group");
    talk();
    free(gi);
    free(commit);
}

/*
 * A hostile committer, made by hand: a commit adding the KeyPackage kp by
 * value (or, with kp NULL, removing leaf remove; with remove UINT32_MAX
 * too, nothing at all), without a path, signed,
 * with the right confirmation and membership tags, so that only the
 * receiver's checks of what it applies stand between it and the group.
 */
static uint8_t *hostile_commit(struct msv_mls_member *cm, const uint8_t *kp, size_t kp_len,
                               uint32_t remove, size_t *out_len)
{
    static const uint8_t zero[MSV_MLS_NH];
    struct msv_mls_epoch ep;
    struct msv_mls_content c;
    struct msv_mls_epoch_secrets ns;
    struct msv_mls_tree t2;
    struct msv_mls_leaf leaf;
    struct msv_reader r;
    struct msv_buf w;
    uint8_t root[MSV_MLS_NH], root2[MSV_MLS_NH], sig[MSV_MLS_SIG_LEN], confirmed[MSV_MLS_NH];
    uint8_t tag[MSV_MLS_NH] = {0}, *body = NULL, *ac = NULL, *in = NULL, *gc = NULL, *msg = NULL;
    size_t body_len = 0, ac_len = 0, in_len = 0, gc_len = 0, mark;
    uint32_t index;

    msv_buf_init(&w, 1u << 20);
    mark = msv_mls_vec_begin(&w);
    if (kp != NULL || remove != UINT32_MAX) {
        (void)msv_buf_put_u8(&w, 1);
        (void)msv_buf_put_u16be(&w, kp != NULL ? 1 : 3);
    }
    if (kp != NULL)
        (void)msv_buf_put(&w, kp + 4, kp_len - 4);
    else if (remove != UINT32_MAX)
        (void)msv_buf_put_u32be(&w, remove);
    msv_mls_vec_end(&w, mark);
    (void)msv_buf_put_u8(&w, 0); /* no path */
    if (msv_buf_finish(&w, &body, &body_len) != MSV_OK ||
        msv_mls_tree_hash(&cm->tree, msv_mls_tree_root(cm->tree.n_leaves), root) != MSV_OK)
        fatal("hostile body");
    memset(&ep, 0, sizeof(ep));
    ep.gc = (struct msv_mls_group_context){cm->suite, cm->group_id, cm->group_id_len, cm->epoch,
                                           root,      MSV_MLS_NH,   cm->cth,          cm->cth_len,
                                           cm->ext,   cm->ext_len};
    ep.n_leaves = cm->tree.n_leaves;
    ep.membership_key = cm->s.membership_key;
    memset(&c, 0, sizeof(c));
    c.leaf_index = cm->me;
    c.content_type = MSV_MLS_CONTENT_COMMIT;
    c.body = body;
    c.body_len = body_len;
    c.confirmation_tag = tag;
    c.confirmation_tag_len = MSV_MLS_NH;
    if (msv_mls_content_sign(&ep, MSV_MLS_WIRE_PUBLIC, &c, cm->sig_seed, sig) != MSV_OK ||
        msv_mls_authenticated_content(&ep, MSV_MLS_WIRE_PUBLIC, &c, sig, sizeof(sig), &ac,
                                      &ac_len) != MSV_OK)
        fatal("hostile sign");
    msv_buf_init(&w, 1u << 20);
    (void)msv_buf_put(&w, cm->interim, MSV_MLS_NH);
    (void)msv_buf_put(&w, ac, ac_len - (MSV_MLS_NH + 1));
    msv_reader_init(&r, kp != NULL ? kp + 4 : NULL, kp != NULL ? kp_len - 4 : 0);
    if (msv_buf_finish(&w, &in, &in_len) != MSV_OK ||
        msv_mls_hash(in, in_len, confirmed) != MSV_OK ||
        msv_mls_tree_copy(&cm->tree, &t2) != MSV_OK ||
        (kp != NULL ? msv_mls_read_key_package(&r, &leaf) != MSV_OK ||
                          msv_mls_tree_add(&t2, &leaf, &index) != MSV_OK
                    : remove != UINT32_MAX && msv_mls_tree_remove(&t2, remove) != MSV_OK) ||
        msv_mls_tree_hash(&t2, msv_mls_tree_root(t2.n_leaves), root2) != MSV_OK)
        fatal("hostile transcript");
    {
        struct msv_mls_group_context gc2 = {
            cm->suite,  cm->group_id, cm->group_id_len, cm->epoch + 1, root2,
            MSV_MLS_NH, confirmed,    MSV_MLS_NH,       cm->ext,       cm->ext_len};

        if (msv_mls_group_context_encode(&gc2, &gc, &gc_len) != MSV_OK ||
            msv_mls_key_schedule(cm->s.init, zero, zero, gc, gc_len, &ns) != MSV_OK ||
            msv_mls_mac(ns.confirmation_key, MSV_MLS_NH, confirmed, MSV_MLS_NH, tag) != MSV_OK ||
            msv_mls_public_protect(&ep, &c, cm->sig_seed, &msg, out_len) != MSV_OK)
            fatal("hostile commit");
    }
    msv_mls_tree_free(&t2);
    free(body);
    free(ac);
    free(in);
    free(gc);
    return msg;
}

/* What a member applies from a hostile committer: a KeyPackage that does not validate, or whose
 * keys a member has, is refused with nothing changed; a good one (the control) is taken. Each
 * case goes to another member, so that each stands on its own. */
static void test_hostile_committer(void)
{
    size_t a = nth_member(0), d = new_device(), e = new_device();
    size_t len, caps = 42 + 32 + 1 + 32 + 2 + 1 + strlen(devs[d].id);
    uint8_t *kp = malloc(devs[d].kp_len), *msg;

    /* a KeyPackage signature broken */
    memcpy(kp, devs[d].kp, devs[d].kp_len);
    kp[devs[d].kp_len - 3] ^= 1;
    msg = hostile_commit(devs[a].m, kp, devs[d].kp_len, 0, &len);
    expect_unchanged_commit(nth_member(1), msg, len,
                            "a hostile add of a badly signed KeyPackage refused");
    free(msg);
    /* capabilities without the group's suite, signed again */
    memcpy(kp, devs[d].kp, devs[d].kp_len);
    kp[caps + 5] = 7;
    kp[caps + 7] = 7;
    resign(kp, devs[d].kp_len, devs[d].seed);
    msg = hostile_commit(devs[a].m, kp, devs[d].kp_len, 0, &len);
    expect_unchanged_commit(nth_member(2), msg, len,
                            "a hostile add of an incapable KeyPackage refused");
    free(msg);
    /* the KeyPackage a member joined with: its keys are in the tree already */
    msg = hostile_commit(devs[a].m, devs[nth_member(1)].kp, devs[nth_member(1)].kp_len, 0, &len);
    expect_unchanged_commit(nth_member(3), msg, len,
                            "a hostile add of keys already in the tree refused");
    free(msg);
    /*
     * a removal without a path: the next epoch would come from the previous one's init secret,
     * which the removed member holds too, so it could read on
     */
    msg = hostile_commit(devs[a].m, NULL, 0, devs[nth_member(2)].m->me, &len);
    expect_unchanged_commit(nth_member(3), msg, len, "a removal without a path refused");
    free(msg);
    msg = hostile_commit(devs[a].m, NULL, 0, UINT32_MAX, &len);
    expect_unchanged_commit(nth_member(3), msg, len, "an empty commit without a path refused");
    free(msg);
    /* the control: the same made with a good KeyPackage is taken */
    msg = hostile_commit(devs[a].m, devs[e].kp, devs[e].kp_len, 0, &len);
    CHECK(msv_mls_member_commit(devs[nth_member(4)].m, NULL, NULL, 0, msg, len) == MSV_OK,
          "the hand-made commit with a good KeyPackage is taken");
    free(msg);
    free(kp);
}

static void run_suite(enum msv_mls_suite s)
{
    struct round r;
    size_t creator;
    unsigned epochs = 0;

    suite = s;
    test_key_packages();
    creator = new_device();
    if (msv_mls_member_create(suite, (const uint8_t *)"group of five", 13, devs[creator].seed,
                              (const uint8_t *)devs[creator].id, strlen(devs[creator].id), NOW - 60,
                              NOW + 86400, &devs[creator].m) != MSV_OK)
        fatal("create");
    talk(); /* alone: nobody to read, but sending works */
    memset(&r, 0, sizeof(r));
    r.committer = creator;
    for (int i = 0; i < 4; i++)
        r.adds[r.n_adds++] = new_device();
    play(&r);
    CHECK(members() == 5, "a group of five");
    talk();
    test_path_unkeyed(creator);
    test_key_order();
    for (unsigned e = 0; e < 24; e++) {
        epoch_step(e);
        epochs++;
        if (e % 3 == 0)
            talk();
    }
    CHECK(epochs >= 20 && devs[nth_member(0)].m->epoch >= 21, "20 epochs and more");
    printf("suite %d: %llu epochs, %zu devices used, %zu members at the end\n", (int)suite,
           (unsigned long long)devs[nth_member(0)].m->epoch, n_devs, members());
    test_no_path();
    test_garbage_beside_own_proposal();
    test_leave_proposal();
    test_refusals();
    test_external_join();
    test_forward_secrecy();
    talk();
    test_hostile_committer(); /* last: the group is not whole after it */
    free_devices();
    test_large_welcome();
}

int main(void)
{
    if (msv_init() != MSV_OK)
        return 2;
    run_suite(MSV_MLS_SUITE_X25519_AES128GCM);
    run_suite(MSV_MLS_SUITE_X25519_CHACHA20POLY1305);
    if (failures != 0)
        fprintf(stderr, "%d checks failed\n", failures);
    return failures == 0 ? 0 : 1;
}
