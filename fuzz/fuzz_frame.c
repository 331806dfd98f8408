/*
 * The frame splitter and Frame decoder over a byte stream, as a server reads
 * it: frames are split off one after another until the stream needs more
 * bytes or is refused; each body is decoded, and a decoded Frame re-encodes.
 */
#include "common.h"
#include "wire/frame.h"

#define FUZZ_FRAME_MAX (64u * 1024u)

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
            free(enc);
            msv_frame_free(f);
        }
        off += used;
    }
}
