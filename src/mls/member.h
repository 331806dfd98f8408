/*
 * A member of a group (RFC 9420 12.4). Following (member.c): it joins from a
 * Welcome and applies each commit (a PublicMessage) with the proposals it
 * names. Sending (group.c): it creates a group, proposes an update of its
 * leaf, makes commits that add, remove and update with an UpdatePath and the
 * Welcome for those it adds, and protects application messages as
 * PrivateMessages. Each epoch's secret tree is kept as 9.2 says
 * (secret_state.c): a secret is erased once what it derives is derived, a
 * message key once it was used.
 */
#ifndef MSV_MLS_MEMBER_H
#define MSV_MLS_MEMBER_H

#include "mls/mls.h"

#define MSV_MLS_MEMBER_KEYS (MSV_MLS_PATH_MAX + 1)
#define MSV_MLS_GROUP_ID_MAX 255
#define MSV_MLS_RESUMPTION_KEPT 32
#define MSV_MLS_SKIPPED_MAX 64      /* keys kept for messages that arrive out of order */
#define MSV_MLS_FORWARD_MAX 1024    /* generations a message may skip past its ratchet's next */
#define MSV_MLS_IDENTITY_MAX 1024   /* the basic credential's identity */
#define MSV_MLS_REINIT_EXT_MAX 1024 /* a ReInit's extensions, encoded */

/*
 * The secret tree of the current epoch (9, 9.2): node secrets until their
 * children are derived, then each leaf's handshake and application ratchets
 * at the next generation, and the keys of generations skipped
 * (MSV_MLS_SKIPPED_MAX in all; past it, the oldest of the sender holding the
 * most is dropped). All in sodium_malloc memory, wiped when dropped.
 */
struct msv_mls_ratchet_state {
    uint32_t generation; /* of secret: the next one not yet used */
    uint8_t live;        /* 0: the leaf's secret is not derived yet */
    uint8_t secret[MSV_MLS_NH];
};

struct msv_mls_skipped_key {
    uint32_t leaf, generation;
    uint8_t which;
    uint8_t key[MSV_MLS_KEY_MAX];
    uint8_t nonce[MSV_MLS_NN];
};

struct msv_mls_secret_state {
    enum msv_mls_suite suite;
    uint32_t n_leaves;
    uint8_t (*node)[MSV_MLS_NH];           /* width of them */
    uint8_t *has;                          /* node[x] holds a secret */
    struct msv_mls_ratchet_state *ratchet; /* 2 per leaf: handshake, application */
    struct msv_mls_skipped_key *skipped;   /* MSV_MLS_SKIPPED_MAX of them */
    size_t n_skipped;
};

/* The tree rooted at encryption_secret; free it with msv_mls_secret_state_free(). */
MSV_MUST_CHECK msv_err msv_mls_secret_state_init(struct msv_mls_secret_state *st,
                                                 enum msv_mls_suite suite,
                                                 const uint8_t encryption_secret[MSV_MLS_NH],
                                                 uint32_t n_leaves);
void msv_mls_secret_state_free(struct msv_mls_secret_state *st);
/*
 * The key and nonce of leaf's ratchet at generation, changing nothing:
 * MSV_ERR_AUTH for a generation already used (or skipped and dropped), or
 * more than MSV_MLS_FORWARD_MAX past the ratchet's next one (so that one
 * message costs a bounded number of derivations).
 */
MSV_MUST_CHECK msv_err msv_mls_secret_state_key(const struct msv_mls_secret_state *st,
                                                uint32_t leaf, enum msv_mls_ratchet which,
                                                uint32_t generation, uint8_t *key,
                                                uint8_t nonce[MSV_MLS_NN]);
/*
 * Marks generation used once its message authenticated: the node secrets on
 * the way to the leaf erased, the ratchet moved past it (the keys of the
 * generations it skips kept, the latest MSV_MLS_SKIPPED_MAX) or the skipped
 * key erased. MSV_ERR_AUTH if it was used already.
 */
MSV_MUST_CHECK msv_err msv_mls_secret_state_consume(struct msv_mls_secret_state *st, uint32_t leaf,
                                                    enum msv_mls_ratchet which,
                                                    uint32_t generation);
