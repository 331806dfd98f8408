/*
 * The key directory's prefix tree (docs/transparency.md, "The prefix tree"): a compressed
 * binary Merkle trie over 32-byte labels, bits numbered from the most significant bit of byte
 * 0. Every inner node has two children and branches on the first bit where the labels below
 * it differ, its depth; the bits above form its prefix. Hashes (SHA-256):
 *
 *   leaf:  H(0x10 || label (32) || value (32))
 *   inner: H(0x11 || u8 depth || prefix (32: the first depth bits, the rest zero) ||
 *            left (32) || right (32))           left: bit depth 0, right: bit depth 1
 *   empty tree: 32 zero bytes
 *
 * Path proof (every field fixed size but the sibling list):
 *
 *   u8 type: 1 the label is present, 2 absent (the walk ends at another leaf), 3 absent
 *            (the tree is empty)
 *   type 1: value (32); type 2: that leaf's label (32) and value (32); type 3: nothing
 *   u16be n; n x (u8 depth, sibling hash (32)), deepest first, depths strictly descending
 *            (so n is at most 256; type 3: n is 0)
 *
 * A verifier walks up from the leaf, hashing each inner node with the prefix of the leaf it
 * was given; a type-2 leaf must share the label's bit at every depth on the way and differ from
 * it. The append-only proof of an epoch is
 *
 *   u32be n; n x (label (32), value (32), path proof of the label's absence)
 *
 * labels strictly ascending, each path proof against the tree with the entries before it
 * added: the verifier checks each and computes the tree with the entry added from it.
 *
 * A multi-path proof of n labels (a version proof's) gives each sibling hash once and none that
 * another label's path computes:
 *
 *   n leaf descriptors, one per label in order: u8 type as above; type 1: value (32); type 2:
 *   the label (32) and value (32) of the leaf the walk ends at; type 3: nothing (then every
 *   descriptor is type 3 and nothing follows)
 *   the node of the distinct leaves the walks end at, sorted by label, from depth 0:
 *
 *   node(leaves, floor) = u8 m; m x (u8 depth, sibling hash (32)), depths strictly ascending,
 *                         at least floor and below D; then, for two leaves or more,
 *                         node(those with bit D = 0, D + 1) || node(those with bit D = 1, D + 1)
 *
 * D the first bit where the first and last of the leaves differ (256 for one leaf): the inner
 * node where they part, whose hash the two parts give.
 */
#include <stdlib.h>
#include <string.h>

#include <sodium.h>

#include "missive/ptree.h"

#define LEAF_DEPTH 256
#define NONE UINT32_MAX

enum { PROOF_PRESENT = 1, PROOF_ABSENT_LEAF = 2, PROOF_ABSENT_EMPTY = 3 };

struct node {
    uint8_t hash[MSV_PT_HASH_LEN];
    uint32_t child[2];
    uint32_t leaf;  /* a leaf below (itself for a leaf): its label gives the prefix */
    uint16_t depth; /* LEAF_DEPTH for a leaf */
    uint8_t dirty;  /* hash not computed since the subtree changed */
};

struct msv_ptree {
    struct node *nodes;
    struct msv_pt_entry *leaves;
    uint32_t n_nodes, cap_nodes, n_leaves, cap_leaves;
    uint32_t root; /* NONE: empty */
};

/* The sibling list of a proof, as parsed or as made. */
struct path {
    int type;
    uint8_t label[MSV_PT_LABEL_LEN]; /* type 2: the leaf the walk ends at */
    uint8_t value[MSV_PT_VALUE_LEN];
    size_t n;
    uint8_t depth[MSV_PT_PATH_MAX];
    uint8_t sibling[MSV_PT_PATH_MAX][MSV_PT_HASH_LEN];
};

static int bit(const uint8_t label[MSV_PT_LABEL_LEN], unsigned i)
{
    return (label[i / 8] >> (7 - i % 8)) & 1;
}

/* The first bit where a and b differ; LEAF_DEPTH when they are equal. */
static unsigned first_difference(const uint8_t *a, const uint8_t *b)
{
    for (unsigned i = 0; i < MSV_PT_LABEL_LEN; i++) {
        if (a[i] != b[i])
            return i * 8 + (unsigned)__builtin_clz((unsigned)(a[i] ^ b[i])) - 24;
    }
    return LEAF_DEPTH;
}

static void leaf_hash(const uint8_t label[MSV_PT_LABEL_LEN], const uint8_t value[MSV_PT_VALUE_LEN],
                      uint8_t out[MSV_PT_HASH_LEN])
{
    crypto_hash_sha256_state st;
    const uint8_t tag = 0x10;

    crypto_hash_sha256_init(&st);
    crypto_hash_sha256_update(&st, &tag, 1);
    crypto_hash_sha256_update(&st, label, MSV_PT_LABEL_LEN);
    crypto_hash_sha256_update(&st, value, MSV_PT_VALUE_LEN);
    crypto_hash_sha256_final(&st, out);
}

/* The inner node at depth whose prefix is label's first depth bits; right: bit depth is 1. */
static void inner_hash(unsigned depth, const uint8_t label[MSV_PT_LABEL_LEN],
                       const uint8_t left[MSV_PT_HASH_LEN], const uint8_t right[MSV_PT_HASH_LEN],
                       uint8_t out[MSV_PT_HASH_LEN])
{
    crypto_hash_sha256_state st;
    uint8_t head[2 + MSV_PT_LABEL_LEN] = {0x11, (uint8_t)depth};

    memcpy(head + 2, label, depth / 8);
    if (depth % 8 != 0)
        head[2 + depth / 8] = label[depth / 8] & (uint8_t)(0xff << (8 - depth % 8));
    crypto_hash_sha256_init(&st);
    crypto_hash_sha256_update(&st, head, sizeof(head));
    crypto_hash_sha256_update(&st, left, MSV_PT_HASH_LEN);
    crypto_hash_sha256_update(&st, right, MSV_PT_HASH_LEN);
    crypto_hash_sha256_final(&st, out);
}

