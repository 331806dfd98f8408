/*
 * The ratchet tree as a new member receives it (RFC 9420 12.4.3.3): read
 * from the ratchet_tree extension, its tree hashes (7.8), resolutions
 * (4.1.1), parent hashes (7.9) and leaf signatures (7.2).
 *
 *   Node = node_type (1 leaf, 2 parent) || LeafNode | ParentNode
 *   ParentNode = encryption_key<V> || parent_hash<V> || uint32 unmerged_leaves<V>
 *   TreeHashInput = node_type || leaf_index (u32) || optional<LeafNode>
 *                 | node_type || optional<ParentNode> || left_hash<V> || right_hash<V>
 *   ParentHashInput = encryption_key<V> || parent_hash<V> || original_sibling_tree_hash<V>
 */
#include <stdlib.h>
#include <string.h>

#include "missive/util.h"
#include "mls/mls.h"

/*
 * Leaves left out of hashes: a parent's unmerged leaves (7.9's original
 * sibling), marked in a byte per leaf so that a lookup costs the same however
 * long the lists are.
 */
struct exclusion {
    const uint8_t *marks; /* n_leaves bytes, 1 for a leaf left out */
};

static int is_excluded(const struct exclusion *ex, uint32_t leaf)
{
    return ex != NULL && ex->marks[leaf] != 0;
}

static void mark_unmerged(const struct msv_mls_node *n, uint8_t *marks, uint8_t v)
{
    for (size_t i = 0; i < n->n_unmerged; i++)
        marks[n->unmerged[i]] = v;
}

/* 1 if leaf is in the subtree under node x. */
static int is_descendant(uint32_t x, uint32_t leaf)
{
    uint32_t k = msv_mls_tree_level(x), span = (UINT32_C(1) << k) - 1, node = 2 * leaf;

    return node >= x - span && node <= x + span;
}

/* 12.4.3.3: a parent's unmerged leaves are leaves under it, at most as many as it has. */
/* A parent's parent hash: the one read, or the one computed when a path was merged. */
static void parent_ph(const struct msv_mls_node *n, const uint8_t **p, size_t *len)
{
    *p = n->has_own_parent_hash ? n->own_parent_hash : n->parent_hash;
    *len = n->has_own_parent_hash ? MSV_MLS_NH : n->parent_hash_len;
}

static void put_parent_ph(struct msv_buf *w, const struct msv_mls_node *n)
{
    const uint8_t *p;
    size_t len;

    parent_ph(n, &p, &len);
    msv_mls_put_vec(w, p, len);
}

static msv_err read_parent(struct msv_reader *r, uint32_t x, struct msv_mls_node *n)
{
    const uint8_t *p;
    size_t len;

    if (msv_mls_get_vec(r, &n->encryption_key, &n->encryption_key_len) != MSV_OK ||
        msv_mls_get_vec(r, &n->parent_hash, &n->parent_hash_len) != MSV_OK ||
        msv_mls_get_vec(r, &p, &len) != MSV_OK || len % 4 != 0 ||
        len / 4 > (UINT32_C(1) << msv_mls_tree_level(x)))
        return MSV_ERR_PARSE;
    n->n_unmerged = len / 4;
    n->unmerged = calloc(n->n_unmerged + 1, sizeof(uint32_t));
    if (n->unmerged == NULL)
        return MSV_ERR_NOMEM;
    for (size_t i = 0; i < n->n_unmerged; i++) {
        n->unmerged[i] = (uint32_t)p[4 * i] << 24 | (uint32_t)p[4 * i + 1] << 16 |
                         (uint32_t)p[4 * i + 2] << 8 | p[4 * i + 3];
        if (n->unmerged[i] >= MSV_MLS_TREE_MAX_LEAVES || !is_descendant(x, n->unmerged[i]))
            return MSV_ERR_PARSE;
    }
    return MSV_OK;
}

