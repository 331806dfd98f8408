/*
 * The sending side of MLS (src/mls/group.c, keypackage.c, secret_state.c)
 * and what it makes, on any bytes. Once per process our own code makes a
 * group: A creates it and adds B and C (Welcome w1), then A makes a commit
 * adding D (commit c2, Welcome w2) and an application message. Keys are
 * fresh per process, so the inputs other than KeyPackages are changes to
 * those honest messages: the rest of the input XORed over the message (and
 * what is longer appended); an input of one byte is the honest message. The
 * first byte chooses:
 *   0  a KeyPackage MLSMessage: validated; when it validates A makes a
 *      commit adding it (then discarded);
 *   1  w2 changed: D joins from it;
 *   2  c2 changed: B, joined afresh from w1, processes it; refused, it must
 *      leave B's epoch, authenticator and tree as they were;
 *   3  the application message changed: B, joined afresh, reads it; a second
 *      reading of what was read once must fail;
 *   4  a proposal (PublicMessage) as is: B, joined afresh, makes a commit
 *      with it by reference (then discarded);
 *   5  like 2 for c3, A's commit of c2's epoch sent as a PrivateMessage;
 *   6  like 2 for c4, an external commit of D from A's GroupInfo at c2's
 *      epoch, B accepting external commits;
 *   7  A's GroupInfo changed: D joins by an external commit from it;
 *   8  w5 changed, a Welcome to a group B branched from the group at w1's epoch
 *      with C: C joins from it with its state of that epoch (resumption PSK,
 *      usage branch, and the checks of RFC 9420 11.3);
 *   9  like 2 for c5, C's commit at w1's epoch of a ReInit alone; B must stay
 *      open if it is refused.
 */
#include <stdlib.h>
#include <string.h>

#include <sodium.h>

#include "common.h"
#include "mls/member.h"
#include "mls/mls.h"

#define NOW 1800000000u

struct device {
    uint8_t seed[32], init_sk[32], leaf_sk[32];
    uint8_t *kp;
    size_t kp_len;
};

static struct device dev[4]; /* A, B, C, D */
static struct msv_mls_member *alice;
static struct msv_mls_member *carol; /* C at w1's epoch */
static uint8_t *w1, *w2, *w5, *c2, *c3, *c4, *c5, *gi, *app;
static size_t w1_len, w2_len, w5_len, c2_len, c3_len, c4_len, c5_len, gi_len, app_len;

static void make_device(struct device *d, const char *id)
{
    randombytes_buf(d->seed, sizeof(d->seed));
    if (msv_mls_key_package_make(MSV_MLS_SUITE_X25519_AES128GCM, d->seed, (const uint8_t *)id,
                                 strlen(id), NOW - 60, NOW + 86400, d->init_sk, d->leaf_sk, &d->kp,
                                 &d->kp_len) != MSV_OK)
        abort();
}

/* A commits adding the KeyPackages kps; the commit and Welcome are the caller's. */
static msv_err add(const uint8_t *const *kps, const size_t *lens, size_t n, uint8_t **commit,
                   size_t *commit_len, uint8_t **welcome, size_t *welcome_len)
{
    struct msv_mls_commit_spec spec;

    memset(&spec, 0, sizeof(spec));
    spec.key_packages = kps;
    spec.key_package_lens = lens;
    spec.n_adds = n;
    spec.now = NOW;
    return msv_mls_member_commit_make(alice, &spec, commit, commit_len, welcome, welcome_len, NULL);
}

static void setup_resumption(void);

static void setup(void)
{
    static int ready;
    const uint8_t *kps[2];
    size_t lens[2];
    uint8_t *c1 = NULL;
    size_t c1_len = 0;

    if (ready)
        return;
    ready = 1;
    if (msv_init() != MSV_OK)
        abort();
    make_device(&dev[0], "a");
    make_device(&dev[1], "b");
    make_device(&dev[2], "c");
    make_device(&dev[3], "d");
    if (msv_mls_member_create(MSV_MLS_SUITE_X25519_AES128GCM, (const uint8_t *)"fuzz", 4,
                              dev[0].seed, (const uint8_t *)"a", 1, NOW - 60, NOW + 86400,
                              &alice) != MSV_OK)
        abort();
    kps[0] = dev[1].kp;
    kps[1] = dev[2].kp;
    lens[0] = dev[1].kp_len;
    lens[1] = dev[2].kp_len;
    if (add(kps, lens, 2, &c1, &c1_len, &w1, &w1_len) != MSV_OK ||
        msv_mls_member_commit_merge(alice) != MSV_OK)
        abort();
    free(c1);
    kps[0] = dev[3].kp;
    lens[0] = dev[3].kp_len;
    if (add(kps, lens, 1, &c2, &c2_len, &w2, &w2_len) != MSV_OK)
        abort();
    if (msv_mls_member_protect(alice, (const uint8_t *)"fuzz", 4, &app, &app_len) != MSV_OK)
        abort();
    {
        struct msv_mls_commit_spec spec;
        uint8_t *none = NULL;
        size_t none_len = 0;

        memset(&spec, 0, sizeof(spec));
        spec.private_message = 1;
        if (msv_mls_member_commit_make(alice, &spec, &c3, &c3_len, &none, &none_len, NULL) !=
            MSV_OK)
            abort();
    }
    {
        struct msv_mls_member *d = NULL;

        if (msv_mls_member_group_info(alice, &gi, &gi_len) != MSV_OK ||
            msv_mls_member_join_external(MSV_MLS_SUITE_X25519_AES128GCM, gi, gi_len, dev[3].seed,
                                         (const uint8_t *)"d", 1, &c4, &c4_len, &d) != MSV_OK)
            abort();
        msv_mls_member_free(d);
    }
    setup_resumption();
}

