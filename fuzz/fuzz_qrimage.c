/*
 * An image read for a QR code (apps/qrimage.c), on any bytes: what a camera
 * frame or a picture sent to missive web's POST /qr, or a file given to
 * 'devices add --image', may hold. It answers a text that fits its buffer, or
 * a reason, and never crashes or reads past what it was given.
 */
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "../apps/qrimage.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char path[64], text[512], why[256];
    int fd;

    snprintf(path, sizeof(path), "/tmp/msv-fuzz-qrimage-%ld", (long)getpid());
    unlink(path);
    fd = open(path, O_WRONLY | O_CREAT | O_EXCL, 0600);
    if (fd < 0)
        return 0;
    if (write(fd, data, size) != (ssize_t)size) {
        close(fd);
        unlink(path);
        return 0;
    }
    close(fd);
    memset(text, 'x', sizeof(text));
    if (qrimage_read(path, text, sizeof(text), why, sizeof(why)) == 0) {
        if (memchr(text, '\0', sizeof(text)) == NULL)
            abort(); /* a text that does not end within its buffer */
    } else if (memchr(why, '\0', sizeof(why)) == NULL) {
        abort();
    }
    unlink(path);
    return 0;
}
