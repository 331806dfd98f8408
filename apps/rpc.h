/*
 * What the daemon takes from a JSON-RPC request before anything runs: the
 * request's shape, and a command's params as a command line. Nothing here
 * touches an account, so fuzz/fuzz_rpc.c runs it on any bytes.
 */
#ifndef MSV_APPS_RPC_H
#define MSV_APPS_RPC_H

#include <stddef.h>

#include <jansson.h>

/*
 * 0 for a JSON-RPC 2.0 request (an object with "jsonrpc": "2.0", a string
 * method, an id that is a string, an integer or null if any, params by name
 * if any); otherwise the error code (-32600, -32602) with *why its words.
 */
int rpc_check_request(json_t *req, const char **why);

/* A command line built from params; v ends with NULL. */
struct rpc_argv {
    char *v[96];
    char *owned[96];
    int n, n_owned;
};

/*
 * params -> "missive --name value ... METHOD ARGS...": each option by its long
 * name (strings or numbers for those with a value, booleans for flags, an
 * array of paths for "file"), then the method, then "args". "output" and
 * "backup-passphrase" are the daemon's own and left out. -1 with why for an
 * unknown parameter or a value of the wrong type; free with rpc_argv_free()
 * either way. The method string must outlive b.
 */
int rpc_build_argv(const char *method, json_t *params, struct rpc_argv *b, char *why,
                   size_t why_len);
void rpc_argv_free(struct rpc_argv *b);

/*
 * 1 if the parameter names a file ("file", "avatar", "image", "backup-passphrase-file"): its
 * value is a string ("file": strings too), never a number, which would name a file of the
 * daemon's working directory.
 */
int rpc_names_file(const char *name);

/*
 * A JSON string of s, whatever its bytes: each byte that is not part of
 * valid UTF-8 becomes U+FFFD, so that every line the daemon writes is JSON.
 */
json_t *rpc_text(const char *s);

#endif
