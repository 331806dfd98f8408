/* missive-admin --url: a request to a node's admin API (apps/admin_http.c). */
#ifndef MSV_ADMIN_HTTP_H
#define MSV_ADMIN_HTTP_H

/*
 * Sends POST (post) or GET path, with body (may be NULL), to the node at url (http://HOST:PORT)
 * bearing the token in token_file (your own file of mode 0600). 1 with *status and *answer
 * (caller frees with free()) if an answer came; 0 (said on standard error) if none did.
 */
int admin_http(const char *url, const char *token_file, int post, const char *path,
               const char *body, int *status, char **answer);

#endif
