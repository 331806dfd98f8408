/*
 * Structure checks of the bodies a FramedContent carries (RFC 9420 6, 7.2,
 * 10, 12.1, 12.4): each reads exactly one structure, so that the framing can
 * find where a Proposal or a Commit ends. Unknown proposal and credential
 * types are refused: their length cannot be known.
 */
#include <string.h>

#include "mls/mls.h"

#define CHECK(x)            \
    do {                    \
        msv_err err_ = (x); \
        if (err_ != MSV_OK) \
            return err_;    \
    } while (0)

static msv_err skip_vec(struct msv_reader *r)
{
    const uint8_t *p;
    size_t n;

    return msv_mls_get_vec(r, &p, &n);
}

static msv_err skip_raw(struct msv_reader *r, size_t n)
{
    const uint8_t *p;

    return msv_reader_bytes(r, n, &p);
}

/* Credential (5.3): credential_type, then the identity or the certificate chain */
static msv_err skip_credential(struct msv_reader *r)
{
    uint16_t type;

    CHECK(msv_reader_u16be(r, &type));
    if (type != 1 && type != 2)
        return MSV_ERR_UNSUPPORTED;
    return skip_vec(r); /* basic: identity<V>; x509: certificates<V> */
}

msv_err msv_mls_read_leaf_node(struct msv_reader *r, struct msv_mls_leaf *leaf)
{
    size_t start = r->off;

    memset(leaf, 0, sizeof(*leaf));
    CHECK(msv_mls_get_vec(r, &leaf->encryption_key, &leaf->encryption_key_len));
    CHECK(msv_mls_get_vec(r, &leaf->signature_key, &leaf->signature_key_len));
    CHECK(skip_credential(r));
    for (int i = 0; i < 5; i++)
        CHECK(skip_vec(r)); /* Capabilities: versions, suites, extensions, proposals, credentials */
    CHECK(msv_reader_u8(r, &leaf->source));
    if (leaf->source == 1)
        CHECK(skip_raw(r, 16)); /* Lifetime: not_before, not_after */
    else if (leaf->source == 3)
        CHECK(msv_mls_get_vec(r, &leaf->parent_hash, &leaf->parent_hash_len));
    else if (leaf->source != 2)
        return MSV_ERR_PARSE;
    CHECK(skip_vec(r)); /* extensions */
    leaf->tbs_len = r->off - start;
    CHECK(msv_mls_get_vec(r, &leaf->signature, &leaf->signature_len));
    leaf->raw = r->data + start;
    leaf->raw_len = r->off - start;
    return MSV_OK;
}

msv_err msv_mls_skip_leaf_node(struct msv_reader *r)
{
    struct msv_mls_leaf leaf;

    return msv_mls_read_leaf_node(r, &leaf);
}

msv_err msv_mls_read_key_package(struct msv_reader *r, struct msv_mls_leaf *leaf)
{
    CHECK(skip_raw(r, 4)); /* version, cipher_suite */
    CHECK(skip_vec(r));    /* init_key */
    CHECK(msv_mls_read_leaf_node(r, leaf));
    CHECK(skip_vec(r)); /* extensions */
    return skip_vec(r); /* signature */
}

msv_err msv_mls_skip_key_package(struct msv_reader *r)
{
    struct msv_mls_leaf leaf;

    return msv_mls_read_key_package(r, &leaf);
}

/* PreSharedKeyID (8.4) */
static msv_err skip_psk_id(struct msv_reader *r)
{
    struct msv_mls_psk_id id;

    /* an external or resumption PreSharedKeyID, of a usage RFC 9420 defines */
    if (msv_mls_psk_id_read(r, &id) != MSV_OK || (id.type == 2 && (id.usage < 1 || id.usage > 3)))
        return MSV_ERR_PARSE;
    return MSV_OK;
}

msv_err msv_mls_skip_proposal_body(struct msv_reader *r, uint16_t type)
{
    switch (type) {
    case 1: /* add */
        return msv_mls_skip_key_package(r);
    case 2: /* update */
        return msv_mls_skip_leaf_node(r);
    case 3: /* remove: removed leaf index */
        return skip_raw(r, 4);
    case 4: /* psk */
        return skip_psk_id(r);
    case 5: /* reinit: group_id, version, cipher_suite, extensions */
        CHECK(skip_vec(r));
        CHECK(skip_raw(r, 4));
        return skip_vec(r);
    case 6: /* external_init: kem_output */
    case 7: /* group_context_extensions */
        return skip_vec(r);
    default:
        return MSV_ERR_UNSUPPORTED;
    }
}

