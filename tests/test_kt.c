/*
 * The transparency log's building blocks: Merkle roots against the
 * certificate-transparency test tree (RFC 6962 hashing), every inclusion and
 * consistency proof of trees up to 70 leaves verified and, changed in any
 * way, refused; leaf encoding round trips and refusals; signed tree heads.
 */
#include <stdarg.h>
#include <setjmp.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <sodium.h>

#include "missive/crypto.h"
#include "missive/kt.h"
#include "missive/ptree.h"
#include "missive/vrf.h"
#include "missive/util.h"

/* The eight leaves of the certificate-transparency reference tests, and the roots of their
 * prefixes. */
static const char *const ct_leaves[8] = {"",
                                         "00",
                                         "10",
                                         "2021",
                                         "3031",
                                         "40414243",
                                         "5051525354555657",
                                         "606162636465666768696a6b6c6d6e6f"};
static const char *const ct_roots[8] = {
    "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
    "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
    "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
    "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
    "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
    "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
    "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
    "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328"};

static void test_reference_roots(void **state)
{
    struct msv_merkle *t = NULL;
    uint8_t leaf[16], h[32], root[32], want[32];
    size_t n = 0;

    (void)state;
    assert_int_equal(msv_merkle_new(&t), MSV_OK);
    assert_int_equal(msv_merkle_root(t, 0, root), MSV_OK);
    assert_int_equal(
        msv_hex_decode("e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855", want, 32,
                       &n),
        MSV_OK);
    assert_memory_equal(root, want, 32);
    for (int i = 0; i < 8; i++) {
        assert_int_equal(msv_hex_decode(ct_leaves[i], leaf, sizeof(leaf), &n), MSV_OK);
        msv_kt_leaf_hash(leaf, n, h);
        assert_int_equal(msv_merkle_append(t, h), MSV_OK);
        assert_int_equal(msv_hex_decode(ct_roots[i], want, 32, &n), MSV_OK);
        assert_int_equal(msv_merkle_root(t, (uint64_t)i + 1, root), MSV_OK);
        assert_memory_equal(root, want, 32);
    }
    /* earlier sizes are still answered after growth */
    assert_int_equal(msv_merkle_root(t, 3, root), MSV_OK);
    assert_int_equal(msv_hex_decode(ct_roots[2], want, 32, &n), MSV_OK);
    assert_memory_equal(root, want, 32);
    assert_int_equal(msv_merkle_root(t, 9, root), MSV_ERR_INVALID);
    msv_merkle_free(t);
}

#define TREE 70

static struct msv_merkle *tree_of(size_t size, uint8_t (*leaf_hashes)[32])
{
    struct msv_merkle *t = NULL;

    assert_int_equal(msv_merkle_new(&t), MSV_OK);
    for (size_t i = 0; i < size; i++) {
        uint8_t leaf[8];

        memcpy(leaf, &i, sizeof(leaf));
        msv_kt_leaf_hash(leaf, sizeof(leaf), leaf_hashes[i]);
        assert_int_equal(msv_merkle_append(t, leaf_hashes[i]), MSV_OK);
    }
    return t;
}

static void test_inclusion_proofs(void **state)
{
    static uint8_t leaves[TREE][32], proof[MSV_KT_PROOF_MAX][32];
    struct msv_merkle *t = tree_of(TREE, leaves);

    (void)state;
    for (uint64_t size = 1; size <= TREE; size++) {
        uint8_t root[32];

        assert_int_equal(msv_merkle_root(t, size, root), MSV_OK);
        for (uint64_t i = 0; i < size; i++) {
            size_t n = 0;

            assert_int_equal(msv_merkle_inclusion(t, i, size, proof, &n), MSV_OK);
            assert_int_equal(msv_merkle_verify_inclusion(leaves[i], i, size, proof, n, root),
                             MSV_OK);
            /* another leaf, index, size or a changed or shortened path: refused */
            assert_int_equal(
                msv_merkle_verify_inclusion(leaves[(i + 1) % TREE], i, size, proof, n, root),
                MSV_ERR_AUTH);
            if (size > 1)
                assert_int_equal(
                    msv_merkle_verify_inclusion(leaves[i], (i + 1) % size, size, proof, n, root),
                    MSV_ERR_AUTH);
            if (size < TREE) { /* the grown tree's head: this path does not lead to it */
                uint8_t grown[32];

                assert_int_equal(msv_merkle_root(t, size + 1, grown), MSV_OK);
                assert_int_equal(
                    msv_merkle_verify_inclusion(leaves[i], i, size + 1, proof, n, grown),
                    MSV_ERR_AUTH);
            }
            if (n > 0) {
                assert_int_equal(
                    msv_merkle_verify_inclusion(leaves[i], i, size, proof, n - 1, root),
                    MSV_ERR_AUTH);
                proof[n - 1][5] ^= 1;
                assert_int_equal(msv_merkle_verify_inclusion(leaves[i], i, size, proof, n, root),
                                 MSV_ERR_AUTH);
            }
        }
    }
    assert_int_equal(msv_merkle_verify_inclusion(leaves[0], 0, 0, proof, 0, leaves[0]),
                     MSV_ERR_AUTH);
    msv_merkle_free(t);
}

static void test_consistency_proofs(void **state)
{
    static uint8_t leaves[TREE][32], proof[MSV_KT_PROOF_MAX][32];
    struct msv_merkle *t = tree_of(TREE, leaves);
    uint8_t roots[TREE + 1][32];

    (void)state;
    for (uint64_t s = 0; s <= TREE; s++)
        assert_int_equal(msv_merkle_root(t, s, roots[s]), MSV_OK);
    for (uint64_t size = 1; size <= TREE; size++) {
        for (uint64_t old = 0; old <= size; old++) {
            size_t n = 0;

            assert_int_equal(msv_merkle_consistency(t, old, size, proof, &n), MSV_OK);
            assert_true(n <= MSV_KT_PROOF_MAX);
            assert_int_equal(
                msv_merkle_verify_consistency(old, size, roots[old], roots[size], proof, n),
                MSV_OK);
            if (old == 0)
                continue;
            /* a forked history: the old root is not a prefix of this tree */
            if (old < size)
                assert_int_equal(
                    msv_merkle_verify_consistency(old, size, roots[old - 1], roots[size], proof, n),
                    MSV_ERR_AUTH);
            assert_int_equal(
                msv_merkle_verify_consistency(old, size, roots[old], roots[size - 1], proof, n),
                MSV_ERR_AUTH);
            if (n > 0) {
                proof[0][0] ^= 0x80;
                assert_int_equal(
                    msv_merkle_verify_consistency(old, size, roots[old], roots[size], proof, n),
                    MSV_ERR_AUTH);
            }
        }
    }
    /* a head that shrinks is never consistent */
    assert_int_equal(msv_merkle_verify_consistency(5, 4, roots[5], roots[4], proof, 0),
                     MSV_ERR_AUTH);
    assert_int_equal(msv_merkle_consistency(t, 5, 4, proof, &(size_t){0}), MSV_ERR_INVALID);
    msv_merkle_free(t);
}

