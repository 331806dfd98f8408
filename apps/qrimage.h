/*
 * QR codes as PNG images: drawn with libqrencode and libpng, read with
 * libzbar (the code a new device shows when it is linked, as a file).
 */
#ifndef MSV_APPS_QRIMAGE_H
#define MSV_APPS_QRIMAGE_H

#include <stddef.h>

/* The largest image read: its file's bytes and its width or height. */
#define QRIMAGE_FILE_MAX (8u * 1024 * 1024)
#define QRIMAGE_SIDE_MAX 4096u

/* Writes text's QR code to path (created, 0600, not over an existing file); 0, or -1 and why. */
int qrimage_write(const char *text, const char *path, char *why, size_t why_len);

/*
 * The text of the QR code in the PNG at path, into out (out_len bytes with
 * the NUL); 0, or -1 and why (not a PNG, too big, no QR code, too long).
 */
int qrimage_read(const char *path, char *out, size_t out_len, char *why, size_t why_len);

#endif
