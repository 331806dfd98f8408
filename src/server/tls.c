#include "server/tls.h"

#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/x509.h>

#include "missive/util.h"

#define CERT_DAYS 3650

static msv_err write_pem(const char *path, mode_t mode, int is_key, void *obj)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, mode);
    FILE *f = fd >= 0 ? fdopen(fd, "w") : NULL;
    int ok;

    if (f == NULL) {
        if (fd >= 0)
            close(fd);
        return MSV_ERR_IO;
    }
    ok = is_key ? PEM_write_PrivateKey(f, obj, NULL, NULL, 0, NULL, NULL) : PEM_write_X509(f, obj);
    ok = ok && fflush(f) == 0 && fsync(fileno(f)) == 0;
    if (fclose(f) != 0)
        ok = 0;
    return ok ? MSV_OK : MSV_ERR_IO;
}

static msv_err generate_self_signed(const char *cert_path, const char *key_path)
{
    EVP_PKEY *key = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-256");
    X509 *x = X509_new();
    X509_NAME *name;
    uint8_t serial[16];
    BIGNUM *bn = NULL;
    msv_err err = MSV_ERR_CRYPTO;

    if (key == NULL || x == NULL)
        goto out;
    msv_random_bytes(serial, sizeof(serial));
    serial[0] &= 0x7f;
    bn = BN_bin2bn(serial, sizeof(serial), NULL);
    if (bn == NULL || BN_to_ASN1_INTEGER(bn, X509_get_serialNumber(x)) == NULL)
        goto out;
    if (X509_set_version(x, 2) != 1 || X509_gmtime_adj(X509_getm_notBefore(x), -3600) == NULL ||
        X509_gmtime_adj(X509_getm_notAfter(x), (long)CERT_DAYS * 86400) == NULL)
        goto out;
    name = X509_get_subject_name(x);
    if (X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC, (const unsigned char *)"missived", -1,
                                   -1, 0) != 1 ||
        X509_set_issuer_name(x, name) != 1 || X509_set_pubkey(x, key) != 1 ||
        X509_sign(x, key, EVP_sha256()) == 0)
        goto out;
    err = write_pem(key_path, 0600, 1, key);
    if (err == MSV_OK)
        err = write_pem(cert_path, 0644, 0, x);
out:
    BN_free(bn);
    X509_free(x);
    EVP_PKEY_free(key);
    return err;
}

static msv_err write_fingerprint(const char *dir, const uint8_t fp[32])
{
    char path[1200], hex[65];
    FILE *f;
    int ok;

    snprintf(path, sizeof(path), "%s/server.fingerprint", dir);
    if (msv_hex_encode(fp, 32, hex, sizeof(hex)) != MSV_OK || (f = fopen(path, "w")) == NULL)
        return MSV_ERR_IO;
    ok = fprintf(f, "%s\n", hex) > 0;
    return fclose(f) == 0 && ok ? MSV_OK : MSV_ERR_IO;
}

msv_err msv_tls_server_ctx(const struct msv_config *c, SSL_CTX **out, uint8_t fingerprint[32],
                           char *err, size_t err_len)
{
    char cert[1200], key[1200];
    SSL_CTX *ctx = NULL;
    unsigned int fp_len = 0;
    msv_err e;

    if (c->cert_file[0] != '\0') {
        snprintf(cert, sizeof(cert), "%s", c->cert_file);
        snprintf(key, sizeof(key), "%s", c->key_file);
    } else {
        /* nodes of a cluster present the same certificate: it lives with what they share */
        snprintf(cert, sizeof(cert), "%s/server.crt", msv_config_shared_dir(c));
        snprintf(key, sizeof(key), "%s/server.key", msv_config_shared_dir(c));
        if (access(cert, F_OK) != 0 || access(key, F_OK) != 0) {
            e = generate_self_signed(cert, key);
            if (e != MSV_OK) {
                snprintf(err, err_len, "cannot create a certificate in %s",
                         msv_config_shared_dir(c));
                return e;
            }
        }
    }
    ctx = SSL_CTX_new(TLS_server_method());
    if (ctx == NULL)
        return MSV_ERR_CRYPTO;
    /* TLS 1.3 only: every handshake is forward secret, over X25519 or P-256 */
    SSL_CTX_set_min_proto_version(ctx, TLS1_3_VERSION);
    SSL_CTX_set_max_proto_version(ctx, TLS1_3_VERSION);
    SSL_CTX_set1_groups_list(ctx, "X25519:P-256");
    /* idle connections give their read and write buffers back (a few KiB each) */
    SSL_CTX_set_mode(ctx, SSL_MODE_RELEASE_BUFFERS);
    /* libevent 2.1 with OpenSSL 3 treats a missing close_notify as an error otherwise */
    SSL_CTX_set_options(ctx, SSL_OP_IGNORE_UNEXPECTED_EOF | SSL_OP_NO_RENEGOTIATION);
    if (SSL_CTX_use_certificate_chain_file(ctx, cert) != 1 ||
        SSL_CTX_use_PrivateKey_file(ctx, key, SSL_FILETYPE_PEM) != 1 ||
        SSL_CTX_check_private_key(ctx) != 1) {
        snprintf(err, err_len, "cannot load certificate %s and key %s", cert, key);
        SSL_CTX_free(ctx);
        return MSV_ERR_IO;
    }
    if (X509_digest(SSL_CTX_get0_certificate(ctx), EVP_sha256(), fingerprint, &fp_len) != 1 ||
        fp_len != 32 || write_fingerprint(c->data_dir, fingerprint) != MSV_OK) {
        snprintf(err, err_len, "cannot write %s/server.fingerprint", c->data_dir);
        SSL_CTX_free(ctx);
        return MSV_ERR_IO;
    }
    *out = ctx;
    return MSV_OK;
}
