/*
 * A member's whole state, saved and loaded (docs/crypto.md, "MLS", "The
 * state file"), in the presentation language of RFC 9420 2.1:
 *
 *   MemberState = opaque magic[6] ("MSVMLS") || uint16 version (1 or 2) ||
 *     GroupContext group_context (8.1) || opaque interim_transcript_hash<V> ||
 *     opaque confirmation_tag<V> || optional<Node> ratchet_tree<V> (12.4.3.3) ||
 *     uint32 own_leaf || NodeKey private_keys<V> ||
 *     optional<opaque signature_seed[32]> || optional<opaque update_key[32]> ||
 *     uint8 accept_external || opaque epoch_secrets[8][32] ||
 *     ResumptionPsk resumption_psks<V> || NodeSecret node_secrets<V> ||
 *     LeafRatchets ratchets<V> || SkippedKey skipped_keys<V> ||
 *     [version 2 only: ReInit reinit (12.1.5)]
 *   NodeKey = uint32 node || opaque hpke_private_key[32]
 *   ResumptionPsk = uint64 epoch || opaque psk[32]
 *   NodeSecret = uint32 node || opaque secret[32]
 *   LeafRatchets = uint32 leaf || (uint32 generation || opaque secret[32])[2]
 *   SkippedKey = uint32 leaf || uint8 ratchet || uint32 generation ||
 *                opaque key[Nk] || opaque nonce[12]
 *
 * Version 2 is a group closed by a ReInit it committed, whose parameters follow; a group
 * without one is written as version 1.
 * The epoch secrets are sender_data, exporter, external, confirmation_key,
 * membership_key, resumption_psk, epoch_authenticator and init, in that
 * order. The secret tree is written as 9.2 keeps it: the node secrets not yet
 * derived from, the ratchets at their next generation and the keys kept for
 * generations skipped, so that nothing used or erased comes back with a load.
 * A load checks everything it can: lengths, the end, the tree's hash against
 * the GroupContext's, the tree as a joiner checks it, each private key
 * against its node's public key, the signature seed against our leaf, and
 * that every leaf of the secret tree is reached by exactly one secret.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <sodium.h>

#include "missive/util.h"
#include "mls/member.h"
#include "mls/member_int.h"

static const uint8_t magic[6] = {'M', 'S', 'V', 'M', 'L', 'S'};

/* The epoch secrets a member keeps, in the order of the file. */
static uint8_t *secret_at(struct msv_mls_epoch_secrets *s, size_t i)
{
    uint8_t *list[] = {s->sender_data,
                       s->exporter,
                       s->external,
                       s->confirmation_key,
                       s->membership_key,
                       s->resumption_psk,
                       s->epoch_authenticator,
                       s->init};

    return list[i];
}

#define EPOCH_SECRETS 8

/* ---- saving ---- */

/* 1 if node x is our leaf or one of its ancestors. */
static int on_our_path(uint32_t x, uint32_t leaf)
{
    uint32_t span = (UINT32_C(1) << msv_mls_tree_level(x)) - 1;

    return 2 * leaf >= x - span && 2 * leaf <= x + span;
}

/* The public key of a node of t, or NULL for a blank one. */
static const uint8_t *node_public(const struct msv_mls_tree *t, uint32_t x, size_t *len)
{
    const struct msv_mls_node *n;

    if (x >= t->width || t->nodes[x].type == 0)
        return NULL;
    n = &t->nodes[x];
    *len = n->type == 1 ? n->leaf.encryption_key_len : n->encryption_key_len;
    return n->type == 1 ? n->leaf.encryption_key : n->encryption_key;
}

/* 1 if sk is the private key of node x's public key. */
static int key_matches(const struct msv_mls_tree *t, uint32_t x, const uint8_t sk[32])
{
    uint8_t pk[32];
    size_t len = 0;
    const uint8_t *want = node_public(t, x, &len);
    int ok = want != NULL && len == 32 && crypto_scalarmult_base(pk, sk) == 0 &&
             msv_equal_ct(pk, want, 32);

    sodium_memzero(pk, sizeof(pk));
    return ok;
}

/* Our private keys that still open something: those of nodes blanked or replaced since are
 * left out (they could only weaken forward secrecy). */
