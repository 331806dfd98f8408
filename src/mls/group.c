/*
 * The sending side of a member (RFC 9420 11, 12.1, 12.4, 7.4-7.6, 7.9):
 *
 *   creating a group of one (11): epoch 0, a fresh epoch secret, the
 *     confirmed transcript hash empty, the interim one from the tag over it;
 *   an Update proposal (12.1.2): our leaf with a fresh HPKE key (source update);
 *   a commit (12.4): Commit = ProposalOrRef proposals<V> || optional<UpdatePath>,
 *     by reference (kind 2, ProposalRef) for proposals received, by value
 *     (kind 1) for our adds and removes; the UpdatePath from fresh path
 *     secrets, path_secret[i+1] = DeriveSecret(path_secret[i], "path"),
 *     commit_secret = DeriveSecret(path_secret[last], "path"), each encrypted
 *     (EncryptWithLabel "UpdatePathNode", the provisional GroupContext as
 *     context) to every node of its co-path child's resolution but the leaves
 *     this commit adds; the Welcome (12.4.3.1) for those it adds:
 *       GroupInfo = GroupContext || extensions<V> (ratchet_tree) ||
 *                   confirmation_tag<V> || signer || signature<V>
 *       GroupSecrets = joiner_secret<V> || optional<path_secret<V>> || psks<V>
 *       Welcome = cipher_suite || EncryptedGroupSecrets secrets<V> ||
 *                 encrypted_group_info<V>
 *   application messages as PrivateMessages with the secret tree's keys.
 *
 * A commit is made on a copy of the member (its tree written out and read
 * back), which becomes the member only when the caller merges it.
 */
#include <stdlib.h>
#include <string.h>

#include <sodium.h>

#include "missive/util.h"
#include "mls/member.h"
#include "mls/member_int.h"
#include "util/endian.h"

msv_err msv_mls_member_set_signer(struct msv_mls_member *m, const uint8_t sig_seed[32])
{
    const struct msv_mls_leaf *leaf = &m->tree.nodes[2 * m->me].leaf;
    uint8_t pk[32], sk[64];
    msv_err err;

    if (crypto_sign_seed_keypair(pk, sk, sig_seed) != 0)
        return MSV_ERR_CRYPTO;
    sodium_memzero(sk, sizeof(sk));
    if (leaf->signature_key_len != 32 || !msv_equal_ct(pk, leaf->signature_key, 32))
        return MSV_ERR_AUTH;
    err = msv_mls_leaf_identity(leaf, m->identity, &m->identity_len);
    if (err != MSV_OK)
        return err;
    memcpy(m->sig_seed, sig_seed, 32);
    m->can_send = 1;
    return MSV_OK;
}

/* A fresh HPKE key pair for a leaf. */
static msv_err fresh_key(uint8_t sk[32], uint8_t pk[32], struct msv_mls_leaf_spec *spec,
                         uint8_t source)
{
    randombytes_buf(sk, 32);
    memset(spec, 0, sizeof(*spec));
    spec->encryption_key = pk;
    spec->source = source;
    return crypto_scalarmult_base(pk, sk) == 0 ? MSV_OK : MSV_ERR_CRYPTO;
}

/* A LeafNode of ours, held by m, read into *leaf. */
static msv_err own_leaf(struct msv_mls_member *m, struct msv_mls_leaf_spec *spec,
                        struct msv_mls_leaf *leaf)
{
    struct msv_reader r;
    uint8_t *bytes = NULL;
    const uint8_t *held;
    size_t len = 0;
    msv_err err;

    spec->sig_seed = m->sig_seed;
    spec->identity = m->identity;
    spec->identity_len = m->identity_len;
    spec->group_id = m->group_id;
    spec->group_id_len = m->group_id_len;
    spec->index = m->me;
    err = msv_mls_leaf_make(spec, &bytes, &len);
    if (err == MSV_OK)
        err = msv_mls_member_hold(m, bytes, len, &held);
    free(bytes);
    if (err != MSV_OK)
        return err;
    msv_reader_init(&r, held, len);
    return msv_mls_read_leaf_node(&r, leaf);
}

/* Epoch 0's secrets (11): a random epoch secret, here a joiner secret drawn at random. */
static msv_err first_epoch(struct msv_mls_member *m)
{
    uint8_t joiner[MSV_MLS_NH], zero[MSV_MLS_NH] = {0}, tag[MSV_MLS_NH], *gc = NULL, *in = NULL;
    size_t gc_len = 0, in_len = 0;
    struct msv_buf w;
    msv_err err;

    randombytes_buf(joiner, sizeof(joiner));
    err = msv_mls_member_group_context(m, 0, m->cth, 0, &gc, &gc_len);
    if (err == MSV_OK)
        err = msv_mls_key_schedule_joiner(joiner, zero, gc, gc_len, &m->s);
    /* the interim transcript hash: Hash("" || confirmation_tag<V>), the tag over "" */
    if (err == MSV_OK)
        err = msv_mls_mac(m->s.confirmation_key, MSV_MLS_NH, NULL, 0, tag);
    if (err == MSV_OK) {
        memcpy(m->tag, tag, MSV_MLS_NH);
        msv_buf_init(&w, 2 * MSV_MLS_NH);
        msv_mls_put_vec(&w, tag, sizeof(tag));
        err = msv_buf_finish(&w, &in, &in_len);
    }
    if (err == MSV_OK)
        err = msv_mls_hash(in, in_len, m->interim);
    if (err == MSV_OK)
        err = msv_mls_secret_state_init(&m->st, m->suite, m->s.encryption, 1);
    sodium_memzero(m->s.encryption, MSV_MLS_NH);
    sodium_memzero(m->s.joiner, MSV_MLS_NH);
    sodium_memzero(joiner, sizeof(joiner));
    free(gc);
    free(in);
    return err;
}

msv_err msv_mls_member_create(enum msv_mls_suite suite, const uint8_t *group_id,
                              size_t group_id_len, const uint8_t sig_seed[32],
                              const uint8_t *identity, size_t identity_len, uint64_t not_before,
                              uint64_t not_after, struct msv_mls_member **out)
{
    struct msv_mls_member *m;
    struct msv_mls_leaf_spec spec;
    uint8_t pk[32], sk[32];
    msv_err err = MSV_OK;

    if (!msv_mls_suite_is_supported((uint16_t)suite) || group_id_len > MSV_MLS_GROUP_ID_MAX ||
        identity_len > MSV_MLS_IDENTITY_MAX || not_before > not_after)
        return MSV_ERR_INVALID;
    m = calloc(1, sizeof(*m));
    if (m == NULL || (m->held = calloc(HELD_MAX, sizeof(uint8_t *))) == NULL ||
        (m->ext = malloc(1)) == NULL ||
        (m->tree.nodes = calloc(1, sizeof(*m->tree.nodes))) == NULL) {
        msv_mls_member_free(m);
        return MSV_ERR_NOMEM;
    }
    m->suite = suite;
    memcpy(m->group_id, group_id, group_id_len);
    m->group_id_len = group_id_len;
    memcpy(m->sig_seed, sig_seed, 32);
    memcpy(m->identity, identity, identity_len);
    m->identity_len = identity_len;
    m->can_send = 1;
    m->tree.n_leaves = m->tree.width = 1;
    m->tree.nodes[0].type = 1;
    err = fresh_key(sk, pk, &spec, 1);
    spec.not_before = not_before;
    spec.not_after = not_after;
    if (err == MSV_OK)
        err = own_leaf(m, &spec, &m->tree.nodes[0].leaf);
    if (err == MSV_OK) {
        m->keys[0].node = 0;
        memcpy(m->keys[0].sk, sk, 32);
        m->n_keys = 1;
        err = first_epoch(m);
    }
    sodium_memzero(sk, sizeof(sk));
    if (err != MSV_OK) {
        msv_mls_member_free(m);
        return err;
    }
    *out = m;
    return MSV_OK;
}

/* A handshake message (a proposal or a commit) as a PrivateMessage (6.3), with the next key of
 * our handshake ratchet. */