/* Hashes a child h and its sibling into their parent at depth; the child is on side b. */
static void join(unsigned depth, const uint8_t label[MSV_PT_LABEL_LEN], int b,
                 const uint8_t h[MSV_PT_HASH_LEN], const uint8_t sibling[MSV_PT_HASH_LEN],
                 uint8_t out[MSV_PT_HASH_LEN])
{
    if (b)
        inner_hash(depth, label, sibling, h, out);
    else
        inner_hash(depth, label, h, sibling, out);
}

msv_err msv_ptree_new(struct msv_ptree **out)
{
    struct msv_ptree *t = calloc(1, sizeof(*t));

    if (t == NULL)
        return MSV_ERR_NOMEM;
    t->root = NONE;
    *out = t;
    return MSV_OK;
}

void msv_ptree_free(struct msv_ptree *t)
{
    if (t == NULL)
        return;
    free(t->nodes);
    free(t->leaves);
    free(t);
}

size_t msv_ptree_size(const struct msv_ptree *t)
{
    return t->n_leaves;
}

static msv_err grow(void **p, uint32_t *cap, uint32_t need, size_t size)
{
    uint64_t n = *cap ? *cap : 64;
    void *q;

    if (need <= *cap)
        return MSV_OK;
    while (n < need)
        n *= 2;
    if (n >= NONE)
        return MSV_ERR_TOO_BIG;
    q = realloc(*p, (size_t)n * size);
    if (q == NULL)
        return MSV_ERR_NOMEM;
    *p = q;
    *cap = (uint32_t)n;
    return MSV_OK;
}

/* Computes the hashes of every changed node below i: children first. */
static void settle(struct msv_ptree *t, uint32_t i)
{
    struct node *n = &t->nodes[i];

    if (!n->dirty)
        return;
    if (n->depth == LEAF_DEPTH) {
        leaf_hash(t->leaves[n->leaf].label, t->leaves[n->leaf].value, n->hash);
    } else {
        settle(t, n->child[0]);
        settle(t, n->child[1]);
        inner_hash(n->depth, t->leaves[n->leaf].label, t->nodes[n->child[0]].hash,
                   t->nodes[n->child[1]].hash, n->hash);
    }
    n->dirty = 0;
}

msv_err msv_ptree_root(struct msv_ptree *t, uint8_t root[MSV_PT_HASH_LEN])
{
    if (t->root == NONE) {
        memset(root, 0, MSV_PT_HASH_LEN);
        return MSV_OK;
    }
    settle(t, t->root);
    memcpy(root, t->nodes[t->root].hash, MSV_PT_HASH_LEN);
    return MSV_OK;
}

/*
 * Where label goes: *slot is the link (the root or a child pointer) to the subtree it diverges
 * from, *e the depth of the new inner node, path[0..*n_path) the nodes above it, to be marked
 * dirty by the caller. MSV_ERR_EXISTS when the label is there. Depths grow strictly on the way
 * down, so a path never has more than MSV_PT_PATH_MAX inner nodes.
 */
static msv_err find_slot(struct msv_ptree *t, const uint8_t label[MSV_PT_LABEL_LEN],
                         uint32_t **slot, unsigned *e, uint32_t path[MSV_PT_PATH_MAX + 1],
                         size_t *n_path)
{
    uint32_t *at = &t->root;
    size_t n = 0;

    for (;;) {
        const struct node *cur = &t->nodes[*at];
        unsigned d = first_difference(label, t->leaves[cur->leaf].label);

        if (cur->depth == LEAF_DEPTH && d == LEAF_DEPTH)
            return MSV_ERR_EXISTS;
        if (d < cur->depth)
            break;
        path[n++] = *at;
        at = &t->nodes[*at].child[bit(label, cur->depth)];
    }
    *slot = at;
    *e = first_difference(label, t->leaves[t->nodes[*at].leaf].label);
    *n_path = n;
    return MSV_OK;
}

static uint32_t add_node(struct msv_ptree *t, uint32_t leaf, unsigned depth)
{
    struct node *n = &t->nodes[t->n_nodes];

    memset(n, 0, sizeof(*n));
    n->leaf = leaf;
    n->depth = (uint16_t)depth;
    n->dirty = 1;
    return t->n_nodes++;
}

msv_err msv_ptree_insert(struct msv_ptree *t, const struct msv_pt_entry *e)
{
    uint32_t path[MSV_PT_PATH_MAX + 1], *slot = NULL, leaf, inner;
    size_t n_path = 0;
    unsigned depth = 0;
    msv_err err;

    if ((err = grow((void **)&t->leaves, &t->cap_leaves, t->n_leaves + 1, sizeof(*t->leaves))) !=
            MSV_OK ||
        (err = grow((void **)&t->nodes, &t->cap_nodes, t->n_nodes + 2, sizeof(*t->nodes))) !=
            MSV_OK)
        return err;
    if (t->root != NONE && (err = find_slot(t, e->label, &slot, &depth, path, &n_path)) != MSV_OK)
        return err;
    t->leaves[t->n_leaves] = *e;
    leaf = add_node(t, t->n_leaves++, LEAF_DEPTH);
    if (t->root == NONE) {
        t->root = leaf;
        return MSV_OK;
    }
    inner = add_node(t, t->n_leaves - 1, depth);
    t->nodes[inner].child[bit(e->label, depth)] = leaf;
    t->nodes[inner].child[!bit(e->label, depth)] = *slot;
    *slot = inner;
    for (size_t i = 0; i < n_path; i++)
        t->nodes[path[i]].dirty = 1;
    return MSV_OK;
}

