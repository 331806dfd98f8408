/*
 * Resumption PSKs across groups (RFC 9420 8.6, 11.2, 11.3), for cipher suites 1 and 3:
 *
 *   - subgroup branching: a member makes a new group of some of the old group's members, its
 *     first commit naming the old epoch's resumption PSK (usage branch); each joins from the
 *     Welcome with its state of the old group, and all agree and talk. Refused: a KeyPackage of
 *     someone outside the old group (by the maker), a joiner without the old group (the PSK is
 *     not found), and a branch naming a member the joiner's old group no longer has;
 *   - reinitialization: a commit with a ReInit (the only proposal) closes the group for every
 *     member (nothing more is sent or committed in it, and its state file keeps the ReInit);
 *     another member makes the new group with the ReInit's id, suite and extensions (usage
 *     reinit); the others join with their closed state, saved and loaded first by one of them,
 *     and all agree and talk in the new suite. Refused: a ReInit beside another proposal, a
 *     reinit of a group that committed none, and a reinit Welcome to a member whose old group
 *     is not closed.
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
#define N 5

struct device {
    uint8_t seed[32];
    char id[24];
    uint8_t init_sk[32], leaf_sk[32];
    uint8_t *kp;
    size_t kp_len;
    struct msv_mls_member *m;   /* the old group */
    struct msv_mls_member *sub; /* the branched or reinitialized one */
};

static struct device devs[N];

/* A fresh KeyPackage of device i in suite s (its identity and signature key stay). */
static void fresh_key_package(size_t i, enum msv_mls_suite s)
{
    struct device *d = &devs[i];

    free(d->kp);
    d->kp = NULL;
    if (msv_mls_key_package_make(s, d->seed, (const uint8_t *)d->id, strlen(d->id), NOW - 60,
                                 NOW + 86400, d->init_sk, d->leaf_sk, &d->kp, &d->kp_len) != MSV_OK)
        fatal("key package");
}

/* Fresh KeyPackages in suite s of devices 0 to 3, those but device but's into kps (three). */
static void fresh_others(size_t but, enum msv_mls_suite s, const uint8_t **kps, size_t *lens)
{
    size_t n = 0;

    for (size_t i = 0; i < 4; i++) {
        fresh_key_package(i, s);
        if (i == but)
            continue;
        kps[n] = devs[i].kp;
        lens[n++] = devs[i].kp_len;
    }
}

/* A copy of m, as its state file would give it again. */
static struct msv_mls_member *copy_of(const struct msv_mls_member *m)
{
    struct msv_mls_member *copy = NULL;
    uint8_t *bytes = NULL;
    size_t len = 0;

    if (msv_mls_member_save(m, &bytes, &len, NULL) != MSV_OK ||
        msv_mls_member_load(bytes, len, NULL, 0, &copy, NULL) != MSV_OK)
        fatal("copy");
    msv_secret_free(bytes, len);
    return copy;
}

static void free_all(void)
{
    for (size_t i = 0; i < N; i++) {
        msv_mls_member_free(devs[i].m);
        msv_mls_member_free(devs[i].sub);
        free(devs[i].kp);
        devs[i].m = devs[i].sub = NULL;
        devs[i].kp = NULL;
    }
}

/* A commit made by devs[by] in the old group and followed by each other member in it. */
static void commit_all(size_t by, const struct msv_mls_commit_spec *spec)
{
    uint8_t *commit = NULL, *welcome = NULL;
    size_t commit_len = 0, welcome_len = 0;
    const char *why = NULL;

    if (msv_mls_member_commit_make(devs[by].m, spec, &commit, &commit_len, &welcome, &welcome_len,
                                   &why) != MSV_OK) {
        fprintf(stderr, "commit: %s\n", why != NULL ? why : "");
        fatal("commit");
    }
    for (size_t i = 0; i < N; i++) {
        if (i != by && devs[i].m != NULL)
            CHECK(msv_mls_member_commit(devs[i].m, NULL, NULL, 0, commit, commit_len) == MSV_OK,
                  "a member follows the commit");
    }
    CHECK(msv_mls_member_commit_merge(devs[by].m) == MSV_OK, "merge");
    free(commit);
    free(welcome);
}

