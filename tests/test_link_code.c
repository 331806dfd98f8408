/*
 * Linking by QR code: the code's text, the sealed provisioning message (only
 * the code's ephemeral key opens it, and only for the address and device the
 * code names: a message swapped by the server, or replayed to a later code, is
 * refused), the Provision's checks, and the server's provisioning addresses
 * (one per connection, a few per client address, one link, one message,
 * expiry).
 */
#include <stdarg.h>
#include <setjmp.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <sodium.h>

#include "client/link.h"
#include "missive/util.h"
#include "server/provision.h"

static void a_code(struct msv_link_code *code, uint8_t sk[32])
{
    randombytes_buf(code->address, sizeof(code->address));
    randombytes_buf(sk, 32);
    assert_int_equal(crypto_scalarmult_base(code->ephemeral, sk), 0);
    randombytes_buf(code->fingerprint, sizeof(code->fingerprint));
}

static void test_code_text(void **state)
{
    struct msv_link_code code, back;
    uint8_t sk[32];
    char text[MSV_LINK_CODE_LEN + 1], line[MSV_LINK_CODE_LEN + 8], bad[MSV_LINK_CODE_LEN + 1];

    (void)state;
    a_code(&code, sk);
    msv_link_code_format(&code, text);
    assert_int_equal(strlen(text), MSV_LINK_CODE_LEN);
    assert_int_equal(msv_link_code_parse(text, &back), MSV_OK);
    assert_memory_equal(&code, &back, sizeof(code));
    snprintf(line, sizeof(line), "  %s\r\n", text); /* as pasted */
    assert_int_equal(msv_link_code_parse(line, &back), MSV_OK);
    assert_memory_equal(&code, &back, sizeof(code));

    assert_int_equal(msv_link_code_parse("", &back), MSV_ERR_PARSE);
    assert_int_equal(msv_link_code_parse("missive:join?g=1", &back), MSV_ERR_PARSE);
    memcpy(bad, text, sizeof(bad));
    bad[MSV_LINK_CODE_LEN - 1] = '\0'; /* one digit short */
    assert_int_equal(msv_link_code_parse(bad, &back), MSV_ERR_PARSE);
    memcpy(bad, text, sizeof(bad));
    bad[20] = 'g'; /* not hex */
    assert_int_equal(msv_link_code_parse(bad, &back), MSV_ERR_PARSE);
    memcpy(bad, text, sizeof(bad));
    bad[15 + 32] = '-'; /* a separator missing */
    assert_int_equal(msv_link_code_parse(bad, &back), MSV_ERR_PARSE);
    memcpy(bad, text, sizeof(bad));
    bad[13] = '2'; /* a later version */
    assert_int_equal(msv_link_code_parse(bad, &back), MSV_ERR_INVALID);
}

static void test_seal(void **state)
{
    struct msv_link_code code, other;
    uint8_t sk[32], other_sk[32], *sealed = NULL, *pt = NULL;
    size_t sealed_len = 0, pt_len = 0;
    const uint8_t msg[] = "the account";

    (void)state;
    a_code(&code, sk);
    assert_int_equal(msv_link_seal(&code, msg, sizeof(msg), &sealed, &sealed_len), MSV_OK);
    assert_int_equal(msv_link_open(&code, sk, sealed, sealed_len, &pt, &pt_len), MSV_OK);
    assert_int_equal(pt_len, sizeof(msg));
    assert_memory_equal(pt, msg, sizeof(msg));
    msv_secret_free(pt, pt_len);

    /* another address or another device's fingerprint: the server cannot move it */
    other = code;
    other.address[0] ^= 1;
    assert_int_equal(msv_link_open(&other, sk, sealed, sealed_len, &pt, &pt_len), MSV_ERR_AUTH);
    other = code;
    other.fingerprint[31] ^= 0x80;
    assert_int_equal(msv_link_open(&other, sk, sealed, sealed_len, &pt, &pt_len), MSV_ERR_AUTH);
    /* an old message replayed to a new code (a new ephemeral key) */
    a_code(&other, other_sk);
    memcpy(other.address, code.address, 16);
    memcpy(other.fingerprint, code.fingerprint, 32);
    assert_int_equal(msv_link_open(&other, other_sk, sealed, sealed_len, &pt, &pt_len),
                     MSV_ERR_AUTH);
    /* every byte changed, and every length cut, is refused */
    for (size_t i = 0; i < sealed_len; i++) {
        sealed[i] ^= 0x20;
        assert_int_equal(msv_link_open(&code, sk, sealed, sealed_len, &pt, &pt_len), MSV_ERR_AUTH);
        sealed[i] ^= 0x20;
    }
    for (size_t n = 0; n < sealed_len; n++)
        assert_int_equal(msv_link_open(&code, sk, sealed, n, &pt, &pt_len), MSV_ERR_AUTH);
    free(sealed);
    /* a message that could not fit at an address is not made */
    {
        static uint8_t big[MSV_LINK_SEALED_MAX];

        assert_int_equal(msv_link_seal(&code, big, sizeof(big), &sealed, &sealed_len),
                         MSV_ERR_TOO_BIG);
    }
}

