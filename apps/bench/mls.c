/*
 * B3's MLS side (src/mls): a group of N devices made in this process by our
 * own sending code, then, measured by this thread's CPU time: a commit adding
 * one device (its size and the Welcome's), a commit removing one (its size,
 * the committer's time, a member's time to process it) and an application
 * message of 256 bytes (its size, the sender's and a reader's time).
 *
 * The group is built as a creator builds it: commits adding up to 255
 * devices each, so the parents off the creator's path are blank and a
 * commit's path secrets go to every leaf of each blank subtree; the figures
 * are the cost of a group's first commits, the largest ones. One member
 * besides the creator follows every commit (the others are leaves only).
 * Then the same removal once the parents hold keys, and the clients' keying
 * of a fresh tree (every device a member).
 */
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <sodium.h>

#include "bench/bench.h"
#include "missive/util.h"
#include "mls/member.h"
#include "mls/mls.h"

#define NOW 1800000000u
#define BATCH 255
#define MESSAGES 50

static double cpu_s(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

struct kp {
    uint8_t seed[32], init_sk[32], leaf_sk[32];
    uint8_t *bytes;
    size_t len;
};

static void make_kp(struct kp *k, size_t i)
{
    char id[32];

    randombytes_buf(k->seed, sizeof(k->seed));
    snprintf(id, sizeof(id), "bench-device-%zu", i);
    if (msv_mls_key_package_make(MSV_MLS_SUITE_X25519_AES128GCM, k->seed, (const uint8_t *)id,
                                 strlen(id), NOW - 60, NOW + 86400, k->init_sk, k->leaf_sk,
                                 &k->bytes, &k->len) != MSV_OK)
        die("mls: key package");
}

struct made {
    uint8_t *commit, *welcome;
    size_t commit_len, welcome_len;
    double cpu_ms;
};

/* The creator commits (adding kps, removing leaf remove if not UINT32_MAX; with no_path, without
 * an UpdatePath) and merges. */
static void commit(struct msv_mls_member *a, struct kp *kps, size_t n, uint32_t remove, int no_path,
                   struct made *out)
{
    const uint8_t **bytes = calloc(n + 1, sizeof(*bytes));
    size_t *lens = calloc(n + 1, sizeof(*lens));
    struct msv_mls_commit_spec spec;
    const char *why = NULL;
    double t0;
    msv_err err;

    if (bytes == NULL || lens == NULL)
        die("out of memory");
    for (size_t i = 0; i < n; i++) {
        bytes[i] = kps[i].bytes;
        lens[i] = kps[i].len;
    }
    memset(&spec, 0, sizeof(spec));
    spec.key_packages = bytes;
    spec.key_package_lens = lens;
    spec.n_adds = n;
    spec.removes = &remove;
    spec.n_removes = remove != UINT32_MAX;
    spec.now = NOW;
    spec.no_path = no_path;
    memset(out, 0, sizeof(*out));
    t0 = cpu_s();
    err = msv_mls_member_commit_make(a, &spec, &out->commit, &out->commit_len, &out->welcome,
                                     &out->welcome_len, &why);
    out->cpu_ms = (cpu_s() - t0) * 1e3;
    if (err != MSV_OK || msv_mls_member_commit_merge(a) != MSV_OK)
        die("mls: commit: %s (%s)", msv_strerror(err), why != NULL ? why : "");
    free(bytes);
    free(lens);
}

static void made_free(struct made *m)
{
    free(m->commit);
    free(m->welcome);
}

/* The follower processes a commit; its CPU time in ms. */
static double follow(struct msv_mls_member *b, const struct made *m)
{
    double t0 = cpu_s();

    if (msv_mls_member_commit(b, NULL, NULL, 0, m->commit, m->commit_len) != MSV_OK)
        die("mls: a member could not follow");
    return (cpu_s() - t0) * 1e3;
}

struct row {
    size_t n;
    size_t add_commit, add_welcome, remove_commit, message, add_np_commit;
    double add_ms, remove_ms, follow_ms, send_us, read_us, add_np_ms;
    size_t steady_commit; /* 0: not measured */
    double steady_ms, steady_follow_ms;
};

/* Builds a group of n devices: the creator, the follower (first added) and the others. */
static void build(size_t n, struct kp *kps, struct msv_mls_member **a, struct msv_mls_member **b)
{
    struct made m;

    if (msv_mls_member_create(MSV_MLS_SUITE_X25519_AES128GCM, (const uint8_t *)"bench", 5,
                              kps[0].seed, (const uint8_t *)"bench-device-0", 14, NOW - 60,
                              NOW + 86400, a) != MSV_OK)
        die("mls: create");
    for (size_t first = 1; first < n; first += BATCH) {
        size_t count = n - first < BATCH ? n - first : BATCH;

        commit(*a, kps + first, count, UINT32_MAX, 0, &m);
        if (first == 1) {
            if (msv_mls_member_join(MSV_MLS_SUITE_X25519_AES128GCM, m.welcome, m.welcome_len,
                                    kps[1].bytes, kps[1].len, kps[1].init_sk, kps[1].leaf_sk, NULL,
                                    0, NULL, 0, b) != MSV_OK ||
                msv_mls_member_set_signer(*b, kps[1].seed) != MSV_OK)
                die("mls: join");
        } else {
            (void)follow(*b, &m);
        }
        made_free(&m);
    }
}

static void measure_messages(struct msv_mls_member *a, struct msv_mls_member *b, struct row *r)
{
    double send[MESSAGES], readt[MESSAGES];
    uint8_t text[256];

    memset(text, 'm', sizeof(text));
    for (int i = 0; i < MESSAGES; i++) {
        uint8_t *msg = NULL, *pt = NULL;
        size_t len = 0, pt_len = 0;
        uint32_t sender;
        double t0 = cpu_s();

        if (msv_mls_member_protect(a, text, sizeof(text), &msg, &len) != MSV_OK)
            die("mls: protect");
        send[i] = (cpu_s() - t0) * 1e6;
        t0 = cpu_s();
        if (msv_mls_member_unprotect(b, msg, len, &pt, &pt_len, &sender) != MSV_OK)
            die("mls: unprotect");
        readt[i] = (cpu_s() - t0) * 1e6;
        r->message = len;
        msv_secret_free(pt, pt_len);
        free(msg);
    }
    r->send_us = median(send, MESSAGES);
    r->read_us = median(readt, MESSAGES);
}

/*
 * The leaves whose commits give a key to every node the creator's removal of the last
 * leaf encrypts to: the root of each subtree off the creator's path and, where the removal
 * blanks the last leaf's path, of each subtree off that path. In a group whose members have
 * all committed once (every parent holding a key) the removal encrypts to the same nodes, so
 * its commit is the same size; here the subtree's first leaf commits for it. Leaves [lo, hi)
 * of a group of n; adds to out[*k].
 */
static void keyed(size_t lo, size_t hi, size_t n, size_t *out, size_t *k)
{
    size_t mid = lo + (hi - lo) / 2;

    if (hi - lo < 2 || lo >= n)
        return; /* a leaf holds its own key; a subtree of no member encrypts to nothing */
    if (n - 1 < lo || n - 1 >= hi) {
        out[(*k)++] = lo;
        return;
    }
    keyed(lo, mid, n, out, k); /* blanked by the removal: each half in turn */
    keyed(mid, hi, n, out, k);
}

/* n KeyPackages made, and the group name founded by the first device (mem[0]). */
static void founded(const char *name, struct kp *kps, size_t n, struct msv_mls_member **mem)
{
    for (size_t i = 0; i < n; i++)
        make_kp(&kps[i], i);
    if (msv_mls_member_create(MSV_MLS_SUITE_X25519_AES128GCM, (const uint8_t *)name, strlen(name),
                              kps[0].seed, (const uint8_t *)"bench-device-0", 14, NOW - 60,
                              NOW + 86400, &mem[0]) != MSV_OK)
        die("mls: create");
}

/* Device i joins from the Welcome of m, at leaf i (mem[i]). */
static void joined(const struct made *m, struct kp *kps, size_t i, struct msv_mls_member **mem)
{
    if (msv_mls_member_join(MSV_MLS_SUITE_X25519_AES128GCM, m->welcome, m->welcome_len,
                            kps[i].bytes, kps[i].len, kps[i].init_sk, kps[i].leaf_sk, NULL, 0, NULL,
                            0, &mem[i]) != MSV_OK ||
        msv_mls_member_set_signer(mem[i], kps[i].seed) != MSV_OK || mem[i]->me != i)
        die("mls: join");
}

/* The n members' states and KeyPackages, and the arrays that held them. */
static void members_free(struct msv_mls_member **mem, struct kp *kps, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        msv_mls_member_free(mem[i]);
        free(kps[i].bytes);
    }
    sodium_memzero(kps, n * sizeof(*kps));
    free(kps);
    free(mem);
}

