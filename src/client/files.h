/*
 * The files received with a message, as they lie in the account's
 * attachments/ directory: what history -o json lists under "attachments"
 * and what the web client serves at /files/<message id>/<index>.
 */
#ifndef MSV_CLIENT_FILES_H
#define MSV_CLIENT_FILES_H

#include <stdint.h>

#include "client/client.h"
#include "store/client_db.h"

struct msv_message_file {
    char file[256];   /* its name under attachments/: <message id hex>-... */
    char name[256];   /* the name it was sent with, as saved (made safe for a path) */
    uint64_t size;    /* its size on disk */
    const char *mime; /* image/png, image/jpeg, image/gif or image/webp by its first bytes,
                       * else application/octet-stream (never anything a browser runs) */
};

/*
 * The files of m still in attachments/, in the order its "[file: PATH (N
 * bytes)]" lines give them (at most max; *n how many). Only a file of m's own
 * id directly under attachments/ counts: a line naming any other path (a
 * sender can write such a line in a message's text) names nothing.
 */
MSV_MUST_CHECK msv_err msv_client_message_files(struct msv_client *c,
                                                const struct msv_message_rec *m,
                                                struct msv_message_file *out, size_t max,
                                                size_t *n);
/*
 * Opens file index of message id for reading (never through a link): *fd
 * (caller closes) and *f. MSV_ERR_NOT_FOUND if the message or that file is
 * not there.
 */
MSV_MUST_CHECK msv_err msv_client_message_file_open(struct msv_client *c, const uint8_t id[16],
                                                    unsigned index, struct msv_message_file *f,
                                                    int *fd);

#endif