/* Reads node i (a leaf at even, a parent at odd indices). */
static msv_err read_node(struct msv_reader *r, uint32_t i, struct msv_mls_node *n)
{
    uint8_t type;
    int present;

    if (msv_mls_get_optional(r, &present) != MSV_OK)
        return MSV_ERR_PARSE;
    if (!present)
        return MSV_OK;
    if (msv_reader_u8(r, &type) != MSV_OK || type != (i % 2 == 0 ? 1 : 2))
        return MSV_ERR_PARSE;
    n->type = type;
    if (type == 1)
        return msv_mls_read_leaf_node(r, &n->leaf) == MSV_OK ? MSV_OK : MSV_ERR_PARSE;
    return read_parent(r, i, n);
}

/* Counts the nodes of the list; the last must not be blank. */
static msv_err count_nodes(struct msv_reader list, uint32_t *count)
{
    struct msv_mls_node scratch;
    uint32_t n = 0;
    msv_err err = MSV_OK;

    while (!msv_mls_reader_is_done(&list) && err == MSV_OK) {
        if (n >= 2 * MSV_MLS_TREE_MAX_LEAVES)
            return MSV_ERR_TOO_BIG;
        memset(&scratch, 0, sizeof(scratch));
        err = read_node(&list, n, &scratch);
        if (err == MSV_OK && msv_mls_reader_is_done(&list) && scratch.type == 0)
            err = MSV_ERR_PARSE;
        free(scratch.unmerged);
        n++;
    }
    if (err == MSV_OK && n == 0)
        err = MSV_ERR_PARSE;
    if (err == MSV_OK)
        *count = n;
    return err;
}

msv_err msv_mls_tree_read(const uint8_t *data, size_t len, struct msv_mls_tree *t)
{
    struct msv_reader r, list;
    struct msv_mls_tree tree = {1, 1, NULL};
    uint32_t count = 0;
    msv_err err;

    msv_reader_init(&r, data, len);
    if (msv_mls_get_sub(&r, &list) != MSV_OK || !msv_mls_reader_is_done(&r))
        return MSV_ERR_PARSE;
    err = count_nodes(list, &count);
    if (err != MSV_OK)
        return err;
    /* padded with blanks to the smallest full tree that holds them */
    while (msv_mls_tree_width(tree.n_leaves) < count)
        tree.n_leaves *= 2;
    tree.width = msv_mls_tree_width(tree.n_leaves);
    tree.nodes = calloc(tree.width, sizeof(*tree.nodes));
    if (tree.nodes == NULL)
        return MSV_ERR_NOMEM;
    for (uint32_t i = 0; i < count && err == MSV_OK; i++)
        err = read_node(&list, i, &tree.nodes[i]);
    if (err != MSV_OK) {
        msv_mls_tree_free(&tree);
        return err;
    }
    *t = tree;
    return MSV_OK;
}

msv_err msv_mls_tree_copy(const struct msv_mls_tree *t, struct msv_mls_tree *out)
{
    struct msv_mls_tree c = {t->n_leaves, t->width, calloc(t->width + 1, sizeof(*t->nodes))};

    if (c.nodes == NULL)
        return MSV_ERR_NOMEM;
    for (uint32_t i = 0; i < t->width; i++) {
        c.nodes[i] = t->nodes[i];
        c.nodes[i].unmerged = NULL;
        if (t->nodes[i].unmerged == NULL)
            continue;
        c.nodes[i].unmerged = calloc(t->nodes[i].n_unmerged + 1, sizeof(uint32_t));
        if (c.nodes[i].unmerged == NULL) {
            msv_mls_tree_free(&c);
            return MSV_ERR_NOMEM;
        }
        memcpy(c.nodes[i].unmerged, t->nodes[i].unmerged,
               t->nodes[i].n_unmerged * sizeof(uint32_t));
    }
    *out = c;
    return MSV_OK;
}

void msv_mls_tree_free(struct msv_mls_tree *t)
{
    for (uint32_t i = 0; t->nodes != NULL && i < t->width; i++)
        free(t->nodes[i].unmerged);
    free(t->nodes);
    t->nodes = NULL;
    t->width = t->n_leaves = 0;
}