/* The walk of label down the tree by its bits: the siblings and the leaf it ends at. */
static void walk(struct msv_ptree *t, const uint8_t label[MSV_PT_LABEL_LEN], struct path *p)
{
    uint32_t at = t->root;
    size_t n = 0;
    uint8_t rev_depth[MSV_PT_PATH_MAX], rev[MSV_PT_PATH_MAX][MSV_PT_HASH_LEN];

    memset(p, 0, sizeof(*p));
    if (at == NONE) {
        p->type = PROOF_ABSENT_EMPTY;
        return;
    }
    settle(t, at);
    while (t->nodes[at].depth != LEAF_DEPTH) {
        const struct node *cur = &t->nodes[at];
        int b = bit(label, cur->depth);

        rev_depth[n] = (uint8_t)cur->depth;
        memcpy(rev[n++], t->nodes[cur->child[!b]].hash, MSV_PT_HASH_LEN);
        at = cur->child[b];
    }
    for (size_t i = 0; i < n; i++) {
        p->depth[i] = rev_depth[n - 1 - i];
        memcpy(p->sibling[i], rev[n - 1 - i], MSV_PT_HASH_LEN);
    }
    p->n = n;
    memcpy(p->label, t->leaves[t->nodes[at].leaf].label, MSV_PT_LABEL_LEN);
    memcpy(p->value, t->leaves[t->nodes[at].leaf].value, MSV_PT_VALUE_LEN);
    p->type = memcmp(p->label, label, MSV_PT_LABEL_LEN) == 0 ? PROOF_PRESENT : PROOF_ABSENT_LEAF;
}

static size_t path_size(const struct path *p)
{
    size_t head = p->type == PROOF_PRESENT ? 32 : p->type == PROOF_ABSENT_LEAF ? 64 : 0;

    return 3 + head + p->n * 33;
}

/* Writes p into out (path_size(p) bytes). */
static void path_write(const struct path *p, uint8_t *out)
{
    *out++ = (uint8_t)p->type;
    if (p->type == PROOF_ABSENT_LEAF) {
        memcpy(out, p->label, MSV_PT_LABEL_LEN);
        out += MSV_PT_LABEL_LEN;
    }
    if (p->type != PROOF_ABSENT_EMPTY) {
        memcpy(out, p->value, MSV_PT_VALUE_LEN);
        out += MSV_PT_VALUE_LEN;
    }
    *out++ = (uint8_t)(p->n >> 8);
    *out++ = (uint8_t)p->n;
    for (size_t i = 0; i < p->n; i++) {
        *out++ = p->depth[i];
        memcpy(out, p->sibling[i], MSV_PT_HASH_LEN);
        out += MSV_PT_HASH_LEN;
    }
}

/* Parses a path proof at the start of in; *used: its length. MSV_ERR_PARSE for bad bytes. */
static msv_err path_parse(const uint8_t *in, size_t len, struct path *p, size_t *used)
{
    size_t off = 1, head;

    if (len < 3 || in[0] < PROOF_PRESENT || in[0] > PROOF_ABSENT_EMPTY)
        return MSV_ERR_PARSE;
    memset(p, 0, sizeof(*p));
    p->type = in[0];
    head = p->type == PROOF_PRESENT ? 32 : p->type == PROOF_ABSENT_LEAF ? 64 : 0;
    if (len < off + head + 2)
        return MSV_ERR_PARSE;
    if (p->type == PROOF_ABSENT_LEAF) {
        memcpy(p->label, in + off, MSV_PT_LABEL_LEN);
        off += MSV_PT_LABEL_LEN;
    }
    if (p->type != PROOF_ABSENT_EMPTY) {
        memcpy(p->value, in + off, MSV_PT_VALUE_LEN);
        off += MSV_PT_VALUE_LEN;
    }
    p->n = (size_t)in[off] << 8 | in[off + 1];
    off += 2;
    if ((p->type == PROOF_ABSENT_EMPTY && p->n != 0) || p->n > MSV_PT_PATH_MAX ||
        len - off < p->n * 33)
        return MSV_ERR_PARSE;
    for (size_t i = 0; i < p->n; i++, off += 33) {
        p->depth[i] = in[off];
        if (i > 0 && p->depth[i] >= p->depth[i - 1])
            return MSV_ERR_PARSE;
        memcpy(p->sibling[i], in + off + 1, MSV_PT_HASH_LEN);
    }
    *used = off;
    return MSV_OK;
}

size_t msv_pt_path_len(const uint8_t *in, size_t len)
{
    struct path *p = malloc(sizeof(*p));
    size_t used = 0;

    if (p == NULL || path_parse(in, len, p, &used) != MSV_OK)
        used = 0;
    free(p);
    return used;
}

/*
 * The root a path proof gives for label, and, when add is not NULL (an absence proof), the
 * root with add inserted. MSV_ERR_AUTH when the proof is not one for label.
 */
