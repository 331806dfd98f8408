/*
 * The frame splitter and Frame decoder over a byte stream, as a server reads
 * it: frames are split off one after another until the stream needs more
 * bytes or is refused; each body is decoded, and a decoded Frame re-encodes.
 * The MlsDelivery a client decodes from a frame (a Deliver's ciphertext, each
 * commit of an MlsCommits answer, the Welcome of an MlsWelcomeKept) is decoded too.
 */
#include "common.h"
#include "wire/frame.h"

#define FUZZ_FRAME_MAX (64u * 1024u)

static void mls_delivery(const ProtobufCBinaryData *b)
{
    Msv__Wire__MlsDelivery *d = msv__wire__mls_delivery__unpack(NULL, b->len, b->data);

    if (d != NULL && d->message.len > b->len)
        abort();
    msv__wire__mls_delivery__free_unpacked(d, NULL);
}

/* What a client decodes inside f. */
static void inner(const msv_frame *f)
{
    if (f->body_case == MSV__WIRE__FRAME__BODY_DELIVER)
        mls_delivery(&f->deliver->ciphertext);
    if (f->body_case == MSV__WIRE__FRAME__BODY_MLS_COMMITS)
        for (size_t i = 0; i < f->mls_commits->n_commits; i++)
            mls_delivery(&f->mls_commits->commits[i]->delivery);
    if (f->body_case == MSV__WIRE__FRAME__BODY_MLS_WELCOME_KEPT)
        mls_delivery(&f->mls_welcome_kept->delivery);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    size_t off = 0;

    for (;;) {
        const uint8_t *body = NULL;
        size_t body_len = 0, used = 0;
        msv_frame *f = NULL;
        msv_err err =
            msv_frame_split(data + off, size - off, FUZZ_FRAME_MAX, &body, &body_len, &used);

        if (err != MSV_OK) {
            if (err != MSV_ERR_AGAIN && err != MSV_ERR_TOO_BIG && err != MSV_ERR_PARSE &&
                err != MSV_ERR_UNSUPPORTED)
                abort();
            return 0;
        }
        if (used != body_len + MSV_FRAME_HEADER_LEN || body_len > FUZZ_FRAME_MAX ||
            used > size - off)
            abort();
        if (msv_frame_decode(body, body_len, &f) == MSV_OK) {
            uint8_t *enc = NULL;
            size_t len = 0;

            if (msv_frame_encode(f, MSV_FRAME_MAX_LIMIT, &enc, &len) != MSV_OK)
                abort();
            inner(f);
            free(enc);
            msv_frame_free(f);
        }
        off += used;
    }
}
