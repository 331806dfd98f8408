/* The server's TLS 1.3 context and certificate (the only module that configures OpenSSL TLS). */
#ifndef MSV_SERVER_TLS_H
#define MSV_SERVER_TLS_H

#include <openssl/ssl.h>

#include "server/config.h"

/*
 * Builds a TLS 1.3-only server context. Without a configured certificate, a
 * self-signed P-256 certificate is created in data_dir on first start
 * (server.crt, server.key mode 0600) and reused afterwards. fingerprint
 * receives SHA-256 of the certificate (DER), which clients pin; it is also
 * written as hex to data_dir/server.fingerprint.
 */
MSV_MUST_CHECK msv_err msv_tls_server_ctx(const struct msv_config *c, SSL_CTX **out,
                                          uint8_t fingerprint[32], char *err, size_t err_len);

#endif