static msv_err path_roots(const struct path *p, const uint8_t label[MSV_PT_LABEL_LEN],
                          const struct msv_pt_entry *add, uint8_t root[MSV_PT_HASH_LEN],
                          uint8_t added_root[MSV_PT_HASH_LEN])
{
    const uint8_t *at = p->type == PROOF_ABSENT_LEAF ? p->label : label;
    uint8_t h[MSV_PT_HASH_LEN], g[MSV_PT_HASH_LEN], x[MSV_PT_HASH_LEN];
    unsigned e = 0;
    int placed = add == NULL;

    if (p->type == PROOF_ABSENT_EMPTY) {
        memset(root, 0, MSV_PT_HASH_LEN);
        if (add != NULL)
            leaf_hash(add->label, add->value, added_root);
        return MSV_OK;
    }
    if (p->type == PROOF_ABSENT_LEAF && memcmp(p->label, label, MSV_PT_LABEL_LEN) == 0)
        return MSV_ERR_AUTH;
    leaf_hash(at, p->value, h);
    if (add != NULL) {
        e = first_difference(add->label, at);
        leaf_hash(add->label, add->value, x);
        memcpy(g, h, MSV_PT_HASH_LEN);
    }
    for (size_t i = 0; i <= p->n; i++) {
        if (!placed && (i == p->n || p->depth[i] < e)) {
            join(e, at, bit(add->label, e), x, g, g);
            placed = 1;
        }
        if (i == p->n)
            break;
        /* the walk of label follows the leaf's: same bit at every branch point */
        if (bit(label, p->depth[i]) != bit(at, p->depth[i]))
            return MSV_ERR_AUTH;
        join(p->depth[i], at, bit(at, p->depth[i]), h, p->sibling[i], h);
        if (add != NULL)
            join(p->depth[i], at, bit(at, p->depth[i]), g, p->sibling[i], g);
    }
    memcpy(root, h, MSV_PT_HASH_LEN);
    if (add != NULL)
        memcpy(added_root, g, MSV_PT_HASH_LEN);
    return MSV_OK;
}

msv_err msv_ptree_prove(struct msv_ptree *t, const uint8_t label[MSV_PT_LABEL_LEN], uint8_t **proof,
                        size_t *proof_len, int *found)
{
    struct path *p = malloc(sizeof(*p));
    uint8_t *out = NULL;
    msv_err err = MSV_ERR_NOMEM;

    if (p == NULL)
        goto out;
    walk(t, label, p);
    if ((out = malloc(path_size(p))) == NULL)
        goto out;
    path_write(p, out);
    *proof_len = path_size(p);
    *found = p->type == PROOF_PRESENT;
    *proof = out;
    err = MSV_OK;
out:
    free(p);
    return err;
}

msv_err msv_pt_verify_path(const uint8_t root[MSV_PT_HASH_LEN],
                           const uint8_t label[MSV_PT_LABEL_LEN], const uint8_t *proof, size_t len,
                           int *found, uint8_t value[MSV_PT_VALUE_LEN])
{
    struct path *p = malloc(sizeof(*p));
    uint8_t got[MSV_PT_HASH_LEN];
    size_t used = 0;
    msv_err err = MSV_ERR_NOMEM;

    if (p == NULL)
        goto out;
    if ((err = path_parse(proof, len, p, &used)) != MSV_OK)
        goto out;
    err = MSV_ERR_PARSE;
    if (used != len)
        goto out;
    if ((err = path_roots(p, label, NULL, got, NULL)) != MSV_OK)
        goto out;
    err = MSV_ERR_AUTH;
    if (sodium_memcmp(got, root, MSV_PT_HASH_LEN) != 0)
        goto out;
    *found = p->type == PROOF_PRESENT;
    if (value != NULL && *found)
        memcpy(value, p->value, MSV_PT_VALUE_LEN);
    err = MSV_OK;
out:
    free(p);
    return err;
}

/* ---- epochs ---------------------------------------------------------------------------------- */

static int cmp_entry(const void *a, const void *b)
{
    return memcmp(((const struct msv_pt_entry *)a)->label, ((const struct msv_pt_entry *)b)->label,
                  MSV_PT_LABEL_LEN);
}

static void put_u32(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)(v >> 24);
    p[1] = (uint8_t)(v >> 16);
    p[2] = (uint8_t)(v >> 8);
    p[3] = (uint8_t)v;
}

/* Sorts a copy of the batch; MSV_ERR_EXISTS if a label is twice in it or in the tree. */
static msv_err batch_sorted(struct msv_ptree *t, const struct msv_pt_entry *e, size_t n,
                            struct msv_pt_entry **out)
{
    struct msv_pt_entry *s = malloc(n ? n * sizeof(*s) : 1);
    struct path *p = malloc(sizeof(*p));
    msv_err err = MSV_ERR_NOMEM;

    if (s == NULL || p == NULL)
        goto out;
    if (n)
        memcpy(s, e, n * sizeof(*s));
    qsort(s, n, sizeof(*s), cmp_entry);
    err = MSV_ERR_EXISTS;
    for (size_t i = 0; i < n; i++) {
        if (i > 0 && cmp_entry(&s[i - 1], &s[i]) == 0)
            goto out;
        walk(t, s[i].label, p);
        if (p->type == PROOF_PRESENT)
            goto out;
    }
    *out = s;
    s = NULL;
    err = MSV_OK;
out:
    free(s);
    free(p);
    return err;
}