static void put_keys(struct msv_buf *w, const struct msv_mls_member *m)
{
    size_t mark = msv_mls_vec_begin(w);

    for (size_t i = 0; i < m->n_keys; i++) {
        if (!on_our_path(m->keys[i].node, m->me) ||
            !key_matches(&m->tree, m->keys[i].node, m->keys[i].sk))
            continue;
        (void)msv_buf_put_u32be(w, m->keys[i].node);
        (void)msv_buf_put(w, m->keys[i].sk, 32);
    }
    msv_mls_vec_end(w, mark);
}

static void put_optional_key(struct msv_buf *w, int present, const uint8_t key[32])
{
    (void)msv_buf_put_u8(w, present ? 1 : 0);
    if (present)
        (void)msv_buf_put(w, key, 32);
}

static void put_secret_tree(struct msv_buf *w, const struct msv_mls_secret_state *st)
{
    uint32_t width = msv_mls_tree_width(st->n_leaves);
    size_t nk = msv_mls_suite_nk(st->suite), mark = msv_mls_vec_begin(w);

    for (uint32_t x = 0; x < width; x++) {
        if (!st->has[x])
            continue;
        (void)msv_buf_put_u32be(w, x);
        (void)msv_buf_put(w, st->node[x], MSV_MLS_NH);
    }
    msv_mls_vec_end(w, mark);
    mark = msv_mls_vec_begin(w);
    for (uint32_t leaf = 0; leaf < st->n_leaves; leaf++) {
        const struct msv_mls_ratchet_state *r = &st->ratchet[2 * leaf];

        if (!r[0].live)
            continue;
        (void)msv_buf_put_u32be(w, leaf);
        for (int k = 0; k < 2; k++) {
            (void)msv_buf_put_u32be(w, r[k].generation);
            (void)msv_buf_put(w, r[k].secret, MSV_MLS_NH);
        }
    }
    msv_mls_vec_end(w, mark);
    mark = msv_mls_vec_begin(w);
    for (size_t i = 0; i < st->n_skipped; i++) {
        const struct msv_mls_skipped_key *k = &st->skipped[i];

        (void)msv_buf_put_u32be(w, k->leaf);
        (void)msv_buf_put_u8(w, k->which);
        (void)msv_buf_put_u32be(w, k->generation);
        (void)msv_buf_put(w, k->key, nk);
        (void)msv_buf_put(w, k->nonce, MSV_MLS_NN);
    }
    msv_mls_vec_end(w, mark);
}

msv_err msv_mls_member_save(const struct msv_mls_member *m, uint8_t **out, size_t *out_len,
                            const char **why)
{
    struct msv_buf w;
    struct msv_mls_epoch_secrets s = m->s;
    uint8_t *gc = NULL, *tree = NULL;
    size_t gc_len = 0, tree_len = 0, mark;
    const char *unused;
    msv_err err;

    if (why == NULL)
        why = &unused;
    if (m->pending != NULL) {
        *why = "a commit of ours waits to be merged or discarded";
        return MSV_ERR_INVALID;
    }
    err = msv_mls_member_group_context(m, m->epoch, m->cth, m->cth_len, &gc, &gc_len);
    if (err == MSV_OK)
        err = msv_mls_tree_write(&m->tree, &tree, &tree_len);
    msv_buf_init(&w, MSV_MLS_STATE_MAX);
    (void)msv_buf_put(&w, magic, sizeof(magic));
    (void)msv_buf_put_u16be(&w, m->reinit ? MSV_MLS_STATE_VERSION_REINIT : MSV_MLS_STATE_VERSION);
    (void)msv_buf_put(&w, gc, gc_len);
    msv_mls_put_vec(&w, m->interim, MSV_MLS_NH);
    msv_mls_put_vec(&w, m->tag, MSV_MLS_NH);
    (void)msv_buf_put(&w, tree, tree_len); /* already a vector */
    (void)msv_buf_put_u32be(&w, m->me);
    put_keys(&w, m);
    put_optional_key(&w, m->can_send, m->sig_seed);
    put_optional_key(&w, m->has_update, m->update_sk);
    (void)msv_buf_put_u8(&w, m->accept_external ? 1 : 0);
    for (size_t i = 0; i < EPOCH_SECRETS; i++)
        (void)msv_buf_put(&w, secret_at(&s, i), MSV_MLS_NH);
    mark = msv_mls_vec_begin(&w);
    for (size_t i = 0; i < m->n_resumption; i++) {
        msv_mls_put_u64(&w, m->resumption[i].epoch);
        (void)msv_buf_put(&w, m->resumption[i].psk, MSV_MLS_NH);
    }
    msv_mls_vec_end(&w, mark);
    put_secret_tree(&w, &m->st);
    if (m->reinit) {
        struct mls_reinit ri = {m->reinit_group_id, m->reinit_ext, m->reinit_group_id_len,
                                m->reinit_ext_len, m->reinit_suite};

        msv_mls_reinit_put(&w, &ri);
    }
    if (err == MSV_OK)
        err = msv_buf_finish(&w, out, out_len);
    else
        msv_buf_clear(&w);
    if (err != MSV_OK)
        *why = "the state does not fit its format";
    sodium_memzero(&s, sizeof(s));
    free(gc);
    free(tree);
    return err;
}

