/*
 * The daemon's request handling before anything runs (apps/rpc.c) on any
 * line: JSON or not, a request, a batch or anything else, every parameter
 * of every type. A request must be accepted or refused with words, and a
 * command line built from accepted params must hold the method and end with
 * NULL; the bytes as a string must come out as valid UTF-8.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "../apps/rpc.h"
#include "missive/util.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void one(json_t *req)
{
    const char *why = NULL, *method;
    json_t *none, *params = json_object_get(req, "params");
    struct rpc_argv b = {.n = 0};
    char words[300] = "";
    int code = rpc_check_request(req, &why);

    if (code != 0) {
        if (why == NULL || (code != -32600 && code != -32602))
            abort();
        return;
    }
    none = json_object();
    method = json_string_value(json_object_get(req, "method"));
    if (rpc_build_argv(method, params ? params : none, &b, words, sizeof(words)) == 0) {
        int found = 0;

        for (int i = 0; i < b.n; i++)
            found |= b.v[i] == method;
        if (!found || b.v[b.n] != NULL)
            abort();
    } else if (words[0] == '\0') {
        abort(); /* every refusal says why */
    }
    rpc_argv_free(&b);
    json_decref(none);
}

/* Any bytes become a JSON string of valid UTF-8, the valid ones unchanged. */
static void text(const uint8_t *data, size_t size)
{
    char *s = malloc(size + 1);
    const char *v;
    json_t *j;

    if (s == NULL)
        return;
    memcpy(s, data, size);
    s[size] = '\0';
    j = rpc_text(s);
    v = json_string_value(j);
    if (v == NULL || !msv_utf8_is_valid((const uint8_t *)v, strlen(v)) ||
        (msv_utf8_is_valid((const uint8_t *)s, strlen(s)) && strcmp(v, s) != 0))
        abort();
    json_decref(j);
    free(s);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    json_t *req = json_loadb((const char *)data, size, JSON_REJECT_DUPLICATES, NULL), *r;
    size_t i;

    text(data, size);

    if (json_is_array(req)) {
        json_array_foreach(req, i, r) one(r);
    } else if (req != NULL) {
        one(req);
    }
    json_decref(req);
    return 0;
}