/* The honest message with the input XORed over it; the caller frees *out. */
static uint8_t *changed(const uint8_t *honest, size_t honest_len, const uint8_t *in, size_t n,
                        size_t *out_len)
{
    size_t len = n > honest_len ? n : honest_len;
    uint8_t *out = malloc(len + 1);

    if (out == NULL)
        abort();
    memset(out, 0, len);
    memcpy(out, honest, honest_len);
    for (size_t i = 0; i < n; i++)
        out[i] ^= in[i];
    *out_len = len;
    return out;
}

static struct msv_mls_member *bob(void);

/* B branches the group at w1's epoch with C (w5); C commits a ReInit there (c5). */
static void setup_resumption(void)
{
    struct msv_mls_member *b = bob(), *sub = NULL;
    struct msv_mls_commit_spec spec;
    const uint8_t *kps[1] = {dev[2].kp};
    size_t lens[1] = {dev[2].kp_len};
    uint8_t *none = NULL;
    size_t none_len = 0;

    if (msv_mls_member_join(MSV_MLS_SUITE_X25519_AES128GCM, w1, w1_len, dev[2].kp, dev[2].kp_len,
                            dev[2].init_sk, dev[2].leaf_sk, NULL, 0, NULL, 0, &carol) != MSV_OK ||
        msv_mls_member_set_signer(carol, dev[2].seed) != MSV_OK)
        abort();
    if (msv_mls_member_branch(b, (const uint8_t *)"branch", 6, kps, lens, 1, NOW, NOW + 86400, &sub,
                              &w5, &w5_len, NULL) != MSV_OK)
        abort();
    memset(&spec, 0, sizeof(spec));
    spec.now = NOW;
    spec.reinit = 1;
    spec.reinit_group_id = (const uint8_t *)"again";
    spec.reinit_group_id_len = 5;
    spec.reinit_suite = MSV_MLS_SUITE_X25519_CHACHA20POLY1305;
    if (msv_mls_member_commit_make(carol, &spec, &c5, &c5_len, &none, &none_len, NULL) != MSV_OK)
        abort();
    msv_mls_member_commit_discard(carol);
    msv_mls_member_free(sub);
    msv_mls_member_free(b);
}

static struct msv_mls_member *bob(void)
{
    struct msv_mls_member *m = NULL;

    if (msv_mls_member_join(MSV_MLS_SUITE_X25519_AES128GCM, w1, w1_len, dev[1].kp, dev[1].kp_len,
                            dev[1].init_sk, dev[1].leaf_sk, NULL, 0, NULL, 0, &m) != MSV_OK ||
        msv_mls_member_set_signer(m, dev[1].seed) != MSV_OK)
        abort();
    return m;
}

static void key_package(const uint8_t *in, size_t n)
{
    const uint8_t *kps[1] = {in};
    size_t lens[1] = {n};
    uint8_t *commit = NULL, *welcome = NULL;
    size_t commit_len = 0, welcome_len = 0;

    if (msv_mls_key_package_check(MSV_MLS_SUITE_X25519_AES128GCM, in, n, NOW, NULL, NULL) != MSV_OK)
        return;
    if (add(kps, lens, 1, &commit, &commit_len, &welcome, &welcome_len) == MSV_OK) {
        free(commit);
        free(welcome);
    }
}

static void welcome(const uint8_t *in, size_t n)
{
    size_t len;
    uint8_t *msg = changed(w2, w2_len, in, n, &len);
    struct msv_mls_member *m = NULL;

    if (msv_mls_member_join(MSV_MLS_SUITE_X25519_AES128GCM, msg, len, dev[3].kp, dev[3].kp_len,
                            dev[3].init_sk, dev[3].leaf_sk, NULL, 0, NULL, 0, &m) == MSV_OK)
        msv_mls_member_free(m);
    free(msg);
}

