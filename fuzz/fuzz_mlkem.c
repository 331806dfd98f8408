/*
 * ML-KEM-768 on any bytes. The first byte chooses what the rest is:
 *   0  an encapsulation key: the key check, then encapsulation with fixed
 *      randomness, which must succeed exactly when the check passes;
 *   1  a ciphertext for a fixed key pair: decapsulation succeeds exactly when
 *      it is 1088 bytes long, and gives the sender's key for the honest one;
 *   2  a decapsulation key, used on the honest ciphertext: it is refused
 *      exactly when the decapsulation-key check refuses it.
 */
#include "common.h"
#include "missive/mlkem.h"

static uint8_t ek[MSV_MLKEM768_EK_LEN], dk[MSV_MLKEM768_DK_LEN];
static uint8_t honest_ct[MSV_MLKEM768_CT_LEN], honest_ss[MSV_MLKEM768_SS_LEN];
static const uint8_t coins[MSV_MLKEM768_COINS_LEN] = {42};

static void setup(void)
{
    static int ready;
    uint8_t seed[MSV_MLKEM768_SEED_LEN] = {1, 2, 3};

    if (ready)
        return;
    ready = 1;
    if (msv_init() != MSV_OK || msv_mlkem768_keygen_seed(seed, sizeof(seed), ek, dk) != MSV_OK ||
        msv_mlkem768_encaps_coins(ek, sizeof(ek), coins, honest_ct, honest_ss) != MSV_OK)
        abort();
}

static void encapsulation_key(const uint8_t *data, size_t size)
{
    uint8_t ct[MSV_MLKEM768_CT_LEN], ss[MSV_MLKEM768_SS_LEN];
    msv_err check = msv_mlkem768_check_ek(data, size);
    msv_err err = msv_mlkem768_encaps_coins(data, size, coins, ct, ss);

    if ((check != MSV_OK && check != MSV_ERR_PARSE) || err != check)
        abort();
}

static void ciphertext(const uint8_t *data, size_t size)
{
    uint8_t ss[MSV_MLKEM768_SS_LEN];
    msv_err err = msv_mlkem768_decaps(dk, sizeof(dk), data, size, ss);

    if (err != (size == MSV_MLKEM768_CT_LEN ? MSV_OK : MSV_ERR_AUTH))
        abort();
    if (err == MSV_OK && (memcmp(data, honest_ct, size) == 0) != (memcmp(ss, honest_ss, 32) == 0))
        abort(); /* the sender's key for the honest ciphertext, and only for it */
}

static void decapsulation_key(const uint8_t *data, size_t size)
{
    uint8_t ss[MSV_MLKEM768_SS_LEN];
    msv_err check = msv_mlkem768_check_dk(data, size);
    msv_err err = msv_mlkem768_decaps(data, size, honest_ct, sizeof(honest_ct), ss);

    if ((check != MSV_OK && check != MSV_ERR_PARSE) || err != check)
        abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    setup();
    if (size == 0)
        return 0;
    switch (data[0] % 3) {
    case 0:
        encapsulation_key(data + 1, size - 1);
        break;
    case 1:
        ciphertext(data + 1, size - 1);
        break;
    default:
        decapsulation_key(data + 1, size - 1);
        break;
    }
    return 0;
}