/*
 * A group of n in its steady state for the creator (leaf 0): the creator adds everyone
 * (commits of up to BATCH adds), then the leaves keyed() names commit once each (every member that
 * takes part follows every commit), then the creator removes the last leaf: that commit's size and
 * time, and a member's time to follow it.
 */
static void steady(size_t n, struct row *r)
{
    struct kp *kps = calloc(n, sizeof(*kps));
    struct msv_mls_member **mem = calloc(n, sizeof(*mem));
    size_t *who = calloc(2 * 64 + 2, sizeof(*who)), k = 0, width = 1;
    struct made m;

    if (kps == NULL || mem == NULL || who == NULL)
        die("out of memory");
    while (width < n)
        width *= 2;
    keyed(width / 2, width, n, who, &k); /* the creator's path: each right subtree */
    for (size_t half = width / 2; half >= 2; half /= 2)
        keyed(half / 2, half, n, who, &k);
    founded("steady", kps, n, mem);
    if (n > 2)
        who[k++] = 1; /* whose following is timed (a leaf on its own: keys nothing) */
    for (size_t first = 1; first < n; first += BATCH) {
        size_t count = n - first < BATCH ? n - first : BATCH;

        commit(mem[0], kps + first, count, UINT32_MAX, 0, &m);
        for (size_t i = 1; i < first; i++) {
            if (mem[i] != NULL)
                (void)follow(mem[i], &m);
        }
        for (size_t j = 0; j < k; j++) {
            size_t i = who[j];

            if (i < first || i >= first + count || mem[i] != NULL)
                continue;
            joined(&m, kps, i, mem);
        }
        made_free(&m);
    }
    for (size_t j = 0; j < k; j++) {
        if (who[j] == 1)
            continue; /* the follower's own leaf keys nothing the removal meets */
        commit(mem[who[j]], NULL, 0, UINT32_MAX, 0, &m);
        for (size_t i = 0; i < n; i++) {
            if (mem[i] != NULL && i != who[j])
                (void)follow(mem[i], &m);
        }
        made_free(&m);
    }
    commit(mem[0], NULL, 0, (uint32_t)(n - 1), 0, &m);
    r->steady_commit = m.commit_len;
    r->steady_ms = m.cpu_ms;
    r->steady_follow_ms = n > 2 ? follow(mem[1], &m) : -1; /* of 2, the other is removed */
    made_free(&m);
    members_free(mem, kps, n);
    free(who);
}

