/*
 * A member that follows its group (RFC 9420 12.4): joins from a Welcome and
 * processes each commit sent as a PublicMessage, with the proposals it
 * names, to the next epoch. It never sends. The tree borrows the bytes of
 * every message that put a leaf or a path in it; the member keeps a copy of
 * each (held) for as long as it lives.
 */
#include <stdlib.h>
#include <string.h>

#include <sodium.h>

#include "missive/util.h"
#include "mls/member.h"
#include "mls/member_int.h"

/* A copy of bytes the tree will borrow from, kept until the member is freed. */
msv_err msv_mls_member_hold(struct msv_mls_member *m, const uint8_t *p, size_t len,
                            const uint8_t **out)
{
    uint8_t *copy;

    if (m->n_held == HELD_MAX)
        return MSV_ERR_TOO_BIG;
    copy = malloc(len + 1);
    if (copy == NULL)
        return MSV_ERR_NOMEM;
    memcpy(copy, p, len);
    m->held[m->n_held++] = copy;
    *out = copy;
    return MSV_OK;
}

void msv_mls_member_clear(struct msv_mls_member *m)
{
    msv_mls_secret_state_free(&m->st);
    msv_mls_tree_free(&m->tree);
    for (size_t i = 0; i < m->n_held; i++)
        free(m->held[i]);
    free(m->held);
    free(m->ext);
    m->held = NULL;
    m->ext = NULL;
    m->n_held = 0;
}

void msv_mls_member_free(struct msv_mls_member *m)
{
    if (m == NULL)
        return;
    msv_mls_member_free(m->pending);
    msv_mls_member_clear(m);
    sodium_memzero(m, sizeof(*m));
    free(m);
}

static msv_err member_sig_key(void *ctx, uint32_t leaf, const uint8_t **pk, size_t *pk_len)
{
    const struct msv_mls_member *m = ctx;

    if (leaf >= m->tree.n_leaves || m->tree.nodes[2 * leaf].type != 1)
        return MSV_ERR_NOT_FOUND;
    *pk = m->tree.nodes[2 * leaf].leaf.signature_key;
    *pk_len = m->tree.nodes[2 * leaf].leaf.signature_key_len;
    return MSV_OK;
}

/* Sets the key for node, replacing one held for it. */
static void set_key(struct msv_mls_member *m, uint32_t node, const uint8_t sk[32])
{
    size_t i = 0;

    while (i < m->n_keys && m->keys[i].node != node)
        i++;
    if (i == m->n_keys) {
        if (m->n_keys == MSV_MLS_MEMBER_KEYS)
            return;
        m->n_keys++;
    }
    m->keys[i].node = node;
    memcpy(m->keys[i].sk, sk, 32);
}

/* The keys of path[i..] from the path secret of path[i] (DeriveSecret(ps, "path") upwards). */
static msv_err keys_from_path_secret(struct msv_mls_member *m, const uint32_t *path, size_t n,
                                     size_t i, const uint8_t first[MSV_MLS_NH])
{
    uint8_t ps[MSV_MLS_NH], sk[32], pk[32];
    msv_err err = MSV_OK;

    memcpy(ps, first, MSV_MLS_NH);
    for (size_t k = i; err == MSV_OK && k < n; k++) {
        if (k > i)
            err = msv_mls_derive_secret(ps, MSV_MLS_NH, "path", ps);
        if (err == MSV_OK)
            err = msv_mls_node_keypair(ps, sk, pk);
        if (err == MSV_OK)
            set_key(m, path[k], sk);
    }
    sodium_memzero(ps, sizeof(ps));
    sodium_memzero(sk, sizeof(sk));
    return err;
}

/* The lowest node of path that is an ancestor of leaf, or n. */
size_t msv_mls_member_lowest_above(const uint32_t *path, size_t n, uint32_t leaf)
{
    for (size_t i = 0; i < n; i++) {
        uint32_t span = (UINT32_C(1) << msv_mls_tree_level(path[i])) - 1;

        if (2 * leaf >= path[i] - span && 2 * leaf <= path[i] + span)
            return i;
    }
    return n;
}

msv_err msv_mls_member_group_context(const struct msv_mls_member *m, uint64_t epoch,
                                     const uint8_t *cth, size_t cth_len, uint8_t **out,
                                     size_t *out_len)
{
    uint8_t root[MSV_MLS_NH];
    struct msv_mls_group_context gc = {
        m->suite,     m->group_id, m->group_id_len, epoch,  root,
        sizeof(root), cth,         cth_len,         m->ext, m->ext_len};
    msv_err err = msv_mls_tree_hash(&m->tree, msv_mls_tree_root(m->tree.n_leaves), root);

    if (err != MSV_OK)
        return err;
    return msv_mls_group_context_encode(&gc, out, out_len);
}

/* Records the current epoch's resumption PSK, dropping the oldest past the limit. */
static void keep_resumption(struct msv_mls_member *m)
{
    if (m->n_resumption == MSV_MLS_RESUMPTION_KEPT) {
        memmove(&m->resumption[0], &m->resumption[1],
                (MSV_MLS_RESUMPTION_KEPT - 1) * sizeof(m->resumption[0]));
        m->n_resumption--;
    }
    m->resumption[m->n_resumption].epoch = m->epoch;
    memcpy(m->resumption[m->n_resumption].psk, m->s.resumption_psk, MSV_MLS_NH);
    m->n_resumption++;
}

/* The GroupContext's confirmed transcript hash and extensions, and the GroupInfo's tag. */
msv_err msv_mls_member_read_context(struct msv_mls_member *m, const uint8_t *gi, size_t len,
                                    const uint8_t **tag, size_t *tag_len)
{
    struct msv_reader r;
    const uint8_t *p, *cth, *ext;
    size_t n, cth_len, ext_len;
    uint16_t v, cs;

    msv_reader_init(&r, gi, len);
    if (msv_reader_u16be(&r, &v) != MSV_OK || msv_reader_u16be(&r, &cs) != MSV_OK ||
        msv_mls_get_vec(&r, &p, &n) != MSV_OK || msv_mls_get_u64(&r, &m->epoch) != MSV_OK ||
        msv_mls_get_vec(&r, &p, &n) != MSV_OK || msv_mls_get_vec(&r, &cth, &cth_len) != MSV_OK ||
        msv_mls_get_vec(&r, &ext, &ext_len) != MSV_OK || msv_mls_get_vec(&r, &p, &n) != MSV_OK ||
        msv_mls_get_vec(&r, tag, tag_len) != MSV_OK || cth_len != MSV_MLS_NH)
        return MSV_ERR_AUTH;
    memcpy(m->cth, cth, MSV_MLS_NH);
    m->cth_len = MSV_MLS_NH;
    if (*tag_len == MSV_MLS_NH)
        memcpy(m->tag, *tag, MSV_MLS_NH);
    return msv_mls_member_set_extensions(m, ext, ext_len);
}

/* interim = Hash(confirmed || confirmation_tag<V>) (8.2) */
msv_err msv_mls_member_next_interim(const uint8_t confirmed[MSV_MLS_NH], const uint8_t *tag,
                                    size_t tag_len, uint8_t out[MSV_MLS_NH])
{
    struct msv_buf w;
    uint8_t *in = NULL;
    size_t in_len = 0;
    msv_err err;

    msv_buf_init(&w, 4 * MSV_MLS_NH);
    (void)msv_buf_put(&w, confirmed, MSV_MLS_NH);
    msv_mls_put_vec(&w, tag, tag_len);
    err = msv_buf_finish(&w, &in, &in_len);
    if (err == MSV_OK)
        err = msv_mls_hash(in, in_len, out);
    free(in);
    return err;
}

