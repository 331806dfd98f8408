/*
 * MLS (src/mls) on any bytes. The first byte chooses what the rest is:
 *   0  a run of variable-size vectors: each one read must write back to the
 *      same bytes (one encoding per length);
 *   1  a Proposal, 2 a Commit, 3 (the next byte picks) an MLSMessage, a
 *      ratchet tree (also read, hashed, resolved, verified, written back, and
 *      written back again after a leaf is removed and added), GroupSecrets
 *      or a KeyPackage: the structure checks never read past the end;
 *   4  a PublicMessage and 5 a PrivateMessage of a fixed epoch (the first
 *      case of tests/vectors/mls/message-protection.json, which the seed
 *      corpus holds): accepted only when they are byte for byte the honest
 *      messages the vectors hold;
 *   6  an AuthenticatedContent for the transcript hashes under a fixed key;
 *   7  a Welcome for the KeyPackage of the first case of
 *      tests/vectors/mls/welcome.json: opened only when it is that case's;
 *   8  an UpdatePath from leaf 0 into the tree of the first case of
 *      tests/vectors/mls/treekem.json, merged (on a fresh copy) and, when that
 *      works, opened for leaf 1 with its key.
 */
#include "common.h"
#include "mls/mls.h"

static uint8_t group_id[32], tree_hash[32], cth[32], sig_pub[32], enc[32], sd[32], mk[32];
static struct msv_mls_epoch ep;

/* The vectors' honest messages (message-protection.json, first case). */
static const char *const honest_hex[] = {
    "000100012042e4c3a73738d838cb4f9dc550cb81406206943f9e6870ee150f2000ae8aa7800000000000121212"
    "010000000100020003000000024040932e43773e992f7b0c8ec9d82f72c9395ad62120f19a764e50ec150ca48b"
    "a94dbb139a1f9c6901aab353d67f97f68210027818f634ac9cf8a738fe35b7404906201be6bf2e5e22e38a6f90"
    "8d534a04ae231c3f6de72750d74bbf626a2c0bfcf1ec",
    "000100012042e4c3a73738d838cb4f9dc550cb81406206943f9e6870ee150f2000ae8aa7800000000000121212"
    "01000000010003404601000401205ff3e28b8183cba127d0b74459b5d8a81286c299ba02d68c7d62f6101c3782"
    "dc20e0fbf69e4e80c4b2b8d43ffac9c0863a25300d0a6880aa9287d3916c467ae3ab0040403fe4fb435c134950"
    "173cf4244a899e3a3fedb6d77dde1279b8a1b03a507109661d82e6e08f9a476ebad8983ce83a1218dbf4df0b53"
    "8e88d3d8ffb0cbc5fffb0120b613679a0814d9ec772f95d778c35fc5ff1697c493715653c6c712144292c5ad20"
    "96f30e3de73f8f49037897e7e2ff6964857d7e662c6823cea2b5c4b78c3b03a2",
    "000100022042e4c3a73738d838cb4f9dc550cb81406206943f9e6870ee150f2000ae8aa7800000000000121212"
    "02001cf8f3a79aa9f3cbc60ea1e886e46dd6dcbcde71e80f7e46a68b88edeb4058b7761be40499be70b7a0b5f4"
    "e2b151b20250153fe6af4599853b1b351ad6c68a7d7490cd58301a3ed08b2bfc254feee2f14f63df0bafa7994b"
    "6957dc449384b06b6cd24bd228d8870d5ba8a346fcca8dcaacadd95959443c",
    "000100022042e4c3a73738d838cb4f9dc550cb81406206943f9e6870ee150f2000ae8aa7800000000000121212"
    "03001c97a2cc4f511ed694db9bd5ca4aeb06b5eb5fb92765f41feeece83a4040bc6c0e40ad742111fe68c17b08"
    "48c047f6909e0675dce492f4e2635fda105d20aac769b1b3916267a396235cbf955e1843072f62466f6c328f53"
    "5bf7ecc326c224ae1b24c574ba543c0d1dc27328dfe10b221a43c29a0ea76e3e475980995e92cdf0c7b21bde1f"
    "cbb6bc5cc92b920b4b8bced424ccd518d2b7e738fe4c582040ef866cbe8afe72e76a8bae2e19e20a5c901d12ba"
    "f43c2f01d98813a775ec5c6fdba27c8ccd1cc024dc95e4138bf8dd0135998c598240a0c87d5fe225b2",
    "000100022042e4c3a73738d838cb4f9dc550cb81406206943f9e6870ee150f2000ae8aa7800000000000121212"
    "01001cf18ad2e0ad4462390d72714d68b2a845ba336c3e8d398d21334f8d0f407dab47ce77c5fff3107b2f4e4b"
    "f99936c0ec680364333403663b7a955708a73d91e921a4fb3ffd50292a51ec31d4ec684231eb6f765cfbd5cca5"
    "b78fbe42bbf1b04dd1682fc87678b3a4f1599770839b171caff15e5e264957f3d16c31ba3ca16416f466511524"
    "4291536ddb438528cdb8502de654be9ca093915d36b1ab",
};
static uint8_t *honest[5];
static const char welcome_hex[] =
    "0001000300014076208e1faada70f08b91ef7f7f79ed1da917d9ce3cea5e5ce22e4a8b10f4311559dd20a87de1"
    "70e9dc54bd4a8a48f38cd5c949f0cc82fce8ea72232417975ec6bad95033f6701d639694cbb51a4b2d0191f432"
    "add5267eea7b33f3c0c7edc65a28650adb0008f08b84a420bf1070516cb079a8e5c4159a40e80bee12b78b86d1"
    "25155b035f52e8a131469cf1b9645d70e270d3aa21c04945fa80b7fea30ccfceb436e4df23558cdc1a6cd435db"
    "3199314795b7c488b4bf0855cb589ad9c7eb43ea8bc9edef6b85ad1c97451b706e5de27aabe664dca132a288b3"
    "fc091b9100e470fb506833aaa4ab279a44c92c21e34dd295b6e49978d8c93cf20537bebc1a467177500d7fe6b1"
    "27d5b3d13bf038cd2e8ec00937db6fd4996b2f2e416b810d0822b77bd71b59bf1e486c1ad74da0de9872f839b6"
    "3928a03ae11e4dfacb7cf27ea2c35ae233d9c63fe901ddd4e7be7e643912bb39ad8a728792753bc8314317388e";