static uint8_t old_id[MSV_MLS_GROUP_ID_MAX];
static size_t old_id_len;

/* Devices 0 to 3 in a group made by device 0 (of id old_id), device 4 outside it. */
static void old_group(enum msv_mls_suite s)
{
    struct msv_mls_commit_spec spec;
    const uint8_t *kps[3];
    size_t lens[3];
    uint8_t *commit = NULL, *welcome = NULL;
    size_t commit_len = 0, welcome_len = 0;
    const char *why = NULL;

    for (size_t i = 0; i < N; i++) {
        memset(&devs[i], 0, sizeof(devs[i]));
        randombytes_buf(devs[i].seed, sizeof(devs[i].seed));
        snprintf(devs[i].id, sizeof(devs[i].id), "device-%zu", i);
        fresh_key_package(i, s);
    }
    if (old_id_len == 0) {
        memcpy(old_id, "old group", 9);
        old_id_len = 9;
    }
    if (msv_mls_member_create(s, old_id, old_id_len, devs[0].seed, (const uint8_t *)devs[0].id,
                              strlen(devs[0].id), NOW - 60, NOW + 86400, &devs[0].m) != MSV_OK)
        fatal("create");
    for (size_t i = 0; i < 3; i++) {
        kps[i] = devs[i + 1].kp;
        lens[i] = devs[i + 1].kp_len;
    }
    memset(&spec, 0, sizeof(spec));
    spec.key_packages = kps;
    spec.key_package_lens = lens;
    spec.n_adds = 3;
    spec.now = NOW;
    if (msv_mls_member_commit_make(devs[0].m, &spec, &commit, &commit_len, &welcome, &welcome_len,
                                   &why) != MSV_OK ||
        msv_mls_member_commit_merge(devs[0].m) != MSV_OK)
        fatal("commit");
    for (size_t i = 1; i < 4; i++) {
        if (msv_mls_member_join(s, welcome, welcome_len, devs[i].kp, devs[i].kp_len,
                                devs[i].init_sk, devs[i].leaf_sk, NULL, 0, NULL, 0,
                                &devs[i].m) != MSV_OK ||
            msv_mls_member_set_signer(devs[i].m, devs[i].seed) != MSV_OK)
            fatal("join");
    }
    free(commit);
    free(welcome);
    /* an epoch more, so that the PSKs named below are not the first */
    memset(&spec, 0, sizeof(spec));
    spec.now = NOW;
    commit_all(2, &spec);
}

/* Device i joins the new group from w with its old group's state (or none). */
static msv_err join_new(size_t i, enum msv_mls_suite s, const uint8_t *w, size_t w_len,
                        const struct msv_mls_member *old)
{
    const struct msv_mls_member *from[1] = {old};
    msv_err err = msv_mls_member_join_resuming(s, w, w_len, devs[i].kp, devs[i].kp_len,
                                               devs[i].init_sk, devs[i].leaf_sk, NULL, 0, from,
                                               old != NULL, NULL, 0, &devs[i].sub);

    if (err == MSV_OK && msv_mls_member_set_signer(devs[i].sub, devs[i].seed) != MSV_OK)
        err = MSV_ERR_AUTH;
    return err;
}

/* The members of the new group in list agree, and each reads a message from each other. */
static void agree_and_talk(const size_t *list, size_t n, const char *what)
{
    for (size_t a = 0; a < n; a++) {
        struct msv_mls_member *x = devs[list[a]].sub;
        uint8_t *msg = NULL;
        size_t len = 0;

        CHECK(x->epoch == 1, what);
        CHECK(memcmp(x->s.epoch_authenticator, devs[list[0]].sub->s.epoch_authenticator,
                     MSV_MLS_NH) == 0,
              what);
        if (msv_mls_member_protect(x, (const uint8_t *)devs[list[a]].id, strlen(devs[list[a]].id),
                                   &msg, &len) != MSV_OK)
            fatal("protect");
        for (size_t b = 0; b < n; b++) {
            uint8_t *pt = NULL;
            size_t pt_len = 0;
            uint32_t sender = 0;

            if (b == a)
                continue;
            CHECK(msv_mls_member_unprotect(devs[list[b]].sub, msg, len, &pt, &pt_len, &sender) ==
                          MSV_OK &&
                      pt_len == strlen(devs[list[a]].id) &&
                      memcmp(pt, devs[list[a]].id, pt_len) == 0,
                  what);
            free(pt);
        }
        free(msg);
    }
}

