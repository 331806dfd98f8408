/* The wire module: frame headers and splitting, Frame messages, and the payload structure. */
#include <stdarg.h>
#include <setjmp.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "helpers.h"
#include "missive/payload.h"
#include "missive/wire.h"
#include "payload.pb-c.h"
#include "wire/frame.h"

static void test_frame_header(void **state)
{
    uint8_t hdr[4];

    (void)state;
    assert_int_equal(msv_frame_header_write(0x010203, MSV_FRAME_MAX_LIMIT, hdr), MSV_OK);
    assert_memory_equal(hdr, "\x01\x01\x02\x03", 4);
    assert_int_equal(msv_frame_header_write(0, 100, hdr), MSV_ERR_INVALID);
    assert_int_equal(msv_frame_header_write(101, 100, hdr), MSV_ERR_TOO_BIG);
    assert_int_equal(msv_frame_header_write(MSV_FRAME_MAX_LIMIT + 1, SIZE_MAX, hdr),
                     MSV_ERR_TOO_BIG);
}

/* Two frames back to back, fed one byte more at a time. */
static void test_frame_split_incremental(void **state)
{
    uint8_t stream[4 + 3 + 4 + 1] = {1, 0, 0, 3, 'a', 'b', 'c', 1, 0, 0, 1, 'z'};
    const uint8_t *body = NULL;
    size_t body_len = 0, used = 0;

    (void)state;
    for (size_t have = 0; have < 7; have++)
        assert_int_equal(msv_frame_split(stream, have, 100, &body, &body_len, &used),
                         MSV_ERR_AGAIN);
    assert_int_equal(msv_frame_split(stream, sizeof(stream), 100, &body, &body_len, &used), MSV_OK);
    assert_int_equal(body_len, 3);
    assert_int_equal(used, 7);
    assert_memory_equal(body, "abc", 3);
    assert_int_equal(
        msv_frame_split(stream + used, sizeof(stream) - used, 100, &body, &body_len, &used),
        MSV_OK);
    assert_int_equal(body_len, 1);
    assert_int_equal(body[0], 'z');
}

static void test_frame_split_refusals(void **state)
{
    const uint8_t *body = NULL;
    size_t body_len = 0, used = 0;

    (void)state;
    /* a wrong version is refused on its first byte, without waiting for more */
    assert_int_equal(msv_frame_split((const uint8_t *)"\x02", 1, 100, &body, &body_len, &used),
                     MSV_ERR_UNSUPPORTED);
    assert_int_equal(
        msv_frame_split((const uint8_t *)"\x00\x00\x00\x01", 4, 100, &body, &body_len, &used),
        MSV_ERR_UNSUPPORTED);
    /* an oversized length is refused as soon as the header is complete */
    assert_int_equal(
        msv_frame_split((const uint8_t *)"\x01\x00\x00\x65", 4, 100, &body, &body_len, &used),
        MSV_ERR_TOO_BIG);
    assert_int_equal(msv_frame_split((const uint8_t *)"\x01\xff\xff\xff", 4, MSV_FRAME_MAX_DEFAULT,
                                     &body, &body_len, &used),
                     MSV_ERR_TOO_BIG);
    assert_int_equal(
        msv_frame_split((const uint8_t *)"\x01\x00\x00\x00", 4, 100, &body, &body_len, &used),
        MSV_ERR_PARSE);
    assert_null(body);
}

static void test_frame_encode_decode(void **state)
{
    Msv__Wire__Frame f = MSV__WIRE__FRAME__INIT, *back = NULL;
    Msv__Wire__SendRequest send = MSV__WIRE__SEND_REQUEST__INIT;
    Msv__Wire__Envelope env[2] = {MSV__WIRE__ENVELOPE__INIT, MSV__WIRE__ENVELOPE__INIT};
    Msv__Wire__Envelope *envs[2] = {&env[0], &env[1]};
    uint8_t id[16], ct[64], *wire = NULL;
    size_t len = 0, body_len = 0, used = 0;
    const uint8_t *body = NULL;

    (void)state;
    test_fill_pattern(id, sizeof(id), 1);
    test_fill_pattern(ct, sizeof(ct), 2);
    for (int i = 0; i < 2; i++) {
        env[i].recipient_device = 1000 + (uint64_t)i;
        env[i].suite = 3;
        env[i].ciphertext.data = ct;
        env[i].ciphertext.len = sizeof(ct) - (size_t)i;
    }
    send.message_id.data = id;
    send.message_id.len = sizeof(id);
    send.n_envelopes = 2;
    send.envelopes = envs;
    f.request_id = 77;
    f.body_case = MSV__WIRE__FRAME__BODY_SEND;
    f.send = &send;

    assert_int_equal(msv_frame_encode(&f, 32, &wire, &len), MSV_ERR_TOO_BIG);
    assert_int_equal(msv_frame_encode(&f, MSV_FRAME_MAX_DEFAULT, &wire, &len), MSV_OK);
    assert_int_equal(msv_frame_split(wire, len, MSV_FRAME_MAX_DEFAULT, &body, &body_len, &used),
                     MSV_OK);
    assert_int_equal(used, len);
    assert_int_equal(msv_frame_decode(body, body_len, &back), MSV_OK);
    assert_int_equal(back->request_id, 77);
    assert_int_equal(back->body_case, MSV__WIRE__FRAME__BODY_SEND);
    assert_int_equal(back->send->n_envelopes, 2);
    assert_int_equal(back->send->envelopes[1]->recipient_device, 1001);
    assert_int_equal(back->send->envelopes[1]->ciphertext.len, 63);
    assert_memory_equal(back->send->envelopes[0]->ciphertext.data, ct, 64);
    msv_frame_free(back);
    back = NULL;

    /* a frame that carries no message, and bytes that are not protobuf, are refused */
    assert_int_equal(msv_frame_decode((const uint8_t *)"\x08\x05", 2, &back), MSV_ERR_PARSE);
    assert_int_equal(msv_frame_decode((const uint8_t *)"\x4a\x7f\x01", 3, &back), MSV_ERR_PARSE);
    assert_int_equal(msv_frame_decode((const uint8_t *)"\xff\xff\xff", 3, &back), MSV_ERR_PARSE);
    assert_null(back);
    /* every truncation of the body either fails or decodes to a frame without the cut data */
    for (size_t cut = 0; cut < body_len; cut++) {
        if (msv_frame_decode(body, cut, &back) == MSV_OK) {
            assert_true(back->body_case != MSV__WIRE__FRAME__BODY_SEND ||
                        back->send->n_envelopes < 2 ||
                        back->send->envelopes[1]->ciphertext.len < 63);
            msv_frame_free(back);
            back = NULL;
        }
    }
    free(wire);
    f.body_case = MSV__WIRE__FRAME__BODY__NOT_SET;
    assert_int_equal(msv_frame_encode(&f, MSV_FRAME_MAX_DEFAULT, &wire, &len), MSV_ERR_INVALID);
}

/* ---- payloads ----------------------------------------------------------------------------- */

static void fill_message(struct msv_payload *p, char *text)
{
    memset(p, 0, sizeof(*p));
    p->kind = MSV_KIND_MESSAGE;
    test_fill_pattern(p->message_id, MSV_ID_LEN, 9);
    p->sent_at_ms = 1795000000000ull;
    p->text = text;
}

static struct msv_payload *round_trip(const struct msv_payload *p)
{
    uint8_t *enc = NULL;
    size_t len = 0;
    struct msv_payload *back = NULL;

    assert_int_equal(msv_payload_encode(p, &enc, &len), MSV_OK);
    assert_int_equal(msv_payload_parse(enc, len, &back), MSV_OK);
    free(enc);
    return back;
}