static void test_leaf_encoding(void **state)
{
    static const uint8_t id_a[3] = {1, 2, 3}, id_b[40] = {9};
    struct msv_kt_entry e = {.time_ms = 1234567, .handle = "alice@example.org", .n_devices = 2};
    struct msv_kt_entry back;
    uint8_t *leaf = NULL;
    size_t len = 0;

    (void)state;
    e.devices[0] = (struct msv_kt_device){7, 3, id_a, sizeof(id_a), {0}};
    e.devices[1] = (struct msv_kt_device){12, 1, id_b, sizeof(id_b), {0}};
    assert_int_equal(msv_kt_leaf_encode(&e, &leaf, &len), MSV_OK);
    assert_int_equal(msv_kt_leaf_parse(leaf, len, &back), MSV_OK);
    assert_int_equal(back.time_ms, 1234567);
    assert_string_equal(back.handle, "alice@example.org");
    assert_int_equal(back.n_devices, 2);
    assert_int_equal(back.devices[1].device_id, 12);
    assert_int_equal(back.devices[1].suite, 1);
    assert_memory_equal(back.devices[1].identity, id_b, sizeof(id_b));
    /* every truncation and a trailing byte are refused */
    for (size_t cut = 0; cut < len; cut++)
        assert_int_equal(msv_kt_leaf_parse(leaf, cut, &back), MSV_ERR_PARSE);
    leaf = realloc(leaf, len + 1);
    assert_non_null(leaf);
    leaf[len] = 0;
    assert_int_equal(msv_kt_leaf_parse(leaf, len + 1, &back), MSV_ERR_PARSE);
    leaf[0] = 2; /* an unknown version */
    assert_int_equal(msv_kt_leaf_parse(leaf, len, &back), MSV_ERR_PARSE);
    free(leaf);
    /* devices out of order, or twice, have no encoding */
    e.devices[1].device_id = 7;
    assert_int_equal(msv_kt_leaf_encode(&e, &leaf, &len), MSV_ERR_INVALID);
    e.devices[1].device_id = 12;
    e.handle[0] = '\0';
    assert_int_equal(msv_kt_leaf_encode(&e, &leaf, &len), MSV_ERR_INVALID);
}

/* A tombstone (docs/transparency.md): version 3, a handle and no devices; nothing else. */
static void test_tombstone_leaf(void **state)
{
    static const uint8_t want[] = {3, 0, 0, 0, 0, 0, 0, 0, 42, 5, 'a', '@', 'x', '.', 'y', 0};
    static const uint8_t id[3] = {1, 2, 3};
    struct msv_kt_entry e = {.deleted = 1, .time_ms = 42, .handle = "a@x.y"}, back;
    uint8_t *leaf = NULL, *with_device = NULL;
    size_t len = 0, with_len = 0;

    (void)state;
    assert_int_equal(msv_kt_leaf_encode(&e, &leaf, &len), MSV_OK);
    assert_int_equal(len, sizeof(want));
    assert_memory_equal(leaf, want, sizeof(want));
    assert_int_equal(msv_kt_leaf_parse(leaf, len, &back), MSV_OK);
    assert_true(back.deleted);
    assert_int_equal(back.n_devices, 0);
    assert_string_equal(back.handle, "a@x.y");
    free(leaf);
    /* a tombstone that lists devices has no encoding and does not parse */
    e.n_devices = 1;
    e.devices[0] = (struct msv_kt_device){7, 3, id, sizeof(id), {0}};
    assert_int_equal(msv_kt_leaf_encode(&e, &leaf, &len), MSV_ERR_INVALID);
    e.deleted = 0;
    assert_int_equal(msv_kt_leaf_encode(&e, &with_device, &with_len), MSV_OK);
    with_device[0] = 3;
    assert_int_equal(msv_kt_leaf_parse(with_device, with_len, &back), MSV_ERR_PARSE);
    free(with_device);
    /* a device set's leaf is no tombstone */
    e.n_devices = 0;
    assert_int_equal(msv_kt_leaf_encode(&e, &leaf, &len), MSV_OK);
    assert_int_equal(msv_kt_leaf_parse(leaf, len, &back), MSV_OK);
    assert_false(back.deleted);
    free(leaf);
}

static void test_signed_heads(void **state)
{
    uint8_t pk[32], sk[64], other[32], other_sk[64];
    struct msv_kt_head h = {.size = 42, .time_ms = 1700000000000};

    (void)state;
    crypto_sign_keypair(pk, sk);
    crypto_sign_keypair(other, other_sk);
    memset(h.root, 0xab, sizeof(h.root));
    assert_int_equal(msv_kt_head_sign(&h, sk), MSV_OK);
    assert_int_equal(msv_kt_head_verify(&h, pk), MSV_OK);
    assert_int_equal(msv_kt_head_verify(&h, other), MSV_ERR_AUTH);
    h.size++;
    assert_int_equal(msv_kt_head_verify(&h, pk), MSV_ERR_AUTH);
    h.size--;
    h.time_ms++;
    assert_int_equal(msv_kt_head_verify(&h, pk), MSV_ERR_AUTH);
    h.time_ms--;
    h.root[31] ^= 1;
    assert_int_equal(msv_kt_head_verify(&h, pk), MSV_ERR_AUTH);
}