msv_err msv_mls_skip_proposal(struct msv_reader *r)
{
    uint16_t type;

    CHECK(msv_reader_u16be(r, &type));
    return msv_mls_skip_proposal_body(r, type);
}

/* ProposalOrRef: type proposal (1) or reference (2) */
static msv_err skip_proposal_or_ref(struct msv_reader *r)
{
    uint8_t type;

    CHECK(msv_reader_u8(r, &type));
    if (type == 1)
        return msv_mls_skip_proposal(r);
    if (type == 2)
        return skip_vec(r);
    return MSV_ERR_PARSE;
}

msv_err msv_mls_skip_commit(struct msv_reader *r)
{
    struct msv_reader list;
    int present;

    CHECK(msv_mls_get_sub(r, &list));
    while (!msv_mls_reader_is_done(&list))
        CHECK(skip_proposal_or_ref(&list));
    CHECK(msv_mls_get_optional(r, &present));
    if (!present)
        return MSV_OK;
    CHECK(msv_mls_skip_leaf_node(r)); /* UpdatePath: leaf_node, nodes<V> */
    return skip_vec(r);
}

msv_err msv_mls_skip_group_context(struct msv_reader *r)
{
    CHECK(skip_raw(r, 4)); /* version, cipher_suite */
    CHECK(skip_vec(r));    /* group_id */
    CHECK(skip_raw(r, 8)); /* epoch */
    CHECK(skip_vec(r));    /* tree_hash */
    CHECK(skip_vec(r));    /* confirmed_transcript_hash */
    return skip_vec(r);    /* extensions */
}

/* GroupInfo (12.4.3): group_context, extensions<V>, confirmation_tag<V>, signer, signature<V> */
msv_err msv_mls_skip_group_info(struct msv_reader *r)
{
    CHECK(msv_mls_skip_group_context(r));
    CHECK(skip_vec(r));
    CHECK(skip_vec(r));
    CHECK(skip_raw(r, 4));
    return skip_vec(r);
}

/* Welcome (12.4.3.1): cipher_suite, EncryptedGroupSecrets secrets<V>, encrypted_group_info<V> */
msv_err msv_mls_skip_welcome(struct msv_reader *r)
{
    struct msv_reader list;

    CHECK(skip_raw(r, 2));
    CHECK(msv_mls_get_sub(r, &list));
    while (!msv_mls_reader_is_done(&list)) {
        CHECK(skip_vec(&list)); /* new_member: KeyPackageRef */
        CHECK(skip_vec(&list)); /* HPKECiphertext: kem_output */
        CHECK(skip_vec(&list)); /* ciphertext */
    }
    return skip_vec(r);
}

/* GroupSecrets (12.4.3.1): joiner_secret<V>, optional<PathSecret>, psks<V> */
msv_err msv_mls_skip_group_secrets(struct msv_reader *r)
{
    struct msv_reader list;
    int present;

    CHECK(skip_vec(r));
    CHECK(msv_mls_get_optional(r, &present));
    if (present)
        CHECK(skip_vec(r));
    CHECK(msv_mls_get_sub(r, &list));
    while (!msv_mls_reader_is_done(&list))
        CHECK(skip_psk_id(&list));
    return MSV_OK;
}

/* The ratchet_tree extension (12.4.3.3): optional<Node> nodes<V> */
msv_err msv_mls_skip_ratchet_tree(struct msv_reader *r)
{
    struct msv_reader list;

    CHECK(msv_mls_get_sub(r, &list));
    while (!msv_mls_reader_is_done(&list)) {
        uint8_t type;
        int present;

        CHECK(msv_mls_get_optional(&list, &present));
        if (!present)
            continue;
        CHECK(msv_reader_u8(&list, &type));
        if (type == 1) {
            CHECK(msv_mls_skip_leaf_node(&list));
        } else if (type == 2) {
            CHECK(skip_vec(&list)); /* ParentNode: encryption_key */
            CHECK(skip_vec(&list)); /* parent_hash */
            CHECK(skip_vec(&list)); /* unmerged_leaves */
        } else {
            return MSV_ERR_PARSE;
        }
    }
    return MSV_OK;
}
