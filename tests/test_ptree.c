/*
 * The key directory's prefix tree: roots against a reference computed from the sorted set for
 * every size up to 40, every presence and absence proof verified and, changed in any way,
 * refused; append-only proofs across epochs, and refused for an entry changed in place or
 * removed; version proofs refused for an older version shown as newest, a skipped version, a
 * forged later version the owner must see, another handle, other data or another VRF key;
 * entry steps (the append-only proof auditors read entry by entry) from any epoch, refused for
 * a tree changed behind them.
 */
#include <stdarg.h>
#include <setjmp.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <sodium.h>

#include "missive/ptree.h"
#include "missive/util.h"

#define N_MAX 40

/* A label and value that depend only on i and a seed. */
static void entry_of(uint32_t seed, uint32_t i, struct msv_pt_entry *e)
{
    uint8_t in[9] = {'e',
                     (uint8_t)(seed >> 8),
                     (uint8_t)seed,
                     (uint8_t)(i >> 24),
                     (uint8_t)(i >> 16),
                     (uint8_t)(i >> 8),
                     (uint8_t)i};

    crypto_hash_sha256(e->label, in, sizeof(in));
    in[0] = 'v';
    crypto_hash_sha256(e->value, in, sizeof(in));
    /* labels that share long prefixes too: every fourth differs from its neighbour late */
    if (i % 4 == 1) {
        entry_of(seed, i - 1, e);
        e->label[20] ^= 0x01;
    }
}

static int cmp_label(const void *a, const void *b)
{
    return memcmp(a, b, MSV_PT_LABEL_LEN);
}

static int bit_of(const uint8_t *label, unsigned i)
{
    return (label[i / 8] >> (7 - i % 8)) & 1;
}

/* The root of the sorted entries [lo, hi), straight from the definition in the docs. */
static void ref_root(const struct msv_pt_entry *e, size_t lo, size_t hi, uint8_t out[32])
{
    uint8_t head[34] = {0x11}, l[32], r[32];
    crypto_hash_sha256_state st;
    unsigned d = 0;
    size_t mid = lo;

    if (hi - lo == 1) {
        uint8_t buf[65] = {0x10};

        memcpy(buf + 1, e[lo].label, 32);
        memcpy(buf + 33, e[lo].value, 32);
        crypto_hash_sha256(out, buf, sizeof(buf));
        return;
    }
    while (bit_of(e[lo].label, d) == bit_of(e[hi - 1].label, d))
        d++;
    while (!bit_of(e[mid].label, d))
        mid++;
    head[1] = (uint8_t)d;
    for (unsigned i = 0; i < d; i++)
        head[2 + i / 8] |= (uint8_t)(bit_of(e[lo].label, i) << (7 - i % 8));
    ref_root(e, lo, mid, l);
    ref_root(e, mid, hi, r);
    crypto_hash_sha256_init(&st);
    crypto_hash_sha256_update(&st, head, sizeof(head));
    crypto_hash_sha256_update(&st, l, 32);
    crypto_hash_sha256_update(&st, r, 32);
    crypto_hash_sha256_final(&st, out);
}

/* Every change to a proof is refused or, for the few bytes that do not matter, impossible. */
static void assert_changes_refused(const uint8_t root[32], const uint8_t label[32],
                                   const uint8_t *proof, size_t len)
{
    uint8_t *copy = malloc(len + 1);
    int found = 0;

    assert_non_null(copy);
    for (size_t i = 0; i < len; i++) {
        memcpy(copy, proof, len);
        copy[i] ^= 0x01;
        assert_int_not_equal(msv_pt_verify_path(root, label, copy, len, &found, NULL), MSV_OK);
    }
    memcpy(copy, proof, len);
    copy[len] = 0;
    assert_int_equal(msv_pt_verify_path(root, label, copy, len + 1, &found, NULL), MSV_ERR_PARSE);
    for (size_t cut = 0; cut < len; cut++)
        assert_int_equal(msv_pt_verify_path(root, label, copy, cut, &found, NULL), MSV_ERR_PARSE);
    free(copy);
}

static void test_roots_and_paths(void **state)
{
    struct msv_pt_entry e[N_MAX], absent, sorted[N_MAX];
    uint8_t root[32], want[32], value[32], other_root[32];
    (void)state;

    for (size_t n = 0; n <= N_MAX; n++) {
        struct msv_ptree *t = NULL, *rev = NULL;

        assert_int_equal(msv_ptree_new(&t), MSV_OK);
        assert_int_equal(msv_ptree_new(&rev), MSV_OK);
        for (size_t i = 0; i < n; i++) {
            entry_of(1, (uint32_t)i, &e[i]);
            assert_int_equal(msv_ptree_insert(t, &e[i]), MSV_OK);
        }
        for (size_t i = n; i-- > 0;)
            assert_int_equal(msv_ptree_insert(rev, &e[i]), MSV_OK);
        assert_int_equal(msv_ptree_size(t), n);
        assert_int_equal(msv_ptree_root(t, root), MSV_OK);
        memset(want, 0, 32);
        memcpy(sorted, e, n * sizeof(e[0]));
        qsort(sorted, n, sizeof(e[0]), cmp_label);
        if (n > 0)
            ref_root(sorted, 0, n, want);
        assert_memory_equal(root, want, 32);
        /* the same set in another order: the same tree */
        assert_int_equal(msv_ptree_root(rev, other_root), MSV_OK);
        assert_memory_equal(root, other_root, 32);
        if (n > 0)
            assert_int_equal(msv_ptree_insert(t, &e[n / 2]), MSV_ERR_EXISTS);
        for (size_t i = 0; i <= n; i++) {
            const struct msv_pt_entry *q = i < n ? &e[i] : &absent;
            uint8_t *proof = NULL;
            size_t len = 0;
            int found = -1;

            entry_of(2, (uint32_t)i, &absent);
            if (i == n && n > 0) {
                /* absent, and sharing a long prefix with an entry */
                absent = e[0];
                absent.label[31] ^= 0x80;
            }
            assert_int_equal(msv_ptree_prove(t, q->label, &proof, &len, &found), MSV_OK);
            assert_int_equal(found, i < n);
            found = -1;
            assert_int_equal(msv_pt_verify_path(root, q->label, proof, len, &found, value), MSV_OK);
            assert_int_equal(found, i < n);
            if (i < n)
                assert_memory_equal(value, q->value, 32);
            assert_int_equal(msv_pt_path_len(proof, len), len);
            assert_changes_refused(root, q->label, proof, len);
            /* a proof for another label, or against another root */
            if (n > 1) {
                assert_int_equal(
                    msv_pt_verify_path(root, e[(i + 1) % n].label, proof, len, &found, NULL),
                    MSV_ERR_AUTH);
                other_root[0] ^= 1;
                assert_int_equal(msv_pt_verify_path(other_root, q->label, proof, len, &found, NULL),
                                 MSV_ERR_AUTH);
                other_root[0] ^= 1;
            }
            free(proof);
        }
        msv_ptree_free(t);
        msv_ptree_free(rev);
    }
}