static msv_err seal_handshake(struct msv_mls_member *m, const struct msv_mls_epoch *ep,
                              const struct msv_mls_content *c, uint8_t **out, size_t *out_len)
{
    uint8_t guard[4];
    uint32_t generation = 0;
    msv_err err = msv_mls_secret_state_next(&m->st, m->me, MSV_MLS_RATCHET_HANDSHAKE, &generation);

    randombytes_buf(guard, sizeof(guard));
    if (err == MSV_OK)
        err = msv_mls_private_protect(ep, c, m->sig_seed, generation, guard, 0, out, out_len);
    /* the key is used: erased whether or not the message goes out */
    if (msv_mls_secret_state_consume(&m->st, m->me, MSV_MLS_RATCHET_HANDSHAKE, generation) !=
            MSV_OK &&
        err == MSV_OK) {
        free(*out);
        *out = NULL;
        err = MSV_ERR_CRYPTO;
    }
    return err;
}

/* The body of an Update proposal of our leaf with sk's HPKE key (proposal_type update (2) ||
 * LeafNode), held by m. The same key gives the same bytes: the leaf's signature is Ed25519's. */
static msv_err update_body(struct msv_mls_member *m, const uint8_t sk[32], const uint8_t **body,
                           size_t *body_len)
{
    struct msv_mls_leaf_spec spec;
    struct msv_mls_leaf leaf;
    struct msv_buf w;
    uint8_t pk[32], *bytes = NULL;
    size_t len = 0;
    msv_err err = crypto_scalarmult_base(pk, sk) == 0 ? MSV_OK : MSV_ERR_CRYPTO;

    memset(&spec, 0, sizeof(spec));
    spec.encryption_key = pk;
    spec.source = 2;
    if (err == MSV_OK)
        err = own_leaf(m, &spec, &leaf);
    if (err != MSV_OK)
        return err;
    msv_buf_init(&w, MSV_MLS_MESSAGE_MAX);
    (void)msv_buf_put_u16be(&w, 2);
    (void)msv_buf_put(&w, leaf.raw, leaf.raw_len);
    err = msv_buf_finish(&w, &bytes, &len);
    if (err == MSV_OK)
        err = msv_mls_member_hold(m, bytes, len, body);
    if (err == MSV_OK)
        *body_len = len;
    free(bytes);
    return err;
}

/* A proposal of ours (body: proposal_type || its content), as a PublicMessage MLSMessage or a
 * PrivateMessage under the next key of our handshake ratchet. */
static msv_err propose(struct msv_mls_member *m, const uint8_t *body, size_t body_len,
                       int private_message, uint8_t **out, size_t *out_len)
{
    struct msv_mls_epoch ep;
    struct msv_mls_content c;
    uint8_t root[MSV_MLS_NH];
    msv_err err = msv_mls_member_epoch(m, root, &ep);

    if (err != MSV_OK)
        return err;
    memset(&c, 0, sizeof(c));
    c.leaf_index = m->me;
    c.content_type = MSV_MLS_CONTENT_PROPOSAL;
    c.body = body;
    c.body_len = body_len;
    ep.content_key = msv_mls_member_content_key;
    ep.content_key_ctx = m;
    return private_message ? seal_handshake(m, &ep, &c, out, out_len)
                           : msv_mls_public_protect(&ep, &c, m->sig_seed, out, out_len);
}

msv_err msv_mls_member_propose_update(struct msv_mls_member *m, int private_message, uint8_t **out,
                                      size_t *out_len)
{
    uint8_t sk[32];
    const uint8_t *body = NULL;
    size_t body_len = 0;
    msv_err err;

    if (!m->can_send)
        return MSV_ERR_INVALID;
    randombytes_buf(sk, sizeof(sk));
    err = update_body(m, sk, &body, &body_len);
    if (err == MSV_OK)
        err = propose(m, body, body_len, private_message, out, out_len);
    if (err == MSV_OK) {
        memcpy(m->update_sk, sk, 32);
        m->has_update = 1;
    }
    sodium_memzero(sk, sizeof(sk));
    return err;
}

msv_err msv_mls_member_propose_leave(struct msv_mls_member *m, uint8_t **out, size_t *out_len)
{
    uint8_t body[6] = {0, 3}; /* remove (12.1.3), of our own leaf */

    if (!m->can_send)
        return MSV_ERR_INVALID;
    msv_put_u32be(body + 2, m->me);
    return propose(m, body, sizeof(body), 0, out, out_len);
}

msv_err msv_mls_member_own_update(struct msv_mls_member *m, const struct msv_mls_epoch *ep,
                                  struct proposal *out)
{
    static const char label[] = "MLS 1.0 Proposal Reference";
    struct msv_mls_content c;
    uint8_t sig[MSV_MLS_SIG_LEN], *ac = NULL;
    const uint8_t *body = NULL;
    size_t body_len = 0, ac_len = 0;
    msv_err err;

    if (!m->has_update || !m->can_send)
        return MSV_ERR_NOT_FOUND;
    err = update_body(m, m->update_sk, &body, &body_len);
    memset(&c, 0, sizeof(c));
    c.leaf_index = m->me;
    c.content_type = MSV_MLS_CONTENT_PROPOSAL;
    c.body = body;
    c.body_len = body_len;
    if (err == MSV_OK)
        err = msv_mls_content_sign(ep, MSV_MLS_WIRE_PRIVATE, &c, m->sig_seed, sig);
    if (err == MSV_OK)
        err = msv_mls_authenticated_content(ep, MSV_MLS_WIRE_PRIVATE, &c, sig, sizeof(sig), &ac,
                                            &ac_len);
    if (err == MSV_OK)
        err = msv_mls_ref_hash((const uint8_t *)label, sizeof(label) - 1, ac, ac_len, out->ref);
    if (err == MSV_OK) {
        out->type = 2;
        out->body = body + 2;
        out->body_len = body_len - 2;
        out->sender = m->me;
    }
    free(ac);
    return err;
}

/* ---- commits ---- */

/* A deep copy of m whose tree borrows from a buffer of its own; no pending commit, no secret
 * tree (the next epoch makes its own). */
static msv_err clone_member(const struct msv_mls_member *m, struct msv_mls_member **out)
{
    struct msv_mls_member *p = malloc(sizeof(*p));
    uint8_t *bytes = NULL;
    size_t len = 0;
    msv_err err;

    if (p == NULL)
        return MSV_ERR_NOMEM;
    memcpy(p, m, sizeof(*p));
    p->pending = NULL;
    memset(&p->st, 0, sizeof(p->st));
    memset(&p->tree, 0, sizeof(p->tree));
    p->n_held = 0;
    p->ext = malloc(m->ext_len + 1);
    p->held = calloc(HELD_MAX, sizeof(uint8_t *));
    if (p->ext == NULL || p->held == NULL) {
        msv_mls_member_free(p);
        return MSV_ERR_NOMEM;
    }
    memcpy(p->ext, m->ext, m->ext_len);
    err = msv_mls_tree_write(&m->tree, &bytes, &len);
    if (err == MSV_OK) {
        p->held[p->n_held++] = bytes;
        err = msv_mls_tree_read(bytes, len, &p->tree);
    }
    if (err != MSV_OK) {
        msv_mls_member_free(p);
        return err;
    }
    *out = p;
    return MSV_OK;
}

/* What making a path leaves for the Welcome and the key schedule. */
struct path_made {
    uint32_t path[MSV_MLS_PATH_MAX];
    size_t n;
    uint8_t secret[MSV_MLS_PATH_MAX][MSV_MLS_NH];
    uint8_t commit_secret[MSV_MLS_NH];
};

static void path_made_wipe(struct path_made *pm)
{
    sodium_memzero(pm, sizeof(*pm));
}

static uint32_t copath_child(uint32_t x, uint32_t leaf)
{
    return 2 * leaf < x ? msv_mls_tree_right(x) : msv_mls_tree_left(x);
}

static int is_joiner(uint32_t node, const struct commit_state *cs)
{
    for (size_t i = 0; node % 2 == 0 && i < cs->n_joiners; i++) {
        if (cs->joiners[i] == node / 2)
            return 1;
    }
    return 0;
}

/* The public key of a node of a resolution. */
static const uint8_t *node_key(const struct msv_mls_tree *t, uint32_t x, size_t *len)
{
    const struct msv_mls_node *n = &t->nodes[x];

    *len = n->type == 1 ? n->leaf.encryption_key_len : n->encryption_key_len;
    return n->type == 1 ? n->leaf.encryption_key : n->encryption_key;
}