static void test_branch(enum msv_mls_suite s)
{
    const uint8_t *kps[3];
    size_t lens[3], list[3] = {0, 1, 3};
    uint8_t *w = NULL, *outsider_w = NULL;
    size_t w_len = 0, outsider_len = 0;
    struct msv_mls_member *none = NULL;
    const char *why = "";
    uint64_t old_epoch;

    old_group(s);
    old_epoch = devs[0].m->epoch;
    /* a KeyPackage of device 4, who is not in the old group: the maker refuses */
    fresh_key_package(4, s);
    kps[0] = devs[4].kp;
    lens[0] = devs[4].kp_len;
    CHECK(msv_mls_member_branch(devs[0].m, (const uint8_t *)"sub", 3, kps, lens, 1, NOW,
                                NOW + 86400, &none, &outsider_w, &outsider_len,
                                &why) == MSV_ERR_INVALID &&
              none == NULL && strstr(why, "not one of the old group") != NULL,
          "a branch with an outsider is refused by its maker");
    /* device 0 branches with devices 1 and 3 */
    fresh_key_package(1, s);
    fresh_key_package(3, s);
    kps[0] = devs[1].kp;
    lens[0] = devs[1].kp_len;
    kps[1] = devs[3].kp;
    lens[1] = devs[3].kp_len;
    {
        msv_err e = msv_mls_member_branch(devs[0].m, (const uint8_t *)"sub", 3, kps, lens, 2, NOW,
                                          NOW + 86400, &devs[0].sub, &w, &w_len, &why);
        if (e != MSV_OK)
            fprintf(stderr, "branch: %s (%s)\n", msv_strerror(e), why);
        CHECK(e == MSV_OK, "branch");
    }
    if (devs[0].sub == NULL)
        fatal(why);
    CHECK(devs[0].m->epoch == old_epoch, "the old group does not change");
    /* without the old group the PSK is not there */
    CHECK(join_new(1, s, w, w_len, NULL) == MSV_ERR_NOT_FOUND && devs[1].sub == NULL,
          "a joiner without the old group cannot join a branch");
    CHECK(join_new(1, s, w, w_len, devs[1].m) == MSV_OK, "device 1 joins the branch");
    /* device 3's old group moves on: device 3 removes device 1. A branch from before that
     * names a member device 3's group no longer has; with its state of then, it joins */
    {
        struct msv_mls_commit_spec spec;
        struct msv_mls_member *then = copy_of(devs[3].m);
        uint32_t leaf = devs[1].m->me;
        uint8_t *c = NULL, *cw = NULL;
        size_t c_len = 0, cw_len = 0;

        memset(&spec, 0, sizeof(spec));
        spec.removes = &leaf;
        spec.n_removes = 1;
        spec.now = NOW;
        CHECK(msv_mls_member_commit_make(devs[3].m, &spec, &c, &c_len, &cw, &cw_len, &why) ==
                      MSV_OK &&
                  msv_mls_member_commit_merge(devs[3].m) == MSV_OK,
              "device 3 removes device 1");
        CHECK(join_new(3, s, w, w_len, devs[3].m) == MSV_ERR_INVALID && devs[3].sub == NULL,
              "a branch naming a member the joiner's old group no longer has is refused");
        CHECK(join_new(3, s, w, w_len, then) == MSV_OK, "device 3 joins the branch");
        msv_mls_member_free(then);
        free(c);
        free(cw);
    }
    if (devs[1].sub != NULL && devs[3].sub != NULL)
        agree_and_talk(list, 3, "the branch's members agree and talk");
    free(w);
    free_all();
}

