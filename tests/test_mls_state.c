/*
 * A member's state saved and loaded (src/mls/state.c), for cipher suites 1
 * and 3:
 *
 *   - a group of 4 where one member is saved to a file and loaded back
 *     between every epoch and every message, and still derives the same epoch
 *     authenticator as the others, reads what they send, sends and commits;
 *   - the file is of mode 0600 and nothing temporary is left beside it;
 *   - a member with a commit waiting is not saved, and says why;
 *   - a state whose interim transcript hash or confirmation tag is not what its
 *     confirmed transcript hash and confirmation key make is refused (epoch 0 too);
 *   - every truncation, an extra byte and an unknown version are refused;
 *     every single-bit change is refused or gives a member that fails safely
 *     (it reads nothing it should not and changes nothing when it fails);
 *   - forward secrecy survives: a message read before a save is not read
 *     after the load, and the saved bytes hold neither its key, nor its
 *     sender's leaf secret, nor the epoch's encryption secret.
 *
 * Exits non-zero if anything fails.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <sodium.h>

#include "missive/util.h"
#include "mls/member.h"
#include "mls/mls.h"

static int failures;

static void check(int ok, const char *what, int line)
{
    if (ok)
        return;
    fprintf(stderr, "test_mls_state.c:%d: %s\n", line, what);
    failures++;
}
#define CHECK(cond, what) check((cond) != 0, (what), __LINE__)

#define NOW 1800000000u
#define PEOPLE 4

struct person {
    uint8_t seed[32], init_sk[32], leaf_sk[32];
    char id[16];
    uint8_t *kp;
    size_t kp_len;
    struct msv_mls_member *m;
};

static struct person ppl[PEOPLE];
static enum msv_mls_suite suite;
static char path[256];

static void fatal(const char *what)
{
    fprintf(stderr, "fatal: %s\n", what);
    exit(1);
}

/* Person 1 goes through a file: saved, freed, loaded back. */
static void reload(struct msv_mls_member **m)
{
    struct stat st;
    const char *why = NULL;
    msv_err err = msv_mls_member_save_file(*m, path, &why);

    if (err != MSV_OK) {
        fprintf(stderr, "save: %s (%s)\n", msv_strerror(err), why ? why : "");
        fatal("save");
    }
    CHECK(stat(path, &st) == 0 && (st.st_mode & 0777) == 0600, "the state file is 0600");
    msv_mls_member_free(*m);
    *m = NULL;
    err = msv_mls_member_load_file(path, NULL, 0, m, &why);
    if (err != MSV_OK) {
        fprintf(stderr, "load: %s (%s)\n", msv_strerror(err), why ? why : "");
        fatal("load");
    }
}

static void agree(const char *when)
{
    for (size_t i = 1; i < PEOPLE; i++) {
        if (ppl[i].m == NULL || ppl[0].m == NULL)
            continue;
        CHECK(ppl[i].m->epoch == ppl[0].m->epoch &&
                  memcmp(ppl[i].m->s.epoch_authenticator, ppl[0].m->s.epoch_authenticator,
                         MSV_MLS_NH) == 0,
              when);
    }
}

/* committer commits (adding `add` if not SIZE_MAX, removing nobody); the others follow,
 * person 1 through its file before and after. */
static void commit_round(size_t committer, size_t add)
{
    struct msv_mls_commit_spec spec;
    const uint8_t *kps[1];
    size_t kp_lens[1];
    uint8_t *commit = NULL, *welcome = NULL;
    size_t commit_len = 0, welcome_len = 0;
    const char *why = NULL;

    memset(&spec, 0, sizeof(spec));
    if (add != SIZE_MAX) {
        kps[0] = ppl[add].kp;
        kp_lens[0] = ppl[add].kp_len;
        spec.key_packages = kps;
        spec.key_package_lens = kp_lens;
        spec.n_adds = 1;
    }
    spec.now = NOW;
    spec.private_message = committer % 2;
    if (ppl[1].m != NULL)
        reload(&ppl[1].m);
    if (msv_mls_member_commit_make(ppl[committer].m, &spec, &commit, &commit_len, &welcome,
                                   &welcome_len, &why) != MSV_OK)
        fatal("commit");
    if (committer == 1) {
        uint8_t *bytes = NULL;
        size_t len = 0;

        why = NULL;
        CHECK(msv_mls_member_save(ppl[1].m, &bytes, &len, &why) == MSV_ERR_INVALID && why &&
                  strstr(why, "commit") != NULL,
              "a member with a commit waiting is not saved");
    }
    for (size_t i = 0; i < PEOPLE; i++) {
        if (ppl[i].m == NULL || i == committer)
            continue;
        CHECK(msv_mls_member_commit(ppl[i].m, NULL, NULL, 0, commit, commit_len) == MSV_OK,
              "a member follows");
    }
    CHECK(msv_mls_member_commit_merge(ppl[committer].m) == MSV_OK, "merge");
    if (add != SIZE_MAX) {
        struct person *p = &ppl[add];

        CHECK(msv_mls_member_join(suite, welcome, welcome_len, p->kp, p->kp_len, p->init_sk,
                                  p->leaf_sk, NULL, 0, NULL, 0, &p->m) == MSV_OK &&
                  msv_mls_member_set_signer(p->m, p->seed) == MSV_OK,
              "joined");
    }
    if (ppl[1].m != NULL)
        reload(&ppl[1].m);
    agree("the same epoch authenticator after a commit");
    free(commit);
    free(welcome);
}