/* A rotation statement holds for exactly its old key, new key and size. */
static void test_key_rotation(void **state)
{
    uint8_t old_pk[32], old_sk[64], new_pk[32], new_sk[64], sig[64];

    (void)state;
    crypto_sign_keypair(old_pk, old_sk);
    crypto_sign_keypair(new_pk, new_sk);
    assert_int_equal(msv_kt_rotation_sign(old_sk, new_pk, 9, sig), MSV_OK);
    assert_int_equal(msv_kt_rotation_verify(old_pk, new_pk, 9, sig), MSV_OK);
    assert_int_equal(msv_kt_rotation_verify(old_pk, new_pk, 10, sig), MSV_ERR_AUTH);
    assert_int_equal(msv_kt_rotation_verify(new_pk, new_pk, 9, sig), MSV_ERR_AUTH);
    new_pk[0] ^= 1;
    assert_int_equal(msv_kt_rotation_verify(old_pk, new_pk, 9, sig), MSV_ERR_AUTH);
    new_pk[0] ^= 1;
    sig[63] ^= 0x10;
    assert_int_equal(msv_kt_rotation_verify(old_pk, new_pk, 9, sig), MSV_ERR_AUTH);
    sig[63] ^= 0x10;
    /* signed by the new key instead of the old: not a rotation */
    assert_int_equal(msv_kt_rotation_sign(new_sk, new_pk, 9, sig), MSV_OK);
    assert_int_equal(msv_kt_rotation_verify(old_pk, new_pk, 9, sig), MSV_ERR_AUTH);
}

/* A log for the rotation tests: its leaves (any bytes, or rotation entries) and tree. */
struct rot_log {
    uint8_t *leaves[12];
    size_t lens[12];
    size_t size;
    struct msv_merkle *tree;
    uint8_t path[12][MSV_KT_PROOF_MAX][32];
    struct msv_kt_rotation_proof proofs[12];
};

static void rot_log_add(struct rot_log *l, uint8_t *leaf, size_t len)
{
    uint8_t h[32];

    if (l->tree == NULL)
        assert_int_equal(msv_merkle_new(&l->tree), MSV_OK);
    l->leaves[l->size] = leaf;
    l->lens[l->size++] = len;
    msv_kt_leaf_hash(leaf, len, h);
    assert_int_equal(msv_merkle_append(l->tree, h), MSV_OK);
}

static void rot_log_filler(struct rot_log *l)
{
    uint8_t *b = malloc(4);

    assert_non_null(b);
    memcpy(b, "leaf", 4);
    b[3] = (uint8_t)l->size;
    rot_log_add(l, b, 4);
}

/* Appends old_sk's rotation to new_pk, signed by signer_sk, at the log's next index (its size
 * claims size leaves, the right number when 0). */
static void rot_log_rotate_at(struct rot_log *l, const uint8_t old_sk[64], const uint8_t new_pk[32],
                              const uint8_t signer_sk[64], uint64_t size)
{
    struct msv_kt_rotation r = {.time_ms = 1000, .size = size ? size : l->size + 1};
    uint8_t *leaf = NULL;
    size_t len = 0;

    crypto_sign_ed25519_sk_to_pk(r.old_key, old_sk);
    memcpy(r.new_key, new_pk, 32);
    assert_int_equal(msv_kt_rotation_sign(signer_sk, new_pk, r.size, r.signature), MSV_OK);
    assert_int_equal(msv_kt_rotation_leaf_encode(&r, &leaf, &len), MSV_OK);
    rot_log_add(l, leaf, len);
}

static void rot_log_rotate(struct rot_log *l, const uint8_t old_sk[64], const uint8_t new_pk[32],
                           const uint8_t signer_sk[64])
{
    rot_log_rotate_at(l, old_sk, new_pk, signer_sk, 0);
}

/* The head of the log's first size leaves signed by sk, and the proof of leaf index in it. */
static struct msv_kt_head rot_head(struct rot_log *l, uint64_t size, const uint8_t sk[64])
{
    struct msv_kt_head h = {.size = size, .time_ms = 5000};

    assert_int_equal(msv_merkle_root(l->tree, size, h.root), MSV_OK);
    assert_int_equal(msv_kt_head_sign(&h, sk), MSV_OK);
    return h;
}

static const struct msv_kt_rotation_proof *rot_proof(struct rot_log *l, uint64_t index,
                                                     uint64_t size)
{
    struct msv_kt_rotation_proof *p = &l->proofs[index];

    p->leaf = l->leaves[index];
    p->leaf_len = l->lens[index];
    p->index = index;
    assert_int_equal(msv_merkle_inclusion(l->tree, index, size, l->path[index], &p->n_path),
                     MSV_OK);
    p->path = (const uint8_t(*)[32])l->path[index];
    return p;
}

static void rot_log_free(struct rot_log *l)
{
    for (size_t i = 0; i < l->size; i++)
        free(l->leaves[i]);
    msv_merkle_free(l->tree);
}

/*
 * Following the log key: a head is trusted under the pinned key, or under a
 * key that a chain of rotation entries, each signed by the key before and
 * proven in that head, leads to; nothing else (an unannounced key, a rotation
 * not signed by the key in force, a statement not in the log, a head under
 * the old key once the client moved).
 */