static void test_reinit(enum msv_mls_suite s, enum msv_mls_suite next)
{
    struct msv_mls_commit_spec spec;
    const uint8_t *kps[3];
    size_t lens[3], list[4] = {1, 0, 2, 3};
    uint8_t *w = NULL, *bytes = NULL, *msg = NULL, *c = NULL, *cw = NULL;
    size_t w_len = 0, len = 0, msg_len = 0, c_len = 0, cw_len = 0;
    struct msv_mls_member *before = NULL, *loaded = NULL, *none = NULL;
    const char *why = "";

    old_group(s);
    /* no ReInit yet: nothing to reinitialize */
    CHECK(msv_mls_member_reinit(devs[1].m, kps, lens, 0, NOW, NOW + 86400, &none, &w, &w_len,
                                &why) == MSV_ERR_INVALID &&
              none == NULL,
          "a reinit without a ReInit committed is refused");
    /* a ReInit beside another proposal is refused */
    memset(&spec, 0, sizeof(spec));
    spec.now = NOW;
    spec.reinit = 1;
    spec.reinit_group_id = (const uint8_t *)"new group";
    spec.reinit_group_id_len = 9;
    spec.reinit_suite = next;
    {
        uint32_t leaf = devs[3].m->me;

        spec.removes = &leaf;
        spec.n_removes = 1;
        CHECK(msv_mls_member_commit_make(devs[0].m, &spec, &c, &c_len, &cw, &cw_len, &why) ==
                      MSV_ERR_INVALID &&
                  c == NULL,
              "a ReInit beside a Remove is refused");
        spec.removes = NULL;
        spec.n_removes = 0;
    }
    /* device 3 keeps its state of before the ReInit */
    before = copy_of(devs[3].m);
    commit_all(0, &spec);
    for (size_t i = 0; i < 4; i++) {
        CHECK(devs[i].m->reinit && devs[i].m->reinit_suite == (uint16_t)next &&
                  devs[i].m->reinit_group_id_len == 9,
              "every member notes the ReInit");
        CHECK(msv_mls_member_protect(devs[i].m, (const uint8_t *)"x", 1, &msg, &msg_len) ==
                      MSV_ERR_INVALID &&
                  msg == NULL,
              "nothing more is sent in a reinitialized group");
    }
    memset(&spec, 0, sizeof(spec));
    spec.now = NOW;
    CHECK(msv_mls_member_commit_make(devs[2].m, &spec, &c, &c_len, &cw, &cw_len, &why) ==
                  MSV_ERR_INVALID &&
              c == NULL,
          "nothing more is committed in a reinitialized group");
    /* device 2's closed state saved and loaded: the ReInit stays */
    if (msv_mls_member_save(devs[2].m, &bytes, &len, NULL) != MSV_OK)
        fatal("save");
    CHECK(len > 8 && bytes[6] == 0 && bytes[7] == MSV_MLS_STATE_VERSION_REINIT,
          "a closed group's state is version 2");
    CHECK(msv_mls_member_load(bytes, len, NULL, 0, &loaded, &why) == MSV_OK && loaded->reinit &&
              loaded->reinit_suite == (uint16_t)next,
          "the ReInit is loaded again");
    /* a version-2 state cut before its ReInit is refused */
    {
        struct msv_mls_member *cut = NULL;

        CHECK(msv_mls_member_load(bytes, len - 3, NULL, 0, &cut, &why) == MSV_ERR_PARSE &&
                  cut == NULL,
              "a state cut in its ReInit is refused");
    }
    free(bytes);
    msv_mls_member_free(devs[2].m);
    devs[2].m = loaded;
    /* device 1 (not the ReInit's committer) makes the new group in the next suite */
    fresh_others(1, next, kps, lens);
    CHECK(msv_mls_member_reinit(devs[1].m, kps, lens, 3, NOW, NOW + 86400, &devs[1].sub, &w, &w_len,
                                &why) == MSV_OK,
          "reinit");
    if (devs[1].sub == NULL)
        fatal(why);
    CHECK(devs[1].sub->suite == next && devs[1].sub->group_id_len == 9 &&
              memcmp(devs[1].sub->group_id, "new group", 9) == 0,
          "the new group has the ReInit's id and suite");
    /* a maker that lies: a reinit Welcome of another group id than the ReInit's, and one from
     * a group whose members committed no ReInit (the maker's copy says one was) */
    {
        struct msv_mls_member *liar = NULL, *made = NULL;
        uint8_t *lw = NULL;
        size_t lw_len = 0;

        liar = copy_of(devs[1].m);
        liar->reinit_group_id[0] ^= 1;
        if (msv_mls_member_reinit(liar, kps, lens, 3, NOW, NOW + 86400, &made, &lw, &lw_len,
                                  &why) != MSV_OK)
            fatal(why);
        CHECK(join_new(0, next, lw, lw_len, devs[0].m) == MSV_ERR_INVALID && devs[0].sub == NULL,
              "a reinit Welcome of another group id than the ReInit's is refused");
        msv_mls_member_free(made);
        msv_mls_member_free(liar);
        free(lw);
        made = NULL;
        lw = NULL;
        /* the group before the ReInit, its copy told it had one */
        liar = copy_of(before);
        liar->reinit = 1;
        liar->reinit_suite = (uint16_t)next;
        memcpy(liar->reinit_group_id, "new group", 9);
        liar->reinit_group_id_len = 9;
        /* (device 3's copy makes it: devices 0, 1 and 2 are added) */
        {
            const uint8_t *others[3] = {devs[0].kp, devs[1].kp, devs[2].kp};
            size_t others_lens[3] = {devs[0].kp_len, devs[1].kp_len, devs[2].kp_len};

            if (msv_mls_member_reinit(liar, others, others_lens, 3, NOW, NOW + 86400, &made, &lw,
                                      &lw_len, &why) != MSV_OK)
                fatal(why);
        }
        {
            struct msv_mls_member *then = copy_of(before);

            /* device 0 with the old group as it was before the ReInit (device 3's copy of it:
             * the same tree and resumption PSKs) */
            CHECK(join_new(0, next, lw, lw_len, then) == MSV_ERR_INVALID && devs[0].sub == NULL,
                  "a reinit Welcome from a group that committed no ReInit is refused");
            msv_mls_member_free(then);
        }
        msv_mls_member_free(made);
        msv_mls_member_free(liar);
        free(lw);
    }
    /* a member whose old group is not closed (its state of before the ReInit) is refused */
    CHECK(join_new(3, next, w, w_len, before) != MSV_OK && devs[3].sub == NULL,
          "a reinit Welcome to a member that did not see the ReInit is refused");
    CHECK(join_new(0, next, w, w_len, devs[0].m) == MSV_OK, "device 0 joins the new group");
    CHECK(join_new(2, next, w, w_len, devs[2].m) == MSV_OK, "device 2 joins with its loaded state");
    CHECK(join_new(3, next, w, w_len, devs[3].m) == MSV_OK, "device 3 joins the new group");
    if (devs[0].sub != NULL && devs[2].sub != NULL && devs[3].sub != NULL)
        agree_and_talk(list, 4, "the new group's members agree and talk");
    /* the old group takes no commit any more */
    memset(&spec, 0, sizeof(spec));
    spec.now = NOW;
    CHECK(msv_mls_member_commit_make(before, &spec, &c, &c_len, &cw, &cw_len, &why) == MSV_OK,
          "a commit made from a copy of before the ReInit");
    CHECK(msv_mls_member_commit(devs[3].m, NULL, NULL, 0, c, c_len) == MSV_ERR_INVALID,
          "a reinitialized group takes no commit");
    free(c);
    free(cw);
    msv_mls_member_free(before);
    free(w);
    free_all();
}