/* Everyone sends one message, everyone else reads it; person 1 reloaded around each. */
static void talk(void)
{
    for (size_t i = 0; i < PEOPLE; i++) {
        uint8_t *msg = NULL;
        size_t len = 0;

        if (ppl[i].m == NULL)
            continue;
        reload(&ppl[1].m);
        if (msv_mls_member_protect(ppl[i].m, (const uint8_t *)ppl[i].id, strlen(ppl[i].id), &msg,
                                   &len) != MSV_OK)
            fatal("protect");
        for (size_t k = 0; k < PEOPLE; k++) {
            uint8_t *pt = NULL;
            size_t pt_len = 0;
            uint32_t sender;

            if (ppl[k].m == NULL || k == i)
                continue;
            if (k == 1)
                reload(&ppl[1].m);
            CHECK(msv_mls_member_unprotect(ppl[k].m, msg, len, &pt, &pt_len, &sender) == MSV_OK &&
                      pt_len == strlen(ppl[i].id) && memcmp(pt, ppl[i].id, pt_len) == 0,
                  "a message read");
            msv_secret_free(pt, pt_len);
        }
        free(msg);
    }
}

static int contains(const uint8_t *hay, size_t hay_len, const uint8_t *needle, size_t n)
{
    for (size_t i = 0; i + n <= hay_len; i++) {
        if (memcmp(hay + i, needle, n) == 0)
            return 1;
    }
    return 0;
}

/* A message read before a save is not read after the load; its key is not in the file. */
static void test_forward_secrecy(void)
{
    uint8_t enc[MSV_MLS_NH], leaf[MSV_MLS_NH], key[MSV_MLS_KEY_MAX], nonce[MSV_MLS_NN];
    uint8_t *msg = NULL, *pt = NULL, *bytes = NULL;
    size_t len = 0, pt_len = 0, bytes_len = 0, nk = msv_mls_suite_nk(suite);
    uint32_t sender, root;
    const char *why = NULL;

    commit_round(2, SIZE_MAX); /* a fresh epoch: person 1's secret tree holds its root */
    root = msv_mls_tree_root(ppl[1].m->st.n_leaves);
    if (!ppl[1].m->st.has[root])
        fatal("root");
    memcpy(enc, ppl[1].m->st.node[root], MSV_MLS_NH);
    if (msv_mls_member_protect(ppl[0].m, (const uint8_t *)"once", 4, &msg, &len) != MSV_OK)
        fatal("protect");
    CHECK(msv_mls_member_unprotect(ppl[1].m, msg, len, &pt, &pt_len, &sender) == MSV_OK,
          "read before the save");
    msv_secret_free(pt, pt_len);
    pt = NULL;
    if (msv_mls_member_save(ppl[1].m, &bytes, &bytes_len, &why) != MSV_OK)
        fatal("save");
    if (msv_mls_secret_tree_leaf(enc, ppl[1].m->st.n_leaves, ppl[0].m->me, leaf) != MSV_OK ||
        msv_mls_ratchet_key(suite, leaf, MSV_MLS_RATCHET_APPLICATION, 0, key, nonce) != MSV_OK)
        fatal("derive");
    CHECK(!contains(bytes, bytes_len, key, nk), "the used key is not in the file");
    CHECK(!contains(bytes, bytes_len, leaf, MSV_MLS_NH), "the sender's leaf secret is not");
    CHECK(!contains(bytes, bytes_len, enc, MSV_MLS_NH), "the encryption secret is not");
    msv_secret_free(bytes, bytes_len);
    reload(&ppl[1].m);
    CHECK(msv_mls_member_unprotect(ppl[1].m, msg, len, &pt, &pt_len, &sender) == MSV_ERR_AUTH,
          "a message read before the save is not read after the load");
    free(msg);
    sodium_memzero(enc, sizeof(enc));
    sodium_memzero(leaf, sizeof(leaf));
    sodium_memzero(key, sizeof(key));
}