/* ---- loading ---- */

/* Where a load failed, for *why. */
#define REFUSE(text)          \
    do {                      \
        *why = (text);        \
        return MSV_ERR_PARSE; \
    } while (0)

static int get_fixed(struct msv_reader *r, uint8_t *out, size_t n)
{
    const uint8_t *p;

    if (msv_reader_bytes(r, n, &p) != MSV_OK)
        return 0;
    memcpy(out, p, n);
    return 1;
}

/* A vector of exactly n bytes into out. */
static int get_exact(struct msv_reader *r, uint8_t *out, size_t n)
{
    const uint8_t *p;
    size_t len;

    if (msv_mls_get_vec(r, &p, &len) != MSV_OK || len != n)
        return 0;
    memcpy(out, p, n);
    return 1;
}

/* An Extension list: type and data of each, nothing left over. */
int msv_mls_extensions_well_formed(const uint8_t *p, size_t n)
{
    struct msv_reader r, data;
    uint16_t type;

    msv_reader_init(&r, p, n);
    while (!msv_mls_reader_is_done(&r)) {
        if (msv_reader_u16be(&r, &type) != MSV_OK || msv_mls_get_sub(&r, &data) != MSV_OK)
            return 0;
    }
    return 1;
}

/* GroupContext (8.1): version, suite, group_id, epoch, tree_hash (to tree_hash),
 * confirmed_transcript_hash, extensions. */
static msv_err read_context(struct msv_reader *r, struct msv_mls_member *m,
                            uint8_t tree_hash[MSV_MLS_NH], const char **why)
{
    const uint8_t *id, *cth, *ext;
    size_t id_len, cth_len, ext_len;
    uint16_t version, suite;

    if (msv_reader_u16be(r, &version) != MSV_OK || msv_reader_u16be(r, &suite) != MSV_OK)
        REFUSE("truncated group context");
    if (version != 1 || !msv_mls_suite_is_supported(suite)) {
        *why = "protocol version or cipher suite not supported";
        return MSV_ERR_UNSUPPORTED;
    }
    if (msv_mls_get_vec(r, &id, &id_len) != MSV_OK || id_len > MSV_MLS_GROUP_ID_MAX ||
        msv_mls_get_u64(r, &m->epoch) != MSV_OK || !get_exact(r, tree_hash, MSV_MLS_NH) ||
        msv_mls_get_vec(r, &cth, &cth_len) != MSV_OK ||
        msv_mls_get_vec(r, &ext, &ext_len) != MSV_OK)
        REFUSE("bad group context");
    /* the transcript hash is empty only at epoch 0 of a group created here (11) */
    if (!(cth_len == MSV_MLS_NH || (cth_len == 0 && m->epoch == 0)))
        REFUSE("bad confirmed transcript hash");
    if (!msv_mls_extensions_well_formed(ext, ext_len))
        REFUSE("bad group context extensions");
    m->suite = (enum msv_mls_suite)suite;
    memcpy(m->group_id, id, id_len);
    m->group_id_len = id_len;
    memcpy(m->cth, cth, cth_len);
    m->cth_len = cth_len;
    return msv_mls_member_set_extensions(m, ext, ext_len);
}

/* The ratchet tree: read from a copy the member holds, its hash the GroupContext's, valid as a
 * joiner checks it (7.9.2, 7.3), our leaf in it. */