static void test_payload_message_round_trip(void **state)
{
    char text[] = "hello \xf0\x9f\x91\x8b";
    char *people[] = {"alice@example.org", "+15551234567", "bob@example.org"};
    struct msv_attachment_ref att = {
        .uri = "blob:abcdef", .size = 12345, .name = "cat.jpg", .mime = "image/jpeg"};
    struct msv_payload p, *back;

    (void)state;
    fill_message(&p, text);
    p.participants = people;
    p.participant_count = 3;
    p.has_group = true;
    test_fill_pattern(p.group_id, MSV_ID_LEN, 4);
    p.group_name = "Lunch";
    p.has_reply_to = true;
    test_fill_pattern(p.reply_to, MSV_ID_LEN, 5);
    test_fill_pattern(att.key, 32, 6);
    test_fill_pattern(att.sha256, 32, 7);
    test_fill_pattern(att.sha1, 20, 8);
    p.attachments = &att;
    p.attachment_count = 1;
    p.has_log_head = true;
    test_fill_pattern(p.log_head, MSV_LOG_HEAD_LEN, 9);
    p.has_log_epoch = true;
    test_fill_pattern(p.log_epoch, MSV_LOG_EPOCH_LEN, 10);

    back = round_trip(&p);
    assert_int_equal(back->kind, MSV_KIND_MESSAGE);
    assert_memory_equal(back->message_id, p.message_id, MSV_ID_LEN);
    assert_int_equal(back->sent_at_ms, p.sent_at_ms);
    assert_string_equal(back->text, text);
    assert_int_equal(back->participant_count, 3);
    assert_string_equal(back->participants[1], "+15551234567");
    assert_true(back->has_group);
    assert_memory_equal(back->group_id, p.group_id, MSV_ID_LEN);
    assert_string_equal(back->group_name, "Lunch");
    assert_true(back->has_reply_to);
    assert_false(back->has_target);
    assert_int_equal(back->attachment_count, 1);
    assert_string_equal(back->attachments[0].uri, "blob:abcdef");
    assert_string_equal(back->attachments[0].mime, "image/jpeg");
    assert_memory_equal(back->attachments[0].key, att.key, 32);
    assert_memory_equal(back->attachments[0].sha1, att.sha1, 20);
    assert_int_equal(back->attachments[0].size, 12345);
    assert_true(back->has_log_head);
    assert_memory_equal(back->log_head, p.log_head, MSV_LOG_HEAD_LEN);
    assert_true(back->has_log_epoch);
    assert_memory_equal(back->log_epoch, p.log_epoch, MSV_LOG_EPOCH_LEN);
    msv_payload_free(back);
    /* a key directory root only comes with the head whose size it is for */
    p.has_log_head = false;
    back = NULL;
    {
        uint8_t *enc = NULL;
        size_t len = 0;

        assert_int_equal(msv_payload_encode(&p, &enc, &len), MSV_ERR_INVALID);
        assert_null(enc);
    }
}

static void test_payload_kinds(void **state)
{
    struct msv_payload p, *back;
    char *member = "carol@example.org";
    uint8_t *enc = NULL;
    size_t len = 0;

    (void)state;
    /* a read receipt names its target and carries nothing else */
    fill_message(&p, NULL);
    p.kind = MSV_KIND_RECEIPT_READ;
    assert_int_equal(msv_payload_encode(&p, &enc, &len), MSV_ERR_INVALID);
    p.has_target = true;
    test_fill_pattern(p.target_id, MSV_ID_LEN, 3);
    back = round_trip(&p);
    assert_int_equal(back->kind, MSV_KIND_RECEIPT_READ);
    assert_null(back->text);
    msv_payload_free(back);
    p.text = "no text on receipts";
    assert_int_equal(msv_payload_encode(&p, &enc, &len), MSV_ERR_INVALID);

    /* an edit needs a target, new text and its edit number */
    p.kind = MSV_KIND_EDIT;
    p.text = "fixed typo";
    assert_int_equal(msv_payload_encode(&p, &enc, &len), MSV_ERR_INVALID);
    p.edit_number = 3;
    back = round_trip(&p);
    assert_string_equal(back->text, "fixed typo");
    assert_int_equal(back->edit_number, 3);
    msv_payload_free(back);
    p.edit_number = MSV_EDITS_MAX + 1; /* so that a message's versions stay bounded */
    assert_int_equal(msv_payload_encode(&p, &enc, &len), MSV_ERR_INVALID);
    p.edit_number = 3;
    p.has_target = false;
    assert_int_equal(msv_payload_encode(&p, &enc, &len), MSV_ERR_INVALID);
    /* an edit number belongs to edits only */
    p.has_target = true;
    p.kind = MSV_KIND_UNSEND;
    p.text = NULL;
    assert_int_equal(msv_payload_encode(&p, &enc, &len), MSV_ERR_INVALID);
    p.edit_number = 0;

    /* typing carries nothing */
    fill_message(&p, NULL);
    p.kind = MSV_KIND_TYPING;
    back = round_trip(&p);
    assert_int_equal(back->kind, MSV_KIND_TYPING);
    msv_payload_free(back);

    /* a group change needs the group and its members */
    p.kind = MSV_KIND_GROUP_CHANGE;
    p.has_group = true;
    assert_int_equal(msv_payload_encode(&p, &enc, &len), MSV_ERR_INVALID);
    p.participants = &member;
    p.participant_count = 1;
    p.group_name = "Renamed";
    back = round_trip(&p);
    assert_string_equal(back->group_name, "Renamed");
    msv_payload_free(back);

    /* an empty message, a zero message id, an unknown kind */
    fill_message(&p, "");
    assert_int_equal(msv_payload_encode(&p, &enc, &len), MSV_ERR_INVALID);
    fill_message(&p, "x");
    memset(p.message_id, 0, MSV_ID_LEN);
    assert_int_equal(msv_payload_encode(&p, &enc, &len), MSV_ERR_INVALID);
    fill_message(&p, "x");
    p.kind = (enum msv_payload_kind)99;
    assert_int_equal(msv_payload_encode(&p, &enc, &len), MSV_ERR_INVALID);
    /* a group name without a group */
    fill_message(&p, "x");
    p.group_name = "orphan";
    assert_int_equal(msv_payload_encode(&p, &enc, &len), MSV_ERR_INVALID);
    assert_null(enc);
}

static void test_payload_limits(void **state)
{
    struct msv_payload p, *back = NULL;
    char *text = malloc(MSV_TEXT_MAX + 2), bad_utf8[] = "caf\xc3";
    uint8_t *enc = NULL;
    size_t len = 0;

    (void)state;
    assert_non_null(text);
    memset(text, 'a', MSV_TEXT_MAX);
    text[MSV_TEXT_MAX] = '\0';
    fill_message(&p, text);
    back = round_trip(&p);
    assert_int_equal(strlen(back->text), MSV_TEXT_MAX);
    msv_payload_free(back);
    text[MSV_TEXT_MAX] = 'a';
    text[MSV_TEXT_MAX + 1] = '\0';
    assert_int_equal(msv_payload_encode(&p, &enc, &len), MSV_ERR_INVALID);
    fill_message(&p, bad_utf8);
    assert_int_equal(msv_payload_encode(&p, &enc, &len), MSV_ERR_INVALID);
    free(text);
}

