/*
 * The secret tree of an epoch as a member keeps it (RFC 9420 9, 9.1, 9.2):
 *
 *   tree_node_[2i+1]... left = ExpandWithLabel(secret, "tree", "left", Nh)
 *                       right = ExpandWithLabel(secret, "tree", "right", Nh)
 *   handshake / application ratchet secret_[0] = ExpandWithLabel(leaf, label, "", Nh)
 *   key_[j] = DeriveTreeSecret(secret_[j], "key", j, Nk), nonce_[j] likewise ("nonce", Nn)
 *   secret_[j+1] = DeriveTreeSecret(secret_[j], "secret", j, Nh)
 *
 * For forward secrecy inside the epoch (9.2), a node's secret is erased once
 * both its children's are derived, a leaf's once its two ratchets are, a
 * ratchet's secret_[j] once it moved to j+1, and a message key once its
 * message authenticated. Reading a key changes nothing; only consuming it
 * after the message checked out does, so a forged message erases nothing.
 */
#include <string.h>

#include <sodium.h>

#include "missive/util.h"
#include "mls/member.h"

static msv_err expand(const uint8_t secret[MSV_MLS_NH], const char *label, const char *context,
                      uint8_t out[MSV_MLS_NH])
{
    return msv_mls_expand_label(secret, MSV_MLS_NH, (const uint8_t *)label, strlen(label),
                                (const uint8_t *)context, strlen(context), out, MSV_MLS_NH);
}

void msv_mls_secret_state_free(struct msv_mls_secret_state *st)
{
    /* sodium_free wipes what it frees */
    sodium_free(st->node);
    sodium_free(st->has);
    sodium_free(st->ratchet);
    sodium_free(st->skipped);
    memset(st, 0, sizeof(*st));
}

msv_err msv_mls_secret_state_init(struct msv_mls_secret_state *st, enum msv_mls_suite suite,
                                  const uint8_t encryption_secret[MSV_MLS_NH], uint32_t n_leaves)
{
    uint32_t width = msv_mls_tree_width(n_leaves);

    memset(st, 0, sizeof(*st));
    if (n_leaves == 0 || n_leaves > MSV_MLS_TREE_MAX_LEAVES || (n_leaves & (n_leaves - 1)) != 0)
        return MSV_ERR_INVALID;
    st->node = sodium_allocarray(width, MSV_MLS_NH);
    st->has = sodium_allocarray(width, 1);
    st->ratchet = sodium_allocarray(2 * (size_t)n_leaves, sizeof(*st->ratchet));
    st->skipped = sodium_allocarray(MSV_MLS_SKIPPED_MAX, sizeof(*st->skipped));
    if (st->node == NULL || st->has == NULL || st->ratchet == NULL || st->skipped == NULL) {
        msv_mls_secret_state_free(st);
        return MSV_ERR_NOMEM;
    }
    memset(st->has, 0, width);
    memset(st->ratchet, 0, 2 * (size_t)n_leaves * sizeof(*st->ratchet));
    st->suite = suite;
    st->n_leaves = n_leaves;
    memcpy(st->node[msv_mls_tree_root(n_leaves)], encryption_secret, MSV_MLS_NH);
    st->has[msv_mls_tree_root(n_leaves)] = 1;
    return MSV_OK;
}

static const char *ratchet_label(enum msv_mls_ratchet which)
{
    return which == MSV_MLS_RATCHET_HANDSHAKE ? "handshake" : "application";
}

/* The leaf's secret, derived (into out) from the lowest node on its way that still holds one. */
static msv_err leaf_secret(const struct msv_mls_secret_state *st, uint32_t leaf,
                           uint8_t out[MSV_MLS_NH])
{
    uint32_t x = msv_mls_tree_root(st->n_leaves), target = 2 * leaf;
    msv_err err = MSV_OK;

    while (x != target && !st->has[x])
        x = target < x ? msv_mls_tree_left(x) : msv_mls_tree_right(x);
    if (!st->has[x])
        return MSV_ERR_AUTH;
    memcpy(out, st->node[x], MSV_MLS_NH);
    while (x != target && err == MSV_OK) {
        int left = target < x;

        err = expand(out, "tree", left ? "left" : "right", out);
        x = left ? msv_mls_tree_left(x) : msv_mls_tree_right(x);
    }
    return err;
}

