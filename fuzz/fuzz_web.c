/*
 * What a browser (or anyone who reaches the port) sends missive web that
 * libwebsockets hands over as bytes (apps/web_parse.c), on any bytes: a
 * secret is accepted only as exactly 64 hex digits and decodes to them; a
 * cookie yields a session only from a missive_session_PORT= value (this
 * server's port's); a /files path is accepted only in its one spelling, which
 * it gives back; an upload's name is never a path; a --listen address has a
 * host and a port below 65536.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "../apps/web.h"
#include "missive/util.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void check_secret(const char *s, size_t len)
{
    uint8_t v[WEB_SECRET_LEN];
    char hex[WEB_SECRET_HEX + 1];

    if (web_parse_secret(s, len, v) != 0)
        return;
    if (len != WEB_SECRET_HEX || msv_hex_encode(v, sizeof(v), hex, sizeof(hex)) != MSV_OK ||
        strncasecmp(hex, s, WEB_SECRET_HEX) != 0)
        abort();
}

static void check_cookie(const char *s)
{
    uint8_t v[WEB_SECRET_LEN];

    if (web_cookie_session(s, WEB_COOKIE_PREFIX "8080", v) == 0 &&
        strstr(s, WEB_COOKIE_PREFIX "8080=") == NULL)
        abort();
}

static void check_files(const char *s)
{
    uint8_t id[16];
    unsigned index = 0;
    char hex[33], again[64];

    if (web_parse_files_path(s, id, &index) != 0)
        return;
    if (index >= 1000 || msv_hex_encode(id, 16, hex, sizeof(hex)) != MSV_OK)
        abort();
    snprintf(again, sizeof(again), "/files/%s/%u", hex, index);
    if (strcasecmp(again, s) != 0)
        abort();
}

static void check_name(const char *s)
{
    if (!web_name_ok(s))
        return;
    if (strchr(s, '/') != NULL || strchr(s, '\\') != NULL || strcmp(s, "..") == 0 ||
        strcmp(s, ".") == 0 || s[0] == '\0' || strlen(s) > WEB_NAME_MAX)
        abort();
    for (const unsigned char *p = (const unsigned char *)s; *p != '\0'; p++)
        if (*p < 0x20 || *p == 0x7f)
            abort();
}

static void check_listen(const char *s)
{
    char host[256];
    unsigned port = 0;

    if (web_parse_listen(s, host, sizeof(host), &port) != 0)
        return;
    if (host[0] == '\0' || port > 65535 || strlen(host) >= sizeof(host))
        abort();
    (void)web_host_is_loopback(host);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *s = malloc(size + 1);

    if (s == NULL)
        return 0;
    memcpy(s, data, size);
    s[size] = '\0';
    check_secret(s, strlen(s));
    check_cookie(s);
    check_files(s);
    check_name(s);
    check_listen(s);
    free(s);
    return 0;
}