/* A reaction: one short emoji on a target, or none (taken away); anything else is refused. */
static void test_payload_reaction(void **state)
{
    static const char *const refused[] = {
        "", "a b", "\t", "\x7f", "\xc2\x85", "\xe2\x80", "123456789012345678901234567890123",
    };
    struct msv_payload p, *back;
    uint8_t *enc = NULL;
    size_t len = 0;

    (void)state;
    fill_message(&p, "\xf0\x9f\x91\x8d");
    p.kind = MSV_KIND_REACTION;
    assert_int_equal(msv_payload_encode(&p, &enc, &len), MSV_ERR_INVALID); /* no target */
    p.has_target = true;
    test_fill_pattern(p.target_id, MSV_ID_LEN, 4);
    back = round_trip(&p);
    assert_int_equal(back->kind, MSV_KIND_REACTION);
    assert_string_equal(back->text, "\xf0\x9f\x91\x8d");
    assert_memory_equal(back->target_id, p.target_id, MSV_ID_LEN);
    msv_payload_free(back);
    p.text = NULL; /* removal */
    back = round_trip(&p);
    assert_null(back->text);
    msv_payload_free(back);
    /* a flag of 4 code points (16 bytes) and the longest allowed are fine */
    assert_true(msv_payload_reaction_is_valid("\xf0\x9f\x87\xab\xf0\x9f\x87\xb7"));
    assert_true(msv_payload_reaction_is_valid("12345678901234567890123456789012"));
    for (size_t i = 0; i < sizeof(refused) / sizeof(refused[0]); i++) {
        assert_false(msv_payload_reaction_is_valid(refused[i]));
        if (refused[i][0] == '\0')
            continue;
        p.text = (char *)refused[i];
        assert_int_equal(msv_payload_encode(&p, &enc, &len), MSV_ERR_INVALID);
    }
    assert_null(enc);
    assert_string_equal(msv_payload_kind_name(MSV_KIND_REACTION), "reaction");
}

/* Mentions: ranges of a message's text on character boundaries, each naming a handle. */
static void test_payload_mentions(void **state)
{
    /* "hé @bob and @zoë!": @bob at 4 (4 bytes), @zoë at 13 (5 bytes) */
    char text[] = "h\xc3\xa9 @bob and @zo\xc3\xab!";
    struct msv_mention m[MSV_MENTIONS_MAX + 1] = {{4, 4, "bob@example.org"},
                                                  {13, 5, "zoe@example.org"}};
    static const struct {
        uint32_t start, length;
    } refused[] = {
        {2, 2},           /* starts inside é */
        {13, 4},          /* ends inside ë */
        {4, 0},           /* empty */
        {19, 1},          /* past the end */
        {0xffffffffu, 2}, /* far past it */
        {4, 0xfffffffeu}, /* start + length wraps */
    };
    struct msv_payload p, *back;
    uint8_t *enc = NULL;
    size_t len = 0;

    (void)state;
    fill_message(&p, text);
    p.mentions = m;
    p.mention_count = 2;
    back = round_trip(&p);
    assert_int_equal(back->mention_count, 2);
    assert_int_equal(back->mentions[1].start, 13);
    assert_int_equal(back->mentions[1].length, 5);
    assert_string_equal(back->mentions[1].handle, "zoe@example.org");
    msv_payload_free(back);
    for (size_t i = 0; i < sizeof(refused) / sizeof(refused[0]); i++) {
        m[1].start = refused[i].start;
        m[1].length = refused[i].length;
        assert_int_equal(msv_payload_encode(&p, &enc, &len), MSV_ERR_INVALID);
    }
    m[1] = (struct msv_mention){13, 5, ""}; /* no handle */
    assert_int_equal(msv_payload_encode(&p, &enc, &len), MSV_ERR_INVALID);
    m[1].handle = "zoe@example.org";
    p.mention_count = MSV_MENTIONS_MAX + 1; /* too many */
    for (size_t i = 2; i < p.mention_count; i++)
        m[i] = m[0];
    assert_int_equal(msv_payload_encode(&p, &enc, &len), MSV_ERR_INVALID);
    p.mention_count = MSV_MENTIONS_MAX;
    back = round_trip(&p);
    msv_payload_free(back);
    /* only a message's text has mentions */
    p.mention_count = 1;
    p.kind = MSV_KIND_EDIT;
    p.has_target = true;
    assert_int_equal(msv_payload_encode(&p, &enc, &len), MSV_ERR_INVALID);
    assert_null(enc);
}

/* Payloads built with the codec directly, as a hostile sender could, are checked on parse. */
static msv_err parse_crafted(Msv__Payload__Payload *m)
{
    uint8_t buf[4096];
    size_t n = msv__payload__payload__pack(m, buf);
    struct msv_payload *p = NULL;
    msv_err err = msv_payload_parse(buf, n, &p);

    if (err == MSV_OK)
        msv_payload_free(p);
    else
        assert_null(p);
    return err;
}

/* The signed group state fields (docs/groups.md): on group changes only, all or none. */
static void test_payload_group_signing(void **state)
{
    char *members[] = {"alice@example.org", "bob@example.org"}, *admins[] = {"bob@example.org"},
         *stranger[] = {"mallory@example.org"};
    struct msv_payload p, *back;
    Msv__Payload__Payload m = MSV__PAYLOAD__PAYLOAD__INIT;
    ProtobufCBinaryData parts[2], adm[1];
    uint8_t *enc = NULL, id[16], gid[16], prev[32] = {0}, sig[64];
    size_t len = 0;

    (void)state;
    fill_message(&p, NULL);
    p.kind = MSV_KIND_GROUP_CHANGE;
    p.has_group = true;
    p.participants = members;
    p.participant_count = 2;
    p.has_group_signature = true;
    p.group_admins = admins;
    p.group_admin_count = 1;
    p.group_epoch = 7;
    test_fill_pattern(p.group_prev_hash, 32, 3);
    test_fill_pattern(p.group_signature, 64, 4);
    p.group_signature_len = 64;
    back = round_trip(&p);
    assert_true(back->has_group_signature);
    assert_int_equal(back->group_epoch, 7);
    assert_int_equal(back->group_admin_count, 1);
    assert_string_equal(back->group_admins[0], "bob@example.org");
    assert_memory_equal(back->group_prev_hash, p.group_prev_hash, 32);
    assert_int_equal(back->group_signature_len, 64);
    assert_memory_equal(back->group_signature, p.group_signature, 64);
    msv_payload_free(back);
    /* each rule broken in turn: the encoder refuses */
    p.group_admins = stranger;
    assert_int_equal(msv_payload_encode(&p, &enc, &len), MSV_ERR_INVALID);
    p.group_admins = admins;
    p.group_epoch = 0;
    assert_int_equal(msv_payload_encode(&p, &enc, &len), MSV_ERR_INVALID);
    p.group_epoch = 1;
    p.group_signature_len = MSV_GROUP_SIGNATURE_MAX + 1;
    assert_int_equal(msv_payload_encode(&p, &enc, &len), MSV_ERR_INVALID);
    p.group_signature_len = 64;
    p.group_admin_count = 0;
    assert_int_equal(msv_payload_encode(&p, &enc, &len), MSV_ERR_INVALID);
    p.group_admin_count = 1;
    p.kind = MSV_KIND_MESSAGE;
    p.text = "hi";
    assert_int_equal(msv_payload_encode(&p, &enc, &len), MSV_ERR_INVALID);
    assert_null(enc);
    /* and the parser refuses what a hostile sender crafts */
    test_fill_pattern(id, 16, 1);
    test_fill_pattern(gid, 16, 2);
    memset(sig, 5, sizeof(sig));
    m.version = 1;
    m.kind = MSV__PAYLOAD__KIND__GROUP_CHANGE;
    m.message_id = (ProtobufCBinaryData){16, id};
    m.group_id = (ProtobufCBinaryData){16, gid};
    parts[0] = (ProtobufCBinaryData){strlen(members[0]), (uint8_t *)members[0]};
    parts[1] = (ProtobufCBinaryData){strlen(members[1]), (uint8_t *)members[1]};
    m.participants = parts;
    m.n_participants = 2;
    adm[0] = parts[1];
    m.group_admins = adm;
    m.n_group_admins = 1;
    m.group_epoch = 2;
    m.group_prev_hash = (ProtobufCBinaryData){32, prev};
    m.group_signature = (ProtobufCBinaryData){64, sig};
    assert_int_equal(parse_crafted(&m), MSV_OK);
    m.group_prev_hash.len = 31;
    assert_int_equal(parse_crafted(&m), MSV_ERR_PARSE);
    m.group_prev_hash.len = 32;
    adm[0] = (ProtobufCBinaryData){strlen(stranger[0]), (uint8_t *)stranger[0]};
    assert_int_equal(parse_crafted(&m), MSV_ERR_PARSE);
    adm[0] = parts[1];
    m.group_epoch = 0;
    assert_int_equal(parse_crafted(&m), MSV_ERR_PARSE);
    m.group_epoch = 2;
    m.group_signature.len = 0; /* admins without a signature */
    assert_int_equal(parse_crafted(&m), MSV_ERR_PARSE);
}

