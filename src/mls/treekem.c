/*
 * TreeKEM on the receiving side (RFC 9420 7.4-7.6, 7.9, 12.4.2): reading an
 * UpdatePath, merging it into the tree with the parent hashes it chains to,
 * and decrypting the path secret meant for us, from which the rest of the
 * path and the commit secret follow.
 *
 *   UpdatePath = LeafNode leaf_node || UpdatePathNode nodes<V>
 *   UpdatePathNode = encryption_key<V> || HPKECiphertext encrypted_path_secret<V>
 *   HPKECiphertext = kem_output<V> || ciphertext<V>
 *   path_secret[n+1] = DeriveSecret(path_secret[n], "path")
 *   node_secret = DeriveSecret(path_secret, "node"); its key pair by DeriveKeyPair
 *   commit_secret = the path secret one past the root
 */
#include <string.h>

#include <sodium.h>

#include "missive/util.h"
#include "mls/mls.h"

msv_err msv_mls_update_path_read(const uint8_t *data, size_t len, struct msv_mls_update_path *up)
{
    struct msv_reader r, list;

    memset(up, 0, sizeof(*up));
    msv_reader_init(&r, data, len);
    if (msv_mls_read_leaf_node(&r, &up->leaf) != MSV_OK || msv_mls_get_sub(&r, &list) != MSV_OK ||
        !msv_mls_reader_is_done(&r))
        return MSV_ERR_PARSE;
    while (!msv_mls_reader_is_done(&list)) {
        size_t i = up->n_nodes;

        if (i == MSV_MLS_PATH_MAX)
            return MSV_ERR_TOO_BIG;
        if (msv_mls_get_vec(&list, &up->nodes[i].encryption_key,
                            &up->nodes[i].encryption_key_len) != MSV_OK ||
            msv_mls_get_vec(&list, &up->nodes[i].secrets, &up->nodes[i].secrets_len) != MSV_OK)
            return MSV_ERR_PARSE;
        up->n_nodes++;
    }
    return MSV_OK;
}

/* The child of x that is not on the way to leaf. */
static uint32_t copath_child(uint32_t x, uint32_t leaf)
{
    return 2 * leaf < x ? msv_mls_tree_right(x) : msv_mls_tree_left(x);
}

msv_err msv_mls_tree_filtered_path(const struct msv_mls_tree *t, uint32_t leaf,
                                   uint32_t path[MSV_MLS_PATH_MAX], size_t *n)
{
    uint32_t res[1];
    size_t count = 0;

    if (leaf >= t->n_leaves)
        return MSV_ERR_INVALID;
    for (uint32_t x = msv_mls_tree_parent(2 * leaf, t->n_leaves); x != MSV_MLS_NONE;
         x = msv_mls_tree_parent(x, t->n_leaves)) {
        size_t k = 0;
        msv_err err = msv_mls_tree_resolution(t, copath_child(x, leaf), res, 1, &k);

        /* a resolution too long for one slot is not empty */
        if (err == MSV_ERR_TOO_BIG || (err == MSV_OK && k > 0)) {
            if (count == MSV_MLS_PATH_MAX)
                return MSV_ERR_TOO_BIG;
            path[count++] = x;
        } else if (err != MSV_OK) {
            return err;
        }
    }
    *n = count;
    return MSV_OK;
}