static size_t packed(const Msv__Wire__Provision *p, uint8_t *out)
{
    return msv__wire__provision__pack(p, out);
}

/* A Provision that keeps every rule: device 2 of alice@example.org, approved by device 1. */
static void a_provision(Msv__Wire__Provision *p, uint8_t fp[32], uint8_t sig[64])
{
    p->version = 1;
    p->handle = (ProtobufCBinaryData){17, (uint8_t *)"alice@example.org"};
    p->device_id = 2;
    p->approver_id = 1;
    p->approver_fingerprint = (ProtobufCBinaryData){32, fp};
    p->signature = (ProtobufCBinaryData){64, sig};
}

static void test_provision_fields(void **state)
{
    Msv__Wire__Provision p = MSV__WIRE__PROVISION__INIT, *back = NULL;
    uint8_t fp[32] = {1}, sig[64] = {2}, key[32] = {3}, buf[1024];
    size_t len;

    (void)state;
    a_provision(&p, fp, sig);
    len = packed(&p, buf);
    assert_int_equal(msv_link_provision_parse(buf, len, &back), MSV_OK);
    assert_int_equal(back->device_id, 2);
    msv__wire__provision__free_unpacked(back, NULL);

    /* each rule broken in turn */
    p.version = 2;
    assert_int_equal(msv_link_provision_parse(buf, packed(&p, buf), &back), MSV_ERR_PARSE);
    p.version = 1;
    p.approver_id = 2; /* the approver cannot be the new device */
    assert_int_equal(msv_link_provision_parse(buf, packed(&p, buf), &back), MSV_ERR_PARSE);
    p.approver_id = 1;
    p.approver_fingerprint.len = 31;
    assert_int_equal(msv_link_provision_parse(buf, packed(&p, buf), &back), MSV_ERR_PARSE);
    p.approver_fingerprint.len = 32;
    p.signature.len = 0;
    assert_int_equal(msv_link_provision_parse(buf, packed(&p, buf), &back), MSV_ERR_PARSE);
    p.signature.len = 64;
    p.handle.len = 0;
    assert_int_equal(msv_link_provision_parse(buf, packed(&p, buf), &back), MSV_ERR_PARSE);
    p.handle.len = 17;
    p.history_key = (ProtobufCBinaryData){32, key}; /* half a history reference */
    assert_int_equal(msv_link_provision_parse(buf, packed(&p, buf), &back), MSV_ERR_PARSE);
    assert_int_equal(msv_link_provision_parse((const uint8_t *)"\xff\xff", 2, &back),
                     MSV_ERR_PARSE);

    /* a history to come: its archive's id (16 bytes) with its key, and nothing of a blob */
    {
        uint8_t archive[16] = {4}, sha[32] = {5};

        p.history_archive = (ProtobufCBinaryData){16, archive};
        assert_int_equal(msv_link_provision_parse(buf, packed(&p, buf), &back), MSV_OK);
        assert_memory_equal(back->history_archive.data, archive, 16);
        msv__wire__provision__free_unpacked(back, NULL);
        p.history_archive.len = 15;
        assert_int_equal(msv_link_provision_parse(buf, packed(&p, buf), &back), MSV_ERR_PARSE);
        p.history_archive.len = 16;
        p.history_key.len = 0; /* no key for it */
        assert_int_equal(msv_link_provision_parse(buf, packed(&p, buf), &back), MSV_ERR_PARSE);
        p.history_key.len = 32;
        p.history_sha256 = (ProtobufCBinaryData){32, sha}; /* an archive to come and a blob */
        p.history_blob = (ProtobufCBinaryData){7, (uint8_t *)"blob:00"};
        p.history_size = 10;
        assert_int_equal(msv_link_provision_parse(buf, packed(&p, buf), &back), MSV_ERR_PARSE);
        p.history_archive.len = 0; /* the blob alone, as an earlier version sends it */
        assert_int_equal(msv_link_provision_parse(buf, packed(&p, buf), &back), MSV_OK);
        msv__wire__provision__free_unpacked(back, NULL);
    }
}