/* A presence proof rewritten as an absence proof that ends at the label's own leaf. */
static void test_absence_naming_the_label(void **state)
{
    struct msv_ptree *t = NULL;
    struct msv_pt_entry e[8];
    uint8_t root[32], *proof = NULL, *forged;
    size_t len = 0;
    int found = 0;
    (void)state;

    assert_int_equal(msv_ptree_new(&t), MSV_OK);
    for (uint32_t i = 0; i < 8; i++) {
        entry_of(3, i, &e[i]);
        assert_int_equal(msv_ptree_insert(t, &e[i]), MSV_OK);
    }
    assert_int_equal(msv_ptree_root(t, root), MSV_OK);
    assert_int_equal(msv_ptree_prove(t, e[6].label, &proof, &len, &found), MSV_OK);
    assert_int_equal(found, 1);
    forged = malloc(len + 32);
    assert_non_null(forged);
    forged[0] = 2;
    memcpy(forged + 1, e[6].label, 32);
    memcpy(forged + 33, proof + 1, len - 1);
    assert_int_equal(msv_pt_verify_path(root, e[6].label, forged, len + 32, &found, NULL),
                     MSV_ERR_AUTH);
    /* the same leaf named for a label one bit away that the walk would not take */
    e[6].label[0] ^= 0x80;
    assert_int_equal(msv_pt_verify_path(root, e[6].label, forged, len + 32, &found, NULL),
                     MSV_ERR_AUTH);
    free(forged);
    free(proof);
    msv_ptree_free(t);
}

/* Builds a tree of the entries of seed 1 with indexes [0, n). */
static struct msv_ptree *tree_of(size_t n, struct msv_pt_entry *e)
{
    struct msv_ptree *t = NULL;

    assert_int_equal(msv_ptree_new(&t), MSV_OK);
    for (size_t i = 0; i < n; i++) {
        entry_of(1, (uint32_t)i, &e[i]);
        assert_int_equal(msv_ptree_insert(t, &e[i]), MSV_OK);
    }
    return t;
}

static void test_append_only(void **state)
{
    struct msv_pt_entry e[N_MAX], batch[N_MAX], dup[2];
    uint8_t before[32], after[32], one_root[32], *proof = NULL, *copy;
    size_t len = 0, added = 0;
    (void)state;

    for (size_t old = 0; old <= 20; old++) {
        for (size_t more = 0; more <= 20; more += 4) {
            struct msv_ptree *t = tree_of(old, e), *one = NULL;

            for (size_t i = 0; i < more; i++)
                entry_of(1, (uint32_t)(old + i), &batch[i]);
            assert_int_equal(msv_ptree_root(t, before), MSV_OK);
            assert_int_equal(msv_ptree_insert_batch(t, batch, more, &proof, &len), MSV_OK);
            assert_int_equal(msv_ptree_root(t, after), MSV_OK);
            /* the batch gives the tree that inserting one by one gives */
            one = tree_of(old + more, e);
            assert_int_equal(msv_ptree_root(one, one_root), MSV_OK);
            assert_memory_equal(one_root, after, 32);
            msv_ptree_free(one);
            assert_int_equal(msv_pt_verify_append(before, after, proof, len, &added), MSV_OK);
            assert_int_equal(added, more);
            if (more > 0) {
                /* truncated, extended, changed: refused */
                assert_int_not_equal(msv_pt_verify_append(before, after, proof, len - 1, &added),
                                     MSV_OK);
                copy = malloc(len + 1);
                assert_non_null(copy);
                memcpy(copy, proof, len);
                copy[len] = 0;
                assert_int_equal(msv_pt_verify_append(before, after, copy, len + 1, &added),
                                 MSV_ERR_PARSE);
                for (size_t i = 0; i < len; i += 7) {
                    memcpy(copy, proof, len);
                    copy[i] ^= 0x20;
                    assert_int_not_equal(msv_pt_verify_append(before, after, copy, len, &added),
                                         MSV_OK);
                }
                free(copy);
                /* a proof that does not start from the old root, or end at the new one */
                assert_int_equal(msv_pt_verify_append(after, after, proof, len, &added),
                                 MSV_ERR_AUTH);
                assert_int_equal(msv_pt_verify_append(before, before, proof, len, &added),
                                 MSV_ERR_AUTH);
            }
            free(proof);
            proof = NULL;
            msv_ptree_free(t);
        }
    }
    /* a batch that repeats a label, or adds one that is there, adds nothing */
    {
        struct msv_ptree *t = tree_of(5, e);

        assert_int_equal(msv_ptree_root(t, before), MSV_OK);
        entry_of(1, 30, &dup[0]);
        dup[1] = dup[0];
        assert_int_equal(msv_ptree_insert_batch(t, dup, 2, &proof, &len), MSV_ERR_EXISTS);
        dup[1] = e[3];
        dup[1].value[0] ^= 1;
        assert_int_equal(msv_ptree_insert_batch(t, dup, 2, &proof, &len), MSV_ERR_EXISTS);
        assert_int_equal(msv_ptree_root(t, after), MSV_OK);
        assert_memory_equal(before, after, 32);
        assert_int_equal(msv_ptree_size(t), 5);
        msv_ptree_free(t);
    }
}

/*
 * A server that changes an entry in place or removes one between epochs can only show a tree
 * without the old entry: whatever proof it makes from that tree does not start at the old root.
 */