static msv_err finish_hash(struct msv_buf *w, uint8_t out[MSV_MLS_NH])
{
    uint8_t *in = NULL;
    size_t in_len = 0;
    msv_err err = msv_buf_finish(w, &in, &in_len);

    if (err == MSV_OK)
        err = msv_mls_hash(in, in_len, out);
    free(in);
    return err;
}

/* The tree hash of x with the leaves of ex left out (blank, and out of unmerged lists). */
static msv_err hash_node(const struct msv_mls_tree *t, uint32_t x, const struct exclusion *ex,
                         uint8_t out[MSV_MLS_NH])
{
    const struct msv_mls_node *n = &t->nodes[x];
    uint8_t left[MSV_MLS_NH], right[MSV_MLS_NH];
    struct msv_buf w;
    size_t mark;
    msv_err err;

    msv_buf_init(&w, MSV_MLS_MESSAGE_MAX);
    if (x % 2 == 0) {
        int present = n->type == 1 && !is_excluded(ex, x / 2);

        (void)msv_buf_put_u8(&w, 1);
        (void)msv_buf_put_u32be(&w, x / 2);
        (void)msv_buf_put_u8(&w, (uint8_t)present);
        if (present)
            (void)msv_buf_put(&w, n->leaf.raw, n->leaf.raw_len);
        return finish_hash(&w, out);
    }
    err = hash_node(t, msv_mls_tree_left(x), ex, left);
    if (err == MSV_OK)
        err = hash_node(t, msv_mls_tree_right(x), ex, right);
    if (err != MSV_OK)
        return err;
    (void)msv_buf_put_u8(&w, 2);
    (void)msv_buf_put_u8(&w, n->type == 2);
    if (n->type == 2) {
        msv_mls_put_vec(&w, n->encryption_key, n->encryption_key_len);
        put_parent_ph(&w, n);
        mark = msv_mls_vec_begin(&w);
        for (size_t i = 0; i < n->n_unmerged; i++) {
            if (!is_excluded(ex, n->unmerged[i]))
                (void)msv_buf_put_u32be(&w, n->unmerged[i]);
        }
        msv_mls_vec_end(&w, mark);
    }
    msv_mls_put_vec(&w, left, sizeof(left));
    msv_mls_put_vec(&w, right, sizeof(right));
    return finish_hash(&w, out);
}

msv_err msv_mls_tree_hash(const struct msv_mls_tree *t, uint32_t x, uint8_t out[MSV_MLS_NH])
{
    if (x >= t->width)
        return MSV_ERR_INVALID;
    return hash_node(t, x, NULL, out);
}

static msv_err resolve(const struct msv_mls_tree *t, uint32_t x, uint32_t *out, size_t max,
                       size_t *n)
{
    const struct msv_mls_node *node = &t->nodes[x];
    msv_err err;

    if (node->type != 0) {
        if (*n + 1 + node->n_unmerged > max)
            return MSV_ERR_TOO_BIG;
        out[(*n)++] = x;
        for (size_t i = 0; i < node->n_unmerged; i++)
            out[(*n)++] = 2 * node->unmerged[i];
        return MSV_OK;
    }
    if (x % 2 == 0)
        return MSV_OK;
    err = resolve(t, msv_mls_tree_left(x), out, max, n);
    if (err == MSV_OK)
        err = resolve(t, msv_mls_tree_right(x), out, max, n);
    return err;
}

msv_err msv_mls_tree_resolution(const struct msv_mls_tree *t, uint32_t x, uint32_t *out, size_t max,
                                size_t *n)
{
    size_t count = 0;
    msv_err err;

    if (x >= t->width)
        return MSV_ERR_INVALID;
    err = resolve(t, x, out, max, &count);
    if (err == MSV_OK)
        *n = count;
    return err;
}

int msv_mls_tree_path_unkeyed(const struct msv_mls_tree *t, uint32_t leaf)
{
    uint32_t x = 2 * leaf, res[2];

    if (leaf >= t->n_leaves)
        return 0;
    while ((x = msv_mls_tree_parent(x, t->n_leaves)) != MSV_MLS_NONE && x < t->width) {
        size_t n = 0;
        msv_err err = msv_mls_tree_resolution(t, x, res, 2, &n);

        if (err == MSV_ERR_TOO_BIG || (err == MSV_OK && n > 1))
            return 1;
    }
    return 0;
}

