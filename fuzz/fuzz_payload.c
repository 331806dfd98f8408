/* The payload parser. A payload that parses must encode and parse again to the same content. */
#include "common.h"
#include "missive/payload.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct msv_payload *p = NULL, *q = NULL;
    uint8_t *enc = NULL, *enc2 = NULL;
    size_t len = 0, len2 = 0;

    if (msv_payload_parse(data, size, &p) != MSV_OK)
        return 0;
    if (msv_payload_encode(p, &enc, &len) != MSV_OK || msv_payload_parse(enc, len, &q) != MSV_OK ||
        msv_payload_encode(q, &enc2, &len2) != MSV_OK)
        abort();
    /* canonical after one round: the encoder drops unknown fields and fixes field order */
    if (len != len2 || memcmp(enc, enc2, len) != 0)
        abort();
    if (p->kind != q->kind || memcmp(p->message_id, q->message_id, MSV_ID_LEN) != 0 ||
        p->participant_count != q->participant_count ||
        p->attachment_count != q->attachment_count || (p->text == NULL) != (q->text == NULL) ||
        (p->text && strcmp(p->text, q->text) != 0))
        abort();
    free(enc);
    free(enc2);
    msv_payload_free(p);
    msv_payload_free(q);
    return 0;
}