/* One UpdatePathNode: the node's key and its path secret encrypted to the resolution of its
 * co-path child, less the leaves this commit adds (7.6). */
static msv_err put_path_node(const struct msv_mls_member *p, const struct commit_state *cs,
                             uint32_t x, const uint8_t pk[32], const uint8_t secret[MSV_MLS_NH],
                             const uint8_t *gc, size_t gc_len, struct msv_buf *w)
{
    uint32_t *res = calloc(p->tree.width, sizeof(uint32_t));
    size_t n = 0, mark;
    msv_err err = res == NULL ? MSV_ERR_NOMEM
                              : msv_mls_tree_resolution(&p->tree, copath_child(x, p->me), res,
                                                        p->tree.width, &n);

    msv_mls_put_vec(w, pk, 32);
    mark = msv_mls_vec_begin(w);
    for (size_t i = 0; err == MSV_OK && i < n; i++) {
        uint8_t kem[32], *ct = NULL;
        size_t key_len;
        const uint8_t *key = node_key(&p->tree, res[i], &key_len);

        if (is_joiner(res[i], cs))
            continue;
        if (key_len != 32) {
            err = MSV_ERR_INVALID;
            break;
        }
        err = msv_mls_encrypt_label(p->suite, key, "UpdatePathNode", gc, gc_len, secret, MSV_MLS_NH,
                                    kem, &ct);
        if (err == MSV_OK) {
            msv_mls_put_vec(w, kem, sizeof(kem));
            msv_mls_put_vec(w, ct, MSV_MLS_NH + MSV_MLS_TAG_LEN);
        }
        free(ct);
    }
    msv_mls_vec_end(w, mark);
    free(res);
    return err;
}

/* Fresh path secrets up our filtered direct path, their keys set in the tree and held by p. */
static msv_err derive_path(struct msv_mls_member *p, struct path_made *pm,
                           struct msv_mls_update_path *up)
{
    uint8_t sk[32], pk[MSV_MLS_PATH_MAX][32];
    const uint8_t *held = NULL;
    msv_err err = msv_mls_tree_filtered_path(&p->tree, p->me, pm->path, &pm->n);

    randombytes_buf(pm->secret[0], MSV_MLS_NH);
    for (size_t i = 0; err == MSV_OK && i < pm->n; i++) {
        if (i > 0)
            err = msv_mls_derive_secret(pm->secret[i - 1], MSV_MLS_NH, "path", pm->secret[i]);
        if (err == MSV_OK)
            err = msv_mls_node_keypair(pm->secret[i], sk, pk[i]);
        if (err == MSV_OK) {
            p->keys[i + 1].node = pm->path[i];
            memcpy(p->keys[i + 1].sk, sk, 32);
        }
    }
    /* with nobody else in the tree the commit secret is the first path secret */
    if (err == MSV_OK && pm->n > 0)
        err = msv_mls_derive_secret(pm->secret[pm->n - 1], MSV_MLS_NH, "path", pm->commit_secret);
    else if (err == MSV_OK)
        memcpy(pm->commit_secret, pm->secret[0], MSV_MLS_NH);
    if (err == MSV_OK && pm->n > 0)
        err = msv_mls_member_hold(p, pk[0], 32 * pm->n, &held);
    memset(up, 0, sizeof(*up));
    up->n_nodes = pm->n;
    for (size_t i = 0; err == MSV_OK && i < pm->n; i++) {
        up->nodes[i].encryption_key = held + 32 * i;
        up->nodes[i].encryption_key_len = 32;
    }
    sodium_memzero(sk, sizeof(sk));
    return err;
}

/*
 * The UpdatePath (7.4-7.6): the path's keys and parent hashes set in p's
 * tree, our leaf remade with a fresh key and signed, each path secret
 * encrypted under the provisional GroupContext. *out is held by p.
 */
static msv_err make_path(struct msv_mls_member *p, const struct commit_state *cs,
                         struct path_made *pm, const uint8_t **out, size_t *out_len)
{
    struct msv_mls_update_path up;
    struct msv_mls_leaf_spec spec;
    struct msv_mls_leaf leaf;
    struct msv_buf w;
    uint8_t leaf_sk[32], leaf_pk[32], ph[MSV_MLS_NH], *gc = NULL, *bytes = NULL;
    size_t ph_len = 0, gc_len = 0, len = 0, mark;
    msv_err err = derive_path(p, pm, &up);

    memset(&leaf, 0, sizeof(leaf));
    memset(&spec, 0, sizeof(spec));
    if (err == MSV_OK)
        err = fresh_key(leaf_sk, leaf_pk, &spec, 3);
    if (err == MSV_OK)
        err = msv_mls_tree_set_path(&p->tree, p->me, &up, ph, &ph_len);
    spec.parent_hash = ph;
    spec.parent_hash_len = ph_len;
    if (err == MSV_OK)
        err = own_leaf(p, &spec, &leaf);
    if (err == MSV_OK) {
        p->tree.nodes[2 * p->me].leaf = leaf;
        p->keys[0].node = 2 * p->me;
        memcpy(p->keys[0].sk, leaf_sk, 32);
        p->n_keys = pm->n + 1;
        err = msv_mls_member_group_context(p, p->epoch + 1, p->cth, p->cth_len, &gc, &gc_len);
    }
    msv_buf_init(&w, MSV_MLS_MESSAGE_MAX);
    (void)msv_buf_put(&w, leaf.raw, leaf.raw_len);
    mark = msv_mls_vec_begin(&w);
    for (size_t i = 0; err == MSV_OK && i < pm->n; i++)
        err = put_path_node(p, cs, pm->path[i], up.nodes[i].encryption_key, pm->secret[i], gc,
                            gc_len, &w);
    msv_mls_vec_end(&w, mark);
    if (err == MSV_OK)
        err = msv_buf_finish(&w, &bytes, &len);
    else
        msv_buf_clear(&w);
    if (err == MSV_OK)
        err = msv_mls_member_hold(p, bytes, len, out);
    if (err == MSV_OK)
        *out_len = len;
    free(bytes);
    free(gc);
    sodium_memzero(leaf_sk, sizeof(leaf_sk));
    return err;
}

/* The proposals a commit we make may carry, each checked as 12.2 and 10.1 say. */
static msv_err check_proposals(const struct msv_mls_member *p, const struct commit_state *cs,
                               uint64_t now, const char **why)
{
    for (size_t i = 0; i < cs->n; i++) {
        const struct proposal *e = &cs->list[i];
        struct msv_reader r;
        uint32_t index;

        msv_reader_init(&r, e->body, e->body_len);
        if (e->type == 1) {
            msv_err err =
                msv_mls_key_package_body_check(p->suite, e->body, e->body_len, now, NULL, why);
            if (err != MSV_OK)
                return err;
        } else if (e->type == 2) {
            if (e->sender == p->me) {
                *why = "an update of our own leaf goes in our path";
                return MSV_ERR_INVALID;
            }
        } else if (e->type == 3) {
            if (msv_reader_u32be(&r, &index) != MSV_OK)
                return MSV_ERR_PARSE;
            if (index == p->me) {
                *why = "a committer cannot remove itself";
                return MSV_ERR_INVALID;
            }
            if (index >= p->tree.n_leaves || p->tree.nodes[2 * index].type != 1) {
                *why = "removes an empty leaf";
                return MSV_ERR_INVALID;
            }
        } else if (e->type == 7) {
            const uint8_t *ext;
            size_t ext_len;

            if (msv_mls_get_vec(&r, &ext, &ext_len) != MSV_OK || !msv_mls_reader_is_done(&r))
                return MSV_ERR_PARSE;
        } else if (e->type == 5 ||
                   (e->type == 4 && cs->given_id != NULL && e->body_len == cs->given_id_len &&
                    memcmp(e->body, cs->given_id, e->body_len) == 0)) {
            continue; /* a ReInit is read as it is applied; the PSK is ours */
        } else {
            *why = "proposal type not supported in our commits";
            return MSV_ERR_INVALID;
        }
    }
    return MSV_OK;
}

