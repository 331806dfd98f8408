/* QR codes as PNG images (qrimage.h). */
#include "qrimage.h"

#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <png.h>
#include <qrencode.h>
#include <zbar.h>

#define SCALE 4 /* pixels per module */
#define QUIET 4 /* modules of margin */

static int fail(char *why, size_t why_len, const char *text)
{
    snprintf(why, why_len, "%s", text);
    return -1;
}

/* The code's rows, dark modules black, into the PNG being written. */
static int put_rows(png_structp png, const QRcode *q, size_t side)
{
    png_bytep row = malloc(side);

    if (row == NULL)
        return -1;
    for (size_t y = 0; y < side; y++) {
        long my = (long)(y / SCALE) - QUIET;

        for (size_t x = 0; x < side; x++) {
            long mx = (long)(x / SCALE) - QUIET;
            int dark = mx >= 0 && my >= 0 && mx < q->width && my < q->width &&
                       (q->data[my * q->width + mx] & 1);

            row[x] = dark ? 0 : 255;
        }
        png_write_row(png, row);
    }
    free(row);
    return 0;
}

int qrimage_write(const char *text, const char *path, char *why, size_t why_len)
{
    QRcode *q = QRcode_encodeString(text, 0, QR_ECLEVEL_M, QR_MODE_8, 1);
    png_structp png = NULL;
    png_infop info = NULL;
    FILE *f = NULL;
    int fd, rc = -1;
    size_t side;

    if (q == NULL)
        return fail(why, why_len, "the code does not fit in a QR code");
    side = (size_t)(q->width + 2 * QUIET) * SCALE;
    fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
    if (fd < 0 || (f = fdopen(fd, "wb")) == NULL) {
        snprintf(why, why_len, "cannot create %s: %s", path, strerror(errno));
        if (fd >= 0)
            close(fd);
        QRcode_free(q);
        return -1;
    }
    png = png_create_write_struct(PNG_LIBPNG_VER_STRING, NULL, NULL, NULL);
    info = png != NULL ? png_create_info_struct(png) : NULL;
    if (info != NULL && setjmp(png_jmpbuf(png)) == 0) {
        png_init_io(png, f);
        png_set_IHDR(png, info, (png_uint_32)side, (png_uint_32)side, 8, PNG_COLOR_TYPE_GRAY,
                     PNG_INTERLACE_NONE, PNG_COMPRESSION_TYPE_DEFAULT, PNG_FILTER_TYPE_DEFAULT);
        png_write_info(png, info);
        if (put_rows(png, q, side) == 0) {
            png_write_end(png, NULL);
            rc = 0;
        }
    }
    png_destroy_write_struct(&png, &info);
    QRcode_free(q);
    if (fclose(f) != 0)
        rc = -1;
    if (rc != 0) {
        unlink(path);
        return fail(why, why_len, "writing the PNG failed");
    }
    return 0;
}

/* The PNG in path as 8-bit gray pixels (*pixels: caller frees); 0 or -1 and why. */
static int load_gray(const char *path, uint8_t **pixels, unsigned *w, unsigned *h, char *why,
                     size_t why_len)
{
    png_image img;
    struct stat st;

    if (stat(path, &st) != 0) {
        snprintf(why, why_len, "cannot read %s: %s", path, strerror(errno));
        return -1;
    }
    if (!S_ISREG(st.st_mode) || (uint64_t)st.st_size > QRIMAGE_FILE_MAX)
        return fail(why, why_len, "not a regular file of at most 8 MiB");
    memset(&img, 0, sizeof(img));
    img.version = PNG_IMAGE_VERSION;
    if (!png_image_begin_read_from_file(&img, path))
        return fail(why, why_len, "not a PNG image");
    if (img.width == 0 || img.height == 0 || img.width > QRIMAGE_SIDE_MAX ||
        img.height > QRIMAGE_SIDE_MAX) {
        png_image_free(&img);
        return fail(why, why_len, "the image is larger than 4096 x 4096 pixels");
    }
    img.format = PNG_FORMAT_GRAY;
    *pixels = malloc(PNG_IMAGE_SIZE(img));
    if (*pixels == NULL) {
        png_image_free(&img);
        return fail(why, why_len, "out of memory");
    }
    if (!png_image_finish_read(&img, NULL, *pixels, 0, NULL)) {
        png_image_free(&img);
        free(*pixels);
        *pixels = NULL;
        return fail(why, why_len, "the PNG image is damaged");
    }
    *w = img.width;
    *h = img.height;
    return 0;
}

/* The first QR code zbar finds in the gray image; 0 or -1 and why. */
static int scan(uint8_t *pixels, unsigned w, unsigned h, char *out, size_t out_len, char *why,
                size_t why_len)
{
    zbar_image_scanner_t *scanner = zbar_image_scanner_create();
    zbar_image_t *image = zbar_image_create();
    const zbar_symbol_t *sym;
    int rc = fail(why, why_len, "no QR code found in the image");

    if (scanner == NULL || image == NULL) {
        rc = fail(why, why_len, "out of memory");
        goto out;
    }
    zbar_image_scanner_set_config(scanner, ZBAR_NONE, ZBAR_CFG_ENABLE, 0);
    zbar_image_scanner_set_config(scanner, ZBAR_QRCODE, ZBAR_CFG_ENABLE, 1);
    zbar_image_set_format(image, zbar_fourcc('Y', '8', '0', '0'));
    zbar_image_set_size(image, w, h);
    zbar_image_set_data(image, pixels, (unsigned long)w * h, NULL);
    if (zbar_scan_image(scanner, image) > 0) {
        for (sym = zbar_image_first_symbol(image); sym != NULL; sym = zbar_symbol_next(sym)) {
            const char *data = zbar_symbol_get_data(sym);

            if (zbar_symbol_get_type(sym) != ZBAR_QRCODE || data == NULL)
                continue;
            if (strlen(data) >= out_len) {
                rc = fail(why, why_len, "the QR code holds too much to be a link code");
                break;
            }
            snprintf(out, out_len, "%s", data);
            rc = 0;
            break;
        }
    }
out:
    if (image != NULL)
        zbar_image_destroy(image);
    if (scanner != NULL)
        zbar_image_scanner_destroy(scanner);
    return rc;
}

int qrimage_read(const char *path, char *out, size_t out_len, char *why, size_t why_len)
{
    uint8_t *pixels = NULL;
    unsigned w = 0, h = 0;
    int rc = load_gray(path, &pixels, &w, &h, why, why_len);

    if (rc == 0)
        rc = scan(pixels, w, h, out, out_len, why, why_len);
    free(pixels);
    return rc;
}