static const char key_package_hex[] =
    "00010005000100012028b2cd6417984dc4708c61a1cce7c0f11d181bd36d6f7a610ea21cb96f79ba6020275d9e"
    "6337b11a5e21ba755f2353053a500103efa1c5ac7c07d3a78f8817ad2d203de79c7e370156ce25a88d897a8ea7"
    "c8f90fea1f71fbeb5f31855312d8750007000120b640fbb0df8e646b29c83c5ed08aea89f72ab108922827ea76"
    "cd3b917d6d99420200010c00010002000300040005000600000400010002010000000000000000ffffffffffff"
    "ffff004040fd81837a40a9ba774bb44db665081f4d0ff2a8f680ce5c902b17acc4ae6d9a14b9d4e9b4f8e7d74a"
    "f8ff42032ec9caadf267e85931b550eebbe480150d4b9b0a0040401ec696ab731d5a7b1092b0db9912fe35086e"
    "188ce2946996bdf3cec463849f1a32f653b6e246b8b85a486ce3f604891501052c3d7bbee2155fff6a367e5a1f"
    "03";
static const char treekem_tree_hex[] =
    "41da010120c929637bda524adad04ac85cf8ab7164d9cd88139aef5c9f7157902707c3fb5820c4c1595a92bc2f"
    "e9413a0eb6484a106159300bbd27d9f69c8287bff4c812685100012064f3832198d0541bb38e744801075164e8"
    "1371c4952ad36e2a41c8fcac593f930200010c000100020003000400050006000004000100020320be6b0e33b5"
    "76ab16727c86317eee6b8bbc20b641440f1f55ed68a4861b6746f70040404007c2a631b8a394f6cb8704b1cbbe"
    "2e149241ca32f316ffc6f8a541521b0a298dc0239d0ec0e8ab77f3c39b5810da1815d3a83dd4797d0ea5a04887"
    "18b8af0201022029eb3645264612282039eb7ddb095a780f39b1904a9613aaad568642a4b9b2040000010120d1"
    "7b7296c1ac920c635574c84ee59f11c43bf534f4135225dbf1ac360e4629092018fb8325dea495db27f818b49f"
    "80fbe1e41bd07e8f56e519325b0fdf5f34a69f0001209461d191779dc58ef19be7df44f74252e5fefab3e0b7e0"
    "4d05e866138390325d0200010c00010002000300040005000600000400010002010000000000000000ffffffff"
    "ffffffff0040405ca8f99de58c59bc29c4d7b5bbc489ca7a62a8971d5944080940cf14d6795443a20cd96c290a"
    "67b59c28a53e9e9795ac9f21cbb257ca333e75e72e5582ca8e0f";