/* What the clients' keying (docs/crypto.md, "Keying the tree") gives a group of n founded at
 * once: its keying commits, and the creator's removal after them. */
struct keying {
    size_t n, commits, bytes, largest, remove_commit;
};

/* Leaves 1 .. n - 1 in out[0 .. n - 2]: in the order that keys a tree of width leaves from the
 * top (msv_mls_tree_key_order, the clients' order: docs/crypto.md, "Keying the tree"), or
 * shuffled. */
static void keying_order(size_t n, uint32_t width, int ordered, size_t *out)
{
    size_t k = 0;

    for (uint32_t place = 0; ordered && place < width; place++) {
        for (size_t leaf = 1; leaf < n; leaf++)
            if (msv_mls_tree_key_order((uint32_t)leaf, width) == place)
                out[k++] = leaf;
    }
    if (ordered)
        return;
    for (size_t leaf = 1; leaf < n; leaf++)
        out[k++] = leaf;
    for (size_t i = k > 0 ? k - 1 : 0; i > 0; i--) {
        size_t j = randombytes_uniform((uint32_t)i + 1), t = out[i];

        out[i] = out[j];
        out[j] = t;
    }
}

/*
 * A group of n built as a creator builds it, every device joining from its Welcome and following
 * every commit; then, in the clients' order, each device whose path is not keyed (as its own
 * state shows then) commits once and every other follows; then the creator removes the last leaf.
 */