/*
 * A group change as a delta (docs/groups.md): the lists, the new state's hash
 * and name, and the whole state inline or as an attachment, round trip; the
 * whole lists beside them, no name, both or neither form of the state, or a
 * list over MSV_GROUP_DELTA_MAX are refused both ways.
 */
static void test_payload_group_delta(void **state)
{
    char *added[] = {"carol@example.org", "dave@example.org"}, *removed[] = {"bob@example.org"},
         *members[] = {"alice@example.org"},
         **many = calloc(MSV_GROUP_DELTA_MAX + 1, sizeof(char *));
    uint8_t whole[64], *enc = NULL, id[16], gid[16], prev[32] = {0}, sig[64], hash[32];
    struct msv_payload p, *back;
    Msv__Payload__Payload m = MSV__PAYLOAD__PAYLOAD__INIT;
    ProtobufCBinaryData lots[MSV_GROUP_DELTA_MAX + 1];
    size_t len = 0;

    (void)state;
    assert_non_null(many);
    fill_message(&p, NULL);
    p.kind = MSV_KIND_GROUP_CHANGE;
    p.text = NULL;
    p.has_group = true;
    p.group_name = "club";
    p.has_group_signature = true;
    p.group_epoch = 3;
    test_fill_pattern(p.group_prev_hash, 32, 3);
    test_fill_pattern(p.group_signature, 64, 4);
    p.group_signature_len = 64;
    p.has_group_state_hash = true;
    test_fill_pattern(p.group_state_hash, 32, 5);
    p.group_delta[MSV_DELTA_ADDED] = added;
    p.group_delta_count[MSV_DELTA_ADDED] = 2;
    p.group_delta[MSV_DELTA_REMOVED] = removed;
    p.group_delta_count[MSV_DELTA_REMOVED] = 1;
    test_fill_pattern(whole, sizeof(whole), 6);
    p.group_state = whole;
    p.group_state_len = sizeof(whole);
    back = round_trip(&p);
    assert_true(back->has_group_state_hash);
    assert_memory_equal(back->group_state_hash, p.group_state_hash, 32);
    assert_int_equal(back->group_delta_count[MSV_DELTA_ADDED], 2);
    assert_string_equal(back->group_delta[MSV_DELTA_ADDED][1], "dave@example.org");
    assert_int_equal(back->group_delta_count[MSV_DELTA_REMOVED], 1);
    assert_string_equal(back->group_delta[MSV_DELTA_REMOVED][0], "bob@example.org");
    assert_int_equal(back->group_delta_count[MSV_DELTA_PROMOTED], 0);
    assert_int_equal(back->group_state_len, sizeof(whole));
    assert_memory_equal(back->group_state, whole, sizeof(whole));
    assert_false(back->has_group_state_ref);
    assert_int_equal(back->participant_count, 0);
    msv_payload_free(back);
    /* the whole state as an attachment instead */
    p.group_state = NULL;
    p.group_state_len = 0;
    p.has_group_state_ref = true;
    p.group_state_ref.uri = "blob:00";
    p.group_state_ref.size = 100000;
    test_fill_pattern(p.group_state_ref.key, 32, 7);
    back = round_trip(&p);
    assert_true(back->has_group_state_ref);
    assert_string_equal(back->group_state_ref.uri, "blob:00");
    assert_int_equal(back->group_state_ref.size, 100000);
    assert_memory_equal(back->group_state_ref.key, p.group_state_ref.key, 32);
    msv_payload_free(back);
    /* each rule broken in turn: the encoder refuses */
    p.group_state_ref.size = MSV_GROUP_STATE_MAX + 1;
    assert_int_equal(msv_payload_encode(&p, &enc, &len), MSV_ERR_INVALID);
    p.group_state_ref.size = 100000;
    p.group_state = whole; /* both forms */
    p.group_state_len = sizeof(whole);
    assert_int_equal(msv_payload_encode(&p, &enc, &len), MSV_ERR_INVALID);
    p.has_group_state_ref = false;
    p.group_state_len = MSV_GROUP_STATE_INLINE_MAX + 1;
    assert_int_equal(msv_payload_encode(&p, &enc, &len), MSV_ERR_INVALID);
    p.group_state_len = sizeof(whole);
    p.participants = members; /* whole lists beside the delta */
    p.participant_count = 1;
    assert_int_equal(msv_payload_encode(&p, &enc, &len), MSV_ERR_INVALID);
    p.participant_count = 0;
    p.group_name = NULL;
    assert_int_equal(msv_payload_encode(&p, &enc, &len), MSV_ERR_INVALID);
    p.group_name = "club";
    for (size_t i = 0; i <= MSV_GROUP_DELTA_MAX; i++)
        many[i] = added[0];
    p.group_delta[MSV_DELTA_PROMOTED] = many;
    p.group_delta_count[MSV_DELTA_PROMOTED] = MSV_GROUP_DELTA_MAX + 1;
    assert_int_equal(msv_payload_encode(&p, &enc, &len), MSV_ERR_INVALID);
    p.group_delta_count[MSV_DELTA_PROMOTED] = 0;
    p.has_group_signature = false; /* a delta is signed */
    assert_int_equal(msv_payload_encode(&p, &enc, &len), MSV_ERR_INVALID);
    assert_null(enc);
    /* and the parser refuses what a hostile sender crafts */
    test_fill_pattern(id, 16, 1);
    test_fill_pattern(gid, 16, 2);
    test_fill_pattern(hash, 32, 8);
    memset(sig, 5, sizeof(sig));
    m.version = 1;
    m.kind = MSV__PAYLOAD__KIND__GROUP_CHANGE;
    m.message_id = (ProtobufCBinaryData){16, id};
    m.group_id = (ProtobufCBinaryData){16, gid};
    m.group_name = (ProtobufCBinaryData){4, (uint8_t *)"club"};
    m.group_epoch = 2;
    m.group_prev_hash = (ProtobufCBinaryData){32, prev};
    m.group_signature = (ProtobufCBinaryData){64, sig};
    m.group_state_hash = (ProtobufCBinaryData){32, hash};
    m.group_state = (ProtobufCBinaryData){sizeof(whole), whole};
    for (size_t i = 0; i <= MSV_GROUP_DELTA_MAX; i++)
        lots[i] = (ProtobufCBinaryData){strlen(added[0]), (uint8_t *)added[0]};
    m.group_added = lots;
    m.n_group_added = 1;
    assert_int_equal(parse_crafted(&m), MSV_OK);
    m.group_state_hash.len = 31;
    assert_int_equal(parse_crafted(&m), MSV_ERR_PARSE);
    m.group_state_hash.len = 32;
    m.group_state.len = 0; /* no whole state */
    assert_int_equal(parse_crafted(&m), MSV_ERR_PARSE);
    m.group_state.len = sizeof(whole);
    m.group_signature.len = 0; /* unsigned */
    assert_int_equal(parse_crafted(&m), MSV_ERR_PARSE);
    m.group_signature.len = 64;
    m.n_group_added = 0;
    m.group_removed = lots;
    m.n_group_removed = 1;
    m.group_removed[0].len = 0; /* an empty handle */
    assert_int_equal(parse_crafted(&m), MSV_ERR_PARSE);
    free(many);
}