/* ProposalOrRef proposals<V>: the received ones by reference, ours by value. */
static msv_err put_proposals(const struct msv_mls_commit_spec *spec, const struct commit_state *cs,
                             const struct proposal *received, uint8_t **out, size_t *out_len)
{
    struct msv_buf w;
    size_t mark;

    msv_buf_init(&w, MSV_MLS_MESSAGE_MAX);
    mark = msv_mls_vec_begin(&w);
    if (spec->set_extensions) {
        (void)msv_buf_put_u8(&w, 1);
        (void)msv_buf_put_u16be(&w, 7);
        msv_mls_put_vec(&w, spec->extensions, spec->extensions_len);
    }
    for (size_t i = 0; i < spec->n_proposals; i++) {
        (void)msv_buf_put_u8(&w, 2);
        msv_mls_put_vec(&w, received[i].ref, MSV_MLS_NH);
    }
    for (size_t i = 0; i < spec->n_removes; i++) {
        (void)msv_buf_put_u8(&w, 1);
        (void)msv_buf_put_u16be(&w, 3);
        (void)msv_buf_put_u32be(&w, spec->removes[i]);
    }
    for (size_t i = 0; i < spec->n_adds; i++) {
        (void)msv_buf_put_u8(&w, 1);
        (void)msv_buf_put_u16be(&w, 1);
        (void)msv_buf_put(&w, spec->key_packages[i] + 4, spec->key_package_lens[i] - 4);
    }
    if (cs->given_id != NULL) {
        (void)msv_buf_put_u8(&w, 1);
        (void)msv_buf_put_u16be(&w, 4);
        (void)msv_buf_put(&w, cs->given_id, cs->given_id_len);
    }
    if (spec->reinit) {
        struct mls_reinit ri = {spec->reinit_group_id, spec->reinit_extensions,
                                spec->reinit_group_id_len, spec->reinit_extensions_len,
                                (uint16_t)spec->reinit_suite};

        (void)msv_buf_put_u8(&w, 1);
        (void)msv_buf_put_u16be(&w, 5);
        msv_mls_reinit_put(&w, &ri);
    }
    msv_mls_vec_end(&w, mark);
    return msv_buf_finish(&w, out, out_len);
}

/* The confirmation tag of a commit whose AuthenticatedContent (with a placeholder tag) is ac,
 * from the next epoch's key schedule over the confirmed transcript hash (8.1, 8.2). */
static msv_err confirmation_tag(const struct msv_mls_member *m, const struct msv_mls_member *p,
                                const struct commit_state *cs, const uint8_t *ac, size_t ac_len,
                                const uint8_t commit_secret[MSV_MLS_NH], uint8_t tag[MSV_MLS_NH])
{
    struct msv_mls_epoch_secrets ns;
    uint8_t psk_secret[MSV_MLS_NH], confirmed[MSV_MLS_NH], *gc = NULL;
    size_t gc_len = 0;
    msv_err err = msv_mls_member_confirmed_hash(m, ac, ac_len, confirmed);

    /* the PSKs the commit brings in (8.4): none gives zeros */
    if (err == MSV_OK)
        err = msv_mls_psk_secret(cs->psks, cs->n_psks, psk_secret);
    if (err == MSV_OK)
        err = msv_mls_member_group_context(p, p->epoch + 1, confirmed, MSV_MLS_NH, &gc, &gc_len);
    if (err == MSV_OK)
        err = msv_mls_key_schedule(p->s.init, commit_secret, psk_secret, gc, gc_len, &ns);
    if (err == MSV_OK)
        err = msv_mls_mac(ns.confirmation_key, MSV_MLS_NH, confirmed, MSV_MLS_NH, tag);
    free(gc);
    sodium_memzero(&ns, sizeof(ns));
    sodium_memzero(psk_secret, sizeof(psk_secret));
    return err;
}

/*
 * The commit's message (12.4): signed, its confirmation tag from the next
 * epoch's key schedule; a PublicMessage with this epoch's membership tag or a
 * PrivateMessage. Then p moved to that epoch; the tag goes to tag.
 */
static msv_err frame_commit(struct msv_mls_member *m, struct msv_mls_member *p,
                            const struct commit_state *cs, const struct path_made *pm,
                            const uint8_t *body, size_t body_len, int private_message,
                            uint8_t sender_type, uint8_t **out, size_t *out_len,
                            uint8_t tag[MSV_MLS_NH])
{
    uint16_t wire = private_message ? MSV_MLS_WIRE_PRIVATE : MSV_MLS_WIRE_PUBLIC;
    struct msv_mls_epoch ep;
    struct msv_mls_content c;
    uint8_t root[MSV_MLS_NH], sig[MSV_MLS_SIG_LEN], *ac = NULL;
    size_t ac_len = 0;
    msv_err err = msv_mls_member_epoch(m, root, &ep);

    ep.content_key = msv_mls_member_content_key;
    ep.content_key_ctx = m;
    memset(tag, 0, MSV_MLS_NH);
    memset(&c, 0, sizeof(c));
    c.leaf_index = m->me;
    c.sender_type = sender_type;
    c.content_type = MSV_MLS_CONTENT_COMMIT;
    c.body = body;
    c.body_len = body_len;
    c.confirmation_tag = tag;
    c.confirmation_tag_len = MSV_MLS_NH;
    /* the signature does not cover the confirmation tag, which covers the signature */
    if (err == MSV_OK)
        err = msv_mls_content_sign(&ep, wire, &c, m->sig_seed, sig);
    if (err == MSV_OK)
        err = msv_mls_authenticated_content(&ep, wire, &c, sig, sizeof(sig), &ac, &ac_len);
    if (err == MSV_OK)
        err = confirmation_tag(m, p, cs, ac, ac_len, pm->commit_secret, tag);
    free(ac);
    ac = NULL;
    if (err == MSV_OK)
        err = msv_mls_authenticated_content(&ep, wire, &c, sig, sizeof(sig), &ac, &ac_len);
    if (err == MSV_OK && private_message)
        err = seal_handshake(m, &ep, &c, out, out_len);
    else if (err == MSV_OK)
        err = msv_mls_public_protect(&ep, &c, m->sig_seed, out, out_len);
    if (err == MSV_OK)
        err = msv_mls_member_next_epoch(p, ac, ac_len, &c, cs, pm->commit_secret);
    if (err != MSV_OK && *out != NULL) {
        free(*out);
        *out = NULL;
    }
    free(ac);
    return err;
}

/* GroupInfo (12.4.3): the new epoch's GroupContext, the ratchet_tree extension, the commit's
 * confirmation tag, our leaf, signed (GroupInfoTBS). */
static msv_err group_info(struct msv_mls_member *p, const uint8_t tag[MSV_MLS_NH], uint8_t **out,
                          size_t *out_len)
{
    struct msv_buf w;
    uint8_t sig[MSV_MLS_SIG_LEN], ext_sk[32], ext_pk[32], *gc = NULL, *tree = NULL, *tbs = NULL;
    size_t gc_len = 0, tree_len = 0, tbs_len = 0, mark;
    msv_err err = msv_mls_member_group_context(p, p->epoch, p->cth, p->cth_len, &gc, &gc_len);

    if (err == MSV_OK)
        err = msv_mls_tree_write(&p->tree, &tree, &tree_len);
    /* external_pub (12.4.3.2): the key external commits encrypt their init secret to */
    if (err == MSV_OK)
        err = msv_mls_hpke_derive_keypair(p->s.external, MSV_MLS_NH, ext_sk, ext_pk);
    sodium_memzero(ext_sk, sizeof(ext_sk));
    if (err == MSV_OK) {
        msv_buf_init(&w, MSV_MLS_MESSAGE_MAX);
        (void)msv_buf_put(&w, gc, gc_len);
        mark = msv_mls_vec_begin(&w);
        (void)msv_buf_put_u16be(&w, 2);
        msv_mls_put_vec(&w, tree, tree_len);
        (void)msv_buf_put_u16be(&w, 4);
        (void)msv_buf_put_u8(&w, 33); /* extension_data<V> holding external_pub<V> */
        msv_mls_put_vec(&w, ext_pk, sizeof(ext_pk));
        msv_mls_vec_end(&w, mark);
        msv_mls_put_vec(&w, tag, MSV_MLS_NH);
        (void)msv_buf_put_u32be(&w, p->me);
        err = msv_buf_finish(&w, &tbs, &tbs_len);
    }
    if (err == MSV_OK)
        err = msv_mls_sign_label(p->sig_seed, "GroupInfoTBS", tbs, tbs_len, sig);
    if (err == MSV_OK) {
        msv_buf_init(&w, MSV_MLS_MESSAGE_MAX);
        (void)msv_buf_put(&w, tbs, tbs_len);
        msv_mls_put_vec(&w, sig, sizeof(sig));
        err = msv_buf_finish(&w, out, out_len);
    }
    free(gc);
    free(tree);
    free(tbs);
    return err;
}