/* Our leaf: the one whose HPKE key is leaf_sk's. */
static msv_err find_me(struct msv_mls_member *m, const uint8_t leaf_sk[32])
{
    uint8_t pk[32];

    if (crypto_scalarmult_base(pk, leaf_sk) != 0)
        return MSV_ERR_CRYPTO;
    for (uint32_t i = 0; i < m->tree.n_leaves; i++) {
        const struct msv_mls_node *n = &m->tree.nodes[2 * i];

        if (n->type == 1 && n->leaf.encryption_key_len == 32 &&
            memcmp(n->leaf.encryption_key, pk, 32) == 0) {
            m->me = i;
            set_key(m, 2 * i, leaf_sk);
            return MSV_OK;
        }
    }
    return MSV_ERR_NOT_FOUND;
}

/* The tree, its checks, and the GroupInfo's with the signer's key from it. */
static msv_err join_tree(struct msv_mls_member *m, const uint8_t *gi, size_t gi_len,
                         const struct msv_mls_group_info *info, const uint8_t *tree,
                         size_t tree_len, const uint8_t joiner[MSV_MLS_NH],
                         const uint8_t psk_secret[MSV_MLS_NH])
{
    const uint8_t *bytes = info->ratchet_tree, *pk;
    size_t len = info->ratchet_tree_len, pk_len;
    uint8_t root[MSV_MLS_NH];
    msv_err err = MSV_OK;

    if (tree != NULL) {
        err = msv_mls_member_hold(m, tree, tree_len, &bytes);
        len = tree_len;
    }
    if (err == MSV_OK && bytes == NULL)
        err = MSV_ERR_NOT_FOUND;
    if (err == MSV_OK)
        err = msv_mls_tree_read(bytes, len, &m->tree);
    if (err == MSV_OK)
        err = msv_mls_tree_hash(&m->tree, msv_mls_tree_root(m->tree.n_leaves), root);
    if (err == MSV_OK &&
        (info->tree_hash_len != MSV_MLS_NH || memcmp(info->tree_hash, root, MSV_MLS_NH) != 0))
        err = MSV_ERR_AUTH;
    if (err == MSV_OK)
        err = msv_mls_tree_verify(&m->tree, info->group_id, info->group_id_len);
    if (err == MSV_OK)
        err = member_sig_key(m, info->signer, &pk, &pk_len);
    if (err == MSV_OK)
        err = msv_mls_group_info_check(m->suite, gi, gi_len, pk, pk_len, joiner, psk_secret, &m->s);
    return err;
}

/* A member as resumption matches it: its credential's identity and its signature key, in place. */
struct ident {
    const uint8_t *p, *key;
    size_t n, key_len;
};

static int ident_cmp(const void *a, const void *b)
{
    const struct ident *x = a, *y = b;

    if (x->n != y->n)
        return x->n < y->n ? -1 : 1;
    if (x->key_len != y->key_len)
        return x->key_len < y->key_len ? -1 : 1;
    int c = memcmp(x->p, y->p, x->n);

    return c != 0 ? c : memcmp(x->key, y->key, x->key_len);
}

/* The identity of a leaf's basic credential and its signature key, in place. */
static msv_err ident_of(const struct msv_mls_leaf *leaf, struct ident *out)
{
    struct msv_reader r;
    uint16_t type;

    msv_reader_init(&r, leaf->raw, leaf->raw_len);
    if (msv_mls_get_vec(&r, &out->p, &out->n) != MSV_OK ||
        msv_mls_get_vec(&r, &out->p, &out->n) != MSV_OK || msv_reader_u16be(&r, &type) != MSV_OK ||
        msv_mls_get_vec(&r, &out->p, &out->n) != MSV_OK)
        return MSV_ERR_PARSE;
    out->key = leaf->signature_key;
    out->key_len = leaf->signature_key_len;
    return type == 1 ? MSV_OK : MSV_ERR_UNSUPPORTED;
}

msv_err msv_mls_leaf_identity(const struct msv_mls_leaf *leaf, uint8_t *out, size_t *out_len)
{
    struct ident id;
    msv_err err = ident_of(leaf, &id);

    if (err == MSV_OK && id.n > MSV_MLS_IDENTITY_MAX)
        err = MSV_ERR_UNSUPPORTED;
    if (err == MSV_OK) {
        memcpy(out, id.p, id.n);
        *out_len = id.n;
    }
    return err;
}

/* Whether each member of t (identity and signature key) is one of old's. */
static msv_err members_within(const struct msv_mls_tree *t, const struct msv_mls_tree *old)
{
    struct ident *ids = calloc(old->n_leaves + 1, sizeof(*ids)), id;
    size_t n = 0;
    msv_err err = ids == NULL ? MSV_ERR_NOMEM : MSV_OK;

    for (uint32_t i = 0; err == MSV_OK && i < old->n_leaves; i++)
        if (old->nodes[2 * i].type == 1 && ident_of(&old->nodes[2 * i].leaf, &ids[n]) == MSV_OK)
            n++;
    if (err == MSV_OK)
        qsort(ids, n, sizeof(*ids), ident_cmp);
    for (uint32_t i = 0; err == MSV_OK && i < t->n_leaves; i++) {
        if (t->nodes[2 * i].type != 1)
            continue;
        if (ident_of(&t->nodes[2 * i].leaf, &id) != MSV_OK ||
            bsearch(&id, ids, n, sizeof(*ids), ident_cmp) == NULL)
            err = MSV_ERR_INVALID;
    }
    free(ids);
    return err;
}

msv_err msv_mls_members_match(const struct msv_mls_tree *t, const struct msv_mls_tree *old, int all)
{
    msv_err err = members_within(t, old);

    /* within both ways: the same members (two leaves of one member, were a tree to hold them,
     * change nothing of that) */
    return err == MSV_OK && all ? members_within(old, t) : err;
}

/*
 * The checks of 11.2 and 11.3 on a member m that joined a group branched or reinitialized from
 * old, whose resumption PSK of the given epoch the Welcome named with usage.
 */
static msv_err check_resumed(const struct msv_mls_member *m, const struct msv_mls_member *old,
                             int usage, uint64_t epoch)
{
    if (m->epoch != 1)
        return MSV_ERR_INVALID;
    /* a branch in the old suite, and not of the epoch a ReInit closed (its PSK is for the
     * reinitialization alone, 11.2) */
    if (usage == MSV_MLS_USAGE_BRANCH &&
        (m->suite != old->suite || (old->reinit && epoch == old->epoch)))
        return MSV_ERR_INVALID;
    if (usage == MSV_MLS_USAGE_REINIT &&
        (!old->reinit || epoch != old->epoch || (uint16_t)m->suite != old->reinit_suite ||
         m->group_id_len != old->reinit_group_id_len ||
         memcmp(m->group_id, old->reinit_group_id, m->group_id_len) != 0 ||
         m->ext_len != old->reinit_ext_len || memcmp(m->ext, old->reinit_ext, m->ext_len) != 0))
        return MSV_ERR_INVALID;
    /* 11.3: each member one of the old group's; 12.4.3.1: a reinit's, every one of them */
    return msv_mls_members_match(&m->tree, &old->tree, usage == MSV_MLS_USAGE_REINIT);
}