/*
 * GROUP_JOIN: a request carries a 32-byte proof, a link's settings a version
 * (and a secret unless links are off); never both, never on another kind,
 * never without the group; the parser refuses a proof or secret of another
 * length, and what the encoder would refuse.
 */
static void test_payload_group_join(void **state)
{
    struct msv_payload p, *back;
    Msv__Payload__Payload m = MSV__PAYLOAD__PAYLOAD__INIT;
    uint8_t *enc = NULL, id[16], gid[16], key[33];
    size_t len = 0;

    (void)state;
    fill_message(&p, NULL);
    p.kind = MSV_KIND_GROUP_JOIN;
    p.has_group = true;
    test_fill_pattern(p.group_id, 16, 2);
    p.has_join_proof = true;
    test_fill_pattern(p.join_proof, MSV_JOIN_KEY_LEN, 6);
    back = round_trip(&p);
    assert_int_equal(back->kind, MSV_KIND_GROUP_JOIN);
    assert_true(back->has_join_proof);
    assert_memory_equal(back->join_proof, p.join_proof, MSV_JOIN_KEY_LEN);
    assert_int_equal(back->join_link_version, 0);
    msv_payload_free(back);
    /* a request and settings at once */
    p.join_link_version = 3;
    assert_int_equal(msv_payload_encode(&p, &enc, &len), MSV_ERR_INVALID);
    /* the settings alone, links on with approval */
    p.has_join_proof = false;
    p.has_join_link_secret = true;
    test_fill_pattern(p.join_link_secret, MSV_JOIN_KEY_LEN, 7);
    p.join_link_approval = true;
    back = round_trip(&p);
    assert_int_equal(back->join_link_version, 3);
    assert_true(back->has_join_link_secret && back->join_link_approval);
    assert_memory_equal(back->join_link_secret, p.join_link_secret, MSV_JOIN_KEY_LEN);
    msv_payload_free(back);
    /* a secret without a version; nothing at all; no group; another kind; text */
    p.join_link_version = 0;
    assert_int_equal(msv_payload_encode(&p, &enc, &len), MSV_ERR_INVALID);
    p.has_join_link_secret = p.join_link_approval = false;
    assert_int_equal(msv_payload_encode(&p, &enc, &len), MSV_ERR_INVALID);
    p.has_join_proof = true;
    p.has_group = false;
    assert_int_equal(msv_payload_encode(&p, &enc, &len), MSV_ERR_INVALID);
    p.has_group = true;
    p.kind = MSV_KIND_GROUP_CHANGE;
    assert_int_equal(msv_payload_encode(&p, &enc, &len), MSV_ERR_INVALID);
    p.kind = MSV_KIND_GROUP_JOIN;
    p.text = "let me in";
    assert_int_equal(msv_payload_encode(&p, &enc, &len), MSV_ERR_INVALID);
    assert_null(enc);
    /* crafted: a proof of 31 or 33 bytes, a proof on a message */
    test_fill_pattern(id, 16, 1);
    test_fill_pattern(gid, 16, 2);
    memset(key, 9, sizeof(key));
    m.version = 1;
    m.kind = MSV__PAYLOAD__KIND__GROUP_JOIN;
    m.message_id = (ProtobufCBinaryData){16, id};
    m.group_id = (ProtobufCBinaryData){16, gid};
    m.join_proof = (ProtobufCBinaryData){32, key};
    assert_int_equal(parse_crafted(&m), MSV_OK);
    m.join_proof.len = 31;
    assert_int_equal(parse_crafted(&m), MSV_ERR_PARSE);
    m.join_proof.len = 33;
    assert_int_equal(parse_crafted(&m), MSV_ERR_PARSE);
    m.join_proof.len = 0;
    m.join_link_version = 1;
    m.join_link_secret = (ProtobufCBinaryData){33, key};
    assert_int_equal(parse_crafted(&m), MSV_ERR_PARSE);
    m.join_link_secret.len = 32;
    assert_int_equal(parse_crafted(&m), MSV_OK);
    m.kind = MSV__PAYLOAD__KIND__MESSAGE;
    m.text = (ProtobufCBinaryData){2, (uint8_t *)"hi"};
    assert_int_equal(parse_crafted(&m), MSV_ERR_PARSE);
    assert_string_equal(msv_payload_kind_name(MSV_KIND_GROUP_JOIN), "group-join");
}

/* mls_outside: on a group's MESSAGE alone, kept through a round trip */
static void test_payload_mls_outside(void **state)
{
    struct msv_payload p, *back;
    Msv__Payload__Payload m = MSV__PAYLOAD__PAYLOAD__INIT;
    uint8_t *enc = NULL, id[16], gid[16];
    char text[] = "hi";
    size_t len = 0;

    (void)state;
    fill_message(&p, text);
    p.mls_outside = true;
    assert_int_equal(msv_payload_encode(&p, &enc, &len), MSV_ERR_INVALID); /* no group */
    p.has_group = true;
    test_fill_pattern(p.group_id, 16, 2);
    back = round_trip(&p);
    assert_true(back->mls_outside);
    msv_payload_free(back);
    p.mls_outside = false;
    back = round_trip(&p);
    assert_false(back->mls_outside);
    msv_payload_free(back);
    p.mls_outside = true;
    p.kind = MSV_KIND_TYPING;
    p.text = NULL;
    assert_int_equal(msv_payload_encode(&p, &enc, &len), MSV_ERR_INVALID);
    assert_null(enc);
    /* crafted: on a typing notice, on a message without a group */
    test_fill_pattern(id, 16, 1);
    test_fill_pattern(gid, 16, 2);
    m.version = 1;
    m.kind = MSV__PAYLOAD__KIND__MESSAGE;
    m.message_id = (ProtobufCBinaryData){16, id};
    m.group_id = (ProtobufCBinaryData){16, gid};
    m.text = (ProtobufCBinaryData){2, (uint8_t *)"hi"};
    m.mls_outside = 1;
    assert_int_equal(parse_crafted(&m), MSV_OK);
    m.group_id.len = 0;
    assert_int_equal(parse_crafted(&m), MSV_ERR_PARSE);
    m.group_id.len = 16;
    m.kind = MSV__PAYLOAD__KIND__TYPING;
    m.text.len = 0;
    assert_int_equal(parse_crafted(&m), MSV_ERR_PARSE);
}

/*
 * Disappearing-message timers: a TIMER carries its value and nothing else;
 * a message carries the timer in force; out-of-range values, and timers on
 * other kinds, are refused both ways (a hostile participant's absurd value
 * never reaches a device).
 */
/* LINK_HISTORY: an archive id with one attachment, or with text saying why none comes; no
 * target, both, neither, a group or two attachments are refused. */