static void commit(const uint8_t *honest, size_t honest_len, const uint8_t *in, size_t n,
                   int external)
{
    size_t len;
    uint8_t *msg = changed(honest, honest_len, in, n, &len);
    struct msv_mls_member *m = bob();

    msv_mls_member_accept_external(m, external);
    uint8_t auth[MSV_MLS_NH];
    uint64_t epoch = m->epoch;

    memcpy(auth, m->s.epoch_authenticator, sizeof(auth));
    if (msv_mls_member_commit(m, NULL, NULL, 0, msg, len) != MSV_OK &&
        (m->epoch != epoch || memcmp(auth, m->s.epoch_authenticator, sizeof(auth)) != 0))
        abort(); /* a refused commit changed the member */
    msv_mls_member_free(m);
    free(msg);
}

static void application(const uint8_t *in, size_t n)
{
    size_t len, pt_len = 0;
    uint8_t *msg = changed(app, app_len, in, n, &len), *pt = NULL;
    struct msv_mls_member *m = bob();
    uint32_t sender;

    if (msv_mls_member_unprotect(m, msg, len, &pt, &pt_len, &sender) == MSV_OK) {
        msv_secret_free(pt, pt_len);
        pt = NULL;
        if (msv_mls_member_unprotect(m, msg, len, &pt, &pt_len, &sender) == MSV_OK)
            abort(); /* a message key used twice */
    }
    msv_mls_member_free(m);
    free(msg);
}

static void branch_welcome(const uint8_t *in, size_t n)
{
    const struct msv_mls_member *from[1] = {carol};
    size_t len;
    uint8_t *msg = changed(w5, w5_len, in, n, &len);
    struct msv_mls_member *m = NULL;

    if (msv_mls_member_join_resuming(MSV_MLS_SUITE_X25519_AES128GCM, msg, len, dev[2].kp,
                                     dev[2].kp_len, dev[2].init_sk, dev[2].leaf_sk, NULL, 0, from,
                                     1, NULL, 0, &m) == MSV_OK) {
        if (m->epoch != 1)
            abort(); /* a branch is joined at its epoch 1 */
        msv_mls_member_free(m);
    } else if (n == 0) {
        abort(); /* the honest Welcome is joined */
    }
    free(msg);
}

static void reinit_commit(const uint8_t *in, size_t n)
{
    size_t len;
    uint8_t *msg = changed(c5, c5_len, in, n, &len);
    struct msv_mls_member *m = bob();

    msv_err err = msv_mls_member_commit(m, NULL, NULL, 0, msg, len);

    if ((err != MSV_OK && m->reinit) || (n == 0 && (err != MSV_OK || !m->reinit)))
        abort(); /* a refused commit closed the group, or the honest one did not */
    msv_mls_member_free(m);
    free(msg);
}

static void external(const uint8_t *in, size_t n)
{
    size_t len, commit_len = 0;
    uint8_t *msg = changed(gi, gi_len, in, n, &len), *commit = NULL;
    struct msv_mls_member *m = NULL;

    if (msv_mls_member_join_external(MSV_MLS_SUITE_X25519_AES128GCM, msg, len, dev[3].seed,
                                     (const uint8_t *)"d", 1, &commit, &commit_len, &m) == MSV_OK) {
        msv_mls_member_free(m);
        free(commit);
    }
    free(msg);
}

static void proposal(const uint8_t *in, size_t n)
{
    const uint8_t *props[1] = {in};
    size_t lens[1] = {n};
    struct msv_mls_commit_spec spec;
    struct msv_mls_member *m = bob();
    uint8_t *commit = NULL, *wel = NULL;
    size_t commit_len = 0, wel_len = 0;

    memset(&spec, 0, sizeof(spec));
    spec.proposals = props;
    spec.proposal_lens = lens;
    spec.n_proposals = 1;
    spec.now = NOW;
    if (msv_mls_member_commit_make(m, &spec, &commit, &commit_len, &wel, &wel_len, NULL) ==
        MSV_OK) {
        free(commit);
        free(wel);
    }
    msv_mls_member_free(m);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1 || size > 65536)
        return 0;
    setup();
    switch (data[0] % 10) {
    case 0:
        key_package(data + 1, size - 1);
        break;
    case 1:
        welcome(data + 1, size - 1);
        break;
    case 2:
        commit(c2, c2_len, data + 1, size - 1, 0);
        break;
    case 5:
        commit(c3, c3_len, data + 1, size - 1, 0);
        break;
    case 6:
        commit(c4, c4_len, data + 1, size - 1, 1);
        break;
    case 7:
        external(data + 1, size - 1);
        break;
    case 3:
        application(data + 1, size - 1);
        break;
    case 8:
        branch_welcome(data + 1, size - 1);
        break;
    case 9:
        reinit_commit(data + 1, size - 1);
        break;
    default:
        proposal(data + 1, size - 1);
        break;
    }
    return 0;
}