msv_err msv_mls_member_join(enum msv_mls_suite suite, const uint8_t *welcome, size_t welcome_len,
                            const uint8_t *key_package, size_t key_package_len,
                            const uint8_t init_sk[32], const uint8_t leaf_sk[32],
                            const struct msv_mls_external_psk *psks, size_t n_psks,
                            const uint8_t *tree, size_t tree_len, struct msv_mls_member **out)
{
    return msv_mls_member_join_resuming(suite, welcome, welcome_len, key_package, key_package_len,
                                        init_sk, leaf_sk, psks, n_psks, NULL, 0, tree, tree_len,
                                        out);
}

msv_err msv_mls_member_join_resuming(enum msv_mls_suite suite, const uint8_t *welcome,
                                     size_t welcome_len, const uint8_t *key_package,
                                     size_t key_package_len, const uint8_t init_sk[32],
                                     const uint8_t leaf_sk[32],
                                     const struct msv_mls_external_psk *psks, size_t n_psks,
                                     const struct msv_mls_member *const *from, size_t n_from,
                                     const uint8_t *tree, size_t tree_len,
                                     struct msv_mls_member **out)
{
    struct msv_mls_member *m = calloc(1, sizeof(*m));
    struct msv_mls_resumption_psk *res = calloc(n_from * MSV_MLS_RESUMPTION_KEPT + 1, sizeof(*res));
    size_t *res_from = calloc(n_from * MSV_MLS_RESUMPTION_KEPT + 1, sizeof(*res_from)), n_res = 0;
    struct msv_mls_welcome_resumption named = {0, 0};
    struct msv_mls_group_info info;
    uint8_t joiner[MSV_MLS_NH], psk_secret[MSV_MLS_NH], ps[MSV_MLS_NH], *gi = NULL;
    uint32_t path[MSV_MLS_PATH_MAX];
    const uint8_t *tag;
    size_t gi_len = 0, tag_len, n = 0;
    int has_ps = 0;
    msv_err err;

    if (m == NULL || res == NULL || res_from == NULL ||
        (m->held = calloc(HELD_MAX, sizeof(uint8_t *))) == NULL) {
        msv_mls_member_free(m);
        free(res);
        free(res_from);
        return MSV_ERR_NOMEM;
    }
    for (size_t f = 0; f < n_from; f++) {
        for (size_t i = 0; i < from[f]->n_resumption; i++) {
            res[n_res] = (struct msv_mls_resumption_psk){from[f]->group_id, from[f]->group_id_len,
                                                         from[f]->resumption[i].epoch,
                                                         from[f]->resumption[i].psk};
            res_from[n_res++] = f;
        }
    }
    m->suite = suite;
    m->psks = psks;
    m->n_psks = n_psks;
    err = msv_mls_welcome_decrypt_resuming(suite, welcome, welcome_len, key_package,
                                           key_package_len, init_sk, psks, n_psks, res, n_res,
                                           &named, joiner, psk_secret, ps, &has_ps, &gi, &gi_len);
    if (err == MSV_OK)
        m->held[m->n_held++] = gi; /* the tree may borrow from it */
    if (err == MSV_OK)
        err = msv_mls_group_info_read(gi, gi_len, &info);
    if (err == MSV_OK && info.group_id_len > MSV_MLS_GROUP_ID_MAX)
        err = MSV_ERR_TOO_BIG;
    if (err == MSV_OK) {
        memcpy(m->group_id, info.group_id, info.group_id_len);
        m->group_id_len = info.group_id_len;
        err = join_tree(m, gi, gi_len, &info, tree, tree_len, joiner, psk_secret);
        m->welcome_signer = info.signer;
    }
    if (err == MSV_OK)
        err = msv_mls_member_read_context(m, gi, gi_len, &tag, &tag_len);
    if (err == MSV_OK)
        err = msv_mls_member_next_interim(m->cth, tag, tag_len, m->interim);
    if (err == MSV_OK)
        err = find_me(m, leaf_sk);
    if (err == MSV_OK)
        err = msv_mls_secret_state_init(&m->st, suite, m->s.encryption, m->tree.n_leaves);
    if (err == MSV_OK) {
        sodium_memzero(m->s.encryption, MSV_MLS_NH); /* 9.2: the secret tree holds it now */
        sodium_memzero(m->s.joiner, MSV_MLS_NH);
        keep_resumption(m);
    }
    /* the Welcome's path secret is for the lowest node of the signer's path above us */
    if (err == MSV_OK && has_ps)
        err = msv_mls_tree_filtered_path(&m->tree, info.signer, path, &n);
    if (err == MSV_OK && has_ps && msv_mls_member_lowest_above(path, n, m->me) < n)
        err = keys_from_path_secret(m, path, n, msv_mls_member_lowest_above(path, n, m->me), ps);
    if (err == MSV_OK && named.usage != 0)
        err = check_resumed(m, from[res_from[named.index]], named.usage, res[named.index].epoch);
    free(res);
    free(res_from);
    sodium_memzero(joiner, sizeof(joiner));
    sodium_memzero(psk_secret, sizeof(psk_secret));
    sodium_memzero(ps, sizeof(ps));
    if (err != MSV_OK) {
        msv_mls_member_free(m);
        return err;
    }
    *out = m;
    return MSV_OK;
}

/* The epoch as framing wants it: the current GroupContext and secrets. */
msv_err msv_mls_member_epoch(struct msv_mls_member *m, uint8_t root[MSV_MLS_NH],
                             struct msv_mls_epoch *ep)
{
    msv_err err = MSV_OK;

    /* the tree changes only with the epoch: its hash is worked out once per epoch */
    if (!m->has_tree_hash)
        err = msv_mls_tree_hash(&m->tree, msv_mls_tree_root(m->tree.n_leaves), m->tree_hash);
    if (err == MSV_OK) {
        m->has_tree_hash = 1;
        memcpy(root, m->tree_hash, MSV_MLS_NH);
    }
    memset(ep, 0, sizeof(*ep));
    ep->gc = (struct msv_mls_group_context){m->suite, m->group_id, m->group_id_len, m->epoch,
                                            root,     MSV_MLS_NH,  m->cth,          m->cth_len,
                                            m->ext,   m->ext_len};
    ep->n_leaves = m->tree.n_leaves;
    ep->sender_data_secret = m->s.sender_data;
    ep->encryption_secret = m->s.encryption;
    ep->membership_key = m->s.membership_key;
    ep->sig_key = member_sig_key;
    ep->sig_key_ctx = m;
    return err;
}

/*
 * Reads a PublicMessage (held), checked; *ac is its AuthenticatedContent
 * (everything after the version, before the membership tag).
 */
static msv_err read_public(struct msv_mls_member *m, const struct msv_mls_epoch *ep,
                           const uint8_t *msg, size_t len, struct msv_mls_content *c,
                           const uint8_t **ac, size_t *ac_len)
{
    const uint8_t *copy;
    msv_err err = msv_mls_member_hold(m, msg, len, &copy);

    if (err == MSV_OK)
        err = msv_mls_public_unprotect(ep, copy, len, c);
    /* an external commit has no membership tag (6.2) */
    if (err == MSV_OK && c->sender_type == MSV_MLS_SENDER_NEW_MEMBER_COMMIT) {
        *ac = copy + 2;
        *ac_len = len - 2;
        return MSV_OK;
    }
    /* a member's message ends with its membership tag, a 32-byte MAC */
    if (err == MSV_OK && (len < 4 + MSV_MLS_NH + 1 || copy[len - MSV_MLS_NH - 1] != MSV_MLS_NH))
        err = MSV_ERR_PARSE;
    if (err == MSV_OK) {
        *ac = copy + 2;
        *ac_len = len - 2 - (MSV_MLS_NH + 1);
    }
    return err;
}