static void test_payload_link_history(void **state)
{
    struct msv_attachment_ref att[2] = {{.uri = "blob:00", .size = 10}, {.uri = "blob:01"}};
    struct msv_payload p, *back;
    uint8_t *enc = NULL;
    size_t len = 0;

    (void)state;
    fill_message(&p, NULL);
    p.kind = MSV_KIND_LINK_HISTORY;
    p.has_target = true;
    test_fill_pattern(p.target_id, 16, 3);
    p.attachments = att;
    p.attachment_count = 1;
    back = round_trip(&p);
    assert_int_equal(back->kind, MSV_KIND_LINK_HISTORY);
    assert_memory_equal(back->target_id, p.target_id, 16);
    assert_int_equal(back->attachment_count, 1);
    assert_string_equal(back->attachments[0].uri, "blob:00");
    msv_payload_free(back);
    p.attachment_count = 2; /* one archive */
    assert_int_equal(msv_payload_encode(&p, &enc, &len), MSV_ERR_INVALID);
    p.attachment_count = 1;
    p.text = "and words"; /* both */
    assert_int_equal(msv_payload_encode(&p, &enc, &len), MSV_ERR_INVALID);
    p.attachment_count = 0; /* why none comes */
    back = round_trip(&p);
    assert_string_equal(back->text, "and words");
    msv_payload_free(back);
    p.text = NULL; /* neither */
    assert_int_equal(msv_payload_encode(&p, &enc, &len), MSV_ERR_INVALID);
    p.text = "why";
    p.has_target = false;
    assert_int_equal(msv_payload_encode(&p, &enc, &len), MSV_ERR_INVALID);
    p.has_target = true;
    p.has_group = true;
    assert_int_equal(msv_payload_encode(&p, &enc, &len), MSV_ERR_INVALID);
    assert_string_equal(msv_payload_kind_name(MSV_KIND_LINK_HISTORY), "link-history");
}

/*
 * GROUP_COPY: a group id and its whole state, inline (at most 4 KiB) or as an attachment, and
 * nothing else; group_accepted on no other kind.
 */
static void test_payload_group_copy(void **state)
{
    Msv__Payload__Payload m = MSV__PAYLOAD__PAYLOAD__INIT;
    struct msv_payload p, *back;
    uint8_t *enc = NULL, id[16], gid[16], *big = calloc(1, MSV_GROUP_STATE_INLINE_MAX + 1);
    char *who[1] = {"bob@example.org"};
    size_t len = 0;

    (void)state;
    assert_non_null(big);
    fill_message(&p, NULL);
    p.kind = MSV_KIND_GROUP_COPY;
    p.has_group = true;
    test_fill_pattern(p.group_id, 16, 4);
    p.group_state = big;
    p.group_state_len = 100;
    p.group_accepted = true;
    back = round_trip(&p);
    assert_int_equal(back->kind, MSV_KIND_GROUP_COPY);
    assert_memory_equal(back->group_id, p.group_id, 16);
    assert_int_equal(back->group_state_len, 100);
    assert_true(back->group_accepted);
    assert_false(back->has_group_state_hash);
    msv_payload_free(back);
    p.has_group_state_ref = true; /* both */
    p.group_state_ref.uri = "blob:00";
    p.group_state_ref.size = 5000;
    assert_int_equal(msv_payload_encode(&p, &enc, &len), MSV_ERR_INVALID);
    p.group_state_len = 0; /* as an attachment */
    back = round_trip(&p);
    assert_true(back->has_group_state_ref);
    assert_int_equal(back->group_state_ref.size, 5000);
    msv_payload_free(back);
    p.group_state_ref.size = MSV_GROUP_STATE_MAX + 1;
    assert_int_equal(msv_payload_encode(&p, &enc, &len), MSV_ERR_INVALID);
    p.has_group_state_ref = false; /* neither */
    assert_int_equal(msv_payload_encode(&p, &enc, &len), MSV_ERR_INVALID);
    p.group_state_len = MSV_GROUP_STATE_INLINE_MAX + 1;
    assert_int_equal(msv_payload_encode(&p, &enc, &len), MSV_ERR_INVALID);
    p.group_state_len = 100;
    p.has_group_state_hash = true; /* a change's fields */
    assert_int_equal(msv_payload_encode(&p, &enc, &len), MSV_ERR_INVALID);
    p.has_group_state_hash = false;
    p.group_delta[MSV_DELTA_ADDED] = who;
    p.group_delta_count[MSV_DELTA_ADDED] = 1;
    assert_int_equal(msv_payload_encode(&p, &enc, &len), MSV_ERR_INVALID);
    p.group_delta_count[MSV_DELTA_ADDED] = 0;
    p.participants = who;
    p.participant_count = 1;
    assert_int_equal(msv_payload_encode(&p, &enc, &len), MSV_ERR_INVALID);
    p.participant_count = 0;
    p.group_name = "club";
    assert_int_equal(msv_payload_encode(&p, &enc, &len), MSV_ERR_INVALID);
    p.group_name = NULL;
    p.text = "words";
    assert_int_equal(msv_payload_encode(&p, &enc, &len), MSV_ERR_INVALID);
    p.text = NULL;
    p.has_target = true;
    assert_int_equal(msv_payload_encode(&p, &enc, &len), MSV_ERR_INVALID);
    p.has_target = false;
    p.has_reply_to = true;
    assert_int_equal(msv_payload_encode(&p, &enc, &len), MSV_ERR_INVALID);
    p.has_reply_to = false;
    p.has_group = false;
    assert_int_equal(msv_payload_encode(&p, &enc, &len), MSV_ERR_INVALID);
    assert_null(enc);
    /* crafted: a copy with a signature, group_accepted on a message, a state on a message */
    test_fill_pattern(id, 16, 1);
    test_fill_pattern(gid, 16, 2);
    m.version = 1;
    m.kind = MSV__PAYLOAD__KIND__GROUP_COPY;
    m.message_id = (ProtobufCBinaryData){16, id};
    m.group_id = (ProtobufCBinaryData){16, gid};
    m.group_state = (ProtobufCBinaryData){10, big};
    assert_int_equal(parse_crafted(&m), MSV_OK);
    m.group_signature = (ProtobufCBinaryData){16, id};
    m.group_epoch = 1;
    m.group_prev_hash = (ProtobufCBinaryData){32, big};
    assert_int_equal(parse_crafted(&m), MSV_ERR_PARSE);
    m.group_signature.len = m.group_prev_hash.len = 0;
    m.group_epoch = 0;
    m.kind = MSV__PAYLOAD__KIND__MESSAGE;
    m.text = (ProtobufCBinaryData){2, (uint8_t *)"hi"};
    assert_int_equal(parse_crafted(&m), MSV_ERR_PARSE);
    m.group_state.len = 0;
    assert_int_equal(parse_crafted(&m), MSV_OK);
    m.group_accepted = true;
    assert_int_equal(parse_crafted(&m), MSV_ERR_PARSE);
    assert_string_equal(msv_payload_kind_name(MSV_KIND_GROUP_COPY), "group-copy");
    free(big);
}