static void keying(size_t n, struct keying *r)
{
    struct kp *kps = calloc(n, sizeof(*kps));
    struct msv_mls_member **mem = calloc(n, sizeof(*mem));
    size_t *order = calloc(n, sizeof(*order));
    struct made m;

    if (kps == NULL || mem == NULL || order == NULL)
        die("out of memory");
    memset(r, 0, sizeof(*r));
    r->n = n;
    founded("keying", kps, n, mem);
    for (size_t first = 1; first < n; first += BATCH) {
        size_t count = n - first < BATCH ? n - first : BATCH;

        commit(mem[0], kps + first, count, UINT32_MAX, 0, &m);
        for (size_t i = 1; i < first; i++)
            (void)follow(mem[i], &m);
        for (size_t i = first; i < first + count; i++)
            joined(&m, kps, i, mem);
        made_free(&m);
    }
    keying_order(n, mem[0]->tree.n_leaves, 1, order);
    for (size_t k = 0; k + 1 < n; k++) {
        size_t who = order[k];

        if (!msv_mls_tree_path_unkeyed(&mem[who]->tree, mem[who]->me))
            continue;
        commit(mem[who], NULL, 0, UINT32_MAX, 0, &m);
        r->commits++;
        r->bytes += m.commit_len;
        r->largest = m.commit_len > r->largest ? m.commit_len : r->largest;
        for (size_t i = 0; i < n; i++)
            if (i != who)
                (void)follow(mem[i], &m);
        made_free(&m);
    }
    for (size_t i = 0; i < n; i++)
        if (msv_mls_tree_path_unkeyed(&mem[i]->tree, mem[i]->me))
            die("mls: leaf %zu's path is not keyed after the keying", i);
    commit(mem[0], NULL, 0, (uint32_t)(n - 1), 0, &m);
    r->remove_commit = m.commit_len;
    made_free(&m);
    members_free(mem, kps, n);
    free(order);
}

/* The removal while a group keys its tree: after how many keying commits it is measured. */
static const size_t early_at[] = {0, 8, 16, 32, 64, 128};
#define EARLY_AT (sizeof(early_at) / sizeof(early_at[0]))

#define EARLY_REMOVED 16 /* leaves whose removal is measured, spread over the group */

struct early {
    size_t n, n_at; /* the first n_at of early_at */
    /* the removals' commits, mean and largest: [0] in a random order, [1] in the clients' */
    size_t mean[2][EARLY_AT], largest[2][EARLY_AT];
    size_t keyed_bytes[2]; /* the keying commits' bytes, all */
};

/*
 * A group of n built as a creator builds it; then, in a random order or in the clients', each
 * device whose path is not keyed commits once, every later committer following: after the first
 * early_at[j] of them, the sizes of the creator's removal of each of EARLY_REMOVED leaves spread
 * over the group (each made, measured and dropped; a removal blanks the removed leaf's path, so
 * where it is counts). Only the creator and the committers hold a state: each committer joins
 * from its Welcome when its turn comes and follows what came since.
 */
