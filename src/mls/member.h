/*
 * A member following its group through commits (member.c), RFC 9420 12.4:
 * it joins from a Welcome and applies each commit (a PublicMessage) with the
 * proposals it names. It never sends: making commits is not here yet.
 */
#ifndef MSV_MLS_MEMBER_H
#define MSV_MLS_MEMBER_H

#include "mls/mls.h"

#define MSV_MLS_MEMBER_KEYS (MSV_MLS_PATH_MAX + 1)
#define MSV_MLS_GROUP_ID_MAX 255
#define MSV_MLS_RESUMPTION_KEPT 32

struct msv_mls_member {
    enum msv_mls_suite suite;
    uint8_t group_id[MSV_MLS_GROUP_ID_MAX];
    size_t group_id_len;
    uint64_t epoch;
    uint8_t *ext; /* the GroupContext's extensions, encoded without their length */
    size_t ext_len;
    uint8_t cth[MSV_MLS_NH], interim[MSV_MLS_NH];
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
 * Applies a commit (a PublicMessage MLSMessage) to the next epoch, with the
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
                                                    const uint8_t *cth, uint8_t **out,
                                                    size_t *out_len);
void msv_mls_member_free(struct msv_mls_member *m);

#endif