static msv_err read_tree(struct msv_reader *r, struct msv_mls_member *m,
                         const uint8_t tree_hash[MSV_MLS_NH], const char **why)
{
    const uint8_t *p, *held = NULL;
    uint8_t root[MSV_MLS_NH];
    size_t start = r->off, n;
    msv_err err;

    if (msv_mls_get_vec(r, &p, &n) != MSV_OK)
        REFUSE("truncated ratchet tree");
    err = msv_mls_member_hold(m, r->data + start, r->off - start, &held);
    if (err != MSV_OK)
        return err;
    if (msv_mls_tree_read(held, r->off - start, &m->tree) != MSV_OK)
        REFUSE("bad ratchet tree");
    if (msv_mls_tree_hash(&m->tree, msv_mls_tree_root(m->tree.n_leaves), root) != MSV_OK ||
        !msv_equal_ct(root, tree_hash, MSV_MLS_NH))
        REFUSE("the ratchet tree's hash is not the group context's");
    if (msv_mls_tree_verify(&m->tree, m->group_id, m->group_id_len) != MSV_OK)
        REFUSE("the ratchet tree does not validate");
    memcpy(m->tree_hash, root, MSV_MLS_NH);
    m->has_tree_hash = 1;
    if (msv_reader_u32be(r, &m->me) != MSV_OK || m->me >= m->tree.n_leaves ||
        m->tree.nodes[2 * m->me].type != 1)
        REFUSE("our leaf is not in the tree");
    return MSV_OK;
}

/* Our private keys: each for a node of our path, once, matching its public key; our leaf's
 * among them. */
static msv_err read_keys(struct msv_reader *r, struct msv_mls_member *m, const char **why)
{
    struct msv_reader list;
    int has_leaf = 0;

    if (msv_mls_get_sub(r, &list) != MSV_OK)
        REFUSE("truncated private keys");
    while (!msv_mls_reader_is_done(&list)) {
        struct msv_mls_node_key *k = &m->keys[m->n_keys];

        if (m->n_keys == MSV_MLS_MEMBER_KEYS || msv_reader_u32be(&list, &k->node) != MSV_OK ||
            !get_fixed(&list, k->sk, 32))
            REFUSE("bad private keys");
        for (size_t i = 0; i < m->n_keys; i++) {
            if (m->keys[i].node == k->node)
                REFUSE("a private key given twice");
        }
        if (k->node >= m->tree.width || !on_our_path(k->node, m->me) ||
            !key_matches(&m->tree, k->node, k->sk))
            REFUSE("a private key does not match its node's public key");
        has_leaf |= k->node == 2 * m->me;
        m->n_keys++;
    }
    if (!has_leaf)
        REFUSE("no private key for our leaf");
    return MSV_OK;
}

static msv_err read_optional_key(struct msv_reader *r, int *present, uint8_t key[32],
                                 const char **why)
{
    if (msv_mls_get_optional(r, present) != MSV_OK || (*present && !get_fixed(r, key, 32)))
        REFUSE("bad optional key");
    return MSV_OK;
}

/* The signature seed (its key our leaf's, set as msv_mls_member_set_signer() does), the update
 * key, the external commit flag. */
static msv_err read_sending(struct msv_reader *r, struct msv_mls_member *m, const char **why)
{
    uint8_t seed[32], flag;
    int has_seed = 0;
    msv_err err = read_optional_key(r, &has_seed, seed, why);

    if (err == MSV_OK)
        err = read_optional_key(r, &m->has_update, m->update_sk, why);
    if (err == MSV_OK && (msv_reader_u8(r, &flag) != MSV_OK || flag > 1)) {
        *why = "bad external commit flag";
        err = MSV_ERR_PARSE;
    }
    if (err == MSV_OK)
        m->accept_external = flag;
    if (err == MSV_OK && has_seed && msv_mls_member_set_signer(m, seed) != MSV_OK) {
        *why = "the signature key is not our leaf's";
        err = MSV_ERR_PARSE;
    }
    sodium_memzero(seed, sizeof(seed));
    return err;
}

static msv_err read_secrets(struct msv_reader *r, struct msv_mls_member *m, const char **why)
{
    struct msv_reader list;

    for (size_t i = 0; i < EPOCH_SECRETS; i++) {
        if (!get_fixed(r, secret_at(&m->s, i), MSV_MLS_NH))
            REFUSE("truncated epoch secrets");
    }
    if (msv_mls_get_sub(r, &list) != MSV_OK)
        REFUSE("truncated resumption PSKs");
    while (!msv_mls_reader_is_done(&list)) {
        size_t n = m->n_resumption;

        if (n == MSV_MLS_RESUMPTION_KEPT ||
            msv_mls_get_u64(&list, &m->resumption[n].epoch) != MSV_OK ||
            !get_fixed(&list, m->resumption[n].psk, MSV_MLS_NH))
            REFUSE("bad resumption PSKs");
        if (n > 0 && m->resumption[n].epoch <= m->resumption[n - 1].epoch)
            REFUSE("resumption PSKs out of order");
        m->n_resumption++;
    }
    /* of past epochs and this one (a group created here has none for its epoch 0) */
    if (m->n_resumption > 0) {
        const uint8_t *last = m->resumption[m->n_resumption - 1].psk;
        uint64_t epoch = m->resumption[m->n_resumption - 1].epoch;

        if (epoch > m->epoch ||
            (epoch == m->epoch && !msv_equal_ct(last, m->s.resumption_psk, MSV_MLS_NH)))
            REFUSE("a resumption PSK of an epoch not yet reached");
    }
    return MSV_OK;
}