static void test_key_rotation_follow(void **state)
{
    uint8_t k1[32], s1[64], k2[32], s2[64], k3[32], s3[64], out[32];
    struct msv_kt_rotation_proof chain[2];
    struct rot_log l = {0};
    struct msv_kt_head h;

    (void)state;
    crypto_sign_keypair(k1, s1);
    crypto_sign_keypair(k2, s2);
    crypto_sign_keypair(k3, s3);
    for (int i = 0; i < 3; i++)
        rot_log_filler(&l);
    rot_log_rotate(&l, s1, k2, s1); /* index 3: heads of 4 leaves on are k2's */
    rot_log_filler(&l);
    rot_log_rotate(&l, s2, k3, s2); /* index 5 */
    rot_log_filler(&l);             /* 7 leaves */

    /* no rotation: the pinned key, and only it */
    h = rot_head(&l, 3, s1);
    assert_int_equal(msv_kt_rotation_follow(k1, NULL, 0, &h, out), MSV_OK);
    assert_memory_equal(out, k1, 32);
    h = rot_head(&l, 5, s2);
    assert_int_equal(msv_kt_rotation_follow(k1, NULL, 0, &h, out), MSV_ERR_AUTH);

    /* one rotation, then two, each proven in the head */
    chain[0] = *rot_proof(&l, 3, 5);
    assert_int_equal(msv_kt_rotation_follow(k1, chain, 1, &h, out), MSV_OK);
    assert_memory_equal(out, k2, 32);
    h = rot_head(&l, 7, s3);
    chain[0] = *rot_proof(&l, 3, 7);
    chain[1] = *rot_proof(&l, 5, 7);
    memset(out, 0, 32);
    assert_int_equal(msv_kt_rotation_follow(k1, chain, 2, &h, out), MSV_OK);
    assert_memory_equal(out, k3, 32);
    assert_int_equal(msv_kt_rotation_follow(k2, chain + 1, 1, &h, out), MSV_OK);
    /* out of order, or one step left out */
    {
        struct msv_kt_rotation_proof swapped[2] = {chain[1], chain[0]};

        assert_int_equal(msv_kt_rotation_follow(k1, swapped, 2, &h, out), MSV_ERR_AUTH);
        assert_int_equal(msv_kt_rotation_follow(k1, chain + 1, 1, &h, out), MSV_ERR_AUTH);
    }
    /* the head signed by a key before the last rotation the chain names */
    h = rot_head(&l, 7, s2);
    assert_int_equal(msv_kt_rotation_follow(k1, chain, 2, &h, out), MSV_ERR_AUTH);

    /* rollback: once the device moved to k2, a head under k1 is refused, chain or not */
    h = rot_head(&l, 5, s1);
    chain[0] = *rot_proof(&l, 3, 5);
    assert_int_equal(msv_kt_rotation_follow(k2, NULL, 0, &h, out), MSV_ERR_AUTH);
    assert_int_equal(msv_kt_rotation_follow(k2, chain, 1, &h, out), MSV_ERR_AUTH);
    assert_int_equal(msv_kt_rotation_follow(k1, chain, 1, &h, out), MSV_ERR_AUTH);

    /* the statement not in the log: a head of the tree before it, a wrong index or path */
    {
        struct msv_kt_rotation r = {.time_ms = 1000, .size = 3};
        uint8_t *leaf = NULL;
        size_t len = 0;

        /* signed as it should be, for index 2, but index 2 of the log holds another leaf */
        memcpy(r.old_key, k1, 32);
        memcpy(r.new_key, k2, 32);
        assert_int_equal(msv_kt_rotation_sign(s1, k2, 3, r.signature), MSV_OK);
        assert_int_equal(msv_kt_rotation_leaf_encode(&r, &leaf, &len), MSV_OK);
        h = rot_head(&l, 3, s2);
        chain[0] = *rot_proof(&l, 2, 3);
        chain[0].leaf = leaf;
        chain[0].leaf_len = len;
        assert_int_equal(msv_kt_rotation_follow(k1, chain, 1, &h, out), MSV_ERR_AUTH);
        free(leaf);
    }
    h = rot_head(&l, 5, s2);
    chain[0] = *rot_proof(&l, 3, 5);
    chain[0].index = 4;
    assert_int_equal(msv_kt_rotation_follow(k1, chain, 1, &h, out), MSV_ERR_AUTH);
    chain[0] = *rot_proof(&l, 3, 5);
    l.path[3][0][0] ^= 1;
    assert_int_equal(msv_kt_rotation_follow(k1, chain, 1, &h, out), MSV_ERR_AUTH);
    l.path[3][0][0] ^= 1;
    assert_int_equal(msv_kt_rotation_follow(k1, chain, 1, &h, out), MSV_OK);
    rot_log_free(&l);

    /* a new key not signed by the old one, though in the log */
    memset(&l, 0, sizeof(l));
    rot_log_filler(&l);
    rot_log_rotate(&l, s1, k2, s2); /* names k1 as the old key, signed by k2 */
    rot_log_filler(&l);
    h = rot_head(&l, 3, s2);
    chain[0] = *rot_proof(&l, 1, 3);
    assert_int_equal(msv_kt_rotation_follow(k1, chain, 1, &h, out), MSV_ERR_AUTH);
    /* a device set leaf (or any other bytes) is no rotation */
    chain[0] = *rot_proof(&l, 0, 3);
    chain[0].index = 1;
    assert_int_equal(msv_kt_rotation_follow(k1, chain, 1, &h, out), MSV_ERR_AUTH);
    assert_memory_equal(out, k2, 32); /* untouched by every refusal */
    rot_log_free(&l);

    /* entries that misstate themselves: another old key than the signer's, a size that is not
     * their place in the log, a chain against the log's order */
    memset(&l, 0, sizeof(l));
    rot_log_rotate_at(&l, s3, k2, s1, 0); /* says k3 -> k2; k1 signed k1 -> k2 */
    rot_log_rotate_at(&l, s1, k2, s1, 1); /* index 1, claims 1 leaf */
    rot_log_rotate(&l, s2, k3, s2);       /* index 2: k2 -> k3 */
    rot_log_rotate(&l, s1, k2, s1);       /* index 3: k1 -> k2 */
    h = rot_head(&l, 4, s2);
    chain[0] = *rot_proof(&l, 0, 4);
    assert_int_equal(msv_kt_rotation_follow(k1, chain, 1, &h, out), MSV_ERR_AUTH);
    chain[0] = *rot_proof(&l, 1, 4);
    assert_int_equal(msv_kt_rotation_follow(k1, chain, 1, &h, out), MSV_ERR_AUTH);
    chain[0] = *rot_proof(&l, 3, 4);
    assert_int_equal(msv_kt_rotation_follow(k1, chain, 1, &h, out), MSV_OK);
    h = rot_head(&l, 4, s3);
    chain[0] = *rot_proof(&l, 3, 4);
    chain[1] = *rot_proof(&l, 2, 4);
    assert_int_equal(msv_kt_rotation_follow(k1, chain, 2, &h, out), MSV_ERR_AUTH);
    rot_log_free(&l);
}