/* The account's state in the message: every entry as a sync carries it, verified marks whole. */
static void test_provision_state(void **state)
{
    Msv__Wire__Provision p = MSV__WIRE__PROVISION__INIT, *back = NULL;
    Msv__Wire__ProvisionSetting set = MSV__WIRE__PROVISION_SETTING__INIT, *sets[1] = {&set};
    Msv__Wire__ProvisionGroup group = MSV__WIRE__PROVISION_GROUP__INIT, *groups[1] = {&group};
    uint8_t fp[32] = {1}, sig[64] = {2}, digest[32] = {4}, gid[16] = {5}, buf[2048];

    (void)state;
    a_provision(&p, fp, sig);
    p.settings = sets;
    p.n_settings = 1;
    set.key = "sync:privacy:read-receipts";
    set.value = (ProtobufCBinaryData){3, (uint8_t *)"off"};
    set.stamp = 7;
    assert_int_equal(msv_link_provision_parse(buf, packed(&p, buf), &back), MSV_OK);
    assert_int_equal(back->n_settings, 1);
    assert_string_equal(back->settings[0]->key, "sync:privacy:read-receipts");
    msv__wire__provision__free_unpacked(back, NULL);
    set.key = "identity"; /* no synced key: a device's own secrets never come this way */
    assert_int_equal(msv_link_provision_parse(buf, packed(&p, buf), &back), MSV_ERR_PARSE);
    set.stamp = 0; /* unstamped: a verified mark only, with its 32-byte digest */
    assert_int_equal(msv_link_provision_parse(buf, packed(&p, buf), &back), MSV_ERR_PARSE);
    set.key = "verified-set:bob@example.org";
    set.value = (ProtobufCBinaryData){31, digest};
    assert_int_equal(msv_link_provision_parse(buf, packed(&p, buf), &back), MSV_ERR_PARSE);
    set.value.len = 32;
    assert_int_equal(msv_link_provision_parse(buf, packed(&p, buf), &back), MSV_OK);
    msv__wire__provision__free_unpacked(back, NULL);
    set.deleted = 1;
    assert_int_equal(msv_link_provision_parse(buf, packed(&p, buf), &back), MSV_ERR_PARSE);
    set.deleted = 0;
    set.key = "verified-set:";
    assert_int_equal(msv_link_provision_parse(buf, packed(&p, buf), &back), MSV_ERR_PARSE);
    set.key = "verified-set:bob@example.org";
    p.groups = groups;
    p.n_groups = 1;
    group.group_id = (ProtobufCBinaryData){15, gid}; /* a group id is 16 bytes */
    group.state = (ProtobufCBinaryData){4, (uint8_t *)"MSV-"};
    assert_int_equal(msv_link_provision_parse(buf, packed(&p, buf), &back), MSV_ERR_PARSE);
    group.group_id.len = 16;
    group.state.len = 0; /* and has a state */
    assert_int_equal(msv_link_provision_parse(buf, packed(&p, buf), &back), MSV_ERR_PARSE);
    group.state.len = 4;
    assert_int_equal(msv_link_provision_parse(buf, packed(&p, buf), &back), MSV_OK);
    msv__wire__provision__free_unpacked(back, NULL);
}