/*
 * Group ids of 255 bytes (the most), old and new: the PSK ids in the GroupSecrets grow with
 * them (before, the GroupSecrets had room for ids of 16 bytes at most, and a ReInit of a group
 * of a longer id closed it for good).
 */
static void test_long_ids(enum msv_mls_suite s)
{
    struct msv_mls_commit_spec spec;
    uint8_t new_id[MSV_MLS_GROUP_ID_MAX], *w = NULL;
    const uint8_t *kps[3];
    size_t lens[3], w_len = 0, list[4] = {1, 0, 2, 3};
    const char *why = "";

    memset(old_id, 'o', sizeof(old_id));
    old_id_len = sizeof(old_id);
    memset(new_id, 'n', sizeof(new_id));
    old_group(s);
    fresh_key_package(1, s);
    kps[0] = devs[1].kp;
    lens[0] = devs[1].kp_len;
    CHECK(msv_mls_member_branch(devs[0].m, new_id, sizeof(new_id), kps, lens, 1, NOW, NOW + 86400,
                                &devs[0].sub, &w, &w_len, &why) == MSV_OK,
          "a branch of a group of a 255-byte id, itself of one");
    if (w != NULL)
        CHECK(join_new(1, s, w, w_len, devs[1].m) == MSV_OK, "joined");
    free(w);
    w = NULL;
    msv_mls_member_free(devs[0].sub);
    msv_mls_member_free(devs[1].sub);
    devs[0].sub = devs[1].sub = NULL;
    memset(&spec, 0, sizeof(spec));
    spec.now = NOW;
    spec.reinit = 1;
    spec.reinit_group_id = new_id;
    spec.reinit_group_id_len = sizeof(new_id);
    spec.reinit_suite = s;
    commit_all(0, &spec);
    fresh_others(1, s, kps, lens);
    CHECK(msv_mls_member_reinit(devs[1].m, kps, lens, 3, NOW, NOW + 86400, &devs[1].sub, &w, &w_len,
                                &why) == MSV_OK,
          "a reinit of a group of a 255-byte id");
    if (w != NULL) {
        CHECK(join_new(0, s, w, w_len, devs[0].m) == MSV_OK &&
                  join_new(2, s, w, w_len, devs[2].m) == MSV_OK &&
                  join_new(3, s, w, w_len, devs[3].m) == MSV_OK,
              "the others join it");
        if (devs[0].sub != NULL && devs[2].sub != NULL && devs[3].sub != NULL)
            agree_and_talk(list, 4, "the new group of a 255-byte id agrees and talks");
    }
    free(w);
    free_all();
    old_id_len = 0;
}