static void test_append_only_attacks(void **state)
{
    struct msv_pt_entry e[N_MAX], batch[4], changed;
    uint8_t before[32], after[32], *proof = NULL;
    size_t len = 0, added = 0;
    (void)state;

    for (size_t victim = 0; victim < 12; victim++) {
        struct msv_ptree *honest = tree_of(12, e), *forged = NULL;

        assert_int_equal(msv_ptree_root(honest, before), MSV_OK);
        for (size_t i = 0; i < 4; i++)
            entry_of(1, (uint32_t)(12 + i), &batch[i]);
        /* changed in place: the forged tree holds the victim's label with another value */
        assert_int_equal(msv_ptree_new(&forged), MSV_OK);
        for (size_t i = 0; i < 12; i++) {
            if (i != victim)
                assert_int_equal(msv_ptree_insert(forged, &e[i]), MSV_OK);
        }
        changed = e[victim];
        changed.value[5] ^= 0x40;
        batch[3] = changed;
        assert_int_equal(msv_ptree_insert_batch(forged, batch, 4, &proof, &len), MSV_OK);
        assert_int_equal(msv_ptree_root(forged, after), MSV_OK);
        assert_int_equal(msv_pt_verify_append(before, after, proof, len, &added), MSV_ERR_AUTH);
        free(proof);
        msv_ptree_free(forged);
        /* removed: the forged tree lacks the victim, and grew by three */
        assert_int_equal(msv_ptree_new(&forged), MSV_OK);
        for (size_t i = 0; i < 12; i++) {
            if (i != victim)
                assert_int_equal(msv_ptree_insert(forged, &e[i]), MSV_OK);
        }
        assert_int_equal(msv_ptree_insert_batch(forged, batch, 3, &proof, &len), MSV_OK);
        assert_int_equal(msv_ptree_root(forged, after), MSV_OK);
        assert_int_equal(msv_pt_verify_append(before, after, proof, len, &added), MSV_ERR_AUTH);
        /* nor does the honest proof of the honest tree end at the forged root */
        free(proof);
        assert_int_equal(msv_ptree_insert_batch(honest, batch, 3, &proof, &len), MSV_OK);
        assert_int_equal(msv_pt_verify_append(before, after, proof, len, &added), MSV_ERR_AUTH);
        assert_int_equal(msv_ptree_root(honest, after), MSV_OK);
        assert_int_equal(msv_pt_verify_append(before, after, proof, len, &added), MSV_OK);
        free(proof);
        msv_ptree_free(forged);
        msv_ptree_free(honest);
    }
}

/* A run of steps: u32be n, then each step (a rotation's: the byte 0). */
struct run {
    uint8_t buf[64 * MSV_PT_STEP_MAX];
    size_t len;
};

static void run_start(struct run *r, size_t n)
{
    r->buf[0] = (uint8_t)(n >> 24);
    r->buf[1] = (uint8_t)(n >> 16);
    r->buf[2] = (uint8_t)(n >> 8);
    r->buf[3] = (uint8_t)n;
    r->len = 4;
}

static void run_add(struct run *r, const uint8_t *step, size_t len)
{
    assert_true(r->len + len <= sizeof(r->buf));
    memcpy(r->buf + r->len, step, len);
    r->len += len;
}

/*
 * The entries a run of steps adds, against the version-4 leaves a log read gave
 * (msv_pt_steps_match, the owner's monitor's and the auditor's): ten entries, every fourth
 * adding nothing; the run holds for their labels and values, is refused at the entry whose
 * wanted value differs (and holds when that entry has no leaf to match), and a run cut short or
 * one byte longer in its last step is refused as bytes.
 */
static void test_steps_match(void **state)
{
    static struct run run;
    struct msv_ptree *t = NULL;
    struct msv_pt_entry e;
    uint8_t want[10][64], has[10], *step = NULL;
    size_t len = 0, bad = 99;
    (void)state;

    assert_int_equal(msv_ptree_new(&t), MSV_OK);
    run_start(&run, 10);
    for (uint32_t i = 0; i < 10; i++) {
        has[i] = i % 4 != 1;
        if (!has[i]) {
            run_add(&run, (const uint8_t *)"", 1);
            continue;
        }
        entry_of(5, i, &e);
        memcpy(want[i], e.label, 32);
        memcpy(want[i] + 32, e.value, 32);
        assert_int_equal(msv_ptree_insert_step(t, &e, &step, &len), MSV_OK);
        run_add(&run, step, len);
        free(step);
        step = NULL;
    }
    assert_int_equal(
        msv_pt_steps_match(run.buf, run.len, 10, (const uint8_t(*)[64])want, has, &bad), MSV_OK);
    want[6][40] ^= 1;
    assert_int_equal(
        msv_pt_steps_match(run.buf, run.len, 10, (const uint8_t(*)[64])want, has, &bad),
        MSV_ERR_AUTH);
    assert_int_equal(bad, 6);
    has[6] = 0; /* a hidden entry: nothing to match */
    assert_int_equal(
        msv_pt_steps_match(run.buf, run.len, 10, (const uint8_t(*)[64])want, has, &bad), MSV_OK);
    assert_int_equal(
        msv_pt_steps_match(run.buf, run.len - 1, 10, (const uint8_t(*)[64])want, has, &bad),
        MSV_ERR_PARSE);
    assert_int_equal(msv_pt_steps_match(run.buf, 40, 10, (const uint8_t(*)[64])want, has, &bad),
                     MSV_ERR_PARSE);
    msv_ptree_free(t);
}

/*
 * Entry steps: 30 log entries, every seventh a rotation that adds nothing; any run of them
 * from any epoch checks out and ends at the tree's root; a run that does not fit the entries'
 * kinds, or that starts from another tree, is refused; so is any byte changed.
 */