msv_err msv_mls_tree_set_path(struct msv_mls_tree *t, uint32_t sender,
                              const struct msv_mls_update_path *up, uint8_t leaf_ph[MSV_MLS_NH],
                              size_t *leaf_ph_len)
{
    uint32_t path[MSV_MLS_PATH_MAX];
    size_t n = 0;
    msv_err err = msv_mls_tree_filtered_path(t, sender, path, &n);

    if (err != MSV_OK)
        return err;
    if (n != up->n_nodes || t->nodes[2 * sender].type != 1)
        return MSV_ERR_AUTH;
    for (uint32_t x = msv_mls_tree_parent(2 * sender, t->n_leaves); x != MSV_MLS_NONE;
         x = msv_mls_tree_parent(x, t->n_leaves)) {
        free(t->nodes[x].unmerged);
        memset(&t->nodes[x], 0, sizeof(t->nodes[x]));
    }
    for (size_t i = 0; i < n; i++) {
        struct msv_mls_node *p = &t->nodes[path[i]];

        p->type = 2;
        p->encryption_key = up->nodes[i].encryption_key;
        p->encryption_key_len = up->nodes[i].encryption_key_len;
        p->has_own_parent_hash = i + 1 < n; /* the top node's is empty; the others are set below */
    }
    /* 7.9: from the root down, each node's parent hash is its parent's in the path */
    for (size_t i = n; i-- > 1;) {
        struct msv_mls_node *below = &t->nodes[path[i - 1]];

        err = msv_mls_tree_parent_hash(t, path[i], copath_child(path[i], sender),
                                       below->own_parent_hash);
        if (err != MSV_OK)
            return err;
    }
    *leaf_ph_len = 0;
    if (n > 0) {
        err = msv_mls_tree_parent_hash(t, path[0], copath_child(path[0], sender), leaf_ph);
        *leaf_ph_len = MSV_MLS_NH;
    }
    return err;
}

msv_err msv_mls_tree_merge_path(struct msv_mls_tree *t, uint32_t sender,
                                const struct msv_mls_update_path *up)
{
    uint8_t leaf_ph[MSV_MLS_NH];
    size_t ph_len = 0;
    msv_err err;

    if (up->leaf.source != 3)
        return MSV_ERR_AUTH;
    err = msv_mls_tree_set_path(t, sender, up, leaf_ph, &ph_len);
    if (err != MSV_OK)
        return err;
    if (up->leaf.parent_hash_len != ph_len ||
        (ph_len > 0 && !msv_equal_ct(up->leaf.parent_hash, leaf_ph, ph_len)))
        return MSV_ERR_AUTH;
    t->nodes[2 * sender].leaf = up->leaf;
    return MSV_OK;
}

msv_err msv_mls_node_keypair(const uint8_t path_secret[MSV_MLS_NH], uint8_t sk[32], uint8_t pk[32])
{
    uint8_t node[MSV_MLS_NH];
    msv_err err = msv_mls_derive_secret(path_secret, MSV_MLS_NH, "node", node);

    if (err == MSV_OK)
        err = msv_mls_hpke_derive_keypair(node, MSV_MLS_NH, sk, pk);
    sodium_memzero(node, sizeof(node));
    return err;
}

/* The index in the resolution of c of the first node we hold a key for, and that key. */
static int is_joiner(uint32_t node, const uint32_t *joiners, size_t n_joiners)
{
    for (size_t i = 0; node % 2 == 0 && i < n_joiners; i++) {
        if (joiners[i] == node / 2)
            return 1;
    }
    return 0;
}

/*
 * The index of the first node we hold a key for in the resolution of c, less
 * the leaves the commit added (12.4.2: they get the path secret by Welcome).
 */
static msv_err find_key(const struct msv_mls_tree *t, uint32_t c,
                        const struct msv_mls_node_key *keys, size_t n_keys, const uint32_t *joiners,
                        size_t n_joiners, size_t *index, const uint8_t **sk)
{
    uint32_t *res = calloc(t->width, sizeof(uint32_t));
    size_t n = 0, kept = 0;
    msv_err err = res == NULL ? MSV_ERR_NOMEM : msv_mls_tree_resolution(t, c, res, t->width, &n);

    for (size_t i = 0; err == MSV_OK && i < n; i++) {
        if (is_joiner(res[i], joiners, n_joiners))
            continue;
        for (size_t k = 0; k < n_keys; k++) {
            if (keys[k].node == res[i]) {
                *index = kept;
                *sk = keys[k].sk;
                free(res);
                return MSV_OK;
            }
        }
        kept++;
    }
    free(res);
    return err == MSV_OK ? MSV_ERR_NOT_FOUND : err;
}