int msv_mls_tree_path_blank_first(const struct msv_mls_tree *t, uint32_t leaf)
{
    uint32_t x = 2 * leaf, res[2];

    if (leaf >= t->n_leaves)
        return 0;
    while ((x = msv_mls_tree_parent(x, t->n_leaves)) != MSV_MLS_NONE && x < t->width) {
        uint32_t k = msv_mls_tree_level(x), first = (x >> (k + 1)) << k, i = first;
        size_t n = 0;
        msv_err err;

        if (t->nodes[x].type != 0)
            continue;
        err = msv_mls_tree_resolution(t, x, res, 2, &n);
        if (err != MSV_ERR_TOO_BIG && (err != MSV_OK || n < 2))
            continue;
        /* the leaves beneath x are first .. first + 2^k - 1; leaf is one of them */
        while (i < leaf && t->nodes[2 * i].type == 0)
            i++;
        if (i == leaf)
            return 1;
    }
    return 0;
}

uint32_t msv_mls_tree_key_order(uint32_t leaf, uint32_t n_leaves)
{
    uint32_t bits = 0, place = 0;

    while (bits < 32 && (1ULL << bits) < n_leaves)
        bits++;
    for (uint32_t b = 0; b < bits; b++)
        place |= ((leaf >> b) & 1u) << (bits - 1 - b);
    return place;
}

/* ParentHash of P with co-path child s: over P's key and parent hash and s's original hash. */
static msv_err parent_hash_of(const struct msv_mls_tree *t, uint32_t p, uint32_t s,
                              const struct exclusion *ex, uint8_t out[MSV_MLS_NH])
{
    const struct msv_mls_node *n = &t->nodes[p];
    uint8_t sibling[MSV_MLS_NH];
    struct msv_buf w;
    msv_err err = hash_node(t, s, ex, sibling);

    if (err != MSV_OK)
        return err;
    msv_buf_init(&w, MSV_MLS_MESSAGE_MAX);
    msv_mls_put_vec(&w, n->encryption_key, n->encryption_key_len);
    put_parent_ph(&w, n);
    msv_mls_put_vec(&w, sibling, sizeof(sibling));
    return finish_hash(&w, out);
}

msv_err msv_mls_tree_parent_hash(const struct msv_mls_tree *t, uint32_t p, uint32_t s,
                                 uint8_t out[MSV_MLS_NH])
{
    uint8_t *marks = calloc(t->n_leaves, 1);
    struct exclusion ex = {marks};
    msv_err err;

    if (marks == NULL)
        return MSV_ERR_NOMEM;
    mark_unmerged(&t->nodes[p], marks, 1);
    err = parent_hash_of(t, p, s, &ex, out);
    free(marks);
    return err;
}

static void node_parent_hash(const struct msv_mls_node *n, const uint8_t **p, size_t *len)
{
    if (n->type == 2) {
        parent_ph(n, p, len);
        return;
    }
    *p = n->leaf.parent_hash;
    *len = n->leaf.parent_hash_len;
}

/*
 * 7.9.2: P is parent-hash valid with respect to child c when the resolution
 * of c, less P's unmerged leaves, is one node D whose parent hash is P's
 * with the other child as co-path child.
 */
static msv_err valid_through(const struct msv_mls_tree *t, uint32_t p, uint32_t c, uint32_t s,
                             const struct exclusion *ex, uint32_t *res, int *valid)
{
    uint8_t want[MSV_MLS_NH];
    const uint8_t *got = NULL;
    size_t n = 0, kept = 0, got_len = 0;
    uint32_t d = 0;
    msv_err err = msv_mls_tree_resolution(t, c, res, t->width, &n);

    if (err != MSV_OK)
        return err;
    for (size_t i = 0; i < n; i++) {
        if (res[i] % 2 == 0 && is_excluded(ex, res[i] / 2))
            continue;
        d = res[i];
        kept++;
    }
    *valid = 0;
    if (kept != 1)
        return MSV_OK;
    err = parent_hash_of(t, p, s, ex, want);
    if (err != MSV_OK)
        return err;
    node_parent_hash(&t->nodes[d], &got, &got_len);
    *valid = got_len == MSV_MLS_NH && msv_equal_ct(got, want, MSV_MLS_NH);
    return MSV_OK;
}