static void test_entry_steps(void **state)
{
    static struct run run;
    struct msv_ptree *t = NULL;
    struct msv_pt_entry e;
    uint8_t roots[31][32], root[32], *steps[30], adds[30];
    size_t lens[30], bad = 0;
    enum msv_pt_step_fault fault;
    int have = 1;
    (void)state;

    assert_int_equal(msv_ptree_new(&t), MSV_OK);
    for (uint32_t i = 0; i < 30; i++) {
        assert_int_equal(msv_ptree_root(t, roots[i]), MSV_OK);
        adds[i] = i % 7 != 3;
        if (!adds[i]) {
            steps[i] = NULL;
            lens[i] = 0;
            continue;
        }
        entry_of(3, i, &e);
        assert_int_equal(msv_ptree_insert_step(t, &e, &steps[i], &lens[i]), MSV_OK);
        assert_true(lens[i] <= MSV_PT_STEP_MAX);
        /* a label already in the tree has no step */
        {
            uint8_t *again = NULL;
            size_t again_len = 0;

            assert_int_equal(msv_ptree_insert_step(t, &e, &again, &again_len), MSV_ERR_EXISTS);
            assert_null(again);
        }
    }
    assert_int_equal(msv_ptree_root(t, roots[30]), MSV_OK);
    for (size_t from = 0; from <= 30; from++) {
        for (size_t to = from; to <= 30; to++) {
            run_start(&run, to - from);
            for (size_t i = from; i < to; i++)
                run_add(&run, adds[i] ? steps[i] : (const uint8_t *)"", adds[i] ? lens[i] : 1);
            memcpy(root, roots[from], 32);
            have = 1;
            assert_int_equal(msv_pt_verify_steps(run.buf, run.len, adds + from, to - from, &have,
                                                 root, &bad, &fault),
                             MSV_OK);
            assert_memory_equal(root, roots[to], 32);
            /* an auditor that starts here without a root takes the first step's */
            memset(root, 0, 32);
            have = 0;
            assert_int_equal(msv_pt_verify_steps(run.buf, run.len, adds + from, to - from, &have,
                                                 root, &bad, &fault),
                             MSV_OK);
            if (have)
                assert_memory_equal(root, roots[to], 32);
            /* from another epoch's tree: refused where it first adds */
            if (from > 0 && from < to && adds[from] && adds[from - 1]) {
                memcpy(root, roots[from - 1], 32);
                have = 1;
                assert_int_equal(msv_pt_verify_steps(run.buf, run.len, adds + from, to - from,
                                                     &have, root, &bad, &fault),
                                 MSV_ERR_AUTH);
                assert_int_equal(fault, MSV_PT_STEP_OTHER_TREE);
                assert_int_equal(bad, 0);
            }
        }
    }
    /* the kinds must fit: a version that adds nothing, a rotation that adds */
    run_start(&run, 2);
    run_add(&run, steps[0], lens[0]);
    run_add(&run, steps[1], lens[1]);
    adds[1] = 0;
    memcpy(root, roots[0], 32);
    have = 1;
    assert_int_equal(msv_pt_verify_steps(run.buf, run.len, adds, 2, &have, root, &bad, &fault),
                     MSV_ERR_AUTH);
    assert_int_equal(fault, MSV_PT_STEP_ADDS);
    assert_int_equal(bad, 1);
    adds[1] = 1;
    run_start(&run, 2);
    run_add(&run, steps[0], lens[0]);
    run_add(&run, (const uint8_t *)"", 1);
    assert_int_equal(msv_pt_verify_steps(run.buf, run.len, adds, 2, &have, root, &bad, &fault),
                     MSV_ERR_AUTH);
    assert_int_equal(fault, MSV_PT_STEP_ADDS_NOTHING);
    /* any byte of a run changed: refused, or it builds another tree; shorter, longer: refused */
    run_start(&run, 5);
    for (size_t i = 0; i < 5; i++)
        run_add(&run, adds[i] ? steps[i] : (const uint8_t *)"", adds[i] ? lens[i] : 1);
    for (size_t i = 0; i < run.len; i++) {
        for (int b = 0; b < 8; b++) {
            msv_err err;

            run.buf[i] ^= (uint8_t)(1 << b);
            memcpy(root, roots[0], 32);
            have = 1;
            err = msv_pt_verify_steps(run.buf, run.len, adds, 5, &have, root, &bad, &fault);
            assert_true(err != MSV_OK || memcmp(root, roots[5], 32) != 0);
            run.buf[i] ^= (uint8_t)(1 << b);
        }
    }
    for (size_t cut = 0; cut < run.len; cut++) {
        memcpy(root, roots[0], 32);
        assert_int_equal(msv_pt_verify_steps(run.buf, cut, adds, 5, &have, root, &bad, &fault),
                         MSV_ERR_PARSE);
    }
    run.buf[run.len] = 0;
    assert_int_equal(msv_pt_verify_steps(run.buf, run.len + 1, adds, 5, &have, root, &bad, &fault),
                     MSV_ERR_PARSE);
    assert_int_equal(msv_pt_verify_steps(run.buf, run.len, adds, 4, &have, root, &bad, &fault),
                     MSV_ERR_PARSE);
    for (size_t i = 0; i < 30; i++)
        free(steps[i]);
    msv_ptree_free(t);
}

/*
 * A tree changed behind the steps' back (an entry's value changed in place, or the entry
 * removed): the next entry's step starts from a tree other than the one the steps built.
 */
static void test_entry_steps_attacks(void **state)
{
    struct msv_pt_entry e[12], next;
    uint8_t honest[32], *step = NULL, adds[1] = {1}, changed[32];
    size_t len = 0, bad = 0;
    enum msv_pt_step_fault fault;
    int have = 1;
    (void)state;

    entry_of(4, 100, &next);
    for (size_t victim = 0; victim < 12; victim++) {
        for (int remove = 0; remove < 2; remove++) {
            struct msv_ptree *t = NULL;
            uint8_t run[4 + MSV_PT_STEP_MAX] = {0, 0, 0, 1}, root[32];

            assert_int_equal(msv_ptree_new(&t), MSV_OK);
            for (uint32_t i = 0; i < 12; i++) {
                entry_of(4, i, &e[i]);
                assert_int_equal(msv_ptree_insert(t, &e[i]), MSV_OK);
            }
            assert_int_equal(msv_ptree_root(t, honest), MSV_OK);
            memcpy(changed, e[victim].value, 32);
            changed[0] ^= 1;
            assert_int_equal(msv_ptree_test_rewrite(&t, e[victim].label, remove ? NULL : changed),
                             MSV_OK);
            assert_int_equal(msv_ptree_size(t), remove ? 11 : 12);
            assert_int_equal(msv_ptree_insert_step(t, &next, &step, &len), MSV_OK);
            memcpy(run + 4, step, len);
            memcpy(root, honest, 32);
            have = 1;
            assert_int_equal(msv_pt_verify_steps(run, 4 + len, adds, 1, &have, root, &bad, &fault),
                             MSV_ERR_AUTH);
            assert_int_equal(fault, MSV_PT_STEP_OTHER_TREE);
            free(step);
            msv_ptree_free(t);
        }
    }
    /* a step that shows its label present rather than absent */
    {
        struct msv_ptree *t = NULL;
        uint8_t run[4 + MSV_PT_STEP_MAX] = {0, 0, 0, 1}, root[32], *path = NULL;
        int found = 0;

        assert_int_equal(msv_ptree_new(&t), MSV_OK);
        for (uint32_t i = 0; i < 12; i++)
            assert_int_equal(msv_ptree_insert(t, &e[i]), MSV_OK);
        assert_int_equal(msv_ptree_root(t, root), MSV_OK);
        assert_int_equal(msv_ptree_prove(t, e[3].label, &path, &len, &found), MSV_OK);
        assert_true(found);
        run[4] = 1;
        memcpy(run + 5, e[3].label, 32);
        memcpy(run + 37, e[3].value, 32);
        memcpy(run + 69, path, len);
        have = 1;
        assert_int_equal(msv_pt_verify_steps(run, 69 + len, adds, 1, &have, root, &bad, &fault),
                         MSV_ERR_AUTH);
        assert_int_equal(fault, MSV_PT_STEP_NOT_ABSENT);
        free(path);
        msv_ptree_free(t);
    }
}