static msv_err read_node_secrets(struct msv_reader *r, struct msv_mls_secret_state *st,
                                 const char **why)
{
    struct msv_reader list;
    uint32_t width = msv_mls_tree_width(st->n_leaves), x, last = 0;
    int first = 1;

    memset(st->has, 0, width);
    if (msv_mls_get_sub(r, &list) != MSV_OK)
        REFUSE("truncated secret tree");
    while (!msv_mls_reader_is_done(&list)) {
        if (msv_reader_u32be(&list, &x) != MSV_OK || x >= width || (!first && x <= last) ||
            !get_fixed(&list, st->node[x], MSV_MLS_NH))
            REFUSE("bad secret tree node");
        st->has[x] = 1;
        last = x;
        first = 0;
    }
    return MSV_OK;
}

static msv_err read_ratchets(struct msv_reader *r, struct msv_mls_secret_state *st,
                             const char **why)
{
    struct msv_reader list;
    uint32_t leaf, last = 0;
    int first = 1;

    if (msv_mls_get_sub(r, &list) != MSV_OK)
        REFUSE("truncated ratchets");
    while (!msv_mls_reader_is_done(&list)) {
        struct msv_mls_ratchet_state *rs;

        if (msv_reader_u32be(&list, &leaf) != MSV_OK || leaf >= st->n_leaves ||
            (!first && leaf <= last))
            REFUSE("bad ratchet");
        rs = &st->ratchet[2 * leaf];
        for (int k = 0; k < 2; k++) {
            if (msv_reader_u32be(&list, &rs[k].generation) != MSV_OK ||
                rs[k].generation > MSV_MLS_GENERATION_MAX + 1 ||
                !get_fixed(&list, rs[k].secret, MSV_MLS_NH))
                REFUSE("bad ratchet");
            rs[k].live = 1;
        }
        last = leaf;
        first = 0;
    }
    return MSV_OK;
}

/* 9.2 as secret_state.c keeps it: each leaf's secret comes from exactly one place, a node on
 * its way from the root or its own ratchets. */
static msv_err check_coverage(const struct msv_mls_secret_state *st, const char **why)
{
    for (uint32_t leaf = 0; leaf < st->n_leaves; leaf++) {
        unsigned sources = st->ratchet[2 * leaf].live;

        for (uint32_t x = 2 * leaf; x != MSV_MLS_NONE; x = msv_mls_tree_parent(x, st->n_leaves))
            sources += st->has[x];
        if (sources != 1)
            REFUSE("the secret tree does not reach each leaf once");
    }
    return MSV_OK;
}

static msv_err read_skipped(struct msv_reader *r, struct msv_mls_secret_state *st, const char **why)
{
    struct msv_reader list;
    size_t nk = msv_mls_suite_nk(st->suite);

    if (msv_mls_get_sub(r, &list) != MSV_OK)
        REFUSE("truncated skipped keys");
    while (!msv_mls_reader_is_done(&list)) {
        struct msv_mls_skipped_key *k = &st->skipped[st->n_skipped];
        const struct msv_mls_ratchet_state *rs;

        if (st->n_skipped == MSV_MLS_SKIPPED_MAX || msv_reader_u32be(&list, &k->leaf) != MSV_OK ||
            msv_reader_u8(&list, &k->which) != MSV_OK ||
            msv_reader_u32be(&list, &k->generation) != MSV_OK || !get_fixed(&list, k->key, nk) ||
            !get_fixed(&list, k->nonce, MSV_MLS_NN) || k->leaf >= st->n_leaves || k->which > 1)
            REFUSE("bad skipped key");
        rs = &st->ratchet[2 * k->leaf + k->which];
        if (!rs->live || k->generation >= rs->generation)
            REFUSE("a skipped key its ratchet has not passed");
        for (size_t i = 0; i < st->n_skipped; i++) {
            if (st->skipped[i].leaf == k->leaf && st->skipped[i].which == k->which &&
                st->skipped[i].generation == k->generation)
                REFUSE("a skipped key given twice");
        }
        st->n_skipped++;
    }
    return MSV_OK;
}