msv_err msv_mls_secret_state_key(const struct msv_mls_secret_state *st, uint32_t leaf,
                                 enum msv_mls_ratchet which, uint32_t generation, uint8_t *key,
                                 uint8_t nonce[MSV_MLS_NN])
{
    const struct msv_mls_ratchet_state *r;
    uint8_t s[MSV_MLS_NH];
    msv_err err;

    if (st->node == NULL || leaf >= st->n_leaves || generation > MSV_MLS_GENERATION_MAX)
        return MSV_ERR_AUTH;
    r = &st->ratchet[2 * leaf + (which == MSV_MLS_RATCHET_APPLICATION)];
    if (r->live && generation < r->generation) {
        for (size_t i = 0; i < st->n_skipped; i++) {
            const struct msv_mls_skipped_key *k = &st->skipped[i];

            if (k->leaf == leaf && k->which == which && k->generation == generation) {
                memcpy(key, k->key, msv_mls_suite_nk(st->suite));
                memcpy(nonce, k->nonce, MSV_MLS_NN);
                return MSV_OK;
            }
        }
        return MSV_ERR_AUTH; /* used, or skipped too long ago */
    }
    if (generation - (r->live ? r->generation : 0) > MSV_MLS_FORWARD_MAX)
        return MSV_ERR_AUTH;
    if (r->live)
        return msv_mls_ratchet_key_from(st->suite, r->secret, r->generation, generation, key,
                                        nonce);
    err = leaf_secret(st, leaf, s);
    if (err == MSV_OK)
        err = expand(s, ratchet_label(which), "", s);
    if (err == MSV_OK)
        err = msv_mls_ratchet_key_from(st->suite, s, 0, generation, key, nonce);
    sodium_memzero(s, sizeof(s));
    return err;
}

/* Derives the way down to leaf, erasing each parent once its children hold their secrets, then
 * the leaf's two ratchets, erasing the leaf's secret. */
static msv_err materialize(struct msv_mls_secret_state *st, uint32_t leaf)
{
    uint32_t x = msv_mls_tree_root(st->n_leaves), target = 2 * leaf;
    struct msv_mls_ratchet_state *r = &st->ratchet[2 * leaf];
    msv_err err = MSV_OK;

    if (r[0].live)
        return MSV_OK;
    while (x != target && !st->has[x])
        x = target < x ? msv_mls_tree_left(x) : msv_mls_tree_right(x);
    if (!st->has[x])
        return MSV_ERR_AUTH;
    while (x != target) {
        uint32_t l = msv_mls_tree_left(x), rt = msv_mls_tree_right(x);

        err = expand(st->node[x], "tree", "left", st->node[l]);
        if (err == MSV_OK)
            err = expand(st->node[x], "tree", "right", st->node[rt]);
        if (err != MSV_OK)
            return err;
        st->has[l] = st->has[rt] = 1;
        sodium_memzero(st->node[x], MSV_MLS_NH);
        st->has[x] = 0;
        x = target < x ? l : rt;
    }
    err = expand(st->node[x], "handshake", "", r[0].secret);
    if (err == MSV_OK)
        err = expand(st->node[x], "application", "", r[1].secret);
    if (err != MSV_OK)
        return err;
    sodium_memzero(st->node[x], MSV_MLS_NH);
    st->has[x] = 0;
    r[0].live = r[1].live = 1;
    r[0].generation = r[1].generation = 0;
    return MSV_OK;
}

static void drop_skipped(struct msv_mls_secret_state *st, size_t i)
{
    sodium_memzero(&st->skipped[i], sizeof(st->skipped[i]));
    memmove(&st->skipped[i], &st->skipped[i + 1], (st->n_skipped - i - 1) * sizeof(st->skipped[0]));
    st->n_skipped--;
    sodium_memzero(&st->skipped[st->n_skipped], sizeof(st->skipped[0]));
}