/* The GroupInfo encrypted with the welcome secret's key and nonce. */
static msv_err seal_group_info(const struct msv_mls_member *p, const uint8_t *gi, size_t gi_len,
                               uint8_t **out, size_t *out_len)
{
    uint8_t key[MSV_MLS_KEY_MAX], nonce[MSV_MLS_NN], *ct = malloc(gi_len + MSV_MLS_TAG_LEN);
    msv_err err = ct == NULL ? MSV_ERR_NOMEM : MSV_OK;

    if (err == MSV_OK)
        err = msv_mls_expand_label(p->s.welcome, MSV_MLS_NH, (const uint8_t *)"key", 3, NULL, 0,
                                   key, msv_mls_suite_nk(p->suite));
    if (err == MSV_OK)
        err = msv_mls_expand_label(p->s.welcome, MSV_MLS_NH, (const uint8_t *)"nonce", 5, NULL, 0,
                                   nonce, MSV_MLS_NN);
    if (err == MSV_OK)
        err = msv_mls_aead_seal(p->suite, key, nonce, NULL, 0, gi, gi_len, ct);
    if (err == MSV_OK) {
        *out = ct;
        *out_len = gi_len + MSV_MLS_TAG_LEN;
        ct = NULL;
    }
    free(ct);
    sodium_memzero(key, sizeof(key));
    return err;
}

/* One EncryptedGroupSecrets: the KeyPackageRef, the GroupSecrets sealed to its init key. */
static msv_err put_group_secrets(const struct msv_mls_member *p, const struct commit_state *cs,
                                 const struct proposal *add, uint32_t leaf,
                                 const struct path_made *pm, const uint8_t *egi, size_t egi_len,
                                 struct msv_buf *w)
{
    static const char label[] = "MLS 1.0 KeyPackage Reference";
    struct msv_reader r;
    struct msv_buf gs;
    const uint8_t *init;
    uint8_t ref[MSV_MLS_NH], kem[32], *pt = NULL, *ct = NULL;
    size_t init_len, pt_len = 0, i = msv_mls_member_lowest_above(pm->path, pm->n, leaf), mark;
    uint16_t vs[2];
    msv_err err;

    msv_reader_init(&r, add->body, add->body_len);
    if (msv_reader_u16be(&r, &vs[0]) != MSV_OK || msv_reader_u16be(&r, &vs[1]) != MSV_OK ||
        msv_mls_get_vec(&r, &init, &init_len) != MSV_OK || init_len != 32)
        return MSV_ERR_PARSE;
    err =
        msv_mls_ref_hash((const uint8_t *)label, sizeof(label) - 1, add->body, add->body_len, ref);
    /* the joiner and path secrets, and the PSK ids (each up to a 255-byte group id) */
    msv_buf_init(&gs, MSV_MLS_MESSAGE_MAX);
    msv_mls_put_vec(&gs, p->s.joiner, MSV_MLS_NH);
    (void)msv_buf_put_u8(&gs, i < pm->n);
    if (i < pm->n)
        msv_mls_put_vec(&gs, pm->secret[i], MSV_MLS_NH);
    /* the PSKs the commit brought in, in its order (12.4.3.1) */
    mark = msv_mls_vec_begin(&gs);
    for (size_t k = 0; k < cs->n_psks; k++)
        (void)msv_buf_put(&gs, cs->psks[k].id, cs->psks[k].id_len);
    msv_mls_vec_end(&gs, mark);
    if (err == MSV_OK)
        err = msv_buf_finish(&gs, &pt, &pt_len);
    else
        msv_buf_clear(&gs);
    if (err == MSV_OK)
        err = msv_mls_encrypt_label(p->suite, init, "Welcome", egi, egi_len, pt, pt_len, kem, &ct);
    if (err == MSV_OK) {
        msv_mls_put_vec(w, ref, sizeof(ref));
        msv_mls_put_vec(w, kem, sizeof(kem));
        msv_mls_put_vec(w, ct, pt_len + MSV_MLS_TAG_LEN);
    }
    msv_secret_free(pt, pt_len);
    free(ct);
    return err;
}

/* The Welcome for the leaves the commit added (12.4.3.1). */
static msv_err make_welcome(struct msv_mls_member *p, const struct commit_state *cs,
                            const struct path_made *pm, const uint8_t tag[MSV_MLS_NH],
                            uint8_t **out, size_t *out_len)
{
    struct msv_buf w;
    uint8_t *gi = NULL, *egi = NULL;
    size_t gi_len = 0, egi_len = 0, k = 0, mark;
    msv_err err = group_info(p, tag, &gi, &gi_len);

    if (err == MSV_OK)
        err = seal_group_info(p, gi, gi_len, &egi, &egi_len);
    msv_buf_init(&w, MSV_MLS_MESSAGE_MAX);
    (void)msv_buf_put_u16be(&w, 1);
    (void)msv_buf_put_u16be(&w, 3);
    (void)msv_buf_put_u16be(&w, (uint16_t)p->suite);
    mark = msv_mls_vec_begin(&w);
    /* the adds were applied in the list's order, so the k-th is joiners[k] */
    for (size_t i = 0; err == MSV_OK && i < cs->n; i++) {
        if (cs->list[i].type != 1)
            continue;
        err = put_group_secrets(p, cs, &cs->list[i], cs->joiners[k++], pm, egi, egi_len, &w);
    }
    msv_mls_vec_end(&w, mark);
    msv_mls_put_vec(&w, egi, egi_len);
    if (err == MSV_OK)
        err = msv_buf_finish(&w, out, out_len);
    else
        msv_buf_clear(&w);
    free(gi);
    free(egi);
    return err;
}

/* Checks what the caller asks before anything is made. */
static msv_err check_spec(const struct msv_mls_member *m, const struct msv_mls_commit_spec *spec,
                          const char **why)
{
    if (!m->can_send) {
        *why = "no signature key to send with";
        return MSV_ERR_INVALID;
    }
    if (m->reinit) {
        *why = "the group was reinitialized: the new group takes its commits";
        return MSV_ERR_INVALID;
    }
    if (spec->reinit &&
        (spec->n_proposals + spec->n_adds + spec->n_removes > 0 || spec->set_extensions)) {
        *why = "a ReInit is a commit's only proposal";
        return MSV_ERR_INVALID;
    }
    if (spec->reinit && (spec->reinit_group_id_len > MSV_MLS_GROUP_ID_MAX ||
                         spec->reinit_extensions_len > MSV_MLS_REINIT_EXT_MAX ||
                         !msv_mls_suite_is_supported((uint16_t)spec->reinit_suite))) {
        *why = "the ReInit's group id or extensions are too long, or its suite is not supported";
        return MSV_ERR_INVALID;
    }
    if (spec->n_proposals + spec->n_adds + spec->n_removes + (spec->set_extensions != 0) >
        PROPOSALS_MAX) {
        *why = "too many proposals";
        return MSV_ERR_TOO_BIG;
    }
    for (size_t i = 0; i < spec->n_adds; i++) {
        msv_err err = msv_mls_key_package_check(m->suite, spec->key_packages[i],
                                                spec->key_package_lens[i], spec->now, NULL, why);
        if (err != MSV_OK)
            return err;
    }
    return MSV_OK;
}