msv_err msv_mls_member_content_key(void *ctx, uint32_t leaf, enum msv_mls_ratchet which,
                                   uint32_t generation, uint8_t *key, uint8_t nonce[MSV_MLS_NN])
{
    const struct msv_mls_member *m = ctx;

    return msv_mls_secret_state_key(&m->st, leaf, which, generation, key, nonce);
}

/* The UpdatePath of a Commit body: after proposals<V> and the optional's presence byte. */
static msv_err commit_path(const uint8_t *body, size_t len, const uint8_t **path, size_t *path_len)
{
    struct msv_reader r, list;
    int present = 0;

    msv_reader_init(&r, body, len);
    if (msv_mls_get_sub(&r, &list) != MSV_OK || msv_mls_get_optional(&r, &present) != MSV_OK ||
        !present)
        return MSV_ERR_PARSE;
    *path = r.data + r.off;
    *path_len = r.len - r.off;
    return MSV_OK;
}

/* An external commit's signer: the leaf of its UpdatePath (12.4.3.2). */
static msv_err new_member_key(void *ctx, const struct msv_mls_content *c, const uint8_t **pk,
                              size_t *pk_len)
{
    struct msv_mls_update_path up;
    const uint8_t *path;
    size_t path_len;
    msv_err err = commit_path(c->body, c->body_len, &path, &path_len);

    (void)ctx;
    if (err == MSV_OK)
        err = msv_mls_update_path_read(path, path_len, &up);
    if (err != MSV_OK)
        return err;
    *pk = up.leaf.signature_key;
    *pk_len = up.leaf.signature_key_len;
    return MSV_OK;
}

msv_err msv_mls_external_init_secret(enum msv_mls_suite suite, const struct msv_mls_hpke_ctx *ctx,
                                     uint8_t init[MSV_MLS_NH])
{
    static const char label[] = "MLS 1.0 external init secret";

    (void)suite;
    return msv_mls_hpke_export(ctx, (const uint8_t *)label, sizeof(label) - 1, init, MSV_MLS_NH);
}

/* The init secret an ExternalInit's kem_output gives with the epoch's external key (8.3). */
static msv_err external_init(const struct msv_mls_member *m, struct commit_state *cs)
{
    struct msv_mls_hpke_ctx ctx;
    uint8_t sk[32], pk[32];
    msv_err err;

    if (cs->external_init_len != 32)
        return MSV_ERR_AUTH;
    err = msv_mls_hpke_derive_keypair(m->s.external, MSV_MLS_NH, sk, pk);
    if (err == MSV_OK)
        err = msv_mls_hpke_setup_r(m->suite, cs->external_init, sk, NULL, 0, &ctx);
    if (err == MSV_OK)
        err = msv_mls_external_init_secret(m->suite, &ctx, cs->init);
    if (err == MSV_OK)
        cs->has_init = 1;
    msv_mls_hpke_ctx_wipe(&ctx);
    sodium_memzero(sk, sizeof(sk));
    return err;
}

/* Moves a pointer into from (of len bytes) to the same place in to. */
static const uint8_t *rebase(const uint8_t *p, const uint8_t *from, const uint8_t *to)
{
    return p == NULL ? NULL : to + (p - from);
}

/*
 * Reads a commit sent as a PrivateMessage (6.3): decrypted with the
 * committer's handshake key from our secret tree (the epoch ends with it, and
 * the tree with it), its signature checked, and its AuthenticatedContent
 * rebuilt for the transcript hash; both held.
 */
/*
 * A handshake message of content type want (a proposal or a commit) sent as a PrivateMessage:
 * decrypted with its sender's handshake key (not erased here: the whole secret tree goes with the
 * epoch the commit ends), its AuthenticatedContent rebuilt into *ac, both held by m.
 */
static msv_err read_private(struct msv_mls_member *m, struct msv_mls_epoch *ep, const uint8_t *msg,
                            size_t len, uint8_t want, struct msv_mls_content *c, const uint8_t **ac,
                            size_t *ac_len)
{
    const uint8_t *held_msg = NULL, *copy = NULL;
    uint8_t *plain = NULL, *auth = NULL;
    size_t plain_len = 0, auth_len = 0;
    uint32_t generation;
    msv_err err = msv_mls_member_hold(m, msg, len, &held_msg);

    /* the keys are m's own unless the caller named whose (a committer's copy has none) */
    if (ep->content_key == NULL) {
        ep->content_key = msv_mls_member_content_key;
        ep->content_key_ctx = m;
    }
    if (err == MSV_OK)
        err = msv_mls_private_unprotect(ep, held_msg, len, c, &plain, &plain_len, &generation);
    if (err == MSV_OK && c->content_type != want)
        err = MSV_ERR_PARSE;
    if (err == MSV_OK)
        err = msv_mls_member_hold(m, plain, plain_len, &copy);
    if (err == MSV_OK) {
        c->body = rebase(c->body, plain, copy);
        c->confirmation_tag = rebase(c->confirmation_tag, plain, copy);
        c->signature = rebase(c->signature, plain, copy);
        err = msv_mls_authenticated_content(ep, MSV_MLS_WIRE_PRIVATE, c, c->signature,
                                            c->signature_len, &auth, &auth_len);
    }
    if (err == MSV_OK)
        err = msv_mls_member_hold(m, auth, auth_len, ac);
    if (err == MSV_OK)
        *ac_len = auth_len;
    free(auth);
    if (plain != NULL)
        msv_secret_free(plain, plain_len + 1);
    return err;
}

static msv_err add_proposal(struct commit_state *cs, const uint8_t *p, size_t len, uint32_t sender)
{
    struct proposal *e;

    if (cs->n == PROPOSALS_MAX)
        return MSV_ERR_TOO_BIG;
    if (len < 2)
        return MSV_ERR_PARSE;
    e = &cs->list[cs->n++];
    e->type = (uint16_t)(p[0] << 8 | p[1]);
    e->body = p + 2;
    e->body_len = len - 2;
    e->sender = sender;
    return MSV_OK;
}

/* The commit's proposals: by value from the committer, by reference from those received. */
msv_err msv_mls_member_commit_proposals(struct msv_reader *list, const struct proposal *received,
                                        size_t n_received, uint32_t committer,
                                        struct commit_state *cs)
{
    while (!msv_mls_reader_is_done(list)) {
        uint8_t kind;
        size_t start, k = 0, ref_len;
        const uint8_t *ref;
        msv_err err;

        if (msv_reader_u8(list, &kind) != MSV_OK)
            return MSV_ERR_PARSE;
        start = list->off;
        if (kind == 1) {
            err = msv_mls_skip_proposal(list);
            if (err == MSV_OK)
                err = add_proposal(cs, list->data + start, list->off - start, committer);
            if (err != MSV_OK)
                return err;
            continue;
        }
        if (kind != 2 || msv_mls_get_vec(list, &ref, &ref_len) != MSV_OK || ref_len != MSV_MLS_NH)
            return MSV_ERR_PARSE;
        while (k < n_received && memcmp(received[k].ref, ref, MSV_MLS_NH) != 0)
            k++;
        if (k == n_received)
            return MSV_ERR_NOT_FOUND;
        if (cs->n == PROPOSALS_MAX)
            return MSV_ERR_TOO_BIG;
        cs->list[cs->n++] = received[k];
    }
    return MSV_OK;
}