/* The i-th HPKECiphertext of a node's list. */
static msv_err nth_ciphertext(const uint8_t *list, size_t len, size_t i, const uint8_t **kem,
                              size_t *kem_len, const uint8_t **ct, size_t *ct_len)
{
    struct msv_reader r;

    msv_reader_init(&r, list, len);
    for (size_t k = 0; k <= i; k++) {
        if (msv_mls_get_vec(&r, kem, kem_len) != MSV_OK ||
            msv_mls_get_vec(&r, ct, ct_len) != MSV_OK)
            return MSV_ERR_AUTH;
    }
    return MSV_OK;
}

/* From the path secret of path[i] up: every derived public key must be the tree's. */
static msv_err derive_up(const struct msv_mls_tree *t, const uint32_t *path, size_t path_len,
                         size_t i, const uint8_t first[MSV_MLS_NH],
                         uint8_t commit_secret[MSV_MLS_NH])
{
    uint8_t ps[MSV_MLS_NH], sk[32], pk[32];
    msv_err err = MSV_OK;

    memcpy(ps, first, MSV_MLS_NH);
    for (size_t k = i; err == MSV_OK && k < path_len; k++) {
        const struct msv_mls_node *n = &t->nodes[path[k]];

        if (k > i)
            err = msv_mls_derive_secret(ps, MSV_MLS_NH, "path", ps);
        if (err == MSV_OK)
            err = msv_mls_node_keypair(ps, sk, pk);
        if (err == MSV_OK &&
            (n->encryption_key_len != 32 || !msv_equal_ct(pk, n->encryption_key, 32)))
            err = MSV_ERR_AUTH;
    }
    if (err == MSV_OK)
        err = msv_mls_derive_secret(ps, MSV_MLS_NH, "path", commit_secret);
    sodium_memzero(ps, sizeof(ps));
    sodium_memzero(sk, sizeof(sk));
    return err;
}

msv_err msv_mls_path_open(enum msv_mls_suite suite, const struct msv_mls_tree *t,
                          const uint32_t *path, size_t path_len,
                          const struct msv_mls_update_path *up, uint32_t receiver,
                          const struct msv_mls_node_key *keys, size_t n_keys,
                          const uint32_t *joiners, size_t n_joiners, const uint8_t *gc,
                          size_t gc_len, uint8_t path_secret[MSV_MLS_NH],
                          uint8_t commit_secret[MSV_MLS_NH])
{
    const uint8_t *sk = NULL, *kem, *ct;
    size_t i = 0, index = 0, kem_len, ct_len, pt_len = 0;
    uint8_t *pt = NULL;
    msv_err err;

    if (path_len != up->n_nodes || receiver >= t->n_leaves)
        return MSV_ERR_INVALID;
    /* the lowest node of the path above us */
    while (i < path_len && !(msv_mls_tree_level(path[i]) > 0 &&
                             2 * receiver >= path[i] - ((1u << msv_mls_tree_level(path[i])) - 1) &&
                             2 * receiver <= path[i] + ((1u << msv_mls_tree_level(path[i])) - 1)))
        i++;
    if (i == path_len)
        return MSV_ERR_INVALID;
    err = find_key(
        t, 2 * receiver < path[i] ? msv_mls_tree_left(path[i]) : msv_mls_tree_right(path[i]), keys,
        n_keys, joiners, n_joiners, &index, &sk);
    if (err == MSV_OK)
        err = nth_ciphertext(up->nodes[i].secrets, up->nodes[i].secrets_len, index, &kem, &kem_len,
                             &ct, &ct_len);
    if (err == MSV_OK)
        err = msv_mls_decrypt_label(suite, sk, "UpdatePathNode", gc, gc_len, kem, kem_len, ct,
                                    ct_len, &pt, &pt_len);
    if (err == MSV_OK && pt_len != MSV_MLS_NH)
        err = MSV_ERR_AUTH;
    if (err == MSV_OK)
        err = derive_up(t, path, path_len, i, pt, commit_secret);
    if (err == MSV_OK)
        memcpy(path_secret, pt, MSV_MLS_NH);
    msv_secret_free(pt, pt_len);
    return err;
}