static void test_payload_timer(void **state)
{
    static const uint32_t bad[] = {1, 29, MSV_TIMER_MAX_S + 1, UINT32_MAX};
    Msv__Payload__Payload m = MSV__PAYLOAD__PAYLOAD__INIT;
    struct msv_payload p, *back;
    uint8_t *enc = NULL, id[16];
    size_t len = 0;

    (void)state;
    fill_message(&p, "soon gone");
    p.timer_s = 3600;
    back = round_trip(&p);
    assert_int_equal(back->timer_s, 3600);
    msv_payload_free(back);
    fill_message(&p, NULL);
    p.kind = MSV_KIND_TIMER;
    for (uint32_t t = 0; t <= MSV_TIMER_MAX_S; t += t == 0 ? MSV_TIMER_MIN_S : MSV_TIMER_MAX_S) {
        p.timer_s = t;
        back = round_trip(&p);
        assert_int_equal(back->kind, MSV_KIND_TIMER);
        assert_int_equal(back->timer_s, t);
        msv_payload_free(back);
    }
    p.text = "no words on a timer";
    assert_int_equal(msv_payload_encode(&p, &enc, &len), MSV_ERR_INVALID);
    p.text = NULL;
    p.kind = MSV_KIND_TYPING;
    p.timer_s = 60;
    assert_int_equal(msv_payload_encode(&p, &enc, &len), MSV_ERR_INVALID);
    test_fill_pattern(id, 16, 1);
    m.version = 1;
    m.message_id.data = id;
    m.message_id.len = 16;
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        p.kind = MSV_KIND_TIMER;
        p.timer_s = bad[i];
        assert_int_equal(msv_payload_encode(&p, &enc, &len), MSV_ERR_INVALID);
        m.kind = MSV__PAYLOAD__KIND__TIMER;
        m.timer_s = bad[i];
        assert_int_equal(parse_crafted(&m), MSV_ERR_PARSE);
    }
    m.timer_s = 60;
    assert_int_equal(parse_crafted(&m), MSV_OK);
    m.kind = MSV__PAYLOAD__KIND__RECEIPT_READ;
    m.target_id.data = id;
    m.target_id.len = 16;
    assert_int_equal(parse_crafted(&m), MSV_ERR_PARSE);
}

static void test_payload_hostile(void **state)
{
    Msv__Payload__Payload m = MSV__PAYLOAD__PAYLOAD__INIT;
    uint8_t id[16], nul_text[] = {'h', 'i', 0, 'x'}, bad[] = {0xed, 0xa0, 0x80};
    struct msv_payload *p = NULL;

    (void)state;
    test_fill_pattern(id, 16, 1);
    m.version = 1;
    m.kind = MSV__PAYLOAD__KIND__MESSAGE;
    m.message_id.data = id;
    m.message_id.len = 16;
    m.text.data = (uint8_t *)"ok";
    m.text.len = 2;
    assert_int_equal(parse_crafted(&m), MSV_OK);
    m.version = 2;
    assert_int_equal(parse_crafted(&m), MSV_ERR_UNSUPPORTED);
    m.version = 0;
    assert_int_equal(parse_crafted(&m), MSV_ERR_PARSE);
    m.version = 1;
    m.message_id.len = 15;
    assert_int_equal(parse_crafted(&m), MSV_ERR_PARSE);
    m.message_id.len = 16;
    m.log_head.data = id; /* a log head is 112 bytes or absent */
    m.log_head.len = 16;
    assert_int_equal(parse_crafted(&m), MSV_ERR_PARSE);
    m.log_head.len = 0;
    {
        uint8_t epoch[MSV_LOG_EPOCH_LEN + 1] = {0}, head[MSV_LOG_HEAD_LEN] = {0};

        m.log_epoch.data = epoch; /* 96 bytes, and only with a log head */
        m.log_epoch.len = MSV_LOG_EPOCH_LEN;
        assert_int_equal(parse_crafted(&m), MSV_ERR_PARSE);
        m.log_head.data = head;
        m.log_head.len = MSV_LOG_HEAD_LEN;
        assert_int_equal(parse_crafted(&m), MSV_OK);
        m.log_epoch.len = MSV_LOG_EPOCH_LEN + 1;
        assert_int_equal(parse_crafted(&m), MSV_ERR_PARSE);
        m.log_epoch.len = 0;
        m.log_head.len = 0;
    }
    m.edit_number = 1; /* only an edit carries an edit number */
    assert_int_equal(parse_crafted(&m), MSV_ERR_PARSE);
    m.kind = MSV__PAYLOAD__KIND__EDIT; /* and every edit does */
    m.target_id.data = id;
    m.target_id.len = 16;
    assert_int_equal(parse_crafted(&m), MSV_OK);
    m.edit_number = MSV_EDITS_MAX + 1;
    assert_int_equal(parse_crafted(&m), MSV_ERR_PARSE);
    m.edit_number = 0;
    assert_int_equal(parse_crafted(&m), MSV_ERR_PARSE);
    m.kind = MSV__PAYLOAD__KIND__MESSAGE;
    m.target_id.len = 0;
    m.text.data = nul_text;
    m.text.len = sizeof(nul_text);
    assert_int_equal(parse_crafted(&m), MSV_ERR_PARSE);
    m.text.data = bad;
    m.text.len = sizeof(bad);
    assert_int_equal(parse_crafted(&m), MSV_ERR_PARSE);
    m.text.data = (uint8_t *)"ok";
    m.text.len = 2;
    m.reply_to.data = id;
    m.reply_to.len = 3;
    assert_int_equal(parse_crafted(&m), MSV_ERR_PARSE);
    m.reply_to.len = 0;
    {
        /* an empty participant, encoded with no data at all */
        ProtobufCBinaryData empty = {0, NULL};

        m.n_participants = 1;
        m.participants = &empty;
        assert_int_equal(parse_crafted(&m), MSV_ERR_PARSE);
        m.n_participants = 0;
        m.participants = NULL;
    }
    /* a reaction of many words, and one without a target */
    m.kind = MSV__PAYLOAD__KIND__REACTION;
    m.text.data = (uint8_t *)"not one emoji";
    m.text.len = 13;
    m.target_id.data = id;
    m.target_id.len = 16;
    assert_int_equal(parse_crafted(&m), MSV_ERR_PARSE);
    m.text.len = 3;
    assert_int_equal(parse_crafted(&m), MSV_OK);
    m.target_id.len = 0;
    assert_int_equal(parse_crafted(&m), MSV_ERR_PARSE);
    m.text.data = (uint8_t *)"ok";
    m.text.len = 2;
    m.target_id.len = 0;
    {
        /* a mention past the text's end; then inside it */
        Msv__Payload__MentionRange range = MSV__PAYLOAD__MENTION_RANGE__INIT, *ranges = &range;

        m.kind = MSV__PAYLOAD__KIND__MESSAGE;
        range.start = 1;
        range.length = 2;
        range.handle.data = (uint8_t *)"bob";
        range.handle.len = 3;
        m.n_mentions = 1;
        m.mentions = &ranges;
        assert_int_equal(parse_crafted(&m), MSV_ERR_PARSE);
        range.length = 1;
        assert_int_equal(parse_crafted(&m), MSV_OK);
        m.n_mentions = 0;
        m.mentions = NULL;
    }
    m.kind = (Msv__Payload__Kind)42;
    assert_int_equal(parse_crafted(&m), MSV_ERR_PARSE);
    /* not protobuf at all, and a truncated field */
    assert_int_equal(msv_payload_parse((const uint8_t *)"\xff\xff", 2, &p), MSV_ERR_PARSE);
    assert_int_equal(msv_payload_parse((const uint8_t *)"\x2a\x05hi", 4, &p), MSV_ERR_PARSE);
    assert_null(p);
}