static uint8_t *treekem_tree, treekem_gid[32], treekem_leaf1_sk[32];
static size_t treekem_tree_len;
static uint8_t *welcome, *key_package, init_priv[32], signer_pub[32];
static size_t welcome_len, key_package_len;
static size_t honest_len[5];

static void unhex(const char *hex, uint8_t out[32])
{
    size_t n = 0;

    if (msv_hex_decode(hex, out, 32, &n) != MSV_OK || n != 32)
        abort();
}

static uint8_t *unhex_alloc(const char *hex, size_t *len)
{
    size_t cap = strlen(hex) / 2;
    uint8_t *p = malloc(cap);

    if (p == NULL || msv_hex_decode(hex, p, cap, len) != MSV_OK)
        abort();
    return p;
}

static msv_err sig_key(void *ctx, uint32_t leaf, const uint8_t **pk, size_t *pk_len)
{
    (void)ctx;
    if (leaf != 1)
        return MSV_ERR_NOT_FOUND;
    *pk = sig_pub;
    *pk_len = sizeof(sig_pub);
    return MSV_OK;
}

static void setup(void)
{
    static int ready;

    if (ready)
        return;
    ready = 1;
    if (msv_init() != MSV_OK)
        abort();
    unhex("42e4c3a73738d838cb4f9dc550cb81406206943f9e6870ee150f2000ae8aa780", group_id);
    unhex("a257a326c7b632ce7ccdea8d3a3b5c3c2daa53a21029b3673ee05e9a3cea5934", tree_hash);
    unhex("59b10f7a137e853c4ef7ce43d2fe0a481bb80652f648c5efab11c3141a1ba60c", cth);
    unhex("62087f5b047e5292d5d29ded0977442788633c196a607988238b8c4374b4b4be", sig_pub);
    unhex("4db33574f514024e61e2a15e71527182f62561d84b4d8230501b623d848df998", enc);
    unhex("b21dfbbf69da2fec93299d8bd0795ad0aec22b42d83ff10a2e5e3f997672b8b3", sd);
    unhex("1f338b39337d019ab52c797bc836875998387e88fe711287df2258bc8f9967fb", mk);
    ep.gc.suite = MSV_MLS_SUITE_X25519_AES128GCM;
    ep.gc.group_id = group_id;
    ep.gc.group_id_len = sizeof(group_id);
    ep.gc.epoch = 1184274;
    ep.gc.tree_hash = tree_hash;
    ep.gc.tree_hash_len = sizeof(tree_hash);
    ep.gc.confirmed_transcript_hash = cth;
    ep.gc.confirmed_transcript_hash_len = sizeof(cth);
    ep.n_leaves = 2;
    ep.sender_data_secret = sd;
    ep.encryption_secret = enc;
    ep.membership_key = mk;
    ep.sig_key = sig_key;
    for (size_t i = 0; i < 5; i++)
        honest[i] = unhex_alloc(honest_hex[i], &honest_len[i]);
    welcome = unhex_alloc(welcome_hex, &welcome_len);
    treekem_tree = unhex_alloc(treekem_tree_hex, &treekem_tree_len);
    unhex("476813a66a9e9a464c40e79f4f8449d939d9235c56ea955ba7e230ec6d7f6b03", treekem_gid);
    unhex("2a7ab9e8c1a8077944fa0f59303faf1d7da5ec43c7a3f345910c87478d12c202", treekem_leaf1_sk);
    key_package = unhex_alloc(key_package_hex, &key_package_len);
    unhex("c697caf7ae54f695f9411d9dc81a206b91fabcaac62a13763213a045ecd72b1e", init_priv);
    unhex("4e61ed19803e994259745f59aabd3f0be3c171ae99d49a29974b5a5cee134241", signer_pub);
}

