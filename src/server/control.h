/*
 * The control socket: a datagram Unix socket, missived.ctl in the data
 * directory, through which missive-admin tells the node running there what
 * it changed in the store and must take effect at once. Only the owner of
 * the data directory may write to it (mode 0600).
 *
 * One datagram is one order, in ASCII: "suspended ACCOUNT_ID" (decimal):
 * the account was suspended, its connections close now. The node checks the
 * store before acting, so a stale or mistaken order closes nothing.
 */
#ifndef MSV_SERVER_CONTROL_H
#define MSV_SERVER_CONTROL_H

#include <stddef.h>
#include <stdint.h>

#include "missive/error.h"

/* The largest order a node reads; longer datagrams are refused. */
#define MSV_CONTROL_MAX 64

/*
 * Binds data_dir/missived.ctl (a stale socket file there is replaced) and
 * returns its nonblocking descriptor in *fd; caller closes it and unlinks
 * path. MSV_ERR_TOO_BIG if the path is too long for a Unix socket.
 */
MSV_MUST_CHECK msv_err msv_control_open(const char *data_dir, int *fd, char *path, size_t path_len);

/*
 * Reads one waiting order: *account_id of a "suspended" order.
 * MSV_ERR_AGAIN when nothing waits, MSV_ERR_PARSE for anything else read.
 */
MSV_MUST_CHECK msv_err msv_control_read(int fd, uint64_t *account_id);

/*
 * Tells the node running on data_dir that account_id was suspended.
 * MSV_ERR_NOT_FOUND if no node listens there (none runs: nothing to tell).
 */
MSV_MUST_CHECK msv_err msv_control_send_suspended(const char *data_dir, uint64_t account_id);

/* 1 if a node runs on data_dir now (something is bound to its control socket), else 0. */
int msv_control_node_runs(const char *data_dir);

#endif
