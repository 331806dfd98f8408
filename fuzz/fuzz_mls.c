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
 *      works, opened for leaf 1 with its key;
 *   9  a commit for the member of the first case of
 *      tests/vectors/mls/passive-client-handling-commit.json, joined afresh
 *      for each input: taken only when it is that case's first commit.
 */
#include "common.h"
#include "mls/member.h"
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
static const char member_welcome_hex[] =
    "00010003000140a6201842620f771ae50a77ee4f65cf1beb40adc2f9a69135c9a08d943fa01ee2f8dd20a5ca2a"
    "725049ac4263d2dafc531ccec850a651e65dc200454eec0325a8f3fe094062f90fd30d40ebebabb2bc4d0f76c0"
    "9e69e18e6d2487e465ef4809a44d1de2c79ebc3f89a0d00b63c3e1c2dc3bcfc8a540b78b2fe228f16cf5858554"
    "78f00176a51aa8584dd8e5ffa35d27443c7de6e1b8074c32d6fbade83fbcf662063444ed87068246937ce93960"
    "fd0f8894e0d940221cd1c2451770cfc75eed6c52a6bcf75c442ce6c81898fd15cc30213ed74c88c31488c5741c"
    "a96d8710ca10dc4a94a40fd19896ab8c9b471611df81d6c78b8a4918ef7fa56b67460aacfa479acbde71a9ac41"
    "d3bb6ebe8237fa6ce83cdc0f42aeef8230e39537a15f520a90cb4aea7f6e0f166985780f57f255b6964bd597ee"
    "4bb8141c94bca7e912578c082da878ea2aecd37341b33e04b2d44a36efc19c6e5e6a7918e363e61a76a58562d9"
    "596a7acb492bd6d48b943e5e5b039823a3d94a0d578d5b846e24198e3b33af46529a34be7ad177b6d96205efef"
    "da6fb95f588a95bb08263de9c697acdbb616363bc2a6346f8ea5039d632726c243b292de6058de59fb2db57ff4"
    "fae64262520cce57665642f1ccae34edfbcc6d7b0eaec5ae1626eaab6fda1ae8031db03c8618fa6b280077b7f6"
    "9da0ebc65f8b8d4bf727083f7fdd2987c4e3cce2a44636ce8087e86af92ebc44f5272bf82e146f215125461e06"
    "aa996ef7c372ae44359b07cf445f0317222bf26a31efd96ad0ae705c8dd48a4167b1586f9de949064f4fa5d355"
    "0dab3e450d604ff0902bd095bd3496b6bdf435da0d267c590dcc05b6850bb4389bc472797034d8fa0b64fa766f"
    "74505aa2db37249dbc187a1ce6e6ce1d1a7606b67794c026e6bc7455dd62b3fb7f39e29563a254f9890645d290"
    "04316df3f3a6a9474fa4b6828b9d4ffac3d663696fcfce6f5e1aee509d7380d70f6e0511de45401a9a87b24ac9"
    "d6463714bf5a76f36d0970ac8309b74426f1f1eb7cbd87c489fb404415cef61594401ac89a0279d453ba81190f"
    "a3d32e0180cff2724a62bec67c2190b49b022b6d022358c034dece505658b7aac9b235ec9da7d9dec09817d74b"
    "6c9a025672d10f0f78d76f09c605bed0500dba2d9052dfcdd367d10ea47cacf498bdd4a61c50b02fdd3b590ebb"
    "2859585ba4e6bbbfb39fe9e4333b21b88ab6b9458b6f830654d25a750cea004346fb7ce692796fe1c0494085f6"
    "d6adeebc1e311f8b5b21937c15bca34c2672e1bef44f36e1741889286708fb026567d7c6e2026d9ec28812636c"
    "a81a1eb667431133992cc733e7c7d557b08fcdb9b29f265c86686f75d2398cca6fdf6676eac969957c98869437"
    "7e13c443d79f7a1b6ba7eb9b8d4354ec31f3c19b33b65604cb5d3d494d19802cd8983dd462f24934581a768417"
    "7b9b5c243fbd986a58b34b3894179b4e59e70e153fa4acdc4b465d5d18f591cd6af13d2e368b3fb87115f70def"
    "859d09d77d6002355daedcdc445dc612d08cd9e4a5718b3baa53669b2d88b18c708e6b5436ec688116ea7a6f67"
    "14b43c7c38885b9fb00c3b6def609a17c18f57ae90183f39a9a37b3e115b8c725436ee5464526bf411b944bfc0"
    "b6dad3035cddc325f53782c13df5699e20f8835a7682bc80b6644aabd4c33997cb1accf47ee4db3e4250bed85b"
    "aa34eb5165f4a9bb3e42ba54241c4c58d90a0ad40ac971702dd19499f709941f6416919f3ca36b7793371239d8"
    "121fce4b57b9d2200cd34476107b3ddb390204a921eb87de70d544cb246100cf3ddfc35e00f6fdc9de814e0181"
    "396b322a4eba3942ad6ba3f530d0ffc579a782ae6e549f2bb0da3f6f0aad346655a72a33cafb9d699c1187b959"
    "1251824955f0c69ff001e7b8c3a881bf3241cdef36c25f2d3252c7e4438c2ec69109e6c205ac37b66291519269"
    "72e36821e9ec16715d6a3717585ad12daf3b037459699b6d31b6d624ae682a9070bcbbe7dc9d5afcb8deee0ef3"
    "4fa9b95e76772a26019e1e92f48ddba33fbfdbe85437577e4589fb2751ee93701a7baefdf44c492f63c9ab0abb"
    "e789c8bb9c2f8578d8a5822561f8f8ccbccfdfdbec19019ecfed8d92c78a0580e693de75124cf3eca4b47625c3"
    "fd08654b4d0c05c56d3d127c3fc802fa84db956631604c185269986eabc3da5369d4811f6a628e163773f49e50"
    "e8a4a1ea1434ea1bfd2a478cf8c112e89def2f1b6a6d583d979e31e9fc1522a854c03a423b0ce5704efb11fa92"
    "7e7aaecfabbae9393865eca53c39bb6219f5cc1bb28d0a652b034ab45740ca27e6e9abe9813a9a790f6c228398"
    "cbd06cf3cb5cf5d3555b3b0341acdcc1e9fbe192e05866b0f3e74eb26d02a9458ac314820f0b1ac305aecbd356"
    "22d724f59fe88d9e3bdc804b680a71e1fa63bcaae5cd5b20490a61a13996a006c24438449312f6b42b1cf91377"
    "a6b449d23b23f6d63607c86ea30f073b33210008f27b92a56c1b88c56c65ef9c9aba4bfc3f8a48aba38eb3d05b"
    "58c763f787e583846a8d9c27bceaac7f6214be9c8cd72427a34c79a8ef73627e8269fcd9a659fd915de1ce2622"
    "9b1b1397c85d92c31762b9e9fcf6";
