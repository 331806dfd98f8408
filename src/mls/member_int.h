/*
 * What member.c (following a group) and group.c (sending to it) share
 * inside the module: the proposals a commit applies and the steps of
 * processing one. Not for use outside src/mls/.
 */
#ifndef MSV_MLS_MEMBER_INT_H
#define MSV_MLS_MEMBER_INT_H

#include "mls/member.h"

#define HELD_MAX 4096
#define PROPOSALS_MAX 256

struct proposal {
    uint8_t ref[MSV_MLS_NH];
    uint16_t type;
    const uint8_t *body; /* after the type */
    size_t body_len;
    uint32_t sender;
};

/* A ReInit's body (12.1.5), pointing into the bytes it was read from. */
struct mls_reinit {
    const uint8_t *id, *ext;
    size_t id_len, ext_len;
    uint16_t suite;
};

struct commit_state {
    struct proposal list[PROPOSALS_MAX]; /* the proposals the commit applies */
    size_t n;
    const uint8_t *external_init; /* an ExternalInit's kem_output */
    size_t external_init_len;
    uint8_t init[MSV_MLS_NH]; /* the init secret it gives, used instead of the epoch's */
    int has_init;
    uint32_t joiners[PROPOSALS_MAX];
    size_t n_joiners;
    struct msv_mls_psk psks[MSV_MLS_WELCOME_PSKS_MAX];
    size_t n_psks;
    int removes_us;           /* a Remove of our own leaf (the commit fails for us) */
    uint32_t removes;         /* the Removes of other leaves it applies */
    struct mls_reinit reinit; /* a ReInit read (has_reinit) */
    int has_reinit;
    /*
     * the first commit of a group branched or reinitialized by us: the PreSharedKeyID of the
     * old group's resumption PSK it names, and that PSK (MSV_MLS_NH bytes)
     */
    const uint8_t *given_id;
    size_t given_id_len;
    const uint8_t *given_psk;
};

/* Whether an Extension list (encoded without its length) reads whole. */
int msv_mls_extensions_well_formed(const uint8_t *p, size_t n);
/*
 * A ReInit read at r: group_id<V> || ProtocolVersion version || CipherSuite cipher_suite ||
 * Extension extensions<V>. MSV_ERR_PARSE if it does not read (its extensions too),
 * MSV_ERR_INVALID for a version below ours, MSV_ERR_UNSUPPORTED for a version we do not speak
 * or a suite we do not have, MSV_ERR_TOO_BIG past MSV_MLS_GROUP_ID_MAX or
 * MSV_MLS_REINIT_EXT_MAX.
 */
MSV_MUST_CHECK msv_err msv_mls_reinit_read(struct msv_reader *r, struct mls_reinit *out);
/* A ReInit of version 1 written to w. */
void msv_mls_reinit_put(struct msv_buf *w, const struct mls_reinit *ri);
/* m closed by the ReInit ri (read by msv_mls_reinit_read()): its parameters kept. */
void msv_mls_member_close(struct msv_mls_member *m, const struct mls_reinit *ri);
/* The identity of a leaf's basic credential (MSV_ERR_UNSUPPORTED for another kind). */
MSV_MUST_CHECK msv_err msv_mls_leaf_identity(const struct msv_mls_leaf *leaf, uint8_t *out,
                                             size_t *out_len);
/*
 * Whether each member of t (a leaf's basic credential identity and signature key) is a member
 * of old, and with all, each of old's one of t's: MSV_ERR_INVALID if not.
 */
MSV_MUST_CHECK msv_err msv_mls_members_match(const struct msv_mls_tree *t,
                                             const struct msv_mls_tree *old, int all);

/* Frees what m holds (secret tree, tree, copies, extensions), not m itself nor m->pending. */
void msv_mls_member_clear(struct msv_mls_member *m);
/* The GroupContext's extensions (encoded, without their length) replaced by a copy of ext. */
MSV_MUST_CHECK msv_err msv_mls_member_set_extensions(struct msv_mls_member *m, const uint8_t *ext,
                                                     size_t len);
/* A copy of bytes the tree will borrow from, kept until the member is freed. */
MSV_MUST_CHECK msv_err msv_mls_member_hold(struct msv_mls_member *m, const uint8_t *p, size_t len,
                                           const uint8_t **out);