/* A rotation entry round-trips; any other length or version is refused. */
static void test_rotation_leaf(void **state)
{
    struct msv_kt_rotation r = {.time_ms = 77, .size = 9}, back;
    uint8_t *leaf = NULL;
    size_t len = 0;

    (void)state;
    randombytes_buf(r.old_key, 32);
    randombytes_buf(r.new_key, 32);
    randombytes_buf(r.signature, 64);
    assert_int_equal(msv_kt_rotation_leaf_encode(&r, &leaf, &len), MSV_OK);
    assert_int_equal(len, 145);
    assert_int_equal(msv_kt_rotation_leaf_parse(leaf, len, &back), MSV_OK);
    assert_memory_equal(&r, &back, sizeof(r));
    assert_int_equal(msv_kt_rotation_leaf_parse(leaf, len - 1, &back), MSV_ERR_PARSE);
    leaf[0] = 1;
    assert_int_equal(msv_kt_rotation_leaf_parse(leaf, len, &back), MSV_ERR_PARSE);
    leaf[0] = 2;
    leaf[1] = 0x80; /* a time past INT64_MAX */
    assert_int_equal(msv_kt_rotation_leaf_parse(leaf, len, &back), MSV_ERR_PARSE);
    {
        struct msv_kt_entry e;

        leaf[1] = 0;
        assert_int_equal(msv_kt_leaf_parse(leaf, len, &e), MSV_ERR_PARSE);
    }
    free(leaf);
}

/*
 * Version-4 leaves and the cut-over entry (I1): one encoding each, anything else refused; a
 * leaf opens only with the data, version, opening and VRF proof it was made from (I2).
 */
static void test_v4_leaf(void **state)
{
    static struct msv_kt_entry e, opened;
    uint8_t sk[MSV_VRF_SECRET_KEY_LEN], pk[MSV_VRF_PUBLIC_KEY_LEN], other[MSV_VRF_PUBLIC_KEY_LEN];
    uint8_t alpha[300], pi[MSV_VRF_PROOF_LEN], beta[MSV_VRF_OUTPUT_LEN], opening[32];
    uint8_t leaf[MSV_KT_V4_LEAF_LEN + 1], cut[MSV_KT_CUTOVER_LEAF_LEN + 1], *data = NULL;
    struct msv_kt_v4_leaf l = {.time_ms = 1700000000123}, back;
    size_t alpha_len = 0, data_len = 0;

    (void)state;
    /* the data: bob's device set */
    e.time_ms = l.time_ms;
    snprintf(e.handle, sizeof(e.handle), "bob@example.org");
    e.n_devices = 1;
    e.devices[0] = (struct msv_kt_device){
        .device_id = 7, .suite = 3, .identity = (const uint8_t *)"key", .identity_len = 3};
    assert_int_equal(msv_kt_leaf_encode(&e, &data, &data_len), MSV_OK);
    assert_int_equal(msv_vrf_keygen(MSV_PT_VRF_SUITE, alpha, other), MSV_OK);
    assert_int_equal(msv_vrf_keygen(MSV_PT_VRF_SUITE, sk, pk), MSV_OK);
    assert_int_equal(msv_pt_vrf_input("bob@example.org", 2, alpha, sizeof(alpha), &alpha_len),
                     MSV_OK);
    assert_int_equal(msv_vrf_prove(MSV_PT_VRF_SUITE, sk, alpha, alpha_len, pi), MSV_OK);
    assert_int_equal(msv_vrf_proof_to_hash(MSV_PT_VRF_SUITE, pi, beta), MSV_OK);
    msv_pt_label(beta, l.label);
    randombytes_buf(opening, sizeof(opening));
    assert_int_equal(msv_pt_commit(opening, "bob@example.org", 2, data, data_len, l.value), MSV_OK);
    msv_kt_v4_leaf_encode(&l, leaf);
    assert_int_equal(leaf[0], 4);
    assert_int_equal(msv_kt_v4_leaf_parse(leaf, MSV_KT_V4_LEAF_LEN, &back), MSV_OK);
    assert_memory_equal(&back, &l, sizeof(l));
    /* cut, extended, another version byte, a time past INT64_MAX: not a version-4 leaf */
    assert_int_equal(msv_kt_v4_leaf_parse(leaf, MSV_KT_V4_LEAF_LEN - 1, &back), MSV_ERR_PARSE);
    assert_int_equal(msv_kt_v4_leaf_parse(leaf, MSV_KT_V4_LEAF_LEN + 1, &back), MSV_ERR_PARSE);
    assert_int_equal(msv_kt_leaf_parse(leaf, MSV_KT_V4_LEAF_LEN, &opened), MSV_ERR_PARSE);
    leaf[1] = 0x80;
    assert_int_equal(msv_kt_v4_leaf_parse(leaf, MSV_KT_V4_LEAF_LEN, &back), MSV_ERR_PARSE);
    leaf[1] = 0;
    leaf[0] = 1;
    assert_int_equal(msv_kt_v4_leaf_parse(leaf, MSV_KT_V4_LEAF_LEN, &back), MSV_ERR_PARSE);
    leaf[0] = 4;
    msv_kt_cutover_leaf_encode(l.time_ms, cut);
    assert_int_equal(msv_kt_cutover_leaf_parse(cut, MSV_KT_CUTOVER_LEAF_LEN), MSV_OK);
    assert_int_equal(msv_kt_cutover_leaf_parse(cut, MSV_KT_CUTOVER_LEAF_LEN - 1), MSV_ERR_PARSE);
    assert_int_equal(msv_kt_cutover_leaf_parse(cut, MSV_KT_CUTOVER_LEAF_LEN + 1), MSV_ERR_PARSE);
    cut[9] = 3;
    assert_int_equal(msv_kt_cutover_leaf_parse(cut, MSV_KT_CUTOVER_LEAF_LEN), MSV_ERR_PARSE);
    assert_int_equal(msv_kt_leaf_parse(cut, MSV_KT_CUTOVER_LEAF_LEN, &opened), MSV_ERR_PARSE);
    /* it opens with what made it, and with nothing else */
    assert_int_equal(
        msv_kt_v4_open(pk, leaf, MSV_KT_V4_LEAF_LEN, data, data_len, 2, opening, pi, &opened),
        MSV_OK);
    assert_string_equal(opened.handle, "bob@example.org");
    assert_int_equal(opened.devices[0].device_id, 7);
    assert_int_equal(
        msv_kt_v4_open(pk, leaf, MSV_KT_V4_LEAF_LEN, data, data_len, 3, opening, pi, &opened),
        MSV_ERR_AUTH);
    assert_int_equal(
        msv_kt_v4_open(other, leaf, MSV_KT_V4_LEAF_LEN, data, data_len, 2, opening, pi, &opened),
        MSV_ERR_AUTH);
    /* any byte of the data, the leaf, the opening or the VRF proof changed */
    {
        struct {
            uint8_t *bytes;
            size_t len;
        } parts[] = {{data, data_len}, {leaf, MSV_KT_V4_LEAF_LEN}, {opening, 32}, {pi, 80}};

        for (size_t p = 0; p < 4; p++) {
            for (size_t i = 0; i < parts[p].len; i++) {
                parts[p].bytes[i] ^= 1;
                assert_int_equal(msv_kt_v4_open(pk, leaf, MSV_KT_V4_LEAF_LEN, data, data_len, 2,
                                                opening, pi, &opened),
                                 MSV_ERR_AUTH);
                parts[p].bytes[i] ^= 1;
            }
        }
    }
    free(data);
}