static void keying_early(size_t n, int ordered, struct early *r)
{
    struct kp *kps = calloc(n, sizeof(*kps));
    struct msv_mls_member **mem = calloc(n, sizeof(*mem));
    size_t *order = calloc(n, sizeof(*order)), n_batches = (n - 1 + BATCH - 1) / BATCH, made = 0;
    struct made *batches = calloc(n_batches, sizeof(*batches));
    struct made *keyings = calloc(early_at[r->n_at - 1] + 1, sizeof(*keyings));
    size_t j = 0, k = 0;

    if (kps == NULL || mem == NULL || order == NULL || batches == NULL || keyings == NULL)
        die("out of memory");
    r->n = n;
    founded("early", kps, n, mem);
    for (size_t b = 0; b < n_batches; b++) {
        size_t first = 1 + b * BATCH, count = n - first < BATCH ? n - first : BATCH;

        commit(mem[0], kps + first, count, UINT32_MAX, 0, &batches[b]);
    }
    keying_order(n, mem[0]->tree.n_leaves, ordered, order);
    for (;;) {
        struct msv_mls_commit_spec spec;
        uint32_t gone;
        const char *why = NULL;
        size_t who, b;
        struct made drop;

        while (j < r->n_at && early_at[j] == made) {
            size_t all = 0;

            for (size_t x = 1; x <= EARLY_REMOVED; x++) {
                gone = (uint32_t)(x * (n - 1) / EARLY_REMOVED);
                memset(&spec, 0, sizeof(spec));
                spec.removes = &gone;
                spec.n_removes = 1;
                spec.now = NOW;
                memset(&drop, 0, sizeof(drop));
                if (msv_mls_member_commit_make(mem[0], &spec, &drop.commit, &drop.commit_len,
                                               &drop.welcome, &drop.welcome_len, &why) != MSV_OK)
                    die("mls: removal: %s", why != NULL ? why : "");
                msv_mls_member_commit_discard(mem[0]);
                all += drop.commit_len;
                if (drop.commit_len > r->largest[ordered][j])
                    r->largest[ordered][j] = drop.commit_len;
                made_free(&drop);
            }
            r->mean[ordered][j++] = all / EARLY_REMOVED;
        }
        if (j == r->n_at || k + 1 >= n)
            break;
        who = order[k++];
        if (!msv_mls_tree_path_unkeyed(&mem[0]->tree, (uint32_t)who))
            continue; /* the tree is the same for every member: another's commit keyed it */
        b = (who - 1) / BATCH;
        joined(&batches[b], kps, who, mem);
        for (size_t later = b + 1; later < n_batches; later++)
            (void)follow(mem[who], &batches[later]);
        for (size_t i = 0; i < made; i++)
            (void)follow(mem[who], &keyings[i]);
        commit(mem[who], NULL, 0, UINT32_MAX, 0, &keyings[made]);
        r->keyed_bytes[ordered] += keyings[made].commit_len;
        (void)follow(mem[0], &keyings[made]);
        made++;
    }
    if (j < r->n_at)
        die("mls: the group of %zu keyed itself before %zu commits", n, early_at[j]);
    for (size_t i = 0; i < made; i++)
        made_free(&keyings[i]);
    for (size_t b = 0; b < n_batches; b++)
        made_free(&batches[b]);
    free(keyings);
    free(batches);
    members_free(mem, kps, n);
    free(order);
}

static void measure(size_t n, struct row *r)
{
    struct kp *kps = calloc(n + 2, sizeof(*kps));
    struct msv_mls_member *a = NULL, *b = NULL;
    struct made m;

    if (kps == NULL)
        die("out of memory");
    for (size_t i = 0; i <= n + 1; i++)
        make_kp(&kps[i], i);
    build(n, kps, &a, &b);
    memset(r, 0, sizeof(*r));
    r->n = n;
    measure_messages(a, b, r);
    commit(a, kps + n, 1, UINT32_MAX, 0, &m); /* one more device: n + 1 */
    r->add_commit = m.commit_len;
    r->add_welcome = m.welcome_len;
    r->add_ms = m.cpu_ms;
    (void)follow(b, &m);
    made_free(&m);
    commit(a, NULL, 0, (uint32_t)n, 0, &m); /* and removed again: n */
    r->remove_commit = m.commit_len;
    r->remove_ms = m.cpu_ms;
    r->follow_ms = follow(b, &m);
    made_free(&m);
    commit(a, kps + n + 1, 1, UINT32_MAX, 1, &m); /* another device, without a path */
    r->add_np_commit = m.commit_len;
    r->add_np_ms = m.cpu_ms;
    (void)follow(b, &m);
    made_free(&m);
    msv_mls_member_free(a);
    msv_mls_member_free(b);
    for (size_t i = 0; i <= n + 1; i++)
        free(kps[i].bytes);
    sodium_memzero(kps, (n + 2) * sizeof(*kps));
    free(kps);
}