/* The content key callback over m's secret tree (ctx is the member). */
msv_err msv_mls_member_content_key(void *ctx, uint32_t leaf, enum msv_mls_ratchet which,
                                   uint32_t generation, uint8_t *key, uint8_t nonce[MSV_MLS_NN]);
/* The epoch, confirmed transcript hash and extensions of a GroupInfo, and its tag. */
MSV_MUST_CHECK msv_err msv_mls_member_read_context(struct msv_mls_member *m, const uint8_t *gi,
                                                   size_t len, const uint8_t **tag,
                                                   size_t *tag_len);
/* interim = Hash(confirmed || confirmation_tag<V>) (8.2) */
MSV_MUST_CHECK msv_err msv_mls_member_next_interim(const uint8_t confirmed[MSV_MLS_NH],
                                                   const uint8_t *tag, size_t tag_len,
                                                   uint8_t out[MSV_MLS_NH]);
/* init_secret = the HPKE context's export of "MLS 1.0 external init secret" (8.3). */
MSV_MUST_CHECK msv_err msv_mls_external_init_secret(enum msv_mls_suite suite,
                                                    const struct msv_mls_hpke_ctx *ctx,
                                                    uint8_t init[MSV_MLS_NH]);
/* The lowest node of path that is an ancestor of leaf, or n. */
size_t msv_mls_member_lowest_above(const uint32_t *path, size_t n, uint32_t leaf);
/* The current epoch as framing wants it; root receives the tree hash it points to. */
MSV_MUST_CHECK msv_err msv_mls_member_epoch(struct msv_mls_member *m, uint8_t root[MSV_MLS_NH],
                                            struct msv_mls_epoch *ep);
/* Proposals received as PublicMessages (held), each with its ProposalRef. */
MSV_MUST_CHECK msv_err msv_mls_member_receive_proposals(struct msv_mls_member *m,
                                                        const struct msv_mls_epoch *ep,
                                                        const uint8_t *const *msgs,
                                                        const size_t *lens, size_t n,
                                                        struct proposal *out);
/*
 * Our own pending Update proposal as we sent it in a PrivateMessage, with its ProposalRef, made
 * again from its key (ours is erased once sent, so we cannot open the message itself).
 * MSV_ERR_NOT_FOUND without one.
 */
MSV_MUST_CHECK msv_err msv_mls_member_own_update(struct msv_mls_member *m,
                                                 const struct msv_mls_epoch *ep,
                                                 struct proposal *out);
/* A commit's ProposalOrRef list into cs. */
MSV_MUST_CHECK msv_err msv_mls_member_commit_proposals(struct msv_reader *list,
                                                       const struct proposal *received,
                                                       size_t n_received, uint32_t committer,
                                                       struct commit_state *cs);
/*
 * Whether a commit of cs's proposals may leave its UpdatePath out (12.4): only when it has at
 * least one proposal and all of them are Add, PreSharedKey or ReInit.
 */
int msv_mls_commit_path_optional(const struct commit_state *cs);
/* Applies cs's proposals to the tree in the order of 12.4.2. */
MSV_MUST_CHECK msv_err msv_mls_member_apply_proposals(struct msv_mls_member *m,
                                                      struct commit_state *cs);
/* The next epoch from a commit's AuthenticatedContent ac, its confirmation tag checked. */
MSV_MUST_CHECK msv_err msv_mls_member_next_epoch(struct msv_mls_member *m, const uint8_t *ac,
                                                 size_t ac_len, const struct msv_mls_content *c,
                                                 const struct commit_state *cs,
                                                 const uint8_t commit_secret[MSV_MLS_NH]);
/* The confirmed transcript hash after a commit whose AuthenticatedContent (its confirmation tag
 * last) is ac (8.2). */
MSV_MUST_CHECK msv_err msv_mls_member_confirmed_hash(const struct msv_mls_member *m,
                                                     const uint8_t *ac, size_t ac_len,
                                                     uint8_t confirmed[MSV_MLS_NH]);
/* The tree written out and read back from one buffer, the other copies freed; on failure the
 * member keeps its copies, which is no harm. */
msv_err msv_mls_member_compact(struct msv_mls_member *m);

#endif