/* ---- signed device lists (docs/transparency.md, "Signed device lists") --------------------- */

struct devlist_keys {
    struct msv_identity *id[5];
    uint8_t sig[5][MSV_KT_APPROVAL_SIG_MAX];
};

/* d: device id with the keys of identity k, no approval yet */
static void set_record(struct msv_kt_device *d, uint64_t device_id, const struct msv_identity *k)
{
    size_t len = 0;
    const uint8_t *pub = msv_public_identity_bytes(msv_identity_public(k), &len);

    memset(d, 0, sizeof(*d));
    d->device_id = device_id;
    d->suite = (uint32_t)msv_public_identity_suite(msv_identity_public(k));
    d->identity = pub;
    d->identity_len = len;
}

/* signs d's approval as kind, by signer (approver id approver_id for kind 2) */
static void sign_record(struct msv_kt_device *d, uint8_t kind, const struct msv_identity *signer,
                        uint64_t approver_id, uint8_t sig[MSV_KT_APPROVAL_SIG_MAX])
{
    struct msv_public_identity *pub = NULL;
    uint8_t hash[32];
    size_t len = 0;

    assert_int_equal(
        msv_public_identity_parse((enum msv_suite)d->suite, d->identity, d->identity_len, &pub),
        MSV_OK);
    msv_public_identity_hash(pub, hash);
    msv_public_identity_free(pub);
    assert_int_equal(msv_kt_approval_sign(signer, kind, d->device_id, hash, approver_id, sig, &len),
                     MSV_OK);
    d->approval =
        (struct msv_kt_approval){kind, kind == MSV_KT_APPROVED ? approver_id : 0, sig, len};
}

/*
 * alice's set: device 3 (A) registered the account, 5 (B, an ecies device) was approved by A
 * and removed after approving 9 (C): listed 3 and 9, chain record 5.
 */
static void alice_set(struct devlist_keys *k, struct msv_kt_entry *e)
{
    memset(e, 0, sizeof(*e));
    e->time_ms = 99;
    snprintf(e->handle, sizeof(e->handle), "alice@example.org");
    e->signed_list = 1;
    e->n_devices = 2;
    e->n_chain = 1;
    set_record(&e->devices[0], 3, k->id[0]);
    sign_record(&e->devices[0], MSV_KT_ROOT, k->id[0], 0, k->sig[0]);
    set_record(&e->chain[0], 5, k->id[1]);
    sign_record(&e->chain[0], MSV_KT_APPROVED, k->id[0], 3, k->sig[1]);
    set_record(&e->devices[1], 9, k->id[2]);
    sign_record(&e->devices[1], MSV_KT_APPROVED, k->id[1], 5, k->sig[2]);
}

static void expect_chains(const struct msv_kt_entry *e, size_t n_signed, size_t n_unsigned,
                          size_t n_unapproved)
{
    struct msv_kt_devlist r;

    assert_int_equal(msv_kt_devlist_check(e, &r), MSV_OK);
    assert_int_equal(r.n_signed, n_signed);
    assert_int_equal(r.n_unsigned, n_unsigned);
    assert_int_equal(r.n_unapproved, n_unapproved);
}