static void test_addresses(void **state)
{
    struct msv_provisions *p = calloc(1, sizeof(*p));
    _Atomic uint64_t expired = 0;
    uint8_t a[MSV_PROVISION_ADDRESS_LEN], b[MSV_PROVISION_ADDRESS_LEN], id[3] = {1, 2, 3};
    uint8_t *identity = NULL, *msg = NULL;
    size_t identity_len = 0, len = 0;
    uint32_t suite = 0;
    int owners[MSV_PROVISION_PER_ADDRESS + 2];

    (void)state;
    assert_non_null(p);
    msv_provisions_init(p, &expired);
    assert_int_equal(msv_provision_open(p, &owners[0], 7, 0, 3, id, 3, a), MSV_OK);
    /* one per connection */
    assert_int_equal(msv_provision_open(p, &owners[0], 7, 0, 3, id, 3, b), MSV_ERR_EXISTS);
    /* a few per client address */
    for (int i = 1; i < MSV_PROVISION_PER_ADDRESS; i++)
        assert_int_equal(msv_provision_open(p, &owners[i], 7, 0, 3, id, 3, b), MSV_OK);
    assert_int_equal(msv_provision_open(p, &owners[MSV_PROVISION_PER_ADDRESS], 7, 0, 3, id, 3, b),
                     MSV_ERR_AGAIN);
    assert_int_equal(msv_provision_open(p, &owners[MSV_PROVISION_PER_ADDRESS], 8, 0, 3, id, 3, b),
                     MSV_OK);

    /* no message before a link; one link; one message of a bounded size */
    assert_int_equal(msv_provision_put(p, a, 16, 0, (const uint8_t *)"m", 1), MSV_ERR_NOT_FOUND);
    assert_int_equal(msv_provision_take(p, &owners[0], 0, &msg, &len), MSV_ERR_AGAIN);
    assert_int_equal(msv_provision_link(p, a, 15, 0, &suite, &identity, &identity_len),
                     MSV_ERR_NOT_FOUND);
    assert_int_equal(msv_provision_link(p, a, 16, 0, &suite, &identity, &identity_len), MSV_OK);
    assert_int_equal(suite, 3);
    assert_int_equal(identity_len, 3);
    assert_memory_equal(identity, id, 3);
    free(identity);
    assert_int_equal(msv_provision_link(p, a, 16, 0, &suite, &identity, &identity_len),
                     MSV_ERR_EXISTS);
    assert_int_equal(msv_provision_put(p, a, 16, 0, msg, MSV_PROVISION_MESSAGE_MAX + 1),
                     MSV_ERR_TOO_BIG);
    assert_int_equal(msv_provision_put(p, a, 16, 0, (const uint8_t *)"m1", 2), MSV_OK);
    assert_int_equal(msv_provision_put(p, a, 16, 0, (const uint8_t *)"m2", 2), MSV_ERR_EXISTS);
    assert_int_equal(msv_provision_take(p, &owners[1], 0, &msg, &len), MSV_ERR_AGAIN);
    assert_int_equal(msv_provision_take(p, &owners[0], 0, &msg, &len), MSV_OK);
    assert_int_equal(len, 2);
    assert_memory_equal(msg, "m1", 2);
    free(msg);
    /* taken: the address is gone */
    assert_int_equal(msv_provision_take(p, &owners[0], 0, &msg, &len), MSV_ERR_NOT_FOUND);

    /* a closed connection's address goes; the others expire after 10 minutes */
    msv_provision_forget(p, &owners[1]);
    assert_int_equal(msv_provision_take(p, &owners[1], 0, &msg, &len), MSV_ERR_NOT_FOUND);
    assert_int_equal(msv_provision_take(p, &owners[2], MSV_PROVISION_TTL_MS - 1, &msg, &len),
                     MSV_ERR_AGAIN);
    assert_int_equal(msv_provision_take(p, &owners[2], MSV_PROVISION_TTL_MS, &msg, &len),
                     MSV_ERR_NOT_FOUND);
    assert_int_equal(expired, 3);
    msv_provisions_clear(p);
    free(p);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_code_text),        cmocka_unit_test(test_seal),
        cmocka_unit_test(test_provision_fields), cmocka_unit_test(test_provision_state),
        cmocka_unit_test(test_addresses),
    };

    if (msv_init() != MSV_OK)
        return 1;
    return cmocka_run_group_tests_name("link_code", tests, NULL, NULL);
}