static void vectors(const uint8_t *data, size_t size)
{
    struct msv_reader r;

    msv_reader_init(&r, data, size);
    for (;;) {
        size_t start = r.off, n = 0, out_len = 0;
        const uint8_t *p;
        uint8_t *out = NULL;
        struct msv_buf w;

        if (msv_mls_get_vec(&r, &p, &n) != MSV_OK) {
            if (r.off != start)
                abort(); /* a refused read reads nothing */
            return;
        }
        msv_buf_init(&w, MSV_MLS_MESSAGE_MAX);
        msv_mls_put_vec(&w, p, n);
        if (msv_buf_finish(&w, &out, &out_len) != MSV_OK || out_len != r.off - start ||
            memcmp(out, data + start, out_len) != 0)
            abort();
        free(out);
    }
}

/* 1 if the tree writes, reads back, and writes to the same bytes again. */
static int writes_back(const struct msv_mls_tree *t)
{
    struct msv_mls_tree u = {0, 0, NULL};
    uint8_t *a = NULL, *b = NULL;
    size_t a_len = 0, b_len = 0;
    int ok =
        msv_mls_tree_write(t, &a, &a_len) == MSV_OK && msv_mls_tree_read(a, a_len, &u) == MSV_OK &&
        msv_mls_tree_write(&u, &b, &b_len) == MSV_OK && a_len == b_len && memcmp(a, b, a_len) == 0;

    msv_mls_tree_free(&u);
    free(a);
    free(b);
    return ok;
}

/* Removes the first leaf and adds it back: the tree still writes and reads back. */
static void tree_changes(struct msv_mls_tree *t)
{
    struct msv_mls_leaf leaf;
    uint32_t i = 0, index;

    if (!writes_back(t))
        abort();
    while (i < t->n_leaves && t->nodes[2 * i].type != 1)
        i++;
    if (i == t->n_leaves)
        return;
    leaf = t->nodes[2 * i].leaf;
    if (msv_mls_tree_remove(t, i) != MSV_OK || (t->width > 1 && !writes_back(t)))
        abort();
    if (msv_mls_tree_add(t, &leaf, &index) != MSV_OK || !writes_back(t))
        abort();
}

/* A ratchet tree: its structure check, then read, hashed, resolved and verified. */
static msv_err ratchet_tree(struct msv_reader *r)
{
    struct msv_reader copy = *r;
    struct msv_mls_tree t = {0, 0, NULL};
    uint8_t h[MSV_MLS_NH];
    uint32_t res[64];
    size_t n = 0;
    msv_err err = msv_mls_skip_ratchet_tree(r);

    if (msv_mls_tree_read(copy.data + copy.off, copy.len - copy.off, &t) != MSV_OK)
        return err;
    if (msv_mls_tree_hash(&t, msv_mls_tree_root(t.n_leaves), h) != MSV_OK)
        abort();
    (void)msv_mls_tree_resolution(&t, msv_mls_tree_root(t.n_leaves), res, 64, &n);
    (void)msv_mls_tree_verify(&t, group_id, sizeof(group_id));
    tree_changes(&t);
    msv_mls_tree_free(&t);
    return err;
}

static void structure(uint8_t kind, const uint8_t *data, size_t size)
{
    struct msv_reader r;
    msv_err err;

    if (kind == 3 && size < 1)
        return;
    msv_reader_init(&r, data + (kind == 3), size - (kind == 3));
    if (kind == 1)
        err = msv_mls_skip_proposal(&r);
    else if (kind == 2)
        err = msv_mls_skip_commit(&r);
    else if (data[0] % 4 == 0)
        err = msv_mls_skip_message(&r); /* Welcome, GroupInfo, KeyPackage and both framings */
    else if (data[0] % 4 == 1)
        err = ratchet_tree(&r);
    else if (data[0] % 4 == 2)
        err = msv_mls_skip_group_secrets(&r);
    else
        err = msv_mls_skip_key_package(&r);
    if (r.off > r.len || (err != MSV_OK && err != MSV_ERR_PARSE && err != MSV_ERR_UNSUPPORTED))
        abort();
}