/* The proposals applied and the path made on p; the commit's body into *body. */
static msv_err build_commit(struct msv_mls_member *m, struct msv_mls_member *p,
                            const struct msv_mls_commit_spec *spec, struct commit_state *cs,
                            struct proposal *received, struct path_made *pm, uint8_t **body,
                            size_t *body_len, const char **why)
{
    struct msv_mls_epoch ep;
    struct msv_reader r, list;
    struct msv_buf w;
    uint8_t root[MSV_MLS_NH], *props = NULL;
    const uint8_t *path = NULL, *held = NULL;
    size_t props_len = 0, path_len = 0;
    msv_err err = msv_mls_member_epoch(p, root, &ep);

    /* proposals sent as PrivateMessages open with m's secret tree: p has none */
    ep.content_key = msv_mls_member_content_key;
    ep.content_key_ctx = m;
    if (err == MSV_OK)
        err = msv_mls_member_receive_proposals(p, &ep, spec->proposals, spec->proposal_lens,
                                               spec->n_proposals, received);
    if (err == MSV_OK)
        err = put_proposals(spec, cs, received, &props, &props_len);
    /* the proposals applied point into the list: p holds it */
    if (err == MSV_OK)
        err = msv_mls_member_hold(p, props, props_len, &held);
    if (err == MSV_OK) {
        msv_reader_init(&r, held, props_len);
        err = msv_mls_get_sub(&r, &list);
    }
    if (err == MSV_OK)
        err = msv_mls_member_commit_proposals(&list, received, spec->n_proposals, p->me, cs);
    if (err == MSV_OK)
        err = check_proposals(p, cs, spec->now, why);
    if (err == MSV_OK && spec->no_path && !msv_mls_commit_path_optional(cs)) {
        *why = "a commit without a path may only add members or bring in PSKs";
        err = MSV_ERR_INVALID;
    }
    if (err == MSV_OK && (err = msv_mls_member_apply_proposals(p, cs)) == MSV_ERR_INVALID)
        *why = "the proposals do not apply (a KeyPackage given twice or with keys a member "
               "has, a leaf removed twice, a proposal not allowed here, or group context "
               "extensions a leaf does not support)";
    /* without a path the commit secret stays zero (pm was cleared) and the Welcome gives none */
    if (err == MSV_OK && !spec->no_path)
        err = make_path(p, cs, pm, &path, &path_len);
    if (err == MSV_OK) {
        msv_buf_init(&w, MSV_MLS_MESSAGE_MAX);
        (void)msv_buf_put(&w, props, props_len);
        (void)msv_buf_put_u8(&w, path != NULL);
        if (path != NULL)
            (void)msv_buf_put(&w, path, path_len);
        err = msv_buf_finish(&w, body, body_len);
    }
    free(props);
    return err;
}

/* msv_mls_member_commit_make(), with the PSK of another group a first commit may name. */
static msv_err make_commit(struct msv_mls_member *m, const struct msv_mls_commit_spec *spec,
                           const uint8_t *given_id, size_t given_id_len, const uint8_t *given_psk,
                           uint8_t **commit, size_t *commit_len, uint8_t **welcome,
                           size_t *welcome_len, const char **why)
{
    struct msv_mls_member *p = NULL;
    struct commit_state *cs = calloc(1, sizeof(*cs));
    struct proposal *received = calloc(spec->n_proposals + 1, sizeof(*received));
    struct path_made pm;
    const char *reason = "";
    uint8_t *body = NULL, *msg = NULL, *wel = NULL, tag[MSV_MLS_NH];
    size_t body_len = 0, msg_len = 0, wel_len = 0;
    msv_err err = cs == NULL || received == NULL ? MSV_ERR_NOMEM : check_spec(m, spec, &reason);

    memset(&pm, 0, sizeof(pm));
    if (cs != NULL) {
        cs->given_id = given_id;
        cs->given_id_len = given_id_len;
        cs->given_psk = given_psk;
    }
    if (err == MSV_OK)
        err = clone_member(m, &p);
    if (err == MSV_OK)
        err = build_commit(m, p, spec, cs, received, &pm, &body, &body_len, &reason);
    if (err == MSV_OK)
        err = frame_commit(m, p, cs, &pm, body, body_len, spec->private_message,
                           MSV_MLS_SENDER_MEMBER, &msg, &msg_len, tag);
    if (err == MSV_OK && cs->n_joiners > 0)
        err = make_welcome(p, cs, &pm, tag, &wel, &wel_len);
    /* the joiner secret leads to the encryption secret: kept, it would undo 9.2 */
    if (p != NULL)
        sodium_memzero(p->s.joiner, MSV_MLS_NH);
    if (err == MSV_OK) {
        msv_mls_member_commit_discard(m);
        m->pending = p;
        p = NULL;
        *commit = msg;
        *commit_len = msg_len;
        *welcome = wel;
        *welcome_len = wel_len;
        msg = wel = NULL;
    } else if (why != NULL) {
        *why = reason;
    }
    msv_mls_member_free(p);
    path_made_wipe(&pm);
    free(cs);
    free(received);
    free(body);
    free(msg);
    free(wel);
    return err;
}

msv_err msv_mls_member_commit_make(struct msv_mls_member *m, const struct msv_mls_commit_spec *spec,
                                   uint8_t **commit, size_t *commit_len, uint8_t **welcome,
                                   size_t *welcome_len, const char **why)
{
    return make_commit(m, spec, NULL, 0, NULL, commit, commit_len, welcome, welcome_len, why);
}

/*
 * A new group resuming m (11.2, 11.3): ours at first, then its first commit adding the
 * KeyPackages' members with the PreSharedKey of m's current epoch of the given usage, merged.
 */
static msv_err resume(const struct msv_mls_member *m, int usage, const uint8_t *group_id,
                      size_t group_id_len, enum msv_mls_suite suite, const uint8_t *ext,
                      size_t ext_len, const uint8_t *const *key_packages,
                      const size_t *key_package_lens, size_t n, uint64_t now, uint64_t not_after,
                      struct msv_mls_member **out, uint8_t **welcome, size_t *welcome_len,
                      const char **why)
{
    struct msv_mls_commit_spec spec;
    struct msv_mls_member *g = NULL;
    struct msv_buf w;
    uint8_t nonce[MSV_MLS_NH], *id = NULL, *commit = NULL, *wel = NULL;
    size_t id_len = 0, commit_len = 0, wel_len = 0;
    const char *reason = "";
    msv_err err;

    if (!m->can_send) {
        *why = "no signature key to sign the new group's first commit with";
        return MSV_ERR_INVALID;
    }
    if (n == 0) {
        *why = "a new group needs a KeyPackage of each member to add";
        return MSV_ERR_INVALID;
    }
    /* valid from an hour before now, as a clock a little behind ours would have it */
    err = msv_mls_member_create(suite, group_id, group_id_len, m->sig_seed, m->identity,
                                m->identity_len, now > 3600 ? now - 3600 : 0, not_after, &g);
    if (err != MSV_OK) {
        *why = "the new group's id is too long, or its suite or lifetime is not valid";
        return err == MSV_ERR_NOMEM ? err : MSV_ERR_INVALID;
    }
    /* PreSharedKeyID: resumption (2), usage, the old group's id and epoch, a fresh nonce */
    randombytes_buf(nonce, sizeof(nonce));
    msv_buf_init(&w, 2 + 1 + MSV_MLS_GROUP_ID_MAX + 8 + 1 + MSV_MLS_NH + 8);
    (void)msv_buf_put_u8(&w, 2);
    (void)msv_buf_put_u8(&w, (uint8_t)usage);
    msv_mls_put_vec(&w, m->group_id, m->group_id_len);
    msv_mls_put_u64(&w, m->epoch);
    msv_mls_put_vec(&w, nonce, sizeof(nonce));
    err = msv_buf_finish(&w, &id, &id_len);
    memset(&spec, 0, sizeof(spec));
    spec.key_packages = key_packages;
    spec.key_package_lens = key_package_lens;
    spec.n_adds = n;
    spec.now = now;
    spec.extensions = ext;
    spec.extensions_len = ext_len;
    spec.set_extensions = ext_len > 0;
    if (err == MSV_OK)
        err = make_commit(g, &spec, id, id_len, m->s.resumption_psk, &commit, &commit_len, &wel,
                          &wel_len, &reason);
    /* 11.3: each member of the new group one of the old group's (its identity and signature
     * key); 11.2: a reinitialized group has every one of them */
    if (err == MSV_OK && msv_mls_members_match(&g->pending->tree, &m->tree,
                                               usage == MSV_MLS_USAGE_REINIT) != MSV_OK) {
        reason = usage == MSV_MLS_USAGE_REINIT
                     ? "the new group is not the old group's members: a KeyPackage of each "
                       "other member, with the signature key of its leaf, and no one else"
                     : "a KeyPackage is not one of the old group's members' (its identity and "
                       "the signature key of its leaf)";
        err = MSV_ERR_INVALID;
    }
    if (err == MSV_OK)
        err = msv_mls_member_commit_merge(g);
    if (err == MSV_OK) {
        *out = g;
        *welcome = wel;
        *welcome_len = wel_len;
        g = NULL;
        wel = NULL;
    } else {
        *why = reason;
    }
    msv_mls_member_free(g);
    free(id);
    free(commit);
    free(wel);
    return err;
}