msv_err msv_ptree_insert_batch(struct msv_ptree *t, const struct msv_pt_entry *e, size_t n,
                               uint8_t **proof, size_t *proof_len)
{
    struct msv_pt_entry *s = NULL;
    struct path *p = malloc(sizeof(*p));
    uint8_t *buf = NULL;
    size_t len = 4, cap = 4 + n * 256;
    msv_err err = MSV_ERR_TOO_BIG;

    if (n > MSV_PT_BATCH_MAX)
        goto out;
    err = MSV_ERR_NOMEM;
    if (p == NULL || (proof != NULL && (buf = malloc(cap)) == NULL))
        goto out;
    if ((err = batch_sorted(t, e, n, &s)) != MSV_OK)
        goto out;
    /* room for all of it first, so that the batch goes in whole or not at all */
    if ((err = grow((void **)&t->leaves, &t->cap_leaves, t->n_leaves + (uint32_t)n,
                    sizeof(*t->leaves))) != MSV_OK ||
        (err = grow((void **)&t->nodes, &t->cap_nodes, t->n_nodes + 2 * (uint32_t)n,
                    sizeof(*t->nodes))) != MSV_OK)
        goto out;
    for (size_t i = 0; i < n; i++) {
        if (buf != NULL) {
            walk(t, s[i].label, p);
            if (len + 64 + path_size(p) > cap) {
                uint8_t *q = realloc(buf, cap * 2);

                err = MSV_ERR_NOMEM;
                if (q == NULL)
                    goto out;
                buf = q;
                cap *= 2;
            }
            memcpy(buf + len, s[i].label, MSV_PT_LABEL_LEN);
            memcpy(buf + len + 32, s[i].value, MSV_PT_VALUE_LEN);
            path_write(p, buf + len + 64);
            len += 64 + path_size(p);
        }
        /* cannot fail: the room is there and the label is new */
        if ((err = msv_ptree_insert(t, &s[i])) != MSV_OK)
            goto out;
    }
    if (buf != NULL) {
        put_u32(buf, (uint32_t)n);
        *proof = buf;
        *proof_len = len;
        buf = NULL;
    }
    err = MSV_OK;
out:
    free(buf);
    free(s);
    free(p);
    return err;
}

msv_err msv_pt_verify_append(const uint8_t old_root[MSV_PT_HASH_LEN],
                             const uint8_t new_root[MSV_PT_HASH_LEN], const uint8_t *proof,
                             size_t len, size_t *added)
{
    struct path *p = malloc(sizeof(*p));
    uint8_t root[MSV_PT_HASH_LEN], before[MSV_PT_HASH_LEN];
    uint8_t next[MSV_PT_HASH_LEN];
    struct msv_pt_entry e, last;
    size_t off = 4, n, used = 0;
    msv_err err = MSV_ERR_NOMEM;

    if (p == NULL)
        goto out;
    err = MSV_ERR_PARSE;
    if (len < 4)
        goto out;
    n = (size_t)proof[0] << 24 | (size_t)proof[1] << 16 | (size_t)proof[2] << 8 | proof[3];
    if (n > MSV_PT_BATCH_MAX)
        goto out;
    memcpy(root, old_root, MSV_PT_HASH_LEN);
    for (size_t i = 0; i < n; i++) {
        err = MSV_ERR_PARSE;
        if (len - off < 64)
            goto out;
        memcpy(e.label, proof + off, MSV_PT_LABEL_LEN);
        memcpy(e.value, proof + off + 32, MSV_PT_VALUE_LEN);
        if ((i > 0 && cmp_entry(&last, &e) >= 0) ||
            (err = path_parse(proof + off + 64, len - off - 64, p, &used)) != MSV_OK)
            goto out;
        off += 64 + used;
        err = MSV_ERR_AUTH;
        /* each entry must be proven absent from the tree so far; then it is added */
        if (p->type == PROOF_PRESENT || path_roots(p, e.label, &e, before, next) != MSV_OK ||
            sodium_memcmp(before, root, MSV_PT_HASH_LEN) != 0)
            goto out;
        memcpy(root, next, MSV_PT_HASH_LEN);
        last = e;
    }
    err = MSV_ERR_PARSE;
    if (off != len)
        goto out;
    err = MSV_ERR_AUTH;
    if (sodium_memcmp(root, new_root, MSV_PT_HASH_LEN) != 0)
        goto out;
    *added = n;
    err = MSV_OK;
out:
    free(p);
    return err;
}

/* ---- entry steps ----------------------------------------------------------------------------- */

msv_err msv_ptree_insert_step(struct msv_ptree *t, const struct msv_pt_entry *e, uint8_t **step,
                              size_t *step_len)
{
    struct path *p = malloc(sizeof(*p));
    uint8_t *out = NULL;
    msv_err err = MSV_ERR_NOMEM;

    if (p == NULL)
        goto out;
    walk(t, e->label, p);
    err = MSV_ERR_EXISTS;
    if (p->type == PROOF_PRESENT)
        goto out;
    err = MSV_ERR_NOMEM;
    if ((out = malloc(1 + 64 + path_size(p))) == NULL)
        goto out;
    out[0] = 1;
    memcpy(out + 1, e->label, MSV_PT_LABEL_LEN);
    memcpy(out + 1 + 32, e->value, MSV_PT_VALUE_LEN);
    path_write(p, out + 1 + 64);
    if ((err = msv_ptree_insert(t, e)) != MSV_OK)
        goto out;
    *step = out;
    *step_len = 1 + 64 + path_size(p);
    out = NULL;
out:
    free(out);
    free(p);
    return err;
}

msv_err msv_pt_steps_match(const uint8_t *proof, size_t len, size_t n,
                           const uint8_t (*want)[MSV_PT_LABEL_LEN + MSV_PT_VALUE_LEN],
                           const uint8_t *has, size_t *bad)
{
    size_t off = 4;

    for (size_t i = 0; i < n; i++) {
        size_t path;

        if (off >= len)
            return MSV_ERR_PARSE;
        if (proof[off] == 0) { /* kind 0: adds nothing */
            off++;
            continue;
        }
        /* kind 1: label, value, then the path proof of the label's absence */
        if (len - off < 1 + MSV_PT_LABEL_LEN + MSV_PT_VALUE_LEN ||
            (path = msv_pt_path_len(proof + off + 65, len - off - 65)) == 0)
            return MSV_ERR_PARSE;
        if (has[i] &&
            sodium_memcmp(proof + off + 1, want[i], MSV_PT_LABEL_LEN + MSV_PT_VALUE_LEN) != 0) {
            *bad = i;
            return MSV_ERR_AUTH;
        }
        off += 1 + MSV_PT_LABEL_LEN + MSV_PT_VALUE_LEN + path;
    }
    return MSV_OK;
}