static msv_err verify_parent_hashes(const struct msv_mls_tree *t)
{
    uint32_t *res = calloc(t->width, sizeof(uint32_t));
    uint8_t *marks = calloc(t->n_leaves, 1);
    struct exclusion ex = {marks};
    msv_err err = res == NULL || marks == NULL ? MSV_ERR_NOMEM : MSV_OK;

    for (uint32_t x = 1; err == MSV_OK && x < t->width; x += 2) {
        uint32_t l = msv_mls_tree_left(x), r = msv_mls_tree_right(x);
        int valid = 0;

        if (t->nodes[x].type == 0)
            continue;
        mark_unmerged(&t->nodes[x], marks, 1);
        err = valid_through(t, x, l, r, &ex, res, &valid);
        if (err == MSV_OK && !valid)
            err = valid_through(t, x, r, l, &ex, res, &valid);
        if (err == MSV_OK && !valid)
            err = MSV_ERR_AUTH;
        mark_unmerged(&t->nodes[x], marks, 0);
    }
    free(res);
    free(marks);
    return err;
}

/* LeafNodeTBS (7.2): the LeafNode before its signature, then group_id and leaf index for
 * update and commit leaves. */
static msv_err verify_leaf(const struct msv_mls_leaf *leaf, uint32_t index, const uint8_t *group_id,
                           size_t group_id_len)
{
    struct msv_buf w;
    uint8_t *tbs = NULL;
    size_t tbs_len = 0;
    msv_err err;

    msv_buf_init(&w, MSV_MLS_MESSAGE_MAX);
    (void)msv_buf_put(&w, leaf->raw, leaf->tbs_len);
    if (leaf->source != 1) {
        msv_mls_put_vec(&w, group_id, group_id_len);
        (void)msv_buf_put_u32be(&w, index);
    }
    err = msv_buf_finish(&w, &tbs, &tbs_len);
    if (err != MSV_OK)
        return err;
    err = msv_mls_verify_label(leaf->signature_key, leaf->signature_key_len, "LeafNodeTBS", tbs,
                               tbs_len, leaf->signature, leaf->signature_len);
    free(tbs);
    return err;
}

msv_err msv_mls_tree_verify(const struct msv_mls_tree *t, const uint8_t *group_id,
                            size_t group_id_len)
{
    msv_err err = MSV_OK;

    for (uint32_t x = 0; err == MSV_OK && x < t->width; x += 2) {
        if (t->nodes[x].type == 1)
            err = verify_leaf(&t->nodes[x].leaf, x / 2, group_id, group_id_len);
    }
    if (err == MSV_OK)
        err = verify_parent_hashes(t);
    return err == MSV_OK ? MSV_OK : MSV_ERR_AUTH;
}

static void blank(struct msv_mls_node *n)
{
    free(n->unmerged);
    memset(n, 0, sizeof(*n));
}

/* Blanks the parents above leaf (its direct path). */
static void blank_direct_path(struct msv_mls_tree *t, uint32_t leaf)
{
    for (uint32_t x = msv_mls_tree_parent(2 * leaf, t->n_leaves); x != MSV_MLS_NONE;
         x = msv_mls_tree_parent(x, t->n_leaves))
        blank(&t->nodes[x]);
}

/* Doubles the tree: the old one becomes the left half, the right half is blank. */
static msv_err grow(struct msv_mls_tree *t)
{
    uint32_t leaves = t->n_leaves * 2, width = msv_mls_tree_width(leaves);
    struct msv_mls_node *nodes;

    if (leaves > MSV_MLS_TREE_MAX_LEAVES)
        return MSV_ERR_TOO_BIG;
    nodes = realloc(t->nodes, (size_t)width * sizeof(*nodes));
    if (nodes == NULL)
        return MSV_ERR_NOMEM;
    memset(nodes + t->width, 0, (size_t)(width - t->width) * sizeof(*nodes));
    t->nodes = nodes;
    t->n_leaves = leaves;
    t->width = width;
    return MSV_OK;
}