static msv_err read_secret_tree(struct msv_reader *r, struct msv_mls_member *m, const char **why)
{
    static const uint8_t zero[MSV_MLS_NH];
    msv_err err = msv_mls_secret_state_init(&m->st, m->suite, zero, m->tree.n_leaves);

    if (err == MSV_OK)
        err = read_node_secrets(r, &m->st, why);
    if (err == MSV_OK)
        err = read_ratchets(r, &m->st, why);
    if (err == MSV_OK)
        err = check_coverage(&m->st, why);
    if (err == MSV_OK)
        err = read_skipped(r, &m->st, why);
    return err;
}

/*
 * The transcript as the epoch's secrets make it (8.2): the confirmation tag
 * MAC(confirmation_key, confirmed transcript hash) (empty at a created
 * group's epoch 0), and interim = Hash(confirmed || confirmation_tag<V>).
 */
static msv_err check_transcript(const struct msv_mls_member *m, const char **why)
{
    uint8_t tag[MSV_MLS_NH], interim[MSV_MLS_NH], *in = NULL;
    size_t in_len = 0;
    struct msv_buf w;
    msv_err err =
        msv_mls_mac(m->s.confirmation_key, MSV_MLS_NH, m->cth_len ? m->cth : NULL, m->cth_len, tag);
    int tag_ok = err == MSV_OK && sodium_memcmp(tag, m->tag, MSV_MLS_NH) == 0;

    msv_buf_init(&w, 4 * MSV_MLS_NH);
    if (m->cth_len > 0)
        (void)msv_buf_put(&w, m->cth, m->cth_len);
    msv_mls_put_vec(&w, m->tag, MSV_MLS_NH);
    if (err == MSV_OK)
        err = msv_buf_finish(&w, &in, &in_len);
    else
        msv_buf_clear(&w);
    if (err == MSV_OK)
        err = msv_mls_hash(in, in_len, interim);
    free(in);
    if (err != MSV_OK)
        return err;
    if (!tag_ok)
        REFUSE("the confirmation tag is not the epoch's over its confirmed transcript hash");
    if (sodium_memcmp(interim, m->interim, MSV_MLS_NH) != 0)
        REFUSE("the interim transcript hash does not follow from the confirmed one and the tag");
    return MSV_OK;
}

/* The ReInit a version-2 state closed its group with: as a commit's is checked. */
static msv_err read_reinit(struct msv_reader *r, struct msv_mls_member *m, const char **why)
{
    struct mls_reinit ri;

    if (msv_mls_reinit_read(r, &ri) != MSV_OK)
        REFUSE("bad ReInit");
    msv_mls_member_close(m, &ri);
    return MSV_OK;
}

static msv_err read_state(struct msv_reader *r, struct msv_mls_member *m, const char **why)
{
    uint8_t head[sizeof(magic)], tree_hash[MSV_MLS_NH];
    uint16_t version;
    msv_err err;

    if (!get_fixed(r, head, sizeof(head)) || memcmp(head, magic, sizeof(magic)) != 0)
        REFUSE("not an MLS state file");
    if (msv_reader_u16be(r, &version) != MSV_OK)
        REFUSE("truncated header");
    if (version != MSV_MLS_STATE_VERSION && version != MSV_MLS_STATE_VERSION_REINIT) {
        *why = "state file version not supported";
        return MSV_ERR_UNSUPPORTED;
    }
    err = read_context(r, m, tree_hash, why);
    if (err == MSV_OK &&
        (!get_exact(r, m->interim, MSV_MLS_NH) || !get_exact(r, m->tag, MSV_MLS_NH))) {
        *why = "bad transcript hash or confirmation tag";
        err = MSV_ERR_PARSE;
    }
    if (err == MSV_OK)
        err = read_tree(r, m, tree_hash, why);
    if (err == MSV_OK)
        err = read_keys(r, m, why);
    if (err == MSV_OK)
        err = read_sending(r, m, why);
    if (err == MSV_OK)
        err = read_secrets(r, m, why);
    if (err == MSV_OK)
        err = check_transcript(m, why);
    if (err == MSV_OK)
        err = read_secret_tree(r, m, why);
    if (err == MSV_OK && version == MSV_MLS_STATE_VERSION_REINIT)
        err = read_reinit(r, m, why);
    if (err == MSV_OK && !msv_mls_reader_is_done(r)) {
        *why = "bytes after the state";
        err = MSV_ERR_PARSE;
    }
    return err;
}