/* The next generation of leaf's ratchet (for sending). */
MSV_MUST_CHECK msv_err msv_mls_secret_state_next(struct msv_mls_secret_state *st, uint32_t leaf,
                                                 enum msv_mls_ratchet which, uint32_t *generation);

struct msv_mls_member {
    enum msv_mls_suite suite;
    uint8_t group_id[MSV_MLS_GROUP_ID_MAX];
    size_t group_id_len;
    uint64_t epoch;
    uint32_t
        welcome_signer; /* of a member joined from a Welcome: its GroupInfo's signer (not saved) */
    /* of the last commit msv_mls_member_commit() read: its sender's leaf (UINT32_MAX for an
     * external commit's, or one that did not authenticate), and whether it removed our leaf
     * (it then failed); not saved */
    uint32_t committer;
    int removed_us;
    /* and how many other leaves its Removes took out: a leaf removed and added again with the
     * same LeafNode leaves the tree as it was, but is a removal all the same */
    uint32_t removed_leaves;
    uint8_t *ext; /* the GroupContext's extensions, encoded without their length */
    size_t ext_len;
    uint8_t cth[MSV_MLS_NH], interim[MSV_MLS_NH];
    size_t cth_len;                /* MSV_MLS_NH; 0 at epoch 0 of a group we created (11) */
    uint8_t tree_hash[MSV_MLS_NH]; /* of the epoch's tree, once worked out */
    int has_tree_hash;
    uint8_t tag[MSV_MLS_NH]; /* the epoch's confirmation tag (for its GroupInfo) */
    int accept_external;     /* external commits are taken (the caller checks who joined) */
    struct msv_mls_epoch_secrets s;
    struct msv_mls_tree tree;
    uint32_t me;
    struct msv_mls_node_key keys[MSV_MLS_MEMBER_KEYS]; /* our leaf's and our path's */
    size_t n_keys;
    const struct msv_mls_external_psk *psks; /* borrowed */
    size_t n_psks;
    uint8_t **held; /* copies of the bytes the tree borrows; one after each commit */
    size_t n_held;
    /* the resumption PSKs of the epochs since we joined, the latest MSV_MLS_RESUMPTION_KEPT */
    struct {
        uint64_t epoch;
        uint8_t psk[MSV_MLS_NH];
    } resumption[MSV_MLS_RESUMPTION_KEPT];
    size_t n_resumption;
    /*
     * a ReInit this group committed (11.2): the new group's id, suite and extensions. The
     * group is then closed: nothing more is sent or committed in it.
     */
    int reinit;
    uint16_t reinit_suite;
    uint8_t reinit_group_id[MSV_MLS_GROUP_ID_MAX];
    size_t reinit_group_id_len;
    uint8_t reinit_ext[MSV_MLS_REINIT_EXT_MAX];
    size_t reinit_ext_len;
    struct msv_mls_secret_state st; /* the epoch's secret tree; s.encryption is wiped */
    /* sending: our Ed25519 seed and identity, an update proposed and not yet committed */
    uint8_t sig_seed[32];
    int can_send;
    uint8_t identity[MSV_MLS_IDENTITY_MAX];
    size_t identity_len;
    uint8_t update_sk[32];
    int has_update;
    struct msv_mls_member *pending; /* our commit's next epoch until merged or discarded */
};

/*
 * Joins from a Welcome MLSMessage for the KeyPackage MLSMessage key_package
 * (init_sk its init key, leaf_sk its leaf's HPKE key), with the external
 * PSKs psks (borrowed for the member's life) and the ratchet tree given
 * beside it (NULL: the GroupInfo's extension). Everything is checked as
 * msv_mls_welcome_decrypt(), msv_mls_tree_verify() and
 * msv_mls_group_info_check() do. Free *out with msv_mls_member_free().
 */
MSV_MUST_CHECK msv_err msv_mls_member_join(enum msv_mls_suite suite, const uint8_t *welcome,
                                           size_t welcome_len, const uint8_t *key_package,
                                           size_t key_package_len, const uint8_t init_sk[32],
                                           const uint8_t leaf_sk[32],
                                           const struct msv_mls_external_psk *psks, size_t n_psks,
                                           const uint8_t *tree, size_t tree_len,
                                           struct msv_mls_member **out);