/*
 * Which kept key to drop when all MSV_MLS_SKIPPED_MAX are held: the oldest of
 * the sender (leaf) holding the most, the one keeping a key now if it is among
 * them. So one member skipping many generations drops its own keys, never
 * those of a member holding fewer.
 */
static size_t skipped_to_drop(const struct msv_mls_secret_state *st, uint32_t leaf)
{
    size_t best = 0, best_count = 0, own = SIZE_MAX, own_count = 0;

    for (size_t i = 0; i < st->n_skipped; i++) {
        size_t count = 0;

        for (size_t j = 0; j < st->n_skipped; j++)
            count += st->skipped[j].leaf == st->skipped[i].leaf;
        if (count > best_count) {
            best = i;
            best_count = count;
        }
        if (st->skipped[i].leaf == leaf && own == SIZE_MAX) {
            own = i;
            own_count = count;
        }
    }
    return own != SIZE_MAX && own_count == best_count ? own : best;
}

/* Keeps the key of a generation the ratchet moves past, dropping one past the limit. */
static msv_err keep_skipped(struct msv_mls_secret_state *st, uint32_t leaf, uint8_t which,
                            const struct msv_mls_ratchet_state *r)
{
    struct msv_mls_skipped_key *k;

    if (st->n_skipped == MSV_MLS_SKIPPED_MAX)
        drop_skipped(st, skipped_to_drop(st, leaf));
    k = &st->skipped[st->n_skipped];
    k->leaf = leaf;
    k->which = which;
    k->generation = r->generation;
    st->n_skipped++;
    return msv_mls_ratchet_key_from(st->suite, r->secret, r->generation, r->generation, k->key,
                                    k->nonce);
}

/* One step: secret_[j] replaced by secret_[j+1]. */
static msv_err advance(struct msv_mls_ratchet_state *r)
{
    msv_err err = msv_mls_derive_tree_secret(r->secret, MSV_MLS_NH, "secret", r->generation,
                                             r->secret, MSV_MLS_NH);

    if (err == MSV_OK)
        r->generation++;
    return err;
}

msv_err msv_mls_secret_state_consume(struct msv_mls_secret_state *st, uint32_t leaf,
                                     enum msv_mls_ratchet which, uint32_t generation)
{
    struct msv_mls_ratchet_state *r;
    uint8_t w = which == MSV_MLS_RATCHET_APPLICATION;
    msv_err err;

    if (st->node == NULL || leaf >= st->n_leaves || generation > MSV_MLS_GENERATION_MAX)
        return MSV_ERR_AUTH;
    err = materialize(st, leaf);
    if (err != MSV_OK)
        return err;
    r = &st->ratchet[2 * leaf + w];
    if (generation < r->generation) {
        for (size_t i = 0; i < st->n_skipped; i++) {
            if (st->skipped[i].leaf == leaf && st->skipped[i].which == which &&
                st->skipped[i].generation == generation) {
                drop_skipped(st, i);
                return MSV_OK;
            }
        }
        return MSV_ERR_AUTH;
    }
    /* generations skipped further back than the kept keys reach are not kept at all */
    while (err == MSV_OK && generation - r->generation > MSV_MLS_SKIPPED_MAX)
        err = advance(r);
    while (err == MSV_OK && r->generation < generation) {
        err = keep_skipped(st, leaf, (uint8_t)which, r);
        if (err == MSV_OK)
            err = advance(r);
    }
    return err == MSV_OK ? advance(r) : err;
}

msv_err msv_mls_secret_state_next(struct msv_mls_secret_state *st, uint32_t leaf,
                                  enum msv_mls_ratchet which, uint32_t *generation)
{
    msv_err err;

    if (st->node == NULL || leaf >= st->n_leaves)
        return MSV_ERR_INVALID;
    err = materialize(st, leaf);
    if (err != MSV_OK)
        return err;
    *generation = st->ratchet[2 * leaf + (which == MSV_MLS_RATCHET_APPLICATION)].generation;
    return *generation > MSV_MLS_GENERATION_MAX ? MSV_ERR_TOO_BIG : MSV_OK;
}
