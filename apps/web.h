/*
 * missive web (docs/web.md): the account's owner, as the daemon runs it,
 * serving the web client over HTTP and WebSocket. web.c drives
 * libwebsockets from the owner's loop; the parsing of what a browser sends
 * that libwebsockets does not parse itself is here, apart, so that it can be
 * fuzzed (fuzz/fuzz_web.c) without a server.
 */
#ifndef MSV_APPS_WEB_H
#define MSV_APPS_WEB_H

#include <stddef.h>
#include <stdint.h>

#define WEB_SECRET_LEN 32 /* login tokens and session ids: random bytes */
#define WEB_SECRET_HEX (2 * WEB_SECRET_LEN)
/*
 * The session cookie's name: this prefix and the port the server listens on. A browser sends
 * a host's cookies to every port of it, so two servers on one host (two accounts, say) each
 * keep a cookie of their own name in one browser, and a login to one does not end the other's.
 */
#define WEB_COOKIE_PREFIX "missive_session_"
#define WEB_COOKIE_NAME_MAX 32 /* the prefix, a port of up to five digits and the NUL */
#define WEB_NAME_MAX 255       /* an uploaded file's name, in bytes */

/* A file of the front end, compiled in (cmake/embed_web.cmake). */
struct web_asset {
    const char *path, *mime;
    const unsigned char *data;
    size_t len;
};
/* Every file of web/, ended by one whose path is NULL. */
extern const struct web_asset web_assets[];

/*
 * 64 hex digits into a secret: 0, or -1 for anything else (the check does not
 * depend on the digits' values, only on the length and the alphabet).
 */
int web_parse_secret(const char *hex, size_t len, uint8_t out[WEB_SECRET_LEN]);
/* The session id of a Cookie header's value in the cookie called name (this server's): 0, or -1
 * if it has none of that name; of several, the first. */
int web_cookie_session(const char *cookie, const char *name, uint8_t out[WEB_SECRET_LEN]);
/*
 * "/files/<32 hex>/<index>" into the message id and the index (below 1000):
 * 0, or -1 for any other path.
 */
int web_parse_files_path(const char *path, uint8_t id[16], unsigned *index);
/* 1 if name may be an uploaded file's name in a directory of its own: not
 * empty, not "." or "..", UTF-8 without '/', '\\' or control characters,
 * at most WEB_NAME_MAX bytes. */
int web_name_ok(const char *name);
/*
 * --listen HOST:PORT ("[v6]:PORT" for IPv6) into host (without brackets) and
 * port: 0, or -1 for a malformed address.
 */
int web_parse_listen(const char *s, char *host, size_t host_len, unsigned *port);
/* 1 for an address that only this machine reaches (127.0.0.0/8, ::1, localhost). */
int web_host_is_loopback(const char *host);

#endif