/*
 * msv_mls_member_join() with the members of other groups we hold (from, n_from), whose kept
 * resumption PSKs the Welcome may name (8.6). A Welcome naming one of usage branch or reinit is
 * checked as 11.2 and 11.3 ask, else refused with MSV_ERR_INVALID: the new group at epoch 1, of
 * the old group's version and suite (branch) or of the ReInit the old group committed, its
 * group id, suite and extensions (reinit, the PSK's epoch the one after that commit), and every
 * leaf's identity one of the old group's members'.
 */
MSV_MUST_CHECK msv_err msv_mls_member_join_resuming(
    enum msv_mls_suite suite, const uint8_t *welcome, size_t welcome_len,
    const uint8_t *key_package, size_t key_package_len, const uint8_t init_sk[32],
    const uint8_t leaf_sk[32], const struct msv_mls_external_psk *psks, size_t n_psks,
    const struct msv_mls_member *const *from, size_t n_from, const uint8_t *tree, size_t tree_len,
    struct msv_mls_member **out);
/*
 * Applies a commit (a PublicMessage or PrivateMessage MLSMessage: for the
 * latter, the committer's handshake key from our secret tree) to the next epoch, with the
 * proposals (PublicMessage MLSMessages) it may name by reference: each
 * message's membership tag and signature checked, the proposals applied
 * (group context extensions, updates, removes, adds, external PSKs and
 * resumption PSKs of this group's epochs since we joined; other kinds
 * MSV_ERR_UNSUPPORTED), the UpdatePath merged and opened, the
 * transcript hashes and key schedule advanced and the confirmation tag
 * checked. A commit that fails changes nothing: the member stays at its
 * epoch (only the copies of the messages it read are kept, within a limit).
 */
MSV_MUST_CHECK msv_err msv_mls_member_commit(struct msv_mls_member *m,
                                             const uint8_t *const *proposals,
                                             const size_t *proposal_lens, size_t n_proposals,
                                             const uint8_t *commit, size_t commit_len);
/* The GroupContext at epoch with confirmed transcript hash cth and the current tree. */
MSV_MUST_CHECK msv_err msv_mls_member_group_context(const struct msv_mls_member *m, uint64_t epoch,
                                                    const uint8_t *cth, size_t cth_len,
                                                    uint8_t **out, size_t *out_len);
void msv_mls_member_free(struct msv_mls_member *m);

/* ---- sending (group.c) ---- */

/*
 * Creates a group of one (11): group_id (at most MSV_MLS_GROUP_ID_MAX bytes),
 * epoch 0, our leaf a fresh key_package leaf of identity signed by sig_seed
 * (valid from not_before to not_after). Free *out with msv_mls_member_free().
 */
MSV_MUST_CHECK msv_err msv_mls_member_create(enum msv_mls_suite suite, const uint8_t *group_id,
                                             size_t group_id_len, const uint8_t sig_seed[32],
                                             const uint8_t *identity, size_t identity_len,
                                             uint64_t not_before, uint64_t not_after,
                                             struct msv_mls_member **out);
/*
 * Gives a member that joined the Ed25519 seed of its leaf, so that it can
 * send: MSV_ERR_AUTH if the seed's key is not the leaf's signature key.
 */
MSV_MUST_CHECK msv_err msv_mls_member_set_signer(struct msv_mls_member *m,
                                                 const uint8_t sig_seed[32]);
/*
 * An Update proposal (12.1.2) of our leaf with a fresh HPKE key, as a
 * PublicMessage MLSMessage, or a PrivateMessage under the next key of our
 * handshake ratchet (then erased); its private key is kept until a commit
 * applies it (a later one replaces it). Caller frees *out with free().
 */
MSV_MUST_CHECK msv_err msv_mls_member_propose_update(struct msv_mls_member *m, int private_message,
                                                     uint8_t **out, size_t *out_len);

/*
 * A Remove proposal of our own leaf (12.1.3), as a PublicMessage MLSMessage: how a member
 * leaves a group it no longer needs. Caller frees *out with free().
 */