/* A profile pointer: on messages and PROFILE_KEY only, with the key that opens it, bounded. */
static void test_payload_profile(void **state)
{
    uint8_t *enc = NULL;
    size_t len = 0;
    struct msv_payload p, *back;

    (void)state;
    fill_message(&p, "hi");
    p.has_profile_key = true;
    memset(p.profile_key, 7, sizeof(p.profile_key));
    p.has_profile = true;
    p.profile.uri = "blob:00ff";
    memset(p.profile.sha256, 1, sizeof(p.profile.sha256));
    memset(p.profile.salt, 2, sizeof(p.profile.salt));
    p.profile.size = 1234;
    back = round_trip(&p);
    assert_true(back->has_profile);
    assert_string_equal(back->profile.uri, "blob:00ff");
    assert_memory_equal(back->profile.sha256, p.profile.sha256, 32);
    assert_memory_equal(back->profile.salt, p.profile.salt, MSV_PROFILE_SALT_LEN);
    assert_int_equal(back->profile.size, 1234);
    msv_payload_free(back);
    p.profile.size = MSV_PROFILE_BLOB_MAX + 1; /* larger than any profile */
    assert_int_equal(msv_payload_encode(&p, &enc, &len), MSV_ERR_INVALID);
    p.profile.size = 0;
    assert_int_equal(msv_payload_encode(&p, &enc, &len), MSV_ERR_INVALID);
    p.profile.size = 1234;
    p.profile.uri = "";
    assert_int_equal(msv_payload_encode(&p, &enc, &len), MSV_ERR_INVALID);
    p.profile.uri = "blob:00ff";
    p.has_profile_key = false; /* nobody could open it */
    assert_int_equal(msv_payload_encode(&p, &enc, &len), MSV_ERR_INVALID);
    p.has_profile_key = true;
    p.kind = MSV_KIND_TYPING;
    p.text = NULL;
    assert_int_equal(msv_payload_encode(&p, &enc, &len), MSV_ERR_INVALID);
    p.kind = MSV_KIND_PROFILE_KEY;
    back = round_trip(&p);
    assert_true(back->has_profile);
    msv_payload_free(back);
}

/* A field this version does not know is skipped, so newer senders can add fields. */
/* Synced state between an account's devices: keys within the rules, and on kind SYNC only. */
static void test_payload_sync(void **state)
{
    struct msv_sync_entry e[2] = {
        {.key = "sync:block:bob@example.org", .value = (uint8_t *)"on", .value_len = 2, .stamp = 5},
        {.key = "contact:Bobby\nbob@example.org", .deleted = true, .stamp = 7},
    };
    static const char *const bad_keys[] = {"sync:",           "profile-key",
                                           "contact:Bobby",   "contact:\nbob@example.org",
                                           "contact:B\nb\nc", "session:1:ab:0"};
    uint8_t *enc = NULL, big[MSV_SYNC_VALUE_MAX + 1] = {0};
    size_t len = 0;
    struct msv_payload p, *back;

    (void)state;
    fill_message(&p, NULL);
    p.kind = MSV_KIND_SYNC;
    assert_int_equal(msv_payload_encode(&p, &enc, &len), MSV_ERR_INVALID); /* nothing to sync */
    p.sync = e;
    p.sync_count = 2;
    back = round_trip(&p);
    assert_int_equal(back->kind, MSV_KIND_SYNC);
    assert_int_equal(back->sync_count, 2);
    assert_string_equal(back->sync[0].key, e[0].key);
    assert_int_equal(back->sync[0].value_len, 2);
    assert_memory_equal(back->sync[0].value, "on", 2);
    assert_int_equal(back->sync[0].stamp, 5);
    assert_true(back->sync[1].deleted);
    assert_string_equal(back->sync[1].key, e[1].key);
    msv_payload_free(back);
    /* no text, and no sync entries on any other kind */
    p.text = "hi";
    assert_int_equal(msv_payload_encode(&p, &enc, &len), MSV_ERR_INVALID);
    p.text = NULL;
    p.kind = MSV_KIND_MESSAGE;
    p.text = "hi";
    assert_int_equal(msv_payload_encode(&p, &enc, &len), MSV_ERR_INVALID);
    p.kind = MSV_KIND_SYNC;
    p.text = NULL;
    /* only synced keys, a stamp, bounded values, no value on a deletion */
    for (size_t i = 0; i < sizeof(bad_keys) / sizeof(bad_keys[0]); i++) {
        e[0].key = (char *)bad_keys[i];
        assert_false(msv_sync_entry_is_valid(&e[0]));
        assert_int_equal(msv_payload_encode(&p, &enc, &len), MSV_ERR_INVALID);
    }
    e[0].key = "sync:privacy:typing";
    e[0].stamp = 0;
    assert_int_equal(msv_payload_encode(&p, &enc, &len), MSV_ERR_INVALID);
    e[0].stamp = 5;
    e[0].value = big;
    e[0].value_len = sizeof(big);
    assert_int_equal(msv_payload_encode(&p, &enc, &len), MSV_ERR_INVALID);
    e[0].value_len = 2;
    e[1].value = big;
    e[1].value_len = 1;
    assert_int_equal(msv_payload_encode(&p, &enc, &len), MSV_ERR_INVALID);
    e[1].value_len = 0;
    p.sync_count = MSV_SYNC_ENTRIES_MAX + 1;
    assert_int_equal(msv_payload_encode(&p, &enc, &len), MSV_ERR_INVALID);

    /* a new profile key for contacts: the key and nothing else */
    fill_message(&p, NULL);
    p.kind = MSV_KIND_PROFILE_KEY;
    assert_int_equal(msv_payload_encode(&p, &enc, &len), MSV_ERR_INVALID);
    p.has_profile_key = true;
    test_fill_pattern(p.profile_key, MSV_PROFILE_KEY_LEN, 6);
    back = round_trip(&p);
    assert_int_equal(back->kind, MSV_KIND_PROFILE_KEY);
    assert_memory_equal(back->profile_key, p.profile_key, MSV_PROFILE_KEY_LEN);
    msv_payload_free(back);
    p.text = "hi";
    assert_int_equal(msv_payload_encode(&p, &enc, &len), MSV_ERR_INVALID);
    p.text = NULL;
    p.has_group = true;
    assert_int_equal(msv_payload_encode(&p, &enc, &len), MSV_ERR_INVALID);
    p.has_group = false;
    p.sync = e;
    p.sync_count = 1;
    assert_int_equal(msv_payload_encode(&p, &enc, &len), MSV_ERR_INVALID);
}

static void test_payload_unknown_field(void **state)
{
    struct msv_payload p, *back = NULL;
    uint8_t *enc = NULL, *longer;
    size_t len = 0;

    (void)state;
    fill_message(&p, "forward compatible");
    assert_int_equal(msv_payload_encode(&p, &enc, &len), MSV_OK);
    longer = malloc(len + 3);
    assert_non_null(longer);
    memcpy(longer, enc, len);
    /* field 100, varint 1 */
    longer[len] = 0xa0;
    longer[len + 1] = 0x06;
    longer[len + 2] = 0x01;
    assert_int_equal(msv_payload_parse(longer, len + 3, &back), MSV_OK);
    assert_string_equal(back->text, "forward compatible");
    msv_payload_free(back);
    free(longer);
    free(enc);
    assert_string_equal(msv_payload_kind_name(MSV_KIND_GROUP_CHANGE), "group-change");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_frame_header),
        cmocka_unit_test(test_frame_split_incremental),
        cmocka_unit_test(test_frame_split_refusals),
        cmocka_unit_test(test_frame_encode_decode),
        cmocka_unit_test(test_payload_message_round_trip),
        cmocka_unit_test(test_payload_kinds),
        cmocka_unit_test(test_payload_limits),
        cmocka_unit_test(test_payload_reaction),
        cmocka_unit_test(test_payload_mentions),
        cmocka_unit_test(test_payload_hostile),
        cmocka_unit_test(test_payload_group_signing),
        cmocka_unit_test(test_payload_group_delta),
        cmocka_unit_test(test_payload_group_join),
        cmocka_unit_test(test_payload_mls_outside),
        cmocka_unit_test(test_payload_timer),
        cmocka_unit_test(test_payload_link_history),
        cmocka_unit_test(test_payload_group_copy),
        cmocka_unit_test(test_payload_unknown_field),
        cmocka_unit_test(test_payload_sync),
        cmocka_unit_test(test_payload_profile),
    };

    return cmocka_run_group_tests_name("wire", tests, NULL, NULL);
}