msv_err msv_mls_member_branch(const struct msv_mls_member *m, const uint8_t *group_id,
                              size_t group_id_len, const uint8_t *const *key_packages,
                              const size_t *key_package_lens, size_t n, uint64_t now,
                              uint64_t not_after, struct msv_mls_member **out, uint8_t **welcome,
                              size_t *welcome_len, const char **why)
{
    if (m->reinit) {
        *why = "the group was reinitialized: branch from the new group";
        return MSV_ERR_INVALID;
    }
    return resume(m, MSV_MLS_USAGE_BRANCH, group_id, group_id_len, m->suite, NULL, 0, key_packages,
                  key_package_lens, n, now, not_after, out, welcome, welcome_len, why);
}

msv_err msv_mls_member_reinit(const struct msv_mls_member *m, const uint8_t *const *key_packages,
                              const size_t *key_package_lens, size_t n, uint64_t now,
                              uint64_t not_after, struct msv_mls_member **out, uint8_t **welcome,
                              size_t *welcome_len, const char **why)
{
    if (!m->reinit) {
        *why = "no ReInit was committed in this group";
        return MSV_ERR_INVALID;
    }
    return resume(m, MSV_MLS_USAGE_REINIT, m->reinit_group_id, m->reinit_group_id_len,
                  (enum msv_mls_suite)m->reinit_suite, m->reinit_ext, m->reinit_ext_len,
                  key_packages, key_package_lens, n, now, not_after, out, welcome, welcome_len,
                  why);
}

msv_err msv_mls_member_commit_merge(struct msv_mls_member *m)
{
    struct msv_mls_member *p = m->pending;

    if (p == NULL)
        return MSV_ERR_NOT_FOUND;
    m->pending = NULL;
    msv_mls_member_clear(m);
    memcpy(m, p, sizeof(*m));
    sodium_memzero(p, sizeof(*p));
    free(p);
    (void)msv_mls_member_compact(m);
    return MSV_OK;
}

void msv_mls_member_commit_discard(struct msv_mls_member *m)
{
    msv_mls_member_free(m->pending);
    m->pending = NULL;
}

/* ---- application messages ---- */

msv_err msv_mls_member_protect(struct msv_mls_member *m, const uint8_t *data, size_t len,
                               uint8_t **out, size_t *out_len)
{
    struct msv_mls_epoch ep;
    struct msv_mls_content c;
    uint8_t root[MSV_MLS_NH], guard[4];
    uint32_t generation = 0;
    msv_err err;

    if (!m->can_send || m->reinit)
        return MSV_ERR_INVALID;
    err = msv_mls_member_epoch(m, root, &ep);
    if (err == MSV_OK)
        err = msv_mls_secret_state_next(&m->st, m->me, MSV_MLS_RATCHET_APPLICATION, &generation);
    if (err != MSV_OK)
        return err;
    ep.content_key = msv_mls_member_content_key;
    ep.content_key_ctx = m;
    memset(&c, 0, sizeof(c));
    c.leaf_index = m->me;
    c.content_type = MSV_MLS_CONTENT_APPLICATION;
    c.body = data;
    c.body_len = len;
    randombytes_buf(guard, sizeof(guard));
    err = msv_mls_private_protect(&ep, &c, m->sig_seed, generation, guard, 0, out, out_len);
    /* the key is used: erased whether or not the message went out */
    if (msv_mls_secret_state_consume(&m->st, m->me, MSV_MLS_RATCHET_APPLICATION, generation) !=
            MSV_OK &&
        err == MSV_OK) {
        free(*out);
        *out = NULL;
        err = MSV_ERR_CRYPTO;
    }
    return err;
}

msv_err msv_mls_member_unprotect(struct msv_mls_member *m, const uint8_t *msg, size_t len,
                                 uint8_t **data, size_t *data_len, uint32_t *sender)
{
    struct msv_mls_epoch ep;
    struct msv_mls_content c;
    uint8_t root[MSV_MLS_NH], *plain = NULL, *copy = NULL;
    size_t plain_len = 0;
    uint32_t generation = 0;
    msv_err err = msv_mls_member_epoch(m, root, &ep);

    ep.content_key = msv_mls_member_content_key;
    ep.content_key_ctx = m;
    if (err == MSV_OK)
        err = msv_mls_private_unprotect(&ep, msg, len, &c, &plain, &plain_len, &generation);
    if (err == MSV_OK && (c.content_type != MSV_MLS_CONTENT_APPLICATION || c.leaf_index == m->me))
        err = MSV_ERR_AUTH;
    if (err == MSV_OK &&
        msv_mls_secret_state_consume(&m->st, c.leaf_index, MSV_MLS_RATCHET_APPLICATION,
                                     generation) != MSV_OK)
        err = MSV_ERR_AUTH;
    if (err == MSV_OK && (copy = malloc(c.body_len + 1)) == NULL)
        err = MSV_ERR_NOMEM;
    if (err == MSV_OK) {
        memcpy(copy, c.body, c.body_len);
        *data = copy;
        *data_len = c.body_len;
        *sender = c.leaf_index;
    }
    msv_secret_free(plain, plain_len + 1);
    return err;
}

/* ---- external commits (12.4.3.2) ---- */

void msv_mls_member_accept_external(struct msv_mls_member *m, int accept)
{
    m->accept_external = accept != 0;
}

msv_err msv_mls_member_group_info(struct msv_mls_member *m, uint8_t **out, size_t *out_len)
{
    struct msv_buf w;
    uint8_t *gi = NULL;
    size_t gi_len = 0;
    msv_err err;

    if (!m->can_send)
        return MSV_ERR_INVALID;
    err = group_info(m, m->tag, &gi, &gi_len);
    if (err == MSV_OK) {
        /* MLSMessage: version mls10, wire_format mls_group_info (4) */
        msv_buf_init(&w, MSV_MLS_MESSAGE_MAX);
        (void)msv_buf_put_u16be(&w, 1);
        (void)msv_buf_put_u16be(&w, 4);
        (void)msv_buf_put(&w, gi, gi_len);
        err = msv_buf_finish(&w, out, out_len);
    }
    free(gi);
    return err;
}

/* The GroupInfo's signature (GroupInfoTBS) by the key of its signer's leaf. */
static msv_err check_group_info(const struct msv_mls_member *m, const uint8_t *gi, size_t len,
                                uint32_t signer)
{
    struct msv_reader r;
    const uint8_t *p, *sig;
    size_t n, tbs_len, sig_len;
    uint32_t s;

    msv_reader_init(&r, gi, len);
    if (msv_mls_skip_group_context(&r) != MSV_OK || msv_mls_get_vec(&r, &p, &n) != MSV_OK ||
        msv_mls_get_vec(&r, &p, &n) != MSV_OK || msv_reader_u32be(&r, &s) != MSV_OK)
        return MSV_ERR_AUTH;
    tbs_len = r.off;
    if (msv_mls_get_vec(&r, &sig, &sig_len) != MSV_OK || !msv_mls_reader_is_done(&r) ||
        signer >= m->tree.n_leaves || m->tree.nodes[2 * signer].type != 1)
        return MSV_ERR_AUTH;
    return msv_mls_verify_label(m->tree.nodes[2 * signer].leaf.signature_key,
                                m->tree.nodes[2 * signer].leaf.signature_key_len, "GroupInfoTBS",
                                gi, tbs_len, sig, sig_len);
}

