/*
 * missive-crypto mls: MLS (RFC 9420) groups on files (apps/crypto_mls.c).
 */
#ifndef MSV_APPS_CRYPTO_MLS_H
#define MSV_APPS_CRYPTO_MLS_H

/* argv[0] is "mls", argv[1] the subcommand; returns the exit status. */
int msv_crypto_mls_main(int argc, char **argv);

#endif