MSV_MUST_CHECK msv_err msv_mls_member_propose_leave(struct msv_mls_member *m, uint8_t **out,
                                                    size_t *out_len);

/* What a commit carries besides its UpdatePath. */
struct msv_mls_commit_spec {
    const uint8_t *const *key_packages; /* KeyPackage MLSMessages to add, validated first */
    const size_t *key_package_lens;
    size_t n_adds;
    const uint32_t *removes; /* leaf indices, not our own */
    size_t n_removes;
    const uint8_t *const *proposals; /* received proposals (PublicMessages), by reference */
    const size_t *proposal_lens;
    size_t n_proposals;
    /*
     * set_extensions: a GroupContextExtensions proposal by value, the next epoch's extensions
     * (an encoded Extension list without its length); each type beyond the defaults must be in
     * the capabilities of every leaf the commit leaves
     */
    const uint8_t *extensions;
    size_t extensions_len;
    int set_extensions;
    uint64_t now;        /* seconds, for the KeyPackages' lifetimes */
    int private_message; /* 1: the commit goes as a PrivateMessage (6.3), else a PublicMessage */
    /*
     * 1: no UpdatePath (12.4), allowed only when every proposal is an Add or a PSK: a smaller
     * commit that encrypts nothing to the tree, but renews none of its keys
     */
    int no_path;
    /*
     * reinit: a ReInit proposal by value (12.1.5), the commit's only proposal: the new group's
     * id, cipher suite and extensions (encoded, without their length); once merged, the group
     * is closed and msv_mls_member_reinit() makes the new one
     */
    int reinit;
    const uint8_t *reinit_group_id;
    size_t reinit_group_id_len;
    enum msv_mls_suite reinit_suite;
    const uint8_t *reinit_extensions;
    size_t reinit_extensions_len;
};

/*
 * Makes a commit (12.4) as a PublicMessage or PrivateMessage MLSMessage with an UpdatePath
 * (7.4-7.6, 7.9; none with spec->no_path, the commit secret then zero): the proposals applied
 * in 12.4.2's order, our leaf given a fresh key, path secrets derived up our filtered direct path
 * and each HPKE-encrypted to the resolution of its co-path child (less those added), parent hashes
 * chained, our leaf signed; the next epoch's key schedule and the confirmation and membership tags.
 * With adds, *welcome gets a Welcome (12.4.3.1): the GroupInfo signed, with the ratchet tree
 * extension, and encrypted; for each new member its GroupSecrets encrypted to its init key (else
 * *welcome is NULL). The member stays at its epoch: the next one waits in m->pending for
 * msv_mls_member_commit_merge() (once the delivery service took the commit) or
 * msv_mls_member_commit_discard(). A KeyPackage that does not validate, a removal of ourselves or
 * of an empty leaf, a proposal type other than add, update and remove and an update of our own are
 * refused, as are extensions a leaf does not support
 * (MSV_ERR_INVALID, or MSV_ERR_AUTH for a signature), *why naming the reason; nothing
 * changes then. Callers free *commit and *welcome with free().
 */
MSV_MUST_CHECK msv_err msv_mls_member_commit_make(struct msv_mls_member *m,
                                                  const struct msv_mls_commit_spec *spec,
                                                  uint8_t **commit, size_t *commit_len,
                                                  uint8_t **welcome, size_t *welcome_len,
                                                  const char **why);
/*
 * A new group branched from m's current epoch (11.3): group_id, m's suite, our leaf of the same
 * identity and signature key (valid from an hour before now to not_after), the members of the
 * KeyPackages added in its first commit with a PreSharedKey of type resumption and usage branch (a
 * fresh nonce), and the Welcome for them. The new group is at epoch 1 in *out; m does not change.
 * Each KeyPackage's identity must be one of m's members' (MSV_ERR_INVALID, *why saying so).
 */
MSV_MUST_CHECK msv_err msv_mls_member_branch(const struct msv_mls_member *m,
                                             const uint8_t *group_id, size_t group_id_len,
                                             const uint8_t *const *key_packages,
                                             const size_t *key_package_lens, size_t n, uint64_t now,
                                             uint64_t not_after, struct msv_mls_member **out,
                                             uint8_t **welcome, size_t *welcome_len,
                                             const char **why);