msv_err msv_mls_member_set_extensions(struct msv_mls_member *m, const uint8_t *ext, size_t len)
{
    uint8_t *copy = malloc(len + 1);

    if (copy == NULL)
        return MSV_ERR_NOMEM;
    memcpy(copy, ext, len);
    free(m->ext);
    m->ext = copy;
    m->ext_len = len;
    return MSV_OK;
}

static msv_err apply_gce(struct msv_mls_member *m, const struct proposal *p)
{
    struct msv_reader r;
    const uint8_t *ext;
    size_t len;

    msv_reader_init(&r, p->body, p->body_len);
    if (msv_mls_get_vec(&r, &ext, &len) != MSV_OK || !msv_mls_reader_is_done(&r))
        return MSV_ERR_PARSE;
    return msv_mls_member_set_extensions(m, ext, len);
}

/* Our own update applied: the HPKE key we proposed it with becomes our leaf's (12.1.2). */
static msv_err take_own_update(struct msv_mls_member *m, const struct msv_mls_leaf *leaf)
{
    uint8_t pk[32];

    if (!m->has_update || crypto_scalarmult_base(pk, m->update_sk) != 0 ||
        leaf->encryption_key_len != 32 || memcmp(pk, leaf->encryption_key, 32) != 0)
        return MSV_ERR_AUTH;
    set_key(m, 2 * m->me, m->update_sk);
    return MSV_OK;
}

/* 7.3: a new leaf's encryption and signature keys are no other leaf's. */
static msv_err leaf_is_new(const struct msv_mls_tree *t, const struct msv_mls_leaf *leaf)
{
    for (uint32_t i = 0; i < t->n_leaves; i++) {
        const struct msv_mls_leaf *o = &t->nodes[2 * i].leaf;

        if (t->nodes[2 * i].type != 1)
            continue;
        if ((o->encryption_key_len == leaf->encryption_key_len &&
             memcmp(o->encryption_key, leaf->encryption_key, o->encryption_key_len) == 0) ||
            (o->signature_key_len == leaf->signature_key_len &&
             memcmp(o->signature_key, leaf->signature_key, o->signature_key_len) == 0))
            return MSV_ERR_INVALID;
    }
    return MSV_OK;
}

static msv_err apply_one(struct msv_mls_member *m, const struct proposal *p,
                         struct commit_state *cs)
{
    struct msv_reader r;
    struct msv_mls_leaf leaf;
    uint32_t index;
    msv_err err;

    msv_reader_init(&r, p->body, p->body_len);
    switch (p->type) {
    case 2: /* update: the sender's leaf */
        err = msv_mls_read_leaf_node(&r, &leaf);
        if (err == MSV_OK && leaf.source != 2)
            err = MSV_ERR_INVALID;
        if (err == MSV_OK)
            err = msv_mls_leaf_check(m->suite, &leaf, m->group_id, m->group_id_len, p->sender, 0,
                                     NULL);
        if (err == MSV_OK && p->sender == m->me)
            err = take_own_update(m, &leaf);
        return err != MSV_OK ? err : msv_mls_tree_update(&m->tree, p->sender, &leaf);
    case 3: /* remove */
        if (msv_reader_u32be(&r, &index) != MSV_OK)
            return MSV_ERR_PARSE;
        if (index == m->me) {
            cs->removes_us = 1;
            return MSV_ERR_INVALID; /* we were removed: nothing follows for us */
        }
        cs->removes++;
        return msv_mls_tree_remove(&m->tree, index);
    case 1: /* add */
        err = msv_mls_key_package_body_check(m->suite, p->body, p->body_len, 0, &leaf, NULL);
        if (err == MSV_OK)
            err = leaf_is_new(&m->tree, &leaf);
        if (err == MSV_OK)
            err = msv_mls_tree_add(&m->tree, &leaf, &index);
        if (err == MSV_OK && cs->n_joiners < PROPOSALS_MAX)
            cs->joiners[cs->n_joiners++] = index;
        return err;
    default:
        return MSV_OK;
    }
}

/* The resumption PSK of one of our group's epochs; NULL if not kept. */
static const uint8_t *resumption_psk(const struct msv_mls_member *m, const uint8_t *group_id,
                                     size_t group_id_len, uint64_t epoch)
{
    if (group_id_len != m->group_id_len || memcmp(group_id, m->group_id, group_id_len) != 0)
        return NULL;
    for (size_t i = 0; i < m->n_resumption; i++) {
        if (m->resumption[i].epoch == epoch)
            return m->resumption[i].psk;
    }
    return NULL;
}

/* The key a PreSharedKeyID names: an external one we hold, or one of our epochs' (8.4). */
static msv_err psk_value(const struct msv_mls_member *m, struct msv_reader *r, const uint8_t **psk,
                         size_t *psk_len)
{
    struct msv_mls_psk_id id;
    const struct msv_mls_external_psk *ext;

    /* in a commit, a resumption PSK of usage application alone (12.1.4) */
    if (msv_mls_psk_id_read(r, &id) != MSV_OK || (id.type == 2 && id.usage != 1))
        return MSV_ERR_PARSE;
    if (id.type == 2) {
        *psk = resumption_psk(m, id.id, id.id_len, id.epoch);
        *psk_len = MSV_MLS_NH;
        return *psk != NULL ? MSV_OK : MSV_ERR_NOT_FOUND;
    }
    if ((ext = msv_mls_external_psk_find(m->psks, m->n_psks, id.id, id.id_len)) == NULL)
        return MSV_ERR_NOT_FOUND;
    *psk = ext->psk;
    *psk_len = ext->psk_len;
    return MSV_OK;
}

/* A PSK proposal: its PreSharedKeyID, with the key it names. */
static msv_err add_psk(const struct msv_mls_member *m, const struct proposal *p,
                       struct commit_state *cs)
{
    struct msv_reader r;
    const uint8_t *psk = NULL;
    size_t psk_len = 0;
    msv_err err;

    /* the first commit of a branched or reinitialized group names the old group's PSK */
    if (cs->given_id != NULL && p->body_len == cs->given_id_len &&
        memcmp(p->body, cs->given_id, p->body_len) == 0) {
        if (cs->n_psks == MSV_MLS_WELCOME_PSKS_MAX)
            return MSV_ERR_TOO_BIG;
        cs->psks[cs->n_psks++] =
            (struct msv_mls_psk){p->body, p->body_len, cs->given_psk, MSV_MLS_NH};
        return MSV_OK;
    }
    msv_reader_init(&r, p->body, p->body_len);
    err = psk_value(m, &r, &psk, &psk_len);
    if (err != MSV_OK)
        return err;
    if (!msv_mls_reader_is_done(&r))
        return MSV_ERR_PARSE;
    if (cs->n_psks == MSV_MLS_WELCOME_PSKS_MAX)
        return MSV_ERR_TOO_BIG;
    cs->psks[cs->n_psks++] = (struct msv_mls_psk){p->body, p->body_len, psk, psk_len};
    return MSV_OK;
}

/*
 * The GroupContext's extensions once a GroupContextExtensions proposal set them: each type once,
 * and each beyond the defaults (1 to 5, 17.3) listed in the capabilities of every leaf of the
 * tree the commit's proposals made (7.2, 12.1.7).
 */