/* Whether a lookup of w proves present a version the owner of v proves absent. */
static int shows_absent(uint32_t w, const uint32_t *absent, size_t na)
{
    uint32_t present[MSV_PT_PRESENT_MAX];
    size_t np = msv_pt_versions_present(w, present);

    for (size_t i = 0; i < np; i++) {
        for (size_t j = 0; j < na; j++) {
            if (present[i] == absent[j])
                return 1;
        }
    }
    return 0;
}

static void test_version_sets(void **state)
{
    uint32_t present[MSV_PT_PRESENT_MAX], absent[MSV_PT_ABSENT_MAX];
    /* versions near the ends of the four-bit digits and of every one-bit digit's */
    static const uint32_t far[] = {0xff,       0x100,      0xfff,      0x1000,     0x1fff,
                                   0x2000,     0x3fff,     0xffff,     0x10000,    0x3fffffff,
                                   0x40000000, 0x7fffffff, 0x80000000, 0xbfffffff, 0xc0000000,
                                   0xfffffffe, 0xffffffff, 0x12345678, 0x55555555, 0x1000fff};
    /* the owners' versions checked against every version up to 1,100 after theirs */
    static const uint32_t ranges[][2] = {
        {0, 1100}, {3900, 4300}, {8100, 8300}, {0xfff0, 0x10010}, {0xfffffc00, 0xffffffff}};
    (void)state;

    assert_int_equal(msv_pt_versions_present(0, present), 0);
    /* 0x139 (313): 0x139, 0x130, 0x100 */
    assert_int_equal(msv_pt_versions_present(0x139, present), 3);
    assert_int_equal(present[0], 0x139);
    assert_int_equal(present[1], 0x130);
    assert_int_equal(present[2], 0x100);
    /* 15 is one digit: with v + 1, a lookup at 15 proves two versions; 255 three, 4095 four */
    assert_int_equal(msv_pt_versions_present(15, present), 1);
    assert_int_equal(msv_pt_versions_present(255, present), 2);
    assert_int_equal(msv_pt_versions_present(4095, present), 3);
    /* 0x5001: 0x5001, 0x5000 (bits 14 and 12), 0x4000 */
    assert_int_equal(msv_pt_versions_present(0x5001, present), 3);
    assert_int_equal(present[1], 0x5000);
    assert_int_equal(present[2], 0x4000);
    assert_int_equal(msv_pt_versions_present(0xffffffff, present), MSV_PT_PRESENT_MAX);
    /* 5: 6 to 15; 16, 32, ..., 240; 256, ..., 3840; then 4096, 8192, ..., 2^31 */
    assert_int_equal(msv_pt_versions_absent(5, absent), 60);
    assert_int_equal(absent[0], 6);
    assert_int_equal(absent[9], 15);
    assert_int_equal(absent[10], 16);
    assert_int_equal(absent[24], 240);
    assert_int_equal(absent[25], 256);
    assert_int_equal(absent[40], 4096);
    assert_int_equal(absent[59], 0x80000000);
    /* 0x1234: 0x1235 to 0x123f; 0x1240 ...; 0x1300 ...; bit 12 is set: 0x2000, 0x4000, ... */
    assert_int_equal(msv_pt_versions_absent(0x1234, absent), 11 + 12 + 13 + 19);
    assert_int_equal(absent[35], 0x1f00);
    assert_int_equal(absent[36], 0x2000);
    assert_int_equal(absent[37], 0x4000);
    assert_int_equal(msv_pt_versions_absent(0, absent), MSV_PT_ABSENT_MAX);
    assert_int_equal(msv_pt_versions_absent(UINT32_MAX, absent), 0);
    /* a version w later than v always proves present a version the owner of v proves absent */
    for (size_t r = 0; r < sizeof(ranges) / sizeof(ranges[0]); r++) {
        for (uint64_t v = ranges[r][0]; v < ranges[r][1] + sizeof(far) / sizeof(far[0]); v++) {
            uint32_t at = v < ranges[r][1] ? (uint32_t)v : far[v - ranges[r][1]];
            size_t na = msv_pt_versions_absent(at, absent), np;

            for (uint64_t w = (uint64_t)at + 1; w <= UINT32_MAX && w < (uint64_t)at + 1100; w++)
                assert_true(shows_absent((uint32_t)w, absent, na));
            /* far later versions too, including those of other top digits */
            for (size_t f = 0; f < sizeof(far) / sizeof(far[0]); f++)
                assert_true(far[f] <= at || shows_absent(far[f], absent, na));
            /* the owner's own versions are never among those it proves absent, which ascend */
            for (size_t j = 0; j < na; j++) {
                assert_true(absent[j] > at);
                assert_true(j == 0 || absent[j] > absent[j - 1]);
            }
            /* and a lookup's versions are its own or earlier, none twice */
            np = msv_pt_versions_present(at, present);
            for (size_t i = 0; i < np; i++)
                assert_true(present[i] <= at && (i == 0 || present[i] < present[i - 1]));
        }
    }
}

struct dir {
    struct msv_ptree *t;
    uint8_t sk[32], pk[32], root[32], opening[8][32];
    uint8_t data[8][16];
};

/* Adds version v of handle with its data, as the directory does. */
static void add_version(struct dir *d, const char *handle, uint32_t v)
{
    struct msv_pt_entry e;
    uint8_t alpha[300], pi[MSV_VRF_PROOF_LEN], beta[MSV_VRF_OUTPUT_LEN];
    size_t alpha_len = 0;

    assert_int_equal(msv_pt_vrf_input(handle, v, alpha, sizeof(alpha), &alpha_len), MSV_OK);
    assert_int_equal(msv_vrf_prove(MSV_PT_VRF_SUITE, d->sk, alpha, alpha_len, pi), MSV_OK);
    assert_int_equal(msv_vrf_proof_to_hash(MSV_PT_VRF_SUITE, pi, beta), MSV_OK);
    msv_pt_label(beta, e.label);
    assert_int_equal(msv_pt_commit(d->opening[v % 8], handle, v, d->data[v % 8], 16, e.value),
                     MSV_OK);
    assert_int_equal(msv_ptree_insert(d->t, &e), MSV_OK);
    assert_int_equal(msv_ptree_root(d->t, d->root), MSV_OK);
}

