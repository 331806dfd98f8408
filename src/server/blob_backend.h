/*
 * Where attachment bytes live, behind an operations table: a directory on
 * the server's disk now; a shared directory or database storage for several
 * nodes later. Metadata (size, progress, hash, expiry) is in the store.
 * An object is written, then published; only published objects are read.
 */
#ifndef MSV_SERVER_BLOB_BACKEND_H
#define MSV_SERVER_BLOB_BACKEND_H

#include <stddef.h>
#include <stdint.h>

#include "missive/error.h"
#include "store/store.h"

struct msv_blob_backend_ops {
    const char *name;
    /* Creates an empty unpublished object; MSV_ERR_EXISTS if id is taken. */
    msv_err (*create)(void *impl, const uint8_t id[MSV_BLOB_ID_LEN]);
    msv_err (*write_at)(void *impl, const uint8_t id[MSV_BLOB_ID_LEN], uint64_t offset,
                        const uint8_t *data, size_t len);
    /* SHA-256 of the unpublished object, after making its bytes durable. */
    msv_err (*digest)(void *impl, const uint8_t id[MSV_BLOB_ID_LEN], uint8_t sha256[32]);
    msv_err (*publish)(void *impl, const uint8_t id[MSV_BLOB_ID_LEN]);
    /* Reads len bytes of a published object; MSV_ERR_IO if they are not all there. */
    msv_err (*read_at)(void *impl, const uint8_t id[MSV_BLOB_ID_LEN], uint64_t offset,
                       uint8_t *data, size_t len);
    /*
     * The objects, published or not, last written before before_s (seconds since the epoch):
     * the max of them with the lowest ids above after (NULL: from the lowest), in ascending
     * order, so that a walk that goes on from the last id given reaches every object however
     * many there are; *ids: caller frees (NULL when none).
     */
    msv_err (*list_before)(void *impl, int64_t before_s, const uint8_t *after, size_t max,
                           uint8_t (**ids)[MSV_BLOB_ID_LEN], size_t *count);
    /* Deletes an object, published or not; missing is fine. */
    void (*remove)(void *impl, const uint8_t id[MSV_BLOB_ID_LEN]);
    void (*close)(void *impl);
};

struct msv_blob_backend {
    const struct msv_blob_backend_ops *ops;
    void *impl;
};

/* Objects as files in dir (created 0700 if missing). Caller frees with msv_blob_backend_close(). */
MSV_MUST_CHECK msv_err msv_blob_backend_open_dir(const char *dir, struct msv_blob_backend **out);
void msv_blob_backend_close(struct msv_blob_backend *b);

#endif