int bench_mls(const struct opts *o, FILE *out)
{
    static const size_t sizes[] = {2, 10, 100, 1000, 5000, 10000};
    /* every device follows every keying commit: about n * n / 2 commits processed, so up to
     * 300 devices (about four minutes here) */
    static const size_t keyed_sizes[] = {10, 100, 300};
    size_t n_sizes = o->quick ? 3 : sizeof(sizes) / sizeof(sizes[0]);
    size_t n_keyed = o->quick ? 1 : sizeof(keyed_sizes) / sizeof(keyed_sizes[0]);
    struct row rows[sizeof(sizes) / sizeof(sizes[0])];
    struct keying keyings[sizeof(keyed_sizes) / sizeof(keyed_sizes[0])];
    struct early early;

    for (size_t i = 0; i < n_sizes; i++) {
        measure(sizes[i], &rows[i]);
        steady(sizes[i], &rows[i]);
    }
    for (size_t i = 0; i < n_keyed; i++)
        keying(keyed_sizes[i], &keyings[i]);
    memset(&early, 0, sizeof(early));
    early.n_at = o->quick ? 3 : EARLY_AT;
    for (int ordered = 0; ordered < 2; ordered++)
        keying_early(o->quick ? 300 : 1000, ordered, &early);
    fprintf(out, "### B3 (MLS): a group of N devices, cipher suite 1\n\n"
                 "| devices | add one: commit B, Welcome B, committer ms | add one without a path: "
                 "commit B, committer ms | remove one: commit B, "
                 "committer ms, a member's ms | remove one once the parents hold keys: commit B, "
                 "committer ms, a member's ms | message of 256 B: bytes, sender µs, reader µs | "
                 "sender vs. 2 devices |\n|---|---|---|---|---|---|---|\n");
    for (size_t i = 0; i < n_sizes; i++) {
        const struct row *r = &rows[i];

        char follower[32] = "none left";

        if (r->steady_follow_ms >= 0)
            snprintf(follower, sizeof(follower), "%.1f", r->steady_follow_ms);
        fprintf(out,
                "| %zu | %zu, %zu, %.1f | %zu, %.1f | %zu, %.1f, %.1f | %zu, %.1f, %s | %zu, %.1f, "
                "%.1f | %.2f |\n",
                r->n, r->add_commit, r->add_welcome, r->add_ms, r->add_np_commit, r->add_np_ms,
                r->remove_commit, r->remove_ms, r->follow_ms, r->steady_commit, r->steady_ms,
                follower, r->message, r->send_us, r->read_us,
                rows[0].send_us > 0 ? r->send_us / rows[0].send_us : 0.0);
    }
    fprintf(out, "\nThe group is built by its creator's commits of up to 255 adds each, so the "
                 "parents off the creator's path are blank and each commit encrypts its path "
                 "secrets to every leaf of the blank subtrees: these are the first commits of a "
                 "group, the largest. Once the parents hold keys (as once every member has "
                 "committed, by its regular self-update), a commit encrypts one path secret per "
                 "node it meets: the column after them, where the leaves whose commits key those "
                 "nodes committed once. CPU time of this thread; one message is one encryption "
                 "whatever the group's size.\n\n");
    fprintf(out, "| devices | keying commits | their bytes: all, largest | then remove one: commit "
                 "B |\n|---|---|---|---|\n");
    for (size_t i = 0; i < n_keyed; i++)
        fprintf(out, "| %zu | %zu | %zu, %zu | %zu |\n", keyings[i].n, keyings[i].commits,
                keyings[i].bytes, keyings[i].largest, keyings[i].remove_commit);
    fprintf(out, "\nThe clients' keying of a group founded at once: each device whose path has a "
                 "node resolving to more than one commits once, in the order that keys the tree "
                 "from the top, every other following; then the creator removes the last leaf."
                 "\n\n");
    fprintf(out,
            "| keying commits made, of a group of %zu | the creator's removal, commit B, "
            "mean and largest: in a random order | in the clients' order |\n|---|---|---|\n",
            early.n);
    for (size_t j = 0; j < early.n_at; j++)
        fprintf(out, "| %zu | %zu, %zu | %zu, %zu |\n", early_at[j], early.mean[0][j],
                early.largest[0][j], early.mean[1][j], early.largest[1][j]);
    fprintf(out,
            "\nA group of the same build keying its tree, the creator's removal of each of "
            "%d leaves spread over the group measured (and dropped) after the first "
            "commits: the keying commits in a random order, or in the clients' "
            "(docs/crypto.md, \"Keying the tree\"), each device whose path is not keyed "
            "then committing once. Their bytes up to the last row: %zu in a random order, "
            "%zu in the clients'.\n\n",
            EARLY_REMOVED, early.keyed_bytes[0], early.keyed_bytes[1]);
    return 0;
}