/*
 * The group that m's committed ReInit asks for (11.2): its group id, suite and extensions, our
 * leaf as in msv_mls_member_branch(), the other members' KeyPackages added with a PreSharedKey
 * of type resumption and usage reinit of m's current epoch, and the Welcome. MSV_ERR_INVALID
 * unless m committed a ReInit.
 */
MSV_MUST_CHECK msv_err msv_mls_member_reinit(const struct msv_mls_member *m,
                                             const uint8_t *const *key_packages,
                                             const size_t *key_package_lens, size_t n, uint64_t now,
                                             uint64_t not_after, struct msv_mls_member **out,
                                             uint8_t **welcome, size_t *welcome_len,
                                             const char **why);
/* Moves the member to the epoch of the commit it made. MSV_ERR_NOT_FOUND if none waits. */
MSV_MUST_CHECK msv_err msv_mls_member_commit_merge(struct msv_mls_member *m);
void msv_mls_member_commit_discard(struct msv_mls_member *m);

/*
 * A GroupInfo MLSMessage of the current epoch (12.4.3): the GroupContext, the
 * ratchet_tree and external_pub extensions, the epoch's confirmation tag,
 * signed by us; what a device needs to join by an external commit. Caller
 * frees *out with free().
 */
MSV_MUST_CHECK msv_err msv_mls_member_group_info(struct msv_mls_member *m, uint8_t **out,
                                                 size_t *out_len);
/*
 * Whether the member takes external commits (off at first): anyone holding a
 * GroupInfo of the group can make one, so the caller turns this on only when
 * it checks who joined (the new leaf's identity) after each commit.
 */
void msv_mls_member_accept_external(struct msv_mls_member *m, int accept);
/*
 * Joins a group by an external commit (12.4.3.2) from a GroupInfo MLSMessage:
 * its tree checked as a joiner checks it (msv_mls_tree_verify()), its
 * signature by its signer's leaf; then a commit with an ExternalInit (the
 * init secret encrypted to external_pub) and an UpdatePath from our new leaf
 * (identity as a basic credential, signed by sig_seed), where an Add would
 * put it. *out is the member at the commit's epoch, which it is once the
 * delivery service took *commit (else the caller frees it); members take it
 * only if they accept external commits. Free *out with msv_mls_member_free()
 * and *commit with free().
 */
MSV_MUST_CHECK msv_err msv_mls_member_join_external(
    enum msv_mls_suite suite, const uint8_t *group_info, size_t group_info_len,
    const uint8_t sig_seed[32], const uint8_t *identity, size_t identity_len, uint8_t **commit,
    size_t *commit_len, struct msv_mls_member **out);

/*
 * An application message as a PrivateMessage MLSMessage (6.3) of the current
 * epoch, with the next generation of our application ratchet, whose key is
 * then erased, and a random reuse guard. Caller frees *out with free().
 */
MSV_MUST_CHECK msv_err msv_mls_member_protect(struct msv_mls_member *m, const uint8_t *data,
                                              size_t len, uint8_t **out, size_t *out_len);
/*
 * Decrypts an application PrivateMessage of the current epoch from another
 * member: its key is erased once it authenticated, so a second decryption
 * fails (MSV_ERR_AUTH). *data is the caller's to free with msv_secret_free();
 * *sender its leaf.
 */
MSV_MUST_CHECK msv_err msv_mls_member_unprotect(struct msv_mls_member *m, const uint8_t *msg,
                                                size_t len, uint8_t **data, size_t *data_len,
                                                uint32_t *sender);

/* ---- the state saved and loaded (state.c; docs/crypto.md, "The state file") ---- */

#define MSV_MLS_STATE_VERSION 1
#define MSV_MLS_STATE_VERSION_REINIT 2 /* version 1 and the ReInit that closed the group */
#define MSV_MLS_STATE_MAX (128u << 20) /* largest state written or read */