msv_err msv_pt_verify_steps(const uint8_t *proof, size_t len, const uint8_t *adds, size_t n,
                            int *have_root, uint8_t root[MSV_PT_HASH_LEN], size_t *bad,
                            enum msv_pt_step_fault *fault)
{
    struct path *p = malloc(sizeof(*p));
    uint8_t at[MSV_PT_HASH_LEN], before[MSV_PT_HASH_LEN], next[MSV_PT_HASH_LEN];
    int have = *have_root;
    size_t off = 4, used = 0;
    msv_err err = MSV_ERR_NOMEM;

    *fault = MSV_PT_STEP_OK;
    *bad = 0;
    if (p == NULL)
        goto out;
    err = MSV_ERR_PARSE;
    if (len < 4 || n > MSV_PT_STEPS_MAX ||
        ((size_t)proof[0] << 24 | (size_t)proof[1] << 16 | (size_t)proof[2] << 8 | proof[3]) != n)
        goto out;
    memcpy(at, root, MSV_PT_HASH_LEN);
    for (size_t i = 0; i < n; i++) {
        struct msv_pt_entry e;

        err = MSV_ERR_PARSE;
        if (off >= len || proof[off] > 1)
            goto out;
        *bad = i;
        err = MSV_ERR_AUTH;
        if (proof[off] != (adds[i] ? 1 : 0)) {
            *fault = adds[i] ? MSV_PT_STEP_ADDS_NOTHING : MSV_PT_STEP_ADDS;
            goto out;
        }
        if (proof[off++] == 0)
            continue;
        err = MSV_ERR_PARSE;
        if (len - off < 64)
            goto out;
        memcpy(e.label, proof + off, MSV_PT_LABEL_LEN);
        memcpy(e.value, proof + off + 32, MSV_PT_VALUE_LEN);
        if ((err = path_parse(proof + off + 64, len - off - 64, p, &used)) != MSV_OK)
            goto out;
        off += 64 + used;
        err = MSV_ERR_AUTH;
        if (p->type == PROOF_PRESENT || path_roots(p, e.label, &e, before, next) != MSV_OK) {
            *fault = MSV_PT_STEP_NOT_ABSENT;
            goto out;
        }
        if (have && sodium_memcmp(before, at, MSV_PT_HASH_LEN) != 0) {
            *fault = MSV_PT_STEP_OTHER_TREE;
            goto out;
        }
        have = 1;
        memcpy(at, next, MSV_PT_HASH_LEN);
    }
    err = MSV_ERR_PARSE;
    if (off != len)
        goto out;
    *have_root = have;
    memcpy(root, at, MSV_PT_HASH_LEN);
    err = MSV_OK;
out:
    free(p);
    return err;
}

msv_err msv_ptree_test_rewrite(struct msv_ptree **t, const uint8_t label[MSV_PT_LABEL_LEN],
                               const uint8_t *value)
{
    struct msv_ptree *old = *t, *n = NULL;
    msv_err err = msv_ptree_new(&n);

    for (uint32_t i = 0; err == MSV_OK && i < old->n_leaves; i++) {
        struct msv_pt_entry e = old->leaves[i];

        if (memcmp(e.label, label, MSV_PT_LABEL_LEN) == 0) {
            if (value == NULL)
                continue;
            memcpy(e.value, value, MSV_PT_VALUE_LEN);
        }
        err = msv_ptree_insert(n, &e);
    }
    if (err != MSV_OK) {
        msv_ptree_free(n);
        return err;
    }
    msv_ptree_free(old);
    *t = n;
    return MSV_OK;
}

/* ---- multi-path proofs ----------------------------------------------------------------------- */

/* One leaf the walks of a multi-path proof end at, and the branch depths on its path. */
struct multi_leaf {
    struct msv_pt_entry e;
    uint8_t depths[MSV_PT_PATH_MAX / 8]; /* verifier: bit d set when a node at depth d is above */
};

struct multi {
    struct multi_leaf leaf[MSV_PT_MULTI_MAX];
    size_t n_leaves;
    struct path path; /* prover: scratch */
};

static int cmp_leaf(const void *a, const void *b)
{
    return memcmp(((const struct multi_leaf *)a)->e.label, ((const struct multi_leaf *)b)->e.label,
                  MSV_PT_LABEL_LEN);
}

/*
 * Adds the leaf (label, value) to m unless it is there; MSV_ERR_AUTH when it is there with
 * another value.
 */
static msv_err multi_add(struct multi *m, const uint8_t label[MSV_PT_LABEL_LEN],
                         const uint8_t value[MSV_PT_VALUE_LEN])
{
    for (size_t i = 0; i < m->n_leaves; i++) {
        if (memcmp(m->leaf[i].e.label, label, MSV_PT_LABEL_LEN) == 0)
            return memcmp(m->leaf[i].e.value, value, MSV_PT_VALUE_LEN) == 0 ? MSV_OK : MSV_ERR_AUTH;
    }
    memset(&m->leaf[m->n_leaves], 0, sizeof(m->leaf[0]));
    memcpy(m->leaf[m->n_leaves].e.label, label, MSV_PT_LABEL_LEN);
    memcpy(m->leaf[m->n_leaves].e.value, value, MSV_PT_VALUE_LEN);
    m->n_leaves++;
    return MSV_OK;
}

/* The leaf of m with label (there by construction). */
static struct multi_leaf *multi_find(struct multi *m, const uint8_t label[MSV_PT_LABEL_LEN])
{
    struct multi_leaf key;

    memcpy(key.e.label, label, MSV_PT_LABEL_LEN);
    return bsearch(&key, m->leaf, m->n_leaves, sizeof(key), cmp_leaf);
}