static msv_err extensions_supported(const struct msv_mls_member *m)
{
    struct msv_reader r;
    uint16_t seen[64];
    size_t n = 0;

    msv_reader_init(&r, m->ext, m->ext_len);
    while (!msv_mls_reader_is_done(&r)) {
        uint16_t type;
        const uint8_t *data;
        size_t len;

        if (msv_reader_u16be(&r, &type) != MSV_OK || msv_mls_get_vec(&r, &data, &len) != MSV_OK)
            return MSV_ERR_PARSE;
        for (size_t i = 0; i < n; i++)
            if (seen[i] == type)
                return MSV_ERR_INVALID;
        if (n == sizeof(seen) / sizeof(seen[0]))
            return MSV_ERR_TOO_BIG;
        seen[n++] = type;
        if (type >= 1 && type <= 5)
            continue;
        for (uint32_t i = 0; i < m->tree.n_leaves; i++)
            if (m->tree.nodes[2 * i].type == 1 &&
                !msv_mls_leaf_lists_extension(&m->tree.nodes[2 * i].leaf, type))
                return MSV_ERR_INVALID;
    }
    return MSV_OK;
}

msv_err msv_mls_reinit_read(struct msv_reader *r, struct mls_reinit *out)
{
    uint16_t version;

    if (msv_mls_get_vec(r, &out->id, &out->id_len) != MSV_OK ||
        msv_reader_u16be(r, &version) != MSV_OK || msv_reader_u16be(r, &out->suite) != MSV_OK ||
        msv_mls_get_vec(r, &out->ext, &out->ext_len) != MSV_OK)
        return MSV_ERR_PARSE;
    if (version < 1)
        return MSV_ERR_INVALID;
    if (version != 1 || !msv_mls_suite_is_supported(out->suite))
        return MSV_ERR_UNSUPPORTED;
    if (out->id_len > MSV_MLS_GROUP_ID_MAX || out->ext_len > MSV_MLS_REINIT_EXT_MAX)
        return MSV_ERR_TOO_BIG;
    return msv_mls_extensions_well_formed(out->ext, out->ext_len) ? MSV_OK : MSV_ERR_PARSE;
}

void msv_mls_reinit_put(struct msv_buf *w, const struct mls_reinit *ri)
{
    msv_mls_put_vec(w, ri->id, ri->id_len);
    (void)msv_buf_put_u16be(w, 1);
    (void)msv_buf_put_u16be(w, ri->suite);
    msv_mls_put_vec(w, ri->ext, ri->ext_len);
}

void msv_mls_member_close(struct msv_mls_member *m, const struct mls_reinit *ri)
{
    m->reinit = 1;
    m->reinit_suite = ri->suite;
    memcpy(m->reinit_group_id, ri->id, ri->id_len);
    m->reinit_group_id_len = ri->id_len;
    memcpy(m->reinit_ext, ri->ext, ri->ext_len);
    m->reinit_ext_len = ri->ext_len;
}

/* A commit's ReInit proposal, its body whole (a version below ours is invalid; one we do not
 * speak, or a suite we do not have, is one we could not follow into). */
static msv_err reinit_take(const uint8_t *body, size_t len, struct commit_state *cs)
{
    struct msv_reader r;
    msv_err err;

    msv_reader_init(&r, body, len);
    err = msv_mls_reinit_read(&r, &cs->reinit);
    if (err == MSV_OK && !msv_mls_reader_is_done(&r))
        err = MSV_ERR_PARSE;
    cs->has_reinit = err == MSV_OK;
    return err;
}

/* 12.4.2: group context extensions, then updates, removes, adds; PSKs collected. */
msv_err msv_mls_member_apply_proposals(struct msv_mls_member *m, struct commit_state *cs)
{
    static const uint16_t order[] = {7, 2, 3, 1, 4};
    msv_err err = MSV_OK;
    int gce = 0;

    m->has_tree_hash = 0; /* the tree is about to change */
    for (size_t i = 0; i < cs->n && err == MSV_OK; i++) {
        uint16_t t = cs->list[i].type;

        if (t != 1 && t != 2 && t != 3 && t != 4 && t != 5 && t != 6 && t != 7)
            err = MSV_ERR_UNSUPPORTED;
        /* ReInit: the commit's only proposal (12.2) */
        if (err == MSV_OK && t == 5)
            err = cs->n == 1 ? reinit_take(cs->list[i].body, cs->list[i].body_len, cs)
                             : MSV_ERR_INVALID;
        if (err == MSV_OK && t == 6) {
            struct msv_reader r;

            /* ExternalInit: kem_output<V>; one only, and only in an external commit */
            msv_reader_init(&r, cs->list[i].body, cs->list[i].body_len);
            if (cs->external_init != NULL ||
                msv_mls_get_vec(&r, &cs->external_init, &cs->external_init_len) != MSV_OK ||
                !msv_mls_reader_is_done(&r))
                err = MSV_ERR_INVALID;
        }
    }
    for (size_t o = 0; o < sizeof(order) / sizeof(order[0]) && err == MSV_OK; o++) {
        for (size_t i = 0; i < cs->n && err == MSV_OK; i++) {
            const struct proposal *p = &cs->list[i];

            if (p->type != order[o])
                continue;
            if (p->type == 7 && gce++ > 0)
                err = MSV_ERR_INVALID; /* one per commit (12.2) */
            else if (p->type == 7)
                err = apply_gce(m, p);
            else if (p->type == 4)
                err = add_psk(m, p, cs);
            else
                err = apply_one(m, p, cs);
        }
    }
    return err == MSV_OK && gce ? extensions_supported(m) : err;
}

/* The UpdatePath: merged, then opened with the provisional GroupContext; the commit secret. */
static msv_err apply_path(struct msv_mls_member *m, uint32_t committer, const uint8_t *bytes,
                          size_t len, const struct commit_state *cs,
                          uint8_t commit_secret[MSV_MLS_NH])
{
    struct msv_mls_update_path up;
    uint32_t path[MSV_MLS_PATH_MAX];
    uint8_t ps[MSV_MLS_NH], *gc = NULL;
    size_t n = 0, gc_len = 0, i;
    msv_err err = msv_mls_update_path_read(bytes, len, &up);

    if (err == MSV_OK)
        err = msv_mls_leaf_check(m->suite, &up.leaf, m->group_id, m->group_id_len, committer, 0,
                                 NULL);
    if (err == MSV_OK)
        err = msv_mls_tree_filtered_path(&m->tree, committer, path, &n);
    if (err == MSV_OK)
        err = msv_mls_tree_merge_path(&m->tree, committer, &up);
    /* 12.4.2: encrypted to the provisional GroupContext, with the old transcript hash */
    if (err == MSV_OK)
        err = msv_mls_member_group_context(m, m->epoch + 1, m->cth, m->cth_len, &gc, &gc_len);
    if (err == MSV_OK)
        err = msv_mls_path_open(m->suite, &m->tree, path, n, &up, m->me, m->keys, m->n_keys,
                                cs->joiners, cs->n_joiners, gc, gc_len, ps, commit_secret);
    i = msv_mls_member_lowest_above(path, n, m->me);
    if (err == MSV_OK && i < n)
        err = keys_from_path_secret(m, path, n, i, ps);
    sodium_memzero(ps, sizeof(ps));
    free(gc);
    return err;
}