/* A signed set encodes one way, round-trips, and every chain checks out. */
static void test_signed_list_encoding(void **state)
{
    struct devlist_keys *k = *state;
    static struct msv_kt_entry e, back;
    struct msv_kt_devlist r;
    uint8_t *leaf = NULL, *again = NULL;
    size_t len = 0, again_len = 0;

    alice_set(k, &e);
    assert_int_equal(msv_kt_leaf_encode(&e, &leaf, &len), MSV_OK);
    assert_int_equal(leaf[0], 6);
    assert_int_equal(msv_kt_leaf_parse(leaf, len, &back), MSV_OK);
    assert_true(back.signed_list);
    assert_int_equal(back.n_devices, 2);
    assert_int_equal(back.n_chain, 1);
    assert_int_equal(back.devices[1].approval.kind, MSV_KT_APPROVED);
    assert_int_equal(back.devices[1].approval.approver, 5);
    assert_int_equal(msv_kt_leaf_encode(&back, &again, &again_len), MSV_OK);
    assert_int_equal(again_len, len);
    assert_memory_equal(again, leaf, len);
    free(again);
    assert_int_equal(msv_kt_devlist_check(&back, &r), MSV_OK);
    assert_int_equal(r.n_signed, 2);
    assert_int_equal(r.chain[1], MSV_KT_CHAIN_SIGNED);
    assert_true(r.has_root);
    assert_int_equal(r.root_kind, MSV_KT_ROOT);
    assert_int_equal(r.root_id, 3);
    /* every truncation, a trailing byte, an unknown kind do not parse */
    for (size_t cut = 0; cut < len; cut++)
        assert_int_equal(msv_kt_leaf_parse(leaf, cut, &back), MSV_ERR_PARSE);
    leaf = realloc(leaf, len + 1);
    assert_non_null(leaf);
    leaf[len] = 0;
    assert_int_equal(msv_kt_leaf_parse(leaf, len + 1, &back), MSV_ERR_PARSE);
    /* the first device's kind byte: after version, time, handle, count, id, suite, identity */
    {
        size_t at =
            1 + 8 + 1 + strlen("alice@example.org") + 1 + 8 + 1 + 2 + e.devices[0].identity_len;

        assert_int_equal(leaf[at], MSV_KT_ROOT);
        leaf[at] = 4;
        assert_int_equal(msv_kt_leaf_parse(leaf, len, &back), MSV_ERR_PARSE);
    }
    free(leaf);
    /* no encoding for: a chain record with a listed id, kind 0 with a signature, no devices */
    e.chain[0].device_id = 9;
    assert_int_equal(msv_kt_leaf_encode(&e, &leaf, &len), MSV_ERR_INVALID);
    alice_set(k, &e);
    e.devices[0].approval.kind = MSV_KT_UNSIGNED;
    assert_int_equal(msv_kt_leaf_encode(&e, &leaf, &len), MSV_ERR_INVALID);
    alice_set(k, &e);
    e.n_devices = 0;
    e.n_chain = 0;
    assert_int_equal(msv_kt_leaf_encode(&e, &leaf, &len), MSV_ERR_INVALID);
    /* a version-6 set with no signed record is a version-1 set: neither encodes nor parses */
    alice_set(k, &e);
    e.n_chain = 0;
    e.n_devices = 1;
    e.devices[0].approval = (struct msv_kt_approval){0};
    assert_int_equal(msv_kt_leaf_encode(&e, &leaf, &len), MSV_ERR_INVALID);
    {
        static const uint8_t unsigned_only[] = {6, 0, 0, 0, 0, 0, 0, 0, 1, 3, 'a', '@', 'b', 1,
                                                0, 0, 0, 0, 0, 0, 0, 7, 3, 0, 1,   'k', 0,   0};

        assert_int_equal(msv_kt_leaf_parse(unsigned_only, sizeof(unsigned_only), &back),
                         MSV_ERR_PARSE);
        e.signed_list = 0;
        assert_int_equal(msv_kt_leaf_encode(&e, &leaf, &len), MSV_OK);
        assert_int_equal(leaf[0], 1);
        free(leaf);
    }
    /* a version-1 set is all unsigned */
    alice_set(k, &e);
    e.signed_list = 0;
    e.n_chain = 0;
    expect_chains(&e, 0, 2, 0);
}

/* What a dishonest directory can do to a signed set, each refused by the check. */
static void test_signed_list_attacks(void **state)
{
    struct devlist_keys *k = *state;
    static struct msv_kt_entry e;
    uint8_t forged[MSV_KT_APPROVAL_SIG_MAX];
    struct msv_kt_devlist r;

    /* a device inserted with no approval: unsigned, not signed */
    alice_set(k, &e);
    e.n_devices = 3;
    set_record(&e.devices[2], 12, k->id[3]);
    expect_chains(&e, 2, 1, 0);
    assert_int_equal(msv_kt_devlist_check(&e, &r), MSV_OK);
    assert_int_equal(r.end[2], 12); /* its chain ends at itself: new to a sender, refused */
    assert_int_equal(r.end[1], 3);
    /* ... with an approval it signed itself as if by device 3 */
    sign_record(&e.devices[2], MSV_KT_APPROVED, k->id[3], 3, forged);
    expect_chains(&e, 2, 0, 1);
    /* ... naming an approver the value does not hold, or itself */
    sign_record(&e.devices[2], MSV_KT_APPROVED, k->id[0], 4, forged);
    expect_chains(&e, 2, 0, 1);
    sign_record(&e.devices[2], MSV_KT_APPROVED, k->id[3], 12, forged);
    expect_chains(&e, 2, 0, 1);
    /* device 9's approval replayed for another id, and for id 9 with other keys */
    alice_set(k, &e);
    e.n_devices = 3;
    set_record(&e.devices[2], 12, k->id[3]);
    e.devices[2].approval = e.devices[1].approval;
    expect_chains(&e, 2, 0, 1);
    alice_set(k, &e);
    {
        struct msv_kt_approval a = e.devices[1].approval;

        set_record(&e.devices[1], 9, k->id[3]);
        e.devices[1].approval = a;
    }
    expect_chains(&e, 1, 0, 1);
    /* the removed approver's key changed in its chain record */
    alice_set(k, &e);
    {
        struct msv_kt_approval a = e.chain[0].approval;

        set_record(&e.chain[0], 5, k->id[3]);
        e.chain[0].approval = a;
    }
    expect_chains(&e, 1, 0, 1);
    /* a recovery shown as a root: its signature names the kind */
    alice_set(k, &e);
    sign_record(&e.devices[0], MSV_KT_RECOVERY, k->id[0], 0, forged);
    assert_int_equal(msv_kt_devlist_check(&e, &r), MSV_OK);
    assert_int_equal(r.root_kind, MSV_KT_RECOVERY);
    e.devices[0].approval.kind = MSV_KT_ROOT;
    expect_chains(&e, 0, 0, 2);
    /* re-rooted: a new self-signed device in place of device 3: another root */
    alice_set(k, &e);
    set_record(&e.devices[0], 3, k->id[3]);
    sign_record(&e.devices[0], MSV_KT_ROOT, k->id[3], 0, forged);
    assert_int_equal(msv_kt_devlist_check(&e, &r), MSV_OK);
    assert_int_equal(r.n_signed, 1);
    assert_int_equal(r.n_unapproved, 1); /* device 5's approval was by the old device 3 */
    assert_int_equal(r.root_id, 3);
    {
        struct msv_public_identity *pub = NULL;
        uint8_t hash[32];

        assert_int_equal(msv_public_identity_dup(msv_identity_public(k->id[0]), &pub), MSV_OK);
        msv_public_identity_hash(pub, hash);
        msv_public_identity_free(pub);
        assert_memory_not_equal(r.root_hash, hash, 32);
    }
    /* two roots in one set; a chain record no chain passes through */
    alice_set(k, &e);
    e.n_devices = 3;
    set_record(&e.devices[2], 12, k->id[3]);
    sign_record(&e.devices[2], MSV_KT_ROOT, k->id[3], 0, forged);
    assert_int_equal(msv_kt_devlist_check(&e, &r), MSV_ERR_AUTH);
    alice_set(k, &e);
    e.n_devices = 1;
    assert_int_equal(msv_kt_devlist_check(&e, &r), MSV_ERR_AUTH);
    /* a cycle: 5 approved by 9 and 9 by 5, both chain records' keys real */
    alice_set(k, &e);
    e.n_devices = 1;
    e.devices[0] = e.devices[1];
    e.devices[0].device_id = 9;
    set_record(&e.devices[0], 9, k->id[2]);
    sign_record(&e.devices[0], MSV_KT_APPROVED, k->id[1], 5, k->sig[2]);
    sign_record(&e.chain[0], MSV_KT_APPROVED, k->id[2], 9, forged);
    expect_chains(&e, 0, 0, 1);
}