/*
 * A member is its identity and the signature key of its leaf: a KeyPackage that takes a
 * member's name with another key is no member (refused by the maker; by each joiner from a maker
 * whose copy of the old group lies); a reinitialized group has every member of the old one.
 */
static void test_members_are_keys(enum msv_mls_suite s)
{
    struct msv_mls_member *liar = NULL, *made = NULL, *none = NULL;
    uint8_t seed[32], init_sk[32], leaf_sk[32], *forged = NULL, *w = NULL, pk[32], sk[64];
    size_t forged_len = 0, w_len = 0;
    const uint8_t *kps[3];
    size_t lens[3];
    const char *why = "";
    struct msv_mls_commit_spec spec;

    old_group(s);
    /* device 3's name with a key of its own */
    randombytes_buf(seed, sizeof(seed));
    if (msv_mls_key_package_make(s, seed, (const uint8_t *)devs[3].id, strlen(devs[3].id), NOW - 60,
                                 NOW + 86400, init_sk, leaf_sk, &forged, &forged_len) != MSV_OK)
        fatal("key package");
    kps[0] = forged;
    lens[0] = forged_len;
    CHECK(msv_mls_member_branch(devs[0].m, (const uint8_t *)"sub", 3, kps, lens, 1, NOW,
                                NOW + 86400, &none, &w, &w_len, &why) == MSV_ERR_INVALID &&
              none == NULL && strstr(why, "signature key") != NULL,
          "a member's name with another key is refused by the maker");
    /* a maker whose copy of the group gives device 3's leaf the forged key: device 1 refuses */
    liar = copy_of(devs[0].m);
    if (crypto_sign_seed_keypair(pk, sk, seed) != 0)
        fatal("key");
    liar->tree.nodes[2 * devs[3].m->me].leaf.signature_key = pk;
    if (msv_mls_member_branch(liar, (const uint8_t *)"sub", 3, kps, lens, 1, NOW, NOW + 86400,
                              &made, &w, &w_len, &why) != MSV_OK)
        fatal(why);
    /* who holds the forged KeyPackage joins with a state of the group (device 1's stands for
     * a member's): the new group names device 3 by another key than the group's, refused */
    {
        const struct msv_mls_member *from[1] = {devs[1].m};
        struct msv_mls_member *j = NULL;

        CHECK(msv_mls_member_join_resuming(s, w, w_len, forged, forged_len, init_sk, leaf_sk, NULL,
                                           0, from, 1, NULL, 0, &j) == MSV_ERR_INVALID &&
                  j == NULL,
              "a branch naming a member's name with another key is refused by a joiner");
    }
    msv_mls_member_free(made);
    msv_mls_member_free(liar);
    made = liar = NULL;
    free(w);
    w = NULL;
    /* a reinitialization that leaves device 3 out: refused by its maker, and by a joiner from
     * a maker whose copy of the group has no device 3 */
    memset(&spec, 0, sizeof(spec));
    spec.now = NOW;
    spec.reinit = 1;
    spec.reinit_group_id = (const uint8_t *)"again";
    spec.reinit_group_id_len = 5;
    spec.reinit_suite = s;
    commit_all(0, &spec);
    fresh_key_package(0, s);
    fresh_key_package(2, s);
    kps[0] = devs[0].kp;
    lens[0] = devs[0].kp_len;
    kps[1] = devs[2].kp;
    lens[1] = devs[2].kp_len;
    CHECK(msv_mls_member_reinit(devs[1].m, kps, lens, 2, NOW, NOW + 86400, &none, &w, &w_len,
                                &why) == MSV_ERR_INVALID &&
              none == NULL,
          "a reinitialization leaving a member out is refused by its maker");
    liar = copy_of(devs[1].m);
    liar->tree.nodes[2 * devs[3].m->me].type = 0;
    if (msv_mls_member_reinit(liar, kps, lens, 2, NOW, NOW + 86400, &made, &w, &w_len, &why) !=
        MSV_OK)
        fatal(why);
    CHECK(join_new(0, s, w, w_len, devs[0].m) == MSV_ERR_INVALID && devs[0].sub == NULL,
          "a reinitialization leaving a member out is refused by a joiner");
    /* a branch of the epoch a ReInit closed: that PSK is the reinitialization's */
    msv_mls_member_free(made);
    made = NULL;
    free(w);
    w = NULL;
    liar->tree.nodes[2 * devs[3].m->me].type = 1;
    liar->reinit = 0;
    kps[0] = devs[0].kp;
    lens[0] = devs[0].kp_len;
    if (msv_mls_member_branch(liar, (const uint8_t *)"sub", 3, kps, lens, 1, NOW, NOW + 86400,
                              &made, &w, &w_len, &why) != MSV_OK)
        fatal(why);
    CHECK(join_new(0, s, w, w_len, devs[0].m) == MSV_ERR_INVALID && devs[0].sub == NULL,
          "a branch of the epoch a ReInit closed is refused");
    msv_mls_member_free(made);
    msv_mls_member_free(liar);
    free(w);
    free(forged);
    sodium_memzero(sk, sizeof(sk));
    free_all();
}

int main(void)
{
    if (msv_init() != MSV_OK)
        return 2;
    test_branch(MSV_MLS_SUITE_X25519_AES128GCM);
    test_branch(MSV_MLS_SUITE_X25519_CHACHA20POLY1305);
    test_reinit(MSV_MLS_SUITE_X25519_AES128GCM, MSV_MLS_SUITE_X25519_CHACHA20POLY1305);
    test_reinit(MSV_MLS_SUITE_X25519_CHACHA20POLY1305, MSV_MLS_SUITE_X25519_AES128GCM);
    test_long_ids(MSV_MLS_SUITE_X25519_AES128GCM);
    test_members_are_keys(MSV_MLS_SUITE_X25519_AES128GCM);
    test_members_are_keys(MSV_MLS_SUITE_X25519_CHACHA20POLY1305);
    if (failures != 0)
        fprintf(stderr, "%d checks failed\n", failures);
    else
        printf("resumption: branches and reinitializations in suites 1 and 3 pass\n");
    return failures == 0 ? 0 : 1;
}