msv_err msv_mls_tree_add(struct msv_mls_tree *t, const struct msv_mls_leaf *leaf, uint32_t *index)
{
    uint32_t i = 0;
    msv_err err;

    while (i < t->n_leaves && t->nodes[2 * i].type != 0)
        i++;
    if (i == t->n_leaves && (err = grow(t)) != MSV_OK)
        return err;
    /* 12.1.1: the new leaf is unmerged at every non-blank parent above it */
    for (uint32_t x = msv_mls_tree_parent(2 * i, t->n_leaves); x != MSV_MLS_NONE;
         x = msv_mls_tree_parent(x, t->n_leaves)) {
        struct msv_mls_node *p = &t->nodes[x];
        uint32_t *u;

        if (p->type == 0)
            continue;
        u = realloc(p->unmerged, (p->n_unmerged + 1) * sizeof(uint32_t));
        if (u == NULL)
            return MSV_ERR_NOMEM;
        p->unmerged = u;
        p->unmerged[p->n_unmerged++] = i;
    }
    t->nodes[2 * i].type = 1;
    t->nodes[2 * i].leaf = *leaf;
    *index = i;
    return MSV_OK;
}

msv_err msv_mls_tree_update(struct msv_mls_tree *t, uint32_t index, const struct msv_mls_leaf *leaf)
{
    if (index >= t->n_leaves || t->nodes[2 * index].type != 1)
        return MSV_ERR_INVALID;
    t->nodes[2 * index].leaf = *leaf;
    blank_direct_path(t, index);
    return MSV_OK;
}

msv_err msv_mls_tree_remove(struct msv_mls_tree *t, uint32_t index)
{
    if (index >= t->n_leaves || t->nodes[2 * index].type != 1)
        return MSV_ERR_INVALID;
    blank(&t->nodes[2 * index]);
    blank_direct_path(t, index);
    /* 7.7: cut off the right half while it holds no leaf */
    while (t->n_leaves > 1) {
        uint32_t half = t->n_leaves / 2, i = half;

        while (i < t->n_leaves && t->nodes[2 * i].type == 0)
            i++;
        if (i < t->n_leaves)
            break;
        for (uint32_t x = msv_mls_tree_width(half); x < t->width; x++)
            blank(&t->nodes[x]);
        t->n_leaves = half;
        t->width = msv_mls_tree_width(half);
    }
    return MSV_OK;
}

msv_err msv_mls_tree_write(const struct msv_mls_tree *t, uint8_t **out, size_t *out_len)
{
    struct msv_buf w;
    uint32_t end = t->width;
    size_t mark;

    while (end > 0 && t->nodes[end - 1].type == 0)
        end--;
    msv_buf_init(&w, MSV_MLS_MESSAGE_MAX * 4);
    mark = msv_mls_vec_begin(&w);
    for (uint32_t x = 0; x < end; x++) {
        const struct msv_mls_node *n = &t->nodes[x];

        (void)msv_buf_put_u8(&w, n->type != 0);
        if (n->type == 0)
            continue;
        (void)msv_buf_put_u8(&w, n->type);
        if (n->type == 1) {
            (void)msv_buf_put(&w, n->leaf.raw, n->leaf.raw_len);
            continue;
        }
        msv_mls_put_vec(&w, n->encryption_key, n->encryption_key_len);
        put_parent_ph(&w, n);
        msv_mls_put_varint(&w, 4 * (uint64_t)n->n_unmerged);
        for (size_t i = 0; i < n->n_unmerged; i++)
            (void)msv_buf_put_u32be(&w, n->unmerged[i]);
    }
    msv_mls_vec_end(&w, mark);
    return msv_buf_finish(&w, out, out_len);
}