static msv_err lookup(struct dir *d, enum msv_pt_proof_kind kind, const char *handle,
                      uint32_t shown, const uint8_t *data, uint32_t *got, size_t *size)
{
    uint8_t *proof = NULL;
    size_t len = 0;
    msv_err err;

    assert_int_equal(msv_ptree_prove_versions(d->t, kind, d->sk, handle, shown,
                                              d->opening[shown % 8], &proof, &len),
                     MSV_OK);
    if (size != NULL)
        *size = len;
    err =
        msv_pt_verify_versions(d->root, d->pk, kind, handle, data, data ? 16 : 0, proof, len, got);
    if (err == MSV_OK) {
        size_t data_len = data ? 16 : 0;

        /* changed or cut in any place: refused */
        for (size_t i = 0; i < len; i += 1 + len / 97) {
            proof[i] ^= 4;
            assert_int_not_equal(msv_pt_verify_versions(d->root, d->pk, kind, handle, data,
                                                        data_len, proof, len, got),
                                 MSV_OK);
            proof[i] ^= 4;
        }
        assert_int_equal(msv_pt_verify_versions(d->root, d->pk, kind, handle, data, data_len, proof,
                                                len - 1, got),
                         MSV_ERR_PARSE);
    }
    free(proof);
    return err;
}

/* A directory with a fresh VRF key and users handles user0..., each at version 1. */
static void dir_init(struct dir *d, int users)
{
    char name[32];

    memset(d, 0, sizeof(*d));
    for (int i = 0; i < 8; i++) {
        randombytes_buf(d->opening[i], 32);
        randombytes_buf(d->data[i], 16);
    }
    assert_int_equal(msv_vrf_keygen(MSV_PT_VRF_SUITE, d->sk, d->pk), MSV_OK);
    assert_int_equal(msv_ptree_new(&d->t), MSV_OK);
    for (int i = 0; i < users; i++) {
        snprintf(name, sizeof(name), "user%d@example.org", i);
        add_version(d, name, 1);
    }
}

static void test_versions(void **state)
{
    struct dir d;
    uint8_t other_pk[32], other_sk[32];
    uint32_t got = 99;
    (void)state;

    dir_init(&d, 20);
    assert_int_equal(msv_vrf_keygen(MSV_PT_VRF_SUITE, other_sk, other_pk), MSV_OK);
    /* a handle never added: version 0, proven absent */
    assert_int_equal(lookup(&d, MSV_PT_LOOKUP, "alice@example.org", 0, NULL, &got, NULL), MSV_OK);
    assert_int_equal(got, 0);
    for (uint32_t v = 1; v <= 5; v++) {
        add_version(&d, "alice@example.org", v);
        assert_int_equal(lookup(&d, MSV_PT_LOOKUP, "alice@example.org", v, d.data[v], &got, NULL),
                         MSV_OK);
        assert_int_equal(got, v);
        assert_int_equal(lookup(&d, MSV_PT_HISTORY, "alice@example.org", v, d.data[v], &got, NULL),
                         MSV_OK);
        /* each version shown to its owner alone: present with its own data, not another's */
        for (uint32_t w = 1; w <= v; w++) {
            assert_int_equal(
                lookup(&d, MSV_PT_PRESENCE, "alice@example.org", w, d.data[w], &got, NULL), MSV_OK);
            assert_int_equal(got, w);
            assert_int_equal(lookup(&d, MSV_PT_PRESENCE, "alice@example.org", w,
                                    d.data[w == 1 ? 2 : 1], &got, NULL),
                             MSV_ERR_AUTH);
        }
        /* an older version presented as the newest: v is present, so that fails */
        assert_int_equal(lookup(&d, MSV_PT_LOOKUP, "alice@example.org", v - 1,
                                v > 1 ? d.data[v - 1] : NULL, &got, NULL),
                         MSV_ERR_AUTH);
    }
    /* the right version with other data, under another handle, or another VRF key */
    assert_int_equal(lookup(&d, MSV_PT_LOOKUP, "alice@example.org", 5, d.data[4], &got, NULL),
                     MSV_ERR_AUTH);
    assert_int_equal(lookup(&d, MSV_PT_LOOKUP, "user3@example.org", 5, d.data[5], &got, NULL),
                     MSV_ERR_AUTH);
    memcpy(d.pk, other_pk, 32);
    assert_int_equal(lookup(&d, MSV_PT_LOOKUP, "alice@example.org", 5, d.data[5], &got, NULL),
                     MSV_ERR_AUTH);
    assert_int_equal(msv_vrf_public_key(MSV_PT_VRF_SUITE, d.sk, d.pk), MSV_OK);
    /*
     * a skipped version: 7 added without 6 can be shown (its lookup proves 7 present, 8 absent),
     * and its owner at version 5, who proves 6 to 15 absent, sees it
     */
    add_version(&d, "alice@example.org", 7);
    assert_int_equal(lookup(&d, MSV_PT_LOOKUP, "alice@example.org", 7, d.data[7], &got, NULL),
                     MSV_OK);
    assert_int_equal(lookup(&d, MSV_PT_HISTORY, "alice@example.org", 5, d.data[5], &got, NULL),
                     MSV_ERR_AUTH);
    /* nor can its owner be shown version 6: it is not there */
    assert_int_equal(lookup(&d, MSV_PT_PRESENCE, "alice@example.org", 6, d.data[6], &got, NULL),
                     MSV_ERR_AUTH);
    assert_int_equal(lookup(&d, MSV_PT_PRESENCE, "alice@example.org", 7, d.data[7], &got, NULL),
                     MSV_OK);
    /* a version whose lookup names a missing one cannot be shown: 0x13 needs 0x10 */
    add_version(&d, "alice@example.org", 0x13);
    assert_int_equal(
        lookup(&d, MSV_PT_LOOKUP, "alice@example.org", 0x13, d.data[0x13 % 8], &got, NULL),
        MSV_ERR_AUTH);
    msv_ptree_free(d.t);
}

/*
 * Multi-path proofs: for trees of 0 to 300 entries and sets of 1 to 6 labels (present ones,
 * absent ones, absent ones whose walk ends at one of the set's present leaves, a label twice),
 * the proof says of each label what its own path proof says, is no longer than their sum, and
 * is refused with any byte changed, cut short, for another root or for other labels.
 */