/* 1 if data is one of the honest messages byte for byte. */
static int is_honest(const uint8_t *data, size_t size)
{
    for (size_t i = 0; i < 5; i++) {
        if (size == honest_len[i] && memcmp(data, honest[i], size) == 0)
            return 1;
    }
    return 0;
}

static void public_message(const uint8_t *data, size_t size)
{
    struct msv_mls_content c;

    /* nobody here holds a member's signing key: only the honest messages authenticate */
    if (msv_mls_public_unprotect(&ep, data, size, &c) == MSV_OK && !is_honest(data, size))
        abort();
}

static void private_message(const uint8_t *data, size_t size)
{
    struct msv_mls_content c;
    uint8_t *plain = NULL;
    size_t plain_len = 0;
    uint32_t gen = 0;

    if (msv_mls_private_unprotect(&ep, data, size, &c, &plain, &plain_len, &gen) != MSV_OK)
        return;
    if (!is_honest(data, size))
        abort();
    msv_secret_free(plain, plain_len);
}

static void transcript(const uint8_t *data, size_t size)
{
    uint8_t confirmed[MSV_MLS_NH], interim[MSV_MLS_NH];
    msv_err err = msv_mls_transcript_update(cth, data, size, mk, confirmed, interim);

    if (err != MSV_OK && err != MSV_ERR_PARSE && err != MSV_ERR_AUTH)
        abort();
}

static void welcome_message(const uint8_t *data, size_t size)
{
    struct msv_mls_epoch_secrets s;
    uint8_t *gi = NULL;
    size_t gi_len = 0;

    if (msv_mls_welcome_open(MSV_MLS_SUITE_X25519_AES128GCM, data, size, key_package,
                             key_package_len, init_priv, signer_pub, sizeof(signer_pub), &s, &gi,
                             &gi_len) != MSV_OK)
        return;
    if (size != welcome_len || memcmp(data, welcome, size) != 0)
        abort();
    free(gi);
}

static void update_path(const uint8_t *data, size_t size)
{
    struct msv_mls_tree t = {0, 0, NULL};
    struct msv_mls_update_path up;
    struct msv_mls_node_key key = {2, {0}};
    uint32_t path[MSV_MLS_PATH_MAX];
    uint8_t ps[MSV_MLS_NH], commit[MSV_MLS_NH];
    size_t n = 0;

    memcpy(key.sk, treekem_leaf1_sk, 32);
    if (msv_mls_tree_read(treekem_tree, treekem_tree_len, &t) != MSV_OK)
        abort();
    if (msv_mls_update_path_read(data, size, &up) == MSV_OK &&
        msv_mls_tree_filtered_path(&t, 0, path, &n) == MSV_OK &&
        msv_mls_tree_merge_path(&t, 0, &up) == MSV_OK) {
        (void)msv_mls_tree_verify(&t, treekem_gid, sizeof(treekem_gid));
        (void)msv_mls_path_open(MSV_MLS_SUITE_X25519_AES128GCM, &t, path, n, &up, 1, &key, 1, NULL,
                                0, treekem_gid, sizeof(treekem_gid), ps, commit);
    }
    msv_mls_tree_free(&t);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    setup();
    switch (data[0] % 9) {
    case 0:
        vectors(data + 1, size - 1);
        break;
    case 1:
    case 2:
    case 3:
        structure(data[0] % 9, data + 1, size - 1);
        break;
    case 4:
        public_message(data + 1, size - 1);
        break;
    case 5:
        private_message(data + 1, size - 1);
        break;
    case 6:
        transcript(data + 1, size - 1);
        break;
    case 7:
        welcome_message(data + 1, size - 1);
        break;
    default:
        update_path(data + 1, size - 1);
        break;
    }
    return 0;
}