/* The first leaf of [lo, hi) whose bit d is 1 (the leaves are sorted and share bits below d). */
static size_t multi_split(const struct multi *m, size_t lo, size_t hi, unsigned d)
{
    while (lo < hi && !bit(m->leaf[lo].e.label, d))
        lo++;
    return lo;
}

/*
 * Writes the node of leaves [lo, hi) from depth floor: the siblings above the depth where they
 * part (or above the leaf), ascending, then the two parts' nodes.
 */
static msv_err multi_write(struct msv_ptree *t, struct multi *m, size_t lo, size_t hi,
                           unsigned floor, uint8_t **buf, size_t *used, size_t *cap)
{
    unsigned limit =
        hi - lo > 1 ? first_difference(m->leaf[lo].e.label, m->leaf[hi - 1].e.label) : LEAF_DEPTH;
    uint32_t at = t->root;
    size_t count_at = *used, count = 0;

    if (*cap - *used < 1 + MSV_PT_PATH_MAX * 33) {
        uint8_t *q = realloc(*buf, *cap * 2 + MSV_PT_PATH_MAX * 33);

        if (q == NULL)
            return MSV_ERR_NOMEM;
        *buf = q;
        *cap = *cap * 2 + MSV_PT_PATH_MAX * 33;
    }
    (*used)++;
    /* down the first leaf's path, from the root */
    while (t->nodes[at].depth != LEAF_DEPTH && t->nodes[at].depth < limit) {
        const struct node *cur = &t->nodes[at];
        int b = bit(m->leaf[lo].e.label, cur->depth);

        if (cur->depth >= floor) {
            if (count == 255)
                return MSV_ERR_TOO_BIG;
            (*buf)[(*used)++] = (uint8_t)cur->depth;
            memcpy(*buf + *used, t->nodes[cur->child[!b]].hash, MSV_PT_HASH_LEN);
            *used += MSV_PT_HASH_LEN;
            count++;
        }
        at = cur->child[b];
    }
    (*buf)[count_at] = (uint8_t)count;
    if (hi - lo > 1) {
        size_t mid = multi_split(m, lo, hi, limit);
        msv_err err = multi_write(t, m, lo, mid, limit + 1, buf, used, cap);

        return err != MSV_OK ? err : multi_write(t, m, mid, hi, limit + 1, buf, used, cap);
    }
    return MSV_OK;
}

/* Appends p's leaf descriptor: type, and the leaf's label and value as the type needs. */
static msv_err multi_descriptor(const struct path *p, uint8_t **buf, size_t *used, size_t *cap)
{
    size_t need = 1 + (p->type == PROOF_ABSENT_LEAF ? 64 : p->type == PROOF_PRESENT ? 32 : 0);

    if (*cap - *used < need) {
        uint8_t *q = realloc(*buf, *cap * 2 + need);

        if (q == NULL)
            return MSV_ERR_NOMEM;
        *buf = q;
        *cap = *cap * 2 + need;
    }
    (*buf)[(*used)++] = (uint8_t)p->type;
    if (p->type == PROOF_ABSENT_LEAF) {
        memcpy(*buf + *used, p->label, MSV_PT_LABEL_LEN);
        *used += MSV_PT_LABEL_LEN;
    }
    if (p->type != PROOF_ABSENT_EMPTY) {
        memcpy(*buf + *used, p->value, MSV_PT_VALUE_LEN);
        *used += MSV_PT_VALUE_LEN;
    }
    return MSV_OK;
}

msv_err msv_ptree_prove_multi(struct msv_ptree *t, const uint8_t (*labels)[MSV_PT_LABEL_LEN],
                              size_t n, uint8_t **proof, size_t *proof_len)
{
    struct multi *m = malloc(sizeof(*m));
    uint8_t *buf = NULL;
    size_t used = 0, cap = 0;
    msv_err err = MSV_ERR_INVALID;

    if (n == 0 || n > MSV_PT_MULTI_MAX)
        goto out;
    err = MSV_ERR_NOMEM;
    if (m == NULL)
        goto out;
    m->n_leaves = 0;
    for (size_t i = 0; i < n; i++) {
        walk(t, labels[i], &m->path);
        if ((err = multi_descriptor(&m->path, &buf, &used, &cap)) != MSV_OK)
            goto out;
        if (m->path.type != PROOF_ABSENT_EMPTY &&
            (err = multi_add(m, m->path.label, m->path.value)) != MSV_OK)
            goto out;
    }
    qsort(m->leaf, m->n_leaves, sizeof(m->leaf[0]), cmp_leaf);
    if (m->n_leaves > 0 &&
        (err = multi_write(t, m, 0, m->n_leaves, 0, &buf, &used, &cap)) != MSV_OK)
        goto out;
    *proof = buf;
    *proof_len = used;
    buf = NULL;
    err = MSV_OK;
out:
    free(buf);
    free(m);
    return err;
}

/* Marks depth d on the path of every leaf of [lo, hi). */
static void multi_mark(struct multi *m, size_t lo, size_t hi, unsigned d)
{
    for (size_t i = lo; i < hi; i++)
        m->leaf[i].depths[d / 8] |= (uint8_t)(1u << (d % 8));
}