/* A member loaded from changed bytes fails safely: what it reads or follows is refused or is
 * what the others see. */
static void fails_safely(struct msv_mls_member *m, const uint8_t *msg, size_t len)
{
    uint8_t *pt = NULL;
    size_t pt_len = 0;
    uint32_t sender = 0;
    msv_err err = msv_mls_member_unprotect(m, msg, len, &pt, &pt_len, &sender);

    CHECK(err != MSV_OK || (pt_len == 3 && memcmp(pt, "bit", 3) == 0), "a changed state reads "
                                                                       "only what was sent");
    if (err == MSV_OK)
        msv_secret_free(pt, pt_len);
}

/* The state with one bit of what (found in it) changed: refused, the reason naming reason. */
static void refused_for(const uint8_t *bytes, size_t len, const uint8_t *what, size_t n,
                        const char *reason)
{
    uint8_t *copy = malloc(len);
    struct msv_mls_member *m = NULL;
    const char *why = NULL;
    size_t at = 0;

    while (at + n <= len && memcmp(bytes + at, what, n) != 0)
        at++;
    if (copy == NULL || at + n > len)
        fatal("not in the state");
    memcpy(copy, bytes, len);
    copy[at + n / 2] ^= 0x08;
    CHECK(msv_mls_member_load(copy, len, NULL, 0, &m, &why) == MSV_ERR_PARSE && m == NULL &&
              why != NULL && strstr(why, reason) != NULL,
          reason);
    if (why != NULL && strstr(why, reason) == NULL)
        fprintf(stderr, "  said: %s\n", why);
    free(copy);
}

/* The interim transcript hash, the confirmation tag and the confirmation key each changed: refused.
 */
static void transcript_checked(const struct msv_mls_member *m, const uint8_t *bytes, size_t len)
{
    refused_for(bytes, len, m->interim, MSV_MLS_NH, "interim transcript hash");
    refused_for(bytes, len, m->tag, MSV_MLS_NH, "confirmation tag");
    refused_for(bytes, len, m->s.confirmation_key, MSV_MLS_NH, "confirmation tag");
}

/* The same at a created group's epoch 0, where the confirmed transcript hash is empty. */
static void test_epoch0_transcript(const struct msv_mls_member *m)
{
    uint8_t *bytes = NULL;
    size_t len = 0;
    const char *why = NULL;

    if (msv_mls_member_save(m, &bytes, &len, &why) != MSV_OK)
        fatal("save");
    transcript_checked(m, bytes, len);
    msv_secret_free(bytes, len);
}