/* The epoch after the commit: transcript hashes, key schedule, confirmation tag (8, 8.2). */
msv_err msv_mls_member_next_epoch(struct msv_mls_member *m, const uint8_t *ac, size_t ac_len,
                                  const struct msv_mls_content *c, const struct commit_state *cs,
                                  const uint8_t commit_secret[MSV_MLS_NH])
{
    struct msv_mls_epoch_secrets ns;
    struct msv_mls_secret_state st = {0};
    uint8_t confirmed[MSV_MLS_NH], psk_secret[MSV_MLS_NH], mac[MSV_MLS_NH], *gc = NULL;
    size_t gc_len = 0;
    msv_err err;

    if (c->confirmation_tag_len != MSV_MLS_NH)
        return MSV_ERR_AUTH;
    err = msv_mls_member_confirmed_hash(m, ac, ac_len, confirmed);
    if (err == MSV_OK)
        err = msv_mls_psk_secret(cs->psks, cs->n_psks, psk_secret);
    if (err == MSV_OK)
        err = msv_mls_member_group_context(m, m->epoch + 1, confirmed, MSV_MLS_NH, &gc, &gc_len);
    if (err == MSV_OK)
        err = msv_mls_key_schedule(cs->has_init ? cs->init : m->s.init, commit_secret, psk_secret,
                                   gc, gc_len, &ns);
    free(gc);
    if (err == MSV_OK)
        err = msv_mls_mac(ns.confirmation_key, MSV_MLS_NH, confirmed, MSV_MLS_NH, mac);
    if (err == MSV_OK && sodium_memcmp(mac, c->confirmation_tag, MSV_MLS_NH) != 0)
        err = MSV_ERR_AUTH;
    if (err == MSV_OK)
        err = msv_mls_secret_state_init(&st, m->suite, ns.encryption, m->tree.n_leaves);
    if (err == MSV_OK)
        err = msv_mls_member_next_interim(confirmed, c->confirmation_tag, MSV_MLS_NH, m->interim);
    if (err == MSV_OK) {
        msv_mls_secret_state_free(&m->st);
        m->st = st;
        memset(&st, 0, sizeof(st));
        sodium_memzero(ns.encryption, MSV_MLS_NH); /* 9.2: the secret tree holds it now */
        sodium_memzero(m->update_sk, sizeof(m->update_sk));
        m->has_update = 0;
        memcpy(&m->s, &ns, sizeof(ns));
        memcpy(m->cth, confirmed, MSV_MLS_NH);
        m->cth_len = MSV_MLS_NH;
        memcpy(m->tag, c->confirmation_tag, MSV_MLS_NH);
        m->has_tree_hash = 0;
        m->epoch++;
        keep_resumption(m);
        if (cs->has_reinit)
            msv_mls_member_close(m, &cs->reinit);
    }
    msv_mls_secret_state_free(&st);
    sodium_memzero(&ns, sizeof(ns));
    sodium_memzero(psk_secret, sizeof(psk_secret));
    return err;
}

msv_err msv_mls_member_confirmed_hash(const struct msv_mls_member *m, const uint8_t *ac,
                                      size_t ac_len, uint8_t confirmed[MSV_MLS_NH])
{
    uint8_t *in = NULL;
    size_t in_len = 0;
    struct msv_buf w;
    msv_err err;

    /* ConfirmedTranscriptHashInput: the AuthenticatedContent without its confirmation tag */
    if (ac_len < MSV_MLS_NH + 1)
        return MSV_ERR_AUTH;
    msv_buf_init(&w, MSV_MLS_MESSAGE_MAX);
    (void)msv_buf_put(&w, m->interim, MSV_MLS_NH);
    (void)msv_buf_put(&w, ac, ac_len - (MSV_MLS_NH + 1));
    err = msv_buf_finish(&w, &in, &in_len);
    if (err == MSV_OK)
        err = msv_mls_hash(in, in_len, confirmed);
    free(in);
    return err;
}

/* Whether a PrivateMessage says it is a proposal of ours (its SenderData names our leaf). */
static int own_proposal(const struct msv_mls_member *m, const struct msv_mls_epoch *ep,
                        const uint8_t *msg, size_t len)
{
    uint32_t leaf = 0;
    uint8_t type = 0;

    return msv_mls_private_sender(ep, msg, len, &leaf, &type) == MSV_OK && leaf == m->me &&
           type == MSV_MLS_CONTENT_PROPOSAL;
}

/*
 * Reads the proposals received before the commit (PublicMessages or PrivateMessages), each with
 * its ProposalRef (5.2).
 */
msv_err msv_mls_member_receive_proposals(struct msv_mls_member *m, const struct msv_mls_epoch *ep,
                                         const uint8_t *const *msgs, const size_t *lens, size_t n,
                                         struct proposal *out)
{
    static const char label[] = "MLS 1.0 Proposal Reference";

    for (size_t i = 0; i < n; i++) {
        struct msv_mls_epoch own = *ep;
        struct msv_mls_content c;
        const uint8_t *ac;
        size_t ac_len;
        int private = lens[i] >= 4 && msgs[i][2] == 0 && msgs[i][3] == MSV_MLS_WIRE_PRIVATE;
        msv_err err = private ? read_private(m, &own, msgs[i], lens[i], MSV_MLS_CONTENT_PROPOSAL,
                                             &c, &ac, &ac_len)
                              : read_public(m, ep, msgs[i], lens[i], &c, &ac, &ac_len);

        /*
         * a proposal of ours we cannot open (its key erased as it went out): our pending update
         * made again stands in for it, and a commit that names it by reference takes exactly
         * that; anything else that does not open stays refused
         */
        if (err != MSV_OK && private && own_proposal(m, &own, msgs[i], lens[i]) &&
            msv_mls_member_own_update(m, ep, &out[i]) == MSV_OK)
            continue;

        if (err == MSV_OK && (c.content_type != MSV_MLS_CONTENT_PROPOSAL || c.body_len < 2))
            err = MSV_ERR_PARSE;
        if (err == MSV_OK)
            err =
                msv_mls_ref_hash((const uint8_t *)label, sizeof(label) - 1, ac, ac_len, out[i].ref);
        if (err != MSV_OK)
            return err;
        out[i].type = (uint16_t)(c.body[0] << 8 | c.body[1]);
        out[i].body = c.body + 2;
        out[i].body_len = c.body_len - 2;
        out[i].sender = c.leaf_index;
    }
    return MSV_OK;
}

/*
 * After a commit: the tree written out and read back from one copy, so that
 * the copies of the messages it borrowed from can go and the member holds
 * one buffer, however many commits it follows.
 */
msv_err msv_mls_member_compact(struct msv_mls_member *m)
{
    struct msv_mls_tree t = {0, 0, NULL};
    uint8_t *bytes = NULL;
    size_t len = 0;
    msv_err err = msv_mls_tree_write(&m->tree, &bytes, &len);

    if (err == MSV_OK)
        err = msv_mls_tree_read(bytes, len, &t);
    if (err != MSV_OK) {
        free(bytes);
        return err;
    }
    msv_mls_tree_free(&m->tree);
    m->tree = t;
    for (size_t i = 0; i < m->n_held; i++)
        free(m->held[i]);
    m->held[0] = bytes;
    m->n_held = 1;
    return MSV_OK;
}

/* What a commit changes, kept so that a commit that fails changes nothing. */
struct saved {
    struct msv_mls_tree tree;
    uint8_t *ext;
    size_t ext_len;
    struct msv_mls_node_key keys[MSV_MLS_MEMBER_KEYS];
    size_t n_keys;
};