/* Reads the node of leaves [lo, hi) from depth floor at *off and computes its hash into h. */
static msv_err multi_read(struct multi *m, size_t lo, size_t hi, unsigned floor, const uint8_t *in,
                          size_t len, size_t *off, uint8_t h[MSV_PT_HASH_LEN])
{
    const uint8_t *label = m->leaf[lo].e.label;
    unsigned limit = hi - lo > 1 ? first_difference(label, m->leaf[hi - 1].e.label) : LEAF_DEPTH;
    size_t count, at;
    msv_err err;

    if (*off >= len)
        return MSV_ERR_PARSE;
    count = in[(*off)++];
    if (len - *off < count * 33)
        return MSV_ERR_PARSE;
    at = *off;
    *off += count * 33;
    for (size_t j = 0; j < count; j++) {
        unsigned d = in[at + j * 33];

        /* ascending, at or below floor, above where the leaves part */
        if (d < floor || d >= limit || (j > 0 && d <= in[at + (j - 1) * 33]))
            return MSV_ERR_PARSE;
    }
    if (hi - lo > 1) {
        size_t mid = multi_split(m, lo, hi, limit);
        uint8_t left[MSV_PT_HASH_LEN], right[MSV_PT_HASH_LEN];

        if ((err = multi_read(m, lo, mid, limit + 1, in, len, off, left)) != MSV_OK ||
            (err = multi_read(m, mid, hi, limit + 1, in, len, off, right)) != MSV_OK)
            return err;
        inner_hash(limit, label, left, right, h);
        multi_mark(m, lo, hi, limit);
    } else {
        leaf_hash(label, m->leaf[lo].e.value, h);
    }
    for (size_t j = count; j-- > 0;) {
        unsigned d = in[at + j * 33];

        join(d, label, bit(label, d), h, in + at + j * 33 + 1, h);
        multi_mark(m, lo, hi, d);
    }
    return MSV_OK;
}

/* Whether the walk of label follows leaf's path: the same bit at every depth a node is at. */
static int multi_follows(const struct multi_leaf *leaf, const uint8_t label[MSV_PT_LABEL_LEN])
{
    for (unsigned d = 0; d < LEAF_DEPTH; d++) {
        if ((leaf->depths[d / 8] >> (d % 8) & 1) && bit(label, d) != bit(leaf->e.label, d))
            return 0;
    }
    return 1;
}

/*
 * Parses the n leaf descriptors at the start of in into their types, m's leaves and, for each
 * label, the label of the leaf its walk ends at.
 */
static msv_err multi_parse_descriptors(struct multi *m, const uint8_t (*labels)[MSV_PT_LABEL_LEN],
                                       size_t n, const uint8_t *in, size_t len, size_t *off,
                                       uint8_t type[MSV_PT_MULTI_MAX],
                                       const uint8_t *ends[MSV_PT_MULTI_MAX])
{
    int empty = 0;
    msv_err err;

    for (size_t i = 0; i < n; i++) {
        const uint8_t *label = labels[i];
        size_t need;

        if (*off >= len || in[*off] < PROOF_PRESENT || in[*off] > PROOF_ABSENT_EMPTY)
            return MSV_ERR_PARSE;
        type[i] = in[(*off)++];
        need = type[i] == PROOF_ABSENT_LEAF ? 64 : type[i] == PROOF_PRESENT ? 32 : 0;
        if (len - *off < need || (i > 0 && (type[i] == PROOF_ABSENT_EMPTY) != empty))
            return MSV_ERR_PARSE;
        empty = type[i] == PROOF_ABSENT_EMPTY;
        if (type[i] == PROOF_ABSENT_LEAF) {
            label = in + *off;
            *off += MSV_PT_LABEL_LEN;
            /* a walk that ends at its own label proves no absence */
            if (memcmp(label, labels[i], MSV_PT_LABEL_LEN) == 0)
                return MSV_ERR_AUTH;
        }
        ends[i] = label;
        if (!empty && (err = multi_add(m, label, in + *off)) != MSV_OK)
            return err;
        *off += need - (type[i] == PROOF_ABSENT_LEAF ? MSV_PT_LABEL_LEN : 0);
    }
    return MSV_OK;
}

msv_err msv_pt_verify_multi(const uint8_t root[MSV_PT_HASH_LEN],
                            const uint8_t (*labels)[MSV_PT_LABEL_LEN], size_t n, const uint8_t *in,
                            size_t len, int *found, uint8_t (*values)[MSV_PT_VALUE_LEN])
{
    struct multi *m = malloc(sizeof(*m));
    uint8_t type[MSV_PT_MULTI_MAX], got[MSV_PT_HASH_LEN] = {0};
    const uint8_t *ends[MSV_PT_MULTI_MAX];
    size_t off = 0;
    msv_err err = MSV_ERR_NOMEM;

    if (m == NULL)
        goto out;
    err = MSV_ERR_INVALID;
    if (n == 0 || n > MSV_PT_MULTI_MAX)
        goto out;
    m->n_leaves = 0;
    if ((err = multi_parse_descriptors(m, labels, n, in, len, &off, type, ends)) != MSV_OK)
        goto out;
    qsort(m->leaf, m->n_leaves, sizeof(m->leaf[0]), cmp_leaf);
    if (m->n_leaves > 0 && (err = multi_read(m, 0, m->n_leaves, 0, in, len, &off, got)) != MSV_OK)
        goto out;
    err = MSV_ERR_PARSE;
    if (off != len)
        goto out;
    err = MSV_ERR_AUTH;
    if (sodium_memcmp(got, root, MSV_PT_HASH_LEN) != 0)
        goto out;
    /* each absent label's walk must end at the leaf it names */
    for (size_t i = 0; i < n; i++) {
        if (type[i] == PROOF_ABSENT_LEAF && !multi_follows(multi_find(m, ends[i]), labels[i]))
            goto out;
    }
    for (size_t i = 0; i < n; i++) {
        found[i] = type[i] == PROOF_PRESENT;
        if (found[i])
            memcpy(values[i], multi_find(m, labels[i])->e.value, MSV_PT_VALUE_LEN);
    }
    err = MSV_OK;
out:
    free(m);
    return err;
}