/* The external_pub extension of a GroupInfo. */
static msv_err external_pub(const uint8_t *gi, size_t len, uint8_t pk[32])
{
    struct msv_reader r, ext;
    const uint8_t *p;
    size_t n;

    msv_reader_init(&r, gi, len);
    if (msv_mls_skip_group_context(&r) != MSV_OK || msv_mls_get_sub(&r, &ext) != MSV_OK)
        return MSV_ERR_PARSE;
    while (!msv_mls_reader_is_done(&ext)) {
        uint16_t type;
        struct msv_reader data;

        if (msv_reader_u16be(&ext, &type) != MSV_OK || msv_mls_get_sub(&ext, &data) != MSV_OK)
            return MSV_ERR_PARSE;
        if (type != 4)
            continue;
        if (msv_mls_get_vec(&data, &p, &n) != MSV_OK || n != 32 || !msv_mls_reader_is_done(&data))
            return MSV_ERR_PARSE;
        memcpy(pk, p, 32);
        return MSV_OK;
    }
    return MSV_ERR_NOT_FOUND;
}

/* The group as a GroupInfo MLSMessage shows it: its tree checked, its signature, its context. */
static msv_err read_group_info(struct msv_mls_member *m, const uint8_t *msg, size_t len)
{
    struct msv_mls_group_info info;
    const uint8_t *gi = NULL, *tag;
    uint8_t root[MSV_MLS_NH];
    size_t tag_len;
    msv_err err;

    if (len < 4 || msg[0] != 0 || msg[1] != 1 || msg[2] != 0 || msg[3] != 4)
        return MSV_ERR_PARSE;
    err = msv_mls_member_hold(m, msg + 4, len - 4, &gi);
    if (err == MSV_OK)
        err = msv_mls_group_info_read(gi, len - 4, &info);
    if (err == MSV_OK && (info.group_id_len > MSV_MLS_GROUP_ID_MAX || info.ratchet_tree == NULL))
        err = MSV_ERR_UNSUPPORTED;
    if (err == MSV_OK) {
        memcpy(m->group_id, info.group_id, info.group_id_len);
        m->group_id_len = info.group_id_len;
        err = msv_mls_tree_read(info.ratchet_tree, info.ratchet_tree_len, &m->tree);
    }
    if (err == MSV_OK)
        err = msv_mls_tree_hash(&m->tree, msv_mls_tree_root(m->tree.n_leaves), root);
    if (err == MSV_OK &&
        (info.tree_hash_len != MSV_MLS_NH || memcmp(info.tree_hash, root, MSV_MLS_NH) != 0))
        err = MSV_ERR_AUTH;
    if (err == MSV_OK)
        err = msv_mls_tree_verify(&m->tree, info.group_id, info.group_id_len);
    if (err == MSV_OK)
        err = check_group_info(m, gi, len - 4, info.signer) == MSV_OK ? MSV_OK : MSV_ERR_AUTH;
    if (err == MSV_OK)
        err = msv_mls_member_read_context(m, gi, len - 4, &tag, &tag_len);
    if (err == MSV_OK)
        err = msv_mls_member_next_interim(m->cth, tag, tag_len, m->interim);
    return err;
}

/* Our leaf added where an Add would put it, and the ExternalInit: kem_output to external_pub,
 * whose export is the init secret (8.3). The proposal list goes to *props (held by p). */
static msv_err external_start(struct msv_mls_member *p, const uint8_t *gi, size_t gi_len,
                              struct commit_state *cs, const uint8_t **props, size_t *props_len)
{
    struct msv_mls_hpke_ctx ctx;
    struct msv_mls_leaf_spec spec;
    struct msv_mls_leaf leaf;
    struct msv_buf w;
    uint8_t pk[32], kem[32], sk[32], *list = NULL;
    size_t len = 0, mark;
    msv_err err = external_pub(gi, gi_len, pk);

    memset(&ctx, 0, sizeof(ctx));
    if (err == MSV_OK)
        err = msv_mls_hpke_setup_s(p->suite, pk, NULL, 0, NULL, kem, &ctx);
    if (err == MSV_OK)
        err = msv_mls_external_init_secret(p->suite, &ctx, p->s.init);
    msv_mls_hpke_ctx_wipe(&ctx);
    /* a stand-in leaf until the path makes ours */
    if (err == MSV_OK)
        err = fresh_key(sk, pk, &spec, 3);
    sodium_memzero(sk, sizeof(sk));
    if (err == MSV_OK)
        err = own_leaf(p, &spec, &leaf);
    if (err == MSV_OK)
        err = msv_mls_tree_add(&p->tree, &leaf, &p->me);
    if (err == MSV_OK) {
        msv_buf_init(&w, 128);
        mark = msv_mls_vec_begin(&w);
        (void)msv_buf_put_u8(&w, 1);
        (void)msv_buf_put_u16be(&w, 6);
        msv_mls_put_vec(&w, kem, sizeof(kem));
        msv_mls_vec_end(&w, mark);
        err = msv_buf_finish(&w, &list, &len);
    }
    if (err == MSV_OK)
        err = msv_mls_member_hold(p, list, len, props);
    if (err == MSV_OK) {
        struct msv_reader r, l;

        *props_len = len;
        msv_reader_init(&r, *props, len);
        err = msv_mls_get_sub(&r, &l);
        if (err == MSV_OK)
            err = msv_mls_member_commit_proposals(&l, NULL, 0, p->me, cs);
    }
    free(list);
    return err;
}

msv_err msv_mls_member_join_external(enum msv_mls_suite suite, const uint8_t *group_info,
                                     size_t group_info_len, const uint8_t sig_seed[32],
                                     const uint8_t *identity, size_t identity_len, uint8_t **commit,
                                     size_t *commit_len, struct msv_mls_member **out)
{
    struct msv_mls_member *old = calloc(1, sizeof(*old)), *p = NULL;
    struct commit_state *cs = calloc(1, sizeof(*cs));
    struct path_made pm;
    struct msv_buf w;
    const uint8_t *props = NULL, *path = NULL;
    uint8_t tag[MSV_MLS_NH], *body = NULL, *msg = NULL;
    size_t props_len = 0, path_len = 0, body_len = 0, msg_len = 0;
    msv_err err = MSV_OK;

    memset(&pm, 0, sizeof(pm));
    if (old == NULL || cs == NULL || (old->held = calloc(HELD_MAX, sizeof(uint8_t *))) == NULL)
        err = MSV_ERR_NOMEM;
    if (err == MSV_OK &&
        (identity_len > MSV_MLS_IDENTITY_MAX || !msv_mls_suite_is_supported((uint16_t)suite)))
        err = MSV_ERR_INVALID;
    if (err == MSV_OK) {
        old->suite = suite;
        memcpy(old->sig_seed, sig_seed, 32);
        memcpy(old->identity, identity, identity_len);
        old->identity_len = identity_len;
        old->can_send = 1;
        err = read_group_info(old, group_info, group_info_len);
    }
    if (err == MSV_OK)
        err = clone_member(old, &p);
    if (err == MSV_OK)
        err = external_start(p, group_info + 4, group_info_len - 4, cs, &props, &props_len);
    if (err == MSV_OK)
        err = msv_mls_member_apply_proposals(p, cs);
    if (err == MSV_OK)
        err = make_path(p, cs, &pm, &path, &path_len);
    if (err == MSV_OK) {
        msv_buf_init(&w, MSV_MLS_MESSAGE_MAX);
        (void)msv_buf_put(&w, props, props_len);
        (void)msv_buf_put_u8(&w, 1);
        (void)msv_buf_put(&w, path, path_len);
        err = msv_buf_finish(&w, &body, &body_len);
    }
    if (err == MSV_OK)
        err = frame_commit(old, p, cs, &pm, body, body_len, 0, MSV_MLS_SENDER_NEW_MEMBER_COMMIT,
                           &msg, &msg_len, tag);
    if (err == MSV_OK) {
        (void)msv_mls_member_compact(p);
        sodium_memzero(p->s.joiner, MSV_MLS_NH);
        *commit = msg;
        *commit_len = msg_len;
        *out = p;
        p = NULL;
        msg = NULL;
    }
    msv_mls_member_free(p);
    msv_mls_member_free(old);
    path_made_wipe(&pm);
    if (cs != NULL)
        sodium_memzero(cs, sizeof(*cs));
    free(cs);
    free(body);
    free(msg);
    return err;
}
