/*
 * The admin API on the HTTP port ([http] admin_token_file; src/server/admin_api.c), and the
 * JSON of the statistics and accounts that it and missive-admin show alike.
 */
#ifndef MSV_SERVER_ADMIN_API_H
#define MSV_SERVER_ADMIN_API_H

#include <jansson.h>

#include "missive/error.h"
#include "server/config.h"
#include "store/store.h"

struct evhttp;
struct msv_server;
struct msv_admin_api;

/*
 * Reads the token of cfg's [http] admin_token_file. *out stays NULL (no admin API) when none
 * is configured or the file does not exist; MSV_ERR_INVALID, with why, when the file is not
 * missived's own of mode 0600 or holds no token. *out: caller frees with msv_admin_api_free().
 */
MSV_MUST_CHECK msv_err msv_admin_api_open(const struct msv_config *cfg, struct msv_server *srv,
                                          struct msv_admin_api **out, char *why, size_t why_len);
void msv_admin_api_free(struct msv_admin_api *a);
/*
 * The admin token in the file at path into buf (cap at least MSV_ADMIN_TOKEN_BUF), its length
 * in *len: the file's first line, 32 to 252 letters, digits, - and _, the file the caller's
 * own of mode 0600 (else MSV_ERR_INVALID); MSV_ERR_NOT_FOUND if there is no such file. why
 * says what is wrong. The caller wipes buf.
 */
#define MSV_ADMIN_TOKEN_BUF 256
MSV_MUST_CHECK msv_err msv_admin_token_load(const char *path, char *buf, size_t cap, size_t *len,
                                            char *why, size_t why_len);
/* Serves /admin/... (and a JSON 404 for unknown paths) on http, whose thread runs them. */
void msv_admin_api_register(struct msv_admin_api *a, struct evhttp *http);

/* missive-admin stats and one row of missive-admin accounts, as JSON (caller decrefs). */
json_t *msv_admin_stats_json(const struct msv_store_stats *st);
json_t *msv_admin_account_json(const struct msv_account_summary *x);

#endif