static const char member_kp_hex[] =
    "0001000500010001207f6e5b24dc2ef773c58bf16fc300646cc8ec79ed16b7f34f6fbfd101add57b6a20e99811"
    "b5e850adcde937060b6c0c2caede3a24b359cebc0c301639afe84f302f204b87beb943417e4eaeece1b8196678"
    "29c57c70d1e1c4544ed63668e030595e0300010641726e6f6c640200010e000100020003000400050006000700"
    "00020001010000000000000000ffffffffffffffff0040404f3070e5512979d191a9022f54161a952fd1585ab6"
    "d2dfeae0ccd55800877a1a3844f8f2de18e4766c31b860ba6e72994f17f330bb8f84d0e4b9e14656a069000040"
    "4047b80f60eceb259172334660e5072a25c04b837507ec5569fa4191646509b6cc1518564430cb3dbe39cd0b1d"
    "a9a771917e53cab2d36c040da101b42090df700c";
static const char member_commit_hex[] =
    "000100012035b958477b9450f623f6782b832732b14b4163da6747f7b71e5313c08b0f35d00000000000000002"
    "01000000000003000120efe5d2f7964a29c1ae49152a58b9ae2fb9c8e4e270e9846599dc9adca303c06420ca2d"
    "6c53256c3c081fb126fb73f1b85a5b01f0448ec3687ab83b66c64ce59ced000101300200010e00010002000300"
    "0400050006000700000200010320641a3954aa41849f46bcd83e33b40902313ea68111aa0f487c96b4ea5838f8"
    "980040403d5b26ae0694b8e0eedb4a46167f5ddf3918454566ee5111a32072fe77e07207821182eb06a011e5fe"
    "769fc17b7f57651b9c4c089e75f4d0410cea6aa408ee0142a720b91a8cab654ba0e3107a2d6b337b322f6111f4"
    "4c39a7b24d6a16d25cf7007e674052206a80049851583788b14474b74863a8786962787c99e4a94494479040b3"
    "f9274930f887be876ce99cf7ff7f81c2fc6d77ac16e22b70eef05369a8d2cb92badc0730293995296f41999c42"
    "80256a71641c48203f96f62690120ed6c1c0b3af6252fbfe2f97e39e65f2efb14cb02814f9d1121d40a420b4c1"
    "e0a2d81119355c35051167d778aac93f0913bde91e22846ae45a8612d24b30ac4d28673b1c4653cb27d3b6e349"
    "fdd8e8a6d0627024e22b759b40a014079030e2bfd261b184bc619cdb80448dc9b68d204f7cad039b5fd079152a"
    "53b296ff66dd1c7de171657be7561d2e3b6b6ac02b0230bc80fc36e4355171d94761c5dfb9f2616d2befd15d3e"
    "5f102521f430e4caeff2df01b1eaf100dc52af924ab2707f7bfa2095dede488926b6b987e028e20c7aa908bc70"
    "b5dc6ce93cac9fd5c207a192c94d4148208436296232ca550be3a27a7ab5dcaa08a83dc7d6a95dfa8294f90489"
    "a1161b7430eb3bd1d0f91d9c42f9248ab880af171d8ae9ba0b3c9500f4a8e487c8b95eb2e4df710e3c127875f2"
    "905c4d677319000a207d762dfe097b159b983887955b6ef76fb4d2d146103a98b6dd4b8ac38055b51830ef3eef"
    "45226d4b3c74c0c29726d674c9d306bd690b502515e23383492a7b4e13428c67edcb9b0336e0d9f1b59e0a1ed6"
    "20abcc7ddd22855bb4e4aeb52b3d79afe026454785b181d2146d20e490de0dc6193015f9286bf8d862c4a25a0d"
    "2ed3c77e045c504b442b2d26efac264c148eaa776fd4918ee9195b17863d4c9e6e0a7b02d3201cb6b12bdc1a1d"
    "a8bac2e393e0dc0c4ff24b5567c467623d0103d54df4ce507b30637d846647991be51576d8f6dcb3e956f6bb35"
    "d428ba6e3ce7f9b27fb29d21f2caecd239fd8fcf6def64eae37677bfd340404167614024e34dc7a9e73babe17d"
    "e8d3ef96c01b755edf467217569f72bd238f643a86ba2a4c61c994b05d43dca1af883d2e84526d0bee7c0275d2"
    "be9a2ec80d205477501799f8220ca041a3a1714b8ca1fc01d609c1dac0dc6a92fe3adfb0bbf4209d82e35a9c9d"
    "09a637667f5b9cf516e8d64532f44253409b1b25e3caf2a8f14f";