msv_err msv_mls_member_load(const uint8_t *data, size_t len,
                            const struct msv_mls_external_psk *psks, size_t n_psks,
                            struct msv_mls_member **out, const char **why)
{
    struct msv_mls_member *m = calloc(1, sizeof(*m));
    struct msv_reader r;
    const char *reason = "out of memory";
    msv_err err = MSV_ERR_NOMEM;

    if (m != NULL && (m->held = calloc(HELD_MAX, sizeof(uint8_t *))) != NULL) {
        m->psks = psks;
        m->n_psks = n_psks;
        msv_reader_init(&r, data, len);
        err = len > MSV_MLS_STATE_MAX ? MSV_ERR_TOO_BIG : read_state(&r, m, &reason);
        if (err == MSV_ERR_TOO_BIG)
            reason = "larger than a state file can be";
    }
    if (err != MSV_OK) {
        msv_mls_member_free(m);
        if (why != NULL)
            *why = reason;
        return err;
    }
    *out = m;
    return MSV_OK;
}

/* ---- files ---- */

/* The directory part of path, for its fsync after the rename. */
static int open_dir_of(const char *path)
{
    char dir[4096];
    const char *slash = strrchr(path, '/');
    size_t n = slash == NULL ? 1 : (size_t)(slash - path);

    if (slash == NULL)
        return open(".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (n == 0)
        n = 1;
    if (n >= sizeof(dir))
        return -1;
    memcpy(dir, path, n);
    dir[n] = '\0';
    return open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
}

/* The directory of path fsync'd: a rename or link in it made durable. */
static void sync_dir_of(const char *path)
{
    int dir = open_dir_of(path);

    if (dir >= 0) {
        (void)fsync(dir);
        close(dir);
    }
}

/* data written to the open fd, mode 0600, fsync'd; MSV_ERR_IO otherwise. */
static msv_err write_sync(int fd, const uint8_t *data, size_t len)
{
    if (fchmod(fd, 0600) != 0 || msv_write_all(fd, data, len) != MSV_OK || fsync(fd) != 0)
        return MSV_ERR_IO;
    return MSV_OK;
}

/* The same, and fd closed. */
static msv_err write_sync_close(int fd, const uint8_t *data, size_t len)
{
    msv_err err = write_sync(fd, data, len);

    if (close(fd) != 0)
        err = MSV_ERR_IO;
    return err;
}

msv_err msv_mls_state_write_locked(const char *path, const uint8_t *data, size_t len, int *lock_fd)
{
    char tmp[4096];
    int fd;
    msv_err err;

    if ((size_t)snprintf(tmp, sizeof(tmp), "%s.tmp", path) >= sizeof(tmp))
        return MSV_ERR_INVALID;
    /* one fixed name: what a crash left there is cut to nothing here, not left behind */
    fd = open(tmp, O_RDWR | O_CREAT | O_TRUNC | O_NOFOLLOW | O_CLOEXEC, 0600);
    if (fd < 0)
        return MSV_ERR_IO;
    /* locked before it takes the name: no other process has it between the rename and our end */
    err = lock_fd != NULL && flock(fd, LOCK_EX) != 0 ? MSV_ERR_IO : write_sync(fd, data, len);
    if (err == MSV_OK && rename(tmp, path) != 0)
        err = MSV_ERR_IO;
    if (err != MSV_OK) {
        int saved = errno;

        unlink(tmp);
        close(fd);
        errno = saved;
        return err;
    }
    sync_dir_of(path);
    if (lock_fd != NULL)
        *lock_fd = fd;
    else if (close(fd) != 0)
        return MSV_ERR_IO;
    return MSV_OK;
}

msv_err msv_mls_state_write_file(const char *path, const uint8_t *data, size_t len)
{
    return msv_mls_state_write_locked(path, data, len, NULL);
}

msv_err msv_mls_file_staged_name(const char *path, char *tmp, size_t tmp_size)
{
    static const char chars[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    size_t n = strlen(path);

    if (n + 14 > tmp_size)
        return MSV_ERR_INVALID;
    memcpy(tmp, path, n);
    memcpy(tmp + n, ".staged", 7);
    for (size_t i = 0; i < 6; i++)
        tmp[n + 7 + i] = chars[randombytes_uniform(sizeof(chars) - 1)];
    tmp[n + 13] = '\0';
    return MSV_OK;
}

msv_err msv_mls_file_stage(const char *tmp, const uint8_t *data, size_t len)
{
    int fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
    msv_err err;

    if (fd < 0)
        return MSV_ERR_IO;
    err = write_sync_close(fd, data, len);
    if (err != MSV_OK) {
        int saved = errno;

        unlink(tmp);
        errno = saved;
    }
    return err;
}

msv_err msv_mls_file_publish(const char *tmp, const char *path, int replace)
{
    if (replace) {
        if (rename(tmp, path) != 0)
            return MSV_ERR_IO;
    } else {
        if (link(tmp, path) != 0)
            return errno == EEXIST ? MSV_ERR_EXISTS : MSV_ERR_IO;
        (void)unlink(tmp);
    }
    sync_dir_of(path);
    return MSV_OK;
}

void msv_mls_file_wipe(const char *path)
{
    static const uint8_t zeros[4096];
    struct stat st;
    int fd = open(path, O_WRONLY | O_NOFOLLOW | O_CLOEXEC | O_NONBLOCK);

    if (fd >= 0) {
        if (fstat(fd, &st) == 0 && S_ISREG(st.st_mode)) {
            for (off_t done = 0; done < st.st_size;) {
                size_t n = (size_t)(st.st_size - done) < sizeof(zeros) ? (size_t)(st.st_size - done)
                                                                       : sizeof(zeros);

                if (msv_write_all(fd, zeros, n) != MSV_OK)
                    break;
                done += (off_t)n;
            }
            (void)fsync(fd);
        }
        close(fd);
    }
    if (unlink(path) == 0)
        sync_dir_of(path);
}

msv_err msv_mls_member_save_file(const struct msv_mls_member *m, const char *path, const char **why)
{
    uint8_t *bytes = NULL;
    size_t len = 0;
    const char *reason = "";
    msv_err err = msv_mls_member_save(m, &bytes, &len, &reason);

    if (err == MSV_OK) {
        err = msv_mls_state_write_file(path, bytes, len);
        if (err != MSV_OK)
            reason = strerror(errno);
    }
    msv_secret_free(bytes, len);
    if (err != MSV_OK && why != NULL)
        *why = reason;
    return err;
}

msv_err msv_mls_state_read_fd(int fd, size_t max, uint8_t **out, size_t *out_len)
{
    struct stat st;
    uint8_t *buf;
    size_t len = 0;

    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode))
        return MSV_ERR_IO;
    if ((uint64_t)st.st_size > max)
        return MSV_ERR_TOO_BIG;
    buf = malloc((size_t)st.st_size + 1);
    if (buf == NULL)
        return MSV_ERR_NOMEM;
    while (len <= (size_t)st.st_size) {
        ssize_t n = pread(fd, buf + len, (size_t)st.st_size + 1 - len, (off_t)len);

        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0) {
            msv_secret_free(buf, (size_t)st.st_size + 1);
            return MSV_ERR_IO;
        }
        if (n == 0)
            break;
        len += (size_t)n;
    }
    if (len != (size_t)st.st_size) { /* it changed while we read it */
        msv_secret_free(buf, (size_t)st.st_size + 1);
        return MSV_ERR_IO;
    }
    *out = buf;
    *out_len = len;
    return MSV_OK;
}

msv_err msv_mls_member_load_file(const char *path, const struct msv_mls_external_psk *psks,
                                 size_t n_psks, struct msv_mls_member **out, const char **why)
{
    uint8_t *bytes = NULL;
    size_t len = 0;
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK); /* a FIFO is refused, not waited on */
    msv_err err = fd < 0 ? MSV_ERR_IO : msv_mls_state_read_fd(fd, MSV_MLS_STATE_MAX, &bytes, &len);

    if (fd >= 0)
        close(fd);
    if (err != MSV_OK) {
        if (why != NULL)
            *why = err == MSV_ERR_TOO_BIG ? "larger than a state file can be" : strerror(errno);
        return err;
    }
    err = msv_mls_member_load(bytes, len, psks, n_psks, out, why);
    msv_secret_free(bytes, len + 1);
    return err;
}