static msv_err save(const struct msv_mls_member *m, struct saved *s)
{
    msv_err err = msv_mls_tree_copy(&m->tree, &s->tree);

    if (err != MSV_OK)
        return err;
    s->ext = malloc(m->ext_len + 1);
    if (s->ext == NULL) {
        msv_mls_tree_free(&s->tree);
        return MSV_ERR_NOMEM;
    }
    memcpy(s->ext, m->ext, m->ext_len);
    s->ext_len = m->ext_len;
    memcpy(s->keys, m->keys, sizeof(s->keys));
    s->n_keys = m->n_keys;
    return MSV_OK;
}

/* Puts the saved state back (restore) or drops it. */
static void restore(struct msv_mls_member *m, struct saved *s, int put_back)
{
    if (put_back) {
        msv_mls_tree_free(&m->tree);
        m->tree = s->tree;
        free(m->ext);
        m->ext = s->ext;
        m->ext_len = s->ext_len;
        memcpy(m->keys, s->keys, sizeof(m->keys));
        m->n_keys = s->n_keys;
    } else {
        msv_mls_tree_free(&s->tree);
        free(s->ext);
    }
    sodium_memzero(s->keys, sizeof(s->keys));
}

int msv_mls_commit_path_optional(const struct commit_state *cs)
{
    for (size_t i = 0; i < cs->n; i++) {
        uint16_t type = cs->list[i].type;

        if (type != 1 /* add */ && type != 4 /* psk */ && type != 5 /* reinit */)
            return 0;
    }
    return cs->n > 0 && cs->external_init == NULL;
}

/* The proposals, the path and the next epoch, all or nothing. */
static msv_err change_state(struct msv_mls_member *m, struct commit_state *cs, uint32_t committer,
                            const uint8_t *path, size_t path_len, const uint8_t *ac, size_t ac_len,
                            const struct msv_mls_content *c)
{
    struct saved s;
    uint8_t commit_secret[MSV_MLS_NH] = {0};
    msv_err err = save(m, &s);

    if (err != MSV_OK)
        return err;
    /*
     * a commit without a path that needed one (a removal, an update, nothing at all) would give
     * the next epoch from secrets the previous one's members all hold, a removed one included
     */
    err = path == NULL && !msv_mls_commit_path_optional(cs) ? MSV_ERR_INVALID : MSV_OK;
    if (err == MSV_OK)
        err = msv_mls_member_apply_proposals(m, cs);
    /* an external commit (12.4.3.2): one ExternalInit, a path, its leaf added where an Add would
     * go; a member's commit carries no ExternalInit */
    if (err == MSV_OK &&
        (c->sender_type == MSV_MLS_SENDER_NEW_MEMBER_COMMIT) != (cs->external_init != NULL))
        err = MSV_ERR_INVALID;
    /* we take external commits that join, nothing more (no resync, no PSKs) */
    if (err == MSV_OK && c->sender_type == MSV_MLS_SENDER_NEW_MEMBER_COMMIT && cs->n != 1)
        err = MSV_ERR_UNSUPPORTED;
    if (err == MSV_OK && c->sender_type == MSV_MLS_SENDER_NEW_MEMBER_COMMIT) {
        struct msv_mls_update_path up;

        err = path == NULL ? MSV_ERR_INVALID : msv_mls_update_path_read(path, path_len, &up);
        if (err == MSV_OK)
            err = leaf_is_new(&m->tree, &up.leaf);
        if (err == MSV_OK)
            err = msv_mls_tree_add(&m->tree, &up.leaf, &committer);
        if (err == MSV_OK)
            err = external_init(m, cs);
    }
    if (err == MSV_OK && path != NULL)
        err = apply_path(m, committer, path, path_len, cs, commit_secret);
    if (err == MSV_OK)
        err = msv_mls_member_next_epoch(m, ac, ac_len, c, cs, commit_secret);
    restore(m, &s, err != MSV_OK);
    sodium_memzero(commit_secret, sizeof(commit_secret));
    return err;
}

msv_err msv_mls_member_commit(struct msv_mls_member *m, const uint8_t *const *proposals,
                              const size_t *proposal_lens, size_t n_proposals,
                              const uint8_t *commit, size_t commit_len)
{
    struct commit_state *cs = calloc(1, sizeof(*cs));
    struct proposal *received = calloc(n_proposals + 1, sizeof(*received));
    struct msv_mls_epoch ep;
    struct msv_mls_content c;
    struct msv_reader r, list;
    uint8_t root[MSV_MLS_NH];
    const uint8_t *ac;
    size_t ac_len;
    int has_path = 0;
    size_t n_held = m->n_held;
    msv_err err = cs == NULL || received == NULL ? MSV_ERR_NOMEM : MSV_OK;

    m->committer = UINT32_MAX;
    m->removed_us = 0;
    m->removed_leaves = 0;
    if (err == MSV_OK && n_proposals > PROPOSALS_MAX)
        err = MSV_ERR_TOO_BIG;
    /* a group whose ReInit was committed has no next epoch (11.2) */
    if (err == MSV_OK && m->reinit)
        err = MSV_ERR_INVALID;
    if (err == MSV_OK)
        err = msv_mls_member_epoch(m, root, &ep);
    if (err == MSV_OK)
        err = msv_mls_member_receive_proposals(m, &ep, proposals, proposal_lens, n_proposals,
                                               received);
    if (m->accept_external)
        ep.new_member_key = new_member_key;
    if (err == MSV_OK && commit_len >= 4 && commit[2] == 0 && commit[3] == MSV_MLS_WIRE_PRIVATE)
        err = read_private(m, &ep, commit, commit_len, MSV_MLS_CONTENT_COMMIT, &c, &ac, &ac_len);
    else if (err == MSV_OK)
        err = read_public(m, &ep, commit, commit_len, &c, &ac, &ac_len);
    if (err == MSV_OK && c.content_type != MSV_MLS_CONTENT_COMMIT)
        err = MSV_ERR_PARSE;
    if (err == MSV_OK) {
        msv_reader_init(&r, c.body, c.body_len);
        if (msv_mls_get_sub(&r, &list) != MSV_OK || msv_mls_get_optional(&r, &has_path) != MSV_OK)
            err = MSV_ERR_PARSE;
    }
    if (err == MSV_OK)
        err = msv_mls_member_commit_proposals(&list, received, n_proposals, c.leaf_index, cs);
    if (err == MSV_OK) {
        err = change_state(m, cs, c.leaf_index, has_path ? r.data + r.off : NULL, r.len - r.off, ac,
                           ac_len, &c);
        /* who committed (authenticated by now), and whether it removed us, also if it failed */
        m->committer =
            c.sender_type == MSV_MLS_SENDER_NEW_MEMBER_COMMIT ? UINT32_MAX : c.leaf_index;
        m->removed_us = cs->removes_us;
        m->removed_leaves = cs->removes;
    }
    /* the next epoch stands; if compacting fails the member keeps its copies */
    if (err == MSV_OK) {
        (void)msv_mls_member_compact(m);
        msv_mls_member_commit_discard(m); /* another commit took the epoch */
        /* the joiner secret leads to the encryption secret: kept, it would undo 9.2 */
        sodium_memzero(m->s.joiner, MSV_MLS_NH);
    }
    /* a refused commit leaves no copies behind: nothing borrows from them */
    while (err != MSV_OK && m->n_held > n_held) {
        free(m->held[--m->n_held]);
        m->held[m->n_held] = NULL;
    }
    if (cs != NULL)
        sodium_memzero(cs->init, sizeof(cs->init));
    free(cs);
    free(received);
    return err;
}