static void test_multi_paths(void **state)
{
    static const size_t sizes[] = {0, 1, 2, 3, 40, 300};
    (void)state;

    for (size_t si = 0; si < sizeof(sizes) / sizeof(sizes[0]); si++) {
        struct msv_ptree *t = NULL;
        struct msv_pt_entry e;
        uint8_t root[32];

        assert_int_equal(msv_ptree_new(&t), MSV_OK);
        for (uint32_t i = 0; i < sizes[si]; i++) {
            entry_of(9, i, &e);
            assert_int_equal(msv_ptree_insert(t, &e), MSV_OK);
        }
        assert_int_equal(msv_ptree_root(t, root), MSV_OK);
        for (uint32_t round = 0; round < 24; round++) {
            uint8_t labels[6][32], values[6][32], value[32], *proof = NULL, *path = NULL;
            size_t n = 1 + round % 6, len = 0, sum = 0, path_len = 0;
            int found[6], found1 = 0;

            for (size_t j = 0; j < n; j++) {
                entry_of(9, (round * 7 + (uint32_t)j * 13) % (uint32_t)(sizes[si] + 3), &e);
                memcpy(labels[j], e.label, 32);
                if (j % 3 == 2)
                    labels[j][31] ^= 0x40; /* absent, its walk most likely at a neighbour */
            }
            if (n > 2 && round % 5 == 0)
                memcpy(labels[n - 1], labels[0], 32);
            assert_int_equal(
                msv_ptree_prove_multi(t, (const uint8_t(*)[32])labels, n, &proof, &len), MSV_OK);
            assert_int_equal(msv_pt_verify_multi(root, (const uint8_t(*)[32])labels, n, proof, len,
                                                 found, values),
                             MSV_OK);
            for (size_t j = 0; j < n; j++) {
                assert_int_equal(msv_ptree_prove(t, labels[j], &path, &path_len, &found1), MSV_OK);
                assert_int_equal(
                    msv_pt_verify_path(root, labels[j], path, path_len, &found1, value), MSV_OK);
                assert_int_equal(found[j], found1);
                if (found1)
                    assert_memory_equal(values[j], value, 32);
                sum += path_len;
                free(path);
            }
            assert_true(len <= sum);
            for (size_t i = 0; i < len; i++) {
                for (int b = 0; b < 8; b += 7) {
                    proof[i] ^= (uint8_t)(1u << b);
                    assert_int_not_equal(msv_pt_verify_multi(root, (const uint8_t(*)[32])labels, n,
                                                             proof, len, found, values),
                                         MSV_OK);
                    proof[i] ^= (uint8_t)(1u << b);
                }
                assert_int_not_equal(msv_pt_verify_multi(root, (const uint8_t(*)[32])labels, n,
                                                         proof, i, found, values),
                                     MSV_OK);
            }
            root[5] ^= 1;
            assert_int_equal(msv_pt_verify_multi(root, (const uint8_t(*)[32])labels, n, proof, len,
                                                 found, values),
                             MSV_ERR_AUTH);
            root[5] ^= 1;
            /* the proof of other labels: a present label's last bit changed */
            for (size_t j = 0; j < n; j++) {
                if (!found[j])
                    continue;
                labels[j][31] ^= 0x01;
                assert_int_not_equal(msv_pt_verify_multi(root, (const uint8_t(*)[32])labels, n,
                                                         proof, len, found, values),
                                     MSV_OK);
                break;
            }
            free(proof);
        }
        msv_ptree_free(t);
    }
}

/*
 * An absence in a multi-path proof naming a leaf of the tree that the label's walk does not end
 * at is refused, although the leaves and siblings are all true: the proof of two present labels
 * P and Q, with Q's descriptor turned into "X is absent, its walk ends at Q".
 */
static void test_multi_absence_elsewhere(void **state)
{
    struct msv_ptree *t = NULL;
    struct msv_pt_entry e, q;
    uint8_t root[32], labels[2][32], values[2][32], *proof = NULL, *forged, *path = NULL;
    size_t len = 0, path_len = 0;
    int found[2], found1 = 0, tried = 0;
    (void)state;

    assert_int_equal(msv_ptree_new(&t), MSV_OK);
    for (uint32_t i = 0; i < 64; i++) {
        entry_of(11, i, &e);
        assert_int_equal(msv_ptree_insert(t, &e), MSV_OK);
    }
    assert_int_equal(msv_ptree_root(t, root), MSV_OK);
    entry_of(11, 3, &e);
    entry_of(11, 40, &q);
    memcpy(labels[0], e.label, 32);
    memcpy(labels[1], q.label, 32);
    assert_int_equal(msv_ptree_prove_multi(t, (const uint8_t(*)[32])labels, 2, &proof, &len),
                     MSV_OK);
    /* descriptors: type 1 || value of P; type 1 || value of Q; then the nodes */
    forged = malloc(len + 32);
    assert_non_null(forged);
    memcpy(forged, proof, 33);
    forged[33] = 2;
    memcpy(forged + 34, q.label, 32);
    memcpy(forged + 66, proof + 34, len - 34);
    for (uint32_t x = 0; x < 64 && tried < 8; x++) {
        randombytes_buf(labels[1], 32);
        assert_int_equal(msv_ptree_prove(t, labels[1], &path, &path_len, &found1), MSV_OK);
        assert_false(found1);
        if (memcmp(path + 1, q.label, 32) != 0) {
            tried++;
            assert_int_equal(msv_pt_verify_multi(root, (const uint8_t(*)[32])labels, 2, forged,
                                                 len + 32, found, values),
                             MSV_ERR_AUTH);
        } else {
            /* the walk does end at Q: then the forged proof is the truth */
            assert_int_equal(msv_pt_verify_multi(root, (const uint8_t(*)[32])labels, 2, forged,
                                                 len + 32, found, values),
                             MSV_OK);
        }
        free(path);
    }
    assert_int_equal(tried, 8);
    free(forged);
    free(proof);
    msv_ptree_free(t);
}

/*
 * A version proof (format 4) with any byte changed in any of two bits, cut at any length, or
 * one byte longer is refused; so are formats 1 (first byte the kind alone), 2 (kind + 16) and 3
 * (kind + 32), and later ones (kind + 64, kind + 240) told as another release's. A lookup at
 * version 17 (three versions: 17, 16, 18) and an owner's history at 2^32 - 2 (present 2^32 - 2,
 * absent 2^32 - 1: two versions, where 17 would take 59 VRF verifications per changed byte), and
 * one version shown to its owner (presence of 9 alone).
 */