static void test_bad_files(void)
{
    uint8_t *bytes = NULL, *copy, *msg = NULL;
    size_t len = 0, msg_len = 0, parsed = 0;
    struct msv_mls_member *m = NULL;
    const char *why = NULL;

    if (msv_mls_member_save(ppl[1].m, &bytes, &len, &why) != MSV_OK)
        fatal("save");
    if (msv_mls_member_protect(ppl[0].m, (const uint8_t *)"bit", 3, &msg, &msg_len) != MSV_OK)
        fatal("protect");
    copy = malloc(len + 1);
    for (size_t n = 0; n < len; n++) {
        m = NULL;
        CHECK(msv_mls_member_load(bytes, n, NULL, 0, &m, &why) != MSV_OK && m == NULL,
              "a truncated state refused");
    }
    memcpy(copy, bytes, len);
    copy[len] = 0;
    CHECK(msv_mls_member_load(copy, len + 1, NULL, 0, &m, &why) == MSV_ERR_PARSE && why &&
              strstr(why, "after") != NULL,
          "an extra byte refused");
    copy[7] = 3; /* the version */
    CHECK(msv_mls_member_load(copy, len, NULL, 0, &m, &why) == MSV_ERR_UNSUPPORTED,
          "an unknown version refused");
    copy[7] = 2; /* a closed group's, without its ReInit */
    CHECK(msv_mls_member_load(copy, len, NULL, 0, &m, &why) == MSV_ERR_PARSE && why &&
              strstr(why, "ReInit") != NULL,
          "a version-2 state without its ReInit refused");
    for (size_t bit = 0; bit < 8 * len; bit++) {
        memcpy(copy, bytes, len);
        copy[bit / 8] ^= (uint8_t)(1u << (bit % 8));
        m = NULL;
        if (msv_mls_member_load(copy, len, NULL, 0, &m, &why) != MSV_OK) {
            CHECK(m == NULL, "nothing half-loaded");
            continue;
        }
        parsed++;
        fails_safely(m, msg, msg_len);
        msv_mls_member_free(m);
    }
    /* each kind named: our leaf's private key, the signature seed, a tree leaf's signature */
    refused_for(bytes, len, ppl[1].m->keys[0].sk, 32, "private key");
    refused_for(bytes, len, ppl[1].m->sig_seed, 32, "signature key");
    refused_for(bytes, len, ppl[1].m->tree.nodes[0].leaf.signature, MSV_MLS_SIG_LEN,
                "ratchet tree");
    transcript_checked(ppl[1].m, bytes, len);
    /* only the bits of secrets and flags can parse; the tree, keys and lengths cannot */
    CHECK(parsed < 8 * len / 2, "most changes are refused");
    CHECK(msv_mls_member_load(bytes, len, NULL, 0, &m, &why) == MSV_OK, "the original loads");
    msv_mls_member_free(m);
    free(copy);
    free(msg);
    msv_secret_free(bytes, len);
    /* the group goes on: the message was for the epoch, read by the real member */
}

static void run_suite(enum msv_mls_suite s)
{
    char dir[] = "/tmp/mls-state-XXXXXX";

    suite = s;
    if (mkdtemp(dir) == NULL)
        fatal("mkdtemp");
    snprintf(path, sizeof(path), "%s/member.state", dir);
    for (size_t i = 0; i < PEOPLE; i++) {
        memset(&ppl[i], 0, sizeof(ppl[i]));
        randombytes_buf(ppl[i].seed, sizeof(ppl[i].seed));
        snprintf(ppl[i].id, sizeof(ppl[i].id), "person-%zu", i);
        if (msv_mls_key_package_make(suite, ppl[i].seed, (const uint8_t *)ppl[i].id,
                                     strlen(ppl[i].id), NOW - 60, NOW + 86400, ppl[i].init_sk,
                                     ppl[i].leaf_sk, &ppl[i].kp, &ppl[i].kp_len) != MSV_OK)
            fatal("key package");
    }
    if (msv_mls_member_create(suite, (const uint8_t *)"state", 5, ppl[0].seed,
                              (const uint8_t *)ppl[0].id, strlen(ppl[0].id), NOW - 60, NOW + 86400,
                              &ppl[0].m) != MSV_OK)
        fatal("create");
    reload(&ppl[0].m); /* a group of one at epoch 0 goes through a file too */
    test_epoch0_transcript(ppl[0].m);
    for (size_t i = 1; i < PEOPLE; i++)
        commit_round(i == 3 ? 1 : 0, i); /* person 1, loaded from its file, adds person 3 */
    talk();
    for (size_t e = 0; e < 6; e++) {
        commit_round(e % PEOPLE, SIZE_MAX);
        talk();
    }
    test_forward_secrecy();
    test_bad_files();
    talk();
    /* nothing temporary left beside the file */
    CHECK(unlink(path) == 0 && rmdir(dir) == 0, "only the state file in its directory");
    for (size_t i = 0; i < PEOPLE; i++) {
        msv_mls_member_free(ppl[i].m);
        free(ppl[i].kp);
    }
}

int main(void)
{
    static const enum msv_mls_suite suites[] = {MSV_MLS_SUITE_X25519_AES128GCM,
                                                MSV_MLS_SUITE_X25519_CHACHA20POLY1305};

    if (msv_init() != MSV_OK)
        return 2;
    for (size_t i = 0; i < sizeof(suites) / sizeof(suites[0]); i++)
        run_suite(suites[i]);
    printf("%s: %d failed\n", failures == 0 ? "ok" : "FAILED", failures);
    return failures == 0 ? 0 : 1;
}
