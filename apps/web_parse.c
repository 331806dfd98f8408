/*
 * The parts of a browser's requests that libwebsockets hands over as bytes:
 * the login token, the session cookie, a /files path, an upload's name, and
 * the --listen address. Each refuses whatever is not exactly its format.
 */
#include <string.h>

#include "missive/util.h"
#include "web.h"

static int hex_digit(char c)
{
    return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F');
}

int web_parse_secret(const char *hex, size_t len, uint8_t out[WEB_SECRET_LEN])
{
    char digits[WEB_SECRET_HEX + 1];
    size_t n = 0;

    if (hex == NULL || len != WEB_SECRET_HEX)
        return -1;
    for (size_t i = 0; i < len; i++)
        if (!hex_digit(hex[i]))
            return -1;
    /* the len digits alone: hex may go on (a cookie followed by others) */
    memcpy(digits, hex, len);
    digits[len] = '\0';
    return msv_hex_decode(digits, out, WEB_SECRET_LEN, &n) == MSV_OK && n == WEB_SECRET_LEN ? 0
                                                                                            : -1;
}

int web_cookie_session(const char *cookie, const char *name, uint8_t out[WEB_SECRET_LEN])
{
    const char *p = cookie;
    size_t name_len = name != NULL ? strlen(name) : 0;

    if (name_len == 0)
        return -1;
    /* "a=b; missive_session_8080=HEX; c=d": the first cookie of that name */
    while (p != NULL && *p != '\0') {
        size_t len;

        while (*p == ' ' || *p == ';')
            p++;
        len = strcspn(p, ";");
        if (len > name_len + 1 && strncmp(p, name, name_len) == 0 && p[name_len] == '=') {
            const char *v = p + name_len + 1;
            size_t vlen = len - name_len - 1;

            while (vlen > 0 && v[vlen - 1] == ' ')
                vlen--;
            return web_parse_secret(v, vlen, out);
        }
        p += len;
    }
    return -1;
}

int web_parse_files_path(const char *path, uint8_t id[16], unsigned *index)
{
    static const char prefix[] = "/files/";
    const char *p;
    char hex[33];
    size_t n = 0;
    unsigned v = 0;

    if (strncmp(path, prefix, sizeof(prefix) - 1) != 0)
        return -1;
    p = path + sizeof(prefix) - 1;
    for (size_t i = 0; i < 32; i++)
        if (!hex_digit(p[i]))
            return -1;
    memcpy(hex, p, 32);
    hex[32] = '\0';
    if (p[32] != '/' || msv_hex_decode(hex, id, 16, &n) != MSV_OK || n != 16)
        return -1;
    p += 33;
    /* a decimal index without leading zeros, below 1000 */
    if (*p == '\0' || (p[0] == '0' && p[1] != '\0') || strlen(p) > 3)
        return -1;
    for (; *p != '\0'; p++) {
        if (*p < '0' || *p > '9')
            return -1;
        v = v * 10 + (unsigned)(*p - '0');
    }
    *index = v;
    return 0;
}

int web_name_ok(const char *name)
{
    size_t len = name ? strlen(name) : 0;

    if (len == 0 || len > WEB_NAME_MAX || strcmp(name, ".") == 0 || strcmp(name, "..") == 0 ||
        !msv_utf8_is_valid((const uint8_t *)name, len))
        return 0;
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)name[i];

        if (c < 0x20 || c == 0x7f || c == '/' || c == '\\')
            return 0;
    }
    return 1;
}

int web_parse_listen(const char *s, char *host, size_t host_len, unsigned *port)
{
    const char *colon, *h = s;
    size_t hlen;
    unsigned v = 0;

    if (s[0] == '[') {
        const char *close = strchr(s, ']');

        if (close == NULL || close[1] != ':')
            return -1;
        h = s + 1;
        hlen = (size_t)(close - h);
        colon = close + 1;
    } else {
        colon = strrchr(s, ':');
        if (colon == NULL || memchr(s, ':', (size_t)(colon - s)) != NULL)
            return -1; /* an IPv6 address goes in brackets */
        hlen = (size_t)(colon - s);
    }
    if (hlen == 0 || hlen >= host_len || colon[1] == '\0' || strlen(colon + 1) > 5)
        return -1;
    for (const char *p = colon + 1; *p != '\0'; p++) {
        if (*p < '0' || *p > '9')
            return -1;
        v = v * 10 + (unsigned)(*p - '0');
    }
    for (size_t i = 0; i < hlen; i++) {
        char c = h[i];

        if (!(hex_digit(c) || (c >= 'g' && c <= 'z') || (c >= 'G' && c <= 'Z') || c == '.' ||
              c == ':' || c == '-'))
            return -1;
    }
    if (v > 65535)
        return -1;
    memcpy(host, h, hlen);
    host[hlen] = '\0';
    *port = v;
    return 0;
}

int web_host_is_loopback(const char *host)
{
    if (strcmp(host, "localhost") == 0 || strcmp(host, "::1") == 0)
        return 1;
    if (strncmp(host, "127.", 4) != 0)
        return 0;
    /* an IPv4 address, not a name that begins like one */
    return host[4] != '\0' && strspn(host + 4, "0123456789.") == strlen(host + 4);
}