static void test_version_proof_every_byte(void **state)
{
    static const enum msv_pt_proof_kind kinds[3] = {MSV_PT_LOOKUP, MSV_PT_HISTORY, MSV_PT_PRESENCE};
    struct dir d;
    (void)state;

    dir_init(&d, 30);
    for (uint32_t v = 1; v <= 17; v++)
        add_version(&d, "alice@example.org", v);
    add_version(&d, "bob@example.org", UINT32_MAX - 1);
    for (int k = 0; k < 3; k++) {
        const char *handle = k != 1 ? "alice@example.org" : "bob@example.org";
        uint32_t v = k == 0 ? 17 : k == 1 ? UINT32_MAX - 1 : 9;
        uint8_t *proof = NULL, *longer;
        size_t len = 0;
        uint32_t got = 0;

        assert_int_equal(msv_ptree_prove_versions(d.t, kinds[k], d.sk, handle, v, d.opening[v % 8],
                                                  &proof, &len),
                         MSV_OK);
        assert_true(len <= MSV_PT_VERSION_PROOF_MAX);
        assert_int_equal(proof[0], 48 + kinds[k]);
        assert_int_equal(msv_pt_verify_versions(d.root, d.pk, kinds[k], handle, d.data[v % 8], 16,
                                                proof, len, &got),
                         MSV_OK);
        assert_int_equal(got, v);
        for (size_t i = 0; i < len; i++) {
            for (int b = 0; b < 8; b += 7) {
                proof[i] ^= (uint8_t)(1u << b);
                assert_int_not_equal(msv_pt_verify_versions(d.root, d.pk, kinds[k], handle,
                                                            d.data[v % 8], 16, proof, len, &got),
                                     MSV_OK);
                proof[i] ^= (uint8_t)(1u << b);
            }
            assert_int_not_equal(msv_pt_verify_versions(d.root, d.pk, kinds[k], handle,
                                                        d.data[v % 8], 16, proof, i, &got),
                                 MSV_OK);
        }
        longer = malloc(len + 1);
        assert_non_null(longer);
        memcpy(longer, proof, len);
        longer[len] = 0;
        assert_int_equal(msv_pt_verify_versions(d.root, d.pk, kinds[k], handle, d.data[v % 8], 16,
                                                longer, len + 1, &got),
                         MSV_ERR_PARSE);
        /* another release's format: told apart from tampering, never accepted */
        proof[0] = (uint8_t)kinds[k];
        assert_int_equal(msv_pt_verify_versions(d.root, d.pk, kinds[k], handle, d.data[v % 8], 16,
                                                proof, len, &got),
                         MSV_ERR_UNSUPPORTED);
        /* formats 2 and 3, and later ones (5 and 16) */
        for (int f = 16; f <= 240; f += f == 32 ? 32 : f == 64 ? 176 : 16) {
            proof[0] = (uint8_t)(f + kinds[k]);
            assert_int_equal(msv_pt_verify_versions(d.root, d.pk, kinds[k], handle, d.data[v % 8],
                                                    16, proof, len, &got),
                             MSV_ERR_UNSUPPORTED);
        }
        free(longer);
        free(proof);
    }
    msv_ptree_free(d.t);
}

/*
 * A forged later version that a lookup could show, with the versions its lookup names: 8 and 7
 * (each proves itself alone, 8 absent for 7), 16, 0x17 (with 16), 4096 (bit 12 alone) and
 * 0x1001 (with 4096). The owner at 5 proves each of 7, 8, 16 and 4096 absent and sees it.
 */
static void test_forged_marker_seen_by_owner(void **state)
{
    static const uint32_t forged[][2] = {{8, 0},     {7, 0},    {16, 0},
                                         {16, 0x17}, {4096, 0}, {4096, 0x1001}};
    struct dir d;
    uint32_t got = 0;
    (void)state;

    memset(&d, 0, sizeof(d));
    assert_int_equal(msv_vrf_keygen(MSV_PT_VRF_SUITE, d.sk, d.pk), MSV_OK);
    for (size_t f = 0; f < sizeof(forged) / sizeof(forged[0]); f++) {
        uint32_t shown = forged[f][1] ? forged[f][1] : forged[f][0];

        assert_int_equal(msv_ptree_new(&d.t), MSV_OK);
        for (uint32_t v = 1; v <= 5; v++)
            add_version(&d, "bob@example.org", v);
        assert_int_equal(lookup(&d, MSV_PT_HISTORY, "bob@example.org", 5, d.data[5], &got, NULL),
                         MSV_OK);
        add_version(&d, "bob@example.org", forged[f][0]);
        if (forged[f][1])
            add_version(&d, "bob@example.org", forged[f][1]);
        assert_int_equal(
            lookup(&d, MSV_PT_LOOKUP, "bob@example.org", shown, d.data[shown % 8], &got, NULL),
            MSV_OK);
        assert_int_equal(got, shown);
        assert_int_equal(lookup(&d, MSV_PT_HISTORY, "bob@example.org", 5, d.data[5], &got, NULL),
                         MSV_ERR_AUTH);
        msv_ptree_free(d.t);
    }
}

/* The log key's signature of an epoch root binds the size and the root. */
static void test_epoch_signature(void **state)
{
    uint8_t pk[32], sk[64], other_pk[32], other_sk[64], root[32], sig[64];
    (void)state;

    crypto_sign_keypair(pk, sk);
    crypto_sign_keypair(other_pk, other_sk);
    randombytes_buf(root, sizeof(root));
    assert_int_equal(msv_pt_epoch_sign(sk, 42, root, sig), MSV_OK);
    assert_int_equal(msv_pt_epoch_verify(pk, 42, root, sig), MSV_OK);
    assert_int_equal(msv_pt_epoch_verify(pk, 43, root, sig), MSV_ERR_AUTH);
    assert_int_equal(msv_pt_epoch_verify(other_pk, 42, root, sig), MSV_ERR_AUTH);
    root[31] ^= 1;
    assert_int_equal(msv_pt_epoch_verify(pk, 42, root, sig), MSV_ERR_AUTH);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_roots_and_paths),
        cmocka_unit_test(test_absence_naming_the_label),
        cmocka_unit_test(test_append_only),
        cmocka_unit_test(test_append_only_attacks),
        cmocka_unit_test(test_entry_steps),
        cmocka_unit_test(test_steps_match),
        cmocka_unit_test(test_entry_steps_attacks),
        cmocka_unit_test(test_version_sets),
        cmocka_unit_test(test_versions),
        cmocka_unit_test(test_forged_marker_seen_by_owner),
        cmocka_unit_test(test_multi_paths),
        cmocka_unit_test(test_multi_absence_elsewhere),
        cmocka_unit_test(test_version_proof_every_byte),
        cmocka_unit_test(test_epoch_signature),
    };

    if (msv_init() != MSV_OK)
        return 1;
    return cmocka_run_group_tests(tests, NULL, NULL);
}
