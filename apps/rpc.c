/* The daemon's request checks and params-to-command-line (rpc.h). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "missive/util.h"
#include "rpc.h"

int rpc_check_request(json_t *req, const char **why)
{
    json_t *id = json_object_get(req, "id"), *params = json_object_get(req, "params");
    const char *version = json_string_value(json_object_get(req, "jsonrpc"));

    if (!json_is_object(req) || version == NULL || strcmp(version, "2.0") != 0 ||
        !json_is_string(json_object_get(req, "method")) ||
        (id != NULL && !json_is_string(id) && !json_is_integer(id) && !json_is_null(id))) {
        *why = "not a JSON-RPC 2.0 request";
        return -32600;
    }
    if (params != NULL && !json_is_object(params)) {
        *why = "params are given by name, in an object";
        return -32602;
    }
    return 0;
}

/* The options a request may give, and their types: the command line's own. */
static int option_has_arg(const char *name, int *known)
{
    static const char *const with_arg[] = {"text",       "file",       "group",
                                           "search",     "limit",      "wait",
                                           "kdf-memory", "kdf-passes", "backup-passphrase-file",
                                           "reply-to",   "reason",     "name",
                                           "avatar",     "approval",   "before",
                                           "image",      "code"};
    static const char *const flags[] = {"qr",       "accept",     "remove",        "include-text",
                                        "archived", "reset",      "off",           "yes",
                                        "history",  "no-history", "resume-history"};

    *known = 1;
    for (size_t i = 0; i < sizeof(with_arg) / sizeof(with_arg[0]); i++)
        if (strcmp(name, with_arg[i]) == 0)
            return 1;
    for (size_t i = 0; i < sizeof(flags) / sizeof(flags[0]); i++)
        if (strcmp(name, flags[i]) == 0)
            return 0;
    *known = 0;
    return 0;
}

static int argv_add(struct rpc_argv *b, const char *s, int copy)
{
    if (b->n + 1 >= (int)(sizeof(b->v) / sizeof(b->v[0])))
        return -1;
    if (copy) {
        if ((b->v[b->n] = strdup(s)) == NULL)
            return -1;
        b->owned[b->n_owned++] = b->v[b->n];
    } else {
        b->v[b->n] = (char *)s;
    }
    b->v[++b->n] = NULL;
    return 0;
}

void rpc_argv_free(struct rpc_argv *b)
{
    for (int i = 0; i < b->n_owned; i++)
        free(b->owned[i]);
}

int rpc_names_file(const char *name)
{
    return strcmp(name, "file") == 0 || strcmp(name, "avatar") == 0 || strcmp(name, "image") == 0 ||
           strcmp(name, "backup-passphrase-file") == 0;
}

/* A parameter's value as an argument: strings as they are, numbers written out. */
static int argv_add_value(struct rpc_argv *b, json_t *v)
{
    char num[64];

    if (json_is_string(v))
        return argv_add(b, json_string_value(v), 1);
    if (json_is_integer(v))
        snprintf(num, sizeof(num), "%lld", (long long)json_integer_value(v));
    else if (json_is_real(v))
        snprintf(num, sizeof(num), "%.17g", json_real_value(v));
    else
        return -1;
    return argv_add(b, num, 1);
}

/*
 * params -> a command line for cli_parse_args: "--name value" for each
 * option, then the method, then "args". -1 with why for anything else.
 */
int rpc_build_argv(const char *method, json_t *params, struct rpc_argv *b, char *why,
                   size_t why_len)
{
    const char *key;
    json_t *v, *args = json_object_get(params, "args");
    size_t i;
    char opt[64];

    argv_add(b, "missive", 0);
    json_object_foreach(params, key, v)
    {
        int known = 0, has_arg = option_has_arg(key, &known);

        /* read by the owner itself (secrets never go on a command line), each for its methods */
        if (strcmp(key, "args") == 0 || strcmp(key, "output") == 0 ||
            (strcmp(key, "backup-passphrase") == 0 &&
             (strcmp(method, "backup") == 0 || strcmp(method, "restore") == 0)) ||
            ((strcmp(key, "password") == 0 || strcmp(key, "new-password") == 0) &&
             (strcmp(method, "password") == 0 || strcmp(method, "account") == 0)))
            continue;
        if (!known) {
            snprintf(why, why_len, "'%s' is not a parameter of %s", key, method);
            return -1;
        }
        snprintf(opt, sizeof(opt), "--%s", key);
        if (!has_arg) {
            if (!json_is_boolean(v)) {
                snprintf(why, why_len, "'%s' takes true or false", key);
                return -1;
            }
            if (json_is_true(v) && argv_add(b, opt, 1) != 0)
                goto too_many;
            continue;
        }
        if (json_is_array(v) && strcmp(key, "file") == 0) {
            json_t *f;

            json_array_foreach(v, i, f)
            {
                if (!json_is_string(f))
                    goto bad_file;
                if (argv_add(b, opt, 1) != 0 || argv_add_value(b, f) != 0)
                    goto bad_value;
            }
            continue;
        }
        if (rpc_names_file(key) && !json_is_string(v))
            goto bad_file;
        if (argv_add(b, opt, 1) != 0 || argv_add_value(b, v) != 0)
            goto bad_value;
    }
    /* "--": what follows is the method and its operands, even where one starts with '-' */
    argv_add(b, "--", 0);
    argv_add(b, method, 0);
    if (args != NULL && !json_is_array(args)) {
        snprintf(why, why_len, "'args' is an array of strings");
        return -1;
    }
    json_array_foreach(args, i, v)
    {
        if (!json_is_string(v)) {
            snprintf(why, why_len, "'args' is an array of strings");
            return -1;
        }
        if (argv_add(b, json_string_value(v), 1) != 0)
            goto too_many;
    }
    return 0;
bad_value:
    snprintf(why, why_len, "'%s' takes a string or a number", key);
    return -1;
bad_file:
    snprintf(why, why_len, "'%s' names a file: a string (or, for 'file', strings)", key);
    return -1;
too_many:
    snprintf(why, why_len, "too many parameters");
    return -1;
}

/*
 * A JSON string of s, whatever its bytes: a command's words may quote a path,
 * a server may send anything; a byte that is not part of valid UTF-8 becomes
 * U+FFFD, so that every line written stays JSON.
 */
json_t *rpc_text(const char *s)
{
    size_t len = strlen(s), k = 0;
    json_t *j;
    char *clean;

    if (msv_utf8_is_valid((const uint8_t *)s, len))
        return json_stringn(s, len);
    clean = malloc(len * 3 + 1);
    if (clean == NULL)
        return json_string("");
    for (size_t i = 0; i < len;) {
        size_t n = 1;

        /* the longest valid sequence starting here, if any */
        while (n < 4 && i + n < len && ((uint8_t)s[i + n] & 0xC0) == 0x80)
            n++;
        while (n > 1 && !msv_utf8_is_valid((const uint8_t *)s + i, n))
            n--;
        if (msv_utf8_is_valid((const uint8_t *)s + i, n)) {
            memcpy(clean + k, s + i, n);
            k += n;
        } else {
            memcpy(clean + k, "\xEF\xBF\xBD", 3);
            k += 3;
        }
        i += n;
    }
    j = json_stringn(clean, k);
    free(clean);
    return j;
}