#define LINE_RECORDS 130

/* n records in one line: record 0 the root, each next approved by the one before (ids 100..). */
static void line_records(size_t n, struct msv_kt_device *rec, struct msv_identity **ids,
                         uint8_t (*sigs)[MSV_KT_APPROVAL_SIG_MAX])
{
    for (size_t i = 0; i < n; i++) {
        assert_int_equal(msv_identity_generate(MSV_SUITE_CLASSIC, 0, &ids[i]), MSV_OK);
        set_record(&rec[i], 100 + i, ids[i]);
        if (i == 0)
            sign_record(&rec[i], MSV_KT_ROOT, ids[i], 0, sigs[i]);
        else
            sign_record(&rec[i], MSV_KT_APPROVED, ids[i - 1], 100 + i - 1, sigs[i]);
    }
}

/*
 * The longest checkable set, 64 listed devices in one line behind 64 chain records, costs one
 * signature check per record (128), not one per step of every device's chain (over 4,000).
 */
static void test_devlist_check_verifies_once(void **state)
{
    static struct msv_kt_entry e;
    static struct msv_kt_device rec[LINE_RECORDS];
    static struct msv_identity *ids[LINE_RECORDS];
    static uint8_t sigs[LINE_RECORDS][MSV_KT_APPROVAL_SIG_MAX];
    struct msv_kt_devlist r;

    (void)state;
    line_records(128, rec, ids, sigs);
    memset(&e, 0, sizeof(e));
    snprintf(e.handle, sizeof(e.handle), "alice@example.org");
    e.signed_list = 1;
    e.n_chain = 64;
    memcpy(e.chain, rec, 64 * sizeof(rec[0]));
    e.n_devices = 64;
    memcpy(e.devices, rec + 64, 64 * sizeof(rec[0]));
    assert_int_equal(msv_kt_devlist_check(&e, &r), MSV_OK);
    assert_int_equal(r.n_signed, 64);
    assert_int_equal(r.n_verified, 128);
    /* a broken link is checked once too: every device after it is unapproved */
    rec[70].approval.sig_len--;
    memcpy(e.devices, rec + 64, 64 * sizeof(rec[0]));
    assert_int_equal(msv_kt_devlist_check(&e, &r), MSV_OK);
    assert_int_equal(r.n_signed, 6);
    assert_int_equal(r.n_unapproved, 58);
    assert_true(r.n_verified <= 128);
    for (size_t i = 0; i < 128; i++)
        msv_identity_free(ids[i]);
}

/*
 * A device record's suite byte is untrusted: a public identity parsed for a suite past the known
 * ones is refused (it was shifted past an unsigned int's bits, undefined behaviour; found by
 * fuzz_devlist).
 */
static void test_identity_parse_unknown_suite(void **state)
{
    struct devlist_keys *k = *state;
    struct msv_public_identity *pub = NULL;
    size_t len = 0;
    const uint8_t *bytes = msv_public_identity_bytes(msv_identity_public(k->id[0]), &len);
    static const unsigned suites[] = {4, 31, 32, 47, 255, 65535};

    for (size_t i = 0; i < sizeof(suites) / sizeof(suites[0]); i++)
        assert_int_equal(msv_public_identity_parse((enum msv_suite)suites[i], bytes, len, &pub),
                         MSV_ERR_PARSE);
    assert_null(pub);
    assert_int_equal(msv_public_identity_parse(MSV_SUITE_MODERN, bytes, len, &pub), MSV_OK);
    msv_public_identity_free(pub);
}

static int devlist_setup(void **state)
{
    struct devlist_keys *k = calloc(1, sizeof(*k));

    if (k == NULL)
        return -1;
    for (size_t i = 0; i < 5; i++) {
        if (msv_identity_generate(i == 1 ? MSV_SUITE_ECIES : MSV_SUITE_MODERN, 0, &k->id[i]) !=
            MSV_OK)
            return -1;
    }
    *state = k;
    return 0;
}

static int devlist_teardown(void **state)
{
    struct devlist_keys *k = *state;

    for (size_t i = 0; i < 5; i++)
        msv_identity_free(k->id[i]);
    free(k);
    return 0;
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_reference_roots),
        cmocka_unit_test(test_inclusion_proofs),
        cmocka_unit_test(test_consistency_proofs),
        cmocka_unit_test(test_leaf_encoding),
        cmocka_unit_test_setup_teardown(test_signed_list_encoding, devlist_setup, devlist_teardown),
        cmocka_unit_test_setup_teardown(test_identity_parse_unknown_suite, devlist_setup,
                                        devlist_teardown),
        cmocka_unit_test_setup_teardown(test_signed_list_attacks, devlist_setup, devlist_teardown),
        cmocka_unit_test(test_devlist_check_verifies_once),
        cmocka_unit_test(test_tombstone_leaf),
        cmocka_unit_test(test_signed_heads),
        cmocka_unit_test(test_key_rotation),
        cmocka_unit_test(test_key_rotation_follow),
        cmocka_unit_test(test_rotation_leaf),
        cmocka_unit_test(test_v4_leaf),
    };

    if (msv_init() != MSV_OK)
        return 1;
    return cmocka_run_group_tests_name("kt", tests, NULL, NULL);
}