/*
 * The member's whole state as bytes: its group context, transcript hash and
 * confirmation tag, the ratchet tree, our leaf and the private keys of our
 * path that still match their nodes, the signature seed, a proposed update's
 * key, the epoch's secrets and resumption PSKs, and the secret tree as 9.2
 * keeps it (nothing used or erased is in it). A member whose commit waits
 * (m->pending) is refused (MSV_ERR_INVALID): merge or discard it first.
 * *why names the reason of a failure. Caller frees *out with
 * msv_secret_free(*out, *out_len).
 */
MSV_MUST_CHECK msv_err msv_mls_member_save(const struct msv_mls_member *m, uint8_t **out,
                                           size_t *out_len, const char **why);
/*
 * A member from msv_mls_member_save()'s bytes, with the external PSKs psks
 * (borrowed for the member's life). Everything is checked before the member
 * exists: truncations, extra bytes, every length, the version
 * (MSV_ERR_UNSUPPORTED), the tree's hash against the group context's, the
 * tree as a joiner checks it, every private key against its node's public key
 * and the signature seed against our leaf, the secret tree's shape; all
 * MSV_ERR_PARSE, *why (may be NULL) naming what, a static string. Free *out
 * with msv_mls_member_free().
 */
MSV_MUST_CHECK msv_err msv_mls_member_load(const uint8_t *data, size_t len,
                                           const struct msv_mls_external_psk *psks, size_t n_psks,
                                           struct msv_mls_member **out, const char **why);
/*
 * Writes bytes that hold secrets to path atomically: PATH.tmp (one fixed
 * name, so that what a crash left there is overwritten, never kept), mode
 * 0600, written, fsync'd and renamed over path, the directory fsync'd.
 * MSV_ERR_IO (errno says why) with path untouched otherwise. Two writers of
 * one path must not run at once (missive-crypto mls holds a lock on it).
 */
MSV_MUST_CHECK msv_err msv_mls_state_write_file(const char *path, const uint8_t *data, size_t len);
/*
 * The same, the new file locked (flock, exclusive) before it takes the name
 * and left open in *lock_fd: a process holding the lock of the file it
 * replaces keeps the lock of what follows until it closes *lock_fd.
 */
MSV_MUST_CHECK msv_err msv_mls_state_write_locked(const char *path, const uint8_t *data, size_t len,
                                                  int *lock_fd);
/* A name to stage a file for path at: PATH.stagedXXXXXX, the six random letters or digits. */
MSV_MUST_CHECK msv_err msv_mls_file_staged_name(const char *path, char *tmp, size_t tmp_size);
/*
 * A file to publish later: data written to tmp (a new file, mode 0600; one
 * there already is MSV_ERR_IO, EEXIST), fsync'd. MSV_ERR_IO (errno)
 * otherwise, nothing left.
 */
MSV_MUST_CHECK msv_err msv_mls_file_stage(const char *tmp, const uint8_t *data, size_t len);
/*
 * A staged file given its name: linked to path, never over a file there
 * (MSV_ERR_EXISTS, tmp kept), or renamed over it if replace; the directory
 * fsync'd. MSV_ERR_IO (errno) otherwise.
 */
MSV_MUST_CHECK msv_err msv_mls_file_publish(const char *tmp, const char *path, int replace);
/* A regular file overwritten with zeros, fsync'd and removed (a symbolic link only removed). */
void msv_mls_file_wipe(const char *path);
/* msv_mls_member_save() into a file, as msv_mls_state_write_file() writes it. */
MSV_MUST_CHECK msv_err msv_mls_member_save_file(const struct msv_mls_member *m, const char *path,
                                                const char **why);
/*
 * The whole of the regular file open at fd (read from offset 0), at most max
 * bytes (MSV_ERR_TOO_BIG). Caller frees *out with msv_secret_free(*out, *out_len + 1).
 */
MSV_MUST_CHECK msv_err msv_mls_state_read_fd(int fd, size_t max, uint8_t **out, size_t *out_len);
/* msv_mls_member_load() of a file. */
MSV_MUST_CHECK msv_err msv_mls_member_load_file(const char *path,
                                                const struct msv_mls_external_psk *psks,
                                                size_t n_psks, struct msv_mls_member **out,
                                                const char **why);

#endif