static uint8_t *member_welcome, *member_kp, *member_commit, member_init[32], member_leaf[32];
static size_t member_welcome_len, member_kp_len, member_commit_len;
static uint8_t *member_psk_id, *member_psk;
static size_t member_psk_id_len, member_psk_len;
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
    member_welcome = unhex_alloc(member_welcome_hex, &member_welcome_len);
    member_kp = unhex_alloc(member_kp_hex, &member_kp_len);
    member_commit = unhex_alloc(member_commit_hex, &member_commit_len);
    member_psk_id = unhex_alloc("65787465726e616c2070736b", &member_psk_id_len);
    member_psk = unhex_alloc("7365637265742070736b206b6579", &member_psk_len);
    unhex("c0e02f2cc4153894b0ccd87468e88fd404d8b533db7b3053f62320cfa18c0e53", member_init);
    unhex("00051c57f38e724af9dcf3710489c0782026b28ee83a9aa0c89de02ae3574b6b", member_leaf);
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

static void member_commit_message(const uint8_t *data, size_t size)
{
    struct msv_mls_external_psk psk = {member_psk_id, member_psk_id_len, member_psk,
                                       member_psk_len};
    struct msv_mls_member *m = NULL;

    if (msv_mls_member_join(MSV_MLS_SUITE_X25519_AES128GCM, member_welcome, member_welcome_len,
                            member_kp, member_kp_len, member_init, member_leaf, &psk, 1, NULL, 0,
                            &m) != MSV_OK)
        abort();
    if (msv_mls_member_commit(m, NULL, NULL, 0, data, size) == MSV_OK &&
        (size != member_commit_len || memcmp(data, member_commit, size) != 0))
        abort();
    msv_mls_member_free(m);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    setup();
    switch (data[0] % 10) {
    case 0:
        vectors(data + 1, size - 1);
        break;
    case 1:
    case 2:
    case 3:
        structure(data[0] % 10, data + 1, size - 1);
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
    case 8:
        update_path(data + 1, size - 1);
        break;
    default:
        member_commit_message(data + 1, size - 1);
        break;
    }
    return 0;
}
